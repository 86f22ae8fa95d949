//! The engine: runs initiator commands (begin, try, commit, rollback) by
//! asking the state machine what is legal, persisting through the store and
//! calling participants. Phase 2 lives in `driver`, the recovery loop in
//! `recovery`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use concord_proto::participant::v1::BranchRequest;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::domain::{ActionName, BranchId, Gid, ParticipantName};
use crate::error::{Error, Result};
use crate::leases::Leases;
use crate::machine::{
    self, CallStatus, Command, Escalation, Outcome, Phase, Refusal, Status, Verdict,
};
use crate::participant_client::ParticipantClients;
use crate::registry::Registry;
use crate::retry::RetryPolicy;
use crate::store::{
    Begun, BranchAdded, BranchRecord, CallRecord, Decision, EventRecord, Metadata, NewBranch,
    NewTransaction, Store, TxRecord,
};

/// Largest number of metadata entries, and of bytes in a key or a value.
pub const MAX_METADATA_ENTRIES: usize = 32;
pub const MAX_METADATA_KEY: usize = 128;
pub const MAX_METADATA_VALUE: usize = 2048;
/// Longest rollback reason kept.
pub const MAX_REASON: usize = 1024;
/// How long a Commit that finds a Try still pending in the database waits
/// for its record before refusing: the record of a successful Try is
/// written after the Try's reply, normally within milliseconds, and an
/// initiator commits only after its Tries replied, so a Try still pending
/// after this is one whose record was lost (its coordinator crashed) or a
/// Try the initiator did not wait for.
const PENDING_TRY_GRACE: Duration = Duration::from_secs(1);
/// First re-read of a pending Try; doubled each time up to the cap, since
/// the record usually lands within a few milliseconds.
const PENDING_TRY_POLL: Duration = Duration::from_millis(2);
const PENDING_TRY_POLL_MAX: Duration = Duration::from_millis(50);

/// Settings the engine needs from the configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub instance_id: String,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub call_timeout: Duration,
    pub lease: Duration,
    pub max_payload_bytes: usize,
    pub max_wait: Duration,
    pub escalation: Escalation,
}

/// A Try as asked by an initiator.
#[derive(Debug, Clone)]
pub struct TryBranch {
    pub gid: Gid,
    pub participant: ParticipantName,
    pub action: ActionName,
    pub payload: Vec<u8>,
    pub branch_id: Option<BranchId>,
    pub call_timeout: Option<Duration>,
}

pub struct Engine {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) clients: Arc<ParticipantClients>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: EngineSettings,
    pub(crate) retry: RetryPolicy,
    pub(crate) leases: Arc<Leases>,
    pub(crate) tracker: TaskTracker,
    /// Cancelled at shutdown: drivers stop starting new rounds.
    pub(crate) shutdown: CancellationToken,
    waiters: Mutex<HashMap<Gid, Arc<Notify>>>,
    /// Transactions begun here, so a Commit here need not read them back.
    recent: crate::recent::Recent,
    /// Lets `&self` methods spawn tasks that own the engine.
    me: Weak<Engine>,
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Checks metadata sizes; keys are lowercase like HTTP/2 headers.
pub fn validate_metadata(metadata: &Metadata) -> Result<()> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::InvalidArgument(format!(
            "metadata has {} entries, the limit is {MAX_METADATA_ENTRIES}",
            metadata.len()
        )));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.len() > MAX_METADATA_KEY {
            return Err(Error::InvalidArgument(format!(
                "metadata key {k:?} must be 1-{MAX_METADATA_KEY} bytes"
            )));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(Error::InvalidArgument(format!(
                "metadata value of {k:?} is {} bytes, the limit is {MAX_METADATA_VALUE}",
                v.len()
            )));
        }
    }
    Ok(())
}

/// The deadline `timeout` after `now`.
pub(crate) fn deadline_after(now: DateTime<Utc>, timeout: Duration) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(timeout)
        .map(|t| now + t)
        .map_err(|_| Error::InvalidArgument("timeout too large".into()))
}

fn refused(r: Refusal) -> Error {
    Error::FailedPrecondition(r.to_string())
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        clients: Arc<ParticipantClients>,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
        retry: RetryPolicy,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            store,
            registry,
            clients,
            clock,
            settings,
            retry,
            leases: Arc::new(Leases::default()),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            waiters: Mutex::new(HashMap::new()),
            recent: crate::recent::Recent::default(),
            me: me.clone(),
        })
    }

    pub(crate) fn self_arc(&self) -> Option<Arc<Engine>> {
        self.me.upgrade()
    }

    pub fn instance_id(&self) -> &str {
        &self.settings.instance_id
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Opens a TCC transaction; idempotent for an identical request.
    pub async fn begin(
        &self,
        gid: Option<Gid>,
        timeout: Option<Duration>,
        metadata: Metadata,
    ) -> Result<(Gid, DateTime<Utc>)> {
        validate_metadata(&metadata)?;
        let timeout = match timeout {
            Some(t) => self.bounded_timeout(t)?,
            None => self.settings.default_timeout,
        };
        let gid = gid.unwrap_or_else(Gid::generate);
        let now = self.stored_now();
        let deadline = deadline_after(now, timeout)?;
        let begun = self
            .store
            .begin(NewTransaction {
                gid: gid.clone(),
                metadata: metadata.clone(),
                timeout,
                deadline,
                now,
                actor: self.settings.instance_id.clone(),
            })
            .await?;
        match begun {
            Begun::Created => {
                self.recent.begun(TxRecord::inserted(
                    gid.clone(),
                    machine::Mode::Tcc,
                    metadata.clone(),
                    timeout,
                    deadline,
                    now,
                ));
                crate::telemetry::metrics::tx_begun(machine::Mode::Tcc);
                tracing::debug!(%gid, timeout_ms = timeout.as_millis() as u64, "transaction begun");
                Ok((gid, deadline))
            }
            Begun::Existing(tx) => {
                if tx.mode == machine::Mode::Tcc
                    && tx.timeout == timeout
                    && crate::telemetry::trace::same_metadata(&tx.metadata, &metadata)
                {
                    Ok((gid, tx.deadline))
                } else {
                    Err(Error::AlreadyExists(format!(
                        "transaction {gid} exists with a different mode, timeout or metadata"
                    )))
                }
            }
        }
    }

    /// Registers a branch durably, then calls the participant's Try.
    pub async fn try_branch(&self, req: TryBranch) -> Result<(BranchId, Vec<u8>)> {
        if req.payload.len() > self.settings.max_payload_bytes {
            return Err(Error::InvalidArgument(format!(
                "payload is {} bytes, the limit is {}",
                req.payload.len(),
                self.settings.max_payload_bytes
            )));
        }
        if req.call_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::InvalidArgument(
                "call_timeout must be positive".into(),
            ));
        }
        let entry = self
            .registry
            .lookup(&req.participant)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("participant {} is not registered", req.participant))
            })?;
        if !entry.actions.contains(&req.action) {
            let mut known: Vec<&str> = entry.actions.iter().map(ActionName::as_str).collect();
            known.sort_unstable();
            return Err(Error::NotFound(format!(
                "participant {} has no action {} (registered: {})",
                req.participant,
                req.action,
                known.join(", ")
            )));
        }
        let (branch, metadata, attempt) = self.register_branch(&req).await?;
        let timeout = req.call_timeout.unwrap_or(self.settings.call_timeout);
        let request = BranchRequest {
            gid: req.gid.to_string(),
            branch_id: branch.branch_id.to_string(),
            action: req.action.to_string(),
            payload: req.payload,
            attempt,
            metadata: metadata.into_iter().collect(),
        };
        let reply = self
            .clients
            .call(
                &req.participant,
                &entry.endpoints,
                Phase::Try,
                request,
                timeout,
            )
            .await;
        tracing::debug!(gid = %req.gid, branch_id = %branch.branch_id, participant = %req.participant,
            action = %req.action, phase = "try", attempt, code = reply.outcome.code(), "participant replied");
        let failure = match &reply.outcome {
            Outcome::Succeeded => None,
            Outcome::Rejected { message } => Some(Error::Rejected(format!(
                "participant {} rejected {}: {message}",
                req.participant, req.action
            ))),
            Outcome::Unknown { code, message } => Some(Error::Unavailable(format!(
                "participant {} try {} failed with {code}: {message}",
                req.participant, req.action
            ))),
        };
        self.recent
            .try_recorded(&req.gid, &branch.branch_id, reply.outcome.call_status());
        let record = CallRecord {
            branch_id: branch.branch_id.clone(),
            phase: Phase::Try,
            attempt,
            outcome: reply.outcome,
        };
        let (now, actor) = (self.clock.now(), self.settings.instance_id.clone());
        let Some(failure) = failure else {
            // The initiator gets its answer without waiting for the record:
            // a Commit here decides from `recent`, one elsewhere waits for
            // the record (`PENDING_TRY_GRACE`), and a record that never lands
            // (crash) leaves the Try pending, which refuses the Commit, so
            // the worst case is a rollback, never a confirm of an unreserved
            // branch. Failures are recorded before the reply (below), so
            // that any instance refuses a Commit after one.
            let (store, gid) = (Arc::clone(&self.store), req.gid.clone());
            self.tracker.spawn(async move {
                if let Err(e) = store
                    .record_try(&gid, &record, machine::try_record_applies(), now, &actor)
                    .await {
                    tracing::warn!(%gid, branch_id = %record.branch_id, error = %e, "try outcome not recorded");
                }
            });
            return Ok((branch.branch_id, reply.payload));
        };
        if let Err(e) = self
            .store
            .record_try(
                &req.gid,
                &record,
                machine::try_record_applies(),
                now,
                &actor,
            )
            .await
        {
            // Commit refuses while the try is not recorded as succeeded, so
            // a lost record can only lead to a rollback, never to a confirm
            // of an unreserved branch.
            self.recent.forget(&req.gid);
            tracing::warn!(gid = %req.gid, branch_id = %branch.branch_id, error = %e, "try outcome not recorded");
            return Err(e.into());
        }
        Err(failure)
    }

    async fn register_branch(&self, req: &TryBranch) -> Result<(BranchRecord, Metadata, u32)> {
        // An assigned number can collide with an id an initiator chose; the
        // next number is then tried.
        for _ in 0..8 {
            let added = self
                .store
                .add_branch(NewBranch {
                    gid: req.gid.clone(),
                    branch_id: req.branch_id.clone(),
                    participant: req.participant.clone(),
                    action: req.action.clone(),
                    payload: req.payload.clone(),
                    call_timeout: req.call_timeout,
                    now: self.clock.now(),
                    actor: self.settings.instance_id.clone(),
                })
                .await?;
            match added {
                BranchAdded::Added {
                    branch,
                    metadata,
                    seq,
                } => {
                    self.recent.branch_added(&req.gid, &branch, seq);
                    return Ok((branch, metadata, 1));
                }
                BranchAdded::Existing { branch, metadata } => {
                    // A repeated Try moved the branch counter unseen.
                    self.recent.forget(&req.gid);
                    let same = branch.participant == req.participant
                        && branch.action == req.action
                        && branch.payload == req.payload;
                    if same {
                        let attempt = if branch.first_phase == CallStatus::Pending {
                            1
                        } else {
                            2
                        };
                        return Ok((branch, metadata, attempt));
                    }
                    if req.branch_id.is_some() {
                        return Err(Error::AlreadyExists(format!(
                            "branch {} of transaction {} exists with a different participant, action or payload",
                            branch.branch_id, req.gid
                        )));
                    }
                }
                BranchAdded::NotAccepted(None) => {
                    return Err(Error::NotFound(format!(
                        "transaction {} not found",
                        req.gid
                    )));
                }
                BranchAdded::NotAccepted(Some(tx)) => {
                    let state = tx.state(&[]);
                    return Err(
                        match machine::decide(&state, &Command::AddBranch, self.clock.now()) {
                            Err(r) => refused(r),
                            Ok(_) => Error::FailedPrecondition(format!(
                                "transaction {} does not accept branches now",
                                req.gid
                            )),
                        },
                    );
                }
            }
        }
        Err(Error::Unavailable(
            "could not assign a branch id; retry with an explicit branch_id".into(),
        ))
    }

    /// Decides commit; phase 2 runs in the background unless `wait` is set.
    pub async fn commit(&self, gid: &Gid, wait_until: Option<Instant>) -> Result<Status> {
        self.decide(gid, Command::Commit, wait_until).await
    }

    /// Decides rollback; phase 2 runs in the background unless `wait` is set.
    pub async fn rollback(
        &self,
        gid: &Gid,
        reason: String,
        wait_until: Option<Instant>,
    ) -> Result<Status> {
        let reason = truncate(reason, MAX_REASON);
        self.decide(gid, Command::Rollback { reason }, wait_until)
            .await
    }

    async fn decide(
        &self,
        gid: &Gid,
        command: Command,
        wait_until: Option<Instant>,
    ) -> Result<Status> {
        let status = self.decide_once(gid, &command).await?;
        match wait_until {
            Some(until) if !status.is_final() => self.wait_final(gid, until).await,
            _ => Ok(status),
        }
    }

    async fn decide_once(&self, gid: &Gid, command: &Command) -> Result<Status> {
        // A compare-and-set loop: a concurrent branch insert or claim makes
        // the write match nothing, and the decision is taken again on
        // fresh state.
        // What this instance wrote itself is tried first; it only ever leads
        // to the decision, never to a refusal (see `recent`).
        let mut remembered = self.recent.take(gid);
        let mut misses = 0;
        let mut waited = Duration::ZERO;
        let mut poll = PENDING_TRY_POLL;
        while misses < 16 {
            let from_memory = remembered.is_some();
            let (tx, branches) = match remembered.take() {
                Some(known) => known,
                None => self.load_required(gid).await?,
            };
            let now = self.clock.now();
            let next = match machine::decide(&tx.state(&branches), command, now) {
                Ok(Verdict::Decided { next, .. }) => next,
                _ if from_memory => continue,
                // A successful Try's record is written after its reply (see
                // `try_branch`); one served by another instance may still be
                // on its way.
                Err(Refusal::TryNotSucceeded {
                    status: CallStatus::Pending,
                    ..
                }) if waited < PENDING_TRY_GRACE => {
                    tokio::time::sleep(poll).await;
                    waited += poll;
                    poll = (poll * 2).min(PENDING_TRY_POLL_MAX);
                    continue;
                }
                Err(r) => return Err(refused(r)),
                Ok(Verdict::Unchanged) => return Ok(tx.status),
            };
            if let Some(lease) = self
                .store
                .decide(self.decision(&tx, next.clone(), now))
                .await?
            {
                tracing::debug!(%gid, status = next.status.as_str(), branches = branches.len(), "decided");
                let status = next.status;
                self.spawn_drive(lease, branches, next, tx.metadata);
                return Ok(status);
            }
            misses += 1;
        }
        Err(Error::Unavailable(format!(
            "transaction {gid} kept changing while deciding; retry"
        )))
    }

    /// A decision to take `tx` to `next`, valid only while the row is as
    /// read; this instance then holds the lease.
    pub(crate) fn decision(
        &self,
        tx: &TxRecord,
        next: machine::TxState,
        now: DateTime<Utc>,
    ) -> Decision {
        Decision {
            gid: tx.gid.clone(),
            expected_status: tx.status,
            expected_branch_seq: tx.branch_seq,
            expected_fence: tx.fence,
            next,
            owner: self.settings.instance_id.clone(),
            lease: self.settings.lease,
            now,
            actor: self.settings.instance_id.clone(),
        }
    }

    /// A client's timeout: positive, at most `max_timeout`, in whole
    /// milliseconds as it is stored (so that repeats compare equal).
    pub(crate) fn bounded_timeout(&self, t: Duration) -> Result<Duration> {
        if t.is_zero() {
            return Err(Error::InvalidArgument("timeout must be positive".into()));
        }
        let t = t.min(self.settings.max_timeout);
        Ok(Duration::from_millis(t.as_millis().max(1) as u64))
    }

    /// Now, at PostgreSQL's microsecond precision, so that a repeated
    /// request answers the very deadline the first one did.
    pub(crate) fn stored_now(&self) -> DateTime<Utc> {
        self.clock.now().trunc_subsecs(6)
    }

    pub(crate) async fn load_required(&self, gid: &Gid) -> Result<(TxRecord, Vec<BranchRecord>)> {
        self.store
            .load(gid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("transaction {gid} not found")))
    }

    /// A transaction, its branches and (if asked) its history.
    pub async fn get(
        &self,
        gid: &Gid,
        with_events: bool,
    ) -> Result<(TxRecord, Vec<BranchRecord>, Vec<EventRecord>)> {
        let (tx, branches) = self.load_required(gid).await?;
        let events = if with_events {
            self.store.events(gid).await?
        } else {
            Vec::new()
        };
        Ok((tx, branches, events))
    }

    fn waiter(&self, gid: &Gid) -> Arc<Notify> {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(w.entry(gid.clone()).or_default())
    }

    /// Wakes whoever waits for `gid` to finish on this instance.
    pub(crate) fn notify_finished(&self, gid: &Gid) {
        let notify = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(gid);
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// Waits until the transaction is final or `until` passes. Finishing on
    /// this instance wakes the waiter at once; a finish by another instance
    /// (after a retry) is seen by polling.
    pub(crate) async fn wait_final(&self, gid: &Gid, until: Instant) -> Result<Status> {
        loop {
            let notify = self.waiter(gid);
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (tx, _) = self.load_required(gid).await?;
            if tx.status.is_final() {
                return Ok(tx.status);
            }
            let now = Instant::now();
            if now >= until {
                let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
                if Arc::strong_count(&notify) <= 2 {
                    waiters.remove(gid);
                }
                let why = tx
                    .attention_reason
                    .or_else(|| {
                        (tx.attempts > 0).then(|| format!("{} rounds failed so far", tx.attempts))
                    })
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                return Err(Error::DeadlineExceeded(format!(
                    "transaction {gid} is still {}{why}; the coordinator keeps going in the background",
                    tx.status.as_str()
                )));
            }
            let poll = (until - now).min(Duration::from_millis(500));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}
