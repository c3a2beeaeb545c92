//! Rally's game-client SDK.
//!
//! [`Client::connect`] opens a QUIC connection to an edge (TLS pinned to a fingerprint or
//! checked against root CAs), sends `Hello` with the player's access token, and returns
//! the edge's `Welcome`. Then: [`Client::measure_rtt`] pings each datacenter, and
//! [`Client::enqueue`] / [`Client::cancel`] / [`Client::ticket_status`] make requests;
//! [`Client::next_event`] yields `MatchFound` and connection events.
//!
//! If the network drops, the client reconnects by itself within the edge's grace period
//! and presents its resume token, so its ticket keeps its place in the queue. Requests in
//! flight at the drop fail with [`ClientError::ConnectionLost`] (retryable); requests
//! made while it reconnects go out once it has. Once the connection is over for good
//! ([`ClientEvent::Closed`]), every request fails with the error that ended it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use quinn::{Connection, RecvStream, SendStream, VarInt};
use rally_protocol::rkyv::{self, rancor};
use rally_protocol::{
    ArchivedDatagram, Cancel, ClientMsg, CloseCode, Datagram, Enqueue, FrameReader, Hello, PROTOCOL_VERSION,
    PartyRequest, Ping, RespondToMatch, ServerMsg, TicketStatusRequest, WaitingTicket, decode_datagram, decode_server,
    encode_client, encode_datagram, encode_hello,
};
use tokio::sync::{Mutex, mpsc, oneshot};

pub use rally_protocol::{
    DatacenterRtt, ErrorCode, MatchConfirmed, MatchFound, PartyEvent, PartyOp, PartyReady, PartyState, Team, Welcome,
};
pub use tls::Trust;

/// How to reach and authenticate with an edge.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The edge's UDP address.
    pub addr: SocketAddr,
    /// The name the edge's certificate carries (any name works with a pinned fingerprint).
    pub server_name: String,
    /// Which certificates to accept.
    pub trust: Trust,
    /// The player's access token.
    pub access_token: String,
    /// How often to send keep-alives (well under the edge's idle timeout).
    pub keep_alive: Duration,
    /// A connection silent this long is considered dropped.
    pub idle_timeout: Duration,
    /// How long a request may wait for its reply.
    pub request_timeout: Duration,
    /// After a drop, how long to keep trying to resume (the edge's grace period).
    pub resume_window: Duration,
    /// Kernel receive and send buffer to ask for on the UDP socket, in bytes; `None`
    /// keeps the system's default, plenty for one connection. Tools that put thousands of
    /// connections on one endpoint (`rally loadgen`) ask for more, or packets that arrive
    /// while they wait for a core are dropped and come back as retransmissions,
    /// milliseconds late. The kernel may grant less (Linux: `net.core.rmem_max` and
    /// `wmem_max`); a warning is logged then. Used where this config makes the endpoint
    /// ([`Client::connect`], [`endpoint`]), not by [`Client::connect_on`].
    pub udp_buffer_bytes: Option<usize>,
}

impl ClientConfig {
    /// Defaults for `addr` with the given trust and token.
    pub fn new(addr: SocketAddr, trust: Trust, access_token: impl Into<String>) -> ClientConfig {
        ClientConfig {
            addr,
            server_name: "localhost".into(),
            trust,
            access_token: access_token.into(),
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
            resume_window: Duration::from_secs(10),
            udp_buffer_bytes: None,
        }
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ClientError {
    /// The QUIC/TLS connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The edge closed the connection; `code` is `None` for a code this SDK does not know.
    #[error("closed by the edge: {code:?} ({raw}) {reason}")]
    Closed {
        /// The close code.
        code: Option<CloseCode>,
        /// Its number.
        raw: u64,
        /// The edge's reason text.
        reason: String,
    },
    /// The edge refused a request (or the `Hello`).
    #[error("edge error {code:?} ({raw}): {message}")]
    Server {
        /// The error code; `None` for a code newer than this SDK.
        code: Option<ErrorCode>,
        /// Its number.
        raw: u16,
        /// Whether the same request may succeed later.
        retryable: bool,
        /// For humans.
        message: String,
    },
    /// The connection dropped before the reply; retry once resumed.
    #[error("connection lost")]
    ConnectionLost,
    /// No reply within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The edge sent bytes that are not the protocol.
    #[error("protocol violation by the edge: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether the same call may succeed if made again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Server { retryable, .. } => *retryable,
            ClientError::ConnectionLost | ClientError::Timeout => true,
            _ => false,
        }
    }

    /// The error code, for `Server` errors.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => *code,
            _ => None,
        }
    }
}

/// Something the edge or the connection did on its own.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// The player's ticket was matched.
    MatchFound(MatchFound),
    /// Everyone accepted a ready-checked match: where to play it.
    MatchConfirmed(MatchConfirmed),
    /// Something happened to the player's party (a member joined, the party was
    /// queued or matched, a chat message, …).
    Party(PartyEvent),
    /// A match fell through (its game server stopped answering, or someone declined or
    /// ignored its ready check); `ticket` is the player's
    /// new ticket, which counts the wait served before the match.
    MatchAbandoned {
        /// The match from the earlier `MatchFound`.
        match_id: u64,
        /// The new ticket, if the edge could queue the player again.
        ticket: Option<WaitingTicket>,
    },
    /// The network dropped; the client is reconnecting.
    Reconnecting,
    /// Reconnected within the grace period; `ticket` is the ticket that kept its place.
    Resumed {
        /// The ticket carried over, if it is still waiting.
        ticket: Option<WaitingTicket>,
    },
    /// Reconnected, but the edge had dropped the session: any ticket is gone.
    Restarted,
    /// The connection is over for good (closed by the edge, or resume failed).
    Closed(ClientError),
}

/// A connected client. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    /// Why the connection is over for good, once it is (set by the driver as it stops).
    ended: Arc<OnceLock<ClientError>>,
    events: Mutex<mpsc::UnboundedReceiver<ClientEvent>>,
    next_request: AtomicU32,
    request_timeout: Duration,
    /// Where the control connection goes, and the name its certificate carries.
    addr: SocketAddr,
    server_name: String,
    endpoint: quinn::Endpoint,
    /// Whether the client made `endpoint` itself (and so waits for it to go idle on close).
    own_endpoint: bool,
}

enum Command {
    Request { msg: ClientMsg, reply: oneshot::Sender<Result<ServerMsg, ClientError>> },
    Ping { reply: oneshot::Sender<Duration> },
    Close,
}

impl Client {
    /// Connects, says hello, and returns the client with the edge's welcome.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Welcome), ClientError> {
        let endpoint = endpoint(&config)?;
        let (mut client, welcome) = Self::connect_on(endpoint, config).await?;
        client.own_endpoint = true;
        Ok((client, welcome))
    }

    /// Like [`Client::connect`], on an endpoint shared with other clients (made by
    /// [`endpoint`]): many connections over one UDP socket, as a load generator wants.
    pub async fn connect_on(endpoint: quinn::Endpoint, config: ClientConfig) -> Result<(Client, Welcome), ClientError> {
        let (link, welcome) = Link::open(&endpoint, &config, None).await?;
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let ended = Arc::new(OnceLock::new());
        let driver = Driver {
            ended: ended.clone(),
            config: config.clone(),
            endpoint: endpoint.clone(),
            resume_token: welcome.resume_token.clone(),
            link,
            pending: HashMap::new(),
            pings: HashMap::new(),
            next_ping: 0,
            events: events_tx,
        };
        tokio::spawn(driver.run(commands_rx));
        let client = Client {
            commands,
            ended,
            events: Mutex::new(events),
            next_request: AtomicU32::new(1),
            request_timeout: config.request_timeout,
            addr: config.addr,
            server_name: config.server_name.clone(),
            endpoint: endpoint.clone(),
            own_endpoint: false,
        };
        Ok((client, welcome))
    }

    async fn request(&self, make: impl FnOnce(u32) -> ClientMsg) -> Result<ServerMsg, ClientError> {
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Request { msg: make(request_id), reply }).is_err() {
            return Err(self.end_error());
        }
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            // The driver stopped with the request unanswered.
            Ok(Err(_)) => Err(self.end_error()),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// What a request gets once the driver has stopped: the error that ended the
    /// connection (never a retryable one), rather than a `ConnectionLost` that invites a
    /// retry nothing will answer. Before that, `ConnectionLost`: a drop, retry once resumed.
    fn end_error(&self) -> ClientError {
        self.ended.get().cloned().unwrap_or(ClientError::ConnectionLost)
    }

    /// Queues for `mode` with measured RTTs (datacenter name, ms); returns the ticket id.
    pub async fn enqueue(&self, mode: &str, rtt_ms: &[(String, f32)]) -> Result<u64, ClientError> {
        let rtt_ms = rtt_ms.iter().map(|(dc, ms)| DatacenterRtt { datacenter: dc.clone(), rtt_ms: *ms }).collect();
        let mode = mode.to_owned();
        match self.request(|request_id| ClientMsg::Enqueue(Enqueue { request_id, mode, rtt_ms })).await? {
            ServerMsg::Enqueued(e) => Ok(e.ticket_id),
            other => Err(unexpected(other)),
        }
    }

    /// Leaves the queue.
    pub async fn cancel(&self, ticket_id: u64) -> Result<(), ClientError> {
        match self.request(|request_id| ClientMsg::Cancel(Cancel { request_id, ticket_id })).await? {
            ServerMsg::Cancelled(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Accepts or declines a match found with a ready check (`MatchFound::accept_by_unix_ms`
    /// not 0). When everyone has accepted, `ClientEvent::MatchConfirmed` brings the server;
    /// if anyone declines or the time runs out, `ClientEvent::MatchAbandoned` follows.
    pub async fn respond_to_match(&self, match_id: u64, accept: bool) -> Result<(), ClientError> {
        let request = |request_id| ClientMsg::RespondToMatch(RespondToMatch { request_id, match_id, accept });
        match self.request(request).await? {
            ServerMsg::MatchResponded(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// A party operation (create, join, ready, queue, chat, …); the player's party after
    /// it, or `None` once they left it. A refusal is `ErrorCode::PartyRefused` with the
    /// reason's code at the start of the message.
    pub async fn party(&self, op: PartyOp) -> Result<Option<PartyState>, ClientError> {
        match self.request(|request_id| ClientMsg::Party(PartyRequest { request_id, op })).await? {
            ServerMsg::PartyReply(r) => Ok(r.party),
            other => Err(unexpected(other)),
        }
    }

    /// The player's waiting ticket, if any.
    pub async fn ticket_status(&self) -> Result<Option<WaitingTicket>, ClientError> {
        match self.request(|request_id| ClientMsg::TicketStatus(TicketStatusRequest { request_id })).await? {
            ServerMsg::TicketStatus(s) => Ok(s.ticket),
            other => Err(unexpected(other)),
        }
    }

    /// One datagram ping to the connected edge; the round-trip time.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Ping { reply }).map_err(|_| self.end_error())?;
        match tokio::time::timeout(Duration::from_secs(2), answer).await {
            Ok(Ok(rtt)) => Ok(rtt),
            // Dropped by a drop (the ping is lost with it) or by the driver stopping.
            Ok(Err(_)) => Err(self.end_error()),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// RTT to each datacenter of `welcome`, in ms: the median of `samples` datagram pings.
    /// A datacenter whose ping address is the connected edge is pinged on this connection;
    /// others through a short ping-only connection to their edge (same trust, no login).
    /// Datacenters that do not answer are left out.
    pub async fn measure_rtt(&self, welcome: &Welcome, samples: usize) -> Vec<(String, f32)> {
        let samples = samples.max(1);
        let mut by_addr: HashMap<&str, Option<f32>> = HashMap::new();
        let mut out = Vec::with_capacity(welcome.datacenters.len());
        for dc in &welcome.datacenters {
            let rtt = match by_addr.get(dc.ping_addr.as_str()) {
                Some(&rtt) => rtt,
                None => {
                    let rtt = match dc.ping_addr.parse::<SocketAddr>() {
                        Ok(addr) if addr == self.addr => self.ping_here(samples).await,
                        Ok(addr) => self.ping_there(addr, samples).await,
                        Err(_) => None,
                    };
                    by_addr.insert(&dc.ping_addr, rtt);
                    rtt
                }
            };
            if let Some(rtt) = rtt {
                out.push((dc.name.clone(), rtt));
            }
        }
        out
    }

    async fn ping_here(&self, samples: usize) -> Option<f32> {
        let mut rtts = Vec::with_capacity(samples);
        for _ in 0..samples {
            if let Ok(rtt) = self.ping().await {
                rtts.push(rtt);
            }
        }
        median_ms(rtts)
    }

    async fn ping_there(&self, addr: SocketAddr, samples: usize) -> Option<f32> {
        let conn = tokio::time::timeout(Duration::from_secs(2), self.endpoint.connect(addr, &self.server_name).ok()?)
            .await
            .ok()?
            .ok()?;
        let mut rtts = Vec::with_capacity(samples);
        for seq in 0..samples as u32 {
            let ping = encode_datagram(&Datagram::Ping(Ping { seq, client_time_us: 0 }));
            let sent = Instant::now();
            if conn.send_datagram(ping.into()).is_err() {
                break;
            }
            let pong = async {
                loop {
                    let bytes = conn.read_datagram().await.ok()?;
                    if let Ok(ArchivedDatagram::Pong(p)) = decode_datagram(&bytes)
                        && p.seq.to_native() == seq
                    {
                        return Some(sent.elapsed());
                    }
                }
            };
            if let Ok(Some(rtt)) = tokio::time::timeout(Duration::from_secs(1), pong).await {
                rtts.push(rtt);
            }
        }
        conn.close(VarInt::from_u32(CloseCode::Normal.number()), b"ping done");
        median_ms(rtts)
    }

    /// The next event; `None` once the client is closed and every event was read.
    pub async fn next_event(&self) -> Option<ClientEvent> {
        self.events.lock().await.recv().await
    }

    /// Leaves: the edge cancels the ticket at once (no grace period).
    pub async fn close(self) {
        let _ = self.commands.send(Command::Close);
        if self.own_endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        }
    }
}

fn median_ms(mut rtts: Vec<Duration>) -> Option<f32> {
    rtts.sort();
    rtts.get(rtts.len() / 2).map(|d| d.as_secs_f32() * 1000.0)
}

fn unexpected(msg: ServerMsg) -> ClientError {
    match msg {
        ServerMsg::Error(e) => ClientError::Server {
            code: ErrorCode::from_number(e.code),
            raw: e.code,
            retryable: e.retryable,
            message: e.message,
        },
        other => ClientError::Protocol(format!("unexpected reply {other:?}")),
    }
}

/// A QUIC client endpoint set up as this SDK connects: the trust, ALPN, keep-alive and
/// idle timeout of `config`. For tools that speak the protocol frame by frame themselves
/// (tests, load generators).
pub fn endpoint(config: &ClientConfig) -> Result<quinn::Endpoint, ClientError> {
    let bind: SocketAddr = if config.addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let mut endpoint = bind_endpoint(bind, config.udp_buffer_bytes).map_err(|e| ClientError::Connect(e.to_string()))?;
    let tls = tls::client_config(&config.trust).map_err(|e| ClientError::Connect(e.to_string()))?;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| ClientError::Connect(e.to_string()))?;
    let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(config.keep_alive));
    transport.max_idle_timeout(Some(
        config.idle_timeout.try_into().map_err(|_| ClientError::Connect("idle timeout too long".into()))?,
    ));
    quic.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(quic);
    Ok(endpoint)
}

/// `quinn::Endpoint::client`, with the socket's buffers asked for before it binds.
fn bind_endpoint(bind: SocketAddr, buffer_bytes: Option<usize>) -> std::io::Result<quinn::Endpoint> {
    let Some(bytes) = buffer_bytes else { return quinn::Endpoint::client(bind) };
    let socket = bind_udp(bind, bytes)?;
    let runtime = quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime found"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
}

/// Binds as `quinn::Endpoint::client` does (dual-stack where the system allows it), asking
/// for `buffer_bytes` each way first. Best effort: a kernel that grants less, or refuses
/// the size, leaves a working socket and a warning.
fn bind_udp(bind: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if bind.is_ipv6()
        && let Err(e) = socket.set_only_v6(false)
    {
        tracing::debug!(error = %e, "this system has no dual-stack sockets");
    }
    // Linux reports twice what it grants (the other half is its bookkeeping).
    let granted = |reported: usize| {
        if cfg!(any(target_os = "linux", target_os = "android")) { reported / 2 } else { reported }
    };
    let recv = socket.set_recv_buffer_size(buffer_bytes).and_then(|()| socket.recv_buffer_size()).map(granted);
    let send = socket.set_send_buffer_size(buffer_bytes).and_then(|()| socket.send_buffer_size()).map(granted);
    if !matches!((&recv, &send), (Ok(r), Ok(s)) if *r >= buffer_bytes && *s >= buffer_bytes) {
        tracing::warn!(
            asked = buffer_bytes,
            ?recv,
            ?send,
            "the kernel granted smaller UDP buffers than asked; raise net.core.rmem_max and net.core.wmem_max"
        );
    }
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

/// One live connection and its control stream.
struct Link {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    reader: FrameReader,
}

impl Link {
    async fn open(
        endpoint: &quinn::Endpoint,
        config: &ClientConfig,
        resume: Option<&str>,
    ) -> Result<(Link, Welcome), ClientError> {
        let connecting =
            endpoint.connect(config.addr, &config.server_name).map_err(|e| ClientError::Connect(e.to_string()))?;
        let conn = connecting.await.map_err(|e| connection_error(&e))?;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| connection_error(&e))?;
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            access_token: config.access_token.clone(),
            resume_token: resume.map(str::to_owned),
        };
        let mut out = Vec::new();
        encode_hello(&hello, &mut out).map_err(|e| ClientError::Protocol(e.to_string()))?;
        send.write_all(&out).await.map_err(|e| write_error(&conn, e))?;
        let mut link = Link { conn, send, recv, reader: FrameReader::new() };
        match link.next_message().await? {
            ServerMsg::Welcome(welcome) => Ok((link, welcome)),
            other => {
                let err = unexpected(other);
                // The edge closes right after refusing a hello; report its error, not the close.
                Err(err)
            }
        }
    }

    /// The next frame from the edge, decoded.
    async fn next_message(&mut self) -> Result<ServerMsg, ClientError> {
        loop {
            match self.reader.next_frame() {
                Ok(Some(body)) => {
                    let archived = decode_server(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
                    return rkyv::deserialize::<ServerMsg, rancor::Error>(archived)
                        .map_err(|e| ClientError::Protocol(e.to_string()));
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            // quinn's own chunks: no read buffer inside this future, which the driver
            // re-creates on every turn of its loop.
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.reader.push(&chunk.bytes),
                // The edge finishes its side just before it closes: wait for the close
                // code rather than guess.
                Ok(None) => {
                    return Err(match tokio::time::timeout(Duration::from_secs(2), self.conn.closed()).await {
                        Ok(e) => connection_error(&e),
                        Err(_) => ClientError::ConnectionLost,
                    });
                }
                Err(quinn::ReadError::ConnectionLost(e)) => return Err(connection_error(&e)),
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
        }
    }
}

fn write_error(conn: &Connection, e: quinn::WriteError) -> ClientError {
    match e {
        quinn::WriteError::ConnectionLost(e) => connection_error(&e),
        _ => closed_or_lost(conn),
    }
}

fn closed_or_lost(conn: &Connection) -> ClientError {
    conn.close_reason().map_or(ClientError::ConnectionLost, |e| connection_error(&e))
}

fn connection_error(e: &quinn::ConnectionError) -> ClientError {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let raw = close.error_code.into_inner();
            ClientError::Closed {
                code: u32::try_from(raw).ok().and_then(CloseCode::from_number),
                raw,
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            }
        }
        quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset => ClientError::ConnectionLost,
        other => ClientError::Connect(other.to_string()),
    }
}

/// Owns the connection: writes requests, reads replies and pushes, reconnects after drops.
struct Driver {
    config: ClientConfig,
    endpoint: quinn::Endpoint,
    resume_token: String,
    link: Link,
    pending: HashMap<u32, oneshot::Sender<Result<ServerMsg, ClientError>>>,
    pings: HashMap<u32, (Instant, oneshot::Sender<Duration>)>,
    next_ping: u32,
    events: mpsc::UnboundedSender<ClientEvent>,
    ended: Arc<OnceLock<ClientError>>,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let conn = self.link.conn.clone();
            let lost = tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Request { msg, reply }) => self.send_request(msg, reply).await,
                    Some(Command::Ping { reply }) => {
                        self.send_ping(reply);
                        None
                    }
                    Some(Command::Close) | None => {
                        self.link.conn.close(VarInt::from_u32(CloseCode::Normal.number()), b"client left");
                        return;
                    }
                },
                msg = self.link.next_message() => match msg {
                    Ok(msg) => {
                        self.on_message(msg);
                        None
                    }
                    Err(e) => Some(e),
                },
                datagram = conn.read_datagram() => match datagram {
                    Ok(bytes) => {
                        self.on_datagram(&bytes);
                        None
                    }
                    Err(e) => Some(connection_error(&e)),
                },
            };
            if let Some(error) = lost {
                // Requests waiting are told what happened: a network loss (`ConnectionLost`,
                // retry once resumed), or the end (the edge closed, or broke the protocol).
                for (_, reply) in self.pending.drain() {
                    let _ = reply.send(Err(error.clone()));
                }
                self.pings.clear();
                let outcome =
                    if matches!(error, ClientError::ConnectionLost) { self.resume().await } else { Err(error) };
                if let Err(final_error) = outcome {
                    // Set before the command queue drops with the driver, so requests
                    // still queued find it.
                    let _ = self.ended.set(final_error.clone());
                    let _ = self.events.send(ClientEvent::Closed(final_error));
                    return;
                }
            }
        }
    }

    /// Writes a request; `Some` if the connection is gone.
    async fn send_request(
        &mut self,
        msg: ClientMsg,
        reply: oneshot::Sender<Result<ServerMsg, ClientError>>,
    ) -> Option<ClientError> {
        // Its caller gave up (timed out while the client reconnected, say): a request it
        // was told failed must not happen after all.
        if reply.is_closed() {
            return None;
        }
        let request_id = match &msg {
            ClientMsg::Enqueue(e) => e.request_id,
            ClientMsg::Cancel(c) => c.request_id,
            ClientMsg::TicketStatus(s) => s.request_id,
            ClientMsg::RespondToMatch(r) => r.request_id,
            ClientMsg::Party(p) => p.request_id,
        };
        let mut out = Vec::new();
        if let Err(e) = encode_client(&msg, &mut out) {
            let _ = reply.send(Err(ClientError::Protocol(e.to_string())));
            return None;
        }
        self.pending.insert(request_id, reply);
        self.link.send.write_all(&out).await.err().map(|e| write_error(&self.link.conn, e))
    }

    fn send_ping(&mut self, reply: oneshot::Sender<Duration>) {
        self.next_ping = self.next_ping.wrapping_add(1);
        let seq = self.next_ping;
        let ping = Datagram::Ping(Ping { seq, client_time_us: 0 });
        if self.link.conn.send_datagram(encode_datagram(&ping).into()).is_ok() {
            self.pings.insert(seq, (Instant::now(), reply));
        }
    }

    fn on_datagram(&mut self, bytes: &[u8]) {
        if let Ok(ArchivedDatagram::Pong(pong)) = decode_datagram(bytes)
            && let Some((sent, reply)) = self.pings.remove(&pong.seq.to_native())
        {
            let _ = reply.send(sent.elapsed());
        }
    }

    fn on_message(&mut self, msg: ServerMsg) {
        let request_id = match &msg {
            ServerMsg::Enqueued(m) => Some(m.request_id),
            ServerMsg::Cancelled(m) => Some(m.request_id),
            ServerMsg::TicketStatus(m) => Some(m.request_id),
            ServerMsg::MatchResponded(m) => Some(m.request_id),
            ServerMsg::PartyReply(m) => Some(m.request_id),
            ServerMsg::Error(e) => e.request_id,
            ServerMsg::MatchFound(_)
            | ServerMsg::MatchAbandoned(_)
            | ServerMsg::MatchConfirmed(_)
            | ServerMsg::PartyEvent(_)
            | ServerMsg::Welcome(_) => None,
        };
        if let Some(id) = request_id {
            if let Some(reply) = self.pending.remove(&id) {
                let _ = reply.send(Ok(msg));
            }
            return;
        }
        match msg {
            ServerMsg::MatchFound(m) => {
                let _ = self.events.send(ClientEvent::MatchFound(m));
            }
            ServerMsg::MatchAbandoned(m) => {
                let _ = self.events.send(ClientEvent::MatchAbandoned { match_id: m.match_id, ticket: m.ticket });
            }
            ServerMsg::MatchConfirmed(m) => {
                let _ = self.events.send(ClientEvent::MatchConfirmed(m));
            }
            ServerMsg::PartyEvent(e) => {
                let _ = self.events.send(ClientEvent::Party(e));
            }
            // An error tied to no request comes just before the edge closes; the close
            // itself is reported.
            other => tracing::debug!(?other, "message without a request"),
        }
    }

    /// Reconnects with the resume token until the resume window closes; the error that
    /// ends the connection if it cannot.
    async fn resume(&mut self) -> Result<(), ClientError> {
        let _ = self.events.send(ClientEvent::Reconnecting);
        let deadline = Instant::now() + self.config.resume_window;
        let mut backoff = Duration::from_millis(100);
        while Instant::now() < deadline {
            match Link::open(&self.endpoint, &self.config, Some(&self.resume_token)).await {
                Ok((link, welcome)) => {
                    self.link = link;
                    self.resume_token = welcome.resume_token;
                    let event = if welcome.resumed {
                        ClientEvent::Resumed { ticket: welcome.ticket }
                    } else {
                        ClientEvent::Restarted
                    };
                    let _ = self.events.send(event);
                    return Ok(());
                }
                Err(e) if e.is_retryable() || matches!(e, ClientError::Connect(_)) => {
                    tracing::debug!(error = %e, "resume attempt failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "resume refused");
                    return Err(e);
                }
            }
        }
        Err(ClientError::Connect("could not resume within the grace period".into()))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_udp_socket_gets_the_buffers_asked_for() {
        // Below Linux's default (and so below any `rmem_max`): granted as asked, and the
        // socket reports it doubled, not the default it would have had.
        let socket = bind_udp("127.0.0.1:0".parse().expect("an address"), 64 * 1024).expect("bound");
        let socket = socket2::SockRef::from(&socket);
        assert_eq!(socket.recv_buffer_size().expect("readable"), 128 * 1024);
        assert_eq!(socket.send_buffer_size().expect("readable"), 128 * 1024);
    }

    #[test]
    fn an_ipv6_socket_takes_ipv4_too() {
        let socket = bind_udp("[::]:0".parse().expect("an address"), 64 * 1024)
            .expect("bound (this test needs IPv6, as a machine of this kind has)");
        let socket = socket2::SockRef::from(&socket);
        assert!(!socket.only_v6().expect("readable"), "dual-stack, as quinn binds a client");
    }
}
