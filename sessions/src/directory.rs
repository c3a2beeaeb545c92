//! [`SessionDirectory`]: the [`Sessions`] registry shared between threads, with the wall
//! clock and the system RNG supplied.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

use crate::{
    Allocation, FormedMatch, Placement, ReadyOutcome, ServerId, ServerSpec, Session, SessionConfig, SessionError,
    Sessions,
};

/// [`Sessions`] behind a mutex. Every call holds it for a few map operations, never
/// across I/O: the edge allocates from a shard thread, the admin API from request tasks.
pub struct SessionDirectory {
    sessions: Mutex<Sessions>,
    rng: SystemRandom,
    listeners: Mutex<Vec<Arc<dyn SessionListener>>>,
}

/// Told when a session ends: it finished (a result was recorded) or failed (its server
/// stopped heartbeating). Called after the directory's lock is released.
pub trait SessionListener: Send + Sync + 'static {
    /// `session` has just ended; its state says how.
    fn ended(&self, session: &Session);
    /// A ready check settled: everyone accepted, or the match fell through.
    fn ready_check_settled(&self, _outcome: &ReadyOutcome) {}
}

impl SessionDirectory {
    /// An empty directory.
    pub fn new(config: SessionConfig) -> SessionDirectory {
        SessionDirectory {
            sessions: Mutex::new(Sessions::new(config)),
            rng: SystemRandom::new(),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Adds a listener for sessions ending.
    pub fn subscribe(&self, listener: Arc<dyn SessionListener>) {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).push(listener);
    }

    fn tell_ready(&self, outcomes: &[ReadyOutcome]) {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for outcome in outcomes {
            for listener in &listeners {
                listener.ready_check_settled(outcome);
            }
        }
    }

    /// A player's answer to a ready check, now; a settled check goes to the listeners.
    pub fn respond(&self, match_id: u64, player: u64, accept: bool) -> Result<(), SessionError> {
        let outcome = self.lock().respond(match_id, player, accept, now_ms())?;
        if let Some(outcome) = outcome {
            self.tell_ready(std::slice::from_ref(&outcome));
        }
        Ok(())
    }

    fn tell(&self, ended: &[Session]) {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for session in ended {
            for listener in &listeners {
                listener.ended(session);
            }
        }
    }

    /// The registry, locked.
    pub fn lock(&self) -> MutexGuard<'_, Sessions> {
        // A panic while holding the lock leaves maps that are still consistent (every
        // method finishes its changes before it can panic), so carry on.
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a server with a fresh random secret; its id and token.
    pub fn register(&self, spec: ServerSpec) -> Result<(ServerId, String), SessionError> {
        let mut secret = [0u8; 32];
        self.rng.fill(&mut secret).expect("the system RNG works");
        self.lock().register(spec, secret, now_ms())
    }

    /// Places a formed match on a server, now.
    pub fn allocate(&self, formed: &FormedMatch) -> Option<Allocation> {
        self.lock().allocate(formed, now_ms())
    }

    /// Places a match the engine formed (see [`Sessions::place`]), with its mode's ready
    /// check from `rules`. Every service that hears of the match may call this; the
    /// first call decides.
    pub fn place_match(&self, rules: &rally_engine::Rules, m: &rally_engine::Match) -> (FormedMatch, Placement) {
        let formed = formed_match(rules, m);
        let ready = rules
            .mode(m.mode)
            .and_then(|mode| mode.ready_check)
            .map(|check| (check.accept_timeout_ms, check.decline_cooldown_ms));
        let placement = self.lock().place(&formed, ready, now_ms());
        (formed, placement)
    }

    /// Fails sessions whose heartbeats stopped and ready checks past their deadline, as
    /// of now, and tells the listeners. The sessions that failed.
    pub fn expire(&self) -> Vec<Session> {
        let (failed, settled) = {
            let mut sessions = self.lock();
            let now = now_ms();
            (sessions.expire(now), sessions.expire_ready_checks(now))
        };
        self.tell_ready(&settled);
        self.tell(&failed);
        failed
    }

    /// Ends a result begun with [`Sessions::begin_result`] (see [`Sessions::end_result`])
    /// and, if it was recorded, tells the listeners.
    pub fn end_result(&self, match_id: u64, recorded: Option<Vec<u32>>) {
        let finished = {
            let mut sessions = self.lock();
            sessions.end_result(match_id, recorded, now_ms());
            sessions.session(match_id).filter(|s| matches!(s.state, crate::SessionState::Finished { .. })).cloned()
        };
        if let Some(session) = finished {
            self.tell(&[session]);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The sessions' view of an engine match: names instead of ids, player ids by team.
pub fn formed_match(rules: &rally_engine::Rules, m: &rally_engine::Match) -> FormedMatch {
    FormedMatch {
        match_id: m.id.0,
        mode: rules.mode(m.mode).map_or_else(String::new, |mode| mode.name.clone()),
        datacenter: rules.datacenter_name(m.datacenter).to_owned(),
        formed_at_ms: now_ms(),
        teams: m.teams().map(|team| team.iter().flat_map(|t| m.players_of(t)).map(|p| p.0).collect()).collect(),
    }
}
