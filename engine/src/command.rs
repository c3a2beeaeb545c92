//! What goes into a shard (commands) and what comes out (events).
//!
//! Everything here is owned, plain data with integer ids, so the same values can cross a
//! thread mailbox today and a NATS subject later (the outer crates pick the encoding).

use smallvec::SmallVec;

use crate::rules::{DatacenterId, ModeId};

/// A ticket's id, chosen by the caller (the edge, the admin API, or `rally replay`, which
/// interns the string ids of its input). Ids are never reused: a shard refuses one it has
/// already seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketId(pub u64);

/// A player's id, chosen by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlayerId(pub u64);

/// A match's id: the forming shard's index in the top 16 bits, a per-shard sequence below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatchId(pub u64);

/// One player of a ticket, as the server side knows them.
#[derive(Clone, Debug, PartialEq)]
pub struct PlayerEntry {
    /// Who.
    pub id: PlayerId,
    /// Their rating (server-side truth, never the client's word).
    pub mmr: f64,
    /// Measured round-trip time to datacenters, in ms. Datacenters the player has no entry
    /// for are ones they will not be placed in.
    pub rtt_ms: Vec<(DatacenterId, f64)>,
}

/// A request to wait for a match: one player or a party that must share a team.
#[derive(Clone, Debug, PartialEq)]
pub struct TicketRequest {
    /// Caller-chosen, never reused.
    pub id: TicketId,
    /// The mode to match in.
    pub mode: ModeId,
    /// 1..=team_size players.
    pub players: Vec<PlayerEntry>,
    /// Wait already served, ms: a ticket sent back to the queue (its match fell through)
    /// counts as enqueued this long before now, so its MMR and RTT windows are as wide
    /// as they had grown and its reported wait includes the earlier one. (It is still
    /// considered after the tickets already waiting.) 0 for a new ticket.
    pub waited_ms: u64,
}

/// A command for a shard.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Start waiting.
    Enqueue(TicketRequest),
    /// Stop waiting, if still waiting.
    Cancel(TicketId),
}

/// Why a ticket was refused: the client's fault, never backpressure (that is the runtime's
/// `SubmitError`). Retrying the same ticket fails the same way, except
/// `PlayerAlreadyWaiting`, which clears when the player's other ticket ends, and
/// `DuplicateTicket`, which clears once the shard forgets the id (`remember_ids_ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Rejection {
    /// The mode does not exist.
    #[error("unknown mode")]
    UnknownMode,
    /// The ticket holds no players.
    #[error("ticket has no players")]
    Empty,
    /// More players than fit on one team.
    #[error("party larger than the mode's team size")]
    PartyTooLarge,
    /// The same player twice in one ticket.
    #[error("player listed twice in the ticket")]
    DuplicatePlayer,
    /// A player is already waiting in another ticket.
    #[error("player already waiting in another ticket")]
    PlayerAlreadyWaiting,
    /// The ticket id was used before.
    #[error("ticket id used before")]
    DuplicateTicket,
    /// An MMR or RTT is NaN, infinite or negative.
    #[error("mmr or rtt is not a finite, non-negative number")]
    BadNumber,
    /// No datacenter the shard serves has an RTT from every player of the ticket.
    #[error("no known datacenter in the rtt map")]
    NoKnownDatacenter,
}

impl Rejection {
    /// Every reason, for tables and counters.
    pub const ALL: [Rejection; 8] = [
        Rejection::UnknownMode,
        Rejection::Empty,
        Rejection::PartyTooLarge,
        Rejection::DuplicatePlayer,
        Rejection::PlayerAlreadyWaiting,
        Rejection::DuplicateTicket,
        Rejection::BadNumber,
        Rejection::NoKnownDatacenter,
    ];

    /// A stable snake_case name for logs, metrics and summaries.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::UnknownMode => "unknown_mode",
            Rejection::Empty => "empty_ticket",
            Rejection::PartyTooLarge => "party_too_large",
            Rejection::DuplicatePlayer => "duplicate_player_in_ticket",
            Rejection::PlayerAlreadyWaiting => "player_already_waiting",
            Rejection::DuplicateTicket => "ticket_id_used_before",
            Rejection::BadNumber => "bad_number",
            Rejection::NoKnownDatacenter => "no_known_datacenter",
        }
    }
}

/// A ticket placed in a match.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchedTicket {
    /// Which ticket.
    pub id: TicketId,
    /// The team it plays on (index into the match's teams).
    pub team: u16,
    /// Where its players start in [`Match::players`].
    pub first_player: u16,
    /// How many players it brings.
    pub n_players: u16,
    /// How long it waited, ms (formation time − enqueue time).
    pub wait_ms: u64,
}

/// A formed match with its quality figures.
///
/// Tickets are stored flat, ordered by team, and players flat beside them: a duel's two
/// of each fit inline, so forming one allocates nothing, and a bigger match costs two
/// allocations however many tickets it holds. In a burst of duels the two allocations were
/// a fifth of the tick (BENCHMARKS.md); the price is 32 more bytes per event.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    /// Unique across shards.
    pub id: MatchId,
    /// The mode.
    pub mode: ModeId,
    /// Where it is played.
    pub datacenter: DatacenterId,
    /// The tick time it formed at.
    pub formed_at_ms: u64,
    /// Number of teams.
    pub n_teams: u16,
    /// Every ticket, ordered by team. Each ticket's players share its team.
    pub tickets: SmallVec<[MatchedTicket; 2]>,
    /// Every player, grouped by ticket in `tickets` order.
    pub players: SmallVec<[PlayerId; 2]>,
    /// max − min MMR over all players.
    pub mmr_spread: f64,
    /// max − min of the teams' mean MMR.
    pub team_imbalance: f64,
    /// The worst player RTT to the chosen datacenter, ms.
    pub worst_rtt_ms: f64,
}

impl Match {
    /// The tickets of each team, in team order.
    pub fn teams(&self) -> impl Iterator<Item = &[MatchedTicket]> + '_ {
        let mut rest = self.tickets.as_slice();
        (0..self.n_teams).map(move |team| {
            let n = rest.iter().take_while(|t| t.team == team).count();
            let (this, next) = rest.split_at(n);
            rest = next;
            this
        })
    }

    /// The players a ticket of this match brings.
    pub fn players_of(&self, ticket: &MatchedTicket) -> &[PlayerId] {
        let start = usize::from(ticket.first_player);
        &self.players[start..start + usize::from(ticket.n_players)]
    }
}

/// Something a shard reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The ticket is waiting.
    Enqueued(TicketId),
    /// The ticket was refused; nothing of it was kept.
    Rejected {
        /// Which ticket.
        ticket: TicketId,
        /// Why.
        reason: Rejection,
    },
    /// The ticket was waiting and has been removed.
    Cancelled(TicketId),
    /// A cancel for a ticket that was not waiting (already matched, cancelled, or unknown).
    NotWaiting(TicketId),
    /// A match formed.
    Matched(Match),
}
