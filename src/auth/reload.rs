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
    let Some(path) = auth.file.clone() else {
        return;
    };
    let mut seen = std::fs::read(&path).ok();
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch sighup; the identities file is still polled");
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
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup => true,
            _ = tokio::time::sleep(POLL) => false,
        };
        let now = std::fs::read(&path).ok();
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match auth.reload() {
            Ok(n) => {
                tracing::info!(path = %path.display(), identities = n, sighup = forced, "identities reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "identities not reloaded; the previous ones stay in force")
            }
        }
    }
}
