//! Integration tests: one binary, real PostgreSQL (a fresh database per test
//! through `#[sqlx::test]`), real gRPC servers on loopback ports. Which
//! PostgreSQL is decided before the first test: see `concord-testdb`.

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
