//! The engine carries out what the state machine decides: it runs
//! initiator commands (TCC in [`tcc`], sagas in [`saga`]), drives phase 2
//! ([`phase2`]), runs operator actions, and finishes what a crash
//! interrupted ([`recovery`], under the [`leases`] it holds), with delays
//! from [`retry`], cut short by the [`redrive`] when a participant is back; [`retention`] deletes old history; [`alerts`] posts
//! needs_attention changes to webhooks. This file holds the
//! engine itself and what every part shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::leases::Leases;
use self::retry::RetryPolicy;
use crate::clock::{Clock, Countdown};
use crate::domain::Gid;
use crate::error::{Error, Result};
use crate::machine::tcc::{Refusal, TxState};
use crate::machine::{Escalation, Status};
use crate::participant::client::ParticipantClients;
use crate::participant::registry::Registry;
use crate::store::{BranchRecord, Decision, EventRecord, Store, TxRecord};

pub mod alerts;
mod calls;
pub mod gauges;
pub mod leases;
pub mod msg;
pub mod operator;
pub mod phase2;
pub mod recovery;
pub mod redrive;
pub mod retention;
pub mod retry;
pub mod saga;
pub mod tcc;

pub use self::tcc::TryBranch;

/// Settings the engine needs from the configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub instance_id: String,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub call_timeout: Duration,
    pub lease: Duration,
    pub max_payload_bytes: usize,
    pub max_wait: Duration,
    pub escalation: Escalation,
}

pub struct Engine {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) clients: Arc<ParticipantClients>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: EngineSettings,
    pub(crate) retry: RetryPolicy,
    pub(crate) leases: Arc<Leases>,
    pub(crate) tracker: TaskTracker,
    /// Cancelled at shutdown: drivers stop starting new rounds.
    pub(crate) shutdown: CancellationToken,
    waiters: Mutex<HashMap<Gid, Arc<Notify>>>,
    /// Lets `&self` methods spawn tasks that own the engine.
    me: Weak<Engine>,
}

/// The deadline `timeout` after `now`.
pub(crate) fn deadline_after(now: DateTime<Utc>, timeout: Duration) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(timeout)
        .map(|t| now + t)
        .map_err(|_| Error::InvalidArgument("timeout too large".into()))
}

fn refused(r: Refusal) -> Error {
    Error::FailedPrecondition(r.to_string())
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        clients: Arc<ParticipantClients>,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
        retry: RetryPolicy,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            store,
            registry,
            clients,
            clock,
            settings,
            retry,
            leases: Arc::new(Leases::default()),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            waiters: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    pub(crate) fn self_arc(&self) -> Option<Arc<Engine>> {
        self.me.upgrade()
    }

    pub fn instance_id(&self) -> &str {
        &self.settings.instance_id
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A decision to take `tx` to `next`, valid only while the row is as
    /// read; this instance then holds the lease, for `lease` (see
    /// [`Engine::lease_for`]).
    pub(crate) fn decision(
        &self,
        tx: &TxRecord,
        next: TxState,
        now: DateTime<Utc>,
        lease: Countdown,
    ) -> Decision {
        Decision {
            gid: tx.gid.clone(),
            expected_status: tx.status,
            expected_branch_seq: tx.branch_seq,
            expected_fence: tx.fence,
            next,
            owner: self.settings.instance_id.clone(),
            lease,
            now,
            actor: self.settings.instance_id.clone(),
        }
    }

    /// A client's timeout: positive, at most `max_timeout`, in whole
    /// milliseconds as it is stored (so that repeats compare equal).
    pub(crate) fn bounded_timeout(&self, t: Duration) -> Result<Duration> {
        if t.is_zero() {
            return Err(Error::InvalidArgument("timeout must be positive".into()));
        }
        let t = t.min(self.settings.max_timeout);
        Ok(Duration::from_millis(t.as_millis().max(1) as u64))
    }

    /// Now, at PostgreSQL's microsecond precision, so that a repeated
    /// request answers the very deadline the first one did.
    pub(crate) fn stored_now(&self) -> DateTime<Utc> {
        self.clock.now().trunc_subsecs(6)
    }

    pub(crate) async fn load_required(&self, gid: &Gid) -> Result<(TxRecord, Vec<BranchRecord>)> {
        self.store
            .load(gid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("transaction {gid} not found")))
    }

    /// The identity that began `gid` (`None`: begun while authentication
    /// was off); `NotFound` for an unknown gid.
    pub async fn initiator_of(&self, gid: &Gid) -> Result<Option<String>> {
        Ok(self.load_required(gid).await?.0.initiator)
    }

    /// A transaction, its branches and (if asked) its history.
    pub async fn get(
        &self,
        gid: &Gid,
        with_events: bool,
    ) -> Result<(TxRecord, Vec<BranchRecord>, Vec<EventRecord>)> {
        let (tx, branches) = self.load_required(gid).await?;
        let events = if with_events {
            self.store.events(gid).await?
        } else {
            Vec::new()
        };
        Ok((tx, branches, events))
    }

    fn waiter(&self, gid: &Gid) -> Arc<Notify> {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(w.entry(gid.clone()).or_default())
    }

    /// Wakes whoever waits for `gid` to finish on this instance.
    pub(crate) fn notify_finished(&self, gid: &Gid) {
        let notify = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(gid);
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// Renews the leases this instance holds until `stop` (see
    /// [`leases::Leases::keep`]).
    pub fn keep_leases(&self, stop: CancellationToken) -> impl Future<Output = ()> + use<> {
        Arc::clone(&self.leases).keep(
            Arc::clone(&self.store),
            self.settings.instance_id.clone(),
            self.settings.lease,
            stop,
        )
    }

    /// Shutdown: no new rounds; the running ones get `grace` to finish,
    /// then the leases still held are released so that another instance
    /// continues at once.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.leases.len(),
                "grace period over; releasing leases"
            );
        }
        let held = self.leases.snapshot();
        if !held.is_empty() {
            match self.store.release(&self.settings.instance_id, &held).await {
                Ok(n) => tracing::info!(released = n, "leases released"),
                Err(e) => {
                    tracing::warn!(error = %e, "lease release failed; they expire by themselves")
                }
            }
        }
    }

    /// Until when a Commit, Rollback or SubmitSaga with `wait` may wait: the
    /// client's deadline less a margin, so that the answer arrives before
    /// it, and never longer than `max_wait`.
    pub fn wait_until(&self, client_deadline: Option<Duration>) -> Instant {
        let max = self.settings.max_wait;
        let budget = client_deadline
            .map(|t| t.saturating_sub(Duration::from_millis(100)).min(max))
            .unwrap_or(max);
        Instant::now() + budget
    }

    /// Waits until the transaction is final or `until` passes. Finishing on
    /// this instance wakes the waiter at once; a finish by another instance
    /// (after a retry) is seen by polling.
    pub(crate) async fn wait_final(&self, gid: &Gid, until: Instant) -> Result<Status> {
        loop {
            let notify = self.waiter(gid);
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (tx, _) = self.load_required(gid).await?;
            if tx.status.is_final() {
                return Ok(tx.status);
            }
            let now = Instant::now();
            if now >= until {
                let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
                if Arc::strong_count(&notify) <= 2 {
                    waiters.remove(gid);
                }
                let why = tx
                    .attention_reason
                    .or_else(|| {
                        (tx.attempts > 0).then(|| format!("{} rounds failed so far", tx.attempts))
                    })
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                return Err(Error::DeadlineExceeded(format!(
                    "transaction {gid} is still {}{why}; the coordinator keeps going in the background",
                    tx.status.as_str()
                )));
            }
            let poll = (until - now).min(Duration::from_millis(500));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}
