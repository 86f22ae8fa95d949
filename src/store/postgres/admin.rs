//! The operator (admin) queries on PostgreSQL: filtered, paginated
//! listing, detail, summary counts and the writes of operator commands.
//! Each write is one statement: the compare-and-set on what the operator
//! rules saw, and the operator's event, together.

use chrono::{DateTime, Utc};
// Dynamic SQL here only ever interpolates constants of this file.
use sqlx::AssertSqlSafe;

use super::PgStore;
use super::reads::branch_rows;
use crate::domain::Gid;
use crate::machine::Status;
use crate::store::BranchRecord;
use crate::store::StoreResult;
use crate::store::admin::{
    AdminChange, AdminStats, AdminTx, AdminWrite, FinishedInMinute, ListCursor, Resolution,
    TxFilter,
};
use crate::store::rows::TxRow;

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

/// A transaction row with the resolution and the [`AGGREGATES`].
#[derive(sqlx::FromRow)]
struct AdminRow {
    #[sqlx(flatten)]
    tx: TxRow,
    resolved_at: Option<DateTime<Utc>>,
    resolved_by: Option<String>,
    resolution_note: Option<String>,
    branch_count: i64,
    participant_names: Vec<String>,
}

impl From<AdminRow> for AdminTx {
    fn from(r: AdminRow) -> Self {
        AdminTx {
            tx: r.tx.into(),
            resolution: r.resolved_at.map(|at| Resolution {
                at,
                by: r.resolved_by.unwrap_or_default(),
                note: r.resolution_note.unwrap_or_default(),
            }),
            branch_count: u32::try_from(r.branch_count).unwrap_or(u32::MAX),
            participants: r.participant_names,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Totals {
    total: i64,
    unfinished: i64,
    retry_backlog: i64,
    retry_due: i64,
    needs_attention: i64,
    paused: i64,
    resolved: i64,
}

impl PgStore {
    /// One page of transactions matching `filter`, and the cursor of the
    /// next page if there is one.
    pub(super) async fn admin_list(
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
        let rows: Vec<AdminRow> = sqlx::query_as(AssertSqlSafe(sql))
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
            .fetch_all(&self.durable)
            .await?;
        let mut page: Vec<AdminTx> = rows.into_iter().map(AdminTx::from).collect();
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
    pub(super) async fn admin_get(
        &self,
        gid: &Gid,
    ) -> StoreResult<Option<(AdminTx, Vec<BranchRecord>)>> {
        let sql = format!("SELECT g.*, {AGGREGATES} FROM global_transactions g WHERE g.gid = $1");
        let mut conn = self.durable.acquire().await?;
        let row: Option<AdminRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(gid.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let branches = branch_rows(&mut conn, gid).await?;
        Ok(Some((row.into(), branches)))
    }

    /// Applies an operator write if the row is still as expected, with its
    /// event; `false` if the row moved on (the caller decides again).
    pub(super) async fn admin_apply(&self, w: AdminWrite) -> StoreResult<bool> {
        let set = match &w.change {
            AdminChange::RetryAt(_) => {
                // The database clock decides what is due; never schedule
                // past it because of skew with this instance. Plus the
                // margin every retry waits after a call that timed out
                // (`CALL_MARGIN`): the round that failed may have ended a
                // moment ago.
                "next_attempt_at = LEAST($6::timestamptz, now()) + interval '250 milliseconds'"
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
            .fetch_one(&self.durable)
            .await?;
        Ok(updated == 1)
    }

    /// Appends an operator event for an action carried out elsewhere (a
    /// rollback decided by the engine).
    pub(super) async fn admin_event(
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
        .execute(&self.durable)
        .await?;
        Ok(())
    }

    /// Counts over every transaction, in one scan, plus the oldest
    /// unfinished one.
    pub(super) async fn admin_stats(&self) -> StoreResult<AdminStats> {
        let finals = final_statuses();
        let rows: Vec<(Status, i64)> =
            sqlx::query_as("SELECT status, count(*) AS n FROM global_transactions GROUP BY status")
                .fetch_all(&self.durable)
                .await?;
        let mut by_status: Vec<(Status, u64)> = Status::ALL.into_iter().map(|s| (s, 0)).collect();
        for (status, n) in rows {
            if let Some(slot) = by_status.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = count(n);
            }
        }
        let t: Totals = sqlx::query_as(
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
        .fetch_one(&self.durable)
        .await?;
        let sql = format!(
            "SELECT g.*, {AGGREGATES} FROM global_transactions g
              WHERE NOT g.status = ANY($1) AND g.resolved_at IS NULL
              ORDER BY g.created_at, g.gid LIMIT 1"
        );
        let oldest: Option<AdminRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(&finals)
            .fetch_optional(&self.durable)
            .await?;
        Ok(AdminStats {
            by_status,
            total: count(t.total),
            unfinished: count(t.unfinished),
            retry_backlog: count(t.retry_backlog),
            retry_due: count(t.retry_due),
            needs_attention: count(t.needs_attention),
            paused: count(t.paused),
            resolved: count(t.resolved),
            oldest_unfinished: oldest.map(AdminTx::from),
        })
    }

    /// Finished (and failed) transactions per minute since `since`. The
    /// range condition is on the expression of the retention index
    /// (`global_transactions_closed`), so it reads only the last hour's
    /// closed rows, not the table.
    pub(super) async fn admin_finished_per_minute(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<FinishedInMinute>> {
        let failed: Vec<&str> = [Status::Cancelled, Status::Compensated]
            .iter()
            .map(|s| s.as_str())
            .collect();
        let rows: Vec<(DateTime<Utc>, i64, i64)> = sqlx::query_as(
            "SELECT date_trunc('minute', finished_at) AS minute,
                    count(*) AS finished,
                    count(*) FILTER (WHERE status = ANY($2)) AS failed
               FROM global_transactions
              WHERE (finished_at IS NOT NULL OR resolved_at IS NOT NULL)
                AND COALESCE(finished_at, resolved_at) >= date_trunc('minute', $1::timestamptz)
                AND finished_at IS NOT NULL
              GROUP BY 1 ORDER BY 1",
        )
        .bind(since)
        .bind(failed)
        .fetch_all(&self.durable)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(minute, finished, failed)| FinishedInMinute {
                minute,
                finished: count(finished),
                failed: count(failed),
            })
            .collect())
    }
}

// The retry SQL above spells the margin out; keep them equal.
const _: () = assert!(crate::clock::CALL_MARGIN.as_millis() == 250);
