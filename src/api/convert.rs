//! Conversions between wire types and domain types.

use chrono::{DateTime, Utc};
use concord_proto::v1 as pb;

use crate::domain::Protocol;
use crate::error::Error;
use crate::machine::policy::{ActionPolicy, CallPolicy, CodeSet, HttpStatusSet, RetrySpec};
use crate::machine::{CallStatus, Mode, Status};
use crate::store::{BranchRecord, EventRecord, TxRecord};

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// An optional wire duration; negative ones are refused naming `field`.
pub fn optional_duration(
    field: &str,
    d: Option<&prost_types::Duration>,
) -> Result<Option<std::time::Duration>, crate::error::Error> {
    d.map(|d| {
        duration(d).ok_or_else(|| {
            crate::error::Error::InvalidArgument(format!("{field} must not be negative"))
        })
    })
    .transpose()
}

pub fn duration(d: &prost_types::Duration) -> Option<std::time::Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return None;
    }
    Some(std::time::Duration::new(d.seconds as u64, d.nanos as u32))
}

pub fn status(s: Status) -> pb::TransactionStatus {
    match s {
        Status::Trying => pb::TransactionStatus::Trying,
        Status::Confirming => pb::TransactionStatus::Confirming,
        Status::Confirmed => pb::TransactionStatus::Confirmed,
        Status::Cancelling => pb::TransactionStatus::Cancelling,
        Status::Cancelled => pb::TransactionStatus::Cancelled,
        Status::Running => pb::TransactionStatus::Running,
        Status::Succeeded => pb::TransactionStatus::Succeeded,
        Status::Compensating => pb::TransactionStatus::Compensating,
        Status::Compensated => pb::TransactionStatus::Compensated,
        Status::Prepared => pb::TransactionStatus::Prepared,
        Status::Submitted => pb::TransactionStatus::Submitted,
        Status::Aborted => pb::TransactionStatus::Aborted,
    }
}

pub fn call_status(s: CallStatus) -> pb::CallStatus {
    match s {
        CallStatus::Pending => pb::CallStatus::Pending,
        CallStatus::Succeeded => pb::CallStatus::Succeeded,
        CallStatus::Rejected => pb::CallStatus::Rejected,
        CallStatus::Unknown => pb::CallStatus::Unknown,
        CallStatus::NotRequired => pb::CallStatus::NotRequired,
        CallStatus::Skipped => pb::CallStatus::Skipped,
    }
}

pub fn mode(m: Mode) -> pb::TransactionMode {
    match m {
        Mode::Tcc => pb::TransactionMode::Tcc,
        Mode::Saga => pb::TransactionMode::Saga,
        Mode::Msg => pb::TransactionMode::Msg,
    }
}

/// A wire protocol of an endpoint; unspecified is gRPC.
pub fn protocol(raw: i32) -> Result<Protocol, Error> {
    match pb::Protocol::try_from(raw) {
        Ok(pb::Protocol::Unspecified | pb::Protocol::Grpc) => Ok(Protocol::Grpc),
        Ok(pb::Protocol::Http) => Ok(Protocol::Http),
        Err(_) => Err(Error::InvalidArgument(format!("unknown protocol {raw}"))),
    }
}

pub fn branch(b: &BranchRecord) -> pb::Branch {
    pb::Branch {
        branch_id: b.branch_id.to_string(),
        participant: b.participant.to_string(),
        action: b.action.to_string(),
        first_phase: call_status(b.first_phase) as i32,
        second_phase: call_status(b.owed_phase()) as i32,
        attempts: b.attempts,
        last_code: b.last_code.clone().unwrap_or_default(),
        last_error: b.last_error.clone().unwrap_or_default(),
        created_at: Some(timestamp(b.created_at)),
        updated_at: Some(timestamp(b.updated_at)),
        compensation: b
            .compensation
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        depends_on: b.depends_on.iter().map(|&d| d as u32).collect(),
        call_timeout: b.call_timeout.map(|d| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        policy: call_policy_pb(&b.policy),
    }
}

pub fn event(e: &EventRecord) -> pb::Event {
    pb::Event {
        id: e.id,
        at: Some(timestamp(e.at)),
        kind: e.kind.clone(),
        branch_id: e.branch_id.clone().unwrap_or_default(),
        phase: e.phase.clone().unwrap_or_default(),
        attempt: e.attempt.map_or(0, |a| a.max(0) as u32),
        code: e.code.clone().unwrap_or_default(),
        message: e.message.clone().unwrap_or_default(),
        actor: e.actor.clone().unwrap_or_default(),
        status: e
            .status
            .as_deref()
            .and_then(Status::parse)
            .map_or(pb::TransactionStatus::Unspecified, status) as i32,
    }
}

pub fn transaction(
    tx: &TxRecord,
    branches: &[BranchRecord],
    events: &[EventRecord],
) -> pb::Transaction {
    pb::Transaction {
        gid: tx.gid.to_string(),
        mode: mode(tx.mode) as i32,
        status: status(tx.status) as i32,
        branches: branches
            .iter()
            .map(|b| {
                let mut pb = branch(b);
                // A decided transaction's branch without a recorded round is
                // owed its call: show it as pending.
                if tx.status.second_phase().is_some() && b.second_phase == CallStatus::NotRequired {
                    pb.second_phase = pb::CallStatus::Pending as i32;
                }
                pb
            })
            .collect(),
        created_at: Some(timestamp(tx.created_at)),
        updated_at: Some(timestamp(tx.updated_at)),
        deadline: tx.has_deadline().then(|| timestamp(tx.deadline)),
        metadata: tx.metadata.clone().into_iter().collect(),
        needs_attention: tx.needs_attention,
        attention_reason: tx.attention_reason.clone().unwrap_or_default(),
        rollback_reason: tx.rollback_reason.clone().unwrap_or_default(),
        next_attempt_at: tx
            .next_attempt_at
            .filter(|_| !tx.status.is_final())
            .map(timestamp),
        lease_owner: tx.owner.clone().unwrap_or_default(),
        events: events.iter().map(event).collect(),
        initiator: tx.initiator.clone().unwrap_or_default(),
    }
}

/// A request's call policy, checked; `field` names it in errors.
pub fn call_policy(
    field: &str,
    p: Option<&pb::CallPolicy>,
) -> Result<CallPolicy, crate::error::Error> {
    let Some(p) = p else {
        return Ok(CallPolicy::default());
    };
    let bad = |m: &str| crate::error::Error::InvalidArgument(format!("{field}: {m}"));
    let initial = optional_duration(&format!("{field}: retry_initial"), p.retry_initial.as_ref())?;
    let max = optional_duration(&format!("{field}: retry_max"), p.retry_max.as_ref())?;
    let retry = match (initial, max) {
        (None, None) if p.retry_factor.is_some() || p.retry_jitter.is_some() => {
            return Err(bad(
                "retry_factor and retry_jitter need retry_initial and retry_max",
            ));
        }
        (None, None) => None,
        (Some(initial), Some(max)) => {
            let factor = p.retry_factor.unwrap_or(2.0);
            if initial.is_zero() {
                return Err(bad("retry_initial must be positive"));
            }
            if max < initial {
                return Err(bad("retry_max must not be below retry_initial"));
            }
            if !(factor.is_finite() && factor >= 1.0) {
                return Err(bad("retry_factor must be at least 1"));
            }
            Some(RetrySpec {
                initial,
                factor,
                max,
                jitter: p.retry_jitter.unwrap_or(true),
            })
        }
        _ => return Err(bad("give both retry_initial and retry_max, or neither")),
    };
    let max_age = optional_duration(&format!("{field}: max_age"), p.max_age.as_ref())?
        .filter(|a| !a.is_zero());
    let non_retryable = CodeSet::parse(p.non_retryable_codes.iter().map(String::as_str))
        .map_err(|e| bad(&format!("non_retryable_codes: {e}")))?;
    let non_retryable_http = HttpStatusSet::parse(p.non_retryable_http_statuses.iter().copied())
        .map_err(|e| bad(&format!("non_retryable_http_statuses: {e}")))?;
    Ok(CallPolicy {
        retry,
        max_attempts: (p.max_attempts > 0).then_some(p.max_attempts),
        max_age,
        non_retryable,
        non_retryable_http,
    })
}

/// An action's call timeout and policy declared at registration, checked
/// like a request's; `field` names the action in errors (`actions[2]`).
pub fn action_policy(field: &str, a: &pb::Action) -> Result<ActionPolicy, crate::error::Error> {
    let call_timeout =
        optional_duration(&format!("{field}: call_timeout"), a.call_timeout.as_ref())?;
    if call_timeout.is_some_and(|t| t.is_zero()) {
        return Err(crate::error::Error::InvalidArgument(format!(
            "{field}: call_timeout must be positive"
        )));
    }
    Ok(ActionPolicy {
        call_timeout,
        policy: call_policy(&format!("{field}: policy"), a.policy.as_ref())?,
    })
}

/// A registered action with the call timeout and policy it declared.
pub fn action(name: &crate::domain::ActionName, p: &ActionPolicy) -> pb::Action {
    pb::Action {
        name: name.to_string(),
        call_timeout: p.call_timeout.map(|d| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        policy: call_policy_pb(&p.policy),
    }
}

/// A stored policy as the API shows it; `None` for the default one.
pub fn call_policy_pb(p: &CallPolicy) -> Option<pb::CallPolicy> {
    if p.is_default() {
        return None;
    }
    let d = |d: std::time::Duration| prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    };
    Some(pb::CallPolicy {
        retry_initial: p.retry.map(|r| d(r.initial)),
        retry_factor: p.retry.map(|r| r.factor),
        retry_max: p.retry.map(|r| d(r.max)),
        retry_jitter: p.retry.map(|r| r.jitter),
        max_attempts: p.max_attempts.unwrap_or(0),
        max_age: p.max_age.map(d),
        non_retryable_codes: p
            .non_retryable
            .names()
            .into_iter()
            .map(String::from)
            .collect(),
        non_retryable_http_statuses: p
            .non_retryable_http
            .statuses()
            .into_iter()
            .map(u32::from)
            .collect(),
    })
}
