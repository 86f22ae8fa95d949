//! The SDK's side of authentication, against real gRPC servers on loopback
//! ports: a participant server that requires the coordinator's token
//! refuses every call without it (before any action runs) and accepts the
//! old and the new token during a rotation; a participant's registration
//! presents its own token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use concord_sdk::proto::participant::v1::BranchRequest;
use concord_sdk::proto::participant::v1::participant_client::ParticipantClient;
use concord_sdk::proto::v1::registry_server::{Registry, RegistryServer};
use concord_sdk::proto::v1::{
    ListParticipantsRequest, ListParticipantsResponse, RegisterParticipantRequest,
    RegisterParticipantResponse,
};
use concord_sdk::{ParticipantServer, ParticipantService, ServeError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

fn counting_service(calls: &Arc<AtomicUsize>) -> ParticipantService {
    let calls = Arc::clone(calls);
    ParticipantService::builder("stock")
        .saga_fn(
            "reserve",
            move |_ctx| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(Vec::new()) }
            },
            |_ctx| async { Ok(Vec::new()) },
        )
        .build()
        .unwrap()
}

async fn call(url: &str, token: Option<&str>) -> Result<(), Code> {
    let mut client = ParticipantClient::connect(url.to_string()).await.unwrap();
    let mut request = Request::new(BranchRequest {
        gid: "g1".into(),
        branch_id: "1".into(),
        action: "reserve".into(),
        ..Default::default()
    });
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    client
        .execute(request)
        .await
        .map(drop)
        .map_err(|s| s.code())
}

#[tokio::test]
async fn a_participant_serves_only_the_coordinators_token() {
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let running = ParticipantServer::new(counting_service(&calls))
        .require_coordinator_token(["old-coordinator-token", "new-coordinator-token"])
        .start(listener, stop.clone().cancelled_owned())
        .await
        .unwrap();
    for refused in [None, Some("guessed"), Some("old-coordinator-toke")] {
        assert_eq!(
            call(&url, refused).await,
            Err(Code::Unauthenticated),
            "{refused:?}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no action ran");
    assert_eq!(call(&url, Some("old-coordinator-token")).await, Ok(()));
    assert_eq!(call(&url, Some("new-coordinator-token")).await, Ok(()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    stop.cancel();
    running.wait().await.unwrap();
}

#[tokio::test]
async fn without_the_option_anyone_may_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let running = ParticipantServer::new(counting_service(&calls))
        .start(listener, stop.clone().cancelled_owned())
        .await
        .unwrap();
    assert_eq!(call(&url, None).await, Ok(()));
    stop.cancel();
    running.wait().await.unwrap();
}

/// A registry that refuses registrations without `expected` and records
/// what it was sent.
struct FakeRegistry {
    expected: &'static str,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

#[tonic::async_trait]
impl Registry for FakeRegistry {
    async fn register_participant(
        &self,
        request: Request<RegisterParticipantRequest>,
    ) -> Result<Response<RegisterParticipantResponse>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        self.seen.lock().unwrap().push(auth.clone());
        if auth.as_deref() == Some(self.expected) {
            Ok(Response::new(RegisterParticipantResponse {}))
        } else {
            Err(Status::unauthenticated("invalid token"))
        }
    }

    async fn list_participants(
        &self,
        _request: Request<ListParticipantsRequest>,
    ) -> Result<Response<ListParticipantsResponse>, Status> {
        Ok(Response::new(ListParticipantsResponse::default()))
    }
}

#[tokio::test]
async fn the_registration_presents_the_participants_token() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let registry = FakeRegistry {
        expected: "Bearer stock-secret",
        seen: Arc::clone(&seen),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator = format!("http://{}", listener.local_addr().unwrap());
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistryServer::new(registry))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let calls = Arc::new(AtomicUsize::new(0));

    // Without its token the registration is refused at once (not retried).
    let stop = CancellationToken::new();
    let refused = ParticipantServer::new(counting_service(&calls))
        .register_with(coordinator.clone())
        .start(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            stop.clone().cancelled_owned(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ServeError::RegistrationRefused {
                code: Code::Unauthenticated,
                ..
            }
        ),
        "{refused:?}"
    );
    let running = ParticipantServer::new(counting_service(&calls))
        .register_with(coordinator.clone())
        .token("stock-secret")
        .start(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            stop.clone().cancelled_owned(),
        )
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [None, Some("Bearer stock-secret".to_string())]
    );
    let bad = ParticipantServer::new(counting_service(&calls))
        .register_with(coordinator)
        .token("no\nnewline")
        .start(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            stop.clone().cancelled_owned(),
        )
        .await
        .unwrap_err();
    assert!(matches!(bad, ServeError::InvalidToken), "{bad:?}");
    stop.cancel();
    running.wait().await.unwrap();
    serving.abort();
}
