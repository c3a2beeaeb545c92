//! Where a player's rating comes from. Clients never assert their own rating in
//! production: the accounts store backs `RatingSource` there. In dev, `TokenRatings`
//! reads the rating `rally token` put into the access token.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use rally_persistence::{AccountId, CommitListener, MatchRecord, Store};

/// A rating lookup failed.
#[derive(Debug, thiserror::Error)]
#[error("rating lookup failed: {0}")]
pub struct RatingError(pub String);

/// The rating source's answer, boxed so the trait stays object-safe.
pub type RatingFuture<'a> = Pin<Box<dyn Future<Output = Result<f64, RatingError>> + Send + 'a>>;

/// Looks up the rating a player queues with.
pub trait RatingSource: Send + Sync + 'static {
    /// The rating of `player` in `mode`. `token_mmr` is the rating a dev token carries;
    /// production sources ignore it.
    fn rating<'a>(&'a self, player: u64, mode: &'a str, token_mmr: Option<f64>) -> RatingFuture<'a>;
}

/// Dev only: the rating in the access token, or `default` when the token has none.
#[derive(Clone, Copy, Debug)]
pub struct TokenRatings {
    /// Rating of players whose token carries none.
    pub default: f64,
}

impl RatingSource for TokenRatings {
    fn rating<'a>(&'a self, _player: u64, _mode: &'a str, token_mmr: Option<f64>) -> RatingFuture<'a> {
        let mmr = token_mmr.unwrap_or(self.default);
        Box::pin(async move { Ok(mmr) })
    }
}

/// Ratings from the store: the player's rating `mu` in the mode for the season running now
/// (ratings are kept on the engine's MMR scale). Players without one queue at `default`,
/// or, when [`trusting_token_mmr`](Self::trusting_token_mmr) is set (dev only), at the
/// rating their token carries.
///
/// Lookups are kept in memory, so a player queueing again costs no store round trip (two
/// queries otherwise: thousands a second at thousands of enqueues a second, and a network
/// round trip each on Postgres). What keeps the copies true:
/// - the running season is re-read when it ends, at least every few seconds, and when a
///   result is stored for a season other than the cached one;
/// - a rating changes only when a result is stored, and this type is a [`CommitListener`]:
///   registered with the write-behind queue that stores this process's results, it takes
///   each committed rating (the one with more games wins, as in the store);
/// - a lookup that read the store while a commit landed does not keep what it read, and a
///   read never replaces a copy with more games;
/// - entries expire after the cache's TTL, which bounds how stale a rating can be where
///   results are stored by another process, and the least recently used are dropped past
///   the cache's capacity.
pub struct StoreRatings {
    store: Arc<dyn Store>,
    default: f64,
    trust_token_mmr: bool,
    ttl: Duration,
    cache: Mutex<Cache>,
}

/// Default number of (player, season, mode) ratings kept.
pub const RATING_CACHE_CAPACITY: usize = 200_000;
/// Default time a rating is kept without being refreshed from the store.
pub const RATING_CACHE_TTL: Duration = Duration::from_secs(60);
/// The running season is re-read at least this often (a season created by hand may start
/// before the cached one ends).
const SEASON_RECHECK: Duration = Duration::from_secs(5);

struct Cache {
    /// What `season_at` answered, and when it was asked.
    season: Option<(Option<SeasonSpan>, Instant)>,
    ratings: LruCache<RatingKey, CachedRating>,
    /// Bumped by every commit: a lookup that saw it change while reading the store may
    /// have read a rating from before the commit, and does not keep it.
    commits: u64,
}

/// The part of a season lookups need.
#[derive(Clone, Copy, Debug)]
struct SeasonSpan {
    id: u64,
    starts_at_ms: u64,
    ends_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RatingKey {
    account: AccountId,
    season: u64,
    mode: String,
}

#[derive(Clone, Copy, Debug)]
struct CachedRating {
    /// `None`: the player has no rating in that mode and season.
    mu: Option<f64>,
    /// Rated games behind `mu`; only a rating with more replaces it.
    games: u64,
    fetched_at: Instant,
}

impl StoreRatings {
    /// Production: ratings from `store`, `default` for unrated players, the cache at its
    /// default size and TTL.
    pub fn new(store: Arc<dyn Store>, default: f64) -> StoreRatings {
        StoreRatings {
            store,
            default,
            trust_token_mmr: false,
            ttl: RATING_CACHE_TTL,
            cache: Mutex::new(Cache { season: None, ratings: LruCache::new(RATING_CACHE_CAPACITY), commits: 0 }),
        }
    }

    /// Dev only: players with no stored rating queue at the `mmr` claim of their token.
    pub fn trusting_token_mmr(mut self) -> StoreRatings {
        self.trust_token_mmr = true;
        self
    }

    /// Keeps at most `capacity` ratings (at least one), each for at most `ttl` (zero:
    /// every lookup reads the store).
    pub fn with_cache(mut self, capacity: usize, ttl: Duration) -> StoreRatings {
        self.ttl = ttl;
        self.lock().ratings = LruCache::new(capacity.max(1));
        self
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // The cache holds copies only: whatever a panicking holder left is safe to reuse.
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The id of the season running at `now_ms`, if one is.
    async fn season(&self, now_ms: u64) -> Result<Option<u64>, RatingError> {
        if let Some((season, checked_at)) = self.lock().season {
            let still_running = season.is_none_or(|s| s.starts_at_ms <= now_ms && now_ms < s.ends_at_ms);
            if still_running && checked_at.elapsed() < SEASON_RECHECK.min(self.ttl) {
                return Ok(season.map(|s| s.id));
            }
        }
        let asked_at = Instant::now();
        let season = self.store.season_at(now_ms).await.map_err(store_failed)?;
        let span = season.map(|s| SeasonSpan { id: s.id, starts_at_ms: s.starts_at_ms, ends_at_ms: s.ends_at_ms });
        self.lock().season = Some((span, asked_at));
        Ok(span.map(|s| s.id))
    }

    async fn stored(&self, key: RatingKey) -> Result<Option<f64>, RatingError> {
        let commits = {
            let mut cache = self.lock();
            if let Some(hit) = cache.ratings.get(&key)
                && hit.fetched_at.elapsed() < self.ttl
            {
                metrics::counter!("rally_edge_rating_lookups_total", "source" => "cache").increment(1);
                return Ok(hit.mu);
            }
            cache.commits
        };
        metrics::counter!("rally_edge_rating_lookups_total", "source" => "store").increment(1);
        let fetched_at = Instant::now();
        let rating = self.store.rating(key.account, &key.mode, key.season).await.map_err(store_failed)?;
        let fetched = CachedRating {
            mu: rating.as_ref().map(|r| r.mu),
            games: rating.as_ref().map_or(0, |r| r.games),
            fetched_at,
        };
        let mut cache = self.lock();
        if cache.commits == commits && !self.ttl.is_zero() {
            match cache.ratings.peek_mut(&key) {
                // Another lookup of the same key may have finished first with a newer read.
                Some(cached) if cached.games > fetched.games => {}
                Some(cached) => *cached = fetched,
                None => {
                    cache.ratings.insert(key, fetched);
                }
            }
        }
        Ok(fetched.mu)
    }
}

fn store_failed(e: rally_persistence::StoreError) -> RatingError {
    RatingError(e.to_string())
}

impl RatingSource for StoreRatings {
    fn rating<'a>(&'a self, player: u64, mode: &'a str, token_mmr: Option<f64>) -> RatingFuture<'a> {
        Box::pin(async move {
            let stored = match self.season(rally_sessions::now_ms()).await? {
                Some(season) => self.stored(RatingKey { account: player, season, mode: mode.to_owned() }).await?,
                None => None,
            };
            Ok(match (stored, token_mmr) {
                // The engine matches on a non-negative scale; a long losing streak can
                // take mu below 0.
                (Some(mu), _) => mu.max(0.0),
                (None, Some(mmr)) if self.trust_token_mmr => mmr,
                (None, _) => self.default,
            })
        })
    }
}

#[async_trait::async_trait]
impl CommitListener for StoreRatings {
    async fn committed(&self, matches: &[MatchRecord]) {
        let mut cache = self.lock();
        cache.commits += 1;
        let now = Instant::now();
        for m in matches {
            // A result for another season than the cached one (none, or one that ended):
            // the season changed, so ask again.
            if cache.season.is_some_and(|(season, _)| season.is_none_or(|s| s.id != m.season_id)) {
                cache.season = None;
            }
            let mut key = RatingKey { account: 0, season: m.season_id, mode: m.mode.clone() };
            for p in &m.players {
                key.account = p.account_id;
                // Only ratings someone looked up are kept; the rest are read when needed.
                if let Some(cached) = cache.ratings.peek_mut(&key)
                    && p.games > cached.games
                {
                    *cached = CachedRating { mu: Some(p.mu_after), games: p.games, fetched_at: now };
                }
            }
        }
    }
}
