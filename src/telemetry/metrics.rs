//! Prometheus metrics: every metric name, and one helper per event so that a
//! call site is one line. Labels are bounded sets: mode, status, phase,
//! outcome, gRPC method and code, and participant, action and endpoint
//! names, which come from the registry. A gid or a payload is never a label.
//!
//! The `metrics` facade has one recorder per process. [`install`] sets it
//! once; every server of the process shares it (tests run several servers in
//! one process, so their counters add up and tests compare deltas).
//! Gauges that describe the database (transactions per status, the oldest
//! one) are set by the engine's sampler (its `gauges` module) every
//! few seconds, never on the hot path. This module knows metrics only: it
//! imports nothing from the engine or the store.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::machine::{Mode, Outcome, Phase, Status};
use crate::participant::breaker::BreakerState;

/// Transactions created, by `mode` (tcc, saga).
pub const TX_BEGUN: &str = "concord_transactions_begun_total";
/// Transactions that reached a final status on this instance, by `mode`
/// and `status`.
pub const TX_FINISHED: &str = "concord_transactions_finished_total";
/// Unfinished transactions in the database, by non-final `status`.
pub const TX_OPEN: &str = "concord_transactions_open";
/// Unfinished transactions flagged needs_attention.
pub const TX_NEEDS_ATTENTION: &str = "concord_transactions_needs_attention";
/// Age of the oldest unfinished (and unresolved) transaction; 0 if none.
pub const TX_OLDEST_AGE: &str = "concord_oldest_open_transaction_age_seconds";
/// Participant calls by `participant`, `action`, `phase` and `outcome`
/// (ok, rejected, unknown); its `_count` is the number of calls.
pub const PARTICIPANT_CALL: &str = "concord_participant_call_duration_seconds";
/// Failed rounds after which a retry was scheduled, by `mode`.
pub const RETRIES: &str = "concord_retries_scheduled_total";
/// Transactions claimed by the recovery loop (due retries, expired leases,
/// expired deadlines).
pub const RECOVERY_CLAIMS: &str = "concord_recovery_claims_total";
/// Transactions made due at once because a participant they wait on is
/// back, by participant.
pub const REDRIVEN: &str = "concord_redriven_transactions_total";
/// Claims that took over a lease another instance let expire.
pub const LEASE_TAKEOVERS: &str = "concord_lease_takeovers_total";
/// Leases this instance could not renew in time (its driver stopped).
pub const LEASES_LOST: &str = "concord_leases_lost_total";
pub const LEASES_EXTENDED: &str = "concord_leases_extended_total";
/// Leases this instance holds now.
pub const LEASES_HELD: &str = "concord_leases_held";
/// Circuit breaker per participant `endpoint`: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "concord_circuit_breaker_state";
/// gRPC requests served, by `method` and `code`; `_count` is the number.
pub const GRPC_REQUEST: &str = "concord_grpc_request_duration_seconds";
/// Database connections by `pool` (durable, relaxed) and `state` (idle,
/// in_use).
pub const DB_CONNECTIONS: &str = "concord_db_pool_connections";
/// Largest size of each database `pool`.
pub const DB_MAX_CONNECTIONS: &str = "concord_db_pool_max_connections";
/// Finished transactions deleted by retention (with their branches and
/// events).
pub const RETENTION_DELETED: &str = "concord_retention_deleted_total";
/// Failed database samples of the gauges above.
pub const SAMPLE_ERRORS: &str = "concord_metrics_sample_errors_total";
/// Requests refused by authentication or a missing scope, by `code`
/// (UNAUTHENTICATED, PERMISSION_DENIED).
pub const AUTH_REFUSED: &str = "concord_auth_refused_total";
/// Requests refused by a per-identity limit, by `identity` (a configured
/// name) and `limit` (concurrency, rate).
pub const IDENTITY_LIMITED: &str = "concord_identity_limited_total";

/// Latency buckets, in seconds, of every `_duration_seconds` histogram.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder the first time it is called and
/// returns the handle that renders it. `None` when another recorder was
/// installed first (an embedding program's): metrics then go there.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder is installed already; /metrics stays empty");
                return None;
            }
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(TX_BEGUN, "transactions created, by mode");
    describe_counter!(
        TX_FINISHED,
        "transactions finished on this instance, by mode and status"
    );
    describe_gauge!(
        TX_OPEN,
        "unfinished transactions in the database, by status"
    );
    describe_gauge!(
        TX_NEEDS_ATTENTION,
        "unfinished transactions flagged needs_attention"
    );
    describe_gauge!(
        TX_OLDEST_AGE,
        Unit::Seconds,
        "age of the oldest unfinished transaction"
    );
    describe_histogram!(PARTICIPANT_CALL, Unit::Seconds, "participant call latency");
    describe_counter!(RETRIES, "retries scheduled after a failed round, by mode");
    describe_counter!(RECOVERY_CLAIMS, "transactions claimed by the recovery loop");
    describe_counter!(
        REDRIVEN,
        "transactions made due at once because a participant they wait on is back"
    );
    describe_counter!(
        LEASE_TAKEOVERS,
        "expired leases of other instances taken over"
    );
    describe_counter!(LEASES_LOST, "leases this instance failed to renew");
    describe_counter!(
        LEASES_EXTENDED,
        "leases extended before a call that would have outlived them"
    );
    describe_gauge!(LEASES_HELD, "leases this instance holds");
    describe_gauge!(
        BREAKER_STATE,
        "circuit breaker: 0 closed, 1 half-open, 2 open"
    );
    describe_histogram!(
        GRPC_REQUEST,
        Unit::Seconds,
        "grpc request latency by method and code"
    );
    describe_gauge!(DB_CONNECTIONS, "database connections by pool and state");
    describe_gauge!(DB_MAX_CONNECTIONS, "largest size of each database pool");
    describe_counter!(
        RETENTION_DELETED,
        "finished transactions deleted by retention"
    );
    describe_counter!(SAMPLE_ERRORS, "failed database samples of the gauges");
    describe_counter!(
        AUTH_REFUSED,
        "requests refused by authentication or a missing scope, by code"
    );
    describe_counter!(
        IDENTITY_LIMITED,
        "requests refused by a per-identity limit, by identity and limit"
    );
}

pub fn tx_begun(mode: Mode) {
    counter!(TX_BEGUN, "mode" => mode.as_str()).increment(1);
}

pub fn tx_finished(mode: Mode, status: Status) {
    counter!(TX_FINISHED, "mode" => mode.as_str(), "status" => status.as_str()).increment(1);
}

/// The `outcome` label of a participant call.
pub fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "ok",
        Outcome::Rejected { .. } => "rejected",
        Outcome::Unknown { .. } => "unknown",
    }
}

pub fn participant_call(
    participant: &str,
    action: &str,
    phase: Phase,
    outcome: &Outcome,
    elapsed: Duration,
) {
    histogram!(PARTICIPANT_CALL,
        "participant" => participant.to_string(),
        "action" => action.to_string(),
        "phase" => phase.as_str(),
        "outcome" => outcome_label(outcome))
    .record(elapsed.as_secs_f64());
}

pub fn retry_scheduled(mode: Mode) {
    counter!(RETRIES, "mode" => mode.as_str()).increment(1);
}

/// A recovery claim of `claimed` transactions, `takeovers` of them from an
/// instance whose lease expired.
pub fn recovery_claimed(claimed: usize, takeovers: usize) {
    counter!(RECOVERY_CLAIMS).increment(claimed as u64);
    counter!(LEASE_TAKEOVERS).increment(takeovers as u64);
}

pub fn redriven(participant: &str, n: u64) {
    counter!(REDRIVEN, "participant" => participant.to_string()).increment(n);
}

pub fn lease_extended() {
    counter!(LEASES_EXTENDED).increment(1);
}

pub fn leases_lost(n: usize) {
    counter!(LEASES_LOST).increment(n as u64);
}

/// One gRPC request served; `code` is the status code's name (`OK`,
/// `NOT_FOUND`, ...).
pub fn grpc_request(method: &'static str, code: &'static str, elapsed: Duration) {
    histogram!(GRPC_REQUEST, "method" => method, "code" => code).record(elapsed.as_secs_f64());
}

/// A request refused before its handler: no or a wrong credential, or a
/// missing scope.
pub fn auth_refused(code: &'static str) {
    counter!(AUTH_REFUSED, "code" => code).increment(1);
}

/// A request refused by its identity's concurrency or rate limit.
pub fn identity_limited(identity: &str, limit: &'static str) {
    counter!(IDENTITY_LIMITED, "identity" => identity.to_string(), "limit" => limit).increment(1);
}

pub fn retention_deleted(n: u64) {
    counter!(RETENTION_DELETED).increment(n);
}

/// Sets the gauges of unfinished transactions: per non-final status, the
/// ones flagged needs_attention and the age of the oldest.
pub fn set_open(by_status: &[(Status, u64)], needs_attention: u64, oldest_age: Duration) {
    for status in Status::ALL.into_iter().filter(|s| !s.is_final()) {
        let n = by_status
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n);
        gauge!(TX_OPEN, "status" => status.as_str()).set(n as f64);
    }
    gauge!(TX_NEEDS_ATTENTION).set(needs_attention as f64);
    gauge!(TX_OLDEST_AGE).set(oldest_age.as_secs_f64());
}

/// A failed sample of the database-backed gauges.
pub fn sample_failed() {
    counter!(SAMPLE_ERRORS).increment(1);
}

/// Sets the connection gauges of one database pool.
pub fn set_pool(name: &'static str, size: u32, idle: u32, max: u32) {
    gauge!(DB_CONNECTIONS, "pool" => name, "state" => "idle").set(idle as f64);
    gauge!(DB_CONNECTIONS, "pool" => name, "state" => "in_use")
        .set(size.saturating_sub(idle) as f64);
    gauge!(DB_MAX_CONNECTIONS, "pool" => name).set(max as f64);
}

pub fn set_leases_held(n: usize) {
    gauge!(LEASES_HELD).set(n as f64);
}

/// Sets an endpoint's breaker gauge: 0 closed, 1 half-open, 2 open.
pub fn set_breaker(endpoint: &str, state: BreakerState) {
    let value = match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
    };
    gauge!(BREAKER_STATE, "endpoint" => endpoint.to_string()).set(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_renders_what_was_recorded() {
        let a = install().expect("first recorder of the test process");
        let b = install().expect("same recorder");
        tx_begun(Mode::Saga);
        retention_deleted(3);
        participant_call(
            "bank",
            "transfer",
            Phase::Try,
            &Outcome::Rejected {
                message: "no".into(),
            },
            Duration::from_millis(3),
        );
        let text = b.render();
        assert!(
            text.contains("concord_transactions_begun_total{mode=\"saga\"}"),
            "{text}"
        );
        assert!(text.contains("concord_retention_deleted_total"), "{text}");
        assert!(
            text.contains("concord_participant_call_duration_seconds_bucket{participant=\"bank\",action=\"transfer\",phase=\"try\",outcome=\"rejected\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert_eq!(a.render().len(), text.len());
    }
}
