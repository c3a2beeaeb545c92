//! Ratings from results: Weng-Lin (the `skillratings` crate, no maths of our own) for any
//! number of teams of any size, 1v1 and free-for-all included, on the engine's MMR scale.
//!
//! A [`Skill`] is a mean `mu` and an uncertainty `sigma`. The matchmaker queues a player
//! at `mu`; leaderboards show the conservative [`Skill::display`] = mu − 3·sigma, which
//! starts at 0 and climbs as the system grows sure of a player.

use skillratings::MultiTeamOutcome;
use skillratings::weng_lin::{WengLinConfig, WengLinRating, weng_lin_multi_team};

/// A player's skill estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Skill {
    /// Mean skill, on the MMR scale the engine matches on.
    pub mu: f64,
    /// Standard deviation of the estimate.
    pub sigma: f64,
}

impl Skill {
    /// The rating shown to players: mu − 3·sigma, a lower bound the player is ~99.7%
    /// likely to be above.
    pub fn display(self) -> f64 {
        self.mu - 3.0 * self.sigma
    }
}

/// Why a result could not be rated (the reporter's fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Fewer than two teams.
    #[error("a result needs at least two teams")]
    TooFewTeams,
    /// A team without players.
    #[error("a team has no players")]
    EmptyTeam,
    /// Not one rank per team.
    #[error("expected one rank per team")]
    RankCount,
    /// A rank of 0 (ranks start at 1).
    #[error("ranks start at 1")]
    ZeroRank,
    /// A mu or sigma is NaN, infinite, or a sigma is not positive.
    #[error("a rating is not a finite number with a positive sigma")]
    BadSkill,
}

/// The Weng-Lin model, scaled to the MMR numbers the engine matches on.
#[derive(Clone, Copy, Debug)]
pub struct RatingModel {
    initial: Skill,
    config: WengLinConfig,
}

impl Default for RatingModel {
    /// The crate's defaults (mu 25, sigma 25/3, beta 25/6) times 60: new players start at
    /// mu 1500 (the engine's default MMR) with sigma 500, so their display rating is 0.
    fn default() -> Self {
        RatingModel::scaled(60.0)
    }
}

impl RatingModel {
    /// The crate's defaults multiplied by `scale` (Weng-Lin is invariant under scaling mu,
    /// sigma and beta together).
    pub fn scaled(scale: f64) -> RatingModel {
        let defaults = WengLinConfig::new();
        RatingModel {
            initial: Skill { mu: 25.0 * scale, sigma: 25.0 / 3.0 * scale },
            config: WengLinConfig {
                beta: defaults.beta * scale,
                uncertainty_tolerance: defaults.uncertainty_tolerance,
            },
        }
    }

    /// A new player's skill.
    pub fn initial(&self) -> Skill {
        self.initial
    }

    /// New skills after a match: `teams[i]` finished at `ranks[i]` (1 = first; equal ranks
    /// are a draw between those teams). The result has the shape of `teams`.
    pub fn rate(&self, teams: &[&[Skill]], ranks: &[u32]) -> Result<Vec<Vec<Skill>>, RateError> {
        if teams.len() < 2 {
            return Err(RateError::TooFewTeams);
        }
        if ranks.len() != teams.len() {
            return Err(RateError::RankCount);
        }
        if ranks.contains(&0) {
            return Err(RateError::ZeroRank);
        }
        if teams.iter().any(|t| t.is_empty()) {
            return Err(RateError::EmptyTeam);
        }
        if teams.iter().flat_map(|t| t.iter()).any(|s| !s.mu.is_finite() || !s.sigma.is_finite() || s.sigma <= 0.0) {
            return Err(RateError::BadSkill);
        }
        let converted: Vec<Vec<WengLinRating>> = teams
            .iter()
            .map(|team| team.iter().map(|s| WengLinRating { rating: s.mu, uncertainty: s.sigma }).collect())
            .collect();
        let input: Vec<(&[WengLinRating], MultiTeamOutcome)> = converted
            .iter()
            .zip(ranks)
            .map(|(team, &rank)| (team.as_slice(), MultiTeamOutcome::new(rank as usize)))
            .collect();
        Ok(weng_lin_multi_team(&input, &self.config)
            .into_iter()
            .map(|team| team.into_iter().map(|r| Skill { mu: r.rating, sigma: r.uncertainty }).collect())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_winner_gains_the_loser_drops_and_both_grow_surer() {
        let model = RatingModel::default();
        let new = model.initial();
        assert!(new.display().abs() < 1e-9);
        let rated = model.rate(&[&[new], &[new]], &[1, 2]).unwrap();
        let (winner, loser) = (rated[0][0], rated[1][0]);
        assert!(winner.mu > new.mu && loser.mu < new.mu, "{winner:?} {loser:?}");
        assert!(winner.sigma < new.sigma && loser.sigma < new.sigma);
        assert!((winner.mu - new.mu - (new.mu - loser.mu)).abs() < 1e-9, "zero-sum between equals");
    }

    #[test]
    fn scaling_the_model_scales_the_result() {
        let (small, big) = (RatingModel::scaled(1.0), RatingModel::scaled(60.0));
        let a = small.rate(&[&[small.initial()], &[small.initial()]], &[2, 1]).unwrap();
        let b = big.rate(&[&[big.initial()], &[big.initial()]], &[2, 1]).unwrap();
        assert!((a[0][0].mu * 60.0 - b[0][0].mu).abs() < 1e-6);
        assert!((a[1][0].sigma * 60.0 - b[1][0].sigma).abs() < 1e-6);
    }

    #[test]
    fn a_draw_between_equals_moves_no_mean() {
        let model = RatingModel::default();
        let s = model.initial();
        let rated = model.rate(&[&[s, s], &[s, s]], &[1, 1]).unwrap();
        assert!(rated.iter().flatten().all(|r| (r.mu - s.mu).abs() < 1e-9));
    }

    #[test]
    fn free_for_all_orders_by_place() {
        let model = RatingModel::default();
        let s = model.initial();
        let teams: Vec<[Skill; 1]> = (0..8).map(|_| [s]).collect();
        let refs: Vec<&[Skill]> = teams.iter().map(|t| t.as_slice()).collect();
        let rated = model.rate(&refs, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert!(rated.windows(2).all(|w| w[0][0].mu > w[1][0].mu));
    }

    #[test]
    fn bad_results_are_refused() {
        let model = RatingModel::default();
        let s = model.initial();
        assert_eq!(model.rate(&[&[s]], &[1]), Err(RateError::TooFewTeams));
        assert_eq!(model.rate(&[&[s], &[s]], &[1]), Err(RateError::RankCount));
        assert_eq!(model.rate(&[&[s], &[s]], &[0, 1]), Err(RateError::ZeroRank));
        assert_eq!(model.rate(&[&[s], &[]], &[1, 2]), Err(RateError::EmptyTeam));
        let nan = Skill { mu: f64::NAN, sigma: 1.0 };
        assert_eq!(model.rate(&[&[nan], &[s]], &[1, 2]), Err(RateError::BadSkill));
        let flat = Skill { mu: 1500.0, sigma: 0.0 };
        assert_eq!(model.rate(&[&[flat], &[s]], &[1, 2]), Err(RateError::BadSkill));
    }
}
