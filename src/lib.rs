//! Concord: a distributed-transaction coordinator. Global transactions and
//! their branches live in a durable store; TCC transactions and sagas are
//! driven over gRPC until every branch is confirmed or every branch is
//! cancelled (compensated), across crashes and several coordinator
//! instances.
//!
//! Where to look: [`machine`] decides what is legal (pure), [`engine`]
//! carries those decisions out (initiator commands, phase 2, sagas,
//! operator actions, recovery, leases, retries, retention),
//! [`participant`] calls participants (client, breaker, registry),
//! [`store`] remembers everything, [`auth`] says who is calling and what
//! they may do, [`api`] is the gRPC and HTTP surface and
//! the one place errors become statuses, [`telemetry`] is logs, metrics and
//! traces, [`server`] assembles it all, [`cli`] is the operator's command
//! line and [`config`] every setting. The benchmark is its own crate
//! (`crates/concord-bench`).

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod machine;
pub mod participant;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
