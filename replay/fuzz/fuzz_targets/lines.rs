//! Arbitrary bytes as an EVENTS.jsonl log: every line through `parse_line`, the whole log
//! through `rally_replay::run`, lenient and strict. None may panic, every match the
//! replay writes must pass the independent checker, and the summary's per-mode counts must
//! account for every accepted ticket.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use rally_engine::Rules;
use rally_replay::{ReplayOptions, check, parse_line};

static RULES: LazyLock<Arc<Rules>> =
    LazyLock::new(|| Arc::new(Rules::from_toml(include_str!("../../../examples/modes.toml")).expect("example rules")));

fuzz_target!(|data: &[u8]| {
    let text = std::str::from_utf8(data).ok();
    for line in text.into_iter().flat_map(str::lines) {
        let _ = parse_line(line, 0);
    }
    for strict in [false, true] {
        let options = ReplayOptions { drain_ms: 5_000, strict, ..ReplayOptions::default() };
        let mut matches = Vec::new();
        let outcome = rally_replay::run(RULES.clone(), options, &mut &data[..], &mut matches, &mut std::io::sink());
        if let Ok(summary) = &outcome {
            // Every accepted ticket ends matched, cancelled or still waiting, in its mode,
            // and the modes add up to the totals.
            let mut sums = [0u64; 3];
            for (mode, part) in &summary.by_mode {
                let ended = part.formed.tickets_matched + part.cancelled + part.still_waiting;
                assert_eq!(part.enqueued, ended, "mode {mode}: {summary:?}");
                sums[0] += part.enqueued;
                sums[1] += part.cancelled;
                sums[2] += part.formed.tickets_matched;
            }
            let enqueued = summary.accepted - summary.cancelled - summary.cancel_not_waiting;
            assert_eq!(sums, [enqueued, summary.cancelled, summary.formed.tickets_matched], "{summary:?}");
        }
        if let (Ok(_), Some(events)) = (outcome, text) {
            let matches = String::from_utf8(matches).expect("the replay writes UTF-8");
            if let Err(violation) = check::evaluate(&RULES, events, &matches) {
                panic!("invalid match: {violation}");
            }
        }
    }
});
