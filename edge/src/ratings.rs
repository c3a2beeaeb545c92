//! Where a player's rating comes from. Clients never assert their own rating in
//! production: the accounts store backs `RatingSource` there. In dev, `TokenRatings`
//! reads the rating `rally token` put into the access token.

use std::future::Future;
use std::pin::Pin;

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
/// or, when `trust_token_mmr` is set (dev only), at the rating their token carries.
pub struct StoreRatings {
    /// Where ratings live.
    pub store: std::sync::Arc<dyn rally_persistence::Store>,
    /// Rating of players with none stored.
    pub default: f64,
    /// Dev only: use a token's `mmr` claim when the store has no rating.
    pub trust_token_mmr: bool,
}

impl RatingSource for StoreRatings {
    fn rating<'a>(&'a self, player: u64, mode: &'a str, token_mmr: Option<f64>) -> RatingFuture<'a> {
        Box::pin(async move {
            let now_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
            let fail = |e: rally_persistence::StoreError| RatingError(e.to_string());
            let stored = match self.store.season_at(now_ms as u64).await.map_err(fail)? {
                Some(season) => self.store.rating(player, mode, season.id).await.map_err(fail)?,
                None => None,
            };
            Ok(match (stored, token_mmr) {
                // The engine matches on a non-negative scale; a long losing streak can
                // take mu below 0.
                (Some(rating), _) => rating.mu.max(0.0),
                (None, Some(mmr)) if self.trust_token_mmr => mmr,
                (None, _) => self.default,
            })
        })
    }
}
