use std::path::Path;
use std::time::Duration;

use clap::{Args, Command, FromArgMatches};

use super::resolve::keys;
use super::*;

/// `concord serve` with these flags, the test's environment ignored.
fn flags(args: &[&str]) -> ServeArgs {
    try_flags(args).unwrap()
}

fn try_flags(args: &[&str]) -> Result<ServeArgs, clap::Error> {
    ServeArgs::parse_without_env(std::iter::once("serve").chain(args.iter().copied()))
}

fn file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn shipped_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/concord.toml")
}

#[test]
fn defaults_are_valid() {
    let c = Config::resolve(&ServeArgs::default()).unwrap();
    assert_eq!(c.database_url, None);
    assert_eq!(
        c.store_location().unwrap(),
        StoreLocation::Sqlite(Path::new(".").join("concord.db"))
    );
    let c = Config::resolve(&flags(&["--data-dir", "/var/lib/concord"])).unwrap();
    assert_eq!(
        c.store_location().unwrap(),
        StoreLocation::Sqlite("/var/lib/concord/concord.db".into())
    );
    let c = Config::resolve(&flags(&["--database-url", DEFAULT_DATABASE_URL])).unwrap();
    assert_eq!(
        c.store_location().unwrap(),
        StoreLocation::Postgres(DEFAULT_DATABASE_URL.into())
    );
    let err = Config::resolve(&flags(&["--database-url", "mysql://h/db"])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid database_url: must start with postgres://"),
        "{err}"
    );
    assert_eq!(c.retry.initial, Duration::from_secs(1));
    assert_eq!(c.attention_attempts, 10);
    assert!(c.migrate);
    let none_given = Config::resolve(&flags(&[])).unwrap();
    assert_eq!(none_given.pool_size, 16);
    assert_eq!(none_given.retry, RetryConfig::default());
}

#[test]
fn flags_override_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "call_timeout = \"7s\"\npool_size = 3\nretry_max = \"2m\"\nno_migrate = true\n",
    );
    let c = Config::resolve(&flags(&["--config", &path, "--pool-size", "9"])).unwrap();
    assert_eq!(c.pool_size, 9);
    assert_eq!(c.call_timeout, Duration::from_secs(7));
    assert_eq!(c.retry.max, Duration::from_secs(120));
    assert_eq!(c.retry.initial, Duration::from_secs(1), "default");
    assert!(!c.migrate);
    let c = Config::resolve(&flags(&[
        "--config",
        &path,
        "--no-migrate",
        "false",
        "--retry-max",
        "90s",
    ]))
    .unwrap();
    assert!(c.migrate);
    assert_eq!(c.retry.max, Duration::from_secs(90));
}

/// Runs in a child process of the test binary, with variables set: the
/// environment sits between the flags and the file.
#[test]
fn environment_sits_between_flags_and_file() {
    const CHILD: &str = "CONCORD_CONFIG_TEST_CHILD";
    const NAME: &str = "config::tests::environment_sits_between_flags_and_file";
    if let Some(path) = std::env::var_os(CHILD) {
        let cmd = ServeArgs::augment_args(Command::new("serve"));
        let path = path.to_str().unwrap();
        let matches = cmd
            .try_get_matches_from(["serve", "--config", path, "--call-timeout", "11s"])
            .unwrap();
        let c = Config::resolve(&ServeArgs::from_arg_matches(&matches).unwrap()).unwrap();
        assert_eq!(c.pool_size, 7, "the variable over the file");
        assert_eq!(
            c.call_timeout,
            Duration::from_secs(11),
            "the flag over the variable"
        );
        assert_eq!(c.lease, Duration::from_secs(4), "the file over the default");
        assert_eq!(c.retention, None, "\"off\" from the variable");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "pool_size = 3\ncall_timeout = \"7s\"\nlease = \"4s\"\n",
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--test-threads", "1"])
        .env(CHILD, &path)
        .env("CONCORD_POOL_SIZE", "7")
        .env("CONCORD_CALL_TIMEOUT", "9s")
        .env("CONCORD_RETENTION", "off")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let resolve = |text: &str| {
        let path = file(&dir, text);
        Config::resolve(&flags(&["--config", &path]))
            .unwrap_err()
            .to_string()
    };
    let err = resolve("no_such_key = 1\n");
    assert!(err.ends_with("unknown key no_such_key"), "{err}");
    let err = resolve("lease = \"soon\"\n");
    assert!(
        err.contains("invalid lease: \"soon\" is not a duration"),
        "{err}"
    );
    let err = resolve("pool_size = \"many\"\n");
    assert!(err.contains("invalid pool_size"), "{err}");
    let err = resolve("retry_initial = \"0s\"\n");
    assert!(err.contains("invalid retry_max"), "{err}");
    let err = resolve("pool_size = [\n");
    assert!(err.starts_with("config file "), "{err}");
    let err = Config::resolve(&flags(&["--retry-factor", "0.5"])).unwrap_err();
    assert!(err.to_string().contains("retry_factor"), "{err}");
    // A bad flag value is refused by clap, naming the flag.
    let err = try_flags(&["--lease", "soon"]).unwrap_err().to_string();
    assert!(err.contains("--lease") && err.contains("soon"), "{err}");
}

#[test]
fn admin_tokens_from_flag_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "admin_tokens = [\"alice:s3cret\"]\n");
    let from_file = Config::resolve(&flags(&["--config", &path])).unwrap();
    assert_eq!(
        from_file.admin_tokens.authenticate(b"s3cret"),
        Some("alice")
    );
    assert!(!format!("{from_file:?}").contains("s3cret"));
    let args = flags(&["--config", &path, "--admin-tokens", "ops-bot:t0ken,bob:pw"]);
    assert!(!format!("{args:?}").contains("t0ken"), "{args:?}");
    let from_flag = Config::resolve(&args).unwrap();
    assert_eq!(from_flag.admin_tokens.authenticate(b"s3cret"), None);
    assert_eq!(from_flag.admin_tokens.authenticate(b"pw"), Some("bob"));
    let err = try_flags(&["--admin-tokens", "nocolon"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--admin-tokens"), "{err}");
    let bad = file(&dir, "admin_tokens = [\"nocolon\"]\n");
    let err = Config::resolve(&flags(&["--config", &bad])).unwrap_err();
    assert!(err.to_string().contains("invalid admin_tokens"), "{err}");
}

/// `key = value` lines of the shipped file, commented out or not.
fn documented() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(shipped_file()).unwrap();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim_start_matches('#').trim().split_once(" = ")?;
            k.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
                .then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn shipped_file_documents_exactly_the_keys_and_each_has_a_flag() {
    let keys = keys();
    assert!(
        keys.iter().any(|k| k == "metrics_listen") && keys.iter().any(|k| k == "retry_max"),
        "{keys:?}"
    );
    let documented = documented();
    for k in &keys {
        assert!(
            documented.iter().any(|(d, _)| d == k),
            "config/concord.toml does not document {k}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for (k, example) in &documented {
        assert!(
            keys.contains(k),
            "config/concord.toml documents {k}, which is no key"
        );
        // The example value (even a commented-out one) is accepted.
        let path = file(&dir, &format!("{k} = {example}\n"));
        let resolved = Config::resolve(&flags(&["--config", &path]));
        let paired = [
            "tls_cert",
            "tls_key",
            "tls_client_ca",
            "participant_cert",
            "participant_key",
        ];
        if !paired.contains(&k.as_str()) {
            resolved.unwrap_or_else(|e| panic!("{k} = {example}: {e}"));
        }
    }
    // Every key is a flag of `concord serve`, with help and a variable.
    let command = ServeArgs::augment_args(Command::new("serve"));
    for k in &keys {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == k.as_str())
            .unwrap_or_else(|| panic!("key {k} has no flag"));
        assert_eq!(
            arg.get_long(),
            Some(k.replace('_', "-").as_str()),
            "flag of {k}"
        );
        assert!(arg.get_help().is_some(), "{k} has no help");
        assert!(arg.get_env().is_some(), "{k} has no environment variable");
        assert!(!arg.is_required_set(), "{k} must not be required");
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
    let c = Config::resolve(&flags(&["--metrics-listen", "off", "--retention", "off"])).unwrap();
    assert_eq!((c.metrics_listen, c.retention), (None, None));
    let c = Config::resolve(&flags(&[
        "--metrics-listen",
        "0.0.0.0:9000",
        "--retention",
        "30d",
    ]))
    .unwrap();
    assert_eq!(c.metrics_listen, Some("0.0.0.0:9000".parse().unwrap()));
    assert_eq!(c.retention, Some(Duration::from_secs(30 * 24 * 3600)));
    assert!(try_flags(&["--metrics-listen", "nowhere"]).is_err());
    for bad in [
        &["--tls-cert", "cert.pem"][..],
        &["--retention", "1s"],
        &["--participant-key", "k.pem"],
    ] {
        assert!(Config::resolve(&flags(bad)).is_err(), "{bad:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "metrics_listen = \"off\"\nretention = \"OFF\"\n");
    let c = Config::resolve(&flags(&["--config", &path])).unwrap();
    assert_eq!((c.metrics_listen, c.retention), (None, None));
}

#[test]
fn the_dtm_api_listens_on_dtms_port_and_takes_off() {
    let c = Config::resolve(&ServeArgs::default()).unwrap();
    assert_eq!(c.dtm_listen, Some("127.0.0.1:36789".parse().unwrap()));
    let c = Config::resolve(&flags(&["--dtm-listen", "off"])).unwrap();
    assert_eq!(c.dtm_listen, None);
    let c = Config::resolve(&flags(&["--dtm-listen", "0.0.0.0:36790"])).unwrap();
    assert_eq!(c.dtm_listen, Some("0.0.0.0:36790".parse().unwrap()));
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "dtm_listen = \"off\"\n");
    let c = Config::resolve(&flags(&["--config", &path])).unwrap();
    assert_eq!(c.dtm_listen, None);
    assert!(try_flags(&["--dtm-listen", "nowhere"]).is_err());
}

#[test]
fn shipped_example_file_parses() {
    let path = shipped_file();
    let c = Config::resolve(&flags(&["--config", path.to_str().unwrap()])).unwrap();
    assert_eq!(c.lease, Duration::from_secs(3));
    // Its values are the defaults.
    let same_id = |c: Config| Config {
        instance_id: "i".into(),
        ..c
    };
    assert_eq!(
        format!("{:?}", same_id(c)),
        format!("{:?}", same_id(Config::default()))
    );
}
