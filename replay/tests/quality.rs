//! Match quality: on mixed traffic the engine must beat a plain greedy matcher at equal
//! validity — at least as many tickets matched, lower p95 wait, lower mean imbalance.
//!
//! The p95 wait compared is over every ticket that was not cancelled, a ticket never
//! matched counting as waiting forever (`Quality::wait_p95_all_ms`). The p95 over matched
//! tickets only (what `rally replay`'s summary prints) rewards leaving hard tickets
//! unmatched, and the engine matches more of them; it is asserted too, as the fourth
//! criterion: lower than greedy's in these four runs and in most held-out ones
//! (BENCHMARKS.md), though not in every held-out run at 40/s and 1,000/s. So is the p95
//! over the tickets both matched (`Contest::common_wait_p95_ms`), which compares the same
//! tickets.

use std::sync::Arc;

use rally_engine::Rules;
use rally_replay::greedy::{self, Contest};
use rally_replay::workload::{WorkloadSpec, generate};

const RULES: &str = include_str!("../../examples/modes.toml");

/// How long the clock runs on after the last arrival in the asserted runs.
const DRAIN_MS: u64 = 30_000;

fn compare(spec: &WorkloadSpec) -> Contest {
    let rules = Arc::new(Rules::from_toml(RULES).unwrap());
    greedy::contest(&rules, &generate(&rules, spec), DRAIN_MS).expect("both matchers write valid matches")
}

/// One seeded minute of mixed traffic at `rate` tickets per second.
fn engine_beats_greedy(seed: u64, rate: f64) {
    let rules = Rules::from_toml(RULES).unwrap();
    engine_beats_greedy_on(WorkloadSpec::mixed(&rules, seed, rate, 60.0));
}

fn engine_beats_greedy_on(spec: WorkloadSpec) {
    let (seed, rate) = (spec.seed, spec.tickets_per_s);
    let contest = compare(&spec);
    let (engine, greedy) = (&contest.engine, &contest.greedy);
    let (common_engine, common_greedy) = contest.common_wait_p95_ms().expect("some tickets matched by both");
    eprintln!(
        "seed {seed} rate {rate}\n  engine {engine:?}\n  greedy {greedy:?}\n  p95 wait of both-matched \
         {common_engine} / {common_greedy} ms"
    );
    assert!(engine.tickets_matched >= greedy.tickets_matched, "seed {seed}: fewer tickets matched");
    assert!(engine.wait_p95_all_ms < greedy.wait_p95_all_ms, "seed {seed}: p95 wait not lower");
    assert!(engine.mean_imbalance < greedy.mean_imbalance, "seed {seed}: imbalance not lower");
    assert!(engine.wait_p95_ms < greedy.wait_p95_ms, "seed {seed}: p95 wait of matched tickets not lower");
    assert!(common_engine < common_greedy, "seed {seed}: p95 wait of tickets both matched not lower");
}

#[test]
fn beats_greedy_at_100_tickets_per_s() {
    engine_beats_greedy(1, 100.0);
}

#[test]
fn beats_greedy_at_300_tickets_per_s() {
    engine_beats_greedy(2, 300.0);
}

#[test]
fn beats_greedy_at_40_tickets_per_s() {
    engine_beats_greedy(3, 40.0);
}

#[test]
fn beats_greedy_at_150_tickets_per_s() {
    engine_beats_greedy(4, 150.0);
}

/// Parties of every size equally likely (the mixed shape's are mostly solo): more trios,
/// quads and full stacks, whose sizes leave one way to split a set into teams.
#[test]
fn beats_greedy_with_parties_of_every_size_equally_likely() {
    let rules = Rules::from_toml(RULES).unwrap();
    let spec = WorkloadSpec { party_size_weights: vec![0.2; 5], ..WorkloadSpec::mixed(&rules, 5, 40.0, 60.0) };
    engine_beats_greedy_on(spec);
}
