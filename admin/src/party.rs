//! Parties over REST and WebSocket: `POST /v1/party`, `GET /v1/party/{id}`,
//! `POST /v1/party/{id}/join`, `DELETE /v1/party/{id}/leave`, `POST /v1/party/{id}/ready`,
//! `POST`/`DELETE /v1/party/queue`, and `GET /v1/ws/party/{party_id}` (WebSocket: member,
//! ready, queue and match events, and party chat).
//!
//! [`Lobby`] joins the sans-IO [`Parties`] to the engine: a queued party is one ticket
//! with every member's stored rating and RTTs, submitted through the same
//! [`ShardRouter`] as the edge's tickets; the shards' answers come back through
//! [`Lobby`]'s [`EventSink`], after the edge has applied them (so a match already has its
//! game server when members hear of it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rally_engine::{
    Command, Event, EventSink, PlayerEntry, PlayerId, Rejection, Rules, RuntimeEvent, ShardRouter, SubmitError,
    TicketId, TicketRequest, home_shard,
};
use rally_lobby::{LobbyError, Parties, Party, PartyEvent, PartyId, PartyState};
use rally_sessions::SessionDirectory;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody, FieldError};
use crate::extract::{ApiJson, Player};
use crate::game::Game;

/// Party tickets carry the top bit, so they never collide with the edge's.
const PARTY_TICKETS: u64 = 1 << 63;
/// Largest chat message, bytes.
pub const MAX_CHAT_BYTES: usize = 500;
/// Events a slow WebSocket may fall behind by before it is sent a fresh snapshot.
const EVENT_BACKLOG: usize = 256;

/// Parties and their way to the engine.
pub struct Lobby {
    state: Mutex<LobbyState>,
    rules: Arc<Rules>,
    router: std::sync::OnceLock<Arc<dyn ShardRouter>>,
    sessions: Arc<SessionDirectory>,
    next_ticket: AtomicU64,
    /// Chat rate per (party, member), whatever number of sockets they chat from.
    chat_limits: ChatLimiter,
    /// Where members' notices go besides the party sockets (the edge, for QUIC clients).
    notify: std::sync::OnceLock<Arc<dyn Fn(u64, rally_lobby::PartyNotice) + Send + Sync>>,
    /// Ratings for queueing, and the season, come from the game loop's store.
    game: std::sync::OnceLock<Arc<Game>>,
}

type ChatLimiter = governor::RateLimiter<
    (PartyId, u64),
    governor::state::keyed::HashMapStateStore<(PartyId, u64)>,
    governor::clock::DefaultClock,
>;

#[derive(Default)]
struct LobbyState {
    parties: Parties,
    channels: HashMap<PartyId, broadcast::Sender<Arc<WsEvent>>>,
    /// Party enqueues waiting for the shard's answer.
    pending: HashMap<u64, oneshot::Sender<Result<(), Rejection>>>,
    /// The shard each queued party ticket went to.
    shards: HashMap<u64, rally_engine::ShardId>,
    /// Each queued party ticket as sent, to send again if its match falls through.
    requests: HashMap<u64, (PartyId, TicketRequest)>,
    /// Tickets whose cancel went to the engine and is not answered yet: if the engine
    /// matched the ticket first, the party still hears of its match.
    cancelling: HashMap<u64, PartyId>,
    /// Players connected over QUIC (each counts as one connection of their party).
    online: std::collections::HashSet<u64>,
    /// Matches with party tickets that may still fall through (a ready check or a game
    /// session in progress): each party's ticket and the wait it had served.
    played: HashMap<u64, Vec<(PartyId, TicketRequest, u64)>>,
}

impl Lobby {
    /// A lobby for shards running `rules`; matches' game servers are looked up in
    /// `sessions`. It queues nothing until [`Lobby::connect`] gives it a router (the
    /// shards need the lobby as their event sink before the router exists).
    pub fn new(rules: Arc<Rules>, sessions: Arc<SessionDirectory>) -> Lobby {
        let start_ms = rally_sessions::now_ms();
        Lobby {
            state: Mutex::new(LobbyState { parties: Parties::new(), ..Default::default() }),
            rules,
            router: std::sync::OnceLock::new(),
            sessions,
            next_ticket: AtomicU64::new(PARTY_TICKETS | (start_ms << 16)),
            notify: std::sync::OnceLock::new(),
            game: std::sync::OnceLock::new(),
            chat_limits: governor::RateLimiter::hashmap(
                governor::Quota::per_second(std::num::NonZeroU32::new(CHAT_PER_S).expect("non-zero"))
                    .allow_burst(std::num::NonZeroU32::new(CHAT_BURST).expect("non-zero")),
            ),
        }
    }

    /// Sets the way to the shards; `false` if one was set before.
    pub fn connect(&self, router: Arc<dyn ShardRouter>) -> bool {
        self.router.set(router).is_ok()
    }

    fn submit(&self, shard: rally_engine::ShardId, command: Command) -> Result<(), SubmitError> {
        self.router.get().ok_or(SubmitError::ShuttingDown)?.submit(shard, command)
    }

    fn lock(&self) -> MutexGuard<'_, LobbyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies an outcome: tells the party, cancels a ticket the engine must drop.
    fn apply(&self, state: &mut LobbyState, party: PartyId, outcome: rally_lobby::Outcome) {
        if let Some(ticket) = outcome.cancel
            && let Some(shard) = state.shards.remove(&ticket)
        {
            state.cancelling.insert(ticket, party);
            if let Err(e) = self.submit(shard, Command::Cancel(TicketId(ticket))) {
                // The ticket stays in the engine until matched; the party then hears of
                // the match all the same (`cancelling`).
                tracing::warn!(ticket, error = %e, "could not cancel a party ticket");
            }
        }
        for event in outcome.events {
            let disbanded = event == PartyEvent::Disbanded;
            self.tell(state, party, WsEvent::from_party(event, &self.rules));
            if disbanded {
                state.channels.remove(&party);
            }
        }
        metrics::gauge!("rally_parties").set(state.parties.len() as f64);
    }

    fn tell(&self, state: &LobbyState, party: PartyId, event: WsEvent) {
        if let (Some(to), Some(notice)) = (self.notify.get(), event.notice(party)) {
            let members = state.parties.get(party).map(|p| p.members.iter().map(|m| m.player).collect::<Vec<_>>());
            for member in members.unwrap_or_default() {
                let mut notice = notice.clone();
                if notice.match_id != 0 && matches!(notice.kind, "match_found" | "match_confirmed") {
                    notice.connect_token =
                        self.sessions.lock().connect_token(notice.match_id, member).unwrap_or_default();
                }
                to(member, notice);
            }
        }
        if let Some(channel) = state.channels.get(&party) {
            let _ = channel.send(Arc::new(event));
        }
    }
}

impl Lobby {
    /// A lobby that also hears of matches falling through (ready checks, failed
    /// sessions) to put parties back in the queue.
    pub fn shared(rules: Arc<Rules>, sessions: Arc<SessionDirectory>, game: Arc<Game>) -> Arc<Lobby> {
        let lobby = Arc::new(Lobby::new(rules, sessions.clone()));
        let _ = lobby.game.set(game);
        sessions.subscribe(Arc::new(LobbySessions(Arc::downgrade(&lobby))));
        lobby
    }

    /// A match with party tickets fell through: parties none of whose members refused go
    /// back in the queue with the wait they had served.
    fn fell_through(&self, match_id: u64, refused: &[u64]) {
        let mut state = self.lock();
        let Some(played) = state.played.remove(&match_id) else { return };
        for (party, request, wait_ms) in played {
            let players: Vec<u64> = request.players.iter().map(|p| p.id.0).collect();
            let mut requeued = false;
            if !players.iter().any(|p| refused.contains(p))
                && let Ok(shard) = home_shard(&self.rules, &request.players)
            {
                let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
                if let Ok(outcome) = state.parties.requeue(party, &players, ticket) {
                    let again = TicketRequest { id: TicketId(ticket), waited_ms: wait_ms, ..request.clone() };
                    if self.submit(shard, Command::Enqueue(again)).is_ok() {
                        state.shards.insert(ticket, shard);
                        state.requests.insert(ticket, (party, request.clone()));
                        requeued = true;
                        self.tell(
                            &state,
                            party,
                            WsEvent::MatchAbandoned { match_id, requeued, refused: refused.to_vec() },
                        );
                        self.apply(&mut state, party, outcome);
                        continue;
                    }
                    state.parties.ticket_ended(ticket, "rejected");
                }
            }
            self.tell(&state, party, WsEvent::MatchAbandoned { match_id, requeued, refused: refused.to_vec() });
        }
    }
}

/// Hears of ready checks settling and sessions ending for the lobby.
struct LobbySessions(std::sync::Weak<Lobby>);

impl rally_sessions::SessionListener for LobbySessions {
    fn ended(&self, session: &rally_sessions::Session) {
        let Some(lobby) = self.0.upgrade() else { return };
        if session.state == rally_sessions::SessionState::Failed {
            lobby.fell_through(session.match_id, &[]);
        } else {
            lobby.lock().played.remove(&session.match_id);
        }
    }

    fn ready_check_settled(&self, outcome: &rally_sessions::ReadyOutcome) {
        let Some(lobby) = self.0.upgrade() else { return };
        match outcome {
            rally_sessions::ReadyOutcome::Confirmed { formed, allocation } => {
                let mut state = lobby.lock();
                let parties: Vec<PartyId> = match allocation {
                    // Kept: the session may still fail.
                    Some(_) => state.played.get(&formed.match_id).map(|p| p.iter().map(|(id, ..)| *id).collect()),
                    None => state.played.remove(&formed.match_id).map(|p| p.into_iter().map(|(id, ..)| id).collect()),
                }
                .unwrap_or_default();
                let server_addr = allocation.as_ref().map(|a| a.server_addr.clone()).unwrap_or_default();
                for party in parties {
                    let event = WsEvent::MatchConfirmed {
                        match_id: formed.match_id,
                        server_addr: server_addr.clone(),
                        connect_token: None,
                    };
                    lobby.tell(&state, party, event);
                }
            }
            rally_sessions::ReadyOutcome::FellThrough { formed, refused } => {
                lobby.fell_through(formed.match_id, refused)
            }
        }
    }
}

impl EventSink for Lobby {
    fn deliver(&self, event: RuntimeEvent) {
        let RuntimeEvent::Shard { event, .. } = event else { return };
        match event {
            Event::Enqueued(id) => {
                if let Some(reply) = self.lock().pending.remove(&id.0) {
                    let _ = reply.send(Ok(()));
                }
            }
            Event::Rejected { ticket, reason } => {
                let mut state = self.lock();
                if let Some(reply) = state.pending.remove(&ticket.0) {
                    let _ = reply.send(Err(reason));
                }
                state.shards.remove(&ticket.0);
                state.requests.remove(&ticket.0);
                if let Some((party, outcome)) = state.parties.ticket_ended(ticket.0, "rejected") {
                    self.apply(&mut state, party, outcome);
                }
            }
            Event::Matched(m) => {
                if !m.tickets.iter().any(|t| t.id.0 & PARTY_TICKETS != 0) {
                    return;
                }
                // Placed by whichever service heard of the match first (the edge, in a
                // node that has one); the same answer either way.
                let placement = self.sessions.place_match(&self.rules, &m).1;
                let (server_addr, deadline) = match &placement {
                    rally_sessions::Placement::Hosted(a) => (a.server_addr.clone(), None),
                    rally_sessions::Placement::ReadyCheck { accept_by_ms } => (String::new(), Some(*accept_by_ms)),
                    rally_sessions::Placement::NoServer => (String::new(), None),
                };
                let may_fall_through = placement != rally_sessions::Placement::NoServer;
                let mut state = self.lock();
                for ticket in m.tickets.iter().filter(|t| t.id.0 & PARTY_TICKETS != 0) {
                    state.shards.remove(&ticket.id.0);
                    let request = state.requests.remove(&ticket.id.0);
                    let (party, outcome) = match state.parties.matched(ticket.id.0, m.id.0) {
                        Some(matched) => matched,
                        // Matched before its cancel landed: the party left the queue, but
                        // its players are in this match and must hear of it.
                        None => match state.cancelling.remove(&ticket.id.0) {
                            Some(party) if state.parties.get(party).is_some() => {
                                (party, rally_lobby::Outcome::default())
                            }
                            _ => continue,
                        },
                    };
                    // Kept while the match may still fall through, to queue the party again.
                    if let Some((_, request)) = request
                        && may_fall_through
                    {
                        state.played.entry(m.id.0).or_default().push((party, request, ticket.wait_ms));
                    }
                    let teams: Vec<Vec<u64>> = m
                        .teams()
                        .map(|team| team.iter().flat_map(|t| m.players_of(t)).map(|p| p.0).collect())
                        .collect();
                    let found = WsEvent::MatchFound {
                        match_id: m.id.0,
                        mode: self.rules.mode(m.mode).map_or_else(String::new, |mode| mode.name.clone()),
                        datacenter: self.rules.datacenter_name(m.datacenter).to_owned(),
                        server_addr: server_addr.clone(),
                        connect_token: None,
                        accept_by_unix_ms: deadline.unwrap_or(0),
                        teams,
                    };
                    // The outcome's own MatchFound is replaced by the detailed one.
                    let rest = rally_lobby::Outcome {
                        events: outcome
                            .events
                            .into_iter()
                            .filter(|e| !matches!(e, PartyEvent::MatchFound { .. }))
                            .collect(),
                        cancel: outcome.cancel,
                    };
                    self.tell(&state, party, found);
                    self.apply(&mut state, party, rest);
                }
            }
            Event::Cancelled(id) | Event::NotWaiting(id) => {
                let mut state = self.lock();
                if state.cancelling.remove(&id.0).is_some() {
                    state.requests.remove(&id.0);
                }
            }
        }
    }
}

/// A party as its members see it.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct PartyView {
    /// Its id.
    pub party_id: PartyId,
    /// The mode it queues for.
    pub mode: String,
    /// Most members.
    pub capacity: usize,
    /// The leader.
    pub leader_id: u64,
    /// Members in the order they joined.
    pub members: Vec<MemberView>,
    /// `idle` or `queued`.
    pub state: &'static str,
}

/// One member.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct MemberView {
    /// The player.
    pub player_id: u64,
    /// Ready to queue.
    pub ready: bool,
    /// Has a live WebSocket.
    pub connected: bool,
}

impl From<&Party> for PartyView {
    fn from(p: &Party) -> PartyView {
        PartyView {
            party_id: p.id,
            mode: p.mode.clone(),
            capacity: p.capacity,
            leader_id: p.leader,
            members: p
                .members
                .iter()
                .map(|m| MemberView { player_id: m.player, ready: m.ready, connected: m.connections > 0 })
                .collect(),
            state: match p.state {
                PartyState::Idle => "idle",
                PartyState::Queued { .. } => "queued",
            },
        }
    }
}

/// What the party WebSocket sends (JSON text frames, tagged by `type`).
#[derive(Serialize, Clone, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WsEvent {
    /// The whole party, first on connect and after falling behind.
    Snapshot {
        /// The party.
        party: PartyView,
    },
    /// Someone joined.
    MemberJoined {
        /// Who.
        player_id: u64,
    },
    /// Someone left.
    MemberLeft {
        /// Who.
        player_id: u64,
    },
    /// New leader.
    LeaderChanged {
        /// Who.
        player_id: u64,
    },
    /// A member readied or unreadied.
    Ready {
        /// Who.
        player_id: u64,
        /// Now ready.
        ready: bool,
    },
    /// The party is in the queue.
    Queued {
        /// Its ticket.
        ticket_id: u64,
    },
    /// The party left the queue.
    Dequeued {
        /// `leader_cancelled`, `member_left`, `member_dropped`, `member_unready`, `rejected`,
        /// `engine_timeout`.
        reason: &'static str,
    },
    /// The party's ticket was matched.
    MatchFound {
        /// The match.
        match_id: u64,
        /// Its mode.
        mode: String,
        /// Where.
        datacenter: String,
        /// The game server (empty when none had room).
        server_addr: String,
        /// This member's connect token for the server.
        #[serde(skip_serializing_if = "Option::is_none")]
        connect_token: Option<String>,
        /// 0, or (the mode has a ready check) when members must have accepted by
        /// (`POST /v1/match/{match_id}/accept`), ms since the Unix epoch; the server then
        /// comes in `match_confirmed`.
        accept_by_unix_ms: u64,
        /// Player ids by team.
        teams: Vec<Vec<u64>>,
    },
    /// Everyone accepted the ready check: where to play.
    MatchConfirmed {
        /// The match.
        match_id: u64,
        /// The game server (empty when none had room).
        server_addr: String,
        /// This member's connect token for the server.
        #[serde(skip_serializing_if = "Option::is_none")]
        connect_token: Option<String>,
    },
    /// The match fell through: someone declined or ignored the ready check, or its game
    /// server went silent.
    MatchAbandoned {
        /// The match.
        match_id: u64,
        /// Whether the party went back in the queue (with the wait it had served); it
        /// does unless one of its own members refused, or it changed meanwhile.
        requeued: bool,
        /// Who declined or ignored the ready check.
        refused: Vec<u64>,
    },
    /// A chat message.
    Chat {
        /// Who wrote it.
        from: u64,
        /// What.
        text: String,
        /// When, ms since the Unix epoch.
        at_ms: u64,
    },
    /// The party is gone.
    Disbanded,
    /// Something the member sent was refused.
    Error {
        /// Stable code: `chat_too_long`, `chat_rate_limited`, `bad_message`.
        code: &'static str,
        /// For humans.
        message: String,
    },
}

impl WsEvent {
    /// The event as a notice for other front ends; `None` for socket-only events.
    fn notice(&self, party_id: PartyId) -> Option<rally_lobby::PartyNotice> {
        let notice = |kind, player, match_id, flag, text: &str| rally_lobby::PartyNotice {
            party_id,
            kind,
            player,
            match_id,
            flag,
            text: text.to_owned(),
            connect_token: String::new(),
        };
        Some(match self {
            WsEvent::Snapshot { .. } | WsEvent::Error { .. } => return None,
            WsEvent::MemberJoined { player_id } => notice("member_joined", *player_id, 0, false, ""),
            WsEvent::MemberLeft { player_id } => notice("member_left", *player_id, 0, false, ""),
            WsEvent::LeaderChanged { player_id } => notice("leader_changed", *player_id, 0, false, ""),
            WsEvent::Ready { player_id, ready } => notice("ready", *player_id, 0, *ready, ""),
            WsEvent::Queued { .. } => notice("queued", 0, 0, false, ""),
            WsEvent::Dequeued { reason } => notice("dequeued", 0, 0, false, reason),
            WsEvent::MatchFound { match_id, server_addr, .. } => {
                notice("match_found", 0, *match_id, false, server_addr)
            }
            WsEvent::MatchConfirmed { match_id, server_addr, .. } => {
                notice("match_confirmed", 0, *match_id, false, server_addr)
            }
            WsEvent::MatchAbandoned { match_id, requeued, .. } => {
                notice("match_abandoned", 0, *match_id, *requeued, "")
            }
            WsEvent::Chat { from, text, .. } => notice("chat", *from, 0, false, text),
            WsEvent::Disbanded => notice("disbanded", 0, 0, false, ""),
        })
    }

    fn from_party(event: PartyEvent, _rules: &Rules) -> WsEvent {
        match event {
            PartyEvent::MemberJoined { player } => WsEvent::MemberJoined { player_id: player },
            PartyEvent::MemberLeft { player } => WsEvent::MemberLeft { player_id: player },
            PartyEvent::LeaderChanged { player } => WsEvent::LeaderChanged { player_id: player },
            PartyEvent::Ready { player, ready } => WsEvent::Ready { player_id: player, ready },
            PartyEvent::Queued { ticket } => WsEvent::Queued { ticket_id: ticket },
            PartyEvent::Dequeued { reason } => WsEvent::Dequeued { reason },
            PartyEvent::MatchFound { match_id } => WsEvent::MatchFound {
                match_id,
                mode: String::new(),
                datacenter: String::new(),
                server_addr: String::new(),
                connect_token: None,
                accept_by_unix_ms: 0,
                teams: Vec::new(),
            },
            PartyEvent::Disbanded => WsEvent::Disbanded,
        }
    }
}

/// `POST /v1/party`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewParty {
    /// The mode to queue for; the party holds at most its team size.
    pub mode: String,
}

/// `POST /v1/party/{id}/ready`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadyUpdate {
    /// Ready (default) or not.
    #[serde(default = "yes")]
    pub ready: bool,
    /// Measured RTT per datacenter name, ms. Required the first time a member readies.
    #[serde(default)]
    pub rtt_ms: HashMap<String, f64>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/party/queue`'s answer.
#[derive(Serialize, ToSchema)]
pub struct QueuedView {
    /// The party's ticket.
    pub ticket_id: u64,
    /// The party.
    pub party: PartyView,
}

fn lobby(state: &AppState) -> &Lobby {
    &state.inner.lobby
}

/// The party operations, apart from HTTP: the REST handlers call these, and a QUIC
/// front end can call the same.
impl Lobby {
    /// `player` starts a party for `mode` and leads it.
    pub fn create_party(&self, player: u64, mode: &str) -> Result<PartyView, ApiError> {
        let Some(mode) = self.rules.mode_id(mode).and_then(|id| self.rules.mode(id)) else {
            let names: Vec<&str> = self.rules.modes.iter().map(|m| m.name.as_str()).collect();
            let problem = format!("must be one of: {}", names.join(", "));
            return Err(ApiError::Validation(vec![FieldError::new("mode", problem)]));
        };
        let mut guard = self.lock();
        let party = guard.parties.create(player, &mode.name, usize::from(mode.team_size))?;
        let id = party.id;
        if guard.online.contains(&player) {
            guard.parties.connection(id, player, true);
        }
        let view = PartyView::from(guard.parties.get(id).expect("just created"));
        let (channel, _) = broadcast::channel(EVENT_BACKLOG);
        guard.channels.insert(view.party_id, channel);
        metrics::gauge!("rally_parties").set(guard.parties.len() as f64);
        Ok(view)
    }

    /// Party `id`, if `player` is a member.
    pub fn party(&self, player: u64, id: PartyId) -> Result<PartyView, ApiError> {
        let guard = self.lock();
        let party = guard.parties.get(id).ok_or(LobbyError::UnknownParty)?;
        if !party.has(player) {
            return Err(ApiError::Forbidden("only members may see a party".into()));
        }
        Ok(party.into())
    }

    /// `player` joins party `id`.
    pub fn join_party(&self, player: u64, id: PartyId) -> Result<PartyView, ApiError> {
        let mut guard = self.lock();
        let outcome = guard.parties.join(id, player)?;
        if guard.online.contains(&player) {
            guard.parties.connection(id, player, true);
        }
        self.apply(&mut guard, id, outcome);
        Ok(guard.parties.get(id).expect("just joined").into())
    }

    /// `player` leaves party `id`.
    pub fn leave_party(&self, player: u64, id: PartyId) -> Result<(), ApiError> {
        let mut guard = self.lock();
        let outcome = guard.parties.leave(id, player)?;
        self.apply(&mut guard, id, outcome);
        Ok(())
    }

    /// `player` readies (with their measured RTTs by datacenter name) or unreadies.
    pub fn ready_up(
        &self,
        player: u64,
        id: PartyId,
        ready: bool,
        rtt_ms: &HashMap<String, f64>,
    ) -> Result<PartyView, ApiError> {
        let mut errors = Vec::new();
        if rtt_ms.len() > self.rules.datacenters.len() {
            errors.push(FieldError::new("rtt_ms", "more entries than there are datacenters"));
        }
        let mut rtt: Vec<(String, f64)> = Vec::new();
        for (dc, ms) in rtt_ms {
            if self.rules.datacenter_id(dc).is_none() {
                errors.push(FieldError::new("rtt_ms", format!("unknown datacenter `{dc}`")));
            } else if !ms.is_finite() || *ms < 0.0 {
                errors.push(FieldError::new("rtt_ms", format!("`{dc}`: not a finite, non-negative number")));
            } else {
                rtt.push((dc.clone(), *ms));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        rtt.sort_by(|a, b| a.0.cmp(&b.0));
        let mut guard = self.lock();
        let outcome = guard.parties.ready(id, player, ready, rtt)?;
        self.apply(&mut guard, id, outcome);
        Ok(guard.parties.get(id).expect("still there").into())
    }

    /// The leader `player` queues their party: one ticket, every member with their
    /// stored rating (from the game loop's store, for the running season) and RTTs.
    pub async fn queue_party(&self, player: u64) -> Result<QueuedView, ApiError> {
        let game = self.game.get().ok_or(ApiError::Unavailable)?;
        let me = player;
        let (id, mode, members) = {
            let guard = self.lock();
            let party = guard.parties.party_of(me).ok_or(LobbyError::UnknownParty)?;
            let party = guard.parties.check_queue(party.id, me)?;
            (party.id, party.mode.clone(), party.members.clone())
        };
        {
            let sessions = self.sessions.lock();
            let now = rally_sessions::now_ms();
            if let Some(member) = members.iter().find(|m| sessions.cooldown_until(m.player, now).is_some()) {
                let left_s = (sessions.cooldown_until(member.player, now).unwrap_or(now) - now).div_ceil(1000);
                let message =
                    format!("player {} declined or missed a ready check; queue again in {left_s} s", member.player);
                return Err(ApiError::QueueRefused { code: "cooldown", message });
            }
        }
        // Ratings from the store (never the client), for the season running now.
        let season = game.seasons.current(crate::auth::now_ms()).await?;
        let mut players = Vec::with_capacity(members.len());
        for member in &members {
            // The engine matches on a non-negative scale; mu can fall below 0.
            let mmr = game
                .store
                .rating(member.player, &mode, season.id)
                .await?
                .map_or(game.model.initial().mu, |r| r.mu.max(0.0));
            let rtt_ms =
                member.rtt_ms.iter().filter_map(|(dc, ms)| Some((self.rules.datacenter_id(dc)?, *ms))).collect();
            players.push(PlayerEntry { id: PlayerId(member.player), mmr, rtt_ms });
        }
        let mode_id = self.rules.mode_id(&mode).ok_or(ApiError::Internal)?;
        let shard = home_shard(&self.rules, &players).map_err(refused)?;
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut guard = self.lock();
            // The party may have changed while ratings were read: `queued` checks it did not.
            let outcome = guard.parties.queued(id, me, &members, ticket)?;
            guard.pending.insert(ticket, reply);
            guard.shards.insert(ticket, shard);
            let request = TicketRequest { id: TicketId(ticket), mode: mode_id, players, waited_ms: 0 };
            guard.requests.insert(ticket, (id, request.clone()));
            if let Err(e) = self.submit(shard, Command::Enqueue(request)) {
                guard.pending.remove(&ticket);
                guard.shards.remove(&ticket);
                guard.requests.remove(&ticket);
                guard.parties.ticket_ended(ticket, "rejected");
                return Err(match e {
                    SubmitError::MailboxFull | SubmitError::ShuttingDown => ApiError::Unavailable,
                    SubmitError::UnknownShard => ApiError::Internal,
                });
            }
            self.apply(&mut guard, id, outcome);
        }
        match tokio::time::timeout(Duration::from_secs(5), answer).await {
            Ok(Ok(Ok(()))) => {}
            // The rejection already took the party out of the queue and told its members.
            Ok(Ok(Err(reason))) => return Err(refused(reason)),
            Ok(Err(_)) | Err(_) => {
                // The engine did not answer in time: take the party out again, so the
                // retry this 503 invites can succeed.
                let mut guard = self.lock();
                guard.pending.remove(&ticket);
                if let Some(shard) = guard.shards.remove(&ticket) {
                    guard.cancelling.insert(ticket, id);
                    let _ = self.submit(shard, Command::Cancel(TicketId(ticket)));
                }
                if let Some((party, outcome)) = guard.parties.ticket_ended(ticket, "engine_timeout") {
                    self.apply(&mut guard, party, outcome);
                }
                return Err(ApiError::Unavailable);
            }
        }
        metrics::counter!("rally_party_queues_total", "mode" => mode).increment(1);
        let guard = self.lock();
        let party = guard.parties.get(id).ok_or(LobbyError::UnknownParty)?;
        Ok(QueuedView { ticket_id: ticket, party: party.into() })
    }

    /// The leader `player` takes their party out of the queue.
    pub fn dequeue_party(&self, player: u64) -> Result<(), ApiError> {
        let mut guard = self.lock();
        let id = guard.parties.party_of(player).ok_or(LobbyError::UnknownParty)?.id;
        let outcome = guard.parties.dequeue(id, player)?;
        self.apply(&mut guard, id, outcome);
        Ok(())
    }
}

/// Starts a party; the caller leads it.
#[utoipa::path(post, path = "/v1/party", tag = "parties", security(("bearer" = [])), request_body = NewParty,
    responses(
        (status = 201, description = "The new party", body = PartyView),
        (status = 409, description = "The caller is in a party already", body = ErrorBody),
        (status = 422, description = "Unknown mode", body = ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Player(token): Player,
    ApiJson(body): ApiJson<NewParty>,
) -> Result<(StatusCode, axum::Json<PartyView>), ApiError> {
    let view = lobby(&state).create_party(token.player_id, &body.mode)?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// A party, for its members.
#[utoipa::path(get, path = "/v1/party/{id}", tag = "parties", security(("bearer" = [])),
    params(("id" = u64, Path, description = "The party id")),
    responses(
        (status = 200, description = "The party", body = PartyView),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such party", body = ErrorBody),
    ))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Player(token): Player,
    Path(id): Path<PartyId>,
) -> Result<axum::Json<PartyView>, ApiError> {
    lobby(&state).party(token.player_id, id).map(axum::Json)
}

/// Joins a party (not full, not queued, and the caller in no other party).
#[utoipa::path(post, path = "/v1/party/{id}/join", tag = "parties", security(("bearer" = [])),
    params(("id" = u64, Path, description = "The party id")),
    responses(
        (status = 200, description = "The party with the caller in it", body = PartyView),
        (status = 404, description = "No such party", body = ErrorBody),
        (status = 409, description = "Full, queued, or the caller is in a party already", body = ErrorBody),
    ))]
pub(crate) async fn join(
    State(state): State<AppState>,
    Player(token): Player,
    Path(id): Path<PartyId>,
) -> Result<axum::Json<PartyView>, ApiError> {
    lobby(&state).join_party(token.player_id, id).map(axum::Json)
}

/// Leaves a party: a queued party leaves the queue, a leaving leader hands over, the
/// last one out disbands it.
#[utoipa::path(delete, path = "/v1/party/{id}/leave", tag = "parties", security(("bearer" = [])),
    params(("id" = u64, Path, description = "The party id")),
    responses(
        (status = 204, description = "Left"),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such party", body = ErrorBody),
    ))]
pub(crate) async fn leave(
    State(state): State<AppState>,
    Player(token): Player,
    Path(id): Path<PartyId>,
) -> Result<StatusCode, ApiError> {
    lobby(&state).leave_party(token.player_id, id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Readies (with measured RTTs) or unreadies the caller. Unreadying a queued party takes
/// it out of the queue.
#[utoipa::path(post, path = "/v1/party/{id}/ready", tag = "parties", security(("bearer" = [])),
    params(("id" = u64, Path, description = "The party id")), request_body = ReadyUpdate,
    responses(
        (status = 200, description = "The party", body = PartyView),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such party", body = ErrorBody),
        (status = 422, description = "Bad or missing RTTs", body = ErrorBody),
    ))]
pub(crate) async fn ready(
    State(state): State<AppState>,
    Player(token): Player,
    Path(id): Path<PartyId>,
    ApiJson(body): ApiJson<ReadyUpdate>,
) -> Result<axum::Json<PartyView>, ApiError> {
    lobby(&state).ready_up(token.player_id, id, body.ready, &body.rtt_ms).map(axum::Json)
}

/// The leader queues the party: one ticket, every member on one team, each with their
/// stored rating and RTTs.
#[utoipa::path(post, path = "/v1/party/queue", tag = "parties", security(("bearer" = [])),
    responses(
        (status = 200, description = "Queued", body = QueuedView),
        (status = 403, description = "Not the leader", body = ErrorBody),
        (status = 404, description = "The caller is in no party", body = ErrorBody),
        (status = 409, description = "Not everyone is ready, already queued, a member on ready-check cooldown, or the engine refused the ticket", body = ErrorBody),
        (status = 503, description = "The engine is busy; retry", body = ErrorBody),
    ))]
pub(crate) async fn queue(
    State(state): State<AppState>,
    Player(token): Player,
) -> Result<axum::Json<QueuedView>, ApiError> {
    lobby(&state).queue_party(token.player_id).await.map(axum::Json)
}

fn refused(reason: Rejection) -> ApiError {
    ApiError::QueueRefused { code: reason.code(), message: reason.to_string() }
}

/// The leader takes the party out of the queue.
#[utoipa::path(delete, path = "/v1/party/queue", tag = "parties", security(("bearer" = [])),
    responses(
        (status = 204, description = "Out of the queue"),
        (status = 403, description = "Not the leader", body = ErrorBody),
        (status = 404, description = "The caller is in no party", body = ErrorBody),
        (status = 409, description = "The party is not queued", body = ErrorBody),
    ))]
pub(crate) async fn dequeue(State(state): State<AppState>, Player(token): Player) -> Result<StatusCode, ApiError> {
    lobby(&state).dequeue_party(token.player_id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/ws/party/{party_id}`: browsers cannot set headers on a WebSocket, so the
/// token may come as a query parameter instead.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WsParams {
    /// The access token, if not in `Authorization: Bearer`.
    pub access_token: Option<String>,
}

/// The party's event stream and chat (WebSocket, JSON text frames). Sends a `snapshot`
/// first (and again after falling behind), then `member_joined`, `member_left`,
/// `leader_changed`, `ready`, `queued`, `dequeued`, `match_found` (with the member's own
/// connect token), `match_confirmed`, `match_abandoned`, `chat`, `disbanded`, and `error`
/// for a refused message. Members send `{"type": "chat", "text": "…"}` (at most 500
/// bytes, 5 per second).
#[utoipa::path(get, path = "/v1/ws/party/{party_id}", tag = "parties", security(("bearer" = [])),
    params(("party_id" = u64, Path, description = "The party id"), WsParams),
    responses(
        (status = 101, description = "Switching to WebSocket"),
        (status = 401, description = "No valid access token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such party", body = ErrorBody),
    ))]
pub(crate) async fn ws(
    State(state): State<AppState>,
    Path(party_id): Path<PartyId>,
    Query(params): Query<WsParams>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = match &params.access_token {
        Some(token) => token.as_str(),
        None => crate::extract::bearer(&headers, "access token")?,
    };
    let player = crate::extract::verify(&state, token)?.player_id;
    {
        let guard = lobby(&state).lock();
        let party = guard.parties.get(party_id).ok_or(LobbyError::UnknownParty)?;
        if !party.has(player) {
            return Err(ApiError::Forbidden("only members may follow a party".into()));
        }
    }
    Ok(upgrade.max_message_size(4 * 1024).on_upgrade(move |socket| follow(state, party_id, player, socket)))
}

/// Chat messages a member may send per second, and in a burst.
const CHAT_PER_S: u32 = 5;
const CHAT_BURST: u32 = 10;
/// Refused messages in a row after which the socket is closed as a flood.
const CHAT_FLOOD_CLOSE: u32 = 20;

async fn follow(state: AppState, party_id: PartyId, player: u64, mut socket: WebSocket) {
    // Counted only once the socket is up, so a failed upgrade leaves no count behind;
    // membership is checked again, as the member may have left since the request.
    let joined = {
        let lobby = lobby(&state);
        let mut guard = lobby.lock();
        match guard.parties.get(party_id) {
            Some(party) if party.has(player) => {
                let snapshot = WsEvent::Snapshot { party: party.into() };
                let outcome = guard.parties.connection(party_id, player, true);
                lobby.apply(&mut guard, party_id, outcome);
                let channel = guard.channels.entry(party_id).or_insert_with(|| broadcast::channel(EVENT_BACKLOG).0);
                Some((channel.subscribe(), snapshot))
            }
            _ => None,
        }
    };
    let Some((mut events, snapshot)) = joined else {
        let _ = socket.send(Message::Close(Some(CloseFrame { code: 1008, reason: "not a member".into() }))).await;
        return;
    };
    let mut refused = 0u32;
    let mut alive = send(&mut socket, &snapshot).await;
    while alive {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let event = personal(&state, player, &event);
                    alive = send(&mut socket, &event).await;
                    let gone = matches!(event, WsEvent::Disbanded)
                        || matches!(event, WsEvent::MemberLeft { player_id } if player_id == player);
                    if gone {
                        let _ = socket.send(Message::Close(Some(CloseFrame { code: 1000, reason: "left the party".into() }))).await;
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind: start again from the party as it is now, if the
                    // member is still in it (their own leaving may be among the lost).
                    let party = lobby(&state).lock().parties.get(party_id).filter(|p| p.has(player)).map(PartyView::from);
                    match party {
                        Some(party) => alive = send(&mut socket, &WsEvent::Snapshot { party }).await,
                        None => break,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    let reply = chat_frame(&state, party_id, player, text.as_str());
                    if let Some(error) = reply {
                        refused += 1;
                        if refused >= CHAT_FLOOD_CLOSE {
                            let frame = CloseFrame { code: 1008, reason: "chat flood".into() };
                            let _ = socket.send(Message::Close(Some(frame))).await;
                            break;
                        }
                        alive = send(&mut socket, &error).await;
                    } else {
                        refused = 0;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    refused += 1;
                    if refused >= CHAT_FLOOD_CLOSE {
                        let frame = CloseFrame { code: 1008, reason: "flood".into() };
                        let _ = socket.send(Message::Close(Some(frame))).await;
                        break;
                    }
                    let error = WsEvent::Error { code: "bad_message", message: "send JSON text frames".into() };
                    alive = send(&mut socket, &error).await;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
        }
    }
    let lobby = lobby(&state);
    let mut guard = lobby.lock();
    let outcome = guard.parties.connection(party_id, player, false);
    lobby.apply(&mut guard, party_id, outcome);
}

/// `event` as this member gets it: a match carries their own connect token.
fn personal(state: &AppState, player: u64, event: &WsEvent) -> WsEvent {
    match event {
        WsEvent::MatchFound { match_id, .. } | WsEvent::MatchConfirmed { match_id, .. } => {
            let token = lobby(state).sessions.lock().connect_token(*match_id, player);
            let mut event = event.clone();
            if let WsEvent::MatchFound { connect_token, .. } | WsEvent::MatchConfirmed { connect_token, .. } =
                &mut event
            {
                *connect_token = token;
            }
            event
        }
        other => other.clone(),
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WsRequest {
    Chat { text: String },
}

/// Handles a member's WebSocket frame; an error event to send back if it was refused.
fn chat_frame(state: &AppState, party_id: PartyId, player: u64, frame: &str) -> Option<WsEvent> {
    let Ok(WsRequest::Chat { text }) = serde_json::from_str::<WsRequest>(frame) else {
        return Some(WsEvent::Error {
            code: "bad_message",
            message: r#"expected {"type": "chat", "text": "…"}"#.into(),
        });
    };
    lobby(state).chat(party_id, player, &text)
}

impl Lobby {
    /// `player` says `text` to party `party_id`; an error event if it was refused.
    fn chat(&self, party_id: PartyId, player: u64, text: &str) -> Option<WsEvent> {
        if text.len() > MAX_CHAT_BYTES || text.trim().is_empty() {
            let message = format!("chat messages are 1 to {MAX_CHAT_BYTES} bytes");
            return Some(WsEvent::Error { code: "chat_too_long", message });
        }
        let limits = &self.chat_limits;
        if limits.check_key(&(party_id, player)).is_err() {
            metrics::counter!("rally_party_chat_refused_total").increment(1);
            let message = format!("at most {CHAT_PER_S} messages a second");
            return Some(WsEvent::Error { code: "chat_rate_limited", message });
        }
        let guard = self.lock();
        if !guard.parties.get(party_id).is_some_and(|p| p.has(player)) {
            return Some(WsEvent::Error { code: "not_a_member", message: "you are no longer in this party".into() });
        }
        metrics::counter!("rally_party_chat_total").increment(1);
        // Members whose allowance is full again are forgotten now and then.
        if limits.len() > 10_000 {
            limits.retain_recent();
        }
        self.tell(
            &guard,
            party_id,
            WsEvent::Chat { from: player, text: text.to_owned(), at_ms: crate::auth::now_ms() },
        );
        None
    }
}

async fn send(socket: &mut WebSocket, event: &WsEvent) -> bool {
    let text = serde_json::to_string(event).expect("events serialize");
    socket.send(Message::Text(text.into())).await.is_ok()
}

impl From<LobbyError> for ApiError {
    fn from(e: LobbyError) -> ApiError {
        ApiError::Lobby(e)
    }
}

impl rally_lobby::PartyGateway for Lobby {
    fn call(
        &self,
        player: u64,
        call: rally_lobby::PartyCall,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = rally_lobby::PartyAnswer> + Send + '_>> {
        use rally_lobby::PartyCall as C;
        Box::pin(async move {
            let mine =
                || self.lock().parties.party_of(player).map(|p| p.id).ok_or(ApiError::Lobby(LobbyError::UnknownParty));
            let done: Result<Option<PartyView>, ApiError> = match call {
                C::Create { mode } => self.create_party(player, &mode).map(Some),
                C::Get => mine().and_then(|id| self.party(player, id)).map(Some),
                C::Join { party_id } => self.join_party(player, party_id).map(Some),
                C::Leave => mine().and_then(|id| self.leave_party(player, id)).map(|()| None),
                C::Ready { ready, rtt_ms } => {
                    let rtt: HashMap<String, f64> = rtt_ms.into_iter().collect();
                    mine().and_then(|id| self.ready_up(player, id, ready, &rtt)).map(Some)
                }
                C::Queue => self.queue_party(player).await.map(|q| Some(q.party)),
                C::Dequeue => {
                    self.dequeue_party(player).and_then(|()| mine()).and_then(|id| self.party(player, id)).map(Some)
                }
                C::Chat { text } => match mine() {
                    Ok(id) => match self.chat(id, player, &text) {
                        None => Ok(None),
                        Some(WsEvent::Error { code, message }) => {
                            return Err(rally_lobby::PartyRefusal {
                                code,
                                message,
                                retryable: code == "chat_rate_limited",
                            });
                        }
                        Some(_) => Ok(None),
                    },
                    Err(e) => Err(e),
                },
            };
            done.map(|view| view.map(PartyInfoFrom::info)).map_err(|e| {
                let (status, code) = e.status_and_code();
                rally_lobby::PartyRefusal {
                    code,
                    message: e.to_string(),
                    retryable: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
                }
            })
        })
    }

    fn notify(&self, to: Arc<dyn Fn(u64, rally_lobby::PartyNotice) + Send + Sync>) {
        let _ = self.notify.set(to);
    }

    fn presence(&self, player: u64, connected: bool) {
        let mut guard = self.lock();
        // Counted once per player: a repeated or stray call changes nothing.
        let changed = if connected { guard.online.insert(player) } else { guard.online.remove(&player) };
        if !changed {
            return;
        }
        let Some(party) = guard.parties.party_of(player).map(|p| p.id) else { return };
        let outcome = guard.parties.connection(party, player, connected);
        self.apply(&mut guard, party, outcome);
    }
}

trait PartyInfoFrom {
    fn info(self) -> rally_lobby::PartyInfo;
}

impl PartyInfoFrom for PartyView {
    fn info(self) -> rally_lobby::PartyInfo {
        rally_lobby::PartyInfo {
            party_id: self.party_id,
            mode: self.mode,
            leader: self.leader_id,
            members: self.members.iter().map(|m| (m.player_id, m.ready)).collect(),
            queued: self.state == "queued",
        }
    }
}
