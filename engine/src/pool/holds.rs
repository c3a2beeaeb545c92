//! Sets held for tickets that cannot match yet: look-ahead holds (the starvation guard),
//! wide parties' plans, and when younger anchors may go through them; duel patience.

use super::rows::{Entry, NONE};
use super::{MatchSink, Pool};
use crate::command::TicketId;

/// Plans for wide parties (see `plan_wide_parties`) look from when the party fits its own
/// window up to this much later, in `PLAN_STEP_MS` steps. 1.5 s and 3 s did alike over
/// the held-out runs; the shorter one holds fewer tickets.
const PLAN_BEYOND_FIT_MS: u64 = 1_500;
/// Step of a plan's look-ahead.
const PLAN_STEP_MS: u64 = 500;
/// How often plans are searched afresh; in between, the sets found are held again as they
/// are, so a runtime ticking every few milliseconds does not search every tick.
const PLAN_PERIOD_MS: u64 = 100;
/// In a dense pool (not `sparse`), a plan due within this long (the look-ahead of a party
/// that already fits its window) is kept from one planning pass to the next: its holder
/// searches only for a set it could have sooner, and holds the same set again if there is
/// none. Searched afresh at every pass, such a plan never came due: the search starts at
/// least `PLAN_STEP_MS` ahead and takes the set it finds first, so once the party fitted,
/// each pass found a set about 1.5–2 s ahead again (often another set, with younger
/// members), and the party matched only when some set happened to be valid at once. On
/// mixed traffic at 1,000/s, trio-3v3 parties that fitted their window 1–3 s after they
/// came matched a median 1.5–2.5 s after that; kept, 0.5–0.9 s (squad-5v5: 2.2–3.5 →
/// 1.3–2.5 s). Measured on the held-out sweep (BENCHMARKS.md): the p95 wait over matched
/// tickets, 1–7% above greedy's at 700–1,500/s, is 4–10% below it, and at 100–500/s up to
/// 8 points further below it (most at 300–500/s); the lead in tickets matched is about a
/// tenth smaller at 150–700/s, alike at 1,000–1,500/s. Plans due later are searched
/// afresh as before: kept too, they held young tickets for seconds for parties that fit
/// much later, and with party members rated further apart (`RALLY_QUALITY_PARTY_SD=120`)
/// the p95 wait over matched tickets rose by a seventh. Not in sparse pools, where it
/// lost runs at 40–80/s.
const PLAN_KEEP_WITHIN_MS: u64 = PLAN_STEP_MS + PLAN_BEYOND_FIT_MS;
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

/// A set held this tick for an anchor that cannot match yet (20 bytes: a burst holds one
/// for about every other ticket, and the buffer stays for the next burst).
#[derive(Clone, Debug)]
pub(super) struct Hold {
    /// The holder's position in `sorted`.
    pub(super) anchor: u32,
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
pub(super) struct Plan {
    holder: (u32, TicketId),
    /// When the set becomes valid: the time the plan looked ahead to.
    valid_at_ms: u64,
    /// A range of `Pool::plan_members`.
    members: std::ops::Range<usize>,
}

/// Sets or clears the `reserved` flag of the rows at `positions`.
pub(super) fn mark_held(entries: &mut [Entry], positions: &[u32], held: bool) {
    for &pos in positions {
        entries[pos as usize].reserved = held;
    }
}

impl Pool {
    /// Whether the duel pair in `best_chosen` should wait for a closer opponent (see
    /// `DUEL_PATIENCE_FRACTION`). Judged by the pair's older ticket, whichever searched.
    pub(super) fn waits_for_closer_opponent(&self, now_ms: u64, sink: &mut MatchSink<'_>) -> bool {
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
    pub(super) fn plan_wide_parties(&mut self, now_ms: u64, sink: &mut MatchSink<'_>) {
        if self.team_size == 1 || self.under_load() {
            self.plans.clear();
            return;
        }
        if now_ms < self.next_plan_ms {
            self.hold_plans_again(now_ms);
            return;
        }
        self.next_plan_ms = now_ms.saturating_add(PLAN_PERIOD_MS);
        let dense = !self.sparse();
        let wait_cap_ms = sink.plan_wait_cap_ms();
        if dense && wait_cap_ms.is_some() {
            self.keep_plans_due_soon(now_ms);
        } else {
            self.plans.clear();
            self.plan_members.clear();
            self.plan_index.clear();
        }
        let Some(wait_cap_ms) = wait_cap_ms else { return };
        let start_window = self.mmr_window.at(0);
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
            // Its kept plan's members are its own to search among.
            let mut kept = self.kept_plan_of(e.slot, e.id);
            if let Some(k) = kept {
                self.release_kept_plan(k);
            }
            if self.find_match(pos, now_ms, now_ms) {
                if let Some(k) = kept {
                    self.drop_plan(k);
                }
                self.take_match(now_ms, sink);
                continue;
            }
            // A kept plan already due that the search now did not find is stale.
            if let Some(k) = kept
                && self.plans[k].valid_at_ms <= now_ms
            {
                self.drop_plan(k);
                kept = None;
            }
            let first = fits_at.max(now_ms + PLAN_STEP_MS);
            // Past `now_ms + wait_cap_ms` any set's members (all here now) would wait past
            // the cap, and `hold_plan` would refuse it: not searched. With a kept plan, only
            // a set it could have sooner replaces it.
            let mut last = (first + PLAN_BEYOND_FIT_MS).min(now_ms.saturating_add(wait_cap_ms));
            if let Some(k) = kept {
                last = last.min(self.plans[k].valid_at_ms - 1);
            }
            let mut at = first;
            let mut found = false;
            let mut planned = false;
            while at <= last {
                if self.find_match(pos, at, now_ms) {
                    planned = self.hold_plan(pos, at, now_ms, wait_cap_ms);
                    found = true;
                    break;
                }
                at += PLAN_STEP_MS;
            }
            if let Some(k) = kept {
                // Its members were released to it above; nothing else held them since.
                let plan = self.plans[k].clone();
                if !planned && self.hold_plan_set(pos, &plan, now_ms) {
                    found = true;
                } else {
                    self.drop_plan(k);
                }
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
        self.plans.retain(|p| p.holder.0 != NONE);
    }

    /// At a planning pass in a dense pool: holds again the plans due within
    /// `PLAN_KEEP_WITHIN_MS` whose holder and members all still wait, drops the others, and
    /// indexes the kept ones by their holder's slot (`kept_plan_of`). Their holds are the
    /// pass's first, `holds[k]` for `plans[k]`.
    fn keep_plans_due_soon(&mut self, now_ms: u64) {
        debug_assert!(self.holds.is_empty() && self.reserved.is_empty());
        let keep_until_ms = now_ms.saturating_add(PLAN_KEEP_WITHIN_MS);
        self.plans.retain(|p| p.valid_at_ms <= keep_until_ms);
        self.hold_plans_again(now_ms);
        // Not under load (those pools have no plans), so every hold is recorded.
        debug_assert!(self.record_holds && self.holds.len() == self.plans.len());
        // The members of plans dropped stay behind in `plan_members` otherwise.
        self.plan_members_scratch.clear();
        for p in &mut self.plans {
            let start = self.plan_members_scratch.len();
            self.plan_members_scratch.extend_from_slice(&self.plan_members[p.members.clone()]);
            p.members = start..self.plan_members_scratch.len();
        }
        std::mem::swap(&mut self.plan_members, &mut self.plan_members_scratch);
        self.plan_index.clear();
        self.plan_index.extend(self.plans.iter().enumerate().map(|(k, p)| (p.holder.0, k as u32)));
        self.plan_index.sort_unstable();
    }

    /// The index in `plans` of the kept plan of the ticket `id` in `slot`, if any.
    fn kept_plan_of(&self, slot: u32, id: TicketId) -> Option<usize> {
        let i = self.plan_index.binary_search_by_key(&slot, |&(s, _)| s).ok()?;
        let k = self.plan_index[i].1 as usize;
        (self.plans[k].holder == (slot, id)).then_some(k)
    }

    /// Unholds the members of kept plan `plans[k]` while its holder searches (`hold_plan_set`
    /// holds them again): `holds[k]` is its hold (`keep_plans_due_soon`), released as
    /// `take_through_plans` releases a plan's hold.
    fn release_kept_plan(&mut self, k: usize) {
        let Some(hold) = self.holds.get_mut(k) else { return };
        hold.released = true;
        let members = hold.members();
        mark_held(&mut self.sorted.entries, &self.reserved[members], false);
    }

    /// Marks `plans[k]` for removal at the end of the planning pass.
    fn drop_plan(&mut self, k: usize) {
        self.plans[k].holder.0 = NONE;
    }

    /// Holds `best_chosen`, the set the wide party at `sorted[holder]` can have at
    /// `valid_at_ms`, unless that would hold a ticket past `wait_cap_ms`, and keeps it as a
    /// plan. Returns whether it did.
    fn hold_plan(&mut self, holder: usize, valid_at_ms: u64, now_ms: u64, wait_cap_ms: u64) -> bool {
        let members = self.best_chosen.iter().filter(|&&m| m as usize != holder);
        let oldest_ms = members.clone().map(|&m| self.sorted.entries[m as usize].enqueued_at_ms).min();
        if oldest_ms.is_none_or(|oldest| valid_at_ms.saturating_sub(oldest) > wait_cap_ms) {
            return false;
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
        true
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
            if !members.iter().all(|&(slot, id)| self.holds(slot, id)) || !self.hold_plan_set(holder, &plan, now_ms) {
                continue;
            }
            self.plans[kept] = plan;
            kept += 1;
        }
        self.plans.truncate(kept);
    }

    /// Holds the members of `plan` (all still waiting) for its holder at `sorted[holder]`,
    /// unless one of them is held or taken already this tick.
    fn hold_plan_set(&mut self, holder: usize, plan: &Plan, now_ms: u64) -> bool {
        self.look_ahead_set.clear();
        for &(slot, _) in &self.plan_members[plan.members.clone()] {
            let pos = self.slots[slot as usize].pos;
            let e = &self.sorted.entries[pos as usize];
            if e.reserved || e.taken {
                return false;
            }
            self.look_ahead_set.push(pos);
        }
        self.hold_look_ahead_set(holder, plan.valid_at_ms.saturating_sub(now_ms), true);
        self.sorted.entries[holder].planning = true;
        true
    }

    /// Reserves `look_ahead_set` for the anchor at `sorted[anchor]` for the rest of the tick.
    pub(super) fn hold_look_ahead_set(&mut self, anchor: usize, horizon_ms: u64, plan: bool) {
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
    pub(super) fn take_from_hold(&mut self, anchor: usize, now_ms: u64) -> bool {
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
    pub(super) fn take_through_plans(&mut self, anchor: usize, now_ms: u64) -> bool {
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
    pub(super) fn find_match_through_holds(&mut self, anchor: usize, now_ms: u64) -> bool {
        self.ignore_holds = true;
        let found = self.find_match(anchor, now_ms, now_ms);
        self.ignore_holds = false;
        found
    }
}
