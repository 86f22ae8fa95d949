//! Phase 2: calls Confirm or Cancel on every branch not yet done, folds the
//! replies through the state machine and writes the round under the lease.
//! One round per lease: a failed round schedules the next attempt with
//! backoff and gives the lease back, so the recovery loop of any instance
//! picks it up when due.

use std::time::Duration;

use futures::future::join_all;
use tracing::Instrument;

use super::Engine;
use super::calls::BranchCall;
use super::leases::{GRANT_SLACK, Granted};
use crate::domain::BranchId;
use crate::domain::metadata::Metadata;
use crate::machine::tcc::{self, Settled, TxState};
use crate::machine::{Mode, Outcome, Phase};
use crate::store::{BranchRecord, CallRecord, RoundWrite};

/// How often phase 2 looks whether a Try it waits for has replied.
const BUSY_POLL: Duration = Duration::from_millis(50);

/// How long until no Try of `branches` may still be running.
fn busy_for<'a>(branches: impl Iterator<Item = &'a BranchRecord>) -> Duration {
    let now = std::time::Instant::now();
    branches
        .filter_map(|b| b.call_busy_until)
        .max()
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
}

impl Engine {
    /// The lease a decision grants for the first round of phase 2 over
    /// `called`: while a Try of one of them is still out, only the wait for
    /// it, which is all the round does first (its calls get their cover
    /// once the wait is over, see [`Engine::drive`]); otherwise the calls'
    /// deadlines ([`Engine::lease_for`]). A lease granted for calls not sent
    /// yet would, if this instance died during the wait, keep every other
    /// instance away for up to a call's deadline after the Try was over.
    pub(crate) fn round_lease(&self, called: &[&BranchRecord]) -> Duration {
        let busy = busy_for(called.iter().copied());
        if busy.is_zero() {
            self.lease_for(called.iter().map(|b| b.call_timeout))
        } else {
            busy + BUSY_POLL + GRANT_SLACK
        }
    }

    /// Drives one round in the background, tracked for graceful shutdown.
    pub(crate) fn spawn_drive(
        &self,
        grant: Granted,
        branches: Vec<BranchRecord>,
        state: TxState,
        calls: Vec<(BranchId, Phase)>,
        metadata: Metadata,
    ) {
        let Some(engine) = self.self_arc() else {
            return;
        };
        let span = tracing::info_span!("drive", gid = %grant.lease.gid);
        self.tracker.spawn(
            async move {
                engine.drive(grant, branches, state, calls, metadata).await;
            }
            .instrument(span),
        );
    }

    /// One phase-2 round under a lease: makes `calls` (what the state
    /// machine said is owed), settles the replies and writes the round.
    pub(crate) async fn drive(
        &self,
        grant: Granted,
        branches: Vec<BranchRecord>,
        state: TxState,
        calls: Vec<(BranchId, Phase)>,
        metadata: Metadata,
    ) {
        let guard = self.leases.hold(&grant);
        let lease = grant.lease;
        let gid = lease.gid.clone();
        let called: Vec<&BranchRecord> = super::calls::called(&branches, &calls).collect();
        // A Try still out (the initiator rolled back without waiting for
        // it, or its coordinator crashed) may be running at the participant:
        // no Cancel is sent before its reply is recorded or its deadline
        // passed, under a lease that covers the wait too.
        let busy = busy_for(called.iter().copied());
        if !busy.is_zero() {
            // Held for the wait alone (the wait ends when a poll finds the
            // Try over): a Try usually replies long before its deadline,
            // and the lease is extended for the calls after.
            let Some(waiting) = self.hold_through(&guard, busy + BUSY_POLL).await else {
                return;
            };
            tracing::debug!(%gid, wait_ms = busy.as_millis() as u64, "waiting for a try still out before phase 2");
            let mut busy = busy;
            while !busy.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(busy.min(BUSY_POLL)) => {}
                    _ = guard.lost().cancelled() => return,
                }
                // The record of the Try's reply clears its mark.
                busy = match self.store.load(&gid).await {
                    Ok(Some((_, fresh))) => busy_for(
                        fresh
                            .iter()
                            .filter(|b| called.iter().any(|c| c.branch_id == b.branch_id)),
                    ),
                    _ => busy.saturating_sub(BUSY_POLL),
                };
            }
            drop(waiting);
        }
        let longest = called
            .iter()
            .map(|b| self.call_timeout_of(b))
            .max()
            .unwrap_or_default();
        let Some(out) = self.cover(&guard, longest).await else {
            return;
        };
        let until = out.until;
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
                        self.call_participant(BranchCall {
                            gid,
                            branch: b,
                            phase: *phase,
                            action: &b.action,
                            attempt,
                            metadata,
                            until,
                        })
                        .await
                        .outcome
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
        drop(out);
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
                let owed = next.branches.iter().filter(|b| !b.second_phase.is_done());
                let delay = self.retry.delay_for(attempt, owed.map(|b| &b.policy));
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
                crate::telemetry::metrics::tx_finished(Mode::Tcc, status);
                tracing::debug!(%gid, status = status.as_str(), "finished");
                self.notify_finished(&gid);
            }
            Ok(true) => {
                crate::telemetry::metrics::retry_scheduled(Mode::Tcc);
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
