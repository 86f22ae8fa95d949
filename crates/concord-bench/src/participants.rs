//! Two zero-work participants (`bench-a` with `debit`, `bench-b` with
//! `credit`, each with an `-undo`), each on its own loopback port, over
//! gRPC or HTTP/JSON, so that what is measured is the coordinator and its
//! database.

use concord_proto::participant::v1::participant_server::{Participant, ParticipantServer};
use concord_proto::participant::v1::{BranchRequest, BranchResponse};
use concord_proto::v1 as pb;
use concord_proto::v1::registry_client::RegistryClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::ParticipantProtocol;

/// The participants and the action each offers.
pub const PARTICIPANTS: [(&str, &str); 2] = [("bench-a", "debit"), ("bench-b", "credit")];

/// Answers every call at once with success.
struct ZeroWork;

#[tonic::async_trait]
impl Participant for ZeroWork {
    async fn r#try(&self, _r: Request<BranchRequest>) -> Result<Response<BranchResponse>, Status> {
        Ok(Response::new(BranchResponse::default()))
    }
    async fn confirm(
        &self,
        _r: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        Ok(Response::new(BranchResponse::default()))
    }
    async fn cancel(&self, _r: Request<BranchRequest>) -> Result<Response<BranchResponse>, Status> {
        Ok(Response::new(BranchResponse::default()))
    }
    async fn execute(
        &self,
        _r: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        Ok(Response::new(BranchResponse::default()))
    }
    async fn compensate(
        &self,
        _r: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        Ok(Response::new(BranchResponse::default()))
    }
}

/// Serves one participant until `stop`; returns its URL.
async fn serve(stop: CancellationToken) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ParticipantServer::new(ZeroWork))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.cancelled_owned(),
            ),
    );
    Ok(format!("http://{addr}"))
}

/// Serves one HTTP/JSON participant that answers every call with 200;
/// returns its URL.
async fn serve_http(stop: CancellationToken) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/{action}/{phase}", axum::routing::post(|| async {}));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    Ok(format!("http://{addr}"))
}

/// Starts every participant and registers it with the coordinator.
pub async fn start_and_register(
    registry: &mut RegistryClient<Channel>,
    protocol: ParticipantProtocol,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    for (name, action) in PARTICIPANTS {
        let (url, protocol) = match protocol {
            ParticipantProtocol::Grpc => (serve(stop.clone()).await?, pb::Protocol::Grpc),
            ParticipantProtocol::Http => (serve_http(stop.clone()).await?, pb::Protocol::Http),
        };
        registry
            .register_participant(pb::RegisterParticipantRequest {
                protocol: protocol as i32,
                name: name.into(),
                endpoint: url,
                actions: vec![
                    pb::Action {
                        name: action.into(),
                        ..Default::default()
                    },
                    pb::Action {
                        name: format!("{action}-undo"),
                        ..Default::default()
                    },
                ],
            })
            .await?;
    }
    Ok(())
}
