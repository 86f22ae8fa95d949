//! The PostgreSQL store against a real database: compare-and-set decisions,
//! fencing, claims with SKIP LOCKED, lease renewal and release.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use concord::domain::{ActionName, BranchId, Gid, ParticipantName};
use concord::machine::Status;
use concord::machine::tcc::{self as machine, Command, Verdict};
use concord::store::postgres::PgStore;
use concord::store::*;
use sqlx::PgPool;

async fn store(pool: PgPool) -> PgStore {
    PgStore::from_pool(pool).await.unwrap()
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
        call_cover: std::time::Duration::ZERO,
        now: Utc::now(),
        actor: "test".into(),
    }
}

async fn decide(s: &PgStore, gid: &str, cmd: Command, owner: &str) -> Option<Lease> {
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
    s: &PgStore,
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
            lease: Duration::from_secs(30),
            now: Utc::now(),
            actor: owner.into(),
        })
        .await
        .unwrap()?;
    Some((lease, next))
}

#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn begin_and_branches(pool: PgPool) {
    let s = store(pool).await;
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

#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn a_decision_fails_if_a_branch_arrived_after_the_read(pool: PgPool) {
    let s = store(pool).await;
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
        lease: Duration::from_secs(30),
        now: Utc::now(),
        actor: "me".into(),
    };
    assert_eq!(
        s.decide(stale).await.unwrap(),
        None,
        "stale read must not decide"
    );
    assert!(
        decide(&s, "g", Command::Rollback { reason: "r".into() }, "me")
            .await
            .is_some()
    );
    // No branch can be added after the decision.
    assert!(matches!(
        s.add_branch(new_branch("g", None)).await.unwrap(),
        BranchAdded::NotAccepted(Some(_))
    ));
}

#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn fencing_rejects_a_stale_owner(pool: PgPool) {
    let s = store(pool.clone()).await;
    s.begin(new_tx("g", Duration::from_secs(30))).await.unwrap();
    s.add_branch(new_branch("g", None)).await.unwrap();
    let lease_a = decide(&s, "g", Command::Rollback { reason: "r".into() }, "a")
        .await
        .unwrap();
    // a's lease expires; b claims.
    sqlx::query("UPDATE global_transactions SET lease_until = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    let claimed = s.claim_due("b", 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].previous_owner.as_deref(), Some("a"));
    let lease_b = claimed[0].lease.clone();
    assert!(lease_b.fence > lease_a.fence);

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

#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn concurrent_claims_never_overlap(pool: PgPool) {
    let s = store(pool.clone()).await;
    for i in 0..60 {
        let gid = format!("g{i}");
        s.begin(new_tx(&gid, Duration::from_secs(30)))
            .await
            .unwrap();
        decide(&s, &gid, Command::Rollback { reason: "r".into() }, "dead")
            .await
            .unwrap();
    }
    sqlx::query("UPDATE global_transactions SET lease_until = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let s = s.clone();
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

#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn trying_transactions_become_due_at_their_deadline(pool: PgPool) {
    let s = store(pool).await;
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

#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn registry_is_persisted_and_merged(pool: PgPool) {
    use concord::domain::Protocol;

    let s = store(pool).await;
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

#[sqlx::test(migrator = "concord::store::postgres::MIGRATOR")]
async fn a_late_try_record_does_not_overwrite_phase_two(pool: PgPool) {
    use concord::machine::{CallStatus, Outcome, Phase};

    // The record of a successful Try is written after the Try's reply, so
    // it can land after the commit round: the round's outcome stays, the
    // Try reads as succeeded (the commit round says so), and the call is
    // still in the history.
    let s = store(pool.clone()).await;
    s.begin(new_tx("g", Duration::from_secs(30))).await.unwrap();
    s.add_branch(new_branch("g", None)).await.unwrap();
    let g = Gid::parse("g").unwrap();
    let (tx, mut branches) = s.load(&g).await.unwrap().unwrap();
    assert_eq!(branches[0].first_phase, CallStatus::Pending);
    // The deciding instance served the Try and knows it succeeded.
    branches[0].first_phase = CallStatus::Succeeded;
    let (lease, mut next) = decide_from(&s, &tx, &branches, Command::Commit, "a")
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
