//! The search from one anchor: nearest neighbours that accept it, the tightest run of
//! solos, the subset search over parties, and the team split.

use super::Pool;
use super::rows::Walk;

/// How many sorted neighbours an anchor looks at, at most, per match slot to fill.
const SCAN_PER_PLAYER: usize = 48;
/// Most neighbours an anchor looks at in total.
const SCAN_CAP: usize = 1024;
/// Most candidates the subset search considers.
const MAX_CANDIDATES: usize = 40;
/// Extra neighbours a solo-mode anchor collects, so it can pick the tightest run.
const SOLO_SLACK: usize = 4;
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
/// Most solos `solo_in_reach` looks at before it leaves the answer to the full search.
/// Where solos are near but refused (their windows too narrow, or no datacenter in
/// common), the look is pure overhead. Measured on the 240k-ticket replays of `gen.py`'s
/// shapes (BENCHMARKS.md): with `scan_limit` (up to 480) `bimodal_missing` took 0.5 s
/// longer, its looks finding no solo to rule out in 63,830 of 72,007; 96 keeps most of the
/// gain on `uniform_home` (48 gave back a third of it) and costs `junk_mix` about 3% and
/// `bimodal_missing` about 8%.
const SOLO_SCAN: usize = 2 * SCAN_PER_PLAYER;
/// Node budget of the team-split search per candidate set.
const SPLIT_BUDGET: u32 = 4_000;

/// A ticket's contribution to a candidate set, precomputed once per anchor.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Candidate {
    pos: u32,
    min_mmr: f64,
    max_mmr: f64,
    window: f64,
    dc_mask: u32,
    n_players: u8,
}

impl Pool {
    /// `sorted[pos]` as a candidate for anchor `a`, if the two accept each other. The RTT
    /// row (a likely cache miss) is read only once the ratings fit. Always inlined: with a
    /// second caller (`solo_in_reach`) the compiler made it a call, and the neighbour scan
    /// paid for one per neighbour.
    #[inline(always)]
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

    pub(super) fn candidate(&mut self, pos: usize, now_ms: u64) -> Candidate {
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
    pub(super) fn find_match(&mut self, anchor: usize, now_ms: u64, tick_ms: u64) -> bool {
        self.search_met_hold = false;
        self.searches += 1;
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
        let mut scanned = 0usize;
        // The earliest time a later search could find what this one did not: when a
        // rejected neighbour becomes compatible, or the window reaches the next one out.
        // What it cannot reason about (a search that ran out of budget or found no set
        // among compatible candidates) is retried next tick — or, on a big pool, after
        // `research_delay_ms` even if a neighbour becomes compatible sooner: under load,
        // a failed anchor waits its turn (others still pick it, new tickets still find it).
        // With ticks faster than `RESEARCH_EVERY_MS`, not before `research_floor_ms` either.
        let research_at = self.research_at(tick_ms).max(tick_ms + self.research_floor_ms);
        if self.needs_solo(&a) && !self.solo_in_reach(&a, anchor, now_ms) {
            debug_assert!(self.search_fails_past_solo_check(anchor, now_ms, tick_ms), "no solo in reach, yet a set");
            // Searched again as after a search that ran out of scan (under load, all these
            // searches did): the pace of re-searches, and so the matches, stay as they
            // were. Sleeping until a refused solo could accept it saved more searches
            // (1.69 → 1.26 million on `uniform_home`), but changed which matches form: a
            // new solo whose own capped search missed the anchor no longer met it.
            self.retry_at_ms = research_at;
            return false;
        }
        self.retry_at_ms = u64::MAX;
        // Refused neighbours since the last time `retry_at_ms` was set outright; their
        // times are folded in only if the search fails.
        self.refused.clear();
        // The next untaken entry on each side (links only change when a match is taken).
        let mut walk = Walk::around(&mut self.skips, anchor, self.sorted.len());
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
                let (l, r) = walk.in_reach(&self.sorted.entries, lo_bound, hi_bound);
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
                let Some(pos) = walk.step(&mut self.skips, &self.sorted.entries, (l, r), a.min_mmr) else {
                    exhausted = true;
                    let anchor_at = self.sorted.entries[anchor].enqueued_at_ms;
                    // Lower bounds on the spread with anything at or beyond the next entry
                    // out: `sorted` is ordered by lowest rating only, so a wide party there
                    // may hide a close solo behind it.
                    let left_gap = walk.left.map(|p| a.max_mmr - self.sorted.entries[p].min_mmr);
                    let right_gap = walk.right.map(|p| a.max_mmr.max(self.sorted.entries[p].min_mmr) - a.min_mmr);
                    for gap in [left_gap, right_gap].into_iter().flatten() {
                        self.retry_at_ms = self.retry_at_ms.min(self.mmr_window.reached_at(anchor_at, gap));
                    }
                    break;
                };
                scanned += 1;
                self.neighbours_scanned += 1;
                if self.held_from_search(pos) {
                    // Free again after its holder.
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

    /// Whether `sorted[pos]` is held this tick for an older anchor, so the search in
    /// progress may not take it (unless it searches as if nothing were held, see
    /// `take_from_hold`).
    #[inline(always)]
    fn held_from_search(&self, pos: usize) -> bool {
        self.sorted.entries[pos].reserved && !self.ignore_holds
    }

    /// Under load, in a team mode: whether only a solo can fill the anchor's team (it is
    /// one player short) and it has searched before. In a big party pool most failed
    /// searches were such anchors (of the 240k-ticket replay of `gen.py`'s `uniform_home`
    /// shape, 1.26 of 1.50 million): the solos near them had matched long before, and each
    /// search scanned some 200 parties to learn it. New anchors, as in a burst, mostly
    /// match: for them the look would only add to the search.
    fn needs_solo(&self, a: &Candidate) -> bool {
        self.team_size > 1
            && self.under_load()
            && u16::from(a.n_players) + 1 == self.team_size
            && self.sorted.entries[a.pos as usize].retry_at_ms != 0
            && !self.solo_check_off
    }

    /// Debug builds: whether the full search from `anchor` finds nothing either, once
    /// `solo_in_reach` has said no set can hold it. What a failed search leaves behind is
    /// put back as the solo check left it.
    fn search_fails_past_solo_check(&mut self, anchor: usize, now_ms: u64, tick_ms: u64) -> bool {
        let (retry_at_ms, searches, scanned, met_hold) =
            (self.retry_at_ms, self.searches, self.neighbours_scanned, self.search_met_hold);
        self.solo_check_off = true;
        let found = self.find_match(anchor, now_ms, tick_ms);
        self.solo_check_off = false;
        (self.retry_at_ms, self.searches, self.neighbours_scanned, self.search_met_hold) =
            (retry_at_ms, searches, scanned, met_hold);
        !found
    }

    /// For an anchor only a solo can complete (`needs_solo`): whether some untaken solo
    /// within its window may accept it and be accepted. When none can, no set holds the
    /// anchor now (every member of a valid set accepts every other), and the search fails
    /// at once. A held solo, or more than `SOLO_SCAN` solos in reach, answer yes: the full
    /// search decides.
    fn solo_in_reach(&mut self, a: &Candidate, anchor: usize, now_ms: u64) -> bool {
        if !self.solo_skips_ready {
            self.solo_skips.reset(self.sorted.len());
            for (pos, e) in self.sorted.entries.iter().enumerate() {
                if e.taken || e.n_players != 1 {
                    self.solo_skips.take(pos);
                }
            }
            self.solo_skips_ready = true;
        }
        let (lo_bound, hi_bound) = (a.max_mmr - a.window, a.min_mmr + a.window);
        // The anchor is no solo here, or (teams of two) the walk starts beside it.
        let mut walk = Walk::around(&mut self.solo_skips, anchor, self.sorted.len());
        for _ in 0..SOLO_SCAN {
            let reach = walk.in_reach(&self.sorted.entries, lo_bound, hi_bound);
            let Some(pos) = walk.step(&mut self.solo_skips, &self.sorted.entries, reach, a.min_mmr) else {
                return false;
            };
            self.neighbours_scanned += 1;
            if self.held_from_search(pos) || self.candidate_for(a, pos, now_ms).is_some() {
                return true;
            }
        }
        true
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
    pub(super) fn best_chosen_accepted_at(&mut self, now_ms: u64) -> Option<u32> {
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
    pub(super) fn split_teams(&mut self) -> bool {
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
}

/// For `Pool::sizes_can_fill_teams`, by party size `k`: the bits of the (first team,
/// second team) fills whose first team, or second, has room for `k` more players. Built
/// once per pool: building them per candidate was a third of the tick on a pool of parties
/// that cannot complete each other (BENCHMARKS.md).
#[derive(Clone)]
pub(super) struct TeamFillRooms {
    first: [u128; 11],
    second: [u128; 11],
}

impl TeamFillRooms {
    /// Two teams of at most 10 only: the fills of a larger mode do not fit a `u128`.
    pub(super) fn new(teams: u16, team_size: u16) -> Option<Self> {
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
pub(super) struct SubsetState {
    lo: f64,
    hi: f64,
    window: f64,
    dc_mask: u32,
    players: u32,
    /// Bit k: some of the chosen parties sum to exactly k players (two-team modes).
    sums: u128,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct SplitItem {
    pos: u32,
    n_players: u32,
    sum_mmr: f64,
}

/// Branch and bound over team assignments; buffers reused across calls.
#[derive(Clone, Default)]
pub(super) struct SplitSearch {
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
