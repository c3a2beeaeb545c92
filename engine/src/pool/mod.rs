//! One mode's waiting tickets in one shard, and the matcher that runs over them.
//!
//! Layout. The matcher works on `sorted`: every waiting ticket's entry, RTT row and player
//! row at one index, ordered by (lowest MMR, enqueue time, slot) and kept sorted across
//! ticks — each tick drops the taken rows and merges in the ones that arrived since, which
//! is O(n + k log k) rather than a full sort. A slab (`slots`) gives each ticket a handle
//! that does not move, for cancels. `age` lists the anchors with their rows, in arrival
//! order by tick and, within one tick's arrivals, oldest first and same-millisecond ones by
//! rating: a burst is swept through memory front to back.
//!
//! The matcher. For each waiting ticket, oldest first, it collects the nearest-MMR
//! neighbours that the anchor accepts and that accept the anchor (MMR window, a datacenter
//! both reach within their RTT limits), then searches those for a set that fills the match
//! exactly: every ticket's window covers the whole set's spread, one datacenter suits
//! everyone, and the parties pack into teams of exactly `team_size`. The team split with
//! the smallest gap between team means wins, then the datacenter with the lowest worst RTT.
//! Solo modes first try the tightest run of consecutive ratings around the anchor.
//!
//! Starvation guard. An anchor that cannot match now but could in `RESERVE_HORIZON_MS`
//! (once its neighbours' windows have grown; in sparse traffic, a tenth of its wait if
//! that is longer) holds that set for the rest of the tick, so younger anchors do not pair
//! its members off first. Under load an anchor that failed before looks ahead first:
//! limits only grow, so when the look-ahead finds nothing, a search at the tick's own
//! time almost never would (the searches are bounded; see `tick`).
//!
//! Parties wider than their window. A party whose players' ratings lie further apart than
//! its window cannot be in any set until the window has grown that far: as an anchor it
//! sleeps until then, and under load it is left out of the neighbour scans meanwhile.
//!
//! Every search is bounded (neighbours scanned, nodes visited), so a tick is O(n log n) in
//! the worst case and close to O(n) in the steady state. Buffers are kept between ticks.
//!
//! Here: the pool, its tick (the anchor loop) and the taking of matches. `rows` stores the
//! tickets, `search` is the search from one anchor (and the team split), `holds` what is
//! held for tickets that cannot match yet (look-ahead holds, plans) and duel patience.

mod holds;
mod rows;
mod search;

use smallvec::SmallVec;

pub(crate) use self::holds::{DUEL_PATIENCE_MAX_MS, PLAN_RETRY_DENSE_MS};
use self::holds::{Hold, Plan, mark_held};
use self::rows::{Aged, Entry, NONE, Rows, Skips, Slot, SlotState};
use self::search::{Candidate, SplitSearch, TeamFillRooms};
use crate::command::{Match, MatchId, MatchedTicket, PlayerId, TicketId};
use crate::recent_waits::{DUEL_PATIENCE_QUANTILE, PLAN_WAIT_QUANTILE, RecentWaits};
use crate::rules::{DatacenterId, Mode, ModeId, Widening};

/// How far ahead an anchor that cannot match looks for a set that will be valid soon; the
/// members of that set are held for it (see `tick`). Measured on mixed traffic against
/// 300, 500 and 800 ms: shorter leaves starving tickets behind, longer delays the crowd.
const RESERVE_HORIZON_MS: u64 = 600;
/// In sparse traffic (fewer than `SPARSE_ARRIVALS_PER_S` arrivals a second in this pool)
/// an anchor looks further ahead the longer it has waited: a tenth of its wait, when that
/// is more than `RESERVE_HORIZON_MS`. There the oldest tickets are the ones a younger set
/// strands for good: once their few neighbours are matched without them, no set is left
/// (a 2,200 rating in free-for-all, say), and nobody like them arrives later. In denser
/// traffic new neighbours keep coming, and holding sets that long only delays the crowd.
/// Measured on mixed traffic, 470 seeded runs at 40–500/s (BENCHMARKS.md): more runs won
/// on all three criteria at 40–80/s (at 40/s 54–62% instead of 48%) and at 120/s, as many
/// at 100/s, one fewer of 50 at 150/s, and a p95 lead about 200 ms smaller at 80–150/s.
/// A fifth or a twentieth of the wait did worse than a tenth, and so did gating on the
/// pool's size.
const SPARSE_HORIZON_WAIT_DIVISOR: u64 = 10;
/// Arrivals per second below which a pool counts as sparse (see
/// `SPARSE_HORIZON_WAIT_DIVISOR`). With `examples/modes.toml`'s four modes, mixed traffic
/// at 80 tickets/s brings each pool about 20 a second, and at 150/s about 37; this sits
/// between, where the long look-ahead stopped paying. Not tuned finer than that.
const SPARSE_ARRIVALS_PER_S: f64 = 25.0;
/// The time constant of the arrival rate's moving average: long enough that a quiet
/// second in busy traffic does not flip a pool to sparse, short enough to follow a day's
/// rise and fall.
const ARRIVAL_RATE_TIME_CONSTANT_MS: f64 = 10_000.0;
/// A ticket is near the tail once it has waited this fraction of the shard's recent p95
/// wait (`MatchSink::tail_edge_ms`). In a dense pool (not `sparse`) two rules serve such
/// tickets before younger ones, and only them, so the young still wait for plans and
/// balance:
/// - an anchor near the tail whose search failed only because plans hold the set it could
///   have now takes that set (`take_through_plans`). A plan holds young tickets for a wide
///   party whose set is valid seconds later, and on party-rich traffic those are the solos
///   and duos the narrow parties need: they waited on into the tail (uniform party sizes
///   at 100/s: narrow quads 9.5 s on average against greedy's 5.6 s), so the engine's p95
///   over matched tickets was above greedy's although it matched wide parties sooner. The
///   plan's holder plans again at the next pass. Measured on held-out runs
///   (BENCHMARKS.md), p95 over matched tickets not lower than greedy's: parties of every
///   size alike at 100/150/200/s, 10/6/8 of 16 runs → 7/0/1; party-heavy at 100/s, 6 of 6
///   → 3. Mixed traffic at 300/500/s keeps its lead, narrower (0/2 of 10/8 → 1/1); at
///   1,000/s, where greedy's p95 was already lower, the gap grew (+4.8% → +5.9%). 0.5 cost
///   more tickets and the mixed lead; 0.85 did less.
/// - the subset search weighs only the wait past this point against balance
///   (`SUBSET_AGE_WEIGHT`).
const TAIL_EDGE_WAIT_FRACTION: f64 = 0.7;
/// Under load (a pool of at least `RESEARCH_DELAY_FROM_WAITING` tickets) an anchor whose
/// search failed waits at least the time its MMR window takes to grow `RESEARCH_GROWTH`
/// points (within `RESEARCH_DELAY_MIN_MS..=RESEARCH_DELAY_MAX_MS`) before searching again,
/// even if a neighbour becomes compatible sooner. Others still pick it as a candidate
/// meanwhile, and new tickets nearby still find it. Below the threshold it searches again
/// as soon as its retry time allows, and arrivals wake their neighbours. Measured on the
/// 240k-ticket narrow-window replay (BENCHMARKS.md): 6.5 s instead of 37 s searching every
/// tick, with as many tickets matched; on the mixed-traffic quality seeds, no change.
const RESEARCH_GROWTH: f64 = 2.0;
/// Shortest re-search delay under load.
const RESEARCH_DELAY_MIN_MS: u64 = 100;
/// Longest re-search delay under load. At 2 s it halved the delay of windows growing
/// 0.5 points a second (`examples/narrow-windows.toml`), where a search 2 s later sees a
/// window 1 point wider and nearly always fails again: the 240k-ticket replay took 7.8 s
/// with 5 s against 12.0 s with 2 s (fastest of four runs each), matching 132 fewer of
/// 195,853 tickets with a lower p95 wait (18.8 s) and the same p99. Windows growing 10
/// points a second or more (the mixed-traffic rules) stay at 100–200 ms.
pub(crate) const RESEARCH_DELAY_MAX_MS: u64 = 5_000;
/// Pool size from which the re-search delay applies.
const RESEARCH_DELAY_FROM_WAITING: usize = 1_500;
/// Below load, an anchor whose search failed for a reason no time can be learned from (no
/// set among compatible neighbours, or the scan ran out) searches again at the next tick,
/// or with ticks faster than this, at the tick this long after (`Pool::research_floor_ms`).
/// Re-searches are what a big pool's tick is made of, and their pace was tuned at 100 ms
/// ticks; faster ticks serve new tickets and woken anchors sooner, but need not search for
/// the same anchors more often. Live shards tick every 2 ms (`rally dev --tick-ms`), where
/// such anchors searched 50 times as often as at 100 ms. Measured on mixed traffic with
/// 2 ms ticks (BENCHMARKS.md), 1,000/s for a minute: tick p50 2,964 → 145 µs, p99 6,132 →
/// 2,232 µs (a 2 ms tick could not keep up), 0.06% fewer tickets matched; at 300/s, p50
/// 568 → 32 µs, 0.13% fewer. With 20 ms ticks, the 240k-ticket replay with windows
/// growing 5 points a second took 13.5 s instead of 30.8 s, mixed traffic at 1,500/s
/// 16.5 s instead of 27.9 s, a few more matched; the quality sweep at 20 ms ticks was
/// alike. Ticks of 100 ms or more match byte for byte.
const RESEARCH_EVERY_MS: u64 = 100;
/// Under load, also at least `n_waiting / RESEARCH_RATE_PER_S` seconds (within
/// `RESEARCH_DELAY_MAX_MS`): failed anchors re-search about this many times a second in
/// all, whatever the rules, so a big pool's searches stay bounded when windows grow fast.
/// With `examples/narrow-windows.toml`'s windows growing 2–20 points a second instead of
/// 0.5, the 240k-ticket replay spent most of its time re-searching anchors every
/// 100–1,000 ms (10,000 or more of them in each team mode): 10.6–26.5 s instead of 3.7 s.
/// With this bound it took 5.6–7.7 s (BENCHMARKS.md), matching 0.04–0.2% fewer tickets
/// (1.1% at 20 points a second, where any delay past 100 ms costs as much). The rules as
/// they are: 3.3 s, 3 more matched. Mixed traffic up to 1,500/s never puts a pool under
/// load, so it matches byte for byte; at 2,000/s for two minutes it does (9.7 → 7.5 s,
/// 0.16% fewer matched). 3,000 and 4,000 a second matched as many and ran 7.0–8.5 and
/// 7.7–9.4 s.
const RESEARCH_RATE_PER_S: f64 = 2_000.0;

/// A ticket ready to be stored, already validated by the shard.
pub(crate) struct NewTicket<'a> {
    pub id: TicketId,
    pub enqueued_at_ms: u64,
    pub players: &'a [PlayerId],
    pub min_mmr: f64,
    pub max_mmr: f64,
    pub sum_mmr: f64,
    /// Worst RTT over the players per local datacenter (`INFINITY` where one has none).
    pub rtt_ms: &'a [f64],
}

/// Where a pool's matches go during a tick, and the shard's recent waits, which cap wide
/// parties' plans and set the tail's edge (`TAIL_EDGE_WAIT_FRACTION`). Each pool has its
/// own, so pools can tick at once (`Shard::tick_with`); the shard numbers the matches and
/// notes their tickets as finished after the tick, in mode order.
pub(crate) struct MatchSink<'a> {
    /// The shard's datacenters, by local bit.
    region_dcs: &'a [DatacenterId],
    out: &'a mut Vec<crate::command::Event>,
    /// Read only during the tick (the shard records the tick's waits after it).
    recent_waits: &'a RecentWaits,
    quantile_scratch: &'a mut Vec<u32>,
    /// `plan_wait_cap_ms`, once asked this tick.
    plan_wait_cap_ms: Option<Option<u64>>,
    /// `duel_patience_ms`, once asked this tick.
    duel_patience_ms: Option<Option<u64>>,
}

impl<'a> MatchSink<'a> {
    pub(crate) fn new(
        region_dcs: &'a [DatacenterId],
        out: &'a mut Vec<crate::command::Event>,
        recent_waits: &'a RecentWaits,
        quantile_scratch: &'a mut Vec<u32>,
    ) -> Self {
        MatchSink { region_dcs, out, recent_waits, quantile_scratch, plan_wait_cap_ms: None, duel_patience_ms: None }
    }

    /// How long wide parties' plans may hold a ticket: the shard's recent p95 wait
    /// (`PLAN_WAIT_QUANTILE`), worked out at most once a tick and only when a pool asks;
    /// `None` until enough tickets have matched.
    fn plan_wait_cap_ms(&mut self) -> Option<u64> {
        *self
            .plan_wait_cap_ms
            .get_or_insert_with(|| self.recent_waits.quantile(PLAN_WAIT_QUANTILE, self.quantile_scratch))
    }

    /// The wait from which a ticket counts as near the tail (`TAIL_EDGE_WAIT_FRACTION` of
    /// the recent p95); `None` until enough tickets have matched.
    fn tail_edge_ms(&mut self) -> Option<u64> {
        self.plan_wait_cap_ms().map(|p95| (TAIL_EDGE_WAIT_FRACTION * p95 as f64).ceil() as u64)
    }

    /// How long a duel ticket may wait for a closer opponent (see `DUEL_PATIENCE_FRACTION`):
    /// the shard's recent `DUEL_PATIENCE_QUANTILE` wait, worked out at most once a tick and
    /// only when a pair is wide enough to ask; `None` until enough tickets have matched.
    fn duel_patience_ms(&mut self) -> Option<u64> {
        *self
            .duel_patience_ms
            .get_or_insert_with(|| self.recent_waits.quantile(DUEL_PATIENCE_QUANTILE, self.quantile_scratch))
    }
}

#[derive(Clone)]
pub(crate) struct Pool {
    mode: ModeId,
    teams: u16,
    team_size: u16,
    players_per_match: usize,
    /// Two teams of one: no holds, and wide pairs wait (`DUEL_PATIENCE_FRACTION`).
    duel: bool,
    /// `None` where `sizes_can_fill_teams` leaves the sizes to the search.
    team_fill_rooms: Option<TeamFillRooms>,
    mmr_window: Widening,
    max_rtt: Widening,
    n_dc: usize,

    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Waiting tickets in key order (lowest MMR, enqueue time, slot), kept across ticks;
    /// between ticks also the rows taken since the last compaction.
    sorted: Rows,
    /// Arrivals since the last tick (a cancel swaps the last one into its place).
    pending: Rows,
    /// What `Aged::retry` counts from; moved forward before the copies could overflow.
    age_epoch_ms: u64,
    /// Some rows were woken (retry time set back) without their `age` copies: the next
    /// tick reads every row, which brings the copies up to date.
    age_retry_stale: bool,
    /// Anchors in the order they are visited: the batches merged at each tick one after
    /// another, each in `Entry::age_cmp` order (oldest first, same millisecond by rating).
    age: Vec<Aged>,
    n_waiting: usize,
    /// Merge scratch: `pending` rows in key order, then in age order.
    by_key: Vec<u32>,
    by_age: Vec<u32>,

    // Per-anchor scratch, reused.
    candidates: Vec<Candidate>,
    suffix_players: Vec<u32>,
    chosen: Vec<u32>,
    best_chosen: Vec<u32>,
    /// The datacenters every member of `best_chosen` accepts.
    best_dc_mask: u32,
    /// The subset search's best full set so far (as `best_chosen`), its datacenters, its
    /// score (see `SUBSET_AGE_WEIGHT`), and how many full sets it has split; waits are
    /// taken at `subset_now_ms` and weigh from `subset_waits_weigh_from_ms` on.
    subset_best: Vec<u32>,
    subset_best_dc_mask: u32,
    subset_best_score: f64,
    subset_leaves: u32,
    subset_now_ms: u64,
    subset_waits_weigh_from_ms: u64,
    split: SplitSearch,
    /// When the first party `skip_unfit_parties` took out of this tick's scans fits its own
    /// window (`u64::MAX`: none taken out).
    unfit_until_ms: u64,
    /// The set the last successful look-ahead found, held if the anchor cannot match now.
    look_ahead_set: Vec<u32>,
    /// Positions in `sorted` reserved during the current tick.
    reserved: Vec<u32>,
    /// The sets held this tick, each a range of `reserved`.
    holds: Vec<Hold>,
    /// Set while a younger anchor searches as if nothing were held (see `take_from_hold`).
    ignore_holds: bool,
    /// Whether this tick keeps a `Hold` per held set: only small pools need them (plans and
    /// `take_from_hold`). Decided once a tick, as the pool's size moves while it matches; a
    /// burst under load holds a set for about every other ticket, and the records would
    /// stay behind as memory (16 bytes per waiting ticket at 10k).
    record_holds: bool,
    /// Wide parties' planned sets, held every tick until the next planning pass.
    plans: Vec<Plan>,
    /// Their members.
    plan_members: Vec<(u32, TicketId)>,
    /// Scratch for compacting `plan_members` when plans are kept.
    plan_members_scratch: Vec<(u32, TicketId)>,
    /// The kept plans by their holder's slot: (slot, index in `plans`), sorted; valid
    /// during a planning pass.
    plan_index: Vec<(u32, u32)>,
    /// By slot: before this time the wide party there is not planned for again, after a
    /// plan search that found nothing in a dense pool (`PLAN_RETRY_DENSE_MS`). Written only
    /// in team-mode pools, so it grows only there; reset when a slot is reused.
    plan_not_before_ms: Vec<u64>,
    /// When plans are next searched afresh.
    next_plan_ms: u64,
    /// The last `find_match` skipped a held ticket.
    search_met_hold: bool,
    /// Scratch: the set a younger anchor found through a hold.
    through_hold: Vec<u32>,
    /// Per-search scratch: positions of neighbours the anchor and they refused each other.
    refused: Vec<u32>,
    /// What the last failed `find_match` learned: the earliest time another search could
    /// succeed.
    retry_at_ms: u64,
    research_delay_ms: u64,
    /// How long after a failed search an anchor in a pool not under load searches again:
    /// 1 (the next tick), or with ticks faster than `RESEARCH_EVERY_MS`, up to the tick
    /// about that long after (half a tick short of it, so a late tick does not skip it).
    research_floor_ms: u64,
    /// Searches run (`find_match` calls), for the shard's `searches` count.
    searches: u64,
    /// Neighbours those searches looked at (`Shard::neighbours_scanned`).
    neighbours_scanned: u64,
    skips: Skips,
    /// Under load, in team modes: `skips` over everything but the untaken solos, so an
    /// anchor whose team only a solo can fill finds the solos near it without wading
    /// through the parties between (`solo_in_reach`). Built at a tick's first such anchor.
    solo_skips: Skips,
    /// `solo_skips` is built for this tick.
    solo_skips_ready: bool,
    /// Debug builds, while confirming a `solo_in_reach` refusal: search without it.
    solo_check_off: bool,
    /// The last `limits` computed: (wait, MMR window, RTT limit). Neighbours in a burst
    /// share their enqueue time, and the division in `Widening::at` is not free.
    last_limits: (u64, f64, f64),
    /// Tickets inserted since the last tick.
    arrivals_since_tick: u32,
    /// When the arrival rate was last updated (the previous tick).
    rate_updated_ms: Option<u64>,
    /// Arrivals per second, a moving average with time constant
    /// `ARRIVAL_RATE_TIME_CONSTANT_MS`, starting from zero.
    arrivals_per_s: f64,
}

impl Pool {
    /// The pool of `mode` in a shard with `n_dc` datacenters that ticks every `tick_ms`.
    pub(crate) fn new(mode_id: ModeId, mode: &Mode, n_dc: usize, tick_ms: u64) -> Self {
        let stride = usize::from(mode.team_size);
        Pool {
            mode: mode_id,
            teams: mode.teams,
            team_size: mode.team_size,
            players_per_match: mode.players_per_match(),
            duel: mode.teams == 2 && mode.team_size == 1,
            team_fill_rooms: TeamFillRooms::new(mode.teams, mode.team_size),
            mmr_window: mode.mmr_window,
            max_rtt: mode.max_rtt_ms,
            n_dc,
            slots: Vec::new(),
            free: Vec::new(),
            sorted: Rows::new(n_dc, stride),
            pending: Rows::new(n_dc, stride),
            age: Vec::new(),
            age_epoch_ms: 0,
            age_retry_stale: false,
            n_waiting: 0,
            by_key: Vec::new(),
            by_age: Vec::new(),
            candidates: Vec::new(),
            suffix_players: Vec::new(),
            chosen: Vec::new(),
            best_chosen: Vec::new(),
            subset_best: Vec::new(),
            subset_best_dc_mask: 0,
            subset_best_score: f64::INFINITY,
            subset_leaves: 0,
            subset_now_ms: 0,
            subset_waits_weigh_from_ms: 0,
            best_dc_mask: 0,
            split: SplitSearch::default(),
            look_ahead_set: Vec::new(),
            unfit_until_ms: u64::MAX,
            reserved: Vec::new(),
            holds: Vec::new(),
            ignore_holds: false,
            record_holds: false,
            plans: Vec::new(),
            plan_members: Vec::new(),
            plan_members_scratch: Vec::new(),
            plan_index: Vec::new(),
            plan_not_before_ms: Vec::new(),
            next_plan_ms: 0,
            search_met_hold: false,
            through_hold: Vec::new(),
            refused: Vec::new(),
            retry_at_ms: 0,
            research_delay_ms: if mode.mmr_window.growth_per_s > 0.0 {
                ((RESEARCH_GROWTH / mode.mmr_window.growth_per_s * 1000.0) as u64)
                    .clamp(RESEARCH_DELAY_MIN_MS, RESEARCH_DELAY_MAX_MS)
            } else {
                RESEARCH_DELAY_MAX_MS
            },
            research_floor_ms: if tick_ms >= RESEARCH_EVERY_MS {
                1
            } else {
                RESEARCH_EVERY_MS / tick_ms * tick_ms - tick_ms / 2
            },
            searches: 0,
            neighbours_scanned: 0,
            skips: Skips::default(),
            solo_skips: Skips::default(),
            solo_skips_ready: false,
            solo_check_off: false,
            last_limits: (u64::MAX, 0.0, 0.0),
            arrivals_since_tick: 0,
            rate_updated_ms: None,
            arrivals_per_s: 0.0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.n_waiting
    }

    /// Searches run so far (see `Shard::searches`).
    pub(crate) fn searches(&self) -> u64 {
        self.searches
    }

    /// Neighbours looked at so far (see `Shard::neighbours_scanned`).
    pub(crate) fn neighbours_scanned(&self) -> u64 {
        self.neighbours_scanned
    }

    /// Stores a validated ticket; returns its slot.
    pub(crate) fn insert(&mut self, t: NewTicket<'_>) -> u32 {
        debug_assert_eq!(t.rtt_ms.len(), self.n_dc);
        debug_assert!(!t.players.is_empty() && t.players.len() <= usize::from(self.team_size));
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot { generation: 0, pos: NONE, state: SlotState::Free });
            self.slots.len() as u32 - 1
        });
        let s = &mut self.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1);
        s.state = SlotState::Pending;
        if let Some(not_before) = self.plan_not_before_ms.get_mut(slot as usize) {
            *not_before = 0;
        }
        s.pos = self.pending.len() as u32;
        let entry = Entry {
            min_mmr: t.min_mmr,
            max_mmr: t.max_mmr,
            sum_mmr: t.sum_mmr,
            enqueued_at_ms: t.enqueued_at_ms,
            retry_at_ms: 0,
            id: t.id,
            slot,
            n_players: t.players.len() as u8,
            taken: false,
            reserved: false,
            planning: false,
        };
        self.pending.push(entry, t.rtt_ms, t.players);
        self.n_waiting += 1;
        self.arrivals_since_tick += 1;
        slot
    }

    /// The rows and row index of the ticket in `slot`, unless the slot is free.
    fn row_of(&self, slot: u32) -> Option<(&Rows, usize)> {
        let s = self.slots.get(slot as usize)?;
        match s.state {
            SlotState::Free => None,
            SlotState::Pending => Some((&self.pending, s.pos as usize)),
            SlotState::Sorted => Some((&self.sorted, s.pos as usize)),
        }
    }

    /// When, with no new tickets, waiting longer stops making new sets valid here: every
    /// waiting ticket's MMR window then covers the pool's whole rating range and its RTT
    /// limit every RTT the pool holds (or each is at its max). `None` when nothing waits.
    /// Reads every row: for a caller that has seen a quiet stretch (`Shard::is_idle`), not
    /// for every tick.
    pub(crate) fn limits_settle_at_ms(&self) -> Option<u64> {
        let (mut low, mut high, mut worst_rtt) = (f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for rows in [&self.sorted, &self.pending] {
            for i in rows.waiting() {
                let e = &rows.entries[i];
                low = low.min(e.min_mmr);
                high = high.max(e.max_mmr);
                // An unreachable datacenter is infinitely far: no limit ever covers it.
                worst_rtt = rows.rtt(i).iter().copied().filter(|r| r.is_finite()).fold(worst_rtt, f64::max);
            }
        }
        let mut settled_at = None;
        for rows in [&self.sorted, &self.pending] {
            for i in rows.waiting() {
                let since = rows.entries[i].enqueued_at_ms;
                let at = self.mmr_window.covers_at(since, high - low).max(self.max_rtt.covers_at(since, worst_rtt));
                settled_at = settled_at.max(Some(at));
            }
        }
        settled_at
    }

    /// Whether `slot` holds waiting ticket `id` (a slot is reused once its ticket leaves).
    pub(crate) fn holds(&self, slot: u32, id: TicketId) -> bool {
        self.row_of(slot).is_some_and(|(rows, i)| !rows.entries[i].taken && rows.entries[i].id == id)
    }

    /// The players of the ticket in `slot`.
    pub(crate) fn players(&self, slot: u32) -> &[PlayerId] {
        self.row_of(slot).map_or(&[], |(rows, i)| rows.players(i))
    }

    /// Removes a waiting ticket.
    pub(crate) fn remove(&mut self, slot: u32) {
        let s = self.slots[slot as usize];
        match s.state {
            SlotState::Free => {
                debug_assert!(false, "removing a free slot");
                return;
            }
            SlotState::Pending => {
                let idx = s.pos as usize;
                self.pending.swap_remove(idx);
                if let Some(moved) = self.pending.entries.get(idx) {
                    self.slots[moved.slot as usize].pos = idx as u32;
                }
                self.free_slot(slot);
            }
            // Freed at the next compaction, like a matched ticket's.
            SlotState::Sorted => {
                debug_assert!(!self.sorted.entries[s.pos as usize].taken, "removing a taken ticket");
                self.sorted.entries[s.pos as usize].taken = true;
            }
        }
        self.n_waiting -= 1;
    }

    fn free_slot(&mut self, slot: u32) {
        self.slots[slot as usize].state = SlotState::Free;
        self.slots[slot as usize].pos = NONE;
        self.free.push(slot);
    }

    /// Drops taken entries (freeing their slots) and merges the tickets that arrived since
    /// the last tick, keeping `sorted` in key order, `pos` true and `age` in visiting order
    /// with its positions current. No allocation once capacities have grown.
    fn reorganise(&mut self) {
        // Compact. Everything from the first dropped or inserted row on moves.
        let len = self.sorted.len();
        let mut first_moved = len;
        let mut kept = 0;
        let mut i = 0;
        while i < len {
            // A run of rows to keep moves down in one go.
            let run_start = i;
            while i < len && !self.sorted.entries[i].taken {
                i += 1;
            }
            if kept != run_start {
                self.sorted.move_rows(run_start..i, kept);
            }
            kept += i - run_start;
            while i < len && self.sorted.entries[i].taken {
                first_moved = first_moved.min(i);
                self.free_slot(self.sorted.entries[i].slot);
                i += 1;
            }
        }
        self.sorted.truncate(kept);

        let arrivals = self.pending.len();
        if arrivals > 0 {
            let pending = &self.pending.entries;
            self.by_key.clear();
            self.by_key.extend(0..arrivals as u32);
            self.by_key.sort_unstable_by(|&x, &y| pending[x as usize].key_cmp(&pending[y as usize]));
            self.by_age.clone_from(&self.by_key);
            self.by_age.sort_unstable_by(|&x, &y| pending[x as usize].age_cmp(&pending[y as usize]));
            // Merge from the back, in place.
            let old_len = self.sorted.len();
            self.sorted.resize(old_len + arrivals, self.pending.entries[0]);
            let (mut i, mut j, mut k) = (old_len, arrivals, old_len + arrivals);
            while j > 0 {
                // The old rows above the largest arrival left move up in one go.
                let p = self.by_key[j - 1] as usize;
                let mut run = 0;
                while run < i && self.sorted.entries[i - 1 - run].key_cmp(&self.pending.entries[p]).is_gt() {
                    run += 1;
                }
                if run > 0 {
                    self.sorted.move_rows(i - run..i, k - run);
                    (i, k) = (i - run, k - run);
                }
                self.sorted.copy_row(k - 1, &self.pending, p);
                j -= 1;
                k -= 1;
            }
            first_moved = first_moved.min(i);
        }
        for idx in first_moved..self.sorted.len() {
            let s = &mut self.slots[self.sorted.entries[idx].slot as usize];
            s.pos = idx as u32;
            s.state = SlotState::Sorted;
        }

        // Anchors that did not move keep their position; the others look theirs up.
        let slots = &self.slots;
        let first_moved = first_moved as u32;
        self.age.retain_mut(|a| {
            if a.pos < first_moved {
                return true;
            }
            let s = &slots[a.slot as usize];
            a.pos = s.pos;
            s.generation == a.generation && s.state == SlotState::Sorted
        });
        for &p in &self.by_age {
            let slot = self.pending.entries[p as usize].slot;
            let s = &self.slots[slot as usize];
            self.age.push(Aged { slot, generation: s.generation, pos: s.pos, retry: 0 });
        }

        if arrivals > 0 {
            if !self.under_load() {
                // Under load the arrivals' own searches find sleeping tickets instead:
                // valid matches still, only not always the oldest anchor's pick.
                self.wake_neighbours_of_pending();
            }
            self.pending.clear();
            self.by_key.clear();
            self.by_age.clear();
            // A burst leaves big buffers behind; keep what ordinary ticks need.
            let keep = (self.sorted.len() / 64).max(1024);
            if self.pending.entries.capacity() > 4 * keep {
                self.pending.shrink_to(keep);
                self.by_key.shrink_to(keep);
                self.by_age.shrink_to(keep);
            }
        }
        debug_assert!(self.sorted.entries.windows(2).all(|w| w[0].key_cmp(&w[1]).is_lt()));
        debug_assert_eq!(self.sorted.len(), self.n_waiting);
        debug_assert_eq!(self.age.len(), self.n_waiting);
    }

    /// When an anchor whose search failed for reasons time cannot bound searches again:
    /// next tick, or on a big pool after `research_delay_ms`, and no sooner than its share
    /// of `RESEARCH_RATE_PER_S`.
    fn research_at(&self, now_ms: u64) -> u64 {
        if !self.under_load() {
            return now_ms + 1;
        }
        let share_ms = (self.n_waiting as f64 * 1000.0 / RESEARCH_RATE_PER_S) as u64;
        now_ms + self.research_delay_ms.max(share_ms.min(RESEARCH_DELAY_MAX_MS))
    }

    /// A pool of at least `RESEARCH_DELAY_FROM_WAITING` tickets: failed anchors wait the
    /// re-search delay, arrivals wake nobody, repeat failures look ahead first, and unfit
    /// parties leave the scans.
    fn under_load(&self) -> bool {
        self.n_waiting >= RESEARCH_DELAY_FROM_WAITING
    }

    /// Fewer than `SPARSE_ARRIVALS_PER_S` arrivals a second: anchors look further ahead.
    fn sparse(&self) -> bool {
        self.arrivals_per_s < SPARSE_ARRIVALS_PER_S
    }

    /// How far ahead an anchor that has waited `wait_ms` looks for a set to hold (see
    /// `RESERVE_HORIZON_MS` and `SPARSE_HORIZON_WAIT_DIVISOR`).
    fn look_ahead_ms(&self, wait_ms: u64) -> u64 {
        if self.sparse() { RESERVE_HORIZON_MS.max(wait_ms / SPARSE_HORIZON_WAIT_DIVISOR) } else { RESERVE_HORIZON_MS }
    }

    /// New tickets may complete sets for waiting ones that sleep on a retry time: wake the
    /// nearest few on each side of each arrival, within its window at arrival. Older
    /// anchors then get the first pick, as oldest-first promises. Runs after the merge.
    fn wake_neighbours_of_pending(&mut self) {
        self.age_retry_stale = true;
        let reach = self.mmr_window.at(0);
        let per_side = 2 * self.players_per_match;
        for i in 0..self.pending.len() {
            let new = self.pending.entries[i];
            let at = self.slots[new.slot as usize].pos as usize;
            for pos in (0..at).rev().take(per_side) {
                let e = &mut self.sorted.entries[pos];
                if new.min_mmr - e.min_mmr > reach {
                    break;
                }
                e.retry_at_ms = 0;
            }
            for pos in (at + 1..self.sorted.len()).take(per_side) {
                let e = &mut self.sorted.entries[pos];
                if e.min_mmr - new.max_mmr > reach {
                    break;
                }
                e.retry_at_ms = 0;
            }
        }
    }

    /// The MMR window and RTT limit of a ticket that has waited `wait_ms`.
    #[inline]
    fn limits(&mut self, wait_ms: u64) -> (f64, f64) {
        let (last_wait, window, rtt) = self.last_limits;
        if last_wait == wait_ms {
            return (window, rtt);
        }
        let (window, rtt) = (self.mmr_window.at(wait_ms), self.max_rtt.at(wait_ms));
        self.last_limits = (wait_ms, window, rtt);
        (window, rtt)
    }

    /// The datacenters (local bits) where every player of `sorted[pos]` is within `limit`.
    #[inline]
    fn dc_mask(&self, pos: usize, limit: f64) -> u32 {
        let rtt = self.sorted.rtt(pos);
        let mut mask = 0u32;
        for (bit, &r) in rtt.iter().enumerate() {
            mask |= u32::from(r <= limit) << bit;
        }
        mask
    }

    /// Forms every match it can at `now_ms`, oldest anchors first.
    pub(crate) fn tick(&mut self, now_ms: u64, sink: &mut MatchSink<'_>) {
        self.reorganise();
        self.update_arrival_rate(now_ms);
        if self.n_waiting < 2 {
            return;
        }
        self.skips.reset(self.sorted.len());
        self.solo_skips_ready = false;
        self.record_holds = !self.under_load();
        self.skip_unfit_parties(now_ms);
        self.rebase_age_retries(now_ms);
        self.plan_wide_parties(now_ms, sink);
        // Only dense pools not under load weigh waits (`subset_dfs`); before the shard has
        // recent waits, every second counts.
        self.subset_waits_weigh_from_ms =
            if self.sparse() || self.under_load() { 0 } else { sink.tail_edge_ms().unwrap_or(0) };
        // Sleeping anchors are skipped on their `age` copy alone, unless copies are stale.
        let trust_copies = !self.age_retry_stale;
        let mut visited_all = true;
        // `age` is only read here; anchors that match are skipped through `taken`.
        for age_idx in 0..self.age.len() {
            if self.n_waiting < 2 {
                visited_all = false;
                break;
            }
            let aged = self.age[age_idx];
            // Not due: the copy is after `now_ms` (measured from the epoch, so a clock that
            // went back before the epoch only skips anchors whose rows are later still).
            if trust_copies && u64::from(aged.retry) > now_ms.saturating_sub(self.age_epoch_ms) {
                continue;
            }
            let anchor = aged.pos as usize;
            let e = self.sorted.entries[anchor];
            self.age[age_idx].retry = self.age_retry(e.retry_at_ms);
            if e.taken || e.reserved || e.planning {
                continue;
            }
            if e.retry_at_ms > now_ms {
                // Nothing it could match has changed enough since its last search.
                continue;
            }
            let horizon = self.look_ahead_ms(now_ms.saturating_sub(e.enqueued_at_ms));
            // Whether `look_ahead_set` holds a set this anchor could have within `horizon`.
            let mut held = false;
            // In a big pool, an anchor that has searched before (its retry time is set) and
            // failed will most likely fail again, and two searches per anchor were half
            // the tick: the look-ahead goes first. Limits only grow, so a set valid now is
            // valid `horizon` later, and when the look-ahead finds nothing a search now
            // almost never would (only where more neighbours qualifying later crowd the
            // bounded search: then it is found a re-search later). New anchors (a burst)
            // mostly match, so they search now first, once; so do small pools, where what
            // the search now learns sets a closer retry time, which won more held-out runs
            // at 40/s. So do duels: a duel whose search now fails looks no further (below),
            // so searching now first costs one search either way, and the look-ahead first
            // made a burst's matches cost two. Measured (BENCHMARKS.md): `tick/1v1/100000`
            // a fifth faster; the 1,000/s and 240k-ticket replays match byte for byte.
            if self.under_load() && !self.duel && e.retry_at_ms != 0 {
                if !self.find_match(anchor, now_ms + horizon, now_ms) {
                    // The look-ahead can first succeed at the time it learned; searching
                    // `horizon` before then lets it hold the set before the set is valid.
                    let retry_at_ms = self.retry_at_ms.saturating_sub(horizon).max(self.research_at(now_ms));
                    self.set_retry(anchor, age_idx, retry_at_ms);
                    continue;
                }
                // A set the look-ahead found that every member accepts already is taken
                // now: the search now would almost always find it first (any set ahead of
                // it in the search's order is nearer, so the look-ahead saw it too), and
                // searching again was half of a team-mode burst's tick. Not for solo modes,
                // whose search ranks consecutive runs, not the search's order.
                if self.team_size > 1
                    && let Some(dc_mask) = self.best_chosen_accepted_at(now_ms)
                {
                    self.best_dc_mask = dc_mask;
                    self.take_match(now_ms, sink);
                    continue;
                }
                self.look_ahead_set.clone_from(&self.best_chosen);
                held = true;
            }
            if self.find_match(anchor, now_ms, now_ms) {
                if self.duel && !self.under_load() && self.waits_for_closer_opponent(now_ms, sink) {
                    // Searched again next tick: the target grows with the window, and the
                    // wait may reach the cap at any tick.
                    self.set_retry(anchor, age_idx, now_ms + 1);
                    continue;
                }
                self.take_match(now_ms, sink);
                continue;
            }
            // Under load a failed anchor waits at least the re-search delay, even when a
            // neighbour becomes compatible sooner (see `research_at`).
            let mut retry_at_ms = self.retry_at_ms.max(self.research_at(now_ms));
            // In sparse traffic a hold in its way need not stop it (see `take_from_hold`).
            // Measured on mixed traffic (BENCHMARKS.md): of 320 held-out runs at 40/s, 192
            // won all three criteria instead of 181; 83 of 110 at 80/s instead of 85, 48 of
            // 50 at 150/s either way. In dense pools, whose holds look only
            // `RESERVE_HORIZON_MS` ahead, it lost runs at 80–150/s.
            // `record_holds` also means not under load: a pool only shrinks during its tick.
            if self.search_met_hold && self.sparse() && self.record_holds && self.take_from_hold(anchor, now_ms) {
                self.take_match(now_ms, sink);
                continue;
            }
            // In dense traffic a plan in its way does not push it into the tail (see
            // `TAIL_EDGE_WAIT_FRACTION`).
            if self.search_met_hold
                && !self.sparse()
                && self.record_holds
                && sink.tail_edge_ms().is_some_and(|edge| now_ms.saturating_sub(e.enqueued_at_ms) >= edge)
                && self.take_through_plans(anchor, now_ms)
            {
                self.take_match(now_ms, sink);
                continue;
            }
            // Duels hold nothing: one opponent is all an old ticket needs, and holding its
            // nearest opponent paired it wider than a younger ticket would later have been
            // paired. Measured (BENCHMARKS.md): duels' mean imbalance a little lower, other
            // criteria alike.
            if !held && !self.duel && self.find_match(anchor, now_ms + horizon, now_ms) {
                self.look_ahead_set.clone_from(&self.best_chosen);
                held = true;
            }
            if held {
                // Starvation guard: the set this anchor could have in a moment is held for
                // it, so younger tickets cannot pair those members off first. A ticket far
                // from the crowd otherwise waits until some neighbour happens to age enough;
                // the same idea as reservations in EASY backfilling. Holds last one tick.
                self.hold_look_ahead_set(anchor, horizon, false);
                // Small pools reserve again next tick, whatever the search said. Under load
                // the re-search delay stands, but not past `horizon`: by then the set it
                // holds is valid, and the anchor should be there to take it.
                retry_at_ms = if !self.under_load() { now_ms + 1 } else { retry_at_ms.min(now_ms + horizon) };
            }
            self.set_retry(anchor, age_idx, retry_at_ms);
        }
        if visited_all {
            self.age_retry_stale = false;
        }
        mark_held(&mut self.sorted.entries, &self.reserved, false);
        for hold in &self.holds {
            self.sorted.entries[hold.anchor as usize].planning = false;
        }
        self.reserved.clear();
        self.holds.clear();
    }

    /// Under load, takes the parties whose own ratings lie further apart than their window
    /// allows out of this tick's neighbour scans, as if matched: no set can hold them yet,
    /// and in a big party pool they pile up (a party waits minutes for its window to cover
    /// its spread) until most neighbours an anchor scans are such parties. The test uses the
    /// furthest look-ahead of the tick, which is `RESERVE_HORIZON_MS` in dense traffic; sparse
    /// pools (longer look-aheads) and small ones are left as they are, searches are cheap
    /// there. `unfit_until_ms` says when the first of them fits, so that no search that
    /// skipped it sleeps past that.
    fn skip_unfit_parties(&mut self, now_ms: u64) {
        self.unfit_until_ms = u64::MAX;
        if self.team_size == 1 || !self.under_load() || self.sparse() {
            return;
        }
        let latest_search_ms = now_ms + RESERVE_HORIZON_MS;
        for pos in 0..self.sorted.len() {
            let e = &self.sorted.entries[pos];
            if e.taken || e.n_players == 1 {
                continue;
            }
            let own_spread = e.max_mmr - e.min_mmr;
            if own_spread <= self.mmr_window.at(latest_search_ms.saturating_sub(e.enqueued_at_ms)) {
                continue;
            }
            let fits_at = self.mmr_window.reached_at(e.enqueued_at_ms, own_spread);
            self.unfit_until_ms = self.unfit_until_ms.min(fits_at);
            self.skips.take(pos);
        }
    }

    /// Folds the arrivals since the last tick into `arrivals_per_s`: an exponential moving
    /// average, so ticks of any period weigh by the time they cover. It starts from zero,
    /// so a new pool counts as sparse until the average catches up (about 10 s at 37
    /// arrivals a second); no ticket has waited long enough by then for the look-ahead to
    /// exceed `RESERVE_HORIZON_MS` by much. Starting from the first interval's own rate
    /// instead did as well over the held-out quality runs (BENCHMARKS.md), and worse on
    /// an asserted one. Arrivals before the first tick are not counted.
    fn update_arrival_rate(&mut self, now_ms: u64) {
        let Some(last) = self.rate_updated_ms else {
            self.rate_updated_ms = Some(now_ms);
            self.arrivals_since_tick = 0;
            return;
        };
        let elapsed_ms = now_ms.saturating_sub(last) as f64;
        if elapsed_ms == 0.0 {
            return;
        }
        let rate = f64::from(self.arrivals_since_tick) * 1000.0 / elapsed_ms;
        let weight = 1.0 - (-elapsed_ms / ARRIVAL_RATE_TIME_CONSTANT_MS).exp();
        self.arrivals_per_s += weight * (rate - self.arrivals_per_s);
        self.arrivals_since_tick = 0;
        self.rate_updated_ms = Some(now_ms);
    }

    /// Records when the anchor at `sorted[anchor]` (`age[age_idx]`) is next due: on its row,
    /// and on the copy its `age` entry carries.
    fn set_retry(&mut self, anchor: usize, age_idx: usize, retry_at_ms: u64) {
        self.sorted.entries[anchor].retry_at_ms = retry_at_ms;
        self.age[age_idx].retry = self.age_retry(retry_at_ms);
    }

    /// A retry time as `Aged::retry`: ms after the epoch, rounded down, saturating.
    #[inline]
    fn age_retry(&self, retry_at_ms: u64) -> u32 {
        u32::try_from(retry_at_ms.saturating_sub(self.age_epoch_ms)).unwrap_or(u32::MAX)
    }

    /// Moves the epoch of `Aged::retry` forward once `now_ms` is 2³¹ ms (about 25 days) past
    /// it, keeping every copy a lower bound of its row's retry time.
    fn rebase_age_retries(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.age_epoch_ms) < 1 << 31 {
            return;
        }
        let new_epoch = now_ms - (1 << 30);
        let shift = u32::try_from(new_epoch - self.age_epoch_ms).unwrap_or(u32::MAX);
        for a in &mut self.age {
            a.retry = a.retry.saturating_sub(shift);
        }
        self.age_epoch_ms = new_epoch;
    }

    /// Removes the tickets of `best_chosen` and sends their match to `sink`.
    fn take_match(&mut self, now_ms: u64, sink: &mut MatchSink<'_>) {
        // The datacenter everyone accepts with the lowest worst RTT; ties to the first listed.
        let dc_mask = self.best_dc_mask;
        debug_assert_ne!(dc_mask, 0);
        debug_assert!(self.best_chosen.iter().all(|&pos| {
            let limit = self.max_rtt.at(now_ms.saturating_sub(self.sorted.entries[pos as usize].enqueued_at_ms));
            self.dc_mask(pos as usize, limit) & dc_mask == dc_mask
        }));
        let (mut best_dc, mut best_rtt) = (0usize, f64::INFINITY);
        for dc in 0..self.n_dc {
            if dc_mask & (1 << dc) == 0 {
                continue;
            }
            let worst = self.best_chosen.iter().map(|&pos| self.sorted.rtt(pos as usize)[dc]).fold(0.0f64, f64::max);
            if worst < best_rtt {
                (best_dc, best_rtt) = (dc, worst);
            }
        }

        let mut tickets = SmallVec::with_capacity(self.best_chosen.len());
        let mut players = SmallVec::with_capacity(self.players_per_match);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        // Teams come one after another in `best_chosen`: each team's mean is folded in as
        // the next one starts (no per-match array to clear).
        let size = f64::from(self.team_size);
        let (mut min_mean, mut max_mean) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut team_sum = 0.0f64;
        let mut team = 0u16;
        let mut team_players = 0u16;
        for i in 0..self.best_chosen.len() {
            let pos = self.best_chosen[i] as usize;
            let e = self.sorted.entries[pos];
            lo = lo.min(e.min_mmr);
            hi = hi.max(e.max_mmr);
            if team_players == self.team_size {
                let mean = team_sum / size;
                (min_mean, max_mean) = (min_mean.min(mean), max_mean.max(mean));
                team += 1;
                team_players = 0;
                team_sum = 0.0;
            }
            team_players += u16::from(e.n_players);
            team_sum += e.sum_mmr;
            tickets.push(MatchedTicket {
                id: e.id,
                team,
                first_player: players.len() as u16,
                n_players: u16::from(e.n_players),
                wait_ms: now_ms.saturating_sub(e.enqueued_at_ms),
            });
            players.extend_from_slice(self.sorted.players(pos));
            // Its slot is freed at the next compaction.
            self.sorted.entries[pos].taken = true;
            self.n_waiting -= 1;
            self.skips.take(pos);
            if self.solo_skips_ready {
                self.solo_skips.take(pos);
            }
        }
        debug_assert_eq!(usize::from(team) + 1, usize::from(self.teams));
        debug_assert_eq!(players.len(), self.players_per_match);
        let mean = team_sum / size;
        (min_mean, max_mean) = (min_mean.min(mean), max_mean.max(mean));
        sink.out.push(crate::command::Event::Matched(Match {
            // The shard numbers a tick's matches after it (`Shard::tick`).
            id: MatchId(0),
            mode: self.mode,
            datacenter: sink.region_dcs[best_dc],
            formed_at_ms: now_ms,
            n_teams: self.teams,
            tickets,
            players,
            mmr_spread: hi - lo,
            team_imbalance: max_mean - min_mean,
            worst_rtt_ms: best_rtt,
        }));
    }

    /// Bytes held by this pool's buffers (capacity, not length), for memory figures.
    pub(crate) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.slots.capacity() * size_of::<Slot>()
            + self.free.capacity() * 4
            + self.sorted.capacity_bytes()
            + self.pending.capacity_bytes()
            + (self.by_key.capacity() + self.by_age.capacity()) * 4
            + self.age.capacity() * size_of::<Aged>()
            + (self.skips.links.capacity() + self.solo_skips.links.capacity()) * 8
            + self.plans.capacity() * size_of::<Plan>()
            + self.holds.capacity() * size_of::<Hold>()
            + self.reserved.capacity() * 4
            + (self.plan_members.capacity() + self.plan_members_scratch.capacity()) * size_of::<(u32, TicketId)>()
            + self.plan_index.capacity() * 8
            + self.plan_not_before_ms.capacity() * 8
    }
}
