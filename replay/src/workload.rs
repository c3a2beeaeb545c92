//! Synthetic traffic: seeded, reproducible `EVENTS.jsonl` for the simulator, the quality
//! tests and the benchmarks.
//!
//! Players live near one datacenter of a region; their RTT grows with distance (same
//! datacenter, same region, another region), with jitter. Ratings are normal around 1500.
//! Party modes draw party sizes from a configurable distribution; party members' ratings
//! cluster around the party's. A fraction of tickets cancel after a random delay — some
//! after they were matched, which the replay counts as "not waiting".

use std::fmt::Write as _;

use rally_engine::Rules;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How to generate traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadSpec {
    /// RNG seed: the same spec and seed give the same bytes.
    pub seed: u64,
    /// Tickets per second.
    pub tickets_per_s: f64,
    /// How long arrivals go on, seconds.
    pub duration_s: f64,
    /// (mode name, weight): the mix of modes.
    pub modes: Vec<(String, f64)>,
    /// Weights of party sizes 1, 2, 3, … (capped by each mode's team size).
    pub party_size_weights: Vec<f64>,
    /// Fraction of tickets that cancel.
    pub cancel_fraction: f64,
    /// Weight of each region (by index) as a player's home; empty means equal.
    pub region_weights: Vec<f64>,
    /// Rating mean and standard deviation.
    pub mmr_mean: f64,
    /// Rating standard deviation.
    pub mmr_sd: f64,
    /// Fraction of players whose RTT map misses one datacenter of their region.
    pub missing_rtt_fraction: f64,
    /// Standard deviation of a party member's rating around the party's.
    pub party_mmr_sd: f64,
    /// How arrivals are spaced in time.
    pub arrivals: Arrivals,
}

/// How arrivals are spaced in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arrivals {
    /// One every `1 / tickets_per_s` seconds.
    #[default]
    Even,
    /// Exponential gaps at mean `1 / tickets_per_s`, the first arrival at 0: bursts and
    /// lulls, as real traffic has. The number of tickets stays `tickets_per_s ×
    /// duration_s`, so the last arrival lands near `duration_s`, a little before or after
    /// (not a Poisson process cut off at `duration_s`).
    Poisson,
}

impl WorkloadSpec {
    /// Mixed traffic over every mode of `rules`, equally weighted.
    pub fn mixed(rules: &Rules, seed: u64, tickets_per_s: f64, duration_s: f64) -> Self {
        WorkloadSpec {
            seed,
            tickets_per_s,
            duration_s,
            modes: rules.modes.iter().map(|m| (m.name.clone(), 1.0)).collect(),
            party_size_weights: vec![0.55, 0.2, 0.12, 0.08, 0.05],
            cancel_fraction: 0.07,
            region_weights: Vec::new(),
            mmr_mean: 1500.0,
            mmr_sd: 300.0,
            missing_rtt_fraction: 0.05,
            party_mmr_sd: 60.0,
            arrivals: Arrivals::Even,
        }
    }

    /// Like `mixed`, with team modes twice as frequent as solo ones and parties mostly of
    /// sizes that cannot complete each other in teams of 5 (3 and 4): a shape an
    /// independent check found the engine slow and its team imbalance weak on
    /// (BENCHMARKS.md). `RALLY_QUALITY_SHAPE=party-heavy` runs the held-out sweep on it.
    pub fn party_heavy(rules: &Rules, seed: u64, tickets_per_s: f64, duration_s: f64) -> Self {
        WorkloadSpec {
            modes: rules.modes.iter().map(|m| (m.name.clone(), if m.team_size > 1 { 2.0 } else { 1.0 })).collect(),
            party_size_weights: vec![0.15, 0.1, 0.3, 0.4, 0.05],
            ..Self::mixed(rules, seed, tickets_per_s, duration_s)
        }
    }
}

/// Generates the events as JSONL text, in `at_ms` order.
pub fn generate(rules: &Rules, spec: &WorkloadSpec) -> String {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let n_tickets = (spec.tickets_per_s * spec.duration_s).round() as u64;
    let mode_total: f64 = spec.modes.iter().map(|(_, w)| w).sum();
    let region_weights: Vec<f64> =
        if spec.region_weights.is_empty() { vec![1.0; rules.regions.len()] } else { spec.region_weights.clone() };
    let region_total: f64 = region_weights.iter().sum();

    // (at_ms, order, line): enqueues and their cancels, sorted at the end.
    let mut lines: Vec<(u64, u64, String)> = Vec::with_capacity(n_tickets as usize * 11 / 10);
    let mut player_seq = 0u64;
    // Poisson arrivals: the clock moves on by exponential gaps (drawn before the ticket,
    // from the same stream, so a seed still gives one byte sequence).
    let mut poisson_at_s = 0.0f64;
    for i in 0..n_tickets {
        let at_ms = match spec.arrivals {
            Arrivals::Even => (i as f64 * 1000.0 / spec.tickets_per_s) as u64,
            Arrivals::Poisson => {
                if i > 0 {
                    let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                    poisson_at_s += -u.ln() / spec.tickets_per_s;
                }
                (poisson_at_s * 1000.0) as u64
            }
        };
        let mode_name =
            pick(&mut rng, spec.modes.iter().map(|(_, w)| *w), mode_total).map_or("", |k| spec.modes[k].0.as_str());
        let team_size = rules.mode_id(mode_name).and_then(|id| rules.mode(id)).map_or(1, |m| usize::from(m.team_size));
        let sizes = &spec.party_size_weights[..spec.party_size_weights.len().min(team_size).max(1)];
        let party = pick(&mut rng, sizes.iter().copied(), sizes.iter().sum()).unwrap_or(0) + 1;
        let region = pick(&mut rng, region_weights.iter().copied(), region_total).unwrap_or(0);
        let home_dcs = &rules.regions[region].datacenters;
        let home = home_dcs[rng.random_range(0..home_dcs.len())];
        let party_mmr = normal(&mut rng, spec.mmr_mean, spec.mmr_sd);

        let mut line = String::with_capacity(128 + party * 160);
        write!(line, r#"{{"at_ms":{at_ms},"op":"enqueue","ticket":"t{i}","mode":"{mode_name}","players":["#).unwrap();
        for member in 0..party {
            let mmr =
                if party == 1 { party_mmr } else { party_mmr + normal(&mut rng, 0.0, spec.party_mmr_sd) }.max(0.0);
            let base = rng.random_range(8.0..35.0);
            let skip_dc =
                (rng.random::<f64>() < spec.missing_rtt_fraction).then(|| rng.random_range(0..home_dcs.len()));
            if member > 0 {
                line.push(',');
            }
            write!(line, r#"{{"id":"p{player_seq}","mmr":{mmr:.1},"rtt_ms":{{"#).unwrap();
            player_seq += 1;
            let mut first = true;
            for (dc_idx, dc_name) in rules.datacenters.iter().enumerate() {
                let dc_region = usize::from(rules.datacenter_region[dc_idx].0);
                let rtt = if dc_idx == usize::from(home.0) {
                    base
                } else if dc_region == region {
                    if skip_dc.is_some_and(|k| usize::from(home_dcs[k].0) == dc_idx) {
                        continue;
                    }
                    base + rng.random_range(15.0..55.0)
                } else {
                    base + rng.random_range(70.0..160.0)
                };
                if !first {
                    line.push(',');
                }
                first = false;
                write!(line, r#""{dc_name}":{rtt:.1}"#).unwrap();
            }
            line.push_str("}}");
        }
        line.push_str("]}");
        lines.push((at_ms, 2 * i, line));
        if rng.random::<f64>() < spec.cancel_fraction {
            let cancel_at = at_ms + rng.random_range(500..30_000);
            lines.push((cancel_at, 2 * i + 1, format!(r#"{{"at_ms":{cancel_at},"op":"cancel","ticket":"t{i}"}}"#)));
        }
    }
    lines.sort_by_key(|(at, order, _)| (*at, *order));
    let mut out = String::with_capacity(lines.iter().map(|(_, _, l)| l.len() + 1).sum());
    for (_, _, l) in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn pick(rng: &mut SmallRng, weights: impl Iterator<Item = f64>, total: f64) -> Option<usize> {
    let mut x = rng.random::<f64>() * total;
    let mut last = None;
    for (i, w) in weights.enumerate() {
        if x < w {
            return Some(i);
        }
        x -= w;
        last = Some(i);
    }
    last
}

/// Box–Muller: one normal draw.
fn normal(rng: &mut SmallRng, mean: f64, sd: f64) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = include_str!("../../examples/modes.toml");

    fn arrival_times(text: &str) -> Vec<u64> {
        text.lines()
            .map(|l| crate::input::parse_line(l, 0).expect("generated lines parse"))
            .filter(|e| matches!(e, crate::input::InputEvent::Enqueue { .. }))
            .map(|e| e.at_ms())
            .collect()
    }

    #[test]
    fn poisson_arrivals_start_at_zero_never_go_back_and_keep_the_mean_rate() {
        let rules = Rules::from_toml(RULES).unwrap();
        let spec = WorkloadSpec { arrivals: Arrivals::Poisson, ..WorkloadSpec::mixed(&rules, 3, 200.0, 20.0) };
        let text = generate(&rules, &spec);
        assert_eq!(text, generate(&rules, &spec), "same seed, same bytes");
        let at = arrival_times(&text);
        assert_eq!(at.len(), 4_000);
        assert_eq!(at[0], 0);
        assert!(at.windows(2).all(|w| w[0] <= w[1]));
        // 4,000 exponential gaps of mean 5 ms: the sum's sd is 5·√4000 ≈ 316 ms, so the
        // last arrival lies within 20 s ± 2 s unless something is wrong.
        assert!((18_000..22_000).contains(&at[at.len() - 1]), "last arrival at {} ms", at[at.len() - 1]);
        // Bursts: some gaps are far longer than the mean, many tickets share a millisecond.
        let gaps: Vec<u64> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().any(|&g| g >= 20) && gaps.iter().filter(|&&g| g == 0).count() > 100);
    }

    #[test]
    fn even_arrivals_are_evenly_spaced() {
        let rules = Rules::from_toml(RULES).unwrap();
        let at = arrival_times(&generate(&rules, &WorkloadSpec::mixed(&rules, 3, 200.0, 20.0)));
        assert_eq!(at.len(), 4_000);
        assert!(at.iter().enumerate().all(|(i, &t)| t == i as u64 * 5));
    }
}
