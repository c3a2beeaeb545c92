//! Rally's persistence: the truth about accounts, refresh tokens, profiles, seasons,
//! ratings, matches and match history, behind one [`Store`] trait.
//!
//! [`SqlStore`] implements it on SQLite (embedded default: one file under `./rally-data`,
//! WAL) or Postgres (production), chosen by the URL. Migrations live in `db/sqlite/` and
//! `db/postgres/` and are compiled in; [`SqlStore::migrate`] applies them (`rally
//! migrate`, and at start unless turned off). The same contract test suite runs against
//! both backends.
//!
//! Results reach the store through [`WriteBehind`]: a bounded queue drained by a worker
//! that writes batches of matches, history rows and ratings in one transaction each,
//! keyed by match id so a replayed batch changes nothing, retrying transient failures
//! and flushing everything on shutdown. Leaderboards are read through [`Leaderboard`]:
//! from the store when embedded ([`StoreLeaderboard`]), from Redis sorted sets in
//! production ([`RedisLeaderboard`]), which the worker updates after each commit.
//!
//! This crate knows SQL and Redis and nothing else of the outside: no HTTP, no QUIC, no JSON (a
//! profile's preferences are stored as the text the admin API validated). Times are
//! milliseconds since the Unix epoch, passed in by the caller, so tests control them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod leaderboard;
mod sql;
mod write_behind;

pub use leaderboard::{Leaderboard, LeaderboardError, RedisLeaderboard, Standing, StoreLeaderboard};
pub use sql::{Backend, SqlStore, StoreConfig};
pub use write_behind::{CommitListener, SubmitError, WriteBehind, WriteBehindConfig, WriteBehindReport};

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

/// A rated match as the write-behind worker stores it: the match, and for each player
/// where their team finished and how their rating moved.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchRecord {
    /// The engine's match id (unique across restarts); every write is keyed by it.
    pub match_id: u64,
    /// The mode name.
    pub mode: String,
    /// The season the result counts for.
    pub season_id: u64,
    /// Where it was played.
    pub datacenter: String,
    /// When the engine formed it.
    pub formed_at_ms: u64,
    /// When its result was reported.
    pub finished_at_ms: u64,
    /// Every player.
    pub players: Vec<PlayerResult>,
}

/// One player's line of a [`MatchRecord`].
#[derive(Clone, Debug, PartialEq)]
pub struct PlayerResult {
    /// Who.
    pub account_id: AccountId,
    /// Their team (index into the match's teams).
    pub team: u16,
    /// Their team's finishing place, 1 = first (teams that tie share a place).
    pub place: u16,
    /// Rating before the match.
    pub mu_before: f64,
    /// Uncertainty before the match.
    pub sigma_before: f64,
    /// Rating after the match.
    pub mu_after: f64,
    /// Uncertainty after the match.
    pub sigma_after: f64,
    /// Rated games in this mode and season, this one included. A stored rating is only
    /// ever replaced by one with more games, so batches replayed or written out of order
    /// never move a rating back.
    pub games: u64,
}

/// One match in a player's history.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// The match.
    pub match_id: u64,
    /// Its mode.
    pub mode: String,
    /// The season it counted for.
    pub season_id: u64,
    /// The player's team.
    pub team: u16,
    /// The team's place, 1 = first.
    pub place: u16,
    /// Rating before.
    pub mu_before: f64,
    /// Uncertainty before.
    pub sigma_before: f64,
    /// Rating after.
    pub mu_after: f64,
    /// Uncertainty after.
    pub sigma_after: f64,
    /// When the result came in.
    pub finished_at_ms: u64,
}

/// A page request for a player's history, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryQuery {
    /// Whose history.
    pub account_id: AccountId,
    /// Only this mode, if set.
    pub mode: Option<String>,
    /// Only entries strictly older than this `(finished_at_ms, match_id)`: the last entry
    /// of the previous page.
    pub before: Option<(u64, u64)>,
    /// Page size.
    pub limit: u32,
}

/// A row of a leaderboard read from the store.
#[derive(Clone, Debug, PartialEq)]
pub struct RatedPlayer {
    /// Who.
    pub account_id: AccountId,
    /// Their display name.
    pub display_name: String,
    /// The conservative rating, mu − 3·sigma.
    pub rating: f64,
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
        match self {
            StoreError::Unavailable(sqlx::Error::Database(db)) => {
                // The database refused the data (a violated constraint, a value out of
                // range): the same call fails the same way. Anything else (a missing
                // table, a permission, a lock, a restart) an operator or time can fix.
                let refused_data = db.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23"));
                db.kind() == sqlx::error::ErrorKind::Other && !refused_data
            }
            // Values that cannot be encoded or decoded fail the same way every time.
            StoreError::Unavailable(
                sqlx::Error::Encode(_)
                | sqlx::Error::Decode(_)
                | sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::TypeNotFound { .. },
            ) => false,
            StoreError::Unavailable(_) => true,
            _ => false,
        }
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

    /// The seasons that start at or before `now_ms`, latest first, at most `limit`.
    async fn recent_seasons(&self, now_ms: u64, limit: u32) -> Result<Vec<Season>, StoreError>;

    /// Writes rated matches, their players' history rows and the ratings they lead to, in
    /// one transaction. Idempotent: a match already stored is skipped, and a rating is
    /// only replaced by one with more games. Returns the number of player rows written.
    async fn record_matches(&self, matches: &[MatchRecord]) -> Result<u64, StoreError>;
    /// A page of a player's history, newest first.
    async fn match_history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError>;
    /// Players rated in `mode` and season `season_id`, best display rating first (ties by
    /// account id), skipping `offset`.
    async fn leaderboard(
        &self,
        season_id: u64,
        mode: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<RatedPlayer>, StoreError>;
    /// How many players rank above `account` on that leaderboard, or `None` if it is not
    /// rated there.
    async fn leaderboard_rank(&self, season_id: u64, mode: &str, account: AccountId)
    -> Result<Option<u64>, StoreError>;
    /// Display names of these accounts (missing ones are left out).
    async fn display_names(&self, accounts: &[AccountId]) -> Result<Vec<(AccountId, String)>, StoreError>;
}
