//! Named bearer tokens: `name:secret` entries, compared in constant time,
//! never shown. One name may hold several secrets: during a rotation the
//! old and the new one both work, and a group of instances of one service
//! may each hold their own secret under the service's name.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// One configured secret and the name it proves.
#[derive(Clone)]
struct Token {
    name: String,
    secret: Vec<u8>,
}

/// A list of named tokens. `Debug` shows names only.
#[derive(Clone, Default)]
pub struct NamedTokens(Arc<Vec<Token>>);

/// The admin tokens of `admin_tokens` (names given once each): identities
/// with the admin scope.
pub type AdminTokens = NamedTokens;

impl fmt::Debug for NamedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Whether `name` may name an identity: 1-64 characters of
/// `A-Z a-z 0-9 . _ - @` (it is shown in events, logs and metric labels).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(format!(
            "identity name {name:?} must be 1-64 characters of A-Z a-z 0-9 . _ - @"
        ));
    }
    Ok(())
}

impl NamedTokens {
    /// Parses `name:secret` entries (for example from
    /// `CONCORD_ADMIN_TOKENS="alice:s3cret,ops-bot:t0ken"`, split on
    /// commas); each name once.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut tokens = Self::default();
        for entry in entries {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some((name, secret)) = entry.split_once(':') else {
                return Err("each admin token must be written name:secret".into());
            };
            let name = name.trim();
            if tokens.names().any(|n| n == name) {
                return Err(format!("admin token name {name} is given twice"));
            }
            tokens.push(name, secret)?;
        }
        Ok(tokens)
    }

    /// Parses one comma-separated string.
    pub fn parse_list(spec: &str) -> Result<Self, String> {
        Self::parse(spec.split(','))
    }

    /// Adds a secret for `name` (a name may have several).
    pub fn push(&mut self, name: &str, secret: &str) -> Result<(), String> {
        check_name(name)?;
        if secret.is_empty() {
            return Err(format!("token of {name} has an empty secret"));
        }
        Arc::make_mut(&mut self.0).push(Token {
            name: name.to_string(),
            secret: secret.as_bytes().to_vec(),
        });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, once per secret.
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

#[cfg(test)]
mod tests {
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

    #[test]
    fn one_name_may_hold_several_secrets() {
        let mut t = NamedTokens::default();
        t.push("checkout", "old-secret").unwrap();
        t.push("checkout", "new-secret").unwrap();
        assert_eq!(t.authenticate(b"old-secret"), Some("checkout"));
        assert_eq!(t.authenticate(b"new-secret"), Some("checkout"));
        assert_eq!(t.authenticate(b"other"), None);
    }
}
