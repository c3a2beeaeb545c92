//! A plain greedy matcher, the baseline the engine is held to in tests and benchmarks.
//!
//! Oldest ticket first; it takes the nearest-MMR neighbours that keep the set valid, the
//! first datacenter (in configuration order) everyone accepts, and fills teams first-fit
//! with the biggest parties first. No regions, no team balancing, no search: what a
//! matchmaker written in an afternoon does. Same clock, same contract, same output format
//! as `rally replay`.

use std::fmt::Write as _;
use std::sync::Arc;

use rally_engine::Rules;

use crate::check::{Admission, Admitted, CheckTicket, Quality, evaluate, nearest_rank};
use crate::input::parse_line;
use crate::{ReplayError, ReplayOptions};

/// The engine and the baseline over one event log: both match files, each checked by
/// [`evaluate`] and measured.
#[derive(Clone, Debug)]
pub struct Contest {
    /// What `rally replay` wrote.
    pub engine_matches: String,
    /// What [`run`] wrote.
    pub greedy_matches: String,
    /// The engine's figures.
    pub engine: Quality,
    /// The baseline's figures.
    pub greedy: Quality,
}

impl Contest {
    /// The 95th percentile wait (nearest rank) over the tickets both matchers matched, the
    /// engine's and the baseline's: the like-for-like tail. The p95 over matched tickets
    /// (`Quality::wait_p95_ms`) rises when a matcher matches hard tickets the other leaves
    /// behind, since those match late; this one compares the same tickets. `None` when no
    /// ticket was matched by both.
    pub fn common_wait_p95_ms(&self) -> Option<(u64, u64)> {
        let (mut engine, mut greedy): (Vec<u64>, Vec<u64>) = self
            .engine
            .waits_by_ticket
            .0
            .iter()
            .filter_map(|(ticket, &wait)| Some((wait, *self.greedy.waits_by_ticket.0.get(ticket)?)))
            .unzip();
        if engine.is_empty() {
            return None;
        }
        engine.sort_unstable();
        greedy.sort_unstable();
        let rank = nearest_rank(0.95, engine.len());
        Some((engine[rank], greedy[rank]))
    }
}

/// Why a [`contest`] has no result.
#[derive(Debug, thiserror::Error)]
pub enum ContestError {
    /// The replay stopped (it is run without `strict`, so only on i/o).
    #[error("replay: {0}")]
    Replay(#[from] ReplayError),
    /// A matcher wrote a match the checker refuses: a bug in that matcher.
    #[error("{matcher} wrote an invalid match: {violation}")]
    Invalid {
        /// "engine" or "greedy".
        matcher: &'static str,
        /// The checker's first finding.
        violation: String,
    },
}

/// Runs the engine (as `rally replay` with `drain_ms`) and the baseline over `events`,
/// checks both outputs and measures them.
pub fn contest(rules: &Arc<Rules>, events: &str, drain_ms: u64) -> Result<Contest, ContestError> {
    let mut engine_matches = Vec::new();
    crate::run(
        rules.clone(),
        ReplayOptions { drain_ms, ..ReplayOptions::default() },
        &mut events.as_bytes(),
        &mut engine_matches,
        &mut std::io::sink(),
    )?;
    let engine_matches = String::from_utf8(engine_matches).expect("the replay writes UTF-8");
    let greedy_matches = run(rules, events, drain_ms);
    let judge = |matcher, matches: &str| {
        evaluate(rules, events, matches).map_err(|violation| ContestError::Invalid { matcher, violation })
    };
    Ok(Contest {
        engine: judge("engine", &engine_matches)?,
        greedy: judge("greedy", &greedy_matches)?,
        engine_matches,
        greedy_matches,
    })
}

struct Waiting {
    ticket: CheckTicket,
    center: f64,
}

/// A waiting ticket as the scan reads it during one tick, in the pool's rating order.
#[derive(Clone, Copy)]
struct Ranked {
    center: f64,
    lo: f64,
    hi: f64,
    window: f64,
    players: usize,
    /// Its place in the pool (arrival order).
    index: usize,
    /// Matched this tick; dropped from the pool after it.
    taken: bool,
}

/// Runs the baseline over `events` with `rules`; returns the match lines (JSONL).
pub fn run(rules: &Rules, events: &str, drain_ms: u64) -> String {
    let mut admission = Admission::default();
    let mut pools: Vec<Vec<Waiting>> = (0..rules.modes.len()).map(|_| Vec::new()).collect();
    let mut out = String::new();
    let mut next_tick = 0u64;
    let mut n_matches = 0u64;
    for line in events.lines() {
        if let Ok(e) = parse_line(line, 0) {
            while next_tick < e.at_ms() {
                tick(rules, next_tick, &mut pools, &mut admission, &mut out, &mut n_matches);
                next_tick += rules.tick_ms;
            }
        }
        let (_, admitted) = admission.apply(rules, line);
        match admitted {
            Admitted::Enqueued(t) => {
                let center = (t.min_mmr() + t.max_mmr()) / 2.0;
                pools[t.mode].push(Waiting { ticket: t, center });
            }
            Admitted::Cancelled(name) => {
                for pool in &mut pools {
                    pool.retain(|w| w.ticket.name != name);
                }
            }
            Admitted::Nothing => {}
        }
    }
    let end = admission.last_at_ms() + drain_ms;
    while next_tick <= end {
        tick(rules, next_tick, &mut pools, &mut admission, &mut out, &mut n_matches);
        next_tick += rules.tick_ms;
    }
    out
}

fn tick(
    rules: &Rules,
    now: u64,
    pools: &mut [Vec<Waiting>],
    admission: &mut Admission,
    out: &mut String,
    n_matches: &mut u64,
) {
    let n_dc = rules.datacenters.len();
    for (mode_idx, pool) in pools.iter_mut().enumerate() {
        let mode = &rules.modes[mode_idx];
        let need = mode.players_per_match();
        let team_size = usize::from(mode.team_size);
        let window = |t: &CheckTicket| mode.mmr_window.at(now - t.at_ms);
        let limit = |t: &CheckTicket| mode.max_rtt_ms.at(now - t.at_ms);
        let accepts = |t: &CheckTicket, dc: usize| {
            let l = limit(t);
            t.players.iter().all(|p| p.rtt_to(dc).is_some_and(|r| r <= l))
        };
        // The pool in rating order with what the scan asks of each ticket, worked out once
        // a tick rather than once per anchor that walks past it (in a pool of stuck tickets,
        // thousands per anchor): asking the tickets each time was nearly all of a big
        // file's run. The same values, so the same matches.
        let mut by_mmr: Vec<Ranked> = pool
            .iter()
            .enumerate()
            .map(|(i, w)| Ranked {
                center: w.center,
                lo: w.ticket.min_mmr(),
                hi: w.ticket.max_mmr(),
                window: window(&w.ticket),
                players: w.ticket.players.len(),
                index: i,
                taken: false,
            })
            .collect();
        by_mmr.sort_by(|a, b| a.center.total_cmp(&b.center).then(a.index.cmp(&b.index)));
        let mut rank = vec![0; pool.len()];
        for (r, t) in by_mmr.iter().enumerate() {
            rank[t.index] = r;
        }
        let accepted: Vec<bool> = pool.iter().flat_map(|w| (0..n_dc).map(move |dc| accepts(&w.ticket, dc))).collect();
        let accepted_by = |i: usize| &accepted[i * n_dc..][..n_dc];
        // Buffers reused across anchors: a pool of thousands of tickets no set can take
        // (wide parties) is scanned every tick, and allocating per candidate was most of it.
        let mut chosen: Vec<usize> = Vec::new();
        let mut sizes: Vec<usize> = Vec::new();
        let mut dcs: Vec<bool> = Vec::new();
        let mut next_dcs: Vec<bool> = Vec::new();
        let mut fill: Vec<usize> = Vec::new();
        // Pools are in arrival order: the oldest first.
        for anchor in 0..pool.len() {
            let a = by_mmr[rank[anchor]];
            if a.taken {
                continue;
            }
            chosen.clear();
            chosen.push(anchor);
            sizes.clear();
            sizes.push(a.players);
            let mut players = a.players;
            let (mut lo, mut hi, mut w) = (a.lo, a.hi, a.window);
            dcs.clear();
            dcs.extend_from_slice(accepted_by(anchor));
            let (mut l, mut r) = (rank[anchor], rank[anchor] + 1);
            while players < need {
                let left = (l > 0).then(|| l - 1);
                let right = (r < by_mmr.len()).then_some(r);
                let next = match (left, right) {
                    (None, None) => break,
                    (Some(x), None) => {
                        l -= 1;
                        x
                    }
                    (None, Some(y)) => {
                        r += 1;
                        y
                    }
                    (Some(x), Some(y)) => {
                        if a.center - by_mmr[x].center <= by_mmr[y].center - a.center {
                            l -= 1;
                            x
                        } else {
                            r += 1;
                            y
                        }
                    }
                };
                let c = by_mmr[next];
                if (c.center - a.center).abs() > a.window {
                    // Beyond the anchor's window on this side; the other side may go on.
                    if c.center < a.center {
                        l = 0;
                    } else {
                        r = by_mmr.len();
                    }
                    continue;
                }
                if c.taken || players + c.players > need {
                    continue;
                }
                let (nlo, nhi, nw) = (lo.min(c.lo), hi.max(c.hi), w.min(c.window));
                if nhi - nlo > nw {
                    continue;
                }
                next_dcs.clear();
                next_dcs.extend(dcs.iter().zip(accepted_by(c.index)).map(|(&both, &ok)| both && ok));
                if !next_dcs.iter().any(|&ok| ok) {
                    continue;
                }
                sizes.push(c.players);
                if !first_fit_fits(&sizes, &mut fill, usize::from(mode.teams), team_size) {
                    sizes.pop();
                    continue;
                }
                chosen.push(c.index);
                players += c.players;
                (lo, hi, w) = (nlo, nhi, nw);
                std::mem::swap(&mut dcs, &mut next_dcs);
            }
            if players != need {
                continue;
            }
            let Some(teams) = first_fit(&sizes, usize::from(mode.teams), team_size) else { continue };
            if teams.iter().any(|t| t.iter().map(|&k| sizes[k]).sum::<usize>() != team_size) {
                continue;
            }
            let dc = dcs.iter().position(|&ok| ok).expect("the set keeps one datacenter everyone accepts");
            *n_matches += 1;
            write!(out, "{{\"match\":\"g{n_matches}\",\"mode\":").unwrap();
            out.push_str(&serde_json::to_string(&mode.name).unwrap());
            write!(
                out,
                ",\"datacenter\":{},\"formed_at_ms\":{now},\"teams\":[",
                serde_json::to_string(&rules.datacenters[dc]).unwrap()
            )
            .unwrap();
            for (ti, team) in teams.iter().enumerate() {
                out.push_str(if ti == 0 { "[" } else { ",[" });
                for (k, &member) in team.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(&pool[chosen[member]].ticket.name).unwrap());
                }
                out.push(']');
            }
            out.push_str("]}\n");
            for &i in &chosen {
                by_mmr[rank[i]].taken = true;
                admission.finish(&pool[i].ticket.name);
            }
        }
        let mut index = 0;
        pool.retain(|_| {
            index += 1;
            !by_mmr[rank[index - 1]].taken
        });
    }
}

/// Whether [`first_fit`] would place `sizes`, without building the teams. `fill` is a
/// reused buffer.
fn first_fit_fits(sizes: &[usize], fill: &mut Vec<usize>, teams: usize, team_size: usize) -> bool {
    place_first_fit(sizes, fill, teams, team_size, |_, _| {})
}

/// First-fit decreasing of party sizes into `teams` teams of `team_size`; member indexes per
/// team, or `None` if they do not fit.
fn first_fit(sizes: &[usize], teams: usize, team_size: usize) -> Option<Vec<Vec<usize>>> {
    let mut out = vec![Vec::new(); teams];
    place_first_fit(sizes, &mut Vec::new(), teams, team_size, |party, team| out[team].push(party)).then_some(out)
}

/// First-fit decreasing: biggest parties first, equal sizes in list order, each into the
/// first team with room; `place(party, team)` hears each placement. False if one does not
/// fit. `fill` is the teams' fill levels, a buffer the caller may reuse.
fn place_first_fit(
    sizes: &[usize],
    fill: &mut Vec<usize>,
    teams: usize,
    team_size: usize,
    mut place: impl FnMut(usize, usize),
) -> bool {
    if sizes.iter().any(|&s| s > team_size) {
        return false;
    }
    fill.clear();
    fill.resize(teams, 0);
    for size in (1..=team_size).rev() {
        for (party, _) in sizes.iter().enumerate().filter(|&(_, &s)| s == size) {
            let Some(team) = fill.iter().position(|&f| f + size <= team_size) else { return false };
            fill[team] += size;
            place(party, team);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::TicketWaits;

    fn contest_of(engine: &[(&str, u64)], greedy: &[(&str, u64)]) -> Contest {
        let quality = |waits: &[(&str, u64)]| Quality {
            waits_by_ticket: TicketWaits(waits.iter().map(|&(t, w)| (t.to_owned(), w)).collect()),
            ..Quality::default()
        };
        Contest {
            engine_matches: String::new(),
            greedy_matches: String::new(),
            engine: quality(engine),
            greedy: quality(greedy),
        }
    }

    #[test]
    fn the_common_tail_compares_only_tickets_both_matched() {
        // "late" only the engine matched, "early" only greedy: neither counts.
        let contest = contest_of(&[("a", 100), ("b", 200), ("late", 90_000)], &[("a", 300), ("b", 100), ("early", 5)]);
        // Two common tickets: the nearest-rank p95 of two values is the larger.
        assert_eq!(contest.common_wait_p95_ms(), Some((200, 300)));
        assert_eq!(contest_of(&[("a", 1)], &[("b", 1)]).common_wait_p95_ms(), None);
    }

    /// Greedy's own rules on a hand-made tick: the oldest ticket first, its nearest
    /// neighbour by rating that shares a datacenter and fits the windows, nobody twice.
    #[test]
    fn takes_the_nearest_neighbour_that_fits_oldest_first() {
        let rules = Rules::from_toml(
            r#"
            [regions]
            eu = ["eu-west", "eu-north"]
            [[mode]]
            name = "duel"
            teams = 2
            team_size = 1
            mmr_window = { start = 50.0, growth_per_s = 0.0, max = 50.0 }
            max_rtt_ms = { start = 50.0, growth_per_s = 0.0, max = 50.0 }
            "#,
        )
        .unwrap();
        let ticket = |name: &str, mmr: f64, dc: &str| {
            format!(
                r#"{{"at_ms":0,"op":"enqueue","ticket":"{name}","mode":"duel","players":[{{"id":"p{name}","mmr":{mmr},"rtt_ms":{{"{dc}":10.0}}}}]}}"#
            )
        };
        let events = [
            ticket("old", 1000.0, "eu-west"),
            ticket("far", 1100.0, "eu-west"),
            // Nearest to "old", but plays only where "old" does not.
            ticket("elsewhere", 1030.0, "eu-north"),
            ticket("near", 1040.0, "eu-west"),
            ticket("next", 1090.0, "eu-west"),
        ]
        .join("\n");
        let matches: Vec<serde_json::Value> =
            run(&rules, &events, 0).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        let teams: Vec<_> =
            matches.iter().map(|m| (m["datacenter"].as_str().unwrap(), m["teams"].to_string())).collect();
        assert_eq!(
            teams,
            [("eu-west", r#"[["old"],["near"]]"#.to_owned()), ("eu-west", r#"[["far"],["next"]]"#.to_owned())],
            "{matches:?}"
        );
    }

    /// First-fit decreasing as first written: a stable sort by size, then each party into
    /// the first team with room.
    fn reference_first_fit(sizes: &[usize], teams: usize, team_size: usize) -> Option<Vec<Vec<usize>>> {
        let mut order: Vec<usize> = (0..sizes.len()).collect();
        order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
        let mut fill = vec![0; teams];
        let mut out = vec![Vec::new(); teams];
        for i in order {
            let t = (0..teams).find(|&t| fill[t] + sizes[i] <= team_size)?;
            fill[t] += sizes[i];
            out[t].push(i);
        }
        Some(out)
    }

    /// Both entry points answer as the reference, team by team, over every list of up to
    /// six party sizes (oversized parties included) for teams of 1 to 5 and 2 to 8 teams.
    #[test]
    fn first_fit_agrees_with_the_reference() {
        let mut fill = Vec::new();
        for team_size in 1..=5usize {
            for teams in 2..=8 {
                for len in 1..=6u32 {
                    for code in 0..(team_size + 1).pow(len) {
                        let sizes: Vec<usize> =
                            (0..len).map(|k| code / (team_size + 1).pow(k) % (team_size + 1) + 1).collect();
                        let expected = reference_first_fit(&sizes, teams, team_size);
                        let context = format!("sizes {sizes:?}, {teams} teams of {team_size}");
                        assert_eq!(first_fit(&sizes, teams, team_size), expected, "{context}");
                        assert_eq!(
                            first_fit_fits(&sizes, &mut fill, teams, team_size),
                            expected.is_some(),
                            "{context}"
                        );
                    }
                }
            }
        }
    }
}
