//! The participant registry: registration (idempotent, merging actions
//! and endpoints) and the list every instance caches.

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::domain::{ActionName, Endpoint, EndpointUrl, ParticipantName, Protocol};
use crate::machine::policy::ActionPolicy;
use crate::store::policy::{action_columns, action_policy};
use crate::store::{EndpointRecord, ParticipantRecord, StoreResult};

#[derive(sqlx::FromRow)]
struct ParticipantRow {
    name: String,
    actions: Vec<String>,
    urls: Vec<String>,
    protocols: Vec<String>,
    registered: Vec<DateTime<Utc>>,
    seen: Vec<DateTime<Utc>>,
    timeouts: Vec<Option<i64>>,
    policies: Vec<Option<String>>,
}

impl PgStore {
    pub(super) async fn register_participant(
        &self,
        name: &ParticipantName,
        endpoint: &Endpoint,
        actions: &[ActionName],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let actions: Vec<&str> = actions.iter().map(ActionName::as_str).collect();
        sqlx::query(
            "WITH p AS (
                INSERT INTO participants (name, created_at, updated_at) VALUES ($1, $4, $4)
                ON CONFLICT (name) DO UPDATE SET updated_at = $4
                RETURNING name
            ), a AS (
                INSERT INTO participant_actions (participant, action, created_at)
                SELECT p.name, x.action, $4 FROM p, unnest($3::text[]) AS x(action)
                ON CONFLICT DO NOTHING
            )
            INSERT INTO participant_endpoints (participant, url, protocol, registered_at, last_seen_at)
            SELECT name, $2, $5, $4, $4 FROM p
            ON CONFLICT (participant, url) DO UPDATE SET last_seen_at = $4, protocol = $5",
        )
        .bind(name.as_str())
        .bind(endpoint.url.as_str())
        .bind(actions)
        .bind(now)
        .bind(endpoint.protocol.as_str())
        .execute(&self.durable)
        .await?;
        Ok(())
    }

    pub(super) async fn set_action_policies(
        &self,
        name: &ParticipantName,
        policies: &[(ActionName, ActionPolicy)],
    ) -> StoreResult<()> {
        let mut actions = Vec::with_capacity(policies.len());
        let mut timeouts = Vec::with_capacity(policies.len());
        let mut stored = Vec::with_capacity(policies.len());
        for (action, policy) in policies {
            let (timeout, policy) = action_columns(policy);
            actions.push(action.as_str());
            timeouts.push(timeout);
            stored.push(policy);
        }
        sqlx::query(
            "UPDATE participant_actions a SET call_timeout_ms = x.timeout, policy = x.policy::jsonb
               FROM unnest($2::text[], $3::bigint[], $4::text[]) AS x(action, timeout, policy)
              WHERE a.participant = $1 AND a.action = x.action",
        )
        .bind(name.as_str())
        .bind(actions)
        .bind(timeouts)
        .bind(stored)
        .execute(&self.durable)
        .await?;
        Ok(())
    }

    pub(super) async fn list_participants(&self) -> StoreResult<Vec<ParticipantRecord>> {
        let rows: Vec<ParticipantRow> = sqlx::query_as(
            "SELECT p.name,
                    COALESCE((SELECT array_agg(a.action ORDER BY a.action) FROM participant_actions a
                               WHERE a.participant = p.name), '{}') AS actions,
                    COALESCE((SELECT array_agg(e.url ORDER BY e.url) FROM participant_endpoints e
                               WHERE e.participant = p.name), '{}') AS urls,
                    COALESCE((SELECT array_agg(e.protocol ORDER BY e.url) FROM participant_endpoints e
                               WHERE e.participant = p.name), '{}') AS protocols,
                    COALESCE((SELECT array_agg(e.registered_at ORDER BY e.url) FROM participant_endpoints e
                               WHERE e.participant = p.name), '{}') AS registered,
                    COALESCE((SELECT array_agg(e.last_seen_at ORDER BY e.url) FROM participant_endpoints e
                               WHERE e.participant = p.name), '{}') AS seen,
                    COALESCE((SELECT array_agg(a.call_timeout_ms ORDER BY a.action) FROM participant_actions a
                               WHERE a.participant = p.name), '{}') AS timeouts,
                    COALESCE((SELECT array_agg(a.policy::text ORDER BY a.action) FROM participant_actions a
                               WHERE a.participant = p.name), '{}') AS policies
               FROM participants p ORDER BY p.name",
        )
        .fetch_all(&self.durable)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ParticipantRecord {
                name: ParticipantName::from_trusted(r.name),
                policies: r
                    .actions
                    .iter()
                    .zip(r.timeouts)
                    .zip(r.policies)
                    .map(|((a, t), p)| {
                        (
                            ActionName::from_trusted(a.clone()),
                            action_policy(t, p.as_deref()),
                        )
                    })
                    .filter(|(_, p)| !p.is_default())
                    .collect(),
                actions: r
                    .actions
                    .into_iter()
                    .map(ActionName::from_trusted)
                    .collect(),
                endpoints: r
                    .urls
                    .into_iter()
                    .zip(r.protocols)
                    .zip(r.registered)
                    .zip(r.seen)
                    .map(
                        |(((url, protocol), registered_at), last_seen_at)| EndpointRecord {
                            url: EndpointUrl::from_trusted(url),
                            protocol: Protocol::from_stored(&protocol),
                            registered_at,
                            last_seen_at,
                        },
                    )
                    .collect(),
            })
            .collect())
    }
}
