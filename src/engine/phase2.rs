//! Phase 2: calls Confirm or Cancel on every branch not yet done, folds the
//! replies through the state machine and writes the round under the lease.
//! One round per lease: a failed round schedules the next attempt with
//! backoff and gives the lease back, so the recovery loop of any instance
//! picks it up when due.

use std::sync::Arc;

use concord_proto::participant::v1::BranchRequest;
use futures::future::join_all;
use tracing::Instrument;

use crate::domain::{BranchId, Gid};
use crate::engine::Engine;
use crate::machine::tcc::{self, Command, Settled, TxState, Verdict};
use crate::machine::{Outcome, Phase, Status};
use crate::store::{BranchRecord, CallRecord, Claimed, Lease, Metadata, RoundWrite};

impl Engine {
    /// Drives one round in the background, tracked for graceful shutdown.
    pub(crate) fn spawn_drive(
        &self,
        lease: Lease,
        branches: Vec<BranchRecord>,
        state: TxState,
        metadata: Metadata,
    ) {
        let Some(engine) = self.self_arc() else {
            return;
        };
        let span = tracing::info_span!("drive", gid = %lease.gid);
        self.tracker.spawn(
            async move {
                engine.drive(lease, branches, state, Some(metadata)).await;
            }
            .instrument(span),
        );
    }

    /// Takes over a transaction claimed by the recovery loop.
    pub(crate) async fn resume(self: Arc<Self>, claimed: Claimed) {
        let gid = claimed.lease.gid.clone();
        let (tx, branches) = match self.store.load(&gid).await {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%gid, error = %e, "cannot load claimed transaction; its lease will expire");
                return;
            }
        };
        if tx.fence != claimed.lease.fence {
            return;
        }
        if let Some(previous) = &claimed.previous_owner {
            tracing::info!(%gid, previous_owner = %previous, status = tx.status.as_str(), "took over an expired lease");
        }
        let state = tx.state(&branches);
        match tx.status {
            Status::Trying => {
                let now = self.clock.now();
                let Ok(Verdict::Decided { next, .. }) = tcc::decide(&state, &Command::Expire, now)
                else {
                    // Not past its deadline by our clock (clock skew with
                    // the database): give it back untouched.
                    let _ = self
                        .store
                        .release(&self.settings.instance_id, &[claimed.lease])
                        .await;
                    return;
                };
                match self
                    .store
                    .decide(self.decision(&tx, next.clone(), now))
                    .await
                {
                    Ok(Some(lease)) => {
                        tracing::info!(%gid, "deadline passed; rolling back");
                        self.drive(lease, branches, next, Some(tx.metadata)).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(%gid, error = %e, "cannot roll back expired transaction")
                    }
                }
            }
            Status::Confirming | Status::Cancelling => {
                self.drive(claimed.lease, branches, state, Some(tx.metadata))
                    .await;
            }
            Status::Running | Status::Compensating => {
                self.drive_saga(claimed.lease, tx, branches).await;
            }
            Status::Confirmed | Status::Cancelled | Status::Succeeded | Status::Compensated => {
                let _ = self
                    .store
                    .release(&self.settings.instance_id, &[claimed.lease])
                    .await;
            }
        }
    }

    /// Calls `phase` (action `action`) of one branch on the participant's
    /// registered endpoints; an unknown participant or an unreachable
    /// registry is an unknown outcome, retried like any other.
    pub(crate) async fn call_branch(
        &self,
        branch: &BranchRecord,
        gid: &Gid,
        phase: Phase,
        action: &str,
        attempt: u32,
        metadata: &Metadata,
    ) -> Outcome {
        let endpoints = match self.registry.lookup(&branch.participant).await {
            Ok(Some(entry)) => entry.endpoints,
            Ok(None) => {
                return Outcome::Unknown {
                    code: "NOT_FOUND".into(),
                    message: format!("participant {} is not registered", branch.participant),
                };
            }
            Err(e) => {
                return Outcome::Unknown {
                    code: "UNAVAILABLE".into(),
                    message: format!("registry unavailable: {e}"),
                };
            }
        };
        let request = BranchRequest {
            gid: gid.to_string(),
            branch_id: branch.branch_id.to_string(),
            action: action.to_string(),
            payload: branch.payload.clone(),
            attempt,
            metadata: metadata.clone().into_iter().collect(),
        };
        let timeout = branch.call_timeout.unwrap_or(self.settings.call_timeout);
        let reply = self
            .clients
            .call(&branch.participant, &endpoints, phase, request, timeout)
            .await;
        tracing::debug!(branch_id = %branch.branch_id, participant = %branch.participant,
            action, phase = phase.as_str(), attempt, code = reply.outcome.code(),
            "participant replied");
        reply.outcome
    }

    /// One phase-2 round under `lease`.
    pub(crate) async fn drive(
        &self,
        lease: Lease,
        branches: Vec<BranchRecord>,
        state: TxState,
        metadata: Option<Metadata>,
    ) {
        let guard = self.leases.hold(&lease);
        let gid = lease.gid.clone();
        let metadata = match metadata {
            Some(m) => m,
            None => match self.store.load(&gid).await {
                Ok(Some((tx, _))) => tx.metadata,
                _ => Metadata::new(),
            },
        };
        let calls = tcc::pending_calls(&state);
        let round = join_all(calls.iter().map(|(id, phase)| {
            let branch = branches.iter().find(|b| &b.branch_id == id);
            let attempt = state
                .branches
                .iter()
                .find(|b| &b.id == id)
                .map_or(1, |b| b.attempts + 1);
            let gid = &gid;
            let metadata = &metadata;
            async move {
                let outcome = match branch {
                    Some(b) => {
                        self.call_branch(b, gid, *phase, b.action.as_str(), attempt, metadata)
                            .await
                    }
                    None => Outcome::Unknown {
                        code: "INTERNAL".into(),
                        message: format!("branch {id} missing from the store"),
                    },
                };
                CallRecord {
                    branch_id: id.clone(),
                    phase: *phase,
                    attempt,
                    outcome,
                }
            }
        }));
        let records = tokio::select! {
            records = round => records,
            _ = guard.lost().cancelled() => {
                tracing::warn!(%gid, "lease lost mid-round; leaving the transaction to its new owner");
                return;
            }
        };
        let replies: Vec<(BranchId, Outcome)> = records
            .iter()
            .map(|c| (c.branch_id.clone(), c.outcome.clone()))
            .collect();
        let now = self.clock.now();
        let (next, settled) = tcc::settle_round(&state, &replies, now, self.settings.escalation);
        let (next_attempt_at, newly_flagged) = match settled {
            Settled::Finished(_) => (None, false),
            Settled::Retry {
                attempt,
                newly_flagged,
            } => {
                let delay = self.retry.delay(attempt);
                let delay =
                    chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(60));
                (Some(now + delay), newly_flagged)
            }
        };
        let finished = next_attempt_at.is_none();
        let status = next.status;
        let write = RoundWrite {
            lease: lease.clone(),
            owner: self.settings.instance_id.clone(),
            next: next.clone(),
            calls: records,
            next_attempt_at,
            newly_flagged,
            now,
        };
        match self.store.write_round(write).await {
            Ok(true) if finished => {
                crate::telemetry::metrics::tx_finished(crate::machine::Mode::Tcc, status);
                tracing::debug!(%gid, status = status.as_str(), "finished");
                self.notify_finished(&gid);
            }
            Ok(true) => {
                crate::telemetry::metrics::retry_scheduled(crate::machine::Mode::Tcc);
                let level_reason = next.attention_reason.as_deref().unwrap_or("");
                if newly_flagged {
                    tracing::warn!(%gid, attempts = next.attempts, reason = level_reason, "needs attention");
                } else {
                    tracing::info!(%gid, attempts = next.attempts,
                        retry_in_ms = next_attempt_at.map(|at| (at - now).num_milliseconds()).unwrap_or(0),
                        "round incomplete; retry scheduled");
                }
            }
            Ok(false) => {
                tracing::warn!(%gid, "lease lost before the round was written; the new owner redoes it")
            }
            Err(e) => {
                tracing::warn!(%gid, error = %e, "round not written; the lease will expire and the round is redone")
            }
        }
        drop(guard);
    }
}
