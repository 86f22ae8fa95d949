//! The transaction state machines, pure and free of I/O: they take a
//! state, an event (a command, a participant's reply, a passed deadline, an
//! operator's command) and the time, and return the new state plus what to
//! do next. The engine performs those effects and the store persists the
//! state with a compare-and-set, so this module alone says what is legal.
//!
//! [`tcc`] is the TCC transaction, [`saga`] the saga, [`msg`] the 2-phase
//! message, [`operator`] what an operator's command means for each,
//! [`policy`] when a branch's retries are exhausted. This file holds the
//! vocabulary they share.

use chrono::Duration;

pub mod msg;
pub mod operator;
pub mod policy;
pub mod saga;
pub mod tcc;

/// Kind of global transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcc,
    Saga,
    /// 2-phase message: prepared, then submitted (or aborted) by the
    /// initiator after its local transaction; see [`msg`].
    Msg,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Tcc => "tcc",
            Mode::Saga => "saga",
            Mode::Msg => "msg",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcc" => Some(Mode::Tcc),
            "saga" => Some(Mode::Saga),
            "msg" => Some(Mode::Msg),
            _ => None,
        }
    }
}

/// Status of a global transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Trying,
    Confirming,
    Confirmed,
    Cancelling,
    Cancelled,
    /// Saga: actions running.
    Running,
    /// Saga: every action succeeded. Message: every step succeeded.
    Succeeded,
    /// Saga: a step was rejected (or the deadline passed); compensating.
    Compensating,
    /// Saga: every step that ran or may have run is compensated.
    Compensated,
    /// Message: prepared, waiting for the initiator's submit or abort (or,
    /// past its timeout, for the initiator's answer to the query-back).
    Prepared,
    /// Message: submitted; its steps are executed until each succeeds.
    Submitted,
    /// Message: aborted by the initiator, or its local transaction rolled
    /// back (query-back); no step was executed.
    Aborted,
}

impl Status {
    pub const ALL: [Status; 12] = [
        Status::Trying,
        Status::Confirming,
        Status::Confirmed,
        Status::Cancelling,
        Status::Cancelled,
        Status::Running,
        Status::Succeeded,
        Status::Compensating,
        Status::Compensated,
        Status::Prepared,
        Status::Submitted,
        Status::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Trying => "trying",
            Status::Confirming => "confirming",
            Status::Confirmed => "confirmed",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Compensating => "compensating",
            Status::Compensated => "compensated",
            Status::Prepared => "prepared",
            Status::Submitted => "submitted",
            Status::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No further change will happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Confirmed
                | Status::Cancelled
                | Status::Succeeded
                | Status::Compensated
                | Status::Aborted
        )
    }

    /// The phase-2 call a branch gets in this status, if any.
    pub fn second_phase(self) -> Option<Phase> {
        match self {
            Status::Confirming => Some(Phase::Confirm),
            Status::Cancelling => Some(Phase::Cancel),
            _ => None,
        }
    }

    fn finished(self) -> Option<Status> {
        match self {
            Status::Confirming => Some(Status::Confirmed),
            Status::Cancelling => Some(Status::Cancelled),
            _ => None,
        }
    }
}

/// Which participant RPC a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Try,
    Confirm,
    Cancel,
    Execute,
    Compensate,
    /// Message: the coordinator asks the initiator whether the local
    /// transaction of a prepared message committed.
    QueryPrepared,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Try => "try",
            Phase::Confirm => "confirm",
            Phase::Cancel => "cancel",
            Phase::Execute => "execute",
            Phase::Compensate => "compensate",
            Phase::QueryPrepared => "query_prepared",
        }
    }
}

/// What is known of one phase of a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    /// Not called yet, or called with no reply recorded.
    Pending,
    Succeeded,
    /// The participant answered ABORTED.
    Rejected,
    /// The last call failed without a definite answer.
    Unknown,
    /// This phase will not be called.
    NotRequired,
    /// An operator skipped this call after doing its work by hand (a
    /// stuck Confirm, Cancel or compensation): done, but not by the
    /// participant, and shown so (never as succeeded).
    Skipped,
}

impl CallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Pending => "pending",
            CallStatus::Succeeded => "succeeded",
            CallStatus::Rejected => "rejected",
            CallStatus::Unknown => "unknown",
            CallStatus::NotRequired => "not_required",
            CallStatus::Skipped => "skipped",
        }
    }

    /// Nothing more is owed: it succeeded, or an operator skipped it.
    pub fn is_done(self) -> bool {
        matches!(self, CallStatus::Succeeded | CallStatus::Skipped)
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            CallStatus::Pending,
            CallStatus::Succeeded,
            CallStatus::Rejected,
            CallStatus::Unknown,
            CallStatus::NotRequired,
            CallStatus::Skipped,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// The reply of one participant call, classified by the outcome contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// gRPC OK.
    Succeeded,
    /// gRPC ABORTED: a final business "no".
    Rejected { message: String },
    /// Anything else: the call may or may not have had its effect.
    Unknown { code: String, message: String },
}

impl Outcome {
    pub fn call_status(&self) -> CallStatus {
        match self {
            Outcome::Succeeded => CallStatus::Succeeded,
            Outcome::Rejected { .. } => CallStatus::Rejected,
            Outcome::Unknown { .. } => CallStatus::Unknown,
        }
    }

    /// gRPC code name, as recorded in events.
    pub fn code(&self) -> &str {
        match self {
            Outcome::Succeeded => "OK",
            Outcome::Rejected { .. } => "ABORTED",
            Outcome::Unknown { code, .. } => code,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Outcome::Succeeded => "",
            Outcome::Rejected { message } | Outcome::Unknown { message, .. } => message,
        }
    }
}

/// When a transaction still retrying must be shown to a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalation {
    pub max_attempts: u32,
    pub max_age: Duration,
}
