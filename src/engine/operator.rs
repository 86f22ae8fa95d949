//! What operators do and see: the commands (retry now, pause, resume, roll
//! back, resolve) carried out as [`crate::machine::operator`] decides them,
//! each persisted with a compare-and-set and recorded with its actor; and
//! the views (list, detail, participants' health, counts). The admin gRPC
//! API and the console are thin adapters over this one home.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Engine;
use super::recovery::Wake;
use crate::domain::{BranchId, Gid};
use crate::error::{Error, Result};
use crate::machine::Mode;
use crate::machine::operator::{
    self, BranchEffect, BranchOp, BranchesView, OperatorEffect, OperatorFlags, OperatorOp,
};
use crate::participant::client::EndpointCallStats;
use crate::store::admin::{
    AdminChange, AdminStats, AdminStore, AdminTx, AdminWrite, FinishedInMinute, TxFilter,
};
use crate::store::{BranchRecord, EndpointRecord, EventRecord, ParticipantRecord};

/// Compare-and-set attempts before giving up on a transaction that keeps
/// changing under an operator command.
const CAS_ATTEMPTS: usize = 8;

/// The result of an operator command.
#[derive(Debug, Clone)]
pub struct Acted {
    /// False when the command was already in effect (nothing was written).
    pub changed: bool,
    /// One line for the operator: what happened or why nothing did.
    pub message: String,
    /// The transaction as it is after the command.
    pub tx: AdminTx,
}

/// A registered endpoint with what this instance saw of its calls.
#[derive(Debug, Clone)]
pub struct EndpointView {
    pub endpoint: EndpointRecord,
    /// `None` when this instance has not called it yet.
    pub calls: Option<EndpointCallStats>,
}

/// A registered participant as operators see it.
#[derive(Debug, Clone)]
pub struct ParticipantView {
    pub participant: ParticipantRecord,
    pub endpoints: Vec<EndpointView>,
}

/// Operator commands and views over one coordinator instance.
pub struct Operator {
    engine: Arc<Engine>,
    store: Arc<dyn AdminStore>,
    /// Woken after a command that makes work due, so that it runs now
    /// rather than at the next poll.
    wake: Wake,
}

impl Operator {
    pub fn new(engine: Arc<Engine>, store: Arc<dyn AdminStore>, wake: Wake) -> Self {
        Self {
            engine,
            store,
            wake,
        }
    }

    /// The instance whose view this is (endpoint health is per instance).
    pub fn instance_id(&self) -> &str {
        self.engine.instance_id()
    }

    /// The transaction as operators see it, with its branches.
    pub async fn get(&self, gid: &Gid) -> Result<(AdminTx, Vec<BranchRecord>)> {
        self.store
            .admin_get(gid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("transaction {gid} not found")))
    }

    /// The transaction, its branches and its history.
    pub async fn detail(
        &self,
        gid: &Gid,
    ) -> Result<(AdminTx, Vec<BranchRecord>, Vec<EventRecord>)> {
        let (tx, branches) = self.get(gid).await?;
        let events = self.store.events(gid).await?;
        Ok((tx, branches, events))
    }

    /// One page of transactions; `stuck_for` keeps those unfinished for at
    /// least that long (by this instance's clock).
    pub async fn list(
        &self,
        mut filter: TxFilter,
        stuck_for: Option<Duration>,
    ) -> Result<(Vec<AdminTx>, Option<crate::store::admin::ListCursor>)> {
        if let Some(d) = stuck_for {
            let d = chrono::Duration::from_std(d)
                .map_err(|_| Error::InvalidArgument("stuck_for is too large".into()))?;
            filter.stuck_since = Some(self.engine.clock.now() - d);
        }
        Ok(self.store.admin_list(&filter).await?)
    }

    /// Counts by status, backlog, needs attention, the oldest unfinished.
    pub async fn stats(&self) -> Result<AdminStats> {
        Ok(self.store.admin_stats().await?)
    }

    /// Transactions finished and failed in each minute of the last
    /// `window` (by this instance's clock), oldest first, every minute
    /// present (zero when none finished).
    pub async fn finished_per_minute(&self, window: Duration) -> Result<Vec<FinishedInMinute>> {
        let window = chrono::Duration::from_std(window)
            .map_err(|_| Error::InvalidArgument("window is too large".into()))?;
        let now = self.engine.clock.now();
        let since = now - window;
        let counted = self.store.admin_finished_per_minute(since).await?;
        Ok(every_minute(since, now, counted))
    }

    /// Every registered participant with its endpoints and what this
    /// instance saw of their calls (breaker, recent failures, last error).
    pub async fn participants(&self) -> Result<Vec<ParticipantView>> {
        let registered = self.store.list_participants().await?;
        let mut stats: HashMap<_, _> = self
            .engine
            .clients
            .endpoint_stats()
            .into_iter()
            .map(|s| (s.url.clone(), s))
            .collect();
        Ok(registered
            .into_iter()
            .map(|p| ParticipantView {
                endpoints: p
                    .endpoints
                    .iter()
                    .map(|e| EndpointView {
                        calls: stats.remove(&e.url),
                        endpoint: e.clone(),
                    })
                    .collect(),
                participant: p,
            })
            .collect())
    }

    /// Runs one operator command through the rules and persists it; a
    /// command the rules refuse is `FAILED_PRECONDITION` with their reason
    /// and changes nothing.
    pub async fn act(
        &self,
        gid: &Gid,
        op: OperatorOp,
        actor: &str,
        note: Option<String>,
    ) -> Result<Acted> {
        let event = match op {
            OperatorOp::RetryNow => "operator_retry",
            OperatorOp::Rollback { .. } => "operator_rollback",
            OperatorOp::Resolve { .. } => "operator_resolve",
            OperatorOp::Pause => "operator_pause",
            OperatorOp::Resume => "operator_resume",
        };
        for _ in 0..CAS_ATTEMPTS {
            let (row, branches) = self.get(gid).await?;
            let tx = &row.tx;
            let flags = OperatorFlags {
                paused: tx.paused,
                resolved_by: row.resolution.as_ref().map(|r| r.by.clone()),
            };
            let now = self.engine.clock.now();
            let effect = operator::operate(&tx.state(&branches), &flags, &op, now)
                .map_err(|r| Error::FailedPrecondition(r.to_string()))?;
            let (change, message) = match effect {
                OperatorEffect::Unchanged(why) => {
                    return Ok(Acted {
                        changed: false,
                        message: format!("nothing to do: {why}"),
                        tx: row,
                    });
                }
                OperatorEffect::Rollback { reason } => {
                    // Decided (compare-and-set, fencing, phase 2) exactly as
                    // for an initiator; the operator event follows once the
                    // decision is durable.
                    let status = self
                        .engine
                        .rollback(gid, format!("operator {actor}: {reason}"), None)
                        .await?;
                    self.store
                        .admin_event(gid, event, Some(&reason), actor, self.engine.clock.now())
                        .await?;
                    tracing::info!(%gid, actor, action = op.name(), status = status.as_str(), "operator action");
                    return Ok(Acted {
                        changed: true,
                        message: "rollback decided; every branch is being cancelled".into(),
                        tx: self.get(gid).await?.0,
                    });
                }
                OperatorEffect::RetryAt(at) => (
                    AdminChange::RetryAt(at),
                    "retry scheduled now; the recovery loop was woken",
                ),
                OperatorEffect::SetPaused(true) => {
                    (AdminChange::SetPaused(true), "retries paused until resumed")
                }
                OperatorEffect::SetPaused(false) => {
                    (AdminChange::SetPaused(false), "retries resumed")
                }
                OperatorEffect::Resolve { note } => (
                    AdminChange::Resolve { note },
                    "resolved by hand; it will not be retried again",
                ),
            };
            let write = AdminWrite {
                gid: gid.clone(),
                expected_status: tx.status,
                expected_paused: tx.paused,
                expected_needs_attention: tx.needs_attention,
                change,
                event,
                actor: actor.to_string(),
                note: note.clone(),
                now,
            };
            if self.store.admin_apply(write).await? {
                tracing::info!(%gid, actor, action = op.name(), "operator action");
                if matches!(op, OperatorOp::RetryNow | OperatorOp::Resume) {
                    self.wake.wake();
                }
                return Ok(Acted {
                    changed: true,
                    message: message.into(),
                    tx: self.get(gid).await?.0,
                });
            }
        }
        Err(Error::Unavailable(format!(
            "transaction {gid} kept changing during the operator command; retry"
        )))
    }
}

impl Operator {
    /// Runs a command on one branch through the rules and persists it, as
    /// [`Operator::act`] does for a transaction: a refusal is
    /// `FAILED_PRECONDITION` with the reason and changes nothing.
    pub async fn act_on_branch(
        &self,
        gid: &Gid,
        branch: &BranchId,
        op: BranchOp,
        actor: &str,
        note: Option<String>,
    ) -> Result<Acted> {
        let event = match op {
            BranchOp::Retry => "operator_retry_branch",
            BranchOp::Skip { .. } => "operator_skip",
        };
        for _ in 0..CAS_ATTEMPTS {
            let (row, branches) = self.get(gid).await?;
            let tx = &row.tx;
            let flags = OperatorFlags {
                paused: tx.paused,
                resolved_by: row.resolution.as_ref().map(|r| r.by.clone()),
            };
            let view = match tx.mode {
                Mode::Tcc => BranchesView::of_tcc(&tx.state(&branches)),
                Mode::Saga | Mode::Msg => BranchesView::of_saga(&tx.saga_state(&branches)),
            };
            let now = self.engine.clock.now();
            let effect = operator::operate_branch(&view, &flags, branch, &op, now)
                .map_err(|r| Error::FailedPrecondition(r.to_string()))?;
            let (change, message) = match effect {
                BranchEffect::RetryAt(at) => (
                    AdminChange::RetryBranchAt {
                        at,
                        branch_id: branch.clone(),
                    },
                    format!("branch {branch}: retry scheduled now; the recovery loop was woken"),
                ),
                BranchEffect::Skip {
                    phase,
                    expected,
                    attempts,
                    note,
                    finishes,
                } => (
                    AdminChange::SkipBranch {
                        branch_id: branch.clone(),
                        phase,
                        expected,
                        attempts,
                        note,
                        finishes,
                    },
                    match finishes {
                        Some(status) => format!(
                            "branch {branch}: {} skipped; every branch is done or skipped, so the transaction is {}",
                            phase.as_str(),
                            status.as_str()
                        ),
                        None => format!(
                            "branch {branch}: {} skipped; the other branches are still driven",
                            phase.as_str()
                        ),
                    },
                ),
            };
            let write = AdminWrite {
                gid: gid.clone(),
                expected_status: tx.status,
                expected_paused: tx.paused,
                expected_needs_attention: tx.needs_attention,
                change,
                event,
                actor: actor.to_string(),
                note: note.clone(),
                now,
            };
            if self.store.admin_apply(write).await? {
                tracing::info!(%gid, branch_id = %branch, actor, action = op.name(), "operator action");
                self.wake.wake();
                return Ok(Acted {
                    changed: true,
                    message,
                    tx: self.get(gid).await?.0,
                });
            }
        }
        Err(Error::Unavailable(format!(
            "transaction {gid} kept changing during the operator command; retry"
        )))
    }
}

/// Most transactions one bulk command acts on.
pub const MAX_BULK: u32 = 1000;

/// What a bulk command did (or, dry, would do) to one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkOutcome {
    Changed,
    /// Already as asked; nothing written.
    Unchanged,
    /// The rules said no; the message says why.
    Refused,
    /// Dry run: the command would change it.
    WouldChange,
    /// An error other than a refusal (it kept changing, the database).
    Failed,
}

impl BulkOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkOutcome::Changed => "changed",
            BulkOutcome::Unchanged => "unchanged",
            BulkOutcome::Refused => "refused",
            BulkOutcome::WouldChange => "would_change",
            BulkOutcome::Failed => "failed",
        }
    }
}

/// One transaction's result in a bulk command.
#[derive(Debug, Clone)]
pub struct BulkResult {
    pub gid: Gid,
    pub outcome: BulkOutcome,
    pub message: String,
    pub status: crate::machine::Status,
}

impl Operator {
    /// Applies `op` to every transaction matching `filter` (oldest first,
    /// at most `limit`; of those, only `only` when it is not empty), each
    /// exactly as [`Operator::act`] would, one after the other; with
    /// `dry_run`, asks the same rules what each would do and writes
    /// nothing. Returns a result per transaction and whether more matched
    /// than `limit`.
    #[allow(clippy::too_many_arguments)]
    pub async fn bulk(
        &self,
        mut filter: TxFilter,
        stuck_for: Option<Duration>,
        op: OperatorOp,
        only: &[Gid],
        actor: &str,
        note: Option<String>,
        dry_run: bool,
        limit: u32,
    ) -> Result<(Vec<BulkResult>, bool)> {
        let limit = limit.clamp(1, MAX_BULK) as usize;
        filter.oldest_first = true;
        filter.after = None;
        filter.limit = 500;
        let mut matched: Vec<Gid> = Vec::new();
        let truncated = loop {
            let (page, next) = self.list(filter.clone(), stuck_for).await?;
            matched.extend(
                page.into_iter()
                    .map(|t| t.tx.gid)
                    .filter(|g| only.is_empty() || only.contains(g)),
            );
            if matched.len() > limit {
                matched.truncate(limit);
                break true;
            }
            match next {
                Some(cursor) => filter.after = Some(cursor),
                None => break false,
            }
        };
        let mut results = Vec::with_capacity(matched.len());
        for gid in matched {
            let result = if dry_run {
                self.dry(&gid, &op).await
            } else {
                match self.act(&gid, op.clone(), actor, note.clone()).await {
                    Ok(acted) => Ok(BulkResult {
                        outcome: if acted.changed {
                            BulkOutcome::Changed
                        } else {
                            BulkOutcome::Unchanged
                        },
                        message: acted.message,
                        status: acted.tx.tx.status,
                        gid: gid.clone(),
                    }),
                    Err(e) => Err(e),
                }
            };
            results.push(match result {
                Ok(r) => r,
                Err(e) => {
                    let outcome = match e {
                        Error::FailedPrecondition(_) => BulkOutcome::Refused,
                        _ => BulkOutcome::Failed,
                    };
                    let status = match self.get(&gid).await {
                        Ok((row, _)) => row.tx.status,
                        Err(_) => crate::machine::Status::Trying,
                    };
                    BulkResult {
                        gid,
                        outcome,
                        message: e.to_string(),
                        status,
                    }
                }
            });
        }
        if !dry_run {
            tracing::info!(
                actor,
                action = op.name(),
                transactions = results.len(),
                "operator bulk action"
            );
        }
        Ok((results, truncated))
    }

    /// What `op` would do to `gid` now, by the same rules; writes nothing.
    async fn dry(&self, gid: &Gid, op: &OperatorOp) -> Result<BulkResult> {
        let (row, branches) = self.get(gid).await?;
        let tx = &row.tx;
        let flags = OperatorFlags {
            paused: tx.paused,
            resolved_by: row.resolution.as_ref().map(|r| r.by.clone()),
        };
        let effect = operator::operate(&tx.state(&branches), &flags, op, self.engine.clock.now())
            .map_err(|r| Error::FailedPrecondition(r.to_string()))?;
        let (outcome, message) = match effect {
            OperatorEffect::Unchanged(why) => {
                (BulkOutcome::Unchanged, format!("nothing to do: {why}"))
            }
            OperatorEffect::RetryAt(_) => (BulkOutcome::WouldChange, "would retry now".into()),
            OperatorEffect::SetPaused(true) => (BulkOutcome::WouldChange, "would pause".into()),
            OperatorEffect::SetPaused(false) => (BulkOutcome::WouldChange, "would resume".into()),
            OperatorEffect::Resolve { .. } => {
                (BulkOutcome::WouldChange, "would resolve by hand".into())
            }
            OperatorEffect::Rollback { .. } => (BulkOutcome::WouldChange, "would roll back".into()),
        };
        Ok(BulkResult {
            gid: gid.clone(),
            outcome,
            message,
            status: tx.status,
        })
    }
}

/// Start of the minute `t` is in.
fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap_or(t)
}

/// One entry per minute from `since`'s to `now`'s, taking the counts of
/// `counted` (sorted, sparse) and zero elsewhere: a chart then has no gaps
/// to interpret.
fn every_minute(
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    counted: Vec<FinishedInMinute>,
) -> Vec<FinishedInMinute> {
    let mut counted = counted.into_iter().peekable();
    let mut out = Vec::new();
    let mut minute = minute_of(since);
    while minute <= now {
        // The store's minutes are truncated the same way; anything before
        // the window is skipped.
        while counted.peek().is_some_and(|c| c.minute < minute) {
            counted.next();
        }
        out.push(match counted.next_if(|c| c.minute == minute) {
            Some(c) => c,
            None => FinishedInMinute {
                minute,
                finished: 0,
                failed: 0,
            },
        });
        minute += chrono::Duration::minutes(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn every_minute_fills_gaps_and_keeps_counts() {
        let at = |m: u32, s: u32| Utc.with_ymd_and_hms(2026, 1, 1, 12, m, s).unwrap();
        let counted = vec![
            FinishedInMinute {
                minute: at(0, 0),
                finished: 9,
                failed: 9,
            },
            FinishedInMinute {
                minute: at(2, 0),
                finished: 3,
                failed: 1,
            },
        ];
        let minutes = every_minute(at(1, 30), at(4, 10), counted);
        let shown: Vec<_> = minutes
            .iter()
            .map(|m| (m.minute, m.finished, m.failed))
            .collect();
        assert_eq!(
            shown,
            [
                (at(1, 0), 0, 0),
                (at(2, 0), 3, 1),
                (at(3, 0), 0, 0),
                (at(4, 0), 0, 0)
            ]
        );
    }
}
