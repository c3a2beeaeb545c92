//! `StoreRatings` against a real (SQLite) store: where ratings come from, and how its
//! in-memory copies stay true.

use std::sync::Arc;
use std::time::Duration;

use rally_edge::{RatingSource, StoreRatings};
use rally_persistence::{
    Account, AccountId, CommitListener, HistoryEntry, HistoryQuery, MatchRecord, NewAccount, NewRefreshToken,
    PlayerResult, Profile, ProfilePatch, RatedPlayer, Rating, Rotation, Season, SqlStore, Store, StoreConfig,
    StoreError, WriteBehind, WriteBehindConfig,
};

/// A fresh SQLite store under a directory of its own, with `accounts` accounts.
async fn store_with_accounts(name: &str, accounts: usize) -> (Arc<dyn Store>, Vec<AccountId>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("rally-edge-ratings-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = SqlStore::connect(&StoreConfig::new(format!("sqlite://{}/r.db", dir.display()))).await.unwrap();
    store.migrate().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..accounts {
        let account = store
            .create_account(NewAccount {
                username: format!("player{n}"),
                email: format!("player{n}@example.com"),
                password_hash: "x".into(),
                display_name: format!("Player {n}"),
                now_ms: 0,
            })
            .await
            .unwrap();
        ids.push(account.id);
    }
    (Arc::new(store), ids, dir)
}

/// A stored duel result in `season_id`.
fn duel_result(match_id: u64, season_id: u64, players: Vec<PlayerResult>) -> MatchRecord {
    MatchRecord {
        match_id,
        mode: "duel".into(),
        season_id,
        datacenter: "eu-west".into(),
        formed_at_ms: 1,
        finished_at_ms: 2,
        players,
    }
}

fn rating(account: AccountId, season_id: u64, mu: f64, games: u64) -> Rating {
    Rating { account_id: account, mode: "duel".into(), season_id, mu, sigma: 90.0, games, updated_at_ms: 1 }
}

#[tokio::test]
async fn ratings_come_from_the_current_season_then_the_fallbacks() {
    let (store, accounts, dir) = store_with_accounts("sources", 1).await;
    let account = accounts[0];
    // No caching: every lookup reads the store.
    let production = StoreRatings::new(store.clone(), 1500.0).with_cache(16, Duration::ZERO);
    let dev = StoreRatings::new(store.clone(), 1500.0).trusting_token_mmr().with_cache(16, Duration::ZERO);

    // No season yet: the default, or in dev the token's rating.
    assert_eq!(
        production.rating(account, "duel", Some(2400.0)).await.unwrap(),
        1500.0,
        "tokens never set ratings in production"
    );
    assert_eq!(dev.rating(account, "duel", Some(2400.0)).await.unwrap(), 2400.0);

    let season = store.create_season("now", 0, u64::MAX / 2).await.unwrap();
    store.put_ratings(&[rating(account, season.id, 1810.0, 12)]).await.unwrap();
    assert_eq!(production.rating(account, "duel", Some(2400.0)).await.unwrap(), 1810.0);
    assert_eq!(dev.rating(account, "duel", Some(2400.0)).await.unwrap(), 1810.0, "a stored rating wins in dev too");
    assert_eq!(production.rating(account, "ffa", None).await.unwrap(), 1500.0, "per mode");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_cached_rating_changes_with_every_stored_result_and_only_then() {
    let (store, accounts, dir) = store_with_accounts("commits", 1).await;
    let alice = accounts[0];
    let season = store.create_season("now", 0, u64::MAX / 2).await.unwrap();
    store.put_ratings(&[rating(alice, season.id, 1810.0, 12)]).await.unwrap();
    let ratings = Arc::new(StoreRatings::new(store.clone(), 1500.0));
    let writer = WriteBehind::start(
        store.clone(),
        WriteBehindConfig::default(),
        vec![ratings.clone() as Arc<dyn CommitListener>],
    );
    assert_eq!(ratings.rating(alice, "duel", None).await.unwrap(), 1810.0);

    // A write the cache is not told of (another process, by hand) is not seen until the
    // entry expires: the lookup was answered from memory.
    store.put_ratings(&[rating(alice, season.id, 1200.0, 40)]).await.unwrap();
    assert_eq!(ratings.rating(alice, "duel", None).await.unwrap(), 1810.0, "served from the cache");

    // A result stored through the write-behind queue is: its rating replaces the copy.
    let result = |match_id, mu_after, games| {
        let player = PlayerResult {
            account_id: alice,
            team: 0,
            place: 1,
            mu_before: 1810.0,
            sigma_before: 90.0,
            mu_after,
            sigma_after: 88.0,
            games,
        };
        duel_result(match_id, season.id, vec![player])
    };
    writer.submit(result(1, 1835.0, 41)).unwrap();
    writer.flush().await.unwrap();
    assert_eq!(ratings.rating(alice, "duel", None).await.unwrap(), 1835.0);
    // A result with fewer games (replayed, or stored out of order) never moves it back.
    ratings.committed(&[result(2, 1700.0, 13)]).await;
    assert_eq!(ratings.rating(alice, "duel", None).await.unwrap(), 1835.0);
    writer.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn cached_ratings_expire_and_give_way_past_the_capacity() {
    let (store, accounts, dir) = store_with_accounts("bounds", 3).await;
    let (alice, bob, carol) = (accounts[0], accounts[1], accounts[2]);
    let season = store.create_season("now", 0, u64::MAX / 2).await.unwrap();

    // The TTL is long enough for the lookups in between on a loaded machine.
    let short_lived = StoreRatings::new(store.clone(), 1500.0).with_cache(16, Duration::from_secs(1));
    assert_eq!(short_lived.rating(alice, "duel", None).await.unwrap(), 1500.0);
    store.put_ratings(&[rating(alice, season.id, 1650.0, 3)]).await.unwrap();
    assert_eq!(short_lived.rating(alice, "duel", None).await.unwrap(), 1500.0, "not expired yet");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(short_lived.rating(alice, "duel", None).await.unwrap(), 1650.0, "expired, read again");

    // Two entries, least recently used out first: Alice, Bob, Alice again, then Carol
    // pushes Bob out, not Alice.
    let small = StoreRatings::new(store.clone(), 1500.0).with_cache(2, Duration::from_secs(60));
    assert_eq!(small.rating(alice, "duel", None).await.unwrap(), 1650.0);
    assert_eq!(small.rating(bob, "duel", None).await.unwrap(), 1500.0);
    assert_eq!(small.rating(alice, "duel", None).await.unwrap(), 1650.0);
    assert_eq!(small.rating(carol, "duel", None).await.unwrap(), 1500.0);
    store.put_ratings(&[rating(alice, season.id, 1700.0, 4), rating(bob, season.id, 1400.0, 1)]).await.unwrap();
    assert_eq!(small.rating(alice, "duel", None).await.unwrap(), 1650.0, "still cached");
    assert_eq!(small.rating(bob, "duel", None).await.unwrap(), 1400.0, "evicted, read again");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_cached_season_gives_way_to_the_next_when_it_ends_or_a_result_names_another() {
    let (store, accounts, dir) = store_with_accounts("seasons", 1).await;
    let alice = accounts[0];
    let now = rally_sessions::now_ms();
    // The first season ends a second from now and the next follows it.
    let first = store.create_season("first", 0, now + 1_000).await.unwrap();
    let second = store.create_season("second", now + 1_000, u64::MAX / 2).await.unwrap();
    store.put_ratings(&[rating(alice, first.id, 1900.0, 30), rating(alice, second.id, 1550.0, 2)]).await.unwrap();
    let ratings = StoreRatings::new(store.clone(), 1500.0);
    assert_eq!(ratings.rating(alice, "duel", None).await.unwrap(), 1900.0);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(ratings.rating(alice, "duel", None).await.unwrap(), 1550.0, "the next season's rating");

    // No season at first: a stored result for one tells the cache to look again, well
    // before its periodic re-read.
    let (store, accounts, dir2) = store_with_accounts("seasons-opened", 1).await;
    let alice = accounts[0];
    let ratings = StoreRatings::new(store.clone(), 1500.0);
    assert_eq!(ratings.rating(alice, "duel", None).await.unwrap(), 1500.0, "no season yet");
    let opened = store.create_season("opened", 0, u64::MAX / 2).await.unwrap();
    store.put_ratings(&[rating(alice, opened.id, 1620.0, 1)]).await.unwrap();
    assert_eq!(ratings.rating(alice, "duel", None).await.unwrap(), 1500.0, "the cached answer: no season");
    ratings.committed(&[duel_result(1, opened.id, Vec::new())]).await;
    assert_eq!(ratings.rating(alice, "duel", None).await.unwrap(), 1620.0);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&dir2).unwrap();
}

/// A store whose first `rating` reads, then waits for the test to let it answer: a lookup
/// that read before a commit and answers after it. Later calls pass straight through.
struct GatedStore {
    inner: Arc<dyn Store>,
    gated: std::sync::atomic::AtomicBool,
    read_done: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Store for GatedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn create_account(&self, new: NewAccount) -> Result<Account, StoreError> {
        self.inner.create_account(new).await
    }
    async fn account_by_login(&self, login: &str) -> Result<Option<Account>, StoreError> {
        self.inner.account_by_login(login).await
    }
    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        self.inner.account(id).await
    }
    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<(), StoreError> {
        self.inner.insert_refresh_token(token).await
    }
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new: NewRefreshToken,
        now_ms: u64,
    ) -> Result<Rotation, StoreError> {
        self.inner.rotate_refresh_token(old_hash, new, now_ms).await
    }
    async fn revoke_family(&self, family: &str, now_ms: u64) -> Result<(), StoreError> {
        self.inner.revoke_family(family, now_ms).await
    }
    async fn profile(&self, account: AccountId) -> Result<Option<Profile>, StoreError> {
        self.inner.profile(account).await
    }
    async fn update_profile(
        &self,
        account: AccountId,
        patch: ProfilePatch,
        now_ms: u64,
    ) -> Result<Profile, StoreError> {
        self.inner.update_profile(account, patch, now_ms).await
    }
    async fn create_season(&self, name: &str, starts_at_ms: u64, ends_at_ms: u64) -> Result<Season, StoreError> {
        self.inner.create_season(name, starts_at_ms, ends_at_ms).await
    }
    async fn season_at(&self, now_ms: u64) -> Result<Option<Season>, StoreError> {
        self.inner.season_at(now_ms).await
    }
    async fn season(&self, name: &str) -> Result<Option<Season>, StoreError> {
        self.inner.season(name).await
    }
    async fn rating(&self, account: AccountId, mode: &str, season_id: u64) -> Result<Option<Rating>, StoreError> {
        let read = self.inner.rating(account, mode, season_id).await;
        if self.gated.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.read_done.notify_one();
            self.release.notified().await;
        }
        read
    }
    async fn put_ratings(&self, ratings: &[Rating]) -> Result<(), StoreError> {
        self.inner.put_ratings(ratings).await
    }
    async fn recent_seasons(&self, now_ms: u64, limit: u32) -> Result<Vec<Season>, StoreError> {
        self.inner.recent_seasons(now_ms, limit).await
    }
    async fn record_matches(&self, matches: &[MatchRecord]) -> Result<u64, StoreError> {
        self.inner.record_matches(matches).await
    }
    async fn match_history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        self.inner.match_history(query).await
    }
    async fn leaderboard(
        &self,
        season_id: u64,
        mode: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<RatedPlayer>, StoreError> {
        self.inner.leaderboard(season_id, mode, offset, limit).await
    }
    async fn leaderboard_rank(
        &self,
        season_id: u64,
        mode: &str,
        account: AccountId,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.leaderboard_rank(season_id, mode, account).await
    }
    async fn display_names(&self, accounts: &[AccountId]) -> Result<Vec<(AccountId, String)>, StoreError> {
        self.inner.display_names(accounts).await
    }
}

#[tokio::test]
async fn a_lookup_that_read_before_a_commit_does_not_keep_what_it_read() {
    let (store, accounts, dir) = store_with_accounts("race", 1).await;
    let alice = accounts[0];
    let season = store.create_season("now", 0, u64::MAX / 2).await.unwrap();
    store.put_ratings(&[rating(alice, season.id, 1810.0, 12)]).await.unwrap();
    let gated = Arc::new(GatedStore {
        inner: store.clone(),
        gated: std::sync::atomic::AtomicBool::new(true),
        read_done: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let ratings = Arc::new(StoreRatings::new(gated.clone(), 1500.0));

    // The lookup reads 1810 and waits; meanwhile a result (13 games, 1835) is stored and
    // its commit heard of, while nothing is cached yet for the listener to update.
    let lookup = tokio::spawn({
        let ratings = ratings.clone();
        async move { ratings.rating(alice, "duel", None).await.unwrap() }
    });
    gated.read_done.notified().await;
    store.put_ratings(&[rating(alice, season.id, 1835.0, 13)]).await.unwrap();
    ratings.committed(&[duel_result(1, season.id, Vec::new())]).await;
    gated.release.notify_one();
    assert_eq!(lookup.await.unwrap(), 1810.0, "it answers with what it read");

    // It did not cache that: the next lookup reads the store again and sees the result.
    assert_eq!(ratings.rating(alice, "duel", None).await.unwrap(), 1835.0);
    std::fs::remove_dir_all(&dir).unwrap();
}
