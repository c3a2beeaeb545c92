//! Extractors that answer bad input with `ApiError`: JSON bodies, the bearer token, and
//! the per-account rate limit that comes with it.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use rally_auth::{AccessToken, TokenError};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::{ApiError, FieldError};

/// A JSON body; malformed JSON is 400, well-formed JSON of the wrong shape 422, a missing
/// content type 415, an oversized body 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::JsonDataError(e)) => {
                // serde's message names the field and the problem ("missing field `email`").
                Err(ApiError::Validation(vec![FieldError::new("body", e.body_text())]))
            }
            Err(JsonRejection::JsonSyntaxError(e)) => {
                Err(ApiError::BadRequest(format!("malformed JSON: {}", e.body_text())))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge)
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// The authenticated player: a valid bearer access token, within its account's rate limit.
pub struct Player(pub AccessToken);

impl FromRequestParts<AppState> for Player {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers, "access token")?;
        Ok(Player(verify(state, token)?))
    }
}

/// Checks an access token and its account's rate limit.
pub(crate) fn verify(state: &AppState, token: &str) -> Result<AccessToken, ApiError> {
    let token = state.inner.verifier.verify(token).map_err(|e| {
        ApiError::Unauthenticated(match e {
            TokenError::Expired => "the access token has expired; refresh it".into(),
            other => format!("the access token is not valid: {other}"),
        })
    })?;
    state.inner.limits.account(token.player_id)?;
    Ok(token)
}

/// The `Authorization: Bearer <what>` credential.
pub(crate) fn bearer<'a>(headers: &'a HeaderMap, what: &str) -> Result<&'a str, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthenticated(format!("missing `Authorization: Bearer <{what}>`")))?;
    header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::Unauthenticated(format!("the Authorization header is not `Bearer <{what}>`")))
}
