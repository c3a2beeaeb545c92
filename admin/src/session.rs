//! Game servers and their sessions: `POST /v1/servers` (register), `POST
//! /v1/servers/heartbeat`, `GET /v1/session/{match_id}` (the match's players),
//! `POST /v1/session/{match_id}/heartbeat` and `POST /v1/session/{match_id}/result` (the
//! hosting server only; a result counts once per match).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use rally_sessions::{ResultStart, ServerId, ServerSpec, Session, SessionError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody, FieldError};
use crate::extract::{ApiJson, Player};
use crate::game::RecordError;
use rally_persistence::StoreError;

/// `POST /v1/servers`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerRegistration {
    /// The datacenter the server runs in (a name from the rules).
    pub datacenter: String,
    /// Where players connect, `host:port` (at most 255 bytes).
    pub address: String,
    /// Matches it hosts at once (at least 1).
    pub capacity: u32,
}

/// A registered server's credentials.
#[derive(Serialize, ToSchema)]
pub struct ServerCredentials {
    /// Its id.
    pub server_id: ServerId,
    /// Its token: `Authorization: Bearer <token>` on its heartbeats and results. It is
    /// also the key of its players' connect tokens: HMAC-SHA256 of `MATCH_ID:PLAYER_ID`
    /// under the 32 bytes the hex after the dot encodes.
    pub token: String,
    /// How often to heartbeat, ms.
    pub heartbeat_interval_ms: u64,
}

/// A session as its server sees it.
#[derive(Serialize, ToSchema)]
pub struct HostedSession {
    /// The match.
    pub match_id: u64,
    /// Its mode.
    pub mode: String,
    /// Player ids by team.
    pub teams: Vec<Vec<u64>>,
}

/// The server's live sessions (new ones appear here).
#[derive(Serialize, ToSchema)]
pub struct ServerHeartbeat {
    /// Sessions it hosts that have not ended.
    pub sessions: Vec<HostedSession>,
}

/// A session as one of its players sees it.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    /// The match.
    pub match_id: u64,
    /// Its mode.
    pub mode: String,
    /// Where it is played.
    pub datacenter: String,
    /// The game server's address.
    pub server_addr: String,
    /// The caller's connect token for that server.
    pub connect_token: String,
    /// `active`, `reporting`, `finished` or `failed`.
    pub state: &'static str,
    /// Player ids by team.
    pub teams: Vec<Vec<u64>>,
    /// Each team's place once finished (1 = first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placements: Option<Vec<u32>>,
}

/// `POST /v1/session/{match_id}/result`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultReport {
    /// Each team's place, in the session's team order: 1 = first, equal places tie.
    pub placements: Vec<u32>,
}

/// One player's rating change.
#[derive(Serialize, ToSchema)]
pub struct RatingChange {
    /// Who.
    pub player_id: u64,
    /// Their team.
    pub team: u16,
    /// Display rating (mu − 3·sigma) before.
    pub rating_before: f64,
    /// Display rating after.
    pub rating_after: f64,
    /// Skill mean after.
    pub mu: f64,
    /// Skill uncertainty after.
    pub sigma: f64,
}

/// What a result did.
#[derive(Serialize, ToSchema)]
pub struct ResultOutcome {
    /// The match.
    pub match_id: u64,
    /// `false` when this exact result had been recorded before (nothing changed).
    pub recorded: bool,
    /// The season it counted for (absent on a repeat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub season: Option<String>,
    /// Rating changes (empty on a repeat).
    pub ratings: Vec<RatingChange>,
}

/// A game server, by its bearer token.
pub struct GameServer(pub ServerId);

impl FromRequestParts<AppState> for GameServer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = crate::extract::bearer(&parts.headers, "server token")?;
        let id = state.inner.game.sessions.lock().authenticate(token)?;
        Ok(GameServer(id))
    }
}

/// Registers a game server.
#[utoipa::path(post, path = "/v1/servers", tag = "sessions", security(("bearer" = [])), request_body = ServerRegistration,
    responses(
        (status = 201, description = "Registered", body = ServerCredentials),
        (status = 401, description = "Wrong or missing server key", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 503, description = "Registration is not configured", body = ErrorBody),
    ))]
pub(crate) async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ServerRegistration>,
) -> Result<(StatusCode, axum::Json<ServerCredentials>), ApiError> {
    let game = &state.inner.game;
    let Some(expected) = &game.config.server_key else {
        return Err(ApiError::Unavailable);
    };
    let presented = crate::extract::bearer(&headers, "server key")?;
    // Comparing digests, so the time taken says nothing about the key.
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    if digest(presented).as_ref() != digest(expected).as_ref() {
        return Err(ApiError::Unauthenticated("the server key is not valid".into()));
    }
    let datacenters = &game.config.datacenters;
    if !datacenters.is_empty() && !datacenters.contains(&body.datacenter) {
        let problem = format!("must be one of: {}", datacenters.join(", "));
        return Err(ApiError::Validation(vec![FieldError::new("datacenter", problem)]));
    }
    let spec = ServerSpec { datacenter: body.datacenter, address: body.address, capacity: body.capacity };
    let (server_id, token) = game.sessions.register(spec).map_err(|e| match e {
        SessionError::BadSpec => ApiError::Validation(vec![FieldError::new("body", e.to_string())]),
        other => other.into(),
    })?;
    tracing::info!(server_id, "game server registered");
    let heartbeat_interval_ms = game.sessions.lock().config().heartbeat_interval_ms();
    Ok((StatusCode::CREATED, axum::Json(ServerCredentials { server_id, token, heartbeat_interval_ms })))
}

/// A game server's heartbeat: keeps it eligible for new matches, lists its sessions.
#[utoipa::path(post, path = "/v1/servers/heartbeat", tag = "sessions", security(("bearer" = [])),
    responses(
        (status = 200, description = "The server's live sessions", body = ServerHeartbeat),
        (status = 401, description = "Bad server token", body = ErrorBody),
    ))]
pub(crate) async fn server_heartbeat(
    State(state): State<AppState>,
    GameServer(server): GameServer,
) -> Result<axum::Json<ServerHeartbeat>, ApiError> {
    let mut sessions = state.inner.game.sessions.lock();
    let live = sessions.server_heartbeat(server, rally_sessions::now_ms())?;
    let sessions = live
        .into_iter()
        .map(|s| HostedSession { match_id: s.match_id, mode: s.mode.clone(), teams: s.teams.clone() })
        .collect();
    Ok(axum::Json(ServerHeartbeat { sessions }))
}

/// A session, for one of its players.
#[utoipa::path(get, path = "/v1/session/{match_id}", tag = "sessions", security(("bearer" = [])),
    params(("match_id" = u64, Path, description = "The match id from MatchFound")),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 403, description = "The caller does not play in this match", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    Player(token): Player,
    Path(match_id): Path<u64>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let sessions = state.inner.game.sessions.lock();
    let session = sessions.session(match_id).ok_or(SessionError::UnknownSession)?;
    if !session.has_player(token.player_id) {
        return Err(ApiError::Forbidden("only the match's players may see its session".into()));
    }
    let connect_token = sessions.connect_token(match_id, token.player_id).unwrap_or_default();
    Ok(axum::Json(view(session, connect_token)))
}

fn view(session: &Session, connect_token: String) -> SessionView {
    SessionView {
        match_id: session.match_id,
        mode: session.mode.clone(),
        datacenter: session.datacenter.clone(),
        server_addr: session.server_addr.clone(),
        connect_token,
        state: session.state.name(),
        teams: session.teams.clone(),
        placements: match &session.state {
            rally_sessions::SessionState::Finished { placements } => Some(placements.clone()),
            _ => None,
        },
    }
}

/// The hosting server's heartbeat for one session; a session without one for the
/// heartbeat timeout fails.
#[utoipa::path(post, path = "/v1/session/{match_id}/heartbeat", tag = "sessions", security(("bearer" = [])),
    params(("match_id" = u64, Path, description = "The match id")),
    responses(
        (status = 204, description = "Noted"),
        (status = 401, description = "Bad server token", body = ErrorBody),
        (status = 403, description = "Another server hosts this session", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session has ended", body = ErrorBody),
    ))]
pub(crate) async fn session_heartbeat(
    State(state): State<AppState>,
    GameServer(server): GameServer,
    Path(match_id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    state.inner.game.sessions.lock().session_heartbeat(match_id, server, rally_sessions::now_ms())?;
    Ok(StatusCode::NO_CONTENT)
}

/// The result of a match, from its server. Rated at once (Weng-Lin), stored behind.
/// Sending the same result again is answered with `recorded: false`; a different one is
/// refused.
#[utoipa::path(post, path = "/v1/session/{match_id}/result", tag = "sessions", security(("bearer" = [])),
    params(("match_id" = u64, Path, description = "The match id")), request_body = ResultReport,
    responses(
        (status = 200, description = "Recorded (or recorded before)", body = ResultOutcome),
        (status = 401, description = "Bad server token", body = ErrorBody),
        (status = 403, description = "Another server hosts this session", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "A different result was recorded, or the session failed", body = ErrorBody),
        (status = 422, description = "Not one place per team", body = ErrorBody),
        (status = 503, description = "The store is behind; retry", body = ErrorBody),
    ))]
pub(crate) async fn post_result(
    State(state): State<AppState>,
    GameServer(server): GameServer,
    Path(match_id): Path<u64>,
    ApiJson(report): ApiJson<ResultReport>,
) -> Result<axum::Json<ResultOutcome>, ApiError> {
    let game = &state.inner.game;
    let start = game.sessions.lock().begin_result(match_id, server, &report.placements);
    let session = match start.map_err(|e| match e {
        SessionError::BadPlacements => ApiError::Validation(vec![FieldError::new("placements", e.to_string())]),
        other => other.into(),
    })? {
        ResultStart::AlreadyRecorded(_) => {
            return Ok(axum::Json(ResultOutcome { match_id, recorded: false, season: None, ratings: Vec::new() }));
        }
        ResultStart::Rate(session) => session,
    };
    // If this request is dropped (the server hung up) or rating panics, the session goes
    // back to active so the server's retry can record the result.
    let mut pending = PendingResult { sessions: &game.sessions, match_id, placements: None };
    let recorded = game.record(&session, &report.placements).await;
    pending.placements = recorded.is_ok().then(|| report.placements.clone());
    drop(pending);
    let recorded = recorded.map_err(|e| match e {
        // The current season vanished, or the rating cache is thrashing: retry later.
        RecordError::Store(e @ (StoreError::NotFound { .. } | StoreError::Invalid(_))) => {
            tracing::warn!(match_id, error = %e, "result not recorded; the server may retry");
            ApiError::Unavailable
        }
        RecordError::Store(e) => ApiError::from(e),
        RecordError::Rate(e) => ApiError::Validation(vec![FieldError::new("placements", e.to_string())]),
        RecordError::Queue(e) => {
            tracing::warn!(match_id, error = %e, "result refused: write-behind queue full");
            ApiError::Unavailable
        }
    })?;
    metrics::counter!("rally_results_total", "mode" => session.mode.clone()).increment(1);
    let ratings = recorded
        .record
        .players
        .iter()
        .map(|p| RatingChange {
            player_id: p.account_id,
            team: p.team,
            rating_before: p.mu_before - 3.0 * p.sigma_before,
            rating_after: p.mu_after - 3.0 * p.sigma_after,
            mu: p.mu_after,
            sigma: p.sigma_after,
        })
        .collect();
    Ok(axum::Json(ResultOutcome { match_id, recorded: true, season: Some(recorded.season.name), ratings }))
}

/// Ends a result begun with `begin_result` however the handler ends: recorded, refused,
/// dropped mid-way or panicking.
struct PendingResult<'a> {
    sessions: &'a rally_sessions::SessionDirectory,
    match_id: u64,
    placements: Option<Vec<u32>>,
}

impl Drop for PendingResult<'_> {
    fn drop(&mut self) {
        self.sessions.end_result(self.match_id, self.placements.take());
    }
}

/// `POST /v1/match/{match_id}/accept`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchAnswer {
    /// Play the match (default) or not. Declining sends the others back to the queue
    /// and keeps the caller out of it for the mode's cooldown.
    #[serde(default = "accept_by_default")]
    pub accept: bool,
}

fn accept_by_default() -> bool {
    true
}

/// A player's answer to a ready check (modes with `accept_timeout_s`): the REST twin of
/// the QUIC `RespondToMatch`, for party members on the web.
#[utoipa::path(post, path = "/v1/match/{match_id}/accept", tag = "sessions", security(("bearer" = [])),
    params(("match_id" = u64, Path, description = "The match id from match_found")), request_body = MatchAnswer,
    responses(
        (status = 204, description = "Taken"),
        (status = 403, description = "The caller is not in this match", body = ErrorBody),
        (status = 409, description = "No ready check in progress for this match", body = ErrorBody),
    ))]
pub(crate) async fn accept_match(
    State(state): State<AppState>,
    Player(token): Player,
    Path(match_id): Path<u64>,
    ApiJson(answer): ApiJson<MatchAnswer>,
) -> Result<StatusCode, ApiError> {
    state.inner.game.sessions.respond(match_id, token.player_id, answer.accept)?;
    Ok(StatusCode::NO_CONTENT)
}
