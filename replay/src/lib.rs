//! `rally replay`: the offline simulator.
//!
//! Reads an `EVENTS.jsonl` log (enqueues and cancels with timestamps), drives one engine
//! [`Shard`] per shard of the rules on a virtual clock exactly as the runtime would on a real one, and
//! writes every formed match to `MATCHES.jsonl`. Studios tune their rules with it from
//! recorded traffic; the quality tests and benchmarks measure the engine with it.
//!
//! The output depends only on the rules and the input: byte-identical across runs and
//! machines. Timing figures go to the [`Summary`], never into the match file.
//!
//! Also here, as harness pieces for tests, benchmarks and `rally workload`: a synthetic
//! traffic generator ([`workload`]), a plain greedy matcher to hold the engine against
//! ([`greedy`]), and an independent validity checker for match files ([`check`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod greedy;
mod input;
mod summary;
pub mod workload;

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::time::Instant;

use rally_engine::{
    Command, DatacenterId, Event, Match, ModeId, PlayerEntry, PlayerId, PoolTick, PoolTicks, Rejection, Rules, Shard,
    ShardConfig, ShardId, TicketId, TicketRequest, home_shard,
};
use rustc_hash::{FxHashMap, FxHashSet};

pub use input::{InputEvent, InputPlayer, LineError, MAX_TICKET_ID_BYTES, RttEntries, parse_line};
pub use summary::{Formed, ModeSummary, Percentiles, Summary};

/// The shortest stretch of virtual time the replay skips when every shard is idle
/// (`Shard::is_idle`: no tick can form a match before the next event). A gap of hours in
/// recorded traffic, or an `at_ms` of 10¹⁵, would otherwise be ticked through 100 ms at a
/// time, for as long as it takes. An hour is 36,000 ticks at the default `tick_ms`, tens of
/// milliseconds of wall time: shorter stretches are ticked through, so ordinary drains and
/// their tick statistics are as they were.
pub const IDLE_SKIP_MIN_MS: u64 = 3_600_000;

/// Replay settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayOptions {
    /// How long the virtual clock runs on after the last event, ms.
    pub drain_ms: u64,
    /// Stop at the first bad line.
    pub strict: bool,
    /// Skip long stretches of ticks in which no shard can form a match (see
    /// `IDLE_SKIP_MIN_MS`). On by default; the output is the same either way, and turning
    /// it off is how the tests show that.
    pub skip_idle: bool,
    /// Run the modes' parts of a tick on threads of their own when two or more modes have
    /// many tickets waiting (see `Shard::tick_with`). On by default where there is more
    /// than one core; the output is the same either way, and turning it off is how the
    /// tests show that.
    pub parallel_pools: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions { drain_ms: 60_000, strict: false, skip_idle: true, parallel_pools: true }
    }
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// `--strict` and a bad line.
    #[error("line {line}: {reason}")]
    Strict {
        /// 1-based line number.
        line: u64,
        /// What was wrong with it.
        reason: String,
    },
    /// Reading the input or writing the output failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// A bad line as reported on the diagnostics stream.
enum Bad<'a> {
    Line(&'a LineError),
    Engine(rally_engine::Rejection),
}

impl Bad<'_> {
    fn code(&self) -> &'static str {
        match self {
            Bad::Line(e) => e.code(),
            Bad::Engine(r) => r.code(),
        }
    }
    fn message(&self) -> String {
        match self {
            Bad::Line(e) => e.to_string(),
            Bad::Engine(r) => r.to_string(),
        }
    }
}

/// The replay state: shards, id interning and the virtual clock.
struct Replayer<'o, W: Write, D: Write> {
    rules: Arc<Rules>,
    shards: Vec<Shard>,
    options: ReplayOptions,
    /// Ticket strings, interned once; `TicketId(i)` is `ticket_names[i]`.
    ticket_ids: FxHashMap<Box<str>, u64>,
    ticket_names: Vec<Box<str>>,
    /// The shard and mode of each accepted ticket, by `TicketId` (`None`: never accepted).
    ticket_home: Vec<Option<(u16, ModeId)>>,
    player_ids: FxHashMap<Box<str>, u64>,
    /// With more than one shard, the players waiting and their tickets: a shard only knows
    /// its own, and the contract forbids waiting twice anywhere.
    across_shards: Option<AcrossShards>,
    /// When the next tick runs; `None` once the clock is past the last tick a `u64` holds.
    next_tick_ms: Option<u64>,
    last_at_ms: u64,
    events: Vec<Event>,
    out: &'o mut W,
    diag: &'o mut D,
    summary: Summary,
    line_buf: Vec<u8>,
}

#[derive(Default)]
struct AcrossShards {
    waiting_players: FxHashSet<PlayerId>,
    ticket_players: FxHashMap<TicketId, Vec<PlayerId>>,
}

impl AcrossShards {
    fn any_waiting(&self, players: &[PlayerEntry]) -> bool {
        players.iter().any(|p| self.waiting_players.contains(&p.id))
    }

    fn enqueued(&mut self, ticket: TicketId, players: &[PlayerEntry]) {
        self.waiting_players.extend(players.iter().map(|p| p.id));
        self.ticket_players.insert(ticket, players.iter().map(|p| p.id).collect());
    }

    fn finished(&mut self, ticket: TicketId) {
        for p in self.ticket_players.remove(&ticket).unwrap_or_default() {
            self.waiting_players.remove(&p);
        }
    }
}

/// Below this many waiting tickets a mode's part of a tick costs less than a thread. Not
/// sharp: 250 and 4,000 gave the same wall times on the 240k-ticket replays, within the
/// host's ±10% (BENCHMARKS.md), since the parts that matter there hold tens of thousands.
const THREAD_MIN_WAITING: usize = 1_000;

/// Runs the parts of a shard's tick (one per mode): with `parallel`, when two or more
/// modes are busy, each busy one but the first on a scoped thread of its own and the rest
/// here. The shard numbers their matches in mode order, so the output does not depend on
/// which finishes first.
fn run_pool_ticks(pools: PoolTicks<'_>, parallel: bool) {
    if !parallel {
        pools.for_each(PoolTick::run);
        return;
    }
    let (busy, light): (Vec<_>, Vec<_>) = pools.partition(|pool| pool.waiting() >= THREAD_MIN_WAITING);
    light.into_iter().for_each(PoolTick::run);
    let mut busy = busy.into_iter();
    let Some(here) = busy.next() else { return };
    std::thread::scope(|scope| {
        for pool in busy {
            scope.spawn(move || pool.run());
        }
        here.run();
    });
}

/// Runs a whole replay: `input` events in, matches to `output`, one line per bad input line
/// to `diag`. Returns the summary (wall time included).
pub fn run(
    rules: Arc<Rules>,
    mut options: ReplayOptions,
    input: &mut impl BufRead,
    output: &mut impl Write,
    diag: &mut impl Write,
) -> Result<Summary, ReplayError> {
    let started = Instant::now();
    options.parallel_pools &= std::thread::available_parallelism().is_ok_and(|cores| cores.get() > 1);
    let shards: Vec<Shard> = (0..rules.shards.len())
        .map(|i| {
            Shard::new(rules.clone(), ShardId(i as u16), ShardConfig { remember_ids_ms: None, first_match_seq: 0 })
        })
        .collect();
    let across_shards = (shards.len() > 1).then(AcrossShards::default);
    let summary = Summary::for_modes(rules.modes.iter().map(|m| m.name.clone()));
    let mut r = Replayer {
        rules,
        shards,
        options,
        ticket_ids: FxHashMap::default(),
        ticket_names: Vec::new(),
        ticket_home: Vec::new(),
        player_ids: FxHashMap::default(),
        across_shards,
        next_tick_ms: Some(0),
        last_at_ms: 0,
        events: Vec::new(),
        out: output,
        diag,
        summary,
        line_buf: Vec::new(),
    };
    let mut line = String::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        r.line_buf.clear();
        // Read raw bytes so invalid UTF-8 is a bad line, not an I/O error.
        if input.read_until(b'\n', &mut r.line_buf)? == 0 {
            break;
        }
        line_no += 1;
        let text = match std::str::from_utf8(&r.line_buf) {
            Ok(t) => t.trim_end_matches(['\n', '\r']),
            Err(e) => {
                r.summary.lines_read += 1;
                let err = LineError::Malformed(format!("invalid utf-8: {e}"));
                r.bad_line(line_no, Bad::Line(&err))?;
                continue;
            }
        };
        if text.trim().is_empty() {
            // Blank lines (a trailing newline, say) are not events and not errors.
            continue;
        }
        r.summary.lines_read += 1;
        line.push_str(text);
        match parse_line(&line, r.last_at_ms) {
            Ok(event) => r.apply(line_no, event)?,
            Err(err) => r.bad_line(line_no, Bad::Line(&err))?,
        }
    }
    let end_ms = r.last_at_ms.saturating_add(r.options.drain_ms);
    r.run_ticks_through(end_ms)?;
    r.out.flush()?;
    r.summary.still_waiting = r.shards.iter().map(Shard::waiting_total).sum::<usize>() as u64;
    r.summary.searches = r.shards.iter().map(Shard::searches).sum();
    r.summary.neighbours_scanned = r.shards.iter().map(Shard::neighbours_scanned).sum();
    for (i, (_, part)) in r.summary.by_mode.iter_mut().enumerate() {
        let mode = ModeId(i as u16);
        part.still_waiting = r.shards.iter().map(|shard| shard.waiting(mode)).sum::<usize>() as u64;
        part.searches = r.shards.iter().map(|shard| shard.searches_in(mode)).sum();
    }
    r.summary.virtual_end_ms = end_ms;
    r.summary.finish();
    r.summary.wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(r.summary)
}

impl<W: Write, D: Write> Replayer<'_, W, D> {
    fn bad_line(&mut self, line_no: u64, bad: Bad<'_>) -> Result<(), ReplayError> {
        let code = bad.code();
        *self.summary.rejected.entry(code.to_owned()).or_default() += 1;
        let message = bad.message();
        writeln!(self.diag, "line {line_no}: {code}: {message}")?;
        if self.options.strict {
            return Err(ReplayError::Strict { line: line_no, reason: format!("{code}: {message}") });
        }
        Ok(())
    }

    /// Runs every tick strictly before `at_ms`, so events at `at_ms` land before its tick.
    fn run_ticks_before(&mut self, at_ms: u64) -> Result<(), ReplayError> {
        while let Some(now) = self.next_tick_ms.filter(|&t| t < at_ms) {
            if self.may_skip_idle(now, at_ms) {
                self.next_tick_ms = self.first_tick_from(at_ms);
                break;
            }
            self.tick(now)?;
        }
        Ok(())
    }

    /// Runs every tick up to and including `end_ms`.
    fn run_ticks_through(&mut self, end_ms: u64) -> Result<(), ReplayError> {
        while let Some(now) = self.next_tick_ms.filter(|&t| t <= end_ms) {
            if self.may_skip_idle(now, end_ms) {
                self.next_tick_ms = end_ms.checked_add(1).and_then(|t| self.first_tick_from(t));
                break;
            }
            self.tick(now)?;
        }
        Ok(())
    }

    /// Whether the ticks from `now_ms` to `until_ms` may be skipped: a stretch of at least
    /// `IDLE_SKIP_MIN_MS` with no event in it, over which no shard can form a match.
    fn may_skip_idle(&self, now_ms: u64, until_ms: u64) -> bool {
        self.options.skip_idle && until_ms - now_ms >= IDLE_SKIP_MIN_MS && self.shards.iter().all(Shard::is_idle)
    }

    /// The first tick at or after `at_ms`, if a `u64` holds it.
    fn first_tick_from(&self, at_ms: u64) -> Option<u64> {
        at_ms.div_ceil(self.rules.tick_ms).checked_mul(self.rules.tick_ms)
    }

    fn tick(&mut self, now: u64) -> Result<(), ReplayError> {
        let started = Instant::now();
        let parallel = self.options.parallel_pools;
        for shard in &mut self.shards {
            shard.tick_with(now, &mut self.events, |pools| run_pool_ticks(pools, parallel));
        }
        self.summary.record_tick(started.elapsed());
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            if let Event::Matched(m) = event {
                if let Some(across) = &mut self.across_shards {
                    for t in &m.tickets {
                        across.finished(t.id);
                    }
                }
                self.write_match(&m)?;
            }
        }
        self.events = events;
        self.next_tick_ms = now.checked_add(self.rules.tick_ms);
        Ok(())
    }

    /// Whether a ticket now waiting with one of `players`, in any shard, will still be
    /// waiting at `at_ms`: found by `Shard::would_match_all` on the ticks the shard would run
    /// before `at_ms`, so the answer moves no clock. Its price is a copy of the pools of
    /// each shard holding such a ticket, and only for a line that names a player waiting now.
    fn conflicts_outlast(&self, players: &[PlayerEntry], at_ms: u64) -> bool {
        let tick_ms = self.rules.tick_ms;
        let ticks = || {
            std::iter::successors(self.next_tick_ms, move |t| t.checked_add(tick_ms)).take_while(move |&t| t < at_ms)
        };
        self.shards.iter().any(|shard| {
            let waiting: Vec<TicketId> = players.iter().filter_map(|p| shard.waiting_ticket_of(p.id)).collect();
            !waiting.is_empty() && !shard.would_match_all(&waiting, ticks())
        })
    }

    fn intern_ticket(&mut self, name: &str) -> TicketId {
        if let Some(&id) = self.ticket_ids.get(name) {
            return TicketId(id);
        }
        let id = self.ticket_names.len() as u64;
        self.ticket_ids.insert(name.into(), id);
        self.ticket_names.push(name.into());
        self.ticket_home.push(None);
        TicketId(id)
    }

    fn intern_player(&mut self, name: &str) -> PlayerId {
        if let Some(&id) = self.player_ids.get(name) {
            return PlayerId(id);
        }
        let id = self.player_ids.len() as u64;
        self.player_ids.insert(name.into(), id);
        PlayerId(id)
    }

    fn apply(&mut self, line_no: u64, event: InputEvent<'_>) -> Result<(), ReplayError> {
        let at_ms = event.at_ms();
        match event {
            InputEvent::Enqueue { ticket, mode, players, .. } => {
                let rtts = match players.iter().map(|p| self.rtt_map(&p.rtt_ms)).collect::<Result<Vec<_>, _>>() {
                    Ok(rtts) => rtts,
                    Err(e) => return self.bad_line(line_no, Bad::Line(&e)),
                };
                let id = self.intern_ticket(&ticket);
                // An unknown name becomes an id no mode has; the shard refuses it in its
                // usual order of checks, so every reason is decided in one place.
                let mode = self.rules.mode_id(&mode).unwrap_or(ModeId(u16::MAX));
                let players: Vec<PlayerEntry> = players
                    .iter()
                    .zip(rtts)
                    .map(|(p, rtt_ms)| PlayerEntry { id: self.intern_player(&p.id), mmr: p.mmr, rtt_ms })
                    .collect();
                // A ticket no shard can take goes to the first, which says why in its
                // usual order of checks.
                let shard = usize::from(home_shard(&self.rules, &players).unwrap_or(ShardId(0)).0);
                let req = TicketRequest { id, mode, players, waited_ms: 0 };
                // Accepted before by any shard (the home shard only knows its own).
                let used_before = self.ticket_home[id.0 as usize].is_some();
                // A refused line must not move the clock (a later line may carry an
                // earlier time), so every reason is found before any tick runs. Only
                // "player already waiting" can change with time: a tick before the line's
                // own time may match the other ticket. That is found on copies of the
                // shards (`conflicts_outlast`).
                let verdict = match self.shards[shard].check(&req) {
                    Ok(()) | Err(Rejection::PlayerAlreadyWaiting) if used_before => Err(Rejection::DuplicateTicket),
                    checked @ (Ok(()) | Err(Rejection::PlayerAlreadyWaiting)) => {
                        // Waiting now, here or (with several shards) elsewhere.
                        let clash = checked.is_err()
                            || self.across_shards.as_ref().is_some_and(|a| a.any_waiting(&req.players));
                        if clash && self.conflicts_outlast(&req.players, at_ms) {
                            Err(Rejection::PlayerAlreadyWaiting)
                        } else {
                            self.run_ticks_before(at_ms)?;
                            debug_assert!(
                                !self.across_shards.as_ref().is_some_and(|a| a.any_waiting(&req.players)),
                                "the copies ticked as the shards did"
                            );
                            self.shards[shard].enqueue(at_ms, &req)
                        }
                    }
                    Err(reason) => Err(reason),
                };
                match verdict {
                    Ok(()) => {
                        self.ticket_home[id.0 as usize] = Some((shard as u16, mode));
                        if let Some(part) = self.summary.mode_mut(mode.0) {
                            part.enqueued += 1;
                        }
                        if let Some(across) = &mut self.across_shards {
                            across.enqueued(id, &req.players);
                        }
                        self.accepted(at_ms);
                    }
                    Err(reason) => self.bad_line(line_no, Bad::Engine(reason))?,
                }
            }
            InputEvent::Cancel { ticket, .. } => {
                self.run_ticks_before(at_ms)?;
                let home = self.ticket_ids.get(&*ticket).and_then(|&id| Some((id, self.ticket_home[id as usize]?)));
                let outcome = match home {
                    Some((id, (shard, _))) => {
                        self.shards[usize::from(shard)].handle(at_ms, Command::Cancel(TicketId(id)), &mut self.events);
                        self.events.pop()
                    }
                    None => None,
                };
                match outcome {
                    Some(Event::Cancelled(id)) => {
                        if let Some(across) = &mut self.across_shards {
                            across.finished(id);
                        }
                        self.summary.cancelled += 1;
                        if let Some((_, (_, mode))) = home
                            && let Some(part) = self.summary.mode_mut(mode.0)
                        {
                            part.cancelled += 1;
                        }
                    }
                    _ => self.summary.cancel_not_waiting += 1,
                }
                self.accepted(at_ms);
            }
        }
        Ok(())
    }

    fn accepted(&mut self, at_ms: u64) {
        self.summary.accepted += 1;
        self.last_at_ms = at_ms;
    }

    /// A player's RTTs by configured datacenter: unknown names are ignored whatever their
    /// value, a known name whose value is not a number makes the line malformed, and a name
    /// given twice keeps its last value, as JSON readers do.
    fn rtt_map(&self, rtt_ms: &RttEntries<'_>) -> Result<Vec<(DatacenterId, f64)>, LineError> {
        let mut out: Vec<(DatacenterId, f64)> = Vec::with_capacity(rtt_ms.len());
        for (name, rtt) in rtt_ms {
            let Some(dc) = self.rules.datacenter_id(name) else { continue };
            let rtt = rtt.ok_or_else(|| LineError::Malformed(format!("rtt_ms for {name:?} is not a number")))?;
            match out.iter_mut().find(|(d, _)| *d == dc) {
                Some(entry) => entry.1 = rtt,
                None => out.push((dc, rtt)),
            }
        }
        Ok(out)
    }

    fn write_match(&mut self, m: &Match) -> Result<(), ReplayError> {
        self.summary.record_match(m);
        let out = &mut *self.out;
        let mode = &self.rules.modes[usize::from(m.mode.0)].name;
        write!(out, "{{\"match\":\"m{}\",\"mode\":", self.summary.formed.matches)?;
        serde_json::to_writer(&mut *out, mode).map_err(io::Error::from)?;
        out.write_all(b",\"datacenter\":")?;
        serde_json::to_writer(&mut *out, self.rules.datacenter_name(m.datacenter)).map_err(io::Error::from)?;
        write!(out, ",\"formed_at_ms\":{},\"teams\":[", m.formed_at_ms)?;
        for (i, team) in m.teams().enumerate() {
            out.write_all(if i == 0 { b"[" } else { b",[" })?;
            for (j, t) in team.iter().enumerate() {
                if j > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, &*self.ticket_names[t.id.0 as usize]).map_err(io::Error::from)?;
            }
            out.write_all(b"]")?;
        }
        out.write_all(b"],\"wait_ms\":[")?;
        for (i, t) in m.tickets.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            write!(out, "{}", t.wait_ms)?;
        }
        out.write_all(b"],\"mmr_spread\":")?;
        write_f64(out, m.mmr_spread)?;
        out.write_all(b",\"team_imbalance\":")?;
        write_f64(out, m.team_imbalance)?;
        out.write_all(b",\"worst_rtt_ms\":")?;
        write_f64(out, m.worst_rtt_ms)?;
        out.write_all(b"}\n")?;
        Ok(())
    }
}

fn write_f64(out: &mut impl Write, x: f64) -> io::Result<()> {
    serde_json::to_writer(out, &x).map_err(io::Error::from)
}
