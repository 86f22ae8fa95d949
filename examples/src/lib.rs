//! Example Concord participants and initiators, built on `concord-sdk`.
//!
//! - [`bank`]: two account services (TCC). Try freezes the amount, Confirm
//!   moves it, Cancel unfreezes it; an initiator runs transfers between
//!   random accounts. Run it with the `bank_transfer` binary.
//! - [`shop`]: order, inventory and payment services (Saga). Payment
//!   rejects when funds are short, so the order and the inventory are
//!   compensated. Run it with the `order_saga` binary.
//! - [`quickstart`]: README's participant (a TCC action and a saga pair
//!   in one service, each op one SQL statement behind the barrier) and
//!   initiator (five TCC transactions, two sagas), in ~100 lines. Run it
//!   with the `quickstart` binary.
//! - [`faults`]: a wrapper around any participant service that injects
//!   failures (lost requests, lost or late replies, duplicates), used by the
//!   coordinator's invariant test and by `bank_transfer --fault-rate`.
//!
//! Each service keeps its state in its own PostgreSQL schema (see [`db`]),
//! and every action runs inside [`concord_sdk::Barrier::run`], so repeated,
//! late or out-of-order deliveries are harmless.

pub mod bank;
pub mod db;
pub mod faults;
pub mod host;
pub mod quickstart;
pub mod shop;
