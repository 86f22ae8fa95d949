//! The alert outbox on SQLite: claiming due alerts for delivery under a
//! lease and recording each attempt, both through the single writer.
//! Alerts are inserted ([`insert`]) by the writes that change
//! needs_attention (`drive.rs`, `admin.rs`, `msg.rs`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::rows::{after, at, us};
use crate::domain::Gid;
use crate::machine::Mode;
use crate::store::admin::{AlertAttempt, AlertRecord};
use crate::store::{StoreError, StoreResult};

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
pub(super) fn insert(
    c: &Connection,
    gid: &str,
    kind: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO alerts (gid, kind, reason, created_at, next_at) VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![gid, kind, reason, us(now)])?;
    Ok(())
}

pub(super) fn claim(
    c: &Connection,
    owner: &str,
    limit: u32,
    lease: Duration,
    now: DateTime<Utc>,
) -> StoreResult<Vec<AlertRecord>> {
    let ids: Vec<i64> = c
        .prepare_cached(
            "UPDATE alerts SET owner = ?1, lease_until = ?2, attempts = attempts + 1
          WHERE id IN (SELECT id FROM alerts
                        WHERE delivered_at IS NULL AND next_at <= ?3
                          AND (lease_until IS NULL OR lease_until < ?3)
                        ORDER BY id LIMIT ?4)
         RETURNING id",
        )?
        .query_map(
            params![owner, us(after(now, lease)), us(now), i64::from(limit)],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<AlertRow> = c
        .prepare_cached(
            "SELECT a.id, a.gid, a.kind, a.reason, a.created_at, a.attempts, a.delivered_to,
                g.mode,
                (SELECT b.participant FROM branches b
                  WHERE b.gid = a.gid AND b.last_code IS NOT NULL AND b.skipped_at IS NULL
                  ORDER BY b.created_at, b.branch_id LIMIT 1) AS participant
           FROM alerts a LEFT JOIN global_transactions g ON g.gid = a.gid
          WHERE a.id IN (SELECT value FROM json_each(?1))
          ORDER BY a.id",
        )?
        .query_map(
            params![serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())],
            |r| {
                Ok(AlertRow {
                    id: r.get(0)?,
                    gid: r.get(1)?,
                    kind: r.get(2)?,
                    reason: r.get(3)?,
                    created_at: r.get(4)?,
                    attempts: r.get(5)?,
                    delivered_to: r.get(6)?,
                    mode: r.get(7)?,
                    participant: r.get(8)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    rows.into_iter().map(record).collect()
}

pub(super) fn attempted(c: &Connection, a: &AlertAttempt) -> StoreResult<bool> {
    let delivered = serde_json::to_string(&a.delivered_to)
        .map_err(|e| StoreError::Database(format!("delivered_to: {e}")))?;
    let updated = c
        .prepare_cached(
            "UPDATE alerts
            SET delivered_to = ?3, delivered_at = CASE WHEN ?4 THEN ?6 END,
                next_at = ?5, last_error = ?7, owner = NULL, lease_until = NULL
          WHERE id = ?1 AND owner = ?2 AND delivered_at IS NULL",
        )?
        .execute(params![
            a.id,
            a.owner,
            delivered,
            a.done,
            us(a.next_at),
            us(a.now),
            a.error.as_deref(),
        ])?;
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
