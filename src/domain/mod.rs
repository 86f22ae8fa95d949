//! Validated domain values: a `Gid`, a `ParticipantName`, an `ActionName`,
//! a `BranchId` and an `EndpointUrl` can only hold values the coordinator
//! accepts, so the rest of the code never re-checks them; [`metadata`] is a
//! transaction's metadata with its limits.

pub mod endpoint;
pub mod metadata;
pub mod url_call;

pub use endpoint::{Endpoint, Protocol};
pub use url_call::UrlCall;

use std::fmt;

/// Why a value was refused; the message names the field and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// Longest gid, participant or action name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest branch id.
pub const MAX_BRANCH_ID_LEN: usize = 64;
/// Longest rollback reason or operator note kept.
pub const MAX_REASON: usize = 1024;

fn check_identifier(field: &str, value: &str, max: usize) -> Result<(), InvalidValue> {
    if value.is_empty() {
        return Err(InvalidValue(format!("{field} must not be empty")));
    }
    if value.len() > max {
        return Err(InvalidValue(format!(
            "{field} is {} characters long, the limit is {max}",
            value.len()
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(InvalidValue(format!(
            "{field} contains {bad:?}; allowed are ASCII letters, digits and . _ : -"
        )));
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates a raw value.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                check_identifier($field, &value, $max)?;
                Ok(Self(value))
            }

            /// The validated value.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Wraps a value read back from the store, which only ever holds
            /// values that passed `parse`.
            pub(crate) fn from_trusted(value: String) -> Self {
                Self(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

identifier!(
    /// Global transaction id.
    Gid,
    "gid",
    MAX_NAME_LEN
);
identifier!(
    /// Name under which a participant service registers.
    ParticipantName,
    "participant",
    MAX_NAME_LEN
);
identifier!(
    /// Name of an action a participant registered.
    ActionName,
    "action",
    MAX_NAME_LEN
);
identifier!(
    /// Branch id, unique within one global transaction.
    BranchId,
    "branch_id",
    MAX_BRANCH_ID_LEN
);

impl Gid {
    /// A fresh time-ordered id (UUIDv7), so that gids sort by creation.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

/// URL of one participant instance: `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    /// Longest accepted endpoint URL.
    pub const MAX_LEN: usize = 512;

    /// Parses an endpoint URL: scheme http or https, a host, an optional
    /// port, no path, query or credentials.
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value = value.into();
        let bad = |why: &str| InvalidValue(format!("endpoint {value:?} is not valid: {why}"));
        if value.len() > Self::MAX_LEN {
            return Err(bad("too long"));
        }
        let uri: http::Uri = value.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(bad("the scheme must be http or https")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.host().is_empty() {
            return Err(bad("no host"));
        }
        if authority.as_str().contains('@') {
            return Err(bad("credentials are not allowed"));
        }
        if !(uri.path() == "/" || uri.path().is_empty()) || uri.query().is_some() {
            return Err(bad("a path or query is not allowed"));
        }
        let normalized = format!("{}://{}", uri.scheme_str().unwrap_or("http"), authority);
        Ok(Self(normalized))
    }

    /// The normalized URL (no trailing slash).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_trusted(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_accept_the_documented_alphabet() {
        assert!(Gid::parse("order-42:retry_1.a").is_ok());
        assert!(BranchId::parse("1").is_ok());
    }

    #[test]
    fn identifiers_refuse_empty_long_and_odd_characters() {
        assert_eq!(
            Gid::parse("").unwrap_err().0,
            "gid must not be empty".to_string()
        );
        assert!(
            Gid::parse("a".repeat(129))
                .unwrap_err()
                .0
                .contains("limit is 128")
        );
        assert!(ActionName::parse("a b").unwrap_err().0.contains("' '"));
        assert!(BranchId::parse("x".repeat(65)).is_err());
    }

    #[test]
    fn generated_gids_are_valid_and_distinct() {
        let a = Gid::generate();
        let b = Gid::generate();
        assert_ne!(a, b);
        assert!(Gid::parse(a.as_str()).is_ok());
    }

    #[test]
    fn endpoints_are_normalized_and_checked() {
        assert_eq!(
            EndpointUrl::parse("http://127.0.0.1:7001/")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:7001"
        );
        assert!(EndpointUrl::parse("https://svc.internal:443").is_ok());
        for bad in [
            "127.0.0.1:7001",
            "ftp://h:1",
            "http://",
            "http://h:1/path",
            "http://u:p@h:1",
            "not a url",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
