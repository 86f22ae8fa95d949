//! The HTTP/JSON face of the test participant: the same scripted
//! [`Service`] (call accounting, durability checks, behaviours) behind an
//! axum server that speaks the contract of `docs/openapi/participant.yaml`,
//! so every HTTP test reads like its gRPC twin. It also records the headers
//! of every call, to check what the coordinator sends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use concord_proto::participant::v1::BranchRequest;
use concord_proto::v1 as pb;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::harness::{Ph, Service, TestDb, TestParticipant};

/// The headers and body of one HTTP call, as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub action: String,
    pub phase: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

#[derive(Clone)]
struct Front {
    service: Arc<Service>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl TestParticipant {
    /// Serves the HTTP/JSON contract on a loopback port (under the base
    /// path `/concord`) and registers as `PROTOCOL_HTTP`.
    pub async fn start_http(name: &str, db: Option<PgPool>) -> (Self, HttpLog) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_http_on(name, listener, db.map(TestDb::Postgres)).await
    }

    /// The same, checking durability in either store.
    pub async fn start_http_on(name: &str, db: &TestDb) -> (Self, HttpLog) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_http_on(name, listener, Some(db.clone())).await
    }

    /// The same on a given listener (to come back on the port of a stopped
    /// one).
    pub async fn serve_http_on(
        name: &str,
        listener: TcpListener,
        db: Option<TestDb>,
    ) -> (Self, HttpLog) {
        let addr = listener.local_addr().unwrap();
        let service = Arc::new(Service {
            state: Default::default(),
            arrived: Arc::new(Notify::new()),
            db,
        });
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/concord/{action}/{phase}", post(call))
            .with_state(Front {
                service: service.clone(),
                received: received.clone(),
            });
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await
                .unwrap();
        });
        let participant = Self {
            name: name.to_string(),
            addr,
            protocol: pb::Protocol::Http,
            state: service.state.clone(),
            arrived: service.arrived.clone(),
            stop,
        };
        (participant, HttpLog(received))
    }
}

/// Every HTTP call the participant received, in arrival order.
#[derive(Clone)]
pub struct HttpLog(Arc<Mutex<Vec<Received>>>);

impl HttpLog {
    pub fn all(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }
}

async fn call(
    AxumState(front): AxumState<Front>,
    Path((action, phase)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    front.received.lock().unwrap().push(Received {
        action: action.clone(),
        phase: phase.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: body.to_vec(),
    });
    let ph = match phase.as_str() {
        "try" => Ph::Try,
        "confirm" => Ph::Confirm,
        "cancel" => Ph::Cancel,
        "execute" => Ph::Execute,
        "compensate" => Ph::Compensate,
        other => return (StatusCode::NOT_FOUND, format!("no phase {other}")).into_response(),
    };
    let metadata = match header("concord-metadata").as_str() {
        "" => HashMap::new(),
        json => serde_json::from_str(json).unwrap(),
    };
    let request = BranchRequest {
        gid: header("concord-gid"),
        branch_id: header("concord-branch-id"),
        action,
        payload: body.to_vec(),
        attempt: header("concord-attempt").parse().unwrap_or(0),
        metadata,
    };
    // The call's deadline, as the coordinator sends it.
    let deadline = header("concord-deadline-ms")
        .parse()
        .ok()
        .map(std::time::Duration::from_millis);
    match front.service.handle(request, ph, deadline).await {
        Ok(reply) => (StatusCode::OK, reply.into_inner().payload).into_response(),
        Err(status) if status.code() == tonic::Code::Aborted => {
            (StatusCode::CONFLICT, status.message().to_string()).into_response()
        }
        Err(status) if status.code() == tonic::Code::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            status.message().to_string(),
        )
            .into_response(),
        Err(status) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            status.message().to_string(),
        )
            .into_response(),
    }
}
