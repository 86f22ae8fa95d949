//! Requests while the database is unreachable ([`DbHealth`]): refused at
//! once with `UNAVAILABLE` and a message that says so, instead of each one
//! waiting for a connection until the client's deadline; a request already
//! waiting when the database is found down is answered the same way. The
//! health service and reflection need no database and pass through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use crate::store::health::DbHealth;

/// Paths served without the database.
const WITHOUT_DATABASE: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Wraps the server's services; see the module docs.
#[derive(Debug, Clone)]
pub struct DbDownLayer {
    health: Arc<DbHealth>,
}

impl DbDownLayer {
    pub fn new(health: Arc<DbHealth>) -> Self {
        Self { health }
    }
}

impl<S> Layer<S> for DbDownLayer {
    type Service = DbDown<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DbDown {
            inner,
            health: Arc::clone(&self.health),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DbDown<S> {
    inner: S,
    health: Arc<DbHealth>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DbDown<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path().to_string();
        if WITHOUT_DATABASE.iter().any(|p| path.starts_with(p)) {
            let reply = self.inner.call(req);
            return Box::pin(reply);
        }
        let health = Arc::clone(&self.health);
        if !health.is_up() {
            return Box::pin(async move { Ok(refuse(&health, &path)) });
        }
        let reply = self.inner.call(req);
        Box::pin(async move {
            tokio::select! {
                reply = reply => reply,
                _ = health.went_down() => Ok(refuse(&health, &path)),
            }
        })
    }
}

fn refuse<B: Default>(health: &DbHealth, path: &str) -> http::Response<B> {
    let message = health.refusal();
    tracing::info!(method = path, code = "UNAVAILABLE", %message, "request refused");
    Status::unavailable(message).into_http()
}
