//! [`SessionDirectory`]: the [`Sessions`] registry shared between threads, with the wall
//! clock and the system RNG supplied.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

use crate::{Allocation, FormedMatch, ServerId, ServerSpec, Session, SessionConfig, SessionError, Sessions};

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

    /// Fails sessions whose heartbeats stopped, as of now, and tells the listeners.
    pub fn expire(&self) -> Vec<Session> {
        let failed = self.lock().expire(now_ms());
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
