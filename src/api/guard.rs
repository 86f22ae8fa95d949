//! Authentication and authorization in front of every gRPC service, in one
//! place: each request's identity is established from its bearer token or
//! client certificate ([`crate::auth`]), the scope its method needs is
//! checked, the identity's abuse limits are applied, and the identity is
//! handed to the handler as a request extension ([`caller`]) for the checks
//! that depend on the request's content (which participant, whose
//! transaction). A refusal changes nothing and is logged once.
//!
//! The health service and reflection are open: load balancers and
//! `grpcurl` need them and they reveal nothing about transactions.
//!
//! [`admit`] is the same decision for any other surface: an HTTP (axum)
//! middleware passes the request's headers, its connection's client
//! certificates and the scope its route needs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use rustls_pki_types::CertificateDer;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::status;
use crate::auth::limits::{Admitted, Limiter};
use crate::auth::{Authenticator, Identity, Scope};
use crate::error::Error;
use crate::participant::client::code_name;

/// Paths anyone may call.
const OPEN: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

const ADMIN: &str = "/concord.v1.Admin/";

/// Methods that start a transaction: the initiator scope.
const BEGINS: [&str; 3] = [
    "/concord.v1.Coordinator/Begin",
    "/concord.v1.Coordinator/SubmitSaga",
    "/concord.v1.Coordinator/PrepareMessage",
];

/// The scope a gRPC method needs before its request is read (`None`: an
/// authenticated identity; the handler checks the rest).
fn scope_of(path: &str) -> Option<Scope<'static>> {
    if path.starts_with(ADMIN) {
        Some(Scope::Admin)
    } else if BEGINS.contains(&path) {
        Some(Scope::Initiator)
    } else {
        None
    }
}

/// Authenticates a request, checks `scope` and applies its identity's
/// limits: the identity and its admission (hold it until the request is
/// answered), or why not. Logs and counts a refusal once; `method` names
/// the request in that line.
pub fn admit(
    auth: &Authenticator,
    limits: &Limiter,
    method: &str,
    headers: &http::HeaderMap,
    peer_certs: Option<&[CertificateDer<'static>]>,
    scope: Option<Scope<'_>>,
) -> Result<(Arc<Identity>, Admitted), Error> {
    let checked = (|| {
        let identity = auth.authenticate_http(headers, peer_certs)?;
        if let Some(scope) = scope {
            if scope == Scope::Admin && identity.anonymous {
                return Err(Error::Unauthenticated(
                    "the admin api is disabled: no admin_tokens or admin identities are configured on this coordinator"
                        .into(),
                ));
            }
            identity.require(scope)?;
        }
        Ok(identity)
    })();
    let identity = match checked {
        Ok(identity) => identity,
        Err(e) => {
            let code = status_code(&e);
            crate::telemetry::metrics::auth_refused(code);
            tracing::warn!(method, code, message = %e, "request refused by authentication");
            return Err(e);
        }
    };
    match limits.admit(&identity, Instant::now()) {
        Ok(admitted) => Ok((identity, admitted)),
        Err(limit) => {
            crate::telemetry::metrics::identity_limited(&identity.name, limit.label());
            tracing::warn!(method, identity = %identity.name, limit = limit.label(), "request refused by a per-identity limit");
            Err(Error::ResourceExhausted(limit.message(&identity.name)))
        }
    }
}

fn status_code(e: &Error) -> &'static str {
    match e {
        Error::Unauthenticated(_) => code_name(tonic::Code::Unauthenticated),
        Error::PermissionDenied(_) => code_name(tonic::Code::PermissionDenied),
        _ => code_name(tonic::Code::Internal),
    }
}

/// `Ok` when `caller` began `gid` or is an admin (with authentication
/// off, always, without reading the transaction): the rule for every call
/// on an existing transaction, whichever API it came through.
pub async fn may_act_on(
    engine: &crate::engine::Engine,
    caller: &Identity,
    gid: &crate::domain::Gid,
) -> Result<(), Error> {
    if caller.anonymous || caller.scopes.admin {
        return Ok(());
    }
    let initiator = engine.initiator_of(gid).await?;
    caller.may_act_on(gid.as_str(), initiator.as_deref())
}

/// The identity the guard let in. Fails closed: a service served without
/// the guard has no caller, and nothing is allowed.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Arc<Identity>, Error> {
    request
        .extensions()
        .get::<Arc<Identity>>()
        .cloned()
        .ok_or_else(|| Error::Unauthenticated("no authenticated caller".into()))
}

/// Wraps the server's services; see the module docs.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    auth: Arc<Authenticator>,
    limits: Arc<Limiter>,
}

impl GuardLayer {
    pub fn new(auth: Arc<Authenticator>, limits: Arc<Limiter>) -> Self {
        Self { auth, limits }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            auth: Arc::clone(&self.auth),
            limits: Arc::clone(&self.limits),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    auth: Arc<Authenticator>,
    limits: Arc<Limiter>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Guard<S>
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

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path().to_string();
        if OPEN.iter().any(|p| path.starts_with(p)) {
            return Box::pin(self.inner.call(req));
        }
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs());
        let admitted = admit(
            &self.auth,
            &self.limits,
            &path,
            req.headers(),
            certs.as_deref().map(Vec::as_slice),
            scope_of(&path),
        );
        match admitted {
            Ok((identity, admitted)) => {
                req.extensions_mut().insert(identity);
                let reply = self.inner.call(req);
                Box::pin(async move {
                    let reply = reply.await;
                    drop(admitted);
                    reply
                })
            }
            Err(e) => {
                let refused = status(e);
                Box::pin(async move { Ok(refused.into_http()) })
            }
        }
    }
}
