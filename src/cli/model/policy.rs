//! A branch's own call policy as one line of `tx show` ("timeout 200ms,
//! retry 50ms x2 up to 5s, at most 3 calls"); `None` when it has none and
//! follows the coordinator's settings.

use concord_proto::v1 as pb;

fn duration(d: &prost_types::Duration) -> String {
    let ms = d.seconds.max(0) as u128 * 1000 + d.nanos.max(0) as u128 / 1_000_000;
    match ms {
        m if m >= 60_000 && m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m >= 1000 && m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

pub fn describe(
    call_timeout: Option<&prost_types::Duration>,
    policy: Option<&pb::CallPolicy>,
) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(t) = call_timeout {
        parts.push(format!("timeout {}", duration(t)));
    }
    if let Some(p) = policy {
        if let (Some(initial), Some(max)) = (&p.retry_initial, &p.retry_max) {
            let mut retry = format!(
                "retry {} x{} up to {}",
                duration(initial),
                p.retry_factor.unwrap_or(2.0),
                duration(max)
            );
            if p.retry_jitter == Some(false) {
                retry.push_str(" without jitter");
            }
            parts.push(retry);
        }
        if p.max_attempts > 0 {
            parts.push(format!("at most {} calls", p.max_attempts));
        }
        if let Some(age) = &p.max_age {
            parts.push(format!("for at most {}", duration(age)));
        }
        if !p.non_retryable_codes.is_empty() {
            parts.push(format!(
                "never retried on {}",
                p.non_retryable_codes.join(", ")
            ));
        }
        if !p.non_retryable_http_statuses.is_empty() {
            let statuses: Vec<String> = p
                .non_retryable_http_statuses
                .iter()
                .map(|s| format!("HTTP {s}"))
                .collect();
            parts.push(format!("never retried on {}", statuses.join(", ")));
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: i64) -> prost_types::Duration {
        prost_types::Duration {
            seconds: ms / 1000,
            nanos: (ms % 1000) as i32 * 1_000_000,
        }
    }

    #[test]
    fn one_line_of_what_was_set() {
        assert_eq!(describe(None, None), None);
        assert_eq!(describe(None, Some(&pb::CallPolicy::default())), None);
        let p = pb::CallPolicy {
            retry_initial: Some(d(50)),
            retry_factor: Some(1.5),
            retry_max: Some(d(5000)),
            retry_jitter: Some(false),
            max_attempts: 3,
            max_age: Some(d(600_000)),
            non_retryable_codes: vec!["NOT_FOUND".into()],
            non_retryable_http_statuses: vec![422],
        };
        assert_eq!(
            describe(Some(&d(200)), Some(&p)).as_deref(),
            Some(
                "timeout 200ms, retry 50ms x1.5 up to 5s without jitter, at most 3 calls, for at most 10m, never retried on NOT_FOUND, never retried on HTTP 422"
            )
        );
    }
}
