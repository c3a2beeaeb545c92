//! Wiring for the commands that run services: `rally dev`, `rally loadgen`, `rally token`
//! and `rally migrate` (`rally demo` is in `demo.rs`). Only construction and plumbing; behaviour lives in the crates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use rally_admin::{Game, GameConfig, Lobby};
use rally_auth::{SigningKey, TokenIssuer, TokenVerifier};
use rally_client::Trust;
use rally_edge::{EdgeConfig, EdgeDeps, EdgeHandle, InProcessRouter, RatingSource, StoreRatings, TlsIdentity};
use rally_engine::{Rules, Runtime, RuntimeConfig};
use rally_loadgen::{LoadSpec, Report, Snapshot};
use rally_persistence::{Leaderboard, RedisLeaderboard, SqlStore, Store, StoreConfig, StoreLeaderboard};
use rally_sessions::{SessionConfig, SessionDirectory};

/// The rules `rally dev` and `rally demo` run when no `--modes` is given.
const EMBEDDED_MODES: &str = include_str!("../examples/modes.toml");
/// The dev signing key's file name inside the data directory.
const DEV_KEY_FILE: &str = "dev-signing-key.pem";

#[derive(Args)]
pub struct DevArgs {
    /// UDP address the edge listens on.
    #[arg(long, env = "RALLY_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// Rules (TOML); the embedded `examples/modes.toml` when absent.
    #[arg(long, env = "RALLY_MODES", value_name = "MODES.toml")]
    pub modes: Option<PathBuf>,
    /// Where dev state lives (the token signing key).
    #[arg(long, env = "RALLY_DATA_DIR", default_value = "rally-data")]
    pub data_dir: PathBuf,
    /// Tick period in ms. The rules' `tick_ms` is the replay's virtual tick; live shards
    /// tick this often. Shorter ticks form matches sooner and send them in smaller bursts,
    /// for a little more CPU; a tick that runs long puts the next one off, so ticking
    /// never takes more than a quarter of a shard's time.
    #[arg(long, env = "RALLY_TICK_MS", value_name = "MS", default_value_t = LIVE_TICK_MS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_TICK_MS))]
    pub tick_ms: u64,
    /// Nice value for the engine's shard threads (-20..=19; Linux). Below the async
    /// workers' 0, a shard answers commands without waiting for a worker's time slice,
    /// which matters when cores are busy. Negative values need `CAP_SYS_NICE` (or root);
    /// without it a warning is logged and the threads keep their priority.
    #[arg(long, env = "RALLY_SHARD_NICE", value_name = "NICE", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub shard_nice: Option<i32>,
    /// Certificate chain (PEM) to present instead of a fresh self-signed one.
    #[arg(long, env = "RALLY_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = "RALLY_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// TCP address of the admin REST API.
    #[arg(long, env = "RALLY_ADMIN_LISTEN", default_value = "127.0.0.1:8080")]
    pub admin_listen: SocketAddr,
    /// The database (`sqlite://PATH` or `postgres://…`); default `DATA_DIR/rally.db`.
    #[arg(long, env = "RALLY_DATABASE_URL")]
    pub database: Option<String>,
    /// Do not apply migrations at start (run `rally migrate` yourself).
    #[arg(long, env = "RALLY_NO_MIGRATE")]
    pub no_migrate: bool,
    /// A browser origin the admin API allows (CORS); repeat for more, `*` for any.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Admin requests per second per client IP (burst: twice as many).
    #[arg(long, env = "RALLY_IP_RATE", default_value_t = 100)]
    pub ip_rate: u32,
    /// Authenticated admin requests per second per account (burst: twice as many).
    #[arg(long, env = "RALLY_ACCOUNT_RATE", default_value_t = 20)]
    pub account_rate: u32,
    /// Login and registration attempts per minute per client IP (burst: 10).
    #[arg(long, env = "RALLY_LOGIN_RATE", default_value_t = 20)]
    pub login_rate: u32,
    /// The secret game servers register with (`POST /v1/servers`); a random one is made
    /// and printed when absent.
    #[arg(long, env = "RALLY_SERVER_KEY", hide_env_values = true)]
    pub server_key: Option<String>,
    /// Redis (`redis://HOST:PORT/DB`) for leaderboards; without it they are read from the
    /// database.
    #[arg(long, env = "RALLY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so deployments can share a Redis.
    #[arg(long, env = "RALLY_REDIS_PREFIX", default_value = "rally:")]
    pub redis_prefix: String,
    /// Length of a rating season, days; when one ends the next opens.
    #[arg(long, env = "RALLY_SEASON_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..))]
    pub season_days: u32,
}

#[derive(Args)]
pub struct DemoArgs {
    /// How long the bots play, seconds.
    #[arg(long, default_value_t = 20)]
    pub duration_s: u64,
    /// Bot players.
    #[arg(long, default_value_t = 400)]
    pub bots: usize,
    /// Rules (TOML); the embedded `examples/modes.toml` when absent.
    #[arg(long, value_name = "MODES.toml")]
    pub modes: Option<PathBuf>,
}

#[derive(Args)]
pub struct TokenArgs {
    /// The player id the token names.
    #[arg(long)]
    pub player: u64,
    /// The rating a dev edge queues the player with.
    #[arg(long, allow_negative_numbers = true, value_parser = crate::non_negative_number)]
    pub mmr: Option<f64>,
    /// Lifetime, seconds.
    #[arg(long, default_value_t = 900)]
    pub ttl_s: u64,
    /// The signing key (PKCS#8 PEM); made if missing, as `rally dev` does.
    #[arg(long, default_value = "rally-data/dev-signing-key.pem")]
    pub key: PathBuf,
}

#[derive(Args)]
pub struct MigrateArgs {
    /// The database: `sqlite://PATH` (created if missing) or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "RALLY_DATABASE_URL", default_value = rally_persistence::StoreConfig::DEFAULT_URL)]
    pub database: String,
}

#[derive(Args)]
pub struct LoadgenArgs {
    /// The edge's UDP address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub target: SocketAddr,
    /// The edge certificate's SHA-256 (printed by `rally dev`).
    #[arg(long)]
    pub fingerprint: String,
    /// The key the edge trusts tokens from (dev: `rally-data/dev-signing-key.pem`).
    #[arg(long, default_value = "rally-data/dev-signing-key.pem")]
    pub key: PathBuf,
    /// Simulated players (one connection each).
    #[arg(long, default_value_t = 1000)]
    pub players: usize,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Seconds of load after the ramp-up.
    #[arg(long, default_value_t = 30)]
    pub duration_s: u64,
    /// Stop after this many matches received.
    #[arg(long)]
    pub max_matches: Option<u64>,
    /// Total enqueues per second (default: as fast as matches come).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Modes to queue for, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "duel-1v1")]
    pub modes: Vec<String>,
    /// Only connect and hold the connections.
    #[arg(long)]
    pub idle: bool,
    /// Shortest pause between a match and the next enqueue, ms.
    #[arg(long, default_value_t = 200)]
    pub play_min_ms: u64,
    /// Longest pause between a match and the next enqueue, ms.
    #[arg(long, default_value_t = 1000)]
    pub play_max_ms: u64,
    /// First simulated player id (run several generators with disjoint ranges).
    #[arg(long, default_value_t = 1)]
    pub first_player: u64,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// How often live shards tick unless `--tick-ms` says otherwise. Measured at 5,000
/// enqueues/s (BENCHMARKS.md), alternated 60 s runs on one machine: enqueue→ack p99
/// 1.49–1.53 ms at 2 ms against 1.94–2.34 ms at 5 ms, since a tick's pushes go out in
/// smaller bursts. (On an earlier machine 20 ms ticks, and the rules' 100 ms, missed the
/// 5 ms delivery target.) Idle, `rally dev` uses 2.1% of a core at 2 ms and 1.6% at 5 ms.
pub(crate) const LIVE_TICK_MS: u64 = 2;
/// The longest tick period `--tick-ms` accepts.
const MAX_TICK_MS: u64 = 60_000;

/// The rules at `path` (the embedded ones when absent), live shards ticking every `tick_ms`.
pub(crate) fn rules(path: Option<&Path>, tick_ms: u64) -> Result<Arc<Rules>> {
    let mut rules = match path {
        Some(path) => crate::load_rules(path)?,
        None => Arc::new(Rules::from_toml(EMBEDDED_MODES).context("the embedded examples/modes.toml")?),
    };
    anyhow::ensure!((1..=MAX_TICK_MS).contains(&tick_ms), "--tick-ms must be within 1..={MAX_TICK_MS}");
    Arc::make_mut(&mut rules).tick_ms = tick_ms;
    Ok(rules)
}

/// Engine and edge in one process.
pub(crate) struct Node {
    pub edge: EdgeHandle,
    runtime: Runtime,
}

/// What a node's edge serves with, besides its rules, address and keys.
pub(crate) struct NodeServices {
    pub ratings: Arc<dyn RatingSource>,
    pub sessions: Arc<SessionDirectory>,
    pub lobby: Arc<Lobby>,
}

impl Node {
    /// Starts the shards, then the edge in front of them. `shard_nice`, when set, is the
    /// nice value each shard thread asks for (see `--shard-nice`).
    pub(crate) fn start(
        rules: Arc<Rules>,
        listen: SocketAddr,
        key: &SigningKey,
        tls: TlsIdentity,
        services: NodeServices,
        shard_nice: Option<i32>,
    ) -> Result<Node> {
        let NodeServices { ratings, sessions, lobby } = services;
        let events = rally_edge::ShardEvents::new();
        events.also(lobby.clone());
        let mut config = RuntimeConfig::default();
        // Match ids stay unique across restarts (results are idempotent per match id): each
        // run numbers its matches from the start time, 64 per ms of it.
        config.shard.first_match_seq = rally_sessions::now_ms() << 6;
        if let Some(nice) = shard_nice {
            config.on_thread_start = Some(Arc::new(move |shard| set_thread_nice(shard, nice)));
        }
        let runtime = Runtime::start(rules.clone(), config, events.clone()).context("starting shards")?;
        let router = Arc::new(InProcessRouter::new(&runtime));
        lobby.connect(router.clone());
        let deps = EdgeDeps {
            rules,
            router,
            events,
            verifier: TokenVerifier::with_defaults(key.public_key()),
            ratings,
            tls,
            sessions: Some(sessions),
            parties: Some(lobby as Arc<dyn rally_lobby::PartyGateway>),
        };
        let edge = rally_edge::start(EdgeConfig::new(listen), deps)?;
        Ok(Node { edge, runtime })
    }

    pub(crate) async fn stop(self) {
        self.edge.shutdown().await;
        self.runtime.shutdown();
    }
}

/// Sets the calling thread's nice value (Linux keeps one per thread). A shard thread woken
/// by a command then preempts the busy async workers instead of queueing behind them for
/// a time slice. Lowering it below 0 needs `CAP_SYS_NICE`; without it the thread keeps
/// its priority and a warning says so.
fn set_thread_nice(shard: rally_engine::ShardId, nice: i32) {
    #[cfg(target_os = "linux")]
    let result = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice).map_err(|e| e.to_string());
    #[cfg(not(target_os = "linux"))]
    let result: Result<(), String> = Err("per-thread priorities are Linux only".to_owned());
    match result {
        Ok(()) => tracing::info!(shard = shard.0, nice, "shard thread priority set"),
        Err(error) => tracing::warn!(shard = shard.0, nice, %error, "could not set the shard thread's priority"),
    }
}

/// A fresh self-signed certificate for `localhost` and the listening IP.
pub(crate) fn self_signed(listen: SocketAddr) -> Result<TlsIdentity> {
    Ok(TlsIdentity::self_signed(&["localhost".into(), listen.ip().to_string()])?)
}

pub(crate) fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

pub(crate) fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// A random secret for game servers to register with, as hex.
pub(crate) fn random_key() -> String {
    rally_sessions::random_hex_128()
}

/// Unrated players queue at this rating (the engine's MMR scale).
pub(crate) const DEFAULT_MMR: f64 = 1500.0;

pub fn dev(args: DevArgs) -> Result<()> {
    init_logs("info");
    let rules = rules(args.modes.as_deref(), args.tick_ms)?;
    let key_path = args.data_dir.join(DEV_KEY_FILE);
    let key = SigningKey::load_or_create(&key_path)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => TlsIdentity::from_pem_files(cert, key)?,
        _ => self_signed(args.listen)?,
    };
    let database = args.database.clone().unwrap_or_else(|| format!("sqlite://{}/rally.db", args.data_dir.display()));
    // Edge and engine record through the same `metrics` facade; `/metrics` shows them all.
    rally_admin::install_metrics();
    tokio_runtime()?.block_on(async {
        let store =
            SqlStore::connect(&StoreConfig::new(&database)).await.with_context(|| format!("opening {database}"))?;
        if !args.no_migrate {
            store.migrate().await.with_context(|| format!("migrating {database}"))?;
        }
        let store = Arc::new(store);
        let shared: Arc<dyn Store> = store.clone();
        // Dev: players without a stored rating queue at the one their dev token carries.
        let ratings = Arc::new(StoreRatings::new(shared.clone(), DEFAULT_MMR).trusting_token_mmr());

        let mut admin_config = rally_admin::AdminConfig::new(args.admin_listen);
        admin_config.regions = rules.regions.iter().map(|r| r.name.clone()).collect();
        admin_config.cors_origins = args.cors_origins.clone();
        admin_config.limits.per_ip = rally_admin::Rate::per_second(args.ip_rate, args.ip_rate.saturating_mul(2));
        admin_config.limits.per_account =
            rally_admin::Rate::per_second(args.account_rate, args.account_rate.saturating_mul(2));
        admin_config.limits.login_per_ip = rally_admin::Rate::per_minute(args.login_rate, 10);
        let sessions = Arc::new(SessionDirectory::new(SessionConfig::default()));
        let leaderboard: Arc<dyn Leaderboard> = match &args.redis_url {
            Some(url) => Arc::new(
                RedisLeaderboard::connect(url, &args.redis_prefix, shared.clone())
                    .await
                    .with_context(|| format!("connecting to Redis at {url}"))?,
            ),
            None => Arc::new(StoreLeaderboard::new(shared.clone())),
        };
        let server_key = args.server_key.clone().unwrap_or_else(random_key);
        let game_config = GameConfig {
            server_key: Some(server_key.clone()),
            modes: rules.modes.iter().map(|m| m.name.clone()).collect(),
            datacenters: rules.datacenters.clone(),
            season_length: Duration::from_secs(u64::from(args.season_days) * 24 * 3600),
            ..GameConfig::default()
        };
        // The edge's rating cache hears of every stored result.
        let game =
            Arc::new(Game::start(game_config, shared.clone(), sessions.clone(), leaderboard, vec![ratings.clone()]));
        let lobby = Lobby::shared(rules.clone(), sessions.clone(), game.clone());
        let state = rally_admin::AppState::new(
            admin_config,
            shared,
            TokenIssuer::new(key.clone()),
            game.clone(),
            lobby.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting the admin API: {e}"))?;
        let listener = tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("binding the admin API to {}", args.admin_listen))?;
        let admin_addr = listener.local_addr()?;
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(rally_admin::serve(listener, rally_admin::router(state), async move {
            let _ = admin_stopped.await;
        }));

        let services = NodeServices { ratings, sessions, lobby };
        let node = Node::start(rules.clone(), args.listen, &key, tls, services, args.shard_nice)?;
        let fingerprint = rally_edge::fingerprint_hex(&node.edge.fingerprint());
        println!("rally dev: edge on {} (QUIC, ALPN rally/1)", node.edge.local_addr());
        println!("  certificate SHA-256 (pin this, or trust its CA): {fingerprint}");
        println!("  admin API: http://{admin_addr} (docs at /docs, spec at /openapi.json)");
        println!("  database: {database}");
        println!(
            "  leaderboards: {}",
            args.redis_url.as_deref().map_or_else(|| "from the database".to_owned(), |url| format!("Redis at {url}"))
        );
        match &args.server_key {
            Some(_) => println!("  game servers register with the key in RALLY_SERVER_KEY / --server-key"),
            None => println!("  game servers register with: Authorization: Bearer {server_key}"),
        }
        println!("  token key: {} (public {})", key_path.display(), key.public_key());
        println!("  tick: {} ms", rules.tick_ms);
        println!("  modes: {}", rules.modes.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "));
        println!("  a token:   rally token --player 1 --mmr 1500   (or POST /v1/auth/register)");
        println!(
            "  load:      rally loadgen --target {} --fingerprint {fingerprint} --players 200",
            node.edge.local_addr()
        );
        println!("Ctrl-C stops it gracefully.");
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        println!("shutting down: closing connections, finishing requests, draining shard mailboxes");
        let _ = stop_admin.send(());
        node.stop().await;
        match tokio::time::timeout(Duration::from_secs(10), admin).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "admin API stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "admin API task failed"),
            Err(_) => tracing::warn!("admin API still busy after 10 s; leaving it"),
        }
        let written = game.shutdown().await;
        println!(
            "results stored: {} matches, {} player rows ({} refused by the database, {} lost)",
            written.matches, written.rows, written.rejected, written.lost
        );
        store.close().await;
        Ok(())
    })
}

pub fn migrate(args: MigrateArgs) -> Result<()> {
    init_logs("info");
    tokio_runtime()?.block_on(async {
        let store = rally_persistence::SqlStore::connect(&rally_persistence::StoreConfig::new(&args.database))
            .await
            .with_context(|| format!("opening {}", args.database))?;
        store.migrate().await?;
        println!("{}: migrations applied ({:?})", args.database, store.backend());
        store.close().await;
        Ok(())
    })
}

pub fn token(args: TokenArgs) -> Result<()> {
    let key = SigningKey::load_or_create(&args.key)?;
    let issuer = TokenIssuer::new(key).with_ttl(Duration::from_secs(args.ttl_s));
    println!("{}", issuer.mint(args.player, args.mmr, SystemTime::now()));
    Ok(())
}

pub fn loadgen(args: LoadgenArgs) -> Result<()> {
    init_logs("warn");
    let Some(trust) = Trust::fingerprint_hex(&args.fingerprint) else {
        anyhow::bail!("--fingerprint must be 64 hex digits (the SHA-256 `rally dev` prints)");
    };
    anyhow::ensure!(args.play_max_ms >= args.play_min_ms, "--play-max-ms must be at least --play-min-ms");
    let key = SigningKey::load_or_create(&args.key)?;
    let issuer = Arc::new(TokenIssuer::new(key).with_ttl(Duration::from_secs(24 * 3600)));
    let tokens = Arc::new(move |player, mmr| issuer.mint(player, Some(mmr), SystemTime::now()));
    let mut spec = LoadSpec::new(args.target, trust, tokens, args.players);
    spec.connect_rate = args.connect_rate;
    spec.duration = Duration::from_secs(args.duration_s);
    spec.max_matches = args.max_matches;
    spec.enqueue_rate = args.rate;
    spec.modes = args.modes;
    spec.idle = args.idle;
    spec.play_time = (Duration::from_millis(args.play_min_ms), Duration::from_millis(args.play_max_ms));
    spec.first_player_id = args.first_player;
    spec.seed = args.seed;
    let bar = indicatif::ProgressBar::new_spinner();
    let report: Report = tokio_runtime()?.block_on(async {
        rally_loadgen::run(spec, |s: &Snapshot| {
            bar.set_message(format!(
                "{:.0}s connected {} waiting {} enqueues {} matches {} errors {}",
                s.elapsed.as_secs_f64(),
                s.connected,
                s.waiting,
                s.enqueues,
                s.matches,
                s.errors
            ));
            bar.tick();
        })
        .await
    })?;
    bar.finish_and_clear();
    println!("{report}");
    if let Some(path) = args.report {
        let mut out = crate::open_output(&path)?;
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        out.flush()?;
    }
    Ok(())
}

use std::io::Write;
