//! Debian's chromium, headless, driven over WebDriver (`chromedriver`) by
//! fantoccini, with the few steps the scenario repeats; and the page of a
//! hostile site.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::time::Instant;

/// `chromedriver` and a headless Chromium session, ended on drop.
pub(super) struct Browser {
    pub(super) client: Client,
    driver: tokio::process::Child,
}

impl Browser {
    /// `None` (after saying so loudly) when chromedriver is missing outside CI.
    pub(super) async fn start() -> Option<Self> {
        let found = std::process::Command::new("chromedriver")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            let message = "chromedriver not found: the console's browser test needs Debian's \
                           chromium and chromium-driver (apt-get install -y chromium chromium-driver; \
                           .ci/run installs them)";
            assert!(std::env::var("CI").is_err(), "{message}");
            eprintln!("\n!!!!! SKIPPED: {message} !!!!!\n");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1200,900"] }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < until => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot start a chromium session: {e}"),
            }
        };
        Some(Self { client, driver })
    }

    /// The text of the first element matching `css`, or `None`.
    pub(super) async fn text(&self, css: &str) -> Option<String> {
        let v = self
            .client
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(css)],
            )
            .await
            .unwrap();
        v.as_str().map(String::from)
    }

    /// Polls until the first element matching `css` contains `wanted`.
    pub(super) async fn until_text(&self, css: &str, wanted: &str) -> String {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text(css).await;
            if let Some(t) = &text
                && t.contains(wanted)
            {
                return t.clone();
            }
            assert!(
                Instant::now() < until,
                "{css} never contained {wanted:?}; it is {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Records, from now on in this document, every Content-Security-Policy
    /// violation: the console's own page must cause none.
    pub(super) async fn watch_csp(&self) {
        self.client
            .execute(
                "window.__csp = []; document.addEventListener('securitypolicyviolation', \
                 e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));",
                vec![],
            )
            .await
            .unwrap();
    }

    pub(super) async fn csp_violations(&self) -> Value {
        self.client
            .execute("return window.__csp", vec![])
            .await
            .unwrap()
    }

    /// Sends keys (WebDriver key codes) to the focused element.
    pub(super) async fn keys(&self, keys: &str) {
        let focused = self.client.active_element().await.unwrap();
        focused.send_keys(keys).await.unwrap();
    }

    pub(super) async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub(super) async fn type_into(&self, css: &str, text: &str) {
        let input = self.client.find(Locator::Css(css)).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// Runs a command from the detail page: button, confirmation, field.
    pub(super) async fn command(&self, name: &str, field: &str) -> String {
        self.client
            .execute(
                "document.getElementById('action-result').textContent = ''",
                vec![],
            )
            .await
            .unwrap();
        self.click(&format!("#do-{name}")).await;
        let title = self.until_text("#confirm-text", "").await;
        assert!(
            title.contains("order-1"),
            "the confirmation names the transaction: {title}"
        );
        if !field.is_empty() {
            self.type_into("#confirm-field", field).await;
        }
        self.click("#confirm-ok").await;
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let t = self.text("#action-result").await.unwrap_or_default();
            if t.starts_with("Done") || t.starts_with("Refused") || t.starts_with("Nothing") {
                return t;
            }
            assert!(Instant::now() < until, "no result of {name}: {t:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the page when `CONCORD_CONSOLE_SCREENSHOTS` names a
    /// directory (how `docs/console-*.png` were made).
    pub(super) async fn screenshot(&self, name: &str) {
        if let Ok(dir) = std::env::var("CONCORD_CONSOLE_SCREENSHOTS") {
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
        }
    }

    pub(super) async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

/// A page on another origin that posts a command to the console as soon as
/// it loads: what a malicious site open in the operator's browser would do.
pub(super) async fn forging_site(console: SocketAddr) -> SocketAddr {
    let page = format!(
        "<!doctype html><form id=f method=post enctype=text/plain \
         action=\"http://{console}/ui/api/transactions/other-1/pause\">\
         <input name='{{\"note\":\"' value='\"}}'></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
