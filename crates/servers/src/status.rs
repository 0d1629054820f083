//! The one place where a [`tenancy_core::Error`] becomes a [`tonic::Status`].
//!
//! | error kind | gRPC code |
//! |---|---|
//! | `NotFound` | `NOT_FOUND` |
//! | `AlreadyExists` | `ALREADY_EXISTS` |
//! | `Conflict` (stale version, used token) | `ABORTED` |
//! | `InvalidInput` | `INVALID_ARGUMENT` |
//! | `Unauthenticated` | `UNAUTHENTICATED` |
//! | `PermissionDenied` | `PERMISSION_DENIED` |
//! | `QuotaExceeded` | `RESOURCE_EXHAUSTED` |
//! | `Unavailable` | `UNAVAILABLE` |
//! | `Internal` | `INTERNAL` |
//!
//! Every status carries an [`ErrorDetail`] (kind, field, message) packed as a
//! `google.protobuf.Any` inside a `google.rpc.Status` in the `grpc-status-details-bin`
//! trailer, the standard rich-error encoding; [`error_detail`] reads it back. Internal
//! and unavailable errors get a generic message: their detail may describe the backend,
//! so it is logged with `tracing` instead of being sent to the client.

use prost::Message as _;
use tenancy_core::{Error, ErrorKind};
use tonic::codegen::Bytes;
use tonic::{Code, Status};

use crate::proto::common::v1::ErrorDetail;

/// The type URL under which an [`ErrorDetail`] is packed in the status details.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/tenancy.common.v1.ErrorDetail";

const INTERNAL_MESSAGE: &str = "internal error";
const UNAVAILABLE_MESSAGE: &str = "a backend is temporarily unavailable, retry later";

/// `google.rpc.Status`, the standard envelope of `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// The gRPC status for a library error (see the module docs for the mapping).
#[must_use]
pub fn to_status(err: &Error) -> Status {
    let kind = err.kind();
    let code = code_of(kind);
    let message = match kind {
        ErrorKind::Internal => {
            tracing::error!(error = %err, "internal error");
            INTERNAL_MESSAGE.to_owned()
        }
        ErrorKind::Unavailable => {
            tracing::warn!(error = %err, "backend unavailable");
            UNAVAILABLE_MESSAGE.to_owned()
        }
        _ => err.to_string(),
    };
    let detail = ErrorDetail {
        kind: kind_name(kind).to_owned(),
        field: err.field().unwrap_or_default().to_owned(),
        message: message.clone(),
    };
    let envelope = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: ERROR_DETAIL_TYPE_URL.to_owned(),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(code, message, Bytes::from(envelope.encode_to_vec()))
}

/// A library result as a gRPC reply.
pub(crate) fn reply<T>(result: Result<T, Error>) -> Result<tonic::Response<T>, Status> {
    result.map(tonic::Response::new).map_err(|e| to_status(&e))
}

/// The gRPC code of an error kind.
#[must_use]
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::InvalidInput => Code::InvalidArgument,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::QuotaExceeded => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The stable name of an error kind, as sent in [`ErrorDetail::kind`].
#[must_use]
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "not_found",
        ErrorKind::AlreadyExists => "already_exists",
        ErrorKind::Conflict => "conflict",
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::Unauthenticated => "unauthenticated",
        ErrorKind::PermissionDenied => "permission_denied",
        ErrorKind::QuotaExceeded => "quota_exceeded",
        ErrorKind::Unavailable => "unavailable",
        _ => "internal",
    }
}

/// The [`ErrorDetail`] a status carries, if it carries one (client side).
#[must_use]
pub fn error_detail(status: &Status) -> Option<ErrorDetail> {
    let envelope = RpcStatus::decode(status.details()).ok()?;
    envelope
        .details
        .iter()
        .find(|any| any.type_url == ERROR_DETAIL_TYPE_URL)
        .and_then(|any| ErrorDetail::decode(any.value.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn invalid_input_names_the_field_in_message_and_detail() {
        let status = to_status(&Error::invalid("slug", "`Bad` must be lowercase"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("slug"), "{}", status.message());
        let detail = error_detail(&status).unwrap();
        assert_eq!(detail.kind, "invalid_input");
        assert_eq!(detail.field, "slug");
        assert_eq!(detail.message, status.message());
    }

    #[test]
    fn kinds_map_to_codes() {
        let cases = [
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (Error::Conflict("x".into()), Code::Aborted),
            (Error::Unauthenticated("x".into()), Code::Unauthenticated),
            (Error::PermissionDenied("x".into()), Code::PermissionDenied),
            (Error::QuotaExceeded("x".into()), Code::ResourceExhausted),
            (Error::Unavailable("x".into()), Code::Unavailable),
            (Error::Internal("x".into()), Code::Internal),
        ];
        for (err, code) in cases {
            let status = to_status(&err);
            assert_eq!(status.code(), code, "{err:?}");
            assert_eq!(error_detail(&status).unwrap().kind, kind_name(err.kind()));
        }
    }

    #[test]
    fn internal_details_are_not_sent() {
        let status = to_status(&Error::Internal("database error: password=hunter2".into()));
        assert_eq!(status.message(), INTERNAL_MESSAGE);
        assert_eq!(error_detail(&status).unwrap().message, INTERNAL_MESSAGE);
        let status = to_status(&Error::Unavailable("cannot reach db.internal:5432".into()));
        assert!(!status.message().contains("db.internal"));
    }
}
