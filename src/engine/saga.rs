//! Sagas: submission (every step durable before the first action) and the
//! driver that executes actions, persists each step's outcome before
//! starting the steps that depend on it, and compensates in reverse order
//! after a rejection. Decisions come from [`crate::machine::saga`]; calls go
//! through [`super::calls`] like every other participant call.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use tracing::Instrument;

use super::calls::BranchCall;
use super::leases::{Countdown, Granted};
use super::tcc::check_call_timeout;
use super::{Engine, deadline_after};
use crate::domain::metadata;
use crate::domain::{ActionName, Gid, ParticipantName, UrlCall};
use crate::error::{Error, Result};
use crate::machine::policy::CallPolicy;
use crate::machine::saga::{self, SagaChange, SagaPhase, SagaState};
use crate::machine::{CallStatus, Phase, Status};
use crate::store::{
    BranchRecord, CallRecord, Lease, Metadata, NewSaga, NewStep, SagaSubmitted, SagaWrite,
    TxRecord, no_deadline,
};

/// Most steps one saga may have.
pub const MAX_STEPS: usize = 256;
/// Default and largest per-saga concurrency.
pub const DEFAULT_CONCURRENCY: u32 = 8;
pub const MAX_CONCURRENCY: u32 = 64;

/// A step as an initiator asks for it (indices are 0-based).
#[derive(Debug, Clone)]
pub struct StepRequest {
    pub participant: ParticipantName,
    pub action: ActionName,
    pub compensation: ActionName,
    pub payload: Vec<u8>,
    pub depends_on: Vec<usize>,
    pub compensate_rejected: bool,
    pub call_timeout: Option<Duration>,
    pub policy: CallPolicy,
    /// A step called by URL (the DTM-compatible API): no registration.
    pub url_call: Option<UrlCall>,
}

/// A saga as an initiator submits it.
#[derive(Debug, Clone)]
pub struct SagaRequest {
    pub gid: Option<Gid>,
    pub steps: Vec<StepRequest>,
    pub timeout: Option<Duration>,
    pub metadata: Metadata,
    pub concurrency: Option<u32>,
    /// The identity submitting it (`None`: authentication is off).
    pub initiator: Option<String>,
    /// The `depends_on` lists are the whole graph even when all are empty
    /// (DTM's concurrent saga without orders: every step at once); false:
    /// no dependency anywhere means one step after another.
    pub dependencies_as_given: bool,
}

fn same_steps(steps: &[NewStep], existing: &[BranchRecord]) -> bool {
    steps.len() == existing.len()
        && steps.iter().zip(existing).all(|(s, b)| {
            s.participant == b.participant
                && s.action == b.action
                && Some(&s.compensation) == b.compensation.as_ref()
                && s.payload == b.payload
                && s.depends_on == b.depends_on
                && s.compensate_rejected == b.compensate_rejected
                && s.policy == b.policy
                && s.url_call == b.url_call
        })
}

impl Engine {
    /// The checks a Try gets, for one step; the error names the step. Fixes
    /// the step's call timeout and policy in force: the step's own, else
    /// what its action declared at registration, else its compensation's.
    async fn check_step(&self, i: usize, s: &mut StepRequest) -> Result<()> {
        let checked = async {
            self.check_payload(&s.payload)?;
            check_call_timeout(s.call_timeout)?;
            if s.url_call.is_some() {
                // Called by URL: nothing is registered to check.
                return Ok(());
            }
            let entry = self
                .check_actions(&s.participant, &[&s.action, &s.compensation])
                .await?;
            let (timeout, policy) = entry.policy_of(&s.action).resolve(s.call_timeout, s.policy);
            (s.call_timeout, s.policy) = entry.policy_of(&s.compensation).resolve(timeout, policy);
            Ok::<(), Error>(())
        };
        checked.await.map_err(|e| e.context(&format!("steps[{i}]")))
    }

    /// Validates and persists a saga, then drives it in the background.
    /// Returns the status and, for a compensated saga, the reason.
    pub async fn submit_saga(
        &self,
        req: SagaRequest,
        wait_until: Option<Instant>,
    ) -> Result<(Gid, Status, Option<String>)> {
        metadata::validate(&req.metadata)?;
        if req.steps.is_empty() {
            return Err(Error::InvalidArgument(
                "a saga needs at least one step".into(),
            ));
        }
        if req.steps.len() > MAX_STEPS {
            return Err(Error::InvalidArgument(format!(
                "{} steps, the limit is {MAX_STEPS}",
                req.steps.len()
            )));
        }
        let declared: Vec<Vec<usize>> = req.steps.iter().map(|s| s.depends_on.clone()).collect();
        saga::validate(&declared).map_err(Error::InvalidArgument)?;
        let mut req = req;
        for (i, s) in req.steps.iter_mut().enumerate() {
            self.check_step(i, s).await?;
        }
        let concurrency = match req.concurrency {
            None | Some(0) => DEFAULT_CONCURRENCY,
            Some(c) => c.min(MAX_CONCURRENCY),
        };
        let timeout = req.timeout.map(|t| self.bounded_timeout(t)).transpose()?;
        let now = self.stored_now();
        let deadline = match timeout {
            Some(t) => deadline_after(now, t)?,
            None => no_deadline(),
        };
        let effective = if req.dependencies_as_given {
            declared
        } else {
            saga::effective_dependencies(&declared)
        };
        let steps: Vec<NewStep> = req
            .steps
            .into_iter()
            .zip(effective)
            .map(|(s, depends_on)| NewStep {
                participant: s.participant,
                action: s.action,
                compensation: s.compensation,
                payload: s.payload,
                depends_on,
                compensate_rejected: s.compensate_rejected,
                call_timeout: s.call_timeout,
                policy: s.policy,
                url_call: s.url_call,
            })
            .collect();
        let gid = req.gid.unwrap_or_else(Gid::generate);
        // Granted long enough to cover the first steps' calls (see
        // `Engine::lease_for`); later steps extend it if they need to.
        let cover = Countdown::start(self.lease_for(steps.iter().map(|s| s.call_timeout)));
        let submitted = self
            .store
            .submit_saga(NewSaga {
                gid: gid.clone(),
                steps: steps.clone(),
                metadata: req.metadata.clone(),
                timeout,
                deadline,
                concurrency,
                owner: self.settings.instance_id.clone(),
                lease: cover,
                now,
                initiator: req.initiator.clone(),
            })
            .await?;
        match submitted {
            SagaSubmitted::Created(lease) => {
                crate::telemetry::metrics::tx_begun(crate::machine::Mode::Saga);
                // The rows just written are known here; reading them back
                // would cost a round trip per saga.
                let tx = TxRecord {
                    next_attempt_at: Some(now),
                    owner: Some(self.settings.instance_id.clone()),
                    fence: lease.fence,
                    concurrency,
                    initiator: req.initiator.clone(),
                    ..TxRecord::inserted(
                        gid.clone(),
                        crate::machine::Mode::Saga,
                        req.metadata.clone(),
                        timeout.unwrap_or_default(),
                        deadline,
                        now,
                    )
                };
                let branches = steps
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| BranchRecord {
                        branch_id: crate::domain::BranchId::from_trusted((i + 1).to_string()),
                        participant: s.participant,
                        action: s.action,
                        payload: s.payload,
                        call_timeout: s.call_timeout,
                        first_phase: crate::machine::CallStatus::Pending,
                        second_phase: crate::machine::CallStatus::NotRequired,
                        attempts: 0,
                        last_code: None,
                        last_error: None,
                        last_attempt_at: None,
                        created_at: now,
                        updated_at: now,
                        compensation: Some(s.compensation),
                        depends_on: s.depends_on,
                        compensate_rejected: s.compensate_rejected,
                        policy: s.policy,
                        call_busy_until: None,
                        skipped: None,
                        url_call: s.url_call,
                    })
                    .collect();
                let grant = Granted { lease, cover };
                self.spawn_saga(grant, tx, branches);
            }
            SagaSubmitted::Existing(found) => {
                let (tx, branches) = *found;
                let same = tx.mode == crate::machine::Mode::Saga
                    && tx.initiator == req.initiator
                    && metadata::same_business(&tx.metadata, &req.metadata)
                    && same_steps(&steps, &branches);
                if !same {
                    return Err(Error::AlreadyExists(format!(
                        "transaction {gid} exists with different steps, mode, metadata or initiator"
                    )));
                }
            }
        }
        let status = match wait_until {
            Some(until) => self.wait_final(&gid, until).await?,
            None => Status::Running,
        };
        let reason = if status == Status::Running {
            None
        } else {
            self.load_required(&gid).await?.0.rollback_reason
        };
        Ok((gid, status, reason))
    }

    pub(crate) fn spawn_saga(&self, grant: Granted, tx: TxRecord, branches: Vec<BranchRecord>) {
        let Some(engine) = self.self_arc() else {
            return;
        };
        let span = tracing::info_span!("saga", gid = %grant.lease.gid);
        self.tracker.spawn(
            async move {
                engine.drive_saga(grant, tx, branches).await;
            }
            .instrument(span),
        );
    }

    /// Calls step `index` in `phase`; `out.until` as in [`BranchCall`],
    /// `out` held until the call is back.
    async fn saga_call(
        self: Arc<Self>,
        gid: Gid,
        branch: BranchRecord,
        (index, phase): (usize, SagaPhase),
        attempt: u32,
        metadata: Metadata,
        out: super::leases::CallsOut,
    ) -> (usize, SagaPhase, CallRecord) {
        let (action, rpc) = match phase {
            SagaPhase::Execute => (&branch.action, Phase::Execute),
            SagaPhase::Compensate => (
                branch.compensation.as_ref().unwrap_or(&branch.action),
                Phase::Compensate,
            ),
        };
        let outcome = self
            .call_participant(BranchCall {
                gid: &gid,
                branch: &branch,
                phase: rpc,
                action,
                attempt,
                metadata: &metadata,
                until: out.until,
            })
            .await
            .outcome;
        drop(out);
        (
            index,
            phase,
            CallRecord {
                branch_id: branch.branch_id,
                phase: rpc,
                attempt,
                outcome,
            },
        )
    }

    /// Drives a saga under `lease` until it is final, its lease is lost, or
    /// only retries are left (then the lease is given back with the next
    /// attempt time).
    pub(crate) async fn drive_saga(
        &self,
        grant: Granted,
        tx: TxRecord,
        branches: Vec<BranchRecord>,
    ) {
        let Some(me) = self.self_arc() else {
            return;
        };
        let guard = self.leases.hold(&grant);
        let lease = grant.lease;
        let gid = lease.gid.clone();
        let mut state = tx.saga_state(&branches);
        let limit = tx.concurrency.max(1) as usize;
        let mut in_flight = FuturesUnordered::new();
        let mut running: HashSet<usize> = HashSet::new();
        let mut tried: HashSet<(usize, SagaPhase)> = HashSet::new();
        loop {
            if running.is_empty()
                && let Some(expired) = saga::expire(&state, self.clock.now())
            {
                let finished = expired.status.is_final();
                if !self
                    .persist_saga(
                        &lease,
                        &expired,
                        vec![],
                        vec![],
                        true,
                        false,
                        finished,
                        None,
                    )
                    .await
                {
                    return;
                }
                tracing::info!(%gid, "saga deadline passed; compensating");
                state = expired;
                if finished {
                    self.notify_finished(&gid);
                    return;
                }
            }
            if !self.shutdown.is_cancelled() {
                for (i, phase) in saga::next_calls(&state, &running, &tried, limit) {
                    // Sent only under a lease that outlives the call; the
                    // calls already out are covered, so stopping here is
                    // safe: the lease expires after them.
                    let Some(out) = self.cover(&guard, self.call_timeout_of(&branches[i])).await
                    else {
                        return;
                    };
                    let attempt = state.steps[i].attempts + 1;
                    running.insert(i);
                    tried.insert((i, phase));
                    in_flight.push(Arc::clone(&me).saga_call(
                        gid.clone(),
                        branches[i].clone(),
                        (i, phase),
                        attempt,
                        tx.metadata.clone(),
                        out,
                    ));
                }
            }
            if in_flight.is_empty() {
                // Only retries are left: schedule them and give the lease back.
                let now = self.clock.now();
                let (next, attempt, newly) =
                    saga::round_failed(&state, now, self.settings.escalation);
                let owed = next.steps.iter().filter(|s| match next.status {
                    Status::Compensating => s.needs_compensation() && !s.compensation.is_done(),
                    _ => s.action == CallStatus::Unknown,
                });
                let delay = self.retry.delay_for(attempt, owed.map(|s| &s.policy));
                let delay =
                    chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(60));
                let mut at = now + delay;
                if let Some(deadline) = state.deadline.filter(|_| state.status == Status::Running) {
                    at = at.min(deadline);
                }
                if newly {
                    tracing::warn!(%gid, reason = next.attention_reason.as_deref().unwrap_or(""), "needs attention");
                }
                crate::telemetry::metrics::retry_scheduled(crate::machine::Mode::Saga);
                self.persist_saga(&lease, &next, vec![], vec![], false, newly, false, Some(at))
                    .await;
                return;
            }
            let reply = tokio::select! {
                r = in_flight.next() => r,
                _ = guard.lost().cancelled() => {
                    tracing::warn!(%gid, "lease lost; leaving the saga to its new owner");
                    return;
                }
            };
            let Some((i, phase, record)) = reply else {
                continue;
            };
            running.remove(&i);
            let (next, change) =
                saga::on_reply(&state, i, phase, &record.outcome, self.clock.now());
            let finished = matches!(change, SagaChange::Finished(_));
            let changed = !matches!(change, SagaChange::Step);
            // Each step's outcome is written before any step that depends on
            // it starts, so a crash never re-executes a completed action.
            if !self
                .persist_saga(
                    &lease,
                    &next,
                    vec![i],
                    vec![record],
                    changed,
                    false,
                    finished,
                    None,
                )
                .await
            {
                return;
            }
            if changed {
                tracing::debug!(%gid, status = next.status.as_str(), reason = next.reason.as_deref().unwrap_or(""), "saga status changed");
            }
            state = next;
            if finished {
                self.notify_finished(&gid);
                return;
            }
        }
    }

    /// Writes saga progress; false (and a log line) if it could not, in
    /// which case the driver stops and the lease expires.
    #[allow(clippy::too_many_arguments)]
    async fn persist_saga(
        &self,
        lease: &Lease,
        state: &SagaState,
        steps: Vec<usize>,
        calls: Vec<CallRecord>,
        status_changed: bool,
        newly_flagged: bool,
        finished: bool,
        retry_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> bool {
        let now = self.clock.now();
        let release = finished || retry_at.is_some();
        let write = SagaWrite {
            mode: crate::machine::Mode::Saga,
            lease: lease.clone(),
            owner: self.settings.instance_id.clone(),
            state: state.clone(),
            steps,
            calls,
            query: None,
            status_changed,
            newly_flagged,
            release,
            // While driving, the row stays due so that it is picked up as
            // soon as this lease lapses.
            next_attempt_at: if finished {
                None
            } else {
                Some(retry_at.unwrap_or(now))
            },
            now,
        };
        match self.store.write_saga(write).await {
            Ok(true) if finished => {
                crate::telemetry::metrics::tx_finished(crate::machine::Mode::Saga, state.status);
                true
            }
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(gid = %lease.gid, "lease lost before saga progress was written");
                false
            }
            Err(e) => {
                tracing::warn!(gid = %lease.gid, error = %e, "saga progress not written; the lease will expire");
                false
            }
        }
    }
}
