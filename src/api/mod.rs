//! The network surfaces: thin gRPC adapters from the generated traits to
//! the engine, and the HTTP listener ([`http`]). This module holds what
//! every gRPC handler shares: the one mapping of errors to
//! `tonic::Status` (and, for the console's JSON API, to HTTP statuses),
//! panic recovery and request logging.

pub mod admin;
pub mod console;
pub mod convert;
pub mod coordinator;
pub mod db_down;
pub mod dtm;
pub mod guard;
pub mod http;
pub mod msg;
pub mod oversize;
pub mod registry;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tonic::{Code, Status};
use tracing::Instrument;

use crate::domain::InvalidValue;
use crate::error::Error;
use crate::participant::client::code_name;
use crate::store::StoreError;

/// The only place engine errors become gRPC statuses.
pub fn status(err: Error) -> Status {
    match err {
        Error::InvalidArgument(m) => Status::invalid_argument(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::AlreadyExists(m) => Status::already_exists(m),
        Error::FailedPrecondition(m) => Status::failed_precondition(m),
        Error::Rejected(m) => Status::aborted(m),
        Error::Unavailable(m) => Status::unavailable(m),
        Error::DeadlineExceeded(m) => Status::deadline_exceeded(m),
        Error::Unauthenticated(m) => Status::unauthenticated(m),
        Error::PermissionDenied(m) => Status::permission_denied(m),
        Error::ResourceExhausted(m) => Status::resource_exhausted(m),
        Error::Store(StoreError::Unavailable(m)) => {
            Status::unavailable(format!("database unavailable: {m}"))
        }
        Error::Store(StoreError::Conflict(m)) => {
            Status::aborted(format!("concurrent change: {m}; retry"))
        }
        Error::Store(e) => Status::internal(e.to_string()),
        Error::Internal(m) => Status::internal(m),
    }
}

/// The only place engine errors become HTTP statuses (the console's JSON
/// API), class for class as [`status`] does for gRPC; the message is the
/// error's own.
pub fn http_status(err: &Error) -> (::http::StatusCode, String) {
    use ::http::StatusCode as H;
    let code = match err {
        Error::InvalidArgument(_) => H::BAD_REQUEST,
        Error::NotFound(_) => H::NOT_FOUND,
        Error::AlreadyExists(_) | Error::FailedPrecondition(_) | Error::Rejected(_) => H::CONFLICT,
        Error::Unavailable(_) => H::SERVICE_UNAVAILABLE,
        Error::DeadlineExceeded(_) => H::GATEWAY_TIMEOUT,
        Error::Unauthenticated(_) => H::UNAUTHORIZED,
        Error::PermissionDenied(_) => H::FORBIDDEN,
        Error::ResourceExhausted(_) => H::TOO_MANY_REQUESTS,
        Error::Store(StoreError::Unavailable(m)) => {
            return (H::SERVICE_UNAVAILABLE, format!("database unavailable: {m}"));
        }
        Error::Store(StoreError::Conflict(m)) => {
            return (H::CONFLICT, format!("concurrent change: {m}; retry"));
        }
        Error::Store(_) | Error::Internal(_) => H::INTERNAL_SERVER_ERROR,
    };
    (code, err.to_string())
}

impl From<InvalidValue> for Error {
    fn from(v: InvalidValue) -> Self {
        Error::InvalidArgument(v.0)
    }
}

/// Runs one handler: turns a panic into INTERNAL (the server lives on),
/// runs it in a span with the method and gid, logs the outcome once and
/// records it in the request metrics.
pub async fn guarded<T, F>(
    method: &'static str,
    gid: &str,
    handler: F,
) -> Result<tonic::Response<T>, Status>
where
    F: Future<Output = Result<T, Error>>,
{
    let started = std::time::Instant::now();
    let span = tracing::info_span!("rpc", method, gid);
    let result = match AssertUnwindSafe(handler)
        .catch_unwind()
        .instrument(span)
        .await
    {
        Ok(Ok(reply)) => Ok(tonic::Response::new(reply)),
        Ok(Err(e)) => Err(status(e)),
        Err(panic) => {
            let what = panic_message(&*panic);
            tracing::error!(method, gid, panic = %what, "handler panicked");
            Err(Status::internal(format!("internal error in {method}")))
        }
    };
    let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
    crate::telemetry::metrics::grpc_request(method, code_name(code), started.elapsed());
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &result {
        Ok(_) => tracing::debug!(method, gid, elapsed_ms, "request ok"),
        Err(s) => match s.code() {
            Code::Internal | Code::Unknown | Code::DataLoss => {
                tracing::error!(method, gid, code = ?s.code(), message = s.message(), elapsed_ms, "request failed")
            }
            _ => {
                tracing::info!(method, gid, code = ?s.code(), message = s.message(), elapsed_ms, "request refused")
            }
        },
    }
    result
}

/// The client's deadline from the `grpc-timeout` header, if it sent one.
pub fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What a handler's panic said, for the one log line it gets (the gRPC
/// and the DTM API both catch them).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&m), None);
        for (raw, d) in [
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("2M", Duration::from_secs(120)),
            ("7u", Duration::from_micros(7)),
        ] {
            m.insert("grpc-timeout", raw.parse().unwrap());
            assert_eq!(grpc_timeout(&m), Some(d));
        }
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&m), None);
    }

    #[test]
    fn each_error_has_its_code() {
        let cases = [
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (
                Error::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (Error::Rejected("x".into()), Code::Aborted),
            (Error::Unavailable("x".into()), Code::Unavailable),
            (Error::DeadlineExceeded("x".into()), Code::DeadlineExceeded),
            (Error::Unauthenticated("x".into()), Code::Unauthenticated),
            (Error::PermissionDenied("x".into()), Code::PermissionDenied),
            (
                Error::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
            ),
            (
                Error::Store(StoreError::Unavailable("x".into())),
                Code::Unavailable,
            ),
            (Error::Internal("x".into()), Code::Internal),
        ];
        for (e, code) in cases {
            let (http, _) = http_status(&e);
            assert_eq!(status(e).code(), code);
            // Each gRPC class has its HTTP class: refusals 4xx, outages 5xx.
            let client_side = matches!(
                code,
                Code::InvalidArgument
                    | Code::NotFound
                    | Code::AlreadyExists
                    | Code::FailedPrecondition
                    | Code::Aborted
                    | Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::ResourceExhausted
            );
            assert_eq!(http.is_client_error(), client_side, "{code:?} -> {http}");
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_internal() {
        let r: Result<tonic::Response<()>, Status> =
            guarded("Test", "g", async { panic!("boom") }).await;
        assert_eq!(r.unwrap_err().code(), Code::Internal);
    }
}
