//! Everything about reaching participants: the [`registry`] of their
//! endpoints and actions, the [`client`] that calls them (endpoint choice,
//! deadlines, the outcome contract), the per-endpoint circuit
//! [`breaker`], the per-participant [`bulkhead`] and the [`recovered`]
//! signal raised when a participant is back.

pub mod breaker;
pub mod bulkhead;
pub mod client;
pub mod credential;
pub mod http;
pub mod recovered;
pub mod registry;
