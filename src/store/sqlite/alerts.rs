//! The alert outbox on SQLite: claiming due alerts for delivery under a
//! lease and recording each attempt, both through the single writer.
//! Alerts are inserted ([`insert`]) by the writes that change
//! needs_attention (`drive.rs`, `admin.rs`, `msg.rs`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::rows::{after, at, us};
use crate::domain::Gid;
use crate::machine::Mode;
use crate::store::admin::{AlertAttempt, AlertRecord};
use crate::store::{StoreError, StoreResult};

#[derive(sqlx::FromRow)]
struct AlertRow {
    id: i64,
    gid: String,
    kind: String,
    reason: Option<String>,
    created_at: i64,
    attempts: i64,
    delivered_to: String,
    mode: Option<String>,
    participant: Option<String>,
}

/// Inserts one alert, due now; called by the writes that change the flag.
pub(super) async fn insert(
    c: &mut SqliteConnection,
    gid: &str,
    kind: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO alerts (gid, kind, reason, created_at, next_at) VALUES (?1, ?2, ?3, ?4, ?4)",
    )
    .bind(gid)
    .bind(kind)
    .bind(reason)
    .bind(us(now))
    .execute(c)
    .await?;
    Ok(())
}

pub(super) async fn claim(
    c: &mut SqliteConnection,
    owner: &str,
    limit: u32,
    lease: Duration,
    now: DateTime<Utc>,
) -> StoreResult<Vec<AlertRecord>> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE alerts SET owner = ?1, lease_until = ?2, attempts = attempts + 1
          WHERE id IN (SELECT id FROM alerts
                        WHERE delivered_at IS NULL AND next_at <= ?3
                          AND (lease_until IS NULL OR lease_until < ?3)
                        ORDER BY id LIMIT ?4)
         RETURNING id",
    )
    .bind(owner)
    .bind(us(after(now, lease)))
    .bind(us(now))
    .bind(i64::from(limit))
    .fetch_all(&mut *c)
    .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<AlertRow> = sqlx::query_as(
        "SELECT a.id, a.gid, a.kind, a.reason, a.created_at, a.attempts, a.delivered_to,
                g.mode,
                (SELECT b.participant FROM branches b
                  WHERE b.gid = a.gid AND b.last_code IS NOT NULL AND b.skipped_at IS NULL
                  ORDER BY b.created_at, b.branch_id LIMIT 1) AS participant
           FROM alerts a LEFT JOIN global_transactions g ON g.gid = a.gid
          WHERE a.id IN (SELECT value FROM json_each(?1))
          ORDER BY a.id",
    )
    .bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
    .fetch_all(&mut *c)
    .await?;
    rows.into_iter().map(record).collect()
}

pub(super) async fn attempted(c: &mut SqliteConnection, a: &AlertAttempt) -> StoreResult<bool> {
    let delivered = serde_json::to_string(&a.delivered_to)
        .map_err(|e| StoreError::Database(format!("delivered_to: {e}")))?;
    let updated = sqlx::query(
        "UPDATE alerts
            SET delivered_to = ?3, delivered_at = CASE WHEN ?4 THEN ?6 END,
                next_at = ?5, last_error = ?7, owner = NULL, lease_until = NULL
          WHERE id = ?1 AND owner = ?2 AND delivered_at IS NULL",
    )
    .bind(a.id)
    .bind(&a.owner)
    .bind(delivered)
    .bind(a.done)
    .bind(us(a.next_at))
    .bind(us(a.now))
    .bind(a.error.as_deref())
    .execute(c)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

fn record(r: AlertRow) -> StoreResult<AlertRecord> {
    Ok(AlertRecord {
        id: r.id,
        gid: Gid::from_trusted(r.gid),
        mode: r
            .mode
            .as_deref()
            .and_then(Mode::parse)
            .ok_or_else(|| StoreError::Corrupt(format!("alert {}: no transaction", r.id)))?,
        kind: r.kind,
        reason: r.reason,
        created_at: at(r.created_at),
        attempts: u32::try_from(r.attempts).unwrap_or(0),
        delivered_to: serde_json::from_str(&r.delivered_to).unwrap_or_default(),
        participant: r.participant,
    })
}
