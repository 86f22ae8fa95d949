//! The store conformance suite: every test runs against PostgreSQL and
//! against the SQLite file (`conformance!` at the end makes one test per
//! store): compare-and-set decisions, fencing, claims that never overlap,
//! lease renewal and release, the registry, the operator's queries and
//! writes, gauges and retention. Both stores must pass the same tests.

use std::collections::HashSet;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use concord::clock::Countdown;
use concord::domain::{ActionName, BranchId, Gid, ParticipantName};
use concord::machine::tcc::{self as machine, Command, Verdict};
use concord::machine::{Mode, Outcome, Phase, Status};
use concord::store::admin::{AdminChange, AdminStore, AdminWrite, TxFilter};
use concord::store::postgres::PgStore;
use concord::store::sqlite::SqliteStore;
use concord::store::*;
use sqlx::PgPool;

/// A store under test, and a way behind its back to make time pass for
/// leases.
pub struct Subject {
    store: Arc<dyn AdminStore>,
    backdoor: Backdoor,
}

enum Backdoor {
    Postgres(PgPool),
    Sqlite {
        store: SqliteStore,
        // Removed when the test ends.
        _dir: tempfile::TempDir,
    },
}

impl Subject {
    pub async fn postgres(pool: PgPool) -> Self {
        let store = PgStore::from_pool(pool.clone()).await.unwrap();
        Self {
            store: Arc::new(store),
            backdoor: Backdoor::Postgres(pool),
        }
    }

    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("concord.db"), 4, Duration::from_secs(5))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        Self {
            store: Arc::new(store.clone()),
            backdoor: Backdoor::Sqlite { store, _dir: dir },
        }
    }

    /// Every lease held now has expired.
    async fn expire_leases(&self) {
        match &self.backdoor {
            Backdoor::Postgres(pool) => {
                sqlx::query(
                    "UPDATE global_transactions SET lease_until = now() - interval '1 second'
                      WHERE lease_until IS NOT NULL",
                )
                .execute(pool)
                .await
                .unwrap();
            }
            Backdoor::Sqlite { store, .. } => {
                store
                    .execute_raw(
                        "UPDATE global_transactions SET lease_until = 0
                          WHERE lease_until IS NOT NULL",
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// Every transaction finished (or resolved) an hour ago.
    async fn age_finished(&self) {
        match &self.backdoor {
            Backdoor::Postgres(pool) => {
                sqlx::query(
                    "UPDATE global_transactions SET finished_at = finished_at - interval '1 hour',
                            resolved_at = resolved_at - interval '1 hour'",
                )
                .execute(pool)
                .await
                .unwrap();
            }
            Backdoor::Sqlite { store, .. } => {
                store
                    .execute_raw(
                        "UPDATE global_transactions SET finished_at = finished_at - 3600000000,
                                resolved_at = resolved_at - 3600000000",
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// Every transaction's next attempt an hour from now (waiting on a
    /// retry delay).
    async fn postpone_all(&self) {
        match &self.backdoor {
            Backdoor::Postgres(pool) => {
                sqlx::query(
                    "UPDATE global_transactions SET next_attempt_at = now() + interval '1 hour'",
                )
                .execute(pool)
                .await
                .unwrap();
            }
            Backdoor::Sqlite { store, .. } => {
                store
                    .execute_raw(
                        "UPDATE global_transactions
                            SET next_attempt_at = (unixepoch('now') + 3600) * 1000000",
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

impl Subject {
    /// Every transaction needs attention, as after a failed round, with
    /// its lease still held.
    async fn flag_all(&self) {
        const SQL: &str = "UPDATE global_transactions SET needs_attention = true";
        match &self.backdoor {
            Backdoor::Postgres(pool) => {
                sqlx::query(SQL).execute(pool).await.unwrap();
            }
            Backdoor::Sqlite { store, .. } => {
                store.execute_raw(SQL).await.unwrap();
            }
        }
    }
}

impl Deref for Subject {
    type Target = dyn AdminStore;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

fn new_tx(gid: &str, timeout: Duration) -> NewTransaction {
    let now = Utc::now();
    NewTransaction {
        gid: Gid::parse(gid).unwrap(),
        metadata: Metadata::new(),
        timeout,
        deadline: now + chrono::Duration::from_std(timeout).unwrap(),
        now,
        actor: "test".into(),
        initiator: None,
    }
}

fn new_branch(gid: &str, id: Option<&str>) -> NewBranch {
    NewBranch {
        gid: Gid::parse(gid).unwrap(),
        branch_id: id.map(|i| BranchId::parse(i).unwrap()),
        participant: ParticipantName::parse("p").unwrap(),
        action: ActionName::parse("a").unwrap(),
        payload: b"x".to_vec(),
        call_timeout: None,
        policy: Default::default(),
        call_cover: Countdown::start(std::time::Duration::ZERO),
        now: Utc::now(),
        actor: "test".into(),
        url_call: None,
        tried_by_initiator: false,
    }
}

fn new_step(participant: &str) -> NewStep {
    NewStep {
        participant: ParticipantName::parse(participant).unwrap(),
        action: ActionName::parse("do").unwrap(),
        compensation: ActionName::parse("undo").unwrap(),
        payload: Vec::new(),
        depends_on: Vec::new(),
        compensate_rejected: true,
        call_timeout: None,
        policy: Default::default(),
        url_call: None,
    }
}

async fn decide(s: &dyn AdminStore, gid: &str, cmd: Command, owner: &str) -> Option<Lease> {
    let g = Gid::parse(gid).unwrap();
    let (tx, branches) = s.load(&g).await.unwrap().unwrap();
    decide_from(s, &tx, &branches, cmd, owner)
        .await
        .map(|(lease, _)| lease)
}

/// Decides from `tx` and `branches` as a deciding instance knows them,
/// which may be ahead of the database; returns the lease and the decided
/// state.
async fn decide_from(
    s: &dyn AdminStore,
    tx: &TxRecord,
    branches: &[BranchRecord],
    cmd: Command,
    owner: &str,
) -> Option<(Lease, machine::TxState)> {
    let Ok(Verdict::Decided { next, .. }) = machine::decide(&tx.state(branches), &cmd, Utc::now())
    else {
        panic!("no decision")
    };
    let lease = s
        .decide(Decision {
            gid: tx.gid.clone(),
            expected_status: tx.status,
            expected_branch_seq: tx.branch_seq,
            expected_fence: tx.fence,
            next: next.clone(),
            owner: owner.into(),
            lease: Countdown::start(Duration::from_secs(30)),
            now: Utc::now(),
            actor: owner.into(),
        })
        .await
        .unwrap()?;
    Some((lease, next))
}

async fn begin_and_branches(s: Subject) {
    assert!(matches!(
        s.begin(new_tx("g", Duration::from_secs(30))).await.unwrap(),
        Begun::Created
    ));
    assert!(matches!(
        s.begin(new_tx("g", Duration::from_secs(30))).await.unwrap(),
        Begun::Existing(_)
    ));
    let BranchAdded::Added { branch, .. } = s.add_branch(new_branch("g", None)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(branch.branch_id.as_str(), "1");
    let BranchAdded::Added { branch, .. } = s.add_branch(new_branch("g", Some("x"))).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(branch.branch_id.as_str(), "x");
    assert!(matches!(
        s.add_branch(new_branch("g", Some("x"))).await.unwrap(),
        BranchAdded::Existing { .. }
    ));
    assert!(matches!(
        s.add_branch(new_branch("nope", None)).await.unwrap(),
        BranchAdded::NotAccepted(None)
    ));
    let (tx, branches) = s.load(&Gid::parse("g").unwrap()).await.unwrap().unwrap();
    assert_eq!(tx.status, Status::Trying);
    assert_eq!(branches.len(), 2);
    let events = s.events(&tx.gid).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == "branch_registered")
            .count(),
        2
    );
}

async fn a_decision_fails_if_a_branch_arrived_after_the_read(s: Subject) {
    s.begin(new_tx("g", Duration::from_secs(30))).await.unwrap();
    let g = Gid::parse("g").unwrap();
    let (tx, branches) = s.load(&g).await.unwrap().unwrap();
    let Ok(Verdict::Decided { next, .. }) = machine::decide(
        &tx.state(&branches),
        &Command::Rollback { reason: "r".into() },
        Utc::now(),
    ) else {
        panic!()
    };
    s.add_branch(new_branch("g", None)).await.unwrap();
    let stale = Decision {
        gid: g.clone(),
        expected_status: tx.status,
        expected_branch_seq: tx.branch_seq,
        expected_fence: tx.fence,
        next,
        owner: "me".into(),
        lease: Countdown::start(Duration::from_secs(30)),
        now: Utc::now(),
        actor: "me".into(),
    };
    assert_eq!(
        s.decide(stale).await.unwrap(),
        None,
        "stale read must not decide"
    );
    assert!(
        decide(&*s, "g", Command::Rollback { reason: "r".into() }, "me")
            .await
            .is_some()
    );
    // No branch can be added after the decision.
    assert!(matches!(
        s.add_branch(new_branch("g", None)).await.unwrap(),
        BranchAdded::NotAccepted(Some(_))
    ));
}

async fn fencing_rejects_a_stale_owner(s: Subject) {
    s.begin(new_tx("g", Duration::from_secs(30))).await.unwrap();
    s.add_branch(new_branch("g", None)).await.unwrap();
    let lease_a = decide(&*s, "g", Command::Rollback { reason: "r".into() }, "a")
        .await
        .unwrap();
    // a's lease expires; b claims.
    s.expire_leases().await;
    let claimed = s.claim_due("b", 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].previous_owner.as_deref(), Some("a"));
    let lease_b = claimed[0].lease.clone();
    assert!(lease_b.fence > lease_a.fence);
    // The takeover is history: who held the lease, who took it.
    let events = s.events(&Gid::parse("g").unwrap()).await.unwrap();
    let took = events.iter().find(|e| e.kind == "taken_over").unwrap();
    assert_eq!(
        (took.message.as_deref(), took.actor.as_deref()),
        (Some("lease of a lapsed"), Some("b"))
    );

    let g = Gid::parse("g").unwrap();
    let (tx, branches) = s.load(&g).await.unwrap().unwrap();
    let round = |lease: Lease, owner: &str| RoundWrite {
        lease,
        owner: owner.into(),
        next: {
            let mut st = tx.state(&branches);
            st.status = Status::Cancelled;
            st
        },
        calls: vec![],
        next_attempt_at: None,
        newly_flagged: false,
        now: Utc::now(),
    };
    assert!(
        !s.write_round(round(lease_a.clone(), "a")).await.unwrap(),
        "stale owner is fenced out"
    );
    assert_eq!(
        s.renew("a", &[lease_a], Duration::from_secs(30))
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        s.renew("b", std::slice::from_ref(&lease_b), Duration::from_secs(30))
            .await
            .unwrap(),
        vec![g.clone()]
    );
    assert!(s.write_round(round(lease_b, "b")).await.unwrap());
    let (tx, _) = s.load(&g).await.unwrap().unwrap();
    assert_eq!(tx.status, Status::Cancelled);
    assert_eq!(tx.owner, None);
    assert!(tx.next_attempt_at.is_none() && tx.finished_at.is_some());
}

async fn concurrent_claims_never_overlap(s: Subject) {
    for i in 0..60 {
        let gid = format!("g{i}");
        s.begin(new_tx(&gid, Duration::from_secs(30)))
            .await
            .unwrap();
        decide(&*s, &gid, Command::Rollback { reason: "r".into() }, "dead")
            .await
            .unwrap();
    }
    s.expire_leases().await;
    let mut tasks = Vec::new();
    for w in 0..6 {
        let s = Arc::clone(&s.store);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..5 {
                let c = s
                    .claim_due(&format!("w{w}"), 4, Duration::from_secs(30))
                    .await
                    .unwrap();
                mine.extend(c.into_iter().map(|c| c.lease.gid));
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in tasks {
        for gid in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(gid.clone()), "{gid} claimed twice");
        }
    }
    assert_eq!(total, 60);
    // Held leases are not claimable; released ones are at once.
    assert!(
        s.claim_due("late", 100, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    let (tx, _) = s.load(&Gid::parse("g0").unwrap()).await.unwrap().unwrap();
    let owner = tx.owner.unwrap();
    let released = s
        .release(
            &owner,
            &[Lease {
                gid: tx.gid.clone(),
                fence: tx.fence,
            }],
        )
        .await
        .unwrap();
    assert_eq!(released, 1);
    let again = s
        .claim_due("late", 100, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].previous_owner, None);
}

async fn trying_transactions_become_due_at_their_deadline(s: Subject) {
    s.begin(new_tx("soon", Duration::from_millis(200)))
        .await
        .unwrap();
    s.begin(new_tx("later", Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(
        s.claim_due("x", 10, Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let claimed = s.claim_due("x", 10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.gid.as_str(), "soon");
}

async fn registry_is_persisted_and_merged(s: Subject) {
    use concord::domain::Protocol;

    let n = ParticipantName::parse("stock").unwrap();
    let url = |u: &str| concord::domain::EndpointUrl::parse(u).unwrap();
    let e1 = concord::domain::Endpoint::grpc(url("http://127.0.0.1:1"));
    let e2 = concord::domain::Endpoint::grpc(url("http://127.0.0.1:2"));
    let a = |x: &str| ActionName::parse(x).unwrap();
    s.register_participant(&n, &e1, &[a("reserve")], Utc::now())
        .await
        .unwrap();
    s.register_participant(&n, &e2, &[a("release")], Utc::now())
        .await
        .unwrap();
    s.register_participant(&n, &e1, &[a("reserve")], Utc::now())
        .await
        .unwrap();
    let all = s.list_participants().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].actions, vec![a("release"), a("reserve")]);
    assert_eq!(all[0].endpoints.len(), 2);
    assert_eq!(all[0].endpoints[0].protocol, Protocol::Grpc);
    // Registering the same URL as HTTP/JSON switches it, it adds nothing.
    let e1_http = concord::domain::Endpoint {
        protocol: Protocol::Http,
        ..e1
    };
    s.register_participant(&n, &e1_http, &[a("reserve")], Utc::now())
        .await
        .unwrap();
    let all = s.list_participants().await.unwrap();
    assert_eq!(all[0].endpoints.len(), 2);
    assert_eq!(all[0].endpoints[0].protocol, Protocol::Http);
    assert_eq!(all[0].endpoints[1].protocol, Protocol::Grpc);
    s.ready().await.unwrap();
}

async fn action_policies_are_kept_replaced_and_cleared(s: Subject) {
    use concord::machine::policy::{ActionPolicy, CallPolicy, CodeSet, HttpStatusSet};

    let n = ParticipantName::parse("bank").unwrap();
    let e = concord::domain::Endpoint::grpc(
        concord::domain::EndpointUrl::parse("http://127.0.0.1:1").unwrap(),
    );
    let a = |x: &str| ActionName::parse(x).unwrap();
    let declared = ActionPolicy {
        call_timeout: Some(Duration::from_millis(1500)),
        policy: CallPolicy {
            max_attempts: Some(4),
            non_retryable: CodeSet::parse(["NOT_FOUND"]).unwrap(),
            non_retryable_http: HttpStatusSet::parse([422]).unwrap(),
            ..CallPolicy::default()
        },
    };
    s.register_participant(&n, &e, &[a("debit"), a("credit")], Utc::now())
        .await
        .unwrap();
    s.set_action_policies(
        &n,
        &[
            (a("debit"), declared),
            (a("credit"), ActionPolicy::default()),
        ],
    )
    .await
    .unwrap();
    let all = s.list_participants().await.unwrap();
    assert_eq!(all[0].policies.len(), 1, "only actions that declared one");
    assert_eq!(all[0].policies[&a("debit")], declared);
    // Registered again with none: cleared.
    s.set_action_policies(&n, &[(a("debit"), ActionPolicy::default())])
        .await
        .unwrap();
    let all = s.list_participants().await.unwrap();
    assert!(all[0].policies.is_empty(), "{:?}", all[0].policies);
    assert_eq!(all[0].actions, vec![a("credit"), a("debit")]);
}

async fn a_skip_is_compare_and_set_fences_the_driver_and_can_finish(s: Subject) {
    use concord::machine::{CallStatus, Phase};

    s.begin(new_tx("k", Duration::from_secs(30))).await.unwrap();
    s.add_branch(new_branch("k", Some("1"))).await.unwrap();
    s.add_branch(new_branch("k", Some("2"))).await.unwrap();
    let lease = decide(&*s, "k", Command::Rollback { reason: "r".into() }, "d")
        .await
        .unwrap();
    let g = Gid::parse("k").unwrap();
    let skip = |branch: &str, attempts: u32, finishes: Option<Status>| AdminWrite {
        gid: g.clone(),
        expected_status: Status::Cancelling,
        expected_paused: false,
        expected_needs_attention: false,
        change: AdminChange::SkipBranch {
            branch_id: BranchId::parse(branch).unwrap(),
            phase: Phase::Cancel,
            // Decided, no round yet: stored `not_required`, read as pending.
            expected: CallStatus::Pending,
            attempts,
            note: format!("cancelled {branch} by hand"),
            finishes,
        },
        event: "operator_skip",
        actor: "alice".into(),
        note: None,
        now: Utc::now(),
    };
    assert!(
        !s.admin_apply(skip("2", 3, None)).await.unwrap(),
        "not as read"
    );
    assert!(
        !s.admin_apply(skip("9", 0, None)).await.unwrap(),
        "no such branch"
    );
    assert!(s.admin_apply(skip("2", 0, None)).await.unwrap());
    let (tx, branches) = s.load(&g).await.unwrap().unwrap();
    assert_eq!(
        tx.status,
        Status::Cancelling,
        "branch 1 still owes its cancel"
    );
    assert!(tx.fence > lease.fence, "a round in flight is fenced out");
    assert_eq!(
        tx.owner.as_deref(),
        Some("d"),
        "its lease still covers its calls"
    );
    assert!(tx.next_attempt_at.is_some());
    let skipped = branches[1].skipped.as_ref().expect("skipped");
    assert_eq!(
        (skipped.by.as_str(), skipped.note.as_str()),
        ("alice", "cancelled 2 by hand")
    );
    assert_eq!(branches[1].owed_phase(), CallStatus::Skipped);
    assert_eq!(branches[0].skipped, None);
    assert_eq!(
        tx.state(&branches).branches[1].second_phase,
        CallStatus::Skipped
    );
    // Twice: the branch is skipped already.
    assert!(!s.admin_apply(skip("2", 0, None)).await.unwrap());
    // The last one finishes the transaction.
    assert!(
        s.admin_apply(skip("1", 0, Some(Status::Cancelled)))
            .await
            .unwrap()
    );
    let (tx, _) = s.load(&g).await.unwrap().unwrap();
    assert_eq!(tx.status, Status::Cancelled);
    assert!(tx.finished_at.is_some());
    assert_eq!(tx.next_attempt_at, None);
    let events = s.events(&g).await.unwrap();
    let tail: Vec<_> = events
        .iter()
        .rev()
        .take(3)
        .map(|e| (e.kind.as_str(), e.branch_id.as_deref(), e.actor.as_deref()))
        .collect();
    assert_eq!(
        tail,
        [
            ("finished", None, Some("alice")),
            ("operator_skip", Some("1"), Some("alice")),
            ("operator_skip", Some("2"), Some("alice")),
        ]
    );
    assert_eq!(
        events.iter().rev().nth(1).unwrap().phase.as_deref(),
        Some("cancel")
    );
}

async fn an_alert_per_change_of_the_flag_claimed_by_one_instance(s: Subject) {
    use concord::machine::{CallStatus, Outcome, Phase};
    use concord::store::admin::AlertAttempt;

    s.begin(new_tx("al", Duration::from_secs(30)))
        .await
        .unwrap();
    s.add_branch(new_branch("al", None)).await.unwrap();
    let g = Gid::parse("al").unwrap();
    let (tx, mut branches) = s.load(&g).await.unwrap().unwrap();
    branches[0].first_phase = CallStatus::Succeeded;
    let (mut lease, mut next) = decide_from(&*s, &tx, &branches, Command::Commit, "a")
        .await
        .unwrap();
    let failed = |attempt| CallRecord {
        branch_id: BranchId::parse("1").unwrap(),
        phase: Phase::Confirm,
        attempt,
        outcome: Outcome::Unknown {
            code: "UNAVAILABLE".into(),
            message: "down".into(),
        },
    };
    // Three failed rounds, flagged by the first: one alert. Then the round
    // that confirms it: one more.
    for round in 1..=4u32 {
        let last = round == 4;
        next.attempts = round;
        next.branches[0].attempts = round;
        next.branches[0].second_phase = if last {
            CallStatus::Succeeded
        } else {
            CallStatus::Unknown
        };
        next.needs_attention = true;
        next.attention_reason = Some("p.a confirm failing".into());
        if last {
            next.status = Status::Confirmed;
        }
        let written = s
            .write_round(RoundWrite {
                lease: lease.clone(),
                owner: "a".into(),
                next: next.clone(),
                calls: vec![failed(round)],
                next_attempt_at: (!last).then(|| Utc::now() - chrono::Duration::seconds(1)),
                newly_flagged: round == 1,
                now: Utc::now(),
            })
            .await
            .unwrap();
        assert!(written, "round {round}");
        if !last {
            lease = s
                .claim_due("a", 10, Duration::from_secs(30))
                .await
                .unwrap()
                .pop()
                .expect("due again")
                .lease;
        }
    }
    let claimed = s
        .claim_alerts("x", 10, Duration::from_secs(30))
        .await
        .unwrap();
    let kinds: Vec<(&str, Option<&str>)> = claimed
        .iter()
        .map(|a| (a.kind.as_str(), a.reason.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("needs_attention", Some("p.a confirm failing")),
            ("attention_cleared", Some("finished: confirmed")),
        ]
    );
    assert_eq!(claimed[0].mode, Mode::Tcc);
    assert_eq!(
        claimed[0].participant.as_deref(),
        None,
        "confirmed: no call failing"
    );
    assert_eq!(claimed[0].attempts, 1);
    // Claimed: no other instance gets them while the lease runs.
    assert!(
        s.claim_alerts("y", 10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    // One URL of two took the first: it is due again for the other only.
    let attempt = |id, owner: &str, delivered: &[&str], done| AlertAttempt {
        id,
        owner: owner.into(),
        delivered_to: delivered.iter().map(|u| u.to_string()).collect(),
        done,
        next_at: Utc::now() - chrono::Duration::seconds(1),
        error: (!done).then(|| "http://b: answered 503".into()),
        now: Utc::now(),
    };
    assert!(
        !s.record_alert_attempt(attempt(claimed[0].id, "y", &[], true))
            .await
            .unwrap(),
        "not y's"
    );
    assert!(
        s.record_alert_attempt(attempt(claimed[0].id, "x", &["http://a"], false))
            .await
            .unwrap()
    );
    assert!(
        s.record_alert_attempt(attempt(claimed[1].id, "x", &["http://a", "http://b"], true))
            .await
            .unwrap()
    );
    let again = s
        .claim_alerts("y", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (claimed[0].id, 2));
    assert_eq!(again[0].delivered_to, ["http://a"]);
    assert!(
        s.record_alert_attempt(attempt(again[0].id, "y", &["http://a", "http://b"], true))
            .await
            .unwrap()
    );
    assert!(
        s.claim_alerts("z", 10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "all delivered"
    );
}

async fn a_late_try_record_does_not_overwrite_phase_two(s: Subject) {
    use concord::machine::{CallStatus, Outcome, Phase};

    // The record of a successful Try is written after the Try's reply, so
    // it can land after the commit round: the round's outcome stays, the
    // Try reads as succeeded (the commit round says so), and the call is
    // still in the history.
    s.begin(new_tx("g", Duration::from_secs(30))).await.unwrap();
    s.add_branch(new_branch("g", None)).await.unwrap();
    let g = Gid::parse("g").unwrap();
    let (tx, mut branches) = s.load(&g).await.unwrap().unwrap();
    assert_eq!(branches[0].first_phase, CallStatus::Pending);
    // The deciding instance served the Try and knows it succeeded.
    branches[0].first_phase = CallStatus::Succeeded;
    let (lease, mut next) = decide_from(&*s, &tx, &branches, Command::Commit, "a")
        .await
        .unwrap();
    next.status = Status::Confirmed;
    next.branches[0].second_phase = CallStatus::Succeeded;
    next.branches[0].attempts = 1;
    let confirm = CallRecord {
        branch_id: BranchId::parse("1").unwrap(),
        phase: Phase::Confirm,
        attempt: 1,
        outcome: Outcome::Succeeded,
    };
    assert!(
        s.write_round(RoundWrite {
            lease,
            owner: "a".into(),
            next,
            calls: vec![confirm],
            next_attempt_at: None,
            newly_flagged: false,
            now: Utc::now(),
        })
        .await
        .unwrap()
    );
    let (_, after_round) = s.load(&g).await.unwrap().unwrap();
    assert_eq!(after_round[0].first_phase, CallStatus::Succeeded);

    let late = CallRecord {
        branch_id: BranchId::parse("1").unwrap(),
        phase: Phase::Try,
        attempt: 1,
        outcome: Outcome::Unknown {
            code: "UNAVAILABLE".into(),
            message: "late".into(),
        },
    };
    s.record_try(&g, &late, machine::try_record_applies(), Utc::now(), "b")
        .await
        .unwrap();
    let (tx, branches) = s.load(&g).await.unwrap().unwrap();
    assert_eq!(tx.status, Status::Confirmed);
    assert_eq!(branches, after_round, "phase 2's record is untouched");
    let events = s.events(&g).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "call" && e.phase.as_deref() == Some("try") && e.attempt == Some(1)),
        "{events:?}"
    );
}

/// The operator's side on a few transactions: the list and its filters and
/// pages, the detail, an operator write's compare-and-set, the counts, the
/// gauges' sample and retention.
async fn operator_queries_gauges_and_retention(s: Subject) {
    for gid in ["a-1", "a-2", "b-1"] {
        s.begin(new_tx(gid, Duration::from_secs(30))).await.unwrap();
        s.add_branch(new_branch(gid, None)).await.unwrap();
    }
    let mut other = new_branch("b-1", None);
    other.participant = ParticipantName::parse("q").unwrap();
    s.add_branch(other).await.unwrap();
    // a-1 rolls back and finishes.
    let lease = decide(&*s, "a-1", Command::Rollback { reason: "r".into() }, "me")
        .await
        .unwrap();
    let g = Gid::parse("a-1").unwrap();
    let (tx, branches) = s.load(&g).await.unwrap().unwrap();
    let mut next = tx.state(&branches);
    next.status = Status::Cancelled;
    let done = RoundWrite {
        lease,
        owner: "me".into(),
        next,
        calls: vec![],
        next_attempt_at: None,
        newly_flagged: false,
        now: Utc::now(),
    };
    assert!(s.write_round(done).await.unwrap());

    let list = |f: TxFilter| {
        let s = &s;
        async move {
            let (page, next) = s.admin_list(&f).await.unwrap();
            let gids: Vec<String> = page.iter().map(|t| t.tx.gid.to_string()).collect();
            (gids, next)
        }
    };
    let all = TxFilter {
        limit: 10,
        ..TxFilter::default()
    };
    assert_eq!(list(all.clone()).await.0, ["b-1", "a-2", "a-1"]);
    let (first, cursor) = list(TxFilter {
        limit: 2,
        oldest_first: true,
        ..all.clone()
    })
    .await;
    assert_eq!(first, ["a-1", "a-2"]);
    let rest = list(TxFilter {
        limit: 2,
        oldest_first: true,
        after: cursor,
        ..all.clone()
    })
    .await;
    assert_eq!(rest, (vec!["b-1".to_string()], None));
    let filtered = [
        (
            TxFilter {
                statuses: vec![Status::Trying],
                ..all.clone()
            },
            vec!["b-1", "a-2"],
        ),
        (
            TxFilter {
                participant: Some("q".into()),
                ..all.clone()
            },
            vec!["b-1"],
        ),
        (
            TxFilter {
                gid_prefix: Some("a-".into()),
                ..all.clone()
            },
            vec!["a-2", "a-1"],
        ),
        (
            TxFilter {
                mode: Some(Mode::Saga),
                ..all.clone()
            },
            vec![],
        ),
        (
            TxFilter {
                stuck_since: Some(Utc::now() + chrono::Duration::seconds(1)),
                ..all.clone()
            },
            vec!["b-1", "a-2"],
        ),
    ];
    for (f, want) in filtered {
        assert_eq!(list(f.clone()).await.0, want, "{f:?}");
    }

    let (detail, branches) = s
        .admin_get(&Gid::parse("b-1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((detail.branch_count, branches.len()), (2, 2));
    assert_eq!(detail.participants, ["p", "q"]);
    assert!(
        s.admin_get(&Gid::parse("nope").unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // An operator write applies only to the row as the rules saw it.
    let pause = |expected_paused| AdminWrite {
        gid: Gid::parse("a-2").unwrap(),
        expected_status: Status::Trying,
        expected_paused,
        expected_needs_attention: false,
        change: AdminChange::SetPaused(true),
        event: "operator_pause",
        actor: "alice".into(),
        note: Some("looking".into()),
        now: Utc::now(),
    };
    assert!(s.admin_apply(pause(false)).await.unwrap());
    assert!(!s.admin_apply(pause(false)).await.unwrap(), "moved on");
    let events = s.events(&Gid::parse("a-2").unwrap()).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (
            last.kind.as_str(),
            last.actor.as_deref(),
            last.message.as_deref()
        ),
        ("operator_pause", Some("alice"), Some("looking"))
    );
    s.admin_event(
        &Gid::parse("a-2").unwrap(),
        "operator_note",
        None,
        "bob",
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(
        s.events(&Gid::parse("a-2").unwrap()).await.unwrap().len(),
        events.len() + 1
    );

    let stats = s.admin_stats().await.unwrap();
    assert_eq!((stats.total, stats.unfinished, stats.paused), (3, 2, 1));
    assert_eq!(stats.oldest_unfinished.unwrap().tx.gid.as_str(), "a-2");
    let open = s.open_counts().await.unwrap();
    assert_eq!(open.by_status, vec![(Status::Trying, 2)]);
    assert!(open.oldest_age < Duration::from_secs(60));
    assert!(!s.pool_stats().is_empty());

    let per_minute = s
        .admin_finished_per_minute(Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    let counted: Vec<(u64, u64)> = per_minute.iter().map(|m| (m.finished, m.failed)).collect();
    assert_eq!(counted, [(1, 1)], "a-1 finished, rolled back");
    assert_eq!(per_minute[0].minute.timestamp() % 60, 0);

    // Retention takes finished transactions only, once old enough.
    assert_eq!(
        s.delete_finished(Duration::from_secs(60), 10)
            .await
            .unwrap(),
        0
    );
    s.age_finished().await;
    assert_eq!(
        s.delete_finished(Duration::from_secs(60), 10)
            .await
            .unwrap(),
        1
    );
    assert!(s.load(&g).await.unwrap().is_none());
    assert!(s.events(&g).await.unwrap().is_empty());
    assert_eq!(s.admin_stats().await.unwrap().total, 2);
}

/// Issue 11's guards: a branch records that its Try is out (a repeated Try
/// is refused until the outcome is recorded), and a lease is extended
/// before a long call, never shortened by a renewal.
/// `next_due` says when the recovery loop's claim would first find work:
/// a trying transaction at its deadline, a leased one when its lease ends,
/// a released one at once; nothing beyond the horizon.
async fn next_due_is_the_earliest_claimable_moment(s: Subject) {
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    assert_eq!(s.next_due(Duration::from_secs(60)).await.unwrap(), None);
    s.begin(new_tx("g", Duration::from_secs(30))).await.unwrap();
    s.add_branch(new_branch("g", None)).await.unwrap();
    assert_eq!(
        s.next_due(Duration::from_secs(1)).await.unwrap(),
        None,
        "its deadline is beyond the horizon"
    );
    let at_deadline = secs(s.next_due(Duration::from_secs(60)).await.unwrap()).unwrap();
    assert!((28.0..=30.0).contains(&at_deadline), "{at_deadline}");

    // Decided: due at once, but leased for 30 s.
    let lease = decide(&*s, "g", Command::Rollback { reason: "r".into() }, "me")
        .await
        .unwrap();
    let at_lease_end = secs(s.next_due(Duration::from_secs(1)).await.unwrap()).unwrap();
    assert!((28.0..=30.0).contains(&at_lease_end), "{at_lease_end}");
    s.release("me", &[lease]).await.unwrap();
    let now = secs(s.next_due(Duration::from_secs(1)).await.unwrap()).unwrap();
    assert!(now < 1.0, "released: due now, not in {now} s");
}

/// A lease (and a Try's cover) is asked as a countdown started before the
/// write, and the store grants what is left of it when the write runs:
/// time a write spends queued for its batch must not make the lease
/// outlast what the engine counts, or a takeover after a crash waits for
/// it (issue 11's late takeovers under load).
async fn a_lease_counts_from_when_it_was_asked(s: Subject) {
    let ago = |secs: u64| {
        std::time::Instant::now()
            .checked_sub(Duration::from_secs(secs))
            .unwrap()
    };
    let asked_ago = |secs: u64, length: u64| Countdown {
        from: ago(secs),
        length: Duration::from_secs(length),
    };
    let left = |until: chrono::DateTime<Utc>| (until - Utc::now()).as_seconds_f64();
    let g = Gid::parse("g").unwrap();
    s.begin(new_tx("g", Duration::from_secs(60))).await.unwrap();
    let mut b = new_branch("g", None);
    // A 30 s cover asked 20 s ago: 10 s left.
    b.call_cover = asked_ago(20, 30);
    let BranchAdded::Added { branch, .. } = s.add_branch(b).await.unwrap() else {
        panic!("not added")
    };
    let busy = |b: &BranchRecord| {
        b.call_busy_until.map(|t| {
            t.saturating_duration_since(std::time::Instant::now())
                .as_secs_f64()
        })
    };
    let known = busy(&branch).unwrap();
    assert!((9.0..=10.1).contains(&known), "counted here: {known} s");
    let (tx, branches) = s.load(&g).await.unwrap().unwrap();
    let stored = busy(&branches[0]).unwrap();
    assert!((9.0..=10.1).contains(&stored), "stored: {stored} s");

    // A decision's lease of 30 s asked 20 s ago: 10 s left.
    let Ok(Verdict::Decided { next, .. }) = machine::decide(
        &tx.state(&branches),
        &Command::Rollback { reason: "r".into() },
        Utc::now(),
    ) else {
        panic!("no decision")
    };
    let fence = s
        .decide(Decision {
            gid: g.clone(),
            expected_status: tx.status,
            expected_branch_seq: tx.branch_seq,
            expected_fence: tx.fence,
            next,
            owner: "me".into(),
            lease: asked_ago(20, 30),
            now: Utc::now(),
            actor: "me".into(),
        })
        .await
        .unwrap()
        .expect("decided");
    let (tx, _) = s.load(&g).await.unwrap().unwrap();
    let lease_left = left(tx.lease_until.unwrap());
    assert!(
        (9.0..=10.1).contains(&lease_left),
        "decided: {lease_left} s"
    );

    // An extension of 60 s asked 40 s ago: 20 s left.
    assert!(
        s.extend_lease("me", &fence, asked_ago(40, 60))
            .await
            .unwrap()
    );
    let (tx, _) = s.load(&g).await.unwrap().unwrap();
    let lease_left = left(tx.lease_until.unwrap());
    assert!(
        (19.0..=20.1).contains(&lease_left),
        "extended: {lease_left} s"
    );
}

async fn try_calls_are_claimed_once_and_leases_never_shortened(s: Subject) {
    use concord::machine::{Outcome, Phase};

    let g = Gid::parse("g").unwrap();
    let one = BranchId::parse("1").unwrap();
    s.begin(new_tx("g", Duration::from_secs(30))).await.unwrap();
    let mut b = new_branch("g", None);
    b.call_cover = Countdown::start(Duration::from_secs(60));
    let BranchAdded::Added { branch, .. } = s.add_branch(b).await.unwrap() else {
        panic!("not added")
    };
    assert!(branch.call_busy_until.is_some());
    let (_, branches) = s.load(&g).await.unwrap().unwrap();
    assert!(branches[0].call_busy_until.is_some(), "stored");
    let cover = Countdown::start(Duration::from_secs(5));
    assert!(
        !s.claim_try_call(&g, &one, cover).await.unwrap(),
        "the first Try is out"
    );
    let reply = CallRecord {
        branch_id: one.clone(),
        phase: Phase::Try,
        attempt: 1,
        outcome: Outcome::Unknown {
            code: "UNAVAILABLE".into(),
            message: "down".into(),
        },
    };
    s.record_try(&g, &reply, machine::try_record_applies(), Utc::now(), "t")
        .await
        .unwrap();
    let (_, branches) = s.load(&g).await.unwrap().unwrap();
    assert!(branches[0].call_busy_until.is_none(), "its outcome is in");
    assert!(s.claim_try_call(&g, &one, cover).await.unwrap());
    assert!(!s.claim_try_call(&g, &one, cover).await.unwrap(), "once");

    let lease = decide(&*s, "g", Command::Rollback { reason: "r".into() }, "me")
        .await
        .unwrap();
    assert!(
        !s.claim_try_call(&g, &one, Countdown::start(Duration::ZERO))
            .await
            .unwrap(),
        "decided"
    );
    let long = Countdown::start(Duration::from_secs(120));
    assert!(s.extend_lease("me", &lease, long).await.unwrap());
    assert!(!s.extend_lease("other", &lease, long).await.unwrap());
    let renewed = s
        .renew("me", std::slice::from_ref(&lease), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(renewed, vec![g.clone()]);
    let (tx, _) = s.load(&g).await.unwrap().unwrap();
    let left = tx.lease_until.unwrap() - Utc::now();
    assert!(
        left > chrono::Duration::seconds(100),
        "not shortened: {left}"
    );
}

/// A 2-phase message: prepared once (a repeat finds it, with its
/// query-back endpoint), submitted or aborted once (compare-and-set on
/// `prepared`, fence bumped), an abort final with its steps not required.
async fn messages_are_prepared_and_decided_once(s: Subject) {
    use concord::domain::{Endpoint, Protocol};
    use concord::machine::CallStatus;
    use concord::machine::msg::{self, Verdict as MsgVerdict};

    let step = |a: &str| NewMsgStep {
        participant: ParticipantName::parse("p").unwrap(),
        action: ActionName::parse(a).unwrap(),
        payload: b"x".to_vec(),
        call_timeout: None,
        url_call: None,
    };
    let query = Endpoint::parse("http://127.0.0.1:9/q", Protocol::Http).unwrap();
    let new_msg = |gid: &str| {
        let now = Utc::now();
        NewMsg {
            gid: Gid::parse(gid).unwrap(),
            steps: vec![step("a"), step("b")],
            query: Some(query.clone()),
            metadata: Metadata::new(),
            timeout: Duration::from_secs(30),
            deadline: now + chrono::Duration::seconds(30),
            now,
            actor: "test".into(),
            initiator: None,
        }
    };
    let decide_msg = |gid: &str, cmd: msg::Command| {
        let s = &s;
        let g = Gid::parse(gid).unwrap();
        async move {
            let (tx, steps) = s.load(&g).await.unwrap().unwrap();
            let MsgVerdict::Decided(next) =
                msg::decide(&tx.saga_state(&steps), &cmd, Utc::now()).unwrap()
            else {
                panic!("no decision")
            };
            s.decide_msg(MsgDecision {
                gid: g,
                next,
                owner: "me".into(),
                lease: Countdown::start(Duration::from_secs(30)),
                now: Utc::now(),
                actor: "test".into(),
            })
            .await
            .unwrap()
        }
    };

    assert!(matches!(
        s.prepare_msg(new_msg("m")).await.unwrap(),
        MsgPrepared::Created
    ));
    let MsgPrepared::Existing(found) = s.prepare_msg(new_msg("m")).await.unwrap() else {
        panic!("prepared twice")
    };
    let (tx, steps, q) = *found;
    assert_eq!(tx.mode, Mode::Msg);
    assert_eq!(tx.status, Status::Prepared);
    assert!(tx.owner.is_none(), "unleased until submitted");
    assert_eq!(q, Some(query.clone()));
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1].depends_on, vec![0], "in order");
    let g = Gid::parse("m").unwrap();
    assert_eq!(s.msg_query(&g).await.unwrap(), Some(query.clone()));
    assert_eq!(
        s.msg_query(&Gid::parse("none").unwrap()).await.unwrap(),
        None
    );

    // Decided from a stale read: the first applies, the second is refused.
    let (tx, steps) = s.load(&g).await.unwrap().unwrap();
    let lease = decide_msg("m", msg::Command::Submit).await.unwrap();
    assert!(lease.fence > tx.fence, "fence bumped");
    let MsgVerdict::Decided(next) =
        msg::decide(&tx.saga_state(&steps), &msg::Command::Submit, Utc::now()).unwrap()
    else {
        panic!("no decision")
    };
    let again = MsgDecision {
        gid: g.clone(),
        next,
        owner: "other".into(),
        lease: Countdown::start(Duration::from_secs(30)),
        now: Utc::now(),
        actor: "test".into(),
    };
    assert!(s.decide_msg(again).await.unwrap().is_none(), "once");
    let (tx, _) = s.load(&g).await.unwrap().unwrap();
    assert_eq!(tx.status, Status::Submitted);
    assert_eq!(tx.owner.as_deref(), Some("me"));
    assert!(tx.finished_at.is_none());

    s.prepare_msg(new_msg("n")).await.unwrap();
    let n = Gid::parse("n").unwrap();
    let reason = msg::Command::Abort {
        reason: "rolled back".into(),
    };
    assert!(decide_msg("n", reason).await.is_some());
    let (tx, steps) = s.load(&n).await.unwrap().unwrap();
    assert_eq!(tx.status, Status::Aborted);
    assert!(tx.owner.is_none() && tx.finished_at.is_some());
    assert!(
        steps
            .iter()
            .all(|b| b.first_phase == CallStatus::NotRequired)
    );
    let kinds: Vec<String> = s
        .events(&n)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["prepared", "decided", "finished"]);
}

/// A branch's and a saga step's own call policy is stored and read back;
/// a re-drive makes due now exactly the transactions waiting on the
/// participant that is back.
async fn policies_are_kept_and_a_redrive_moves_only_waiting_work(s: Subject) {
    use concord::machine::policy::CallPolicy;

    let policy = CallPolicy {
        max_attempts: Some(3),
        max_age: Some(Duration::from_secs(60)),
        ..CallPolicy::default()
    };
    s.begin(new_tx("t", Duration::from_secs(30))).await.unwrap();
    let mut b = new_branch("t", None);
    b.policy = policy;
    s.add_branch(b).await.unwrap();
    let (_, branches) = s.load(&Gid::parse("t").unwrap()).await.unwrap().unwrap();
    assert_eq!(branches[0].policy, policy);

    let now = Utc::now();
    let step = |p: &str, policy: CallPolicy| NewStep {
        policy,
        ..new_step(p)
    };
    let saga = |gid: &str, p: &str, policy: CallPolicy| NewSaga {
        gid: Gid::parse(gid).unwrap(),
        steps: vec![step(p, policy)],
        metadata: Metadata::new(),
        timeout: None,
        deadline: now + chrono::Duration::seconds(60),
        concurrency: 1,
        owner: "me".into(),
        lease: Countdown::start(Duration::from_secs(30)),
        now,
        initiator: None,
    };
    s.submit_saga(saga("s1", "stock", policy)).await.unwrap();
    s.submit_saga(saga("s2", "pay", CallPolicy::default()))
        .await
        .unwrap();
    let (_, steps) = s.load(&Gid::parse("s1").unwrap()).await.unwrap().unwrap();
    assert_eq!(steps[0].policy, policy);
    let (_, steps) = s.load(&Gid::parse("s2").unwrap()).await.unwrap().unwrap();
    assert!(steps[0].policy.is_default());

    s.postpone_all().await;
    let stock = ParticipantName::parse("stock").unwrap();
    assert_eq!(s.redrive(&stock, "test").await.unwrap(), 1, "s1 only");
    assert_eq!(s.redrive(&stock, "test").await.unwrap(), 0, "due already");
    let (s1, _) = s.load(&Gid::parse("s1").unwrap()).await.unwrap().unwrap();
    // Due within the margin every retry waits after a call (CALL_MARGIN).
    let due = s1.next_attempt_at.unwrap();
    assert!(
        due <= Utc::now() + concord::clock::CALL_MARGIN,
        "re-driven: due {due}"
    );
    assert_eq!(s1.owner.as_deref(), Some("me"), "no lease taken");
    let (s2, _) = s.load(&Gid::parse("s2").unwrap()).await.unwrap().unwrap();
    assert!(
        s2.next_attempt_at.unwrap() > Utc::now(),
        "not waiting on stock"
    );
    let redriven = s
        .events(&Gid::parse("s1").unwrap())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "redriven")
        .count();
    assert_eq!(redriven, 1);
}

/// Branches given as URLs (the DTM-compatible API): their URLs and headers
/// read back as written, for a TCC branch (stored as tried by the
/// initiator), a saga step and a message step; a message may have no
/// query-back, or a DTM `query_prepared` one.
async fn url_branches_and_dtm_query_backs_are_kept(s: Subject) {
    use concord::domain::url_call::UrlCall;
    use concord::domain::{Endpoint, Protocol};
    use concord::machine::CallStatus;

    let call = |trans_type: &str, phases: &[(&str, &str)]| UrlCall {
        trans_type: trans_type.into(),
        branch_id: "01".into(),
        urls: phases
            .iter()
            .map(|(p, u)| (p.to_string(), u.to_string()))
            .collect(),
        headers: [("x-tenant".to_string(), "t1".to_string())].into(),
    };

    s.begin(new_tx("t", Duration::from_secs(30))).await.unwrap();
    let tcc = call(
        "tcc",
        &[("confirm", "http://h:1/c?x=1"), ("cancel", "http://h:1/x")],
    );
    let mut b = new_branch("t", Some("01"));
    b.url_call = Some(tcc.clone());
    b.tried_by_initiator = true;
    let BranchAdded::Added { branch, .. } = s.add_branch(b).await.unwrap() else {
        panic!("branch not added")
    };
    assert_eq!(branch.url_call.as_ref(), Some(&tcc));
    let (_, branches) = s.load(&Gid::parse("t").unwrap()).await.unwrap().unwrap();
    assert_eq!(branches[0].url_call.as_ref(), Some(&tcc));
    assert_eq!(
        branches[0].first_phase,
        CallStatus::Succeeded,
        "tried by the initiator"
    );
    // A branch of a registered participant has none, and a pending Try.
    s.add_branch(new_branch("t", Some("02"))).await.unwrap();
    let (_, branches) = s.load(&Gid::parse("t").unwrap()).await.unwrap().unwrap();
    assert_eq!(branches[1].url_call, None);
    assert_eq!(branches[1].first_phase, CallStatus::Pending);

    let now = Utc::now();
    let step_call = call("saga", &[("execute", "http://h:2/a"), ("compensate", "")]);
    s.submit_saga(NewSaga {
        gid: Gid::parse("s").unwrap(),
        steps: vec![NewStep {
            action: ActionName::parse("a").unwrap(),
            compensation: ActionName::parse("none").unwrap(),
            payload: b"{}".to_vec(),
            url_call: Some(step_call.clone()),
            ..new_step("h:2")
        }],
        metadata: Metadata::new(),
        timeout: None,
        deadline: now + chrono::Duration::seconds(60),
        concurrency: 1,
        owner: "me".into(),
        lease: Countdown::start(Duration::from_secs(30)),
        now,
        initiator: None,
    })
    .await
    .unwrap();
    let (_, steps) = s.load(&Gid::parse("s").unwrap()).await.unwrap().unwrap();
    assert_eq!(steps[0].url_call.as_ref(), Some(&step_call));

    let msg_call = call("msg", &[("execute", "http://h:3/m")]);
    let msg = |gid: &str, query: Option<Endpoint>| NewMsg {
        gid: Gid::parse(gid).unwrap(),
        steps: vec![NewMsgStep {
            participant: ParticipantName::parse("h:3").unwrap(),
            action: ActionName::parse("m").unwrap(),
            payload: b"{}".to_vec(),
            call_timeout: None,
            url_call: Some(msg_call.clone()),
        }],
        query,
        metadata: Metadata::new(),
        timeout: Duration::from_secs(30),
        deadline: now + chrono::Duration::seconds(30),
        now,
        actor: "test".into(),
        initiator: None,
    };
    let query = Endpoint::parse("http://h:4/api/busi/QueryPrepared?x=1", Protocol::Dtm).unwrap();
    s.prepare_msg(msg("m1", Some(query.clone()))).await.unwrap();
    s.prepare_msg(msg("m2", None)).await.unwrap();
    let m1 = Gid::parse("m1").unwrap();
    assert_eq!(s.msg_query(&m1).await.unwrap(), Some(query));
    assert_eq!(s.msg_query(&Gid::parse("m2").unwrap()).await.unwrap(), None);
    let (_, steps) = s.load(&m1).await.unwrap().unwrap();
    assert_eq!(steps[0].url_call.as_ref(), Some(&msg_call));
}

/// An operator's resolution fences out the driver that held the lease: its
/// late successful round is refused and nothing of the resolution is undone
/// (moved here from admin.rs to run on both stores).
async fn a_stale_round_cannot_unresolve(s: Subject) {
    let g = Gid::parse("g").unwrap();
    let now = Utc::now();
    s.begin(NewTransaction {
        gid: g.clone(),
        metadata: Metadata::new(),
        timeout: Duration::from_secs(30),
        deadline: now + chrono::Duration::seconds(30),
        now,
        actor: "test".into(),
        initiator: None,
    })
    .await
    .unwrap();
    let BranchAdded::Added { branch, .. } = s
        .add_branch(NewBranch {
            gid: g.clone(),
            branch_id: None,
            participant: ParticipantName::parse("p").unwrap(),
            action: ActionName::parse("a").unwrap(),
            payload: b"x".to_vec(),
            call_timeout: None,
            policy: Default::default(),
            call_cover: Countdown::start(std::time::Duration::ZERO),
            now,
            actor: "test".into(),
            url_call: None,
            tried_by_initiator: false,
        })
        .await
        .unwrap()
    else {
        panic!("branch not added")
    };
    let ok = |phase| CallRecord {
        branch_id: branch.branch_id.clone(),
        phase,
        attempt: 1,
        outcome: Outcome::Succeeded,
    };
    s.record_try(
        &g,
        &ok(Phase::Try),
        machine::try_record_applies(),
        now,
        "test",
    )
    .await
    .unwrap();
    let (tx, branches) = s.load(&g).await.unwrap().unwrap();
    let Ok(Verdict::Decided { next, .. }) =
        machine::decide(&tx.state(&branches), &Command::Commit, Utc::now())
    else {
        panic!("commit refused")
    };
    let lease = s
        .decide(Decision {
            gid: g.clone(),
            expected_status: tx.status,
            expected_branch_seq: tx.branch_seq,
            expected_fence: tx.fence,
            next: next.clone(),
            owner: "driver".into(),
            lease: Countdown::start(Duration::from_secs(30)),
            now: Utc::now(),
            actor: "driver".into(),
        })
        .await
        .unwrap()
        .unwrap();
    // Flag it the way a failed round would, without giving the lease back.
    s.flag_all().await;
    assert!(
        s.admin_apply(AdminWrite {
            gid: g.clone(),
            expected_status: Status::Confirming,
            expected_paused: false,
            expected_needs_attention: true,
            change: AdminChange::Resolve {
                note: "by hand".into()
            },
            event: "operator_resolve",
            actor: "alice".into(),
            note: Some("by hand".into()),
            now: Utc::now(),
        })
        .await
        .unwrap()
    );
    // The driver comes back with a successful round: fenced out.
    let mut finished = next.clone();
    finished.status = Status::Confirmed;
    let written = s
        .write_round(RoundWrite {
            lease,
            owner: "driver".into(),
            next: finished,
            calls: vec![ok(Phase::Confirm)],
            next_attempt_at: None,
            newly_flagged: false,
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert!(!written, "stale round refused");
    let (row, _) = s.admin_get(&g).await.unwrap().unwrap();
    assert_eq!(row.tx.status, Status::Confirming);
    assert_eq!(row.resolution.unwrap().by, "alice");
    assert_eq!(row.tx.next_attempt_at, None);
    assert_eq!(row.tx.owner, None);
    assert!(
        s.claim_due("other", 10, Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty()
    );
}

/// One test per store for each conformance test.
/// A successful Try's record lands whether or not a decision follows: on
/// its own (PostgreSQL holds it back for a decision for up to 100 ms), or
/// with the decision that follows it, before which the history lists it.
async fn a_try_record_lands_alone_or_with_its_decision(s: Subject) {
    use concord::machine::{CallStatus, Outcome, Phase};

    s.begin(new_tx("g", Duration::from_secs(30))).await.unwrap();
    s.add_branch(new_branch("g", None)).await.unwrap();
    s.add_branch(new_branch("g", None)).await.unwrap();
    let g = Gid::parse("g").unwrap();
    let ok = |id: &str| CallRecord {
        branch_id: BranchId::parse(id).unwrap(),
        phase: Phase::Try,
        attempt: 1,
        outcome: Outcome::Succeeded,
    };
    // No decision: the record still lands, and the call is no longer out.
    s.record_try(&g, &ok("1"), machine::try_record_applies(), Utc::now(), "t")
        .await
        .unwrap();
    let (tx, branches) = s.load(&g).await.unwrap().unwrap();
    assert_eq!(branches[0].first_phase, CallStatus::Succeeded);
    assert!(branches[0].call_busy_until.is_none());
    assert_eq!(branches[1].first_phase, CallStatus::Pending);

    // A decision right after the second record: both land.
    let mut known = branches.clone();
    known[1].first_phase = CallStatus::Succeeded;
    let second = ok("2");
    let record = s.record_try(&g, &second, machine::try_record_applies(), Utc::now(), "t");
    let decision = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        decide_from(&*s, &tx, &known, Command::Commit, "a").await
    };
    let (recorded, decided) = tokio::join!(record, decision);
    recorded.unwrap();
    assert!(decided.is_some());
    let (tx, branches) = s.load(&g).await.unwrap().unwrap();
    assert_eq!(tx.status, Status::Confirming);
    assert_eq!(branches[1].first_phase, CallStatus::Succeeded);
    assert!(branches[1].call_busy_until.is_none());
    let kinds: Vec<(String, Option<String>)> = s
        .events(&g)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.branch_id))
        .collect();
    let try_2 = kinds
        .iter()
        .position(|k| k == &("call".to_string(), Some("2".to_string())))
        .unwrap_or_else(|| panic!("no try call of branch 2: {kinds:?}"));
    let decided = kinds
        .iter()
        .position(|k| k.0 == "decided")
        .unwrap_or_else(|| panic!("no decision: {kinds:?}"));
    assert!(try_2 < decided, "{kinds:?}");
}

macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod postgres {
            $(
                #[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
                async fn $name(pool: sqlx::PgPool) {
                    super::$name(super::Subject::postgres(pool).await).await
                }
            )+
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Subject::sqlite().await).await
                }
            )+
        }
    };
}

/// The identity that began a transaction (TCC, saga, message) is stored
/// with it, shown by the operator's read and named by its first event; none
/// is stored when authentication is off.
async fn the_initiator_is_kept_with_each_kind_of_transaction(s: Subject) {
    use concord::domain::{Endpoint, Protocol};

    let now = Utc::now();
    let checkout = Some("checkout".to_string());
    s.begin(NewTransaction {
        initiator: checkout.clone(),
        ..new_tx("t", Duration::from_secs(30))
    })
    .await
    .unwrap();
    s.begin(new_tx("anon", Duration::from_secs(30)))
        .await
        .unwrap();
    s.submit_saga(NewSaga {
        gid: Gid::parse("s").unwrap(),
        steps: vec![NewStep {
            action: ActionName::parse("a").unwrap(),
            compensation: ActionName::parse("c").unwrap(),
            ..new_step("p")
        }],
        metadata: Metadata::new(),
        timeout: None,
        deadline: now + chrono::Duration::seconds(60),
        concurrency: 1,
        owner: "me".into(),
        lease: Countdown::start(Duration::from_secs(30)),
        now,
        initiator: checkout.clone(),
    })
    .await
    .unwrap();
    s.prepare_msg(NewMsg {
        gid: Gid::parse("m").unwrap(),
        steps: vec![NewMsgStep {
            participant: ParticipantName::parse("p").unwrap(),
            action: ActionName::parse("a").unwrap(),
            payload: vec![],
            call_timeout: None,
            url_call: None,
        }],
        query: Some(Endpoint::parse("http://127.0.0.1:9/q", Protocol::Http).unwrap()),
        metadata: Metadata::new(),
        timeout: Duration::from_secs(30),
        deadline: now + chrono::Duration::seconds(30),
        now,
        actor: "test".into(),
        initiator: checkout.clone(),
    })
    .await
    .unwrap();
    for gid in ["t", "s", "m"] {
        let gid = Gid::parse(gid).unwrap();
        let (tx, _) = s.load(&gid).await.unwrap().unwrap();
        assert_eq!(tx.initiator, checkout, "{gid}");
        let (admin, _) = s.admin_get(&gid).await.unwrap().unwrap();
        assert_eq!(admin.tx.initiator, checkout, "{gid}");
        let events = s.events(&gid).await.unwrap();
        let first = events[0].message.as_deref().unwrap_or_default();
        assert!(first.contains("begun by checkout"), "{gid}: {first:?}");
    }
    let anon = Gid::parse("anon").unwrap();
    let (tx, _) = s.load(&anon).await.unwrap().unwrap();
    assert_eq!(tx.initiator, None);
    let events = s.events(&anon).await.unwrap();
    assert_eq!(events[0].message, None);
}

/// A saga's success path is told by its rows, not stored as events (issue
/// 16): a clean saga's history is as it was (submitted, each call,
/// finished) with nothing in the events table; one that turns to
/// compensation first copies its successful actions into events, so its
/// history keeps them once compensation overwrote the rows.
async fn a_saga_s_success_path_is_told_by_its_rows(s: Subject) {
    use chrono::SubsecRound;
    use concord::machine::saga::{SagaPhase, on_reply};

    // Microseconds: what both stores keep of an instant.
    let t0 = Utc::now().trunc_subsecs(6);
    let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
    let step = |p: &str| NewStep {
        // A rejected step needs no compensation: one call undoes the saga.
        compensate_rejected: false,
        ..new_step(p)
    };
    for gid in ["clean", "undone"] {
        s.submit_saga(NewSaga {
            gid: Gid::parse(gid).unwrap(),
            steps: vec![step("stock"), step("pay")],
            metadata: Metadata::new(),
            timeout: None,
            deadline: concord::store::no_deadline(),
            concurrency: 1,
            owner: "me".into(),
            lease: Countdown::start(Duration::from_secs(30)),
            now: t0,
            initiator: Some("checkout".into()),
        })
        .await
        .unwrap();
    }
    // One reply folded by the state machine and written as the driver does.
    let reply = |gid: &'static str, i: usize, phase: SagaPhase, outcome: Outcome, ms: i64| {
        let s = &s;
        async move {
            let g = Gid::parse(gid).unwrap();
            let (tx, steps) = s.load(&g).await.unwrap().unwrap();
            let (next, _) = on_reply(&tx.saga_state(&steps), i, phase, &outcome, at(ms));
            let finished = next.status.is_final();
            let write = SagaWrite {
                mode: Mode::Saga,
                lease: Lease { gid: g, fence: 1 },
                owner: "me".into(),
                status_changed: next.status != tx.status,
                state: next,
                steps: vec![i],
                calls: vec![CallRecord {
                    branch_id: BranchId::parse((i + 1).to_string()).unwrap(),
                    phase: match phase {
                        SagaPhase::Execute => Phase::Execute,
                        SagaPhase::Compensate => Phase::Compensate,
                    },
                    attempt: 1,
                    outcome,
                }],
                query: None,
                newly_flagged: false,
                release: finished,
                next_attempt_at: (!finished).then(|| at(ms)),
                now: at(ms),
            };
            assert!(s.write_saga(write).await.unwrap(), "{gid} written");
        }
    };
    type Line = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        i64,
        bool,
    );
    let history = |gid: &'static str| {
        let s = &s;
        async move {
            s.events(&Gid::parse(gid).unwrap())
                .await
                .unwrap()
                .into_iter()
                .map(|e| -> Line {
                    (
                        e.kind,
                        e.branch_id,
                        e.phase,
                        e.code,
                        (e.at - t0).num_milliseconds(),
                        e.id != 0,
                    )
                })
                .collect::<Vec<Line>>()
        }
    };
    let line = |kind: &str,
                branch: Option<&str>,
                phase: Option<&str>,
                code: Option<&str>,
                ms,
                stored|
     -> Line {
        (
            kind.to_string(),
            branch.map(str::to_string),
            phase.map(str::to_string),
            code.map(str::to_string),
            ms,
            stored,
        )
    };
    let (ok, rejected) = (
        Outcome::Succeeded,
        Outcome::Rejected {
            message: "no funds".into(),
        },
    );

    reply("clean", 0, SagaPhase::Execute, ok.clone(), 10).await;
    reply("clean", 1, SagaPhase::Execute, ok.clone(), 20).await;
    let clean = s.events(&Gid::parse("clean").unwrap()).await.unwrap();
    assert_eq!(
        clean[0].message.as_deref(),
        Some("2 steps; begun by checkout")
    );
    assert_eq!(clean[3].status.as_deref(), Some("succeeded"));
    assert!(clean.iter().all(|e| e.actor.is_none()), "{clean:?}");
    assert_eq!(
        history("clean").await,
        [
            line("submitted", None, None, None, 0, false),
            line("call", Some("1"), Some("execute"), Some("OK"), 10, false),
            line("call", Some("2"), Some("execute"), Some("OK"), 20, false),
            line("finished", None, None, None, 20, false),
        ]
    );

    reply("undone", 0, SagaPhase::Execute, ok.clone(), 10).await;
    assert_eq!(
        history("undone").await,
        [
            line("submitted", None, None, None, 0, false),
            line("call", Some("1"), Some("execute"), Some("OK"), 10, false),
        ]
    );
    reply("undone", 1, SagaPhase::Execute, rejected, 20).await;
    reply("undone", 0, SagaPhase::Compensate, ok, 30).await;
    let (tx, _) = s
        .load(&Gid::parse("undone").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tx.status, Status::Compensated);
    assert_eq!(
        history("undone").await,
        [
            line("submitted", None, None, None, 0, false),
            // Copied from the row when the saga turned, at its own time.
            line("call", Some("1"), Some("execute"), Some("OK"), 10, true),
            line(
                "call",
                Some("2"),
                Some("execute"),
                Some("ABORTED"),
                20,
                true
            ),
            line("compensating", None, None, None, 20, true),
            line("call", Some("1"), Some("compensate"), Some("OK"), 30, true),
            line("finished", None, None, None, 30, true),
        ]
    );
}

conformance!(
    begin_and_branches,
    a_decision_fails_if_a_branch_arrived_after_the_read,
    fencing_rejects_a_stale_owner,
    concurrent_claims_never_overlap,
    trying_transactions_become_due_at_their_deadline,
    registry_is_persisted_and_merged,
    action_policies_are_kept_replaced_and_cleared,
    a_skip_is_compare_and_set_fences_the_driver_and_can_finish,
    an_alert_per_change_of_the_flag_claimed_by_one_instance,
    a_late_try_record_does_not_overwrite_phase_two,
    operator_queries_gauges_and_retention,
    try_calls_are_claimed_once_and_leases_never_shortened,
    messages_are_prepared_and_decided_once,
    policies_are_kept_and_a_redrive_moves_only_waiting_work,
    the_initiator_is_kept_with_each_kind_of_transaction,
    url_branches_and_dtm_query_backs_are_kept,
    a_stale_round_cannot_unresolve,
    a_try_record_lands_alone_or_with_its_decision,
    next_due_is_the_earliest_claimable_moment,
    a_lease_counts_from_when_it_was_asked,
    a_saga_s_success_path_is_told_by_its_rows,
);

/// SQLite only: one instance per file, and a restart after a crash takes
/// over what the crashed instance held once its lease expires.
#[tokio::test]
async fn sqlite_file_has_one_instance_and_a_restart_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("concord.db");
    let open = || SqliteStore::open(&path, 2, Duration::from_secs(5));
    let first = open().await.unwrap();
    first.migrate().await.unwrap();
    let err = open().await.err().unwrap();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("in use by another concord instance")),
        "{err}"
    );
    first
        .begin(new_tx("g", Duration::from_secs(30)))
        .await
        .unwrap();
    let lease = decide(
        &first,
        "g",
        Command::Rollback { reason: "r".into() },
        "dead",
    )
    .await
    .unwrap();
    // The instance dies without releasing anything.
    drop(first);
    let second = open().await.unwrap();
    second.migrate().await.unwrap();
    let s: &dyn AdminStore = &second;
    assert!(
        s.claim_due("new", 10, Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty(),
        "the dead owner's lease still runs"
    );
    second
        .execute_raw("UPDATE global_transactions SET lease_until = 0")
        .await
        .unwrap();
    let claimed = s
        .claim_due("new", 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].previous_owner.as_deref(), Some("dead"));
    assert!(claimed[0].lease.fence > lease.fence);
    let (tx, _) = s.load(&Gid::parse("g").unwrap()).await.unwrap().unwrap();
    assert_eq!(
        (tx.status, tx.owner.as_deref()),
        (Status::Cancelling, Some("new"))
    );
}
