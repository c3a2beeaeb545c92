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
//!   closer look;
//! - `RALLY_QUALITY_JOBS=N` runs N contests at once (default: one per core). Lines still print
//!   in run order, and every run's figures are the same whatever N: each contest is
//!   deterministic on its own.
//!
//! A bad setting ends the run with a message naming the variable and exit code 64.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

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
    let mode_weights = env_list("RALLY_QUALITY_MODE_WEIGHTS")?;
    if mode_weights.as_ref().is_some_and(|w| w.len() != rules.modes.len()) {
        return Err(format!("RALLY_QUALITY_MODE_WEIGHTS: one weight per mode ({})", rules.modes.len()));
    }
    let region_weights = env_list("RALLY_QUALITY_REGION_WEIGHTS")?;
    if region_weights.as_ref().is_some_and(|w| w.len() != rules.regions.len()) {
        return Err(format!("RALLY_QUALITY_REGION_WEIGHTS: one weight per region ({})", rules.regions.len()));
    }
    let traffic = Traffic {
        shape: match std::env::var("RALLY_QUALITY_SHAPE").as_deref() {
            Err(_) | Ok("mixed") => WorkloadSpec::mixed,
            Ok("party-heavy") => WorkloadSpec::party_heavy,
            Ok(other) => return Err(format!("RALLY_QUALITY_SHAPE={other}: mixed or party-heavy")),
        },
        rates,
        duration_s,
        arrivals: match std::env::var("RALLY_QUALITY_ARRIVALS").as_deref() {
            Err(_) | Ok("even") => Arrivals::Even,
            Ok("poisson") => Arrivals::Poisson,
            Ok(other) => return Err(format!("RALLY_QUALITY_ARRIVALS={other}: even or poisson")),
        },
        party_weights: env_list("RALLY_QUALITY_PARTY_WEIGHTS")?,
        mode_weights,
        region_weights,
        cancel_fraction: env_value("RALLY_QUALITY_CANCEL")?,
        party_sd: env_value("RALLY_QUALITY_PARTY_SD")?,
        mmr_sd: env_value("RALLY_QUALITY_MMR_SD")?,
    };
    let dump_dir = std::env::var("RALLY_QUALITY_DUMP").ok();
    let jobs = match env_value::<usize>("RALLY_QUALITY_JOBS")? {
        Some(0) => return Err("RALLY_QUALITY_JOBS: at least 1".to_owned()),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };

    let runs: Vec<Run> = match std::env::var("RALLY_QUALITY_EVENTS") {
        Ok(files) => {
            let paths: Vec<&str> = files.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
            // Before any run starts, so a typo does not wait for the whole sweep.
            for path in &paths {
                std::fs::metadata(path).map_err(|e| format!("RALLY_QUALITY_EVENTS: {path}: {e}"))?;
            }
            paths.into_iter().map(|p| Run::File(p.to_owned())).collect()
        }
        Err(_) => (first..last).map(Run::Seed).collect(),
    };
    let mut tally = Tally::default();
    let mut first_error = None;
    in_run_order(
        runs.len(),
        jobs,
        |i| runs[i].contest(&rules, drain, &traffic, dump_dir.as_deref()),
        |outcome| match outcome {
            Ok((label, contest)) => tally.report(&label, &contest),
            Err(message) => {
                first_error.get_or_insert(message);
            }
        },
    );
    tally.summary();
    first_error.map_or(Ok(()), Err)
}

/// The traffic settings of generated runs (`RALLY_QUALITY_*`, see the top of this file).
struct Traffic {
    shape: fn(&Rules, u64, f64, f64) -> WorkloadSpec,
    rates: Vec<f64>,
    duration_s: f64,
    arrivals: Arrivals,
    party_weights: Option<Vec<f64>>,
    mode_weights: Option<Vec<f64>>,
    region_weights: Option<Vec<f64>>,
    cancel_fraction: Option<f64>,
    party_sd: Option<f64>,
    mmr_sd: Option<f64>,
}

impl Traffic {
    /// Seed `seed`'s rate and workload.
    fn spec(&self, rules: &Rules, seed: u64) -> (f64, WorkloadSpec) {
        let rate = self.rates[seed as usize % self.rates.len()];
        let mut spec = (self.shape)(rules, seed, rate, self.duration_s);
        spec.arrivals = self.arrivals;
        if let Some(weights) = &self.party_weights {
            spec.party_size_weights.clone_from(weights);
        }
        if let Some(weights) = &self.mode_weights {
            for ((_, w), &new) in spec.modes.iter_mut().zip(weights) {
                *w = new;
            }
        }
        if let Some(fraction) = self.cancel_fraction {
            spec.cancel_fraction = fraction;
        }
        if let Some(sd) = self.party_sd {
            spec.party_mmr_sd = sd;
        }
        if let Some(sd) = self.mmr_sd {
            spec.mmr_sd = sd;
        }
        if let Some(weights) = &self.region_weights {
            spec.region_weights.clone_from(weights);
        }
        (rate, spec)
    }
}

/// One contest of the sweep: an events file, or a seed of generated traffic.
enum Run {
    File(String),
    Seed(u64),
}

impl Run {
    /// Runs both matchers, dumps their matches if asked; the run's label and the contest.
    fn contest(
        &self,
        rules: &Arc<Rules>,
        drain: u64,
        traffic: &Traffic,
        dump_dir: Option<&str>,
    ) -> Result<(String, greedy::Contest), String> {
        // A matcher writing an invalid match is a bug, not a measurement: stop loudly.
        match self {
            Run::File(path) => {
                let events = std::fs::read_to_string(path).map_err(|e| format!("RALLY_QUALITY_EVENTS: {path}: {e}"))?;
                let contest = greedy::contest(rules, &events, drain).unwrap_or_else(|e| panic!("{path}: {e}"));
                if let Some(dir) = dump_dir {
                    let name = std::path::Path::new(path).file_stem().map_or("events".into(), |s| s.to_string_lossy());
                    dump(dir, &name, None, &contest)?;
                }
                Ok((path.clone(), contest))
            }
            Run::Seed(seed) => {
                let (rate, spec) = traffic.spec(rules, *seed);
                let events = generate(rules, &spec);
                let contest = greedy::contest(rules, &events, drain).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                if let Some(dir) = dump_dir {
                    dump(dir, &format!("seed{seed}"), Some(&events), &contest)?;
                }
                Ok((format!("seed {seed:>3} rate {rate:>3}"), contest))
            }
        }
    }
}

/// Runs `work(0..n)` on `jobs` threads and hands each result to `each` in index order, as
/// soon as it and every earlier one are done: a long sweep reports as it goes, in the same
/// order whatever the number of threads.
fn in_run_order<T: Send>(n: usize, jobs: usize, work: impl Fn(usize) -> T + Sync, mut each: impl FnMut(T)) {
    let next = AtomicUsize::new(0);
    let (done, finished) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(n) {
            let (next, work, done) = (&next, &work, done.clone());
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || done.send((i, work(i))).is_err() {
                        break;
                    }
                }
            });
        }
        // The workers hold the only senders now, so the loop ends when the last one does.
        drop(done);
        let mut ready = BTreeMap::new();
        let mut due = 0;
        for (i, result) in finished {
            ready.insert(i, result);
            while let Some(result) = ready.remove(&due) {
                each(result);
                due += 1;
            }
        }
    });
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
