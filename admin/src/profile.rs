//! `/v1/profile/me`: the authenticated player's profile.

use axum::extract::State;
use rally_persistence::{Profile, ProfilePatch};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody, FieldError};
use crate::extract::{ApiJson, Player};
use crate::validate;

/// Largest preferences object, serialized.
const MAX_PREFERENCES_BYTES: usize = 4096;

/// A player's profile.
#[derive(Serialize, ToSchema)]
pub struct ProfileView {
    /// The player (account) id.
    pub account_id: u64,
    /// Shown to other players.
    pub display_name: String,
    /// A region name from the rules, or null.
    pub preferred_region: Option<String>,
    /// Free-form client settings (a JSON object).
    #[schema(value_type = Object)]
    pub preferences: serde_json::Value,
    /// Last change, ms since the Unix epoch.
    pub updated_at_ms: u64,
}

impl From<Profile> for ProfileView {
    fn from(p: Profile) -> ProfileView {
        ProfileView {
            account_id: p.account_id,
            display_name: p.display_name,
            preferred_region: p.preferred_region,
            // Stored only after validation as an object; anything else is a bug upstream.
            preferences: serde_json::from_str(&p.preferences).unwrap_or_else(|_| serde_json::json!({})),
            updated_at_ms: p.updated_at_ms,
        }
    }
}

/// `PATCH /v1/profile/me`: fields left out stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    /// 1–32 characters.
    pub display_name: Option<String>,
    /// A region name from the rules; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub preferred_region: Option<Option<String>>,
    /// A JSON object, at most 4 KiB serialized; replaces the previous one.
    #[schema(value_type = Option<Object>)]
    pub preferences: Option<serde_json::Value>,
}

/// Tells a field set to `null` (`Some(None)`) from a field left out (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The caller's profile.
#[utoipa::path(get, path = "/v1/profile/me", tag = "profile", security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = ProfileView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 429, description = "Over the account's rate limit", body = ErrorBody),
    ))]
pub(crate) async fn get_me(
    State(state): State<AppState>,
    Player(token): Player,
) -> Result<axum::Json<ProfileView>, ApiError> {
    let profile = state.inner.store.profile(token.player_id).await?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(profile.into()))
}

/// Changes the caller's profile.
#[utoipa::path(patch, path = "/v1/profile/me", tag = "profile", security(("bearer" = [])), request_body = ProfileUpdate,
    responses(
        (status = 200, description = "The profile as it is now", body = ProfileView),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub(crate) async fn patch_me(
    State(state): State<AppState>,
    Player(token): Player,
    ApiJson(update): ApiJson<ProfileUpdate>,
) -> Result<axum::Json<ProfileView>, ApiError> {
    let mut errors = Vec::new();
    let display_name = update.display_name.as_deref().map(|n| validate::display_name("display_name", n, &mut errors));
    if let Some(Some(region)) = &update.preferred_region {
        let regions = &state.inner.config.regions;
        if !regions.is_empty() && !regions.iter().any(|r| r == region) {
            errors.push(FieldError::new("preferred_region", format!("must be one of: {}", regions.join(", "))));
        } else if region.is_empty() || region.len() > 64 {
            errors.push(FieldError::new("preferred_region", "must be 1 to 64 characters"));
        }
    }
    let preferences = match &update.preferences {
        None => None,
        Some(value @ serde_json::Value::Object(_)) => {
            let text = value.to_string();
            if text.len() > MAX_PREFERENCES_BYTES {
                errors.push(FieldError::new("preferences", format!("must be at most {MAX_PREFERENCES_BYTES} bytes")));
            }
            Some(text)
        }
        Some(_) => {
            errors.push(FieldError::new("preferences", "must be a JSON object"));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let patch = ProfilePatch { display_name, preferred_region: update.preferred_region, preferences };
    let profile = state.inner.store.update_profile(token.player_id, patch, crate::auth::now_ms()).await?;
    Ok(axum::Json(profile.into()))
}
