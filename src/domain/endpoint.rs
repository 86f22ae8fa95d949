//! Where a participant instance is reached and how it is spoken to: its
//! URL and its [`Protocol`] (gRPC, the default, or HTTP/JSON). Declared at
//! registration, stored with the endpoint, and read by the participant
//! client to pick the transport of each call.

use std::fmt;

use super::{EndpointUrl, InvalidValue};

/// The wire protocol of one participant endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Protocol {
    /// `concord.participant.v1.Participant` over gRPC.
    #[default]
    Grpc,
    /// One `POST {endpoint}/{action}/{phase}` per call, the payload as the
    /// body (see `docs/openapi/participant.yaml`).
    Http,
    /// DTM's convention, for branches and query-backs given as URLs through
    /// the DTM-compatible API (`src/api/dtm/`): the URL is called as given,
    /// with `gid`, `trans_type`, `branch_id` and `op` added as query
    /// parameters. Never registered: a participant endpoint is gRPC or HTTP.
    Dtm,
}

impl Protocol {
    /// The name stored and shown: `grpc` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
            Protocol::Dtm => "dtm",
        }
    }

    /// Reads a stored name; anything unknown is gRPC, the historical default.
    pub fn from_stored(value: &str) -> Self {
        match value {
            "http" => Protocol::Http,
            "dtm" => Protocol::Dtm,
            _ => Protocol::Grpc,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One registered participant instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub url: EndpointUrl,
    pub protocol: Protocol,
}

impl Endpoint {
    /// Parses an endpoint of `protocol`. A gRPC endpoint is a bare
    /// `http(s)://host:port`; an HTTP one may add a base path
    /// (`https://svc/api/concord`) under which the phase URLs are built,
    /// but no query, fragment or credentials.
    pub fn parse(value: impl Into<String>, protocol: Protocol) -> Result<Self, InvalidValue> {
        let value = value.into();
        let url = match protocol {
            Protocol::Grpc => EndpointUrl::parse(value)?,
            Protocol::Http => parse_http(value)?,
            Protocol::Dtm => super::url_call::parse_url(&value)?,
        };
        Ok(Self { url, protocol })
    }

    /// A gRPC endpoint (what every registration was before protocols).
    pub fn grpc(url: EndpointUrl) -> Self {
        Self {
            url,
            protocol: Protocol::Grpc,
        }
    }
}

fn parse_http(value: String) -> Result<EndpointUrl, InvalidValue> {
    let bad = |why: &str| InvalidValue(format!("endpoint {value:?} is not valid: {why}"));
    if value.len() > EndpointUrl::MAX_LEN {
        return Err(bad("too long"));
    }
    let uri: http::Uri = value.parse().map_err(|_| bad("not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("credentials are not allowed"));
    }
    if uri.query().is_some() || value.contains('#') {
        return Err(bad("a query or fragment is not allowed"));
    }
    let path = uri.path().trim_end_matches('/');
    Ok(EndpointUrl::from_trusted(format!(
        "{scheme}://{authority}{path}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoints_may_carry_a_base_path() {
        let e = Endpoint::parse("http://127.0.0.1:7001/api/concord/", Protocol::Http).unwrap();
        assert_eq!(e.url.as_str(), "http://127.0.0.1:7001/api/concord");
        assert_eq!(e.protocol, Protocol::Http);
        let bare = Endpoint::parse("https://svc:8443/", Protocol::Http).unwrap();
        assert_eq!(bare.url.as_str(), "https://svc:8443");
        for bad in [
            "http://h:1/p?x=1",
            "http://h:1/p#frag",
            "ftp://h:1",
            "http://u:p@h:1",
            "h:1",
        ] {
            assert!(
                Endpoint::parse(bad, Protocol::Http).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn grpc_endpoints_keep_their_rules() {
        assert!(Endpoint::parse("http://h:1/path", Protocol::Grpc).is_err());
        assert_eq!(
            Endpoint::parse("http://h:1/", Protocol::Grpc).unwrap(),
            Endpoint::grpc(EndpointUrl::parse("http://h:1").unwrap())
        );
    }

    #[test]
    fn stored_names_round_trip() {
        for p in [Protocol::Grpc, Protocol::Http, Protocol::Dtm] {
            assert_eq!(Protocol::from_stored(p.as_str()), p);
        }
    }
}
