//! What a waiting ticket costs in heap: at most 256 bytes for a solo ticket (issue #2), with
//! every table the shard keeps for it counted, and the spare room of its growing buffers.
//! The tick benchmark reports the same figure at 10k, 100k and 1M (BENCHMARKS.md); this pins
//! the smallest, where that spare room weighs most.
//!
//! Its own test binary: the counting allocator is global to the binary.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rally_engine::{PlayerEntry, PlayerId, Rules, Shard, ShardConfig, ShardId, TicketId, TicketRequest};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// The tick benchmark's rules: seven datacenters in three regions, as
/// `examples/modes.toml`, and a 1v1 window that starts shut, so the tick that merges the
/// tickets forms nothing but looks ahead and holds sets, as the benchmark's setup tick does.
const RULES: &str = include_str!("../benches/tick-rules.toml");

#[test]
fn a_waiting_solo_ticket_costs_at_most_256_heap_bytes() {
    const N: u64 = 10_000;
    let rules = Arc::new(Rules::from_toml(RULES).unwrap());
    let mode = rules.mode_id("duel-1v1").unwrap();
    let requests: Vec<TicketRequest> = (0..N)
        .map(|i| {
            let rtt_ms =
                (0..rules.datacenters.len()).map(|dc| (rally_engine::DatacenterId(dc as u16), 20.0 + 15.0 * dc as f64));
            TicketRequest {
                id: TicketId(i),
                mode,
                players: vec![PlayerEntry { id: PlayerId(i), mmr: 1_000.0 + 0.1 * i as f64, rtt_ms: rtt_ms.collect() }],
                waited_ms: 0,
            }
        })
        .collect();
    let mut out = Vec::new();

    let before = counting_alloc::LIVE_BYTES.load(Ordering::Relaxed);
    let mut shard = Shard::new(rules, ShardId(0), ShardConfig::default());
    for req in &requests {
        shard.enqueue(0, req).unwrap();
    }
    shard.tick(0, &mut out);
    let per_ticket = (counting_alloc::LIVE_BYTES.load(Ordering::Relaxed) - before) as f64 / N as f64;

    assert!(out.is_empty(), "shut windows form no match");
    assert_eq!(shard.waiting_total(), N as usize);
    assert!(per_ticket <= 256.0, "{per_ticket:.0} heap bytes per waiting ticket");
    // `heap_bytes` (what a service reports) accounts for all of it.
    let reported = shard.heap_bytes() as f64 / N as f64;
    assert!((per_ticket - reported).abs() <= 16.0, "heap_bytes says {reported:.0}, the allocator {per_ticket:.0}");
}
