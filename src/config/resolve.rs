//! From what the user gave to a validated [`Config`]: the defaults, then
//! the TOML file, then the environment and flags (clap has already put the
//! flag over its variable), then the checks that relate settings to each
//! other.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use serde::Deserialize;

use super::Config;

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
    #[error("config file {path}: unknown key {key}")]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {path}: invalid {key}: {message}")]
    InvalidKey {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("invalid {key}: {message}")]
    Invalid { key: &'static str, message: String },
    /// Flags that clap parsed but could not hand over: a bug, not a typo.
    #[error("flags: {0}")]
    Flags(String),
}

/// The command line of `concord serve`: `--config FILE` and a flag for
/// every setting of [`Config`], each also read from its environment
/// variable. Kept as clap matched it, so that only the settings actually
/// given are applied over the file.
#[derive(Clone, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    pub config: Option<PathBuf>,
    /// What clap matched; `None` (the `Default`): nothing given.
    given: Option<ArgMatches>,
}

const CONFIG_ARG: &str = "config";

impl Args for ServeArgs {
    fn augment_args(cmd: Command) -> Command {
        let cmd = cmd.arg(
            Arg::new(CONFIG_ARG)
                .long(CONFIG_ARG)
                .env("CONCORD_CONFIG")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML configuration file (every key: config/concord.toml)"),
        );
        // Every setting has a value without its flag: the file's or the
        // default.
        Config::augment_args(cmd).mut_args(|a| a.required(false))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self {
            config: matches.get_one::<PathBuf>(CONFIG_ARG).cloned(),
            given: Some(matches.clone()),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// Names the settings given, never their values (a token may be one).
impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given: Vec<_> = self
            .given
            .iter()
            .flat_map(|m| m.ids().filter(|id| m.contains_id(id.as_str())))
            .map(|id| id.as_str())
            .collect();
        f.debug_struct("ServeArgs")
            .field("config", &self.config)
            .field("given", &given)
            .finish()
    }
}

impl ServeArgs {
    /// Parses `concord serve`'s arguments (the first is the program name)
    /// without reading the environment: for tests and embedders, whose
    /// own environment must not change what they asked for.
    pub fn parse_without_env<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cmd = Self::augment_args(Command::new("serve")).mut_args(|a| a.env(None));
        Self::from_arg_matches(&cmd.try_get_matches_from(args)?)
    }
}

impl Config {
    /// Defaults, under the file (if any), under the environment and flags;
    /// then [`Config::validate`].
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let mut c = match &args.config {
            Some(path) => read_file(path)?,
            None => Config::default(),
        };
        if let Some(given) = &args.given {
            c.update_from_arg_matches(given)
                .map_err(|e| ConfigError::Flags(e.to_string()))?;
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
        self.store_location()?;
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
        if self.participant_concurrency == 0 {
            return invalid("participant_concurrency", "must be at least 1");
        }
        if self.retention_batch == 0 {
            return invalid("retention_batch", "must be at least 1");
        }
        if self.retention.is_some_and(|r| r < Duration::from_secs(60)) {
            return invalid("retention", "must be at least 1m (or off)");
        }
        if self.console_idle_timeout < Duration::from_secs(10) {
            return invalid("console_idle_timeout", "must be at least 10s");
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

/// The keys the file accepts: exactly the settings that have a flag.
pub(super) fn keys() -> Vec<String> {
    Config::augment_args(Command::new("keys"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

/// The file over the defaults. Each key is read alone first, so that an
/// error names its key (serde's messages do not).
fn read_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let known = keys();
    for (key, value) in &table {
        if !known.contains(key) {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
            });
        }
        let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
        Config::deserialize(alone).map_err(|e| ConfigError::InvalidKey {
            path: path.to_path_buf(),
            key: key.clone(),
            message: e.message().to_string(),
        })?;
    }
    Config::deserialize(table).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}
