//! Integration tests: one binary, real databases (a fresh PostgreSQL
//! database per test through `#[sqlx::test]`, or a fresh SQLite file), real
//! gRPC servers on loopback ports. Which PostgreSQL is decided before the
//! first test: see `concord-testdb`.
//!
//! Every end-to-end test runs on both stores (`on_both_stores!`, or
//! `on_both_stores_beside_postgres!` when a participant or initiator keeps
//! its own state in PostgreSQL: the SDK's barrier, the banks), and the store
//! suite (`store.rs`) runs against both. PostgreSQL only, because they are
//! about several instances sharing one database or about a database server:
//! `crash::two_instances_racing_never_drive_a_branch_twice`,
//! `saga::two_instances_racing_run_each_step_at_most_once` and
//! `crash::a_commit_sees_branches_tried_through_another_instance` (two
//! instances drive the same transactions);
//! `crash::a_commit_waits_for_a_try_record_on_its_way_and_refuses_a_lost_one`
//! (the branches are written by a second store beside the running instance,
//! as another instance's Try would be; a SQLite file admits one instance);
//! `redrive::a_registration_with_another_instance_redrives_everywhere` (the
//! registration reaches one instance, the re-drive happens on the other);
//! `overlap::an_instance_cut_off_from_the_database_is_not_overtaken_mid_call`
//! (the database is a server cut off behind a network proxy, and another
//! instance finishes the work). The two ignored measurements
//! (`redrive::figure_1000_waiting_transactions`,
//! `invariant::money_is_conserved_under_faults_and_restarts_long`) run on
//! PostgreSQL, where their figures in BENCHMARKS.md were taken. The chaos
//! run (`tests/chaos`, a binary of its own) is about three instances and a
//! PostgreSQL server restarted under them: PostgreSQL only too.

mod admin;
mod alerts;
mod auth;
mod bad_input;
mod console;
mod crash;
mod dtm;
mod harness;
mod harness_http;
mod http;
mod invariant;
mod layout;
mod msg;
mod observability;
mod operate;
mod overlap;
mod policy;
mod redrive;
mod saga;
mod sdk;
mod store;
mod tcc;

concord_testdb::database_for_tests!();
