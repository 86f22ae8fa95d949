//! What the server needs beside driving transactions, on SQLite: the
//! participant registry (registration merges actions and endpoints), the
//! gauges' sample of unfinished transactions, and retention (finished or
//! resolved transactions deleted in batches, branches by cascade).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{SqliteConnection, SqlitePool};

use super::rows::{at, before, us};
use crate::domain::{ActionName, Endpoint, EndpointUrl, ParticipantName, Protocol};
use crate::machine::Status;
use crate::machine::policy::ActionPolicy;
use crate::store::policy::{action_columns, action_policy};
use crate::store::{EndpointRecord, OpenCounts, ParticipantRecord, StoreResult};

pub(super) async fn register_participant(
    c: &mut SqliteConnection,
    name: &ParticipantName,
    endpoint: &Endpoint,
    actions: &[ActionName],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let now = us(now);
    sqlx::query(
        "INSERT INTO participants (name, created_at, updated_at) VALUES (?1, ?2, ?2)
         ON CONFLICT (name) DO UPDATE SET updated_at = ?2",
    )
    .bind(name.as_str())
    .bind(now)
    .execute(&mut *c)
    .await?;
    for action in actions {
        sqlx::query(
            "INSERT INTO participant_actions (participant, action, created_at) VALUES (?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(name.as_str())
        .bind(action.as_str())
        .bind(now)
        .execute(&mut *c)
        .await?;
    }
    sqlx::query(
        "INSERT INTO participant_endpoints (participant, url, protocol, registered_at, last_seen_at)
         VALUES (?1, ?2, ?4, ?3, ?3)
         ON CONFLICT (participant, url) DO UPDATE SET last_seen_at = ?3, protocol = ?4",
    )
    .bind(name.as_str())
    .bind(endpoint.url.as_str())
    .bind(now)
    .bind(endpoint.protocol.as_str())
    .execute(c)
    .await?;
    Ok(())
}

/// Replaces the declared call timeout and policy of each action.
pub(super) async fn set_action_policies(
    c: &mut SqliteConnection,
    name: &ParticipantName,
    policies: &[(ActionName, ActionPolicy)],
) -> StoreResult<()> {
    for (action, policy) in policies {
        let (timeout, policy) = action_columns(policy);
        sqlx::query(
            "UPDATE participant_actions SET call_timeout_ms = ?, policy = ?
              WHERE participant = ? AND action = ?",
        )
        .bind(timeout)
        .bind(policy)
        .bind(name.as_str())
        .bind(action.as_str())
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Every participant with its actions and endpoints, sorted by name.
pub(super) async fn list_participants(pool: &SqlitePool) -> StoreResult<Vec<ParticipantRecord>> {
    let mut conn = pool.acquire().await?;
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM participants ORDER BY name")
        .fetch_all(&mut *conn)
        .await?;
    let mut all: BTreeMap<String, ParticipantRecord> = names
        .into_iter()
        .map(|n| {
            let record = ParticipantRecord {
                name: ParticipantName::from_trusted(n.clone()),
                actions: Vec::new(),
                endpoints: Vec::new(),
                policies: Default::default(),
            };
            (n, record)
        })
        .collect();
    let actions: Vec<(String, String, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT participant, action, call_timeout_ms, policy FROM participant_actions
          ORDER BY participant, action",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (p, a, timeout, policy) in actions {
        if let Some(r) = all.get_mut(&p) {
            let action = ActionName::from_trusted(a);
            let policy = action_policy(timeout, policy.as_deref());
            if !policy.is_default() {
                r.policies.insert(action.clone(), policy);
            }
            r.actions.push(action);
        }
    }
    let endpoints: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT participant, url, protocol, registered_at, last_seen_at FROM participant_endpoints
          ORDER BY participant, url",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (p, url, protocol, registered, seen) in endpoints {
        if let Some(r) = all.get_mut(&p) {
            r.endpoints.push(EndpointRecord {
                url: EndpointUrl::from_trusted(url),
                protocol: Protocol::from_stored(&protocol),
                registered_at: at(registered),
                last_seen_at: at(seen),
            });
        }
    }
    Ok(all.into_values().collect())
}

#[derive(sqlx::FromRow)]
struct OpenRow {
    status: Status,
    n: i64,
    attention: i64,
    oldest: i64,
}

/// Unfinished, unresolved transactions per status (the partial index).
pub(super) async fn open_counts(pool: &SqlitePool, now: DateTime<Utc>) -> StoreResult<OpenCounts> {
    let rows: Vec<OpenRow> = sqlx::query_as(
        "SELECT status, count(*) AS n, count(*) FILTER (WHERE needs_attention) AS attention,
                min(created_at) AS oldest
           FROM global_transactions
          WHERE finished_at IS NULL AND resolved_at IS NULL
          GROUP BY status",
    )
    .fetch_all(pool)
    .await?;
    let mut counts = OpenCounts::default();
    let mut oldest = Duration::ZERO;
    for row in rows.into_iter().filter(|r| !r.status.is_final()) {
        counts.by_status.push((row.status, row.n.max(0) as u64));
        counts.needs_attention += row.attention.max(0) as u64;
        let age = (now - at(row.oldest)).to_std().unwrap_or_default();
        oldest = oldest.max(age);
    }
    counts.oldest_age = oldest;
    Ok(counts)
}

/// Deletes up to `batch` transactions closed more than `older_than` ago,
/// with their events (branches go by cascade); returns how many.
pub(super) async fn delete_finished(
    c: &mut SqliteConnection,
    older_than: Duration,
    batch: u32,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let cutoff = before(now, older_than);
    let doomed: Vec<String> = sqlx::query_scalar(
        "SELECT gid FROM global_transactions
          WHERE (finished_at IS NOT NULL OR resolved_at IS NOT NULL)
            AND COALESCE(finished_at, resolved_at) < ?1
          ORDER BY COALESCE(finished_at, resolved_at)
          LIMIT ?2",
    )
    .bind(us(cutoff))
    .bind(i64::from(batch.max(1)))
    .fetch_all(&mut *c)
    .await?;
    let mut deleted = 0;
    for gid in &doomed {
        sqlx::query("DELETE FROM transaction_events WHERE gid = ?")
            .bind(gid)
            .execute(&mut *c)
            .await?;
        deleted += sqlx::query("DELETE FROM global_transactions WHERE gid = ?")
            .bind(gid)
            .execute(&mut *c)
            .await?
            .rows_affected();
    }
    Ok(deleted)
}
