//! Concord: a distributed-transaction coordinator. Global transactions and
//! their branches live in PostgreSQL; TCC transactions are driven over gRPC
//! until every branch is confirmed or every branch is cancelled, across
//! crashes and several coordinator instances.
//!
//! Where to look: [`machine`] decides what is legal, [`engine`] and
//! [`driver`] perform it, [`store`] remembers it, [`recovery`] finishes what
//! a crash interrupted, [`retry`] decides delays, [`participant_client`]
//! calls participants, [`api`] is the gRPC surface, [`server`] assembles it.

pub mod api;
pub mod breaker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod driver;
pub mod engine;
pub mod error;
pub mod leases;
pub mod machine;
pub mod participant_client;
pub mod recent;
pub mod recovery;
pub mod registry;
pub mod retention;
pub mod retry;
pub mod saga;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
