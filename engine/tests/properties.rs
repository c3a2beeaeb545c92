//! Random workloads against the shard, checked by an independent model: every match is
//! valid under the contract, no ticket is used twice, parties stay whole, the reported
//! figures are right, and the same inputs give the same events.

mod common;

use std::collections::HashMap;

use common::*;
use proptest::prelude::*;
use rally_engine::{Command, Event, Match, PlayerEntry, PlayerId, PoolTick, Rules, Shard, TicketId, TicketRequest};

/// (player id, rating, (datacenter index, RTT) pairs).
type GenPlayer = (u64, f64, Vec<(usize, f64)>);

#[derive(Clone, Debug)]
enum Op {
    Enqueue { ticket: u64, mode: usize, players: Vec<GenPlayer> },
    Cancel(u64),
    Tick { advance_ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    // Few ids so duplicates and conflicts happen; ratings narrow enough that matches form.
    let rtt = prop::collection::vec((0usize..5, prop_oneof![9 => 5.0f64..160.0, 1 => Just(f64::NAN)]), 0..4);
    let player = (0u64..120, prop_oneof![20 => 1300.0f64..1700.0, 1 => Just(-5.0)], rtt);
    prop_oneof![
        6 => (0u64..400, 0usize..4, prop::collection::vec(player, 0..5))
            .prop_map(|(ticket, mode, players)| Op::Enqueue { ticket, mode, players }),
        1 => (0u64..400).prop_map(Op::Cancel),
        3 => (0u64..1_500).prop_map(|advance_ms| Op::Tick { advance_ms }),
    ]
}

/// The rules' tick period: the rules' own 100 ms mostly, or a fast one, under which failed
/// anchors re-search at the 100 ms pace.
fn tick_period() -> impl Strategy<Value = u64> {
    prop_oneof![2 => Just(100u64), 1 => Just(2u64), 1 => Just(20u64)]
}

fn request(ticket: u64, mode: usize, players: &[GenPlayer]) -> TicketRequest {
    TicketRequest {
        id: TicketId(ticket),
        // The rules have three modes: index 3 is an unknown mode.
        mode: rally_engine::ModeId(mode as u16),
        players: players
            .iter()
            .map(|(id, mmr, rtt)| PlayerEntry {
                id: PlayerId(*id),
                mmr: *mmr,
                rtt_ms: rtt.iter().map(|&(dc, ms)| (rally_engine::DatacenterId(dc as u16), ms)).collect(),
            })
            .collect(),
        waited_ms: 0,
    }
}

/// Runs the ops through a fresh shard whose rules tick every `tick_ms` (the ops' ticks
/// come when they come; the rules' period sets the pace of re-searches); returns every
/// event with the time it happened at.
fn run(ops: &[Op], tick_ms: u64) -> Vec<(u64, Event)> {
    run_with(ops, tick_ms, |s, now, out| s.tick(now, out))
}

/// `run`, with each tick's parts (one per mode) run in reverse mode order, each on a
/// thread of its own, as a caller of `tick_with` may.
fn run_parts_on_threads(ops: &[Op], tick_ms: u64) -> Vec<(u64, Event)> {
    run_with(ops, tick_ms, |s, now, out| {
        s.tick_with(now, out, |pools| {
            let mut pools: Vec<PoolTick<'_>> = pools.collect();
            pools.reverse();
            std::thread::scope(|scope| {
                for pool in pools {
                    scope.spawn(move || pool.run());
                }
            });
        })
    })
}

fn run_with(ops: &[Op], tick_ms: u64, tick: impl Fn(&mut Shard, u64, &mut Vec<Event>)) -> Vec<(u64, Event)> {
    let mut s = shard_ticking(tick_ms);
    let mut now = 0u64;
    let mut events = Vec::new();
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Enqueue { ticket, mode, players } => {
                s.handle(now, Command::Enqueue(request(*ticket, *mode, players)), &mut out)
            }
            Op::Cancel(id) => s.handle(now, Command::Cancel(TicketId(*id)), &mut out),
            Op::Tick { advance_ms } => {
                now += advance_ms;
                tick(&mut s, now, &mut out);
            }
        }
        events.extend(out.drain(..).map(|e| (now, e)));
    }
    events
}

struct Waiting {
    req: TicketRequest,
    at_ms: u64,
}

/// The model: replays the events against the requests and checks every match.
fn check(ops: &[Op], events: &[(u64, Event)]) -> Result<(), TestCaseError> {
    let rules = rules();
    let mut requests: HashMap<u64, TicketRequest> = HashMap::new();
    let mut waiting: HashMap<TicketId, Waiting> = HashMap::new();
    let mut seen_ids = std::collections::HashSet::new();
    let mut waiting_players: HashMap<PlayerId, TicketId> = HashMap::new();
    // Requests by id, last one wins (events name tickets by id; the shard answers in order).
    let mut pending: std::collections::VecDeque<TicketRequest> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Enqueue { ticket, mode, players } => Some(request(*ticket, *mode, players)),
            _ => None,
        })
        .collect();
    for (now, event) in events {
        match event {
            Event::Enqueued(id) | Event::Rejected { ticket: id, .. } => {
                let req = pending.pop_front().expect("one answer per enqueue");
                prop_assert_eq!(req.id, *id);
                if let Event::Enqueued(_) = event {
                    prop_assert!(seen_ids.insert(*id), "ticket id {:?} accepted twice", id);
                    for p in &req.players {
                        prop_assert!(waiting_players.insert(p.id, *id).is_none(), "player waiting twice");
                    }
                    waiting.insert(*id, Waiting { req: req.clone(), at_ms: *now });
                }
                requests.insert(id.0, req);
            }
            Event::Cancelled(id) => {
                let w = waiting.remove(id).expect("only a waiting ticket is cancelled");
                for p in &w.req.players {
                    waiting_players.remove(&p.id);
                }
            }
            Event::NotWaiting(id) => {
                prop_assert!(!waiting.contains_key(id), "a waiting ticket was reported not waiting")
            }
            Event::Matched(m) => {
                check_match(&rules, &waiting, *now, m)?;
                for t in &m.tickets {
                    let w = waiting.remove(&t.id).expect("checked");
                    for p in &w.req.players {
                        waiting_players.remove(&p.id);
                    }
                }
            }
        }
    }
    prop_assert!(pending.is_empty());
    Ok(())
}

fn check_match(rules: &Rules, waiting: &HashMap<TicketId, Waiting>, now: u64, m: &Match) -> Result<(), TestCaseError> {
    let mode = &rules.modes[usize::from(m.mode.0)];
    prop_assert_eq!(m.formed_at_ms, now);
    prop_assert_eq!(m.teams().count(), usize::from(mode.teams));
    let mut ids: Vec<TicketId> = m.tickets.iter().map(|t| t.id).collect();
    ids.sort();
    ids.dedup();
    prop_assert_eq!(ids.len(), m.tickets.len(), "a ticket twice in one match");
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut worst_rtt = 0.0f64;
    let mut means = Vec::new();
    for team in m.teams() {
        let mut size = 0;
        let mut sum = 0.0;
        for t in team {
            let w = waiting.get(&t.id).ok_or_else(|| TestCaseError::fail(format!("{:?} not waiting", t.id)))?;
            prop_assert_eq!(w.req.mode, m.mode);
            // The party is whole, in order, on this team.
            let ids: Vec<PlayerId> = w.req.players.iter().map(|p| p.id).collect();
            prop_assert_eq!(m.players_of(t), &ids[..]);
            prop_assert_eq!(t.wait_ms, now - w.at_ms);
            size += w.req.players.len();
            for p in &w.req.players {
                lo = lo.min(p.mmr);
                hi = hi.max(p.mmr);
                sum += p.mmr;
            }
        }
        prop_assert_eq!(size, usize::from(mode.team_size));
        means.push(sum / f64::from(mode.team_size));
    }
    let spread = hi - lo;
    for t in &m.tickets {
        let w = &waiting[&t.id];
        let wait = now - w.at_ms;
        prop_assert!(spread <= mode.mmr_window.at(wait), "spread {} over {:?}'s window", spread, t.id);
        let limit = mode.max_rtt_ms.at(wait);
        for p in &w.req.players {
            // The worst of a player's entries for the datacenter counts (duplicates allowed).
            let rtt = p
                .rtt_ms
                .iter()
                .filter(|(d, _)| *d == m.datacenter)
                .map(|&(_, r)| r)
                .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))));
            let rtt = rtt.ok_or_else(|| TestCaseError::fail("player without an rtt to the match's datacenter"))?;
            prop_assert!(rtt <= limit, "rtt {} over limit {}", rtt, limit);
            worst_rtt = worst_rtt.max(rtt);
        }
    }
    let imbalance =
        means.iter().cloned().fold(f64::NEG_INFINITY, f64::max) - means.iter().cloned().fold(f64::INFINITY, f64::min);
    prop_assert!((m.mmr_spread - spread).abs() < 1e-9);
    prop_assert!((m.team_imbalance - imbalance).abs() < 1e-6);
    prop_assert!((m.worst_rtt_ms - worst_rtt).abs() < 1e-9);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_match_is_valid_and_whole(ops in prop::collection::vec(op(), 1..400), tick_ms in tick_period()) {
        let events = run(&ops, tick_ms);
        check(&ops, &events)?;
    }

    #[test]
    fn same_inputs_same_events(ops in prop::collection::vec(op(), 1..300), tick_ms in tick_period()) {
        prop_assert_eq!(run(&ops, tick_ms), run(&ops, tick_ms));
    }

    #[test]
    fn the_parts_of_a_tick_may_run_in_any_order_on_any_thread(
        ops in prop::collection::vec(op(), 1..300),
        tick_ms in tick_period(),
    ) {
        prop_assert_eq!(run(&ops, tick_ms), run_parts_on_threads(&ops, tick_ms));
    }
}

#[test]
fn many_tickets_in_every_mode_all_match_validly() {
    // A denser, longer run than the proptest cases: most tickets match. The trio mode's
    // parties often span more than their starting window, so wide parties' plans run.
    let matched = dense_run(10, 100);
    assert!(matched > 2_500, "only {matched} of 3000 tickets matched");
}

#[test]
fn with_ticks_faster_than_the_plans_period_every_match_is_still_valid() {
    // The same traffic, ticking every 10 ms: plans are searched every 100 ms and held
    // again by slot and id in between, and failed anchors re-search at the 100 ms pace.
    let matched = dense_run(1, 10);
    assert!(matched > 2_500, "only {matched} of 3000 tickets matched");
}

#[test]
fn a_party_pool_under_load_whose_limits_open_slowly_matches_validly() {
    // 4,000 trio tickets at once, every player far from every datacenter, so none can
    // match until RTT limits have grown for a few seconds: a pool under load (1,500
    // tickets or more) whose anchors have all searched before look ahead first, and take
    // a set the look-ahead found when it is valid already.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let mut next_player = 0u64;
    let mut ops: Vec<Op> = (0..4_000u64)
        .map(|ticket| {
            let players = (0..rng.random_range(1..=3))
                .map(|_| {
                    next_player += 1;
                    let rtt = (0..5).map(|dc| (dc, rng.random_range(85.0..140.0))).collect();
                    (next_player, rng.random_range(1200.0..1800.0), rtt)
                })
                .collect();
            Op::Enqueue { ticket, mode: 1, players }
        })
        .collect();
    ops.extend((0..300).map(|_| Op::Tick { advance_ms: 100 }));
    let events = run(&ops, 100);
    check(&ops, &events).unwrap();
    let matched: usize =
        events.iter().filter_map(|(_, e)| if let Event::Matched(m) = e { Some(m.tickets.len()) } else { None }).sum();
    assert!(matched > 2_500, "only {matched} of 4000 tickets matched");
}

/// 3,000 tickets over three modes, a tick of `advance_ms` after every `tickets_per_tick`
/// arrivals, then 30 s of ticks; checks every event and returns the tickets matched.
fn dense_run(tickets_per_tick: u64, advance_ms: u64) -> usize {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut ops = Vec::new();
    let mut next_player = 0u64;
    for ticket in 0..3_000u64 {
        let mode = rng.random_range(0..3usize);
        let size = if mode == 1 { rng.random_range(1..=3) } else { 1 };
        let players = (0..size)
            .map(|_| {
                next_player += 1;
                let home = rng.random_range(0..5usize);
                let rtt =
                    (0..5).map(|dc| (dc, if dc == home { 20.0 } else { rng.random_range(40.0..140.0) })).collect();
                (next_player, rng.random_range(1200.0..1800.0), rtt)
            })
            .collect();
        ops.push(Op::Enqueue { ticket, mode, players });
        if ticket % tickets_per_tick == tickets_per_tick - 1 {
            ops.push(Op::Tick { advance_ms });
        }
        if ticket % 97 == 0 {
            ops.push(Op::Cancel(ticket / 2));
        }
    }
    ops.extend((0..300).map(|_| Op::Tick { advance_ms: 100 }));
    // The rules tick as the arrivals do.
    let events = run(&ops, advance_ms);
    check(&ops, &events).unwrap();
    events.iter().filter_map(|(_, e)| if let Event::Matched(m) = e { Some(m.tickets.len()) } else { None }).sum()
}
