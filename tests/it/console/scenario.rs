//! The operator's scenario in a real browser.

use std::time::Duration;

use fantoccini::Locator;
use serde_json::json;
use tokio::time::Instant;

use super::browser::{Browser, forging_site};
use super::{HOSTILE, TOKEN, coordinator, flag, operator_events, stuck_world};
use crate::harness::*;

async fn an_operator_finds_retries_and_resolves_a_stuck_transaction_in_a_browser(db: TestDb) {
    let Some(b) = Browser::start().await else {
        return;
    };
    let coord = coordinator(&db, "alice:s3cret").await;
    let p = stuck_world(&db, &coord).await;
    let base = format!("http://{}/ui/", coord.metrics_addr.unwrap());

    // Sign in: a wrong token is refused, the right one shows who we are.
    b.client.goto(&base).await.unwrap();
    b.type_into("#token", "nope").await;
    b.click("#sign-in-form button[type=submit]").await;
    b.until_text("#sign-in-error", "invalid admin token").await;
    b.type_into("#token", TOKEN).await;
    b.click("#sign-in-form button[type=submit]").await;
    b.until_text("#whoami", "alice").await;
    b.watch_csp().await;
    assert!(
        !b.client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains(TOKEN)
    );

    // Overview: the stuck one is counted and is the oldest unfinished.
    b.until_text("#card-attention .value", "1").await;
    b.until_text("#oldest", "order-1").await;
    b.until_text("#chart figcaption", "2 finished, 1 failed")
        .await;
    b.screenshot("console-overview.png").await;

    // Participants: the failing one with its last error, as text.
    b.click("a[data-nav=participants]").await;
    b.until_text("#participants", "bank-b").await;
    b.until_text("#participants", "<script>window.__xss=2</script>")
        .await;

    // Transactions, filtered to those needing attention.
    b.click("a[data-nav=transactions]").await;
    b.until_text("#results", "other-1").await;
    b.screenshot("console-transactions.png").await;
    // It follows new transactions without a reload (the marker survives).
    b.client
        .execute("window.__marker = 1", vec![])
        .await
        .unwrap();
    let mut c = coord.client().await;
    c.begin(begin_req("late-1", None)).await.unwrap();
    b.until_text("#results", "late-1").await;
    let kept = b
        .client
        .execute("return window.__marker", vec![])
        .await
        .unwrap();
    assert_eq!(kept, json!(1), "the page was reloaded");
    // By status (several may be ticked, as the CLI's --status a,b).
    b.click("#filter-status summary").await;
    b.click("#status-confirmed").await;
    b.click("#status-cancelled").await;
    b.click("#filters button[type=submit]").await;
    b.until_text("#filter-status summary", "confirmed, cancelled")
        .await;
    let rows = b.until_text("#results", "gone-1").await;
    assert!(
        rows.contains("paid-1") && !rows.contains("order-1"),
        "{rows}"
    );
    // Then those needing attention, of any status.
    b.click("#filter-status summary").await;
    b.click("#status-confirmed").await;
    b.click("#status-cancelled").await;
    b.click("#filter-needs_attention").await;
    b.click("#filters button[type=submit]").await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = b.text("#results").await.unwrap_or_default();
        if rows.contains("order-1") && !rows.contains("other-1") && !rows.contains("late-1") {
            break;
        }
        assert!(Instant::now() < until, "filter not applied: {rows}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Its detail: why, as text, and the participant's HTML ran nothing.
    b.click("tr[data-gid=order-1] a").await;
    let why = b.until_text("#why", "confirm failing").await;
    assert!(why.contains(HOSTILE), "the error shows literally: {why}");
    b.until_text("#detail table", "<img src=x onerror=").await;
    let injected = b
        .client
        .find_all(Locator::Css("#detail img, #detail script"))
        .await
        .unwrap();
    assert!(
        injected.is_empty(),
        "the participant's markup became elements"
    );
    let xss = b
        .client
        .execute("return window.__xss === undefined", vec![])
        .await
        .unwrap();
    assert_eq!(xss, json!(true), "the participant's script ran");
    b.screenshot("console-stuck-transaction.png").await;

    // An illegal command: its refusal, with the state machine's reason.
    let refused = b.command("rollback", "give up").await;
    assert!(
        refused.starts_with("Refused: ") && refused.contains("commit"),
        "{refused}"
    );
    assert!(!flag(&db, "order-1", "paused").await);

    // Retry: the participant is called again at once, not after a minute.
    let before = p.calls("order-1", "1", Ph::Confirm);
    let done = b.command("retry", "").await;
    assert!(done.starts_with("Done: retry scheduled now"), "{done}");
    let until = Instant::now() + Duration::from_secs(10);
    while p.calls("order-1", "1", Ph::Confirm) <= before {
        assert!(Instant::now() < until, "retry did not call the participant");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The page broke none of its own policy so far.
    assert_eq!(b.csp_violations().await, json!([]));

    // A forged command from another origin, sent by this signed-in browser.
    let site = forging_site(coord.metrics_addr.unwrap()).await;
    b.client.goto(&format!("http://{site}/")).await.unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let body = b.text("body").await.unwrap_or_default();
        if body.contains("refused") {
            break;
        }
        assert!(
            Instant::now() < until,
            "the forged post was not refused: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!flag(&db, "other-1", "paused").await);
    assert_eq!(operator_events(&db, "other-1").await, 0);

    // Back on the page, by keyboard alone: Pause, a note, Tab to the
    // confirmation's button, Enter. Then Resume.
    b.client.goto(&format!("{base}#/tx/order-1")).await.unwrap();
    b.until_text("#why", "failing").await;
    b.watch_csp().await;
    b.client
        .execute("document.getElementById('do-pause').focus()", vec![])
        .await
        .unwrap();
    b.keys("\u{E007}").await; // Enter on the focused button
    b.until_text("#confirm-text", "Stop retrying order-1").await;
    b.keys("disk full on bank-a\u{E004}\u{E004}\u{E007}").await; // text, Tab, Tab, Enter
    b.until_text("#action-result", "Done: retries paused").await;
    b.until_text("#why", "retries paused by alice").await;
    let done = b.command("resume", "").await;
    assert!(done.starts_with("Done: retries resumed"), "{done}");

    // At phone width nothing sticks out sideways (tables scroll in place).
    b.client.set_window_size(390, 844).await.unwrap();
    let overflow = b
        .client
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, json!(0), "the page is wider than a phone");
    b.screenshot("console-phone.png").await;
    b.client.set_window_size(1200, 900).await.unwrap();

    // Resolve with a note; the note and the actor show in the history.
    let note = "refunded by hand <b>ticket 42</b>";
    let done = b.command("resolve", note).await;
    assert!(done.starts_with("Done: resolved by hand"), "{done}");
    let entry = b.until_text("#timeline li.k-operator_resolve", note).await;
    assert!(entry.contains("by alice"), "{entry}");
    b.until_text("#why", "resolved by hand by alice").await;

    assert_eq!(b.csp_violations().await, json!([]));

    // Sign out: back to the form, and the session is gone.
    b.click("#sign-out").await;
    b.until_text("#sign-in-error", "Signed out").await;
    let status = b
        .client
        .execute_async(
            "const done = arguments[0]; fetch('/ui/api/overview').then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(401));
    b.close().await;
}

on_both_stores!(an_operator_finds_retries_and_resolves_a_stuck_transaction_in_a_browser,);
