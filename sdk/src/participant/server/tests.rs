//! Loopback tests: a real server on 127.0.0.1:0 called by the generated
//! client, and registration against a fake registry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use concord_proto::participant::v1::BranchRequest;
use concord_proto::participant::v1::participant_client::ParticipantClient;
use concord_proto::v1::registry_server::{Registry, RegistryServer};
use concord_proto::v1::{
    ListParticipantsRequest, ListParticipantsResponse, RegisterParticipantResponse,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response};

use super::*;
use crate::ActionError;

fn bank() -> ParticipantService {
    ParticipantService::builder("bank")
        .tcc_fn(
            "transfer_out",
            |ctx| async move {
                match ctx.payload.as_slice() {
                    b"poor" => Err(ActionError::rejected("insufficient funds")),
                    _ => Ok(format!("frozen {}", ctx.branch_id).into_bytes()),
                }
            },
            |_| async { Ok(Vec::new()) },
            |_| async { Ok(Vec::new()) },
        )
        .build()
        .unwrap()
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[tokio::test]
async fn serves_the_generated_client_and_stops_on_shutdown() {
    let (listener, addr) = bind().await;
    let stop = CancellationToken::new();
    let server = tokio::spawn(
        ParticipantServer::new(bank()).serve(listener, stop.clone().cancelled_owned()),
    );

    let mut client = ParticipantClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let request = |payload: &[u8]| BranchRequest {
        gid: "g1".into(),
        branch_id: "1".into(),
        action: "transfer_out".into(),
        payload: payload.to_vec(),
        attempt: 1,
        metadata: Default::default(),
    };
    let reply = client.r#try(request(b"rich")).await.unwrap();
    assert_eq!(reply.into_inner().payload, b"frozen 1");
    let err = client.r#try(request(b"poor")).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(err.message(), "insufficient funds");
    let err = client.execute(request(b"")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    drop(client);
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// A registry that answers UNAVAILABLE to the first `fail_first` calls, as
/// a coordinator that is still starting would, then records the request.
struct FakeRegistry {
    fail_first: u32,
    calls: AtomicU32,
    registered: mpsc::UnboundedSender<RegisterParticipantRequest>,
}

#[tonic::async_trait]
impl Registry for FakeRegistry {
    async fn register_participant(
        &self,
        request: Request<RegisterParticipantRequest>,
    ) -> Result<Response<RegisterParticipantResponse>, Status> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(Status::unavailable("starting"));
        }
        self.registered.send(request.into_inner()).unwrap();
        Ok(Response::new(RegisterParticipantResponse {}))
    }

    async fn list_participants(
        &self,
        _: Request<ListParticipantsRequest>,
    ) -> Result<Response<ListParticipantsResponse>, Status> {
        Err(Status::unimplemented("not needed"))
    }
}

#[tokio::test]
async fn registers_in_the_background_retrying_until_the_registry_answers() {
    let (tx, mut registered) = mpsc::unbounded_channel();
    let registry = Arc::new(FakeRegistry {
        fail_first: 2,
        calls: AtomicU32::new(0),
        registered: tx,
    });
    let (registry_listener, registry_addr) = bind().await;
    let stop = CancellationToken::new();
    let registry_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistryServer::from_arc(registry.clone()))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(registry_listener).with_nodelay(Some(true)),
                stop.clone().cancelled_owned(),
            ),
    );

    let (listener, addr) = bind().await;
    let participant = tokio::spawn(
        ParticipantServer::new(bank())
            .register_with(format!("http://{registry_addr}"), format!("http://{addr}"))
            .registration_backoff(Duration::from_millis(1), Duration::from_millis(5))
            .serve(listener, stop.clone().cancelled_owned()),
    );

    let request = tokio::time::timeout(Duration::from_secs(10), registered.recv())
        .await
        .expect("registration within 10 s")
        .unwrap();
    assert_eq!(request.name, "bank");
    assert_eq!(request.endpoint, format!("http://{addr}"));
    assert_eq!(
        request.actions,
        [Action {
            name: "transfer_out".into()
        }]
    );
    assert_eq!(registry.calls.load(Ordering::SeqCst), 3);

    stop.cancel();
    participant.await.unwrap().unwrap();
    registry_server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_malformed_coordinator_url_fails_at_startup() {
    let (listener, _) = bind().await;
    let err = ParticipantServer::new(bank())
        .register_with("not a url", "http://127.0.0.1:1")
        .serve(listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::InvalidCoordinatorUrl { .. }));
}

#[test]
fn only_transient_codes_are_retried() {
    assert!(is_transient(Code::Unavailable));
    assert!(is_transient(Code::DeadlineExceeded));
    assert!(!is_transient(Code::InvalidArgument));
}
