//! What the server needs beside driving transactions, on SQLite: the
//! participant registry (registration merges actions and endpoints), the
//! gauges' sample of unfinished transactions, and retention (finished or
//! resolved transactions deleted in batches, branches by cascade). The
//! writes run on the writer's thread, the reads on the read pool.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use sqlx::SqlitePool;

use super::rows::{at, before, us};
use crate::domain::{ActionName, Endpoint, EndpointUrl, ParticipantName, Protocol};
use crate::machine::Status;
use crate::machine::policy::ActionPolicy;
use crate::store::policy::{action_columns, action_policy};
use crate::store::{EndpointRecord, OpenCounts, ParticipantRecord, StoreResult};

pub(super) fn register_participant(
    c: &Connection,
    name: &ParticipantName,
    endpoint: &Endpoint,
    actions: &[ActionName],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let now = us(now);
    c.prepare_cached(
        "INSERT INTO participants (name, created_at, updated_at) VALUES (?1, ?2, ?2)
         ON CONFLICT (name) DO UPDATE SET updated_at = ?2",
    )?
    .execute(params![name.as_str(), now])?;
    let mut insert = c.prepare_cached(
        "INSERT INTO participant_actions (participant, action, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )?;
    for action in actions {
        insert.execute(params![name.as_str(), action.as_str(), now])?;
    }
    c.prepare_cached(
        "INSERT INTO participant_endpoints (participant, url, protocol, registered_at, last_seen_at)
         VALUES (?1, ?2, ?4, ?3, ?3)
         ON CONFLICT (participant, url) DO UPDATE SET last_seen_at = ?3, protocol = ?4",
    )?
    .execute(params![
        name.as_str(),
        endpoint.url.as_str(),
        now,
        endpoint.protocol.as_str()
    ])?;
    Ok(())
}

/// Replaces the declared call timeout and policy of each action.
pub(super) fn set_action_policies(
    c: &Connection,
    name: &ParticipantName,
    policies: &[(ActionName, ActionPolicy)],
) -> StoreResult<()> {
    for (action, policy) in policies {
        let (timeout, policy) = action_columns(policy);
        c.prepare_cached(
            "UPDATE participant_actions SET call_timeout_ms = ?1, policy = ?2
              WHERE participant = ?3 AND action = ?4",
        )?
        .execute(params![timeout, policy, name.as_str(), action.as_str()])?;
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
pub(super) fn delete_finished(
    c: &Connection,
    older_than: Duration,
    batch: u32,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let cutoff = before(now, older_than);
    let doomed: Vec<String> = c
        .prepare_cached(
            "SELECT gid FROM global_transactions
              WHERE (finished_at IS NOT NULL OR resolved_at IS NOT NULL)
                AND COALESCE(finished_at, resolved_at) < ?1
              ORDER BY COALESCE(finished_at, resolved_at)
              LIMIT ?2",
        )?
        .query_map(params![us(cutoff), i64::from(batch.max(1))], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut events = c.prepare_cached("DELETE FROM transaction_events WHERE gid = ?1")?;
    let mut transaction = c.prepare_cached("DELETE FROM global_transactions WHERE gid = ?1")?;
    let mut deleted = 0;
    for gid in &doomed {
        events.execute(params![gid])?;
        deleted += transaction.execute(params![gid])? as u64;
    }
    Ok(deleted)
}
