//! Seasonal leaderboards per (season, mode), ordered by the display rating mu − 3·sigma.
//!
//! [`StoreLeaderboard`] reads the store (embedded mode: the ratings index answers top-N
//! and rank queries). [`RedisLeaderboard`] keeps one sorted set per (season, mode) in
//! Redis (production): the write-behind worker adds each committed rating, reads come
//! from Redis, and a set that is missing (evicted, flushed, never built) is rebuilt from
//! the store before it is read. A set counts as complete only with a marker member the
//! rebuild adds last; commits always write their scores, and the rebuild never
//! overwrites one (`ZADD NX`), so a commit that lands during a rebuild is kept. A Redis
//! write that fails deletes the sets it touched, so they are rebuilt, not left stale.

use std::sync::Arc;

use redis::aio::ConnectionManager;

use crate::{AccountId, CommitListener, MatchRecord, Store, StoreError};

/// One row of a leaderboard.
#[derive(Clone, Debug, PartialEq)]
pub struct Standing {
    /// 1 = best.
    pub rank: u64,
    /// Who.
    pub account_id: AccountId,
    /// Their display name.
    pub display_name: String,
    /// The display rating, mu − 3·sigma.
    pub rating: f64,
}

/// A leaderboard read failed; retrying later may help.
#[derive(Debug, thiserror::Error)]
pub enum LeaderboardError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis failed.
    #[error("redis unavailable: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Where leaderboards are read from. It hears about every committed batch, to keep
/// itself current.
#[async_trait::async_trait]
pub trait Leaderboard: CommitListener {
    /// Ranks `offset + 1 ..= offset + limit`.
    async fn top(&self, season_id: u64, mode: &str, offset: u64, limit: u32)
    -> Result<Vec<Standing>, LeaderboardError>;
    /// `account`'s display rating as this board has it, or `None` if it is not on it.
    async fn score(&self, season_id: u64, mode: &str, account: AccountId) -> Result<Option<f64>, LeaderboardError>;
    /// `account`'s standing with up to `radius` players either side, or `None` if the
    /// account is not rated in that season and mode.
    async fn around(
        &self,
        season_id: u64,
        mode: &str,
        account: AccountId,
        radius: u32,
    ) -> Result<Option<Vec<Standing>>, LeaderboardError>;
}

/// The page that centres on a player ranked `above + 1`.
fn window(above: u64, radius: u32) -> (u64, u32) {
    let offset = above.saturating_sub(u64::from(radius));
    (offset, (above - offset) as u32 + radius + 1)
}

/// Leaderboards straight from the store (embedded mode).
pub struct StoreLeaderboard {
    store: Arc<dyn Store>,
}

impl StoreLeaderboard {
    /// Reads `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreLeaderboard { store }
    }
}

#[async_trait::async_trait]
impl CommitListener for StoreLeaderboard {
    async fn committed(&self, _matches: &[MatchRecord]) {
        // The store is the leaderboard: a commit is already visible.
    }
}

#[async_trait::async_trait]
impl Leaderboard for StoreLeaderboard {
    async fn score(&self, season_id: u64, mode: &str, account: AccountId) -> Result<Option<f64>, LeaderboardError> {
        Ok(self.store.rating(account, mode, season_id).await?.map(|r| r.mu - 3.0 * r.sigma))
    }

    async fn top(
        &self,
        season_id: u64,
        mode: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Standing>, LeaderboardError> {
        let rows = self.store.leaderboard(season_id, mode, offset, limit).await?;
        Ok(rows
            .into_iter()
            .zip(offset + 1..)
            .map(|(r, rank)| Standing {
                rank,
                account_id: r.account_id,
                display_name: r.display_name,
                rating: r.rating,
            })
            .collect())
    }

    async fn around(
        &self,
        season_id: u64,
        mode: &str,
        account: AccountId,
        radius: u32,
    ) -> Result<Option<Vec<Standing>>, LeaderboardError> {
        let Some(above) = self.store.leaderboard_rank(season_id, mode, account).await? else { return Ok(None) };
        let (offset, limit) = window(above, radius);
        self.top(season_id, mode, offset, limit).await.map(Some)
    }
}

/// Leaderboards as Redis sorted sets (production), rebuilt from the store when missing.
pub struct RedisLeaderboard {
    redis: ConnectionManager,
    store: Arc<dyn Store>,
    prefix: String,
}

/// Ratings copied per round trip when a set is rebuilt.
const REBUILD_PAGE: u32 = 5_000;

impl RedisLeaderboard {
    /// Connects to `url` (`redis://HOST:PORT/DB`). Keys start with `prefix` (e.g.
    /// `rally:`), so several deployments or tests can share one Redis.
    pub async fn connect(url: &str, prefix: &str, store: Arc<dyn Store>) -> Result<Self, LeaderboardError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)))
            .set_number_of_retries(2);
        let redis = client.get_connection_manager_with_config(config).await?;
        Ok(RedisLeaderboard { redis, store, prefix: prefix.to_owned() })
    }

    /// The sorted set of one season and mode.
    pub fn key(&self, season_id: u64, mode: &str) -> String {
        format!("{}lb:{season_id}:{mode}", self.prefix)
    }

    /// Builds the set from the store unless it is complete: a set is complete when it
    /// holds the marker member, which the rebuild adds last (and which Redis evicts or a
    /// failed update deletes with the set). The rebuild adds the store's ratings with
    /// `NX`, so ratings committed while it runs (plain `ZADD`s) are never overwritten
    /// with the older values it read.
    async fn ensure(&self, season_id: u64, mode: &str) -> Result<String, LeaderboardError> {
        let key = self.key(season_id, mode);
        let mut redis = self.redis.clone();
        let built: Option<f64> = redis::cmd("ZSCORE").arg(&key).arg(BUILT).query_async(&mut redis).await?;
        if built.is_some() {
            return Ok(key);
        }
        let mut offset = 0u64;
        loop {
            let page = self.store.leaderboard(season_id, mode, offset, REBUILD_PAGE).await?;
            if page.is_empty() {
                break;
            }
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&key).arg("NX");
            for row in &page {
                zadd.arg(row.rating).arg(row.account_id);
            }
            let _: () = zadd.query_async(&mut redis).await?;
            offset += page.len() as u64;
        }
        let _: () = redis::cmd("ZADD").arg(&key).arg("-inf").arg(BUILT).query_async(&mut redis).await?;
        tracing::info!(key, players = offset, "leaderboard rebuilt from the store");
        metrics::counter!("rally_leaderboard_rebuilds_total").increment(1);
        Ok(key)
    }

    async fn standings(&self, key: &str, offset: u64, limit: u32) -> Result<Vec<Standing>, LeaderboardError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut redis = self.redis.clone();
        let last = offset + u64::from(limit) - 1;
        let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(offset)
            .arg(last)
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut redis)
            .await?;
        // The marker sorts last (-inf) and is no player.
        let rows: Vec<(AccountId, f64)> =
            rows.into_iter().filter_map(|(id, score)| Some((id.parse().ok()?, score))).collect();
        let ids: Vec<AccountId> = rows.iter().map(|&(id, _)| id).collect();
        let names: std::collections::HashMap<AccountId, String> =
            self.store.display_names(&ids).await?.into_iter().collect();
        Ok(rows
            .into_iter()
            .zip(offset + 1..)
            .map(|((account_id, rating), rank)| Standing {
                rank,
                account_id,
                display_name: names.get(&account_id).cloned().unwrap_or_default(),
                rating,
            })
            .collect())
    }
}

/// The member that marks a set as complete (score -inf, so it sorts below every player).
const BUILT: &str = "~built";

/// Score-member pairs per `ZADD`.
const PAIRS_PER_CALL: usize = 1_000;

/// How long a commit's leaderboard update may take: Redis being slow must not hold up
/// the write-behind worker (the set is dropped and rebuilt instead).
const UPDATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[async_trait::async_trait]
impl CommitListener for RedisLeaderboard {
    async fn committed(&self, matches: &[MatchRecord]) {
        // In commit order, so a player's last match in the batch sets their score.
        let mut scores: std::collections::BTreeMap<String, Vec<(f64, AccountId)>> = Default::default();
        for m in matches {
            let key = self.key(m.season_id, &m.mode);
            scores
                .entry(key)
                .or_default()
                .extend(m.players.iter().map(|p| (p.mu_after - 3.0 * p.sigma_after, p.account_id)));
        }
        let mut redis = self.redis.clone();
        let update = async {
            for (key, pairs) in &scores {
                for chunk in pairs.chunks(PAIRS_PER_CALL) {
                    let mut zadd = redis::cmd("ZADD");
                    zadd.arg(key);
                    for (score, account) in chunk {
                        zadd.arg(*score).arg(*account);
                    }
                    let _: i64 = zadd.query_async(&mut redis).await?;
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        let failed = match tokio::time::timeout(UPDATE_TIMEOUT, update).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        metrics::counter!("rally_leaderboard_redis_errors_total").increment(1);
        tracing::warn!(error = failed, "leaderboard update failed; dropping the touched boards so they are rebuilt");
        let mut del = redis::cmd("DEL");
        for key in scores.keys() {
            del.arg(key);
        }
        let mut redis = self.redis.clone();
        match tokio::time::timeout(UPDATE_TIMEOUT, del.query_async::<()>(&mut redis)).await {
            Ok(Ok(())) => {}
            _ => tracing::error!("could not drop stale leaderboards; they lag until rebuilt"),
        }
    }
}

#[async_trait::async_trait]
impl Leaderboard for RedisLeaderboard {
    async fn score(&self, season_id: u64, mode: &str, account: AccountId) -> Result<Option<f64>, LeaderboardError> {
        let key = self.ensure(season_id, mode).await?;
        let mut redis = self.redis.clone();
        Ok(redis::cmd("ZSCORE").arg(&key).arg(account).query_async(&mut redis).await?)
    }

    async fn top(
        &self,
        season_id: u64,
        mode: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Standing>, LeaderboardError> {
        let key = self.ensure(season_id, mode).await?;
        self.standings(&key, offset, limit).await
    }

    async fn around(
        &self,
        season_id: u64,
        mode: &str,
        account: AccountId,
        radius: u32,
    ) -> Result<Option<Vec<Standing>>, LeaderboardError> {
        let key = self.ensure(season_id, mode).await?;
        let mut redis = self.redis.clone();
        let above: Option<u64> = redis::cmd("ZREVRANK").arg(&key).arg(account).query_async(&mut redis).await?;
        let Some(above) = above else { return Ok(None) };
        let (offset, limit) = window(above, radius);
        self.standings(&key, offset, limit).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_window_centres_on_the_player_and_stops_at_the_top() {
        assert_eq!(super::window(0, 2), (0, 3));
        assert_eq!(super::window(1, 2), (0, 4));
        assert_eq!(super::window(10, 2), (8, 5));
    }
}
