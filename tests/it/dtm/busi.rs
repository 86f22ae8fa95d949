//! A service written the way DTM's examples write one ("busi"): plain HTTP
//! handlers at URLs, called by DTM's convention (`gid`, `trans_type`,
//! `branch_id`, `op` as query parameters, the payload as the body). Each
//! URL answers from a script (then 200 `SUCCESS`), and every call is
//! recorded with when it started and ended, to check order, overlap and
//! what was sent.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One call as the service received it.
#[derive(Debug, Clone)]
pub struct Call {
    pub name: String,
    pub method: String,
    pub gid: String,
    pub trans_type: String,
    pub branch_id: String,
    pub op: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub started: Instant,
    pub ended: Instant,
}

/// What one call answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 `{"dtm_result":"SUCCESS"}`.
    Ok,
    /// This status and body.
    Status(u16, &'static str),
    /// Waits this long, then 200.
    Slow(Duration),
}

#[derive(Clone, Default)]
struct Shared {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Per URL name: answers to give first, in order.
    script: Arc<Mutex<HashMap<String, VecDeque<Answer>>>>,
    /// Per URL name: the answer once the script is used up.
    always: Arc<Mutex<HashMap<String, Answer>>>,
}

pub struct Busi {
    pub addr: std::net::SocketAddr,
    shared: Shared,
    stop: CancellationToken,
}

impl Drop for Busi {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn handle(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let answer = {
        let scripted = shared
            .script
            .lock()
            .unwrap()
            .get_mut(&name)
            .and_then(VecDeque::pop_front);
        scripted
            .or_else(|| shared.always.lock().unwrap().get(&name).cloned())
            .unwrap_or(Answer::Ok)
    };
    let reply = match answer {
        Answer::Ok => (StatusCode::OK, r#"{"dtm_result":"SUCCESS"}"#).into_response(),
        Answer::Status(s, b) => (StatusCode::from_u16(s).unwrap(), b).into_response(),
        Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, r#"{"dtm_result":"SUCCESS"}"#).into_response()
        }
    };
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    shared.calls.lock().unwrap().push(Call {
        name,
        method: method.to_string(),
        gid: get("gid"),
        trans_type: get("trans_type"),
        branch_id: get("branch_id"),
        op: get("op"),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: body.to_vec(),
        started,
        ended: Instant::now(),
    });
    reply
}

impl Busi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::default();
        let app = Router::new()
            .route("/api/busi/{name}", any(handle))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await
                .unwrap();
        });
        Self { addr, shared, stop }
    }

    /// The URL of the handler `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/api/busi/{name}", self.addr)
    }

    /// `name` answers `first` in order, then its usual answer.
    pub fn script(&self, name: &str, first: Vec<Answer>) {
        self.shared
            .script
            .lock()
            .unwrap()
            .insert(name.into(), first.into());
    }

    /// `name` answers `a` from now on (after any script).
    pub fn always(&self, name: &str, a: Answer) {
        self.shared.always.lock().unwrap().insert(name.into(), a);
    }

    /// The calls of `name` for `gid`, oldest first.
    pub fn calls(&self, gid: &str, name: &str) -> Vec<Call> {
        self.shared
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.gid == gid && c.name == name)
            .cloned()
            .collect()
    }

    /// The names called for `gid`, in the order the calls ended.
    pub fn order(&self, gid: &str) -> Vec<String> {
        let mut calls: Vec<Call> = self
            .shared
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.gid == gid)
            .cloned()
            .collect();
        calls.sort_by_key(|c| c.ended);
        calls.into_iter().map(|c| c.name).collect()
    }

    /// Waits until `name` was called `n` times for `gid`.
    pub async fn wait_calls(&self, gid: &str, name: &str, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.calls(gid, name).len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.calls(gid, name).len() >= n
    }
}
