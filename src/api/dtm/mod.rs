//! The DTM-compatible HTTP API, on a listener of its own (`dtm_listen`,
//! DTM's default port 36789): DTM's client SDKs point at
//! `http://<dtm_listen>/api/dtmsvr` and run **tcc**, **saga** and **msg**
//! transactions on Concord unchanged. Each request becomes an ordinary
//! engine call (begin, a URL branch, commit, rollback, a saga, a message),
//! so these transactions share the store, the fencing, recovery, retries,
//! needs_attention, the CLI, metrics and events with every other one; the
//! branches are URLs called by DTM's convention (`participant::http`).
//!
//! Replies follow DTM: `{"dtm_result":"SUCCESS"}` with 200; a refusal is
//! `{"dtm_result":"FAILURE","message":...}` with 409 (a state that forbids
//! the command, an unsupported type), 400 (a malformed request) or 404 (an
//! unknown gid); a `wait_result` that ran out is 425 with `ONGOING`; an
//! outage 503. The wire format is read in [`wire`].
//!
//! Authentication and authorization are the gRPC API's (`api::guard::admit`):
//! the same identities, scopes and per-identity limits; `prepare` and
//! `submit` need the initiator scope, and every request on an existing gid
//! is allowed to its initiator and to admins only.
//!
//! Like the gRPC API: one span with the gid and one log line per request,
//! a panic becomes 500 and the server lives on, the request size is
//! limited by `max_request_bytes`, and the request metrics count it
//! (method `dtm.<route>`).

pub mod wire;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::wire::{RegisterBody, TransBody, TransType};
use crate::auth::limits::Limiter;
use crate::auth::{Authenticator, Identity, Scope};
use crate::domain::Gid;
use crate::engine::Engine;
use crate::error::Error;
use crate::machine::Status;
use crate::machine::msg::Command;
use crate::store::health::DbHealth;

#[derive(Clone)]
struct Dtm {
    engine: Arc<Engine>,
    max_request_bytes: usize,
}

/// Who may call: the coordinator's identities and their limits.
#[derive(Clone)]
pub struct Guard {
    pub auth: Arc<Authenticator>,
    pub limits: Arc<Limiter>,
}

/// The routes DTM's client SDKs call for tcc, saga and msg, behind the
/// identity check.
pub fn router(
    engine: Arc<Engine>,
    max_request_bytes: usize,
    db_health: Arc<DbHealth>,
    guard: Guard,
) -> Router {
    Router::new()
        .route("/api/dtmsvr/newGid", get(new_gid))
        .route("/api/dtmsvr/prepare", post(prepare))
        .route("/api/dtmsvr/submit", post(submit))
        .route("/api/dtmsvr/abort", post(abort))
        .route("/api/dtmsvr/registerBranch", post(register_branch))
        // The name older SDKs use for the same call.
        .route("/api/dtmsvr/registerTccBranch", post(register_branch))
        .route("/api/dtmsvr/registerXaBranch", post(xa_branch))
        .route("/api/dtmsvr/query", get(query))
        .fallback(unsupported)
        // The one place where every DTM request passes before its handler.
        .layer(axum::middleware::from_fn_with_state(guard, authenticate))
        .layer(axum::middleware::from_fn_with_state(db_health, database_up))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(Dtm {
            engine,
            max_request_bytes,
        })
}

/// Authenticates the request and checks the scope its route needs (the
/// initiator's for `prepare` and `submit`, which may begin a transaction);
/// the identity goes to the handler, which checks the gid's initiator. The
/// identity's limits hold until the reply.
async fn authenticate(
    State(guard): State<Guard>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_string();
    let scope = match path.as_str() {
        "/api/dtmsvr/prepare" | "/api/dtmsvr/submit" => Some(Scope::Initiator),
        _ => None,
    };
    let method = format!("dtm.{}", path.rsplit('/').next().unwrap_or(""));
    match crate::api::guard::admit(
        &guard.auth,
        &guard.limits,
        &method,
        request.headers(),
        None,
        scope,
    ) {
        Ok((identity, admitted)) => {
            request.extensions_mut().insert(identity);
            let response = next.run(request).await;
            drop(admitted);
            response
        }
        Err(e) => {
            let (status, body) = error_reply(&e);
            (status, axum::Json(body)).into_response()
        }
    }
}

/// While the database is unreachable (`store::health`), a request is
/// refused at once with 503, as the gRPC API refuses with UNAVAILABLE,
/// and one already waiting is answered the same way.
async fn database_up(
    State(health): State<Arc<DbHealth>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_string();
    let refused = |health: &DbHealth| {
        let message = health.refusal();
        tracing::info!(%path, %message, "dtm request refused");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": message })),
        )
            .into_response()
    };
    if !health.is_up() {
        return refused(&health);
    }
    tokio::select! {
        reply = next.run(request) => reply,
        _ = health.went_down() => refused(&health),
    }
}

/// Serves `router` on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// What a handler answers: a JSON body with its status.
type Reply = Result<Value, Error>;

fn success() -> Value {
    json!({ "dtm_result": "SUCCESS" })
}

/// The one mapping of errors to DTM's replies.
fn error_reply(err: &Error) -> (StatusCode, Value) {
    if let Error::DeadlineExceeded(m) = err {
        return (
            StatusCode::TOO_EARLY,
            json!({ "dtm_result": "ONGOING", "message": m }),
        );
    }
    // The classes are the console's (`api::http_status`: a refusal 4xx,
    // 409 for a state that forbids it; an outage 5xx); only the body is
    // DTM's.
    let (status, message) = crate::api::http_status(err);
    if status.is_client_error() {
        (
            status,
            json!({ "dtm_result": "FAILURE", "message": message }),
        )
    } else {
        // Not a refusal: the SDK retries; no FAILURE in the body, which
        // SDKs would read as one.
        (status, json!({ "error": message }))
    }
}

/// Runs one handler as the gRPC API runs its own (`api::guarded`): in a
/// span with the route and gid, a panic answered 500, one log line and
/// the request metrics.
async fn handled(
    method: &'static str,
    gid: &str,
    handler: impl Future<Output = Reply>,
) -> Response {
    let started = std::time::Instant::now();
    let span = tracing::info_span!("dtm", method, gid);
    let (status, body, code) = match AssertUnwindSafe(handler)
        .catch_unwind()
        .instrument(span)
        .await
    {
        Ok(Ok(body)) => (StatusCode::OK, body, "OK"),
        Ok(Err(e)) => {
            let (status, body) = error_reply(&e);
            let code = match status.as_u16() {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                404 => "NOT_FOUND",
                409 => "FAILED_PRECONDITION",
                413 => "RESOURCE_EXHAUSTED",
                425 => "DEADLINE_EXCEEDED",
                503 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(method, gid, error = %e, "dtm request failed");
            } else {
                tracing::info!(method, gid, status = status.as_u16(), error = %e, "dtm request refused");
            }
            (status, body, code)
        }
        Err(panic) => {
            let what = super::panic_message(&*panic);
            tracing::error!(method, gid, panic = %what, "dtm handler panicked");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": format!("internal error in {method}") }),
                "INTERNAL",
            )
        }
    };
    crate::telemetry::metrics::grpc_request(method, code, started.elapsed());
    tracing::debug!(
        method,
        gid,
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "dtm request done"
    );
    (status, axum::Json(body)).into_response()
}

/// A body over `max_request_bytes`, refused with 413 before it is read
/// (so logged with the route, not a gid), as the gRPC API refuses one with
/// RESOURCE_EXHAUSTED.
fn oversize(
    method: &'static str,
    body: &Result<Bytes, BytesRejection>,
    max: usize,
) -> Option<Response> {
    let Err(e) = body else {
        return None;
    };
    if e.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return None;
    }
    let message = format!("request is over the limit of {max} bytes (max_request_bytes)");
    tracing::info!(method, %message, "dtm request refused");
    crate::telemetry::metrics::grpc_request(
        method,
        "RESOURCE_EXHAUSTED",
        std::time::Duration::ZERO,
    );
    Some(
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(json!({ "dtm_result": "FAILURE", "message": message })),
        )
            .into_response(),
    )
}

/// Reads a JSON body; a malformed one is refused precisely.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Error> {
    let bytes =
        body.map_err(|e| Error::InvalidArgument(format!("cannot read the request body: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidArgument(format!("the body is not the json expected: {e}")))
}

/// The gid of a body, for the span, read leniently (the handler checks it).
fn gid_of(body: &Result<Bytes, BytesRejection>) -> String {
    body.as_ref()
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .and_then(|v| v.get("gid").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

async fn new_gid() -> Response {
    handled("dtm.newGid", "", async {
        Ok(json!({ "gid": Gid::generate().as_str(), "dtm_result": "SUCCESS" }))
    })
    .await
}

/// `wait_result`: until when the submit may wait (the engine's `max_wait`).
fn wait(engine: &Engine, body: &TransBody) -> Option<tokio::time::Instant> {
    body.wait_result.then(|| engine.wait_until(None))
}

async fn prepare(
    State(dtm): State<Dtm>,
    Extension(caller): Extension<Arc<Identity>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(refused) = oversize("dtm.prepare", &body, dtm.max_request_bytes) {
        return refused;
    }
    let gid = gid_of(&body);
    handled("dtm.prepare", &gid, async move {
        let t: TransBody = parse(body)?;
        let branch_headers = t.headers(&headers)?;
        match t.trans_type()? {
            TransType::Tcc => {
                let metadata = t.tcc_metadata(&branch_headers)?;
                let timeout = t
                    .timeout_to_fail
                    .gt(&0)
                    .then(|| std::time::Duration::from_secs(t.timeout_to_fail as u64));
                dtm.engine
                    .begin(Some(t.gid()?), timeout, metadata, caller.recorded())
                    .await?;
            }
            TransType::Msg => {
                let mut msg = t.msg(branch_headers, false)?;
                msg.initiator = caller.recorded();
                dtm.engine.prepare_msg(msg).await?;
            }
            TransType::Saga => {
                return Err(Error::FailedPrecondition(
                    "a saga is not prepared: submit it whole".into(),
                ));
            }
        }
        Ok(success())
    })
    .await
}

async fn submit(
    State(dtm): State<Dtm>,
    Extension(caller): Extension<Arc<Identity>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(refused) = oversize("dtm.submit", &body, dtm.max_request_bytes) {
        return refused;
    }
    let gid = gid_of(&body);
    handled("dtm.submit", &gid, async move {
        let t: TransBody = parse(body)?;
        let branch_headers = t.headers(&headers)?;
        let engine = &dtm.engine;
        let status = match t.trans_type()? {
            TransType::Tcc => {
                let gid = t.gid()?;
                crate::api::guard::may_act_on(engine, &caller, &gid).await?;
                engine.commit(&gid, wait(engine, &t)).await?
            }
            TransType::Saga => {
                let mut saga = t.saga(branch_headers)?;
                saga.initiator = caller.recorded();
                let (_, status, reason) = engine.submit_saga(saga, wait(engine, &t)).await?;
                if status == Status::Compensated {
                    return Err(Error::Rejected(format!(
                        "saga compensated: {}",
                        reason.unwrap_or_default()
                    )));
                }
                status
            }
            TransType::Msg => {
                let gid = t.gid()?;
                // DTM lets a msg be submitted without a prepare: it is
                // prepared and submitted here at once.
                match engine.get(&gid, false).await {
                    Err(Error::NotFound(_)) => {
                        let mut msg = t.msg(branch_headers, true)?;
                        msg.initiator = caller.recorded();
                        engine.prepare_msg(msg).await?;
                    }
                    Err(e) => return Err(e),
                    Ok(_) => crate::api::guard::may_act_on(engine, &caller, &gid).await?,
                }
                engine
                    .command_msg(&gid, Command::Submit, wait(engine, &t))
                    .await?
            }
        };
        tracing::debug!(status = status.as_str(), "submitted");
        Ok(success())
    })
    .await
}

async fn abort(
    State(dtm): State<Dtm>,
    Extension(caller): Extension<Arc<Identity>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(refused) = oversize("dtm.abort", &body, dtm.max_request_bytes) {
        return refused;
    }
    let gid = gid_of(&body);
    handled("dtm.abort", &gid, async move {
        let t: TransBody = parse(body)?;
        let reason = if t.rollback_reason.is_empty() {
            "aborted by the initiator".to_string()
        } else {
            t.rollback_reason.clone()
        };
        let engine = &dtm.engine;
        let kind = t.trans_type()?;
        if kind != TransType::Saga {
            crate::api::guard::may_act_on(engine, &caller, &t.gid()?).await?;
        }
        match kind {
            TransType::Tcc => {
                engine.rollback(&t.gid()?, reason, wait(engine, &t)).await?;
            }
            TransType::Msg => {
                engine
                    .command_msg(&t.gid()?, Command::Abort { reason }, None)
                    .await?;
            }
            TransType::Saga => {
                return Err(Error::FailedPrecondition(
                    "a saga cannot be aborted; it compensates by itself when a step fails".into(),
                ));
            }
        }
        Ok(success())
    })
    .await
}

async fn register_branch(
    State(dtm): State<Dtm>,
    Extension(caller): Extension<Arc<Identity>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(refused) = oversize("dtm.registerBranch", &body, dtm.max_request_bytes) {
        return refused;
    }
    let gid = gid_of(&body);
    handled("dtm.registerBranch", &gid, async move {
        let r: RegisterBody = parse(body)?;
        if TransType::parse(&r.trans_type)? != TransType::Tcc {
            return Err(Error::FailedPrecondition(format!(
                "registerBranch is for tcc branches, not {}",
                r.trans_type
            )));
        }
        let gid = Gid::parse(r.gid.as_str())?;
        crate::api::guard::may_act_on(&dtm.engine, &caller, &gid).await?;
        // The options the transaction was prepared with apply to it.
        let (tx, _, _) = dtm.engine.get(&gid, false).await?;
        dtm.engine
            .register_url_branch(r.branch(&tx.metadata)?)
            .await?;
        Ok(success())
    })
    .await
}

async fn xa_branch() -> Response {
    handled("dtm.registerXaBranch", "", async {
        Err(Error::FailedPrecondition(
            "trans_type \"xa\" is not supported by concord's dtm api; supported: tcc, saga, msg"
                .into(),
        ))
    })
    .await
}

/// Any other route of DTM's API (`all`, `forceStop`, topics, ...).
async fn unsupported(uri: axum::http::Uri) -> Response {
    let path = uri.path().to_string();
    handled("dtm.unsupported", "", async move {
        Err(Error::NotFound(format!(
            "{path} is not served by concord's dtm api; served: newGid, prepare, submit, abort, registerBranch, query"
        )))
    })
    .await
}

#[derive(serde::Deserialize)]
struct GidQuery {
    #[serde(default)]
    gid: String,
}

async fn query(
    State(dtm): State<Dtm>,
    Extension(caller): Extension<Arc<Identity>>,
    Query(q): Query<GidQuery>,
) -> Response {
    handled("dtm.query", &q.gid.clone(), async move {
        if q.gid.is_empty() {
            return Err(Error::InvalidArgument("no gid specified".into()));
        }
        let gid = Gid::parse(q.gid.as_str())?;
        match dtm.engine.get(&gid, false).await {
            Ok((tx, branches, _)) => {
                caller.may_act_on(gid.as_str(), tx.initiator.as_deref())?;
                Ok(wire::query_reply(&tx, &branches))
            }
            // DTM answers an unknown gid with an empty transaction.
            Err(Error::NotFound(_)) => Ok(json!({ "transaction": null, "branches": [] })),
            Err(e) => Err(e),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_dtm_replies() {
        let (s, b) = error_reply(&Error::FailedPrecondition("x".into()));
        assert_eq!(
            (s, b["dtm_result"].as_str()),
            (StatusCode::CONFLICT, Some("FAILURE"))
        );
        let (s, b) = error_reply(&Error::InvalidArgument("x".into()));
        assert_eq!(
            (s, b["dtm_result"].as_str()),
            (StatusCode::BAD_REQUEST, Some("FAILURE"))
        );
        let (s, b) = error_reply(&Error::DeadlineExceeded("x".into()));
        assert_eq!(
            (s, b["dtm_result"].as_str()),
            (StatusCode::TOO_EARLY, Some("ONGOING"))
        );
        let (s, b) = error_reply(&Error::Unavailable("x".into()));
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!b.to_string().contains("FAILURE"));
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_500_and_a_json_reply() {
        let r = handled("dtm.test", "g", async { panic!("boom") }).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let ok = handled("dtm.test", "g", async { Ok(success()) }).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
