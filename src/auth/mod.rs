//! Who is calling, and what they may do: the one home of identities and
//! scopes.
//!
//! A caller proves an identity with a named bearer token
//! (`authorization: Bearer <secret>`) or with its mTLS client certificate
//! (a subject CN or DNS SAN mapped to a name). An identity's scopes say
//! which participant names it may register endpoints for, whether it may
//! begin transactions (initiator), and whether it is an admin (the admin
//! API, the console, every transaction and participant). A missing or
//! unknown credential is `Unauthenticated`; a missing scope is
//! `PermissionDenied` naming it.
//!
//! With no identity configured at all, authentication is off: every caller
//! is the [`Identity::anonymous`] one, which may do anything but the admin
//! API, and the server then listens on loopback only (see
//! [`check_listen`]).
//!
//! The gRPC and HTTP surfaces call [`Authenticator::authenticate`] (the
//! gRPC layer is `api::guard`); per-identity limits are in [`limits`].

pub mod cert;
pub mod identities;
pub mod limits;
pub mod reload;
pub mod tokens;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::CertificateDer;

pub use self::identities::Identities;
pub use self::tokens::{AdminTokens, NamedTokens};
use crate::error::Error;

/// What an identity may do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes {
    /// Participant names it may register endpoints for; `"*"` is any.
    pub participants: Vec<String>,
    /// May begin transactions.
    pub initiator: bool,
    /// Everything: the admin API, the console, any transaction, any
    /// participant.
    pub admin: bool,
}

/// One scope, as a refusal names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Initiator,
    Admin,
    Participant(&'a str),
}

impl fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Initiator => f.write_str("initiator"),
            Scope::Admin => f.write_str("admin"),
            Scope::Participant(p) => write!(f, "participant:{p}"),
        }
    }
}

/// An authenticated caller (a request extension once the guard let it in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub scopes: Scopes,
    /// Its own limits, over the configured defaults.
    pub max_concurrent: Option<u32>,
    pub max_rate: Option<u32>,
    /// The caller when authentication is off: not recorded anywhere.
    pub anonymous: bool,
}

impl Identity {
    /// Every caller when no identity is configured: anything but admin.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            scopes: Scopes {
                participants: vec!["*".into()],
                initiator: true,
                admin: false,
            },
            max_concurrent: None,
            max_rate: None,
            anonymous: true,
        }
    }

    pub fn has(&self, scope: Scope<'_>) -> bool {
        let s = &self.scopes;
        s.admin
            || match scope {
                Scope::Admin => false,
                Scope::Initiator => s.initiator,
                Scope::Participant(p) => s.participants.iter().any(|q| q == "*" || q == p),
            }
    }

    /// `Ok` when it has `scope`, else `PermissionDenied` naming it.
    pub fn require(&self, scope: Scope<'_>) -> Result<(), Error> {
        if self.has(scope) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "identity {} lacks the scope {scope}",
            self.name
        )))
    }

    /// The name to record as a transaction's initiator (none when
    /// authentication is off).
    pub fn recorded(&self) -> Option<String> {
        (!self.anonymous).then(|| self.name.clone())
    }

    /// `Ok` when it may act on (or read) the transaction `gid` begun by
    /// `initiator`: its initiator and admins may. A transaction begun while
    /// authentication was off (no initiator recorded) is open to every
    /// identity with the initiator scope.
    pub fn may_act_on(&self, gid: &str, initiator: Option<&str>) -> Result<(), Error> {
        let allowed = self.anonymous
            || self.scopes.admin
            || match initiator {
                Some(owner) => owner == self.name,
                None => self.scopes.initiator,
            };
        if allowed {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "transaction {gid} was begun by another identity; only it and admins may act on it"
        )))
    }
}

/// The coordinator's token as `coordinator_token_file` holds it (surrounding
/// whitespace trimmed): the `authorization` value to present, or why not.
pub fn token_file(path: &std::path::Path) -> Result<http::HeaderValue, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read coordinator_token_file {}: {e}", path.display()))?;
    Secret::new(text.trim())
        .map(|s| s.bearer())
        .map_err(|e| format!("coordinator_token_file {}: {e}", path.display()))
}

/// A secret the coordinator presents (its token towards participants).
/// `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        if s.is_empty() {
            return Err("the secret is empty".into());
        }
        if http::HeaderValue::from_str(&format!("Bearer {s}")).is_err() {
            return Err("the secret has characters a header cannot carry".into());
        }
        Ok(Self(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `Bearer <secret>`, the `authorization` header value.
    pub fn bearer(&self) -> http::HeaderValue {
        let mut v = http::HeaderValue::from_str(&format!("Bearer {}", self.0))
            .expect("checked in Secret::new");
        v.set_sensitive(true);
        v
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Checks identities and holds the current set; [`reload`] swaps it.
#[derive(Debug)]
pub struct Authenticator {
    admin: NamedTokens,
    file: Option<PathBuf>,
    current: RwLock<Arc<Identities>>,
    /// Every caller while authentication is off; made once, not per call.
    anonymous: Arc<Identity>,
}

/// The message of a call without a credential.
const MISSING: &str =
    "missing bearer token (authorization: Bearer <token>) or mapped client certificate";

impl Authenticator {
    /// From the admin tokens and the identities file (read now).
    pub fn load(admin: &NamedTokens, file: Option<&Path>) -> Result<Self, String> {
        let identities = match file {
            Some(path) => read(admin, path)?,
            None => Identities::from_admin_tokens(admin),
        };
        Ok(Self {
            admin: admin.clone(),
            file: file.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(identities)),
            anonymous: Arc::new(Identity::anonymous()),
        })
    }

    /// Authentication off: no identities.
    pub fn off() -> Self {
        Self {
            admin: NamedTokens::default(),
            file: None,
            current: RwLock::new(Arc::new(Identities::default())),
            anonymous: Arc::new(Identity::anonymous()),
        }
    }

    pub fn identities(&self) -> Arc<Identities> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether any identity is configured (else authentication is off).
    pub fn is_on(&self) -> bool {
        !self.identities().is_empty()
    }

    /// Re-reads the identities file; keeps the current set when the file
    /// does not parse or would leave no identity (which would turn
    /// authentication off under a running server). Returns how many
    /// identities are now configured.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.file else {
            return Ok(self.identities().len());
        };
        let fresh = read(&self.admin, path)?;
        if fresh.is_empty() && self.is_on() {
            return Err(format!(
                "{} now names no identity; keeping the previous ones (authentication cannot be switched off without a restart)",
                path.display()
            ));
        }
        let n = fresh.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(n)
    }

    /// The identity of a request, from its `authorization` header and the
    /// client certificate of its connection. A token, if sent, must be
    /// valid (a wrong token is not saved by a certificate).
    pub fn authenticate(
        &self,
        authorization: Option<&http::HeaderValue>,
        peer_certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Arc<Identity>, Error> {
        let ids = self.identities();
        if ids.is_empty() {
            return Ok(Arc::clone(&self.anonymous));
        }
        let unauthenticated = |m: &str| Error::Unauthenticated(m.to_string());
        if let Some(value) = authorization {
            let raw = value.as_bytes();
            let presented = match raw.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => raw[7..].trim_ascii(),
                _ => {
                    return Err(unauthenticated(
                        "the authorization header must be: Bearer <token>",
                    ));
                }
            };
            return ids
                .by_token(presented)
                .ok_or_else(|| unauthenticated("invalid token"));
        }
        if let Some(first) = peer_certs.and_then(|c| c.first()) {
            let names = cert::names(first);
            return ids
                .by_certificate(names.iter().map(String::as_str))
                .ok_or_else(|| {
                    unauthenticated("the client certificate is not mapped to any identity")
                });
        }
        Err(unauthenticated(MISSING))
    }

    /// [`authenticate`](Self::authenticate) for an HTTP request's headers
    /// (what an axum middleware has); `peer_certs` from its connection, if
    /// it terminates TLS itself.
    pub fn authenticate_http(
        &self,
        headers: &http::HeaderMap,
        peer_certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Arc<Identity>, Error> {
        self.authenticate(headers.get(http::header::AUTHORIZATION), peer_certs)
    }
}

fn read(admin: &NamedTokens, path: &Path) -> Result<Identities, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Identities::parse(admin, path, &text)
}

/// Refuses to serve `listen` beyond loopback without identities, unless
/// `insecure_no_auth` says so; returns what start-up should say.
pub fn check_listen(
    listen: SocketAddr,
    auth_on: bool,
    insecure_no_auth: bool,
) -> Result<Option<&'static str>, String> {
    if auth_on {
        return Ok(None);
    }
    if listen.ip().is_loopback() {
        return Ok(Some(
            "authentication is off: no identities are configured; serving on loopback only",
        ));
    }
    if insecure_no_auth {
        return Ok(Some(
            "authentication is off and the port is reachable beyond this host (insecure_no_auth): anyone who reaches it may register participants and drive any transaction",
        ));
    }
    Err(format!(
        "refusing to listen on {listen} without authentication: configure identities_file or admin_tokens, listen on a loopback address, or set insecure_no_auth (--insecure-no-auth) to accept the risk"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> http::HeaderValue {
        v.parse().unwrap()
    }

    #[test]
    fn without_identities_everyone_is_anonymous_but_not_admin() {
        let auth = Authenticator::off();
        let id = auth.authenticate(None, None).unwrap();
        assert!(id.anonymous && id.has(Scope::Initiator) && id.has(Scope::Participant("x")));
        assert!(!id.has(Scope::Admin));
        assert_eq!(id.recorded(), None);
        assert!(id.may_act_on("g", Some("someone")).is_ok());
    }

    #[test]
    fn tokens_authenticate_and_scopes_are_named_when_missing() {
        let admin = NamedTokens::parse_list("alice:admin-secret").unwrap();
        let auth = Authenticator::load(&admin, None).unwrap();
        assert!(auth.is_on());
        let err = auth.authenticate(None, None).unwrap_err();
        assert!(matches!(err, Error::Unauthenticated(_)), "{err:?}");
        let err = auth
            .authenticate(Some(&header("Bearer nope")), None)
            .unwrap_err();
        assert!(matches!(err, Error::Unauthenticated(_)));
        let err = auth
            .authenticate(Some(&header("Basic admin-secret")), None)
            .unwrap_err();
        assert!(matches!(err, Error::Unauthenticated(_)));
        let alice = auth
            .authenticate(Some(&header("bearer admin-secret")), None)
            .unwrap();
        assert_eq!(alice.name, "alice");
        assert!(alice.require(Scope::Admin).is_ok());

        let inv = Identity {
            name: "inv".into(),
            scopes: Scopes {
                participants: vec!["inventory".into()],
                ..Scopes::default()
            },
            max_concurrent: None,
            max_rate: None,
            anonymous: false,
        };
        let Err(Error::PermissionDenied(m)) = inv.require(Scope::Participant("payment")) else {
            panic!()
        };
        assert!(m.contains("participant:payment"), "{m}");
        assert!(inv.require(Scope::Participant("inventory")).is_ok());
        assert!(matches!(
            inv.require(Scope::Initiator),
            Err(Error::PermissionDenied(_))
        ));
        assert!(inv.may_act_on("g", Some("other")).is_err());
        assert!(inv.may_act_on("g", Some("inv")).is_ok());
        assert!(inv.may_act_on("g", None).is_err());
    }

    #[test]
    fn loopback_only_without_identities() {
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(check_listen(local, false, false).unwrap().is_some());
        assert!(check_listen(any, false, false).is_err());
        assert!(check_listen(any, false, true).unwrap().is_some());
        assert_eq!(check_listen(any, true, false).unwrap(), None);
    }

    #[test]
    fn secrets_do_not_show() {
        let s = Secret::new("hunter22").unwrap();
        assert!(!format!("{s:?}").contains("hunter"));
        assert!(Secret::new("").is_err());
        assert!(Secret::new("a\nb").is_err());
    }
}
