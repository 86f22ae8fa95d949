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
/// a coordinator that is still starting would, then `refuse` if set, else
/// records the request.
struct FakeRegistry {
    fail_first: u32,
    refuse: Option<Code>,
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
        if let Some(code) = self.refuse {
            return Err(Status::new(code, "endpoint is not valid"));
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

struct RegistryHarness {
    registry: Arc<FakeRegistry>,
    url: String,
    registered: mpsc::UnboundedReceiver<RegisterParticipantRequest>,
    stop: CancellationToken,
}

impl RegistryHarness {
    async fn start(fail_first: u32, refuse: Option<Code>) -> Self {
        let (tx, registered) = mpsc::unbounded_channel();
        let registry = Arc::new(FakeRegistry {
            fail_first,
            refuse,
            calls: AtomicU32::new(0),
            registered: tx,
        });
        let (listener, addr) = bind().await;
        let stop = CancellationToken::new();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RegistryServer::from_arc(registry.clone()))
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    stop.clone().cancelled_owned(),
                ),
        );
        Self {
            registry,
            url: format!("http://{addr}"),
            registered,
            stop,
        }
    }

    fn server(&self) -> ParticipantServer {
        ParticipantServer::new(bank())
            .register_with(self.url.clone())
            .registration_backoff(Duration::from_millis(1), Duration::from_millis(5))
    }
}

impl Drop for RegistryHarness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn start_returns_once_registered_with_the_listener_address() {
    let mut h = RegistryHarness::start(2, None).await;
    let (listener, addr) = bind().await;
    let stop = CancellationToken::new();
    let running = h
        .server()
        .start(listener, stop.clone().cancelled_owned())
        .await
        .unwrap();

    // Already there: no waiting on the channel.
    let request = h
        .registered
        .try_recv()
        .expect("registered before start returned");
    assert_eq!(request.name, "bank");
    assert_eq!(request.endpoint, format!("http://{addr}"));
    assert_eq!(running.endpoint(), Some(request.endpoint.as_str()));
    assert_eq!(running.local_addr(), addr);
    assert_eq!(
        request.actions,
        [Action {
            name: "transfer_out".into(),
            ..Default::default()
        }]
    );
    assert_eq!(h.registry.calls.load(Ordering::SeqCst), 3);

    stop.cancel();
    running.wait().await.unwrap();
}

#[tokio::test]
async fn an_explicit_endpoint_is_advertised() {
    let mut h = RegistryHarness::start(0, None).await;
    let (listener, _) = bind().await;
    let stop = CancellationToken::new();
    let running = h
        .server()
        .advertise("https://bank-1.internal:7443")
        .start(listener, stop.clone().cancelled_owned())
        .await
        .unwrap();
    let request = h.registered.try_recv().unwrap();
    assert_eq!(request.endpoint, "https://bank-1.internal:7443");
    stop.cancel();
    running.wait().await.unwrap();
}

#[tokio::test]
async fn a_refused_registration_is_an_error_and_stops_serving() {
    let h = RegistryHarness::start(1, Some(Code::InvalidArgument)).await;
    let (listener, addr) = bind().await;
    let err = h
        .server()
        .serve(listener, std::future::pending())
        .await
        .unwrap_err();
    match err {
        ServeError::RegistrationRefused { code, message } => {
            assert_eq!(code, Code::InvalidArgument);
            assert_eq!(message, "endpoint is not valid");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Not retried, and nobody listens any more.
    assert_eq!(h.registry.calls.load(Ordering::SeqCst), 2);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_while_the_coordinator_is_unreachable_ends_serve_cleanly() {
    let h = RegistryHarness::start(u32::MAX, None).await;
    let (listener, _) = bind().await;
    let stop = CancellationToken::new();
    let serving = tokio::spawn(h.server().serve(listener, stop.clone().cancelled_owned()));
    let retrying = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.registry.calls.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < retrying,
            "registration not retried"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    serving.await.unwrap().unwrap();

    let (listener, _) = bind().await;
    let err = h
        .server()
        .start(listener, std::future::ready(()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServeError::ShutdownBeforeRegistration),
        "{err:?}"
    );
}

#[tokio::test]
async fn bad_urls_and_addresses_fail_at_startup_without_a_call() {
    let h = RegistryHarness::start(0, None).await;
    for (endpoint, reason) in [
        ("127.0.0.1:50061", "scheme"),
        ("grpc://bank:50061", "scheme"),
        ("http://bank:50061/v1", "path"),
        ("http://me:secret@bank:50061", "credentials"),
    ] {
        let (listener, _) = bind().await;
        let err = h
            .server()
            .advertise(endpoint)
            .serve(listener, std::future::pending())
            .await
            .unwrap_err();
        match err {
            ServeError::InvalidEndpoint {
                endpoint: e,
                reason: r,
            } => {
                assert_eq!(e, endpoint);
                assert!(r.contains(reason), "{endpoint}: {r}");
            }
            other => panic!("{endpoint}: {other:?}"),
        }
    }

    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = h
        .server()
        .serve(listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServeError::AdvertiseRequired { .. }),
        "{err:?}"
    );

    let (listener, _) = bind().await;
    let err = ParticipantServer::new(bank())
        .register_with("not a url")
        .serve(listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::InvalidCoordinatorUrl { .. }));
    assert_eq!(h.registry.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn only_transient_codes_are_retried() {
    assert!(is_transient(Code::Unavailable));
    assert!(is_transient(Code::DeadlineExceeded));
    assert!(!is_transient(Code::InvalidArgument));
}
