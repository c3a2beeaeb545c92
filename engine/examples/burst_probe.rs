//! Scratch: one burst tick under `perf record --control`, setup excluded.
use rally_engine::{
    DatacenterId, Event, ModeId, PlayerEntry, PlayerId, Rules, Shard, ShardConfig, ShardId, TicketId, TicketRequest,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::sync::Arc;
/// The shape of `examples/modes.toml`, with windows that start at zero so the setup tick
/// forms nothing; growth 10/s gives a 50-point window at the timed tick.
const RULES: &str = r#"
[regions]
eu = ["eu-west", "eu-central", "eu-north"]
na = ["na-east", "na-west"]
ap = ["ap-southeast", "ap-northeast"]

[[mode]]
name = "duel-1v1"
teams = 2
team_size = 1
mmr_window = { start = 0.0, growth_per_s = 10.0, max = 400.0 }
max_rtt_ms = { start = 60.0, growth_per_s = 5.0, max = 150.0 }

[[mode]]
name = "squad-5v5"
teams = 2
team_size = 5
mmr_window = { start = 0.0, growth_per_s = 10.0, max = 500.0 }
max_rtt_ms = { start = 80.0, growth_per_s = 8.0, max = 180.0 }
"#;

const SETUP_TICK_MS: u64 = 30_000;
const TIMED_TICK_MS: u64 = 35_000;
/// The warm shape's earlier burst: enqueued, then matched 5 s later.
const WARMUP_TICK_MS: u64 = 20_000;
/// Ids are remembered for 1 s here, so the earlier burst is forgotten by the setup tick and
/// the shard's finished-id queues are empty but grown, as in a shard that has run for
/// longer than its memory (an hour by default).
const REMEMBER_IDS_MS: u64 = 1_000;

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

/// A shard holding the workload's tickets, merged and waiting, and the event buffer its
/// owner passes to `tick`: fresh, or `warm` (see the module comment).
fn prepared(w: &Workload, warm: bool) -> (Shard, Vec<Event>) {
    let config = ShardConfig { remember_ids_ms: Some(REMEMBER_IDS_MS), ..ShardConfig::default() };
    let mut shard = Shard::new(w.rules.clone(), ShardId(0), config);
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

fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let ts: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let reps: usize = std::env::args().nth(3).map_or(5, |s| s.parse().unwrap());
    let warm = std::env::var("COLD").is_err();
    let w = workload(n, ts, 42);
    let mut ctl = std::env::var("PERF_CTL").ok().map(|p| std::fs::OpenOptions::new().write(true).open(p).unwrap());
    let mut times = Vec::new();
    for _ in 0..reps {
        let (mut shard, mut out) = prepared(&w, warm);
        if let Some(c) = ctl.as_mut() {
            c.write_all(b"enable\n").unwrap();
            c.flush().unwrap();
        }
        let t0 = std::time::Instant::now();
        shard.tick(TIMED_TICK_MS, &mut out);
        let el = t0.elapsed();
        if let Some(c) = ctl.as_mut() {
            c.write_all(b"disable\n").unwrap();
            c.flush().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        times.push(el.as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    eprintln!("median tick {:.2} ms (min {:.2})", times[times.len() / 2], times[0]);
}
