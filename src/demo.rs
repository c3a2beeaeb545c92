//! `rally demo`: the whole game loop in one process on embedded defaults. Bot players
//! (accounts in a scratch SQLite database) queue over QUIC, a few of them as parties over
//! the REST API; built-in game servers, one per datacenter, register, pick up their
//! sessions by heartbeat and report results decided by each bot's hidden skill; ratings
//! move, and the leaderboards are printed at the end.
//!
//! The game servers and party members call the admin API's router in process (the same
//! handlers, no socket): only wiring and a toy game live here.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use rally_admin::{Game, GameConfig, Lobby};
use rally_auth::{SigningKey, TokenIssuer};
use rally_client::Trust;
use rally_edge::StoreRatings;
use rally_engine::Rules;
use rally_loadgen::{LoadSpec, Snapshot};
use rally_persistence::{NewAccount, SqlStore, Store, StoreConfig, StoreLeaderboard};
use rally_sessions::{SessionConfig, SessionDirectory};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::serve::{
    DEFAULT_MMR, DemoArgs, LIVE_TICK_MS, Node, NodeServices, init_logs, random_key, rules, self_signed, tokio_runtime,
};

/// Bots that play in parties (squads of three), beside the solo bots.
const PARTY_BOTS: u64 = 6;

pub fn demo(args: DemoArgs) -> Result<()> {
    init_logs("warn");
    anyhow::ensure!(args.bots >= 2, "--bots must be at least 2");
    let rules = rules(args.modes.as_deref(), LIVE_TICK_MS)?;
    // A throwaway key and database: the demo's world lives and dies in this process.
    let key = SigningKey::generate();
    let dir = std::env::temp_dir().join(format!("rally-demo-{}", std::process::id()));
    let outcome = tokio_runtime()?.block_on(run(args, rules, key, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn run(args: DemoArgs, rules: Arc<Rules>, key: SigningKey, dir: &std::path::Path) -> Result<()> {
    let database = format!("sqlite://{}/rally.db", dir.display());
    let store = SqlStore::connect(&StoreConfig::new(&database)).await.context("opening the demo database")?;
    store.migrate().await?;
    let store = Arc::new(store);
    let shared: Arc<dyn Store> = store.clone();
    // Accounts 1..=bots play solo; the next PARTY_BOTS play in parties.
    let n_accounts = args.bots as u64 + PARTY_BOTS;
    for n in 1..=n_accounts {
        shared
            .create_account(NewAccount {
                username: format!("bot{n:04}"),
                email: format!("bot{n:04}@demo.invalid"),
                // Not a PHC string: nobody logs in as a bot.
                password_hash: "!".into(),
                display_name: format!("Bot {n:04}"),
                now_ms: rally_sessions::now_ms(),
            })
            .await?;
    }

    let sessions = Arc::new(SessionDirectory::new(SessionConfig::default()));
    let server_key = random_key();
    let game_config = GameConfig {
        server_key: Some(server_key.clone()),
        modes: rules.modes.iter().map(|m| m.name.clone()).collect(),
        datacenters: rules.datacenters.clone(),
        ..GameConfig::default()
    };
    let leaderboard = Arc::new(StoreLeaderboard::new(shared.clone()));
    // Bots queue at their stored ratings, which their results move (the cache hears of
    // every stored result).
    let ratings = Arc::new(StoreRatings::new(shared.clone(), DEFAULT_MMR));
    let game = Arc::new(Game::start(game_config, shared.clone(), sessions.clone(), leaderboard, vec![ratings.clone()]));
    let lobby = Lobby::shared(rules.clone(), sessions.clone(), game.clone());
    let issuer = Arc::new(TokenIssuer::new(key.clone()).with_ttl(Duration::from_secs(3600)));
    let mut admin_config = rally_admin::AdminConfig::new("127.0.0.1:0".parse().expect("literal"));
    // The demo's own game servers and squads share one "client": no limits between them.
    let unlimited = rally_admin::Rate::per_second(1_000_000, 1_000_000);
    admin_config.limits =
        rally_admin::RateLimits { per_ip: unlimited, login_per_ip: unlimited, per_account: unlimited };
    let state = rally_admin::AppState::new(
        admin_config,
        shared.clone(),
        TokenIssuer::new(key.clone()),
        game.clone(),
        lobby.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the admin API: {e}"))?;
    let api = rally_admin::router(state);

    let listen: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let services = NodeServices { ratings, sessions, lobby };
    let node = Node::start(rules.clone(), listen, &key, self_signed(listen)?, services, None)?;

    let servers = GameServers::register(&api, &server_key, &rules).await?;
    let stop = tokio_util_stop();
    let server_task = tokio::spawn(servers.play(api.clone(), stop.1.clone()));
    let party_task = tokio::spawn(parties(api.clone(), issuer.clone(), args.bots as u64 + 1, stop.1.clone()));

    let tokens = {
        let issuer = issuer.clone();
        Arc::new(move |player, _mmr| issuer.mint(player, None, SystemTime::now()))
    };
    let mut spec =
        LoadSpec::new(node.edge.local_addr(), Trust::Fingerprint(node.edge.fingerprint()), tokens, args.bots);
    spec.duration = Duration::from_secs(args.duration_s);
    spec.connect_rate = 500.0;
    spec.modes = rules.modes.iter().map(|m| m.name.clone()).collect();
    println!(
        "rally demo: engine, edge and admin API in one process; {} bots over QUIC ({} more in squads over REST), \
         one game server per datacenter, {} s, modes {}",
        args.bots,
        PARTY_BOTS,
        args.duration_s,
        spec.modes.join(", ")
    );
    let mut last = (Duration::ZERO, 0u64);
    let report = rally_loadgen::run(spec, |s: &Snapshot| {
        let dt = (s.elapsed - last.0).as_secs_f64().max(1e-9);
        let per_s = (s.matches - last.1) as f64 / dt;
        last = (s.elapsed, s.matches);
        println!(
            "{:>4.0}s  players matched/s {:>6.0}  connected {:>5}  waiting {:>5}  wait ms p50 {:>6.0} p95 {:>6.0} p99 {:>6.0}  errors {}",
            s.elapsed.as_secs_f64(),
            per_s,
            s.connected,
            s.waiting,
            s.time_to_match.p50_ms,
            s.time_to_match.p95_ms,
            s.time_to_match.p99_ms,
            s.errors
        );
    })
    .await?;
    println!("\n{report}");

    let _ = stop.0.send(true);
    let results = server_task.await.context("game servers")??;
    let leaders = party_task.await.context("parties")??;
    game.flush().await;
    let party_matches = played(&api, &issuer, &leaders).await?;
    println!("game servers reported {results} results; the squads played {party_matches} matches as parties");
    let viewer = issuer.mint(1, None, SystemTime::now());
    for mode in &rules.modes {
        let board =
            call(&api, Method::GET, &format!("/v1/leaderboard?mode={}&limit=5", mode.name), &viewer, None).await?;
        let standings = board["standings"].as_array().cloned().unwrap_or_default();
        if standings.is_empty() {
            continue;
        }
        let season = board["season"]["name"].as_str().unwrap_or("?");
        println!("\nleaderboard {} (season {season}), top {}:", mode.name, standings.len());
        for s in standings {
            println!(
                "  {:>2}. {:<10} {:>7.1}",
                s["rank"],
                s["display_name"].as_str().unwrap_or("?"),
                s["rating"].as_f64().unwrap_or(0.0)
            );
        }
    }
    node.stop().await;
    let written = game.shutdown().await;
    println!("\nresults stored: {} matches, {} player rows", written.matches, written.rows);
    store.close().await;
    Ok(())
}

/// A stop signal every demo task watches.
fn tokio_util_stop() -> (tokio::sync::watch::Sender<bool>, tokio::sync::watch::Receiver<bool>) {
    tokio::sync::watch::channel(false)
}

/// One request to the admin API, in process; the JSON answer, or an error naming the
/// status.
async fn call(api: &Router, method: Method, path: &str, token: &str, body: Option<Value>) -> Result<Value> {
    let mut request = Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))?;
    let response = api.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    anyhow::ensure!(status.is_success(), "{path}: {status} {}", String::from_utf8_lossy(&bytes));
    Ok(if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? })
}

/// A bot's hidden skill: what decides its games (ratings are meant to find it).
fn skill(player: u64) -> f64 {
    // A fixed scramble of the id, spread over 1000..2000.
    let x = player.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    1000.0 + (x % 1000) as f64
}

/// The built-in game servers: one per datacenter.
struct GameServers {
    tokens: Vec<String>,
}

impl GameServers {
    async fn register(api: &Router, server_key: &str, rules: &Rules) -> Result<GameServers> {
        let mut tokens = Vec::new();
        for (i, dc) in rules.datacenters.iter().enumerate() {
            let body = json!({"datacenter": dc, "address": format!("127.0.0.1:{}", 7800 + i), "capacity": 10_000});
            let answer = call(api, Method::POST, "/v1/servers", server_key, Some(body)).await?;
            tokens.push(answer["token"].as_str().context("a server token")?.to_owned());
        }
        Ok(GameServers { tokens })
    }

    /// Every 100 ms: heartbeat, take new sessions, and report each a second after it
    /// began. The stronger team (by hidden skill) usually wins. Returns results reported.
    async fn play(self, api: Router, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<u64> {
        let mut seen: HashSet<u64> = HashSet::new();
        let mut due: Vec<(tokio::time::Instant, String, u64, Vec<Vec<u64>>)> = Vec::new();
        let mut reported = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut coin = 0x2545_F491_4F6C_DD1Du64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            for token in &self.tokens {
                let live = call(&api, Method::POST, "/v1/servers/heartbeat", token, None).await?;
                for session in live["sessions"].as_array().into_iter().flatten() {
                    let match_id = session["match_id"].as_u64().unwrap_or_default();
                    if seen.insert(match_id) {
                        let teams: Vec<Vec<u64>> = serde_json::from_value(session["teams"].clone()).unwrap_or_default();
                        due.push((
                            tokio::time::Instant::now() + Duration::from_secs(1),
                            token.clone(),
                            match_id,
                            teams,
                        ));
                    }
                }
            }
            let now = tokio::time::Instant::now();
            let (ready, later): (Vec<_>, Vec<_>) = due.drain(..).partition(|(at, ..)| *at <= now);
            due = later;
            for (_, token, match_id, teams) in ready {
                // xorshift: a cheap, seeded upset now and then.
                coin ^= coin << 13;
                coin ^= coin >> 7;
                coin ^= coin << 17;
                let strength: Vec<f64> =
                    teams.iter().map(|t| t.iter().map(|&p| skill(p)).sum::<f64>() / t.len().max(1) as f64).collect();
                let mut order: Vec<usize> = (0..teams.len()).collect();
                order.sort_by(|&a, &b| strength[b].total_cmp(&strength[a]));
                if coin % 4 == 0 && order.len() >= 2 {
                    order.swap(0, 1);
                }
                let mut placements = vec![0u32; teams.len()];
                for (place, &team) in order.iter().enumerate() {
                    placements[team] = place as u32 + 1;
                }
                let path = format!("/v1/session/{match_id}/result");
                call(&api, Method::POST, &path, &token, Some(json!({"placements": placements}))).await?;
                reported += 1;
            }
        }
        Ok(reported)
    }
}

/// Two squads of three bots (accounts `first..first + 6`): they form parties, ready up
/// and queue over REST until stopped. Returns their leaders.
async fn parties(
    api: Router,
    issuer: Arc<TokenIssuer>,
    first: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<u64>> {
    let token = |player: u64| issuer.mint(player, None, SystemTime::now());
    let mut squads = Vec::new();
    for squad in 0..PARTY_BOTS / 3 {
        let members: Vec<u64> = (0..3).map(|i| first + squad * 3 + i).collect();
        let created =
            call(&api, Method::POST, "/v1/party", &token(members[0]), Some(json!({"mode": "squad-5v5"}))).await;
        // Rules without that mode: no parties in this demo.
        let Ok(created) = created else { return Ok(Vec::new()) };
        let id = created["party_id"].as_u64().context("a party id")?;
        for &m in &members[1..] {
            call(&api, Method::POST, &format!("/v1/party/{id}/join"), &token(m), None).await?;
        }
        squads.push((id, members));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        for (id, members) in &squads {
            let party = call(&api, Method::GET, &format!("/v1/party/{id}"), &token(members[0]), None).await?;
            if party["state"] == "queued" {
                continue;
            }
            let ready = json!({"ready": true, "rtt_ms": {"eu-west": 25.0, "eu-central": 35.0}});
            for &m in members {
                call(&api, Method::POST, &format!("/v1/party/{id}/ready"), &token(m), Some(ready.clone())).await?;
            }
            // Refused while a member cools down or the engine is busy: the next round
            // tries again.
            let _ = call(&api, Method::POST, "/v1/party/queue", &token(members[0]), None).await;
        }
    }
    Ok(squads.into_iter().map(|(_, members)| members[0]).collect())
}

/// Rated matches in these players' histories (up to 100 each).
async fn played(api: &Router, issuer: &TokenIssuer, players: &[u64]) -> Result<u64> {
    let mut played = 0;
    for &player in players {
        let path = format!("/v1/matches/history?player_id={player}&limit=100");
        let history = call(api, Method::GET, &path, &issuer.mint(player, None, SystemTime::now()), None).await?;
        played += history["matches"].as_array().map_or(0, Vec::len) as u64;
    }
    Ok(played)
}
