//! What results add up to: `GET /v1/matches/history` (a player's matches, newest first,
//! cursor-paginated), `GET /v1/leaderboard` (the current season) and
//! `GET /v1/leaderboard/{season}` (top N, or the caller's neighbourhood with `around=me`).

use axum::extract::{Path, Query, State};
use rally_persistence::{HistoryEntry, HistoryQuery, Season, Standing};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody, FieldError};
use crate::extract::Player;

/// Largest page of history or leaderboard.
const MAX_PAGE: u32 = 100;
/// Deepest leaderboard offset.
const MAX_OFFSET: u64 = 1_000_000_000;

/// `GET /v1/matches/history` filters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// Whose history (default: the caller's).
    pub player_id: Option<u64>,
    /// Only this mode.
    pub mode: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
}

/// One match of a player's history.
#[derive(Serialize, ToSchema)]
pub struct HistoryItem {
    /// The match.
    pub match_id: u64,
    /// Its mode.
    pub mode: String,
    /// The season it counted for.
    pub season_id: u64,
    /// The player's team.
    pub team: u16,
    /// The team's place, 1 = first.
    pub place: u16,
    /// Display rating before.
    pub rating_before: f64,
    /// Display rating after.
    pub rating_after: f64,
    /// When the result came in, ms since the Unix epoch.
    pub finished_at_ms: u64,
}

impl From<HistoryEntry> for HistoryItem {
    fn from(h: HistoryEntry) -> HistoryItem {
        HistoryItem {
            match_id: h.match_id,
            mode: h.mode,
            season_id: h.season_id,
            team: h.team,
            place: h.place,
            rating_before: h.mu_before - 3.0 * h.sigma_before,
            rating_after: h.mu_after - 3.0 * h.sigma_after,
            finished_at_ms: h.finished_at_ms,
        }
    }
}

/// A page of history.
#[derive(Serialize, ToSchema)]
pub struct HistoryPage {
    /// Newest first.
    pub matches: Vec<HistoryItem>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A player's rated matches, newest first.
#[utoipa::path(get, path = "/v1/matches/history", tag = "standings", security(("bearer" = [])), params(HistoryParams),
    responses(
        (status = 200, description = "A page of matches", body = HistoryPage),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 422, description = "Bad filter or cursor", body = ErrorBody),
    ))]
pub(crate) async fn history(
    State(state): State<AppState>,
    Player(token): Player,
    Query(params): Query<HistoryParams>,
) -> Result<axum::Json<HistoryPage>, ApiError> {
    let mut errors = Vec::new();
    let limit = page_size(params.limit, 20, &mut errors);
    check_mode(&state, params.mode.as_deref(), &mut errors);
    let before = match params.cursor.as_deref().map(parse_cursor) {
        None => None,
        Some(Some(at)) => Some(at),
        Some(None) => {
            errors.push(FieldError::new("cursor", "not a cursor this API handed out"));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let query =
        HistoryQuery { account_id: params.player_id.unwrap_or(token.player_id), mode: params.mode, before, limit };
    let entries = state.inner.game.store.match_history(&query).await?;
    let next_cursor = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| format!("{}-{}", e.finished_at_ms, e.match_id)));
    Ok(axum::Json(HistoryPage {
        matches: entries.into_iter().map(HistoryItem::from).collect(),
        next_cursor: next_cursor.flatten(),
    }))
}

fn parse_cursor(cursor: &str) -> Option<(u64, u64)> {
    let (at, id) = cursor.split_once('-')?;
    Some((at.parse().ok()?, id.parse().ok()?))
}

fn page_size(limit: Option<u32>, default: u32, errors: &mut Vec<FieldError>) -> u32 {
    match limit {
        None => default,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            errors.push(FieldError::new("limit", format!("must be 1 to {MAX_PAGE}")));
            default
        }
    }
}

fn check_mode(state: &AppState, mode: Option<&str>, errors: &mut Vec<FieldError>) {
    let modes = &state.inner.game.config.modes;
    if let Some(mode) = mode
        && !modes.is_empty()
        && !modes.iter().any(|m| m == mode)
    {
        errors.push(FieldError::new("mode", format!("must be one of: {}", modes.join(", "))));
    }
}

/// `GET /v1/leaderboard[/{season}]` options.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardParams {
    /// The mode (boards are per mode and season).
    pub mode: String,
    /// Rows, 1–100 (default 50; with `around`, the rows either side of the player).
    pub limit: Option<u32>,
    /// Rows to skip from the top.
    pub offset: Option<u64>,
    /// `me`: the caller's place and their neighbours instead of the top.
    pub around: Option<String>,
}

/// A season.
#[derive(Serialize, ToSchema)]
pub struct SeasonView {
    /// Its name.
    pub name: String,
    /// Start, ms since the Unix epoch (inclusive).
    pub starts_at_ms: u64,
    /// End (exclusive).
    pub ends_at_ms: u64,
}

impl From<Season> for SeasonView {
    fn from(s: Season) -> SeasonView {
        SeasonView { name: s.name, starts_at_ms: s.starts_at_ms, ends_at_ms: s.ends_at_ms }
    }
}

/// One row of a leaderboard.
#[derive(Serialize, ToSchema)]
pub struct StandingView {
    /// 1 = best.
    pub rank: u64,
    /// Who.
    pub player_id: u64,
    /// Their display name.
    pub display_name: String,
    /// Display rating, mu − 3·sigma.
    pub rating: f64,
}

impl From<Standing> for StandingView {
    fn from(s: Standing) -> StandingView {
        StandingView { rank: s.rank, player_id: s.account_id, display_name: s.display_name, rating: s.rating }
    }
}

/// A leaderboard page.
#[derive(Serialize, ToSchema)]
pub struct LeaderboardView {
    /// The season.
    pub season: SeasonView,
    /// The mode.
    pub mode: String,
    /// Best first.
    pub standings: Vec<StandingView>,
}

/// The current season's leaderboard for a mode (a season opens when the last ends).
#[utoipa::path(get, path = "/v1/leaderboard", tag = "standings", security(("bearer" = [])), params(LeaderboardParams),
    responses(
        (status = 200, description = "The leaderboard", body = LeaderboardView),
        (status = 404, description = "`around=me` and the caller is not on it", body = ErrorBody),
        (status = 422, description = "Bad parameters", body = ErrorBody),
    ))]
pub(crate) async fn current_leaderboard(
    State(state): State<AppState>,
    player: Player,
    Query(params): Query<LeaderboardParams>,
) -> Result<axum::Json<LeaderboardView>, ApiError> {
    let season = state.inner.game.seasons.current(crate::auth::now_ms()).await?;
    leaderboard(&state, player, season, params).await
}

/// A season's leaderboard for a mode.
#[utoipa::path(get, path = "/v1/leaderboard/{season}", tag = "standings", security(("bearer" = [])),
    params(("season" = String, Path, description = "The season's name"), LeaderboardParams),
    responses(
        (status = 200, description = "The leaderboard", body = LeaderboardView),
        (status = 404, description = "No such season, or `around=me` and the caller is not on it", body = ErrorBody),
        (status = 422, description = "Bad parameters", body = ErrorBody),
    ))]
pub(crate) async fn season_leaderboard(
    State(state): State<AppState>,
    player: Player,
    Path(season): Path<String>,
    Query(params): Query<LeaderboardParams>,
) -> Result<axum::Json<LeaderboardView>, ApiError> {
    let season = state.inner.game.store.season(&season).await?.ok_or(ApiError::NotFound)?;
    leaderboard(&state, player, season, params).await
}

async fn leaderboard(
    state: &AppState,
    Player(token): Player,
    season: Season,
    params: LeaderboardParams,
) -> Result<axum::Json<LeaderboardView>, ApiError> {
    let mut errors = Vec::new();
    check_mode(state, Some(&params.mode), &mut errors);
    let around_me = match params.around.as_deref() {
        None => false,
        Some("me") => true,
        Some(_) => {
            errors.push(FieldError::new("around", "the only value is `me`"));
            false
        }
    };
    let limit = page_size(params.limit, if around_me { 5 } else { 50 }, &mut errors);
    let offset = params.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        errors.push(FieldError::new("offset", format!("must be at most {MAX_OFFSET}")));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let board = &state.inner.game.leaderboard;
    let standings = if around_me {
        board
            .around(season.id, &params.mode, token.player_id, limit)
            .await
            .map_err(leaderboard_down)?
            .ok_or(ApiError::NotFound)?
    } else {
        board.top(season.id, &params.mode, offset, limit).await.map_err(leaderboard_down)?
    };
    Ok(axum::Json(LeaderboardView {
        season: season.into(),
        mode: params.mode,
        standings: standings.into_iter().map(StandingView::from).collect(),
    }))
}

fn leaderboard_down(e: rally_persistence::LeaderboardError) -> ApiError {
    match e {
        rally_persistence::LeaderboardError::Store(e) => e.into(),
        e @ rally_persistence::LeaderboardError::Redis(_) => {
            tracing::error!(error = %e, "leaderboard unavailable");
            ApiError::Unavailable
        }
    }
}
