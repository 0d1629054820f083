//! The request size limit of a gRPC service, reported like any other bad input.
//!
//! tonic refuses a request message larger than a service's
//! `max_decoding_message_size` with `OUT_OF_RANGE` and no error detail. [`SizeLimited`]
//! wraps such a service and turns that refusal into the `INVALID_ARGUMENT` every other
//! bad input gets, with a [`crate::status`] error detail naming the field `request`.

use std::task::{Context, Poll};

use tenancy_core::Error;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Code, Status};

use crate::status::to_status;

/// The message tonic's decoder gives a request over the limit.
const TONIC_TOO_LARGE: &str = "decoded message length too large";

/// A gRPC service whose decoder limits request sizes to `limit` bytes (the limit is
/// set on the inner service; this only rewrites its refusal).
#[derive(Debug, Clone)]
pub struct SizeLimited<S> {
    inner: S,
    limit: usize,
}

impl<S> SizeLimited<S> {
    /// Wraps `inner`, whose `max_decoding_message_size` is `limit`.
    pub const fn new(inner: S, limit: usize) -> Self {
        Self { inner, limit }
    }
}

impl<S: NamedService> NamedService for SizeLimited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for SizeLimited<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        let limit = self.limit;
        Box::pin(async move { Ok(rewrite_too_large(response.await?, limit)) })
    }
}

/// `response`, or the `INVALID_ARGUMENT` reply if it is tonic's refusal of an
/// oversized request.
fn rewrite_too_large(response: http::Response<Body>, limit: usize) -> http::Response<Body> {
    // Refusals are trailers-only replies: the status is in the headers.
    let out_of_range = response
        .headers()
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"11");
    if !out_of_range {
        return response;
    }
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != Code::OutOfRange || !status.message().contains(TONIC_TOO_LARGE) {
        return response;
    }
    let found = status
        .message()
        .split_once("found ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .unwrap_or("more");
    let err = Error::invalid(
        "request",
        format!("the message is {found} bytes; at most {limit} bytes are accepted"),
    );
    to_status(&err).into_http()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::status::error_detail;

    #[test]
    fn only_tonics_size_refusal_is_rewritten() {
        let too_large = Status::out_of_range(
            "Error, decoded message length too large: found 2097157 bytes, the limit is: 1048576 bytes",
        )
        .into_http();
        let rewritten = rewrite_too_large(too_large, 1_048_576);
        let status = Status::from_header_map(rewritten.headers()).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("2097157 bytes"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("1048576"), "{}", status.message());
        assert_eq!(error_detail(&status).unwrap().field, "request");

        let other = Status::out_of_range("page 7 does not exist").into_http();
        let kept = rewrite_too_large(other, 1_048_576);
        let status = Status::from_header_map(kept.headers()).unwrap();
        assert_eq!(status.code(), Code::OutOfRange);

        let ok = http::Response::new(Body::empty());
        assert!(
            Status::from_header_map(rewrite_too_large(ok, 1).headers()).is_none(),
            "a successful reply is kept"
        );
    }
}
