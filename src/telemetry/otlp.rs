//! Optional export of the coordinator's own spans (one per RPC, one per
//! participant call) over OTLP/HTTP, off unless an endpoint is configured.
//! Spans are batched on a background thread, so a slow or absent collector
//! never slows a transaction down; the batch is flushed at shutdown.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Keeps the exporter alive; dropping it flushes what is left.
pub struct Guard(SdkTracerProvider);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// A tracer provider exporting to `endpoint` (the collector's base URL, for
/// example `http://otel-collector:4318`; spans go to `/v1/traces`).
pub fn provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    // The exporter's reqwest client is built with rustls but no provider of
    // its own (the HTTP participants' client brings ring): name it.
    crate::tls::install_crypto_provider();
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("concord").build())
        .build())
}

/// The tracing layer that hands spans to `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("concord"))
}

/// Starts exporting; `None` when no endpoint is configured.
pub fn start(endpoint: Option<&str>) -> Result<Option<(SdkTracerProvider, Guard)>, String> {
    let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let p = provider(endpoint)?;
    Ok(Some((p.clone(), Guard(p))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spans_reach_an_otlp_http_collector() {
        // A stand-in collector: counts the export requests and their bytes.
        let received = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (r, b) = (Arc::clone(&received), Arc::clone(&bytes));
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (r, b) = (Arc::clone(&r), Arc::clone(&b));
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    b.fetch_add(body.len(), Ordering::SeqCst);
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let endpoint = format!("http://{addr}");
        let provider = tokio::task::spawn_blocking(move || provider(&endpoint).unwrap())
            .await
            .unwrap();
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc", method = "Commit", gid = "g-1");
            let _entered = span.enter();
            tracing::info!("inside");
        });
        tokio::task::spawn_blocking(move || provider.force_flush().unwrap())
            .await
            .unwrap();
        assert!(
            received.load(Ordering::SeqCst) >= 1,
            "no export request arrived"
        );
        assert!(bytes.load(Ordering::SeqCst) > 0);
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert!(start(None).unwrap().is_none());
        assert!(start(Some("")).unwrap().is_none());
    }
}
