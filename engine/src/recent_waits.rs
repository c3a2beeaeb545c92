//! The waits of a shard's recently matched tickets, for the caps on wide parties' plans
//! and on duels' patience.

/// Matched tickets whose waits are kept: at 100 matched tickets a second, the last 10 s.
/// Recording more than this many at once leaves the same ring as recording only the last
/// this many of them (the oldest is overwritten first).
pub(crate) const RECENT_WAITS: usize = 1_024;
/// No quantile (so no plans and no duel patience) until this many tickets have matched.
const MIN_SAMPLES: usize = 64;
/// Wide parties' plans hold no ticket past this quantile of the shard's recent waits: the
/// held tickets wait longer than they would have, but stay out of the tail the p95 wait is
/// taken over. Shard-wide rather than per mode, because the tail that matters is all
/// tickets': a team mode's own p95 lies above it (its solo players wait longer than
/// duelists), and held tickets capped there landed in the shard's tail. Measured
/// (BENCHMARKS.md) against fixed caps of 4–14 s, whose best value grew from 7 s at 150
/// tickets/s to 14 s at 40/s, and against each mode's own p90 and p95. The tail's edge is
/// a fraction of it (`pool::TAIL_EDGE_WAIT_FRACTION`).
pub(crate) const PLAN_WAIT_QUANTILE: f64 = 0.95;
/// Duel tickets wait for a closer opponent only while their wait is under this quantile
/// of the shard's recent waits (see `pool::DUEL_PATIENCE_FRACTION`).
pub(crate) const DUEL_PATIENCE_QUANTILE: f64 = 0.75;

/// The last `RECENT_WAITS` waits, in a ring.
#[derive(Clone, Debug, Default)]
pub(crate) struct RecentWaits {
    ring: Vec<u32>,
    next: usize,
}

impl RecentWaits {
    pub(crate) fn record(&mut self, wait_ms: u64) {
        let wait = u32::try_from(wait_ms).unwrap_or(u32::MAX);
        if self.ring.len() < RECENT_WAITS {
            self.ring.push(wait);
        } else {
            self.ring[self.next] = wait;
            self.next = (self.next + 1) % RECENT_WAITS;
        }
    }

    /// The `q` quantile (nearest rank, 0 < q ≤ 1) of the recorded waits, once there are
    /// `MIN_SAMPLES` of them. `scratch` is the caller's, so pools ticking at once can each
    /// ask without a lock or an allocation.
    pub(crate) fn quantile(&self, q: f64, scratch: &mut Vec<u32>) -> Option<u64> {
        if self.ring.len() < MIN_SAMPLES {
            return None;
        }
        scratch.clone_from(&self.ring);
        let rank = ((scratch.len() as f64 * q).ceil() as usize).clamp(1, scratch.len());
        let (_, at, _) = scratch.select_nth_unstable(rank - 1);
        Some(u64::from(*at))
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_quantile_until_enough_waits_then_the_nearest_rank() {
        let mut w = RecentWaits::default();
        for ms in 1..MIN_SAMPLES as u64 {
            w.record(ms);
        }
        assert_eq!(w.quantile(0.95, &mut Vec::new()), None);
        w.record(MIN_SAMPLES as u64);
        // 1..=64: the 95th percentile by nearest rank is the 61st value.
        assert_eq!(w.quantile(0.95, &mut Vec::new()), Some(61));
        assert_eq!(w.quantile(1.0, &mut Vec::new()), Some(64));
    }

    #[test]
    fn only_the_most_recent_waits_count() {
        let mut w = RecentWaits::default();
        for _ in 0..RECENT_WAITS {
            w.record(60_000);
        }
        for _ in 0..RECENT_WAITS {
            w.record(1_000);
        }
        assert_eq!(w.quantile(0.95, &mut Vec::new()), Some(1_000));
        // Waits past u32::MAX ms saturate instead of wrapping.
        for _ in 0..RECENT_WAITS {
            w.record(u64::MAX);
        }
        assert_eq!(w.quantile(0.5, &mut Vec::new()), Some(u64::from(u32::MAX)));
    }

    #[test]
    fn recording_only_the_last_ring_full_of_a_long_run_leaves_the_same_ring() {
        // As `Shard::tick` does after a burst, from an empty ring and from a part-filled one.
        for already in [0, 100] {
            let (mut all, mut last) = (RecentWaits::default(), RecentWaits::default());
            for ms in 0..already {
                all.record(ms);
                last.record(ms);
            }
            let run: Vec<u64> = (0..3_000).map(|i| (i * 7_919) % 5_000).collect();
            run.iter().for_each(|&ms| all.record(ms));
            run[run.len() - RECENT_WAITS..].iter().for_each(|&ms| last.record(ms));
            for round in 0..3 {
                for q in [0.05, 0.5, 0.75, 0.95, 1.0] {
                    assert_eq!(
                        all.quantile(q, &mut Vec::new()),
                        last.quantile(q, &mut Vec::new()),
                        "ring of {already}, round {round}, q {q}"
                    );
                }
                // And the same waits drop out as more arrive.
                for ms in 0..400 {
                    all.record(10_000 + ms);
                    last.record(10_000 + ms);
                }
            }
        }
    }
}
