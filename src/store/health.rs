//! Whether the database answers, as this instance last saw it: a probe
//! asks every [`PROBE_EVERY`] and two failures in a row mark it down. While
//! it is down the gRPC API refuses at once with `UNAVAILABLE` ("database
//! unreachable") instead of letting each request wait for a connection,
//! `/readyz` fails, and requests already waiting are answered the same way;
//! when a probe succeeds again everything resumes, without a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Store;

/// How often the probe asks.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Longest one probe waits: an answer slower than this counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_millis(700);
/// Failures in a row that mark the database down; one failure is often a
/// connection the server closed, which the next probe replaces.
const FAILURES_DOWN: u32 = 2;

/// The database's health, shared by the API, `/readyz` and the probe.
#[derive(Debug)]
pub struct DbHealth {
    up: watch::Sender<bool>,
    /// Why it is down (the last probe error).
    reason: std::sync::Mutex<String>,
}

impl Default for DbHealth {
    fn default() -> Self {
        Self {
            up: watch::Sender::new(true),
            reason: std::sync::Mutex::new(String::new()),
        }
    }
}

impl DbHealth {
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// The message a refused request carries.
    pub fn refusal(&self) -> String {
        let reason = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        format!("database unreachable: {reason}")
    }

    /// Resolves when the database is (or becomes) down.
    pub async fn went_down(&self) {
        let mut rx = self.up.subscribe();
        // An error here means the sender is gone: never down then.
        if rx.wait_for(|up| !*up).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn set(&self, up: bool, reason: Option<String>) {
        if let Some(r) = reason {
            *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = r;
        }
        self.up.send_if_modified(|now| {
            let changed = *now != up;
            *now = up;
            changed
        });
    }

    /// Probes `store` until `stop`, logging each change once.
    pub async fn probe(self: Arc<Self>, store: Arc<dyn Store>, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
            let answer = match tokio::time::timeout(PROBE_TIMEOUT, store.ready()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            match answer {
                Ok(()) => {
                    if !self.is_up() {
                        tracing::info!("database reachable again");
                    }
                    failures = 0;
                    self.set(true, None);
                }
                Err(reason) => {
                    failures += 1;
                    if failures >= FAILURES_DOWN && self.is_up() {
                        tracing::warn!(%reason, "database unreachable; refusing requests until it answers");
                        self.set(false, Some(reason));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn went_down_resolves_when_marked_down_and_not_before() {
        let h = Arc::new(DbHealth::default());
        assert!(h.is_up());
        let waiting = tokio::spawn({
            let h = Arc::clone(&h);
            async move { h.went_down().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        h.set(false, Some("connection refused".into()));
        waiting.await.unwrap();
        assert!(!h.is_up());
        assert_eq!(h.refusal(), "database unreachable: connection refused");
        h.set(true, None);
        assert!(h.is_up());
    }
}
