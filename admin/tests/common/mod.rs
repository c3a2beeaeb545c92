//! The admin API's test harness: a router on a fresh SQLite store with the game loop
//! running, and helpers to call it.

#![allow(dead_code)]

/// The key game servers register with in tests.
pub const SERVER_KEY: &str = "test-server-key";

/// Wide windows from the start, so compatible tickets match on the next tick.
pub const RULES: &str = r#"
tick_ms = 20
[regions]
eu = ["eu-west"]
na = ["na-east"]

[[mode]]
name = "duel"
teams = 2
team_size = 1
mmr_window = { start = 500.0, growth_per_s = 0.0, max = 500.0 }
max_rtt_ms = { start = 150.0, growth_per_s = 0.0, max = 150.0 }

[[mode]]
name = "squad"
teams = 2
team_size = 3
mmr_window = { start = 500.0, growth_per_s = 0.0, max = 500.0 }
max_rtt_ms = { start = 150.0, growth_per_s = 0.0, max = 150.0 }

[[mode]]
name = "pair-rc"
teams = 2
team_size = 2
mmr_window = { start = 500.0, growth_per_s = 0.0, max = 500.0 }
max_rtt_ms = { start = 150.0, growth_per_s = 0.0, max = 150.0 }
accept_timeout_s = 5
decline_cooldown_s = 30
"#;

pub use std::sync::Arc;
#[allow(unused_imports)]
pub use std::time::{Duration, SystemTime};

pub use axum::Router;
pub use axum::body::Body;
pub use axum::http::{HeaderMap, Method, Request, StatusCode};
pub use http_body_util::BodyExt;
pub use rally_admin::{AdminConfig, AppState, Game, GameConfig, Lobby, PasswordCost, Rate, RateLimits};
pub use rally_auth::{SigningKey, TokenIssuer};
pub use rally_engine::{InProcessRouter, Rules, Runtime, RuntimeConfig};
pub use rally_persistence::{SqlStore, StoreConfig, StoreLeaderboard};
pub use rally_sessions::{SessionConfig, SessionDirectory};
pub use serde_json::{Value, json};
pub use tower::ServiceExt;

pub struct Ctx {
    pub router: Router,
    pub key_pem: String,
    pub store: Arc<SqlStore>,
    pub game: Arc<Game>,
    pub sessions: Arc<SessionDirectory>,
    pub lobby: Arc<Lobby>,
    runtime: Option<Runtime>,
    dir: std::path::PathBuf,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Cheap hashing so tests are quick; generous limits unless a test tightens them.
pub async fn app(tweak: impl FnOnce(&mut AdminConfig)) -> Ctx {
    app_with(tweak, |_, _| {}).await
}

/// `app`, with game-loop settings changed too.
pub async fn app_with(
    tweak: impl FnOnce(&mut AdminConfig),
    tweak_game: impl FnOnce(&mut GameConfig, &mut SessionConfig),
) -> Ctx {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("rally-admin-{}-{n}", std::process::id()));
    let store = SqlStore::connect(&StoreConfig::new(format!("sqlite://{}/rally.db", dir.display()))).await.unwrap();
    store.migrate().await.unwrap();
    let mut config = AdminConfig::new("127.0.0.1:0".parse().unwrap());
    config.password_cost = PasswordCost { memory_kib: 1024, iterations: 1, parallelism: 1 };
    config.limits = RateLimits {
        per_ip: Rate::per_second(10_000, 10_000),
        login_per_ip: Rate::per_second(10_000, 10_000),
        per_account: Rate::per_second(10_000, 10_000),
    };
    config.regions = vec!["eu".into(), "na".into()];
    tweak(&mut config);
    let key = SigningKey::generate();
    let key_pem = key.to_pem().to_owned();
    let store = Arc::new(store);
    let mut game_config = GameConfig {
        server_key: Some(SERVER_KEY.into()),
        modes: vec!["duel".into(), "squad".into(), "pair-rc".into()],
        datacenters: vec!["eu-west".into(), "na-east".into()],
        ..GameConfig::default()
    };
    game_config.write_behind.flush_interval = Duration::from_millis(5);
    let mut session_config = SessionConfig::default();
    tweak_game(&mut game_config, &mut session_config);
    let sessions = Arc::new(SessionDirectory::new(session_config));
    let leaderboard = Arc::new(StoreLeaderboard::new(store.clone()));
    let game = Arc::new(Game::start(game_config, store.clone(), sessions.clone(), leaderboard, Vec::new()));
    // A real engine behind the parties: the lobby is the shards' only event sink here.
    let rules = Arc::new(Rules::from_toml(RULES).unwrap());
    let lobby = Lobby::shared(rules.clone(), sessions.clone(), game.clone());
    let runtime = Runtime::start(rules, RuntimeConfig::default(), lobby.clone()).unwrap();
    lobby.connect(Arc::new(InProcessRouter::new(&runtime)));
    let state = AppState::new(config, store.clone(), TokenIssuer::new(key), game.clone(), lobby.clone()).await.unwrap();
    Ctx { router: rally_admin::router(state), key_pem, store, game, sessions, lobby, runtime: Some(runtime), dir }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Ctx {
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let body = body.map(|b| b.to_string());
        self.raw(method, path, token, body.as_deref(), Some("application/json")).await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        content_type: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some()
            && let Some(ct) = content_type
        {
            req = req.header("content-type", ct);
        }
        let req = req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body, text }
    }

    pub async fn register(&self, name: &str) -> Value {
        let r = self
            .call(
                Method::POST,
                "/v1/auth/register",
                None,
                Some(json!({"username": name, "email": format!("{name}@example.com"), "password": "correct horse"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body
    }
}

/// A registered player: their account id and access token.
pub struct Player {
    pub id: u64,
    pub token: String,
}

impl Ctx {
    /// Registers each name; the players in the same order.
    pub async fn players(&self, names: &[&str]) -> Vec<Player> {
        let mut out = Vec::new();
        for name in names {
            let body = self.register(name).await;
            let id = body["account_id"].as_u64().unwrap();
            out.push(Player { id, token: body["access_token"].as_str().unwrap().to_owned() });
        }
        out
    }
}

impl Reply {
    /// The error code, checking the error body's shape and request id on the way.
    pub fn code(&self) -> &str {
        let error = &self.body["error"];
        let id = self.headers.get("x-request-id").expect("every response has a request id").to_str().unwrap();
        assert_eq!(error["request_id"], id, "the body names the header's request id: {}", self.text);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.text);
        error["code"].as_str().unwrap_or_else(|| panic!("no error code in {}", self.text))
    }

    pub fn fields(&self) -> Vec<&str> {
        self.body["error"]["fields"]
            .as_array()
            .map_or(Vec::new(), |f| f.iter().map(|f| f["field"].as_str().unwrap()).collect())
    }
}
