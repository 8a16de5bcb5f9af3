//! The one place where Safra's errors become gRPC statuses: a code, a message
//! and `google.rpc.Status` details in `grpc-status-details-bin` — an
//! `ErrorInfo` with domain `safra` and a stable reason from the contract's
//! `ErrorReason` enum, plus `BadRequest` field violations, `RetryInfo` and so
//! on where they apply. Clients, the gateway and tests read them back with
//! [`details`].

use prost::Message;
use tonic::{Code, Status};

use crate::{
    google::rpc::{self, BadRequest, ErrorInfo, RetryInfo, bad_request::FieldViolation},
    r#type::v1::ErrorReason,
};

/// The `ErrorInfo.domain` of every Safra error.
pub const DOMAIN: &str = "safra";

const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// The reason string sent for `reason`: the enum value's name without its
/// `ERROR_REASON_` prefix (`TOKEN_EXPIRED`).
#[must_use]
pub fn reason_name(reason: ErrorReason) -> &'static str {
    let name = reason.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

/// One violated field rule: the field's path (proto names, `a.b[2].c`) and
/// what is wrong, for a `google.rpc.BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field path.
    pub field: String,
    /// Why the value is invalid, for a person.
    pub description: String,
    /// A stable UPPER_SNAKE code (`REQUIRED`, `TOO_LONG`, `OUT_OF_RANGE`, ...).
    pub reason: &'static str,
}

fn any(name: &str, message: &impl Message) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("{TYPE_URL_PREFIX}{name}"),
        value: message.encode_to_vec(),
    }
}

/// A status with `code`, `message`, an `ErrorInfo` for `reason` and any
/// further `details`.
#[must_use]
pub fn with_reason(
    code: Code,
    reason: ErrorReason,
    message: impl Into<String>,
    details: Vec<prost_types::Any>,
) -> Status {
    with_metadata(code, reason, message, &[], details)
}

/// A status like [`with_reason`] whose `ErrorInfo` carries `metadata`
/// (lower_snake_case keys, as the contract's `ErrorReason` lists them).
#[must_use]
pub fn with_metadata(
    code: Code,
    reason: ErrorReason,
    message: impl Into<String>,
    metadata: &[(&str, String)],
    details: Vec<prost_types::Any>,
) -> Status {
    let message = message.into();
    let info = ErrorInfo {
        reason: reason_name(reason).to_owned(),
        domain: DOMAIN.to_owned(),
        metadata: metadata
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect(),
    };
    let mut all = vec![any("google.rpc.ErrorInfo", &info)];
    all.extend(details);
    let body = rpc::Status {
        code: code as i32,
        message: message.clone(),
        details: all,
    };
    Status::with_details(code, message, body.encode_to_vec().into())
}

/// INVALID_ARGUMENT listing every violated field.
#[must_use]
pub fn invalid_argument(violations: &[Violation]) -> Status {
    let request = BadRequest {
        field_violations: violations
            .iter()
            .map(|violation| FieldViolation {
                field: violation.field.clone(),
                description: violation.description.clone(),
                reason: violation.reason.to_owned(),
                localized_message: None,
            })
            .collect(),
    };
    let message = match violations {
        [one] => format!("{}: {}", one.field, one.description),
        _ => format!("{} fields are invalid", violations.len()),
    };
    with_reason(
        Code::InvalidArgument,
        ErrorReason::ValidationFailed,
        message,
        vec![any("google.rpc.BadRequest", &request)],
    )
}

/// FAILED_PRECONDITION: a rule of the data refuses the request, with the
/// reason's metadata.
#[must_use]
pub fn failed_precondition(
    reason: ErrorReason,
    message: impl Into<String>,
    metadata: &[(&str, String)],
) -> Status {
    with_metadata(
        Code::FailedPrecondition,
        reason,
        message,
        metadata,
        Vec::new(),
    )
}

/// UNAUTHENTICATED: no token, or one that does not verify.
#[must_use]
pub fn unauthenticated(reason: ErrorReason, message: impl Into<String>) -> Status {
    with_reason(Code::Unauthenticated, reason, message, Vec::new())
}

/// PERMISSION_DENIED: a verified caller that may not do this.
#[must_use]
pub fn permission_denied(reason: ErrorReason, message: impl Into<String>) -> Status {
    with_reason(Code::PermissionDenied, reason, message, Vec::new())
}

/// RESOURCE_EXHAUSTED with a `RetryInfo` saying when to come back.
#[must_use]
pub fn resource_exhausted(
    reason: ErrorReason,
    message: impl Into<String>,
    retry_after: std::time::Duration,
) -> Status {
    let retry = RetryInfo {
        retry_delay: Some(prost_types::Duration {
            seconds: i64::try_from(retry_after.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(retry_after.subsec_nanos()).unwrap_or(0),
        }),
    };
    with_reason(
        Code::ResourceExhausted,
        reason,
        message,
        vec![any("google.rpc.RetryInfo", &retry)],
    )
}

/// INTERNAL with a generic message: the cause is logged once, here, with
/// the trace, and never sent to the client.
#[must_use]
pub fn internal(cause: &dyn std::fmt::Display) -> Status {
    tracing::error!(%cause, "internal error");
    with_reason(
        Code::Internal,
        ErrorReason::Internal,
        "internal error",
        Vec::new(),
    )
}

/// The details a status carries, decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Details {
    /// The `ErrorInfo`, if any.
    pub error_info: Option<ErrorInfo>,
    /// The field violations of a `BadRequest`, if any.
    pub field_violations: Vec<FieldViolation>,
    /// The `RetryInfo`, if any.
    pub retry_info: Option<RetryInfo>,
}

/// Decodes the `google.rpc.Status` details of `status`.
#[must_use]
pub fn details(status: &Status) -> Details {
    let mut found = Details::default();
    let Ok(body) = rpc::Status::decode(status.details()) else {
        return found;
    };
    for detail in body.details {
        let Some(name) = detail.type_url.strip_prefix(TYPE_URL_PREFIX) else {
            continue;
        };
        match name {
            "google.rpc.ErrorInfo" => found.error_info = ErrorInfo::decode(&*detail.value).ok(),
            "google.rpc.BadRequest" => {
                if let Ok(request) = BadRequest::decode(&*detail.value) {
                    found.field_violations.extend(request.field_violations);
                }
            }
            "google.rpc.RetryInfo" => found.retry_info = RetryInfo::decode(&*detail.value).ok(),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_drop_their_enum_prefix() {
        assert_eq!(reason_name(ErrorReason::TokenExpired), "TOKEN_EXPIRED");
    }

    #[test]
    fn bad_requests_round_trip_with_every_violation() {
        let status = invalid_argument(&[
            Violation {
                field: "email".into(),
                description: "must be an e-mail address".into(),
                reason: "FORMAT",
            },
            Violation {
                field: "installments[2].due_date".into(),
                description: "is required".into(),
                reason: "REQUIRED",
            },
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = details(&status);
        let info = details.error_info.expect("ErrorInfo");
        assert_eq!(
            (info.domain.as_str(), info.reason.as_str()),
            ("safra", "VALIDATION_FAILED")
        );
        let fields: Vec<&str> = details
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "installments[2].due_date"]);
    }

    #[test]
    fn exhaustion_says_when_to_retry() {
        let status = resource_exhausted(
            ErrorReason::RateLimited,
            "slow down",
            std::time::Duration::from_millis(1500),
        );
        let retry = details(&status)
            .retry_info
            .and_then(|r| r.retry_delay)
            .expect("delay");
        assert_eq!((retry.seconds, retry.nanos), (1, 500_000_000));
    }
}
