//! gRPC statuses as HTTP answers, in one place: the standard google.rpc code
//! to HTTP status mapping and the JSON body `{code, message, details}` (the
//! canonical JSON of `google.rpc.Status`, so BadRequest, ErrorInfo and
//! RetryInfo keep every field), with `WWW-Authenticate` on 401,
//! `Retry-After` on 429 and `Allow` on 405.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use safra::{contract::status, google::rpc, r#type::v1::ErrorReason};
use tonic::{Code, Status};

/// The HTTP status for a gRPC code (google.rpc.Code's documented mapping).
#[must_use]
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The `google.rpc.Status` of `status` as canonical JSON; details whose
/// types the contracts do not know are kept with their `@type` only.
#[must_use]
pub fn status_json(pool: &DescriptorPool, status: &Status) -> serde_json::Value {
    let mut body = rpc::Status::decode(status.details()).unwrap_or_default();
    // The header's code and message are the truth; details may omit them.
    body.code = status.code() as i32;
    body.message = if status.message().is_empty() {
        // tonic answers unknown or unbuilt methods without a message.
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    };
    let known = |type_url: &str| {
        type_url
            .rsplit_once('/')
            .is_some_and(|(_, name)| pool.get_message_by_name(name).is_some())
    };
    let unknown: Vec<String> = body
        .details
        .iter()
        .filter(|detail| !known(&detail.type_url))
        .map(|detail| detail.type_url.clone())
        .collect();
    body.details.retain(|detail| known(&detail.type_url));
    let mut json = pool
        .get_message_by_name("google.rpc.Status")
        .and_then(|descriptor| {
            DynamicMessage::decode(descriptor, body.encode_to_vec().as_slice()).ok()
        })
        .and_then(|message| {
            message
                .serialize_with_options(
                    serde_json::value::Serializer,
                    &prost_reflect::SerializeOptions::new().skip_default_fields(false),
                )
                .ok()
        })
        .unwrap_or_else(|| {
            serde_json::json!({
                "code": body.code,
                "message": body.message,
                "details": [],
            })
        });
    if let Some(details) = json.get_mut("details").and_then(|d| d.as_array_mut()) {
        details.extend(
            unknown
                .into_iter()
                .map(|type_url| serde_json::json!({ "@type": type_url })),
        );
    }
    json
}

/// An HTTP answer for `status`, with the headers its code calls for.
#[must_use]
pub fn status_response(pool: &DescriptorPool, status: &Status) -> Response {
    let reason = status::details(status)
        .error_info
        .map(|info| info.reason)
        .unwrap_or_default();
    // A few edge reasons have an HTTP status of their own.
    let code = match reason.as_str() {
        "REQUEST_TOO_LARGE" => StatusCode::PAYLOAD_TOO_LARGE,
        "UNSUPPORTED_MEDIA_TYPE" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "METHOD_NOT_ALLOWED" => StatusCode::METHOD_NOT_ALLOWED,
        _ => http_status(status.code()),
    };
    let body = status_json(pool, status);
    let mut response = (code, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    match status.code() {
        Code::Unauthenticated => {
            let value = if reason == status::reason_name(ErrorReason::TokenMissing) {
                HeaderValue::from_static("Bearer realm=\"safra\"")
            } else {
                HeaderValue::from_static("Bearer realm=\"safra\", error=\"invalid_token\"")
            };
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        Code::ResourceExhausted if code == StatusCode::TOO_MANY_REQUESTS => {
            let seconds = status::details(status)
                .retry_info
                .and_then(|info| info.retry_delay)
                .map_or(1, |delay| {
                    // Whole seconds, rounded up, at least one.
                    let whole = delay.seconds.max(0) + i64::from(delay.nanos > 0);
                    whole.max(1)
                });
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        _ => {}
    }
    response
}

/// 400 for a request the gateway cannot turn into a message.
#[must_use]
pub fn bad_request(message: impl Into<String>) -> Status {
    status::with_reason(
        Code::InvalidArgument,
        ErrorReason::MalformedRequest,
        message,
        Vec::new(),
    )
}

/// 404 for a path no binding matches.
#[must_use]
pub fn not_found(pool: &DescriptorPool, path: &str) -> Response {
    status_response(
        pool,
        &status::with_reason(
            Code::NotFound,
            ErrorReason::RouteNotFound,
            format!("no route for the path '{path}'"),
            Vec::new(),
        ),
    )
}

/// 405 with the methods the path allows.
#[must_use]
pub fn wrong_method(pool: &DescriptorPool, allowed: &[http::Method]) -> Response {
    let list = allowed
        .iter()
        .map(http::Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let status = status::with_reason(
        Code::Unimplemented,
        ErrorReason::MethodNotAllowed,
        format!("this path allows {list}"),
        Vec::new(),
    );
    let mut response = status_response(pool, &status);
    if let Ok(value) = HeaderValue::from_str(&list) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_standard_http_statuses() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::AlreadyExists), StatusCode::CONFLICT);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::Unimplemented),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
    }

    #[test]
    fn details_keep_every_violation_and_the_reason() {
        let pool = safra::contract::descriptor::pool().expect("contracts");
        let status = status::invalid_argument(&[status::Violation {
            field: "email".into(),
            description: "must be an e-mail address".into(),
            reason: "FORMAT",
        }]);
        let json = status_json(&pool, &status);
        assert_eq!(json["code"], 3);
        let details = json["details"].as_array().expect("details");
        let types: Vec<&str> = details
            .iter()
            .filter_map(|detail| detail["@type"].as_str())
            .collect();
        assert!(
            types.contains(&"type.googleapis.com/google.rpc.BadRequest"),
            "{json}"
        );
        assert!(
            types.contains(&"type.googleapis.com/google.rpc.ErrorInfo"),
            "{json}"
        );
        let violation = details
            .iter()
            .find_map(|detail| detail["fieldViolations"].get(0))
            .expect("a violation");
        assert_eq!(violation["field"], "email");
        assert_eq!(violation["reason"], "FORMAT");
    }
}
