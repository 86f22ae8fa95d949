//! The console over plain HTTP, without a browser: sessions, origins,
//! the policy header, bad input, and the console off without admin tokens.

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{TOKEN, coordinator, flag, operator_events, stuck_world};
use crate::harness::{TestDb, on_both_stores};

/// One answer: status, headers (lowercase names) and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`; `extra` are header lines.
async fn http(addr: SocketAddr, method: &str, path: &str, extra: &[&str], body: &str) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in extra {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Signs in over HTTP; returns the `Cookie` header line of the session.
async fn sign_in(addr: SocketAddr, token: &str) -> Reply {
    let origin = format!("Origin: http://{addr}");
    let body = json!({ "token": token }).to_string();
    http(
        addr,
        "POST",
        "/ui/api/session",
        &[&origin, "Content-Type: application/json"],
        &body,
    )
    .await
}

async fn without_a_session_nothing_is_shown_or_changed(db: TestDb) {
    let coord = coordinator(&db, "alice:s3cret").await;
    let _p = stuck_world(&db, &coord).await;
    let addr = coord.metrics_addr.unwrap();
    let origin = format!("Origin: http://{addr}");
    let json = "Content-Type: application/json";

    // The page itself loads (it shows the sign-in form), with the policy.
    let page = http(addr, "GET", "/ui/", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("sign-in-form"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no external request"
    );

    // No session: 401 for every view and command, nothing written.
    for path in [
        "/ui/api/overview",
        "/ui/api/transactions",
        "/ui/api/transactions/order-1",
    ] {
        let r = http(addr, "GET", path, &[], "").await;
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.header("content-security-policy").is_some(), "{path}");
    }
    let forged_cookie = "Cookie: concord_console=00ff";
    for extra in [
        vec![&origin[..], json],
        vec![&origin[..], json, forged_cookie],
    ] {
        let r = http(
            addr,
            "POST",
            "/ui/api/transactions/order-1/pause",
            &extra,
            "{}",
        )
        .await;
        assert_eq!(r.status, 401, "{}", r.body);
    }

    // A wrong token: 401, and the token is not echoed.
    let wrong = sign_in(addr, "s3cre").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "invalid admin token");
    assert!(wrong.header("set-cookie").is_none());

    // The right one: a session cookie that scripts cannot read and other
    // sites do not send.
    let ok = sign_in(addr, TOKEN).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["actor"], "alice");
    let set = ok.header("set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = format!("Cookie: {}", set.split(';').next().unwrap());

    // With the cookie, a command from another origin (or with none, or
    // not as JSON) is refused, and nothing changes.
    let evil = "Origin: http://127.0.0.1:1";
    for extra in [
        vec![&cookie[..], evil, json],
        vec![&cookie[..], json],
        vec![&cookie[..], &origin[..], "Content-Type: text/plain"],
        vec![&cookie[..], &origin[..], json, "Sec-Fetch-Site: same-site"],
    ] {
        let r = http(
            addr,
            "POST",
            "/ui/api/transactions/order-1/pause",
            &extra,
            "{}",
        )
        .await;
        assert_eq!(r.status, 403, "{extra:?}: {}", r.body);
    }
    assert!(!flag(&db, "order-1", "paused").await);
    assert_eq!(operator_events(&db, "order-1").await, 0);

    // Bad input is precise and changes nothing.
    let r = http(
        addr,
        "GET",
        "/ui/api/transactions?status=stuck",
        &[&cookie],
        "",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("status"),
        "{}",
        r.body
    );
    let r = http(
        addr,
        "POST",
        "/ui/api/transactions/order-1/resolve",
        &[&cookie, &origin, json],
        "{\"note\": \"  \"}",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("note is required"))
    );
    let r = http(
        addr,
        "POST",
        "/ui/api/transactions/order-1/explode",
        &[&cookie, &origin, json],
        "{}",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(operator_events(&db, "order-1").await, 0);

    // The same command from this origin works, as alice.
    let r = http(
        addr,
        "POST",
        "/ui/api/transactions/order-1/pause",
        &[&cookie, &origin, json],
        "{}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["changed"], true);
    assert!(flag(&db, "order-1", "paused").await);
    let actor = db
        .text_of(
            "SELECT actor FROM transaction_events WHERE gid = $1 AND kind = 'operator_pause'",
            "order-1",
        )
        .await;
    assert_eq!(actor.as_deref(), Some("alice"));

    // The overview: counts, and every minute of the last hour with the
    // two that finished (one rolled back) in the last one or two.
    let o = http(addr, "GET", "/ui/api/overview", &[&cookie], "")
        .await
        .json();
    assert_eq!(o["stats"]["needs_attention"], 1);
    assert_eq!(o["stats"]["paused"], 1);
    assert_eq!(o["stats"]["oldest_unfinished"]["gid"], "order-1");
    let minutes = o["per_minute"].as_array().unwrap();
    assert!((60..=61).contains(&minutes.len()), "{}", minutes.len());
    let sum = |k: &str| minutes.iter().map(|m| m[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("finished"), sum("failed")), (2, 1));

    // Signed out: the cookie is worth nothing any more.
    let out = http(addr, "DELETE", "/ui/api/session", &[&cookie, &origin], "").await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = http(addr, "GET", "/ui/api/overview", &[&cookie], "").await;
    assert_eq!(r.status, 401);
}

async fn without_admin_tokens_the_console_refuses_everything(db: TestDb) {
    let coord = coordinator(&db, "").await;
    let addr = coord.metrics_addr.unwrap();
    for (method, path) in [
        ("GET", "/ui/"),
        ("GET", "/ui/api/overview"),
        ("POST", "/ui/api/session"),
    ] {
        let r = http(addr, method, path, &[&format!("Origin: http://{addr}")], "").await;
        assert_eq!(r.status, 403, "{method} {path}");
        assert!(
            r.body.contains("no admin_tokens are configured"),
            "{}",
            r.body
        );
    }
    // The probes are unaffected.
    assert_eq!(http(addr, "GET", "/healthz", &[], "").await.status, 200);
}

/// The console's sign-in takes the identities of the identities file too:
/// an admin's token opens a session in its name; another identity's token
/// is valid but lacks the admin scope (403), and nothing is opened.
async fn identities_with_the_admin_scope_sign_in(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identities.toml");
    std::fs::write(
        &path,
        "[[identity]]\nname = \"oncall\"\ntokens = [\"oncall-secret\"]\nadmin = true\n\n\
         [[identity]]\nname = \"checkout\"\ntokens = [\"checkout-secret\"]\ninitiator = true\n",
    )
    .unwrap();
    let coord = crate::harness::TestCoordinator::start_with(&db, move |c| {
        c.identities_file = Some(path);
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = coord.metrics_addr.unwrap();
    let admin = sign_in(addr, "oncall-secret").await;
    assert_eq!(admin.status, 200, "{}", admin.body);
    assert_eq!(admin.json()["actor"], "oncall");
    assert!(admin.header("set-cookie").is_some());
    let other = sign_in(addr, "checkout-secret").await;
    assert_eq!(other.status, 403, "{}", other.body);
    assert!(
        other.json()["error"].as_str().unwrap().contains("admin"),
        "{}",
        other.body
    );
    assert!(other.header("set-cookie").is_none());
}

on_both_stores!(
    without_a_session_nothing_is_shown_or_changed,
    without_admin_tokens_the_console_refuses_everything,
    identities_with_the_admin_scope_sign_in,
);
