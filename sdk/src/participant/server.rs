//! [`ParticipantServer`]: serves a [`ParticipantService`] over gRPC and,
//! optionally, announces it to the coordinator's registry.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use concord_proto::participant::v1::participant_server::ParticipantServer as GrpcParticipantServer;
use concord_proto::v1::registry_client::RegistryClient;
use concord_proto::v1::{Action, RegisterParticipantRequest};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::ParticipantService;

/// Why [`ParticipantServer::serve`] stopped with an error.
///
/// ```no_run
/// use concord_sdk::{ParticipantServer, ParticipantService, ServeError};
///
/// # async fn run(service: ParticipantService, listener: tokio::net::TcpListener) {
/// let served = ParticipantServer::new(service)
///     .register_with("not a url", "http://127.0.0.1:50061")
///     .serve(listener, std::future::pending())
///     .await;
/// assert!(matches!(served, Err(ServeError::InvalidCoordinatorUrl { .. })));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The coordinator URL given to
    /// [`register_with`](ParticipantServer::register_with) does not parse.
    #[error("invalid coordinator url {url:?}")]
    InvalidCoordinatorUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: tonic::transport::Error,
    },
    /// The gRPC server failed.
    #[error("participant server failed")]
    Transport(#[from] tonic::transport::Error),
}

#[derive(Clone, Debug)]
struct Registration {
    coordinator_url: String,
    advertised_endpoint: String,
    min_delay: Duration,
    max_delay: Duration,
}

/// Serves a [`ParticipantService`] on a listener the caller owns, until a
/// shutdown future the caller owns completes.
///
/// Taking the listener (rather than an address) lets tests bind port 0 and
/// read the port before serving; taking the shutdown future lets the
/// application decide what stops it (a signal, a cancellation token...).
///
/// ```no_run
/// use concord_sdk::{ParticipantServer, ParticipantService};
///
/// # async fn run(service: ParticipantService) -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:50061").await?;
/// ParticipantServer::new(service)
///     .register_with("http://concord:50051", "http://bank-1:50061")
///     .serve(listener, async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use]
pub struct ParticipantServer {
    service: ParticipantService,
    registration: Option<Registration>,
}

impl ParticipantServer {
    /// A server for `service`, with no registration.
    ///
    /// ```no_run
    /// use concord_sdk::{ParticipantServer, ParticipantService};
    ///
    /// # async fn run(service: ParticipantService) -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let stop = tokio_util::sync::CancellationToken::new();
    /// let serving = tokio::spawn(ParticipantServer::new(service).serve(listener, stop.clone().cancelled_owned()));
    /// stop.cancel();
    /// serving.await??;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(service: ParticipantService) -> Self {
        Self {
            service,
            registration: None,
        }
    }

    /// On start, registers the participant's name, `advertised_endpoint` (the
    /// `http(s)://` URL the coordinator should call) and actions with the
    /// coordinator at `coordinator_url`.
    ///
    /// Registration runs in the background and retries with jittered
    /// exponential backoff until the coordinator answers, so a participant
    /// may start before its coordinator; serving never waits for it.
    ///
    /// ```
    /// # fn run(service: concord_sdk::ParticipantService) {
    /// let server = concord_sdk::ParticipantServer::new(service)
    ///     .register_with("http://concord:50051", "http://bank-1.internal:50061");
    /// # let _ = server;
    /// # }
    /// ```
    pub fn register_with(
        mut self,
        coordinator_url: impl Into<String>,
        advertised_endpoint: impl Into<String>,
    ) -> Self {
        self.registration = Some(Registration {
            coordinator_url: coordinator_url.into(),
            advertised_endpoint: advertised_endpoint.into(),
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        });
        self
    }

    /// Bounds of the registration backoff (defaults: 200 ms to 10 s). Has no
    /// effect without [`register_with`](Self::register_with).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # fn run(service: concord_sdk::ParticipantService) {
    /// let server = concord_sdk::ParticipantServer::new(service)
    ///     .register_with("http://concord:50051", "http://bank-1.internal:50061")
    ///     .registration_backoff(Duration::from_millis(50), Duration::from_secs(2));
    /// # let _ = server;
    /// # }
    /// ```
    pub fn registration_backoff(mut self, min_delay: Duration, max_delay: Duration) -> Self {
        if let Some(r) = &mut self.registration {
            r.min_delay = min_delay;
            r.max_delay = max_delay.max(min_delay);
        }
        self
    }

    /// Serves until `shutdown` completes, then stops accepting connections
    /// and waits for in-flight calls to finish.
    ///
    /// ```no_run
    /// # async fn run(service: concord_sdk::ParticipantService) -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:50061").await?;
    /// concord_sdk::ParticipantServer::new(service)
    ///     .serve(listener, async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        // Parse the URL before serving so a typo fails loudly at startup
        // instead of being retried forever in the background.
        let _registration = match &self.registration {
            Some(r) => {
                let channel = Endpoint::from_shared(r.coordinator_url.clone())
                    .map_err(|source| ServeError::InvalidCoordinatorUrl {
                        url: r.coordinator_url.clone(),
                        source,
                    })?
                    .connect_lazy();
                let task = tokio::spawn(register(channel, self.service.clone(), r.clone()));
                Some(AbortOnDrop(task))
            }
            None => None,
        };

        tracing::info!(
            participant = self.service.name(),
            addr = ?listener.local_addr().ok(),
            "participant server listening"
        );
        let name = self.service.name().to_owned();
        tonic::transport::Server::builder()
            .add_service(GrpcParticipantServer::new(self.service))
            // Set by hand: tonic applies its `tcp_nodelay` only to listeners it
            // binds itself. Without it, Nagle's algorithm held a reply's last frame
            // back until the peer's delayed ACK (40 ms), measured as a 40-60 ms tail
            // on a few percent of calls.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await?;
        tracing::info!(participant = %name, "participant server stopped");
        Ok(())
    }
}

/// Aborts the registration task when serving ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registers with the coordinator, retrying until it succeeds or the
/// coordinator says the request itself is wrong.
async fn register(channel: Channel, service: ParticipantService, r: Registration) {
    let request = RegisterParticipantRequest {
        name: service.name().to_owned(),
        endpoint: r.advertised_endpoint.clone(),
        actions: service
            .actions()
            .into_iter()
            .map(|name| Action {
                name: name.to_owned(),
            })
            .collect(),
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(r.min_delay)
        .with_max_delay(r.max_delay)
        .with_jitter()
        .without_max_times();
    let attempt = || {
        let mut client = RegistryClient::new(channel.clone());
        let request = request.clone();
        async move { client.register_participant(request).await }
    };
    let result = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|s: &Status| is_transient(s.code()))
        .notify(|s: &Status, delay: Duration| {
            tracing::warn!(
                participant = service.name(),
                coordinator = %r.coordinator_url,
                code = ?s.code(),
                error = s.message(),
                retry_in_ms = delay.as_millis() as u64,
                "participant registration failed, retrying"
            );
        })
        .await;
    match result {
        Ok(_) => tracing::info!(
            participant = service.name(),
            coordinator = %r.coordinator_url,
            endpoint = %r.advertised_endpoint,
            "participant registered"
        ),
        Err(s) => tracing::error!(
            participant = service.name(),
            coordinator = %r.coordinator_url,
            code = ?s.code(),
            error = s.message(),
            "participant registration refused"
        ),
    }
}

/// Codes for which asking again cannot help: the request is wrong or the
/// coordinator does not offer the registry at all.
fn is_transient(code: Code) -> bool {
    !matches!(
        code,
        Code::InvalidArgument
            | Code::Unimplemented
            | Code::PermissionDenied
            | Code::Unauthenticated
    )
}

#[cfg(test)]
mod tests;
