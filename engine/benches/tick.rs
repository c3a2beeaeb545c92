//! One tick over N waiting tickets, for 1v1 solos and for 5v5 with parties of 1–5.
//!
//! Setup (untimed): a shard gets N tickets with ratings ~ N(1500, 250) and a home
//! datacenter among seven, enqueued at 30 s; a tick at that instant merges them all into
//! the sorted pool while every MMR window is still zero, so nothing matches.
//! Timed: the next tick, 5 s later, when windows have grown to 50 — a tick over N waiting
//! tickets that forms every match it can.
//!
//! Three shapes. `tick/…` times a warm shard, as a long-running one is: an earlier burst of
//! the same size went through it (matched and forgotten), so its buffers, the event buffer
//! its owner reuses and the allocator's free lists have grown already. `first-tick/…` times
//! a fresh shard with a fresh event buffer, which also pays for growing every buffer during
//! the tick. Its heap is not fresh (criterion runs every iteration in one process, and the
//! allocator keeps what earlier ones freed), so the kernel's first touch of new memory is
//! only partly in that figure: the first burst of a new process costs more.
//!
//! `steady/1v1/…` times an ordinary tick instead of a burst: N tickets waiting that cannot
//! match yet (enqueued over the past 30 s, each searched once and asleep since), plus one
//! tick's arrivals (1,000 tickets that pair off). The tick merges the arrivals, visits
//! every anchor and forms 500 matches.
//!
//! `cargo bench -p rally-engine` prints, besides criterion's timings, matches formed per
//! tick and live heap bytes per waiting ticket (measured with a counting allocator around
//! the setup of a fresh shard).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rally_engine::{
    DatacenterId, Event, ModeId, PlayerEntry, PlayerId, Rules, Shard, ShardConfig, ShardId, TicketId, TicketRequest,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Counts live heap bytes so memory per ticket is measured, not estimated.
#[path = "../tests/common/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// The shape of `examples/modes.toml`, with windows that start at zero so the setup tick
/// forms nothing; growth 10/s gives a 50-point window at the timed tick.
const RULES: &str = include_str!("tick-rules.toml");

const SETUP_TICK_MS: u64 = 30_000;
const TIMED_TICK_MS: u64 = 35_000;
/// The warm shape's earlier burst: enqueued, then matched 5 s later.
const WARMUP_TICK_MS: u64 = 20_000;
/// Ids are remembered for 1 s here, so the earlier burst is forgotten by the setup tick and
/// the shard's finished-id queues are empty but grown, as in a shard that has run for
/// longer than its memory (an hour by default).
const REMEMBER_IDS_MS: u64 = 1_000;
/// The steady shape's mode, its timed tick (one default tick period after the setup tick)
/// and the tickets that arrive for it.
const STEADY_MODE: ModeId = ModeId(2);
const STEADY_TICK_MS: u64 = SETUP_TICK_MS + 100;
const STEADY_ARRIVALS: usize = 1_000;

struct Workload {
    rules: Arc<Rules>,
    mode: ModeId,
    tickets: Vec<TicketRequest>,
    /// The same tickets under other ticket and player ids, for the warm shape's first burst.
    earlier: Vec<TicketRequest>,
    enqueued_at: Vec<u64>,
}

fn workload(n: usize, team_size: usize, seed: u64) -> Workload {
    let rules = Arc::new(Rules::from_toml(RULES).unwrap());
    let mode = ModeId(if team_size == 1 { 0 } else { 1 });
    let mut rng = SmallRng::seed_from_u64(seed);
    let n_dc = rules.datacenters.len();
    let party_weights = [0.55, 0.2, 0.12, 0.08, 0.05];
    let mut next_player = 0u64;
    let mut tickets = Vec::with_capacity(n);
    let mut enqueued_at = Vec::with_capacity(n);
    for i in 0..n {
        let size = if team_size == 1 {
            1
        } else {
            let mut x: f64 = rng.random();
            party_weights
                .iter()
                .position(|&w| {
                    x -= w;
                    x < 0.0
                })
                .unwrap_or(0)
                + 1
        };
        let party_mmr = 1500.0 + 250.0 * normal(&mut rng);
        let home = rng.random_range(0..n_dc);
        let players = (0..size)
            .map(|_| {
                next_player += 1;
                let rtt_ms = (0..n_dc)
                    .map(|dc| {
                        let same_region = rules.datacenter_region[dc] == rules.datacenter_region[home];
                        let rtt = if dc == home {
                            rng.random_range(8.0..35.0)
                        } else if same_region {
                            rng.random_range(25.0..90.0)
                        } else {
                            rng.random_range(80.0..190.0)
                        };
                        (DatacenterId(dc as u16), rtt)
                    })
                    .collect();
                PlayerEntry { id: PlayerId(next_player), mmr: (party_mmr + 40.0 * normal(&mut rng)).max(1.0), rtt_ms }
            })
            .collect();
        tickets.push(TicketRequest { id: TicketId(i as u64), mode, players, waited_ms: 0 });
        enqueued_at.push(SETUP_TICK_MS);
    }
    let earlier = tickets
        .iter()
        .map(|t| TicketRequest {
            id: TicketId(t.id.0 + n as u64),
            players: t
                .players
                .iter()
                .map(|p| PlayerEntry { id: PlayerId(p.id.0 + next_player), ..p.clone() })
                .collect(),
            ..t.clone()
        })
        .collect();
    Workload { rules, mode, tickets, earlier, enqueued_at }
}

fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An empty shard that forgets finished ids after `REMEMBER_IDS_MS`.
fn bench_shard(rules: &Arc<Rules>) -> Shard {
    let config = ShardConfig { remember_ids_ms: Some(REMEMBER_IDS_MS), ..ShardConfig::default() };
    Shard::new(rules.clone(), ShardId(0), config)
}

/// The steady shape (1v1 only): the workload's tickets in the steady mode, to be enqueued
/// over the 30 s before the setup tick; as many others that come and go before the timed
/// tick, so the pool's buffers have room as a pool whose size moves does; and one tick's
/// arrivals, pairs of equal rating that match each other and nothing else. Ratings are
/// the waiting ones' plus a quarter point (arrivals) or a half point (the others).
struct Steady {
    waiting: Vec<TicketRequest>,
    passing: Vec<TicketRequest>,
    arrivals: Vec<TicketRequest>,
}

fn steady_tickets(w: &Workload) -> Steady {
    let n = w.tickets.len() as u64;
    let copy = |t: &TicketRequest, id: u64, offset: f64| {
        let p = &t.players[0];
        TicketRequest {
            id: TicketId(id),
            mode: STEADY_MODE,
            players: vec![PlayerEntry { id: PlayerId(id), mmr: p.mmr + offset, rtt_ms: p.rtt_ms.clone() }],
            waited_ms: 0,
        }
    };
    let waiting = w.tickets.iter().map(|t| TicketRequest { mode: STEADY_MODE, ..t.clone() }).collect();
    let passing = w.tickets[..STEADY_ARRIVALS].iter().map(|t| copy(t, 2 * n + t.id.0, 0.5)).collect();
    let arrivals = w.tickets[..STEADY_ARRIVALS / 2]
        .iter()
        .flat_map(|t| (0..2u64).map(move |k| copy(t, 3 * n + 2 * t.id.0 + k, 0.25)))
        .collect();
    Steady { waiting, passing, arrivals }
}

/// A shard in the steady shape: N tickets waiting that cannot match, merged at the setup
/// tick (each searched once and asleep since), others merged and cancelled since, and one
/// tick's arrivals not yet merged.
fn prepared_steady(rules: &Arc<Rules>, st: &Steady) -> (Shard, Vec<Event>) {
    let mut shard = bench_shard(rules);
    let n = st.waiting.len() as u64;
    for (i, t) in st.waiting.iter().enumerate() {
        // Spread over the 30 s before, in random rating order, as real arrivals are.
        shard.enqueue(i as u64 * SETUP_TICK_MS / n, t).expect("bench tickets are valid");
    }
    for t in &st.passing {
        shard.enqueue(SETUP_TICK_MS, t).expect("bench tickets are valid");
    }
    let mut out = Vec::new();
    shard.tick(SETUP_TICK_MS, &mut out);
    assert!(out.is_empty(), "no two waiting tickets share a rating");
    let between = (SETUP_TICK_MS + STEADY_TICK_MS) / 2;
    for t in &st.passing {
        shard.cancel(between, t.id);
    }
    shard.tick(between, &mut out);
    for t in &st.arrivals {
        shard.enqueue(STEADY_TICK_MS, t).expect("bench tickets are valid");
    }
    out.clear();
    (shard, out)
}

/// A shard holding the workload's tickets, merged and waiting, and the event buffer its
/// owner passes to `tick`: fresh, or `warm` (see the module comment).
fn prepared(w: &Workload, warm: bool) -> (Shard, Vec<Event>) {
    let mut shard = bench_shard(&w.rules);
    let mut out = Vec::new();
    if warm {
        for t in &w.earlier {
            shard.enqueue(WARMUP_TICK_MS, t).expect("bench tickets are valid");
        }
        shard.tick(WARMUP_TICK_MS, &mut out);
        let matched_at = WARMUP_TICK_MS + (TIMED_TICK_MS - SETUP_TICK_MS);
        shard.tick(matched_at, &mut out);
        // The few it could not match would match the new burst at its setup tick.
        for t in &w.earlier {
            shard.cancel(matched_at, t.id);
        }
        assert_eq!(shard.waiting(w.mode), 0);
        out.clear();
    }
    for (t, &at) in w.tickets.iter().zip(&w.enqueued_at) {
        shard.enqueue(at, t).expect("bench tickets are valid");
    }
    shard.tick(SETUP_TICK_MS, &mut out);
    assert!(out.is_empty(), "zero windows form no match at the setup tick");
    assert_eq!(shard.waiting(w.mode), w.tickets.len());
    (shard, out)
}

fn report_shape(name: &str, w: &Workload) {
    counting_alloc::ENABLED.store(true, Ordering::Relaxed);
    let before = counting_alloc::LIVE_BYTES.load(Ordering::Relaxed);
    let (mut shard, mut out) = prepared(w, false);
    let live = counting_alloc::LIVE_BYTES.load(Ordering::Relaxed) - before;
    // Only this measurement counts; the timings run without the counter's atomics.
    counting_alloc::ENABLED.store(false, Ordering::Relaxed);
    let n = w.tickets.len();
    shard.tick(TIMED_TICK_MS, &mut out);
    let matched: usize = out.iter().map(|e| if let Event::Matched(m) = e { m.tickets.len() } else { 0 }).sum();
    eprintln!(
        "{name}/{n}: {:.0} live heap bytes per waiting ticket (heap_bytes() says {:.0}); timed tick forms {} matches, matching {:.1}% of tickets",
        live as f64 / n as f64,
        shard.heap_bytes() as f64 / n as f64,
        out.len(),
        100.0 * matched as f64 / n as f64,
    );
}

fn bench_tick(c: &mut Criterion) {
    let sizes: Vec<usize> = match std::env::var("RALLY_BENCH_SIZES") {
        Ok(list) => list.split(',').map(|s| s.trim().parse().expect("RALLY_BENCH_SIZES: numbers")).collect(),
        Err(_) => vec![10_000, 100_000, 1_000_000],
    };
    for (name, team_size) in [("1v1", 1), ("5v5-parties", 5)] {
        for &n in &sizes {
            let w = workload(n, team_size, 42);
            report_shape(name, &w);
            for (shape, warm) in [("tick", true), ("first-tick", false)] {
                time_tick(
                    c,
                    &format!("{shape}/{name}"),
                    n,
                    TIMED_TICK_MS,
                    || prepared(&w, warm),
                    |out| {
                        black_box(out.len());
                    },
                );
            }
            if team_size == 1 {
                let steady = steady_tickets(&w);
                let prepare = || prepared_steady(&w.rules, &steady);
                time_tick(c, &format!("steady/{name}"), n, STEADY_TICK_MS, prepare, |out| {
                    assert_eq!(out.len(), STEADY_ARRIVALS / 2, "the arrivals pair off");
                });
            }
        }
    }
}

/// Times one tick at `at_ms` over N waiting tickets, each iteration on a shard `prepare`
/// sets up afresh (untimed); `check` looks at the tick's events inside the timing.
fn time_tick(
    c: &mut Criterion,
    group: &str,
    n: usize,
    at_ms: u64,
    prepare: impl Fn() -> (Shard, Vec<Event>),
    check: impl Fn(&[Event]),
) {
    let mut group = c.benchmark_group(group);
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter_batched(
            &prepare,
            |(mut shard, mut out)| {
                shard.tick(at_ms, &mut out);
                check(&out);
                (shard, out)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_tick);
criterion_main!(benches);
