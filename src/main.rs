//! `rally`: the one binary. This file only parses the command line, loads configuration
//! and wires the crates together; behaviour lives in the crates.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rally_engine::Rules;
use rally_replay::{ReplayError, ReplayOptions, workload};

mod demo;
mod serve;

#[derive(Parser)]
#[command(name = "rally", version, about = "Rally: matchmaking and game services")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replays an event log through the engine on a virtual clock (the offline simulator).
    Replay(ReplayArgs),
    /// Writes a synthetic event log for `rally replay` (seeded, reproducible).
    Workload(WorkloadArgs),
    /// Runs engine and edge in one process on embedded defaults (Ctrl-C stops it).
    Dev(serve::DevArgs),
    /// The whole game loop with bots: queue over QUIC, parties, game servers, results,
    /// ratings and leaderboards, for a while, printing live matches and waits.
    Demo(serve::DemoArgs),
    /// Mints a dev access token with the dev signing key.
    Token(serve::TokenArgs),
    /// Simulated players against an edge over real QUIC, with latency percentiles.
    Loadgen(serve::LoadgenArgs),
    /// Applies the database migrations (SQLite or Postgres).
    Migrate(serve::MigrateArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// Rules: regions, datacenters and modes (TOML).
    #[arg(long, value_name = "MODES.toml")]
    modes: PathBuf,
    /// Events, one JSON object per line; `-` reads stdin.
    #[arg(long, value_name = "EVENTS.jsonl")]
    input: PathBuf,
    /// Where formed matches go, one JSON object per line; `-` writes stdout.
    #[arg(long, value_name = "MATCHES.jsonl")]
    output: PathBuf,
    /// How long the clock runs on after the last event, ms.
    #[arg(long, value_name = "N", default_value_t = 60_000)]
    drain_ms: u64,
    /// Stop at the first bad line with exit code 2.
    #[arg(long)]
    strict: bool,
    /// Also write the summary as JSON to this file (`-`: stdout).
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// Run every part of a tick on one thread (by default, modes with many tickets waiting
    /// tick at once on threads of their own). The matches are the same.
    #[arg(long)]
    one_thread: bool,
}

#[derive(Args)]
struct WorkloadArgs {
    /// Rules the traffic is for: its modes and datacenters are used (TOML).
    #[arg(long, value_name = "MODES.toml")]
    modes: PathBuf,
    /// Where the events go; `-` writes stdout.
    #[arg(long, value_name = "EVENTS.jsonl", default_value = "-")]
    output: PathBuf,
    /// Tickets per second.
    #[arg(long, allow_negative_numbers = true, default_value_t = 200.0, value_parser = positive_number)]
    rate: f64,
    /// Seconds of arrivals.
    #[arg(long, allow_negative_numbers = true, default_value_t = 60.0, value_parser = non_negative_number)]
    duration_s: f64,
    /// Fraction of tickets that cancel later.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.07, value_parser = fraction)]
    cancel_fraction: f64,
    /// Standard deviation of a party member's rating around the party's: with the example
    /// rules, 60 makes about half of the 3v3 and 5v5 parties wider than a new ticket's
    /// window, 25 hardly any.
    #[arg(long, allow_negative_numbers = true, default_value_t = 60.0, value_parser = non_negative_number)]
    party_mmr_sd: f64,
    /// Evenly spaced arrivals, or exponential gaps at the same mean rate (bursts and lulls;
    /// as many tickets, the last near the end of `--duration-s`).
    #[arg(long, value_enum, default_value_t = ArrivalsArg::Even)]
    arrivals: ArrivalsArg,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum ArrivalsArg {
    Even,
    Poisson,
}

/// A finite number above 0 (`--rate`): out of range is a usage error, as a typo is.
fn positive_number(text: &str) -> Result<f64, String> {
    number_where(text, |v| v > 0.0, "a finite number above 0")
}

/// A finite number, 0 or more.
fn non_negative_number(text: &str) -> Result<f64, String> {
    number_where(text, |v| v >= 0.0, "a finite number, 0 or more")
}

/// A fraction, 0 to 1.
fn fraction(text: &str) -> Result<f64, String> {
    number_where(text, |v| (0.0..=1.0).contains(&v), "a number from 0 to 1")
}

/// Negative values reach this as values, not as unknown flags (`allow_negative_numbers`
/// on each such argument), so `--rate -1` says what a rate must be.
fn number_where(text: &str, ok: impl Fn(f64) -> bool, expected: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        // `+ 0.0` turns -0 into 0, so "-0" is not written back as a negative zero.
        Ok(v) if v.is_finite() && ok(v) => Ok(v + 0.0),
        _ => Err(format!("expected {expected}")),
    }
}

/// Exit codes: 0 success, 1 a runtime error (unreadable file, bad rules…), 2 `replay
/// --strict` stopped at a bad line, 64 a command-line usage error (EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` arrive here too, as successes.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let result = match cli.command {
        Cmd::Replay(args) => replay(args),
        Cmd::Workload(args) => generate(args),
        Cmd::Dev(args) => serve::dev(args).map(|()| ExitCode::SUCCESS),
        Cmd::Demo(args) => demo::demo(args).map(|()| ExitCode::SUCCESS),
        Cmd::Token(args) => serve::token(args).map(|()| ExitCode::SUCCESS),
        Cmd::Loadgen(args) => serve::loadgen(args).map(|()| ExitCode::SUCCESS),
        Cmd::Migrate(args) => serve::migrate(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_rules(path: &Path) -> Result<Arc<Rules>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rules = Rules::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
    Ok(Arc::new(rules))
}

fn open_input(path: &Path) -> Result<Box<dyn BufRead>> {
    Ok(if path == Path::new("-") {
        Box::new(BufReader::with_capacity(1 << 20, io::stdin()))
    } else {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, file))
    })
}

fn open_output(path: &Path) -> Result<Box<dyn Write>> {
    Ok(if path == Path::new("-") {
        Box::new(BufWriter::with_capacity(1 << 20, io::stdout()))
    } else {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Box::new(BufWriter::with_capacity(1 << 20, file))
    })
}

fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let rules = load_rules(&args.modes)?;
    let mut input = open_input(&args.input)?;
    let mut output = open_output(&args.output)?;
    let options = ReplayOptions {
        drain_ms: args.drain_ms,
        strict: args.strict,
        parallel_pools: !args.one_thread,
        ..ReplayOptions::default()
    };
    let mut diag = BufWriter::new(io::stderr().lock());
    let summary = match rally_replay::run(rules, options, &mut input, &mut output, &mut diag) {
        Ok(summary) => summary,
        Err(ReplayError::Strict { line, reason }) => {
            output.flush()?;
            writeln!(diag, "error: --strict: line {line}: {reason}")?;
            diag.flush()?;
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    output.flush()?;
    writeln!(diag, "{summary}")?;
    diag.flush()?;
    if let Some(path) = args.summary_json {
        let mut out = open_output(&path)?;
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(args: WorkloadArgs) -> Result<ExitCode> {
    let rules = load_rules(&args.modes)?;
    let mut spec = workload::WorkloadSpec::mixed(&rules, args.seed, args.rate, args.duration_s);
    spec.cancel_fraction = args.cancel_fraction;
    spec.party_mmr_sd = args.party_mmr_sd;
    spec.arrivals = match args.arrivals {
        ArrivalsArg::Even => workload::Arrivals::Even,
        ArrivalsArg::Poisson => workload::Arrivals::Poisson,
    };
    let mut out = open_output(&args.output)?;
    out.write_all(workload::generate(&rules, &spec).as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_flags_trim_and_read_minus_zero_as_zero() {
        assert_eq!(non_negative_number(" 25 "), Ok(25.0));
        let zero = non_negative_number("-0").unwrap();
        assert!(zero == 0.0 && zero.is_sign_positive(), "{zero}");
        assert!(positive_number("-0").is_err());
        assert_eq!(fraction("1"), Ok(1.0));
        assert!(fraction("-0.1").is_err());
    }
}
