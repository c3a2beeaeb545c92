//! One error type for every route, one JSON body for every error:
//! `{"error": {"code", "message", "request_id", "fields"?}}`.
//!
//! Handlers return [`ApiError`]; its response carries the error as an extension and the
//! `render_errors` middleware writes the body with the request id, so errors raised by
//! layers (body limit, unknown route) look the same as errors raised by handlers.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A field that failed validation, and why.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as named in the request body.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FieldError {
    pub(crate) fn new(field: &str, problem: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), problem: problem.into() }
    }
}

/// Why a request failed. Each variant has one status and one stable code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or a header is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Fields out of their rules.
    #[error("some fields are invalid")]
    Validation(Vec<FieldError>),
    /// No usable access token (missing, garbled, expired, another key).
    #[error("{0}")]
    Unauthenticated(String),
    /// Login or password wrong (never says which).
    #[error("wrong login or password")]
    BadCredentials,
    /// The refresh token is unknown, expired or revoked.
    #[error("the refresh token is not valid; log in again")]
    InvalidRefreshToken,
    /// A spent refresh token was presented again: its whole family is now revoked.
    #[error("the refresh token was already used; every session of this login is revoked")]
    RefreshReused,
    /// Authenticated, but not allowed this (a player asking about a match they are not
    /// in).
    #[error("{0}")]
    Forbidden(String),
    /// A game-server or session call refused.
    #[error("{0}")]
    Session(#[from] rally_sessions::SessionError),
    /// A party operation refused.
    #[error("{0}")]
    Lobby(rally_lobby::LobbyError),
    /// The engine refused a party's ticket (`code` is the engine's reason).
    #[error("{message}")]
    QueueRefused {
        /// The engine's stable reason.
        code: &'static str,
        /// For humans.
        message: String,
    },
    /// No such route or resource.
    #[error("not found")]
    NotFound,
    /// The route exists for other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A unique value is taken.
    #[error("{field} is already taken")]
    Conflict {
        /// Which field.
        field: &'static str,
    },
    /// The body is over the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body is not `application/json`.
    #[error("expected a JSON body (content-type: application/json)")]
    UnsupportedMediaType,
    /// Over a rate limit.
    #[error("too many requests; retry after {retry_after_s} s")]
    RateLimited {
        /// Seconds until a retry can succeed.
        retry_after_s: u64,
    },
    /// A dependency (the database) is down; retry later.
    #[error("service unavailable; retry later")]
    Unavailable,
    /// A bug or an unexpected failure; details are in the logs, not the response.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// HTTP status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            ApiError::InvalidRefreshToken => (StatusCode::UNAUTHORIZED, "invalid_refresh_token"),
            ApiError::RefreshReused => (StatusCode::UNAUTHORIZED, "refresh_token_reused"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Session(e) => {
                use rally_sessions::SessionError as E;
                match e {
                    E::BadServerToken => (StatusCode::UNAUTHORIZED, "bad_server_token"),
                    E::UnknownServer => (StatusCode::NOT_FOUND, "unknown_server"),
                    E::UnknownSession => (StatusCode::NOT_FOUND, "unknown_session"),
                    E::WrongServer => (StatusCode::FORBIDDEN, "wrong_server"),
                    E::Ended => (StatusCode::CONFLICT, "session_ended"),
                    E::ConflictingResult => (StatusCode::CONFLICT, "conflicting_result"),
                    E::ResultInProgress => (StatusCode::CONFLICT, "result_in_progress"),
                    E::BadPlacements | E::BadSpec => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
                    E::NoReadyCheck => (StatusCode::CONFLICT, "no_ready_check"),
                    E::NotInMatch => (StatusCode::FORBIDDEN, "not_in_match"),
                }
            }
            ApiError::Lobby(e) => {
                use rally_lobby::LobbyError as E;
                match e {
                    E::UnknownParty => (StatusCode::NOT_FOUND, "unknown_party"),
                    E::NotMember => (StatusCode::FORBIDDEN, "not_a_member"),
                    E::NotLeader => (StatusCode::FORBIDDEN, "not_the_leader"),
                    E::AlreadyInParty => (StatusCode::CONFLICT, "already_in_party"),
                    E::PartyFull => (StatusCode::CONFLICT, "party_full"),
                    E::NotAllReady => (StatusCode::CONFLICT, "not_all_ready"),
                    E::Queued => (StatusCode::CONFLICT, "party_queued"),
                    E::NotQueued => (StatusCode::CONFLICT, "party_not_queued"),
                    E::RttMissing => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
                }
            }
            ApiError::QueueRefused { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<rally_persistence::StoreError> for ApiError {
    fn from(e: rally_persistence::StoreError) -> ApiError {
        use rally_persistence::StoreError;
        match e {
            StoreError::Conflict { field } => ApiError::Conflict { field },
            StoreError::NotFound { .. } => ApiError::NotFound,
            e @ (StoreError::Unavailable(_) | StoreError::Migration(_)) => {
                tracing::error!(error = %e, "store unavailable");
                ApiError::Unavailable
            }
            e @ StoreError::Invalid(_) => {
                tracing::error!(error = %e, "store refused a value the handler let through");
                ApiError::Internal
            }
        }
    }
}

/// The error as the response carries it until `render_errors` writes the body.
#[derive(Clone, Debug)]
pub(crate) struct ErrorInfo {
    code: &'static str,
    message: String,
    fields: Vec<FieldError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = status.into_response();
        if let ApiError::RateLimited { retry_after_s } = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        let fields = match &self {
            ApiError::Validation(fields) => fields.clone(),
            _ => Vec::new(),
        };
        response.extensions_mut().insert(ErrorInfo { code, message: self.to_string(), fields });
        response
    }
}

/// The error body, as documented in the OpenAPI spec.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`validation_failed`, `rate_limited`, …).
    pub code: &'static str,
    /// For humans.
    pub message: String,
    /// The request id, also in the `x-request-id` header and the logs.
    pub request_id: String,
    /// For `validation_failed`: each invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

/// The id of the request, set by `request_ids`.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Gives every request an id (the caller's `x-request-id` if sane, else a random one),
/// echoes it in the response, and writes every error body with it.
pub(crate) async fn request_ids_and_errors(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map_or_else(random_id, str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // No span per request: entering and leaving one on every poll cost 13% of a
    // profile read. Log lines carry the request id as a field instead.
    let started = std::time::Instant::now();
    let mut response = next.run(req).await;
    let status = response.status();
    // The access log, at debug (`RUST_LOG=rally_admin=debug`): at tens of thousands of
    // requests a second an always-on line would cost more than the request.
    tracing::debug!(
        request_id = %id,
        %method,
        %path,
        status = status.as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    // Errors from layers and axum itself arrive without `ErrorInfo`: give them one.
    let info = response.extensions_mut().remove::<ErrorInfo>().or_else(|| {
        let fallback = match status {
            StatusCode::NOT_FOUND => ApiError::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            s if s.is_client_error() => ApiError::BadRequest(s.canonical_reason().unwrap_or("bad request").into()),
            s if s.is_server_error() => ApiError::Internal,
            _ => return None,
        };
        let (_, code) = fallback.status_and_code();
        Some(ErrorInfo { code, message: fallback.to_string(), fields: Vec::new() })
    });
    if let Some(info) = info {
        if status.is_server_error() {
            tracing::error!(request_id = %id, %method, %path, status = status.as_u16(), code = info.code, "request failed");
        } else {
            tracing::debug!(request_id = %id, %method, %path, status = status.as_u16(), code = info.code, "request refused");
        }
        let body = ErrorBody {
            error: ErrorDetail { code: info.code, message: info.message, request_id: id.clone(), fields: info.fields },
        };
        let bytes = serde_json::to_vec(&body).expect("an error body serializes");
        let (mut parts, _) = response.into_parts();
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        parts.headers.remove(header::CONTENT_LENGTH);
        response = Response::from_parts(parts, Body::from(bytes));
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn random_id() -> String {
    crate::auth::hex(&crate::auth::random_bytes::<8>())
}
