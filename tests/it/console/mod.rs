//! The operator console at `/ui/`, against a real coordinator (on each
//! store) and a participant that fails on purpose with an error message
//! full of HTML.
//!
//! The browser scenario runs Debian's `chromium`, headless, driven over
//! WebDriver (`chromedriver`) by fantoccini: sign in, find the stuck
//! transaction by filter, read why it is stuck, retry it, see an illegal
//! command refused with the state machine's reason, resolve it with a note
//! that then shows in the history, sign out; the participant's `<script>`
//! and `<img onerror>` render as text and run nothing; a form on another
//! origin cannot make the signed-in browser act. Without `chromedriver` the
//! browser test says so loudly and passes, except under CI (`CI=true`),
//! where it fails: `.ci/run` installs `chromium` and `chromium-driver`.
//!
//! The HTTP-level checks (401 and nothing changed without a session, the
//! Content-Security-Policy, a forged request, the console off without
//! admin tokens) need no browser and always run.

mod browser;
mod http;
mod scenario;

use std::time::Duration;

use concord::auth::AdminTokens;
use tokio::time::Instant;

use crate::harness::*;

const TOKEN: &str = "s3cret";

/// What the failing participant answers: if the console ever parsed it as
/// HTML, the image's handler or the script would set `window.__xss`.
const HOSTILE: &str =
    "db down <img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";

/// A coordinator with the console on a loopback port of its own, that flags
/// a transaction after its first failed round and then waits a minute, so
/// that only an operator's retry makes it call again soon.
async fn coordinator(db: &TestDb, tokens: &str) -> TestCoordinator {
    let tokens = AdminTokens::parse_list(tokens).unwrap();
    TestCoordinator::start_with(db, move |c| {
        c.admin_tokens = tokens;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.attention_attempts = 1;
        c.retry.initial = Duration::from_secs(60);
        c.retry.max = Duration::from_secs(60);
    })
    .await
    .with_token(TOKEN)
}

/// `bank-a` fails every Confirm with [`HOSTILE`]; `order-1` is committed
/// (so stuck confirming, soon flagged), `other-1` is still trying, and on
/// `bank-b` `paid-1` is confirmed and `gone-1` cancelled (the overview's
/// chart: two finished, one of them failed).
async fn stuck_world(db: &TestDb, coord: &TestCoordinator) -> TestParticipant {
    let a = TestParticipant::start_on("bank-a", db).await;
    a.register(coord, &["debit"]).await;
    a.script(Ph::Confirm, vec![], Behavior::UnavailableWith(HOSTILE));
    let b = TestParticipant::start_on("bank-b", db).await;
    b.register(coord, &["debit"]).await;
    let mut c = coord.client().await;
    for (gid, participant) in [
        ("order-1", "bank-a"),
        ("other-1", "bank-a"),
        ("paid-1", "bank-b"),
        ("gone-1", "bank-b"),
    ] {
        c.begin(begin_req(gid, None)).await.unwrap();
        c.r#try(try_req(gid, participant, "debit")).await.unwrap();
    }
    commit_tx(&mut c, "paid-1", true).await.unwrap();
    rollback_tx(&mut c, "gone-1", "changed my mind", true)
        .await
        .unwrap();
    commit_tx(&mut c, "order-1", false).await.unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while !flag(db, "order-1", "needs_attention").await {
        assert!(Instant::now() < until, "order-1 was never flagged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a
}

/// Whether `column`, a flag of the transaction, is set.
async fn flag(db: &TestDb, gid: &str, column: &'static str) -> bool {
    db.holds(gid, column).await
}

async fn operator_events(db: &TestDb, gid: &str) -> i64 {
    db.number_of(
        "SELECT count(*) FROM transaction_events WHERE gid = $1 AND kind LIKE 'operator_%'",
        gid,
    )
    .await
}
