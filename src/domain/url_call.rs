//! A branch called by URL rather than through a registered participant:
//! what the DTM-compatible API (`src/api/dtm/`) creates. Each phase has a
//! URL of its own (a saga step's action and compensation, a TCC branch's
//! Confirm and Cancel, a message step's action), called by DTM's convention
//! (`participant::http`), with the headers the initiator asked for. It is
//! stored with the branch, so every instance calls the same URLs after a
//! restart.
//!
//! Such a branch still has a participant and an action, for operators and
//! for everything that groups calls by service: the participant is the
//! URL's `host:port` (so the breaker, the bulkhead, the metrics and the
//! re-drive treat one service as one participant), the action the URL's
//! last path segment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ActionName, EndpointUrl, InvalidValue, MAX_NAME_LEN, ParticipantName};

/// Longest URL accepted for a branch or a query-back.
pub const MAX_URL_LEN: usize = 2048;
/// Most headers one transaction may send with its calls.
pub const MAX_HEADERS: usize = 32;

/// How each phase of one URL branch is called.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UrlCall {
    /// DTM's `trans_type` of the transaction (`tcc`, `saga`, `msg`), sent
    /// with every call.
    pub trans_type: String,
    /// The branch id as DTM numbers it (`01`, `02`, ...), sent as
    /// `branch_id`: participants' barriers key on it.
    pub branch_id: String,
    /// URL per phase name (`confirm`, `cancel`, `execute`, `compensate`).
    /// A phase without one succeeds without a call, as in DTM (a saga step
    /// with nothing to compensate).
    pub urls: BTreeMap<String, String>,
    /// Sent with every call (DTM's `branch_headers` and the initiator's
    /// `passthrough_headers`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl UrlCall {
    /// The URL of `phase`, if it has a non-empty one.
    pub fn url(&self, phase: &str) -> Option<&str> {
        self.urls
            .get(phase)
            .map(String::as_str)
            .filter(|u| !u.is_empty())
    }

    /// The URL that names the branch for operators: the forward one.
    pub fn main_url(&self) -> Option<&str> {
        ["execute", "confirm", "try", "cancel", "compensate"]
            .iter()
            .find_map(|p| self.url(p))
    }
}

/// Parses a URL to call as given: scheme http or https, a host, any path
/// and query; no credentials or fragment.
pub fn parse_url(value: &str) -> Result<EndpointUrl, InvalidValue> {
    let bad = |why: &str| InvalidValue(format!("url {value:?} is not valid: {why}"));
    if value.len() > MAX_URL_LEN {
        return Err(bad(&format!("longer than {MAX_URL_LEN} characters")));
    }
    let uri: http::Uri = value.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("the scheme must be http or https")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("credentials are not allowed"));
    }
    if value.contains('#') {
        return Err(bad("a fragment is not allowed"));
    }
    Ok(EndpointUrl::from_trusted(value.to_string()))
}

/// Refuses header names or values that HTTP cannot carry, and too many.
pub fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), InvalidValue> {
    if headers.len() > MAX_HEADERS {
        return Err(InvalidValue(format!(
            "{} branch headers, the limit is {MAX_HEADERS}",
            headers.len()
        )));
    }
    for (name, value) in headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(InvalidValue(format!("{name:?} is not a valid header name")));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(InvalidValue(format!(
                "header {name}: its value is not a valid header value"
            )));
        }
    }
    Ok(())
}

/// Keeps the identifier alphabet (`[A-Za-z0-9._:-]`), replacing anything
/// else by `_`, cut to the name limit; `fallback` when nothing is left.
fn identifier_of(raw: &str, fallback: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME_LEN)
        .collect();
    if s.trim_matches('_').is_empty() {
        s = fallback.to_string();
    }
    s
}

/// The participant a URL branch is counted under: its URL's `host:port`.
pub fn participant_of(url: &str) -> ParticipantName {
    let authority = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    ParticipantName::from_trusted(identifier_of(&authority, "url"))
}

/// The action a URL is shown as: its last path segment.
pub fn action_of(url: &str) -> ActionName {
    let path = url
        .parse::<http::Uri>()
        .ok()
        .map(|u| u.path().to_string())
        .unwrap_or_default();
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    ActionName::from_trusted(identifier_of(last, "call"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_path_and_query_and_refuse_the_rest() {
        let u = "http://127.0.0.1:8081/api/busi/TransOut?x=1";
        assert_eq!(parse_url(u).unwrap().as_str(), u);
        for bad in [
            "ftp://h/x",
            "http://u:p@h/x",
            "http://h/x#f",
            "/api/x",
            "not a url",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} should be refused");
        }
        assert!(parse_url(&format!("http://h/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn names_come_from_host_and_last_segment() {
        let u = "http://localhost:8081/api/busi/TransOut/";
        assert_eq!(participant_of(u).as_str(), "localhost:8081");
        assert_eq!(action_of(u).as_str(), "TransOut");
        assert_eq!(participant_of("http://[::1]:80/x").as_str(), "_::1_:80");
        assert_eq!(action_of("http://h:1/").as_str(), "call");
        assert_eq!(action_of("http://h:1/a%20b").as_str(), "a_20b");
        // Both are valid identifiers whatever the URL.
        assert!(ParticipantName::parse(participant_of("http://[::1]:80/x").as_str()).is_ok());
    }

    #[test]
    fn headers_must_be_valid_http() {
        let ok: BTreeMap<String, String> = [("x-tenant".into(), "a".into())].into();
        assert!(check_headers(&ok).is_ok());
        let bad: BTreeMap<String, String> = [("bad name".into(), "a".into())].into();
        assert!(check_headers(&bad).is_err());
        let bad: BTreeMap<String, String> = [("x".into(), "a\nb".into())].into();
        assert!(check_headers(&bad).is_err());
    }

    #[test]
    fn a_phase_without_url_has_none() {
        let c = UrlCall {
            urls: [
                ("execute".into(), "http://h/a".into()),
                ("compensate".into(), String::new()),
            ]
            .into(),
            ..UrlCall::default()
        };
        assert_eq!(c.url("execute"), Some("http://h/a"));
        assert_eq!(c.url("compensate"), None);
        assert_eq!(c.main_url(), Some("http://h/a"));
    }
}
