//! Match quality: on mixed traffic the engine must beat a plain greedy matcher at equal
//! validity — at least as many tickets matched, lower p95 wait, lower mean imbalance.
//!
//! The p95 wait compared is over every ticket that was not cancelled, a ticket never
//! matched counting as waiting forever (`Quality::wait_p95_all_ms`). The p95 over matched
//! tickets only (what `rally replay`'s summary prints) rewards leaving hard tickets
//! unmatched, and the engine matches more of them; it is asserted too, as the fourth
//! criterion: lower than greedy's in these four runs and in most held-out ones
//! (BENCHMARKS.md), though not in every held-out run at 40/s and 1,000/s.

use std::sync::Arc;

use rally_engine::Rules;
use rally_replay::check::{Quality, evaluate};
use rally_replay::workload::{Arrivals, WorkloadSpec, generate};
use rally_replay::{ReplayOptions, greedy};

const RULES: &str = include_str!("../../examples/modes.toml");

fn engine_matches(rules: &Arc<Rules>, events: &str, drain_ms: u64) -> String {
    let mut out = Vec::new();
    let mut diag = Vec::new();
    rally_replay::run(
        rules.clone(),
        ReplayOptions { drain_ms, ..ReplayOptions::default() },
        &mut events.as_bytes(),
        &mut out,
        &mut diag,
    )
    .expect("replay runs");
    String::from_utf8(out).expect("utf-8 output")
}

/// How long the clock runs on after the last arrival in the asserted runs.
const DRAIN_MS: u64 = 30_000;

fn compare(spec: &WorkloadSpec) -> (Quality, Quality) {
    compare_under(&Arc::new(Rules::from_toml(RULES).unwrap()), spec, DRAIN_MS)
}

fn compare_under(rules: &Arc<Rules>, spec: &WorkloadSpec, drain: u64) -> (Quality, Quality) {
    let events = generate(rules, spec);
    let (engine_out, greedy_out) = (engine_matches(rules, &events, drain), greedy::run(rules, &events, drain));
    if let Ok(dir) = std::env::var("RALLY_QUALITY_DUMP") {
        let write = |what: &str, text: &str| {
            let path = format!("{dir}/seed{}-{what}.jsonl", spec.seed);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("RALLY_QUALITY_DUMP: {path}: {e}"));
        };
        write("events", &events);
        write("engine", &engine_out);
        write("greedy", &greedy_out);
    }
    let engine = evaluate(rules, &events, &engine_out).expect("engine matches are valid");
    let greedy = evaluate(rules, &events, &greedy_out).expect("greedy matches are valid");
    (engine, greedy)
}

/// One seeded minute of mixed traffic at `rate` tickets per second.
fn engine_beats_greedy(seed: u64, rate: f64) {
    let rules = Rules::from_toml(RULES).unwrap();
    engine_beats_greedy_on(WorkloadSpec::mixed(&rules, seed, rate, 60.0));
}

fn engine_beats_greedy_on(spec: WorkloadSpec) {
    let (seed, rate) = (spec.seed, spec.tickets_per_s);
    let (engine, greedy) = compare(&spec);
    eprintln!("seed {seed} rate {rate}\n  engine {engine:?}\n  greedy {greedy:?}");
    assert!(engine.tickets_matched >= greedy.tickets_matched, "seed {seed}: fewer tickets matched");
    assert!(engine.wait_p95_all_ms < greedy.wait_p95_all_ms, "seed {seed}: p95 wait not lower");
    assert!(engine.mean_imbalance < greedy.mean_imbalance, "seed {seed}: imbalance not lower");
    assert!(engine.wait_p95_ms < greedy.wait_p95_ms, "seed {seed}: p95 wait of matched tickets not lower");
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

/// Held-out seeds and rates, beyond the four asserted above: prints one line per run and
/// how many runs missed each criterion. Run it after changing the matcher:
/// `cargo test --release -p rally-replay --test quality -- --ignored --nocapture`.
/// `RALLY_QUALITY_SEEDS=FIRST..LAST` picks the seeds (default 5..25) and
/// `RALLY_QUALITY_RATES=40,80` the arrival rates they cycle through (default 40 to 500/s),
/// `RALLY_QUALITY_MODES=FILE.toml` other rules than `examples/modes.toml`, and
/// `RALLY_QUALITY_DRAIN_MS` a drain other than 30 s after the last arrival,
/// `RALLY_QUALITY_SHAPE=party-heavy` the traffic of `WorkloadSpec::party_heavy`,
/// `RALLY_QUALITY_PARTY_WEIGHTS=0.2,0.2,0.2,0.2,0.2` other weights of party sizes 1, 2, …,
/// `RALLY_QUALITY_MODE_WEIGHTS=1,0,0,0` other weights of the modes (in the rules' order),
/// `RALLY_QUALITY_CANCEL=0.1` another fraction of tickets that cancel,
/// `RALLY_QUALITY_PARTY_SD=25` another spread of party members' ratings (default 60),
/// `RALLY_QUALITY_ARRIVALS=poisson` Poisson arrivals instead of evenly spaced ones,
/// `RALLY_QUALITY_MMR_SD=450` another spread of ratings (default 300),
/// `RALLY_QUALITY_REGION_WEIGHTS=0.6,0.3,0.1` other weights of the home regions, and
/// `RALLY_QUALITY_DUMP=DIR` writes each run's events and both matchers' matches there
/// (`seedN-events.jsonl`, `seedN-engine.jsonl`, `seedN-greedy.jsonl`) for a closer look.
#[test]
#[ignore = "minutes of replay; run by hand after matcher changes"]
fn held_out_sweep() {
    let rules_text = match std::env::var("RALLY_QUALITY_MODES") {
        Ok(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("RALLY_QUALITY_MODES={path}: {e}")),
        Err(_) => RULES.to_owned(),
    };
    let rules = Arc::new(Rules::from_toml(&rules_text).unwrap());
    let drain =
        std::env::var("RALLY_QUALITY_DRAIN_MS").map_or(DRAIN_MS, |v| v.parse().expect("RALLY_QUALITY_DRAIN_MS: ms"));
    let seeds = std::env::var("RALLY_QUALITY_SEEDS").unwrap_or_else(|_| "5..25".to_owned());
    let (first, last) = seeds.split_once("..").expect("RALLY_QUALITY_SEEDS: FIRST..LAST");
    let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
    let rates = env_numbers("RALLY_QUALITY_RATES").unwrap_or_else(|| vec![40.0, 80.0, 150.0, 300.0, 500.0]);
    let party_weights = env_numbers("RALLY_QUALITY_PARTY_WEIGHTS");
    let mode_weights = env_numbers("RALLY_QUALITY_MODE_WEIGHTS");
    if let Some(weights) = &mode_weights {
        assert_eq!(weights.len(), rules.modes.len(), "RALLY_QUALITY_MODE_WEIGHTS: one weight per mode");
    }
    let cancel_fraction = env_number("RALLY_QUALITY_CANCEL");
    let party_sd = env_number("RALLY_QUALITY_PARTY_SD");
    let mmr_sd = env_number("RALLY_QUALITY_MMR_SD");
    let region_weights = env_numbers("RALLY_QUALITY_REGION_WEIGHTS");
    if let Some(weights) = &region_weights {
        assert_eq!(weights.len(), rules.regions.len(), "RALLY_QUALITY_REGION_WEIGHTS: one weight per region");
    }
    let arrivals = match std::env::var("RALLY_QUALITY_ARRIVALS").as_deref() {
        Err(_) | Ok("even") => Arrivals::Even,
        Ok("poisson") => Arrivals::Poisson,
        Ok(other) => panic!("RALLY_QUALITY_ARRIVALS={other}: even or poisson"),
    };
    let shape: fn(&Rules, u64, f64, f64) -> WorkloadSpec = match std::env::var("RALLY_QUALITY_SHAPE").as_deref() {
        Err(_) | Ok("mixed") => WorkloadSpec::mixed,
        Ok("party-heavy") => WorkloadSpec::party_heavy,
        Ok(other) => panic!("RALLY_QUALITY_SHAPE={other}: mixed or party-heavy"),
    };
    let (mut runs, mut fewer, mut slower, mut worse) = (0, 0, 0, 0);
    for seed in first..last {
        let rate = rates[seed as usize % rates.len()];
        let mut spec = shape(&rules, seed, rate, 60.0);
        spec.arrivals = arrivals;
        if let Some(weights) = &party_weights {
            spec.party_size_weights.clone_from(weights);
        }
        if let Some(weights) = &mode_weights {
            for ((_, w), &new) in spec.modes.iter_mut().zip(weights) {
                *w = new;
            }
        }
        if let Some(fraction) = cancel_fraction {
            spec.cancel_fraction = fraction;
        }
        if let Some(sd) = party_sd {
            spec.party_mmr_sd = sd;
        }
        if let Some(sd) = mmr_sd {
            spec.mmr_sd = sd;
        }
        if let Some(weights) = &region_weights {
            spec.region_weights.clone_from(weights);
        }
        let (e, g) = compare_under(&rules, &spec, drain);
        runs += 1;
        fewer += usize::from(e.tickets_matched < g.tickets_matched);
        slower += usize::from(e.wait_p95_all_ms >= g.wait_p95_all_ms);
        worse += usize::from(e.mean_imbalance >= g.mean_imbalance);
        eprintln!(
            "seed {seed:>3} rate {rate:>3}: matched {} / {}, p95 wait {} / {} ms, imbalance {:.1} / {:.1}, \
             p95 wait of matched {} / {} ms, mean wait {:.0} / {:.0} ms",
            e.tickets_matched,
            g.tickets_matched,
            e.wait_p95_all_ms,
            g.wait_p95_all_ms,
            e.mean_imbalance,
            g.mean_imbalance,
            e.wait_p95_ms,
            g.wait_p95_ms,
            e.mean_wait_ms,
            g.mean_wait_ms
        );
    }
    eprintln!("{runs} runs: fewer matched in {fewer}, p95 wait not lower in {slower}, imbalance not lower in {worse}");
    assert_eq!((fewer, slower, worse), (0, 0, 0), "the engine lost to greedy on some held-out runs");
}

/// A number from environment variable `name`, if it is set.
fn env_number(name: &str) -> Option<f64> {
    let text = std::env::var(name).ok()?;
    Some(text.trim().parse().unwrap_or_else(|e| panic!("{name}: {text:?} is not a number: {e}")))
}

/// A comma-separated list of numbers from environment variable `name`, if it is set.
fn env_numbers(name: &str) -> Option<Vec<f64>> {
    let text = std::env::var(name).ok()?;
    Some(
        text.split(',')
            .map(|n| n.trim().parse().unwrap_or_else(|e| panic!("{name}: {n:?} is not a number: {e}")))
            .collect(),
    )
}
