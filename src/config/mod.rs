//! Configuration of `concord serve`, declared once. Every setting is one
//! field of [`Config`]: the field's name is its TOML key and (with dashes)
//! its flag, its doc comment is the flag's help, `env` names its
//! environment variable, `help_heading` its section (of `--help` and of
//! `config/concord.toml`, which documents every key: a test checks it),
//! and [`Config::default`] holds its default.
//!
//! Flags win over the environment, which wins over the TOML file, which
//! wins over the defaults; [`Config::resolve`] applies them in that order
//! once and validates the result.

mod resolve;
#[cfg(test)]
mod tests;
mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;
use serde::Deserialize;

use crate::auth::{AdminTokens, Secret};
use crate::store::location::StoreLocation;

pub use self::resolve::{ConfigError, ServeArgs};
pub use self::values::{OrOff, Urls, parse_duration};
use self::values::{
    de, parse_addr_or_off, parse_admin_tokens, parse_count_or_off, parse_duration_or_off,
    parse_on_off, parse_secret, parse_url, parse_urls,
};

/// The local PostgreSQL that tools default to (the benchmark's
/// `--store postgres`). `concord serve` without a database keeps its state
/// in SQLite instead (see [`Config::store_location`]).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/concord";

/// Default HTTP listener of `concord serve` (embedded servers and tests
/// built from [`Config::with_database`] have none unless they ask).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

// Sections of `concord serve --help`, in the order of config/concord.toml.
const SERVER: &str = "Server";
const LIMITS: &str = "Limits";
const RECOVERY: &str = "Retries and recovery";
const PARTICIPANTS: &str = "Participants";
const TLS: &str = "TLS of the gRPC port";
const OPERATIONS: &str = "Operations";
const SECURITY: &str = "Security";

/// Configuration of one coordinator instance; validated once built by
/// [`Config::resolve`].
///
/// Only [`ServeArgs`] reads it from a command line: it applies the flags
/// that were given over a base (`update_from_arg_matches`). Building one
/// from flags alone (`from_arg_matches`) fails, as it should: most
/// settings are never given.
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC server.
    #[arg(long, env = "CONCORD_LISTEN", help_heading = SERVER)]
    pub listen: SocketAddr,
    /// Database: postgres://... (PostgreSQL, one or several instances) or
    /// sqlite://PATH. None: SQLite at data_dir/concord.db (one instance).
    #[arg(long, env = "DATABASE_URL", help_heading = SERVER)]
    pub database_url: Option<String>,
    /// Directory of the SQLite database when database_url is not set.
    #[arg(long, env = "CONCORD_DATA_DIR", help_heading = SERVER)]
    pub data_dir: PathBuf,
    /// Largest number of database connections.
    #[arg(long, env = "CONCORD_POOL_SIZE", help_heading = SERVER)]
    pub pool_size: u32,
    /// Id of this instance in leases and events (default: host-pid-random).
    #[arg(long, env = "CONCORD_INSTANCE_ID", help_heading = SERVER)]
    pub instance_id: String,
    /// Do not apply migrations at start.
    // Held the way the server reads it (true: migrate); the key, flag and
    // variable say `no_migrate` (`--no-migrate true`).
    #[arg(
        id = "no_migrate",
        long = "no-migrate",
        env = "CONCORD_NO_MIGRATE",
        action = ArgAction::Set,
        value_name = "BOOL",
        value_parser = values::parse_no_migrate,
        help_heading = SERVER
    )]
    #[serde(rename = "no_migrate", deserialize_with = "de::no_migrate")]
    pub migrate: bool,
    /// Grace period for in-flight work at shutdown.
    #[arg(long, env = "CONCORD_SHUTDOWN_GRACE", value_parser = parse_duration, help_heading = SERVER)]
    #[serde(deserialize_with = "de::duration")]
    pub shutdown_grace: Duration,

    /// Transaction timeout when Begin gives none.
    #[arg(long, env = "CONCORD_DEFAULT_TIMEOUT", value_parser = parse_duration, help_heading = LIMITS)]
    #[serde(deserialize_with = "de::duration")]
    pub default_timeout: Duration,
    /// Largest transaction timeout a client may ask for.
    #[arg(long, env = "CONCORD_MAX_TIMEOUT", value_parser = parse_duration, help_heading = LIMITS)]
    #[serde(deserialize_with = "de::duration")]
    pub max_timeout: Duration,
    /// Deadline of one participant call.
    #[arg(long, env = "CONCORD_CALL_TIMEOUT", value_parser = parse_duration, help_heading = LIMITS)]
    #[serde(deserialize_with = "de::duration")]
    pub call_timeout: Duration,
    /// Longest a Commit/Rollback with `wait` waits when the client set no deadline.
    #[arg(long, env = "CONCORD_MAX_WAIT", value_parser = parse_duration, help_heading = LIMITS)]
    #[serde(deserialize_with = "de::duration")]
    pub max_wait: Duration,
    /// Largest payload of one branch, in bytes.
    #[arg(long, env = "CONCORD_MAX_PAYLOAD_BYTES", help_heading = LIMITS)]
    pub max_payload_bytes: usize,
    /// Largest gRPC request, in bytes.
    #[arg(long, env = "CONCORD_MAX_REQUEST_BYTES", help_heading = LIMITS)]
    pub max_request_bytes: usize,

    #[command(flatten, next_help_heading = RECOVERY)]
    #[serde(flatten)]
    pub retry: RetryConfig,
    /// Phase-2 rounds after which a transaction is flagged needs_attention.
    #[arg(long, env = "CONCORD_ATTENTION_ATTEMPTS", help_heading = RECOVERY)]
    pub attention_attempts: u32,
    /// Time since the decision after which a transaction is flagged.
    #[arg(long, env = "CONCORD_ATTENTION_AGE", value_parser = parse_duration, help_heading = RECOVERY)]
    #[serde(deserialize_with = "de::duration")]
    pub attention_age: Duration,
    /// How long a lease on a transaction lasts without renewal.
    #[arg(long, env = "CONCORD_LEASE", value_parser = parse_duration, help_heading = RECOVERY)]
    #[serde(deserialize_with = "de::duration")]
    pub lease: Duration,
    /// How often the recovery loop looks for due work.
    #[arg(long, env = "CONCORD_POLL_INTERVAL", value_parser = parse_duration, help_heading = RECOVERY)]
    #[serde(deserialize_with = "de::duration")]
    pub poll_interval: Duration,
    /// Transactions one instance drives at once from the recovery loop.
    #[arg(long, env = "CONCORD_RECOVERY_CONCURRENCY", help_heading = RECOVERY)]
    pub recovery_concurrency: u32,

    /// Consecutive failures that open an endpoint's circuit breaker.
    #[arg(long, env = "CONCORD_BREAKER_FAILURES", help_heading = PARTICIPANTS)]
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before one probe.
    #[arg(long, env = "CONCORD_BREAKER_COOLDOWN", value_parser = parse_duration, help_heading = PARTICIPANTS)]
    #[serde(deserialize_with = "de::duration")]
    pub breaker_cooldown: Duration,
    /// Most calls one instance has in flight to one participant; more wait
    /// their turn within their deadline (a participant that is back is not
    /// flooded by its backlog).
    #[arg(long, env = "CONCORD_PARTICIPANT_CONCURRENCY", help_heading = PARTICIPANTS)]
    pub participant_concurrency: u32,
    /// PEM CA trusted for https:// participants (instead of system roots).
    #[arg(long, env = "CONCORD_PARTICIPANT_CA", help_heading = PARTICIPANTS)]
    pub participant_ca: Option<PathBuf>,
    /// PEM client certificate presented to https:// participants (mutual
    /// TLS, with participant_key).
    #[arg(long, env = "CONCORD_PARTICIPANT_CERT", help_heading = PARTICIPANTS)]
    pub participant_cert: Option<PathBuf>,
    /// PEM private key of participant_cert.
    #[arg(long, env = "CONCORD_PARTICIPANT_KEY", help_heading = PARTICIPANTS)]
    pub participant_key: Option<PathBuf>,

    /// PEM certificate chain of the gRPC server (with tls_key: TLS on).
    #[arg(long, env = "CONCORD_TLS_CERT", help_heading = TLS)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the gRPC server.
    #[arg(long, env = "CONCORD_TLS_KEY", help_heading = TLS)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that clients' certificates must chain to (mutual TLS).
    #[arg(long, env = "CONCORD_TLS_CLIENT_CA", help_heading = TLS)]
    pub tls_client_ca: Option<PathBuf>,

    /// Tokens of the admin API as `name:secret,name:secret`; the name is
    /// recorded as the actor of operator actions. None: admin API refuses
    /// every call.
    // `Debug` shows the names only.
    #[arg(long, env = "CONCORD_ADMIN_TOKENS", hide_env_values = true, value_parser = parse_admin_tokens, help_heading = OPERATIONS)]
    #[serde(deserialize_with = "de::admin_tokens")]
    pub admin_tokens: AdminTokens,
    /// Address of the HTTP listener for /metrics, /healthz and /readyz, or
    /// `off`.
    #[arg(long, env = "CONCORD_METRICS_LISTEN", value_parser = parse_addr_or_off, help_heading = OPERATIONS)]
    #[serde(deserialize_with = "de::addr_or_off")]
    pub metrics_listen: OrOff<SocketAddr>,
    /// Serve the operator console at /ui/ on the HTTP listener
    /// (metrics_listen): `on` or `off`. It also needs admin_tokens.
    #[arg(long, env = "CONCORD_CONSOLE", action = ArgAction::Set, value_name = "ON_OFF", value_parser = parse_on_off, help_heading = OPERATIONS)]
    #[serde(deserialize_with = "de::on_off")]
    pub console: bool,
    /// How long a console session lasts while the operator does nothing.
    #[arg(long, env = "CONCORD_CONSOLE_IDLE_TIMEOUT", value_parser = parse_duration, help_heading = OPERATIONS)]
    #[serde(deserialize_with = "de::duration")]
    pub console_idle_timeout: Duration,
    /// How long finished transactions are kept, or `off` to keep them.
    #[arg(long, env = "CONCORD_RETENTION", value_parser = parse_duration_or_off, help_heading = OPERATIONS)]
    #[serde(deserialize_with = "de::duration_or_off")]
    pub retention: OrOff<Duration>,
    /// Transactions deleted per retention batch.
    #[arg(long, env = "CONCORD_RETENTION_BATCH", help_heading = OPERATIONS)]
    pub retention_batch: u32,
    /// URLs (http:// or https://, comma-separated) that get a JSON POST
    /// when a transaction becomes needs_attention and when it stops
    /// needing it. None: no alert is posted.
    #[arg(long, env = "CONCORD_ALERT_WEBHOOKS", value_parser = parse_urls, help_heading = OPERATIONS)]
    #[serde(deserialize_with = "de::urls")]
    pub alert_webhooks: Urls,
    /// Address of the console as operators reach it (`https://concord.example:9464`),
    /// for the links in alerts. None: http://metrics_listen.
    #[arg(long, env = "CONCORD_ALERT_CONSOLE_URL", value_parser = parse_url, help_heading = OPERATIONS)]
    #[serde(deserialize_with = "de::url")]
    pub alert_console_url: Option<String>,

    /// TOML file of identities (`[[identity]]`: name, tokens, certificates,
    /// participants, initiator, admin, max_concurrent, max_rate); read again
    /// on SIGHUP and when it changes. With no identity here nor in
    /// admin_tokens, authentication is off and only loopback is served.
    #[arg(long, env = "CONCORD_IDENTITIES_FILE", help_heading = SECURITY)]
    pub identities_file: Option<PathBuf>,
    /// Serve a non-loopback listen address with no identity configured
    /// (anyone who reaches the port may register and drive transactions).
    #[arg(
        long,
        env = "CONCORD_INSECURE_NO_AUTH",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = parse_on_off,
        help_heading = SECURITY
    )]
    #[serde(deserialize_with = "de::on_off")]
    pub insecure_no_auth: bool,
    /// Token the coordinator presents to every participant
    /// (`authorization: Bearer`), which SDK participants can require.
    // `Debug` hides it.
    #[arg(long, env = "CONCORD_COORDINATOR_TOKEN", hide_env_values = true, value_parser = parse_secret, help_heading = SECURITY)]
    #[serde(deserialize_with = "de::secret")]
    pub coordinator_token: Option<Secret>,
    /// File holding that token instead (trimmed): read at start, and again
    /// on SIGHUP and whenever it changes, so the token rotates without a
    /// restart (participants accept the old and the new one meanwhile).
    #[arg(long, env = "CONCORD_COORDINATOR_TOKEN_FILE", help_heading = SECURITY)]
    pub coordinator_token_file: Option<PathBuf>,
    /// Most requests one identity has in flight at once (an identity's
    /// max_concurrent overrides it), or `off`.
    #[arg(long, env = "CONCORD_IDENTITY_MAX_CONCURRENT", value_parser = parse_count_or_off, help_heading = SECURITY)]
    #[serde(deserialize_with = "de::count_or_off")]
    pub identity_max_concurrent: OrOff<u32>,
    /// Most requests per second of one identity (an identity's max_rate
    /// overrides it), or `off`.
    #[arg(long, env = "CONCORD_IDENTITY_MAX_RATE", value_parser = parse_count_or_off, help_heading = SECURITY)]
    #[serde(deserialize_with = "de::count_or_off")]
    pub identity_max_rate: OrOff<u32>,

    /// Address of the DTM-compatible HTTP API (DTM's client SDKs point at
    /// http://<this>/api/dtmsvr), or `off`.
    #[arg(long, env = "CONCORD_DTM_LISTEN", value_parser = parse_addr_or_off, help_heading = OPERATIONS)]
    #[serde(deserialize_with = "de::addr_or_off")]
    pub dtm_listen: OrOff<SocketAddr>,
}

/// Retry delays of phase-2 calls: exponential with jitter. Its keys carry
/// a `retry_` prefix (`retry_initial`, `--retry-initial`).
#[derive(Debug, Clone, Copy, PartialEq, clap::Args, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// First retry delay of phase-2 calls.
    #[arg(
        id = "retry_initial",
        long = "retry-initial",
        value_name = "RETRY_INITIAL",
        env = "CONCORD_RETRY_INITIAL",
        value_parser = parse_duration
    )]
    #[serde(rename = "retry_initial", deserialize_with = "de::duration")]
    pub initial: Duration,
    /// Growth factor of the retry delay.
    #[arg(
        id = "retry_factor",
        long = "retry-factor",
        value_name = "RETRY_FACTOR",
        env = "CONCORD_RETRY_FACTOR"
    )]
    #[serde(rename = "retry_factor")]
    pub factor: f32,
    /// Largest retry delay.
    #[arg(
        id = "retry_max",
        long = "retry-max",
        value_name = "RETRY_MAX",
        env = "CONCORD_RETRY_MAX",
        value_parser = parse_duration
    )]
    #[serde(rename = "retry_max", deserialize_with = "de::duration")]
    pub max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(60),
        }
    }
}

/// The defaults of `concord serve` (`config/concord.toml` shows the same).
impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: None,
            data_dir: PathBuf::from("."),
            pool_size: 16,
            instance_id: default_instance_id(),
            migrate: true,
            shutdown_grace: Duration::from_secs(10),
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(3600),
            call_timeout: Duration::from_secs(3),
            max_wait: Duration::from_secs(60),
            max_payload_bytes: 1024 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            retry: RetryConfig::default(),
            attention_attempts: 10,
            attention_age: Duration::from_secs(600),
            lease: Duration::from_secs(3),
            poll_interval: Duration::from_millis(250),
            recovery_concurrency: 64,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(2),
            participant_concurrency: crate::participant::bulkhead::DEFAULT_PARTICIPANT_CONCURRENCY,
            participant_ca: None,
            participant_cert: None,
            participant_key: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            admin_tokens: AdminTokens::default(),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            console: true,
            console_idle_timeout: Duration::from_secs(30 * 60),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_batch: 500,
            alert_webhooks: Urls::default(),
            alert_console_url: None,
            identities_file: None,
            insecure_no_auth: false,
            coordinator_token: None,
            coordinator_token_file: None,
            identity_max_concurrent: Some(1024),
            identity_max_rate: None,
            dtm_listen: Some(SocketAddr::from(([127, 0, 0, 1], 36789))),
        }
    }
}

impl Config {
    /// Where the state lives: `database_url`, or SQLite in `data_dir`;
    /// refuses a URL that names no store.
    pub fn store_location(&self) -> Result<StoreLocation, ConfigError> {
        StoreLocation::resolve(self.database_url.as_deref(), &self.data_dir).map_err(|message| {
            ConfigError::Invalid {
                key: "database_url",
                message,
            }
        })
    }

    /// Defaults for everything, on the given database and without the
    /// HTTP listener: what tests and embedded servers start from.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            database_url: Some(database_url.into()),
            metrics_listen: None,
            dtm_listen: None,
            ..Self::default()
        }
    }
}

/// `host-pid-random`: unique per process, and says where it runs.
fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "concord".to_string());
    let suffix = &uuid::Uuid::now_v7().simple().to_string()[24..];
    format!("{host}-{}-{suffix}", std::process::id())
}
