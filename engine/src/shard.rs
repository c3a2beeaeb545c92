//! The sans-IO shard: the pools of a group of regions, fed commands and ticked by its owner.
//!
//! A shard reads no clock, does no I/O and draws no randomness: `now_ms` is an input (real
//! milliseconds in the runtime, virtual in `rally replay`), so the same inputs give the
//! same events, byte for byte.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::command::{Command, Event, MatchId, PlayerEntry, PlayerId, Rejection, TicketId, TicketRequest};
use crate::pool::{DUEL_PATIENCE_MAX_MS, MatchSink, NewTicket, PLAN_RETRY_DENSE_MS, Pool, RESEARCH_DELAY_MAX_MS};
use crate::recent_waits::{RECENT_WAITS, RecentWaits};
use crate::rules::{DatacenterId, MAX_DATACENTERS_PER_SHARD, ModeId, Rules, ShardId};

/// How long a shard must go without a command or a match, after its waiting tickets' limits
/// have settled (`Pool::limits_settle_at_ms`), before it counts as idle (`Shard::is_idle`).
/// Once limits have settled, the sets that are valid stay valid and no new one appears; what
/// the pools still do over time is search again, each failed anchor at most
/// `RESEARCH_DELAY_MAX_MS` after its last search (a wide party's plan at most
/// `PLAN_RETRY_DENSE_MS` after), deterministically from the same state. Six of those
/// delays: every anchor has searched again, more than once, and found nothing. A duel pair
/// declined for patience forms at most `DUEL_PATIENCE_MAX_MS` after its older ticket's
/// enqueue, a change, so before the quiet stretch ends.
const IDLE_AFTER_QUIET_MS: u64 = 30_000;
const _: () = assert!(
    IDLE_AFTER_QUIET_MS >= 2 * RESEARCH_DELAY_MAX_MS
        && IDLE_AFTER_QUIET_MS >= 2 * PLAN_RETRY_DENSE_MS
        && IDLE_AFTER_QUIET_MS > DUEL_PATIENCE_MAX_MS
);

/// Per-shard settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShardConfig {
    /// How long a finished ticket's id is remembered (and refused if used again), ms.
    /// `None` remembers forever, as `rally replay` does.
    pub remember_ids_ms: Option<u64>,
    /// The match sequence number the shard starts after. A long-lived service starts each
    /// run past the last (e.g. from the wall clock) so match ids stay unique across
    /// restarts, which is what makes results idempotent per match id; `rally replay`
    /// starts at 0. Only the low 48 bits count.
    pub first_match_seq: u64,
}

impl Default for ShardConfig {
    fn default() -> Self {
        // An hour: far longer than any client retries an enqueue, small enough that a
        // long-running shard's memory stays bounded by its traffic rate.
        ShardConfig { remember_ids_ms: Some(3_600_000), first_match_seq: 0 }
    }
}

#[derive(Clone, Copy, Debug)]
enum TicketState {
    /// Waiting in `slot` of `mode`'s pool — unless that slot no longer holds this ticket:
    /// a matched ticket's entry is left as it was (see `Retire`).
    Waiting { mode: ModeId, slot: u32 },
    /// Cancelled; the id stays reserved.
    Done,
}

/// One shard's matchmaking state machine.
pub struct Shard {
    rules: Arc<Rules>,
    id: ShardId,
    config: ShardConfig,
    /// Global datacenter index → bit in this shard's masks (`u8::MAX`: not served here).
    local_dc: Vec<u8>,
    pools: Vec<Pool>,
    tickets: FxHashMap<TicketId, TicketState>,
    players: FxHashMap<PlayerId, TicketId>,
    /// Finished ticket ids in finishing order, to forget them after `remember_ids_ms`.
    finished: VecDeque<(u64, TicketId)>,
    /// The players of matched tickets, whose `players` entries go when the id is forgotten.
    finished_players: VecDeque<(u64, PlayerId, TicketId)>,
    next_match_seq: u64,
    last_tick_ms: Option<u64>,
    /// When a command last changed the waiting tickets or a tick last formed a match.
    last_change_ms: u64,
    /// When the waiting tickets' limits settle (see `is_idle`), once a quiet stretch asked;
    /// forgotten at every change.
    limits_settle_at_ms: Option<u64>,
    /// Waits of the tickets matched lately, all modes: what wide parties' plans and duels'
    /// patience are capped by.
    recent_waits: RecentWaits,
    /// Each pool's buffers for its part of a tick, by mode (see `PoolTick`).
    tick_buffers: Vec<PoolTickBuffers>,
    // Enqueue scratch.
    rtt_scratch: Vec<f64>,
    player_scratch: Vec<PlayerId>,
}

impl Shard {
    /// Shard `id` of `rules`.
    pub fn new(rules: Arc<Rules>, id: ShardId, config: ShardConfig) -> Self {
        let dcs = &rules.shard(id).datacenters;
        debug_assert!(dcs.len() <= MAX_DATACENTERS_PER_SHARD);
        let mut local_dc = vec![u8::MAX; rules.datacenters.len()];
        for (bit, dc) in dcs.iter().enumerate() {
            local_dc[usize::from(dc.0)] = bit as u8;
        }
        let pools = rules
            .modes
            .iter()
            .enumerate()
            .map(|(i, m)| Pool::new(ModeId(i as u16), m, dcs.len(), rules.tick_ms))
            .collect();
        Shard {
            rules,
            id,
            config,
            local_dc,
            pools,
            tickets: FxHashMap::default(),
            players: FxHashMap::default(),
            finished: VecDeque::new(),
            finished_players: VecDeque::new(),
            next_match_seq: config.first_match_seq & ((1 << 48) - 1),
            last_tick_ms: None,
            last_change_ms: 0,
            limits_settle_at_ms: None,
            recent_waits: RecentWaits::default(),
            tick_buffers: Vec::new(),
            rtt_scratch: Vec::new(),
            player_scratch: Vec::new(),
        }
    }

    /// Which shard this is.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// The rules it runs.
    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// Tickets waiting in `mode`.
    pub fn waiting(&self, mode: ModeId) -> usize {
        self.pools.get(usize::from(mode.0)).map_or(0, Pool::len)
    }

    /// Tickets waiting in every mode.
    pub fn waiting_total(&self) -> usize {
        self.pools.iter().map(Pool::len).sum()
    }

    /// Searches for a match run so far, in every mode: each is one anchor's look at its
    /// neighbours (now, or ahead for a set to hold or plan). They are what a big pool's tick
    /// costs, so the count says how hard the rules make a tick work.
    pub fn searches(&self) -> u64 {
        self.pools.iter().map(Pool::searches).sum()
    }

    /// Neighbours the searches looked at so far, in every mode: with `searches`, what the
    /// ticks cost. A search that can rule itself out early (no solo in reach for a party
    /// one player short) looks at few or none.
    pub fn neighbours_scanned(&self) -> u64 {
        self.pools.iter().map(Pool::neighbours_scanned).sum()
    }

    /// Searches run so far in `mode` (0 for an unknown mode).
    pub fn searches_in(&self, mode: ModeId) -> u64 {
        self.pools.get(usize::from(mode.0)).map_or(0, Pool::searches)
    }

    /// When the next tick is due (ms on the caller's clock): one `tick_ms` after the last,
    /// or 0 — at once — if none ran yet. Always `Some`; the `Option` leaves room for a shard
    /// with nothing to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        Some(self.last_tick_ms.map_or(0, |t| t + self.rules.tick_ms))
    }

    /// Whether no tick can form a match before the next command: nothing waits, or the
    /// waiting tickets' limits have settled (waiting longer makes no new set valid) and the
    /// shard has since ticked through `IDLE_AFTER_QUIET_MS` without a command or a match.
    /// A caller may then skip ticks until its next command, as `rally replay` does over a
    /// long gap in the input.
    pub fn is_idle(&self) -> bool {
        if self.waiting_total() == 0 {
            return true;
        }
        let (Some(now), Some(settled)) = (self.last_tick_ms, self.limits_settle_at_ms) else { return false };
        now >= settled.max(self.last_change_ms).saturating_add(IDLE_AFTER_QUIET_MS)
    }

    fn changed(&mut self, now_ms: u64) {
        self.last_change_ms = now_ms;
        self.limits_settle_at_ms = None;
    }

    /// Whether ticks at `tick_times` (ascending, none before the last tick), with no
    /// command between them, would match every one of `tickets`; the shard is unchanged.
    /// Found on a copy of the pools and what their ticks read: the ticket and player tables
    /// stay behind (ticks do not read them, and they hold every id the shard remembers).
    /// Stops at the first tick by which all are matched, or once the copy is idle. What
    /// `rally replay` asks before refusing a player who is waiting now but whose ticket a
    /// tick before the line's time may match, so a refused line moves no clock.
    pub fn would_match_all(&self, tickets: &[TicketId], tick_times: impl IntoIterator<Item = u64>) -> bool {
        let mut tick_times = tick_times.into_iter().peekable();
        if tickets.is_empty() {
            return true;
        }
        if tick_times.peek().is_none() || self.is_idle() {
            // Nothing would run, or nothing it runs could match: no copy needed.
            return false;
        }
        let mut copy = Shard {
            rules: self.rules.clone(),
            id: self.id,
            config: self.config,
            local_dc: self.local_dc.clone(),
            pools: self.pools.clone(),
            tickets: FxHashMap::default(),
            players: FxHashMap::default(),
            finished: VecDeque::new(),
            finished_players: VecDeque::new(),
            next_match_seq: self.next_match_seq,
            last_tick_ms: self.last_tick_ms,
            last_change_ms: self.last_change_ms,
            limits_settle_at_ms: self.limits_settle_at_ms,
            recent_waits: self.recent_waits.clone(),
            tick_buffers: Vec::new(),
            rtt_scratch: Vec::new(),
            player_scratch: Vec::new(),
        };
        let mut left = tickets.to_vec();
        let mut out = Vec::new();
        for now_ms in tick_times {
            if left.is_empty() || copy.is_idle() {
                break;
            }
            copy.tick(now_ms, &mut out);
            for event in out.drain(..) {
                if let Event::Matched(m) = event {
                    left.retain(|&t| m.tickets.iter().all(|mt| mt.id != t));
                }
            }
        }
        left.is_empty()
    }

    /// Applies one command at `now_ms`, reporting its outcome into `out`.
    pub fn handle(&mut self, now_ms: u64, cmd: Command, out: &mut Vec<Event>) {
        match cmd {
            Command::Enqueue(req) => {
                let id = req.id;
                match self.enqueue(now_ms, &req) {
                    Ok(()) => out.push(Event::Enqueued(id)),
                    Err(reason) => out.push(Event::Rejected { ticket: id, reason }),
                }
            }
            Command::Cancel(id) => out.push(self.cancel(now_ms, id)),
        }
    }

    /// Whether `enqueue` would accept `req` now, without storing anything. The ticket's
    /// own faults are checked first, then its clashes with the shard's state. Every reason
    /// but `PlayerAlreadyWaiting` is final; that one clears once the player's other ticket
    /// is matched or cancelled.
    pub fn check(&self, req: &TicketRequest) -> Result<(), Rejection> {
        let mode = self.rules.mode(req.mode).ok_or(Rejection::UnknownMode)?;
        if req.players.is_empty() {
            return Err(Rejection::Empty);
        }
        if req.players.len() > usize::from(mode.team_size) {
            return Err(Rejection::PartyTooLarge);
        }
        let bad = |x: f64| !x.is_finite() || x < 0.0;
        if req.players.iter().any(|p| bad(p.mmr) || p.rtt_ms.iter().any(|&(_, r)| bad(r))) {
            return Err(Rejection::BadNumber);
        }
        for (i, p) in req.players.iter().enumerate() {
            if req.players[..i].iter().any(|q| q.id == p.id) {
                return Err(Rejection::DuplicatePlayer);
            }
        }
        let known = |p: &PlayerEntry| {
            p.rtt_ms.iter().filter_map(|&(dc, _)| self.local_bit(dc)).fold(0u32, |m, bit| m | 1 << bit)
        };
        if req.players.iter().fold(u32::MAX, |common, p| common & known(p)) == 0 {
            return Err(Rejection::NoKnownDatacenter);
        }
        if self.tickets.contains_key(&req.id) {
            return Err(Rejection::DuplicateTicket);
        }
        if req.players.iter().any(|p| self.waiting_ticket_of(p.id).is_some()) {
            return Err(Rejection::PlayerAlreadyWaiting);
        }
        Ok(())
    }

    /// The waiting ticket `player` is in, if any.
    pub fn waiting_ticket_of(&self, player: PlayerId) -> Option<TicketId> {
        self.players.get(&player).copied().filter(|&t| self.waiting_in(t).is_some())
    }

    /// Where ticket `id` waits, if it does.
    fn waiting_in(&self, id: TicketId) -> Option<(ModeId, u32)> {
        match self.tickets.get(&id) {
            Some(&TicketState::Waiting { mode, slot }) if self.pools[usize::from(mode.0)].holds(slot, id) => {
                Some((mode, slot))
            }
            _ => None,
        }
    }

    /// The bit of global datacenter `dc` in this shard's masks, if the shard serves it.
    fn local_bit(&self, dc: DatacenterId) -> Option<usize> {
        self.local_dc.get(usize::from(dc.0)).filter(|&&bit| bit != u8::MAX).map(|&bit| usize::from(bit))
    }

    /// Validates a ticket (as [`Shard::check`]) and stores it; on error nothing is kept.
    pub fn enqueue(&mut self, now_ms: u64, req: &TicketRequest) -> Result<(), Rejection> {
        self.check(req)?;
        // Worst RTT per local datacenter; a datacenter some player lacks stays unreachable.
        let n_dc = self.rules.shard(self.id).datacenters.len();
        self.rtt_scratch.clear();
        self.rtt_scratch.resize(n_dc, f64::NEG_INFINITY);
        let mut common = u32::MAX;
        for p in &req.players {
            let mut mine = 0u32;
            for &(dc, rtt) in &p.rtt_ms {
                let Some(bit) = self.local_bit(dc) else { continue };
                mine |= 1 << bit;
                let worst = &mut self.rtt_scratch[bit];
                *worst = worst.max(rtt);
            }
            common &= mine;
        }
        debug_assert_ne!(common, 0, "checked above");
        for (bit, r) in self.rtt_scratch.iter_mut().enumerate() {
            if common & (1 << bit) == 0 {
                *r = f64::INFINITY;
            }
        }

        let (mut min_mmr, mut max_mmr, mut sum_mmr) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
        self.player_scratch.clear();
        for p in &req.players {
            min_mmr = min_mmr.min(p.mmr);
            max_mmr = max_mmr.max(p.mmr);
            sum_mmr += p.mmr;
            self.player_scratch.push(p.id);
        }
        let slot = self.pools[usize::from(req.mode.0)].insert(NewTicket {
            id: req.id,
            enqueued_at_ms: now_ms.saturating_sub(req.waited_ms),
            players: &self.player_scratch,
            min_mmr,
            max_mmr,
            sum_mmr,
            rtt_ms: &self.rtt_scratch,
        });
        self.tickets.insert(req.id, TicketState::Waiting { mode: req.mode, slot });
        for p in &req.players {
            // Replaces a stale entry of the player's last matched ticket, if any.
            self.players.insert(p.id, req.id);
        }
        self.changed(now_ms);
        Ok(())
    }

    /// Stops a waiting ticket: `Cancelled`, or `NotWaiting` if it was not waiting.
    pub fn cancel(&mut self, now_ms: u64, id: TicketId) -> Event {
        let Some((mode, slot)) = self.waiting_in(id) else {
            return Event::NotWaiting(id);
        };
        let pool = &mut self.pools[usize::from(mode.0)];
        for p in pool.players(slot) {
            self.players.remove(p);
        }
        pool.remove(slot);
        self.tickets.insert(id, TicketState::Done);
        self.finished.push_back((now_ms, id));
        self.changed(now_ms);
        Event::Cancelled(id)
    }

    /// Forms every match the rules allow at `now_ms`, pushing `Event::Matched` into `out`.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Event>) {
        self.start_tick(now_ms);
        let first_new = out.len();
        let region_dcs = &self.rules.shard(self.id).datacenters;
        for (pool, buffers) in self.pools.iter_mut().zip(&mut self.tick_buffers) {
            let mut sink = MatchSink::new(region_dcs, out, &self.recent_waits, &mut buffers.quantile_scratch);
            pool.tick(now_ms, &mut sink);
        }
        self.finish_tick(now_ms, out, first_new);
    }

    /// [`tick`](Self::tick), with the running of each mode's pool left to `run`. During a
    /// tick the pools share nothing, so a caller with cores to spare (`rally replay`) may
    /// run them on threads of its own; the shard itself starts none. Each part keeps its
    /// matches apart, and they are handed out in mode order whatever order the parts ran
    /// in, so the events are `tick`'s, byte for byte. A part `run` drops unrun forms no
    /// match this tick.
    pub fn tick_with(&mut self, now_ms: u64, out: &mut Vec<Event>, run: impl FnOnce(PoolTicks<'_>)) {
        self.start_tick(now_ms);
        run(PoolTicks {
            pools: self.pools.iter_mut().zip(self.tick_buffers.iter_mut()),
            region_dcs: &self.rules.shard(self.id).datacenters,
            recent_waits: &self.recent_waits,
            now_ms,
        });
        let first_new = out.len();
        for buffers in &mut self.tick_buffers {
            out.append(&mut buffers.events);
        }
        self.finish_tick(now_ms, out, first_new);
    }

    fn start_tick(&mut self, now_ms: u64) {
        self.last_tick_ms = Some(now_ms);
        self.forget_old_ids(now_ms);
        self.tick_buffers.resize_with(self.pools.len(), PoolTickBuffers::default);
    }

    /// Numbers the tick's matches (`out[first_new..]`, in mode order), notes their tickets
    /// as finished and records their waits. Matching touches no index: a matched ticket's
    /// entries in `tickets` and `players` are known to be stale through its pool slot
    /// (which no longer holds it) and are dropped when its id is forgotten, for which its id
    /// and players are noted here. Updating both hash maps per matched ticket was a fifth
    /// of a burst tick, all cache misses.
    fn finish_tick(&mut self, now_ms: u64, out: &mut [Event], first_new: usize) {
        let shard_tag = u64::from(self.id.0) << 48;
        let forgets = self.config.remember_ids_ms.is_some();
        for event in &mut out[first_new..] {
            let Event::Matched(m) = event else { continue };
            self.next_match_seq += 1;
            m.id = MatchId(shard_tag | self.next_match_seq);
            if forgets {
                for t in &m.tickets {
                    self.finished.push_back((now_ms, t.id));
                    let players = &m.players[usize::from(t.first_player)..][..usize::from(t.n_players)];
                    self.finished_players.extend(players.iter().map(|&p| (now_ms, p, t.id)));
                }
            }
        }
        // Only the last `RECENT_WAITS` waits stay in the ring, so a burst's earlier matches
        // need no second read (it was a twentieth of a 100k-ticket burst's tick).
        let mut from = out.len();
        let mut to_record = RECENT_WAITS;
        while from > first_new && to_record > 0 {
            from -= 1;
            if let Event::Matched(m) = &out[from] {
                to_record = to_record.saturating_sub(m.tickets.len());
            }
        }
        for event in &out[from..] {
            if let Event::Matched(m) = event {
                for t in &m.tickets {
                    self.recent_waits.record(t.wait_ms);
                }
            }
        }
        if out.len() > first_new {
            self.changed(now_ms);
        } else if self.limits_settle_at_ms.is_none()
            && now_ms >= self.last_change_ms.saturating_add(IDLE_AFTER_QUIET_MS)
            && self.waiting_total() > 0
        {
            // A quiet stretch: worth one pass over the rows to learn when it may end.
            self.limits_settle_at_ms = self.pools.iter().filter_map(Pool::limits_settle_at_ms).max();
        }
    }

    fn forget_old_ids(&mut self, now_ms: u64) {
        let Some(keep_ms) = self.config.remember_ids_ms else { return };
        while let Some(&(at, id)) = self.finished.front() {
            if now_ms.saturating_sub(at) <= keep_ms {
                break;
            }
            self.finished.pop_front();
            self.tickets.remove(&id);
        }
        while let Some(&(at, player, ticket)) = self.finished_players.front() {
            if now_ms.saturating_sub(at) <= keep_ms {
                break;
            }
            self.finished_players.pop_front();
            // Unless the player has queued again since.
            if self.players.get(&player) == Some(&ticket) {
                self.players.remove(&player);
            }
        }
    }

    /// Approximate heap bytes held by this shard (capacities of its tables and buffers).
    pub fn heap_bytes(&self) -> usize {
        // A hashbrown table holds one control byte per bucket beside each entry.
        fn map_bytes<K, V>(m: &FxHashMap<K, V>) -> usize {
            m.capacity() * 8 / 7 * (std::mem::size_of::<(K, V)>() + 1)
        }
        self.pools.iter().map(Pool::heap_bytes).sum::<usize>()
            + self.recent_waits.heap_bytes()
            + self
                .tick_buffers
                .iter()
                .map(|b| {
                    b.events.capacity() * std::mem::size_of::<Event>()
                        + b.quantile_scratch.capacity() * std::mem::size_of::<u32>()
                })
                .sum::<usize>()
            + map_bytes(&self.tickets)
            + map_bytes(&self.players)
            + self.finished.capacity() * 16
            + self.finished_players.capacity() * 24
    }
}

/// The parts of a shard's tick, one per mode in mode order, handed to the caller of
/// [`Shard::tick_with`] to run where it likes.
pub struct PoolTicks<'a> {
    pools: std::iter::Zip<std::slice::IterMut<'a, Pool>, std::slice::IterMut<'a, PoolTickBuffers>>,
    region_dcs: &'a [DatacenterId],
    recent_waits: &'a RecentWaits,
    now_ms: u64,
}

impl<'a> Iterator for PoolTicks<'a> {
    type Item = PoolTick<'a>;

    fn next(&mut self) -> Option<PoolTick<'a>> {
        let (pool, buffers) = self.pools.next()?;
        let sink =
            MatchSink::new(self.region_dcs, &mut buffers.events, self.recent_waits, &mut buffers.quantile_scratch);
        Some(PoolTick { pool, sink, now_ms: self.now_ms })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.pools.size_hint()
    }
}

impl ExactSizeIterator for PoolTicks<'_> {}

/// One mode's part of a shard's tick. It borrows only its own pool, its own buffers and
/// the shard's recent waits (read only), so the parts of a tick may run on different
/// threads at once.
pub struct PoolTick<'a> {
    pool: &'a mut Pool,
    sink: MatchSink<'a>,
    now_ms: u64,
}

impl PoolTick<'_> {
    /// Tickets waiting in this mode, what the part's cost grows with.
    pub fn waiting(&self) -> usize {
        self.pool.len()
    }

    /// Forms this mode's matches for the tick.
    pub fn run(mut self) {
        self.pool.tick(self.now_ms, &mut self.sink);
    }
}

/// A pool's buffers for its part of a tick, kept between ticks so their room is reused.
/// `tick` writes matches straight to its caller's list; only `tick_with` fills `events`.
#[derive(Default)]
struct PoolTickBuffers {
    events: Vec<Event>,
    quantile_scratch: Vec<u32>,
}
