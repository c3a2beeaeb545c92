//! The `rally replay` contract: clock, bad lines, rejections, strict mode, determinism,
//! and that no input — however broken — makes it panic or emit an invalid match.

use std::sync::Arc;

use proptest::prelude::*;
use rally_engine::Rules;
use rally_replay::check::evaluate;
use rally_replay::workload::{WorkloadSpec, generate};
use rally_replay::{ReplayError, ReplayOptions, Summary};

const RULES: &str = include_str!("../../examples/modes.toml");

fn rules() -> Arc<Rules> {
    Arc::new(Rules::from_toml(RULES).unwrap())
}

struct Outcome {
    summary: Summary,
    matches: String,
    diag: String,
}

fn replay_with(rules: Arc<Rules>, input: &[u8], options: ReplayOptions) -> Result<Outcome, ReplayError> {
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    let summary = rally_replay::run(rules, options, &mut &input[..], &mut out, &mut diag)?;
    Ok(Outcome { summary, matches: String::from_utf8(out).unwrap(), diag: String::from_utf8(diag).unwrap() })
}

fn replay(input: &str) -> Outcome {
    replay_with(rules(), input.as_bytes(), ReplayOptions { drain_ms: 10_000, ..ReplayOptions::default() }).unwrap()
}

/// The formation times of a replay's matches, in order.
fn formed_at(out: &Outcome) -> Vec<u64> {
    out.matches
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["formed_at_ms"].as_u64().unwrap())
        .collect()
}

fn solo(at_ms: u64, ticket: &str, player: &str, mmr: f64) -> String {
    format!(
        r#"{{"at_ms":{at_ms},"op":"enqueue","ticket":"{ticket}","mode":"duel-1v1","players":[{{"id":"{player}","mmr":{mmr},"rtt_ms":{{"eu-west":20.0,"mars-1":1.0}}}}]}}"#
    )
}

#[test]
fn events_at_or_before_a_tick_are_applied_before_it() {
    let input = [
        solo(100, "a", "pa", 1500.0),
        solo(100, "b", "pb", 1500.0),
        solo(101, "c", "pc", 1500.0),
        solo(200, "d", "pd", 1500.0),
    ]
    .join("\n");
    let out = replay(&input);
    assert_eq!(formed_at(&out), [100, 200]);
    assert_eq!(out.summary.accepted, 4);
    assert_eq!(out.summary.rejected_total(), 0, "an unknown RTT key is ignored, not an error: {}", out.diag);
    // The clock ran on for the drain after the last event, and stopped.
    assert_eq!(out.summary.virtual_end_ms, 10_200);
}

#[test]
fn a_refused_line_does_not_move_the_clock() {
    // The unknown-mode line at 5000 is skipped; the next line may be earlier than it, and
    // its ticket must meet the waiting one at 1000, not after ticks up to 5000.
    let input = [
        solo(0, "a", "pa", 1500.0),
        r#"{"at_ms":5000,"op":"enqueue","ticket":"x","mode":"polo","players":[{"id":"px","mmr":1,"rtt_ms":{"eu-west":1}}]}"#
            .to_owned(),
        solo(1000, "b", "pb", 1510.0),
    ]
    .join("\n");
    let out = replay(&input);
    assert_eq!(out.summary.rejected.get("unknown_mode"), Some(&1));
    assert_eq!(formed_at(&out).first(), Some(&1_000));
}

#[test]
fn a_line_refused_for_a_waiting_player_does_not_move_the_clock() {
    // "pa" waits in a free-for-all nobody else joins. At 5000 it queues for a duel too:
    // still waiting then, so refused, and the line after it, earlier, meets "c" at 1000.
    let input = [
        r#"{"at_ms":0,"op":"enqueue","ticket":"a","mode":"ffa-8","players":[{"id":"pa","mmr":1500,"rtt_ms":{"eu-west":20}}]}"#
            .to_owned(),
        solo(5000, "b", "pa", 1500.0),
        solo(1000, "c", "pc", 1500.0),
        solo(1000, "d", "pd", 1510.0),
    ]
    .join("\n");
    let out = replay(&input);
    assert_eq!(out.summary.rejected.get("player_already_waiting"), Some(&1), "{}", out.diag);
    assert!(out.diag.contains("line 2: player_already_waiting"), "{}", out.diag);
    assert_eq!(formed_at(&out), [1_000]);
    assert!(out.matches.contains(r#"[["c"],["d"]]"#), "{}", out.matches);
    evaluate(&rules(), &input, &out.matches).expect("every match is valid");
}

#[test]
fn a_player_whose_ticket_is_matched_before_the_line_may_queue_again() {
    // "a" and "e" are 200 apart: a duel's window (50, growing 10 a second) reaches that at
    // 15 s. "pa" queues again at 20 s, by when that match has formed.
    let input = [
        solo(0, "a", "pa", 1500.0),
        solo(0, "e", "pe", 1700.0),
        solo(20_000, "b", "pa", 1500.0),
        solo(20_000, "f", "pf", 1500.0),
    ]
    .join("\n");
    let out = replay(&input);
    assert_eq!(out.summary.rejected_total(), 0, "{}", out.diag);
    assert_eq!(formed_at(&out), [15_000, 20_000]);
    let second = out.matches.lines().nth(1).unwrap();
    assert!(second.contains(r#"["b"]"#) && second.contains(r#"["f"]"#), "{}", out.matches);
    evaluate(&rules(), &input, &out.matches).expect("every match is valid");
    // Queued again a tick too early, the same player is refused, and the clock stays.
    let early = [
        solo(0, "a", "pa", 1500.0),
        solo(0, "e", "pe", 1700.0),
        solo(14_900, "b", "pa", 1500.0),
        solo(100, "f", "pf", 2500.0),
        solo(100, "g", "pg", 2500.0),
    ]
    .join("\n");
    // The last line is at 100 ms: drain past the a–e match at 15 s.
    let options = ReplayOptions { drain_ms: 20_000, ..ReplayOptions::default() };
    let out = replay_with(rules(), early.as_bytes(), options).unwrap();
    assert_eq!(out.summary.rejected.get("player_already_waiting"), Some(&1), "{}", out.diag);
    assert_eq!(formed_at(&out), [100, 15_000]);
    evaluate(&rules(), &early, &out.matches).expect("every match is valid");
}

#[test]
fn rtt_keys_naming_no_datacenter_are_ignored_whatever_their_value() {
    let line = |t: &str, p: &str, rtt: &str| {
        format!(
            r#"{{"at_ms":0,"op":"enqueue","ticket":"{t}","mode":"duel-1v1","players":[{{"id":"{p}","mmr":1500,"rtt_ms":{rtt}}}]}}"#
        )
    };
    let input = [
        line("a", "pa", r#"{"mars-1":"far","eu-west":20}"#),
        line("b", "pb", r#"{"moon":-3,"eu-west":20,"venus":[null,{"x":1}]}"#),
        // Under a configured name, a value that is not a number is a bad line.
        line("c", "pc", r#"{"eu-west":"20"}"#),
        line("d", "pd", r#"{"mars-1":1,"eu-west":null}"#),
    ]
    .join("\n");
    let out = replay(&input);
    assert_eq!(out.summary.accepted, 2, "{}", out.diag);
    assert_eq!(out.summary.rejected.get("malformed_json"), Some(&2), "{}", out.diag);
    assert!(out.diag.contains(r#"line 3: malformed_json: rtt_ms for "eu-west" is not a number"#), "{}", out.diag);
    assert_eq!(formed_at(&out), [0]);
    let quality = evaluate(&rules(), &input, &out.matches).expect("every match is valid");
    assert_eq!(quality.tickets_matched, 2);
}

#[test]
fn duplicate_rtt_keys_keep_the_last_value() {
    let line = |at: u64, t: &str, p: &str| {
        format!(
            r#"{{"at_ms":{at},"op":"enqueue","ticket":"{t}","mode":"duel-1v1","players":[{{"id":"{p}","mmr":1500,"rtt_ms":{{"eu-west":500.0,"eu-west":20.0}}}}]}}"#
        )
    };
    let out = replay(&[line(0, "a", "pa"), line(0, "b", "pb")].join("\n"));
    let m: serde_json::Value = serde_json::from_str(out.matches.lines().next().expect("a match")).unwrap();
    assert_eq!((m["formed_at_ms"].as_u64(), m["worst_rtt_ms"].as_f64()), (Some(0), Some(20.0)));
}

#[test]
fn match_lines_follow_the_contract_format() {
    let input = [solo(0, "t1", "p1", 1500.0), solo(0, "t2", "p2", 1510.0)].join("\n");
    let out = replay(&input);
    assert_eq!(
        out.matches,
        "{\"match\":\"m1\",\"mode\":\"duel-1v1\",\"datacenter\":\"eu-west\",\"formed_at_ms\":0,\"teams\":[[\"t1\"],[\"t2\"]],\
         \"wait_ms\":[0,0],\"mmr_spread\":10.0,\"team_imbalance\":10.0,\"worst_rtt_ms\":20.0}\n"
    );
}

#[test]
fn every_bad_line_is_reported_counted_and_skipped() {
    let party6: Vec<String> =
        (0..6).map(|i| format!(r#"{{"id":"q{i}","mmr":1500,"rtt_ms":{{"eu-west":20}}}}"#)).collect();
    let lines = [
        // Good lines that later ones collide with.
        (solo(10, "ok1", "p1", 1500.0), None),
        ("{not json".to_owned(), Some("malformed_json")),
        (r#"{"op":"cancel","ticket":"x"}"#.to_owned(), Some("at_ms_missing")),
        (r#"{"at_ms":-1,"op":"cancel","ticket":"x"}"#.to_owned(), Some("at_ms_negative")),
        (r#"{"at_ms":10.5,"op":"cancel","ticket":"x"}"#.to_owned(), Some("at_ms_not_integer")),
        (r#"{"at_ms":9,"op":"cancel","ticket":"x"}"#.to_owned(), Some("at_ms_decreasing")),
        (r#"{"at_ms":10,"op":"rename","ticket":"x"}"#.to_owned(), Some("unknown_op")),
        (r#"{"at_ms":10,"op":"cancel","ticket":""}"#.to_owned(), Some("bad_ticket_id")),
        (solo(10, "ok1", "p9", 1500.0), Some("ticket_id_used_before")),
        (solo(10, "ok2", "p1", 1500.0), Some("player_already_waiting")),
        (solo(10, "ok3", "p3", -4.0), Some("bad_number")),
        (
            r#"{"at_ms":10,"op":"enqueue","ticket":"m","mode":"polo","players":[{"id":"x","mmr":1,"rtt_ms":{"eu-west":1}}]}"#
                .to_owned(),
            Some("unknown_mode"),
        ),
        (r#"{"at_ms":10,"op":"enqueue","ticket":"e","mode":"duel-1v1","players":[]}"#.to_owned(), Some("empty_ticket")),
        (
            format!(r#"{{"at_ms":10,"op":"enqueue","ticket":"big","mode":"squad-5v5","players":[{}]}}"#, party6.join(",")),
            Some("party_too_large"),
        ),
        (
            r#"{"at_ms":10,"op":"enqueue","ticket":"d","mode":"trio-3v3","players":[{"id":"y","mmr":1,"rtt_ms":{"eu-west":1}},{"id":"y","mmr":1,"rtt_ms":{"eu-west":1}}]}"#
                .to_owned(),
            Some("duplicate_player_in_ticket"),
        ),
        (
            r#"{"at_ms":10,"op":"enqueue","ticket":"n","mode":"duel-1v1","players":[{"id":"z","mmr":1,"rtt_ms":{"mars-1":1}}]}"#
                .to_owned(),
            Some("no_known_datacenter"),
        ),
        ("\u{fffe}\u{0}".to_owned(), Some("malformed_json")),
    ];
    let input: String = lines.iter().map(|(l, _)| format!("{l}\n")).collect();
    let out = replay(&input);
    let expected: Vec<&str> = lines.iter().filter_map(|(_, code)| *code).collect();
    let mut counted = 0;
    for (no, (_, code)) in lines.iter().enumerate() {
        if let Some(code) = code {
            let prefix = format!("line {}: {code}: ", no + 1);
            assert!(out.diag.lines().any(|l| l.starts_with(&prefix)), "no `{prefix}` in\n{}", out.diag);
            counted += 1;
        }
    }
    assert_eq!(out.diag.lines().count(), counted);
    for code in &expected {
        assert!(out.summary.rejected.get(*code).copied().unwrap_or(0) >= 1, "{code} not counted");
    }
    assert_eq!(out.summary.rejected_total(), expected.len() as u64);
    assert_eq!(out.summary.accepted, 1);
    assert_eq!(out.summary.lines_read, lines.len() as u64);
}

#[test]
fn invalid_utf8_is_a_bad_line_not_an_error() {
    let mut input = solo(0, "a", "pa", 1500.0).into_bytes();
    input.extend_from_slice(b"\n{\"at_ms\":1,\"op\":\"cancel\",\"ticket\":\"\xff\xfe\"}\n");
    input.extend_from_slice(solo(2, "b", "pb", 1500.0).as_bytes());
    let out = replay_with(rules(), &input, ReplayOptions::default()).unwrap();
    assert_eq!(out.summary.rejected.get("malformed_json"), Some(&1));
    assert_eq!(out.summary.formed.matches, 1);
}

#[test]
fn strict_mode_stops_at_the_first_bad_line() {
    let input = [solo(0, "a", "pa", 1500.0), solo(0, "a", "pb", 1500.0), "garbage".to_owned()].join("\n");
    let err = replay_with(rules(), input.as_bytes(), ReplayOptions { strict: true, ..ReplayOptions::default() })
        .err()
        .expect("strict replay fails");
    match err {
        ReplayError::Strict { line, reason } => {
            assert_eq!(line, 2);
            assert!(reason.starts_with("ticket_id_used_before"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn cancelling_a_ticket_no_longer_waiting_is_counted_not_an_error() {
    let input = [
        solo(0, "a", "pa", 1500.0),
        solo(0, "b", "pb", 1500.0),
        solo(0, "c", "pc", 3000.0),
        r#"{"at_ms":500,"op":"cancel","ticket":"a"}"#.to_owned(),
        r#"{"at_ms":500,"op":"cancel","ticket":"c"}"#.to_owned(),
        r#"{"at_ms":600,"op":"cancel","ticket":"c"}"#.to_owned(),
        r#"{"at_ms":600,"op":"cancel","ticket":"never-seen"}"#.to_owned(),
    ]
    .join("\n");
    let out = replay(&input);
    assert_eq!((out.summary.cancelled, out.summary.cancel_not_waiting), (1, 3));
    assert_eq!(out.summary.rejected_total(), 0);
    assert_eq!(out.summary.still_waiting, 0);
}

/// A duel ticket whose one player reaches only `dc`.
fn solo_at(at_ms: u64, ticket: &str, dc: &str, mmr: f64) -> String {
    format!(
        r#"{{"at_ms":{at_ms},"op":"enqueue","ticket":"{ticket}","mode":"duel-1v1","players":[{{"id":"p-{ticket}","mmr":{mmr},"rtt_ms":{{"{dc}":20.0}}}}]}}"#
    )
}

#[test]
fn a_far_future_event_is_reached_without_ticking_through_the_gap() {
    const FAR_MS: u64 = 1_000_000_000_000_000; // 10¹⁵ ms, about 31,700 years
    let input = [
        // Two tickets that never match (no datacenter in common), waiting through the gap.
        solo_at(0, "eu", "eu-west", 1500.0),
        solo_at(0, "na", "na-east", 1500.0),
        solo_at(FAR_MS, "late-1", "ap-southeast", 1500.0),
        solo_at(FAR_MS, "late-2", "ap-southeast", 1510.0),
        // The last tick a u64 holds is before this one: the event is applied, no tick follows.
        solo_at(u64::MAX, "last", "ap-southeast", 1500.0),
    ]
    .join("\n");
    let out = replay_with(rules(), input.as_bytes(), ReplayOptions::default()).unwrap();
    assert_eq!(out.summary.rejected_total(), 0, "{}", out.diag);
    let formed: Vec<(u64, String)> = out
        .matches
        .lines()
        .map(|l| {
            let m: serde_json::Value = serde_json::from_str(l).unwrap();
            (m["formed_at_ms"].as_u64().unwrap(), m["teams"].to_string())
        })
        .collect();
    assert_eq!(formed, [(FAR_MS, r#"[["late-1"],["late-2"]]"#.to_owned())]);
    assert_eq!(out.summary.still_waiting, 3);
    // Ticked until the two stranded tickets' limits settled and a quiet stretch passed
    // (about a minute of virtual time), then at the far event; not 10¹³ ticks.
    assert!(out.summary.ticks < 2_000, "{} ticks", out.summary.ticks);
}

#[test]
fn skipping_idle_stretches_changes_no_match() {
    // Wide windows (leftovers settle within a minute) and narrow ones (within the hour).
    skipping_changes_no_match(rules(), 13, 100.0, 20.0);
    skipping_changes_no_match(
        Arc::new(Rules::from_toml(include_str!("../../examples/narrow-windows.toml")).unwrap()),
        14,
        40.0,
        5.0,
    );
}

/// Mixed traffic, then the same traffic again (new names) three hours later, while the
/// first burst's leftovers still wait; the clock drains five hours after that. Skipping
/// the idle stretches must give the very matches that ticking through them gives.
fn skipping_changes_no_match(rules: Arc<Rules>, seed: u64, rate: f64, duration_s: f64) {
    let first = generate(&rules, &WorkloadSpec::mixed(&rules, seed, rate, duration_s));
    let later_ms = 3 * 3_600_000;
    let mut events = first.clone();
    for line in first.lines() {
        let mut e: serde_json::Value = serde_json::from_str(line).unwrap();
        e["at_ms"] = (e["at_ms"].as_u64().unwrap() + later_ms).into();
        e["ticket"] = format!("again-{}", e["ticket"].as_str().unwrap()).into();
        if let Some(players) = e["players"].as_array_mut() {
            for p in players {
                p["id"] = format!("again-{}", p["id"].as_str().unwrap()).into();
            }
        }
        events.push_str(&e.to_string());
        events.push('\n');
    }
    let run = |skip_idle| {
        let options = ReplayOptions { drain_ms: 5 * 3_600_000, skip_idle, ..ReplayOptions::default() };
        replay_with(rules.clone(), events.as_bytes(), options).unwrap()
    };
    let (skipping, ticking) = (run(true), run(false));
    assert!(skipping.summary.still_waiting > 0, "leftovers wait through both gaps");
    assert_eq!(skipping.matches, ticking.matches);
    evaluate(&rules, &events, &skipping.matches).expect("every match is valid");
    let hours_of_ticks = 8 * 36_000;
    eprintln!("seed {seed}: {} ticks skipping, {} ticking", skipping.summary.ticks, ticking.summary.ticks);
    assert!(ticking.summary.ticks > hours_of_ticks);
    assert!(skipping.summary.ticks < hours_of_ticks / 2, "{} ticks", skipping.summary.ticks);
}

#[test]
fn same_input_gives_byte_identical_output() {
    let rules = rules();
    let events = generate(&rules, &WorkloadSpec::mixed(&rules, 11, 200.0, 20.0));
    let run = || replay_with(rules.clone(), events.as_bytes(), ReplayOptions::default()).unwrap();
    let (a, b) = (run(), run());
    assert!(!a.matches.is_empty());
    assert_eq!(a.matches, b.matches);
    evaluate(&rules, &events, &a.matches).expect("every match is valid");
}

#[test]
fn modes_ticking_on_threads_of_their_own_give_the_matches_of_one_thread() {
    // 6,000 tickets in half a second under narrow windows: every mode has well over the
    // 1,000 waiting tickets from which its part of a tick gets a thread of its own.
    let rules = Arc::new(Rules::from_toml(include_str!("../../examples/narrow-windows.toml")).unwrap());
    let events = generate(&rules, &WorkloadSpec::mixed(&rules, 17, 12_000.0, 0.5));
    let run = |parallel_pools| {
        let options = ReplayOptions { drain_ms: 20_000, parallel_pools, ..ReplayOptions::default() };
        replay_with(rules.clone(), events.as_bytes(), options).unwrap()
    };
    let (at_once, one_by_one) = (run(true), run(false));
    assert!(at_once.summary.by_mode.iter().filter(|(_, m)| m.enqueued > 1_000).count() >= 2);
    assert!(at_once.summary.formed.matches > 100, "{}", at_once.summary.formed.matches);
    assert_eq!(at_once.matches, one_by_one.matches);
    assert_eq!(at_once.summary.searches, one_by_one.summary.searches);
    evaluate(&rules, &events, &at_once.matches).expect("every match is valid");
}

/// The example rules with `eu` in one shard and `na` and `ap` in another.
fn split_rules() -> Arc<Rules> {
    let text = format!("shards = [[\"eu\"], [\"na\", \"ap\"]]\n{RULES}");
    Arc::new(Rules::from_toml(&text).unwrap())
}

#[test]
fn regions_split_into_shards_still_give_valid_matches() {
    let split = split_rules();
    let mut events = generate(&split, &WorkloadSpec::mixed(&split, 12, 150.0, 20.0));
    // A player queueing in a second shard while waiting in the first, and a ticket id
    // reused across shards, are refused as with one shard.
    events.push_str(
        r#"{"at_ms":60000,"op":"enqueue","ticket":"x1","mode":"duel-1v1","players":[{"id":"dual","mmr":1,"rtt_ms":{"eu-west":5}}]}
{"at_ms":60000,"op":"enqueue","ticket":"x2","mode":"duel-1v1","players":[{"id":"dual","mmr":1,"rtt_ms":{"na-east":5}}]}
{"at_ms":60000,"op":"enqueue","ticket":"x1","mode":"duel-1v1","players":[{"id":"other","mmr":1,"rtt_ms":{"na-east":5}}]}
{"at_ms":60000,"op":"enqueue","ticket":"x1","mode":"duel-1v1","players":[{"id":"dual","mmr":1,"rtt_ms":{"na-east":5}}]}
"#,
    );
    let out = replay_with(split.clone(), events.as_bytes(), ReplayOptions::default()).unwrap();
    assert_eq!(out.summary.rejected.get("player_already_waiting"), Some(&1), "{}", out.diag);
    // The last line reuses the id *and* names a waiting player: still a reused id.
    assert_eq!(out.summary.rejected.get("ticket_id_used_before"), Some(&2), "{}", out.diag);
    evaluate(&split, &events, &out.matches).expect("every match is valid");
}

#[test]
fn the_summary_splits_by_mode_and_adds_up() {
    // Two shards, so a mode's waiting tickets are summed over both; no drain, so some wait.
    let split = split_rules();
    let mut events = generate(&split, &WorkloadSpec::mixed(&split, 13, 100.0, 20.0));
    events.push_str(
        r#"{"at_ms":60000,"op":"enqueue","ticket":"x1","mode":"no-such-mode","players":[{"id":"x","mmr":1,"rtt_ms":{"eu-west":5}}]}
"#,
    );
    let options = ReplayOptions { drain_ms: 0, ..ReplayOptions::default() };
    let out = replay_with(split.clone(), events.as_bytes(), options).unwrap();
    let s = &out.summary;
    let names: Vec<&str> = s.by_mode.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["duel-1v1", "trio-3v3", "squad-5v5", "ffa-8"], "the rules' order");
    let sum = |f: fn(&rally_replay::ModeSummary) -> u64| s.by_mode.iter().map(|(_, part)| f(part)).sum::<u64>();
    assert_eq!(sum(|p| p.enqueued), s.accepted - s.cancelled - s.cancel_not_waiting, "refused lines count nowhere");
    assert_eq!(sum(|p| p.cancelled), s.cancelled);
    assert_eq!(sum(|p| p.still_waiting), s.still_waiting);
    assert_eq!(sum(|p| p.formed.matches), s.formed.matches);
    assert_eq!(sum(|p| p.formed.tickets_matched), s.formed.tickets_matched);
    assert_eq!(sum(|p| p.formed.players_matched), s.formed.players_matched);
    assert_eq!(sum(|p| p.searches), s.searches);
    assert!(s.by_mode.iter().all(|(_, p)| p.searches >= p.formed.matches), "a match takes a search: {s:?}");
    assert!(s.neighbours_scanned >= s.formed.tickets_matched - s.formed.matches, "a match's tickets were looked at");
    assert!(s.still_waiting > 0 && s.cancelled > 0, "the run leaves every kind of ticket: {s:?}");
    let lines: Vec<serde_json::Value> = out.matches.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (name, part) in &s.by_mode {
        // Every ticket accepted is matched, cancelled or still waiting: exactly one.
        assert_eq!(part.enqueued, part.formed.tickets_matched + part.cancelled + part.still_waiting, "{name}");
        let mine: Vec<&serde_json::Value> = lines.iter().filter(|m| m["mode"] == name.as_str()).collect();
        assert_eq!(part.formed.matches, mine.len() as u64, "{name}");
        let waits: Vec<u64> =
            mine.iter().flat_map(|m| m["wait_ms"].as_array().unwrap()).map(|w| w.as_u64().unwrap()).collect();
        assert_eq!(part.formed.tickets_matched, waits.len() as u64, "{name}");
        assert_eq!(part.formed.wait_ms.max, *waits.iter().max().unwrap() as f64, "{name}");
        let imbalance: f64 =
            mine.iter().map(|m| m["team_imbalance"].as_f64().unwrap()).sum::<f64>() / mine.len() as f64;
        assert!(
            (part.formed.mean_imbalance - imbalance).abs() < 1e-9,
            "{name}: {} {imbalance}",
            part.formed.mean_imbalance
        );
    }
    // The JSON form keys the parts by mode name.
    let json = serde_json::to_value(s).unwrap();
    assert_eq!(json["by_mode"]["squad-5v5"]["tickets_matched"], s.by_mode[2].1.formed.tickets_matched);
    assert_eq!(json["tickets_matched"], s.formed.tickets_matched, "the totals stay at the top level");
}

#[test]
fn a_crowded_party_pool_gives_valid_matches() {
    // Narrow windows at 1,000 tickets/s for 20 s: thousands of 5v5 tickets wait at once,
    // so that pool works as under load (look-ahead first, re-search delays, unfit parties
    // left out of scans), and parties whose ratings lie further apart than the starting
    // window (10 points, growing 0.5 a second) wait for it to grow.
    let rules = Arc::new(Rules::from_toml(include_str!("../../examples/narrow-windows.toml")).unwrap());
    let events = generate(&rules, &WorkloadSpec::mixed(&rules, 21, 1_000.0, 20.0));
    let out = replay_with(rules.clone(), events.as_bytes(), ReplayOptions::default()).unwrap();
    evaluate(&rules, &events, &out.matches).expect("every match is valid");

    let arrivals_end_ms = 20_000;
    let mut squads = std::collections::HashMap::new(); // ticket → (enqueued at, own spread)
    let mut cancelled = std::collections::HashMap::new();
    for line in events.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let (at, ticket) = (e["at_ms"].as_u64().unwrap(), e["ticket"].as_str().unwrap().to_owned());
        if e["op"] == "cancel" {
            cancelled.insert(ticket, at);
        } else if e["mode"] == "squad-5v5" {
            let mmrs: Vec<f64> = e["players"].as_array().unwrap().iter().map(|p| p["mmr"].as_f64().unwrap()).collect();
            let spread = mmrs.iter().fold(f64::MIN, |a, &b| a.max(b)) - mmrs.iter().fold(f64::MAX, |a, &b| a.min(b));
            squads.insert(ticket, (at, spread));
        }
    }
    let mut matched_at = std::collections::HashMap::new();
    for line in out.matches.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        for ticket in m["teams"].as_array().unwrap().iter().flat_map(|t| t.as_array().unwrap()) {
            matched_at.insert(ticket.as_str().unwrap().to_owned(), m["formed_at_ms"].as_u64().unwrap());
        }
    }
    let waiting_at = |t_ms: u64| {
        squads
            .keys()
            .filter(|t| cancelled.get(*t).is_none_or(|&c| c > t_ms) && matched_at.get(*t).is_none_or(|&m| m > t_ms))
            .count()
    };
    let crowd = waiting_at(arrivals_end_ms);
    assert!(crowd > 1_500, "the 5v5 pool never got crowded: {crowd} waiting when arrivals stopped");

    // Parties whose window covered their own spread by 40 s (the clock runs on to 60 s
    // after the last event) had time to find a set: most did.
    let fit_early: Vec<&String> = squads
        .iter()
        .filter(|&(t, &(at, spread))| {
            spread > 10.0 && at + ((spread - 10.0) * 2_000.0) as u64 <= 40_000 && !cancelled.contains_key(t)
        })
        .map(|(t, _)| t)
        .collect();
    let matched = fit_early.iter().filter(|t| matched_at.contains_key(**t)).count();
    assert!(
        !fit_early.is_empty() && matched * 4 >= fit_early.len() * 3,
        "only {matched} of {} parties wider than the starting window matched once it covered them",
        fit_early.len()
    );
}

/// Valid lines to mutate.
fn seed_lines() -> Vec<String> {
    let rules = rules();
    generate(&rules, &WorkloadSpec::mixed(&rules, 3, 50.0, 2.0)).lines().map(str::to_owned).collect()
}

fn mutate(line: &str, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut bytes = line.as_bytes().to_vec();
    for &(at, kind, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match kind % 4 {
            0 => bytes[at] = byte,
            1 => {
                bytes.remove(at);
            }
            2 => bytes.insert(at, byte),
            _ => bytes.truncate(at),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..2_000), strict in any::<bool>()) {
        let result = replay_with(rules(), &input, ReplayOptions { drain_ms: 5_000, strict, ..ReplayOptions::default() });
        let ok = matches!(result, Ok(_) | Err(ReplayError::Strict { .. }));
        prop_assert!(ok, "an i/o error from in-memory buffers");
    }

    #[test]
    fn mutated_lines_never_panic_nor_break_validity(
        picks in prop::collection::vec((0usize..10_000, prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..4)), 1..60)
    ) {
        let seeds = seed_lines();
        let mut input = Vec::new();
        for (pick, edits) in &picks {
            input.extend(mutate(&seeds[pick % seeds.len()], edits));
            input.push(b'\n');
        }
        let out = replay_with(rules(), &input, ReplayOptions { drain_ms: 5_000, ..ReplayOptions::default() });
        let out = out.map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Ok(text) = std::str::from_utf8(&input) {
            evaluate(&rules(), text, &out.matches).map_err(TestCaseError::fail)?;
        }
    }
}
