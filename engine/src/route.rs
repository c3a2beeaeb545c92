//! Which shard a ticket goes to.

use crate::command::{PlayerEntry, Rejection};
use crate::rules::{RegionId, Rules, ShardId};

/// The region whose best datacenter — the one with the lowest worst-player RTT among those
/// every player of the ticket has measured — is best overall. Ties go to the region first
/// in [`Rules::regions`] (name order). Fails with [`Rejection::NoKnownDatacenter`] when no configured datacenter was
/// measured by every player (RTT entries naming no configured datacenter do not count).
///
pub fn home_region(rules: &Rules, players: &[PlayerEntry]) -> Result<RegionId, Rejection> {
    let mut best: Option<(f64, RegionId)> = None;
    for (idx, region) in rules.regions.iter().enumerate() {
        for &dc in &region.datacenters {
            let mut worst = f64::NEG_INFINITY;
            for p in players {
                // The last entry for a datacenter wins if a player lists it twice; the
                // shard keeps the worst, so either way the match is valid.
                match p.rtt_ms.iter().rev().find(|(d, _)| *d == dc) {
                    Some(&(_, rtt)) => worst = worst.max(rtt),
                    None => {
                        worst = f64::INFINITY;
                        break;
                    }
                }
            }
            if worst.is_finite() && best.is_none_or(|(b, _)| worst < b) {
                best = Some((worst, RegionId(idx as u16)));
            }
        }
    }
    best.map(|(_, region)| region).ok_or(Rejection::NoKnownDatacenter)
}

/// The shard serving the ticket's [`home_region`]. A ticket is matched only within its
/// shard; by default one shard serves every region, so this matters only when the rules
/// split regions into several shards.
pub fn home_shard(rules: &Rules, players: &[PlayerEntry]) -> Result<ShardId, Rejection> {
    home_region(rules, players).map(|r| rules.region_shard[usize::from(r.0)])
}
