//! The configured identities: who may call the coordinator, proved by which
//! token or certificate name, with which scopes and limits. Read from the
//! identities file (TOML, `[[identity]]` tables) plus the admin tokens of
//! `admin_tokens`, which are identities with the admin scope.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::tokens::{NamedTokens, check_name};
use super::{Identity, Scopes};

/// One `[[identity]]` table of the identities file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    /// Bearer secrets proving this identity; several during a rotation, or
    /// one per instance of a group sharing the identity.
    #[serde(default)]
    tokens: Vec<String>,
    /// Client-certificate names (subject CN or DNS SAN) proving it.
    #[serde(default)]
    certificates: Vec<String>,
    /// Participant names it may register endpoints for (`"*"`: any).
    #[serde(default)]
    participants: Vec<String>,
    /// May begin transactions (TCC, saga, message).
    #[serde(default)]
    initiator: bool,
    /// The admin API, the console, and every transaction and participant.
    #[serde(default)]
    admin: bool,
    /// Most requests of this identity in flight at once (over the default).
    max_concurrent: Option<u32>,
    /// Most requests per second of this identity (over the default).
    max_rate: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    identity: Vec<Entry>,
}

/// Every identity and what proves it. `Debug` shows no secret.
#[derive(Debug, Default)]
pub struct Identities {
    tokens: NamedTokens,
    /// Certificate name → identity name.
    certificates: HashMap<String, String>,
    by_name: HashMap<String, Arc<Identity>>,
}

impl Identities {
    /// The admin tokens alone.
    pub fn from_admin_tokens(admin: &NamedTokens) -> Self {
        let mut all = Self {
            tokens: admin.clone(),
            ..Self::default()
        };
        for name in admin.names() {
            all.by_name
                .insert(name.to_string(), Arc::new(admin_identity(name)));
        }
        all
    }

    /// The admin tokens and the identities file's text (its path names it
    /// in errors).
    pub fn parse(admin: &NamedTokens, path: &Path, text: &str) -> Result<Self, String> {
        let file: File =
            toml::from_str(text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        let mut all = Self::from_admin_tokens(admin);
        for e in file.identity {
            let at = |m: String| format!("{}: identity {:?}: {m}", path.display(), e.name);
            check_name(&e.name).map_err(at)?;
            if all.by_name.contains_key(&e.name) {
                return Err(at("is defined twice (or is also an admin token)".into()));
            }
            if e.tokens.is_empty() && e.certificates.is_empty() {
                return Err(at("has neither tokens nor certificates".into()));
            }
            for p in &e.participants {
                if p != "*" {
                    crate::domain::ParticipantName::parse(p.clone())
                        .map_err(|v| at(format!("participants: {}", v.0)))?;
                }
            }
            for secret in &e.tokens {
                if all.tokens.authenticate(secret.as_bytes()).is_some() {
                    return Err(at("a token is used by another identity too".into()));
                }
                all.tokens.push(&e.name, secret).map_err(at)?;
            }
            for cert in &e.certificates {
                if cert.is_empty() {
                    return Err(at("an empty certificate name".into()));
                }
                if let Some(other) = all.certificates.insert(cert.clone(), e.name.clone()) {
                    return Err(at(format!(
                        "certificate name {cert:?} is mapped to {other} too"
                    )));
                }
            }
            if e.max_concurrent == Some(0) || e.max_rate == Some(0) {
                return Err(at("max_concurrent and max_rate must be at least 1".into()));
            }
            let identity = Identity {
                name: e.name.clone(),
                scopes: Scopes {
                    participants: e.participants,
                    initiator: e.initiator,
                    admin: e.admin,
                },
                max_concurrent: e.max_concurrent,
                max_rate: e.max_rate,
                anonymous: false,
            };
            all.by_name.insert(e.name, Arc::new(identity));
        }
        Ok(all)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The identity a bearer secret proves.
    pub fn by_token(&self, presented: &[u8]) -> Option<Arc<Identity>> {
        let name = self.tokens.authenticate(presented)?;
        self.by_name.get(name).cloned()
    }

    /// The identity the first mapped certificate name proves.
    pub fn by_certificate<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Option<Arc<Identity>> {
        names
            .into_iter()
            .find_map(|n| self.certificates.get(n))
            .and_then(|name| self.by_name.get(name).cloned())
    }
}

fn admin_identity(name: &str) -> Identity {
    Identity {
        name: name.to_string(),
        scopes: Scopes {
            participants: vec!["*".into()],
            initiator: true,
            admin: true,
        },
        max_concurrent: None,
        max_rate: None,
        anonymous: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[identity]]
        name = "checkout"
        tokens = ["old-secret", "new-secret"]
        certificates = ["checkout.internal"]
        initiator = true

        [[identity]]
        name = "inventory-svc"
        tokens = ["inv-secret"]
        participants = ["inventory"]
        max_rate = 5
    "#;

    fn parse(text: &str) -> Result<Identities, String> {
        let admin = NamedTokens::parse_list("alice:admin-secret").unwrap();
        Identities::parse(&admin, Path::new("ids.toml"), text)
    }

    #[test]
    fn maps_tokens_and_certificates_to_identities() {
        let ids = parse(FILE).unwrap();
        assert_eq!(ids.len(), 3);
        let c = ids.by_token(b"old-secret").unwrap();
        assert_eq!(c.name, "checkout");
        assert_eq!(ids.by_token(b"new-secret").unwrap().name, "checkout");
        assert!(c.scopes.initiator && !c.scopes.admin);
        let i = ids.by_token(b"inv-secret").unwrap();
        assert_eq!(i.scopes.participants, ["inventory"]);
        assert_eq!(i.max_rate, Some(5));
        assert!(ids.by_token(b"admin-secret").unwrap().scopes.admin);
        assert!(ids.by_token(b"nope").is_none());
        assert_eq!(
            ids.by_certificate(["x", "checkout.internal"]).unwrap().name,
            "checkout"
        );
        assert!(ids.by_certificate(["x"]).is_none());
        assert!(!format!("{ids:?}").contains("old-secret"));
    }

    #[test]
    fn the_shipped_example_parses() {
        let ids = parse(include_str!("../../config/identities.example.toml")).unwrap();
        assert_eq!(ids.len(), 4);
        assert_eq!(
            ids.by_certificate(["payment.prod.internal"])
                .unwrap()
                .max_rate,
            Some(200)
        );
    }

    #[test]
    fn refuses_ambiguous_or_empty_identities() {
        for bad in [
            "[[identity]]\nname = \"a\"\n",
            "[[identity]]\nname = \"alice\"\ntokens = [\"x\"]\n",
            "[[identity]]\nname = \"a\"\ntokens = [\"x\"]\n[[identity]]\nname = \"b\"\ntokens = [\"x\"]\n",
            "[[identity]]\nname = \"a b\"\ntokens = [\"x\"]\n",
            "[[identity]]\nname = \"a\"\ntokens = [\"x\"]\nparticipants = [\"no way\"]\n",
            "[[identity]]\nname = \"a\"\ntokens = [\"x\"]\nscope = \"admin\"\n",
            "[[identity]]\nname = \"a\"\ntokens = [\"x\"]\nmax_rate = 0\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
