//! The edge over real QUIC on loopback, driven by the SDK (and, for hostile bytes, by a
//! raw QUIC client). After every failure a fresh client checks the edge still serves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rally_auth::{SigningKey, TokenIssuer, TokenVerifier};
use rally_client::{Client, ClientConfig, ClientError, ClientEvent, Trust, Welcome};
use rally_edge::{EdgeConfig, EdgeDeps, EdgeHandle, InProcessRouter, Limits, ShardEvents, TlsIdentity, TokenRatings};
use rally_engine::{Rules, Runtime, RuntimeConfig};
use rally_protocol::{
    ClientMsg, CloseCode, ErrorCode, FrameReader, Hello, PROTOCOL_VERSION, ServerMsg, TicketStatusRequest,
    decode_server, encode_client, encode_hello,
};
use rally_sessions::{ServerSpec, SessionConfig, SessionDirectory};

/// Wide windows from the start, so two duel players match on the next tick.
const RULES: &str = r#"
tick_ms = 20
[regions]
eu = ["eu-west", "eu-central"]
na = ["na-east"]

[[mode]]
name = "duel"
teams = 2
team_size = 1
mmr_window = { start = 200.0, growth_per_s = 0.0, max = 200.0 }
max_rtt_ms = { start = 150.0, growth_per_s = 0.0, max = 150.0 }

[[mode]]
name = "duel-rc"
teams = 2
team_size = 1
mmr_window = { start = 200.0, growth_per_s = 0.0, max = 200.0 }
max_rtt_ms = { start = 150.0, growth_per_s = 0.0, max = 150.0 }
accept_timeout_s = 0.3
decline_cooldown_s = 30
"#;

/// Anything in these tests takes well under this; it bounds a hang, it times nothing.
const DEADLINE: Duration = Duration::from_secs(10);

struct TestEdge {
    edge: Option<EdgeHandle>,
    runtime: Option<Runtime>,
    issuer: TokenIssuer,
    /// The issuer's key, to mint odd tokens with it (expired ones).
    key_pem: String,
    sessions: Arc<SessionDirectory>,
}

impl TestEdge {
    fn start(tweak: impl FnOnce(&mut EdgeConfig)) -> TestEdge {
        Self::start_at("127.0.0.1:0".parse().unwrap(), tweak)
    }

    fn start_at(listen: SocketAddr, tweak: impl FnOnce(&mut EdgeConfig)) -> TestEdge {
        Self::start_with(listen, TlsIdentity::self_signed(&["localhost".into()]).unwrap(), tweak)
    }

    fn start_with(listen: SocketAddr, tls: TlsIdentity, tweak: impl FnOnce(&mut EdgeConfig)) -> TestEdge {
        Self::start_full(listen, tls, tweak, SessionConfig::default())
    }

    fn start_full(
        listen: SocketAddr,
        tls: TlsIdentity,
        tweak: impl FnOnce(&mut EdgeConfig),
        session_config: SessionConfig,
    ) -> TestEdge {
        let rules = Arc::new(Rules::from_toml(RULES).unwrap());
        let events = ShardEvents::new();
        let runtime = Runtime::start(rules.clone(), RuntimeConfig::default(), events.clone()).unwrap();
        let key = SigningKey::generate();
        let key_pem = key.to_pem().to_owned();
        let issuer = TokenIssuer::new(key);
        let mut config = EdgeConfig::new(listen);
        tweak(&mut config);
        let sessions = Arc::new(SessionDirectory::new(session_config));
        let deps = EdgeDeps {
            rules,
            router: Arc::new(InProcessRouter::new(&runtime)),
            events,
            verifier: TokenVerifier::with_defaults(issuer.public_key()),
            ratings: Arc::new(TokenRatings { default: 1500.0 }),
            tls,
            sessions: Some(sessions.clone()),
            parties: None,
        };
        let edge = rally_edge::start(config, deps).unwrap();
        TestEdge { edge: Some(edge), runtime: Some(runtime), issuer, key_pem, sessions }
    }

    fn edge(&self) -> &EdgeHandle {
        self.edge.as_ref().unwrap()
    }

    fn config(&self, player: u64, mmr: f64) -> ClientConfig {
        let token = self.issuer.mint(player, Some(mmr), SystemTime::now());
        ClientConfig::new(self.edge().local_addr(), Trust::Fingerprint(self.edge().fingerprint()), token)
    }

    async fn connect(&self, player: u64, mmr: f64) -> (Client, Welcome) {
        timeout(Client::connect(self.config(player, mmr))).await.expect("connects")
    }

    /// A fresh player can still connect and be answered.
    async fn still_serves(&self) {
        let (client, welcome) = self.connect(999_999, 1500.0).await;
        assert_eq!(welcome.player_id, 999_999);
        assert_eq!(timeout(client.ticket_status()).await.unwrap(), None);
        client.close().await;
    }

    async fn stop(mut self) {
        self.edge.take().unwrap().shutdown().await;
        self.runtime.take().unwrap().shutdown();
    }
}

async fn timeout<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f).await.expect("finished before the deadline")
}

fn eu(rtt: f32) -> Vec<(String, f32)> {
    vec![("eu-west".into(), rtt)]
}

async fn next_match(client: &Client) -> rally_client::MatchFound {
    match timeout(client.next_event()).await {
        Some(ClientEvent::MatchFound(m)) => m,
        Some(other) => panic!("expected a match, got {other:?}"),
        None => panic!("client closed before a match"),
    }
}

#[tokio::test]
async fn a_formed_match_gets_the_least_loaded_server_and_each_player_a_connect_token() {
    let edge = TestEdge::start(|_| {});
    let spec = |addr: &str, capacity| ServerSpec { datacenter: "eu-west".into(), address: addr.into(), capacity };
    let (busy, _) = edge.sessions.register(spec("10.0.0.1:7777", 1)).unwrap();
    let (idle, _) = edge.sessions.register(spec("10.0.0.2:7777", 4)).unwrap();
    // The first server hosts a match already: it is full.
    let formed = rally_sessions::FormedMatch {
        match_id: u64::MAX / 2,
        mode: "duel".into(),
        datacenter: "eu-west".into(),
        formed_at_ms: 0,
        teams: vec![vec![90], vec![91]],
    };
    assert_eq!(edge.sessions.allocate(&formed).unwrap().server_id, busy);
    let (a, _) = edge.connect(1, 1500.0).await;
    let (b, _) = edge.connect(2, 1510.0).await;
    timeout(a.enqueue("duel", &eu(20.0))).await.unwrap();
    timeout(b.enqueue("duel", &eu(25.0))).await.unwrap();
    let (ma, mb) = (next_match(&a).await, next_match(&b).await);
    assert_eq!((ma.server_addr.as_str(), mb.server_addr.as_str()), ("10.0.0.2:7777", "10.0.0.2:7777"));
    assert_eq!(ma.connect_token.len(), 64);
    assert_ne!(ma.connect_token, mb.connect_token, "each player has a token of their own");
    {
        let sessions = edge.sessions.lock();
        let session = sessions.session(ma.match_id).expect("a session for the match");
        assert_eq!(session.server_id, idle);
        assert_eq!(sessions.connect_token(ma.match_id, 1).unwrap(), ma.connect_token);
        assert_eq!(sessions.connect_token(mb.match_id, 2).unwrap(), mb.connect_token);
    }
    a.close().await;
    b.close().await;
    edge.stop().await;
}

#[tokio::test]
async fn players_of_a_match_whose_server_goes_silent_are_queued_again_with_their_wait() {
    let config = SessionConfig { heartbeat_timeout_ms: 200, ..SessionConfig::default() };
    let edge = TestEdge::start_full(
        "127.0.0.1:0".parse().unwrap(),
        TlsIdentity::self_signed(&["localhost".into()]).unwrap(),
        |_| {},
        config,
    );
    let spec = ServerSpec { datacenter: "eu-west".into(), address: "10.0.0.1:7777".into(), capacity: 4 };
    edge.sessions.register(spec).unwrap();
    let (a, _) = edge.connect(1, 1500.0).await;
    let (b, _) = edge.connect(2, 1510.0).await;
    timeout(a.enqueue("duel", &eu(20.0))).await.unwrap();
    timeout(b.enqueue("duel", &eu(25.0))).await.unwrap();
    let first = next_match(&a).await;
    next_match(&b).await;
    // The server never heartbeats the session: it fails (the admin API's loop does this
    // every second).
    timeout(async {
        while edge.sessions.expire().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for client in [&a, &b] {
        match timeout(client.next_event()).await {
            Some(ClientEvent::MatchAbandoned { match_id, ticket }) => {
                assert_eq!(match_id, first.match_id);
                assert_eq!(ticket.expect("queued again").mode, "duel");
            }
            other => panic!("expected MatchAbandoned, got {other:?}"),
        }
    }
    // Back in the queue, they are matched again, in a new session.
    let (again_a, again_b) = (next_match(&a).await, next_match(&b).await);
    assert_eq!(again_a.match_id, again_b.match_id);
    assert_ne!(again_a.match_id, first.match_id);
    assert_eq!(again_a.server_addr, "10.0.0.1:7777");
    a.close().await;
    b.close().await;
    edge.stop().await;
}

async fn ready_checked_pair(edge: &TestEdge, a_id: u64, b_id: u64) -> (Client, Client, u64) {
    let (a, _) = edge.connect(a_id, 1500.0).await;
    let (b, _) = edge.connect(b_id, 1510.0).await;
    timeout(a.enqueue("duel-rc", &eu(20.0))).await.unwrap();
    timeout(b.enqueue("duel-rc", &eu(25.0))).await.unwrap();
    let (ma, mb) = (next_match(&a).await, next_match(&b).await);
    assert!(ma.accept_by_unix_ms > 0 && ma.server_addr.is_empty() && ma.connect_token.is_empty(), "{ma:?}");
    assert_eq!(ma.match_id, mb.match_id);
    (a, b, ma.match_id)
}

async fn abandoned(client: &Client, match_id: u64) -> Option<rally_protocol::WaitingTicket> {
    match timeout(client.next_event()).await {
        Some(ClientEvent::MatchAbandoned { match_id: id, ticket }) if id == match_id => ticket,
        other => panic!("expected MatchAbandoned for {match_id}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_ready_check_confirms_when_both_accept_and_sinks_on_a_decline_or_silence() {
    let edge = TestEdge::start(|_| {});
    let spec = ServerSpec { datacenter: "eu-west".into(), address: "10.0.0.9:7777".into(), capacity: 8 };
    edge.sessions.register(spec).unwrap();

    // Both accept: the server comes in MatchConfirmed.
    let (a, b, match_id) = ready_checked_pair(&edge, 1, 2).await;
    let stranger = edge.connect(3, 1500.0).await.0;
    let refused = timeout(stranger.respond_to_match(match_id, true)).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::NotInMatch));
    timeout(a.respond_to_match(match_id, true)).await.unwrap();
    timeout(b.respond_to_match(match_id, true)).await.unwrap();
    for client in [&a, &b] {
        match timeout(client.next_event()).await {
            Some(ClientEvent::MatchConfirmed(c)) => {
                assert_eq!(
                    (c.match_id, c.server_addr.as_str(), c.connect_token.len()),
                    (match_id, "10.0.0.9:7777", 64)
                );
            }
            other => panic!("expected MatchConfirmed, got {other:?}"),
        }
    }
    let late = timeout(a.respond_to_match(match_id, false)).await.unwrap_err();
    assert_eq!(late.code(), Some(ErrorCode::NoReadyCheck), "settled already");

    // B declines: A goes back to the queue, B cools down.
    let (c, d, match_id) = ready_checked_pair(&edge, 4, 5).await;
    timeout(c.respond_to_match(match_id, true)).await.unwrap();
    timeout(d.respond_to_match(match_id, false)).await.unwrap();
    let requeued = abandoned(&c, match_id).await.expect("the accepter is queued again");
    assert_eq!(requeued.mode, "duel-rc");
    // The push goes out as the ticket is sent; the shard takes it a moment later.
    timeout(async {
        while timeout(c.ticket_status()).await.unwrap().map(|t| t.ticket_id) != Some(requeued.ticket_id) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(abandoned(&d, match_id).await, None, "the decliner is not");
    let cooling = timeout(d.enqueue("duel", &eu(20.0))).await.unwrap_err();
    assert_eq!(cooling.code(), Some(ErrorCode::Cooldown));
    timeout(c.cancel(requeued.ticket_id)).await.unwrap();

    // Silence: past the deadline (the admin API's loop runs the expiry every second).
    let (e, f, match_id) = ready_checked_pair(&edge, 6, 7).await;
    timeout(e.respond_to_match(match_id, true)).await.unwrap();
    timeout(async {
        loop {
            edge.sessions.expire();
            if edge.sessions.lock().ready_check(match_id).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(abandoned(&e, match_id).await.is_some());
    assert_eq!(abandoned(&f, match_id).await, None);
    for client in [a, b, c, d, e, f, stranger] {
        client.close().await;
    }
    edge.stop().await;
}

#[tokio::test]
async fn two_players_are_matched_and_both_told_the_same_match() {
    let edge = TestEdge::start(|_| {});
    let (a, welcome) = edge.connect(1, 1500.0).await;
    let (b, _) = edge.connect(2, 1510.0).await;
    assert!(!welcome.resumed);
    assert!(welcome.datacenters.iter().any(|dc| dc.name == "eu-west"));
    let rtt = timeout(a.measure_rtt(&welcome, 3)).await;
    assert_eq!(rtt.len(), welcome.datacenters.len(), "every datacenter measured");
    assert!(rtt.iter().all(|(_, ms)| ms.is_finite() && *ms >= 0.0));

    let ticket_a = timeout(a.enqueue("duel", &eu(20.0))).await.unwrap();
    assert_eq!(timeout(a.ticket_status()).await.unwrap().map(|t| t.ticket_id), Some(ticket_a));
    let ticket_b = timeout(b.enqueue("duel", &eu(25.0))).await.unwrap();
    let (ma, mb) = (next_match(&a).await, next_match(&b).await);
    assert_eq!(ma.match_id, mb.match_id);
    assert_eq!((ma.ticket_id, mb.ticket_id), (ticket_a, ticket_b));
    assert_eq!(ma.mode, "duel");
    assert_eq!(ma.datacenter, "eu-west");
    let mut players: Vec<u64> = ma.teams.iter().flat_map(|t| t.players.clone()).collect();
    players.sort();
    assert_eq!(players, [1, 2]);
    assert_eq!(ma.teams, mb.teams);
    assert_eq!((ma.server_addr.as_str(), ma.connect_token.as_str()), ("", ""), "no game servers registered");
    // Matched tickets are no longer waiting; the player may queue again.
    assert_eq!(timeout(a.ticket_status()).await.unwrap(), None);
    timeout(a.enqueue("duel", &eu(20.0))).await.unwrap();
    a.close().await;
    b.close().await;
    edge.stop().await;
}

#[tokio::test]
async fn cancel_and_request_errors() {
    let edge = TestEdge::start(|_| {});
    let (a, _) = edge.connect(1, 1500.0).await;
    let ticket = timeout(a.enqueue("duel", &eu(20.0))).await.unwrap();
    let again = timeout(a.enqueue("duel", &eu(20.0))).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::AlreadyQueued));
    timeout(a.cancel(ticket)).await.unwrap();
    assert_eq!(timeout(a.ticket_status()).await.unwrap(), None);
    let twice = timeout(a.cancel(ticket)).await.unwrap_err();
    assert_eq!(twice.code(), Some(ErrorCode::NotQueued));
    assert!(!twice.is_retryable());

    let unknown = timeout(a.enqueue("chess", &eu(20.0))).await.unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::UnknownMode));
    let nowhere = timeout(a.enqueue("duel", &[("moon-base".into(), 5.0)])).await.unwrap_err();
    assert_eq!(nowhere.code(), Some(ErrorCode::NoKnownDatacenter));
    let negative = timeout(a.enqueue("duel", &eu(-3.0))).await.unwrap_err();
    assert_eq!(negative.code(), Some(ErrorCode::InvalidRequest));
    // None of that left a ticket behind, and the connection still works.
    assert_eq!(timeout(a.ticket_status()).await.unwrap(), None);
    timeout(a.enqueue("duel", &eu(20.0))).await.unwrap();
    a.close().await;
    edge.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let edge = TestEdge::start(|_| {});
    let addr = edge.edge().local_addr();
    let trust = Trust::Fingerprint(edge.edge().fingerprint());

    let garbled = Client::connect(ClientConfig::new(addr, trust.clone(), "not.a.token")).await.err().unwrap();
    assert_eq!(garbled.code(), Some(ErrorCode::InvalidToken), "{garbled:?}");

    let expired_issuer =
        TokenIssuer::new(SigningKey::from_pem(&edge.key_pem).unwrap()).with_ttl(Duration::from_secs(1));
    let expired = expired_issuer.mint(5, None, SystemTime::now() - Duration::from_secs(3600));
    let err = Client::connect(ClientConfig::new(addr, trust.clone(), expired)).await.err().unwrap();
    assert_eq!(err.code(), Some(ErrorCode::TokenExpired), "{err:?}");
    assert!(err.is_retryable(), "a fresh token fixes an expired one");

    let other_key = TokenIssuer::new(SigningKey::generate()).mint(5, None, SystemTime::now());
    let err = Client::connect(ClientConfig::new(addr, trust.clone(), other_key)).await.err().unwrap();
    assert_eq!(err.code(), Some(ErrorCode::InvalidToken), "{err:?}");

    // A client pinning another certificate does not even finish the handshake.
    let wrong_pin = Client::connect(ClientConfig::new(addr, Trust::Fingerprint([7; 32]), "x")).await.err().unwrap();
    assert!(matches!(wrong_pin, ClientError::Connect(_)), "{wrong_pin:?}");

    edge.still_serves().await;
    edge.stop().await;
}

/// A client that writes raw bytes on the control stream.
struct Raw {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    reader: FrameReader,
}

impl Raw {
    async fn connect(edge: &TestEdge) -> Raw {
        let config = edge.config(77, 1500.0);
        let endpoint = rally_client::endpoint(&config).unwrap();
        let conn = timeout(endpoint.connect(config.addr, "localhost").unwrap()).await.unwrap();
        let (send, recv) = timeout(conn.open_bi()).await.unwrap();
        Raw { conn, send, recv, reader: FrameReader::new() }
    }

    /// Connects and completes a good hello.
    async fn hello(edge: &TestEdge) -> Raw {
        let mut raw = Self::connect(edge).await;
        let token = edge.issuer.mint(77, None, SystemTime::now());
        let mut frame = Vec::new();
        encode_hello(
            &Hello { protocol_version: PROTOCOL_VERSION, access_token: token, resume_token: None },
            &mut frame,
        )
        .unwrap();
        raw.write(&frame).await;
        assert!(matches!(raw.next().await, Some(ServerMsg::Welcome(_))));
        raw
    }

    async fn write(&mut self, bytes: &[u8]) {
        // The edge may already have closed; the outcome is read from the stream.
        let _ = self.send.write_all(bytes).await;
    }

    /// The next message, or `None` once the stream ends.
    async fn next(&mut self) -> Option<ServerMsg> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(body) = self.reader.next_frame().unwrap() {
                let msg = decode_server(body).unwrap();
                return Some(rally_protocol::rkyv::deserialize::<_, rally_protocol::rkyv::rancor::Error>(msg).unwrap());
            }
            match timeout(self.recv.read(&mut buf)).await {
                Ok(Some(n)) => self.reader.push(&buf[..n]),
                _ => return None,
            }
        }
    }

    /// The error code of the next message, which must be an error.
    async fn next_error(&mut self) -> ErrorCode {
        match self.next().await {
            Some(ServerMsg::Error(e)) => ErrorCode::from_number(e.code).unwrap(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    async fn close_code(&self) -> CloseCode {
        match timeout(self.conn.closed()).await {
            quinn::ConnectionError::ApplicationClosed(c) => {
                CloseCode::from_number(c.error_code.into_inner() as u32).unwrap()
            }
            other => panic!("expected an application close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn wrong_protocol_version_is_refused() {
    let edge = TestEdge::start(|_| {});
    let mut raw = Raw::connect(&edge).await;
    let token = edge.issuer.mint(77, None, SystemTime::now());
    let mut frame = Vec::new();
    encode_hello(
        &Hello { protocol_version: PROTOCOL_VERSION + 1, access_token: token, resume_token: None },
        &mut frame,
    )
    .unwrap();
    raw.write(&frame).await;
    assert_eq!(raw.next_error().await, ErrorCode::UnsupportedVersion);
    assert_eq!(raw.close_code().await, CloseCode::UnsupportedVersion);
    edge.still_serves().await;
    edge.stop().await;
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() {
    let edge = TestEdge::start(|_| {});
    let (bystander, _) = edge.connect(1, 1500.0).await;
    let mut raw = Raw::hello(&edge).await;
    raw.write(&(1u32 << 20).to_le_bytes()).await;
    assert_eq!(raw.next_error().await, ErrorCode::FrameTooLarge);
    assert_eq!(raw.close_code().await, CloseCode::FrameTooLarge);
    // Before the hello too.
    let mut raw = Raw::connect(&edge).await;
    raw.write(&u32::MAX.to_le_bytes()).await;
    assert_eq!(raw.next_error().await, ErrorCode::FrameTooLarge);
    assert_eq!(raw.close_code().await, CloseCode::FrameTooLarge);
    assert_eq!(timeout(bystander.ticket_status()).await.unwrap(), None, "others are unaffected");
    edge.still_serves().await;
    edge.stop().await;
}

#[tokio::test]
async fn garbage_bytes_close_with_protocol_violation() {
    let edge = TestEdge::start(|_| {});
    // Garbage in a well-sized frame after the hello.
    let mut raw = Raw::hello(&edge).await;
    let garbage = [0xde, 0xad, 0xbe, 0xef, 0x13, 0x37, 0x00, 0xff, 0x42];
    let mut frame = (garbage.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&garbage);
    raw.write(&frame).await;
    assert_eq!(raw.next_error().await, ErrorCode::MalformedFrame);
    assert_eq!(raw.close_code().await, CloseCode::ProtocolViolation);
    // Garbage instead of the hello.
    let mut raw = Raw::connect(&edge).await;
    raw.write(&frame).await;
    assert_eq!(raw.next_error().await, ErrorCode::MalformedFrame);
    assert_eq!(raw.close_code().await, CloseCode::ProtocolViolation);
    // An empty frame.
    let mut raw = Raw::hello(&edge).await;
    raw.write(&[0, 0, 0, 0]).await;
    assert_eq!(raw.next_error().await, ErrorCode::MalformedFrame);
    assert_eq!(raw.close_code().await, CloseCode::ProtocolViolation);
    edge.still_serves().await;
    edge.stop().await;
}

#[tokio::test]
async fn a_request_flood_is_limited_then_closed() {
    let edge = TestEdge::start(|c| {
        c.limits = Limits {
            requests_per_s: 5.try_into().unwrap(),
            burst: 5.try_into().unwrap(),
            max_in_flight: 8,
            flood_close_after: 50,
        }
    });
    let mut raw = Raw::hello(&edge).await;
    let mut frames = Vec::new();
    for request_id in 0..200 {
        encode_client(&ClientMsg::TicketStatus(TicketStatusRequest { request_id }), &mut frames).unwrap();
    }
    raw.write(&frames).await;
    let (mut answered, mut limited) = (0, 0);
    while let Some(msg) = raw.next().await {
        match msg {
            ServerMsg::TicketStatus(_) => answered += 1,
            ServerMsg::Error(e) if e.code == ErrorCode::RateLimited.number() => {
                assert!(e.retryable);
                limited += 1;
            }
            ServerMsg::Error(_) => {} // the last word before the close
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answered, 5, "the burst is served");
    assert!(limited >= 40, "then refused with RateLimited: {limited}");
    assert_eq!(raw.close_code().await, CloseCode::Flood);
    edge.still_serves().await;
    edge.stop().await;
}

#[tokio::test]
async fn shutdown_closes_connected_clients() {
    let edge = TestEdge::start(|_| {});
    let (a, _) = edge.connect(1, 1500.0).await;
    let (b, _) = edge.connect(2, 1900.0).await;
    timeout(a.enqueue("duel", &eu(20.0))).await.unwrap();
    let runtime_edge = edge;
    timeout(runtime_edge.stop()).await;
    for client in [&a, &b] {
        match timeout(client.next_event()).await {
            Some(ClientEvent::Closed(ClientError::Closed { code, .. })) => {
                assert_eq!(code, Some(CloseCode::ShuttingDown))
            }
            other => panic!("expected a close, got {other:?}"),
        }
        // Over for good: a request gets the close that ended it, not a retryable one.
        match timeout(client.ticket_status()).await {
            Err(e @ ClientError::Closed { code: Some(CloseCode::ShuttingDown), .. }) => assert!(!e.is_retryable()),
            other => panic!("expected the shutdown close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_newer_connection_replaces_the_older_and_keeps_the_ticket() {
    let edge = TestEdge::start(|_| {});
    let (old, _) = edge.connect(1, 1500.0).await;
    let ticket = timeout(old.enqueue("duel", &eu(20.0))).await.unwrap();
    let (new, welcome) = edge.connect(1, 1500.0).await;
    assert!(welcome.resumed);
    assert_eq!(welcome.ticket.map(|t| t.ticket_id), Some(ticket));
    match timeout(old.next_event()).await {
        Some(ClientEvent::Closed(ClientError::Closed { code, .. })) => assert_eq!(code, Some(CloseCode::Replaced)),
        other => panic!("expected the old connection closed, got {other:?}"),
    }
    // The ticket is matched and the new connection told.
    let (other, _) = edge.connect(2, 1500.0).await;
    timeout(other.enqueue("duel", &eu(20.0))).await.unwrap();
    assert_eq!(next_match(&new).await.ticket_id, ticket);
    edge.stop().await;
}

/// A UDP relay between one client and the edge that can drop every packet, to cut the
/// network without either side closing.
struct Relay {
    addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    async fn start(edge: SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(edge).await.unwrap();
        let addr = front.local_addr().unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = Arc::new(tokio::sync::Mutex::new(None::<SocketAddr>));
        {
            let (front, back, cut, client) = (front.clone(), back.clone(), cut.clone(), client.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().await = Some(from);
                    if !cut.load(Ordering::Relaxed) {
                        let _ = back.send(&buf[..n]).await;
                    }
                }
            });
        }
        {
            let cut = cut.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok(n) = back.recv(&mut buf).await {
                    let to = *client.lock().await;
                    if let Some(to) = to.filter(|_| !cut.load(Ordering::Relaxed)) {
                        let _ = front.send_to(&buf[..n], to).await;
                    }
                }
            });
        }
        Relay { addr, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Player 1's config through `relay`, noticing a cut within 800 ms (as the edges of these
/// tests do) and trying to resume for `resume_window`.
fn through_relay(edge: &TestEdge, relay: &Relay, resume_window: Duration) -> ClientConfig {
    let mut config = edge.config(1, 1500.0);
    config.addr = relay.addr;
    config.idle_timeout = Duration::from_millis(800);
    config.keep_alive = Duration::from_millis(200);
    config.resume_window = resume_window;
    config
}

#[tokio::test]
async fn a_dropped_client_resumes_and_keeps_its_ticket() {
    let edge = TestEdge::start(|c| {
        c.idle_timeout = Duration::from_millis(800);
        c.grace = Duration::from_secs(8);
    });
    let relay = Relay::start(edge.edge().local_addr()).await;
    let (a, _) = timeout(Client::connect(through_relay(&edge, &relay, Duration::from_secs(8)))).await.unwrap();
    let ticket = timeout(a.enqueue("duel", &eu(20.0))).await.unwrap();

    relay.set_cut(true);
    assert_eq!(timeout(a.next_event()).await, Some(ClientEvent::Reconnecting));
    // A request made while it reconnects goes out once it has, and the resumed session
    // answers it. `join!` polls the request first, so it is queued before the network
    // comes back.
    let (status, ()) = tokio::join!(timeout(a.ticket_status()), async { relay.set_cut(false) });
    assert_eq!(status.expect("answered after the resume").map(|t| t.ticket_id), Some(ticket));
    match timeout(a.next_event()).await {
        Some(ClientEvent::Resumed { ticket: Some(t) }) => assert_eq!(t.ticket_id, ticket),
        other => panic!("expected a resume with the ticket, got {other:?}"),
    }
    // Still in the queue: a second player is matched with it.
    let (b, _) = edge.connect(2, 1500.0).await;
    timeout(b.enqueue("duel", &eu(20.0))).await.unwrap();
    assert_eq!(next_match(&a).await.ticket_id, ticket);
    a.close().await;
    b.close().await;
    edge.stop().await;
}

#[tokio::test]
async fn a_client_that_cannot_resume_fails_its_requests_for_good() {
    let edge = TestEdge::start(|c| c.idle_timeout = Duration::from_millis(800));
    let relay = Relay::start(edge.edge().local_addr()).await;
    let (a, _) = timeout(Client::connect(through_relay(&edge, &relay, Duration::from_millis(1500)))).await.unwrap();
    timeout(a.enqueue("duel", &eu(20.0))).await.unwrap();

    relay.set_cut(true);
    assert_eq!(timeout(a.next_event()).await, Some(ClientEvent::Reconnecting));
    // Queued while it tries, then the window runs out: the request gets the final error.
    let (queued, closed) = tokio::join!(timeout(a.ticket_status()), timeout(a.next_event()));
    let Some(ClientEvent::Closed(end @ ClientError::Connect(_))) = closed else {
        panic!("expected a close after the resume window, got {closed:?}")
    };
    assert!(!end.is_retryable());
    assert_eq!(queued, Err(end.clone()));
    // And so does every request after it, at once.
    assert_eq!(timeout(a.ticket_status()).await, Err(end));
    edge.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_loses_its_ticket_at_once() {
    let edge = TestEdge::start(|_| {});
    let (a, _) = edge.connect(1, 1500.0).await;
    timeout(a.enqueue("duel", &eu(20.0))).await.unwrap();
    a.close().await;
    // Back with a new connection and no resume token: nothing waiting.
    let (a, welcome) = edge.connect(1, 1500.0).await;
    assert!(!welcome.resumed);
    assert_eq!(timeout(a.ticket_status()).await.unwrap(), None);
    edge.stop().await;
}

#[tokio::test]
async fn rtt_to_another_datacenters_edge_is_measured_without_logging_in() {
    // Two edges with one certificate, as one operator's fleet would share a CA.
    let tls = TlsIdentity::self_signed(&["localhost".into()]).unwrap();
    let far = TestEdge::start_with("127.0.0.1:0".parse().unwrap(), tls.clone(), |_| {});
    let far_addr = far.edge().local_addr().to_string();
    let near = TestEdge::start_with("127.0.0.1:0".parse().unwrap(), tls, |c| {
        c.ping_addrs = vec![("na-east".into(), far_addr.clone())];
    });
    let (client, welcome) = near.connect(1, 1500.0).await;
    let na = welcome.datacenters.iter().find(|dc| dc.name == "na-east").unwrap();
    assert_eq!(na.ping_addr, far_addr);
    let rtt = timeout(client.measure_rtt(&welcome, 3)).await;
    let names: Vec<&str> = rtt.iter().map(|(dc, _)| dc.as_str()).collect();
    assert_eq!(names, ["eu-west", "eu-central", "na-east"], "every datacenter answered, in rules order");
    // The ping-only connection never said hello, so it made no session on the far edge.
    far.still_serves().await;
    client.close().await;
    near.stop().await;
    far.stop().await;
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_are_refused() {
    let edge = TestEdge::start(|c| c.limits.max_in_flight = 1);
    let mut raw = Raw::hello(&edge).await;
    // Enqueues written together arrive together: the first is in flight while the next
    // ones are read.
    let mut frames = Vec::new();
    for request_id in 0..20 {
        let enqueue = rally_protocol::Enqueue {
            request_id,
            mode: "duel".into(),
            rtt_ms: vec![rally_protocol::DatacenterRtt { datacenter: "eu-west".into(), rtt_ms: 20.0 }],
        };
        encode_client(&ClientMsg::Enqueue(enqueue), &mut frames).unwrap();
    }
    raw.write(&frames).await;
    let (mut enqueued, mut too_many) = (0, 0);
    for _ in 0..20 {
        match raw.next().await {
            Some(ServerMsg::Enqueued(_)) => enqueued += 1,
            Some(ServerMsg::Error(e)) if e.code == ErrorCode::TooManyInFlight.number() => {
                assert!(e.retryable);
                too_many += 1;
            }
            Some(ServerMsg::Error(e)) => assert_eq!(e.code, ErrorCode::AlreadyQueued.number()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(enqueued, 1, "one ticket, whatever the race");
    assert!(too_many >= 1, "the limit refused some");
    edge.still_serves().await;
    edge.stop().await;
}

#[tokio::test]
async fn production_tls_from_pem_files_with_ca_trust() {
    // A CA and a server certificate it signs, written as PEM files as an operator would.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server =
        rcgen::CertificateParams::new(vec!["edge.example".into()]).unwrap().signed_by(&server_key, &issuer).unwrap();
    let dir = std::env::temp_dir().join(format!("rally-edge-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("edge.crt"), dir.join("edge.key"));
    std::fs::write(&cert_path, server.pem()).unwrap();
    std::fs::write(&key_path, server_key.serialize_pem()).unwrap();

    let tls = TlsIdentity::from_pem_files(&cert_path, &key_path).unwrap();
    let edge = TestEdge::start_with("127.0.0.1:0".parse().unwrap(), tls, |_| {});
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let token = edge.issuer.mint(1, Some(1500.0), SystemTime::now());
    let mut config = ClientConfig::new(edge.edge().local_addr(), Trust::Roots(Arc::new(roots.clone())), token.clone());
    config.server_name = "edge.example".into();
    let (client, welcome) = timeout(Client::connect(config)).await.expect("a certificate the CA signed is trusted");
    assert_eq!(welcome.player_id, 1);
    client.close().await;

    // The same CA, but the wrong name: refused.
    let mut wrong_name = ClientConfig::new(edge.edge().local_addr(), Trust::Roots(Arc::new(roots)), token);
    wrong_name.server_name = "other.example".into();
    assert!(matches!(Client::connect(wrong_name).await.err().unwrap(), ClientError::Connect(_)));

    // Files that are not PEM are a clear error.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    let err = TlsIdentity::from_pem_files(&cert_path, &key_path).unwrap_err();
    assert!(err.to_string().contains("edge.crt"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    edge.stop().await;
}

#[tokio::test]
async fn a_repeated_cancel_gets_a_clear_answer_and_the_first_still_wins() {
    let edge = TestEdge::start(|_| {});
    let mut raw = Raw::hello(&edge).await;
    let mut frame = Vec::new();
    let enqueue = rally_protocol::Enqueue {
        request_id: 1,
        mode: "duel".into(),
        rtt_ms: vec![rally_protocol::DatacenterRtt { datacenter: "eu-west".into(), rtt_ms: 20.0 }],
    };
    encode_client(&ClientMsg::Enqueue(enqueue), &mut frame).unwrap();
    raw.write(&frame).await;
    let Some(ServerMsg::Enqueued(e)) = raw.next().await else { panic!("enqueued") };
    let mut frames = Vec::new();
    for request_id in [2, 3] {
        let cancel = rally_protocol::Cancel { request_id, ticket_id: e.ticket_id };
        encode_client(&ClientMsg::Cancel(cancel), &mut frames).unwrap();
    }
    raw.write(&frames).await;
    let mut cancelled = 0;
    for _ in 0..2 {
        match raw.next().await {
            Some(ServerMsg::Cancelled(c)) => {
                assert_eq!(c.ticket_id, e.ticket_id);
                cancelled += 1;
            }
            // In flight behind the first, or after it: never an internal error.
            Some(ServerMsg::Error(err)) => assert!(
                [ErrorCode::TooManyInFlight.number(), ErrorCode::NotQueued.number()].contains(&err.code),
                "{err:?}"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(cancelled, 1);
    edge.still_serves().await;
    edge.stop().await;
}
