//! Rally's persistence: the truth about accounts, refresh tokens, profiles, seasons and
//! ratings, behind one [`Store`] trait.
//!
//! [`SqlStore`] implements it on SQLite (embedded default: one file under `./rally-data`,
//! WAL) or Postgres (production), chosen by the URL. Migrations live in `db/sqlite/` and
//! `db/postgres/` and are compiled in; [`SqlStore::migrate`] applies them (`rally
//! migrate`, and at start unless turned off). The same contract test suite runs against
//! both backends.
//!
//! This crate knows SQL and nothing else of the outside: no HTTP, no QUIC, no JSON (a
//! profile's preferences are stored as the text the admin API validated). Times are
//! milliseconds since the Unix epoch, passed in by the caller, so tests control them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod sql;

pub use sql::{Backend, SqlStore, StoreConfig};

/// An account's id, which is also the player id everywhere else.
pub type AccountId = u64;

/// What is needed to create an account (already validated and normalised by the caller).
#[derive(Clone, Debug, PartialEq)]
pub struct NewAccount {
    /// Lowercased handle, unique.
    pub username: String,
    /// Lowercased email, unique.
    pub email: String,
    /// The password's argon2id PHC string.
    pub password_hash: String,
    /// The profile's first display name.
    pub display_name: String,
    /// Creation time.
    pub now_ms: u64,
}

/// A stored account.
#[derive(Clone, Debug, PartialEq)]
pub struct Account {
    /// Its id (the player id).
    pub id: AccountId,
    /// Lowercased handle.
    pub username: String,
    /// Lowercased email.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Creation time.
    pub created_at_ms: u64,
}

/// A player's profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Whose.
    pub account_id: AccountId,
    /// Shown to other players.
    pub display_name: String,
    /// A region name from the rules, if the player chose one.
    pub preferred_region: Option<String>,
    /// A JSON object as text (validated by the admin API).
    pub preferences: String,
    /// Last change.
    pub updated_at_ms: u64,
}

/// A partial profile update: `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfilePatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New preferred region; `Some(None)` clears it.
    pub preferred_region: Option<Option<String>>,
    /// New preferences (a JSON object as text).
    pub preferences: Option<String>,
}

/// A refresh token to store (hashed by the caller).
#[derive(Clone, Debug, PartialEq)]
pub struct NewRefreshToken {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// The login it descends from; reuse of a spent token revokes the whole family.
    pub family: String,
    /// Whose.
    pub account_id: AccountId,
    /// Issue time.
    pub issued_at_ms: u64,
    /// Expiry.
    pub expires_at_ms: u64,
}

/// What presenting a refresh token for rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is now spent and the new one stored in its family.
    Rotated {
        /// Whose.
        account_id: AccountId,
    },
    /// The token was already spent: someone replayed it. Its whole family is now revoked.
    Reused {
        /// Whose.
        account_id: AccountId,
        /// The revoked family.
        family: String,
    },
    /// The token's family was revoked earlier.
    Revoked,
    /// The token has expired.
    Expired,
    /// No such token.
    Unknown,
}

/// A rating season.
#[derive(Clone, Debug, PartialEq)]
pub struct Season {
    /// Its id.
    pub id: u64,
    /// Unique name, e.g. `2026-s4`.
    pub name: String,
    /// Start (inclusive).
    pub starts_at_ms: u64,
    /// End (exclusive).
    pub ends_at_ms: u64,
}

/// A player's rating in one mode and season (Weng-Lin: mu and sigma).
#[derive(Clone, Debug, PartialEq)]
pub struct Rating {
    /// Whose.
    pub account_id: AccountId,
    /// The mode name.
    pub mode: String,
    /// The season.
    pub season_id: u64,
    /// Mean skill.
    pub mu: f64,
    /// Uncertainty.
    pub sigma: f64,
    /// Rated games played.
    pub games: u64,
    /// Last change.
    pub updated_at_ms: u64,
}

/// What went wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value is taken (the caller's fault: e.g. a username in use).
    #[error("{field} is already taken")]
    Conflict {
        /// Which field: `username`, `email`, `season name`, …
        field: &'static str,
    },
    /// The row the call is about does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: &'static str,
    },
    /// A value the store refuses (e.g. a season that ends before it starts).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The database is unreachable or failed; retrying later may help.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(#[source] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Everything Rally keeps. Implemented by [`SqlStore`] for both backends.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// A trivial round trip, for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates an account and its profile, atomically.
    async fn create_account(&self, new: NewAccount) -> Result<Account, StoreError>;
    /// The account with this username or email (either, lowercased by the caller).
    async fn account_by_login(&self, login: &str) -> Result<Option<Account>, StoreError>;
    /// The account with this id.
    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError>;

    /// Stores a refresh token (the first of a family at login).
    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<(), StoreError>;
    /// Rotates `old_hash` into `new` (same family), atomically; see [`Rotation`]. `new`'s
    /// family and account are taken from the old token.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new: NewRefreshToken,
        now_ms: u64,
    ) -> Result<Rotation, StoreError>;
    /// Revokes every token of a family (logout, or reuse detected).
    async fn revoke_family(&self, family: &str, now_ms: u64) -> Result<(), StoreError>;

    /// A player's profile.
    async fn profile(&self, account: AccountId) -> Result<Option<Profile>, StoreError>;
    /// Applies `patch`; the profile as it is now.
    async fn update_profile(&self, account: AccountId, patch: ProfilePatch, now_ms: u64)
    -> Result<Profile, StoreError>;

    /// Adds a season.
    async fn create_season(&self, name: &str, starts_at_ms: u64, ends_at_ms: u64) -> Result<Season, StoreError>;
    /// The season running at `now_ms` (the latest-starting one if several overlap).
    async fn season_at(&self, now_ms: u64) -> Result<Option<Season>, StoreError>;
    /// A season by name.
    async fn season(&self, name: &str) -> Result<Option<Season>, StoreError>;

    /// A player's rating in a mode and season.
    async fn rating(&self, account: AccountId, mode: &str, season_id: u64) -> Result<Option<Rating>, StoreError>;
    /// Writes ratings (insert or replace), all in one transaction.
    async fn put_ratings(&self, ratings: &[Rating]) -> Result<(), StoreError>;
}
