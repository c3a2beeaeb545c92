//! What the edge's connections share: player sessions, requests waiting for a shard's
//! answer, and `ShardEvents`, which turns shard events into replies and pushes.
//!
//! Invariants:
//! - A player has at most one session, owned by at most one live connection (a newer
//!   connection replaces an older one, which is closed with `Replaced`).
//! - A player has at most one waiting ticket, recorded in `Session::ticket` when its
//!   shard says `Enqueued` and cleared when it says `Cancelled` or `Matched`. Only shard
//!   events update it, in each shard's event order, so a match can never be pushed for a
//!   ticket the session does not know yet.
//! - A session without a connection (dropped, in its grace period) keeps its ticket and
//!   parks pushes; when the grace period ends the ticket is cancelled and the session
//!   forgotten.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rally_engine::{
    Command, DatacenterId, Event, Match, PlayerEntry, PlayerId, Rejection, Rules, RuntimeEvent, ShardId, SubmitError,
    TicketId, TicketRequest, home_shard,
};
use rally_protocol::{CloseCode, MatchAbandoned, MatchFound, ServerMsg, Team, WaitingTicket};
use rally_sessions::{Placement, SessionDirectory};
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};

use rally_engine::ShardRouter;

/// What a connection task is told to do by the hub.
#[derive(Debug)]
pub(crate) enum Push {
    /// Send this message.
    Send(ServerMsg),
    /// Close the connection with this code.
    Close(CloseCode, &'static str),
}

#[derive(Clone, Debug)]
pub(crate) struct Ticket {
    pub id: TicketId,
    pub mode: String,
    pub shard: ShardId,
    /// The engine mode.
    pub mode_id: rally_engine::ModeId,
    /// The player as the shard got them (rating, RTTs), to queue them again if their
    /// match falls through.
    pub entry: PlayerEntry,
}

/// A match placed on a game server or waiting on a ready check, kept until its session
/// ends or the check settles: if it falls through, its players go back to the queue with
/// the wait they had served.
struct Hosted {
    /// Each player's ticket and how long it had waited when matched.
    tickets: Vec<(u64, Ticket, u64)>,
}

struct Session {
    /// The connection that owns the session; `None` during the grace period.
    conn: Option<(u64, mpsc::UnboundedSender<Push>)>,
    resume_token: String,
    ticket: Option<Ticket>,
    /// An enqueue is on its way to the shard.
    enqueuing: bool,
    /// Pushes that arrived while disconnected, delivered on resume.
    parked: Vec<ServerMsg>,
    /// The connection id of the last attach, so a stale grace timer knows to do nothing
    /// (connection ids are unique for the process).
    epoch: u64,
    /// Changes when the session starts afresh (new, or re-attached without resuming), so
    /// an enqueue made for an earlier incarnation is not applied to this one.
    generation: u64,
}

/// An engine outcome for an `Enqueue`.
pub(crate) type EnqueueOutcome = Result<(), Rejection>;

struct PendingEnqueue {
    player: u64,
    /// The session generation the enqueue was made for.
    generation: u64,
    ticket: Ticket,
    reply: oneshot::Sender<EnqueueOutcome>,
}

/// Whether a cancel took the ticket out of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CancelOutcome {
    Cancelled,
    NotWaiting,
}

#[derive(Default)]
struct State {
    sessions: FxHashMap<u64, Session>,
    enqueues: FxHashMap<TicketId, PendingEnqueue>,
    cancels: FxHashMap<TicketId, oneshot::Sender<CancelOutcome>>,
    /// Waiting tickets → their player.
    owners: FxHashMap<TicketId, u64>,
    /// Enqueues whose request timed out before the shard answered: if the shard accepts
    /// one later, nobody owns it, so it is cancelled.
    abandoned: FxHashMap<TicketId, ShardId>,
    /// Matches on game servers whose sessions have not ended, by match id.
    hosted: FxHashMap<u64, Hosted>,
}

/// Why a request could not be sent to the engine.
#[derive(Debug)]
pub(crate) enum RequestError {
    AlreadyQueued,
    NotQueued,
    /// The session ended while the request was being made.
    NotConnected,
    /// A cancel for this ticket is already on its way.
    CancelPending,
    Rejected(Rejection),
    Submit(SubmitError),
}

/// What `attach` hands the new connection.
pub(crate) struct Attached {
    pub pushes: mpsc::UnboundedReceiver<Push>,
    pub resume_token: String,
    pub resumed: bool,
    pub ticket: Option<Ticket>,
}

pub(crate) struct Hub {
    pub rules: Arc<Rules>,
    router: Arc<dyn ShardRouter>,
    state: Mutex<State>,
    next_ticket: AtomicU64,
    next_conn: AtomicU64,
    next_generation: AtomicU64,
    grace: Duration,
    /// Where formed matches get a game server, if game servers are in use.
    sessions: Option<Arc<SessionDirectory>>,
    /// Where parties live, told when a player's session starts and ends (a member whose
    /// last connection goes takes their queued party out of the queue).
    pub parties: std::sync::OnceLock<Arc<dyn rally_lobby::PartyGateway>>,
    /// For timers and retries started from shard threads, which have no runtime of their own.
    runtime: tokio::runtime::Handle,
}

impl Hub {
    pub fn new(
        rules: Arc<Rules>,
        router: Arc<dyn ShardRouter>,
        grace: Duration,
        sessions: Option<Arc<SessionDirectory>>,
    ) -> Hub {
        // Ticket ids start at the start time in ms, shifted: a restarted edge does not reuse
        // the ids the shards still remember, as long as it ran < 2^16 tickets per ms.
        let start_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        Hub {
            rules,
            router,
            state: Mutex::new(State::default()),
            next_ticket: AtomicU64::new(start_ms << 16),
            next_conn: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            grace,
            sessions,
            parties: std::sync::OnceLock::new(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Binds `player`'s session to connection `conn`. With the session's current resume
    /// token (or while an older connection is still live) the waiting ticket carries
    /// over; otherwise a session left from an earlier connection is dropped first.
    pub fn attach(&self, player: u64, conn: u64, resume_token: Option<&str>) -> Attached {
        let (tx, rx) = mpsc::unbounded_channel();
        let new_token = new_resume_token();
        let mut state = self.state();
        let mut stale_ticket = None;
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let fresh = !state.sessions.contains_key(&player);
        let session = state.sessions.entry(player).or_insert_with(|| Session {
            conn: None,
            resume_token: String::new(),
            ticket: None,
            enqueuing: false,
            parked: Vec::new(),
            epoch: 0,
            generation,
        });
        let live = session.conn.take();
        let resumed = match live {
            Some((_, old)) => {
                let _ = old.send(Push::Close(CloseCode::Replaced, "the player connected again"));
                true
            }
            None => resume_token.is_some_and(|t| !session.resume_token.is_empty() && t == session.resume_token),
        };
        if !resumed {
            stale_ticket = session.ticket.take();
            session.parked.clear();
            // Enqueues in flight for the old incarnation are cancelled when they land.
            session.enqueuing = false;
            session.generation = generation;
        }
        for msg in session.parked.drain(..) {
            let _ = tx.send(Push::Send(msg));
        }
        session.conn = Some((conn, tx));
        session.resume_token.clone_from(&new_token);
        session.epoch = conn;
        let ticket = session.ticket.clone();
        if let Some(t) = &stale_ticket {
            state.owners.remove(&t.id);
        }
        drop(state);
        if let Some(t) = stale_ticket {
            self.cancel_ticket(t.shard, t.id);
        }
        // Outside the hub's lock: the lobby may push to this hub while it holds its own.
        if fresh && let Some(parties) = self.parties.get() {
            parties.presence(player, true);
        }
        Attached { pushes: rx, resume_token: new_token, resumed, ticket }
    }

    /// Connection `conn` of `player` ended. `left` means the client closed on purpose: its
    /// ticket is cancelled now. Otherwise the session waits out the grace period.
    pub fn detach(self: &Arc<Self>, player: u64, conn: u64, left: bool) {
        let mut state = self.state();
        let Some(session) = state.sessions.get_mut(&player) else { return };
        if session.conn.as_ref().is_none_or(|(c, _)| *c != conn) {
            return; // replaced by a newer connection
        }
        session.conn = None;
        if left || self.grace.is_zero() {
            self.forget(state, player);
            return;
        }
        let epoch = session.epoch;
        drop(state);
        let hub = self.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(hub.grace).await;
            let state = hub.state();
            if state.sessions.get(&player).is_some_and(|s| s.conn.is_none() && s.epoch == epoch) {
                tracing::debug!(player, "grace period over; cancelling the ticket");
                hub.forget(state, player);
            }
        });
    }

    fn forget(&self, mut state: MutexGuard<'_, State>, player: u64) {
        let Some(session) = state.sessions.remove(&player) else { return };
        let ticket = session.ticket;
        if let Some(t) = &ticket {
            state.owners.remove(&t.id);
        }
        drop(state);
        if let Some(t) = ticket {
            self.cancel_ticket(t.shard, t.id);
        }
        if let Some(parties) = self.parties.get() {
            parties.presence(player, false);
        }
    }

    /// Cancels a ticket nobody will ask about again (a session gone, an enqueue abandoned).
    /// A full mailbox is retried until the shard takes it: such a ticket must not stay.
    fn cancel_ticket(&self, shard: ShardId, id: TicketId) {
        // Any other failure is shutting down, which takes every ticket with it.
        if let Err(SubmitError::MailboxFull) = self.router.submit(shard, Command::Cancel(id)) {
            let router = self.router.clone();
            self.runtime.spawn(async move {
                let mut wait = Duration::from_millis(10);
                loop {
                    tokio::time::sleep(wait).await;
                    match router.submit(shard, Command::Cancel(id)) {
                        Err(SubmitError::MailboxFull) => wait = (wait * 2).min(Duration::from_secs(1)),
                        _ => return,
                    }
                }
            });
        }
    }

    /// Pushes a connection could not deliver before it ended: forwarded to the newer
    /// connection that replaced it, or parked for the resume.
    pub fn return_pushes(&self, player: u64, msgs: Vec<ServerMsg>) {
        if msgs.is_empty() {
            return;
        }
        let mut state = self.state();
        let Some(session) = state.sessions.get_mut(&player) else { return };
        for msg in msgs {
            session.deliver(msg);
        }
    }

    pub fn ticket_of(&self, player: u64) -> Option<Ticket> {
        self.state().sessions.get(&player).and_then(|s| s.ticket.clone())
    }

    /// Sends a one-player ticket to its home shard; the outcome arrives on the receiver.
    pub fn enqueue(
        &self,
        player: u64,
        mode: (rally_engine::ModeId, &str),
        mmr: f64,
        rtt_ms: Vec<(DatacenterId, f64)>,
    ) -> Result<(TicketId, oneshot::Receiver<EnqueueOutcome>), RequestError> {
        let entry = PlayerEntry { id: PlayerId(player), mmr, rtt_ms };
        let mut state = self.state();
        self.submit_enqueue(&mut state, player, mode, entry, 0)
    }

    /// Sends `player`'s ticket to its home shard, counting `waited_ms` as served already.
    fn submit_enqueue(
        &self,
        state: &mut State,
        player: u64,
        mode: (rally_engine::ModeId, &str),
        entry: PlayerEntry,
        waited_ms: u64,
    ) -> Result<(TicketId, oneshot::Receiver<EnqueueOutcome>), RequestError> {
        let players = vec![entry.clone()];
        let shard = home_shard(&self.rules, &players).map_err(RequestError::Rejected)?;
        let id = TicketId(self.next_ticket.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        let Some(session) = state.sessions.get_mut(&player) else { return Err(RequestError::NotConnected) };
        if session.ticket.is_some() || session.enqueuing {
            return Err(RequestError::AlreadyQueued);
        }
        session.enqueuing = true;
        let generation = session.generation;
        let ticket = Ticket { id, mode: mode.1.to_owned(), shard, mode_id: mode.0, entry };
        state.enqueues.insert(id, PendingEnqueue { player, generation, ticket, reply: tx });
        // Submitted under the lock so the shard's answer cannot be applied before the
        // pending entry exists.
        let sent = self.router.submit(shard, Command::Enqueue(TicketRequest { id, mode: mode.0, players, waited_ms }));
        if let Err(e) = sent {
            state.enqueues.remove(&id);
            state.sessions.get_mut(&player).expect("checked above").enqueuing = false;
            return Err(RequestError::Submit(e));
        }
        Ok((id, rx))
    }

    /// A hosted match's session ended. If it failed, its players are told and queued
    /// again with the wait they had served before the match (not the time it lasted), so
    /// their windows are as wide as they had grown.
    pub fn session_ended(&self, match_id: u64, failed: bool) {
        if failed {
            self.fell_through(match_id, &[]);
        } else {
            self.state().hosted.remove(&match_id);
        }
    }

    /// A hosted match fell through (its server went silent, or its ready check failed):
    /// its players are told, and all but `refused` (who declined or ignored the ready
    /// check) are queued again with the wait they had served.
    fn fell_through(&self, match_id: u64, refused: &[u64]) {
        let mut state = self.state();
        let Some(hosted) = state.hosted.remove(&match_id) else { return };
        for (player, ticket, wait_ms) in hosted.tickets {
            if refused.contains(&player) {
                Self::push(&mut state, player, ServerMsg::MatchAbandoned(MatchAbandoned { match_id, ticket: None }));
                continue;
            }
            let mode = (ticket.mode_id, ticket.mode.as_str());
            let requeued = self.submit_enqueue(&mut state, player, mode, ticket.entry.clone(), wait_ms);
            let waiting = requeued.ok().map(|(id, _)| WaitingTicket { ticket_id: id.0, mode: ticket.mode.clone() });
            metrics::counter!("rally_edge_requeued_total", "outcome" => if waiting.is_some() { "queued" } else { "not_queued" })
                .increment(1);
            let Some(session) = state.sessions.get_mut(&player) else { continue };
            session.deliver(ServerMsg::MatchAbandoned(MatchAbandoned { match_id, ticket: waiting }));
        }
    }

    pub fn cancel(&self, player: u64, ticket: TicketId) -> Result<oneshot::Receiver<CancelOutcome>, RequestError> {
        let mut state = self.state();
        let Some(t) = state.sessions.get(&player).and_then(|s| s.ticket.clone()).filter(|t| t.id == ticket) else {
            return Err(RequestError::NotQueued);
        };
        if state.cancels.contains_key(&ticket) {
            return Err(RequestError::CancelPending);
        }
        let (tx, rx) = oneshot::channel();
        state.cancels.insert(ticket, tx);
        if let Err(e) = self.router.submit(t.shard, Command::Cancel(ticket)) {
            state.cancels.remove(&ticket);
            return Err(RequestError::Submit(e));
        }
        Ok(rx)
    }

    /// A request that timed out: forget its pending entry. An enqueue the shard may still
    /// accept is remembered, so that ticket is cancelled when it lands.
    pub fn abandon(&self, ticket: TicketId) {
        let mut state = self.state();
        if let Some(p) = state.enqueues.remove(&ticket) {
            state.abandoned.insert(ticket, p.ticket.shard);
            if let Some(session) = state.sessions.get_mut(&p.player) {
                session.enqueuing = false;
            }
        }
        state.cancels.remove(&ticket);
    }

    /// Live connections, for shutdown.
    pub fn close_all(&self, code: CloseCode, reason: &'static str) {
        for session in self.state().sessions.values() {
            if let Some((_, tx)) = &session.conn {
                let _ = tx.send(Push::Close(code, reason));
            }
        }
    }

    /// Applies one shard event. Runs on that shard's thread, in its event order.
    pub fn on_event(&self, event: Event) {
        let mut state = self.state();
        match event {
            Event::Enqueued(id) => {
                let Some(p) = state.enqueues.remove(&id) else {
                    if let Some(shard) = state.abandoned.remove(&id) {
                        drop(state);
                        self.cancel_ticket(shard, id);
                    }
                    return;
                };
                match state.sessions.get_mut(&p.player).filter(|s| s.generation == p.generation) {
                    Some(session) => {
                        session.enqueuing = false;
                        session.ticket = Some(p.ticket.clone());
                        state.owners.insert(id, p.player);
                        let _ = p.reply.send(Ok(()));
                    }
                    None => {
                        // The player is gone, or started afresh, before the shard answered.
                        drop(state);
                        self.cancel_ticket(p.ticket.shard, id);
                    }
                }
            }
            Event::Rejected { ticket, reason } => {
                state.abandoned.remove(&ticket);
                if let Some(p) = state.enqueues.remove(&ticket) {
                    if let Some(session) = state.sessions.get_mut(&p.player) {
                        session.enqueuing = false;
                    }
                    let _ = p.reply.send(Err(reason));
                }
            }
            Event::Cancelled(id) | Event::NotWaiting(id) => {
                let outcome = if matches!(event, Event::Cancelled(_)) {
                    CancelOutcome::Cancelled
                } else {
                    CancelOutcome::NotWaiting
                };
                if outcome == CancelOutcome::Cancelled
                    && let Some(player) = state.owners.remove(&id)
                    && let Some(session) = state.sessions.get_mut(&player)
                    && session.ticket.as_ref().is_some_and(|t| t.id == id)
                {
                    session.ticket = None;
                }
                if let Some(reply) = state.cancels.remove(&id) {
                    let _ = reply.send(outcome);
                }
            }
            Event::Matched(m) => self.on_match(&mut state, &m),
        }
    }

    fn on_match(&self, state: &mut State, m: &Match) {
        let rules = &self.rules;
        let mode = rules.mode(m.mode).map_or("", |mode| mode.name.as_str()).to_owned();
        let datacenter = rules.datacenter_name(m.datacenter).to_owned();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let formed_at_unix_us = now.as_micros() as u64;
        let teams: Vec<Team> = m
            .teams()
            .map(|team| Team { players: team.iter().flat_map(|t| m.players_of(t)).map(|p| p.0).collect() })
            .collect();
        let placement = self.sessions.as_ref().map(|sessions| sessions.place_match(rules, m).1);
        let (allocation, accept_by_unix_ms) = match placement {
            Some(Placement::Hosted(allocation)) => (Some(allocation), 0),
            Some(Placement::ReadyCheck { accept_by_ms }) => (None, accept_by_ms),
            Some(Placement::NoServer) => {
                metrics::counter!("rally_sessions_unallocated_total", "datacenter" => datacenter.clone()).increment(1);
                // Normal in dev (no game servers); the counter shows it in production.
                tracing::debug!(match_id = m.id.0, datacenter, "no game server with room; match sent without one");
                (None, 0)
            }
            None => (None, 0),
        };
        // A ready-checked match is kept too: if it falls through, its players go back.
        let keep = allocation.is_some() || accept_by_unix_ms != 0;
        let server_addr = allocation.as_ref().map_or_else(String::new, |a| a.server_addr.clone());
        let mut hosted = Hosted { tickets: Vec::new() };
        for ticket in &m.tickets {
            state.owners.remove(&ticket.id);
            // Party tickets (top bit set) are the admin API's: their members hear of the
            // match on the party's WebSocket, with everything after it.
            if ticket.id.0 & (1 << 63) != 0 {
                continue;
            }
            for player in m.players_of(ticket) {
                let Some(session) = state.sessions.get_mut(&player.0) else { continue };
                if session.ticket.as_ref().is_some_and(|t| t.id == ticket.id) {
                    let matched = session.ticket.take().expect("checked above");
                    if keep {
                        hosted.tickets.push((player.0, matched, ticket.wait_ms));
                    }
                }
                let connect_token = allocation
                    .as_ref()
                    .and_then(|a| a.connect_tokens.iter().find(|(p, _)| *p == player.0))
                    .map_or_else(String::new, |(_, token)| token.clone());
                let msg = ServerMsg::MatchFound(MatchFound {
                    ticket_id: ticket.id.0,
                    match_id: m.id.0,
                    mode: mode.clone(),
                    datacenter: datacenter.clone(),
                    server_addr: server_addr.clone(),
                    connect_token,
                    teams: teams.clone(),
                    formed_at_unix_us,
                    accept_by_unix_ms,
                });
                session.deliver(msg);
            }
        }
        if keep {
            state.hosted.insert(m.id.0, hosted);
        }
    }

    /// A player's answer to a ready check.
    pub fn respond(&self, player: u64, match_id: u64, accept: bool) -> Result<(), rally_sessions::SessionError> {
        let sessions = self.sessions.as_ref().ok_or(rally_sessions::SessionError::NoReadyCheck)?;
        sessions.respond(match_id, player, accept)
    }

    /// How long `player` must still wait before queueing, after a declined or missed
    /// ready check.
    pub fn cooldown_left_ms(&self, player: u64) -> Option<u64> {
        let sessions = self.sessions.as_ref()?;
        let now = rally_sessions::now_ms();
        sessions.lock().cooldown_until(player, now).map(|until| until - now)
    }

    /// Everyone accepted a ready-checked match: its players hear where to play.
    fn match_confirmed(&self, match_id: u64, allocation: Option<&rally_sessions::Allocation>) {
        let mut state = self.state();
        let hosted = if allocation.is_some() { state.hosted.get(&match_id) } else { None };
        let players: Vec<u64> = match (hosted, allocation) {
            (Some(h), _) => h.tickets.iter().map(|(p, ..)| *p).collect(),
            (None, _) => state
                .hosted
                .remove(&match_id)
                .map(|h| h.tickets.into_iter().map(|(p, ..)| p).collect())
                .unwrap_or_default(),
        };
        for player in players {
            let connect_token = allocation
                .and_then(|a| a.connect_tokens.iter().find(|(p, _)| *p == player))
                .map_or_else(String::new, |(_, t)| t.clone());
            let msg = ServerMsg::MatchConfirmed(rally_protocol::MatchConfirmed {
                match_id,
                server_addr: allocation.map_or_else(String::new, |a| a.server_addr.clone()),
                connect_token,
            });
            Self::push(&mut state, player, msg);
        }
    }

    /// A party notice for `player`, if they are connected (or in their grace period).
    pub fn push_party(&self, player: u64, notice: rally_lobby::PartyNotice) {
        let msg = ServerMsg::PartyEvent(rally_protocol::PartyEvent {
            party_id: notice.party_id,
            kind: notice.kind.to_owned(),
            player_id: notice.player,
            match_id: notice.match_id,
            flag: notice.flag,
            text: notice.text,
            connect_token: notice.connect_token,
        });
        Self::push(&mut self.state(), player, msg);
    }

    fn push(state: &mut State, player: u64, msg: ServerMsg) {
        if let Some(session) = state.sessions.get_mut(&player) {
            session.deliver(msg);
        }
    }
}

/// Hears of hosted matches' sessions ending.
pub(crate) struct HostedSessions(pub Arc<Hub>);

impl rally_sessions::SessionListener for HostedSessions {
    fn ended(&self, session: &rally_sessions::Session) {
        self.0.session_ended(session.match_id, session.state == rally_sessions::SessionState::Failed);
    }

    fn ready_check_settled(&self, outcome: &rally_sessions::ReadyOutcome) {
        match outcome {
            rally_sessions::ReadyOutcome::Confirmed { formed, allocation } => {
                self.0.match_confirmed(formed.match_id, allocation.as_ref());
            }
            rally_sessions::ReadyOutcome::FellThrough { formed, refused } => {
                self.0.fell_through(formed.match_id, refused)
            }
        }
    }
}

/// The edge's end of the shards' event sink. Hand a clone to `Runtime::start` and the
/// original to `EdgeDeps`: each shard then applies its events to the sessions on its own
/// thread, in its event order, with no thread in between (one wake-up fewer per reply).
#[derive(Clone, Default)]
pub struct ShardEvents {
    hub: Arc<std::sync::OnceLock<Arc<Hub>>>,
    also: Arc<std::sync::OnceLock<Arc<dyn rally_engine::EventSink>>>,
}

impl ShardEvents {
    /// A sink not yet attached to an edge.
    pub fn new() -> ShardEvents {
        ShardEvents::default()
    }

    /// Binds the sink to `hub`; `false` if another edge already has it.
    pub(crate) fn attach(&self, hub: Arc<Hub>) -> bool {
        self.hub.set(hub).is_ok()
    }

    /// Hands every shard event (not ticks) to `sink` too, after the edge has applied it
    /// (so a match has its game server by then). The admin API's parties listen here
    /// for their tickets. `false` if another sink was set first.
    pub fn also(&self, sink: Arc<dyn rally_engine::EventSink>) -> bool {
        self.also.set(sink).is_ok()
    }
}

impl rally_engine::EventSink for ShardEvents {
    fn deliver(&self, event: RuntimeEvent) {
        let (shard, event) = match event {
            RuntimeEvent::Tick { shard, duration, waiting, searches, .. } => {
                let shard = shard.0.to_string();
                metrics::histogram!("rally_engine_tick_seconds", "shard" => shard.clone())
                    .record(duration.as_secs_f64());
                metrics::counter!("rally_engine_searches_total", "shard" => shard.clone()).increment(searches);
                metrics::gauge!("rally_engine_waiting_tickets", "shard" => shard).set(waiting as f64);
                return;
            }
            RuntimeEvent::Shard { shard, event } => (shard, event),
        };
        if let (Event::Matched(m), Some(hub)) = (&event, self.hub.get()) {
            let mode = hub.rules.mode(m.mode).map_or_else(String::new, |mode| mode.name.clone());
            metrics::counter!("rally_engine_matches_total", "mode" => mode.clone()).increment(1);
            metrics::histogram!("rally_engine_mmr_spread", "mode" => mode.clone()).record(m.mmr_spread);
            metrics::histogram!("rally_engine_team_imbalance", "mode" => mode.clone()).record(m.team_imbalance);
            // One handle for the match's tickets, not a lookup (and a label copy) per ticket.
            let waits = metrics::histogram!("rally_engine_wait_seconds", "mode" => mode);
            for ticket in &m.tickets {
                waits.record(ticket.wait_ms as f64 / 1000.0);
            }
        }
        let also = self.also.get();
        let copy = also.map(|_| event.clone());
        match self.hub.get() {
            Some(hub) => hub.on_event(event),
            // The edge attaches before the node takes any command.
            None => tracing::warn!(?event, "shard event before the edge attached; dropped"),
        }
        if let (Some(sink), Some(event)) = (also, copy) {
            sink.deliver(RuntimeEvent::Shard { shard, event });
        }
    }
}

impl Session {
    /// Sends `msg` on the session's connection, or parks it for the resume: a
    /// connection that already ended gives the message back.
    fn deliver(&mut self, msg: ServerMsg) {
        match &self.conn {
            Some((_, tx)) => {
                if let Err(mpsc::error::SendError(Push::Send(msg))) = tx.send(Push::Send(msg)) {
                    self.parked.push(msg);
                }
            }
            None => self.parked.push(msg),
        }
    }
}

impl Ticket {
    pub fn waiting(&self) -> WaitingTicket {
        WaitingTicket { ticket_id: self.id.0, mode: self.mode.clone() }
    }
}

/// 128 random bits as hex.
fn new_resume_token() -> String {
    rally_sessions::random_hex_128()
}
