//! The held-out quality sweep: the engine against the greedy baseline over many seeded runs
//! beyond the ones `tests/quality.rs` asserts on. Prints one line per run and how many runs
//! missed each criterion; it measures, it does not fail (BENCHMARKS.md records the figures).
//! Each line also has the p95 wait over matched tickets and over the tickets both matchers
//! matched (`Contest::common_wait_p95_ms`), and the mean wait.
//! Run it after changing the matcher:
//!
//! ```sh
//! cargo bench -p rally-replay --bench quality_sweep
//! RALLY_QUALITY_SEEDS=200..260 RALLY_QUALITY_RATES=40,80 cargo bench -p rally-replay --bench quality_sweep
//! ```
//!
//! Settings, all from the environment:
//! - `RALLY_QUALITY_SEEDS=FIRST..LAST` the seeds (default 5..25); seed *s* runs at rate
//!   *s* mod (number of rates), so each seed appears once;
//! - `RALLY_QUALITY_RATES=40,80` the arrival rates they cycle through (default 40 to 500/s);
//! - `RALLY_QUALITY_MODES=FILE.toml` other rules than `examples/modes.toml`;
//! - `RALLY_QUALITY_DRAIN_MS` a drain other than 30 s after the last arrival;
//! - `RALLY_QUALITY_DURATION_S` arrivals for other than 60 s;
//! - `RALLY_QUALITY_SHAPE=party-heavy` the traffic of `WorkloadSpec::party_heavy`;
//! - `RALLY_QUALITY_PARTY_WEIGHTS=0.2,0.2,0.2,0.2,0.2` other weights of party sizes 1, 2, …;
//! - `RALLY_QUALITY_MODE_WEIGHTS=1,0,0,0` other weights of the modes (in the rules' order);
//! - `RALLY_QUALITY_CANCEL=0.1` another fraction of tickets that cancel;
//! - `RALLY_QUALITY_PARTY_SD=25` another spread of party members' ratings (default 60);
//! - `RALLY_QUALITY_ARRIVALS=poisson` Poisson arrivals instead of evenly spaced ones;
//! - `RALLY_QUALITY_MMR_SD=450` another spread of ratings (default 300);
//! - `RALLY_QUALITY_REGION_WEIGHTS=0.6,0.3,0.1` other weights of the home regions;
//! - `RALLY_QUALITY_EVENTS=FILE,FILE…` contests these `EVENTS.jsonl` files (recorded traffic,
//!   or another generator's) instead of generated ones; the traffic settings above are then
//!   ignored;
//! - `RALLY_QUALITY_DUMP=DIR` writes each run's events and both matchers' matches there
//!   (`seedN-events.jsonl`, `seedN-engine.jsonl`, `seedN-greedy.jsonl`; for
//!   `RALLY_QUALITY_EVENTS`, the matches as `NAME-engine.jsonl` and `NAME-greedy.jsonl`) for a
//!   closer look.
//!
//! A bad setting ends the run with a message naming the variable and exit code 64.

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;

use rally_engine::Rules;
use rally_replay::greedy;
use rally_replay::workload::{Arrivals, WorkloadSpec, generate};

const RULES: &str = include_str!("../../examples/modes.toml");
/// The drain of the asserted runs in `tests/quality.rs`.
const DRAIN_MS: u64 = 30_000;
/// The usage-error exit code (sysexits `EX_USAGE`), as `rally` uses.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    match sweep() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("quality_sweep: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn sweep() -> Result<(), String> {
    let rules_text = match std::env::var("RALLY_QUALITY_MODES") {
        Ok(path) => std::fs::read_to_string(&path).map_err(|e| format!("RALLY_QUALITY_MODES={path}: {e}"))?,
        Err(_) => RULES.to_owned(),
    };
    let rules = Arc::new(Rules::from_toml(&rules_text).map_err(|e| format!("RALLY_QUALITY_MODES: {e}"))?);
    let drain = env_value("RALLY_QUALITY_DRAIN_MS")?.unwrap_or(DRAIN_MS);
    let duration_s: f64 = env_value("RALLY_QUALITY_DURATION_S")?.unwrap_or(60.0);
    if !(duration_s.is_finite() && duration_s > 0.0) {
        return Err("RALLY_QUALITY_DURATION_S: seconds above 0".to_owned());
    }
    let seeds = std::env::var("RALLY_QUALITY_SEEDS").unwrap_or_else(|_| "5..25".to_owned());
    let (first, last) = seeds
        .split_once("..")
        .and_then(|(first, last)| Some((first.trim().parse::<u64>().ok()?, last.trim().parse::<u64>().ok()?)))
        .ok_or_else(|| format!("RALLY_QUALITY_SEEDS={seeds}: FIRST..LAST, two whole numbers"))?;
    let rates = env_list("RALLY_QUALITY_RATES")?.unwrap_or_else(|| vec![40.0, 80.0, 150.0, 300.0, 500.0]);
    if rates.is_empty() || rates.iter().any(|&r| !(r.is_finite() && r > 0.0)) {
        return Err("RALLY_QUALITY_RATES: positive tickets per second".to_owned());
    }
    let party_weights = env_list("RALLY_QUALITY_PARTY_WEIGHTS")?;
    let mode_weights = env_list("RALLY_QUALITY_MODE_WEIGHTS")?;
    if mode_weights.as_ref().is_some_and(|w| w.len() != rules.modes.len()) {
        return Err(format!("RALLY_QUALITY_MODE_WEIGHTS: one weight per mode ({})", rules.modes.len()));
    }
    let region_weights = env_list("RALLY_QUALITY_REGION_WEIGHTS")?;
    if region_weights.as_ref().is_some_and(|w| w.len() != rules.regions.len()) {
        return Err(format!("RALLY_QUALITY_REGION_WEIGHTS: one weight per region ({})", rules.regions.len()));
    }
    let cancel_fraction = env_value("RALLY_QUALITY_CANCEL")?;
    let party_sd = env_value("RALLY_QUALITY_PARTY_SD")?;
    let mmr_sd = env_value("RALLY_QUALITY_MMR_SD")?;
    let arrivals = match std::env::var("RALLY_QUALITY_ARRIVALS").as_deref() {
        Err(_) | Ok("even") => Arrivals::Even,
        Ok("poisson") => Arrivals::Poisson,
        Ok(other) => return Err(format!("RALLY_QUALITY_ARRIVALS={other}: even or poisson")),
    };
    let shape: fn(&Rules, u64, f64, f64) -> WorkloadSpec = match std::env::var("RALLY_QUALITY_SHAPE").as_deref() {
        Err(_) | Ok("mixed") => WorkloadSpec::mixed,
        Ok("party-heavy") => WorkloadSpec::party_heavy,
        Ok(other) => return Err(format!("RALLY_QUALITY_SHAPE={other}: mixed or party-heavy")),
    };
    let dump_dir = std::env::var("RALLY_QUALITY_DUMP").ok();

    let mut tally = Tally::default();
    if let Ok(files) = std::env::var("RALLY_QUALITY_EVENTS") {
        for path in files.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let events = std::fs::read_to_string(path).map_err(|e| format!("RALLY_QUALITY_EVENTS: {path}: {e}"))?;
            let contest = greedy::contest(&rules, &events, drain).unwrap_or_else(|e| panic!("{path}: {e}"));
            if let Some(dir) = &dump_dir {
                let name = std::path::Path::new(path).file_stem().map_or("events".into(), |s| s.to_string_lossy());
                dump(dir, &name, None, &contest)?;
            }
            tally.report(path, &contest);
        }
        tally.summary();
        return Ok(());
    }
    for seed in first..last {
        let rate = rates[seed as usize % rates.len()];
        let mut spec = shape(&rules, seed, rate, duration_s);
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
        let events = generate(&rules, &spec);
        // A matcher writing an invalid match is a bug, not a measurement: stop loudly.
        let contest = greedy::contest(&rules, &events, drain).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        if let Some(dir) = &dump_dir {
            dump(dir, &format!("seed{seed}"), Some(&events), &contest)?;
        }
        tally.report(&format!("seed {seed:>3} rate {rate:>3}"), &contest);
    }
    tally.summary();
    Ok(())
}

/// How many runs missed each criterion.
#[derive(Default)]
struct Tally {
    runs: usize,
    fewer: usize,
    slower: usize,
    worse: usize,
    slower_common: usize,
}

impl Tally {
    /// Prints one run's line and counts its misses.
    fn report(&mut self, label: &str, contest: &greedy::Contest) {
        let (e, g) = (&contest.engine, &contest.greedy);
        // No ticket matched by both (an empty run) counts as lost, and prints as 0 / 0.
        let (common_e, common_g) = contest.common_wait_p95_ms().unwrap_or_default();
        self.runs += 1;
        self.fewer += usize::from(e.tickets_matched < g.tickets_matched);
        self.slower += usize::from(e.wait_p95_all_ms >= g.wait_p95_all_ms);
        self.worse += usize::from(e.mean_imbalance >= g.mean_imbalance);
        self.slower_common += usize::from(common_e >= common_g);
        eprintln!(
            "{label}: matched {} / {}, p95 wait {} / {} ms, imbalance {:.1} / {:.1}, \
             p95 wait of matched {} / {} ms, mean wait {:.0} / {:.0} ms, p95 wait of both-matched {common_e} / \
             {common_g} ms",
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

    /// Prints how many runs missed each criterion.
    fn summary(&self) {
        eprintln!(
            "{} runs: fewer matched in {}, p95 wait not lower in {}, imbalance not lower in {}, \
             p95 wait of both-matched not lower in {}",
            self.runs, self.fewer, self.slower, self.worse, self.slower_common
        );
    }
}

/// Writes a run's events (when generated) and both matchers' matches to `dir` as
/// `{stem}-events.jsonl`, `{stem}-engine.jsonl` and `{stem}-greedy.jsonl`.
fn dump(dir: &str, stem: &str, events: Option<&str>, contest: &greedy::Contest) -> Result<(), String> {
    let outputs = [("engine", contest.engine_matches.as_str()), ("greedy", contest.greedy_matches.as_str())];
    for (what, text) in events.map(|e| ("events", e)).into_iter().chain(outputs) {
        let path = format!("{dir}/{stem}-{what}.jsonl");
        std::fs::write(&path, text).map_err(|e| format!("RALLY_QUALITY_DUMP: {path}: {e}"))?;
    }
    Ok(())
}

/// The value of environment variable `name`, if it is set.
fn env_value<T: FromStr>(name: &str) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    let Ok(text) = std::env::var(name) else { return Ok(None) };
    text.trim().parse().map(Some).map_err(|e| format!("{name}={text:?}: {e}"))
}

/// A comma-separated list of numbers from environment variable `name`, if it is set.
fn env_list(name: &str) -> Result<Option<Vec<f64>>, String> {
    let Ok(text) = std::env::var(name) else { return Ok(None) };
    text.split(',')
        .map(|n| n.trim().parse().map_err(|e| format!("{name}={text:?}: {n:?}: {e}")))
        .collect::<Result<_, _>>()
        .map(Some)
}
