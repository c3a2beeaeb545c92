//! [`SqlStore`]: the [`Store`] on SQLite or Postgres through sqlx.
//!
//! One SQL text serves both backends: `$N` parameters (sqlx binds them by number on
//! SQLite too), `RETURNING`, `ON CONFLICT … excluded`, and integer milliseconds for time.
//! The DDL differs, in `db/sqlite/` and `db/postgres/`, and so do the write-behind's bulk
//! inserts: column arrays (`UNNEST`) on Postgres, multi-row `VALUES` on SQLite. `on_pool!` expands each body once per backend, so every query is
//! checked against both drivers' types at compile time.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::*;

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded: one file, WAL.
    Sqlite,
    /// Production.
    Postgres,
}

/// How to reach the database.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://USER@HOST:PORT/DB`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a connection from the pool.
    pub acquire_timeout: Duration,
}

impl StoreConfig {
    /// The embedded default: `rally-data/rally.db`.
    pub const DEFAULT_URL: &'static str = "sqlite://rally-data/rally.db";

    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> StoreConfig {
        StoreConfig { url: url.into(), max_connections: 16, acquire_timeout: Duration::from_secs(5) }
    }
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The store on SQLite or Postgres.
pub struct SqlStore {
    pool: Pool,
}

/// Runs `$body` with `$pool` bound to the concrete pool, once per backend.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

impl SqlStore {
    /// Connects (and, for SQLite, creates the file and its directory if missing).
    pub async fn connect(config: &StoreConfig) -> Result<SqlStore, StoreError> {
        let url = config.url.as_str();
        let pool = if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let file = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
            }
            let options = SqliteConnectOptions::from_str(url)
                .map_err(StoreError::Unavailable)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // WAL with NORMAL: durable across application crashes; an OS crash may lose
                // the last transactions.
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                // No ping before every checkout: it doubled the round trips of a profile
                // read. A broken connection fails its query instead (`Unavailable`).
                .test_before_acquire(false)
                .acquire_timeout(config.acquire_timeout)
                .connect_with(options)
                .await
                .map_err(StoreError::Unavailable)?;
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .test_before_acquire(false)
                .acquire_timeout(config.acquire_timeout)
                .connect(url)
                .await
                .map_err(StoreError::Unavailable)?;
            Pool::Postgres(pool)
        } else {
            return Err(StoreError::Invalid("database url: expected sqlite://PATH or postgres://…"));
        };
        Ok(SqlStore { pool })
    }

    /// Which backend this store runs on.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the migrations not yet applied (`db/sqlite/` or `db/postgres/`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::migrate!("../db/sqlite").run(pool).await,
            Pool::Postgres(pool) => sqlx::migrate!("../db/postgres").run(pool).await,
        }
        .map_err(StoreError::Migration)
    }

    /// Runs one statement that is not part of the store's API (creating or dropping a test
    /// database, say). Only for administration and tests: it takes no parameters.
    pub async fn execute_admin(&self, statement: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::raw_sql(statement).execute(pool).await.map(drop).map_err(map_err))
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// Maps a driver error: unique violations become `Conflict` on the field the constraint
/// names, foreign-key violations `NotFound`, everything else `Unavailable`.
fn map_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_foreign_key_violation()
    {
        return StoreError::NotFound { what: "referenced account or season" };
    }
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        // Postgres names the constraint (`accounts_username_key`); SQLite the column
        // (`UNIQUE constraint failed: accounts.username`).
        let text = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
        let field = ["username", "email", "name"].into_iter().find(|f| text.contains(f)).unwrap_or("value");
        return StoreError::Conflict { field: if field == "name" { "season name" } else { field } };
    }
    StoreError::Unavailable(e)
}

fn i(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn u(x: i64) -> u64 {
    u64::try_from(x).unwrap_or(0)
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: i64,
    username: String,
    email: String,
    password_hash: String,
    created_at_ms: i64,
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Account {
        Account {
            id: u(r.id),
            username: r.username,
            email: r.email,
            password_hash: r.password_hash,
            created_at_ms: u(r.created_at_ms),
        }
    }
}

#[derive(sqlx::FromRow)]
struct ProfileRow {
    account_id: i64,
    display_name: String,
    preferred_region: Option<String>,
    preferences: String,
    updated_at_ms: i64,
}

impl From<ProfileRow> for Profile {
    fn from(r: ProfileRow) -> Profile {
        Profile {
            account_id: u(r.account_id),
            display_name: r.display_name,
            preferred_region: r.preferred_region,
            preferences: r.preferences,
            updated_at_ms: u(r.updated_at_ms),
        }
    }
}

#[derive(sqlx::FromRow)]
struct SeasonRow {
    id: i64,
    name: String,
    starts_at_ms: i64,
    ends_at_ms: i64,
}

impl From<SeasonRow> for Season {
    fn from(r: SeasonRow) -> Season {
        Season { id: u(r.id), name: r.name, starts_at_ms: u(r.starts_at_ms), ends_at_ms: u(r.ends_at_ms) }
    }
}

#[derive(sqlx::FromRow)]
struct RatingRow {
    account_id: i64,
    mode: String,
    season_id: i64,
    mu: f64,
    sigma: f64,
    games: i64,
    updated_at_ms: i64,
}

impl From<RatingRow> for Rating {
    fn from(r: RatingRow) -> Rating {
        Rating {
            account_id: u(r.account_id),
            mode: r.mode,
            season_id: u(r.season_id),
            mu: r.mu,
            sigma: r.sigma,
            games: u(r.games),
            updated_at_ms: u(r.updated_at_ms),
        }
    }
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    match_id: i64,
    mode: String,
    season_id: i64,
    team: i64,
    place: i64,
    mu_before: f64,
    sigma_before: f64,
    mu_after: f64,
    sigma_after: f64,
    finished_at_ms: i64,
}

impl From<HistoryRow> for HistoryEntry {
    fn from(r: HistoryRow) -> HistoryEntry {
        HistoryEntry {
            match_id: u(r.match_id),
            mode: r.mode,
            season_id: u(r.season_id),
            team: u16::try_from(r.team).unwrap_or(u16::MAX),
            place: u16::try_from(r.place).unwrap_or(u16::MAX),
            mu_before: r.mu_before,
            sigma_before: r.sigma_before,
            mu_after: r.mu_after,
            sigma_after: r.sigma_after,
            finished_at_ms: u(r.finished_at_ms),
        }
    }
}

#[derive(sqlx::FromRow)]
struct RatedPlayerRow {
    account_id: i64,
    display_name: String,
    rating: f64,
}

/// Rows per multi-row INSERT: 2,000 player rows bind 22,000 parameters, inside both
/// SQLite's limit (32,766) and Postgres' (65,535).
const ROWS_PER_STATEMENT: usize = 2_000;

/// [`Store::record_matches`] on Postgres: each table in one statement of column arrays
/// (`UNNEST`), which binds 11 parameters for a batch instead of 11 per row (22k → 25k
/// player rows/s with one writer; BENCHMARKS.md has the rest of that story).
async fn record_matches_postgres(
    pool: &PgPool,
    matches: &[MatchRecord],
    players: &[(&MatchRecord, &PlayerResult)],
    ratings: &[(&MatchRecord, &PlayerResult)],
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    sqlx::query(
        "INSERT INTO matches (match_id, mode, season_id, datacenter, formed_at_ms, finished_at_ms) \
         SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[]) \
         ON CONFLICT (match_id) DO NOTHING",
    )
    .bind(matches.iter().map(|m| i(m.match_id)).collect::<Vec<_>>())
    .bind(matches.iter().map(|m| m.mode.as_str()).collect::<Vec<_>>())
    .bind(matches.iter().map(|m| i(m.season_id)).collect::<Vec<_>>())
    .bind(matches.iter().map(|m| m.datacenter.as_str()).collect::<Vec<_>>())
    .bind(matches.iter().map(|m| i(m.formed_at_ms)).collect::<Vec<_>>())
    .bind(matches.iter().map(|m| i(m.finished_at_ms)).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    let written = sqlx::query(
        "INSERT INTO match_players (match_id, account_id, mode, season_id, team, place, \
           mu_before, sigma_before, mu_after, sigma_after, finished_at_ms) \
         SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[], \
           $7::FLOAT8[], $8::FLOAT8[], $9::FLOAT8[], $10::FLOAT8[], $11::BIGINT[]) \
         ON CONFLICT (match_id, account_id) DO NOTHING",
    )
    .bind(players.iter().map(|(m, _)| i(m.match_id)).collect::<Vec<_>>())
    .bind(players.iter().map(|(_, p)| i(p.account_id)).collect::<Vec<_>>())
    .bind(players.iter().map(|(m, _)| m.mode.as_str()).collect::<Vec<_>>())
    .bind(players.iter().map(|(m, _)| i(m.season_id)).collect::<Vec<_>>())
    .bind(players.iter().map(|(_, p)| i64::from(p.team)).collect::<Vec<_>>())
    .bind(players.iter().map(|(_, p)| i64::from(p.place)).collect::<Vec<_>>())
    .bind(players.iter().map(|(_, p)| p.mu_before).collect::<Vec<_>>())
    .bind(players.iter().map(|(_, p)| p.sigma_before).collect::<Vec<_>>())
    .bind(players.iter().map(|(_, p)| p.mu_after).collect::<Vec<_>>())
    .bind(players.iter().map(|(_, p)| p.sigma_after).collect::<Vec<_>>())
    .bind(players.iter().map(|(m, _)| i(m.finished_at_ms)).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .map_err(map_err)?
    .rows_affected();
    sqlx::query(
        "INSERT INTO ratings (account_id, mode, season_id, mu, sigma, games, updated_at_ms) \
         SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::FLOAT8[], $5::FLOAT8[], $6::BIGINT[], \
           $7::BIGINT[]) \
         ON CONFLICT (account_id, mode, season_id) DO UPDATE SET \
           mu = excluded.mu, sigma = excluded.sigma, games = excluded.games, updated_at_ms = excluded.updated_at_ms \
         WHERE ratings.games < excluded.games",
    )
    .bind(ratings.iter().map(|(_, p)| i(p.account_id)).collect::<Vec<_>>())
    .bind(ratings.iter().map(|(m, _)| m.mode.as_str()).collect::<Vec<_>>())
    .bind(ratings.iter().map(|(m, _)| i(m.season_id)).collect::<Vec<_>>())
    .bind(ratings.iter().map(|(_, p)| p.mu_after).collect::<Vec<_>>())
    .bind(ratings.iter().map(|(_, p)| p.sigma_after).collect::<Vec<_>>())
    .bind(ratings.iter().map(|(_, p)| i(p.games)).collect::<Vec<_>>())
    .bind(ratings.iter().map(|(m, _)| i(m.finished_at_ms)).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(written)
}

/// A refresh token's state, for telling why a rotation did not happen.
#[derive(sqlx::FromRow)]
struct TokenState {
    account_id: i64,
    family: String,
    expires_at_ms: i64,
    spent_at_ms: Option<i64>,
    revoked_at_ms: Option<i64>,
}

const ACCOUNT_COLUMNS: &str = "id, username, email, password_hash, created_at_ms";
const PROFILE_COLUMNS: &str = "account_id, display_name, preferred_region, preferences, updated_at_ms";
const SEASON_COLUMNS: &str = "id, name, starts_at_ms, ends_at_ms";
const HISTORY_COLUMNS: &str =
    "match_id, mode, season_id, team, place, mu_before, sigma_before, mu_after, sigma_after, finished_at_ms";
const INSERT_REFRESH_TOKEN: &str = "INSERT INTO refresh_tokens (token_hash, family, account_id, issued_at_ms, expires_at_ms) \
                                    VALUES ($1, $2, $3, $4, $5)";
const REVOKE_FAMILY: &str = "UPDATE refresh_tokens SET revoked_at_ms = $2 WHERE family = $1 AND revoked_at_ms IS NULL";

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop).map_err(map_err))
    }

    async fn create_account(&self, new: NewAccount) -> Result<Account, StoreError> {
        let insert_account = format!(
            "INSERT INTO accounts (username, email, password_hash, created_at_ms) VALUES ($1, $2, $3, $4) \
             RETURNING {ACCOUNT_COLUMNS}"
        );
        let insert_profile = "INSERT INTO profiles (account_id, display_name, preferred_region, preferences, updated_at_ms) \
                              VALUES ($1, $2, NULL, '{}', $3)";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(map_err)?;
            let account: AccountRow = sqlx::query_as(&insert_account)
                .bind(&new.username)
                .bind(&new.email)
                .bind(&new.password_hash)
                .bind(i(new.now_ms))
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
            sqlx::query(insert_profile)
                .bind(account.id)
                .bind(&new.display_name)
                .bind(i(new.now_ms))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            Ok(account.into())
        })
    }

    async fn account_by_login(&self, login: &str) -> Result<Option<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username = $1 OR email = $1");
        on_pool!(self, pool => {
            let row: Option<AccountRow> =
                sqlx::query_as(&sql).bind(login).fetch_optional(pool).await.map_err(map_err)?;
            Ok(row.map(Account::from))
        })
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
        on_pool!(self, pool => {
            let row: Option<AccountRow> = sqlx::query_as(&sql).bind(i(id)).fetch_optional(pool).await.map_err(map_err)?;
            Ok(row.map(Account::from))
        })
    }

    async fn insert_refresh_token(&self, t: NewRefreshToken) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query(INSERT_REFRESH_TOKEN)
            .bind(&t.token_hash)
            .bind(&t.family)
            .bind(i(t.account_id))
            .bind(i(t.issued_at_ms))
            .bind(i(t.expires_at_ms))
            .execute(pool)
            .await
            .map(drop)
            .map_err(map_err))
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new: NewRefreshToken,
        now_ms: u64,
    ) -> Result<Rotation, StoreError> {
        // Spending is one conditional UPDATE, so of two racing rotations exactly one wins;
        // the other finds the token spent and revokes the family, as a replay would.
        let spend = "UPDATE refresh_tokens SET spent_at_ms = $2 \
                     WHERE token_hash = $1 AND spent_at_ms IS NULL AND revoked_at_ms IS NULL AND expires_at_ms > $2 \
                     RETURNING account_id, family, expires_at_ms, spent_at_ms, revoked_at_ms";
        let state = "SELECT account_id, family, expires_at_ms, spent_at_ms, revoked_at_ms \
                     FROM refresh_tokens WHERE token_hash = $1";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(map_err)?;
            let spent: Option<TokenState> =
                sqlx::query_as(spend).bind(old_hash).bind(i(now_ms)).fetch_optional(&mut *tx).await.map_err(map_err)?;
            let outcome = match spent {
                Some(old) => {
                    sqlx::query(INSERT_REFRESH_TOKEN)
                        .bind(&new.token_hash)
                        .bind(&old.family)
                        .bind(old.account_id)
                        .bind(i(new.issued_at_ms))
                        .bind(i(new.expires_at_ms))
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    Rotation::Rotated { account_id: u(old.account_id) }
                }
                None => {
                    let found: Option<TokenState> =
                        sqlx::query_as(state).bind(old_hash).fetch_optional(&mut *tx).await.map_err(map_err)?;
                    match found {
                        None => Rotation::Unknown,
                        Some(t) if t.revoked_at_ms.is_some() => Rotation::Revoked,
                        Some(t) if t.spent_at_ms.is_some() => {
                            sqlx::query(REVOKE_FAMILY).bind(&t.family).bind(i(now_ms)).execute(&mut *tx).await.map_err(map_err)?;
                            Rotation::Reused { account_id: u(t.account_id), family: t.family }
                        }
                        Some(t) => {
                            debug_assert!(u(t.expires_at_ms) <= now_ms);
                            Rotation::Expired
                        }
                    }
                }
            };
            tx.commit().await.map_err(map_err)?;
            Ok(outcome)
        })
    }

    async fn revoke_family(&self, family: &str, now_ms: u64) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query(REVOKE_FAMILY).bind(family).bind(i(now_ms)).execute(pool).await.map(drop).map_err(map_err))
    }

    async fn profile(&self, account: AccountId) -> Result<Option<Profile>, StoreError> {
        let sql = format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE account_id = $1");
        on_pool!(self, pool => {
            let row: Option<ProfileRow> =
                sqlx::query_as(&sql).bind(i(account)).fetch_optional(pool).await.map_err(map_err)?;
            Ok(row.map(Profile::from))
        })
    }

    async fn update_profile(
        &self,
        account: AccountId,
        patch: ProfilePatch,
        now_ms: u64,
    ) -> Result<Profile, StoreError> {
        let sql = format!(
            "UPDATE profiles SET \
               display_name = COALESCE($2, display_name), \
               preferred_region = CASE WHEN $3 THEN $4 ELSE preferred_region END, \
               preferences = COALESCE($5, preferences), \
               updated_at_ms = $6 \
             WHERE account_id = $1 RETURNING {PROFILE_COLUMNS}"
        );
        let set_region = patch.preferred_region.is_some();
        let region = patch.preferred_region.flatten();
        on_pool!(self, pool => {
            let row: Option<ProfileRow> = sqlx::query_as(&sql)
                .bind(i(account))
                .bind(&patch.display_name)
                .bind(set_region)
                .bind(&region)
                .bind(&patch.preferences)
                .bind(i(now_ms))
                .fetch_optional(pool)
                .await
                .map_err(map_err)?;
            row.map(Profile::from).ok_or(StoreError::NotFound { what: "profile" })
        })
    }

    async fn create_season(&self, name: &str, starts_at_ms: u64, ends_at_ms: u64) -> Result<Season, StoreError> {
        if ends_at_ms <= starts_at_ms {
            return Err(StoreError::Invalid("season: it must end after it starts"));
        }
        let sql = format!(
            "INSERT INTO seasons (name, starts_at_ms, ends_at_ms) VALUES ($1, $2, $3) RETURNING {SEASON_COLUMNS}"
        );
        on_pool!(self, pool => {
            let row: SeasonRow = sqlx::query_as(&sql)
                .bind(name)
                .bind(i(starts_at_ms))
                .bind(i(ends_at_ms))
                .fetch_one(pool)
                .await
                .map_err(map_err)?;
            Ok(row.into())
        })
    }

    async fn season_at(&self, now_ms: u64) -> Result<Option<Season>, StoreError> {
        let sql = format!(
            "SELECT {SEASON_COLUMNS} FROM seasons WHERE starts_at_ms <= $1 AND ends_at_ms > $1 \
             ORDER BY starts_at_ms DESC, id DESC LIMIT 1"
        );
        on_pool!(self, pool => {
            let row: Option<SeasonRow> = sqlx::query_as(&sql).bind(i(now_ms)).fetch_optional(pool).await.map_err(map_err)?;
            Ok(row.map(Season::from))
        })
    }

    async fn season(&self, name: &str) -> Result<Option<Season>, StoreError> {
        let sql = format!("SELECT {SEASON_COLUMNS} FROM seasons WHERE name = $1");
        on_pool!(self, pool => {
            let row: Option<SeasonRow> = sqlx::query_as(&sql).bind(name).fetch_optional(pool).await.map_err(map_err)?;
            Ok(row.map(Season::from))
        })
    }

    async fn rating(&self, account: AccountId, mode: &str, season_id: u64) -> Result<Option<Rating>, StoreError> {
        let sql = "SELECT account_id, mode, season_id, mu, sigma, games, updated_at_ms FROM ratings \
                   WHERE account_id = $1 AND mode = $2 AND season_id = $3";
        on_pool!(self, pool => {
            let row: Option<RatingRow> = sqlx::query_as(sql)
                .bind(i(account))
                .bind(mode)
                .bind(i(season_id))
                .fetch_optional(pool)
                .await
                .map_err(map_err)?;
            Ok(row.map(Rating::from))
        })
    }

    async fn put_ratings(&self, ratings: &[Rating]) -> Result<(), StoreError> {
        let sql = "INSERT INTO ratings (account_id, mode, season_id, mu, sigma, games, updated_at_ms) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) \
                   ON CONFLICT (account_id, mode, season_id) DO UPDATE SET \
                     mu = excluded.mu, sigma = excluded.sigma, games = excluded.games, updated_at_ms = excluded.updated_at_ms";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(map_err)?;
            for r in ratings {
                sqlx::query(sql)
                    .bind(i(r.account_id))
                    .bind(&r.mode)
                    .bind(i(r.season_id))
                    .bind(r.mu)
                    .bind(r.sigma)
                    .bind(i(r.games))
                    .bind(i(r.updated_at_ms))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
            }
            tx.commit().await.map_err(map_err)
        })
    }
    async fn recent_seasons(&self, now_ms: u64, limit: u32) -> Result<Vec<Season>, StoreError> {
        let sql = format!(
            "SELECT {SEASON_COLUMNS} FROM seasons WHERE starts_at_ms <= $1 ORDER BY starts_at_ms DESC, id DESC LIMIT $2"
        );
        on_pool!(self, pool => {
            let rows: Vec<SeasonRow> =
                sqlx::query_as(&sql).bind(i(now_ms)).bind(i64::from(limit)).fetch_all(pool).await.map_err(map_err)?;
            Ok(rows.into_iter().map(Season::from).collect())
        })
    }

    async fn record_matches(&self, matches: &[MatchRecord]) -> Result<u64, StoreError> {
        let players: Vec<(&MatchRecord, &PlayerResult)> =
            matches.iter().flat_map(|m| m.players.iter().map(move |p| (m, p))).collect();
        // One rating row per (player, mode, season): a batch may hold several of a
        // player's matches, and one statement may not update a row twice.
        let mut latest: std::collections::HashMap<(u64, &str, u64), (&MatchRecord, &PlayerResult)> =
            std::collections::HashMap::with_capacity(players.len());
        for &(m, p) in &players {
            let entry = latest.entry((p.account_id, m.mode.as_str(), m.season_id)).or_insert((m, p));
            if p.games > entry.1.games {
                *entry = (m, p);
            }
        }
        let mut ratings: Vec<(&MatchRecord, &PlayerResult)> = latest.into_values().collect();
        // A fixed order keeps concurrent writers from deadlocking on each other's rows.
        ratings.sort_unstable_by_key(|(m, p)| (p.account_id, m.mode.as_str(), m.season_id));
        let pool = match &self.pool {
            Pool::Postgres(pool) => return record_matches_postgres(pool, matches, &players, &ratings).await,
            Pool::Sqlite(pool) => pool,
        };
        {
            let mut tx = pool.begin().await.map_err(map_err)?;
            for chunk in matches.chunks(ROWS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO matches (match_id, mode, season_id, datacenter, formed_at_ms, finished_at_ms) ",
                );
                insert.push_values(chunk, |mut row, m| {
                    row.push_bind(i(m.match_id))
                        .push_bind(m.mode.as_str())
                        .push_bind(i(m.season_id))
                        .push_bind(m.datacenter.as_str())
                        .push_bind(i(m.formed_at_ms))
                        .push_bind(i(m.finished_at_ms));
                });
                insert.push(" ON CONFLICT (match_id) DO NOTHING");
                insert.build().execute(&mut *tx).await.map_err(map_err)?;
            }
            let mut written = 0;
            for chunk in players.chunks(ROWS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO match_players (match_id, account_id, mode, season_id, team, place, \
                     mu_before, sigma_before, mu_after, sigma_after, finished_at_ms) ",
                );
                insert.push_values(chunk, |mut row, (m, p)| {
                    row.push_bind(i(m.match_id))
                        .push_bind(i(p.account_id))
                        .push_bind(m.mode.as_str())
                        .push_bind(i(m.season_id))
                        .push_bind(i64::from(p.team))
                        .push_bind(i64::from(p.place))
                        .push_bind(p.mu_before)
                        .push_bind(p.sigma_before)
                        .push_bind(p.mu_after)
                        .push_bind(p.sigma_after)
                        .push_bind(i(m.finished_at_ms));
                });
                insert.push(" ON CONFLICT (match_id, account_id) DO NOTHING");
                written += insert.build().execute(&mut *tx).await.map_err(map_err)?.rows_affected();
            }
            for chunk in ratings.chunks(ROWS_PER_STATEMENT) {
                let mut upsert = sqlx::QueryBuilder::new(
                    "INSERT INTO ratings (account_id, mode, season_id, mu, sigma, games, updated_at_ms) ",
                );
                upsert.push_values(chunk, |mut row, (m, p)| {
                    row.push_bind(i(p.account_id))
                        .push_bind(m.mode.as_str())
                        .push_bind(i(m.season_id))
                        .push_bind(p.mu_after)
                        .push_bind(p.sigma_after)
                        .push_bind(i(p.games))
                        .push_bind(i(m.finished_at_ms));
                });
                upsert.push(
                    " ON CONFLICT (account_id, mode, season_id) DO UPDATE SET \
                       mu = excluded.mu, sigma = excluded.sigma, games = excluded.games, \
                       updated_at_ms = excluded.updated_at_ms \
                     WHERE ratings.games < excluded.games",
                );
                upsert.build().execute(&mut *tx).await.map_err(map_err)?;
            }
            tx.commit().await.map_err(map_err)?;
            Ok(written)
        }
    }

    async fn match_history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        let sql = format!(
            "SELECT {HISTORY_COLUMNS} FROM match_players \
             WHERE account_id = $1 AND ($2 IS NULL OR mode = $2) \
               AND (finished_at_ms < $3 OR (finished_at_ms = $3 AND match_id < $4)) \
             ORDER BY finished_at_ms DESC, match_id DESC LIMIT $5"
        );
        let (before_ms, before_match) = query.before.map_or((i64::MAX, i64::MAX), |(at, id)| (i(at), i(id)));
        on_pool!(self, pool => {
            let rows: Vec<HistoryRow> = sqlx::query_as(&sql)
                .bind(i(query.account_id))
                .bind(query.mode.as_deref())
                .bind(before_ms)
                .bind(before_match)
                .bind(i64::from(query.limit))
                .fetch_all(pool)
                .await
                .map_err(map_err)?;
            Ok(rows.into_iter().map(HistoryEntry::from).collect())
        })
    }

    async fn leaderboard(
        &self,
        season_id: u64,
        mode: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<RatedPlayer>, StoreError> {
        let sql = "SELECT r.account_id, p.display_name, r.mu - 3 * r.sigma AS rating \
                   FROM ratings r JOIN profiles p ON p.account_id = r.account_id \
                   WHERE r.season_id = $1 AND r.mode = $2 \
                   ORDER BY r.mu - 3 * r.sigma DESC, r.account_id LIMIT $3 OFFSET $4";
        on_pool!(self, pool => {
            let rows: Vec<RatedPlayerRow> = sqlx::query_as(sql)
                .bind(i(season_id))
                .bind(mode)
                .bind(i64::from(limit))
                .bind(i(offset))
                .fetch_all(pool)
                .await
                .map_err(map_err)?;
            Ok(rows
                .into_iter()
                .map(|r| RatedPlayer { account_id: u(r.account_id), display_name: r.display_name, rating: r.rating })
                .collect())
        })
    }

    async fn leaderboard_rank(
        &self,
        season_id: u64,
        mode: &str,
        account: AccountId,
    ) -> Result<Option<u64>, StoreError> {
        let Some(mine) = self.rating(account, mode, season_id).await? else { return Ok(None) };
        let sql = "SELECT COUNT(*) FROM ratings \
                   WHERE season_id = $1 AND mode = $2 \
                     AND (mu - 3 * sigma > $3 OR (mu - 3 * sigma = $3 AND account_id < $4))";
        let display = mine.mu - 3.0 * mine.sigma;
        on_pool!(self, pool => {
            let (above,): (i64,) = sqlx::query_as(sql)
                .bind(i(season_id))
                .bind(mode)
                .bind(display)
                .bind(i(account))
                .fetch_one(pool)
                .await
                .map_err(map_err)?;
            Ok(Some(u(above)))
        })
    }

    async fn display_names(&self, accounts: &[AccountId]) -> Result<Vec<(AccountId, String)>, StoreError> {
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!(self, pool => {
            let mut names = Vec::with_capacity(accounts.len());
            for chunk in accounts.chunks(ROWS_PER_STATEMENT) {
                let mut select = sqlx::QueryBuilder::new("SELECT account_id, display_name FROM profiles WHERE account_id IN (");
                let mut ids = select.separated(", ");
                for &id in chunk {
                    ids.push_bind(i(id));
                }
                select.push(")");
                let rows: Vec<(i64, String)> = select.build_query_as().fetch_all(pool).await.map_err(map_err)?;
                names.extend(rows.into_iter().map(|(id, name)| (u(id), name)));
            }
            Ok(names)
        })
    }
}
