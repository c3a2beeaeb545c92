//! An independent checker of match files against the replay contract, and the quality
//! figures the tests compare matchers by.
//!
//! It shares nothing with the engine but the line parser and the parsed rules: admission (which tickets were
//! accepted), waiting state and every validity rule are re-implemented here from the
//! contract's text, so an engine bug cannot hide behind itself.
//!
//! One deliberate difference: the contract leaves "no known datacenter" open; the engine
//! asks for a datacenter of the ticket's shard known to every player, this checker for any
//! configured datacenter known to every player. They agree with one shard (the default);
//! with several the engine is stricter, so a ticket it accepts the checker accepts too.

use std::collections::HashMap;

use rally_engine::Rules;

use crate::input::{InputEvent, InputPlayer, parse_line};

/// A player as the contract sees them.
#[derive(Clone, Debug)]
pub struct CheckPlayer {
    /// Id.
    pub id: String,
    /// Rating.
    pub mmr: f64,
    /// RTT per configured datacenter index (unknown names dropped).
    pub rtt: Vec<(usize, f64)>,
}

impl CheckPlayer {
    /// RTT to datacenter `dc`, if measured (the last entry wins).
    pub fn rtt_to(&self, dc: usize) -> Option<f64> {
        self.rtt.iter().rev().find(|(d, _)| *d == dc).map(|(_, r)| *r)
    }
}

/// An accepted ticket.
#[derive(Clone, Debug)]
pub struct CheckTicket {
    /// Its id.
    pub name: String,
    /// Enqueue time.
    pub at_ms: u64,
    /// Mode index.
    pub mode: usize,
    /// Players.
    pub players: Vec<CheckPlayer>,
}

impl CheckTicket {
    /// Lowest rating among the players.
    pub fn min_mmr(&self) -> f64 {
        self.players.iter().map(|p| p.mmr).fold(f64::INFINITY, f64::min)
    }
    /// Highest rating among the players.
    pub fn max_mmr(&self) -> f64 {
        self.players.iter().map(|p| p.mmr).fold(f64::NEG_INFINITY, f64::max)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Waiting,
    Done,
}

/// What an input line did to the queue.
#[derive(Debug)]
pub enum Admitted {
    /// A ticket started waiting.
    Enqueued(CheckTicket),
    /// A waiting ticket was cancelled.
    Cancelled(String),
    /// A line that changed nothing (bad, refused, or a cancel of a ticket not waiting).
    Nothing,
}

/// The contract's admission rules and waiting state, event by event.
#[derive(Default)]
pub struct Admission {
    tickets: HashMap<String, (State, CheckTicket)>,
    waiting_players: HashMap<String, String>,
    last_at_ms: u64,
}

impl Admission {
    /// Applies one input line; returns what it did and its time if it parsed.
    pub fn apply(&mut self, rules: &Rules, line: &str) -> (Option<u64>, Admitted) {
        if line.trim().is_empty() {
            return (None, Admitted::Nothing);
        }
        let Ok(event) = parse_line(line, self.last_at_ms) else { return (None, Admitted::Nothing) };
        let at_ms = event.at_ms();
        (Some(at_ms), self.apply_event(rules, event))
    }

    /// Applies one parsed line (parsed against `last_at_ms`); returns what it did.
    pub fn apply_event(&mut self, rules: &Rules, event: InputEvent<'_>) -> Admitted {
        match event {
            InputEvent::Enqueue { ticket, mode, players, at_ms } => {
                match self.admit_enqueue(rules, &ticket, &mode, &players, at_ms, |_| false) {
                    Some(t) => {
                        for p in &t.players {
                            self.waiting_players.insert(p.id.clone(), t.name.clone());
                        }
                        self.tickets.insert(t.name.clone(), (State::Waiting, t.clone()));
                        self.last_at_ms = at_ms;
                        Admitted::Enqueued(t)
                    }
                    None => Admitted::Nothing,
                }
            }
            InputEvent::Cancel { ticket, at_ms } => {
                self.last_at_ms = at_ms;
                if self.finish(&ticket).is_some() {
                    Admitted::Cancelled(ticket.into_owned())
                } else {
                    Admitted::Nothing
                }
            }
        }
    }

    /// Whether `event` (parsed against `last_at_ms`) would be applied, an enqueue accepted
    /// or a cancel processed, if the tickets `matched_first` names were matched before it;
    /// changes nothing. Every cancel is applied, and every enqueue the contract accepts.
    pub fn would_apply(&self, rules: &Rules, event: &InputEvent<'_>, matched_first: impl Fn(&str) -> bool) -> bool {
        match event {
            InputEvent::Enqueue { ticket, mode, players, at_ms } => {
                self.admit_enqueue(rules, ticket, mode, players, *at_ms, matched_first).is_some()
            }
            InputEvent::Cancel { .. } => true,
        }
    }

    /// The ticket an enqueue adds, if the contract accepts it; a player waiting in a ticket
    /// `matched_first` names counts as no longer waiting.
    fn admit_enqueue(
        &self,
        rules: &Rules,
        ticket: &str,
        mode: &str,
        players: &[InputPlayer<'_>],
        at_ms: u64,
        matched_first: impl Fn(&str) -> bool,
    ) -> Option<CheckTicket> {
        let mode_idx = rules.mode_id(mode)?.0 as usize;
        let team_size = usize::from(rules.modes[mode_idx].team_size);
        if players.is_empty() || players.len() > team_size {
            return None;
        }
        for (i, p) in players.iter().enumerate() {
            if players[..i].iter().any(|q| q.id == p.id) {
                return None;
            }
        }
        // RTT keys naming no configured datacenter are ignored, whatever their value.
        let mut checked = Vec::with_capacity(players.len());
        for p in players {
            let mut rtt = Vec::with_capacity(p.rtt_ms.len());
            for (name, value) in &p.rtt_ms {
                let Some(dc) = rules.datacenter_id(name) else { continue };
                rtt.push((usize::from(dc.0), (*value)?));
            }
            checked.push(CheckPlayer { id: p.id.to_string(), mmr: p.mmr, rtt });
        }
        let players = checked;
        let bad = |x: f64| !x.is_finite() || x < 0.0;
        if players.iter().any(|p| bad(p.mmr) || p.rtt.iter().any(|(_, r)| bad(*r))) {
            return None;
        }
        let known = (0..rules.datacenters.len()).any(|dc| players.iter().all(|p| p.rtt_to(dc).is_some()));
        if !known {
            return None;
        }
        if self.tickets.contains_key(ticket) {
            return None;
        }
        if players.iter().any(|p| self.waiting_players.get(&*p.id).is_some_and(|t| !matched_first(t))) {
            return None;
        }
        Some(CheckTicket { name: ticket.to_owned(), at_ms, mode: mode_idx, players })
    }

    /// Ends a waiting ticket (matched or cancelled); returns it if it was waiting.
    pub fn finish(&mut self, name: &str) -> Option<&CheckTicket> {
        let (state, ticket) = self.tickets.get_mut(name)?;
        if *state != State::Waiting {
            return None;
        }
        *state = State::Done;
        for p in &ticket.players {
            self.waiting_players.remove(&p.id);
        }
        Some(ticket)
    }

    /// The last accepted line's time.
    pub fn last_at_ms(&self) -> u64 {
        self.last_at_ms
    }

    /// How many tickets are waiting.
    pub fn n_waiting(&self) -> usize {
        self.tickets.values().filter(|(state, _)| *state == State::Waiting).count()
    }

    /// The ticket `name` if it is waiting.
    pub fn waiting(&self, name: &str) -> Option<&CheckTicket> {
        match self.tickets.get(name) {
            Some((State::Waiting, t)) => Some(t),
            _ => None,
        }
    }
}

/// Quality figures of a match file, from the contract's definitions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quality {
    /// Tickets the contract accepts.
    pub tickets_accepted: u64,
    /// Matches.
    pub matches: u64,
    /// Tickets matched.
    pub tickets_matched: u64,
    /// Median wait of matched tickets, ms.
    pub wait_p50_ms: u64,
    /// 95th percentile wait of matched tickets, ms (nearest rank).
    pub wait_p95_ms: u64,
    /// Mean wait of matched tickets, ms.
    pub mean_wait_ms: f64,
    /// 95th percentile wait over every ticket that was not cancelled, the ones never
    /// matched counting as waiting forever (`u64::MAX`): a matcher cannot improve it by
    /// leaving hard tickets behind.
    pub wait_p95_all_ms: u64,
    /// Mean team imbalance per match.
    pub mean_imbalance: f64,
    /// Mean MMR spread per match.
    pub mean_spread: f64,
    /// Mean worst RTT per match.
    pub mean_worst_rtt_ms: f64,
    /// Each matched ticket's wait, ms, by ticket id: what comparing two matchers ticket by
    /// ticket needs (`greedy::Contest::common_wait_p95_ms`).
    pub waits_by_ticket: TicketWaits,
}

/// Matched tickets' waits, ms, by ticket id. Its `Debug` shows how many, not each: a
/// minute of traffic matches tens of thousands.
#[derive(Clone, Default, PartialEq)]
pub struct TicketWaits(pub HashMap<String, u64>);

impl std::fmt::Debug for TicketWaits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketWaits").field("tickets", &self.0.len()).finish_non_exhaustive()
    }
}

struct MatchLine {
    line_no: usize,
    mode: String,
    datacenter: String,
    formed_at_ms: u64,
    teams: Vec<Vec<String>>,
}

fn parse_match(line_no: usize, line: &str) -> Result<MatchLine, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("match line {line_no}: {e}"))?;
    let field = |k: &str| v.get(k).ok_or_else(|| format!("match line {line_no}: no `{k}`"));
    let text = |k: &str| {
        field(k)?.as_str().map(str::to_owned).ok_or_else(|| format!("match line {line_no}: `{k}` not a string"))
    };
    let teams = field("teams")?
        .as_array()
        .ok_or_else(|| format!("match line {line_no}: teams not an array"))?
        .iter()
        .map(|team| {
            team.as_array()
                .ok_or_else(|| format!("match line {line_no}: team not an array"))?
                .iter()
                .map(|t| {
                    t.as_str().map(str::to_owned).ok_or_else(|| format!("match line {line_no}: ticket not a string"))
                })
                .collect()
        })
        .collect::<Result<_, String>>()?;
    Ok(MatchLine {
        line_no,
        mode: text("mode")?,
        datacenter: text("datacenter")?,
        formed_at_ms: field("formed_at_ms")?
            .as_u64()
            .ok_or_else(|| format!("match line {line_no}: bad formed_at_ms"))?,
        teams,
    })
}

/// Checks every match of `matches` against `events` and `rules`; returns the quality
/// figures, or the first violation.
pub fn evaluate(rules: &Rules, events: &str, matches: &str) -> Result<Quality, String> {
    let matches: Vec<MatchLine> = matches
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_match(i + 1, l))
        .collect::<Result<_, _>>()?;
    for w in matches.windows(2) {
        if w[1].formed_at_ms < w[0].formed_at_ms {
            return Err(format!("match line {}: not in formation order", w[1].line_no));
        }
    }
    let mut admission = Admission::default();
    let mut q = Quality::default();
    let mut next_match = 0;
    for line in events.lines() {
        // A line that does not parse (blank, malformed, out of order) changes nothing.
        let Ok(event) = parse_line(line, admission.last_at_ms()) else { continue };
        // Matches formed before this event's time happened before it, if it is applied: a
        // refused line moves no clock, so a later line may still come before them.
        let first = &matches[next_match..];
        let before = first.partition_point(|m| m.formed_at_ms < event.at_ms());
        let matched_first = |t: &str| first[..before].iter().any(|m| m.teams.iter().flatten().any(|n| n == t));
        if admission.would_apply(rules, &event, matched_first) {
            for m in &matches[next_match..next_match + before] {
                check_match(rules, &mut admission, m, &mut q)?;
            }
            next_match += before;
        }
        if let Admitted::Enqueued(_) = admission.apply_event(rules, event) {
            q.tickets_accepted += 1;
        }
    }
    for m in &matches[next_match..] {
        check_match(rules, &mut admission, m, &mut q)?;
    }
    let mut waits: Vec<u64> = q.waits_by_ticket.0.values().copied().collect();
    waits.sort_unstable();
    // Tickets never matched sort after every matched one, as if waiting forever.
    let never = admission.n_waiting();
    let n_all = waits.len() + never;
    if n_all > 0 {
        q.wait_p95_all_ms = waits.get(nearest_rank(0.95, n_all)).copied().unwrap_or(u64::MAX);
    }
    if !waits.is_empty() {
        let rank = |p: f64| waits[nearest_rank(p, waits.len())];
        q.wait_p50_ms = rank(0.50);
        q.wait_p95_ms = rank(0.95);
        q.mean_wait_ms = waits.iter().sum::<u64>() as f64 / waits.len() as f64;
    }
    if q.matches > 0 {
        let n = q.matches as f64;
        q.mean_imbalance /= n;
        q.mean_spread /= n;
        q.mean_worst_rtt_ms /= n;
    }
    Ok(q)
}

/// The index of the `p` quantile in `n` sorted values, by nearest rank (`n` > 0).
pub(crate) fn nearest_rank(p: f64, n: usize) -> usize {
    ((p * n as f64).ceil() as usize).clamp(1, n) - 1
}

fn check_match(rules: &Rules, admission: &mut Admission, m: &MatchLine, q: &mut Quality) -> Result<(), String> {
    let fail = |why: String| Err(format!("match line {}: {why}", m.line_no));
    let Some(mode_id) = rules.mode_id(&m.mode) else { return fail(format!("unknown mode {}", m.mode)) };
    let mode = &rules.modes[usize::from(mode_id.0)];
    let Some(dc) = rules.datacenter_id(&m.datacenter) else {
        return fail(format!("unknown datacenter {}", m.datacenter));
    };
    let dc = usize::from(dc.0);
    if m.teams.len() != usize::from(mode.teams) {
        return fail(format!("{} teams, mode has {}", m.teams.len(), mode.teams));
    }
    let t = m.formed_at_ms;
    let mut tickets: Vec<(usize, CheckTicket)> = Vec::new();
    for (team_idx, team) in m.teams.iter().enumerate() {
        let mut players = 0;
        for name in team {
            let Some(ticket) = admission.waiting(name) else {
                return fail(format!("ticket {name} is not waiting (never accepted, cancelled, or matched before)"));
            };
            if ticket.mode != usize::from(mode_id.0) {
                return fail(format!("ticket {name} queued for another mode"));
            }
            if ticket.at_ms > t {
                return fail(format!("ticket {name} enqueued after the match formed"));
            }
            if tickets.iter().any(|(_, other)| other.name == *name) {
                return fail(format!("ticket {name} twice in the match"));
            }
            players += ticket.players.len();
            tickets.push((team_idx, ticket.clone()));
        }
        if players != usize::from(mode.team_size) {
            return fail(format!("team {team_idx} has {players} players, mode needs {}", mode.team_size));
        }
    }
    let lo = tickets.iter().map(|(_, t)| t.min_mmr()).fold(f64::INFINITY, f64::min);
    let hi = tickets.iter().map(|(_, t)| t.max_mmr()).fold(f64::NEG_INFINITY, f64::max);
    let spread = hi - lo;
    let mut worst_rtt = 0.0f64;
    for (_, ticket) in &tickets {
        let wait = t - ticket.at_ms;
        let window =
            (mode.mmr_window.start + mode.mmr_window.growth_per_s * wait as f64 / 1000.0).min(mode.mmr_window.max);
        if spread > window {
            return fail(format!("spread {spread} exceeds ticket {}'s window {window}", ticket.name));
        }
        let limit =
            (mode.max_rtt_ms.start + mode.max_rtt_ms.growth_per_s * wait as f64 / 1000.0).min(mode.max_rtt_ms.max);
        for p in &ticket.players {
            match p.rtt_to(dc) {
                Some(r) if r <= limit => worst_rtt = worst_rtt.max(r),
                Some(r) => return fail(format!("player {} rtt {r} to {} over limit {limit}", p.id, m.datacenter)),
                None => return fail(format!("player {} has no rtt to {}", p.id, m.datacenter)),
            }
        }
        q.waits_by_ticket.0.insert(ticket.name.clone(), wait);
    }
    let mut team_sums = vec![0.0f64; m.teams.len()];
    for (team, ticket) in &tickets {
        team_sums[*team] += ticket.players.iter().map(|p| p.mmr).sum::<f64>();
    }
    let size = f64::from(mode.team_size);
    let (mlo, mhi) =
        team_sums.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| (a.min(s / size), b.max(s / size)));
    for (_, ticket) in &tickets {
        admission.finish(&ticket.name);
    }
    q.matches += 1;
    q.tickets_matched += tickets.len() as u64;
    q.mean_imbalance += mhi - mlo;
    q.mean_spread += spread;
    q.mean_worst_rtt_ms += worst_rtt;
    Ok(())
}
