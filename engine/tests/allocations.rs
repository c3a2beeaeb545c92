//! A tick allocates nothing per waiting ticket in the steady state: once the pool's
//! buffers have grown, ticking over thousands of waiting tickets that cannot match yet
//! allocates nothing at all, and a tick that forms duels allocates nothing for them either.
//!
//! Its own test binary: the counting allocator is global to the binary.

use std::sync::atomic::Ordering;

use rally_engine::{
    DatacenterId, Event, ModeId, PlayerEntry, PlayerId, Rules, Shard, ShardConfig, ShardId, TicketId, TicketRequest,
};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// Windows that grow slowly: players 10 MMR apart need 10 s to meet.
const RULES: &str = r#"
[regions]
eu = ["eu-west", "eu-central"]

[[mode]]
name = "duel"
teams = 2
team_size = 1
mmr_window = { start = 1.0, growth_per_s = 1.0, max = 400.0 }
max_rtt_ms = { start = 60.0, growth_per_s = 5.0, max = 150.0 }

[[mode]]
name = "squad"
teams = 2
team_size = 5
mmr_window = { start = 1.0, growth_per_s = 1.0, max = 400.0 }
max_rtt_ms = { start = 60.0, growth_per_s = 5.0, max = 150.0 }
"#;

fn request(id: u64, mode: u16, mmr: f64) -> TicketRequest {
    TicketRequest {
        id: TicketId(id),
        mode: ModeId(mode),
        players: vec![PlayerEntry {
            id: PlayerId(id),
            mmr,
            rtt_ms: vec![(DatacenterId(0), 20.0), (DatacenterId(1), 30.0)],
        }],
        waited_ms: 0,
    }
}

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = counting_alloc::CALLS.load(Ordering::Relaxed);
    f();
    counting_alloc::CALLS.load(Ordering::Relaxed) - before
}

#[test]
fn ticks_over_waiting_tickets_allocate_only_for_the_matches_they_form() {
    let rules = std::sync::Arc::new(Rules::from_toml(RULES).unwrap());
    let mut shard = Shard::new(rules, ShardId(0), ShardConfig::default());
    let mut out = Vec::with_capacity(1_024);
    // 4,000 tickets per mode, 10 MMR apart: none can match for 9 s.
    for i in 0..8_000u64 {
        let mode = (i % 2) as u16;
        shard.enqueue(0, &request(i, mode, 1_000.0 + 10.0 * (i / 2) as f64)).unwrap();
    }
    // The first ticks grow the pool's buffers.
    for t in [0, 100, 200] {
        shard.tick(t, &mut out);
    }
    assert!(out.is_empty());
    let steady = allocations_during(|| {
        for t in (300..3_000).step_by(100) {
            shard.tick(t, &mut out);
        }
    });
    assert!(out.is_empty(), "nothing can match yet");
    assert_eq!(steady, 0, "27 ticks over 8,000 waiting tickets allocated {steady} times");

    // Once windows reach 10, the duel pairs match (the squads, 10 players 90 MMR apart,
    // cannot yet): a duel keeps its ticket and player lists inline, so nothing is allocated
    // per match either, nor per waiting ticket. The slack covers the amortised,
    // logarithmic growth of the event buffer and the queue of finished ids.
    let mut duels = 0;
    let forming = allocations_during(|| {
        for t in (3_000..12_000).step_by(100) {
            shard.tick(t, &mut out);
            for e in &out {
                if let Event::Matched(m) = e {
                    assert_eq!(m.mode, ModeId(0), "only duels can match yet");
                    duels += 1;
                }
            }
            out.clear();
        }
    });
    assert!(duels >= 1_000, "only {duels} duels formed");
    assert!(forming <= 64, "{forming} allocations for {duels} duels");
}
