//! Configuration of `concord serve`: command-line flags, each also read from
//! a `CONCORD_…` environment variable, over an optional TOML file, over
//! defaults. Resolved once into a typed [`Config`]; `config/concord.toml`
//! documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::admin::auth::AdminTokens;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Parses a human duration such as `5s`, `250ms` or `10m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e})"))
}

/// Flags of `concord serve`. Every field is optional so that the TOML file
/// and the defaults can fill what the command line leaves out.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "CONCORD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the gRPC server.
    #[arg(long, env = "CONCORD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Largest number of database connections.
    #[arg(long, env = "CONCORD_POOL_SIZE")]
    pub pool_size: Option<u32>,
    /// Id of this instance in leases and events (default: host-pid-random).
    #[arg(long, env = "CONCORD_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Do not apply migrations at start.
    #[arg(long, env = "CONCORD_NO_MIGRATE")]
    pub no_migrate: Option<bool>,
    /// Transaction timeout when Begin gives none.
    #[arg(long, env = "CONCORD_DEFAULT_TIMEOUT", value_parser = parse_duration)]
    pub default_timeout: Option<Duration>,
    /// Largest transaction timeout a client may ask for.
    #[arg(long, env = "CONCORD_MAX_TIMEOUT", value_parser = parse_duration)]
    pub max_timeout: Option<Duration>,
    /// Deadline of one participant call.
    #[arg(long, env = "CONCORD_CALL_TIMEOUT", value_parser = parse_duration)]
    pub call_timeout: Option<Duration>,
    /// First retry delay of phase-2 calls.
    #[arg(long, env = "CONCORD_RETRY_INITIAL", value_parser = parse_duration)]
    pub retry_initial: Option<Duration>,
    /// Growth factor of the retry delay.
    #[arg(long, env = "CONCORD_RETRY_FACTOR")]
    pub retry_factor: Option<f32>,
    /// Largest retry delay.
    #[arg(long, env = "CONCORD_RETRY_MAX", value_parser = parse_duration)]
    pub retry_max: Option<Duration>,
    /// Phase-2 rounds after which a transaction is flagged needs_attention.
    #[arg(long, env = "CONCORD_ATTENTION_ATTEMPTS")]
    pub attention_attempts: Option<u32>,
    /// Time since the decision after which a transaction is flagged.
    #[arg(long, env = "CONCORD_ATTENTION_AGE", value_parser = parse_duration)]
    pub attention_age: Option<Duration>,
    /// How long a lease on a transaction lasts without renewal.
    #[arg(long, env = "CONCORD_LEASE", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// How often the recovery loop looks for due work.
    #[arg(long, env = "CONCORD_POLL_INTERVAL", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
    /// Transactions one instance drives at once from the recovery loop.
    #[arg(long, env = "CONCORD_RECOVERY_CONCURRENCY")]
    pub recovery_concurrency: Option<u32>,
    /// Largest payload of one branch, in bytes.
    #[arg(long, env = "CONCORD_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Largest gRPC request, in bytes.
    #[arg(long, env = "CONCORD_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Longest a Commit/Rollback with `wait` waits when the client set no deadline.
    #[arg(long, env = "CONCORD_MAX_WAIT", value_parser = parse_duration)]
    pub max_wait: Option<Duration>,
    /// Consecutive failures that open an endpoint's circuit breaker.
    #[arg(long, env = "CONCORD_BREAKER_FAILURES")]
    pub breaker_failures: Option<u32>,
    /// How long an open breaker refuses calls before one probe.
    #[arg(long, env = "CONCORD_BREAKER_COOLDOWN", value_parser = parse_duration)]
    pub breaker_cooldown: Option<Duration>,
    /// Grace period for in-flight work at shutdown.
    #[arg(long, env = "CONCORD_SHUTDOWN_GRACE", value_parser = parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Tokens of the admin API as `name:secret,name:secret`; the name is
    /// recorded as the actor of operator actions. None: admin API refuses
    /// every call.
    #[arg(long, env = "CONCORD_ADMIN_TOKENS", hide_env_values = true)]
    pub admin_tokens: Option<String>,
    /// Address of the HTTP listener for /metrics, /healthz and /readyz, or
    /// `off`.
    #[arg(long, env = "CONCORD_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// How long finished transactions are kept, or `off` to keep them.
    #[arg(long, env = "CONCORD_RETENTION")]
    pub retention: Option<String>,
    /// Transactions deleted per retention batch.
    #[arg(long, env = "CONCORD_RETENTION_BATCH")]
    pub retention_batch: Option<u32>,
    /// PEM certificate chain of the gRPC server (with tls_key: TLS on).
    #[arg(long, env = "CONCORD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the gRPC server.
    #[arg(long, env = "CONCORD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that clients' certificates must chain to (mutual TLS).
    #[arg(long, env = "CONCORD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA trusted for https:// participants (instead of system roots).
    #[arg(long, env = "CONCORD_PARTICIPANT_CA")]
    pub participant_ca: Option<PathBuf>,
    /// PEM client certificate presented to https:// participants.
    #[arg(long, env = "CONCORD_PARTICIPANT_CERT")]
    pub participant_cert: Option<PathBuf>,
    /// PEM private key of participant_cert.
    #[arg(long, env = "CONCORD_PARTICIPANT_KEY")]
    pub participant_key: Option<PathBuf>,
}

/// The same keys as [`ServeArgs`], as found in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    database_url: Option<String>,
    pool_size: Option<u32>,
    instance_id: Option<String>,
    no_migrate: Option<bool>,
    default_timeout: Option<String>,
    max_timeout: Option<String>,
    call_timeout: Option<String>,
    retry_initial: Option<String>,
    retry_factor: Option<f32>,
    retry_max: Option<String>,
    attention_attempts: Option<u32>,
    attention_age: Option<String>,
    lease: Option<String>,
    poll_interval: Option<String>,
    recovery_concurrency: Option<u32>,
    max_payload_bytes: Option<usize>,
    max_request_bytes: Option<usize>,
    max_wait: Option<String>,
    breaker_failures: Option<u32>,
    breaker_cooldown: Option<String>,
    shutdown_grace: Option<String>,
    admin_tokens: Option<Vec<String>>,
    metrics_listen: Option<String>,
    retention: Option<String>,
    retention_batch: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    participant_ca: Option<PathBuf>,
    participant_cert: Option<PathBuf>,
    participant_key: Option<PathBuf>,
}

/// Retry delays of phase-2 calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    pub initial: Duration,
    pub factor: f32,
    pub max: Duration,
}

/// Validated configuration of one coordinator instance.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub pool_size: u32,
    pub instance_id: String,
    pub migrate: bool,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub call_timeout: Duration,
    pub retry: RetryConfig,
    pub attention_attempts: u32,
    pub attention_age: Duration,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub recovery_concurrency: u32,
    pub max_payload_bytes: usize,
    pub max_request_bytes: usize,
    pub max_wait: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub shutdown_grace: Duration,
    /// Who may call the admin API (`Debug` shows the names only).
    pub admin_tokens: AdminTokens,
    /// HTTP listener of /metrics, /healthz and /readyz; `None`: none.
    pub metrics_listen: Option<SocketAddr>,
    /// Finished transactions older than this are deleted; `None`: kept.
    pub retention: Option<Duration>,
    pub retention_batch: u32,
    /// Server certificate and key (PEM): TLS on the gRPC port when both
    /// are set; with `tls_client_ca`, clients must present a certificate.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    /// For https:// participants: the CA to trust (else the system roots)
    /// and a client certificate and key to present (mutual TLS).
    pub participant_ca: Option<PathBuf>,
    pub participant_cert: Option<PathBuf>,
    pub participant_key: Option<PathBuf>,
}

/// Default database when nothing is configured.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/concord";

/// Default HTTP listener of `concord serve` (embedded servers and tests
/// built from [`Config::with_database`] have none unless they ask).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// Parses an address, or `off` for none.
fn parse_optional_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("{s:?} is not an address or \"off\" ({e})"))
}

/// Parses a duration, or `off` for none.
fn parse_optional_duration(s: &str) -> Result<Option<Duration>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_duration(s).map(Some)
}

impl Config {
    /// Defaults for everything, on the given database; used by tests and
    /// as the base of [`Config::resolve`].
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            listen: "127.0.0.1:50051".parse().expect("static address"),
            database_url: database_url.into(),
            pool_size: 16,
            instance_id: default_instance_id(),
            migrate: true,
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(3600),
            call_timeout: Duration::from_secs(5),
            retry: RetryConfig {
                initial: Duration::from_secs(1),
                factor: 2.0,
                max: Duration::from_secs(60),
            },
            attention_attempts: 10,
            attention_age: Duration::from_secs(600),
            lease: Duration::from_secs(3),
            poll_interval: Duration::from_secs(1),
            recovery_concurrency: 64,
            max_payload_bytes: 1024 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            max_wait: Duration::from_secs(60),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            admin_tokens: AdminTokens::default(),
            metrics_listen: None,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_batch: 500,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            participant_ca: None,
            participant_cert: None,
            participant_key: None,
        }
    }

    /// Flags over file over defaults, then validation.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut c = Config::with_database(
            args.database_url
                .clone()
                .or(file.database_url)
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string()),
        );
        let dur = |key: &'static str, v: Option<String>| -> Result<Option<Duration>, ConfigError> {
            v.map(|s| parse_duration(&s).map_err(|message| ConfigError::Invalid { key, message }))
                .transpose()
        };
        macro_rules! pick {
            ($field:ident) => {
                if let Some(v) = args.$field.clone().or(file.$field.clone()) {
                    c.$field = v;
                }
            };
            ($field:ident, duration) => {
                if let Some(v) = args
                    .$field
                    .or(dur(stringify!($field), file.$field.clone())?)
                {
                    c.$field = v;
                }
            };
        }
        pick!(listen);
        pick!(pool_size);
        pick!(instance_id);
        pick!(default_timeout, duration);
        pick!(max_timeout, duration);
        pick!(call_timeout, duration);
        pick!(attention_attempts);
        pick!(attention_age, duration);
        pick!(lease, duration);
        pick!(poll_interval, duration);
        pick!(recovery_concurrency);
        pick!(max_payload_bytes);
        pick!(max_request_bytes);
        pick!(max_wait, duration);
        pick!(breaker_failures);
        pick!(breaker_cooldown, duration);
        pick!(shutdown_grace, duration);
        pick!(retention_batch);
        macro_rules! path {
            ($field:ident) => {
                if let Some(v) = args.$field.clone().or(file.$field.clone()) {
                    c.$field = Some(v);
                }
            };
        }
        path!(tls_cert);
        path!(tls_key);
        path!(tls_client_ca);
        path!(participant_ca);
        path!(participant_cert);
        path!(participant_key);
        c.metrics_listen = parse_optional_addr(
            args.metrics_listen
                .as_deref()
                .or(file.metrics_listen.as_deref())
                .unwrap_or(DEFAULT_METRICS_LISTEN),
        )
        .map_err(|message| ConfigError::Invalid {
            key: "metrics_listen",
            message,
        })?;
        if let Some(v) = args.retention.as_deref().or(file.retention.as_deref()) {
            c.retention = parse_optional_duration(v).map_err(|message| ConfigError::Invalid {
                key: "retention",
                message,
            })?;
        }
        let admin_tokens = match (&args.admin_tokens, &file.admin_tokens) {
            (Some(flag), _) => Some(AdminTokens::parse_list(flag)),
            (None, Some(list)) => Some(AdminTokens::parse(list.iter().map(String::as_str))),
            (None, None) => None,
        };
        if let Some(tokens) = admin_tokens {
            c.admin_tokens = tokens.map_err(|message| ConfigError::Invalid {
                key: "admin_tokens",
                message,
            })?;
        }
        if let Some(no) = args.no_migrate.or(file.no_migrate) {
            c.migrate = !no;
        }
        if let Some(v) = args
            .retry_initial
            .or(dur("retry_initial", file.retry_initial)?)
        {
            c.retry.initial = v;
        }
        if let Some(v) = args.retry_factor.or(file.retry_factor) {
            c.retry.factor = v;
        }
        if let Some(v) = args.retry_max.or(dur("retry_max", file.retry_max)?) {
            c.retry.max = v;
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks relations between values that each parsed fine alone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.pool_size == 0 {
            return invalid("pool_size", "must be at least 1");
        }
        if self.retry.factor < 1.0 {
            return invalid("retry_factor", "must be at least 1.0");
        }
        if self.retry.initial.is_zero() || self.retry.max < self.retry.initial {
            return invalid(
                "retry_max",
                "must be at least retry_initial, which must be > 0",
            );
        }
        if self.default_timeout > self.max_timeout || self.default_timeout.is_zero() {
            return invalid("default_timeout", "must be > 0 and at most max_timeout");
        }
        if self.lease < Duration::from_millis(300) {
            return invalid("lease", "must be at least 300ms");
        }
        if self.poll_interval.is_zero() {
            return invalid("poll_interval", "must be > 0");
        }
        if self.call_timeout.is_zero() {
            return invalid("call_timeout", "must be > 0");
        }
        if self.max_payload_bytes > self.max_request_bytes {
            return invalid("max_payload_bytes", "must be at most max_request_bytes");
        }
        if self.instance_id.is_empty() || self.instance_id.len() > 128 {
            return invalid("instance_id", "must be 1-128 characters");
        }
        if self.recovery_concurrency == 0 {
            return invalid("recovery_concurrency", "must be at least 1");
        }
        if self.retention_batch == 0 {
            return invalid("retention_batch", "must be at least 1");
        }
        if self.retention.is_some_and(|r| r < Duration::from_secs(60)) {
            return invalid("retention", "must be at least 1m (or off)");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("tls_cert", "tls_cert and tls_key go together");
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return invalid("tls_client_ca", "needs tls_cert and tls_key");
        }
        if self.participant_cert.is_some() != self.participant_key.is_some() {
            return invalid(
                "participant_cert",
                "participant_cert and participant_key go together",
            );
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.retry.initial, Duration::from_secs(1));
        assert_eq!(c.attention_attempts, 10);
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "call_timeout = \"7s\"\npool_size = 3\nretry_max = \"2m\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            pool_size: Some(9),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.pool_size, 9);
        assert_eq!(c.call_timeout, Duration::from_secs(7));
        assert_eq!(c.retry.max, Duration::from_secs(120));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let err = Config::resolve(&ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
        std::fs::write(&path, "lease = \"soon\"\n").unwrap();
        let err = Config::resolve(&ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("invalid lease"), "{err}");
        let err = Config::resolve(&ServeArgs {
            retry_factor: Some(0.5),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("retry_factor"));
    }

    #[test]
    fn admin_tokens_from_flag_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "admin_tokens = [\"alice:s3cret\"]\n").unwrap();
        let from_file = Config::resolve(&ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            from_file.admin_tokens.authenticate(b"s3cret"),
            Some("alice")
        );
        assert!(!format!("{from_file:?}").contains("s3cret"));
        let from_flag = Config::resolve(&ServeArgs {
            config: Some(path),
            admin_tokens: Some("ops-bot:t0ken,bob:pw".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(from_flag.admin_tokens.authenticate(b"s3cret"), None);
        assert_eq!(from_flag.admin_tokens.authenticate(b"pw"), Some("bob"));
        let err = Config::resolve(&ServeArgs {
            admin_tokens: Some("nocolon".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("invalid admin_tokens"), "{err}");
    }

    /// The keys of the TOML file, as serde sees them: a deserializer that
    /// records the fields a struct asks for and refuses everything.
    fn file_keys() -> Vec<&'static str> {
        struct Capture<'a>(&'a mut Vec<&'static str>);
        impl<'de> serde::Deserializer<'de> for Capture<'_> {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(
                self,
                _: V,
            ) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("structs only"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.extend_from_slice(fields);
                Err(serde::de::Error::custom("captured"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let mut keys = Vec::new();
        let _ = FileConfig::deserialize(Capture(&mut keys));
        keys
    }

    #[test]
    fn shipped_file_documents_exactly_the_keys_and_each_has_a_flag() {
        let keys = file_keys();
        assert!(
            keys.contains(&"metrics_listen") && keys.contains(&"lease"),
            "{keys:?}"
        );
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/concord.toml");
        let text = std::fs::read_to_string(path).unwrap();
        // `key = value`, commented out or not.
        let documented: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                let (k, _) = l.trim_start_matches('#').trim().split_once(" = ")?;
                k.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
                    .then_some(k)
            })
            .collect();
        for k in &keys {
            assert!(
                documented.contains(k),
                "config/concord.toml does not document {k}"
            );
        }
        for k in &documented {
            assert!(
                keys.contains(k),
                "config/concord.toml documents {k}, which is no key"
            );
        }
        let command = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        for k in &keys {
            assert!(
                command.get_arguments().any(|a| a.get_id() == *k),
                "key {k} has no flag"
            );
        }
    }

    #[test]
    fn metrics_listen_and_retention_take_off() {
        let c = Config::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(
            c.metrics_listen,
            Some(DEFAULT_METRICS_LISTEN.parse().unwrap())
        );
        assert_eq!(c.retention, Some(Duration::from_secs(7 * 24 * 3600)));
        let c = Config::resolve(&ServeArgs {
            metrics_listen: Some("off".into()),
            retention: Some("off".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.metrics_listen, c.retention), (None, None));
        let c = Config::resolve(&ServeArgs {
            metrics_listen: Some("0.0.0.0:9000".into()),
            retention: Some("30d".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.metrics_listen, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(c.retention, Some(Duration::from_secs(30 * 24 * 3600)));
        for bad in [
            ServeArgs {
                metrics_listen: Some("nowhere".into()),
                ..Default::default()
            },
            ServeArgs {
                tls_cert: Some("cert.pem".into()),
                ..Default::default()
            },
            ServeArgs {
                retention: Some("1s".into()),
                ..Default::default()
            },
        ] {
            assert!(Config::resolve(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shipped_example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/concord.toml");
        let c = Config::resolve(&ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.lease, Duration::from_secs(3));
    }
}
