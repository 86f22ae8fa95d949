//! W3C trace context (`traceparent`, `tracestate`). The initiator's context
//! arrives as gRPC headers on Begin or SubmitSaga and is stored in the
//! transaction's metadata, so that every participant call, including a retry
//! made by another instance after a restart, carries it: one business
//! request stays one trace across services. The coordinator does not export
//! spans of its own, so it forwards the initiator's context unchanged: the
//! participants' spans become children of the initiator's span.

use concord_proto::participant::v1::BranchRequest;
use tonic::metadata::MetadataMap;

use crate::domain::ParticipantName;
use crate::domain::metadata::{MAX_ENTRIES, Metadata};
pub use crate::domain::metadata::{TRACEPARENT, TRACESTATE};
use crate::machine::Phase;
/// The specification allows 32 list members of at most 256 characters;
/// longer values are dropped rather than stored.
const MAX_TRACESTATE: usize = 512;

/// The trace id of a valid `traceparent`
/// (`version-traceid-parentid-flags`, lowercase hex), `None` otherwise.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    // Version 00 has exactly four fields; later versions may append more.
    let extra = parts.next().is_some();
    let ok = hex(version, 2)
        && version != "ff"
        && !(version == "00" && extra)
        && hex(trace, 32)
        && !zero(trace)
        && hex(parent, 16)
        && !zero(parent)
        && hex(flags, 2);
    ok.then_some(trace)
}

/// Copies a valid trace context from the request headers into the
/// transaction's metadata, unless the metadata carries a `traceparent`
/// already (an initiator that put one there on purpose wins).
pub fn inherit(headers: &MetadataMap, metadata: &mut Metadata) {
    // Best effort: a map already at its size limit is left as it is rather
    // than refused because of a header the client did not put there.
    if metadata.contains_key(TRACEPARENT) || metadata.len() + 2 > MAX_ENTRIES {
        return;
    }
    let Some(parent) = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| trace_id(v).is_some())
    else {
        return;
    };
    metadata.insert(TRACEPARENT.to_string(), parent.to_string());
    if let Some(state) = headers
        .get(TRACESTATE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_TRACESTATE)
    {
        metadata.insert(TRACESTATE.to_string(), state.to_string());
    }
}

/// Sets the `traceparent` (and `tracestate`) headers of a participant call
/// from the metadata forwarded in its body.
pub fn forward(req: &mut tonic::Request<BranchRequest>) {
    let Some((parent, state)) = call_context(&req.get_ref().metadata) else {
        return;
    };
    let Ok(parent) = parent.parse() else {
        return;
    };
    let state = state.and_then(|v| v.parse().ok());
    req.metadata_mut().insert(TRACEPARENT, parent);
    if let Some(state) = state {
        req.metadata_mut().insert(TRACESTATE, state);
    }
}

/// The trace context a participant call carries, whatever its transport:
/// a valid `traceparent` from the forwarded metadata and its `tracestate`.
pub fn call_context(
    metadata: &std::collections::HashMap<String, String>,
) -> Option<(&str, Option<&str>)> {
    let parent = metadata
        .get(TRACEPARENT)
        .filter(|v| trace_id(v).is_some())?;
    Some((parent, metadata.get(TRACESTATE).map(String::as_str)))
}

/// The span of one participant call, with the trace id when the
/// transaction carries one (to find the call's log lines from a trace).
pub fn call_span(
    participant: &ParticipantName,
    phase: Phase,
    req: &BranchRequest,
) -> tracing::Span {
    let trace = req.metadata.get(TRACEPARENT).and_then(|t| trace_id(t));
    tracing::info_span!("participant_call",
        gid = %req.gid,
        branch_id = %req.branch_id,
        participant = %participant,
        action = %req.action,
        phase = phase.as_str(),
        attempt = req.attempt,
        trace_id = trace.unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_validation() {
        assert_eq!(trace_id(VALID), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
        assert!(trace_id("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx").is_some());
    }

    #[test]
    fn inherit_keeps_an_explicit_traceparent_and_ignores_garbage() {
        let mut headers = MetadataMap::new();
        headers.insert(TRACEPARENT, VALID.parse().unwrap());
        headers.insert(TRACESTATE, "vendor=x".parse().unwrap());
        let mut m = Metadata::new();
        inherit(&headers, &mut m);
        assert_eq!(m.get(TRACEPARENT).map(String::as_str), Some(VALID));
        assert_eq!(m.get(TRACESTATE).map(String::as_str), Some("vendor=x"));

        let mut explicit = Metadata::from([(TRACEPARENT.to_string(), "mine".to_string())]);
        inherit(&headers, &mut explicit);
        assert_eq!(explicit[TRACEPARENT], "mine");

        let mut garbage = MetadataMap::new();
        garbage.insert(TRACEPARENT, "not-a-trace".parse().unwrap());
        let mut m = Metadata::new();
        inherit(&garbage, &mut m);
        assert!(m.is_empty());
    }

    #[test]
    fn forward_sets_the_trace_headers() {
        let mut req = tonic::Request::new(BranchRequest {
            metadata: [
                (TRACEPARENT.to_string(), VALID.to_string()),
                ("tenant".to_string(), "a".to_string()),
            ]
            .into(),
            ..Default::default()
        });
        forward(&mut req);
        assert_eq!(req.metadata().get(TRACEPARENT).unwrap(), VALID);
        assert!(req.metadata().get("tenant").is_none());
    }
}
