//! The `rally` binary end to end: exit codes, stdin/stdout, summary file, clear errors.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const MODES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/modes.toml");
const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/events.jsonl");

fn rally(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rally"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rally starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rally-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn replays_the_example_from_file_to_stdout_with_a_summary() {
    let dir = scratch("summary");
    let summary_path = dir.join("summary.json");
    let out = rally(
        &[
            "replay",
            "--modes",
            MODES,
            "--input",
            EVENTS,
            "--output",
            "-",
            "--summary-json",
            summary_path.to_str().unwrap(),
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let matches = String::from_utf8(out.stdout).unwrap();
    assert!(matches.lines().count() >= 2, "{matches}");
    for line in matches.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["match"].is_string() && v["teams"].is_array());
    }
    assert!(stderr.contains("wait ms"), "the summary table goes to stderr: {stderr}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["matches"].as_u64().unwrap() as usize, matches.lines().count());
    for key in [
        "lines_read",
        "accepted",
        "rejected",
        "tickets_matched",
        "wait_ms",
        "mean_spread",
        "mean_imbalance",
        "mean_worst_rtt_ms",
        "tick_us",
        "searches",
        "neighbours_scanned",
        "wall_ms",
        "by_mode",
    ] {
        assert!(summary.get(key).is_some(), "summary lacks {key}");
    }
    // Each mode's part, in the JSON and as a row of the text table.
    let mut modes: Vec<&String> = summary["by_mode"].as_object().unwrap().keys().collect();
    modes.sort();
    assert_eq!(modes, ["duel-1v1", "ffa-8", "squad-5v5", "trio-3v3"], "{summary}");
    assert_eq!(summary["by_mode"]["duel-1v1"]["matches"], 3, "{summary}");
    assert!(stderr.lines().any(|l| l.starts_with("squad-5v5 ")), "a row per mode: {stderr}");
    for (key, fields) in [("wait_ms", ["p50", "p95", "p99", "max"]), ("tick_us", ["p50", "p95", "p99", "max"])] {
        for field in fields {
            assert!(summary[key][field].is_number(), "summary lacks {key}.{field}: {summary}");
        }
    }
    // The largest wait is exact (the histograms round percentiles to their buckets).
    let longest_wait = matches
        .lines()
        .flat_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["wait_ms"].as_array().unwrap().iter().map(|w| w.as_u64().unwrap()).collect::<Vec<_>>()
        })
        .max()
        .unwrap();
    assert_eq!(summary["wait_ms"]["max"].as_f64(), Some(longest_wait as f64));
    // Without --drain-ms the clock runs on 60 s past the last event.
    let events = std::fs::read_to_string(EVENTS).unwrap();
    let last: serde_json::Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(summary["virtual_end_ms"].as_u64(), Some(last["at_ms"].as_u64().unwrap() + 60_000));
}

#[test]
fn reads_stdin_and_keeps_going_past_bad_lines() {
    let input = b"{\"at_ms\":0,\"op\":\"cancel\",\"ticket\":\"t\"}\nnot json\n";
    let out = rally(&["replay", "--modes", MODES, "--input", "-", "--output", "-", "--drain-ms", "0"], input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("line 2: malformed_json"), "{stderr}");
}

#[test]
fn strict_mode_exits_with_code_2_naming_the_line() {
    let input = b"{\"at_ms\":5,\"op\":\"cancel\",\"ticket\":\"t\"}\n{\"at_ms\":4,\"op\":\"cancel\",\"ticket\":\"t\"}\n";
    let out = rally(&["replay", "--modes", MODES, "--input", "-", "--output", "-", "--strict"], input);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2") && stderr.contains("at_ms_decreasing"), "{stderr}");
}

#[test]
fn strict_mode_keeps_the_matches_formed_before_the_bad_line() {
    let duelist = |ticket: &str, mmr: f64| {
        format!(
            r#"{{"at_ms":0,"op":"enqueue","ticket":"{ticket}","mode":"duel-1v1","players":[{{"id":"p-{ticket}","mmr":{mmr},"rtt_ms":{{"eu-west":20.0}}}}]}}"#
        )
    };
    let input = [
        duelist("a", 1500.0),
        duelist("b", 1510.0),
        r#"{"at_ms":500,"op":"cancel","ticket":"a"}"#.to_owned(),
        r#"{"at_ms":600,"op":"dance","ticket":"a"}"#.to_owned(),
    ]
    .join("\n");
    let out = rally(&["replay", "--modes", MODES, "--input", "-", "--output", "-", "--strict"], input.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 4") && stderr.contains("unknown_op"), "{stderr}");
    assert!(!stderr.contains("lines read"), "no summary after a strict stop: {stderr}");
    let matches = String::from_utf8(out.stdout).unwrap();
    assert_eq!(matches.lines().count(), 1, "the duel formed at 0 is written: {matches}");
    assert!(matches.contains(r#""teams":[["a"],["b"]]"#), "{matches}");
}

#[test]
fn bad_rules_are_a_clear_error() {
    let dir = scratch("rules");
    let path = dir.join("modes.toml");
    std::fs::write(&path, "[regions]\neu = []\n").unwrap();
    let out = rally(&["replay", "--modes", path.to_str().unwrap(), "--input", "-", "--output", "-"], b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("region `eu` lists no datacenters"), "{stderr}");

    let out = rally(&["replay", "--modes", "/nonexistent/modes.toml", "--input", "-", "--output", "-"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/modes.toml"));
}

#[test]
fn workload_output_replays_cleanly() {
    let out = rally(&["workload", "--modes", MODES, "--rate", "50", "--duration-s", "5", "--seed", "9"], b"");
    assert!(out.status.success());
    let events = out.stdout;
    let again = rally(&["workload", "--modes", MODES, "--rate", "50", "--duration-s", "5", "--seed", "9"], b"");
    assert_eq!(events, again.stdout, "same seed, same bytes");
    let out = rally(&["replay", "--modes", MODES, "--input", "-", "--output", "-", "--strict"], &events);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn one_thread_gives_the_same_matches() {
    // A burst under narrow windows: every mode has over 1,000 tickets waiting, so by
    // default their parts of a tick run on threads of their own.
    let narrow = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/narrow-windows.toml");
    let workload = ["workload", "--modes", narrow, "--rate", "12000", "--duration-s", "0.5", "--seed", "3"];
    let events = rally(&workload, b"").stdout;
    let replay = ["replay", "--modes", narrow, "--input", "-", "--output", "-", "--drain-ms", "5000"];
    let (threads, one) = (rally(&replay, &events), rally(&[&replay[..], &["--one-thread"]].concat(), &events));
    assert!(threads.status.success() && one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    assert!(threads.stdout.len() > 10_000, "matches formed");
    assert_eq!(threads.stdout, one.stdout);
}

#[test]
fn workload_poisson_arrivals_with_tight_parties_replay_cleanly() {
    let args = ["workload", "--modes", MODES, "--rate", "50", "--duration-s", "5", "--seed", "9"];
    let even = rally(&args, b"").stdout;
    let poisson = rally(&[&args[..], &["--arrivals", "poisson", "--party-mmr-sd", "25"]].concat(), b"");
    assert!(poisson.status.success(), "{}", String::from_utf8_lossy(&poisson.stderr));
    assert_ne!(even, poisson.stdout, "other arrivals and party spreads, other bytes");
    let out = rally(&["replay", "--modes", MODES, "--input", "-", "--output", "-", "--strict"], &poisson.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn workload_numbers_out_of_range_are_usage_errors() {
    for (arg, expected) in [
        ("--party-mmr-sd=-1", "0 or more"),
        ("--rate=0", "above 0"),
        ("--rate=inf", "above 0"),
        ("--duration-s=-5", "0 or more"),
        ("--rate=-1", "above 0"),
        ("--cancel-fraction=1.5", "from 0 to 1"),
        ("--cancel-fraction=NaN", "from 0 to 1"),
    ] {
        let (flag, value) = arg.split_once('=').unwrap();
        // As one argument and as two: a negative value is a value, not an unknown flag.
        for args in [vec![arg], vec![flag, value]] {
            let out = rally(&[&["workload", "--modes", MODES][..], &args].concat(), b"");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
            assert!(stderr.contains(flag) && stderr.contains(expected), "{args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?}: no events written");
        }
    }
}
