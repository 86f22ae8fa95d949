//! Bearer-token authentication of the admin API: named tokens from the
//! configuration, compared in constant time, checked by a tonic interceptor
//! on the Admin service only. The name of the token used becomes the actor
//! of every operator action.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::api::status;
use crate::error::Error;

/// One configured token: a name (shown in events and logs) and its secret.
#[derive(Clone)]
struct AdminToken {
    name: String,
    secret: Vec<u8>,
}

/// The tokens that may call the admin API. `Debug` shows names only.
#[derive(Clone, Default)]
pub struct AdminTokens(Arc<Vec<AdminToken>>);

impl fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl AdminTokens {
    /// Parses `name:secret` entries (for example from
    /// `CONCORD_ADMIN_TOKENS="alice:s3cret,ops-bot:t0ken"`, split on commas).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut tokens: Vec<AdminToken> = Vec::new();
        for entry in entries {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some((name, secret)) = entry.split_once(':') else {
                return Err("each admin token must be written name:secret".into());
            };
            let name = name.trim();
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
            {
                return Err(format!(
                    "admin token name {name:?} must be 1-64 characters of A-Z a-z 0-9 . _ - @"
                ));
            }
            if secret.is_empty() {
                return Err(format!("admin token {name} has an empty secret"));
            }
            if tokens.iter().any(|t| t.name == name) {
                return Err(format!("admin token name {name} is given twice"));
            }
            tokens.push(AdminToken {
                name: name.to_string(),
                secret: secret.as_bytes().to_vec(),
            });
        }
        Ok(Self(Arc::new(tokens)))
    }

    /// Parses one comma-separated string.
    pub fn parse_list(spec: &str) -> Result<Self, String> {
        Self::parse(spec.split(','))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|t| t.name.as_str())
    }

    /// The name of the token equal to `presented`. Every configured token
    /// is compared, each in constant time, so the answer time does not tell
    /// how much of a secret was right (only, at most, its length).
    pub fn authenticate(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for t in self.0.iter() {
            if bool::from(t.secret.as_slice().ct_eq(presented)) {
                found = Some(t.name.as_str());
            }
        }
        found
    }
}

/// The operator an authenticated request acts for (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator(pub String);

/// Interceptor checking `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct AdminAuth {
    tokens: AdminTokens,
}

impl AdminAuth {
    pub fn new(tokens: AdminTokens) -> Self {
        Self { tokens }
    }
}

fn refuse(request: &Request<()>, why: &'static str, message: &str) -> Status {
    let peer = request.remote_addr().map(|a| a.to_string());
    tracing::warn!(
        peer = peer.as_deref().unwrap_or("unknown"),
        reason = why,
        "admin call refused"
    );
    status(Error::Unauthenticated(message.to_string()))
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if self.tokens.is_empty() {
            return Err(refuse(
                &request,
                "admin api disabled",
                "the admin api is disabled: no admin_tokens are configured on this coordinator",
            ));
        }
        let Some(value) = request.metadata().get("authorization") else {
            return Err(refuse(
                &request,
                "no token",
                "missing bearer token (authorization: Bearer <token>)",
            ));
        };
        let raw = value.as_bytes();
        let presented = match raw.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => raw[7..].trim_ascii(),
            _ => {
                return Err(refuse(
                    &request,
                    "not a bearer token",
                    "the authorization header must be: Bearer <token>",
                ));
            }
        };
        match self.tokens.authenticate(presented) {
            Some(name) => {
                let operator = Operator(name.to_string());
                request.extensions_mut().insert(operator);
                Ok(request)
            }
            None => Err(refuse(&request, "unknown token", "invalid admin token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    fn tokens() -> AdminTokens {
        AdminTokens::parse_list("alice:s3cret, ops-bot:t0ken:with:colons").unwrap()
    }

    #[test]
    fn parses_named_tokens_and_hides_secrets_in_debug() {
        let t = tokens();
        assert_eq!(t.names().collect::<Vec<_>>(), ["alice", "ops-bot"]);
        assert_eq!(t.authenticate(b"s3cret"), Some("alice"));
        assert_eq!(t.authenticate(b"t0ken:with:colons"), Some("ops-bot"));
        assert_eq!(t.authenticate(b"s3cre"), None);
        assert_eq!(t.authenticate(b""), None);
        let shown = format!("{t:?}");
        assert!(
            shown.contains("alice") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(AdminTokens::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn refuses_malformed_token_lists() {
        for bad in ["alice", ":x", "alice:", "a b:x", "alice:x,alice:y"] {
            assert!(AdminTokens::parse_list(bad).is_err(), "{bad}");
        }
    }

    fn call(auth: &mut AdminAuth, header: Option<&str>) -> Result<Option<Operator>, tonic::Code> {
        let mut req = Request::new(());
        if let Some(h) = header {
            req.metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.call(req)
            .map(|r| r.extensions().get::<Operator>().cloned())
            .map_err(|s| s.code())
    }

    #[test]
    fn interceptor_accepts_a_valid_bearer_token_only() {
        let mut auth = AdminAuth::new(tokens());
        assert_eq!(
            call(&mut auth, Some("Bearer s3cret")),
            Ok(Some(Operator("alice".into())))
        );
        assert_eq!(
            call(&mut auth, Some("bearer s3cret")),
            Ok(Some(Operator("alice".into())))
        );
        for bad in [
            None,
            Some("Bearer nope"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            assert_eq!(
                call(&mut auth, bad),
                Err(tonic::Code::Unauthenticated),
                "{bad:?}"
            );
        }
        let mut disabled = AdminAuth::new(AdminTokens::default());
        assert_eq!(
            call(&mut disabled, Some("Bearer s3cret")),
            Err(tonic::Code::Unauthenticated)
        );
    }
}
