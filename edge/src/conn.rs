//! One client connection: handshake (`Hello` → token check → `Welcome`), then requests,
//! pushes and pings until either side closes. Every fault ends here as a typed error
//! reply or a close code; nothing a client sends can stop the edge serving others.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rally_auth::{TokenError, TokenVerifier};
use rally_engine::{DatacenterId, Rejection, SubmitError, TicketId};
use rally_protocol::{
    ArchivedClientMsg, CloseCode, Datagram, DecodeError, ErrorCode, ErrorReply, FrameError, FrameReader,
    PROTOCOL_VERSION, ServerMsg, Welcome, decode_client, decode_datagram, decode_hello, encode_datagram, encode_server,
};
use tokio::sync::watch;

use crate::EdgeConfig;
use crate::hub::{CancelOutcome, Hub, Push, RequestError};
use crate::ratings::RatingSource;

/// Most bytes taken from a stream at once. Chunks are quinn's own buffers (no read buffer
/// per connection: at 10,000 idle connections a 16 KiB one would be a third of the memory).
const MAX_CHUNK: usize = 64 * 1024;

/// What every connection task shares.
pub(crate) struct Shared {
    pub hub: Arc<Hub>,
    pub verifier: TokenVerifier,
    pub ratings: Arc<dyn RatingSource>,
    pub config: EdgeConfig,
    pub datacenters: Vec<rally_protocol::Datacenter>,
    pub parties: Option<Arc<dyn rally_lobby::PartyGateway>>,
}

/// How a connection ended, for the session (grace period or not) and the logs.
enum Ending {
    /// The client closed on purpose.
    Left,
    /// The connection was lost (network, idle timeout).
    Lost,
    /// The edge closed it.
    Closed(CloseCode),
}

pub(crate) async fn serve(shared: Arc<Shared>, incoming: quinn::Incoming, shutdown: watch::Receiver<bool>) {
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
    };
    let remote = conn.remote_address();
    // Pings are answered from the handshake on, before and without a `Hello`: a client
    // measures its RTT to other datacenters' edges with connections that never log in.
    tokio::spawn(answer_pings(conn.clone()));
    let hello_timeout = shared.config.hello_timeout;
    let opened = tokio::time::timeout(hello_timeout, open(&shared, &conn)).await;
    let opened = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(code)) => {
            tracing::debug!(%remote, ?code, "connection refused at hello");
            metrics::counter!("rally_edge_handshakes_total", "result" => close_name(code)).increment(1);
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "no hello in time");
            metrics::counter!("rally_edge_handshakes_total", "result" => close_name(CloseCode::HelloTimeout))
                .increment(1);
            close(&conn, CloseCode::HelloTimeout, "no hello in time");
            return;
        }
    };
    let Opened { player, conn_id, send, recv, attached, token_mmr } = opened;
    tracing::debug!(%remote, player, "connected");
    metrics::counter!("rally_edge_handshakes_total", "result" => "welcome").increment(1);
    metrics::gauge!("rally_edge_connections").increment(1.0);
    let mut session = Session {
        shared: shared.clone(),
        conn: conn.clone(),
        send,
        player,
        token_mmr,
        in_flight: FuturesUnordered::new(),
        limiter: RateLimiter::direct(
            Quota::per_second(shared.config.limits.requests_per_s).allow_burst(shared.config.limits.burst),
        ),
        refused_in_a_row: 0,
        out: Vec::with_capacity(1024),
        undelivered: Vec::new(),
    };
    let mut pushes = attached.pushes;
    let ending = session.run(recv, &mut pushes, shutdown).await;
    metrics::gauge!("rally_edge_connections").decrement(1.0);
    let end = match ending {
        Ending::Left => "left",
        Ending::Lost => "lost",
        Ending::Closed(code) => close_name(code),
    };
    metrics::counter!("rally_edge_connection_ends_total", "how" => end).increment(1);
    let left = matches!(ending, Ending::Left);
    shared.hub.detach(player, conn_id, left);
    // Pushes this connection did not deliver go to the connection that replaced it, or
    // are parked for the resume (a client that left on purpose has no session to get them).
    let mut undelivered = std::mem::take(&mut session.undelivered);
    while let Ok(push) = pushes.try_recv() {
        if let Push::Send(msg) = push {
            undelivered.push(msg);
        }
    }
    shared.hub.return_pushes(player, undelivered);
    match ending {
        Ending::Closed(code) => tracing::debug!(%remote, player, ?code, "closed by the edge"),
        Ending::Left => tracing::debug!(%remote, player, "client left"),
        Ending::Lost => tracing::debug!(%remote, player, "connection lost; ticket kept for the grace period"),
    }
}

/// A connection past its handshake.
struct Opened {
    player: u64,
    conn_id: u64,
    send: SendStream,
    recv: RecvStream,
    attached: crate::hub::Attached,
    /// The rating a dev token carries (see `RatingSource`).
    token_mmr: Option<f64>,
}

/// The handshake: the control stream, `Hello`, the token, the session, `Welcome`.
async fn open(shared: &Shared, conn: &Connection) -> Result<Opened, CloseCode> {
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|_| CloseCode::Normal)?;
    let mut reader = FrameReader::new();
    let body = loop {
        match reader.next_frame() {
            Ok(Some(body)) => break body.to_vec(),
            Ok(None) => {}
            Err(e) => return Err(refuse_frame(conn, &mut send, e).await),
        }
        match recv.read_chunk(MAX_CHUNK, true).await {
            Ok(Some(chunk)) => reader.push(&chunk.bytes),
            _ => return Err(CloseCode::Normal),
        }
    };
    let hello = match decode_hello(&body) {
        Ok(hello) => hello,
        Err(e) => {
            let code = e.close_code().unwrap_or(CloseCode::ProtocolViolation);
            return Err(refuse(conn, &mut send, e.code(), &e.to_string(), code).await);
        }
    };
    let version = hello.protocol_version.to_native();
    if version != PROTOCOL_VERSION {
        let message = format!("this edge speaks protocol version {PROTOCOL_VERSION}, not {version}");
        return Err(
            refuse(conn, &mut send, ErrorCode::UnsupportedVersion, &message, CloseCode::UnsupportedVersion).await
        );
    }
    let token = match shared.verifier.verify(&hello.access_token) {
        Ok(token) => token,
        Err(e) => {
            let code = if e == TokenError::Expired { ErrorCode::TokenExpired } else { ErrorCode::InvalidToken };
            return Err(refuse(conn, &mut send, code, &e.to_string(), CloseCode::Unauthenticated).await);
        }
    };
    let conn_id = shared.hub.next_conn_id();
    let resume = hello.resume_token.as_ref().map(|t| t.as_str());
    let attached = shared.hub.attach(token.player_id, conn_id, resume);
    // From here the session is bound to this connection: if the Welcome never goes out
    // (this future dropped at the hello timeout, or the write failing), detach it, so its
    // grace period starts and nothing waits on a dead connection.
    let mut guard = DetachOnDrop { hub: shared.hub.clone(), player: token.player_id, conn: conn_id, armed: true };
    let welcome = ServerMsg::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION,
        player_id: token.player_id,
        resume_token: attached.resume_token.clone(),
        resumed: attached.resumed,
        ticket: attached.ticket.as_ref().map(|t| t.waiting()),
        datacenters: shared.datacenters.clone(),
    });
    let mut out = Vec::new();
    encode_server(&welcome, &mut out).expect("a welcome fits a frame");
    if send.write_all(&out).await.is_err() {
        return Err(CloseCode::Normal);
    }
    guard.armed = false;
    Ok(Opened { player: token.player_id, conn_id, send, recv, attached, token_mmr: token.mmr })
}

/// Detaches a session whose handshake did not complete.
struct DetachOnDrop {
    hub: Arc<Hub>,
    player: u64,
    conn: u64,
    armed: bool,
}

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.hub.detach(self.player, self.conn, false);
        }
    }
}

/// Echoes every well-formed ping as a pong until the connection ends. Anything else is
/// ignored: datagrams are unreliable anyway.
async fn answer_pings(conn: Connection) {
    while let Ok(bytes) = conn.read_datagram().await {
        if let Ok(rally_protocol::ArchivedDatagram::Ping(ping)) = decode_datagram(&bytes) {
            let pong = Datagram::Pong(rally_protocol::Ping {
                seq: ping.seq.to_native(),
                client_time_us: ping.client_time_us.to_native(),
            });
            let _ = conn.send_datagram(encode_datagram(&pong).into());
        }
    }
}

/// Answers a bad frame and closes.
async fn refuse_frame(conn: &Connection, send: &mut SendStream, e: FrameError) -> CloseCode {
    let (code, close) = match e {
        FrameError::TooLarge { .. } => (ErrorCode::FrameTooLarge, CloseCode::FrameTooLarge),
        FrameError::Empty => (ErrorCode::MalformedFrame, CloseCode::ProtocolViolation),
    };
    refuse(conn, send, code, &e.to_string(), close).await
}

/// A close code as a metric label.
fn close_name(code: CloseCode) -> &'static str {
    match code {
        CloseCode::Normal => "normal",
        CloseCode::ProtocolViolation => "protocol_violation",
        CloseCode::FrameTooLarge => "frame_too_large",
        CloseCode::UnsupportedVersion => "unsupported_version",
        CloseCode::Unauthenticated => "unauthenticated",
        CloseCode::HelloTimeout => "hello_timeout",
        CloseCode::Flood => "flood",
        CloseCode::ShuttingDown => "shutting_down",
        CloseCode::Replaced => "replaced",
        CloseCode::Internal => "internal",
    }
}

/// Counts a message sent: frames by kind, errors by code.
fn count_sent(msg: &ServerMsg) {
    let kind = match msg {
        ServerMsg::Welcome(_) => "welcome",
        ServerMsg::Enqueued(_) => "enqueued",
        ServerMsg::Cancelled(_) => "cancelled",
        ServerMsg::TicketStatus(_) => "ticket_status",
        ServerMsg::MatchFound(_) => "match_found",
        ServerMsg::MatchAbandoned(_) => "match_abandoned",
        ServerMsg::MatchResponded(_) => "match_responded",
        ServerMsg::MatchConfirmed(_) => "match_confirmed",
        ServerMsg::PartyReply(_) => "party_reply",
        ServerMsg::PartyEvent(_) => "party_event",
        ServerMsg::Error(e) => {
            let code = ErrorCode::from_number(e.code).map_or_else(|| e.code.to_string(), |c| format!("{c:?}"));
            metrics::counter!("rally_edge_errors_total", "code" => code).increment(1);
            "error"
        }
    };
    metrics::counter!("rally_edge_frames_sent_total", "kind" => kind).increment(1);
}

/// Sends one error (no request id), lets it reach the client, then closes.
async fn refuse(
    conn: &Connection,
    send: &mut SendStream,
    code: ErrorCode,
    message: &str,
    close_code: CloseCode,
) -> CloseCode {
    let mut out = Vec::new();
    let reply = error_msg(None, code, message);
    count_sent(&reply);
    encode_server(&reply, &mut out).expect("an error reply fits a frame");
    if send.write_all(&out).await.is_ok() {
        finish_and_close(conn, send, close_code, message).await;
    } else {
        close(conn, close_code, message);
    }
    close_code
}

/// Finishes the stream, gives what was written a moment to be acknowledged (a close
/// discards unsent data), then closes with `code`.
async fn finish_and_close(conn: &Connection, send: &mut SendStream, code: CloseCode, reason: &str) {
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
    }
    close(conn, code, reason);
}

fn close(conn: &Connection, code: CloseCode, reason: &str) {
    conn.close(VarInt::from_u32(code.number()), reason.as_bytes());
}

fn error_msg(request_id: Option<u32>, code: ErrorCode, message: &str) -> ServerMsg {
    ServerMsg::Error(ErrorReply {
        request_id,
        code: code.number(),
        retryable: code.retryable(),
        message: message.into(),
    })
}

type Reply = std::pin::Pin<Box<dyn std::future::Future<Output = ServerMsg> + Send>>;

struct Session {
    shared: Arc<Shared>,
    conn: Connection,
    send: SendStream,
    player: u64,
    token_mmr: Option<f64>,
    in_flight: FuturesUnordered<Reply>,
    limiter: DefaultDirectRateLimiter,
    refused_in_a_row: u32,
    out: Vec<u8>,
    /// Pushes taken from the queue but not written when the connection ended.
    undelivered: Vec<ServerMsg>,
}

/// An owned request, read out of its frame.
enum Request {
    Enqueue { request_id: u32, mode: String, rtt_ms: Vec<(String, f32)> },
    Cancel { request_id: u32, ticket_id: u64 },
    Status { request_id: u32 },
    Respond { request_id: u32, match_id: u64, accept: bool },
    Party { request_id: u32, call: rally_lobby::PartyCall },
}

impl Request {
    fn read(msg: &ArchivedClientMsg) -> Request {
        match msg {
            ArchivedClientMsg::Enqueue(e) => Request::Enqueue {
                request_id: e.request_id.to_native(),
                mode: e.mode.as_str().to_owned(),
                rtt_ms: e.rtt_ms.iter().map(|r| (r.datacenter.as_str().to_owned(), r.rtt_ms.to_native())).collect(),
            },
            ArchivedClientMsg::Cancel(c) => {
                Request::Cancel { request_id: c.request_id.to_native(), ticket_id: c.ticket_id.to_native() }
            }
            ArchivedClientMsg::TicketStatus(s) => Request::Status { request_id: s.request_id.to_native() },
            ArchivedClientMsg::RespondToMatch(r) => Request::Respond {
                request_id: r.request_id.to_native(),
                match_id: r.match_id.to_native(),
                accept: r.accept,
            },
            ArchivedClientMsg::Party(p) => {
                use rally_lobby::PartyCall as C;
                use rally_protocol::ArchivedPartyOp as Op;
                let call = match &p.op {
                    Op::Create(mode) => C::Create { mode: mode.as_str().to_owned() },
                    Op::Get => C::Get,
                    Op::Join(id) => C::Join { party_id: id.to_native() },
                    Op::Leave => C::Leave,
                    Op::Ready(r) => C::Ready {
                        ready: r.ready,
                        rtt_ms: r
                            .rtt_ms
                            .iter()
                            .map(|e| (e.datacenter.as_str().to_owned(), f64::from(e.rtt_ms.to_native())))
                            .collect(),
                    },
                    Op::Queue => C::Queue,
                    Op::Dequeue => C::Dequeue,
                    Op::Chat(text) => C::Chat { text: text.as_str().to_owned() },
                };
                Request::Party { request_id: p.request_id.to_native(), call }
            }
        }
    }

    fn id(&self) -> u32 {
        match self {
            Request::Enqueue { request_id, .. }
            | Request::Cancel { request_id, .. }
            | Request::Status { request_id }
            | Request::Respond { request_id, .. }
            | Request::Party { request_id, .. } => *request_id,
        }
    }
}

impl Session {
    async fn run(
        &mut self,
        mut recv: RecvStream,
        pushes: &mut tokio::sync::mpsc::UnboundedReceiver<Push>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Ending {
        let mut reader = FrameReader::new();
        loop {
            tokio::select! {
                read = recv.read_chunk(MAX_CHUNK, true) => match read {
                    Ok(Some(chunk)) => {
                        reader.push(&chunk.bytes);
                        if let Some(ending) = self.drain_frames(&mut reader).await {
                            return ending;
                        }
                    }
                    // The client finished its side: it is leaving.
                    Ok(None) => return Ending::Left,
                    Err(quinn::ReadError::ConnectionLost(e)) => return ending_of(&e),
                    Err(_) => return Ending::Lost,
                },
                Some(reply) = self.in_flight.next() => {
                    if !self.write(&reply).await {
                        return Ending::Lost;
                    }
                }
                push = pushes.recv() => match push {
                    Some(Push::Send(msg)) => {
                        if !self.write(&msg).await {
                            self.undelivered.push(msg);
                            return Ending::Lost;
                        }
                    }
                    Some(Push::Close(code, reason)) => {
                        self.flush_and_close(code, reason).await;
                        return Ending::Closed(code);
                    }
                    None => return Ending::Lost,
                },
                closed = self.conn.closed() => return ending_of(&closed),
                _ = shutdown.changed() => {
                    self.flush_and_close(CloseCode::ShuttingDown, "the edge is shutting down").await;
                    return Ending::Closed(CloseCode::ShuttingDown);
                }
            }
        }
    }

    /// Handles every whole frame buffered; `Some` when the connection must end.
    async fn drain_frames(&mut self, reader: &mut FrameReader) -> Option<Ending> {
        loop {
            let request = match reader.next_frame() {
                Ok(None) => return None,
                Ok(Some(body)) => {
                    metrics::counter!("rally_edge_frames_received_total").increment(1);
                    decode_client(body).map(Request::read)
                }
                Err(e) => {
                    let code = refuse_frame(&self.conn, &mut self.send, e).await;
                    return Some(Ending::Closed(code));
                }
            };
            match request {
                Ok(request) => {
                    if let Some(ending) = self.admit(request).await {
                        return Some(ending);
                    }
                }
                Err(e @ DecodeError::InvalidField { request_id, .. }) => {
                    let reply = error_msg(request_id, e.code(), &e.to_string());
                    if !self.write(&reply).await {
                        return Some(Ending::Lost);
                    }
                }
                Err(e) => {
                    let close_code = e.close_code().unwrap_or(CloseCode::ProtocolViolation);
                    let code = refuse(&self.conn, &mut self.send, e.code(), &e.to_string(), close_code).await;
                    return Some(Ending::Closed(code));
                }
            }
        }
    }

    /// Applies the per-connection limits, then starts the request.
    async fn admit(&mut self, request: Request) -> Option<Ending> {
        let limits = &self.shared.config.limits;
        let refusal = if self.limiter.check().is_err() {
            Some(ErrorCode::RateLimited)
        } else if self.in_flight.len() >= limits.max_in_flight {
            Some(ErrorCode::TooManyInFlight)
        } else {
            None
        };
        if let Some(code) = refusal {
            self.refused_in_a_row += 1;
            if self.refused_in_a_row >= limits.flood_close_after {
                tracing::info!(player = self.player, "request flood; closing");
                let message = "requests kept coming far over the limit";
                let code = refuse(&self.conn, &mut self.send, code, message, CloseCode::Flood).await;
                return Some(Ending::Closed(code));
            }
            let reply = error_msg(Some(request.id()), code, "slow down");
            return (!self.write(&reply).await).then_some(Ending::Lost);
        }
        self.refused_in_a_row = 0;
        let reply = self.start(request).await;
        if let Some(reply) = reply {
            return (!self.write(&reply).await).then_some(Ending::Lost);
        }
        None
    }

    /// Starts a request: an immediate reply, or `None` once its future is in flight.
    async fn start(&mut self, request: Request) -> Option<ServerMsg> {
        let received = std::time::Instant::now();
        let hub = self.shared.hub.clone();
        let timeout = self.shared.config.request_timeout;
        match request {
            Request::Status { request_id } => Some(ServerMsg::TicketStatus(rally_protocol::TicketStatus {
                request_id,
                ticket: hub.ticket_of(self.player).map(|t| t.waiting()),
            })),
            Request::Cancel { request_id, ticket_id } => {
                let ticket = TicketId(ticket_id);
                let answer = match hub.cancel(self.player, ticket) {
                    Ok(answer) => answer,
                    Err(e) => return Some(request_error(request_id, e)),
                };
                self.in_flight.push(Box::pin(async move {
                    match tokio::time::timeout(timeout, answer).await {
                        Ok(Ok(CancelOutcome::Cancelled)) => {
                            ServerMsg::Cancelled(rally_protocol::Cancelled { request_id, ticket_id })
                        }
                        Ok(Ok(CancelOutcome::NotWaiting)) => {
                            error_msg(Some(request_id), ErrorCode::NotQueued, "the ticket is no longer waiting")
                        }
                        // The pending cancel was dropped by the hub (the session ended).
                        Ok(Err(_)) => error_msg(Some(request_id), ErrorCode::Internal, "the session ended"),
                        Err(_) => {
                            hub.abandon(ticket);
                            error_msg(Some(request_id), ErrorCode::Internal, "the engine did not answer in time")
                        }
                    }
                }));
                None
            }
            Request::Party { request_id, call } => {
                let Some(parties) = self.shared.parties.clone() else {
                    return Some(error_msg(Some(request_id), ErrorCode::PartyRefused, "parties are not served here"));
                };
                let player = self.player;
                self.in_flight.push(Box::pin(async move {
                    match tokio::time::timeout(timeout * 2, parties.call(player, call)).await {
                        Ok(Ok(party)) => ServerMsg::PartyReply(rally_protocol::PartyReply {
                            request_id,
                            party: party.map(party_state),
                        }),
                        Ok(Err(refusal)) => {
                            let code = if refusal.retryable { ErrorCode::Overloaded } else { ErrorCode::PartyRefused };
                            error_msg(Some(request_id), code, &format!("{}: {}", refusal.code, refusal.message))
                        }
                        Err(_) => {
                            error_msg(Some(request_id), ErrorCode::Internal, "the party service did not answer in time")
                        }
                    }
                }));
                None
            }
            Request::Respond { request_id, match_id, accept } => {
                Some(match hub.respond(self.player, match_id, accept) {
                    Ok(()) => ServerMsg::MatchResponded(rally_protocol::MatchResponded { request_id, match_id }),
                    Err(e) => {
                        let code = match e {
                            rally_sessions::SessionError::NotInMatch => ErrorCode::NotInMatch,
                            _ => ErrorCode::NoReadyCheck,
                        };
                        error_msg(Some(request_id), code, &e.to_string())
                    }
                })
            }
            Request::Enqueue { request_id, mode, rtt_ms } => {
                if let Some(left_ms) = hub.cooldown_left_ms(self.player) {
                    let message =
                        format!("you declined or missed a ready check; queue again in {} s", left_ms.div_ceil(1000));
                    return Some(error_msg(Some(request_id), ErrorCode::Cooldown, &message));
                }
                let rules = &hub.rules;
                let Some(mode_id) = rules.mode_id(&mode) else {
                    return Some(error_msg(
                        Some(request_id),
                        ErrorCode::UnknownMode,
                        &format!("no mode named {mode:?}"),
                    ));
                };
                // Datacenters this server does not know are skipped: clients may measure more.
                let rtt: Vec<(DatacenterId, f64)> =
                    rtt_ms.iter().filter_map(|(dc, ms)| Some((rules.datacenter_id(dc)?, f64::from(*ms)))).collect();
                if rtt.is_empty() {
                    let message = "none of the datacenters in the RTT map is served here";
                    return Some(error_msg(Some(request_id), ErrorCode::NoKnownDatacenter, message));
                }
                // Bounded: a stalled store must not freeze the connection's loop.
                let lookup = self.shared.ratings.rating(self.player, &mode, self.token_mmr);
                let mmr = match tokio::time::timeout(timeout, lookup).await {
                    Ok(Ok(mmr)) => mmr,
                    Ok(Err(e)) => {
                        tracing::warn!(player = self.player, error = %e, "rating lookup failed");
                        return Some(error_msg(Some(request_id), ErrorCode::Internal, "rating lookup failed"));
                    }
                    Err(_) => {
                        tracing::warn!(player = self.player, "rating lookup timed out");
                        return Some(error_msg(Some(request_id), ErrorCode::Internal, "rating lookup timed out"));
                    }
                };
                let (ticket, answer) = match hub.enqueue(self.player, (mode_id, &mode), mmr, rtt) {
                    Ok(sent) => sent,
                    Err(e) => return Some(request_error(request_id, e)),
                };
                self.in_flight.push(Box::pin(async move {
                    let reply = match tokio::time::timeout(timeout, answer).await {
                        Ok(Ok(Ok(()))) => {
                            ServerMsg::Enqueued(rally_protocol::Enqueued { request_id, ticket_id: ticket.0 })
                        }
                        Ok(Ok(Err(reason))) => request_error(request_id, RequestError::Rejected(reason)),
                        // The hub dropped the enqueue (the session started afresh) and
                        // cancels the ticket itself.
                        Ok(Err(_)) => error_msg(Some(request_id), ErrorCode::Internal, "the session was restarted"),
                        Err(_) => {
                            hub.abandon(ticket);
                            error_msg(Some(request_id), ErrorCode::Internal, "the engine did not answer in time")
                        }
                    };
                    // From the frame's arrival to the engine's answer, rating lookup included.
                    metrics::histogram!("rally_edge_enqueue_seconds").record(received.elapsed().as_secs_f64());
                    reply
                }));
                None
            }
        }
    }

    /// Writes one message; `false` if the stream is gone.
    async fn write(&mut self, msg: &ServerMsg) -> bool {
        count_sent(msg);
        self.out.clear();
        if let Err(e) = encode_server(msg, &mut self.out) {
            tracing::error!(error = %e, "reply could not be encoded");
            return true;
        }
        self.send.write_all(&self.out).await.is_ok()
    }

    /// Writes the replies already computed, then closes with `code`.
    async fn flush_and_close(&mut self, code: CloseCode, reason: &'static str) {
        // Shutdown tells the client why, so it reconnects elsewhere; other closes speak for
        // themselves through the close code.
        if code == CloseCode::ShuttingDown {
            let _ = self.write(&error_msg(None, ErrorCode::ShuttingDown, reason)).await;
        }
        finish_and_close(&self.conn, &mut self.send, code, reason).await;
    }
}

/// How a lost connection ended: an application close with `Normal` is the client leaving.
fn ending_of(e: &quinn::ConnectionError) -> Ending {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) if close.error_code == VarInt::from_u32(0) => Ending::Left,
        quinn::ConnectionError::LocallyClosed => Ending::Closed(CloseCode::Normal),
        _ => Ending::Lost,
    }
}

fn request_error(request_id: u32, e: RequestError) -> ServerMsg {
    let (code, message) = match e {
        RequestError::AlreadyQueued => (ErrorCode::AlreadyQueued, "the player already has a waiting ticket".to_owned()),
        RequestError::NotQueued => (ErrorCode::NotQueued, "no such waiting ticket for this player".to_owned()),
        RequestError::NotConnected => (ErrorCode::Internal, "the session ended".to_owned()),
        RequestError::CancelPending => {
            (ErrorCode::TooManyInFlight, "a cancel for this ticket is already on its way".to_owned())
        }
        RequestError::Rejected(reason) => (rejection_code(reason), reason.to_string()),
        RequestError::Submit(SubmitError::MailboxFull) => (ErrorCode::Overloaded, "the engine is busy".to_owned()),
        RequestError::Submit(e) => (ErrorCode::ShuttingDown, e.to_string()),
    };
    error_msg(Some(request_id), code, &message)
}

fn rejection_code(reason: Rejection) -> ErrorCode {
    match reason {
        Rejection::UnknownMode => ErrorCode::UnknownMode,
        Rejection::NoKnownDatacenter => ErrorCode::NoKnownDatacenter,
        Rejection::PlayerAlreadyWaiting => ErrorCode::AlreadyQueued,
        // Ticket ids are the edge's own; a clash is the edge's fault and a retry gets a new id.
        Rejection::DuplicateTicket => ErrorCode::Internal,
        Rejection::Empty | Rejection::PartyTooLarge | Rejection::DuplicatePlayer | Rejection::BadNumber => {
            ErrorCode::RejectedTicket
        }
    }
}

/// A party as the protocol carries it.
fn party_state(p: rally_lobby::PartyInfo) -> rally_protocol::PartyState {
    rally_protocol::PartyState {
        party_id: p.party_id,
        mode: p.mode,
        leader_id: p.leader,
        members: p
            .members
            .into_iter()
            .map(|(player_id, ready)| rally_protocol::PartyMember { player_id, ready })
            .collect(),
        queued: p.queued,
    }
}
