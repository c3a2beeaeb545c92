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

use smallvec::SmallVec;

use crate::command::{Match, MatchId, MatchedTicket, PlayerId, TicketId};
use crate::recent_waits::{DUEL_PATIENCE_QUANTILE, PLAN_WAIT_QUANTILE, RecentWaits};
use crate::rules::{DatacenterId, Mode, ModeId, Widening};

/// How many sorted neighbours an anchor looks at, at most, per match slot to fill.
const SCAN_PER_PLAYER: usize = 48;
/// Most neighbours an anchor looks at in total.
const SCAN_CAP: usize = 1024;
/// Most candidates the subset search considers.
const MAX_CANDIDATES: usize = 40;
/// Extra neighbours a solo-mode anchor collects, so it can pick the tightest run.
const SOLO_SLACK: usize = 4;
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
/// Plans for wide parties (see `plan_wide_parties`) look from when the party fits its own
/// window up to this much later, in `PLAN_STEP_MS` steps. 1.5 s and 3 s did alike over
/// the held-out runs; the shorter one holds fewer tickets.
const PLAN_BEYOND_FIT_MS: u64 = 1_500;
/// Step of a plan's look-ahead.
const PLAN_STEP_MS: u64 = 500;
/// How often plans are searched afresh; in between, the sets found are held again as they
/// are, so a runtime ticking every few milliseconds does not search every tick.
const PLAN_PERIOD_MS: u64 = 100;
/// In a dense pool (not `sparse`), a wide party whose plan search found no set searches
/// again, for a match or a plan, only this much later, or sooner when an arrival nearby
/// wakes it (`wake_neighbours_of_pending`); others still pick it as a candidate meanwhile.
/// Its partners are young tickets, and in two seconds most of them have matched and others
/// arrived: searching every tick mostly repeats a failed search. Measured on mixed traffic
/// (BENCHMARKS.md) against searching every tick: the 1,000/s replay's wall time 8.1–8.4 →
/// 5.6–5.9 s (plans' share of it 71% → 21%); the p95 wait over matched tickets 240 ms lower
/// at 500/s (lower than greedy's in 20 of 20 runs instead of 11) and 360 ms lower at
/// 1,000/s; about 40 fewer of 30,000 tickets matched a run at 500/s, still about 450 more
/// than greedy. Sparse pools (40–80/s) are unchanged. 0.5 s and 1 s did less, 5 s little
/// more.
pub(crate) const PLAN_RETRY_DENSE_MS: u64 = 2_000;
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
/// Node budget of the subset search per anchor.
const SUBSET_BUDGET: u32 = 2_000;
/// In a small pool (not under load) the subset search splits this many full sets (within
/// its node budget) and keeps the one whose teams are closest in mean rating (in a dense
/// pool, weighed against the wait it serves: `SUBSET_AGE_WEIGHT`), instead of
/// the first, nearest-first set it finds. Where a set's party sizes leave one split (two
/// trios, or a trio against a duo and a solo), the set is the only lever on balance, and
/// the nearest by lowest rating is often not the closest in mean. Measured on the held-out
/// sweep (BENCHMARKS.md) against the first set: mixed traffic at 40/s, 63 of 100 runs won
/// on three criteria instead of 57; party-heavy traffic, mean imbalance 39.7 → 38.4. 64
/// did no better. Under load the first set stands (see `subset_dfs`).
const SUBSET_LEAVES: u32 = 16;
/// In a dense pool (not `sparse`), of those sets the one kept is the one with the lowest
/// team gap minus this many MMR per second its tickets have waited past the tail's edge
/// (`TAIL_EDGE_WAIT_FRACTION`) in all: for tickets near the tail, oldest first comes before
/// balance, and the closest-balanced set often left the anchor's older neighbours for later
/// while younger ones matched. Summed per ticket, so a set serving more tickets counts for
/// more too. Measured on the held-out sweep (BENCHMARKS.md) against balance alone, where
/// party members share one rating: the p95 wait was not lower than greedy's in 6 of 20 runs
/// at 300/s instead of 14, 2 of 10 at 500/s instead of 9; tight parties at 1,000/s, 2 of 6
/// instead of 5. 30 did less; 300 and 1,000 no better. Sparse pools, where sets are few and
/// the choice is the lever on balance, keep balance alone: weighting there changed nothing
/// measurable at 40–80/s.
///
/// Waits used to count from enqueue, so a young set that had waited 0.2 s longer beat one
/// 20 points closer in balance, to no one's benefit: young tickets are nowhere near the p95.
/// On party-heavy traffic at 200/s that put trio-against-trio matches at a mean imbalance of
/// 23.3 against greedy's 18.7 (greedy takes the nearest trio), and the engine's mean
/// imbalance above greedy's in 3 of 3 runs. Counting from the tail's edge (BENCHMARKS.md):
/// on held-out party-heavy runs at 200/s, mean imbalance not lower than greedy's in 1 of 6
/// instead of 4; mixed 1,000/s p95 over matched tickets +5.9% → +5.4% of greedy's; lower
/// imbalance at 150–1,000/s, and at 40–80/s (sparse pools) no change. The cost is a few
/// tickets a run (tight parties at 300/s: 4 of 17,900 on average, so fewer matched than
/// greedy in 9 of 16 runs instead of 7); still counting younger waits at 0.3 of the weight
/// gave back little of that and all of the imbalance gain. From half the edge did less;
/// from the p95 itself or never (balance alone) lost the p95 over matched tickets at 500/s
/// in 3 and 4 of 10 runs instead of 1.
const SUBSET_AGE_WEIGHT: f64 = 100.0;
/// Duels (two teams of one) in a small pool: a pair further apart than this fraction of
/// its older ticket's MMR window waits for a closer opponent, while that ticket's wait is
/// under the shard's recent `DUEL_PATIENCE_QUANTILE` wait (and `DUEL_PATIENCE_MAX_MS`, in
/// a dense pool `DUEL_PATIENCE_DENSE_MAX_MS`). A duel's imbalance is the gap between its
/// two ratings, and the first valid pair is set by the window alone: in sparse traffic it
/// is nearly as wide as the window. The target grows with the window, so a ticket with
/// nobody closer still matches, at the latest at the cap. The quantile cap keeps the added
/// wait under most tickets' (a fixed cap put duel-only traffic's p95 above greedy's in
/// every run). Measured on the held-out sweep (BENCHMARKS.md): on mixed traffic at 40/s
/// all matches' mean imbalance 40.2 → 36.5; with parties of every size equally likely,
/// imbalance lost to greedy's in 1 of 40 runs instead of 33. 0.5 did a little worse on
/// both. The cost is tickets: a duel ticket that waits longer is more often cancelled
/// first.
const DUEL_PATIENCE_FRACTION: f64 = 0.4;
/// In a dense pool (not `sparse`) a duel ticket waits for a closer opponent this long at
/// most. There a closer opponent, if one is coming, comes within a second or so; waiting
/// on mostly costs cancellations (a ticket that waits longer is more often cancelled
/// first). Measured on the held-out sweep with tight parties (`RALLY_QUALITY_PARTY_SD=25`,
/// BENCHMARKS.md), where the count is the close criterion, against the recent p75 alone:
/// seeds 300–339 at 300/s, runs with fewer tickets matched than greedy 27 → 20 of 40 and
/// 105 more tickets matched in all; at 150/s 20 → 19 and 53 more. The imbalance lead
/// shrinks but stays (at 300/s 26.6 → 27.6 against greedy's 34.0). On the default mixed
/// traffic it costs imbalance for no count: at 150/300/500/s 27.9/25.0/23.3 →
/// 30.5/26.9/24.4 (greedy's 35.7/33.3/32.1), tickets matched alike. 0.5 s did about as
/// well on the count and worse on imbalance; no patience at all in dense pools did no
/// better on the count (+27) and worse on imbalance (30.3).
const DUEL_PATIENCE_DENSE_MAX_MS: u64 = 1_000;
const _: () = assert!(DUEL_PATIENCE_DENSE_MAX_MS <= DUEL_PATIENCE_MAX_MS);
/// The longest a duel ticket waits for a closer opponent in a sparse pool, whatever the
/// recent waits (in a dense one, `DUEL_PATIENCE_DENSE_MAX_MS`): under
/// `shard::IDLE_AFTER_QUIET_MS`, so a pair declined for patience forms before its shard
/// can count as idle (`Shard::is_idle`).
pub(crate) const DUEL_PATIENCE_MAX_MS: u64 = 20_000;
/// Node budget of the team-split search per candidate set.
const SPLIT_BUDGET: u32 = 4_000;

const NONE: u32 = u32::MAX;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Waiting, not yet merged into `sorted` (row index in `pending` in `pos`).
    Pending,
    /// In `sorted` (row index in `pos`): waiting, or taken (matched or cancelled) and freed
    /// at the next compaction.
    Sorted,
}

/// A ticket's stable handle: the shard's index points here, and this points at the row
/// that moves. Enqueue checks, cancels and `reorganise` read it; the anchor loop does not.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Bumped on every reuse, so stale `age` entries are recognised.
    generation: u32,
    /// Row in `sorted` or `pending`, by `state`.
    pos: u32,
    state: SlotState,
}

/// What the matcher reads of a ticket, kept in MMR order (56 bytes). Its RTT and player
/// rows sit at the same index of `Rows`, so a ticket is read from one place.
#[derive(Clone, Copy, Debug)]
struct Entry {
    min_mmr: f64,
    max_mmr: f64,
    sum_mmr: f64,
    enqueued_at_ms: u64,
    /// Before this time no search from this anchor can succeed (see `find_match`); it is
    /// not searched from until then. New tickets nearby still find it from their side.
    retry_at_ms: u64,
    id: TicketId,
    slot: u32,
    n_players: u8,
    /// Matched or cancelled; dropped (and its slot freed) at the next compaction.
    taken: bool,
    /// Held this tick for an older ticket that cannot match yet; younger anchors skip it.
    reserved: bool,
    /// Holds a plan this tick (see `plan_wide_parties`): the plans' pass searches for it,
    /// the anchor loop passes it by.
    planning: bool,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 56);

impl Entry {
    fn key_cmp(&self, other: &Entry) -> std::cmp::Ordering {
        self.min_mmr
            .total_cmp(&other.min_mmr)
            .then(self.enqueued_at_ms.cmp(&other.enqueued_at_ms))
            // Slots are handed out deterministically, so this last tie-break is too.
            .then(self.slot.cmp(&other.slot))
    }

    /// Anchor order: oldest first; tickets enqueued in the same millisecond in rating order,
    /// which is also their order in memory, so a burst is swept front to back.
    fn age_cmp(&self, other: &Entry) -> std::cmp::Ordering {
        self.enqueued_at_ms.cmp(&other.enqueued_at_ms).then_with(|| self.key_cmp(other))
    }
}

/// Entries with their fixed-stride rows (worst RTT per local datacenter, player ids) in
/// parallel vectors: moving an entry moves its rows, and reading a ticket touches memory at
/// one index, which is what keeps a tick's sweep sequential.
#[derive(Clone)]
struct Rows {
    entries: Vec<Entry>,
    rtt: Vec<f64>,
    players: Vec<PlayerId>,
    n_dc: usize,
    stride: usize,
}

impl Rows {
    fn new(n_dc: usize, stride: usize) -> Self {
        Rows { entries: Vec::new(), rtt: Vec::new(), players: Vec::new(), n_dc, stride }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn push(&mut self, entry: Entry, rtt: &[f64], players: &[PlayerId]) {
        debug_assert_eq!(rtt.len(), self.n_dc);
        self.entries.push(entry);
        self.rtt.extend_from_slice(rtt);
        let at = self.players.len();
        self.players.resize(at + self.stride, PlayerId(0));
        self.players[at..][..players.len()].copy_from_slice(players);
    }

    /// Indexes of the rows not taken.
    fn waiting(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|&i| !self.entries[i].taken)
    }

    #[inline]
    fn rtt(&self, i: usize) -> &[f64] {
        &self.rtt[i * self.n_dc..][..self.n_dc]
    }

    fn players(&self, i: usize) -> &[PlayerId] {
        &self.players[i * self.stride..][..usize::from(self.entries[i].n_players)]
    }

    /// Row `src` of `from` overwrites row `dst` of `self`.
    fn copy_row(&mut self, dst: usize, from: &Rows, src: usize) {
        self.entries[dst] = from.entries[src];
        self.rtt[dst * self.n_dc..][..self.n_dc].copy_from_slice(from.rtt(src));
        self.players[dst * self.stride..][..self.stride]
            .copy_from_slice(&from.players[src * self.stride..][..self.stride]);
    }

    /// Rows `src` move to start at `dst` (ranges may overlap): one bulk copy per vector,
    /// which is what keeps compaction and merging cheap when rows move by the thousand.
    fn move_rows(&mut self, src: std::ops::Range<usize>, dst: usize) {
        let (n_dc, stride) = (self.n_dc, self.stride);
        self.entries.copy_within(src.clone(), dst);
        self.rtt.copy_within(src.start * n_dc..src.end * n_dc, dst * n_dc);
        self.players.copy_within(src.start * stride..src.end * stride, dst * stride);
    }

    fn resize(&mut self, len: usize, filler: Entry) {
        self.entries.resize(len, filler);
        self.rtt.resize(len * self.n_dc, f64::INFINITY);
        self.players.resize(len * self.stride, PlayerId(0));
    }

    fn truncate(&mut self, len: usize) {
        self.entries.truncate(len);
        self.rtt.truncate(len * self.n_dc);
        self.players.truncate(len * self.stride);
    }

    /// Removes row `i`, moving the last row into its place.
    fn swap_remove(&mut self, i: usize) {
        let last = self.len() - 1;
        if i != last {
            self.move_rows(last..last + 1, i);
        }
        self.truncate(last);
    }

    fn clear(&mut self) {
        self.truncate(0);
    }

    fn shrink_to(&mut self, len: usize) {
        self.entries.shrink_to(len);
        self.rtt.shrink_to(len * self.n_dc);
        self.players.shrink_to(len * self.stride);
    }

    fn capacity_bytes(&self) -> usize {
        use std::mem::size_of;
        self.entries.capacity() * size_of::<Entry>()
            + self.rtt.capacity() * size_of::<f64>()
            + self.players.capacity() * size_of::<PlayerId>()
    }
}

/// An anchor to visit: its slot and generation to recognise it, its row in `sorted` (true
/// from one compaction to the next), and a copy of its row's retry time, so a tick skips a
/// sleeping anchor without reading its row: in a big pool most anchors sleep, and their
/// rows lie all over memory.
#[derive(Clone, Copy, Debug)]
struct Aged {
    slot: u32,
    generation: u32,
    pos: u32,
    /// The row's `retry_at_ms` as ms after `Pool::age_epoch_ms`: rounded down and
    /// saturating, and 0 for a time before the epoch. So `epoch + retry` is never later than
    /// the row's time or the epoch, whichever is later — unless `Pool::age_retry_stale`.
    retry: u32,
}

/// A set held this tick for an anchor that cannot match yet (20 bytes: a burst holds one
/// for about every other ticket, and the buffer stays for the next burst).
#[derive(Clone, Debug)]
struct Hold {
    /// The holder's position in `sorted`.
    anchor: u32,
    /// How far ahead the holder looked, ms (saturating).
    horizon_ms: u32,
    /// Its members: `reserved[members_from..members_to]`.
    members_from: u32,
    members_to: u32,
    /// Given up for another set (or matched): its members are no longer held.
    released: bool,
    /// A wide party's plan (`plan_wide_parties`), not a look-ahead.
    plan: bool,
}

const _: () = assert!(std::mem::size_of::<Hold>() == 20);

impl Hold {
    fn members(&self) -> std::ops::Range<usize> {
        self.members_from as usize..self.members_to as usize
    }

    /// Whether this hold still stands and holds one of `chosen`.
    fn is_in_the_way(&self, reserved: &[u32], chosen: &[u32]) -> bool {
        !self.released && reserved[self.members()].iter().any(|p| chosen.contains(p))
    }
}

/// A wide party's planned set, kept between planning passes by slot and id: positions move
/// when arrivals merge.
#[derive(Clone, Debug)]
struct Plan {
    holder: (u32, TicketId),
    /// When the set becomes valid: the time the plan looked ahead to.
    valid_at_ms: u64,
    /// A range of `Pool::plan_members`.
    members: std::ops::Range<usize>,
}

/// Sets or clears the `reserved` flag of the rows at `positions`.
fn mark_held(entries: &mut [Entry], positions: &[u32], held: bool) {
    for &pos in positions {
        entries[pos as usize].reserved = held;
    }
}

/// A ticket's contribution to a candidate set, precomputed once per anchor.
#[derive(Clone, Copy, Debug, Default)]
struct Candidate {
    pos: u32,
    min_mmr: f64,
    max_mmr: f64,
    window: f64,
    dc_mask: u32,
    n_players: u8,
}

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

/// Matched tickets leave the pool through this, so the shard can update its indexes.
pub(crate) trait Retire {
    fn retire(&mut self, ticket: TicketId, players: &[PlayerId]);
}

/// Where a tick's matches go: what the pool needs to name them, the shard's indexes to
/// retire their tickets from, and the event list; and the shard's recent waits, which cap
/// wide parties' plans and set the tail's edge (`TAIL_EDGE_WAIT_FRACTION`).
pub(crate) struct MatchSink<'a, R: Retire> {
    /// The shard's datacenters, by local bit.
    region_dcs: &'a [DatacenterId],
    /// The shard's id in the top bits of every match id.
    shard_tag: u64,
    next_match_seq: &'a mut u64,
    retire: &'a mut R,
    out: &'a mut Vec<crate::command::Event>,
    /// Read only during the tick (the shard records the tick's waits after it).
    recent_waits: &'a mut RecentWaits,
    /// `plan_wait_cap_ms`, once a pool has asked this tick.
    plan_wait_cap_ms: Option<Option<u64>>,
    /// `duel_patience_ms`, once a pool has asked this tick.
    duel_patience_ms: Option<Option<u64>>,
}

impl<'a, R: Retire> MatchSink<'a, R> {
    pub(crate) fn new(
        region_dcs: &'a [DatacenterId],
        shard_tag: u64,
        next_match_seq: &'a mut u64,
        retire: &'a mut R,
        out: &'a mut Vec<crate::command::Event>,
        recent_waits: &'a mut RecentWaits,
    ) -> Self {
        MatchSink {
            region_dcs,
            shard_tag,
            next_match_seq,
            retire,
            out,
            recent_waits,
            plan_wait_cap_ms: None,
            duel_patience_ms: None,
        }
    }

    /// How long wide parties' plans may hold a ticket: the shard's recent p95 wait
    /// (`PLAN_WAIT_QUANTILE`), worked out at most once a tick and only when a pool asks;
    /// `None` until enough tickets have matched.
    fn plan_wait_cap_ms(&mut self) -> Option<u64> {
        *self.plan_wait_cap_ms.get_or_insert_with(|| self.recent_waits.quantile(PLAN_WAIT_QUANTILE))
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
        *self.duel_patience_ms.get_or_insert_with(|| self.recent_waits.quantile(DUEL_PATIENCE_QUANTILE))
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
    skips: Skips,
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
    pub(crate) fn new(mode_id: ModeId, mode: &Mode, n_dc: usize) -> Self {
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
            skips: Skips::default(),
            last_limits: (u64::MAX, 0.0, 0.0),
            arrivals_since_tick: 0,
            rate_updated_ms: None,
            arrivals_per_s: 0.0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.n_waiting
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
    /// next tick, or on a big pool after `research_delay_ms`.
    fn research_at(&self, now_ms: u64) -> u64 {
        if self.under_load() { now_ms + self.research_delay_ms } else { now_ms + 1 }
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
    pub(crate) fn tick(&mut self, now_ms: u64, sink: &mut MatchSink<'_, impl Retire>) {
        self.reorganise();
        self.update_arrival_rate(now_ms);
        if self.n_waiting < 2 {
            return;
        }
        self.skips.reset(self.sorted.len());
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

    /// Whether the duel pair in `best_chosen` should wait for a closer opponent (see
    /// `DUEL_PATIENCE_FRACTION`). Judged by the pair's older ticket, whichever searched.
    fn waits_for_closer_opponent(&self, now_ms: u64, sink: &mut MatchSink<'_, impl Retire>) -> bool {
        let (lo, hi, oldest_ms) =
            self.best_chosen.iter().fold((f64::INFINITY, f64::NEG_INFINITY, u64::MAX), |(lo, hi, oldest), &m| {
                let c = &self.sorted.entries[m as usize];
                (lo.min(c.min_mmr), hi.max(c.max_mmr), oldest.min(c.enqueued_at_ms))
            });
        let wait_ms = now_ms.saturating_sub(oldest_ms);
        let cap_ms = if self.sparse() { DUEL_PATIENCE_MAX_MS } else { DUEL_PATIENCE_DENSE_MAX_MS };
        hi - lo > DUEL_PATIENCE_FRACTION * self.mmr_window.at(wait_ms)
            && sink.duel_patience_ms().is_some_and(|patience| wait_ms < patience.min(cap_ms))
    }

    /// Wide parties (own ratings further apart than the window a new ticket starts with)
    /// first, oldest first: each matches now if it can, else it plans the set it could
    /// have soonest from when it fits its own window, and holds it. Such a party can only
    /// match with tickets whose windows have grown as wide as its own spread, that is, that
    /// have waited about as long as it had to: in a pool where most tickets match within a
    /// second or two, those are rare, and the party waits on for stragglers. Its plan holds
    /// young tickets back until they are old enough. It holds no ticket past the shard's
    /// recent p95 wait (`MatchSink::plan_wait_cap_ms`), so the held ones wait longer but
    /// stay out of the tail; in a dense pool, nor does it keep a ticket near the tail from
    /// its set (`TAIL_EDGE_WAIT_FRACTION`). Measured on mixed traffic (BENCHMARKS.md):
    /// wide parties' mean wait fell by about a fifth at 300/s, and the p95 wait over matched
    /// tickets, level with greedy's before, is lower in most runs at 40–300/s. Small
    /// team-mode pools only: under load the searches would be too many, and such parties
    /// leave the scans there (`skip_unfit_parties`).
    fn plan_wide_parties(&mut self, now_ms: u64, sink: &mut MatchSink<'_, impl Retire>) {
        if self.team_size == 1 || self.under_load() {
            self.plans.clear();
            return;
        }
        if now_ms < self.next_plan_ms {
            self.hold_plans_again(now_ms);
            return;
        }
        self.next_plan_ms = now_ms.saturating_add(PLAN_PERIOD_MS);
        self.plans.clear();
        self.plan_members.clear();
        let Some(wait_cap_ms) = sink.plan_wait_cap_ms() else { return };
        let start_window = self.mmr_window.at(0);
        let dense = !self.sparse();
        for age_idx in 0..self.age.len() {
            if self.n_waiting < 2 {
                break;
            }
            let pos = self.age[age_idx].pos as usize;
            let e = self.sorted.entries[pos];
            if e.taken || e.reserved || e.n_players == 1 || e.max_mmr - e.min_mmr <= start_window {
                continue;
            }
            // An arrival nearby wakes it (its retry time set back to 0) for a search now.
            let woken = e.retry_at_ms == 0;
            if dense && !woken && self.plan_not_before_ms.get(e.slot as usize).is_some_and(|&t| t > now_ms) {
                // Not searched this tick either: the anchor loop passes it by.
                self.set_retry(pos, age_idx, now_ms + 1);
                continue;
            }
            let fits_at = self.mmr_window.reached_at(e.enqueued_at_ms, e.max_mmr - e.min_mmr);
            if fits_at == u64::MAX {
                continue;
            }
            if self.find_match(pos, now_ms, now_ms) {
                self.take_match(now_ms, sink);
                continue;
            }
            let first = fits_at.max(now_ms + PLAN_STEP_MS);
            // Past `now_ms + wait_cap_ms` any set's members (all here now) would wait past
            // the cap, and `hold_plan` would refuse it: not searched.
            let last = (first + PLAN_BEYOND_FIT_MS).min(now_ms.saturating_add(wait_cap_ms));
            let mut at = first;
            let mut found = false;
            while at <= last {
                if self.find_match(pos, at, now_ms) {
                    self.hold_plan(pos, at, now_ms, wait_cap_ms);
                    found = true;
                    break;
                }
                at += PLAN_STEP_MS;
            }
            if dense && !found {
                let slot = e.slot as usize;
                if self.plan_not_before_ms.len() <= slot {
                    self.plan_not_before_ms.resize(self.slots.len(), 0);
                }
                self.plan_not_before_ms[slot] = now_ms + PLAN_RETRY_DENSE_MS;
            } else if let Some(not_before) = self.plan_not_before_ms.get_mut(e.slot as usize) {
                // A set found (held, or refused for the cap), or sparse: searched again at the
                // next pass.
                *not_before = 0;
            }
            // Searched this tick: the anchor loop passes it by.
            self.set_retry(pos, age_idx, now_ms + 1);
        }
    }

    /// Holds `best_chosen`, the set the wide party at `sorted[holder]` can have at
    /// `valid_at_ms`, unless that would hold a ticket past `wait_cap_ms`, and keeps it as a
    /// plan.
    fn hold_plan(&mut self, holder: usize, valid_at_ms: u64, now_ms: u64, wait_cap_ms: u64) {
        let members = self.best_chosen.iter().filter(|&&m| m as usize != holder);
        let oldest_ms = members.clone().map(|&m| self.sorted.entries[m as usize].enqueued_at_ms).min();
        if oldest_ms.is_none_or(|oldest| valid_at_ms.saturating_sub(oldest) > wait_cap_ms) {
            return;
        }
        self.look_ahead_set.clear();
        self.look_ahead_set.extend(members);
        self.hold_look_ahead_set(holder, valid_at_ms - now_ms, true);
        self.sorted.entries[holder].planning = true;
        let start = self.plan_members.len();
        for &m in &self.look_ahead_set {
            let e = &self.sorted.entries[m as usize];
            self.plan_members.push((e.slot, e.id));
        }
        let e = &self.sorted.entries[holder];
        self.plans.push(Plan { holder: (e.slot, e.id), valid_at_ms, members: start..self.plan_members.len() });
    }

    /// Between planning passes: holds each plan's set again while its holder and every
    /// member still wait.
    fn hold_plans_again(&mut self, now_ms: u64) {
        let mut kept = 0;
        for p in 0..self.plans.len() {
            let plan = self.plans[p].clone();
            let (slot, id) = plan.holder;
            if !self.holds(slot, id) {
                continue;
            }
            let holder = self.slots[slot as usize].pos as usize;
            let members = &self.plan_members[plan.members.clone()];
            if !members.iter().all(|&(slot, id)| self.holds(slot, id)) {
                continue;
            }
            self.look_ahead_set.clear();
            self.look_ahead_set.extend(members.iter().map(|&(slot, _)| self.slots[slot as usize].pos));
            if self.look_ahead_set.iter().any(|&m| self.sorted.entries[m as usize].reserved) {
                continue;
            }
            self.hold_look_ahead_set(holder, plan.valid_at_ms.saturating_sub(now_ms), true);
            self.sorted.entries[holder].planning = true;
            self.plans[kept] = plan;
            kept += 1;
        }
        self.plans.truncate(kept);
    }

    /// Reserves `look_ahead_set` for the anchor at `sorted[anchor]` for the rest of the tick.
    fn hold_look_ahead_set(&mut self, anchor: usize, horizon_ms: u64, plan: bool) {
        let start = self.reserved.len();
        mark_held(&mut self.sorted.entries, &self.look_ahead_set, true);
        self.reserved.extend_from_slice(&self.look_ahead_set);
        if !self.record_holds {
            return;
        }
        self.holds.push(Hold {
            anchor: anchor as u32,
            horizon_ms: u32::try_from(horizon_ms).unwrap_or(u32::MAX),
            members_from: start as u32,
            members_to: self.reserved.len() as u32,
            released: false,
            plan,
        });
    }

    /// A younger anchor whose search failed because of a hold: if it can match now with
    /// held tickets, and the holder finds another set within its look-ahead that leaves
    /// those out, the holder holds that one and the younger anchor's set is in
    /// `best_chosen`. Holds guard old tickets from starving; they need not block younger
    /// ones when the old ticket has another way out.
    fn take_from_hold(&mut self, anchor: usize, now_ms: u64) -> bool {
        if !self.find_match_through_holds(anchor, now_ms) {
            return false;
        }
        // The one hold the set goes through; through two, both holders would have to give
        // way, which is not tried.
        let mut hit = None;
        for (h, hold) in self.holds.iter().enumerate() {
            if hold.is_in_the_way(&self.reserved, &self.best_chosen) {
                if hit.is_some() {
                    return false;
                }
                hit = Some(h);
            }
        }
        // Through no hold: a search bounded differently found what the first did not.
        let Some(h) = hit else { return true };
        let hold = self.holds[h].clone();
        self.through_hold.clone_from(&self.best_chosen);
        let through_mask = self.best_dc_mask;
        mark_held(&mut self.sorted.entries, &self.reserved[hold.members()], false);
        if self.through_hold.contains(&hold.anchor) {
            // The holder itself is in the younger anchor's set: matched now, not later.
            self.holds[h].released = true;
            return true;
        }
        // The holder looks ahead again as before, with the younger set held against it.
        mark_held(&mut self.sorted.entries, &self.through_hold, true);
        let horizon_ms = u64::from(hold.horizon_ms);
        let again = self.find_match(hold.anchor as usize, now_ms + horizon_ms, now_ms);
        mark_held(&mut self.sorted.entries, &self.through_hold, false);
        if !again {
            // No other way out: the hold stands.
            mark_held(&mut self.sorted.entries, &self.reserved[hold.members()], true);
            return false;
        }
        self.holds[h].released = true;
        self.look_ahead_set.clone_from(&self.best_chosen);
        self.hold_look_ahead_set(hold.anchor as usize, horizon_ms, hold.plan);
        std::mem::swap(&mut self.best_chosen, &mut self.through_hold);
        self.best_dc_mask = through_mask;
        true
    }

    /// An anchor whose search failed because of holds: if it can match now with held
    /// tickets and every hold its set goes through is a plan's, those plans give way (their
    /// holders plan again at the next pass) and the set is in `best_chosen`. Holds of
    /// anchors looking `RESERVE_HORIZON_MS` ahead stand.
    fn take_through_plans(&mut self, anchor: usize, now_ms: u64) -> bool {
        if !self.find_match_through_holds(anchor, now_ms)
            || self.holds.iter().any(|h| !h.plan && h.is_in_the_way(&self.reserved, &self.best_chosen))
        {
            return false;
        }
        for h in 0..self.holds.len() {
            if self.holds[h].is_in_the_way(&self.reserved, &self.best_chosen) {
                let members = self.holds[h].members();
                mark_held(&mut self.sorted.entries, &self.reserved[members], false);
                self.holds[h].released = true;
            }
        }
        true
    }

    /// `find_match` at `now_ms` as if nothing were held.
    fn find_match_through_holds(&mut self, anchor: usize, now_ms: u64) -> bool {
        self.ignore_holds = true;
        let found = self.find_match(anchor, now_ms, now_ms);
        self.ignore_holds = false;
        found
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

    /// `sorted[pos]` as a candidate for anchor `a`, if the two accept each other. The RTT
    /// row (a likely cache miss) is read only once the ratings fit.
    #[inline]
    fn candidate_for(&mut self, a: &Candidate, pos: usize, now_ms: u64) -> Option<Candidate> {
        let e = self.sorted.entries[pos];
        let wait = now_ms.saturating_sub(e.enqueued_at_ms);
        let (window, rtt_limit) = self.limits(wait);
        let spread = a.max_mmr.max(e.max_mmr) - a.min_mmr.min(e.min_mmr);
        if spread > a.window || spread > window {
            return None;
        }
        let dc_mask = self.dc_mask(pos, rtt_limit);
        if dc_mask & a.dc_mask == 0 {
            return None;
        }
        Some(Candidate {
            pos: pos as u32,
            min_mmr: e.min_mmr,
            max_mmr: e.max_mmr,
            window,
            dc_mask,
            n_players: e.n_players,
        })
    }

    /// For a neighbour `candidate_for` refused at `now_ms`: the earliest time anchor `a` and
    /// `sorted[pos]` might accept each other (`u64::MAX`: never). Only failed searches ask,
    /// so a search that succeeds pays nothing for its refusals.
    fn compatible_from(&self, a: &Candidate, pos: usize, now_ms: u64) -> u64 {
        let e = &self.sorted.entries[pos];
        let anchor = &self.sorted.entries[a.pos as usize];
        let window = self.mmr_window.at(now_ms.saturating_sub(e.enqueued_at_ms));
        let spread = a.max_mmr.max(e.max_mmr) - a.min_mmr.min(e.min_mmr);
        if spread > a.window || spread > window {
            let reached = |at: u64| self.mmr_window.reached_at(at, spread);
            return reached(anchor.enqueued_at_ms).max(reached(e.enqueued_at_ms));
        }
        self.rtt_limits_meet(a.pos as usize, pos)
    }

    /// When both tickets' RTT limits first admit one datacenter: per datacenter, the later
    /// of the times each ticket's own limit reaches its own RTT there; the soonest of those.
    fn rtt_limits_meet(&self, x: usize, y: usize) -> u64 {
        let when = |pos: usize, rtt: f64| self.max_rtt.reached_at(self.sorted.entries[pos].enqueued_at_ms, rtt);
        let (rows_x, rows_y) = (self.sorted.rtt(x), self.sorted.rtt(y));
        rows_x.iter().zip(rows_y).map(|(&rx, &ry)| when(x, rx).max(when(y, ry))).min().unwrap_or(u64::MAX)
    }

    fn candidate(&mut self, pos: usize, now_ms: u64) -> Candidate {
        let e = self.sorted.entries[pos];
        let (window, rtt_limit) = self.limits(now_ms.saturating_sub(e.enqueued_at_ms));
        Candidate {
            pos: pos as u32,
            min_mmr: e.min_mmr,
            max_mmr: e.max_mmr,
            window,
            dc_mask: self.dc_mask(pos, rtt_limit),
            n_players: e.n_players,
        }
    }

    /// Looks for a match around the ticket at `sorted[anchor]`; on success its members
    /// (positions in `sorted`) are in `best_chosen`, on failure `retry_at_ms` says when
    /// searching from this anchor again could first succeed — or any time up to
    /// `research_at(tick_ms)`, which the caller waits for in any case. `now_ms` is the time
    /// the limits are taken at: the tick's own, or later for a look-ahead.
    fn find_match(&mut self, anchor: usize, now_ms: u64, tick_ms: u64) -> bool {
        self.search_met_hold = false;
        let a = self.candidate(anchor, now_ms);
        let own_spread = a.max_mmr - a.min_mmr;
        if own_spread > a.window {
            // A party whose own ratings lie further apart than its window allows: no set
            // can hold it until the window has grown that far.
            let e = &self.sorted.entries[anchor];
            self.retry_at_ms = self.mmr_window.reached_at(e.enqueued_at_ms, own_spread);
            return false;
        }
        if a.dc_mask == 0 {
            let e = &self.sorted.entries[anchor];
            let best = self.sorted.rtt(anchor).iter().fold(f64::INFINITY, |m, &r| m.min(r));
            self.retry_at_ms = self.max_rtt.reached_at(e.enqueued_at_ms, best);
            return false;
        }
        let need = self.players_per_match - usize::from(a.n_players);
        // Solo-only modes pack any set; party modes get spare candidates to pack with.
        let slack = if self.team_size == 1 { need.min(SOLO_SLACK) } else { usize::from(self.team_size) * 2 };
        let scan_limit = (SCAN_PER_PLAYER * self.players_per_match).min(SCAN_CAP);
        // Big free-for-alls need more than the usual cap just to fill the match.
        let max_candidates = MAX_CANDIDATES.max(self.players_per_match + slack);

        self.candidates.clear();
        self.candidates.push(a);
        let (lo_bound, hi_bound) = (a.max_mmr - a.window, a.min_mmr + a.window);
        let mut collected = 0usize;
        // Candidates found below and above the anchor in `sorted`.
        let (mut found_left, mut found_right) = (0usize, 0usize);
        // Solo modes may try their one run early (see below), once.
        let mut early_run = self.team_size == 1;
        let mut target = need + slack;
        let (mut left, mut right) = (anchor, anchor + 1);
        let mut scanned = 0usize;
        // The earliest time a later search could find what this one did not: when a
        // rejected neighbour becomes compatible, or the window reaches the next one out.
        // What it cannot reason about (a search that ran out of budget or found no set
        // among compatible candidates) is retried next tick — or, on a big pool, after
        // `research_delay_ms` even if a neighbour becomes compatible sooner: under load,
        // a failed anchor waits its turn (others still pick it, new tickets still find it).
        let research_at = self.research_at(tick_ms);
        self.retry_at_ms = u64::MAX;
        // Refused neighbours since the last time `retry_at_ms` was set outright; their
        // times are folded in only if the search fails.
        self.refused.clear();
        // The next untaken entry on each side (links only change when a match is taken).
        let mut l_any = self.skips.next_left(left);
        let mut r_any = self.next_right_within(right);
        loop {
            let mut exhausted = false;
            while collected < target {
                if scanned >= scan_limit || self.candidates.len() >= max_candidates {
                    exhausted = true;
                    self.retry_at_ms = research_at;
                    self.refused.clear();
                    break;
                }
                // Next nearest untaken neighbour by sort key, from whichever side is closer.
                let l = l_any.filter(|&p| self.sorted.entries[p].min_mmr >= lo_bound);
                let r = r_any.filter(|&p| self.sorted.entries[p].min_mmr <= hi_bound);
                // Solo modes: once one side is out of reach and the other holds `need`
                // candidates, every run of ratings that can include the anchor is already
                // among the candidates (a run holds at most `need` on one side), so spares
                // cannot change the pick. Try it now; if it fails, collecting goes on.
                if early_run && ((l.is_none() && found_right >= need) || (r.is_none() && found_left >= need)) {
                    early_run = false;
                    if self.search_solo_block() {
                        return true;
                    }
                }
                let pos = match (l, r) {
                    (None, None) => {
                        exhausted = true;
                        let anchor_at = self.sorted.entries[anchor].enqueued_at_ms;
                        // Lower bounds on the spread with anything at or beyond the next
                        // entry out: `sorted` is ordered by lowest rating only, so a wide
                        // party there may hide a close solo behind it.
                        let left_gap = l_any.map(|p| a.max_mmr - self.sorted.entries[p].min_mmr);
                        let right_gap = r_any.map(|p| a.max_mmr.max(self.sorted.entries[p].min_mmr) - a.min_mmr);
                        for gap in [left_gap, right_gap].into_iter().flatten() {
                            self.retry_at_ms = self.retry_at_ms.min(self.mmr_window.reached_at(anchor_at, gap));
                        }
                        break;
                    }
                    (Some(lp), Some(rp))
                        if self.sorted.entries[rp].min_mmr - a.min_mmr
                            < a.min_mmr - self.sorted.entries[lp].min_mmr =>
                    {
                        right = rp + 1;
                        r_any = self.next_right_within(right);
                        rp
                    }
                    (Some(lp), _) => {
                        left = lp;
                        l_any = self.skips.next_left(left);
                        lp
                    }
                    (None, Some(rp)) => {
                        right = rp + 1;
                        r_any = self.next_right_within(right);
                        rp
                    }
                };
                scanned += 1;
                if self.sorted.entries[pos].reserved && !self.ignore_holds {
                    // Held for an older anchor this tick; free again after it.
                    self.search_met_hold = true;
                    self.retry_at_ms = self.retry_at_ms.min(research_at);
                    continue;
                }
                match self.candidate_for(&a, pos, now_ms) {
                    Some(c) => {
                        collected += usize::from(c.n_players);
                        if pos < anchor {
                            found_left += 1;
                        } else {
                            found_right += 1;
                        }
                        self.candidates.push(c);
                    }
                    None => self.refused.push(pos as u32),
                }
            }
            if collected >= need {
                if self.search_solo_block() || self.search_subset(now_ms) {
                    return true;
                }
                self.retry_at_ms = research_at;
                self.refused.clear();
            }
            if exhausted {
                // Parties skipped as unfit come back once they fit.
                self.retry_at_ms = self.retry_at_ms.min(self.unfit_until_ms);
                for i in 0..self.refused.len() {
                    // The anchor searches again no sooner than `research_at` anyway (the
                    // caller sees to it), so once the retry time is there the rest of the
                    // refused neighbours cannot move it (under load, that is 2 MMR points of
                    // window growth away). Same output, a few percent less time, in noise.
                    if self.retry_at_ms <= research_at {
                        break;
                    }
                    let at = self.compatible_from(&a, self.refused[i] as usize, now_ms);
                    self.retry_at_ms = self.retry_at_ms.min(at);
                }
                return false;
            }
            // The nearest ones do not fit together: gather every candidate the limits allow
            // and search once more (nearest first still, so tight sets are still found first).
            target = usize::MAX;
        }
    }

    /// The first untaken position ≥ `i` in `sorted`, if any.
    #[inline]
    fn next_right_within(&mut self, i: usize) -> Option<usize> {
        Some(self.skips.next_right(i)).filter(|&p| p < self.sorted.len())
    }

    /// Solo modes: the run of `players_per_match` consecutive candidates (by MMR, anchor
    /// included) with the smallest spread that everyone accepts. Consecutive runs are where
    /// the tightest sets are; the subset search covers the rest.
    fn search_solo_block(&mut self) -> bool {
        if self.team_size != 1 {
            return false;
        }
        let p = self.players_per_match;
        let n = self.candidates.len();
        if n < p {
            return false;
        }
        // Candidates in `sorted` order (by lowest MMR): each side was collected nearest
        // first, so the left side reversed, the anchor, then the right side.
        let cands = &self.candidates;
        let anchor_pos = cands[0].pos;
        self.chosen.clear();
        self.chosen.extend((1..n as u32).rev().filter(|&c| cands[c as usize].pos < anchor_pos));
        let anchor_at = self.chosen.len();
        self.chosen.push(0);
        self.chosen.extend((1..n as u32).filter(|&c| cands[c as usize].pos > anchor_pos));
        debug_assert!(self.chosen.windows(2).all(|w| cands[w[0] as usize].pos < cands[w[1] as usize].pos));
        let mut best: Option<(f64, usize, u32)> = None;
        let first = anchor_at.saturating_sub(p - 1);
        let last = anchor_at.min(n - p);
        for start in first..=last {
            let block = &self.chosen[start..start + p];
            let lo = cands[block[0] as usize].min_mmr;
            let hi = cands[block[p - 1] as usize].max_mmr;
            let spread = hi - lo;
            let (mut window, mut mask) = (f64::INFINITY, u32::MAX);
            for &c in block {
                let c = &cands[c as usize];
                window = window.min(c.window);
                mask &= c.dc_mask;
            }
            if spread > window || mask == 0 {
                continue;
            }
            // Smallest spread; the first (lowest) run wins ties.
            if best.is_none_or(|(b, _, _)| spread < b) {
                best = Some((spread, start, mask));
            }
        }
        let Some((_, start, mask)) = best else { return false };
        self.chosen.copy_within(start..start + p, 0);
        self.chosen.truncate(p);
        self.best_dc_mask = mask;
        self.split_teams()
    }

    /// A set of candidates that fills the match, that every member accepts, and that packs
    /// into teams: the best of the first few found (`SUBSET_LEAVES`, `SUBSET_AGE_WEIGHT`;
    /// under load, the first); none, without searching, when their party sizes cannot fill
    /// the teams. Waits are taken at `now_ms`.
    fn search_subset(&mut self, now_ms: u64) -> bool {
        if !self.sizes_can_fill_teams() {
            debug_assert!(!self.subset_dfs_from_anchor(now_ms), "the sizes check refused a set the search finds");
            return false;
        }
        self.subset_dfs_from_anchor(now_ms)
    }

    /// Depth-first over the candidates, nearest first, the anchor always in; of the first
    /// `SUBSET_LEAVES` full sets that split into teams (under load, the first; a perfectly
    /// balanced one ends the search), the best scored (`SUBSET_AGE_WEIGHT`) goes to
    /// `best_chosen`.
    fn subset_dfs_from_anchor(&mut self, now_ms: u64) -> bool {
        let n = self.candidates.len();
        self.suffix_players.clear();
        self.suffix_players.resize(n + 1, 0);
        for i in (0..n).rev() {
            self.suffix_players[i] = self.suffix_players[i + 1] + u32::from(self.candidates[i].n_players);
        }
        let a = self.candidates[0];
        self.chosen.clear();
        self.chosen.push(0);
        let mut budget = SUBSET_BUDGET;
        let state = SubsetState {
            lo: a.min_mmr,
            hi: a.max_mmr,
            window: a.window,
            dc_mask: a.dc_mask,
            players: u32::from(a.n_players),
            sums: 1 | 1u128 << a.n_players,
        };
        self.subset_leaves = 0;
        self.subset_best_score = f64::INFINITY;
        self.subset_now_ms = now_ms;
        self.subset_dfs(1, state, &mut budget);
        if self.subset_leaves == 0 {
            return false;
        }
        // Ratings are finite (the shard checks), so any split set has a finite score and
        // was kept: `subset_best` is this search's, not a stale one.
        debug_assert!(self.subset_best_score.is_finite());
        std::mem::swap(&mut self.best_chosen, &mut self.subset_best);
        self.best_dc_mask = self.subset_best_dc_mask;
        true
    }

    /// True when the search should stop: enough full sets seen, or a perfect one.
    fn subset_dfs(&mut self, next: usize, st: SubsetState, budget: &mut u32) -> bool {
        let need = self.players_per_match as u32;
        if st.players == need {
            if !self.split_teams() {
                return false;
            }
            // The gap between team means; for teams of one, the set's spread.
            let gap = if self.team_size == 1 { st.hi - st.lo } else { self.split.best_gap };
            self.subset_leaves += 1;
            // Under load a pool is dense enough that the first set is close, and splitting more
            // sets made the 5v5 tick at 100k tickets 7× slower.
            let enough = if self.under_load() { 1 } else { SUBSET_LEAVES };
            // The first set is kept whatever its score: only weigh waits where sets compete.
            let weigh_waits = enough > 1 && !self.sparse();
            let score =
                if weigh_waits { gap - SUBSET_AGE_WEIGHT * self.best_chosen_waited_s(self.subset_now_ms) } else { gap };
            if score < self.subset_best_score {
                self.subset_best_score = score;
                self.subset_best.clone_from(&self.best_chosen);
                self.subset_best_dc_mask = st.dc_mask;
            }
            return self.subset_leaves >= enough || gap == 0.0;
        }
        if *budget == 0 || next >= self.candidates.len() || st.players + self.suffix_players[next] < need {
            return false;
        }
        *budget -= 1;
        let c = self.candidates[next];
        let players = st.players + u32::from(c.n_players);
        if players <= need {
            let lo = st.lo.min(c.min_mmr);
            let hi = st.hi.max(c.max_mmr);
            let window = st.window.min(c.window);
            let dc_mask = st.dc_mask & c.dc_mask;
            let sums = st.sums | st.sums << c.n_players;
            if hi - lo <= window && dc_mask != 0 && self.may_pack(sums, players) {
                self.chosen.push(next as u32);
                let st = SubsetState { lo, hi, window, dc_mask, players, sums };
                if self.subset_dfs(next + 1, st, budget) {
                    return true;
                }
                self.chosen.pop();
            }
        }
        self.subset_dfs(next + 1, st, budget)
    }

    /// The datacenters the set in `best_chosen` can play in at `now_ms`, if every member
    /// accepts the set then: each window covers its spread and some datacenter is within
    /// every RTT limit. `None` if not.
    fn best_chosen_accepted_at(&mut self, now_ms: u64) -> Option<u32> {
        let (mut lo, mut hi, mut window, mut dc_mask) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, u32::MAX);
        for i in 0..self.best_chosen.len() {
            let c = self.candidate(self.best_chosen[i] as usize, now_ms);
            (lo, hi) = (lo.min(c.min_mmr), hi.max(c.max_mmr));
            window = window.min(c.window);
            dc_mask &= c.dc_mask;
        }
        (hi - lo <= window && dc_mask != 0).then_some(dc_mask)
    }

    /// Seconds the tickets in `best_chosen` have waited past the tail's edge in all at
    /// `now_ms` (see `SUBSET_AGE_WEIGHT`).
    fn best_chosen_waited_s(&self, now_ms: u64) -> f64 {
        let waited_ms: u64 = self
            .best_chosen
            .iter()
            .map(|&m| {
                let wait_ms = now_ms.saturating_sub(self.sorted.entries[m as usize].enqueued_at_ms);
                wait_ms.saturating_sub(self.subset_waits_weigh_from_ms)
            })
            .sum();
        waited_ms as f64 / 1000.0
    }

    /// Whether the candidates' party sizes alone, the anchor's included, can fill two teams
    /// exactly, whatever their ratings and datacenters: a cheap necessary condition for
    /// `search_subset`, and exact about sizes: when it says no, the search would have found
    /// nothing (debug builds check that). Without it, a pool of parties that cannot complete
    /// each other (teams of 5, mostly parties of 3 and 4) had every anchor run the search to
    /// its node budget every tick: on such traffic at 40 tickets/s, ticks took 20 ms (p50)
    /// instead of 8 ms with the same matches (BENCHMARKS.md). The reachable (first team,
    /// second team) fills are bits of a `u128`, row by row; true for more than two teams or
    /// teams over 10 (the search decides those).
    fn sizes_can_fill_teams(&self) -> bool {
        let Some(room) = &self.team_fill_rooms else { return true };
        let row = u32::from(self.team_size) + 1;
        let full = u32::from(self.team_size) * row + u32::from(self.team_size);
        let mut fills = 1u128 << (u32::from(self.candidates[0].n_players) * row);
        for c in &self.candidates[1..] {
            let k = usize::from(c.n_players);
            fills |= ((fills & room.first[k]) << (k as u32 * row)) | ((fills & room.second[k]) << k);
            if fills >> full & 1 == 1 {
                return true;
            }
        }
        false
    }

    /// Whether parties with these subset `sums` and `players` in all could still be split
    /// into two teams as more parties join: one side must hold at most `team_size` and
    /// leave at most `team_size` to the other. The greedy baseline's first-fit check, made
    /// exact; it prunes the subset search early instead of at its leaves, and for a full
    /// set it is the exact packing test, so the split search only ever sees sets that pack.
    /// Always true for more than two teams (the split search decides those).
    #[inline]
    fn may_pack(&self, sums: u128, players: u32) -> bool {
        if self.teams != 2 {
            return true;
        }
        let t = u32::from(self.team_size);
        let lo = players.saturating_sub(t);
        if lo > t {
            return false;
        }
        // Bits lo..=t.
        let range = (u128::MAX >> (127 - t)) & (u128::MAX << lo);
        sums & range != 0
    }

    /// Splits the chosen candidates into teams of exactly `team_size`, minimising the gap
    /// between team means. On success `best_chosen` holds sorted positions, team by team,
    /// and `split.best` the team of each (`split.best_gap` the gap).
    fn split_teams(&mut self) -> bool {
        if self.team_size == 1 {
            // One ticket per team: every split is the same match.
            let (chosen, candidates) = (&self.chosen, &self.candidates);
            self.best_chosen.clear();
            self.best_chosen.extend(chosen.iter().map(|&ci| candidates[ci as usize].pos));
            return true;
        }
        let split = &mut self.split;
        split.items.clear();
        for &ci in &self.chosen {
            let c = &self.candidates[ci as usize];
            split.items.push(SplitItem {
                pos: c.pos,
                n_players: u32::from(c.n_players),
                sum_mmr: self.sorted.entries[c.pos as usize].sum_mmr,
            });
        }
        // Big parties first, then by rating: a good first leaf, and early dead ends.
        split.items.sort_unstable_by(|x, y| {
            y.n_players.cmp(&x.n_players).then(y.sum_mmr.total_cmp(&x.sum_mmr)).then(x.pos.cmp(&y.pos))
        });
        if !split.run(self.teams, self.team_size) {
            return false;
        }
        self.best_chosen.clear();
        for team in 0..self.teams {
            for (item, &t) in split.items.iter().zip(&split.best) {
                if t == team {
                    self.best_chosen.push(item.pos);
                }
            }
        }
        true
    }

    /// Removes the tickets of `best_chosen` and sends their match to `sink`.
    fn take_match(&mut self, now_ms: u64, sink: &mut MatchSink<'_, impl Retire>) {
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
            sink.retire.retire(e.id, self.sorted.players(pos));
            // Its slot is freed at the next compaction.
            self.sorted.entries[pos].taken = true;
            self.n_waiting -= 1;
            self.skips.take(pos);
        }
        debug_assert_eq!(usize::from(team) + 1, usize::from(self.teams));
        debug_assert_eq!(players.len(), self.players_per_match);
        let mean = team_sum / size;
        (min_mean, max_mean) = (min_mean.min(mean), max_mean.max(mean));
        *sink.next_match_seq += 1;
        sink.out.push(crate::command::Event::Matched(Match {
            id: MatchId(sink.shard_tag | *sink.next_match_seq),
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
            + self.skips.links.capacity() * 8
            + self.plans.capacity() * size_of::<Plan>()
            + self.holds.capacity() * size_of::<Hold>()
            + self.reserved.capacity() * 4
            + self.plan_members.capacity() * size_of::<(u32, TicketId)>()
            + self.plan_not_before_ms.capacity() * 8
    }
}

/// Jumps over the entries of `sorted` taken during a tick (union–find with path halving),
/// so an anchor late in a dense, mostly matched neighbourhood does not wade through them.
#[derive(Clone, Default)]
struct Skips {
    /// Per position `i` (0..=len), the two jump links side by side, so the anchor's first
    /// step either way touches one cache line:
    /// - `[i].0` leads to the first untaken position ≥ `i`; `[len].0 = len` ends it;
    /// - `[j].1`, shifted by one, leads to `k` where `k - 1` is the last untaken position
    ///   < `j`; `[0].1 = 0` means none.
    links: Vec<(u32, u32)>,
}

impl Skips {
    fn reset(&mut self, len: usize) {
        self.links.clear();
        self.links.extend((0..=len as u32).map(|i| (i, i)));
    }

    fn take(&mut self, pos: usize) {
        self.links[pos].0 = pos as u32 + 1;
        self.links[pos + 1].1 = pos as u32;
    }

    /// The first untaken position ≥ `i` (`len` if none).
    fn next_right(&mut self, mut i: usize) -> usize {
        while self.links[i].0 as usize != i {
            let next = self.links[i].0 as usize;
            self.links[i].0 = self.links[next].0;
            i = next;
        }
        i
    }

    /// The last untaken position < `i`.
    fn next_left(&mut self, i: usize) -> Option<usize> {
        let mut j = i;
        while self.links[j].1 as usize != j {
            let next = self.links[j].1 as usize;
            self.links[j].1 = self.links[next].1;
            j = next;
        }
        j.checked_sub(1)
    }
}

/// For `Pool::sizes_can_fill_teams`, by party size `k`: the bits of the (first team,
/// second team) fills whose first team, or second, has room for `k` more players. Built
/// once per pool: building them per candidate was a third of the tick on a pool of parties
/// that cannot complete each other (BENCHMARKS.md).
#[derive(Clone)]
struct TeamFillRooms {
    first: [u128; 11],
    second: [u128; 11],
}

impl TeamFillRooms {
    /// Two teams of at most 10 only: the fills of a larger mode do not fit a `u128`.
    fn new(teams: u16, team_size: u16) -> Option<Self> {
        if teams != 2 || team_size > 10 {
            return None;
        }
        let size = u32::from(team_size);
        let row = size + 1;
        let (mut first, mut second) = ([0u128; 11], [0u128; 11]);
        for k in 1..=size {
            first[k as usize] = (1u128 << ((size - k + 1) * row)) - 1;
            second[k as usize] = (0..row).fold(0u128, |m, f1| m | (((1u128 << (size - k + 1)) - 1) << (f1 * row)));
        }
        Some(TeamFillRooms { first, second })
    }
}

#[derive(Clone, Copy)]
struct SubsetState {
    lo: f64,
    hi: f64,
    window: f64,
    dc_mask: u32,
    players: u32,
    /// Bit k: some of the chosen parties sum to exactly k players (two-team modes).
    sums: u128,
}

#[derive(Clone, Copy, Debug)]
struct SplitItem {
    pos: u32,
    n_players: u32,
    sum_mmr: f64,
}

/// Branch and bound over team assignments; buffers reused across calls.
#[derive(Clone, Default)]
struct SplitSearch {
    items: Vec<SplitItem>,
    current: Vec<u16>,
    best: Vec<u16>,
    best_gap: f64,
    team_players: Vec<u32>,
    team_sums: Vec<f64>,
    /// `rest[i]`: the rating sum of items `i..`, for the bound in `assign`.
    rest: Vec<f64>,
    /// The lowest and highest mean rating of a party among items `i..`, for the bound in
    /// `assign_two`.
    rest_min_mean: Vec<f64>,
    rest_max_mean: Vec<f64>,
    /// How far over the best gap `assign_two`'s bound must be to prune: its rounding error
    /// grows with the rating sums (ratings are only checked finite), so the margin does.
    bound_margin: f64,
    budget: u32,
}

impl SplitSearch {
    fn run(&mut self, teams: u16, team_size: u16) -> bool {
        self.prepare(teams);
        if teams == 2 {
            self.assign_two(0, u32::from(team_size));
        } else {
            self.assign(0, u32::from(team_size));
        }
        !self.best.is_empty()
    }

    /// Resets the search for `items` split into `teams`.
    fn prepare(&mut self, teams: u16) {
        self.current.clear();
        self.current.resize(self.items.len(), 0);
        self.best.clear();
        self.best_gap = f64::INFINITY;
        self.team_players.clear();
        self.team_players.resize(usize::from(teams), 0);
        self.team_sums.clear();
        self.team_sums.resize(usize::from(teams), 0.0);
        self.rest.clear();
        self.rest.resize(self.items.len() + 1, 0.0);
        for i in (0..self.items.len()).rev() {
            self.rest[i] = self.rest[i + 1] + self.items[i].sum_mmr;
        }
        self.budget = SPLIT_BUDGET;
        if teams == 2 {
            let n = self.items.len();
            // 1e-6 for ordinary ratings; about 2^-40 of the sum beyond, far above the few
            // ulps the bound's arithmetic can lose.
            self.bound_margin = 1e-6_f64.max(self.rest[0] * 1e-12);
            self.rest_min_mean.clear();
            self.rest_min_mean.resize(n + 1, f64::INFINITY);
            self.rest_max_mean.clear();
            self.rest_max_mean.resize(n + 1, f64::NEG_INFINITY);
            for i in (0..n).rev() {
                let mean = self.items[i].sum_mmr / f64::from(self.items[i].n_players);
                self.rest_min_mean[i] = self.rest_min_mean[i + 1].min(mean);
                self.rest_max_mean[i] = self.rest_max_mean[i + 1].max(mean);
            }
        }
    }

    /// `assign` for two teams, and the same split, tie for tie, wherever `assign` finishes
    /// within its node budget (up to ten parties, a property test holds it to that; past the
    /// budget this one reaches further, so its split is as good or better): the same nodes
    /// in the same order with the same arithmetic, less the ones a tighter bound prunes, and
    /// without the loops over teams and the sort of their order.
    /// The split search was a third of a 5v5 burst's tick; with this, a sixth, and the
    /// tick a fifth shorter (BENCHMARKS.md).
    fn assign_two(&mut self, i: usize, team_size: u32) {
        if self.best_gap == 0.0 || self.budget == 0 {
            return;
        }
        self.budget -= 1;
        let (s0, s1) = (self.team_sums[0], self.team_sums[1]);
        if i == self.items.len() {
            let size = f64::from(team_size);
            let (m0, m1) = (s0 / size, s1 / size);
            let gap = m0.max(m1) - m0.min(m1);
            if gap < self.best_gap {
                self.best_gap = gap;
                self.best.clone_from(&self.current);
            }
            return;
        }
        // Bound: the items left fill both teams exactly (the set holds two teams' worth of
        // players), so the first team gains `x`, the rating sum of some `r0` of the players
        // left, each rated between the lowest and highest party mean left; the second gains
        // the rest. No leaf below beats the smallest |s0 + x − (s1 + rest − x)| over that
        // range of `x`, over the team size. Tighter than `assign`'s, which lets `x` be
        // anything from 0 to `rest`: with ten close ratings that pruned almost nothing. The
        // margin (`bound_margin`) keeps float rounding from pruning a leaf that would have
        // tied or won.
        let rest = self.rest[i];
        let size = f64::from(team_size);
        let r0 = f64::from(team_size - self.team_players[0]);
        let r1 = f64::from(team_size - self.team_players[1]);
        let (min_mean, max_mean) = (self.rest_min_mean[i], self.rest_max_mean[i]);
        let x_lo = (r0 * min_mean).max(rest - r1 * max_mean);
        let x_hi = (r0 * max_mean).min(rest - r1 * min_mean);
        let d = s0 - s1 - rest;
        let (d_lo, d_hi) = (d + 2.0 * x_lo, d + 2.0 * x_hi);
        // How far the range of s0 − s1 at a leaf, d_lo..=d_hi, lies from 0.
        let bound = d_lo.max(-d_hi).max(0.0);
        if bound / size > self.best_gap + self.bound_margin {
            return;
        }
        let item = self.items[i];
        let fits0 = self.team_players[0] + item.n_players <= team_size;
        // Empty teams are interchangeable: the second is tried only if the first was not.
        let both_empty = self.team_players[0] == 0 && self.team_players[1] == 0;
        let fits1 = self.team_players[1] + item.n_players <= team_size && !(fits0 && both_empty);
        let fits = [fits0, fits1];
        // The lighter team first, the first team on a tie.
        let first = usize::from(s1.total_cmp(&s0).is_lt());
        for t in [first, 1 - first] {
            if fits[t] {
                self.place(i, t, team_size, Self::assign_two);
            }
        }
    }

    /// Puts item `i` in team `t`, searches on from item `i + 1` with `search_on`, and takes
    /// it out again.
    #[inline]
    fn place(&mut self, i: usize, t: usize, team_size: u32, search_on: fn(&mut Self, usize, u32)) {
        let item = self.items[i];
        // Restored, not subtracted back: a team's sum at a leaf is then the same whichever
        // branches were searched (or pruned) before.
        let sum_before = self.team_sums[t];
        self.team_players[t] += item.n_players;
        self.team_sums[t] += item.sum_mmr;
        self.current[i] = t as u16;
        search_on(self, i + 1, team_size);
        self.team_players[t] -= item.n_players;
        self.team_sums[t] = sum_before;
    }

    fn assign(&mut self, i: usize, team_size: u32) {
        if self.best_gap == 0.0 || self.budget == 0 {
            return;
        }
        self.budget -= 1;
        if i == self.items.len() {
            let size = f64::from(team_size);
            let (lo, hi) = self
                .team_sums
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| (lo.min(s / size), hi.max(s / size)));
            let gap = hi - lo;
            if gap < self.best_gap {
                self.best_gap = gap;
                self.best.clone_from(&self.current);
            }
            return;
        }
        // Bound: the heaviest team only gets heavier, and the lightest gains at most what is
        // left, so no leaf below beats (heaviest − lightest − left) / size. The margin keeps
        // float rounding from pruning a leaf that would have tied or won.
        let (lightest, heaviest) =
            self.team_sums.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        if (heaviest - lightest - self.rest[i]) / f64::from(team_size) > self.best_gap + 1e-6 {
            return;
        }
        let item = self.items[i];
        // Try the lightest teams first so the first leaf is already well balanced.
        let mut order = [0u16; crate::rules::MAX_PLAYERS_PER_MATCH];
        let n_teams = self.team_sums.len();
        let mut n_order = 0;
        let mut seen_empty = false;
        for t in 0..n_teams {
            if self.team_players[t] + item.n_players > team_size {
                continue;
            }
            // Empty teams are interchangeable: trying one is enough.
            if self.team_players[t] == 0 {
                if seen_empty {
                    continue;
                }
                seen_empty = true;
            }
            order[n_order] = t as u16;
            n_order += 1;
        }
        let sums = &self.team_sums;
        order[..n_order]
            .sort_unstable_by(|&x, &y| sums[usize::from(x)].total_cmp(&sums[usize::from(y)]).then(x.cmp(&y)));
        for &t in &order[..n_order] {
            self.place(i, usize::from(t), team_size, Self::assign);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{SplitItem, SplitSearch};

    /// Parties (size, mean rating) filling two teams of `team_size` exactly, sorted as
    /// `Pool::split_teams` sorts them. Ratings come from a coarse grid often, so equal sums
    /// (ties between splits) are common.
    fn two_teams_of_parties() -> impl Strategy<Value = (u32, Vec<SplitItem>)> {
        (1u32..=5).prop_flat_map(|team_size| {
            let mean = prop_oneof![
                4 => (0u32..40).prop_map(|k| 1450.0 + f64::from(k) * 2.5),
                4 => 0.0..3000.0f64,
                // Absurd but accepted ratings (the shard only checks them finite): the
                // bound's rounding error grows with them.
                1 => 1e11..1e13f64,
            ];
            (Just(team_size), prop::collection::vec((1..=team_size, mean), 2 * team_size as usize)).prop_map(
                |(team_size, parties)| {
                    let mut left = 2 * team_size;
                    let mut items: Vec<SplitItem> = parties
                        .into_iter()
                        .map_while(|(size, mean)| {
                            let n_players = size.min(left);
                            left -= n_players;
                            (n_players > 0).then(|| SplitItem {
                                pos: left,
                                n_players,
                                sum_mmr: mean * f64::from(n_players),
                            })
                        })
                        .collect();
                    items.sort_unstable_by(|x, y| {
                        y.n_players.cmp(&x.n_players).then(y.sum_mmr.total_cmp(&x.sum_mmr)).then(x.pos.cmp(&y.pos))
                    });
                    (team_size, items)
                },
            )
        })
    }

    proptest! {
        /// The two-team search finds the very split the general one does, tie for tie: it
        /// visits the same nodes in the same order, less the ones its bound prunes, and that
        /// bound never prunes a leaf that would win or tie. (Ten parties at most: the general
        /// search stays within its budget.)
        #[test]
        fn the_two_team_search_splits_as_the_general_one((team_size, items) in two_teams_of_parties()) {
            let mut two = SplitSearch { items: items.clone(), ..SplitSearch::default() };
            let found = two.run(2, team_size as u16);
            let mut general = SplitSearch { items, ..SplitSearch::default() };
            general.prepare(2);
            general.assign(0, team_size);
            prop_assert!(general.budget > 0);
            prop_assert_eq!(found, !general.best.is_empty());
            prop_assert_eq!(&two.best, &general.best);
            prop_assert_eq!(two.best_gap.to_bits(), general.best_gap.to_bits());
        }
    }
}
