//! The alert outbox on PostgreSQL: claiming due alerts for delivery (any
//! instance, `SKIP LOCKED`, under a lease) and recording each attempt.
//! Alerts are inserted by the writes that change needs_attention
//! (`writes.rs`, `admin.rs`), never here.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::PgStore;
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
    created_at: DateTime<Utc>,
    attempts: i32,
    delivered_to: String,
    mode: Option<String>,
    participant: Option<String>,
}

impl PgStore {
    pub(super) async fn claim_alerts(
        &self,
        owner: &str,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<AlertRecord>> {
        let rows: Vec<AlertRow> = sqlx::query_as(
            "WITH c AS (
                SELECT id FROM alerts
                 WHERE delivered_at IS NULL AND next_at <= now()
                   AND (lease_until IS NULL OR lease_until < now())
                 ORDER BY id
                 LIMIT $2
                   FOR UPDATE SKIP LOCKED
            ), a AS (
                UPDATE alerts a
                   SET owner = $1, lease_until = now() + $3 * interval '1 millisecond',
                       attempts = a.attempts + 1
                  FROM c WHERE a.id = c.id
                RETURNING a.*
            )
            SELECT a.id, a.gid, a.kind, a.reason, a.created_at, a.attempts, a.delivered_to,
                   g.mode,
                   (SELECT b.participant FROM branches b
                     WHERE b.gid = a.gid AND b.last_code IS NOT NULL AND b.skipped_at IS NULL
                     ORDER BY b.created_at, b.branch_id LIMIT 1) AS participant
              FROM a LEFT JOIN global_transactions g ON g.gid = a.gid
             ORDER BY a.id",
        )
        .bind(owner)
        .bind(i64::from(limit))
        .bind(lease.as_millis().min(i64::MAX as u128) as i64)
        .fetch_all(&self.durable)
        .await?;
        rows.into_iter().map(record).collect()
    }

    pub(super) async fn record_alert_attempt(&self, a: AlertAttempt) -> StoreResult<bool> {
        let delivered = serde_json::to_string(&a.delivered_to)
            .map_err(|e| StoreError::Database(format!("delivered_to: {e}")))?;
        let updated = sqlx::query(
            "UPDATE alerts
                SET delivered_to = $3, delivered_at = CASE WHEN $4 THEN $6 END,
                    next_at = $5, last_error = $7, owner = NULL, lease_until = NULL
              WHERE id = $1 AND owner = $2 AND delivered_at IS NULL",
        )
        .bind(a.id)
        .bind(&a.owner)
        .bind(delivered)
        .bind(a.done)
        .bind(a.next_at)
        .bind(a.now)
        .bind(a.error.as_deref())
        .execute(&self.durable)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }
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
        created_at: r.created_at,
        attempts: u32::try_from(r.attempts).unwrap_or(0),
        delivered_to: serde_json::from_str(&r.delivered_to).unwrap_or_default(),
        participant: r.participant,
    })
}
