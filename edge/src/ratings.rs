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
