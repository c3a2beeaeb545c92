//! The write-behind worker and the leaderboards, against the real databases: SQLite and
//! Postgres for the worker, Redis (127.0.0.1:6379, `RALLY_TEST_REDIS_URL` overrides it)
//! for the production leaderboard. Each test has its own database and key prefix.

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cleanup, fresh, new_account, unique};
use rally_persistence::*;

const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";

per_backend!(
    batches_are_written_and_flush_waits_for_them,
    listeners_hear_of_a_commit_without_waiting_for_more_traffic,
    a_refused_match_is_dropped_and_the_rest_written,
    shutdown_writes_everything_queued,
    leaderboards_from_the_store_and_from_redis_agree,
);

/// Accounts `n`, one season, and `n / 2` duels between them (player `2k` beats `2k+1`).
async fn duels(store: &dyn Store, n: usize, first_match: u64) -> (Vec<AccountId>, u64, Vec<MatchRecord>) {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(store.create_account(new_account(&format!("p{first_match}x{i}"))).await.unwrap().id);
    }
    let season = match store.season("s").await.unwrap() {
        Some(s) => s.id,
        None => store.create_season("s", 0, u64::MAX / 4).await.unwrap().id,
    };
    let records = ids
        .chunks(2)
        .zip(first_match..)
        .map(|(pair, match_id)| {
            let line = |account_id, team, place, mu_after| PlayerResult {
                account_id,
                team,
                place,
                mu_before: 1500.0,
                sigma_before: 500.0,
                mu_after,
                sigma_after: 450.0,
                games: 1,
            };
            // Distinct ratings, so the order on every board is total.
            let gain = 10.0 + match_id as f64;
            MatchRecord {
                match_id,
                mode: "duel-1v1".into(),
                season_id: season,
                datacenter: "eu-west".into(),
                formed_at_ms: 1_000,
                finished_at_ms: 2_000 + match_id,
                players: vec![line(pair[0], 0, 1, 1500.0 + gain), line(pair[1], 1, 2, 1500.0 - gain)],
            }
        })
        .collect();
    (ids, season, records)
}

/// Remembers the match ids of every committed batch.
#[derive(Default)]
struct Committed(Mutex<Vec<u64>>);

#[async_trait::async_trait]
impl CommitListener for Committed {
    async fn committed(&self, matches: &[MatchRecord]) {
        self.0.lock().unwrap().extend(matches.iter().map(|m| m.match_id));
    }
}

async fn batches_are_written_and_flush_waits_for_them(store: Arc<SqlStore>) {
    let (ids, season, records) = duels(&*store, 200, 1).await;
    let committed = Arc::new(Committed::default());
    let config = WriteBehindConfig { max_batch_rows: 64, ..Default::default() };
    let writer = WriteBehind::start(store.clone(), config, vec![committed.clone()]);
    for r in records.clone() {
        writer.submit(r).unwrap();
    }
    // A replayed result changes nothing.
    writer.submit(records[0].clone()).unwrap();
    writer.flush().await.unwrap();
    assert_eq!(writer.depth(), 0);
    let mut seen = committed.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 101, "every match, the replay included, reached the listeners");
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (1..=100).collect::<Vec<_>>());
    let winner = store.rating(ids[0], "duel-1v1", season).await.unwrap().unwrap();
    assert_eq!((winner.mu, winner.games), (1511.0, 1));
    let history =
        store.match_history(&HistoryQuery { account_id: ids[199], mode: None, before: None, limit: 10 }).await.unwrap();
    assert_eq!(history.iter().map(|h| (h.match_id, h.place)).collect::<Vec<_>>(), [(100, 2)]);
    let report = writer.shutdown().await;
    assert_eq!(report, WriteBehindReport { matches: 101, rows: 200, rejected: 0, lost: 0 });
}

async fn listeners_hear_of_a_commit_without_waiting_for_more_traffic(store: Arc<SqlStore>) {
    let (_, _, records) = duels(&*store, 2, 1).await;
    let committed = Arc::new(Committed::default());
    let writer = WriteBehind::start(store.clone(), WriteBehindConfig::default(), vec![committed.clone()]);
    writer.submit(records[0].clone()).unwrap();
    // No flush, no further matches: the worker tells the listeners as soon as it commits.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while committed.0.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the listener never heard of the commit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer.shutdown().await;
}

async fn a_refused_match_is_dropped_and_the_rest_written(store: Arc<SqlStore>) {
    let (ids, season, mut records) = duels(&*store, 16, 1).await;
    records[5].players[1].account_id = 9_999_999;
    let writer = WriteBehind::start(store.clone(), WriteBehindConfig::default(), Vec::new());
    for r in records {
        writer.submit(r).unwrap();
    }
    writer.flush().await.unwrap();
    let report = writer.shutdown().await;
    assert_eq!((report.matches, report.rows, report.rejected), (7, 14, 1));
    assert!(store.rating(ids[10], "duel-1v1", season).await.unwrap().is_none(), "the refused match left nothing");
    assert!(store.rating(ids[12], "duel-1v1", season).await.unwrap().is_some());
}

async fn shutdown_writes_everything_queued(store: Arc<SqlStore>) {
    let (_, season, records) = duels(&*store, 400, 1).await;
    // A long gathering window: only shutdown ends it.
    let config = WriteBehindConfig { flush_interval: Duration::from_secs(600), ..Default::default() };
    let writer = WriteBehind::start(store.clone(), config, Vec::new());
    for r in records {
        writer.submit(r).unwrap();
    }
    let report = writer.shutdown().await;
    assert_eq!(report, WriteBehindReport { matches: 200, rows: 400, rejected: 0, lost: 0 });
    assert_eq!(store.leaderboard(season, "duel-1v1", 0, 1_000).await.unwrap().len(), 400);
    let (_, _, late) = duels(&*store, 2, 1_000).await;
    assert_eq!(writer.submit(late[0].clone()), Err(SubmitError::ShuttingDown));
    assert_eq!(writer.shutdown().await, WriteBehindReport::default());
}

#[tokio::test]
async fn a_full_queue_turns_submitters_away() {
    let fresh = fresh(Backend::Sqlite).await;
    let (_, _, records) = duels(&*fresh.store, 6, 1).await;
    let config = WriteBehindConfig { queue_capacity: 2, ..Default::default() };
    let writer = WriteBehind::start(fresh.store.clone(), config, Vec::new());
    // The worker has not run yet (this runtime has one thread and the test has not
    // yielded): two fit, the third is refused.
    writer.submit(records[0].clone()).unwrap();
    writer.submit(records[1].clone()).unwrap();
    assert_eq!(writer.submit(records[2].clone()), Err(SubmitError::Full));
    writer.submit_waiting(records[2].clone()).await.unwrap();
    assert_eq!(writer.shutdown().await.matches, 3);
    fresh.done().await;
}

#[tokio::test]
async fn a_database_that_goes_away_is_retried_until_it_returns() {
    let fresh = fresh(Backend::Postgres).await;
    let Cleanup::Database { admin_url, name } = &fresh.cleanup else { unreachable!("a Postgres store") };
    let (ids, season, records) = duels(&*fresh.store, 20, 1).await;
    let config = WriteBehindConfig {
        flush_interval: Duration::from_millis(10),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        ..Default::default()
    };
    let writer = WriteBehind::start(fresh.store.clone(), config, Vec::new());
    let outage = Outage::begin(admin_url, name).await;
    for r in records {
        writer.submit(r).unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), writer.flush()).await.is_err(),
        "nothing can be written while the database refuses connections"
    );
    outage.end().await;
    writer.flush().await.unwrap();
    assert_eq!(fresh.store.rating(ids[18], "duel-1v1", season).await.unwrap().unwrap().games, 1);
    assert_eq!(writer.shutdown().await, WriteBehindReport { matches: 10, rows: 20, rejected: 0, lost: 0 });
    fresh.done().await;
}

#[tokio::test]
async fn shutdown_gives_up_on_a_database_that_stays_down_and_says_what_it_lost() {
    let fresh = fresh(Backend::Postgres).await;
    let Cleanup::Database { admin_url, name } = &fresh.cleanup else { unreachable!("a Postgres store") };
    let (_, _, records) = duels(&*fresh.store, 20, 1).await;
    let config = WriteBehindConfig {
        flush_interval: Duration::from_millis(10),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_secs(5),
        shutdown_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let writer = WriteBehind::start(fresh.store.clone(), config, Vec::new());
    let outage = Outage::begin(admin_url, name).await;
    for r in records {
        writer.submit(r).unwrap();
    }
    // Batches already being retried stop at the shutdown deadline too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = tokio::time::timeout(Duration::from_secs(10), writer.shutdown()).await.expect("shutdown gives up");
    assert_eq!((report.matches, report.lost), (0, 10), "{report:?}");
    outage.end().await;
    fresh.done().await;
}

/// A Postgres test database shut for a while: no new connections, and the pool's cut.
struct Outage {
    admin: SqlStore,
    name: String,
}

impl Outage {
    async fn begin(admin_url: &str, name: &str) -> Outage {
        let admin = SqlStore::connect(&StoreConfig::new(admin_url)).await.unwrap();
        admin.execute_admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await.unwrap();
        let cut = format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'");
        admin.execute_admin(&cut).await.unwrap();
        Outage { admin, name: name.to_owned() }
    }

    async fn end(self) {
        self.admin.execute_admin(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name)).await.unwrap();
        self.admin.close().await;
    }
}

async fn redis_board(store: Arc<SqlStore>) -> (Arc<RedisLeaderboard>, String) {
    let url = std::env::var("RALLY_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS.to_owned());
    let prefix = format!("{}:", unique("rally_test"));
    let board = RedisLeaderboard::connect(&url, &prefix, store).await.unwrap_or_else(|e| {
        panic!(
            "Redis is not reachable at {url}: {e}. Start it with `redis-server --daemonize yes --bind 127.0.0.1 \
             --port 6379 --save \"\" --appendonly no`, or point RALLY_TEST_REDIS_URL at another server"
        )
    });
    (Arc::new(board), url)
}

async fn drop_keys(url: &str, keys: &[String]) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
}

async fn leaderboards_from_the_store_and_from_redis_agree(store: Arc<SqlStore>) {
    let (ids, season, records) = duels(&*store, 40, 1).await;
    let (redis, url) = redis_board(store.clone()).await;
    let key = redis.key(season, "duel-1v1");
    let listeners: Vec<Arc<dyn CommitListener>> = vec![redis.clone()];
    let writer = WriteBehind::start(store.clone(), WriteBehindConfig::default(), listeners);
    // Read before anything is rated: an empty board, built (and marked) from the store.
    assert!(redis.top(season, "duel-1v1", 0, 100).await.unwrap().is_empty());
    for r in records {
        writer.submit(r).unwrap();
    }
    writer.flush().await.unwrap();
    let embedded = StoreLeaderboard::new(store.clone());
    let from_store = embedded.top(season, "duel-1v1", 0, 100).await.unwrap();
    assert_eq!(from_store.len(), 40);
    // Winners by match id descending (bigger gains), then losers by match id ascending.
    assert_eq!(from_store[0].account_id, ids[38]);
    assert_eq!((from_store[0].rank, from_store[0].display_name.as_str()), (1, "P1X38"));
    assert_eq!(from_store[39].account_id, ids[39]);
    assert_eq!(redis.top(season, "duel-1v1", 0, 100).await.unwrap(), from_store);
    assert_eq!(redis.top(season, "duel-1v1", 5, 3).await.unwrap(), from_store[5..8]);

    let me = ids[1]; // lost match 1: best of the losers, rank 21
    let around = embedded.around(season, "duel-1v1", me, 2).await.unwrap().unwrap();
    assert_eq!(around.iter().map(|s| s.rank).collect::<Vec<_>>(), [19, 20, 21, 22, 23]);
    assert_eq!(around[2].account_id, me);
    assert_eq!(redis.around(season, "duel-1v1", me, 2).await.unwrap().unwrap(), around);
    assert_eq!(redis.around(season, "duel-1v1", 9_999_999, 2).await.unwrap(), None);
    assert_eq!(redis.score(season, "duel-1v1", me).await.unwrap(), Some(around[2].rating));
    assert_eq!(embedded.score(season, "duel-1v1", me).await.unwrap(), Some(around[2].rating));
    assert_eq!(redis.score(season, "duel-1v1", 9_999_999).await.unwrap(), None);
    assert_eq!(embedded.around(season, "duel-1v1", 9_999_999, 2).await.unwrap(), None);

    // Redis loses the set (eviction, a flush). A commit meanwhile puts its own players
    // back, but not the marker of a complete set: the next read rebuilds it whole from
    // the store, keeping the committed scores.
    drop_keys(&url, std::slice::from_ref(&key)).await;
    let (_, _, late) = duels(&*store, 2, 100).await;
    writer.submit(late[0].clone()).unwrap();
    writer.flush().await.unwrap();
    let rebuilt = redis.top(season, "duel-1v1", 0, 100).await.unwrap();
    assert_eq!(rebuilt.len(), 42);
    assert_eq!(rebuilt, embedded.top(season, "duel-1v1", 0, 100).await.unwrap());
    writer.shutdown().await;
    drop_keys(&url, &[key]).await;
}
