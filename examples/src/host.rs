//! Runs a participant service on a TCP port, announced to the coordinator,
//! optionally behind the [fault injector](crate::faults). When
//! `CONCORD_TOKEN` is set (a coordinator with identities), every call to the
//! coordinator presents it ([`token`], [`coordinator`]).

use std::net::SocketAddr;
use std::time::Duration;

use concord_sdk::proto::participant::v1::participant_server::ParticipantServer as GrpcParticipant;
use concord_sdk::proto::v1::registry_client::RegistryClient;
use concord_sdk::proto::v1::{Action, ListParticipantsRequest, RegisterParticipantRequest};
use concord_sdk::{Coordinator, Credential, ParticipantServer, ParticipantService, ServeError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

use crate::faults::{Faults, FaultyParticipant};

/// Why a participant could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The coordinator URL does not parse.
    #[error("invalid coordinator url {0:?}")]
    CoordinatorUrl(String),
    /// The coordinator did not list the participant in time.
    #[error("participant {0} not registered with the coordinator after 30s")]
    NotRegistered(String),
    /// The SDK's server refused to start or the coordinator refused the
    /// registration.
    #[error("participant server failed to start")]
    Serve(#[from] ServeError),
}

/// The token to present to the coordinator: `CONCORD_TOKEN`, if set.
pub fn token() -> Option<String> {
    std::env::var("CONCORD_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

/// Connects an initiator to `url`, presenting [`token`] if there is one.
pub async fn coordinator(url: &str) -> Result<Coordinator, concord_sdk::initiator::Error> {
    let coordinator = Coordinator::connect(url.to_owned()).await?;
    match token() {
        Some(t) => coordinator.with_token(&t),
        None => Ok(coordinator),
    }
}

/// How long [`host`] waits for the coordinator to take the registration.
const REGISTRATION_WAIT: Duration = Duration::from_secs(30);

/// A participant being served; stops when [`stop`](Self::stop)ped or
/// dropped.
#[derive(Debug)]
pub struct Hosted {
    /// The participant name.
    pub name: String,
    /// The URL the coordinator calls.
    pub endpoint: String,
    /// The fault injector, if any (for its counters).
    pub faults: Option<FaultyParticipant<ParticipantService>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Hosted {
    /// Stops accepting calls and waits for in-flight ones (and for delayed
    /// deliveries of the fault injector) to finish.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(f) = &self.faults {
            f.drain().await;
        }
    }
}

impl Drop for Hosted {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves `service` on `listen` (port 0 for any), advertised to the
/// coordinator at `coordinator_url` as `http://<bound address>`, and
/// returns once the coordinator has the registration (at most 30 s). With `faults`, calls go through a
/// [`FaultyParticipant`].
pub async fn host(
    service: ParticipantService,
    listen: SocketAddr,
    coordinator_url: &str,
    faults: Option<Faults>,
) -> Result<Hosted, HostError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| HostError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| HostError::Bind {
        addr: listen,
        source,
    })?;
    let endpoint = format!("http://{addr}");
    let name = service.name().to_owned();
    let actions: Vec<String> = service.actions().into_iter().map(String::from).collect();
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    let Some(faults) = faults else {
        // The plain path is what a real participant does: the SDK's server
        // advertises the listener's address and returns once registered.
        let mut server = ParticipantServer::new(service);
        if let Some(t) = token() {
            server = server.token(&t);
        }
        let start = server
            .register_with(coordinator_url)
            .registration_backoff(Duration::from_millis(50), Duration::from_secs(1))
            .start(listener, shutdown);
        let running = tokio::time::timeout(REGISTRATION_WAIT, start)
            .await
            .map_err(|_| HostError::NotRegistered(name.clone()))??;
        let task = tokio::spawn(async move {
            if let Err(e) = running.wait().await {
                tracing::error!(error = %e, "participant server failed");
            }
        });
        tracing::info!(participant = %name, %endpoint, "participant ready");
        return Ok(Hosted {
            name,
            endpoint,
            faults: None,
            stop,
            task: Some(task),
        });
    };
    // The SDK server serves only a `ParticipantService`, so the wrapped one
    // is served by tonic directly and registered by hand.
    let faulty = FaultyParticipant::new(service, faults);
    let grpc = GrpcParticipant::new(faulty.clone());
    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(grpc)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "participant server failed");
        }
    });
    register(coordinator_url, &name, &endpoint, &actions).await?;
    wait_registered(coordinator_url, &name, &endpoint).await?;
    tracing::info!(participant = %name, %endpoint, "participant ready");
    Ok(Hosted {
        name,
        endpoint,
        faults: Some(faulty),
        stop,
        task: Some(task),
    })
}

type Registry = RegistryClient<InterceptedService<tonic::transport::Channel, Credential>>;

fn registry(coordinator_url: &str) -> Result<Registry, HostError> {
    let channel = tonic::transport::Endpoint::from_shared(coordinator_url.to_owned())
        .map_err(|_| HostError::CoordinatorUrl(coordinator_url.to_owned()))?
        .connect_lazy();
    let credential = token()
        .and_then(|t| Credential::bearer(&t))
        .unwrap_or_default();
    Ok(RegistryClient::with_interceptor(channel, credential))
}

async fn register(
    coordinator_url: &str,
    name: &str,
    endpoint: &str,
    actions: &[String],
) -> Result<(), HostError> {
    let mut client = registry(coordinator_url)?;
    let request = RegisterParticipantRequest {
        protocol: Default::default(),
        name: name.to_owned(),
        endpoint: endpoint.to_owned(),
        actions: actions
            .iter()
            .map(|a| Action {
                name: a.clone(),
                ..Default::default()
            })
            .collect(),
    };
    for _ in 0..300 {
        match client.register_participant(request.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => tracing::debug!(error = %e, "registration failed, retrying"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(HostError::NotRegistered(name.to_owned()))
}

/// Polls the registry until `endpoint` is listed under `name`.
async fn wait_registered(
    coordinator_url: &str,
    name: &str,
    endpoint: &str,
) -> Result<(), HostError> {
    let mut client = registry(coordinator_url)?;
    for _ in 0..300 {
        if let Ok(reply) = client.list_participants(ListParticipantsRequest {}).await {
            let listed = reply
                .into_inner()
                .participants
                .iter()
                .any(|p| p.name == name && p.endpoints.iter().any(|e| e.url == endpoint));
            if listed {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(HostError::NotRegistered(name.to_owned()))
}
