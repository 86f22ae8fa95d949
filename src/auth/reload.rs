//! Rotation without a restart: the identities file is read again on SIGHUP
//! and whenever its content changes (looked at every [`POLL`]), so a
//! mounted secret that is updated in place takes effect by itself. A file
//! that does not parse keeps the identities in force (and says why).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Authenticator;

/// How often the file is looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// Reloads `auth` until `stop`.
pub async fn run(auth: Arc<Authenticator>, stop: CancellationToken) {
    watch(auth, Some(POLL), stop).await;
}

/// [`run`], looking at the file every `poll` (never with `None`: then only
/// SIGHUP reloads).
async fn watch(auth: Arc<Authenticator>, poll: Option<Duration>, stop: CancellationToken) {
    let Some(path) = auth.file.clone() else {
        return;
    };
    let shown = path.clone();
    watch_file(path, poll, stop, move |forced| match auth.reload() {
        Ok(n) => {
            tracing::info!(path = %shown.display(), identities = n, sighup = forced, "identities reloaded")
        }
        Err(e) => {
            tracing::error!(error = %e, "identities not reloaded; the previous ones stay in force")
        }
    })
    .await;
}

/// Calls `changed(sighup)` on every SIGHUP and whenever the content of
/// `path` changes (looked at every `poll`; never with `None`), until
/// `stop`. The identities file and `coordinator_token_file` rotate so.
pub async fn watch_file(
    path: std::path::PathBuf,
    poll: Option<Duration>,
    stop: CancellationToken,
    mut changed: impl FnMut(bool) + Send + 'static,
) {
    let mut seen = std::fs::read(&path).ok();
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch sighup; the file is still polled");
            None
        }
    };
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        let tick = async {
            match poll {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup => true,
            _ = tick => false,
        };
        let now = std::fs::read(&path).ok();
        if !forced && now == seen {
            continue;
        }
        seen = now;
        changed(forced);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::auth::NamedTokens;

    fn identity(token: &str) -> String {
        format!("[[identity]]\nname = \"checkout\"\ntokens = [\"{token}\"]\ninitiator = true\n")
    }

    /// SIGHUP alone reloads (the poll is off here): the new token works,
    /// the old one no longer does.
    #[tokio::test]
    async fn sighup_reloads_the_identities_file() {
        // Ours from here on: a SIGHUP cannot end the test process.
        let _ours = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identities.toml");
        std::fs::write(&path, identity("old-secret")).unwrap();
        let auth = Arc::new(Authenticator::load(&NamedTokens::default(), Some(&path)).unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(Arc::clone(&auth), None, stop.clone()));
        std::fs::write(&path, identity("new-secret")).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            auth.identities().by_token(b"old-secret").is_some(),
            "nothing reloads without the signal"
        );
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while auth.identities().by_token(b"new-secret").is_none() {
            assert!(std::time::Instant::now() < until, "sighup never reloaded");
            let sent = std::process::Command::new("kill")
                .args(["-HUP", &std::process::id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(auth.identities().by_token(b"old-secret").is_none());
        stop.cancel();
        task.await.unwrap();
    }
}
