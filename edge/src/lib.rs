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
    /// Kernel receive and send buffer asked for on the UDP socket, in bytes. Every
    /// client's packets arrive on this one socket: with the kernel's default (about
    /// 200 KiB, a hundred-odd small packets) a burst that lands while the endpoint task
    /// waits for a core overflows it, and each dropped packet costs its request a QUIC
    /// retransmission, milliseconds late. Linux caps the request at `net.core.rmem_max` /
    /// `wmem_max`; the edge warns when it got less. `None` keeps the system's default.
    pub udp_buffer_bytes: Option<usize>,
}

/// Default [`EdgeConfig::udp_buffer_bytes`]: 4 MiB, tens of milliseconds of packets at
/// tens of thousands of requests a second.
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

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
            udp_buffer_bytes: Some(UDP_BUFFER_BYTES),
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

/// Binds the edge's UDP socket as `quinn::Endpoint::server` does, then asks for the
/// buffers.
fn bind_udp(addr: SocketAddr, buffer_bytes: Option<usize>) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    if let Some(bytes) = buffer_bytes {
        ask_for_buffers(socket2::SockRef::from(&socket), bytes);
    }
    Ok(socket)
}

/// Asks the kernel for `bytes` of buffer each way, best effort: Linux grants at most
/// `net.core.rmem_max` / `wmem_max`, and some systems refuse a size over their limit
/// outright. The edge runs either way, and says so.
fn ask_for_buffers(socket: socket2::SockRef<'_>, bytes: usize) {
    let recv = socket.set_recv_buffer_size(bytes).and_then(|()| socket.recv_buffer_size()).map(granted_bytes);
    let send = socket.set_send_buffer_size(bytes).and_then(|()| socket.send_buffer_size()).map(granted_bytes);
    if !matches!((&recv, &send), (Ok(r), Ok(s)) if *r >= bytes && *s >= bytes) {
        tracing::warn!(
            asked = bytes,
            ?recv,
            ?send,
            "the kernel granted smaller UDP buffers than asked; raise net.core.rmem_max and \
             net.core.wmem_max, or bursts of packets may be dropped (netstat -su: receive buffer errors)"
        );
    }
}

/// The buffer a socket has, from the size it reports: Linux reports twice what it
/// grants (the other half is its bookkeeping).
fn granted_bytes(reported: usize) -> usize {
    if cfg!(any(target_os = "linux", target_os = "android")) { reported / 2 } else { reported }
}

/// Starts an edge on the current tokio runtime.
pub fn start(config: EdgeConfig, deps: EdgeDeps) -> Result<EdgeHandle, EdgeError> {
    let server_config = deps.tls.server_config(config.idle_timeout)?;
    let bind_failed = |source| EdgeError::Bind { addr: config.listen, source };
    let socket = bind_udp(config.listen, config.udp_buffer_bytes).map_err(bind_failed)?;
    let runtime = quinn::default_runtime().ok_or_else(|| bind_failed(std::io::Error::other("no tokio runtime")))?;
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server_config), socket, runtime)
        .map_err(bind_failed)?;
    let local_addr = endpoint.local_addr().map_err(bind_failed)?;
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_udp_socket_gets_the_buffers_asked_for() {
        // Below Linux's default (and so below any `rmem_max`): granted as asked, and the
        // socket reports it doubled, not the default it would have had.
        let socket = bind_udp("127.0.0.1:0".parse().expect("an address"), Some(64 * 1024)).expect("bound");
        let socket = socket2::SockRef::from(&socket);
        assert_eq!(socket.recv_buffer_size().expect("readable"), 128 * 1024);
        assert_eq!(socket.send_buffer_size().expect("readable"), 128 * 1024);
        assert_eq!(granted_bytes(128 * 1024), 64 * 1024);
    }
}
