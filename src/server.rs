//! Assembles one coordinator instance: `Server::build(config)` opens the
//! store (PostgreSQL or the SQLite file), migrates and binds; `local_addr()` tells where it listens;
//! `run(shutdown)` serves until the shutdown future completes, then finishes
//! or releases in-flight work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use concord_proto::v1::coordinator_server::CoordinatorServer;
use concord_proto::v1::registry_server::RegistryServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;

use crate::api::admin::AdminApi;
use crate::api::coordinator::CoordinatorApi;
use crate::api::registry::RegistryApi;
use crate::auth::Authenticator;
use crate::auth::limits::Limiter;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::engine::operator::Operator;
use crate::engine::recovery::{self, Wake};
use crate::engine::retry::RetryPolicy;
use crate::engine::{Engine, EngineSettings};
use crate::machine::Escalation;
use crate::participant::client::ParticipantClients;
use crate::participant::recovered::SeenRegistrations;
use crate::participant::registry::Registry;
use crate::store::admin::AdminStore;
use crate::store::cache::Remembering;
use crate::store::health::DbHealth;
use crate::store::location::StoreLocation;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(crate::config::ConfigError),
    #[error("cannot open the store: {0}")]
    Database(StoreError),
    #[error("cannot apply migrations: {0}")]
    Migrate(StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("grpc server failed: {0}")]
    Serve(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("authentication: {0}")]
    Auth(String),
}

/// How often the registry cache is reloaded, to see registrations made
/// through other instances.
const REGISTRY_REFRESH: Duration = Duration::from_secs(5);

pub struct Server {
    config: Config,
    store: Arc<dyn AdminStore>,
    engine: Arc<Engine>,
    listener: TcpListener,
    wake: Wake,
    /// The /metrics, /healthz and /readyz listener, if configured.
    metrics_listener: Option<TcpListener>,
    /// The DTM-compatible API's listener, if configured.
    dtm_listener: Option<TcpListener>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    /// Whether the database answers (see `store::health`).
    db_health: Arc<DbHealth>,
    /// Who may call, reloaded while serving (see `auth`).
    auth: Arc<Authenticator>,
    limits: Arc<Limiter>,
}

impl Server {
    /// Opens the store, migrates (unless disabled) and binds the listen
    /// address.
    pub async fn build(config: Config) -> Result<Self, ServerError> {
        let location = config.store_location().map_err(ServerError::Config)?;
        let store = open_store(&location, config.pool_size, config.migrate).await?;
        match &location {
            StoreLocation::Postgres(_) => tracing::info!("state kept in postgresql"),
            StoreLocation::Sqlite(path) => tracing::info!(
                path = %path.display(),
                "state kept in sqlite: single instance (several instances need postgresql)"
            ),
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            ),
            None => None,
        };
        let dtm_listener = match config.dtm_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            ),
            None => None,
        };
        let mut server = Self::assemble(config.clone(), store, Arc::new(SystemClock), listener)?;
        // The DTM API drives transactions as the gRPC API does: the same
        // rule for a listen address beyond this host without identities.
        if let Some(addr) = dtm_listener.as_ref().and_then(|l| l.local_addr().ok())
            && let Err(refusal) =
                crate::auth::check_listen(addr, server.auth.is_on(), config.insecure_no_auth)
        {
            return Err(ServerError::Auth(format!("dtm_listen: {refusal}")));
        }
        server.metrics_listener = metrics_listener;
        server.dtm_listener = dtm_listener;
        Ok(server)
    }

    /// Builds from parts (tests inject the store, clock and listener);
    /// reads the TLS files the configuration names.
    pub fn assemble(
        config: Config,
        store: Arc<dyn AdminStore>,
        clock: Arc<dyn Clock>,
        listener: TcpListener,
    ) -> Result<Self, ServerError> {
        let auth = Authenticator::load(&config.admin_tokens, config.identities_file.as_deref())
            .map_err(ServerError::Auth)?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::Serve(e.to_string()))?;
        match crate::auth::check_listen(addr, auth.is_on(), config.insecure_no_auth) {
            Ok(Some(warning)) => tracing::warn!(%addr, "{warning}"),
            Ok(None) => tracing::info!(identities = auth.identities().len(), "authentication on"),
            Err(refusal) => return Err(ServerError::Auth(refusal)),
        }
        let limits = Limiter::new(config.identity_max_concurrent, config.identity_max_rate);
        let credential = match (&config.coordinator_token, &config.coordinator_token_file) {
            (Some(_), Some(_)) => {
                return Err(ServerError::Auth(
                    "coordinator_token and coordinator_token_file are both set; set one".into(),
                ));
            }
            (Some(token), None) => Some(token.bearer()),
            (None, Some(path)) => Some(crate::auth::token_file(path).map_err(ServerError::Auth)?),
            (None, None) => None,
        };
        let tls = crate::tls::server_config(&config).map_err(ServerError::Tls)?;
        if let Some(tls) = &tls {
            // Refuses a key or certificate rustls cannot use now, not at run.
            tonic::transport::Server::builder()
                .tls_config(tls.clone())
                .map_err(|e| ServerError::Tls(e.to_string()))?;
        }
        let participant_tls = crate::tls::client_config(&config).map_err(ServerError::Tls)?;
        let participant_http_tls =
            crate::tls::http_client_config(&config).map_err(ServerError::Tls)?;
        // The engine writes through a memory of what this instance wrote
        // (see `store::cache`); operators and housekeeping read the database.
        let dyn_store: Arc<dyn Store> = Arc::new(Remembering::new(store.clone()));
        let registry = Arc::new(Registry::new(Arc::clone(&dyn_store), Arc::clone(&clock)));
        let clients = Arc::new(
            ParticipantClients::new(
                config.breaker_failures,
                config.breaker_cooldown,
                config.max_request_bytes,
            )
            .with_participant_concurrency(config.participant_concurrency)
            .with_tls(participant_tls)
            .with_http_tls(participant_http_tls)
            .with_credential(credential),
        );
        let settings = EngineSettings {
            instance_id: config.instance_id.clone(),
            default_timeout: config.default_timeout,
            max_timeout: config.max_timeout,
            call_timeout: config.call_timeout,
            lease: config.lease,
            max_payload_bytes: config.max_payload_bytes,
            max_wait: config.max_wait,
            escalation: Escalation {
                max_attempts: config.attention_attempts,
                max_age: chrono::Duration::from_std(config.attention_age)
                    .unwrap_or(chrono::Duration::minutes(10)),
            },
        };
        let engine = Engine::new(
            dyn_store,
            registry,
            clients,
            clock,
            settings,
            RetryPolicy::new(config.retry),
        );
        Ok(Self {
            config,
            store,
            engine,
            listener,
            wake: Wake::default(),
            metrics_listener: None,
            dtm_listener: None,
            tls,
            db_health: Arc::new(DbHealth::default()),
            auth: Arc::new(auth),
            limits: Arc::new(limits),
        })
    }

    /// Who may call this instance; [`Authenticator::reload`] rotates.
    pub fn auth(&self) -> Arc<Authenticator> {
        Arc::clone(&self.auth)
    }

    /// The per-identity limits the gRPC guard applies; another surface
    /// (an HTTP API) shares them through `api::guard::admit`.
    pub fn limits(&self) -> Arc<Limiter> {
        Arc::clone(&self.limits)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Where /metrics, /healthz and /readyz are served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Where the DTM-compatible API is served, if anywhere.
    pub fn dtm_addr(&self) -> Option<SocketAddr> {
        self.dtm_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    /// Serves until `shutdown` completes, then stops accepting, gives
    /// in-flight rounds the grace period and releases the leases still held
    /// so that another instance continues at once.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let stop = CancellationToken::new();
        // Cancelled when shutdown begins; /readyz fails from then on.
        let draining = CancellationToken::new();
        // One operator for the admin API and the console.
        let operator = Arc::new(Operator::new(
            Arc::clone(&self.engine),
            self.store.clone(),
            self.wake.clone(),
        ));
        let background = self.spawn_background(&stop, &draining, &operator);
        let Server {
            config,
            store,
            engine,
            listener,
            tls,
            db_health,
            auth,
            limits,
            ..
        } = self;
        let (health, grpc) = grpc_services(&config, &engine, operator).await?;
        tracing::info!(addr = ?listener.local_addr().ok(), instance = %config.instance_id, "coordinator serving");
        let serving = CancellationToken::new();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(|e| {
                stop.cancel();
                ServerError::Tls(e.to_string())
            })?;
        }
        let serve = builder
            .layer(crate::api::oversize::OversizeLayer::new(
                config.max_request_bytes,
            ))
            .layer(crate::api::guard::GuardLayer::new(auth, limits))
            .layer(crate::api::db_down::DbDownLayer::new(db_health))
            .add_routes(grpc)
            .serve_with_incoming_shutdown(
                // Set by hand: tonic applies its `tcp_nodelay` only to listeners it
                // binds itself. Without it, Nagle's algorithm held a reply's last frame
                // back until the peer's delayed ACK (40 ms), measured as a 40-60 ms tail
                // on a few percent of calls.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                serving.clone().cancelled_owned(),
            );
        let mut serve = tokio::spawn(serve);
        tokio::select! {
            _ = shutdown => {}
            r = &mut serve => {
                stop.cancel();
                return r.map_err(|e| ServerError::Serve(e.to_string()))?
                    .map_err(|e| ServerError::Serve(e.to_string()));
            }
        }
        tracing::info!("shutting down: no new requests");
        draining.cancel();
        health
            .set_not_serving::<CoordinatorServer<CoordinatorApi>>()
            .await;
        serving.cancel();
        let grace = config.shutdown_grace;
        if tokio::time::timeout(grace, &mut serve).await.is_err() {
            serve.abort();
        }
        // No new rounds from the recovery loop; running rounds may finish
        // within the grace period, then what is still held is released.
        stop.cancel();
        engine.stop(grace).await;
        background.wait().await;
        store.close().await;
        tracing::info!("stopped");
        Ok(())
    }

    /// Starts what runs beside the gRPC server until `stop`: the recovery
    /// loop and its re-drive of participants that are back, the lease
    /// keeper, the registry refresh, retention, and the HTTP listener (with
    /// the console) and the metrics sampler.
    fn spawn_background(
        &mut self,
        stop: &CancellationToken,
        draining: &CancellationToken,
        operator: &Arc<Operator>,
    ) -> TaskTracker {
        let (config, engine) = (&self.config, Arc::clone(&self.engine));
        let engine = &engine;
        let background = TaskTracker::new();
        if let Some(retention) = config.retention {
            background.spawn(crate::engine::retention::run(
                self.store.clone(),
                retention,
                config.retention_batch,
                stop.clone(),
            ));
        }
        if !config.alert_webhooks.0.is_empty() {
            let console = config.alert_console_url.clone().or_else(|| {
                config
                    .metrics_listen
                    .filter(|_| config.console)
                    .map(|addr| format!("http://{addr}"))
            });
            background.spawn(crate::engine::alerts::run(
                self.store.clone(),
                config.instance_id.clone(),
                crate::engine::alerts::AlertSettings {
                    urls: config.alert_webhooks.0.clone(),
                    console,
                },
                stop.clone(),
            ));
        }
        if let Some(http) = self.metrics_listener.take() {
            let handle = crate::telemetry::metrics::install();
            if let Some(handle) = handle.clone() {
                background.spawn(crate::engine::gauges::sample(
                    self.store.clone(),
                    Arc::clone(engine),
                    handle,
                    stop.clone(),
                ));
            }
            tracing::info!(addr = ?http.local_addr().ok(), console = config.console, "metrics and health served over http");
            let console = config.console.then(|| {
                crate::api::console::router(
                    Arc::clone(operator),
                    Arc::clone(&self.auth),
                    config.console_idle_timeout,
                )
            });
            let serve = crate::api::http::serve(
                http,
                handle,
                self.store.clone(),
                Arc::clone(&self.db_health),
                console,
                draining.clone(),
                stop.clone(),
            );
            background.spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        if let Some(dtm) = self.dtm_listener.take() {
            tracing::info!(addr = ?dtm.local_addr().ok(), "dtm-compatible api served over http");
            let router = crate::api::dtm::router(
                Arc::clone(engine),
                config.max_request_bytes,
                Arc::clone(&self.db_health),
                crate::api::dtm::Guard {
                    auth: self.auth(),
                    limits: self.limits(),
                },
            );
            let serve = crate::api::dtm::serve(dtm, router, stop.clone());
            background.spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "dtm listener failed");
                }
            });
        }
        background.spawn(recovery::run(
            Arc::clone(engine),
            config.poll_interval,
            config.recovery_concurrency,
            self.wake.clone(),
            stop.clone(),
        ));
        background.spawn(crate::engine::redrive::run(
            Arc::clone(engine),
            Arc::clone(engine.clients.recovered()),
            self.wake.clone(),
            stop.clone(),
        ));
        background.spawn(engine.keep_leases(stop.clone()));
        background.spawn(crate::auth::reload::run(
            Arc::clone(&self.auth),
            stop.clone(),
        ));
        if let Some(path) = config.coordinator_token_file.clone() {
            let credential = engine.clients.credential().clone();
            background.spawn(crate::auth::reload::watch_file(
                path.clone(),
                Some(crate::auth::reload::POLL),
                stop.clone(),
                move |sighup| match crate::auth::token_file(&path) {
                    Ok(token) => {
                        credential.set(Some(token));
                        tracing::info!(path = %path.display(), sighup, "coordinator token reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "coordinator token not reloaded; the previous one stays in force")
                    }
                },
            ));
        }
        background
            .spawn(Arc::clone(&self.db_health).probe(Arc::clone(engine.store()), stop.clone()));
        background.spawn(refresh_registry(
            Arc::clone(engine.registry()),
            Arc::clone(engine.store()),
            Arc::clone(&engine.clients),
            stop.clone(),
        ));
        background.close();
        background
    }
}

/// Opens the store `location` names (creating a PostgreSQL database or a
/// SQLite file that does not exist yet) and, with `migrate`, applies its
/// migrations.
pub async fn open_store(
    location: &StoreLocation,
    pool_size: u32,
    migrate: bool,
) -> Result<Arc<dyn AdminStore>, ServerError> {
    const ACQUIRE: Duration = Duration::from_secs(5);
    match location {
        StoreLocation::Postgres(url) => {
            if migrate {
                PgStore::ensure_database(url)
                    .await
                    .map_err(ServerError::Database)?;
            }
            let store = PgStore::connect(url, pool_size, ACQUIRE)
                .await
                .map_err(ServerError::Database)?;
            if migrate {
                store.migrate().await.map_err(ServerError::Migrate)?;
            }
            Ok(Arc::new(store))
        }
        StoreLocation::Sqlite(path) => {
            let store = SqliteStore::open(path, pool_size, ACQUIRE)
                .await
                .map_err(ServerError::Database)?;
            if migrate {
                store.migrate().await.map_err(ServerError::Migrate)?;
            }
            Ok(Arc::new(store))
        }
    }
}

/// Reloads the registry cache every [`REGISTRY_REFRESH`] until `stop`;
/// an endpoint registered again through another instance counts as a
/// registration here too (its breaker closes, its work is re-driven).
async fn refresh_registry(
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    clients: Arc<ParticipantClients>,
    stop: CancellationToken,
) {
    // What is registered at start, read past the cache: loading the cache
    // now would make a lookup shortly after trust it instead of reading a
    // registration made since through another instance.
    let mut seen = SeenRegistrations::default();
    match store.list_participants().await {
        Ok(all) => {
            seen.registered_again(&all);
        }
        Err(e) => tracing::warn!(error = %e, "registry read failed"),
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REGISTRY_REFRESH) => {}
        }
        match registry.refresh().await {
            Ok(all) => {
                for (participant, endpoint) in seen.registered_again(&all) {
                    clients.registered(&participant, &endpoint);
                }
            }
            Err(e) => tracing::warn!(error = %e, "registry refresh failed"),
        }
    }
}

/// The gRPC services: health, reflection, Coordinator, Registry and the
/// authenticated Admin API.
async fn grpc_services(
    config: &Config,
    engine: &Arc<Engine>,
    operator: Arc<Operator>,
) -> Result<(tonic_health::server::HealthReporter, tonic::service::Routes), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CoordinatorServer<CoordinatorApi>>()
        .await;
    health.set_serving::<RegistryServer<RegistryApi>>().await;
    health
        .set_serving::<concord_proto::v1::admin_server::AdminServer<AdminApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(concord_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Serve(e.to_string()))?;
    let max = config.max_request_bytes;
    let coordinator = CoordinatorServer::new(CoordinatorApi::new(Arc::clone(engine)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let registry = RegistryServer::new(RegistryApi::new(
        Arc::clone(engine.registry()),
        Arc::clone(&engine.clients),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let admin = AdminApi::new(operator).service(max);
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(coordinator)
        .add_service(registry)
        .add_service(admin);
    Ok((health, routes))
}
