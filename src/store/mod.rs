//! Durable state behind a narrow trait: global transactions, branches,
//! events, leases and the participant registry. [`Store`] is what the
//! engine needs; [`admin::AdminStore`] adds the operator's queries and the
//! server's housekeeping (gauges, retention). Two implementations:
//! PostgreSQL ([`postgres::PgStore`], for one or several instances) and an
//! embedded SQLite file ([`sqlite::SqliteStore`], for one instance, the
//! default when no database is configured); [`location`] says which one a
//! configuration names.
//!
//! Every method is one statement (or one short transaction), and every write
//! made while driving a transaction carries the lease's fencing token, so an
//! instance whose lease was taken over matches no row and changes nothing.
//! The store decides nothing: it persists the state the state machine
//! computed, guarded by compare-and-set on what the caller read.

pub mod admin;
mod batch;
pub mod cache;
pub mod health;
mod history;
pub mod location;
mod policy;
pub mod postgres;
mod progress;
mod records;
mod rows;
pub mod sqlite;
pub mod sqlstate;
mod text;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::Countdown;
use crate::domain::{ActionName, BranchId, Endpoint, Gid, ParticipantName, UrlCall};
use crate::machine::policy::{ActionPolicy, CallPolicy};
use crate::machine::tcc::TxState;
use crate::machine::{CallStatus, Outcome, Phase, Status};

pub use records::*;

/// Errors of the storage layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or timed out; worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness or check constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row holds a value this version does not understand.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What the first event of a transaction says of who began it: `"; begun
/// by NAME"`, or nothing when authentication was off.
pub fn begun_by(initiator: Option<&str>) -> String {
    initiator.map_or_else(String::new, |who| format!("; begun by {who}"))
}

/// A new TCC transaction.
#[derive(Debug, Clone)]
pub struct NewTransaction {
    pub gid: Gid,
    pub metadata: Metadata,
    pub timeout: Duration,
    pub deadline: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub actor: String,
    /// The identity beginning it (`None`: authentication is off).
    pub initiator: Option<String>,
}

/// Result of [`Store::begin`].
#[derive(Debug, Clone)]
pub enum Begun {
    Created,
    /// A transaction with that gid already exists (as it is now).
    Existing(Box<TxRecord>),
}

/// A branch to register before its Try is called.
#[derive(Debug, Clone)]
pub struct NewBranch {
    pub gid: Gid,
    /// `None` lets the store assign the next number.
    pub branch_id: Option<BranchId>,
    pub participant: ParticipantName,
    pub action: ActionName,
    pub payload: Vec<u8>,
    pub call_timeout: Option<Duration>,
    /// Its phase-2 retry policy.
    pub policy: CallPolicy,
    /// How long the Try about to be sent may run, margin included: the
    /// branch records that a call is out until then (`call_until`).
    pub call_cover: Countdown,
    pub now: DateTime<Utc>,
    pub actor: String,
    /// A branch called by URL (DTM's TCC): its Confirm and Cancel URLs.
    pub url_call: Option<UrlCall>,
    /// The initiator calls the Try itself (DTM's TCC registers a branch,
    /// then calls its Try, then submits): the branch is stored with its
    /// Try succeeded, as the initiator's submit asserts; a rollback cancels
    /// it like any branch.
    pub tried_by_initiator: bool,
}

/// Result of [`Store::add_branch`].
#[derive(Debug, Clone)]
pub enum BranchAdded {
    /// Committed; the Try may be called now. `metadata` is the
    /// transaction's, to forward to the participant.
    Added {
        branch: BranchRecord,
        metadata: Metadata,
        /// The transaction's branch counter after this insert.
        seq: i32,
    },
    /// A branch with that id exists already (the transaction is trying).
    Existing {
        branch: BranchRecord,
        metadata: Metadata,
    },
    /// The transaction does not accept branches (or does not exist); the
    /// caller asks the state machine why.
    NotAccepted(Option<TxRecord>),
}

/// A decision to persist with compare-and-set on what was read.
#[derive(Debug, Clone)]
pub struct Decision {
    pub gid: Gid,
    pub expected_status: Status,
    pub expected_branch_seq: i32,
    pub expected_fence: i64,
    pub next: TxState,
    pub owner: String,
    pub lease: Countdown,
    pub now: DateTime<Utc>,
    pub actor: String,
}

/// The right to drive one transaction: valid while the row's fence matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub gid: Gid,
    pub fence: i64,
}

/// A lease obtained by the recovery loop.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub lease: Lease,
    /// Owner whose expired lease this claim took over, if any.
    pub previous_owner: Option<String>,
}

/// One participant call's outcome, to record.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub branch_id: BranchId,
    pub phase: Phase,
    pub attempt: u32,
    pub outcome: Outcome,
}

/// The result of one phase-2 round, written under the lease.
#[derive(Debug, Clone)]
pub struct RoundWrite {
    pub lease: Lease,
    pub owner: String,
    pub next: TxState,
    pub calls: Vec<CallRecord>,
    /// `None` when the transaction is final.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Set when this round raised the needs-attention flag.
    pub newly_flagged: bool,
    pub now: DateTime<Utc>,
}

/// One step of a saga to submit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStep {
    pub participant: ParticipantName,
    pub action: ActionName,
    pub compensation: ActionName,
    pub payload: Vec<u8>,
    /// Effective dependencies (sequential sagas made explicit).
    pub depends_on: Vec<usize>,
    pub compensate_rejected: bool,
    pub call_timeout: Option<Duration>,
    pub policy: CallPolicy,
    /// A step called by URL (the DTM-compatible API).
    pub url_call: Option<UrlCall>,
}

/// A saga to submit; it is leased to the submitting instance at once.
#[derive(Debug, Clone)]
pub struct NewSaga {
    pub gid: Gid,
    pub steps: Vec<NewStep>,
    pub metadata: Metadata,
    pub timeout: Option<Duration>,
    pub deadline: DateTime<Utc>,
    pub concurrency: u32,
    pub owner: String,
    pub lease: Countdown,
    pub now: DateTime<Utc>,
    /// The identity submitting it (`None`: authentication is off).
    pub initiator: Option<String>,
}

/// Result of [`Store::submit_saga`].
#[derive(Debug, Clone)]
pub enum SagaSubmitted {
    /// Committed with every step; the submitter holds `Lease`.
    Created(Lease),
    /// A transaction with that gid exists already.
    Existing(Box<(TxRecord, Vec<BranchRecord>)>),
}

/// One step of a message to prepare (steps run in the order given).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMsgStep {
    pub participant: ParticipantName,
    pub action: ActionName,
    pub payload: Vec<u8>,
    pub call_timeout: Option<Duration>,
    /// A step called by URL (the DTM-compatible API).
    pub url_call: Option<UrlCall>,
}

/// A message to prepare: durable with its steps and its query-back
/// endpoint, unleased, due (for the query-back) at `deadline`.
#[derive(Debug, Clone)]
pub struct NewMsg {
    pub gid: Gid,
    pub steps: Vec<NewMsgStep>,
    /// `None`: a message submitted at once, with nobody to ask back (DTM's
    /// submit without prepare); one left prepared is then flagged.
    pub query: Option<Endpoint>,
    pub metadata: Metadata,
    pub timeout: Duration,
    pub deadline: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub actor: String,
    /// The identity preparing it (`None`: authentication is off).
    pub initiator: Option<String>,
}

/// Result of [`Store::prepare_msg`].
#[derive(Debug, Clone)]
pub enum MsgPrepared {
    Created,
    /// A transaction with that gid exists already, with its query-back
    /// endpoint when it is a message.
    Existing(Box<(TxRecord, Vec<BranchRecord>, Option<Endpoint>)>),
}

/// The initiator's submit or abort of a prepared message, as the state
/// machine computed it; compare-and-set on the prepared status. It bumps
/// the fence, so that an instance busy asking the initiator back writes
/// nothing afterwards.
#[derive(Debug, Clone)]
pub struct MsgDecision {
    pub gid: Gid,
    pub next: crate::machine::msg::MsgState,
    /// Lease the (submitted) message to this owner to execute its steps.
    pub owner: String,
    pub lease: Countdown,
    pub now: DateTime<Utc>,
    pub actor: String,
}

/// A query-back of a message and the initiator's answer, to record.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    pub attempt: u32,
    pub outcome: Outcome,
}

/// A saga's progress after one reply (or a deadline), written under the
/// lease. Messages are written the same way (see `machine::msg`).
#[derive(Debug, Clone)]
pub struct SagaWrite {
    /// Saga or Msg: a saga's success path is left to its rows (`history`).
    pub mode: crate::machine::Mode,
    pub lease: Lease,
    pub owner: String,
    pub state: crate::machine::saga::SagaState,
    /// Steps whose row changed.
    pub steps: Vec<usize>,
    pub calls: Vec<CallRecord>,
    /// A message's query-back made in this write.
    pub query: Option<QueryRecord>,
    /// Status changed (to compensating or final): record it as an event.
    pub status_changed: bool,
    pub newly_flagged: bool,
    /// Give the lease back (final, or waiting for a retry).
    pub release: bool,
    /// `None` when final.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// Storage of everything the coordinator must not forget.
#[tonic::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a transaction unless its gid exists.
    async fn begin(&self, tx: NewTransaction) -> StoreResult<Begun>;

    /// Registers a branch, atomically with a check that the transaction is
    /// trying and before its deadline. Durable when it returns `Added`.
    async fn add_branch(&self, branch: NewBranch) -> StoreResult<BranchAdded>;

    /// Records the reply of a Try on its branch if the branch's phase 2
    /// is still `expected_second_phase` (compare-and-set; the caller names
    /// the state with [`tcc::try_record_applies`](crate::machine::tcc::try_record_applies)),
    /// and the call in the history in any case.
    async fn record_try(
        &self,
        gid: &Gid,
        call: &CallRecord,
        expected_second_phase: CallStatus,
        now: DateTime<Utc>,
        actor: &str,
    ) -> StoreResult<()>;

    /// Takes what this store remembers of a transaction it wrote on this
    /// instance (see [`cache::Remembering`]), to decide without reading it
    /// back; `None` when it remembers nothing (the default).
    fn take_remembered(&self, _gid: &Gid) -> Option<(TxRecord, Vec<BranchRecord>)> {
        None
    }

    /// Reads a transaction and its branches.
    async fn load(&self, gid: &Gid) -> StoreResult<Option<(TxRecord, Vec<BranchRecord>)>>;

    /// Reads a transaction's history, oldest first: its stored events and,
    /// for a saga, those its rows tell (`history`: id 0, no actor).
    async fn events(&self, gid: &Gid) -> StoreResult<Vec<EventRecord>>;

    /// Persists a decision if the row still is as read; returns the lease
    /// the deciding instance now holds, or `None` if the row moved on.
    async fn decide(&self, decision: Decision) -> StoreResult<Option<Lease>>;

    /// Writes a phase-2 round and releases the lease; `false` if the lease
    /// was lost (fenced out) and nothing was written.
    async fn write_round(&self, round: RoundWrite) -> StoreResult<bool>;

    /// Inserts a saga and all its steps in one durable commit, leased to
    /// the submitter, unless its gid exists.
    async fn submit_saga(&self, saga: NewSaga) -> StoreResult<SagaSubmitted>;

    /// Writes a saga's progress; `false` if the lease was lost.
    async fn write_saga(&self, write: SagaWrite) -> StoreResult<bool>;

    /// Claims up to `limit` transactions that are due and not leased.
    async fn claim_due(
        &self,
        owner: &str,
        limit: i64,
        lease: Duration,
    ) -> StoreResult<Vec<Claimed>>;

    /// How long from the database's now until the earliest moment, within
    /// `horizon`, at which [`Store::claim_due`] would find a transaction
    /// due (its retry time come and its lease, if any, expired): zero when
    /// one is due already, `None` when none becomes due within `horizon`.
    /// The recovery loop sleeps that long rather than a whole poll
    /// interval, so that a takeover follows an expired lease at once.
    async fn next_due(&self, horizon: Duration) -> StoreResult<Option<Duration>>;

    /// Extends the given leases to at least `lease` from now (never
    /// shortens one); returns the ones still held.
    async fn renew(&self, owner: &str, leases: &[Lease], lease: Duration) -> StoreResult<Vec<Gid>>;

    /// Extends one held lease to at least what is left of `cover`, durably,
    /// before a call that may run that long is sent; `false` if the lease
    /// is no longer this owner's (fenced out).
    async fn extend_lease(&self, owner: &str, lease: &Lease, cover: Countdown)
    -> StoreResult<bool>;

    /// Marks that a repeated Try of an existing branch is about to be sent
    /// and may run for `cover`, unless a Try of it is still out (its
    /// `call_until` not passed): `false` then, and nothing is changed.
    async fn claim_try_call(
        &self,
        gid: &Gid,
        branch_id: &BranchId,
        cover: Countdown,
    ) -> StoreResult<bool>;

    /// Gives leases back so any instance may drive them at once.
    async fn release(&self, owner: &str, leases: &[Lease]) -> StoreResult<u64>;

    /// `participant` is back: makes every unfinished, unpaused transaction
    /// with an unfinished call on it due now instead of at its backoff
    /// time, and records why in its history (actor `actor`). Takes no
    /// lease, so any instance's recovery loop may claim the work. Returns
    /// how many transactions moved.
    async fn redrive(&self, participant: &ParticipantName, actor: &str) -> StoreResult<u64>;

    /// Registers (or refreshes) one participant endpoint and its actions;
    /// a repeated registration may change the endpoint's protocol.
    async fn register_participant(
        &self,
        name: &ParticipantName,
        endpoint: &Endpoint,
        actions: &[ActionName],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Every registered participant with its actions and endpoints.
    async fn list_participants(&self) -> StoreResult<Vec<ParticipantRecord>>;

    /// Inserts a prepared message, its steps and its query-back endpoint
    /// in one statement, unless its gid exists.
    async fn prepare_msg(&self, msg: NewMsg) -> StoreResult<MsgPrepared>;

    /// Persists the initiator's submit or abort of a prepared message; the
    /// new lease (a submitted message is leased to `owner`), `None` when the
    /// message was not prepared any more or an operator resolved it.
    async fn decide_msg(&self, decision: MsgDecision) -> StoreResult<Option<Lease>>;

    /// Where to ask the initiator of a message back.
    async fn msg_query(&self, gid: &Gid) -> StoreResult<Option<Endpoint>>;

    /// True when the database answers and the schema is migrated.
    async fn ready(&self) -> StoreResult<()>;

    /// Replaces the call timeout and policy declared for each of
    /// `policies`' actions of a registered participant (the default one
    /// clears them); called right after [`Store::register_participant`]
    /// with every action of the registration, so that a participant that
    /// registers again without a policy drops the old one.
    async fn set_action_policies(
        &self,
        name: &ParticipantName,
        policies: &[(ActionName, ActionPolicy)],
    ) -> StoreResult<()>;
}
