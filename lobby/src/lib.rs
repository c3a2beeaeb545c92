//! Parties: players who queue together, as one ticket on one team.
//!
//! A party has a mode (which caps its size at the mode's team size), a leader and
//! members. Members mark themselves ready with their measured RTTs; only the leader
//! queues, and only when everyone is ready. A leader who leaves hands the party to the
//! longest-standing member; the last one out disbands it. A member leaving or dropping
//! while the party is queued cancels its ticket. Every change yields [`PartyEvent`]s for
//! the other members.
//!
//! [`Parties`] is sans-IO: no clock, sockets or threads. Ticket ids come from the caller,
//! which submits the tickets to the engine and reports back what became of them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::future::Future;

/// A party's id.
pub type PartyId = u64;

/// One member.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The player.
    pub player: u64,
    /// Ready to queue.
    pub ready: bool,
    /// RTT per datacenter name, measured by the player's client, given when readying.
    pub rtt_ms: Vec<(String, f64)>,
    /// Live push connections (WebSocket) the member has open.
    pub connections: u32,
}

/// Where a party is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartyState {
    /// Not queued.
    Idle,
    /// Its ticket is with the engine.
    Queued {
        /// The ticket.
        ticket: u64,
    },
}

/// A party.
#[derive(Clone, Debug, PartialEq)]
pub struct Party {
    /// Its id.
    pub id: PartyId,
    /// The mode it queues for.
    pub mode: String,
    /// Most members (the mode's team size).
    pub capacity: usize,
    /// Who leads: the only one who may queue.
    pub leader: u64,
    /// Members in the order they joined (the leader among them).
    pub members: Vec<Member>,
    /// Queued or not.
    pub state: PartyState,
}

impl Party {
    fn member_mut(&mut self, player: u64) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.player == player)
    }

    /// Whether `player` is a member.
    pub fn has(&self, player: u64) -> bool {
        self.members.iter().any(|m| m.player == player)
    }
}

/// What the other members are told.
#[derive(Clone, Debug, PartialEq)]
pub enum PartyEvent {
    /// Someone joined.
    MemberJoined {
        /// Who.
        player: u64,
    },
    /// Someone left.
    MemberLeft {
        /// Who.
        player: u64,
    },
    /// The party has a new leader.
    LeaderChanged {
        /// Who.
        player: u64,
    },
    /// A member readied or unreadied.
    Ready {
        /// Who.
        player: u64,
        /// Now ready or not.
        ready: bool,
    },
    /// The party's ticket is in the queue.
    Queued {
        /// The ticket.
        ticket: u64,
    },
    /// The party left the queue.
    Dequeued {
        /// Why: `leader_cancelled`, `member_left`, `member_dropped`, `member_unready`,
        /// `rejected`, `engine_timeout`.
        reason: &'static str,
    },
    /// The party's ticket was matched.
    MatchFound {
        /// The match.
        match_id: u64,
    },
    /// The last member left.
    Disbanded,
}

/// Why a party operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LobbyError {
    /// No such party.
    #[error("no such party")]
    UnknownParty,
    /// The caller is not a member.
    #[error("you are not a member of this party")]
    NotMember,
    /// The caller is in a party already (this one or another).
    #[error("you are in a party already; leave it first")]
    AlreadyInParty,
    /// The party has as many members as the mode's team size.
    #[error("the party is full")]
    PartyFull,
    /// Only the leader may do this.
    #[error("only the party leader may do this")]
    NotLeader,
    /// Someone is not ready.
    #[error("every member must be ready first")]
    NotAllReady,
    /// The party is queued; this needs it idle.
    #[error("the party is queued; leave the queue first")]
    Queued,
    /// The party is not queued.
    #[error("the party is not queued")]
    NotQueued,
    /// Readying needs the player's RTTs.
    #[error("readying needs your measured rtt_ms to at least one datacenter")]
    RttMissing,
}

/// What a change did: the events for the party's members, and a ticket to cancel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Events, in order.
    pub events: Vec<PartyEvent>,
    /// A queued ticket the engine must drop.
    pub cancel: Option<u64>,
}

/// Every party.
#[derive(Default)]
pub struct Parties {
    parties: HashMap<PartyId, Party>,
    by_player: HashMap<u64, PartyId>,
    by_ticket: HashMap<u64, PartyId>,
    next_id: PartyId,
}

impl Parties {
    /// No parties.
    pub fn new() -> Parties {
        Parties { next_id: 1, ..Parties::default() }
    }

    /// A party, by id.
    pub fn get(&self, id: PartyId) -> Option<&Party> {
        self.parties.get(&id)
    }

    /// The party `player` is in.
    pub fn party_of(&self, player: u64) -> Option<&Party> {
        self.by_player.get(&player).and_then(|id| self.parties.get(id))
    }

    /// The party that owns a queued ticket.
    pub fn party_of_ticket(&self, ticket: u64) -> Option<&Party> {
        self.by_ticket.get(&ticket).and_then(|id| self.parties.get(id))
    }

    /// Number of parties.
    pub fn len(&self) -> usize {
        self.parties.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.parties.is_empty()
    }

    /// `leader` starts a party for `mode`, of at most `capacity` members.
    pub fn create(&mut self, leader: u64, mode: &str, capacity: usize) -> Result<&Party, LobbyError> {
        if self.by_player.contains_key(&leader) {
            return Err(LobbyError::AlreadyInParty);
        }
        let id = self.next_id;
        self.next_id += 1;
        let member = Member { player: leader, ready: false, rtt_ms: Vec::new(), connections: 0 };
        let party = Party {
            id,
            mode: mode.to_owned(),
            capacity: capacity.max(1),
            leader,
            members: vec![member],
            state: PartyState::Idle,
        };
        self.by_player.insert(leader, id);
        Ok(self.parties.entry(id).or_insert(party))
    }

    /// `player` joins party `id`.
    pub fn join(&mut self, id: PartyId, player: u64) -> Result<Outcome, LobbyError> {
        let party = self.parties.get_mut(&id).ok_or(LobbyError::UnknownParty)?;
        if self.by_player.contains_key(&player) {
            return Err(LobbyError::AlreadyInParty);
        }
        if party.state != PartyState::Idle {
            return Err(LobbyError::Queued);
        }
        if party.members.len() >= party.capacity {
            return Err(LobbyError::PartyFull);
        }
        party.members.push(Member { player, ready: false, rtt_ms: Vec::new(), connections: 0 });
        self.by_player.insert(player, id);
        Ok(Outcome { events: vec![PartyEvent::MemberJoined { player }], cancel: None })
    }

    /// `player` leaves party `id`: a queued ticket is cancelled, a leaving leader hands
    /// over, the last one out disbands the party.
    pub fn leave(&mut self, id: PartyId, player: u64) -> Result<Outcome, LobbyError> {
        let party = self.parties.get_mut(&id).ok_or(LobbyError::UnknownParty)?;
        if !party.has(player) {
            return Err(LobbyError::NotMember);
        }
        let mut outcome = Outcome::default();
        if let PartyState::Queued { ticket } = party.state {
            party.state = PartyState::Idle;
            self.by_ticket.remove(&ticket);
            outcome.cancel = Some(ticket);
            outcome.events.push(PartyEvent::Dequeued { reason: "member_left" });
        }
        party.members.retain(|m| m.player != player);
        self.by_player.remove(&player);
        outcome.events.push(PartyEvent::MemberLeft { player });
        match party.members.first() {
            None => {
                self.parties.remove(&id);
                outcome.events.push(PartyEvent::Disbanded);
            }
            Some(next) if party.leader == player => {
                party.leader = next.player;
                outcome.events.push(PartyEvent::LeaderChanged { player: next.player });
            }
            Some(_) => {}
        }
        Ok(outcome)
    }

    /// `player` readies (with their RTTs) or unreadies. Unreadying a queued party takes
    /// it out of the queue.
    pub fn ready(
        &mut self,
        id: PartyId,
        player: u64,
        ready: bool,
        rtt_ms: Vec<(String, f64)>,
    ) -> Result<Outcome, LobbyError> {
        let party = self.parties.get_mut(&id).ok_or(LobbyError::UnknownParty)?;
        let member = party.member_mut(player).ok_or(LobbyError::NotMember)?;
        if ready && rtt_ms.is_empty() && member.rtt_ms.is_empty() {
            return Err(LobbyError::RttMissing);
        }
        member.ready = ready;
        if !rtt_ms.is_empty() {
            member.rtt_ms = rtt_ms;
        }
        let mut outcome = Outcome { events: vec![PartyEvent::Ready { player, ready }], cancel: None };
        if !ready && let PartyState::Queued { ticket } = party.state {
            party.state = PartyState::Idle;
            self.by_ticket.remove(&ticket);
            outcome.cancel = Some(ticket);
            outcome.events.push(PartyEvent::Dequeued { reason: "member_unready" });
        }
        Ok(outcome)
    }

    /// Checks that `player` may queue party `id` now: the leader, everyone ready, not
    /// queued. The party as it is, to build the ticket from.
    pub fn check_queue(&self, id: PartyId, player: u64) -> Result<&Party, LobbyError> {
        let party = self.parties.get(&id).ok_or(LobbyError::UnknownParty)?;
        if !party.has(player) {
            return Err(LobbyError::NotMember);
        }
        if party.leader != player {
            return Err(LobbyError::NotLeader);
        }
        if party.state != PartyState::Idle {
            return Err(LobbyError::Queued);
        }
        if !party.members.iter().all(|m| m.ready) {
            return Err(LobbyError::NotAllReady);
        }
        Ok(party)
    }

    /// Marks party `id` queued with `ticket`, after [`Parties::check_queue`] passed for
    /// exactly these `members` (a party that changed in between is refused).
    pub fn queued(&mut self, id: PartyId, player: u64, members: &[Member], ticket: u64) -> Result<Outcome, LobbyError> {
        let party = self.check_queue(id, player)?;
        let same = |a: &Member, b: &Member| a.player == b.player && a.ready == b.ready && a.rtt_ms == b.rtt_ms;
        if party.members.len() != members.len() || !party.members.iter().zip(members).all(|(a, b)| same(a, b)) {
            return Err(LobbyError::NotAllReady);
        }
        let party = self.parties.get_mut(&id).expect("checked above");
        party.state = PartyState::Queued { ticket };
        self.by_ticket.insert(ticket, id);
        Ok(Outcome { events: vec![PartyEvent::Queued { ticket }], cancel: None })
    }

    /// Puts party `id` back in the queue with `ticket` after its match fell through,
    /// if it is idle and still exactly `players`: they were all ready when it was matched.
    pub fn requeue(&mut self, id: PartyId, players: &[u64], ticket: u64) -> Result<Outcome, LobbyError> {
        let party = self.parties.get_mut(&id).ok_or(LobbyError::UnknownParty)?;
        if party.state != PartyState::Idle {
            return Err(LobbyError::Queued);
        }
        let same = party.members.len() == players.len() && party.members.iter().all(|m| players.contains(&m.player));
        if !same {
            return Err(LobbyError::NotAllReady);
        }
        for member in &mut party.members {
            member.ready = true;
        }
        party.state = PartyState::Queued { ticket };
        self.by_ticket.insert(ticket, id);
        Ok(Outcome { events: vec![PartyEvent::Queued { ticket }], cancel: None })
    }

    /// The leader takes party `id` out of the queue.
    pub fn dequeue(&mut self, id: PartyId, player: u64) -> Result<Outcome, LobbyError> {
        let party = self.parties.get_mut(&id).ok_or(LobbyError::UnknownParty)?;
        if !party.has(player) {
            return Err(LobbyError::NotMember);
        }
        if party.leader != player {
            return Err(LobbyError::NotLeader);
        }
        let PartyState::Queued { ticket } = party.state else { return Err(LobbyError::NotQueued) };
        party.state = PartyState::Idle;
        self.by_ticket.remove(&ticket);
        Ok(Outcome { events: vec![PartyEvent::Dequeued { reason: "leader_cancelled" }], cancel: Some(ticket) })
    }

    /// A member's push connection opened (`+1`) or closed (`-1`). Losing the last one
    /// while queued counts as dropping out: the ticket is cancelled.
    pub fn connection(&mut self, id: PartyId, player: u64, opened: bool) -> Outcome {
        let Some(party) = self.parties.get_mut(&id) else { return Outcome::default() };
        let Some(member) = party.member_mut(player) else { return Outcome::default() };
        if opened {
            member.connections += 1;
            return Outcome::default();
        }
        member.connections = member.connections.saturating_sub(1);
        if member.connections > 0 {
            return Outcome::default();
        }
        match party.state {
            PartyState::Queued { ticket } => {
                party.state = PartyState::Idle;
                self.by_ticket.remove(&ticket);
                Outcome { events: vec![PartyEvent::Dequeued { reason: "member_dropped" }], cancel: Some(ticket) }
            }
            PartyState::Idle => Outcome::default(),
        }
    }

    /// The engine refused or dropped `ticket`: its party (if any) is idle again.
    pub fn ticket_ended(&mut self, ticket: u64, reason: &'static str) -> Option<(PartyId, Outcome)> {
        let id = self.by_ticket.remove(&ticket)?;
        let party = self.parties.get_mut(&id)?;
        party.state = PartyState::Idle;
        Some((id, Outcome { events: vec![PartyEvent::Dequeued { reason }], cancel: None }))
    }

    /// The engine matched `ticket`: its party is idle again, and must ready up anew
    /// before it queues next.
    pub fn matched(&mut self, ticket: u64, match_id: u64) -> Option<(PartyId, Outcome)> {
        let id = self.by_ticket.remove(&ticket)?;
        let party = self.parties.get_mut(&id)?;
        party.state = PartyState::Idle;
        for member in &mut party.members {
            member.ready = false;
        }
        Some((id, Outcome { events: vec![PartyEvent::MatchFound { match_id }], cancel: None }))
    }
}

#[cfg(test)]
mod tests;

/// A party operation as any front end asks it (the admin API's REST routes, the edge's
/// QUIC messages): always on behalf of one player, about the party they are in (or
/// join).
#[derive(Clone, Debug, PartialEq)]
pub enum PartyCall {
    /// Start a party for a mode and lead it.
    Create {
        /// The mode.
        mode: String,
    },
    /// The caller's party.
    Get,
    /// Join a party.
    Join {
        /// Which.
        party_id: PartyId,
    },
    /// Leave the caller's party.
    Leave,
    /// Ready (with measured RTTs by datacenter name) or unready.
    Ready {
        /// Ready or not.
        ready: bool,
        /// RTT per datacenter, ms.
        rtt_ms: Vec<(String, f64)>,
    },
    /// Queue the caller's party (leader only).
    Queue,
    /// Leave the queue (leader only).
    Dequeue,
    /// Say something to the party.
    Chat {
        /// At most 500 bytes.
        text: String,
    },
}

/// A party as an answer carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct PartyInfo {
    /// Its id.
    pub party_id: PartyId,
    /// Its mode.
    pub mode: String,
    /// The leader.
    pub leader: u64,
    /// `(player, ready)`, in joining order.
    pub members: Vec<(u64, bool)>,
    /// In the queue.
    pub queued: bool,
}

/// Why a party call was refused: a stable code (the admin API's error codes) and words.
#[derive(Clone, Debug, PartialEq)]
pub struct PartyRefusal {
    /// Stable code, e.g. `party_full`, `not_the_leader`, `cooldown`.
    pub code: &'static str,
    /// For humans.
    pub message: String,
    /// Whether the same call may succeed shortly.
    pub retryable: bool,
}

/// Something that happened to a player's party, for a push to that player.
#[derive(Clone, Debug, PartialEq)]
pub struct PartyNotice {
    /// The party.
    pub party_id: PartyId,
    /// What: `member_joined`, `member_left`, `leader_changed`, `ready`, `queued`,
    /// `dequeued`, `match_found`, `match_confirmed`, `match_abandoned`, `chat`,
    /// `disbanded`.
    pub kind: &'static str,
    /// The player it is about (the chat's author), or 0.
    pub player: u64,
    /// The match it is about, or 0.
    pub match_id: u64,
    /// `ready`: now ready; `match_abandoned`: queued again.
    pub flag: bool,
    /// `chat`: the text; `dequeued`: the reason; `match_found`/`match_confirmed`: the
    /// game server's address.
    pub text: String,
    /// `match_found`/`match_confirmed`: this member's token for the game server.
    pub connect_token: String,
}

/// The answer to a [`PartyCall`]: the caller's party as it is after it (`None` once they
/// left or it ended), or why not.
pub type PartyAnswer = Result<Option<PartyInfo>, PartyRefusal>;

/// Where parties live, for front ends other than the one that holds them.
pub trait PartyGateway: Send + Sync + 'static {
    /// Carries out `call` for `player`.
    fn call(&self, player: u64, call: PartyCall) -> std::pin::Pin<Box<dyn Future<Output = PartyAnswer> + Send + '_>>;
    /// Sets where each member's notices go (`to(player, notice)`), once, for all
    /// parties; it must not block.
    fn notify(&self, to: std::sync::Arc<dyn Fn(u64, PartyNotice) + Send + Sync>);
    /// `player` connected (`true`) or their connection is gone for good (`false`): a
    /// member whose last connection goes while their party is queued takes it out.
    fn presence(&self, player: u64, connected: bool);
}
