//! TCC as the initiator drives it: Begin, Try (the branch is durable before
//! its participant is called), Commit and Rollback. What is legal comes from
//! [`crate::machine::tcc`]; a decision is persisted with a compare-and-set
//! and then carried out by [`super::phase2`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::calls::{BranchCall, called};
use super::leases::{CALL_MARGIN, Countdown, GRANT_SLACK, Granted};
use super::{Engine, deadline_after, refused};
use crate::domain::metadata::{self, Metadata};
use crate::domain::{ActionName, BranchId, Gid, MAX_REASON, ParticipantName, UrlCall};
use crate::error::{Error, Result};
use crate::machine::policy::CallPolicy;
use crate::machine::tcc::{self, Command, Refusal, Verdict};
use crate::machine::{CallStatus, Mode, Outcome, Phase, Status};
use crate::store::{Begun, BranchAdded, BranchRecord, CallRecord, NewBranch, NewTransaction};

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

/// A Try as asked by an initiator.
#[derive(Debug, Clone)]
pub struct TryBranch {
    pub gid: Gid,
    pub participant: ParticipantName,
    pub action: ActionName,
    pub payload: Vec<u8>,
    pub branch_id: Option<BranchId>,
    pub call_timeout: Option<Duration>,
    /// Retry policy of its Confirm or Cancel.
    pub policy: CallPolicy,
}

/// A TCC branch given as URLs, its Try run by the initiator itself.
#[derive(Debug, Clone)]
pub struct UrlBranch {
    pub gid: Gid,
    pub branch_id: BranchId,
    /// Named after the URLs (see `domain::url_call`), for operators.
    pub participant: ParticipantName,
    pub action: ActionName,
    /// What Confirm and Cancel are sent as their body.
    pub payload: Vec<u8>,
    pub call_timeout: Option<Duration>,
    pub policy: CallPolicy,
    pub url_call: UrlCall,
}

/// A call timeout the initiator asked for must be positive.
pub(crate) fn check_call_timeout(timeout: Option<Duration>) -> Result<()> {
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err(Error::InvalidArgument(
            "call_timeout must be positive".into(),
        ));
    }
    Ok(())
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

impl Engine {
    /// Opens a TCC transaction begun by `initiator` (recorded; `None`
    /// when authentication is off); idempotent for an identical request of
    /// the same initiator.
    pub async fn begin(
        &self,
        gid: Option<Gid>,
        timeout: Option<Duration>,
        metadata: Metadata,
        initiator: Option<String>,
    ) -> Result<(Gid, DateTime<Utc>)> {
        metadata::validate(&metadata)?;
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
                initiator: initiator.clone(),
            })
            .await?;
        match begun {
            Begun::Created => {
                crate::telemetry::metrics::tx_begun(Mode::Tcc);
                tracing::debug!(%gid, timeout_ms = timeout.as_millis() as u64, "transaction begun");
                Ok((gid, deadline))
            }
            Begun::Existing(tx) => {
                if tx.mode == Mode::Tcc
                    && tx.timeout == timeout
                    && tx.initiator == initiator
                    && metadata::same_business(&tx.metadata, &metadata)
                {
                    Ok((gid, tx.deadline))
                } else {
                    Err(Error::AlreadyExists(format!(
                        "transaction {gid} exists with a different mode, timeout, metadata or initiator"
                    )))
                }
            }
        }
    }

    /// Registers a branch durably, then calls the participant's Try.
    pub async fn try_branch(&self, mut req: TryBranch) -> Result<(BranchId, Vec<u8>)> {
        self.check_payload(&req.payload)?;
        check_call_timeout(req.call_timeout)?;
        let entry = self.check_actions(&req.participant, &[&req.action]).await?;
        // The policy in force is fixed now and stored with the branch: the
        // request's, else what the action declared at registration.
        (req.call_timeout, req.policy) = entry
            .policy_of(&req.action)
            .resolve(req.call_timeout, req.policy);
        // No lease covers a Try: the branch row itself says until when its
        // call may run (`call_until`), so that nothing else is sent to the
        // branch before then, even if this instance dies now.
        let cover = Countdown::start(
            req.call_timeout.unwrap_or(self.settings.call_timeout) + CALL_MARGIN + GRANT_SLACK,
        );
        let (branch, metadata, attempt) = self.register_branch(&req, cover).await?;
        let reply = self
            .call_participant(BranchCall {
                gid: &req.gid,
                branch: &branch,
                phase: Phase::Try,
                action: &req.action,
                attempt,
                metadata: &metadata,
                until: cover.end(),
            })
            .await;
        // An answer the action declared non-retryable is a rejection.
        let outcome = branch.policy.classify(reply.outcome);
        let failure = match &outcome {
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
        let record = CallRecord {
            branch_id: branch.branch_id.clone(),
            phase: Phase::Try,
            attempt,
            outcome,
        };
        let (now, actor) = (self.clock.now(), self.settings.instance_id.clone());
        let Some(failure) = failure else {
            // The initiator gets its answer without waiting for the record:
            // a Commit here decides from what the store remembers, one
            // elsewhere waits for the record (`PENDING_TRY_GRACE`), and a
            // record that never lands (crash) leaves the Try pending, which
            // refuses the Commit, so the worst case is a rollback, never a
            // confirm of an unreserved branch. Failures are recorded before
            // the reply (below), so that any instance refuses a Commit after
            // one.
            let (store, gid) = (Arc::clone(&self.store), req.gid.clone());
            let mut write = Box::pin(async move {
                if let Err(e) = store
                    .record_try(&gid, &record, tcc::try_record_applies(), now, &actor)
                    .await
                {
                    tracing::warn!(%gid, branch_id = %record.branch_id, error = %e, "try outcome not recorded");
                }
            });
            // One poll before the reply: the store takes note of the outcome
            // (and queues the write) at once, so that the Commit the
            // initiator sends next finds it; the rest runs in the background.
            if futures::poll!(write.as_mut()).is_pending() {
                self.tracker.spawn(write);
            }
            return Ok((branch.branch_id, reply.payload));
        };
        if let Err(e) = self
            .store
            .record_try(&req.gid, &record, tcc::try_record_applies(), now, &actor)
            .await
        {
            // Commit refuses while the try is not recorded as succeeded, so
            // a lost record can only lead to a rollback, never to a confirm
            // of an unreserved branch.
            tracing::warn!(gid = %req.gid, branch_id = %branch.branch_id, error = %e, "try outcome not recorded");
            return Err(e.into());
        }
        Err(failure)
    }

    async fn register_branch(
        &self,
        req: &TryBranch,
        cover: Countdown,
    ) -> Result<(BranchRecord, Metadata, u32)> {
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
                    policy: req.policy,
                    call_cover: cover,
                    now: self.clock.now(),
                    actor: self.settings.instance_id.clone(),
                    url_call: None,
                    tried_by_initiator: false,
                })
                .await?;
            match added {
                BranchAdded::Added {
                    branch, metadata, ..
                } => return Ok((branch, metadata, 1)),
                BranchAdded::Existing { branch, metadata } => {
                    let same = branch.participant == req.participant
                        && branch.action == req.action
                        && branch.payload == req.payload;
                    if same {
                        // A repeated Try: sent only when no Try of the
                        // branch is still out.
                        if !self
                            .store
                            .claim_try_call(&req.gid, &branch.branch_id, cover)
                            .await?
                        {
                            return Err(Error::Unavailable(format!(
                                "a try of branch {} of transaction {} is still out; retry after its deadline",
                                branch.branch_id, req.gid
                            )));
                        }
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
                        match tcc::decide(&state, &Command::AddBranch, self.clock.now()) {
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

    /// Registers a branch whose Try the initiator calls itself (DTM's TCC:
    /// register, then call the Try, then submit) and whose Confirm and
    /// Cancel are URLs. Nothing is called now; the branch is stored as
    /// tried, since the initiator submits only after its Tries succeeded,
    /// and a rollback cancels it like any branch. A repeat with the same
    /// content is idempotent.
    pub async fn register_url_branch(&self, req: UrlBranch) -> Result<BranchId> {
        self.check_payload(&req.payload)?;
        check_call_timeout(req.call_timeout)?;
        let added = self
            .store
            .add_branch(NewBranch {
                gid: req.gid.clone(),
                branch_id: Some(req.branch_id.clone()),
                participant: req.participant.clone(),
                action: req.action.clone(),
                payload: req.payload.clone(),
                call_timeout: req.call_timeout,
                policy: req.policy,
                // No call is sent from here, so nothing is out.
                call_cover: Countdown::start(Duration::ZERO),
                now: self.clock.now(),
                actor: self.settings.instance_id.clone(),
                url_call: Some(req.url_call.clone()),
                tried_by_initiator: true,
            })
            .await?;
        match added {
            BranchAdded::Added { branch, .. } => Ok(branch.branch_id),
            BranchAdded::Existing { branch, .. } => {
                if branch.payload == req.payload && branch.url_call.as_ref() == Some(&req.url_call)
                {
                    Ok(branch.branch_id)
                } else {
                    Err(Error::AlreadyExists(format!(
                        "branch {} of transaction {} exists with different URLs or data",
                        req.branch_id, req.gid
                    )))
                }
            }
            BranchAdded::NotAccepted(None) => Err(Error::NotFound(format!(
                "transaction {} not found",
                req.gid
            ))),
            BranchAdded::NotAccepted(Some(tx)) => Err(
                match tcc::decide(&tx.state(&[]), &Command::AddBranch, self.clock.now()) {
                    Err(r) => refused(r),
                    Ok(_) => Error::FailedPrecondition(format!(
                        "transaction {} does not accept branches now",
                        req.gid
                    )),
                },
            ),
        }
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
        // to the decision, never to a refusal (see `store::cache`).
        let mut remembered = self.store.take_remembered(gid);
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
            let (next, calls) = match tcc::decide(&tx.state(&branches), command, now) {
                Ok(Verdict::Decided { next, calls }) => (next, calls),
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
            let cover =
                Countdown::start(self.round_lease(&called(&branches, &calls).collect::<Vec<_>>()));
            if let Some(lease) = self
                .store
                .decide(self.decision(&tx, next.clone(), now, cover))
                .await?
            {
                tracing::debug!(%gid, status = next.status.as_str(), branches = branches.len(), "decided");
                let status = next.status;
                let grant = Granted { lease, cover };
                self.spawn_drive(grant, branches, next, calls, tx.metadata);
                return Ok(status);
            }
            misses += 1;
        }
        Err(Error::Unavailable(format!(
            "transaction {gid} kept changing while deciding; retry"
        )))
    }
}
