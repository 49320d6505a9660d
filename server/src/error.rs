//! The server's one error type, mapped once to an HTTP status and the JSON error body
//! `{ "error": { "code", "message", "field"? } }` of `openapi/openapi.yaml`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sidrec::ItemId;

/// Seconds a client is told to wait (`Retry-After`) when the server is not ready yet.
pub const NOT_READY_RETRY_AFTER_S: u64 = 1;

use crate::engine::EngineError;

/// Everything a request can fail with. Each variant has one stable `code` and one status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request cannot be parsed (malformed query, wrong type, unknown parameter).
    #[error("{message}")]
    InvalidRequest {
        /// The input at fault, when known.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// None of several alternative parameters was given.
    #[error("give one of {}", .fields.join(", "))]
    MissingParameter {
        /// The alternatives.
        fields: Vec<&'static str>,
    },
    /// Parameters that exclude each other were given together.
    #[error("give only one of {}", .fields.join(", "))]
    ConflictingParameters {
        /// The parameters that were given.
        fields: Vec<&'static str>,
    },
    /// A SID value is malformed.
    #[error("{message}")]
    InvalidSid {
        /// The input holding the SID.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A well-typed value that is out of bounds or inconsistent.
    #[error("{message}")]
    InvalidArgument {
        /// The input at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No item has this id.
    #[error("no item with id {0}")]
    ItemNotFound(ItemId),
    /// No item has this (well-formed) SID.
    #[error("no item has SID {0}")]
    SidNotFound(String),
    /// No route matches the path.
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The body is larger than `--max-body-bytes`.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// The catalogue is not loaded yet.
    #[error("not ready: {0}")]
    NotReady(String),
    /// The request needs a model and none is serving.
    #[error("no model is serving (none is configured, or it is still loading)")]
    ModelNotLoaded,
    /// The request did not finish within its deadline.
    #[error("the request did not finish within its deadline")]
    DeadlineExceeded,
    /// The client did not send its body within `--body-read-timeout`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// A JSON body without `content-type: application/json`.
    #[error("expected a body with content-type application/json")]
    UnsupportedMediaType,
    /// Item ids that the serving catalogue does not have.
    #[error("unknown item ids: {}", join_ids(.item_ids))]
    UnknownItems {
        /// The input holding them (`history`, `exclude`, `item_ids`, ...).
        field: String,
        /// Every unknown id, in request order, without repeats.
        item_ids: Vec<ItemId>,
    },
    /// Missing or wrong bearer token on an `/admin` route.
    #[error("{0}")]
    Unauthorized(String),
    /// `/admin/reload` while another reload runs.
    #[error("another reload is in progress")]
    ReloadInProgress,
    /// A checkpoint that failed to load or verify (the old one keeps serving).
    #[error("checkpoint rejected, the previous one keeps serving: {0}")]
    CheckpointInvalid(String),
    /// `/admin/reload` of a path that does not exist or that reloads may not read.
    #[error("no checkpoint at this path among the directories reloads may read")]
    CheckpointNotFound,
    /// Admission control refused the request (queue full, or it cannot finish in time).
    #[error("{message}")]
    Overloaded {
        /// Why.
        message: String,
        /// Seconds to wait before retrying.
        retry_after_s: u64,
    },
    /// The history store cannot be reached. The cause (addresses included) is only logged.
    #[error("the history store is unavailable; retry later")]
    HistoryStoreUnavailable(String),
    /// A bug or an unexpected failure. The cause is only logged, under the request id.
    #[error("internal error (the server log has the cause under this request's x-request-id)")]
    Internal(String),
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotLoaded => ApiError::ModelNotLoaded,
            EngineError::QueueFull { retry_after, .. }
            | EngineError::WouldMissDeadline { retry_after } => ApiError::Overloaded {
                message: e.to_string(),
                // Whole seconds, rounded up, at least one.
                retry_after_s: retry_after.as_secs_f64().ceil().max(1.0) as u64,
            },
            EngineError::DeadlineExceeded => ApiError::DeadlineExceeded,
            EngineError::BeamLimit { field, message } => {
                ApiError::InvalidArgument { field, message }
            }
            EngineError::Encode(_) | EngineError::Decode(_) | EngineError::Stopped => {
                ApiError::Internal(e.to_string())
            }
            EngineError::ReloadPathRefused => ApiError::CheckpointNotFound,
            EngineError::ReloadInProgress => ApiError::ReloadInProgress,
            EngineError::CheckpointInvalid(m) => ApiError::CheckpointInvalid(m),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    /// A store that cannot be reached is a 503 with `Retry-After` (the client may retry); any
    /// other store failure is a server fault.
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(m) => ApiError::HistoryStoreUnavailable(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// The `error` member of [`ErrorBody`].
#[derive(Debug, Serialize)]
pub struct ErrorObject {
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The input at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Machine-readable extras (`item_ids` of `unknown_items`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

fn join_ids(ids: &[ItemId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl ApiError {
    /// A parse failure of the named input.
    pub fn invalid_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An out-of-bounds value of the named input.
    pub fn invalid_argument(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field,
            message: message.into(),
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::MissingParameter { .. } => "missing_parameter",
            ApiError::ConflictingParameters { .. } => "conflicting_parameters",
            ApiError::InvalidSid { .. } => "invalid_sid",
            ApiError::InvalidArgument { .. } => "invalid_argument",
            ApiError::ItemNotFound(_) => "item_not_found",
            ApiError::SidNotFound(_) => "sid_not_found",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::NotReady(_) => "not_ready",
            ApiError::ModelNotLoaded => "model_not_loaded",
            ApiError::DeadlineExceeded => "deadline_exceeded",
            ApiError::BodyTimeout => "request_timeout",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UnknownItems { .. } => "unknown_items",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::ReloadInProgress => "reload_in_progress",
            ApiError::CheckpointInvalid(_) => "checkpoint_invalid",
            ApiError::CheckpointNotFound => "checkpoint_not_found",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::HistoryStoreUnavailable(_) => "history_store_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. }
            | ApiError::MissingParameter { .. }
            | ApiError::ConflictingParameters { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidSid { .. }
            | ApiError::InvalidArgument { .. }
            | ApiError::UnknownItems { .. }
            | ApiError::CheckpointInvalid(_)
            | ApiError::CheckpointNotFound => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::ReloadInProgress => StatusCode::CONFLICT,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::ItemNotFound(_) | ApiError::SidNotFound(_) | ApiError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotReady(_)
            | ApiError::ModelNotLoaded
            | ApiError::HistoryStoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The input at fault, if one is.
    pub fn field(&self) -> Option<String> {
        match self {
            ApiError::InvalidRequest { field, .. } => field.clone(),
            ApiError::MissingParameter { fields } | ApiError::ConflictingParameters { fields } => {
                Some(fields.join(", "))
            }
            ApiError::InvalidSid { field, .. } | ApiError::InvalidArgument { field, .. } => {
                Some((*field).to_string())
            }
            ApiError::ItemNotFound(_) => Some("item_id".into()),
            ApiError::UnknownItems { field, .. } => Some(field.clone()),
            ApiError::SidNotFound(_) => Some("sid".into()),
            _ => None,
        }
    }

    /// `Retry-After` seconds, for the statuses that carry it.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::NotReady(_)
            | ApiError::ModelNotLoaded
            | ApiError::HistoryStoreUnavailable(_) => Some(NOT_READY_RETRY_AFTER_S),
            ApiError::Overloaded { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                code: self.code(),
                message: self.to_string(),
                field: self.field(),
                details: match self {
                    ApiError::UnknownItems { item_ids, .. } => {
                        Some(serde_json::json!({ "item_ids": item_ids }))
                    }
                    _ => None,
                },
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) | ApiError::HistoryStoreUnavailable(cause) = &self {
            tracing::warn!(code = self.code(), "{self}: {cause}");
        } else if status.is_server_error() {
            tracing::warn!(code = self.code(), "{self}");
        } else {
            tracing::debug!(code = self.code(), "{self}");
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        if let ApiError::Unauthorized(_) = self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let e = ApiError::invalid_argument("limit", "limit must be in 1..=100");
        let v = serde_json::to_value(e.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "invalid_argument",
                "message": "limit must be in 1..=100", "field": "limit"}})
        );
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let r = ApiError::NotReady("loading".into()).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn engine_errors_map_once() {
        use std::time::Duration;
        let e = ApiError::from(EngineError::WouldMissDeadline {
            retry_after: Duration::from_millis(2300),
        });
        assert_eq!(
            (e.status(), e.retry_after()),
            (StatusCode::TOO_MANY_REQUESTS, Some(3))
        );
        let e = ApiError::from(EngineError::QueueFull {
            queued: 5,
            retry_after: Duration::ZERO,
        });
        assert_eq!((e.code(), e.retry_after()), ("overloaded", Some(1)));
        let e = ApiError::from(EngineError::BeamLimit {
            field: "num_beams",
            message: "too many".into(),
        });
        assert_eq!(
            (e.code(), e.field().as_deref()),
            ("invalid_argument", Some("num_beams"))
        );
        assert_eq!(
            ApiError::from(EngineError::ReloadPathRefused).code(),
            "checkpoint_not_found"
        );
    }

    #[test]
    fn causes_stay_in_the_log() {
        for e in [
            ApiError::HistoryStoreUnavailable(
                "Redis at 127.0.0.1:6390: LRANGE: Connection refused".into(),
            ),
            ApiError::Internal("/srv/models/v3/model.safetensors: broken".into()),
        ] {
            let body = serde_json::to_string(&e.body()).unwrap();
            assert!(
                !body.contains("127.0.0.1") && !body.contains("/srv"),
                "{body}"
            );
        }
    }
}
