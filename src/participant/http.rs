//! The HTTP/JSON transport of participant calls, for endpoints registered
//! with protocol `http`. The request is defined here once (and described for
//! participants' authors in `docs/openapi/participant.yaml`, served by the
//! coordinator at `/openapi/participant.yaml`):
//!
//! - `POST {endpoint}/{action}/{phase}`, phase one of `try`, `confirm`,
//!   `cancel`, `execute`, `compensate`; the query-back of a 2-phase message
//!   is `POST {endpoint}/query_prepared` to the initiator, without branch
//!   or action;
//! - the body is the branch's payload, byte for byte, sent as
//!   `application/json`;
//! - headers [`GID`], [`BRANCH_ID`], [`PHASE`], [`ACTION`], [`ATTEMPT`],
//!   [`DEADLINE_MS`], [`METADATA`] and the W3C `traceparent`/`tracestate`.
//!
//! The reply is classified by the same contract as a gRPC one: any 2xx is
//! success (its body is the reply payload), 409 Conflict is a business
//! rejection (final; its body is the reason), anything else, a timeout or a
//! refused connection is unknown and retried.
//!
//! The same client has one more shape, DTM's convention, for branches given
//! as URLs through the DTM-compatible API ([`HttpTransport::call_dtm`]):
//! the URL is called as given with `gid`, `trans_type`, `branch_id` and
//! `op` as query parameters (a POST with the payload as the body; the
//! query-back a GET without one), and the reply is read as DTM reads it:
//! 200 is success, 409 or a body containing `FAILURE` a rejection, 425 or
//! a body containing `ONGOING` "not yet" (unknown, code `ONGOING`, asked
//! again later), anything else unknown.

use std::collections::HashMap;
use std::time::Duration;

use concord_proto::participant::v1::BranchRequest;
use reqwest::StatusCode;

use crate::domain::EndpointUrl;
use crate::machine::Outcome;
use crate::participant::credential::Credential;

/// The transaction's gid.
pub const GID: &str = "concord-gid";
/// The branch id, unique within the transaction.
pub const BRANCH_ID: &str = "concord-branch-id";
/// The phase, as in the URL.
pub const PHASE: &str = "concord-phase";
/// The action, as in the URL.
pub const ACTION: &str = "concord-action";
/// 1 for the first delivery of this phase, incremented on every retry.
pub const ATTEMPT: &str = "concord-attempt";
/// Milliseconds the coordinator waits for the reply, counted from when the
/// request is sent (relative like `grpc-timeout`, so clocks need not agree).
pub const DEADLINE_MS: &str = "concord-deadline-ms";
/// The transaction's metadata as a JSON object of strings, non-ASCII
/// characters escaped (`\uXXXX`) so that it is a valid header value;
/// absent when the metadata is empty.
pub const METADATA: &str = "concord-metadata";

/// Longest rejection or error message kept from a reply body.
const MAX_MESSAGE: usize = 1024;

/// What one call came to on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub outcome: Outcome,
    pub payload: Vec<u8>,
    /// The endpoint itself failed (no answer, or no answer in time): this
    /// is what counts against its circuit breaker. Any HTTP status proves
    /// the endpoint alive, as any gRPC status does.
    pub endpoint_down: bool,
}

impl Answer {
    pub(crate) fn unknown(code: &str, message: String, endpoint_down: bool) -> Self {
        Answer {
            outcome: Outcome::Unknown {
                code: code.into(),
                message,
            },
            payload: Vec::new(),
            endpoint_down,
        }
    }
}

/// A pooled HTTP client: connections to an endpoint are kept alive and
/// reused across calls (HTTP/1.1 keep-alive, or HTTP/2 when TLS offers it).
pub struct HttpTransport {
    client: reqwest::Client,
    /// Largest reply body read; a larger one is an unknown outcome.
    max_body: usize,
    /// `authorization` sent with every call (the coordinator's token).
    credential: Credential,
}

impl HttpTransport {
    /// A transport with `tls` for `https://` endpoints.
    pub fn new(tls: rustls::ClientConfig, max_body: usize) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            // Participants are reached directly, as gRPC ones are: a proxy
            // from the environment would only add a hop and a failure mode.
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| format!("cannot set up the http client: {e}"))?;
        Ok(Self {
            client,
            max_body,
            credential: Credential::default(),
        })
    }

    /// Sends `authorization` with every call.
    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credential = credential;
        self
    }

    /// Sends one call of `phase` to `endpoint` and waits at most `timeout`.
    pub async fn call(
        &self,
        endpoint: &EndpointUrl,
        phase: &str,
        request: &BranchRequest,
        timeout: Duration,
    ) -> Answer {
        let mut call = self
            .client
            .post(url(endpoint, &request.action, phase))
            .timeout(timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(GID, &request.gid)
            .header(PHASE, phase)
            .header(ATTEMPT, request.attempt)
            .header(DEADLINE_MS, timeout.as_millis().max(1) as u64)
            .body(request.payload.clone());
        // A query-back concerns the whole message: no branch, no action.
        if !request.branch_id.is_empty() {
            call = call.header(BRANCH_ID, &request.branch_id);
        }
        if !request.action.is_empty() {
            call = call.header(ACTION, &request.action);
        }
        if !request.metadata.is_empty() {
            call = call.header(METADATA, metadata_header(&request.metadata));
        }
        if let Some(credential) = self.credential.get() {
            call = call.header(http::header::AUTHORIZATION, credential);
        }
        if let Some((parent, state)) = crate::telemetry::trace::call_context(&request.metadata) {
            call = call.header(crate::telemetry::trace::TRACEPARENT, parent);
            if let Some(state) = state {
                call = call.header(crate::telemetry::trace::TRACESTATE, state);
            }
        }
        let response = match call.send().await {
            Ok(r) => r,
            Err(e) => return failed(&e, timeout),
        };
        let status = response.status();
        match read_body(response, self.max_body).await {
            Ok(body) => classify(status, body),
            Err(BodyError::TooLarge) => Answer::unknown(
                "RESOURCE_EXHAUSTED",
                format!("reply body over {} bytes", self.max_body),
                false,
            ),
            Err(BodyError::Transport(e)) => failed(&e, timeout),
        }
    }
}

/// One call in DTM's convention: what goes into its query parameters and
/// headers beside the URL.
#[derive(Debug, Clone, Copy)]
pub struct DtmCall<'a> {
    /// `tcc`, `saga` or `msg`.
    pub trans_type: &'a str,
    /// The branch id as DTM numbers it (`00` for a query-back).
    pub branch_id: &'a str,
    /// DTM's name of the phase ([`dtm_op`]).
    pub op: &'a str,
    /// Sent with the call (branch and passthrough headers).
    pub headers: &'a std::collections::BTreeMap<String, String>,
    /// The body of a POST; `None` makes the call a GET (a query-back).
    pub body: Option<&'a [u8]>,
}

/// DTM's name of a phase: `try`, `confirm`, `cancel`, `action` (a saga's
/// or a message's forward step), `compensate`, and `msg` for the query-back.
pub fn dtm_op(phase: &str) -> &str {
    match phase {
        "execute" => "action",
        "query_prepared" => "msg",
        other => other,
    }
}

/// What DTM's conventions make of a reply (see the module doc).
pub fn classify_dtm(status: StatusCode, body: Vec<u8>) -> Answer {
    let text = String::from_utf8_lossy(&body);
    if status == StatusCode::TOO_EARLY || text.contains("ONGOING") {
        return Answer::unknown("ONGOING", message_of(&body), false);
    }
    if status == StatusCode::CONFLICT || text.contains("FAILURE") {
        return Answer {
            outcome: Outcome::Rejected {
                message: message_of(&body),
            },
            payload: Vec::new(),
            endpoint_down: false,
        };
    }
    if status == StatusCode::OK {
        return Answer {
            outcome: Outcome::Succeeded,
            payload: body,
            endpoint_down: false,
        };
    }
    Answer::unknown(
        &format!("HTTP_{}", status.as_u16()),
        message_of(&body),
        false,
    )
}

impl HttpTransport {
    /// Sends one call to `url` in DTM's convention and waits at most
    /// `timeout`; the attempt and deadline go along as Concord's headers,
    /// which DTM participants ignore.
    pub async fn call_dtm(
        &self,
        url: &EndpointUrl,
        gid: &str,
        attempt: u32,
        dtm: DtmCall<'_>,
        timeout: Duration,
    ) -> Answer {
        let method = if dtm.body.is_some() {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let mut target = match reqwest::Url::parse(url.as_str()) {
            Ok(u) => u,
            Err(e) => {
                return Answer::unknown("INVALID_ARGUMENT", format!("bad url {url}: {e}"), false);
            }
        };
        target
            .query_pairs_mut()
            .append_pair("gid", gid)
            .append_pair("trans_type", dtm.trans_type)
            .append_pair("branch_id", dtm.branch_id)
            .append_pair("op", dtm.op);
        let mut call = self
            .client
            .request(method, target)
            .timeout(timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(ATTEMPT, attempt)
            .header(DEADLINE_MS, timeout.as_millis().max(1) as u64);
        for (name, value) in dtm.headers {
            call = call.header(name.as_str(), value.as_str());
        }
        if let Some(body) = dtm.body {
            call = call.body(body.to_vec());
        }
        let response = match call.send().await {
            Ok(r) => r,
            Err(e) => return failed(&e, timeout),
        };
        let status = response.status();
        match read_body(response, self.max_body).await {
            Ok(body) => classify_dtm(status, body),
            Err(BodyError::TooLarge) => Answer::unknown(
                "RESOURCE_EXHAUSTED",
                format!("reply body over {} bytes", self.max_body),
                false,
            ),
            Err(BodyError::Transport(e)) => failed(&e, timeout),
        }
    }
}

/// The URL of one call: the endpoint (with its base path, if any), then
/// the action and the phase; a call that names no action (the query-back
/// of a message) is `{endpoint}/{phase}`.
pub fn url(endpoint: &EndpointUrl, action: &str, phase: &str) -> String {
    if action.is_empty() {
        return format!("{endpoint}/{phase}");
    }
    format!("{endpoint}/{action}/{phase}")
}

/// Classifies an answered call by the outcome contract.
pub fn classify(status: StatusCode, body: Vec<u8>) -> Answer {
    if status.is_success() {
        return Answer {
            outcome: Outcome::Succeeded,
            payload: body,
            endpoint_down: false,
        };
    }
    let message = message_of(&body);
    if status == StatusCode::CONFLICT {
        return Answer {
            outcome: Outcome::Rejected { message },
            payload: Vec::new(),
            endpoint_down: false,
        };
    }
    Answer::unknown(&format!("HTTP_{}", status.as_u16()), message, false)
}

/// A call that got no answer: refused or reset (UNAVAILABLE) or not in time
/// (DEADLINE_EXCEEDED); either way the endpoint failed.
fn failed(e: &reqwest::Error, timeout: Duration) -> Answer {
    if e.is_timeout() {
        return Answer::unknown(
            "DEADLINE_EXCEEDED",
            format!("no reply within {}ms", timeout.as_millis()),
            true,
        );
    }
    // The chain names the cause ("connection refused"), the top only
    // "error sending request".
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    Answer::unknown("UNAVAILABLE", truncate(message), true)
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

async fn read_body(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn message_of(body: &[u8]) -> String {
    truncate(String::from_utf8_lossy(body).trim().to_string())
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The metadata as a JSON object that is a valid header value: serde
/// escapes control characters, and every non-ASCII character becomes a
/// `\uXXXX` escape (a surrogate pair beyond the basic plane), which any
/// JSON parser reads back to the same string.
pub fn metadata_header(metadata: &HashMap<String, String>) -> String {
    let sorted: std::collections::BTreeMap<_, _> = metadata.iter().collect();
    let json = serde_json::to_string(&sorted).unwrap_or_else(|_| "{}".into());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_follow_the_outcome_contract() {
        let ok = classify(StatusCode::CREATED, b"{\"id\":1}".to_vec());
        assert_eq!(ok.outcome, Outcome::Succeeded);
        assert_eq!(ok.payload, b"{\"id\":1}");
        let no = classify(StatusCode::CONFLICT, b" insufficient funds\n".to_vec());
        assert_eq!(
            no.outcome,
            Outcome::Rejected {
                message: "insufficient funds".into()
            }
        );
        for status in [
            StatusCode::BAD_REQUEST,
            StatusCode::NOT_FOUND,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            let a = classify(status, b"x".to_vec());
            let code = format!("HTTP_{}", status.as_u16());
            assert!(
                matches!(&a.outcome, Outcome::Unknown { code: c, .. } if *c == code),
                "{status}: {:?}",
                a.outcome
            );
            // An answer proves the endpoint up, whatever it says.
            assert!(!a.endpoint_down);
        }
    }

    #[test]
    fn dtm_replies_follow_dtm_conventions() {
        let ok = classify_dtm(StatusCode::OK, br#"{"dtm_result":"SUCCESS"}"#.to_vec());
        assert_eq!(ok.outcome, Outcome::Succeeded);
        // Only 200 is success in DTM's convention.
        assert!(matches!(
            classify_dtm(StatusCode::CREATED, Vec::new()).outcome,
            Outcome::Unknown { code, .. } if code == "HTTP_201"
        ));
        for (status, body) in [
            (StatusCode::CONFLICT, &b"no stock"[..]),
            (StatusCode::OK, br#"{"dtm_result":"FAILURE"}"#),
        ] {
            assert!(
                matches!(
                    classify_dtm(status, body.to_vec()).outcome,
                    Outcome::Rejected { .. }
                ),
                "{status} {body:?}"
            );
        }
        for (status, body) in [
            (StatusCode::TOO_EARLY, &b""[..]),
            (StatusCode::OK, br#"{"dtm_result":"ONGOING"}"#),
        ] {
            let a = classify_dtm(status, body.to_vec());
            assert!(
                matches!(&a.outcome, Outcome::Unknown { code, .. } if code == "ONGOING"),
                "{status}: {:?}",
                a.outcome
            );
            assert!(!a.endpoint_down);
        }
        assert!(matches!(
            classify_dtm(StatusCode::INTERNAL_SERVER_ERROR, b"x".to_vec()).outcome,
            Outcome::Unknown { code, .. } if code == "HTTP_500"
        ));
        assert_eq!(dtm_op("execute"), "action");
        assert_eq!(dtm_op("query_prepared"), "msg");
        assert_eq!(dtm_op("cancel"), "cancel");
    }

    #[test]
    fn metadata_is_a_valid_header_that_reads_back() {
        let metadata: HashMap<String, String> = [
            ("tenant".to_string(), "zürich \"a\"\n".to_string()),
            ("emoji".to_string(), "🦀".to_string()),
        ]
        .into();
        let header = metadata_header(&metadata);
        assert!(http::HeaderValue::from_str(&header).is_ok(), "{header}");
        let back: HashMap<String, String> = serde_json::from_str(&header).unwrap();
        assert_eq!(back, metadata);
    }

    #[test]
    fn urls_append_action_and_phase_to_the_base_path() {
        let base = crate::domain::Endpoint::parse(
            "http://127.0.0.1:8080/api/",
            crate::domain::Protocol::Http,
        )
        .unwrap();
        assert_eq!(
            url(&base.url, "transfer_out", "try"),
            "http://127.0.0.1:8080/api/transfer_out/try"
        );
        assert_eq!(
            url(&base.url, "", "query_prepared"),
            "http://127.0.0.1:8080/api/query_prepared"
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let cut = truncate("é".repeat(MAX_MESSAGE));
        assert!(cut.len() <= MAX_MESSAGE);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
