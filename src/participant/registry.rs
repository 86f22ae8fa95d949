//! The participant registry: which participants exist, their actions and
//! endpoints. PostgreSQL is the truth (registrations survive restarts and are
//! shared by every instance); this is a read-through cache of it, refreshed
//! on a miss and periodically, so that the hot path does not read the
//! registry from the database on every call.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::domain::{ActionName, Endpoint, ParticipantName};
use crate::machine::policy::ActionPolicy;
use crate::store::{ParticipantRecord, Store, StoreResult};

/// What the engine needs to call a participant.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub actions: HashSet<ActionName>,
    pub endpoints: Vec<Endpoint>,
    /// The call timeout and policy its actions declared (those that did).
    pub policies: HashMap<ActionName, ActionPolicy>,
}

impl Entry {
    /// What `action` declared at registration (the default if nothing).
    pub fn policy_of(&self, action: &ActionName) -> ActionPolicy {
        self.policies.get(action).copied().unwrap_or_default()
    }
}

/// How stale a cache miss may be before the database is asked again.
const MISS_REFRESH: Duration = Duration::from_millis(200);

pub struct Registry {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cache: RwLock<Cache>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<ParticipantName, Entry>,
    loaded_at: Option<Instant>,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            cache: RwLock::new(Cache::default()),
        }
    }

    /// Registers an endpoint and its actions' declared policies durably,
    /// then updates the cache.
    pub async fn register(
        &self,
        name: &ParticipantName,
        endpoint: &Endpoint,
        actions: &[(ActionName, ActionPolicy)],
    ) -> StoreResult<()> {
        let names: Vec<ActionName> = actions.iter().map(|(a, _)| a.clone()).collect();
        self.store
            .register_participant(name, endpoint, &names, self.clock.now())
            .await?;
        self.store.set_action_policies(name, actions).await?;
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let entry = cache.entries.entry(name.clone()).or_default();
        entry.actions.extend(names);
        for (action, policy) in actions {
            if policy.is_default() {
                entry.policies.remove(action);
            } else {
                entry.policies.insert(action.clone(), *policy);
            }
        }
        // Re-registering a URL may change its protocol: one entry per URL.
        entry.endpoints.retain(|e| e.url != endpoint.url);
        entry.endpoints.push(endpoint.clone());
        entry.endpoints.sort();
        Ok(())
    }

    /// Looks a participant up, reading the database when the cache does not
    /// know it (it may have registered with another instance).
    pub async fn lookup(&self, name: &ParticipantName) -> StoreResult<Option<Entry>> {
        let fresh_enough = {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = cache.entries.get(name) {
                return Ok(Some(e.clone()));
            }
            cache
                .loaded_at
                .is_some_and(|at| at.elapsed() < MISS_REFRESH)
        };
        if !fresh_enough {
            self.refresh().await?;
        }
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        Ok(cache.entries.get(name).cloned())
    }

    /// Reloads everything from the database.
    pub async fn refresh(&self) -> StoreResult<Vec<ParticipantRecord>> {
        let all = self.store.list_participants().await?;
        let entries = all
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Entry {
                        actions: p.actions.iter().cloned().collect(),
                        policies: p
                            .policies
                            .iter()
                            .map(|(a, policy)| (a.clone(), *policy))
                            .collect(),
                        endpoints: p
                            .endpoints
                            .iter()
                            .map(|e| Endpoint {
                                url: e.url.clone(),
                                protocol: e.protocol,
                            })
                            .collect(),
                    },
                )
            })
            .collect();
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.entries = entries;
        cache.loaded_at = Some(Instant::now());
        Ok(all)
    }
}
