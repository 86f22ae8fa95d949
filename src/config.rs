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
}

/// Default database when nothing is configured.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/concord";

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
