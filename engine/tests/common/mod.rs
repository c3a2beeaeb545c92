//! Helpers shared by the engine's integration tests: rules, ticket builders, and a shard
//! driver that renders events as text for snapshot tests.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::sync::Arc;

use rally_engine::{
    Command, DatacenterId, Event, Match, ModeId, PlayerEntry, PlayerId, Rules, Shard, ShardConfig, ShardId, TicketId,
    TicketRequest,
};

/// Two regions, five datacenters, a duel, a 3v3 and a 4-player free-for-all.
pub const RULES: &str = r#"
tick_ms = 100
[regions]
eu = ["eu-west", "eu-central", "eu-north"]
na = ["na-east", "na-west"]

[[mode]]
name = "duel"
teams = 2
team_size = 1
mmr_window = { start = 50.0, growth_per_s = 10.0, max = 300.0 }
max_rtt_ms = { start = 60.0, growth_per_s = 10.0, max = 150.0 }

[[mode]]
name = "trio"
teams = 2
team_size = 3
mmr_window = { start = 200.0, growth_per_s = 20.0, max = 400.0 }
max_rtt_ms = { start = 80.0, growth_per_s = 5.0, max = 150.0 }

[[mode]]
name = "ffa4"
teams = 4
team_size = 1
mmr_window = { start = 100.0, growth_per_s = 10.0, max = 300.0 }
max_rtt_ms = { start = 80.0, growth_per_s = 5.0, max = 150.0 }
"#;

pub fn rules() -> Arc<Rules> {
    Arc::new(Rules::from_toml(RULES).expect("test rules are valid"))
}

pub fn shard() -> Shard {
    Shard::new(rules(), ShardId(0), ShardConfig::default())
}

/// A shard of the test rules with `tick_ms` set to `tick_ms` (the pace of re-searches
/// depends on it; see `RESEARCH_EVERY_MS`).
pub fn shard_ticking(tick_ms: u64) -> Shard {
    let text = RULES.replacen("tick_ms = 100", &format!("tick_ms = {tick_ms}"), 1);
    let rules = Arc::new(Rules::from_toml(&text).expect("test rules are valid"));
    Shard::new(rules, ShardId(0), ShardConfig::default())
}

pub fn mode(name: &str) -> ModeId {
    rules().mode_id(name).expect("mode exists")
}

pub fn dc(name: &str) -> DatacenterId {
    rules().datacenter_id(name).expect("datacenter exists")
}

/// A player with the given id, rating and RTTs by datacenter name.
pub fn player(id: u64, mmr: f64, rtt: &[(&str, f64)]) -> PlayerEntry {
    PlayerEntry { id: PlayerId(id), mmr, rtt_ms: rtt.iter().map(|&(name, ms)| (dc(name), ms)).collect() }
}

/// A player close to eu-west.
pub fn eu(id: u64, mmr: f64) -> PlayerEntry {
    player(id, mmr, &[("eu-west", 20.0), ("eu-central", 35.0), ("na-east", 110.0)])
}

pub fn ticket(id: u64, mode_name: &str, players: Vec<PlayerEntry>) -> TicketRequest {
    TicketRequest { id: TicketId(id), mode: mode(mode_name), players, waited_ms: 0 }
}

pub fn enqueue(shard: &mut Shard, now_ms: u64, req: TicketRequest) -> Vec<Event> {
    let mut out = Vec::new();
    shard.handle(now_ms, Command::Enqueue(req), &mut out);
    out
}

pub fn tick(shard: &mut Shard, now_ms: u64) -> Vec<Match> {
    let mut out = Vec::new();
    shard.tick(now_ms, &mut out);
    out.into_iter()
        .map(|e| match e {
            Event::Matched(m) => m,
            other => panic!("a tick only forms matches, got {other:?}"),
        })
        .collect()
}

/// Ticks every `tick_ms` from `from_ms` through `to_ms`, collecting matches.
pub fn run_ticks(shard: &mut Shard, from_ms: u64, to_ms: u64) -> Vec<Match> {
    let step = shard.rules().tick_ms;
    (from_ms..=to_ms).step_by(step as usize).flat_map(|t| tick(shard, t)).collect()
}

/// One line per match: time, mode, datacenter, teams of tickets, and the figures.
pub fn render(rules: &Rules, matches: &[Match]) -> String {
    let mut s = String::new();
    for m in matches {
        write!(
            s,
            "t={} {} @{} ",
            m.formed_at_ms,
            rules.modes[usize::from(m.mode.0)].name,
            rules.datacenter_name(m.datacenter)
        )
        .unwrap();
        for (i, team) in m.teams().enumerate() {
            s.push_str(if i == 0 { "[" } else { " vs [" });
            let ids: Vec<String> = team.iter().map(|t| format!("t{}", t.id.0)).collect();
            s.push_str(&ids.join(" "));
            s.push(']');
        }
        let waits: Vec<String> = m.tickets.iter().map(|t| t.wait_ms.to_string()).collect();
        writeln!(
            s,
            " spread={:.1} imbalance={:.1} worst_rtt={:.1} waits={}",
            m.mmr_spread,
            m.team_imbalance,
            m.worst_rtt_ms,
            waits.join(",")
        )
        .unwrap();
    }
    s
}
