//! The alert webhooks: when a transaction becomes needs_attention, and when
//! it stops needing it (it finished, or an operator resolved it), a JSON
//! document is POSTed to every configured URL.
//!
//! At most once per transaction per change: the alert is a row inserted by
//! the very write that changes the flag (the store's outbox), so a change
//! has exactly one alert whatever crashes and however many instances. Any
//! instance delivers it: it claims due alerts under a lease (`SKIP LOCKED`
//! on PostgreSQL), posts, and records which URLs answered 2xx, so a retry
//! (with backoff, in-process first, then persisted) only posts to the
//! others. A URL can see an alert twice only if its instance dies (or its
//! lease runs out) between that URL's 2xx and the record of it; each
//! document carries its `id` (and a `concord-alert-id` header) for such a
//! receiver to drop the repeat.
//!
//! This runs on its own task with its own HTTP client and deadlines: a
//! slow or dead receiver never holds up the recovery loop.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::store::admin::{AdminStore, AlertAttempt, AlertRecord};

/// Alerts claimed per pass.
const BATCH: u32 = 32;
/// How long a claim keeps other instances off an alert: longer than the
/// posts of one pass can take (every URL, retries included).
const LEASE: Duration = Duration::from_secs(60);
/// Deadline of one POST.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time between passes when nothing was due.
const IDLE: Duration = Duration::from_millis(500);
/// Longest wait before a failed alert is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Where alerts go.
#[derive(Debug, Clone, Default)]
pub struct AlertSettings {
    /// http:// or https:// URLs, each POSTed every alert.
    pub urls: Vec<String>,
    /// Base URL of the console (`http://host:9464`), for links; none: the
    /// document has no console link, only the `tx show` command.
    pub console: Option<String>,
}

/// The JSON document POSTed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertDocument {
    /// Unique per alert: a receiver that sees an id twice drops the repeat.
    pub id: i64,
    /// `needs_attention` or `attention_cleared`.
    pub event: String,
    pub gid: String,
    /// `tcc`, `saga` or `msg`.
    pub mode: String,
    /// Why it needs attention, or why it no longer does.
    pub reason: Option<String>,
    /// The participant of the first branch whose last call failed.
    pub participant: Option<String>,
    /// When the change happened (RFC 3339).
    pub at: String,
    /// The transaction in the console, if its address is known.
    pub link: Option<String>,
    /// The CLI command that shows it.
    pub show: String,
}

impl AlertDocument {
    pub fn of(a: &AlertRecord, console: Option<&str>) -> Self {
        AlertDocument {
            id: a.id,
            event: a.kind.clone(),
            gid: a.gid.to_string(),
            mode: a.mode.as_str().to_string(),
            reason: a.reason.clone(),
            participant: a.participant.clone(),
            at: a.created_at.to_rfc3339(),
            link: console.map(|base| {
                format!(
                    "{}/ui/#/tx/{}",
                    base.trim_end_matches('/'),
                    urlencoding(a.gid.as_str())
                )
            }),
            show: format!("concord tx show {}", a.gid),
        }
    }
}

/// Gids are `[A-Za-z0-9._:-]`: only `:` needs escaping in a fragment to be
/// safe for every reader.
fn urlencoding(gid: &str) -> String {
    gid.replace(':', "%3A")
}

/// The wait before the `attempts + 1`-th pass at an alert: 1 s doubling,
/// at most [`MAX_BACKOFF`].
pub fn backoff(attempts: u32) -> Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// Delivers alerts until `stop`, as instance `owner`.
pub async fn run(
    store: Arc<dyn AdminStore>,
    owner: String,
    settings: AlertSettings,
    stop: CancellationToken,
) {
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alert webhooks disabled: no http client");
            return;
        }
    };
    tracing::info!(urls = settings.urls.len(), "alert webhooks on");
    loop {
        let claimed = match store.claim_alerts(&owner, BATCH, LEASE).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "alerts not claimed; trying again");
                Vec::new()
            }
        };
        let idle = claimed.is_empty();
        let passes = claimed
            .into_iter()
            .map(|a| deliver(store.as_ref(), &client, &settings, &owner, a));
        futures::future::join_all(passes).await;
        if idle {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(IDLE) => {}
            }
        } else if stop.is_cancelled() {
            return;
        }
    }
}

fn client() -> Result<reqwest::Client, String> {
    let tls = crate::tls::http_tls(None, None)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(2))
        .timeout(POST_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot set up the alert http client: {e}"))
}

/// One pass at one alert: POSTs it to every URL that has not taken it,
/// each retried a few times at once, then records the outcome.
async fn deliver(
    store: &dyn AdminStore,
    client: &reqwest::Client,
    settings: &AlertSettings,
    owner: &str,
    alert: AlertRecord,
) {
    let doc = AlertDocument::of(&alert, settings.console.as_deref());
    let body = match serde_json::to_vec(&doc) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(alert = alert.id, error = %e, "alert not serialisable");
            return;
        }
    };
    let mut delivered = alert.delivered_to.clone();
    let mut errors = Vec::new();
    for url in settings
        .urls
        .iter()
        .filter(|u| !alert.delivered_to.contains(u))
    {
        let post = || async {
            let response = client
                .post(url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("concord-alert-id", alert.id)
                .body(body.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("answered {}", response.status()))
            }
        };
        let posted = post
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(2)
                    .with_jitter(),
            )
            .sleep(tokio::time::sleep)
            .await;
        match posted {
            Ok(()) => delivered.push(url.clone()),
            Err(e) => {
                tracing::warn!(alert = alert.id, gid = %alert.gid, url, error = %e, "alert not delivered; retried later");
                errors.push(format!("{url}: {e}"));
            }
        }
    }
    let done = settings.urls.iter().all(|u| delivered.contains(u));
    let now = Utc::now();
    let next_at = now + chrono::Duration::from_std(backoff(alert.attempts)).unwrap_or_default();
    let attempt = AlertAttempt {
        id: alert.id,
        owner: owner.to_string(),
        delivered_to: delivered,
        done,
        next_at,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        now,
    };
    match store.record_alert_attempt(attempt).await {
        Ok(true) if done => {
            tracing::info!(alert = alert.id, gid = %alert.gid, event = %alert.kind, "alert delivered")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(alert = alert.id, error = %e, "alert attempt not recorded"),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::Gid;
    use crate::machine::Mode;

    #[test]
    fn backoff_doubles_from_a_second_up_to_five_minutes() {
        let waits: Vec<u64> = [1, 2, 3, 4, 9, 10, 40]
            .map(|a| backoff(a).as_secs())
            .to_vec();
        assert_eq!(waits, [1, 2, 4, 8, 256, 300, 300]);
    }

    #[test]
    fn the_document_names_the_transaction_and_links_to_it() {
        let a = AlertRecord {
            id: 7,
            gid: Gid::parse("order:42").unwrap(),
            mode: Mode::Tcc,
            kind: "needs_attention".into(),
            reason: Some("branch 1 (pay.charge) confirm failing".into()),
            created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            attempts: 1,
            delivered_to: Vec::new(),
            participant: Some("pay".into()),
        };
        let doc = AlertDocument::of(&a, Some("http://concord:9464/"));
        assert_eq!(
            doc.link.as_deref(),
            Some("http://concord:9464/ui/#/tx/order%3A42")
        );
        assert_eq!(doc.show, "concord tx show order:42");
        assert_eq!(doc.mode, "tcc");
        assert_eq!(AlertDocument::of(&a, None).link, None);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["event"], "needs_attention");
        assert_eq!(json["participant"], "pay");
        assert_eq!(json["at"], "2026-01-01T00:00:00+00:00");
    }
}
