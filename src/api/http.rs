//! The operator HTTP listener, apart from gRPC so that a scraper or a load
//! balancer needs no gRPC client: `/metrics` (Prometheus text format),
//! `/healthz` (the process answers) and `/readyz` (the database answers,
//! every migration is applied, and the instance is not shutting down),
//! `/openapi/participant.yaml`, the contract of HTTP/JSON participants
//! (defined in `participant/http.rs`), for their authors and code
//! generators, and the operator console under `/ui/` when it is on
//! ([`crate::api::console`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::store::health::DbHealth;

/// Longest `/readyz` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Probe {
    handle: Option<PrometheusHandle>,
    store: Arc<dyn Store>,
    db_health: Arc<DbHealth>,
    /// Cancelled when shutdown begins: `/readyz` fails so that load
    /// balancers stop sending new work while in-flight work finishes.
    draining: CancellationToken,
}

/// Serves until `stop`; `console` is the console's router when it is on.
pub async fn serve(
    listener: TcpListener,
    handle: Option<PrometheusHandle>,
    store: Arc<dyn Store>,
    db_health: Arc<DbHealth>,
    console: Option<Router>,
    draining: CancellationToken,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let probes = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi/participant.yaml", get(participant_openapi))
        .with_state(Probe {
            handle,
            store,
            db_health,
            draining,
        });
    let app = match console {
        Some(console) => probes.merge(console),
        None => probes,
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn metrics(State(probe): State<Probe>) -> Response {
    match &probe.handle {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics go to another recorder\n",
        )
            .into_response(),
    }
}

/// The OpenAPI 3 description of what an HTTP/JSON participant serves.
pub const PARTICIPANT_OPENAPI: &str = include_str!("../../docs/openapi/participant.yaml");

async fn participant_openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        PARTICIPANT_OPENAPI,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(probe): State<Probe>) -> Response {
    if probe.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if !probe.db_health.is_up() {
        let why = probe.db_health.refusal();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response();
    }
    match tokio::time::timeout(READY_TIMEOUT, probe.store.ready()).await {
        Ok(Ok(())) => "ready\n".into_response(),
        Ok(Err(e)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the database did not answer in time\n",
        )
            .into_response(),
    }
}

/// Asks `/healthz` at `addr` over plain HTTP/1.1 (the `concord healthcheck`
/// subcommand of container images that have no curl).
pub async fn check(mut addr: std::net::SocketAddr, path: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A listener on 0.0.0.0 (as in the container image) is asked on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        let reply = String::from_utf8_lossy(&reply);
        let status_line = reply.lines().next().unwrap_or_default().to_string();
        if status_line.split(' ').nth(1) == Some("200") {
            Ok(())
        } else {
            Err(format!("{path} answered {status_line:?}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(3), work)
        .await
        .map_err(|_| format!("{path} did not answer within 3s"))?
}
