//! Storage of a pool's tickets: stable slots, the rows the matcher reads in MMR order,
//! the anchors' visiting order, and skip links over taken rows.

use crate::command::{PlayerId, TicketId};

pub(super) const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotState {
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
pub(super) struct Slot {
    /// Bumped on every reuse, so stale `age` entries are recognised.
    pub(super) generation: u32,
    /// Row in `sorted` or `pending`, by `state`.
    pub(super) pos: u32,
    pub(super) state: SlotState,
}

/// What the matcher reads of a ticket, kept in MMR order (56 bytes). Its RTT and player
/// rows sit at the same index of `Rows`, so a ticket is read from one place.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub(super) min_mmr: f64,
    pub(super) max_mmr: f64,
    pub(super) sum_mmr: f64,
    pub(super) enqueued_at_ms: u64,
    /// Before this time no search from this anchor can succeed (see `find_match`); it is
    /// not searched from until then. New tickets nearby still find it from their side.
    pub(super) retry_at_ms: u64,
    pub(super) id: TicketId,
    pub(super) slot: u32,
    pub(super) n_players: u8,
    /// Matched or cancelled; dropped (and its slot freed) at the next compaction.
    pub(super) taken: bool,
    /// Held this tick for an older ticket that cannot match yet; younger anchors skip it.
    pub(super) reserved: bool,
    /// Holds a plan this tick (see `plan_wide_parties`): the plans' pass searches for it,
    /// the anchor loop passes it by.
    pub(super) planning: bool,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 56);

impl Entry {
    pub(super) fn key_cmp(&self, other: &Entry) -> std::cmp::Ordering {
        self.min_mmr
            .total_cmp(&other.min_mmr)
            .then(self.enqueued_at_ms.cmp(&other.enqueued_at_ms))
            // Slots are handed out deterministically, so this last tie-break is too.
            .then(self.slot.cmp(&other.slot))
    }

    /// Anchor order: oldest first; tickets enqueued in the same millisecond in rating order,
    /// which is also their order in memory, so a burst is swept front to back.
    pub(super) fn age_cmp(&self, other: &Entry) -> std::cmp::Ordering {
        self.enqueued_at_ms.cmp(&other.enqueued_at_ms).then_with(|| self.key_cmp(other))
    }
}

/// Entries with their fixed-stride rows (worst RTT per local datacenter, player ids) in
/// parallel vectors: moving an entry moves its rows, and reading a ticket touches memory at
/// one index, which is what keeps a tick's sweep sequential.
#[derive(Clone)]
pub(super) struct Rows {
    pub(super) entries: Vec<Entry>,
    pub(super) rtt: Vec<f64>,
    pub(super) players: Vec<PlayerId>,
    pub(super) n_dc: usize,
    pub(super) stride: usize,
}

impl Rows {
    pub(super) fn new(n_dc: usize, stride: usize) -> Self {
        Rows { entries: Vec::new(), rtt: Vec::new(), players: Vec::new(), n_dc, stride }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn push(&mut self, entry: Entry, rtt: &[f64], players: &[PlayerId]) {
        debug_assert_eq!(rtt.len(), self.n_dc);
        self.entries.push(entry);
        self.rtt.extend_from_slice(rtt);
        let at = self.players.len();
        self.players.resize(at + self.stride, PlayerId(0));
        self.players[at..][..players.len()].copy_from_slice(players);
    }

    /// Indexes of the rows not taken.
    pub(super) fn waiting(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|&i| !self.entries[i].taken)
    }

    #[inline]
    pub(super) fn rtt(&self, i: usize) -> &[f64] {
        &self.rtt[i * self.n_dc..][..self.n_dc]
    }

    pub(super) fn players(&self, i: usize) -> &[PlayerId] {
        &self.players[i * self.stride..][..usize::from(self.entries[i].n_players)]
    }

    /// Row `src` of `from` overwrites row `dst` of `self`.
    pub(super) fn copy_row(&mut self, dst: usize, from: &Rows, src: usize) {
        self.entries[dst] = from.entries[src];
        self.rtt[dst * self.n_dc..][..self.n_dc].copy_from_slice(from.rtt(src));
        self.players[dst * self.stride..][..self.stride]
            .copy_from_slice(&from.players[src * self.stride..][..self.stride]);
    }

    /// Rows `src` move to start at `dst` (ranges may overlap): one bulk copy per vector,
    /// which is what keeps compaction and merging cheap when rows move by the thousand.
    pub(super) fn move_rows(&mut self, src: std::ops::Range<usize>, dst: usize) {
        let (n_dc, stride) = (self.n_dc, self.stride);
        self.entries.copy_within(src.clone(), dst);
        self.rtt.copy_within(src.start * n_dc..src.end * n_dc, dst * n_dc);
        self.players.copy_within(src.start * stride..src.end * stride, dst * stride);
    }

    pub(super) fn resize(&mut self, len: usize, filler: Entry) {
        self.entries.resize(len, filler);
        self.rtt.resize(len * self.n_dc, f64::INFINITY);
        self.players.resize(len * self.stride, PlayerId(0));
    }

    pub(super) fn truncate(&mut self, len: usize) {
        self.entries.truncate(len);
        self.rtt.truncate(len * self.n_dc);
        self.players.truncate(len * self.stride);
    }

    /// Removes row `i`, moving the last row into its place.
    pub(super) fn swap_remove(&mut self, i: usize) {
        let last = self.len() - 1;
        if i != last {
            self.move_rows(last..last + 1, i);
        }
        self.truncate(last);
    }

    pub(super) fn clear(&mut self) {
        self.truncate(0);
    }

    pub(super) fn shrink_to(&mut self, len: usize) {
        self.entries.shrink_to(len);
        self.rtt.shrink_to(len * self.n_dc);
        self.players.shrink_to(len * self.stride);
    }

    pub(super) fn capacity_bytes(&self) -> usize {
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
pub(super) struct Aged {
    pub(super) slot: u32,
    pub(super) generation: u32,
    pub(super) pos: u32,
    /// The row's `retry_at_ms` as ms after `Pool::age_epoch_ms`: rounded down and
    /// saturating, and 0 for a time before the epoch. So `epoch + retry` is never later than
    /// the row's time or the epoch, whichever is later — unless `Pool::age_retry_stale`.
    pub(super) retry: u32,
}

/// Jumps over the entries of `sorted` taken during a tick (union–find with path halving),
/// so an anchor late in a dense, mostly matched neighbourhood does not wade through them.
#[derive(Clone, Default)]
pub(super) struct Skips {
    /// Per position `i` (0..=len), the two jump links side by side, so the anchor's first
    /// step either way touches one cache line:
    /// - `[i].0` leads to the first untaken position ≥ `i`; `[len].0 = len` ends it;
    /// - `[j].1`, shifted by one, leads to `k` where `k - 1` is the last untaken position
    ///   < `j`; `[0].1 = 0` means none.
    pub(super) links: Vec<(u32, u32)>,
}

impl Skips {
    pub(super) fn reset(&mut self, len: usize) {
        self.links.clear();
        self.links.extend((0..=len as u32).map(|i| (i, i)));
    }

    pub(super) fn take(&mut self, pos: usize) {
        self.links[pos].0 = pos as u32 + 1;
        self.links[pos + 1].1 = pos as u32;
    }

    /// The first untaken position ≥ `i` (`len` if none).
    pub(super) fn next_right(&mut self, mut i: usize) -> usize {
        while self.links[i].0 as usize != i {
            let next = self.links[i].0 as usize;
            self.links[i].0 = self.links[next].0;
            i = next;
        }
        i
    }

    /// The last untaken position < `i`.
    pub(super) fn next_left(&mut self, i: usize) -> Option<usize> {
        let mut j = i;
        while self.links[j].1 as usize != j {
            let next = self.links[j].1 as usize;
            self.links[j].1 = self.links[next].1;
            j = next;
        }
        j.checked_sub(1)
    }
}

/// A walk outward from an anchor over the entries of `sorted` a `Skips` has not taken,
/// nearest lowest rating first: the next such entry on each side. The neighbour scan walks
/// the pool's `skips`; `solo_in_reach` walks skip links over the solos alone. Its steps
/// are always inlined: the scan takes one per neighbour, and as calls they made the
/// 1,000/s replay 7% slower.
#[derive(Clone, Copy, Debug)]
pub(super) struct Walk {
    /// The next entry below the last one visited on the left, if any.
    pub(super) left: Option<usize>,
    /// The next entry above the last one visited on the right, if any.
    pub(super) right: Option<usize>,
}

impl Walk {
    /// A walk from `anchor` (itself not visited) over `len` entries.
    pub(super) fn around(skips: &mut Skips, anchor: usize, len: usize) -> Walk {
        Walk { left: skips.next_left(anchor), right: Some(skips.next_right(anchor + 1)).filter(|&p| p < len) }
    }

    /// The next entry on each side if its lowest rating lies within `lo..=hi`.
    #[inline(always)]
    pub(super) fn in_reach(&self, entries: &[Entry], lo: f64, hi: f64) -> (Option<usize>, Option<usize>) {
        (self.left.filter(|&p| entries[p].min_mmr >= lo), self.right.filter(|&p| entries[p].min_mmr <= hi))
    }

    /// Of the entries `in_reach` gave, the one whose lowest rating is nearer `center` (the
    /// left one on a tie), and moves past it; `None` when neither side is in reach.
    #[inline(always)]
    pub(super) fn step(
        &mut self,
        skips: &mut Skips,
        entries: &[Entry],
        (l, r): (Option<usize>, Option<usize>),
        center: f64,
    ) -> Option<usize> {
        match (l, r) {
            (Some(lp), Some(rp)) if entries[rp].min_mmr - center < center - entries[lp].min_mmr => {
                Some(self.past_right(skips, entries.len(), rp))
            }
            (Some(lp), _) => {
                self.left = skips.next_left(lp);
                Some(lp)
            }
            (None, Some(rp)) => Some(self.past_right(skips, entries.len(), rp)),
            (None, None) => None,
        }
    }

    /// Moves the right side past `rp`; returns it.
    #[inline(always)]
    fn past_right(&mut self, skips: &mut Skips, len: usize, rp: usize) -> usize {
        self.right = Some(skips.next_right(rp + 1)).filter(|&p| p < len);
        rp
    }
}
