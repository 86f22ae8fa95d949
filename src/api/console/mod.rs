//! The operator console: a browser page at `/ui/` on the HTTP listener,
//! with the CLI's power (list, detail, retry, pause, resume, roll back,
//! resolve, participants, counts) for people who live in a browser.
//!
//! - The page is plain HTML, CSS and JavaScript in `assets/`, compiled into
//!   the binary (`include_str!`): no build step, no request leaves the
//!   coordinator's origin, and the Content-Security-Policy below forbids
//!   any that would.
//! - Its JSON API under `/ui/api/` ([`handlers`]) is a thin adapter over
//!   [`Operator`], like the admin gRPC API, and answers with the CLI's
//!   documented JSON documents (`crate::cli::model`), so `concord tx show
//!   -o json` and the console say the same thing, `blocked_by` included.
//! - Sign-in takes the token of an identity with the admin scope (an
//!   `admin_tokens` entry or an admin of the identities file, see
//!   [`crate::auth`]) once and opens a session ([`session`]); the
//!   identity's name is the actor of every action. With no identity
//!   configured the console refuses every request, as the admin API does.

mod handlers;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use self::handlers::Console;
use self::session::Sessions;
use crate::auth::Authenticator;
use crate::engine::operator::Operator;

/// Where the console is served.
pub const PREFIX: &str = "/ui";

/// Every console response, error or not: scripts, styles, images and
/// requests from this origin only, no inline script or style (so an
/// injected `<script>` or `onerror=` could not run even if it were ever
/// rendered as HTML), no framing, no forms posting elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// The page and its two assets.
const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");

/// The console's routes, to merge into the HTTP listener's router. With
/// no admin token configured, every console path answers 403 and says why.
pub fn router(operator: Arc<Operator>, auth: Arc<Authenticator>, idle: Duration) -> Router {
    let routes = if !auth.is_on() {
        tracing::warn!("no admin_tokens configured; the console refuses every request");
        Router::new()
            .route(PREFIX, get(disabled).post(disabled))
            .route("/ui/", get(disabled).post(disabled))
            .route("/ui/{*rest}", get(disabled).post(disabled).delete(disabled))
    } else {
        let console = Console::new(operator, auth, Sessions::new(idle));
        Router::new()
            .route(
                PREFIX,
                get(|| async { axum::response::Redirect::permanent("/ui/") }),
            )
            .route(
                "/ui/",
                get(|| asset("text/html; charset=utf-8", INDEX_HTML)),
            )
            .route(
                "/ui/console.js",
                get(|| asset("text/javascript; charset=utf-8", CONSOLE_JS)),
            )
            .route(
                "/ui/console.css",
                get(|| asset("text/css; charset=utf-8", CONSOLE_CSS)),
            )
            .nest("/ui/api", handlers::routes(console).fallback(not_found))
            .route("/ui/{*rest}", get(not_found))
    };
    routes.layer(middleware::from_fn(secure_and_log))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn disabled() -> Response {
    refusal(
        StatusCode::FORBIDDEN,
        "the console is disabled: no admin_tokens are configured on this coordinator".into(),
    )
}

async fn not_found() -> Response {
    refusal(StatusCode::NOT_FOUND, "no such console page".into())
}

/// The message of a refused request, for the one log line of
/// [`secure_and_log`].
#[derive(Clone)]
struct Refused(String);

/// A refusal as the page reads it: `{"error": "..."}` with its status.
fn refusal(status: StatusCode, message: String) -> Response {
    let mut response = (
        status,
        axum::Json(serde_json::json!({ "error": message.as_str() })),
    )
        .into_response();
    response.extensions_mut().insert(Refused(message));
    response
}

/// Adds the security headers to every console response and logs each
/// refused or failed request once (method, path and why; never a body, so
/// never a token).
async fn secure_and_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let status = response.status();
    let why = response
        .extensions()
        .get::<Refused>()
        .map(|r| r.0.as_str())
        .unwrap_or("");
    if status.is_server_error() {
        tracing::error!(%method, path = path.as_str(), status = status.as_u16(), message = why, "console request failed");
    } else if status.is_client_error() {
        tracing::info!(%method, path = path.as_str(), status = status.as_u16(), message = why, "console request refused");
    } else {
        tracing::debug!(%method, path = path.as_str(), status = status.as_u16(), "console request ok");
    }
    response
}
