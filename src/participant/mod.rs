//! Everything about reaching participants: the [`registry`] of their
//! endpoints and actions, the [`client`] that calls them (endpoint choice,
//! deadlines, the outcome contract) and the per-endpoint circuit
//! [`breaker`].

pub mod breaker;
pub mod client;
pub mod http;
pub mod registry;
