use super::*;

fn spec(dc: &str, addr: &str, capacity: u32) -> ServerSpec {
    ServerSpec { datacenter: dc.into(), address: addr.into(), capacity }
}

fn duel(match_id: u64, dc: &str) -> FormedMatch {
    FormedMatch {
        match_id,
        mode: "duel-1v1".into(),
        datacenter: dc.into(),
        formed_at_ms: 0,
        teams: vec![vec![1], vec![2]],
    }
}

#[test]
fn matches_go_to_the_least_loaded_live_server_with_room_in_their_datacenter() {
    let mut s = Sessions::new(SessionConfig::default());
    let (a, _) = s.register(spec("eu-west", "10.0.0.1:7777", 2), [1; 32], 0).unwrap();
    let (b, _) = s.register(spec("eu-west", "10.0.0.2:7777", 4), [2; 32], 0).unwrap();
    let (c, _) = s.register(spec("na-east", "10.0.1.1:7777", 8), [3; 32], 0).unwrap();
    let placed: Vec<ServerId> = (1..=6).map(|m| s.allocate(&duel(m, "eu-west"), 10).unwrap().server_id).collect();
    // a: 0/2, b: 0/4 → a (lower id); then b (0 < 1/2); b (1/4 < 1/2); a (2/4 = 1/2, lower id)...
    assert_eq!(placed, [a, b, b, a, b, b]);
    assert_eq!(s.allocate(&duel(7, "eu-west"), 10), None, "every eu-west server is full");
    assert_eq!(s.allocate(&duel(8, "na-east"), 10).unwrap().server_id, c);
    assert_eq!(s.allocate(&duel(9, "ap-south"), 10), None, "no server there");
    assert_eq!(s.allocate(&duel(8, "na-east"), 10), None, "a match is placed once");
    // A server silent past its timeout gets nothing new.
    assert_eq!(s.allocate(&duel(10, "na-east"), 30_000), None);
}

#[test]
fn connect_tokens_are_the_servers_hmac_of_match_and_player() {
    let mut s = Sessions::new(SessionConfig::default());
    s.register(spec("eu-west", "10.0.0.1:7777", 2), [9; 32], 0).unwrap();
    let allocation = s.allocate(&duel(42, "eu-west"), 0).unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &[9; 32]);
    // What a game server holding the secret computes for itself.
    assert_eq!(allocation.connect_tokens, [(1, connect_token(&key, 42, 1)), (2, connect_token(&key, 42, 2))]);
    assert_eq!(allocation.connect_tokens[0].1.len(), 64);
    assert_ne!(allocation.connect_tokens[0].1, allocation.connect_tokens[1].1);
    assert_eq!(s.connect_token(42, 2), Some(allocation.connect_tokens[1].1.clone()));
    assert_eq!(s.connect_token(42, 3), None, "not a player of the match");
}

#[test]
fn server_tokens_authenticate_only_their_server() {
    let mut s = Sessions::new(SessionConfig::default());
    let (a, token_a) = s.register(spec("eu-west", "x:1", 1), [1; 32], 0).unwrap();
    let (_, token_b) = s.register(spec("eu-west", "y:1", 1), [2; 32], 0).unwrap();
    assert_eq!(s.authenticate(&token_a), Ok(a));
    let forged = format!("{a}.{}", token_b.split_once('.').unwrap().1);
    assert_eq!(s.authenticate(&forged), Err(SessionError::BadServerToken));
    for bad in ["", "1", "x.y", "99.00", "1."] {
        assert_eq!(s.authenticate(bad), Err(SessionError::BadServerToken), "{bad:?}");
    }
    assert_eq!(s.register(spec("", "x:1", 1), [0; 32], 0), Err(SessionError::BadSpec));
    assert_eq!(s.register(spec("eu-west", "x:1", 0), [0; 32], 0), Err(SessionError::BadSpec));
    assert_eq!(s.register(spec("eu-west", &"a".repeat(256), 1), [0; 32], 0), Err(SessionError::BadSpec));
}

#[test]
fn a_result_is_recorded_once_by_the_hosting_server() {
    let mut s = Sessions::new(SessionConfig::default());
    let (a, _) = s.register(spec("eu-west", "x:1", 1), [1; 32], 0).unwrap();
    let (b, _) = s.register(spec("eu-west", "y:1", 1), [2; 32], 0).unwrap();
    assert_eq!(s.allocate(&duel(1, "eu-west"), 0).unwrap().server_id, a);
    assert_eq!(s.begin_result(1, b, &[1, 2]), Err(SessionError::WrongServer));
    assert_eq!(s.begin_result(7, a, &[1, 2]), Err(SessionError::UnknownSession));
    assert_eq!(s.begin_result(1, a, &[1]), Err(SessionError::BadPlacements));
    assert_eq!(s.begin_result(1, a, &[0, 1]), Err(SessionError::BadPlacements));
    assert!(matches!(s.begin_result(1, a, &[2, 1]), Ok(ResultStart::Rate(_))));
    assert_eq!(s.begin_result(1, a, &[2, 1]), Err(SessionError::ResultInProgress));
    // Recording failed (the queue was full, say): the server may try again.
    s.end_result(1, None, 5);
    assert!(matches!(s.begin_result(1, a, &[2, 1]), Ok(ResultStart::Rate(_))));
    s.end_result(1, Some(vec![2, 1]), 5);
    assert!(matches!(s.begin_result(1, a, &[2, 1]), Ok(ResultStart::AlreadyRecorded(_))));
    assert_eq!(s.begin_result(1, a, &[1, 2]), Err(SessionError::ConflictingResult));
    assert_eq!(s.session_heartbeat(1, a, 6), Err(SessionError::Ended));
    assert_eq!(s.session(1).unwrap().state, SessionState::Finished { placements: vec![2, 1] });
    // The finished match freed its slot.
    assert_eq!(s.allocate(&duel(2, "eu-west"), 6).unwrap().server_id, a);
}

#[test]
fn sessions_whose_heartbeats_stop_fail_and_the_server_learns_of_new_ones_by_heartbeat() {
    let config = SessionConfig { heartbeat_timeout_ms: 100, server_timeout_ms: 1_000, keep_ended_ms: 500 };
    let mut s = Sessions::new(config);
    let (a, _) = s.register(spec("eu-west", "x:1", 4), [1; 32], 0).unwrap();
    s.allocate(&duel(1, "eu-west"), 0).unwrap();
    s.allocate(&duel(2, "eu-west"), 0).unwrap();
    let active: Vec<u64> = s.server_heartbeat(a, 50).unwrap().iter().map(|x| x.match_id).collect();
    assert_eq!(active, [1, 2]);
    s.session_heartbeat(2, a, 90).unwrap();
    let failed = s.expire(120);
    assert_eq!(failed.iter().map(|x| x.match_id).collect::<Vec<_>>(), [1]);
    assert_eq!(s.session(1).unwrap().state, SessionState::Failed);
    assert_eq!(s.session_heartbeat(1, a, 121), Err(SessionError::Ended));
    assert_eq!(s.begin_result(1, a, &[1, 2]), Err(SessionError::Ended));
    assert_eq!(s.session_heartbeat(99, a, 121), Err(SessionError::UnknownSession));
    assert_eq!(s.counts(), (1, 1));
    assert!(s.expire(150).is_empty(), "a failure is reported once");
    // Ended sessions are forgotten after `keep_ended_ms`; silent servers after theirs.
    s.session_heartbeat(2, a, 600).unwrap();
    s.expire(650);
    assert!(s.session(1).is_none());
    s.expire(2_000);
    assert_eq!(s.server_heartbeat(a, 2_000).unwrap_err(), SessionError::UnknownServer);
}

#[test]
fn a_ready_check_confirms_when_all_accept_and_falls_through_on_a_decline_or_silence() {
    let mut s = Sessions::new(SessionConfig::default());
    s.register(spec("eu-west", "x:1", 4), [1; 32], 0).unwrap();
    s.propose(duel(1, "eu-west"), 1_000, 5_000);
    assert_eq!(s.respond(1, 3, true, 10), Err(SessionError::NotInMatch));
    assert_eq!(s.respond(9, 1, true, 10), Err(SessionError::NoReadyCheck));
    assert_eq!(s.respond(1, 1, true, 10), Ok(None));
    assert_eq!(s.respond(1, 1, true, 10), Ok(None), "accepting twice counts once");
    assert!(s.session(1).is_none(), "no server until everyone accepts");
    match s.respond(1, 2, true, 20).unwrap() {
        Some(ReadyOutcome::Confirmed { allocation: Some(a), .. }) => assert_eq!(a.server_addr, "x:1"),
        other => panic!("expected a confirmed match, got {other:?}"),
    }
    assert!(s.session(1).is_some());
    assert_eq!(s.respond(1, 2, true, 20), Err(SessionError::NoReadyCheck), "settled");

    // A decline sinks it at once, and its player cools down.
    s.propose(duel(2, "eu-west"), 1_000, 5_000);
    s.respond(2, 1, true, 30).unwrap();
    assert_eq!(
        s.respond(2, 2, false, 40).unwrap(),
        Some(ReadyOutcome::FellThrough { formed: duel(2, "eu-west"), refused: vec![2] })
    );
    assert_eq!(s.cooldown_until(2, 41), Some(5_040));
    assert_eq!(s.cooldown_until(1, 41), None);

    // Silence: at the deadline, whoever did not accept is refused and cools down.
    s.propose(duel(3, "eu-west"), 1_000, 5_000);
    s.respond(3, 2, true, 50).unwrap();
    assert!(s.expire_ready_checks(999).is_empty());
    assert_eq!(
        s.expire_ready_checks(1_000),
        [ReadyOutcome::FellThrough { formed: duel(3, "eu-west"), refused: vec![1] }]
    );
    assert_eq!(s.cooldown_until(1, 1_001), Some(6_000));
    s.expire_ready_checks(7_000);
    assert_eq!(s.cooldown_until(1, 7_000), None, "cooldowns end");
}
