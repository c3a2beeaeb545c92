//! `/v1/auth/*`: registration, login and refresh-token rotation.
//!
//! Passwords are hashed with argon2id on the blocking pool, never on the async threads.
//! Refresh tokens are 256 random bits, stored as SHA-256; each login starts a family, each
//! refresh spends its token and issues the next, and presenting a spent token revokes the
//! family (someone copied it).

use std::time::SystemTime;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rally_persistence::{NewAccount, NewRefreshToken, Rotation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::limits::ClientIp;
use crate::validate;

/// argon2id cost: memory in KiB, iterations, lanes. The default is OWASP's first
/// recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordCost {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        PasswordCost { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

impl PasswordCost {
    pub(crate) fn hasher(self) -> Argon2<'static> {
        let params =
            Params::new(self.memory_kib, self.iterations, self.parallelism, None).expect("valid argon2 parameters");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }
}

/// At most this many argon2 computations at once (each holds `memory_kib` of memory):
/// twice the cores. Beyond that requests wait their turn rather than exhaust memory.
fn hashing_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        tokio::sync::Semaphore::new(cores * 2)
    })
}

/// Runs argon2 work on the blocking pool, within the hashing slots; a failure is logged
/// as `what` and answered as an internal error.
async fn on_hashing_pool<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = hashing_slots().acquire().await.map_err(|_| ApiError::Internal)?;
    tokio::task::spawn_blocking(work).await.map_err(|_| ApiError::Internal)?.map_err(|e| {
        tracing::error!(error = %e, "{what}");
        ApiError::Internal
    })
}

/// Hashes on the blocking pool.
pub(crate) async fn hash_password(cost: PasswordCost, password: String) -> Result<String, ApiError> {
    on_hashing_pool("password hashing failed", move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        cost.hasher().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    })
    .await
}

/// Verifies on the blocking pool, with the parameters stored in the hash.
async fn verify_password(cost: PasswordCost, password: String, hash: String) -> Result<bool, ApiError> {
    on_hashing_pool("a stored password hash does not parse", move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| e.to_string())?;
        Ok(cost.hasher().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
}

/// `POST /v1/auth/register`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3–32 characters: letters, digits, `_` and `-`; case-insensitive.
    pub username: String,
    /// An email address (case-insensitive).
    pub email: String,
    /// 8–128 characters.
    pub password: String,
    /// 1–32 characters; the username when absent.
    pub display_name: Option<String>,
}

/// `POST /v1/auth/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Username or email.
    pub login: String,
    /// The password.
    pub password: String,
}

/// `POST /v1/auth/refresh`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

/// A fresh pair of tokens.
#[derive(Serialize, ToSchema)]
pub struct Tokens {
    /// The player's account id (also the player id in the game protocol).
    pub account_id: u64,
    /// EdDSA JWT for `Authorization: Bearer …` here and in the game client's `Hello`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Single use: trade it at `/v1/auth/refresh` for the next pair.
    pub refresh_token: String,
}

pub(crate) use rally_sessions::{hex, now_ms};

/// `N` bytes from the system's secure RNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system RNG works");
    bytes
}

fn random_token<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

pub(crate) fn token_hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Mints an access token and a refresh token in `family`, storing the refresh token.
async fn issue(
    state: &AppState,
    account_id: u64,
    family: Option<String>,
    rotate: Option<&str>,
) -> Result<Tokens, ApiError> {
    let inner = &state.inner;
    let now = now_ms();
    let refresh_token = random_token::<32>();
    let new = NewRefreshToken {
        token_hash: token_hash(&refresh_token),
        family: family.unwrap_or_else(random_token::<16>),
        account_id,
        issued_at_ms: now,
        expires_at_ms: now + inner.config.refresh_ttl.as_millis() as u64,
    };
    let account_id = match rotate {
        None => {
            inner.store.insert_refresh_token(new).await?;
            account_id
        }
        Some(old) => match inner.store.rotate_refresh_token(&token_hash(old), new, now).await? {
            Rotation::Rotated { account_id } => account_id,
            Rotation::Reused { account_id, family } => {
                tracing::warn!(account_id, family, "refresh token reused; family revoked");
                return Err(ApiError::RefreshReused);
            }
            Rotation::Revoked | Rotation::Expired | Rotation::Unknown => return Err(ApiError::InvalidRefreshToken),
        },
    };
    Ok(Tokens {
        account_id,
        access_token: inner.issuer.mint(account_id, None, SystemTime::now()),
        token_type: "Bearer",
        expires_in: inner.config.access_ttl.as_secs(),
        refresh_token,
    })
}

/// Creates an account and logs it in.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created; tokens issued", body = Tokens),
        (status = 409, description = "Username or email taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody),
    ))]
pub(crate) async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, axum::Json<Tokens>), ApiError> {
    state.inner.limits.login(ip)?;
    let mut errors = Vec::new();
    let username = validate::username(&req.username, &mut errors);
    let email = validate::email(&req.email, &mut errors);
    validate::password(&req.password, &mut errors);
    let display_name = match &req.display_name {
        Some(name) => validate::display_name("display_name", name, &mut errors),
        None => req.username.trim().to_owned(),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let password_hash = hash_password(state.inner.config.password_cost, req.password).await?;
    let account = state
        .inner
        .store
        .create_account(NewAccount { username, email, password_hash, display_name, now_ms: now_ms() })
        .await?;
    metrics::counter!("rally_admin_registrations_total").increment(1);
    let tokens = issue(&state, account.id, None, None).await?;
    Ok((StatusCode::CREATED, axum::Json(tokens)))
}

/// Logs in with username or email and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Tokens issued", body = Tokens),
        (status = 401, description = "Wrong login or password", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody),
    ))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<axum::Json<Tokens>, ApiError> {
    state.inner.limits.login(ip)?;
    if req.login.len() > 254 || req.password.len() > validate::MAX_PASSWORD {
        return Err(ApiError::BadCredentials);
    }
    let account = state.inner.store.account_by_login(&req.login.trim().to_lowercase()).await?;
    // Unknown logins are checked against a dummy hash, so they take as long as wrong
    // passwords and do not reveal which accounts exist.
    let hash = account.as_ref().map_or_else(|| state.inner.dummy_hash.clone(), |a| a.password_hash.clone());
    let ok = verify_password(state.inner.config.password_cost, req.password, hash).await?;
    let Some(account) = account.filter(|_| ok) else {
        metrics::counter!("rally_admin_logins_total", "outcome" => "refused").increment(1);
        return Err(ApiError::BadCredentials);
    };
    metrics::counter!("rally_admin_logins_total", "outcome" => "ok").increment(1);
    Ok(axum::Json(issue(&state, account.id, None, None).await?))
}

/// Trades a refresh token for a new pair (the old one is spent).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "Tokens issued; the presented refresh token is spent", body = Tokens),
        (status = 401, description = "Refresh token invalid, expired, revoked, or reused (which revokes its family)", body = ErrorBody),
    ))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<axum::Json<Tokens>, ApiError> {
    if req.refresh_token.is_empty() || req.refresh_token.len() > 128 {
        return Err(ApiError::InvalidRefreshToken);
    }
    Ok(axum::Json(issue(&state, 0, None, Some(&req.refresh_token)).await?))
}

/// A hash of a random password with the configured cost, for timing-equal refusals.
pub(crate) async fn dummy_hash(cost: PasswordCost) -> Result<String, ApiError> {
    hash_password(cost, random_token::<16>()).await
}
