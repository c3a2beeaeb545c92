//! Write-behind throughput and result visibility, against a real database.
//!
//! `cargo bench -p rally-persistence --bench write_behind -- [--seconds 30] [--rate ROWS_PER_S]
//! [--leaderboard store|redis] [--url postgres://…] [--redis redis://…] [--players N]`
//!
//! Makes a scratch database (`rally_bench_wb_PID`, dropped after) with `--players`
//! accounts, then for `--seconds` submits rated matches (1v1, 3v3, 5v5 and 8-player
//! free-for-all, so 6.5 player rows per match on average) at `--rate` player rows per
//! second (0: as fast as the queue takes them, i.e. the sustained maximum). Every 20 ms a
//! probe match with two players of their own goes in too, and one reader polls the
//! leaderboard (oldest probe first) until the probe's new rating shows: the time from
//! submission is the result's visibility.
//! Prints rows/s committed, queue lag and visibility percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rally_persistence::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

struct Args {
    seconds: u64,
    rate: f64,
    leaderboard: String,
    url: String,
    redis: String,
    players: u64,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 30,
        rate: 0.0,
        leaderboard: "store".into(),
        url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        redis: "redis://127.0.0.1:6379".into(),
        players: 200_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => a.seconds = value().parse().expect("--seconds N"),
            "--rate" => a.rate = value().parse().expect("--rate ROWS_PER_S"),
            "--leaderboard" => a.leaderboard = value(),
            "--url" => a.url = value(),
            "--redis" => a.redis = value(),
            "--players" => a.players = value().parse().expect("--players N"),
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    assert!(matches!(a.leaderboard.as_str(), "store" | "redis"), "--leaderboard store|redis");
    a
}

const MODES: [(&str, usize, usize); 4] = [("duel-1v1", 2, 1), ("trio-3v3", 2, 3), ("squad-5v5", 2, 5), ("ffa-8", 8, 1)];

fn main() {
    let args = args();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(run(args));
}

async fn run(args: Args) {
    let name = format!("rally_bench_wb_{}", std::process::id());
    let admin = SqlStore::connect(&StoreConfig::new(&args.url)).await.expect("database reachable");
    let scratch_url = if admin.backend() == Backend::Postgres {
        admin.execute_admin(&format!("CREATE DATABASE {name}")).await.unwrap();
        format!("{}/{name}", args.url.rsplit_once('/').unwrap().0)
    } else {
        format!("sqlite://{}/{name}/rally.db", std::env::temp_dir().display())
    };
    let store = Arc::new(SqlStore::connect(&StoreConfig::new(&scratch_url)).await.unwrap());
    store.migrate().await.unwrap();
    // Accounts in bulk, ids 1..=players (plus two per probe after them).
    let n_accounts = args.players + 2 * (args.seconds * 50 + 100);
    let (series, bulk) = match store.backend() {
        Backend::Postgres => ("generate_series(1, $N) g", "g"),
        Backend::Sqlite => {
            ("(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $N) SELECT g FROM s)", "g")
        }
    };
    let series = series.replace("$N", &n_accounts.to_string());
    store
        .execute_admin(&format!(
            "INSERT INTO accounts (username, email, password_hash, created_at_ms) \
             SELECT 'p' || {bulk}, 'p' || {bulk} || '@bench', 'x', 0 FROM {series}"
        ))
        .await
        .unwrap();
    store
        .execute_admin(
            "INSERT INTO profiles (account_id, display_name, preferred_region, preferences, updated_at_ms) \
             SELECT id, username, NULL, '{}', 0 FROM accounts",
        )
        .await
        .unwrap();
    let season = store.create_season("bench", 0, u64::MAX / 4).await.unwrap().id;
    let dyn_store: Arc<dyn Store> = store.clone();
    let board: Arc<dyn Leaderboard> = match args.leaderboard.as_str() {
        "redis" => Arc::new(
            RedisLeaderboard::connect(&args.redis, &format!("{name}:"), dyn_store.clone())
                .await
                .expect("redis reachable"),
        ),
        _ => Arc::new(StoreLeaderboard::new(dyn_store.clone())),
    };
    let listeners: Vec<Arc<dyn CommitListener>> = vec![board.clone()];
    let writer = Arc::new(WriteBehind::start(dyn_store.clone(), WriteBehindConfig::default(), listeners));
    println!(
        "write-behind bench: {:?}, {} players, leaderboard {}, rate {}, {} s",
        store.backend(),
        args.players,
        args.leaderboard,
        if args.rate > 0.0 { format!("{} rows/s", args.rate) } else { "unbounded".into() },
        args.seconds
    );

    let started = Instant::now();
    let run_for = Duration::from_secs(args.seconds);
    let probes = tokio::spawn(probe(writer.clone(), board.clone(), season, args.players + 1, started + run_for));
    let mut rng = SmallRng::seed_from_u64(7);
    let mut games = vec![0u64; args.players as usize + 1];
    let mut next_match = 1u64;
    let mut submitted_rows = 0u64;
    while started.elapsed() < run_for {
        if args.rate > 0.0 {
            let due = (started.elapsed().as_secs_f64() * args.rate) as u64;
            if submitted_rows >= due {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
        }
        let (mode, teams, size) = MODES[rng.random_range(0..MODES.len())];
        let players = (0..teams * size)
            .map(|slot| {
                let account_id = rng.random_range(1..=args.players);
                games[account_id as usize] += 1;
                let team = (slot / size) as u16;
                PlayerResult {
                    account_id,
                    team,
                    place: team + 1,
                    mu_before: 1500.0,
                    sigma_before: 500.0,
                    mu_after: 1500.0 + rng.random_range(-100.0..100.0),
                    sigma_after: 400.0,
                    games: games[account_id as usize],
                }
            })
            .collect::<Vec<_>>();
        submitted_rows += players.len() as u64;
        let record = MatchRecord {
            match_id: next_match,
            mode: mode.into(),
            season_id: season,
            datacenter: "eu-west".into(),
            formed_at_ms: 0,
            finished_at_ms: started.elapsed().as_millis() as u64,
            players,
        };
        next_match += 1;
        writer.submit_waiting(record).await.unwrap();
    }
    let offered = started.elapsed();
    writer.flush().await.unwrap();
    let drained = started.elapsed();
    let visibility = probes.await.unwrap();
    let report = writer.shutdown().await;
    println!(
        "submitted {submitted_rows} rows in {:.1} s; all committed after {:.1} s",
        offered.as_secs_f64(),
        drained.as_secs_f64()
    );
    println!(
        "committed {} rows ({} matches): {:.0} rows/s over the whole run (submission until the last commit)",
        report.rows,
        report.matches,
        report.rows as f64 / drained.as_secs_f64()
    );
    println!(
        "result visible on the leaderboard ({} probes): p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        visibility.len(),
        visibility.value_at_quantile(0.5) as f64 / 1000.0,
        visibility.value_at_quantile(0.99) as f64 / 1000.0,
        visibility.max() as f64 / 1000.0
    );
    assert_eq!(report.rejected + report.lost, 0);
    store.close().await;
    if admin.backend() == Backend::Postgres {
        admin.execute_admin(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
    }
    admin.close().await;
}

/// Every 20 ms a duel between two fresh accounts; the time until the winner's new
/// rating shows on the leaderboard, in µs.
async fn probe(
    writer: Arc<WriteBehind>,
    board: Arc<dyn Leaderboard>,
    season: u64,
    first_account: u64,
    until: Instant,
) -> Histogram<u64> {
    let mut account = first_account;
    let mut match_id = u64::MAX / 2;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    // One checker, oldest probe first (commits come in submission order): one leaderboard
    // read at a time, so measuring does not load the database it measures.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, f64, Instant)>();
    let checker = tokio::spawn(async move {
        let mut visible = Histogram::<u64>::new(3).unwrap();
        while let Some((winner, expected, submitted)) = rx.recv().await {
            loop {
                if let Ok(Some(score)) = board.score(season, "duel-1v1", winner).await
                    && (score - (expected - 300.0)).abs() < 1e-6
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            visible.record(submitted.elapsed().as_micros() as u64).unwrap();
        }
        visible
    });
    while Instant::now() < until {
        tick.tick().await;
        let (winner, loser) = (account, account + 1);
        account += 2;
        match_id += 1;
        let line = |account_id, team, mu_after| PlayerResult {
            account_id,
            team,
            place: team + 1,
            mu_before: 1500.0,
            sigma_before: 500.0,
            mu_after,
            sigma_after: 100.0,
            games: 1,
        };
        let expected = 1700.0 + (winner % 1000) as f64 * 0.25;
        let record = MatchRecord {
            match_id,
            mode: "duel-1v1".into(),
            season_id: season,
            datacenter: "eu-west".into(),
            formed_at_ms: 0,
            finished_at_ms: 0,
            players: vec![line(winner, 0, expected), line(loser, 1, 1400.0)],
        };
        let submitted = Instant::now();
        writer.submit_waiting(record).await.unwrap();
        tx.send((winner, expected, submitted)).unwrap();
    }
    drop(tx);
    checker.await.unwrap()
}
