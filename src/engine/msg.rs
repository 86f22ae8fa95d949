//! 2-phase messages: preparation (every step durable, nothing called), the
//! initiator's submit or abort, and the driver that executes a submitted
//! message's steps in order until each succeeds, or, for a message still
//! prepared past its deadline, asks the initiator back whether its local
//! transaction committed. Decisions come from [`crate::machine::msg`];
//! step calls go through [`super::calls`], and the query-back through the
//! same participant client (breaker, deadline, TLS, both protocols).

use std::time::Duration;

use concord_proto::participant::v1::BranchRequest;
use tokio::time::Instant;
use tracing::Instrument;

use super::calls::BranchCall;
use super::leases::{CALL_MARGIN, Countdown, Granted};
use super::tcc::check_call_timeout;
use super::{Engine, deadline_after};
use crate::domain::metadata;
use crate::domain::{ActionName, Endpoint, Gid, ParticipantName, UrlCall};
use crate::error::{Error, Result};
use crate::machine::msg::{self, Command, MsgState, QueryAnswer, Verdict};
use crate::machine::{Mode, Outcome, Phase, Status};
use crate::store::{
    BranchRecord, CallRecord, Lease, Metadata, MsgDecision, MsgPrepared, NewMsg, NewMsgStep,
    QueryRecord, SagaWrite, TxRecord,
};

/// Most steps one message may have.
pub const MAX_STEPS: usize = 256;

/// The name the query-back's calls are counted under (metrics, breaker
/// statistics): the initiator is not a registered participant.
const INITIATOR: &str = "msg-initiator";

/// A step as an initiator asks for it.
#[derive(Debug, Clone)]
pub struct MsgStepRequest {
    pub participant: ParticipantName,
    pub action: ActionName,
    pub payload: Vec<u8>,
    pub call_timeout: Option<Duration>,
    /// A step called by URL (the DTM-compatible API): no registration.
    pub url_call: Option<UrlCall>,
}

/// A message as an initiator prepares it.
#[derive(Debug, Clone)]
pub struct MsgRequest {
    pub gid: Option<Gid>,
    pub steps: Vec<MsgStepRequest>,
    /// Where the coordinator asks whether the local transaction committed;
    /// `None` only for a message submitted at once (DTM's submit without
    /// prepare), which nobody needs to ask about.
    pub query: Option<Endpoint>,
    /// How long the initiator may take to submit or abort before it is
    /// asked back; the default timeout when `None`.
    pub timeout: Option<Duration>,
    pub metadata: Metadata,
    /// The identity preparing it (`None`: authentication is off).
    pub initiator: Option<String>,
}

fn same_steps(steps: &[NewMsgStep], existing: &[BranchRecord]) -> bool {
    steps.len() == existing.len()
        && steps.iter().zip(existing).all(|(s, b)| {
            s.participant == b.participant
                && s.action == b.action
                && s.payload == b.payload
                && s.url_call == b.url_call
        })
}

impl Engine {
    /// Validates and persists a prepared message. Nothing is called until
    /// it is submitted. A repeat with the same content is idempotent.
    pub async fn prepare_msg(&self, req: MsgRequest) -> Result<Gid> {
        metadata::validate(&req.metadata)?;
        if req.steps.is_empty() {
            return Err(Error::InvalidArgument(
                "a message needs at least one step".into(),
            ));
        }
        if req.steps.len() > MAX_STEPS {
            return Err(Error::InvalidArgument(format!(
                "{} steps, the limit is {MAX_STEPS}",
                req.steps.len()
            )));
        }
        for (i, s) in req.steps.iter().enumerate() {
            let checked = async {
                self.check_payload(&s.payload)?;
                check_call_timeout(s.call_timeout)?;
                if s.url_call.is_some() {
                    // Called by URL: nothing is registered to check.
                    return Ok(());
                }
                self.check_actions(&s.participant, &[&s.action])
                    .await
                    .map(drop)
            };
            checked
                .await
                .map_err(|e| e.context(&format!("steps[{i}]")))?;
        }
        let timeout = self.bounded_timeout(req.timeout.unwrap_or(self.settings.default_timeout))?;
        let now = self.stored_now();
        let deadline = deadline_after(now, timeout)?;
        let steps: Vec<NewMsgStep> = req
            .steps
            .into_iter()
            .map(|s| NewMsgStep {
                participant: s.participant,
                action: s.action,
                payload: s.payload,
                call_timeout: s.call_timeout,
                url_call: s.url_call,
            })
            .collect();
        let gid = req.gid.unwrap_or_else(Gid::generate);
        let prepared = self
            .store
            .prepare_msg(NewMsg {
                gid: gid.clone(),
                steps: steps.clone(),
                query: req.query.clone(),
                metadata: req.metadata.clone(),
                timeout,
                deadline,
                now,
                actor: self.settings.instance_id.clone(),
                initiator: req.initiator.clone(),
            })
            .await?;
        match prepared {
            MsgPrepared::Created => crate::telemetry::metrics::tx_begun(Mode::Msg),
            MsgPrepared::Existing(found) => {
                let (tx, branches, query) = *found;
                let same = tx.mode == Mode::Msg
                    && tx.initiator == req.initiator
                    && metadata::same_business(&tx.metadata, &req.metadata)
                    && same_steps(&steps, &branches)
                    && query == req.query;
                if !same {
                    return Err(Error::AlreadyExists(format!(
                        "transaction {gid} exists with different steps, mode, query-back, metadata or initiator"
                    )));
                }
            }
        }
        Ok(gid)
    }

    /// The initiator's submit (its local transaction committed) or abort.
    /// A submitted message is executed at once by this instance; with
    /// `wait_until`, the answer waits for it to succeed.
    pub async fn command_msg(
        &self,
        gid: &Gid,
        command: Command,
        wait_until: Option<Instant>,
    ) -> Result<Status> {
        // A lost race (the query-back decided meanwhile) is decided again
        // from what the database then says; twice is enough, as a message
        // leaves `prepared` only once.
        for round in 0..3 {
            let (tx, branches) = self.load_required(gid).await?;
            if tx.mode != Mode::Msg {
                return Err(Error::FailedPrecondition(format!(
                    "transaction {gid} is a {} transaction, not a message",
                    tx.mode.as_str()
                )));
            }
            let state = tx.saga_state(&branches);
            if round > 0 && state.status == Status::Prepared {
                // Still prepared, yet the write matched nothing: resolved.
                return Err(Error::FailedPrecondition(format!(
                    "message {gid} was resolved by an operator; it cannot be submitted or aborted"
                )));
            }
            let now = self.stored_now();
            let next = match msg::decide(&state, &command, now) {
                Err(illegal) => return Err(Error::FailedPrecondition(illegal.0)),
                Ok(Verdict::AlreadyDone) => {
                    return self.msg_status(gid, tx.status, wait_until).await;
                }
                Ok(Verdict::Decided(next)) => next,
            };
            let cover = Countdown::start(self.settings.lease);
            let lease = self
                .store
                .decide_msg(MsgDecision {
                    gid: gid.clone(),
                    next: next.clone(),
                    owner: self.settings.instance_id.clone(),
                    lease: cover,
                    now,
                    actor: self.settings.instance_id.clone(),
                })
                .await?;
            let Some(lease) = lease else {
                continue;
            };
            tracing::info!(%gid, status = next.status.as_str(), "message decided");
            if next.status.is_final() {
                crate::telemetry::metrics::tx_finished(Mode::Msg, next.status);
                self.notify_finished(gid);
            } else if tx.paused {
                // Paused by an operator: the submit is recorded, the steps
                // wait for the resume (the recovery loop claims no paused
                // transaction, and this instance gives the lease back).
                if let Err(e) = self
                    .store
                    .release(&self.settings.instance_id, std::slice::from_ref(&lease))
                    .await
                {
                    tracing::warn!(%gid, error = %e, "lease not released; it expires by itself");
                }
                tracing::info!(%gid, "message submitted while paused; its steps wait for the resume");
            } else {
                let tx = TxRecord {
                    status: next.status,
                    fence: lease.fence,
                    decided_at: next.decided_at,
                    rollback_reason: next.reason.clone(),
                    attempts: 0,
                    needs_attention: false,
                    attention_reason: None,
                    ..tx
                };
                let grant = Granted { lease, cover };
                self.spawn_msg(grant, tx, branches);
            }
            return self.msg_status(gid, next.status, wait_until).await;
        }
        Err(Error::Unavailable(format!(
            "message {gid} changed while deciding; try again"
        )))
    }

    async fn msg_status(
        &self,
        gid: &Gid,
        status: Status,
        wait_until: Option<Instant>,
    ) -> Result<Status> {
        match wait_until {
            Some(until) if !status.is_final() => self.wait_final(gid, until).await,
            _ => Ok(status),
        }
    }

    pub(crate) fn spawn_msg(&self, grant: Granted, tx: TxRecord, branches: Vec<BranchRecord>) {
        let Some(engine) = self.self_arc() else {
            return;
        };
        let span = tracing::info_span!("msg", gid = %grant.lease.gid);
        self.tracker.spawn(
            async move {
                engine.drive_msg(grant, tx, branches).await;
            }
            .instrument(span),
        );
    }

    /// Drives a message under `lease`: asks a prepared one back once it is
    /// due, executes a submitted one's steps in order, and gives the lease
    /// back with the next attempt time when only a retry is left.
    pub(crate) async fn drive_msg(
        &self,
        grant: Granted,
        tx: TxRecord,
        branches: Vec<BranchRecord>,
    ) {
        let guard = self.leases.hold(&grant);
        let lease = grant.lease;
        let gid = lease.gid.clone();
        let mut state = tx.saga_state(&branches);
        // Each pass makes one call bounded by its deadline; at shutdown the
        // engine's grace covers it and what is still held is released.
        loop {
            match state.status {
                Status::Prepared => {
                    let now = self.clock.now();
                    if !msg::query_due(&state, now) {
                        // Claimed early (clock skew with the database).
                        let _ = self
                            .store
                            .release(&self.settings.instance_id, std::slice::from_ref(&lease))
                            .await;
                        return;
                    }
                    let attempt = state.attempts + 1;
                    // Sent only under a lease that outlives the call.
                    let Some(out) = self.cover(&guard, self.settings.call_timeout).await else {
                        return;
                    };
                    let outcome = tokio::select! {
                        o = self.query_initiator(&gid, attempt, &tx.metadata, out.until) => o,
                        _ = guard.lost().cancelled() => return,
                    };
                    drop(out);
                    let query = QueryRecord { attempt, outcome };
                    let answer = QueryAnswer::from(&query.outcome);
                    let now = self.clock.now();
                    match msg::on_query_answer(&state, &answer, now, self.settings.escalation) {
                        None => return,
                        Some(Ok(Verdict::AlreadyDone)) => return,
                        Some(Ok(Verdict::Decided(next))) => {
                            let all: Vec<usize> = (0..next.steps.len()).collect();
                            let finished = next.status.is_final();
                            let write = Progress::new(&next, all, Some(query)).changed();
                            if !self.persist_msg(&lease, write, finished, None).await {
                                return;
                            }
                            tracing::info!(%gid, status = next.status.as_str(), "message decided by the query-back");
                            if finished {
                                self.notify_finished(&gid);
                                return;
                            }
                            state = next;
                        }
                        Some(Err(again)) => {
                            if again.newly_flagged {
                                tracing::warn!(%gid, reason = again.next.attention_reason.as_deref().unwrap_or(""), "needs attention");
                            }
                            let at = self.retry_at(again.attempt);
                            let mut write = Progress::new(&again.next, vec![], Some(query));
                            write.newly_flagged = again.newly_flagged;
                            self.persist_msg(&lease, write, false, Some(at)).await;
                            return;
                        }
                    }
                }
                Status::Submitted => {
                    let Some(i) = msg::next_step(&state) else {
                        return;
                    };
                    let attempt = state.steps[i].attempts + 1;
                    let branch = &branches[i];
                    let Some(out) = self.cover(&guard, self.call_timeout_of(branch)).await else {
                        return;
                    };
                    let until = out.until;
                    let call = self.call_participant(BranchCall {
                        gid: &gid,
                        branch,
                        phase: Phase::Execute,
                        action: &branch.action,
                        attempt,
                        metadata: &tx.metadata,
                        until,
                    });
                    let outcome = tokio::select! {
                        reply = call => reply.outcome,
                        _ = guard.lost().cancelled() => {
                            tracing::warn!(%gid, "lease lost; leaving the message to its new owner");
                            return;
                        }
                    };
                    drop(out);
                    let succeeded = outcome == Outcome::Succeeded;
                    let record = CallRecord {
                        branch_id: branch.branch_id.clone(),
                        phase: Phase::Execute,
                        attempt,
                        outcome,
                    };
                    let (next, finished) = msg::on_reply(&state, i, &record.outcome);
                    let mut write = Progress::new(&next, vec![i], None);
                    write.calls.push(record);
                    if finished {
                        write = write.changed();
                    }
                    if succeeded {
                        // The step's outcome is written before the next step
                        // starts, so a crash never executes a step again
                        // once it succeeded.
                        if !self.persist_msg(&lease, write, finished, None).await {
                            return;
                        }
                        state = next;
                        if finished {
                            self.notify_finished(&gid);
                            return;
                        }
                        continue;
                    }
                    let now = self.clock.now();
                    let (next, attempt, newly) =
                        msg::round_failed(&next, now, self.settings.escalation);
                    if newly {
                        tracing::warn!(%gid, reason = next.attention_reason.as_deref().unwrap_or(""), "needs attention");
                    }
                    write.state = next;
                    write.newly_flagged = newly;
                    crate::telemetry::metrics::retry_scheduled(Mode::Msg);
                    self.persist_msg(&lease, write, false, Some(self.retry_at(attempt)))
                        .await;
                    return;
                }
                _ => {
                    let _ = self
                        .store
                        .release(&self.settings.instance_id, std::slice::from_ref(&lease))
                        .await;
                    return;
                }
            }
        }
    }

    fn retry_at(&self, attempt: u32) -> chrono::DateTime<chrono::Utc> {
        let delay = chrono::Duration::from_std(self.retry.delay(attempt))
            .unwrap_or(chrono::Duration::seconds(60));
        self.clock.now() + delay
    }

    /// Asks the initiator of a prepared message whether its local
    /// transaction committed, through the participant client.
    async fn query_initiator(
        &self,
        gid: &Gid,
        attempt: u32,
        metadata: &Metadata,
        until: std::time::Instant,
    ) -> Outcome {
        let endpoint = match self.store.msg_query(gid).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Outcome::Unknown {
                    code: "NOT_FOUND".into(),
                    message: format!("message {gid} has no query-back endpoint"),
                };
            }
            Err(e) => {
                return Outcome::Unknown {
                    code: "UNAVAILABLE".into(),
                    message: format!("store unavailable: {e}"),
                };
            }
        };
        let request = BranchRequest {
            gid: gid.to_string(),
            branch_id: String::new(),
            action: String::new(),
            payload: Vec::new(),
            attempt,
            metadata: metadata.clone().into_iter().collect(),
        };
        let name = ParticipantName::from_trusted(INITIATOR.into());
        let reply = self
            .clients
            .call(
                &name,
                std::slice::from_ref(&endpoint),
                Phase::QueryPrepared,
                request,
                // Within what the lease covers, as every call (`calls.rs`).
                self.settings.call_timeout.min(
                    until
                        .saturating_duration_since(std::time::Instant::now())
                        .saturating_sub(CALL_MARGIN),
                ),
            )
            .await;
        tracing::debug!(%gid, attempt, code = reply.outcome.code(), "initiator answered the query-back");
        reply.outcome
    }

    /// Writes message progress under the lease; false (and a log line) if
    /// it could not, in which case the driver stops and the lease expires.
    async fn persist_msg(
        &self,
        lease: &Lease,
        p: Progress,
        finished: bool,
        retry_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> bool {
        let now = self.clock.now();
        let status = p.state.status;
        let write = SagaWrite {
            mode: crate::machine::Mode::Msg,
            lease: lease.clone(),
            owner: self.settings.instance_id.clone(),
            state: p.state,
            steps: p.steps,
            calls: p.calls,
            query: p.query,
            status_changed: p.status_changed,
            newly_flagged: p.newly_flagged,
            release: finished || retry_at.is_some(),
            next_attempt_at: if finished {
                None
            } else {
                Some(retry_at.unwrap_or(now))
            },
            now,
        };
        match self.store.write_saga(write).await {
            Ok(true) => {
                if finished {
                    crate::telemetry::metrics::tx_finished(Mode::Msg, status);
                }
                true
            }
            Ok(false) => {
                tracing::warn!(gid = %lease.gid, "lease lost before message progress was written");
                false
            }
            Err(e) => {
                tracing::warn!(gid = %lease.gid, error = %e, "message progress not written; the lease will expire");
                false
            }
        }
    }
}

/// What one step of the driver writes.
struct Progress {
    state: MsgState,
    steps: Vec<usize>,
    calls: Vec<CallRecord>,
    query: Option<QueryRecord>,
    status_changed: bool,
    newly_flagged: bool,
}

impl Progress {
    fn new(state: &MsgState, steps: Vec<usize>, query: Option<QueryRecord>) -> Self {
        Self {
            state: state.clone(),
            steps,
            calls: Vec::new(),
            query,
            status_changed: false,
            newly_flagged: false,
        }
    }

    fn changed(mut self) -> Self {
        self.status_changed = true;
        self
    }
}
