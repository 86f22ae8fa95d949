//! A write-through memory of the TCC transactions this instance is serving,
//! in front of the real store: what Begin, Try and the Try records wrote
//! passes through it on the way to the database, so that a Commit or
//! Rollback arriving here can decide without reading the transaction back.
//!
//! Only ever a shortcut: the decision is written with a compare-and-set on
//! status, branch count and fence, so state that is stale (another
//! instance served a Try, recovery took the transaction over) makes the
//! write match nothing, and the engine then decides again from the
//! database. A refusal is never based on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    Begun, BranchAdded, BranchRecord, CallRecord, Claimed, Decision, EventRecord, Lease,
    MsgDecision, MsgPrepared, NewBranch, NewMsg, NewSaga, NewTransaction, ParticipantRecord,
    RoundWrite, SagaSubmitted, SagaWrite, Store, StoreResult, TxRecord,
};
use crate::clock::Countdown;
use crate::domain::{ActionName, BranchId, Endpoint, Gid, ParticipantName};
use crate::machine::{CallStatus, Mode};

/// Bound on entries; transactions that never decide are dropped with the
/// rest when it is reached (they are then simply read from the database).
const MAX_ENTRIES: usize = 50_000;

type Entry = (TxRecord, Vec<BranchRecord>);

/// The real store with a memory of what this instance wrote.
pub struct Remembering {
    inner: Arc<dyn Store>,
    entries: Mutex<HashMap<Gid, Entry>>,
}

impl Remembering {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<Gid, Entry>) -> R) -> R {
        f(&mut self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn forget(&self, gid: &Gid) {
        self.with(|m| m.remove(gid));
    }
}

#[tonic::async_trait]
impl Store for Remembering {
    async fn begin(&self, tx: NewTransaction) -> StoreResult<Begun> {
        let remembered = TxRecord::inserted(
            tx.gid.clone(),
            Mode::Tcc,
            tx.metadata.clone(),
            tx.timeout,
            tx.deadline,
            tx.now,
        );
        let begun = self.inner.begin(tx).await?;
        if matches!(begun, Begun::Created) {
            self.with(|m| {
                if m.len() >= MAX_ENTRIES {
                    m.clear();
                }
                m.insert(remembered.gid.clone(), (remembered, Vec::new()));
            });
        }
        Ok(begun)
    }

    async fn add_branch(&self, branch: NewBranch) -> StoreResult<BranchAdded> {
        let gid = branch.gid.clone();
        let added = self.inner.add_branch(branch).await;
        match &added {
            Ok(BranchAdded::Added { branch, seq, .. }) => self.with(|m| {
                if let Some((tx, branches)) = m.get_mut(&gid) {
                    tx.branch_seq = *seq;
                    branches.push(branch.clone());
                }
            }),
            // A repeated Try moved the branch counter unseen, or nothing
            // is known for sure: read it from the database next time.
            _ => self.forget(&gid),
        }
        added
    }

    /// Remembers the outcome before the write begins: the engine polls this
    /// once before it answers a successful Try and lets the write finish in
    /// the background, so a Commit here already sees the Try as succeeded.
    async fn record_try(
        &self,
        gid: &Gid,
        call: &CallRecord,
        expected_second_phase: CallStatus,
        now: DateTime<Utc>,
        actor: &str,
    ) -> StoreResult<()> {
        self.with(|m| {
            if let Some((_, branches)) = m.get_mut(gid)
                && let Some(b) = branches.iter_mut().find(|b| b.branch_id == call.branch_id)
            {
                b.first_phase = call.outcome.call_status();
                b.call_busy_until = None;
            }
        });
        let written = self
            .inner
            .record_try(gid, call, expected_second_phase, now, actor)
            .await;
        if written.is_err() {
            self.forget(gid);
        }
        written
    }

    fn take_remembered(&self, gid: &Gid) -> Option<(TxRecord, Vec<BranchRecord>)> {
        self.with(|m| m.remove(gid))
    }

    async fn load(&self, gid: &Gid) -> StoreResult<Option<(TxRecord, Vec<BranchRecord>)>> {
        self.inner.load(gid).await
    }

    async fn events(&self, gid: &Gid) -> StoreResult<Vec<EventRecord>> {
        self.inner.events(gid).await
    }

    async fn decide(&self, decision: Decision) -> StoreResult<Option<Lease>> {
        // A decision is taken once; whatever was remembered is done with.
        self.forget(&decision.gid);
        self.inner.decide(decision).await
    }

    async fn write_round(&self, round: RoundWrite) -> StoreResult<bool> {
        self.inner.write_round(round).await
    }

    async fn submit_saga(&self, saga: NewSaga) -> StoreResult<SagaSubmitted> {
        self.inner.submit_saga(saga).await
    }

    async fn write_saga(&self, write: SagaWrite) -> StoreResult<bool> {
        self.inner.write_saga(write).await
    }

    async fn claim_due(
        &self,
        owner: &str,
        limit: i64,
        lease: Duration,
    ) -> StoreResult<Vec<Claimed>> {
        self.inner.claim_due(owner, limit, lease).await
    }

    async fn next_due(&self, horizon: Duration) -> StoreResult<Option<Duration>> {
        self.inner.next_due(horizon).await
    }

    async fn renew(&self, owner: &str, leases: &[Lease], lease: Duration) -> StoreResult<Vec<Gid>> {
        self.inner.renew(owner, leases, lease).await
    }

    async fn extend_lease(
        &self,
        owner: &str,
        lease: &Lease,
        cover: Countdown,
    ) -> StoreResult<bool> {
        self.inner.extend_lease(owner, lease, cover).await
    }

    async fn claim_try_call(
        &self,
        gid: &Gid,
        branch_id: &BranchId,
        cover: Countdown,
    ) -> StoreResult<bool> {
        // The branch's call is out again: what is remembered of it is stale.
        self.forget(gid);
        self.inner.claim_try_call(gid, branch_id, cover).await
    }

    async fn release(&self, owner: &str, leases: &[Lease]) -> StoreResult<u64> {
        self.inner.release(owner, leases).await
    }

    async fn redrive(&self, participant: &ParticipantName, actor: &str) -> StoreResult<u64> {
        self.inner.redrive(participant, actor).await
    }

    async fn register_participant(
        &self,
        name: &ParticipantName,
        endpoint: &Endpoint,
        actions: &[ActionName],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.inner
            .register_participant(name, endpoint, actions, now)
            .await
    }

    async fn list_participants(&self) -> StoreResult<Vec<ParticipantRecord>> {
        self.inner.list_participants().await
    }

    async fn prepare_msg(&self, msg: NewMsg) -> StoreResult<MsgPrepared> {
        self.inner.prepare_msg(msg).await
    }

    async fn decide_msg(&self, decision: MsgDecision) -> StoreResult<Option<Lease>> {
        self.inner.decide_msg(decision).await
    }

    async fn msg_query(&self, gid: &Gid) -> StoreResult<Option<Endpoint>> {
        self.inner.msg_query(gid).await
    }

    async fn ready(&self) -> StoreResult<()> {
        self.inner.ready().await
    }

    async fn set_action_policies(
        &self,
        name: &ParticipantName,
        policies: &[(ActionName, crate::machine::policy::ActionPolicy)],
    ) -> StoreResult<()> {
        self.inner.set_action_policies(name, policies).await
    }
}
