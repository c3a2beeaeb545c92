//! The game loop's services behind the routes: game-server sessions, results rated into
//! new skills, the write-behind queue that stores them, the current season, and the
//! leaderboard they are read from.
//!
//! Ratings are read and changed through [`RatingBook`], an in-memory map of the ratings
//! results touched: the write-behind queue may hold a player's last result for up to a
//! flush interval, so the store alone could hand a second result a rating that is one
//! match old. An entry stays in the book until every write it is waiting for has
//! committed; only then may it be evicted and read from the store again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rally_engine::{RateError, RatingModel, Skill};
use rally_persistence::{
    AccountId, CommitListener, Leaderboard, MatchRecord, PlayerResult, Season, Store, StoreError, SubmitError,
    WriteBehind, WriteBehindConfig, WriteBehindReport,
};
use rally_sessions::{Session, SessionDirectory};

/// Settings of the game loop.
#[derive(Clone, Debug)]
pub struct GameConfig {
    /// The secret game servers present to register (`Authorization: Bearer …`); `None`
    /// turns registration off.
    pub server_key: Option<String>,
    /// Mode names from the rules (history and leaderboard filters are checked against
    /// them); empty accepts any.
    pub modes: Vec<String>,
    /// Datacenter names from the rules (servers register in one of them); empty accepts
    /// any.
    pub datacenters: Vec<String>,
    /// Length of a season; when one ends the next opens, back to back.
    pub season_length: Duration,
    /// The write-behind queue.
    pub write_behind: WriteBehindConfig,
    /// Ratings the book keeps in memory before evicting committed ones.
    pub rating_cache: usize,
}

impl Default for GameConfig {
    fn default() -> Self {
        GameConfig {
            server_key: None,
            modes: Vec::new(),
            datacenters: Vec::new(),
            season_length: Duration::from_secs(90 * 24 * 3600),
            write_behind: WriteBehindConfig::default(),
            rating_cache: 1_000_000,
        }
    }
}

/// The game loop's running services.
pub struct Game {
    pub(crate) config: GameConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sessions: Arc<SessionDirectory>,
    pub(crate) leaderboard: Arc<dyn Leaderboard>,
    pub(crate) seasons: SeasonClock,
    pub(crate) book: Arc<RatingBook>,
    pub(crate) model: RatingModel,
    writer: WriteBehind,
    expiry: tokio::task::JoinHandle<()>,
}

impl Game {
    /// Starts the write-behind worker and the session-expiry loop on the current runtime.
    /// `leaderboard` hears of every commit (a Redis one keeps itself current that way), and
    /// so do `also` (the edge's rating cache), before it.
    pub fn start(
        config: GameConfig,
        store: Arc<dyn Store>,
        sessions: Arc<SessionDirectory>,
        leaderboard: Arc<dyn Leaderboard>,
        also: Vec<Arc<dyn CommitListener>>,
    ) -> Game {
        let book = Arc::new(RatingBook::new(config.rating_cache));
        // The leaderboard last: a Redis one may wait seconds on a slow server, and caches
        // must not serve old ratings meanwhile.
        let mut listeners: Vec<Arc<dyn CommitListener>> = vec![book.clone()];
        listeners.extend(also);
        listeners.push(leaderboard.clone());
        let writer = WriteBehind::start(store.clone(), config.write_behind.clone(), listeners);
        let expiry = tokio::spawn(expire_sessions(sessions.clone()));
        Game {
            seasons: SeasonClock::new(store.clone(), config.season_length),
            config,
            store,
            sessions,
            leaderboard,
            book,
            model: RatingModel::default(),
            writer,
            expiry,
        }
    }

    /// Waits until every result accepted so far is in the store.
    pub async fn flush(&self) {
        let _ = self.writer.flush().await;
    }

    /// Stops taking results and writes every one accepted.
    pub async fn shutdown(&self) -> WriteBehindReport {
        self.expiry.abort();
        self.writer.shutdown().await
    }

    /// Rates a session's result and queues it for the store. The ratings it produced, in
    /// the session's team order.
    pub(crate) async fn record(&self, session: &Session, placements: &[u32]) -> Result<Recorded, RecordError> {
        let now_ms = crate::auth::now_ms();
        let season = self.seasons.current(now_ms).await?;
        let keys: Vec<RatingKey> = session
            .teams
            .iter()
            .flatten()
            .map(|&player| RatingKey { account: player, mode: session.mode.clone(), season: season.id })
            .collect();
        // Ratings the book lacks are read first, without its lock; if one is evicted
        // before the lock is taken, it is read again (the store had caught up with it).
        let mut fetched = Vec::new();
        for _ in 0..3 {
            for key in self.book.missing(&keys) {
                let stored = self.store.rating(key.account, &key.mode, key.season).await?;
                let entry = stored.map_or(Entry::new(self.model.initial(), 0), |r| {
                    Entry::new(Skill { mu: r.mu, sigma: r.sigma }, r.games)
                });
                fetched.push((key, entry));
            }
            if self.book.fill(std::mem::take(&mut fetched), &keys) {
                break;
            }
        }
        self.book.rate(&self.model, session, placements, &keys, |before, after| {
            let players = before
                .iter()
                .zip(after)
                .zip(&keys)
                .map(|((b, a), key)| PlayerResult {
                    account_id: key.account,
                    team: a.team,
                    place: placements[usize::from(a.team)].min(u32::from(u16::MAX)) as u16,
                    mu_before: b.skill.mu,
                    sigma_before: b.skill.sigma,
                    mu_after: a.skill.mu,
                    sigma_after: a.skill.sigma,
                    games: a.games,
                })
                .collect();
            let record = MatchRecord {
                match_id: session.match_id,
                mode: session.mode.clone(),
                season_id: season.id,
                datacenter: session.datacenter.clone(),
                formed_at_ms: session.formed_at_ms,
                finished_at_ms: now_ms,
                players,
            };
            self.writer.submit(record.clone()).map(|()| Recorded { season: season.clone(), record })
        })
    }
}

/// Every second: fail the sessions whose heartbeats stopped, and publish the counts.
async fn expire_sessions(sessions: Arc<SessionDirectory>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        for failed in sessions.expire() {
            metrics::counter!("rally_sessions_failed_total").increment(1);
            tracing::warn!(
                match_id = failed.match_id,
                server_id = failed.server_id,
                "session failed: its server stopped heartbeating"
            );
        }
        let (servers, playing) = sessions.lock().counts();
        metrics::gauge!("rally_game_servers").set(servers as f64);
        metrics::gauge!("rally_sessions_active").set(playing as f64);
    }
}

/// A rated result, queued for the store.
pub(crate) struct Recorded {
    pub season: Season,
    pub record: MatchRecord,
}

/// Why a result could not be recorded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rate(#[from] RateError),
    #[error(transparent)]
    Queue(#[from] SubmitError),
}

/// Which rating: a player's in one mode and season.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RatingKey {
    account: AccountId,
    mode: String,
    season: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    skill: Skill,
    games: u64,
    /// Writes of this rating queued and not yet committed.
    pending: u32,
    /// Last read or change: recently used entries are not evicted, so a result that read
    /// the store just before another one's write committed cannot put the older rating
    /// back.
    touched: std::time::Instant,
}

impl Entry {
    fn new(skill: Skill, games: u64) -> Entry {
        Entry { skill, games, pending: 0, touched: std::time::Instant::now() }
    }
}

/// How long an entry stays after its last use before it may be evicted.
const KEEP_TOUCHED: Duration = Duration::from_secs(10);

/// One player's rating after a match, with their team.
#[derive(Clone, Copy, Debug)]
struct Rated {
    skill: Skill,
    games: u64,
    team: u16,
}

/// The ratings results are computed from (see the module doc).
pub(crate) struct RatingBook {
    entries: Mutex<HashMap<RatingKey, Entry>>,
    capacity: usize,
}

impl RatingBook {
    fn new(capacity: usize) -> RatingBook {
        RatingBook { entries: Mutex::new(HashMap::new()), capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RatingKey, Entry>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The keys not in the book.
    fn missing(&self, keys: &[RatingKey]) -> Vec<RatingKey> {
        let entries = self.lock();
        keys.iter().filter(|k| !entries.contains_key(k)).cloned().collect()
    }

    /// Adds ratings read from the store, unless a result put newer ones in meanwhile;
    /// whether every key in `keys` is now present.
    fn fill(&self, fetched: Vec<(RatingKey, Entry)>, keys: &[RatingKey]) -> bool {
        let mut entries = self.lock();
        for (key, entry) in fetched {
            entries.entry(key).or_insert(entry).touched = std::time::Instant::now();
        }
        keys.iter().all(|k| entries.contains_key(k))
    }

    /// Rates a result under the book's lock and hands the new ratings to `queue`; only
    /// if it succeeds does the book take them, so a refused result changes nothing.
    fn rate<T, E>(
        &self,
        model: &RatingModel,
        session: &Session,
        placements: &[u32],
        keys: &[RatingKey],
        queue: impl FnOnce(&[Entry], &[Rated]) -> Result<T, E>,
    ) -> Result<T, RecordError>
    where
        RecordError: From<E>,
    {
        let mut entries = self.lock();
        let Some(before) = keys.iter().map(|k| entries.get(k).copied()).collect::<Option<Vec<Entry>>>() else {
            // Evicted three times over between reading and rating: the book is thrashing.
            return Err(RecordError::Store(StoreError::Invalid("rating cache too small for the load")));
        };
        let mut at = 0;
        let teams: Vec<Vec<Skill>> = session
            .teams
            .iter()
            .map(|team| {
                let skills = before[at..at + team.len()].iter().map(|e| e.skill).collect();
                at += team.len();
                skills
            })
            .collect();
        let refs: Vec<&[Skill]> = teams.iter().map(Vec::as_slice).collect();
        let rated = model.rate(&refs, placements)?;
        let after: Vec<Rated> = rated
            .iter()
            .enumerate()
            .flat_map(|(team, skills)| skills.iter().map(move |&skill| (team as u16, skill)))
            .zip(&before)
            .map(|((team, skill), b)| Rated { skill, games: b.games + 1, team })
            .collect();
        let queued = queue(&before, &after)?;
        for (key, a) in keys.iter().zip(&after) {
            let entry = entries.get_mut(key).expect("present under this lock");
            entry.skill = a.skill;
            entry.games = a.games;
            entry.pending += 1;
            entry.touched = std::time::Instant::now();
        }
        Ok(queued)
    }
}

#[async_trait::async_trait]
impl CommitListener for RatingBook {
    async fn committed(&self, matches: &[MatchRecord]) {
        let mut entries = self.lock();
        for m in matches {
            for p in &m.players {
                let key = RatingKey { account: p.account_id, mode: m.mode.clone(), season: m.season_id };
                if let Some(entry) = entries.get_mut(&key) {
                    entry.pending = entry.pending.saturating_sub(1);
                }
            }
        }
        if entries.len() > self.capacity {
            // Down to three quarters, dropping only ratings the store has caught up with
            // and no result is using.
            let mut excess = entries.len() - self.capacity * 3 / 4;
            entries.retain(|_, e| {
                if excess > 0 && e.pending == 0 && e.touched.elapsed() > KEEP_TOUCHED {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

/// The season running now; when none is, the next one opens.
pub(crate) struct SeasonClock {
    store: Arc<dyn Store>,
    length_ms: u64,
    current: Mutex<Option<Season>>,
}

impl SeasonClock {
    fn new(store: Arc<dyn Store>, length: Duration) -> SeasonClock {
        SeasonClock { store, length_ms: (length.as_millis() as u64).max(1), current: Mutex::new(None) }
    }

    /// The season at `now_ms`, opening one if none runs: seasons follow each other back
    /// to back from the last one's end (the first starts now), named `s1`, `s2`, …
    pub(crate) async fn current(&self, now_ms: u64) -> Result<Season, StoreError> {
        let cached = self.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(season) = cached.filter(|s| s.starts_at_ms <= now_ms && now_ms < s.ends_at_ms) {
            return Ok(season);
        }
        let season = match self.store.season_at(now_ms).await? {
            Some(season) => season,
            None => self.open_next(now_ms).await?,
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(season.clone());
        Ok(season)
    }

    async fn open_next(&self, now_ms: u64) -> Result<Season, StoreError> {
        let earlier = self.store.recent_seasons(now_ms, u32::MAX).await?;
        let starts_at_ms = match earlier.first() {
            // The slot of the grid that continues the last season and holds `now`.
            Some(last) if last.ends_at_ms <= now_ms => {
                last.ends_at_ms + (now_ms - last.ends_at_ms) / self.length_ms * self.length_ms
            }
            _ => now_ms,
        };
        let name = format!("s{}", earlier.len() + 1);
        match self.store.create_season(&name, starts_at_ms, starts_at_ms + self.length_ms).await {
            Ok(season) => {
                tracing::info!(season = season.name, starts_at_ms, ends_at_ms = season.ends_at_ms, "season opened");
                Ok(season)
            }
            // Another node (or request) opened it first.
            Err(StoreError::Conflict { .. }) => {
                self.store.season_at(now_ms).await?.ok_or(StoreError::NotFound { what: "current season" })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rally_persistence::{SqlStore, StoreConfig};

    async fn store() -> (Arc<dyn Store>, std::path::PathBuf) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rally-seasons-{}-{n}", std::process::id()));
        let store = SqlStore::connect(&StoreConfig::new(format!("sqlite://{}/rally.db", dir.display()))).await.unwrap();
        store.migrate().await.unwrap();
        (Arc::new(store), dir)
    }

    #[tokio::test]
    async fn seasons_open_back_to_back_and_skip_the_ones_nobody_played() {
        let (store, dir) = store().await;
        let clock = SeasonClock::new(store.clone(), Duration::from_millis(1_000));
        let first = clock.current(10_000).await.unwrap();
        assert_eq!((first.name.as_str(), first.starts_at_ms, first.ends_at_ms), ("s1", 10_000, 11_000));
        assert_eq!(clock.current(10_999).await.unwrap(), first, "still running");
        // The first ends: the next starts where it ended.
        let second = clock.current(11_000).await.unwrap();
        assert_eq!((second.name.as_str(), second.starts_at_ms, second.ends_at_ms), ("s2", 11_000, 12_000));
        // Nothing for a while: the next season is the slot of the grid that holds now.
        let third = clock.current(15_500).await.unwrap();
        assert_eq!((third.name.as_str(), third.starts_at_ms, third.ends_at_ms), ("s3", 15_000, 16_000));
        // Another clock (another node) finds the season already open.
        let other = SeasonClock::new(store.clone(), Duration::from_millis(1_000));
        assert_eq!(other.current(15_600).await.unwrap(), third);
        assert_eq!(store.recent_seasons(20_000, 10).await.unwrap().len(), 3);
        let _ = std::fs::remove_dir_all(dir);
    }
}
