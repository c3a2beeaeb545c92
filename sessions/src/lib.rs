//! Game-server sessions: which game server hosts each formed match, and what became of it.
//!
//! Game servers register with a datacenter, an address and a capacity, and get back a
//! server token. A formed match is given the least-loaded live server with room in its
//! datacenter, and each player a connect token: an HMAC of the match and player ids under
//! that server's secret, so the server checks a connecting player with no round trip.
//! The server heartbeats each session and reports its result once; a result is accepted
//! once per match (a repeat of the same result is answered as already recorded), and a
//! session whose heartbeats stop past a timeout fails.
//!
//! [`Sessions`] is sans-IO: time and secrets are arguments, there are no threads, sockets
//! or clocks inside. [`SessionDirectory`] wraps it for sharing between the edge (which
//! allocates as matches form) and the admin API (which serves the servers and players).
//! Deliberately absent: persistence (sessions live in the process that formed them), and
//! ratings (the admin API rates results).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod directory;

use std::collections::HashMap;

use ring::{digest, hmac};

pub use directory::{SessionDirectory, SessionListener, formed_match, now_ms};

/// A registered game server's id.
pub type ServerId = u64;

/// Timeouts and retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session whose server has not heartbeaten it for this long fails, ms.
    pub heartbeat_timeout_ms: u64,
    /// A server silent for this long gets no new sessions and is forgotten, ms.
    pub server_timeout_ms: u64,
    /// How long a finished or failed session is kept (for idempotent results and for
    /// players asking about it), ms.
    pub keep_ended_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { heartbeat_timeout_ms: 15_000, server_timeout_ms: 30_000, keep_ended_ms: 600_000 }
    }
}

impl SessionConfig {
    /// How often servers should heartbeat: a third of the shorter timeout.
    pub fn heartbeat_interval_ms(&self) -> u64 {
        self.heartbeat_timeout_ms.min(self.server_timeout_ms) / 3
    }
}

/// What a server says about itself when it registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    /// The datacenter it runs in.
    pub datacenter: String,
    /// Where players connect (`host:port`).
    pub address: String,
    /// Matches it can host at once.
    pub capacity: u32,
}

/// A match the engine formed, as sessions need it.
#[derive(Clone, Debug, PartialEq)]
pub struct FormedMatch {
    /// The engine's match id.
    pub match_id: u64,
    /// The mode name.
    pub mode: String,
    /// Where it is to be played.
    pub datacenter: String,
    /// Formation time, ms since the Unix epoch.
    pub formed_at_ms: u64,
    /// Player ids by team.
    pub teams: Vec<Vec<u64>>,
}

/// A ready check in progress: the match waits for every player to accept.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadyCheck {
    /// The match.
    pub formed: FormedMatch,
    /// When it falls through if not everyone accepted, ms since the Unix epoch.
    pub deadline_ms: u64,
    /// How long decliners and silent players are kept out of the queue, ms.
    pub cooldown_ms: u64,
    /// Who accepted so far.
    pub accepted: Vec<u64>,
}

/// How a ready check ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadyOutcome {
    /// Everyone accepted: the match is played (on `allocation`'s server, if one had room).
    Confirmed {
        /// The match.
        formed: FormedMatch,
        /// Its server and connect tokens.
        allocation: Option<Allocation>,
    },
    /// Someone declined or did not answer in time.
    FellThrough {
        /// The match.
        formed: FormedMatch,
        /// Who declined or stayed silent: they are on cooldown.
        refused: Vec<u64>,
    },
}

/// What became of a formed match.
#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    /// Played without a game server (none had room, or none is registered).
    NoServer,
    /// On a game server.
    Hosted(Allocation),
    /// Waiting for its players to accept, until then (ms since the Unix epoch).
    ReadyCheck {
        /// The deadline.
        accept_by_ms: u64,
    },
}

/// How many recent server-less matches [`Sessions::place`] remembers.
const UNPLACED_MEMORY: usize = 65_536;

/// Where a match is played, and each player's ticket in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The server.
    pub server_id: ServerId,
    /// Its address.
    pub server_addr: String,
    /// `(player, connect token)` for every player.
    pub connect_tokens: Vec<(u64, String)>,
}

/// Where a session is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionState {
    /// Being played.
    Active,
    /// A result is being rated and stored.
    Reporting,
    /// Played; the teams' places, 1 = first.
    Finished {
        /// Place per team.
        placements: Vec<u32>,
    },
    /// The server stopped heartbeating it (or went away).
    Failed,
}

impl SessionState {
    /// A stable lowercase name.
    pub fn name(&self) -> &'static str {
        match self {
            SessionState::Active => "active",
            SessionState::Reporting => "reporting",
            SessionState::Finished { .. } => "finished",
            SessionState::Failed => "failed",
        }
    }
}

/// A match on a game server.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// The match.
    pub match_id: u64,
    /// Its mode.
    pub mode: String,
    /// Its datacenter.
    pub datacenter: String,
    /// Formation time, ms since the Unix epoch.
    pub formed_at_ms: u64,
    /// Player ids by team.
    pub teams: Vec<Vec<u64>>,
    /// The hosting server.
    pub server_id: ServerId,
    /// Its address.
    pub server_addr: String,
    /// Where it is in its life.
    pub state: SessionState,
    /// The last heartbeat (or allocation), ms since the Unix epoch.
    pub last_heartbeat_ms: u64,
    /// When it finished or failed.
    pub ended_at_ms: Option<u64>,
}

impl Session {
    /// Whether `player` plays in it.
    pub fn has_player(&self, player: u64) -> bool {
        self.teams.iter().flatten().any(|&p| p == player)
    }
}

/// What answering a result report should do.
#[derive(Clone, Debug, PartialEq)]
pub enum ResultStart {
    /// A first result: rate it, then call [`Sessions::end_result`].
    Rate(Session),
    /// The same result was already recorded: answer as before, change nothing.
    AlreadyRecorded(Session),
}

/// Why a sessions call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The server token is malformed or unknown.
    #[error("unknown or malformed server token")]
    BadServerToken,
    /// No such server (never registered, or forgotten after going silent).
    #[error("no such game server")]
    UnknownServer,
    /// No such session (never allocated, or forgotten long after it ended).
    #[error("no such session")]
    UnknownSession,
    /// The session belongs to another server.
    #[error("this session is hosted by another server")]
    WrongServer,
    /// The session already ended (finished or failed).
    #[error("the session has ended")]
    Ended,
    /// A different result was already recorded for the match.
    #[error("a different result was already recorded for this match")]
    ConflictingResult,
    /// A result for the match is being recorded right now; retry shortly.
    #[error("a result for this match is being recorded")]
    ResultInProgress,
    /// Not one place per team, or a place of 0.
    #[error("expected one place (1 = first) per team")]
    BadPlacements,
    /// The match has no ready check in progress (never had one, or it is settled).
    #[error("no ready check is in progress for this match")]
    NoReadyCheck,
    /// The player is not in the match.
    #[error("you are not a player of this match")]
    NotInMatch,
    /// A server spec with no datacenter or address, an address longer than 255 bytes, or
    /// no capacity.
    #[error("a server needs a datacenter, an address (at most 255 bytes) and a capacity of at least 1")]
    BadSpec,
}

struct Server {
    spec: ServerSpec,
    token_digest: digest::Digest,
    connect_key: hmac::Key,
    active: u32,
    last_seen_ms: u64,
}

/// The registry of game servers and their sessions.
pub struct Sessions {
    config: SessionConfig,
    servers: HashMap<ServerId, Server>,
    sessions: HashMap<u64, Session>,
    ready_checks: HashMap<u64, ReadyCheck>,
    /// Players who declined or ignored a ready check, until when they may queue again.
    cooldowns: HashMap<u64, u64>,
    /// Recently formed matches that have no server and no ready check in progress (none
    /// had room, or their ready check settled), so placing one again (every event sink
    /// may ask) does not start anything new: the order, and a set to look them up.
    unplaced: std::collections::VecDeque<u64>,
    unplaced_set: std::collections::HashSet<u64>,
    next_server: ServerId,
}

impl Sessions {
    /// An empty registry.
    pub fn new(config: SessionConfig) -> Sessions {
        Sessions {
            config,
            servers: HashMap::new(),
            sessions: HashMap::new(),
            ready_checks: HashMap::new(),
            cooldowns: HashMap::new(),
            unplaced: std::collections::VecDeque::new(),
            unplaced_set: std::collections::HashSet::new(),
            next_server: 1,
        }
    }

    /// The settings.
    pub fn config(&self) -> SessionConfig {
        self.config
    }

    /// Registers a server; its token is `ID.SECRET` with `secret` (random, from the
    /// caller) in hex.
    pub fn register(
        &mut self,
        spec: ServerSpec,
        secret: [u8; 32],
        now_ms: u64,
    ) -> Result<(ServerId, String), SessionError> {
        if spec.datacenter.is_empty() || spec.address.is_empty() || spec.address.len() > 255 || spec.capacity == 0 {
            return Err(SessionError::BadSpec);
        }
        let id = self.next_server;
        self.next_server += 1;
        let token = format!("{id}.{}", hex(&secret));
        let server = Server {
            spec,
            token_digest: digest::digest(&digest::SHA256, token.as_bytes()),
            connect_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            active: 0,
            last_seen_ms: now_ms,
        };
        self.servers.insert(id, server);
        Ok((id, token))
    }

    /// The server a token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<ServerId, SessionError> {
        let id: ServerId =
            token.split_once('.').and_then(|(id, _)| id.parse().ok()).ok_or(SessionError::BadServerToken)?;
        let server = self.servers.get(&id).ok_or(SessionError::BadServerToken)?;
        // Comparing digests: a timing difference says nothing about the token itself.
        if digest::digest(&digest::SHA256, token.as_bytes()).as_ref() == server.token_digest.as_ref() {
            Ok(id)
        } else {
            Err(SessionError::BadServerToken)
        }
    }

    /// A server's heartbeat; its active sessions (how it learns of new ones).
    pub fn server_heartbeat(&mut self, server: ServerId, now_ms: u64) -> Result<Vec<&Session>, SessionError> {
        let s = self.servers.get_mut(&server).ok_or(SessionError::UnknownServer)?;
        s.last_seen_ms = now_ms;
        let mut active: Vec<&Session> = self
            .sessions
            .values()
            .filter(|x| x.server_id == server && matches!(x.state, SessionState::Active | SessionState::Reporting))
            .collect();
        active.sort_by_key(|x| x.match_id);
        Ok(active)
    }

    /// A server leaves: it gets no new sessions, and its token stops working, so its
    /// active sessions fail at their heartbeat deadline.
    pub fn deregister(&mut self, server: ServerId) -> Result<(), SessionError> {
        self.servers.remove(&server).map(drop).ok_or(SessionError::UnknownServer)
    }

    /// Places a formed match on the least-loaded live server with room in its
    /// datacenter; `None` if there is none (the match is played without a server).
    pub fn allocate(&mut self, formed: &FormedMatch, now_ms: u64) -> Option<Allocation> {
        if self.sessions.contains_key(&formed.match_id) {
            return None;
        }
        let timeout = self.config.server_timeout_ms;
        let (&server_id, server) = self
            .servers
            .iter_mut()
            .filter(|(_, s)| {
                s.spec.datacenter == formed.datacenter
                    && s.active < s.spec.capacity
                    && now_ms.saturating_sub(s.last_seen_ms) < timeout
            })
            // Least loaded by share of capacity; ties to the lowest id, for determinism.
            .min_by(|(a_id, a), (b_id, b)| {
                let load = |s: &Server| u64::from(s.active) * 1_000_000 / u64::from(s.spec.capacity);
                load(a).cmp(&load(b)).then(a_id.cmp(b_id))
            })?;
        server.active += 1;
        let connect_tokens = formed
            .teams
            .iter()
            .flatten()
            .map(|&player| (player, connect_token(&server.connect_key, formed.match_id, player)))
            .collect();
        let server_addr = server.spec.address.clone();
        self.sessions.insert(
            formed.match_id,
            Session {
                match_id: formed.match_id,
                mode: formed.mode.clone(),
                datacenter: formed.datacenter.clone(),
                formed_at_ms: formed.formed_at_ms,
                teams: formed.teams.clone(),
                server_id,
                server_addr: server_addr.clone(),
                state: SessionState::Active,
                last_heartbeat_ms: now_ms,
                ended_at_ms: None,
            },
        );
        Some(Allocation { server_id, server_addr, connect_tokens })
    }

    /// Places a formed match, once: with a ready check (`ready`: accept timeout and
    /// decline cooldown, ms) it waits for its players; otherwise it goes on the
    /// least-loaded server with room. Asking again returns what was decided then.
    pub fn place(&mut self, formed: &FormedMatch, ready: Option<(u64, u64)>, now_ms: u64) -> Placement {
        let id = formed.match_id;
        if let Some(check) = self.ready_checks.get(&id) {
            return Placement::ReadyCheck { accept_by_ms: check.deadline_ms };
        }
        if self.sessions.contains_key(&id) || self.unplaced_set.contains(&id) {
            return self.placement(id);
        }
        if let Some((timeout_ms, cooldown_ms)) = ready {
            self.propose(formed.clone(), now_ms + timeout_ms, cooldown_ms);
            return Placement::ReadyCheck { accept_by_ms: now_ms + timeout_ms };
        }
        match self.allocate(formed, now_ms) {
            Some(allocation) => Placement::Hosted(allocation),
            None => {
                self.remember_unplaced(id);
                Placement::NoServer
            }
        }
    }

    fn remember_unplaced(&mut self, match_id: u64) {
        if self.unplaced.len() >= UNPLACED_MEMORY
            && let Some(oldest) = self.unplaced.pop_front()
        {
            self.unplaced_set.remove(&oldest);
        }
        if self.unplaced_set.insert(match_id) {
            self.unplaced.push_back(match_id);
        }
    }

    /// What [`Sessions::place`] decided for a match (`NoServer` for one it never saw).
    pub fn placement(&self, match_id: u64) -> Placement {
        if let Some(check) = self.ready_checks.get(&match_id) {
            return Placement::ReadyCheck { accept_by_ms: check.deadline_ms };
        }
        let Some(session) = self.sessions.get(&match_id) else { return Placement::NoServer };
        let connect_tokens =
            session.teams.iter().flatten().filter_map(|&p| Some((p, self.connect_token(match_id, p)?))).collect();
        Placement::Hosted(Allocation {
            server_id: session.server_id,
            server_addr: session.server_addr.clone(),
            connect_tokens,
        })
    }

    /// Holds a formed match until every player accepts it (or `deadline_ms` passes).
    pub fn propose(&mut self, formed: FormedMatch, deadline_ms: u64, cooldown_ms: u64) {
        let check = ReadyCheck { formed, deadline_ms, cooldown_ms, accepted: Vec::new() };
        self.ready_checks.insert(check.formed.match_id, check);
    }

    /// A ready check in progress.
    pub fn ready_check(&self, match_id: u64) -> Option<&ReadyCheck> {
        self.ready_checks.get(&match_id)
    }

    /// `player` accepts or declines a proposed match. `Some` when that settles it: the
    /// last acceptance confirms it (and places it on a server), a decline sinks it.
    pub fn respond(
        &mut self,
        match_id: u64,
        player: u64,
        accept: bool,
        now_ms: u64,
    ) -> Result<Option<ReadyOutcome>, SessionError> {
        let check = self.ready_checks.get_mut(&match_id).ok_or(SessionError::NoReadyCheck)?;
        if !check.formed.teams.iter().flatten().any(|&p| p == player) {
            return Err(SessionError::NotInMatch);
        }
        if !accept {
            let check = self.ready_checks.remove(&match_id).expect("found above");
            self.remember_unplaced(match_id);
            self.cooldowns.insert(player, now_ms + check.cooldown_ms);
            return Ok(Some(ReadyOutcome::FellThrough { formed: check.formed, refused: vec![player] }));
        }
        if !check.accepted.contains(&player) {
            check.accepted.push(player);
        }
        let everyone = check.formed.teams.iter().map(Vec::len).sum::<usize>();
        if check.accepted.len() < everyone {
            return Ok(None);
        }
        let check = self.ready_checks.remove(&match_id).expect("found above");
        let allocation = self.allocate(&check.formed, now_ms);
        if allocation.is_none() {
            self.remember_unplaced(match_id);
        }
        Ok(Some(ReadyOutcome::Confirmed { formed: check.formed, allocation }))
    }

    /// Until when `player` may not queue (they declined or ignored a ready check), if
    /// that is still in the future.
    pub fn cooldown_until(&self, player: u64, now_ms: u64) -> Option<u64> {
        self.cooldowns.get(&player).copied().filter(|&until| until > now_ms)
    }

    /// A session, by match id.
    pub fn session(&self, match_id: u64) -> Option<&Session> {
        self.sessions.get(&match_id)
    }

    /// `player`'s connect token for a session.
    pub fn connect_token(&self, match_id: u64, player: u64) -> Option<String> {
        let session = self.sessions.get(&match_id).filter(|s| s.has_player(player))?;
        let server = self.servers.get(&session.server_id)?;
        Some(connect_token(&server.connect_key, match_id, player))
    }

    /// The hosting server's heartbeat for one session.
    pub fn session_heartbeat(&mut self, match_id: u64, server: ServerId, now_ms: u64) -> Result<(), SessionError> {
        let session = self.owned_session(match_id, server)?;
        match session.state {
            SessionState::Active | SessionState::Reporting => {
                session.last_heartbeat_ms = now_ms;
                if let Some(s) = self.servers.get_mut(&server) {
                    s.last_seen_ms = now_ms;
                }
                Ok(())
            }
            SessionState::Finished { .. } | SessionState::Failed => Err(SessionError::Ended),
        }
    }

    /// Starts recording a result: the teams' places (1 = first; equal places tie).
    pub fn begin_result(
        &mut self,
        match_id: u64,
        server: ServerId,
        placements: &[u32],
    ) -> Result<ResultStart, SessionError> {
        let session = self.owned_session(match_id, server)?;
        if placements.len() != session.teams.len() || placements.contains(&0) {
            return Err(SessionError::BadPlacements);
        }
        match &session.state {
            SessionState::Active => {
                session.state = SessionState::Reporting;
                Ok(ResultStart::Rate(session.clone()))
            }
            SessionState::Reporting => Err(SessionError::ResultInProgress),
            SessionState::Finished { placements: recorded } if recorded == placements => {
                Ok(ResultStart::AlreadyRecorded(session.clone()))
            }
            SessionState::Finished { .. } => Err(SessionError::ConflictingResult),
            SessionState::Failed => Err(SessionError::Ended),
        }
    }

    /// Ends a result begun with [`Sessions::begin_result`]: `Some(placements)` if it was
    /// recorded, `None` if recording failed (the session is active again, and the server
    /// may retry).
    pub fn end_result(&mut self, match_id: u64, recorded: Option<Vec<u32>>, now_ms: u64) {
        let Some(session) = self.sessions.get_mut(&match_id) else { return };
        if session.state != SessionState::Reporting {
            return;
        }
        match recorded {
            Some(placements) => {
                session.state = SessionState::Finished { placements };
                session.ended_at_ms = Some(now_ms);
                if let Some(server) = self.servers.get_mut(&session.server_id) {
                    server.active = server.active.saturating_sub(1);
                }
            }
            None => session.state = SessionState::Active,
        }
    }

    /// Ready checks past their deadline fall through; their silent players go on
    /// cooldown. Expired cooldowns are forgotten.
    pub fn expire_ready_checks(&mut self, now_ms: u64) -> Vec<ReadyOutcome> {
        let due: Vec<u64> =
            self.ready_checks.values().filter(|c| c.deadline_ms <= now_ms).map(|c| c.formed.match_id).collect();
        let mut outcomes = Vec::with_capacity(due.len());
        for match_id in due {
            let check = self.ready_checks.remove(&match_id).expect("listed above");
            self.remember_unplaced(match_id);
            let refused: Vec<u64> =
                check.formed.teams.iter().flatten().copied().filter(|p| !check.accepted.contains(p)).collect();
            for &player in &refused {
                self.cooldowns.insert(player, now_ms + check.cooldown_ms);
            }
            outcomes.push(ReadyOutcome::FellThrough { formed: check.formed, refused });
        }
        self.cooldowns.retain(|_, until| *until > now_ms);
        outcomes.sort_by_key(|o| match o {
            ReadyOutcome::Confirmed { formed, .. } | ReadyOutcome::FellThrough { formed, .. } => formed.match_id,
        });
        outcomes
    }

    /// Fails sessions whose heartbeats stopped, forgets silent servers and long-ended
    /// sessions. Returns the sessions that failed now, for their players to be told.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Session> {
        let config = self.config;
        let mut failed = Vec::new();
        for session in self.sessions.values_mut() {
            if session.state == SessionState::Active
                && now_ms.saturating_sub(session.last_heartbeat_ms) >= config.heartbeat_timeout_ms
            {
                session.state = SessionState::Failed;
                session.ended_at_ms = Some(now_ms);
                if let Some(server) = self.servers.get_mut(&session.server_id) {
                    server.active = server.active.saturating_sub(1);
                }
                failed.push(session.clone());
            }
        }
        self.sessions
            .retain(|_, s| s.ended_at_ms.is_none_or(|ended| now_ms.saturating_sub(ended) < config.keep_ended_ms));
        self.servers.retain(|_, s| now_ms.saturating_sub(s.last_seen_ms) < config.server_timeout_ms);
        failed.sort_by_key(|s| s.match_id);
        failed
    }

    /// Live servers and sessions being played, for metrics.
    pub fn counts(&self) -> (usize, usize) {
        let playing =
            self.sessions.values().filter(|s| matches!(s.state, SessionState::Active | SessionState::Reporting));
        (self.servers.len(), playing.count())
    }

    fn owned_session(&mut self, match_id: u64, server: ServerId) -> Result<&mut Session, SessionError> {
        let session = self.sessions.get_mut(&match_id).ok_or(SessionError::UnknownSession)?;
        if session.server_id != server {
            return Err(SessionError::WrongServer);
        }
        Ok(session)
    }
}

/// The token a player shows the game server: HMAC-SHA256 of `MATCH:PLAYER` under the
/// server's secret, in hex. The server computes the same to check it.
pub fn connect_token(key: &hmac::Key, match_id: u64, player: u64) -> String {
    hex(hmac::sign(key, format!("{match_id}:{player}").as_bytes()).as_ref())
}

/// 128 bits from the system's secure RNG, as lowercase hex: secrets and resume tokens.
pub fn random_hex_128() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system RNG works");
    hex(&bytes)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests;
