//! The coordinator's credential towards participants: the `authorization`
//! value it presents on every gRPC and HTTP participant call
//! (`Bearer <coordinator_token>`), so that a participant can tell the
//! coordinator's calls from anyone else's. Shared by the gRPC client and the
//! HTTP transport, and replaceable while they run: the token read from
//! `coordinator_token_file` is rotated without a restart (the file is read
//! again on SIGHUP and when it changes; `auth::reload`), every call after the
//! swap presenting the new one.

use std::sync::{Arc, RwLock};

use http::HeaderValue;

/// A shared, replaceable `authorization` value (none: nothing presented).
#[derive(Clone, Default)]
pub struct Credential(Arc<RwLock<Option<HeaderValue>>>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        f.write_str(if self.get().is_some() {
            "Credential(set)"
        } else {
            "Credential(none)"
        })
    }
}

impl Credential {
    pub fn new(value: Option<HeaderValue>) -> Self {
        Self(Arc::new(RwLock::new(value)))
    }

    /// What the next call presents.
    pub fn get(&self) -> Option<HeaderValue> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces it for every call from now on (a rotation).
    pub fn set(&self, value: Option<HeaderValue>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_reaches_every_holder_and_debug_hides_the_secret() {
        let a = Credential::new(Some(HeaderValue::from_static("Bearer old")));
        let b = a.clone();
        a.set(Some(HeaderValue::from_static("Bearer new")));
        assert_eq!(b.get().unwrap(), "Bearer new");
        assert_eq!(format!("{b:?}"), "Credential(set)");
        b.set(None);
        assert!(a.get().is_none());
    }
}
