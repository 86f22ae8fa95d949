//! A transaction's metadata: string pairs an initiator attaches at Begin or
//! SubmitSaga, forwarded to participants on every call. Its limits, its
//! validation and what counts as "the same metadata" for an idempotent
//! repeat live here, so that the engine, the API and tracing agree.

use std::collections::BTreeMap;

use super::InvalidValue;

/// Metadata of a transaction, ordered so that it stores and compares
/// deterministically.
pub type Metadata = BTreeMap<String, String>;

/// Largest number of entries, and of bytes in a key or a value.
pub const MAX_ENTRIES: usize = 32;
pub const MAX_KEY: usize = 128;
pub const MAX_VALUE: usize = 2048;

/// W3C trace context keys. They are carried in the metadata so that every
/// participant call joins the initiator's trace, but they are not part of
/// the transaction's identity (see [`same_business`]).
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Checks sizes; keys are lowercase like HTTP/2 headers.
pub fn validate(metadata: &Metadata) -> Result<(), InvalidValue> {
    if metadata.len() > MAX_ENTRIES {
        return Err(InvalidValue(format!(
            "metadata has {} entries, the limit is {MAX_ENTRIES}",
            metadata.len()
        )));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.len() > MAX_KEY {
            return Err(InvalidValue(format!(
                "metadata key {k:?} must be 1-{MAX_KEY} bytes"
            )));
        }
        if v.len() > MAX_VALUE {
            return Err(InvalidValue(format!(
                "metadata value of {k:?} is {} bytes, the limit is {MAX_VALUE}",
                v.len()
            )));
        }
    }
    Ok(())
}

/// Whether two metadata maps are equal once the trace context is left out:
/// a client that repeats Begin after a timeout sends a new span id, and the
/// repeat is still the same transaction.
pub fn same_business(a: &Metadata, b: &Metadata) -> bool {
    let business = |m: &Metadata| {
        m.iter()
            .filter(|(k, _)| k.as_str() != TRACEPARENT && k.as_str() != TRACESTATE)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    business(a) == business(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_ignore_the_trace_context() {
        let a = Metadata::from([
            ("tenant".to_string(), "a".to_string()),
            (TRACEPARENT.to_string(), "00-x".to_string()),
        ]);
        let b = Metadata::from([("tenant".to_string(), "a".to_string())]);
        let c = Metadata::from([("tenant".to_string(), "b".to_string())]);
        assert!(same_business(&a, &b));
        assert!(!same_business(&a, &c));
    }

    #[test]
    fn limits_are_enforced_with_the_limit_named() {
        let many: Metadata = (0..=MAX_ENTRIES)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(validate(&many).unwrap_err().0.contains("limit is 32"));
        let empty_key = Metadata::from([(String::new(), "v".to_string())]);
        assert!(validate(&empty_key).is_err());
        let long = Metadata::from([("k".to_string(), "v".repeat(MAX_VALUE + 1))]);
        assert!(validate(&long).unwrap_err().0.contains("2049 bytes"));
        assert!(validate(&Metadata::new()).is_ok());
    }
}
