//! [`ParticipantServer`]: serves a [`ParticipantService`] over gRPC and,
//! optionally, registers it with the coordinator and says when that is
//! done.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use concord_proto::participant::v1::participant_server::ParticipantServer as GrpcParticipantServer;
use concord_proto::v1::registry_client::RegistryClient;
use concord_proto::v1::{Action, RegisterParticipantRequest};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::ParticipantService;
use crate::credential::{Credential, RequireToken};

/// Why [`ParticipantServer::start`] or [`serve`](ParticipantServer::serve)
/// failed.
///
/// ```no_run
/// use concord_sdk::{ParticipantServer, ParticipantService, ServeError};
///
/// # async fn run(service: ParticipantService, listener: tokio::net::TcpListener) {
/// let served = ParticipantServer::new(service)
///     .register_with("http://127.0.0.1:50051")
///     .advertise("127.0.0.1:50061") // no scheme
///     .serve(listener, std::future::pending())
///     .await;
/// assert!(matches!(served, Err(ServeError::InvalidEndpoint { .. })));
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
    /// The endpoint to advertise is not one the coordinator accepts
    /// (`http(s)://host[:port]`, no path, query or credentials).
    #[error("invalid advertised endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given or derived.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The listener is bound to an unspecified address (`0.0.0.0`, `[::]`),
    /// which the coordinator cannot call: say which address to advertise
    /// with [`advertise`](ParticipantServer::advertise).
    #[error(
        "listener bound to {addr}, which the coordinator cannot call: set the endpoint to advertise"
    )]
    AdvertiseRequired {
        /// The listener's address.
        addr: SocketAddr,
    },
    /// The listener's address could not be read.
    #[error("cannot read the listener's address")]
    Listener(#[source] std::io::Error),
    /// The coordinator refused the registration (a wrong name or endpoint,
    /// no registry, no permission); asking again would not help.
    #[error("the coordinator refused the registration ({code:?}): {message}")]
    RegistrationRefused {
        /// The coordinator's gRPC code.
        code: Code,
        /// The coordinator's reason.
        message: String,
    },
    /// The shutdown future completed before the coordinator answered the
    /// registration ([`start`](ParticipantServer::start) only;
    /// [`serve`](ParticipantServer::serve) then returns `Ok`).
    #[error("shut down before the registration completed")]
    ShutdownBeforeRegistration,
    /// The gRPC server failed.
    #[error("participant server failed")]
    Transport(#[from] tonic::transport::Error),
    /// The token given to [`token`](ParticipantServer::token) cannot be
    /// sent in a header.
    #[error("the registration token contains characters a header cannot carry")]
    InvalidToken,
}

#[derive(Clone, Debug)]
struct Registration {
    coordinator_url: String,
    advertised_endpoint: Option<String>,
    min_delay: Duration,
    max_delay: Duration,
}

/// Any token (an invalid one is refused at start).
#[derive(Clone, Debug, Default)]
enum Token {
    #[default]
    None,
    Valid(Credential),
    Invalid,
}

/// Serves a [`ParticipantService`] on a listener the caller owns, until a
/// shutdown future the caller owns completes, and registers it with the
/// coordinator.
///
/// Taking the listener (rather than an address) lets tests bind port 0 and
/// read the port before serving, and gives the address to advertise; taking
/// the shutdown future lets the application decide what stops it (a signal,
/// a cancellation token...).
///
/// ```no_run
/// use concord_sdk::{ParticipantServer, ParticipantService};
///
/// # async fn run(service: ParticipantService) -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:50061").await?;
/// // Advertised as http://127.0.0.1:50061, the listener's address.
/// ParticipantServer::new(service)
///     .register_with("http://127.0.0.1:50051")
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
    /// Presented when registering.
    token: Token,
    /// Checked on every call received.
    require: Option<RequireToken>,
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
            token: Token::None,
            require: None,
        }
    }

    /// Presents `token` (`authorization: Bearer <token>`) when registering:
    /// a coordinator with identities needs one whose identity has the scope
    /// of this participant's name.
    ///
    /// ```
    /// # fn run(service: concord_sdk::ParticipantService) {
    /// let server = concord_sdk::ParticipantServer::new(service)
    ///     .register_with("http://concord:50051")
    ///     .token("payment-registration-secret");
    /// # let _ = server;
    /// # }
    /// ```
    pub fn token(mut self, token: &str) -> Self {
        self.token = match Credential::bearer(token) {
            Some(c) => Token::Valid(c),
            None => Token::Invalid,
        };
        self
    }

    /// Serves only calls carrying one of `tokens` (the coordinator's
    /// `coordinator_token`; give the old and the new one while it is
    /// rotated); every other call is refused with `UNAUTHENTICATED` before
    /// any action runs. Without it, anyone who reaches the port may call.
    ///
    /// ```
    /// # fn run(service: concord_sdk::ParticipantService) {
    /// let token = std::env::var("CONCORD_COORDINATOR_TOKEN").unwrap_or_default();
    /// let server = concord_sdk::ParticipantServer::new(service).require_coordinator_token([token]);
    /// # let _ = server;
    /// # }
    /// ```
    pub fn require_coordinator_token<I, T>(mut self, tokens: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.require = Some(RequireToken::new(tokens));
        self
    }

    /// On start, registers the participant's name, endpoint and actions
    /// with the coordinator at `coordinator_url`.
    ///
    /// The endpoint is `http://` and the listener's address, unless
    /// [`advertise`](Self::advertise) says otherwise. Registration is
    /// retried with jittered exponential backoff while the coordinator is
    /// unreachable (a participant may start before it), and a refusal is
    /// an error of [`start`](Self::start) and [`serve`](Self::serve).
    ///
    /// ```
    /// # fn run(service: concord_sdk::ParticipantService) {
    /// let server = concord_sdk::ParticipantServer::new(service).register_with("http://concord:50051");
    /// # let _ = server;
    /// # }
    /// ```
    pub fn register_with(mut self, coordinator_url: impl Into<String>) -> Self {
        self.registration = Some(Registration {
            coordinator_url: coordinator_url.into(),
            advertised_endpoint: None,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        });
        self
    }

    /// The `http(s)://host:port` URL the coordinator should call, when it is
    /// not the listener's address (a listener on `0.0.0.0`, a container
    /// behind a service name, TLS...). Checked at start. Has no effect
    /// without [`register_with`](Self::register_with).
    ///
    /// ```
    /// # fn run(service: concord_sdk::ParticipantService) {
    /// let server = concord_sdk::ParticipantServer::new(service)
    ///     .register_with("http://concord:50051")
    ///     .advertise("http://bank-1.internal:50061");
    /// # let _ = server;
    /// # }
    /// ```
    pub fn advertise(mut self, endpoint: impl Into<String>) -> Self {
        if let Some(r) = &mut self.registration {
            r.advertised_endpoint = Some(endpoint.into());
        }
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
    ///     .register_with("http://concord:50051")
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

    /// Starts serving, then registers with the coordinator, and returns once
    /// the coordinator has the registration (durably): transactions started
    /// after that find the participant. Calls are served during the
    /// registration already.
    ///
    /// Fails at once on a malformed coordinator URL or endpoint, and when
    /// the coordinator refuses; waits (retrying) while it is unreachable.
    /// To bound that wait, wrap the call in `tokio::time::timeout`.
    ///
    /// ```no_run
    /// use concord_sdk::{Coordinator, ParticipantServer, ParticipantService};
    ///
    /// # async fn run(service: ParticipantService) -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let running = ParticipantServer::new(service)
    ///     .register_with("http://127.0.0.1:50051")
    ///     .start(listener, async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await?;
    /// println!("registered as {}", running.endpoint().unwrap_or_default());
    /// // Transactions may use the participant from here on.
    /// running.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<RunningParticipant, ServeError> {
        let local_addr = listener.local_addr().map_err(ServeError::Listener)?;
        let credential = match &self.token {
            Token::None => Credential::none(),
            Token::Valid(c) => c.clone(),
            Token::Invalid => return Err(ServeError::InvalidToken),
        };
        // Check everything before serving so a typo fails loudly at
        // startup instead of being retried forever in the background.
        let registration = match &self.registration {
            Some(r) => {
                let channel = Endpoint::from_shared(r.coordinator_url.clone())
                    .map_err(|source| ServeError::InvalidCoordinatorUrl {
                        url: r.coordinator_url.clone(),
                        source,
                    })?
                    .connect_lazy();
                let endpoint = match &r.advertised_endpoint {
                    Some(e) => e.clone(),
                    None if local_addr.ip().is_unspecified() => {
                        return Err(ServeError::AdvertiseRequired { addr: local_addr });
                    }
                    None => format!("http://{local_addr}"),
                };
                check_endpoint(&endpoint)?;
                Some((channel, endpoint, r.clone()))
            }
            None => None,
        };

        tracing::info!(
            participant = self.service.name(),
            addr = %local_addr,
            "participant server listening"
        );
        // `stop` ends serving early when the registration is refused; it
        // also tells the registration loop that the caller shut down.
        let stop = CancellationToken::new();
        let server_stop = stop.clone();
        let service = self.service.clone();
        let require = self.require.clone();
        let mut task = tokio::spawn(async move {
            let name = service.name().to_owned();
            let check = move |request: tonic::Request<()>| match &require {
                Some(r) => tonic::service::Interceptor::call(&mut r.clone(), request),
                None => Ok(request),
            };
            tonic::transport::Server::builder()
                .add_service(GrpcParticipantServer::with_interceptor(service, check))
                // Set by hand: tonic applies its `tcp_nodelay` only to
                // listeners it binds itself. Without it, Nagle's algorithm
                // held a reply's last frame back until the peer's delayed ACK
                // (40 ms), measured as a 40-60 ms tail on a few percent of
                // calls.
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move {
                        tokio::select! {
                            () = shutdown => {}
                            () = server_stop.cancelled() => {}
                        }
                        server_stop.cancel();
                    },
                )
                .await?;
            tracing::info!(participant = %name, "participant server stopped");
            Ok(())
        });

        let mut running = RunningParticipant {
            local_addr,
            endpoint: None,
            task: None,
        };
        if let Some((channel, endpoint, r)) = registration {
            tokio::select! {
                registered = register(channel, credential, &self.service, &endpoint, &r) => {
                    if let Err(s) = registered {
                        stop.cancel();
                        let _ = join(task).await;
                        return Err(ServeError::RegistrationRefused {
                            code: s.code(),
                            message: s.message().to_owned(),
                        });
                    }
                }
                () = stop.cancelled() => {
                    join(task).await?;
                    return Err(ServeError::ShutdownBeforeRegistration);
                }
                served = &mut task => {
                    flatten(served)?;
                    return Err(ServeError::ShutdownBeforeRegistration);
                }
            }
            running.endpoint = Some(endpoint);
        }
        running.task = Some(task);
        Ok(running)
    }

    /// Serves until `shutdown` completes, then stops accepting connections
    /// and waits for in-flight calls to finish. With
    /// [`register_with`](Self::register_with), registers first as
    /// [`start`](Self::start) does and fails if the coordinator refuses.
    ///
    /// ```no_run
    /// # async fn run(service: concord_sdk::ParticipantService) -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:50061").await?;
    /// concord_sdk::ParticipantServer::new(service)
    ///     .register_with("http://concord:50051")
    ///     .advertise("http://bank-1:50061")
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
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        match self.start(listener, shutdown).await {
            Ok(running) => running.wait().await,
            Err(ServeError::ShutdownBeforeRegistration) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A participant being served, registered if it was asked to be; see
/// [`ParticipantServer::start`]. Dropping it does not stop the server: its
/// shutdown future does.
///
/// ```no_run
/// # async fn run(server: concord_sdk::ParticipantServer) -> Result<(), concord_sdk::ServeError> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let running = server.start(listener, std::future::pending()).await?;
/// println!("listening on {}", running.local_addr());
/// running.wait().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RunningParticipant {
    local_addr: SocketAddr,
    endpoint: Option<String>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl RunningParticipant {
    /// The address the server listens on.
    ///
    /// ```no_run
    /// # fn run(running: concord_sdk::RunningParticipant) {
    /// assert_ne!(running.local_addr().port(), 0);
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The endpoint registered with the coordinator, if any.
    ///
    /// ```no_run
    /// # fn run(running: concord_sdk::RunningParticipant) {
    /// if let Some(url) = running.endpoint() {
    ///     println!("the coordinator calls {url}");
    /// }
    /// # }
    /// ```
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Waits until the server stopped (its shutdown future completed and
    /// in-flight calls finished), or failed.
    ///
    /// ```no_run
    /// # async fn run(running: concord_sdk::RunningParticipant) -> Result<(), concord_sdk::ServeError> {
    /// running.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait(mut self) -> Result<(), ServeError> {
        match self.task.take() {
            Some(task) => join(task).await,
            None => Ok(()),
        }
    }
}

async fn join(task: JoinHandle<Result<(), tonic::transport::Error>>) -> Result<(), ServeError> {
    flatten(task.await)
}

fn flatten(
    joined: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    match joined {
        Ok(served) => Ok(served?),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only cancelled when the runtime shuts down.
        Err(_) => Ok(()),
    }
}

/// The coordinator's rule for endpoints, checked here so that a wrong one
/// is reported at start rather than refused later.
fn check_endpoint(endpoint: &str) -> Result<(), ServeError> {
    let bad = |reason| ServeError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    if endpoint.len() > 512 {
        return Err(bad("longer than 512 characters"));
    }
    let uri: http::Uri = endpoint.parse().map_err(|_| bad("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("the scheme must be http:// or https://"));
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("credentials are not allowed"));
    }
    if !(uri.path().is_empty() || uri.path() == "/") || uri.query().is_some() {
        return Err(bad("a path or query is not allowed"));
    }
    Ok(())
}

/// Registers with the coordinator, retrying until it succeeds or the
/// coordinator says the request itself is wrong.
async fn register(
    channel: Channel,
    credential: Credential,
    service: &ParticipantService,
    endpoint: &str,
    r: &Registration,
) -> Result<(), Status> {
    let request = RegisterParticipantRequest {
        protocol: Default::default(),
        name: service.name().to_owned(),
        endpoint: endpoint.to_owned(),
        actions: service
            .actions()
            .into_iter()
            .map(|name| {
                let (call_timeout, policy) = service.policy_of(name).unwrap_or_default();
                Action {
                    name: name.to_owned(),
                    call_timeout: call_timeout.map(crate::policy::proto_duration),
                    policy: policy.as_ref().map(crate::CallPolicy::to_proto),
                }
            })
            .collect(),
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(r.min_delay)
        .with_max_delay(r.max_delay)
        .with_jitter()
        .without_max_times();
    let attempt = || {
        let mut client = RegistryClient::with_interceptor(channel.clone(), credential.clone());
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
        Ok(_) => {
            tracing::info!(
                participant = service.name(),
                coordinator = %r.coordinator_url,
                endpoint,
                "participant registered"
            );
            Ok(())
        }
        Err(s) => {
            tracing::error!(
                participant = service.name(),
                coordinator = %r.coordinator_url,
                code = ?s.code(),
                error = s.message(),
                "participant registration refused"
            );
            Err(s)
        }
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
