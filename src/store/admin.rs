//! Queries of the operator (admin) API on PostgreSQL: filtered, paginated
//! listing, detail, summary counts and the writes of operator commands.
//!
//! Inherent methods of [`PgStore`] rather than [`Store`] methods: only the
//! admin API uses them, and it needs PostgreSQL anyway. Every write is one
//! statement that compares what the operator rules saw (status, paused,
//! needs_attention, not resolved) and appends the operator's event in the
//! same statement, so an action is recorded exactly when it took effect.

use chrono::{DateTime, Utc};
// Dynamic SQL here only ever interpolates constants of this file.
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

use super::postgres::{PgStore, branch_from_row, tx_from_row};
use super::*;
use crate::machine::Status;

/// How an operator closed a transaction by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub at: DateTime<Utc>,
    pub by: String,
    pub note: String,
}

/// A transaction row as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminTx {
    pub tx: TxRecord,
    pub resolution: Option<Resolution>,
    pub branch_count: u32,
    /// Distinct participants of its branches, sorted.
    pub participants: Vec<String>,
}

/// Filters of the transaction list; `None`/empty/false means "any".
#[derive(Debug, Clone, Default)]
pub struct TxFilter {
    pub statuses: Vec<Status>,
    pub mode: Option<crate::machine::Mode>,
    pub participant: Option<String>,
    pub created_before: Option<DateTime<Utc>>,
    pub created_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    pub needs_attention: bool,
    /// Not final, not resolved and created before this instant.
    pub stuck_since: Option<DateTime<Utc>>,
    pub gid_prefix: Option<String>,
    pub oldest_first: bool,
    pub after: Option<ListCursor>,
    pub limit: u32,
}

/// Position in the list: the last row of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub created_at: DateTime<Utc>,
    pub gid: String,
}

impl ListCursor {
    /// Opaque to clients; `<microseconds>.<gid>` (gids contain no spaces,
    /// and the microseconds no dot).
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.gid)
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let (micros, gid) = raw.split_once('.')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        (!gid.is_empty()).then(|| Self {
            created_at,
            gid: gid.to_string(),
        })
    }
}

/// What an operator command writes.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminChange {
    RetryAt(DateTime<Utc>),
    SetPaused(bool),
    /// Fences out any driver and stops retries for good.
    Resolve {
        note: String,
    },
}

/// An operator write, applied only if the row is still as the rules saw it.
#[derive(Debug, Clone)]
pub struct AdminWrite {
    pub gid: Gid,
    pub expected_status: Status,
    pub expected_paused: bool,
    pub expected_needs_attention: bool,
    pub change: AdminChange,
    /// Event kind, for example `operator_retry`.
    pub event: &'static str,
    /// Name of the admin token used.
    pub actor: String,
    pub note: Option<String>,
    pub now: DateTime<Utc>,
}

/// Summary counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdminStats {
    pub by_status: Vec<(Status, u64)>,
    pub total: u64,
    pub unfinished: u64,
    pub retry_backlog: u64,
    pub retry_due: u64,
    pub needs_attention: u64,
    pub paused: u64,
    pub resolved: u64,
    pub oldest_unfinished: Option<AdminTx>,
}

/// Statuses after which nothing happens, as the state machine says.
fn final_statuses() -> Vec<String> {
    Status::ALL
        .into_iter()
        .filter(|s| s.is_final())
        .map(|s| s.as_str().to_string())
        .collect()
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Columns added to `g.*` by every admin read.
const AGGREGATES: &str = "(SELECT count(*) FROM branches b WHERE b.gid = g.gid) AS branch_count,
    COALESCE((SELECT array_agg(DISTINCT b.participant ORDER BY b.participant)
                FROM branches b WHERE b.gid = g.gid), '{}') AS participant_names";

fn admin_from_row(row: &PgRow) -> StoreResult<AdminTx> {
    let tx = tx_from_row(row)?;
    let resolved_at: Option<DateTime<Utc>> = row.try_get("resolved_at").map_err(map_sqlx)?;
    let resolution = match resolved_at {
        Some(at) => Some(Resolution {
            at,
            by: row
                .try_get::<Option<String>, _>("resolved_by")
                .map_err(map_sqlx)?
                .unwrap_or_default(),
            note: row
                .try_get::<Option<String>, _>("resolution_note")
                .map_err(map_sqlx)?
                .unwrap_or_default(),
        }),
        None => None,
    };
    let branch_count: i64 = row.try_get("branch_count").map_err(map_sqlx)?;
    Ok(AdminTx {
        tx,
        resolution,
        branch_count: u32::try_from(branch_count).unwrap_or(u32::MAX),
        participants: row.try_get("participant_names").map_err(map_sqlx)?,
    })
}

impl PgStore {
    /// One page of transactions matching `filter`, and the cursor of the
    /// next page if there is one.
    pub async fn admin_list(
        &self,
        filter: &TxFilter,
    ) -> StoreResult<(Vec<AdminTx>, Option<ListCursor>)> {
        let (cmp, order) = if filter.oldest_first {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        let sql = format!(
            "SELECT g.*, {AGGREGATES}
               FROM global_transactions g
              WHERE (cardinality($1::text[]) = 0 OR g.status = ANY($1))
                AND ($2::text IS NULL OR g.mode = $2)
                AND ($3::text IS NULL OR EXISTS
                        (SELECT 1 FROM branches b WHERE b.gid = g.gid AND b.participant = $3))
                AND ($4::timestamptz IS NULL OR g.created_at < $4)
                AND ($5::timestamptz IS NULL OR g.created_at > $5)
                AND ($6::timestamptz IS NULL OR g.updated_at < $6)
                AND (NOT $7 OR (g.needs_attention AND g.resolved_at IS NULL
                                  AND NOT g.status = ANY($13)))
                AND ($8::timestamptz IS NULL OR (g.created_at < $8 AND g.resolved_at IS NULL
                                                 AND NOT g.status = ANY($13)))
                AND ($9::text IS NULL OR starts_with(g.gid, $9))
                AND ($10::timestamptz IS NULL OR (g.created_at, g.gid) {cmp} ($10, $11))
              ORDER BY g.created_at {order}, g.gid {order}
              LIMIT $12"
        );
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        let limit = i64::from(filter.limit.max(1));
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(statuses)
            .bind(filter.mode.map(|m| m.as_str()))
            .bind(filter.participant.as_deref())
            .bind(filter.created_before)
            .bind(filter.created_after)
            .bind(filter.updated_before)
            .bind(filter.needs_attention)
            .bind(filter.stuck_since)
            .bind(filter.gid_prefix.as_deref())
            .bind(filter.after.as_ref().map(|c| c.created_at))
            .bind(filter.after.as_ref().map(|c| c.gid.as_str()))
            .bind(limit + 1)
            .bind(final_statuses())
            .fetch_all(self.pool())
            .await
            .map_err(map_sqlx)?;
        let mut page = rows
            .iter()
            .map(admin_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let next = if page.len() as i64 > limit {
            page.truncate(limit as usize);
            page.last().map(|last| ListCursor {
                created_at: last.tx.created_at,
                gid: last.tx.gid.to_string(),
            })
        } else {
            None
        };
        Ok((page, next))
    }

    /// One transaction with its branches (in creation order).
    pub async fn admin_get(&self, gid: &Gid) -> StoreResult<Option<(AdminTx, Vec<BranchRecord>)>> {
        let sql = format!("SELECT g.*, {AGGREGATES} FROM global_transactions g WHERE g.gid = $1");
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(gid.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(map_sqlx)?
        else {
            return Ok(None);
        };
        let tx = admin_from_row(&row)?;
        let branches =
            sqlx::query("SELECT * FROM branches WHERE gid = $1 ORDER BY created_at, branch_id")
                .bind(gid.as_str())
                .fetch_all(self.pool())
                .await
                .map_err(map_sqlx)?
                .iter()
                .map(branch_from_row)
                .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some((tx, branches)))
    }

    /// Applies an operator write if the row is still as expected, with its
    /// event; `false` if the row moved on (the caller decides again).
    pub async fn admin_apply(&self, w: AdminWrite) -> StoreResult<bool> {
        let set = match &w.change {
            AdminChange::RetryAt(_) => {
                // The database clock decides what is due; never schedule
                // past it because of skew with this instance.
                "next_attempt_at = LEAST($6::timestamptz, now())"
            }
            AdminChange::SetPaused(_) => "paused = $6::boolean",
            AdminChange::Resolve { .. } => {
                "resolved_at = $5, resolved_by = $7, resolution_note = $6::text,
                 needs_attention = false, next_attempt_at = NULL,
                 owner = NULL, lease_until = NULL, fence = fence + 1"
            }
        };
        let sql = format!(
            "WITH g AS (
                UPDATE global_transactions
                   SET {set}, updated_at = $5
                 WHERE gid = $1 AND status = $2 AND paused = $3 AND needs_attention = $4
                   AND resolved_at IS NULL
                RETURNING gid, status
            ), ev AS (
                INSERT INTO transaction_events (gid, at, kind, status, message, actor)
                SELECT gid, $5, $8, status, $9, $7 FROM g
            )
            SELECT count(*) FROM g"
        );
        let query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
            .bind(w.gid.as_str())
            .bind(w.expected_status.as_str())
            .bind(w.expected_paused)
            .bind(w.expected_needs_attention)
            .bind(w.now);
        let query = match &w.change {
            AdminChange::RetryAt(at) => query.bind(*at),
            AdminChange::SetPaused(p) => query.bind(*p),
            AdminChange::Resolve { note } => query.bind(note.clone()),
        };
        let updated = query
            .bind(&w.actor)
            .bind(w.event)
            .bind(w.note.as_deref())
            .fetch_one(self.pool())
            .await
            .map_err(map_sqlx)?;
        Ok(updated == 1)
    }

    /// Appends an operator event for an action carried out elsewhere (a
    /// rollback decided by the engine).
    pub async fn admin_event(
        &self,
        gid: &Gid,
        kind: &str,
        message: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO transaction_events (gid, at, kind, status, message, actor)
             SELECT gid, $3, $2, status, $4, $5 FROM global_transactions WHERE gid = $1",
        )
        .bind(gid.as_str())
        .bind(kind)
        .bind(now)
        .bind(message)
        .bind(actor)
        .execute(self.pool())
        .await
        .map_err(map_sqlx)?;
        Ok(())
    }

    /// Counts over every transaction, in one scan, plus the oldest
    /// unfinished one.
    pub async fn admin_stats(&self) -> StoreResult<AdminStats> {
        let finals = final_statuses();
        let rows =
            sqlx::query("SELECT status, count(*) AS n FROM global_transactions GROUP BY status")
                .fetch_all(self.pool())
                .await
                .map_err(map_sqlx)?;
        let mut by_status: Vec<(Status, u64)> = Status::ALL.into_iter().map(|s| (s, 0)).collect();
        for r in &rows {
            let status: String = r.try_get("status").map_err(map_sqlx)?;
            let n: i64 = r.try_get("n").map_err(map_sqlx)?;
            if let Some(slot) = by_status.iter_mut().find(|(s, _)| s.as_str() == status) {
                slot.1 = count(n);
            }
        }
        let row = sqlx::query(
            "SELECT count(*) AS total,
                    count(*) FILTER (WHERE open) AS unfinished,
                    count(*) FILTER (WHERE open AND decided_at IS NOT NULL AND attempts > 0
                                       AND next_attempt_at IS NOT NULL) AS retry_backlog,
                    count(*) FILTER (WHERE open AND decided_at IS NOT NULL AND attempts > 0
                                       AND NOT paused AND next_attempt_at <= now()) AS retry_due,
                    count(*) FILTER (WHERE open AND needs_attention) AS needs_attention,
                    count(*) FILTER (WHERE open AND paused) AS paused,
                    count(*) FILTER (WHERE resolved_at IS NOT NULL) AS resolved
               FROM (SELECT g.*, (NOT g.status = ANY($1) AND g.resolved_at IS NULL) AS open
                       FROM global_transactions g) t",
        )
        .bind(&finals)
        .fetch_one(self.pool())
        .await
        .map_err(map_sqlx)?;
        let get = |col: &str| -> StoreResult<u64> {
            Ok(count(row.try_get::<i64, _>(col).map_err(map_sqlx)?))
        };
        let sql = format!(
            "SELECT g.*, {AGGREGATES} FROM global_transactions g
              WHERE NOT g.status = ANY($1) AND g.resolved_at IS NULL
              ORDER BY g.created_at, g.gid LIMIT 1"
        );
        let oldest = sqlx::query(AssertSqlSafe(sql))
            .bind(&finals)
            .fetch_optional(self.pool())
            .await
            .map_err(map_sqlx)?;
        Ok(AdminStats {
            by_status,
            total: get("total")?,
            unfinished: get("unfinished")?,
            retry_backlog: get("retry_backlog")?,
            retry_due: get("retry_due")?,
            needs_attention: get("needs_attention")?,
            paused: get("paused")?,
            resolved: get("resolved")?,
            oldest_unfinished: oldest.as_ref().map(admin_from_row).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let c = ListCursor {
            created_at: DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap(),
            gid: "order.42:a_b-c".into(),
        };
        assert_eq!(ListCursor::decode(&c.encode()), Some(c));
        for bad in ["", "abc", "12.", "x.gid", ".gid"] {
            assert_eq!(ListCursor::decode(bad), None, "{bad}");
        }
    }
}
