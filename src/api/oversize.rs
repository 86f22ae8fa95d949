//! Requests over `max_request_bytes`. tonic refuses them while decoding,
//! before any handler runs, with OUT_OF_RANGE; the gRPC status code for a
//! message over the receiver's limit is RESOURCE_EXHAUSTED, and since no
//! handler ran, nothing logged the refusal either. This layer, around every
//! service of the server, does both: the status says what the limit is and
//! which setting sets it, and the refusal is logged once like any other.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::{Code, Status};
use tower::{Layer, Service};

/// What tonic's decoder says, and only it (handlers never send OUT_OF_RANGE).
const TONIC_TOO_LARGE: &str = "decoded message length too large";

/// Wraps the server's services; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct OversizeLayer {
    limit: usize,
}

impl OversizeLayer {
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversize {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Oversize<S> {
    inner: S,
    limit: usize,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Oversize<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let method = req.uri().path().to_string();
        let limit = self.limit;
        let reply = self.inner.call(req);
        Box::pin(async move {
            let mut response = reply.await?;
            rewrite(&mut response, &method, limit);
            Ok(response)
        })
    }
}

/// Turns tonic's oversize refusal in `response` into RESOURCE_EXHAUSTED
/// and logs it; leaves every other response alone.
fn rewrite<B>(response: &mut http::Response<B>, method: &str, limit: usize) {
    let Some(refusal) = Status::from_header_map(response.headers()) else {
        return;
    };
    if refusal.code() != Code::OutOfRange || !refusal.message().contains(TONIC_TOO_LARGE) {
        return;
    }
    let found = refusal
        .message()
        .split("found ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("more");
    let status = Status::resource_exhausted(format!(
        "request is {found} bytes, over the limit of {limit} bytes (max_request_bytes)"
    ));
    tracing::info!(method, code = ?status.code(), message = status.message(), "request refused");
    let headers = response.headers_mut();
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    // Only fails for a message that cannot be a header value; ours is ASCII.
    let _ = status.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: Status) -> http::Response<()> {
        let mut response = http::Response::new(());
        status.add_header(response.headers_mut()).unwrap();
        response
    }

    #[test]
    fn tonic_oversize_refusal_becomes_resource_exhausted() {
        let mut response = refused(Status::out_of_range(
            "Error, decoded message length too large: found 102412 bytes, the limit is: 65536 bytes",
        ));
        rewrite(&mut response, "/concord.v1.Coordinator/Try", 65536);
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "request is 102412 bytes, over the limit of 65536 bytes (max_request_bytes)"
        );
    }

    #[test]
    fn other_responses_are_left_alone() {
        for status in [
            Status::out_of_range("a different range"),
            Status::invalid_argument("decoded message length too large"),
        ] {
            let mut response = refused(status.clone());
            rewrite(&mut response, "/m", 1);
            let after = Status::from_header_map(response.headers()).unwrap();
            assert_eq!(
                (after.code(), after.message()),
                (status.code(), status.message())
            );
        }
        let mut ok = http::Response::new(());
        rewrite(&mut ok, "/m", 1);
        assert!(ok.headers().is_empty());
    }
}
