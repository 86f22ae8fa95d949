//! Bearer tokens between the coordinator and its clients, both ways.
//!
//! - [`Credential`] presents a token (`authorization: Bearer <token>`) on
//!   every call to the coordinator: an initiator's
//!   ([`Coordinator::with_token`](crate::Coordinator::with_token)) or a
//!   participant's registration
//!   ([`ParticipantServer::token`](crate::ParticipantServer::token)).
//! - [`RequireToken`] is what a participant server checks on every call it
//!   receives ([`ParticipantServer::require_coordinator_token`](crate::ParticipantServer::require_coordinator_token)):
//!   only the coordinator's token (`coordinator_token` on the coordinator)
//!   is let through; anything else is refused with `UNAUTHENTICATED`.

use std::fmt;
use std::sync::Arc;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Presents a bearer token on every request (a tonic interceptor). `Debug`
/// hides the token.
///
/// ```
/// let credential = concord_sdk::Credential::bearer("s3cret").unwrap();
/// assert_eq!(format!("{credential:?}"), "Credential(Bearer ..)");
/// assert!(concord_sdk::Credential::bearer("no\nnewline").is_none());
/// ```
#[derive(Clone, Default)]
pub struct Credential(Option<MetadataValue<Ascii>>);

impl Credential {
    /// A credential presenting `token`; `None` when a header cannot carry
    /// it.
    pub fn bearer(token: &str) -> Option<Self> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().ok()?;
        value.set_sensitive(true);
        Some(Self(Some(value)))
    }

    /// Presents nothing (a coordinator without identities).
    pub fn none() -> Self {
        Self(None)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Credential(Bearer ..)"),
            None => f.write_str("Credential(none)"),
        }
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// Lets through only requests carrying one of the accepted bearer tokens
/// (several during a rotation), compared in constant time; others get
/// `UNAUTHENTICATED`. `Debug` shows how many tokens, not which.
///
/// ```
/// use tonic::service::Interceptor;
///
/// let mut check = concord_sdk::RequireToken::new(["coordinator-secret"]);
/// let mut call = tonic::Request::new(());
/// call.metadata_mut().insert("authorization", "Bearer coordinator-secret".parse().unwrap());
/// assert!(check.call(call).is_ok());
/// let refused = check.call(tonic::Request::new(())).unwrap_err();
/// assert_eq!(refused.code(), tonic::Code::Unauthenticated);
/// ```
#[derive(Clone)]
pub struct RequireToken(Arc<Vec<Vec<u8>>>);

impl RequireToken {
    /// Accepts any of `tokens` (empty ones are ignored).
    pub fn new<I, T>(tokens: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        Self(Arc::new(
            tokens
                .into_iter()
                .map(|t| t.as_ref().as_bytes().to_vec())
                .filter(|t| !t.is_empty())
                .collect(),
        ))
    }

    /// Whether `presented` equals an accepted token. Each is compared
    /// whole, without an early exit, so the time taken does not tell how
    /// much of a guess was right.
    fn accepts(&self, presented: &[u8]) -> bool {
        let mut found = false;
        for token in self.0.iter() {
            let same_len = token.len() == presented.len();
            let diff = token
                .iter()
                .zip(presented.iter().chain(std::iter::repeat(&0)))
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found |= same_len & (diff == 0);
        }
        found
    }
}

impl fmt::Debug for RequireToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequireToken({} tokens)", self.0.len())
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .and_then(|raw| match raw.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                    Some(raw[7..].trim_ascii())
                }
                _ => None,
            });
        match presented {
            Some(token) if self.accepts(token) => Ok(request),
            Some(_) => {
                tracing::warn!("participant call refused: wrong coordinator token");
                Err(Status::unauthenticated("invalid coordinator token"))
            }
            None => {
                tracing::warn!("participant call refused: no coordinator token");
                Err(Status::unauthenticated(
                    "missing coordinator token (authorization: Bearer <token>)",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_whole_tokens() {
        let check = RequireToken::new(["old-token", "new-token", ""]);
        assert!(check.accepts(b"old-token"));
        assert!(check.accepts(b"new-token"));
        for bad in [&b"old-toke"[..], b"old-token2", b"", b"x"] {
            assert!(!check.accepts(bad), "{bad:?}");
        }
        assert_eq!(format!("{check:?}"), "RequireToken(2 tokens)");
    }
}
