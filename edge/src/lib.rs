//! Rally's QUIC edge: where game clients connect.
//!
//! An edge terminates QUIC (quinn, rustls with ring; TLS always), checks each
//! connection's `Hello` (protocol version, EdDSA access token verified with the public key
//! only), and then serves the client's requests: enqueue, cancel, ticket status, datagram
//! pings. Tickets go to the engine shard of the player's region through a
//! [`ShardRouter`]; shard events come back through [`ShardEvents`], applied on each
//! shard's thread, which answers requests and pushes `MatchFound` to every matched
//! player's connection.
//!
//! Limits per connection (frame size, requests per second, requests in flight, idle
//! timeout, handshake timeout) answer with typed errors or close codes. A dropped
//! connection keeps its ticket for a grace period, and the client resumes with the resume
//! token from its `Welcome`. [`EdgeHandle::shutdown`] closes every connection with
//! `ShuttingDown` and waits for them to go.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod hub;
mod ratings;
mod tls;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use rally_auth::TokenVerifier;
use rally_engine::Rules;
use rally_protocol::CloseCode;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use hub::ShardEvents;
pub use rally_engine::{InProcessRouter, ShardRouter};
pub use ratings::{
    RATING_CACHE_CAPACITY, RATING_CACHE_TTL, RatingError, RatingFuture, RatingSource, StoreRatings, TokenRatings,
};
pub use tls::{TlsError, TlsIdentity, fingerprint, fingerprint_hex};

/// Per-connection limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Sustained requests per second.
    pub requests_per_s: NonZeroU32,
    /// Requests allowed in a burst above the sustained rate.
    pub burst: NonZeroU32,
    /// Requests sent to the engine and not yet answered.
    pub max_in_flight: usize,
    /// Refused requests in a row after which the connection is closed as a flood.
    pub flood_close_after: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_s: NonZeroU32::new(20).expect("non-zero"),
            burst: NonZeroU32::new(40).expect("non-zero"),
            max_in_flight: 8,
            flood_close_after: 200,
        }
    }
}

/// Edge settings.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Per-connection limits.
    pub limits: Limits,
    /// How long a dropped connection's ticket is kept for the client to resume.
    pub grace: Duration,
    /// How long a new connection may take to send `Hello`.
    pub hello_timeout: Duration,
    /// A connection silent this long is dropped (clients keep alive well within it).
    pub idle_timeout: Duration,
    /// How long a request may wait for its shard's answer.
    pub request_timeout: Duration,
    /// How long shutdown waits for connections to close.
    pub drain_timeout: Duration,
    /// Where clients ping each datacenter (`name → host:port`); datacenters not listed are
    /// pinged at this edge's own address.
    pub ping_addrs: Vec<(String, String)>,
}

impl EdgeConfig {
    /// Defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> EdgeConfig {
        EdgeConfig {
            listen,
            limits: Limits::default(),
            grace: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            ping_addrs: Vec::new(),
        }
    }
}

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The `ShardEvents` given already feed another edge.
    #[error("these shard events already feed another edge")]
    EventsInUse,
}

/// What the edge needs besides its config.
pub struct EdgeDeps {
    /// The validated rules the shards run.
    pub rules: Arc<Rules>,
    /// How commands reach the shards.
    pub router: Arc<dyn ShardRouter>,
    /// The sink the shards were started with (`Runtime::start(…, events.clone())`).
    pub events: ShardEvents,
    /// Verifies access tokens.
    pub verifier: TokenVerifier,
    /// Where ratings come from.
    pub ratings: Arc<dyn RatingSource>,
    /// The certificate the edge presents.
    pub tls: TlsIdentity,
    /// Where formed matches get a game server and connect tokens (in `MatchFound`);
    /// `None` sends matches without one.
    pub sessions: Option<Arc<rally_sessions::SessionDirectory>>,
    /// Where parties live (the admin API's lobby): party operations over QUIC go there,
    /// and its notices come back as `PartyEvent` pushes. `None` refuses them.
    pub parties: Option<Arc<dyn rally_lobby::PartyGateway>>,
}

/// A running edge.
pub struct EdgeHandle {
    local_addr: SocketAddr,
    fingerprint: [u8; 32],
    endpoint: quinn::Endpoint,
    shutdown: watch::Sender<bool>,
    hub: Arc<hub::Hub>,
    accept: tokio::task::JoinHandle<()>,
    drain_timeout: Duration,
}

/// Starts an edge on the current tokio runtime.
pub fn start(config: EdgeConfig, deps: EdgeDeps) -> Result<EdgeHandle, EdgeError> {
    let server_config = deps.tls.server_config(config.idle_timeout)?;
    let endpoint = quinn::Endpoint::server(server_config, config.listen)
        .map_err(|source| EdgeError::Bind { addr: config.listen, source })?;
    let local_addr = endpoint.local_addr().map_err(|source| EdgeError::Bind { addr: config.listen, source })?;
    let hub = Arc::new(hub::Hub::new(deps.rules.clone(), deps.router, config.grace, deps.sessions.clone()));
    if !deps.events.attach(hub.clone()) {
        return Err(EdgeError::EventsInUse);
    }
    if let Some(sessions) = &deps.sessions {
        sessions.subscribe(Arc::new(hub::HostedSessions(hub.clone())));
    }
    if let Some(parties) = &deps.parties {
        let _ = hub.parties.set(parties.clone());
        let hub = Arc::downgrade(&hub);
        parties.notify(Arc::new(move |player, notice| {
            if let Some(hub) = hub.upgrade() {
                hub.push_party(player, notice);
            }
        }));
    }
    let datacenters = deps
        .rules
        .datacenters
        .iter()
        .map(|name| rally_protocol::Datacenter {
            name: name.clone(),
            ping_addr: config
                .ping_addrs
                .iter()
                .find(|(dc, _)| dc == name)
                .map_or_else(|| local_addr.to_string(), |(_, addr)| addr.clone()),
        })
        .collect();
    let drain_timeout = config.drain_timeout;
    let shared = Arc::new(conn::Shared {
        hub: hub.clone(),
        verifier: deps.verifier,
        ratings: deps.ratings,
        config,
        datacenters,
        parties: deps.parties,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(endpoint.clone(), shared, shutdown_rx));
    tracing::info!(%local_addr, fingerprint = %fingerprint_hex(&deps.tls.fingerprint()), "edge listening");
    Ok(EdgeHandle { local_addr, fingerprint: deps.tls.fingerprint(), endpoint, shutdown, hub, accept, drain_timeout })
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<conn::Shared>, shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    connections.spawn(conn::serve(shared.clone(), incoming, shutdown.clone()));
                }
                None => break,
            },
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    // Shutdown: every connection task sees the signal and closes with `ShuttingDown`.
    while connections.join_next().await.is_some() {}
}

impl EdgeHandle {
    /// The address the edge listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 of the edge's certificate, for clients to pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Stops accepting, closes every connection with `ShuttingDown` (after the replies
    /// already computed), and waits up to the drain timeout for them to go.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.hub.close_all(CloseCode::ShuttingDown, "the edge is shutting down");
        if tokio::time::timeout(self.drain_timeout, self.accept).await.is_err() {
            tracing::warn!("connections still open after the drain timeout; closing them");
        }
        self.endpoint.close(quinn::VarInt::from_u32(CloseCode::ShuttingDown.number()), b"the edge is shutting down");
        let _ = tokio::time::timeout(self.drain_timeout, self.endpoint.wait_idle()).await;
    }
}
