//! Round trips, limits, and hostile bytes for the codec.

use proptest::prelude::*;
use rally_protocol::rkyv::{self, rancor};
use rally_protocol::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,20}"
}

fn rtt_map() -> impl Strategy<Value = Vec<DatacenterRtt>> {
    prop::collection::vec(
        (name(), 0.0f32..500.0).prop_map(|(datacenter, rtt_ms)| DatacenterRtt { datacenter, rtt_ms }),
        1..8,
    )
}

fn hello() -> impl Strategy<Value = Hello> {
    (any::<u16>(), "[A-Za-z0-9._-]{1,300}", prop::option::of("[a-z0-9]{1,40}")).prop_map(
        |(protocol_version, access_token, resume_token)| Hello { protocol_version, access_token, resume_token },
    )
}

fn party_op() -> impl Strategy<Value = PartyOp> {
    prop_oneof![
        name().prop_map(PartyOp::Create),
        Just(PartyOp::Get),
        any::<u64>().prop_map(PartyOp::Join),
        Just(PartyOp::Leave),
        (any::<bool>(), rtt_map()).prop_map(|(ready, rtt_ms)| PartyOp::Ready(PartyReady { ready, rtt_ms })),
        Just(PartyOp::Queue),
        Just(PartyOp::Dequeue),
        ".{1,100}".prop_map(PartyOp::Chat),
    ]
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        (any::<u32>(), name(), rtt_map()).prop_map(|(request_id, mode, rtt_ms)| ClientMsg::Enqueue(Enqueue {
            request_id,
            mode,
            rtt_ms
        })),
        (any::<u32>(), any::<u64>())
            .prop_map(|(request_id, ticket_id)| ClientMsg::Cancel(Cancel { request_id, ticket_id })),
        any::<u32>().prop_map(|request_id| ClientMsg::TicketStatus(TicketStatusRequest { request_id })),
        (any::<u32>(), any::<u64>(), any::<bool>()).prop_map(|(request_id, match_id, accept)| {
            ClientMsg::RespondToMatch(RespondToMatch { request_id, match_id, accept })
        }),
        (any::<u32>(), party_op()).prop_map(|(request_id, op)| ClientMsg::Party(PartyRequest { request_id, op })),
    ]
}

fn waiting() -> impl Strategy<Value = Option<WaitingTicket>> {
    prop::option::of((any::<u64>(), name()).prop_map(|(ticket_id, mode)| WaitingTicket { ticket_id, mode }))
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    let welcome = (
        any::<u64>(),
        "[a-z0-9]{1,40}",
        any::<bool>(),
        waiting(),
        prop::collection::vec(
            (name(), "[0-9.:]{1,21}").prop_map(|(name, ping_addr)| Datacenter { name, ping_addr }),
            1..8,
        ),
    )
        .prop_map(|(player_id, resume_token, resumed, ticket, datacenters)| {
            ServerMsg::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                player_id,
                resume_token,
                resumed,
                ticket,
                datacenters,
            })
        });
    let found = (
        any::<u64>(),
        any::<u64>(),
        name(),
        name(),
        "[0-9.:]{0,21}",
        "[a-z0-9]{0,40}",
        prop::collection::vec(prop::collection::vec(any::<u64>(), 1..6), 2..5),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(
                ticket_id,
                match_id,
                mode,
                datacenter,
                server_addr,
                connect_token,
                teams,
                formed_at_unix_us,
                accept_by_unix_ms,
            )| {
                ServerMsg::MatchFound(MatchFound {
                    ticket_id,
                    match_id,
                    mode,
                    datacenter,
                    server_addr,
                    connect_token,
                    teams: teams.into_iter().map(|players| Team { players }).collect(),
                    formed_at_unix_us,
                    accept_by_unix_ms,
                })
            },
        );
    let error = (prop::option::of(any::<u32>()), prop::sample::select(ErrorCode::ALL), ".{0,80}").prop_map(
        |(request_id, code, message)| {
            ServerMsg::Error(ErrorReply { request_id, code: code.number(), retryable: code.retryable(), message })
        },
    );
    prop_oneof![
        welcome,
        found,
        error,
        (any::<u32>(), any::<u64>())
            .prop_map(|(request_id, ticket_id)| ServerMsg::Enqueued(Enqueued { request_id, ticket_id })),
        (any::<u32>(), any::<u64>())
            .prop_map(|(request_id, ticket_id)| ServerMsg::Cancelled(Cancelled { request_id, ticket_id })),
        (any::<u32>(), waiting())
            .prop_map(|(request_id, ticket)| ServerMsg::TicketStatus(TicketStatus { request_id, ticket })),
        (any::<u64>(), waiting())
            .prop_map(|(match_id, ticket)| ServerMsg::MatchAbandoned(MatchAbandoned { match_id, ticket })),
    ]
}

/// Feeds `stream` to a reader in pieces of the given sizes (cycled) and collects the frames.
fn reassemble(stream: &[u8], pieces: &[usize]) -> Vec<Vec<u8>> {
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    let mut at = 0;
    for &piece in pieces.iter().cycle() {
        if at >= stream.len() {
            break;
        }
        let end = (at + piece.max(1)).min(stream.len());
        reader.push(&stream[at..end]);
        at = end;
        while let Some(frame) = reader.next_frame().expect("well-formed stream") {
            frames.push(frame.to_vec());
        }
    }
    assert_eq!(reader.buffered(), 0);
    frames
}

proptest! {
    #[test]
    fn client_stream_round_trips(hello in hello(), msgs in prop::collection::vec(client_msg(), 0..8),
                                 pieces in prop::collection::vec(1usize..64, 1..6)) {
        let mut stream = Vec::new();
        encode_hello(&hello, &mut stream).unwrap();
        for m in &msgs {
            encode_client(m, &mut stream).unwrap();
        }
        let frames = reassemble(&stream, &pieces);
        prop_assert_eq!(frames.len(), msgs.len() + 1);
        let got: Hello = rkyv::deserialize::<_, rancor::Error>(decode_hello(&frames[0]).unwrap()).unwrap();
        prop_assert_eq!(&got, &hello);
        for (frame, want) in frames[1..].iter().zip(&msgs) {
            let got: ClientMsg = rkyv::deserialize::<_, rancor::Error>(decode_client(frame).unwrap()).unwrap();
            prop_assert_eq!(&got, want);
        }
    }

    #[test]
    fn server_stream_round_trips(msgs in prop::collection::vec(server_msg(), 1..8),
                                 pieces in prop::collection::vec(1usize..64, 1..6)) {
        let mut stream = Vec::new();
        for m in &msgs {
            encode_server(m, &mut stream).unwrap();
        }
        let frames = reassemble(&stream, &pieces);
        prop_assert_eq!(frames.len(), msgs.len());
        for (frame, want) in frames.iter().zip(&msgs) {
            let got: ServerMsg = rkyv::deserialize::<_, rancor::Error>(decode_server(frame).unwrap()).unwrap();
            prop_assert_eq!(&got, want);
        }
    }

    #[test]
    fn datagrams_round_trip(seq in any::<u32>(), client_time_us in any::<u64>(), pong in any::<bool>()) {
        let ping = Ping { seq, client_time_us };
        let msg = if pong { Datagram::Pong(ping) } else { Datagram::Ping(ping) };
        let bytes = encode_datagram(&msg);
        let got: Datagram = rkyv::deserialize::<_, rancor::Error>(decode_datagram(&bytes).unwrap()).unwrap();
        prop_assert_eq!(got, msg);
    }

    /// Random bytes: every decoder answers, none panics, and whatever it accepts can be
    /// read in full.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise_decoders(&bytes);
        let mut reader = FrameReader::new();
        reader.push(&bytes);
        while let Ok(Some(frame)) = reader.next_frame() {
            let frame = frame.to_vec();
            exercise_decoders(&frame);
        }
    }

    /// Valid frames with bytes flipped, cut or extended: the same promise.
    #[test]
    fn mutated_frames_never_panic(msg in client_msg(), reply in server_msg(), hello in hello(),
                                  flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
                                  cut in any::<prop::sample::Index>(), which in 0..3u8) {
        let mut body = Vec::new();
        match which {
            0 => encode_client(&msg, &mut body).unwrap(),
            1 => encode_server(&reply, &mut body).unwrap(),
            _ => encode_hello(&hello, &mut body).unwrap(),
        }
        let mut body = body.split_off(HEADER_LEN);
        for (at, byte) in &flips {
            let i = at.index(body.len());
            body[i] ^= byte | 1;
        }
        exercise_decoders(&body);
        exercise_decoders(&body[..cut.index(body.len() + 1)]);
        body.extend_from_slice(&[0xff; 9]);
        exercise_decoders(&body);
    }
}

/// Runs every decoder over `bytes`; whatever one accepts is deserialized in full and, for
/// field-checked messages, holds to the limits again after a re-encode.
fn exercise_decoders(bytes: &[u8]) {
    if let Ok(h) = decode_hello(bytes) {
        let h: Hello = rkyv::deserialize::<_, rancor::Error>(h).unwrap();
        assert!(!h.access_token.is_empty() && h.access_token.len() <= MAX_TOKEN_LEN);
    }
    if let Ok(m) = decode_client(bytes) {
        let m: ClientMsg = rkyv::deserialize::<_, rancor::Error>(m).unwrap();
        if let ClientMsg::Enqueue(e) = &m {
            assert!(e.rtt_ms.iter().all(|r| r.rtt_ms.is_finite() && r.rtt_ms >= 0.0));
        }
        let mut again = Vec::new();
        encode_client(&m, &mut again).unwrap();
        decode_client(&again[HEADER_LEN..]).unwrap();
    }
    if let Ok(m) = decode_server(bytes) {
        let _: ServerMsg = rkyv::deserialize::<_, rancor::Error>(m).unwrap();
    }
    if let Ok(d) = decode_datagram(bytes) {
        let _: Datagram = rkyv::deserialize::<_, rancor::Error>(d).unwrap();
    }
}

fn enqueue(rtt_ms: Vec<DatacenterRtt>, mode: &str) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_client(&ClientMsg::Enqueue(Enqueue { request_id: 7, mode: mode.into(), rtt_ms }), &mut frame).unwrap();
    frame.split_off(HEADER_LEN)
}

fn rtt(datacenter: &str, rtt_ms: f32) -> DatacenterRtt {
    DatacenterRtt { datacenter: datacenter.into(), rtt_ms }
}

/// The refusal of a field-checked Enqueue, as (request, field, problem).
fn refusal(body: &[u8]) -> (Option<u32>, &'static str, FieldProblem) {
    match decode_client(body) {
        Err(DecodeError::InvalidField { request_id, field, problem }) => (request_id, field, problem),
        other => panic!("expected a field refusal, got {other:?}"),
    }
}

#[test]
fn enqueue_fields_are_held_to_their_limits() {
    let long = "x".repeat(MAX_NAME_LEN + 1);
    let too_many: Vec<_> = (0..=MAX_DATACENTERS).map(|i| rtt(&format!("dc{i}"), 10.0)).collect();
    let cases = [
        (enqueue(vec![rtt("eu", 10.0)], ""), "mode", FieldProblem::Empty),
        (enqueue(vec![rtt("eu", 10.0)], &long), "mode", FieldProblem::TooLong { len: 65, max: 64 }),
        (enqueue(vec![], "duel"), "rtt_ms", FieldProblem::Empty),
        (enqueue(too_many, "duel"), "rtt_ms", FieldProblem::TooLong { len: 65, max: 64 }),
        (enqueue(vec![rtt("", 10.0)], "duel"), "rtt_ms.datacenter", FieldProblem::Empty),
        (enqueue(vec![rtt("eu", f32::NAN)], "duel"), "rtt_ms.rtt_ms", FieldProblem::NotFinite),
        (enqueue(vec![rtt("eu", f32::INFINITY)], "duel"), "rtt_ms.rtt_ms", FieldProblem::NotFinite),
        (enqueue(vec![rtt("eu", -1.0)], "duel"), "rtt_ms.rtt_ms", FieldProblem::Negative),
    ];
    for (body, field, problem) in cases {
        assert_eq!(refusal(&body), (Some(7), field, problem));
        let err = decode_client(&body).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        assert_eq!(err.close_code(), None, "a field refusal answers the request, the connection goes on");
    }
    decode_client(&enqueue(vec![rtt("eu", 0.0)], "duel")).expect("zero RTT is fine");
}

#[test]
fn hello_token_limits() {
    let encode = |access_token: String, resume_token: Option<String>| {
        let mut frame = Vec::new();
        encode_hello(&Hello { protocol_version: 1, access_token, resume_token }, &mut frame).unwrap();
        frame.split_off(HEADER_LEN)
    };
    let field = |body: &[u8]| match decode_hello(body) {
        Err(DecodeError::InvalidField { request_id: None, field, .. }) => field,
        other => panic!("expected a field refusal, got {other:?}"),
    };
    assert_eq!(field(&encode(String::new(), None)), "access_token");
    assert_eq!(field(&encode("t".repeat(MAX_TOKEN_LEN + 1), None)), "access_token");
    assert_eq!(field(&encode("t".into(), Some("r".repeat(MAX_SHORT_TOKEN_LEN + 1)))), "resume_token");
    decode_hello(&encode("t".repeat(MAX_TOKEN_LEN), Some("r".into()))).unwrap();
}

#[test]
fn malformed_bytes_close_the_connection() {
    let err = decode_client(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::MalformedFrame);
    assert_eq!(err.close_code(), Some(CloseCode::ProtocolViolation));
    assert!(matches!(decode_server(&[]), Err(DecodeError::Malformed(_))));
    assert!(matches!(decode_datagram(&[1]), Err(DecodeError::Malformed(_))));
}

#[test]
fn oversize_frame_is_refused_from_its_header() {
    let mut reader = FrameReader::new();
    reader.push(&((MAX_FRAME_LEN + 1) as u32).to_le_bytes());
    assert_eq!(reader.next_frame(), Err(FrameError::TooLarge { len: MAX_FRAME_LEN + 1 }));
    // The stream is done: later bytes do not revive it.
    reader.push(&[1, 0, 0, 0, 0]);
    assert_eq!(reader.next_frame(), Err(FrameError::TooLarge { len: MAX_FRAME_LEN + 1 }));

    assert_eq!(body_len(u32::MAX.to_le_bytes()), Err(FrameError::TooLarge { len: u32::MAX as usize }));
    assert_eq!(body_len(0u32.to_le_bytes()), Err(FrameError::Empty));
    assert_eq!(body_len((MAX_FRAME_LEN as u32).to_le_bytes()), Ok(MAX_FRAME_LEN));
}

#[test]
fn oversize_message_is_not_encoded() {
    let mut out = vec![9, 9];
    let huge = ServerMsg::Error(ErrorReply {
        request_id: None,
        code: ErrorCode::Internal.number(),
        retryable: true,
        message: "m".repeat(MAX_FRAME_LEN),
    });
    assert!(matches!(encode_server(&huge, &mut out), Err(EncodeError::TooLarge { .. })));
    assert_eq!(out, [9, 9], "nothing half-written");
}

#[test]
fn frames_split_anywhere_reassemble() {
    let mut stream = Vec::new();
    encode_client(&ClientMsg::Cancel(Cancel { request_id: 1, ticket_id: 2 }), &mut stream).unwrap();
    encode_client(&ClientMsg::TicketStatus(TicketStatusRequest { request_id: 3 }), &mut stream).unwrap();
    for split in 0..=stream.len() {
        let mut reader = FrameReader::new();
        reader.push(&stream[..split]);
        let mut n = 0;
        while reader.next_frame().unwrap().is_some() {
            n += 1;
        }
        reader.push(&stream[split..]);
        while reader.next_frame().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 2, "split at {split}");
    }
}

#[test]
fn codes_are_stable_numbers() {
    for &code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_number(code.number()), Some(code));
    }
    for &code in CloseCode::ALL {
        assert_eq!(CloseCode::from_number(code.number()), Some(code));
    }
    assert_eq!(ErrorCode::from_number(9999), None);
    // The published numbers; changing one breaks every client in the field.
    assert_eq!(ErrorCode::MalformedFrame.number(), 100);
    assert_eq!(ErrorCode::InvalidToken.number(), 200);
    assert_eq!(ErrorCode::RateLimited.number(), 300);
    assert_eq!(ErrorCode::UnknownMode.number(), 400);
    assert_eq!(ErrorCode::Overloaded.number(), 500);
    assert_eq!(CloseCode::Normal.number(), 0);
    assert_eq!(CloseCode::Internal.number(), 9);
    assert!(ErrorCode::Overloaded.retryable() && !ErrorCode::UnknownMode.retryable());
}
