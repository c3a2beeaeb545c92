use super::*;

fn rtt() -> Vec<(String, f64)> {
    vec![("eu-west".into(), 20.0)]
}

fn trio() -> (Parties, PartyId) {
    let mut p = Parties::new();
    let id = p.create(1, "trio", 3).unwrap().id;
    p.join(id, 2).unwrap();
    p.join(id, 3).unwrap();
    (p, id)
}

#[test]
fn joining_is_capped_once_per_player_and_only_while_idle() {
    let (mut p, id) = trio();
    assert_eq!(p.join(id, 4), Err(LobbyError::PartyFull));
    assert_eq!(p.join(id, 2), Err(LobbyError::AlreadyInParty), "double join");
    assert_eq!(p.join(99, 4), Err(LobbyError::UnknownParty));
    assert!(matches!(p.create(3, "duel", 1), Err(LobbyError::AlreadyInParty)));
    let other = p.create(4, "trio", 3).unwrap().id;
    assert_eq!(p.join(other, 1), Err(LobbyError::AlreadyInParty), "one party at a time");
    assert_eq!(p.party_of(2).unwrap().id, id);
}

#[test]
fn only_the_leader_queues_and_only_when_everyone_is_ready() {
    let (mut p, id) = trio();
    assert_eq!(p.check_queue(id, 2).unwrap_err(), LobbyError::NotLeader);
    assert_eq!(p.check_queue(id, 9).unwrap_err(), LobbyError::NotMember);
    assert_eq!(p.check_queue(id, 1).unwrap_err(), LobbyError::NotAllReady);
    assert_eq!(p.ready(id, 1, true, Vec::new()), Err(LobbyError::RttMissing));
    for player in [1, 2, 3] {
        p.ready(id, player, true, rtt()).unwrap();
    }
    let members = p.check_queue(id, 1).unwrap().members.clone();
    assert_eq!(p.queued(id, 1, &members, 500).unwrap().events, [PartyEvent::Queued { ticket: 500 }]);
    assert_eq!(p.check_queue(id, 1).unwrap_err(), LobbyError::Queued);
    assert_eq!(p.join(id, 4), Err(LobbyError::Queued));
    assert_eq!(p.party_of_ticket(500).unwrap().id, id);
    assert_eq!(p.dequeue(id, 2), Err(LobbyError::NotLeader));
    let out = p.dequeue(id, 1).unwrap();
    assert_eq!(out.cancel, Some(500));
    assert_eq!(p.dequeue(id, 1), Err(LobbyError::NotQueued));
    assert!(p.party_of_ticket(500).is_none());
}

#[test]
fn a_party_that_changed_since_the_check_is_not_queued() {
    let (mut p, id) = trio();
    for player in [1, 2, 3] {
        p.ready(id, player, true, rtt()).unwrap();
    }
    let members = p.check_queue(id, 1).unwrap().members.clone();
    p.leave(id, 3).unwrap();
    assert!(p.queued(id, 1, &members, 7).is_err());
    assert_eq!(p.get(id).unwrap().state, PartyState::Idle);
}

#[test]
fn leaving_cancels_the_ticket_hands_over_the_lead_and_the_last_one_out_disbands() {
    let (mut p, id) = trio();
    for player in [1, 2, 3] {
        p.ready(id, player, true, rtt()).unwrap();
    }
    let members = p.get(id).unwrap().members.clone();
    p.queued(id, 1, &members, 42).unwrap();
    let out = p.leave(id, 1).unwrap();
    assert_eq!(out.cancel, Some(42));
    assert_eq!(
        out.events,
        [
            PartyEvent::Dequeued { reason: "member_left" },
            PartyEvent::MemberLeft { player: 1 },
            PartyEvent::LeaderChanged { player: 2 },
        ]
    );
    assert_eq!(p.get(id).unwrap().leader, 2);
    assert_eq!(p.leave(id, 1), Err(LobbyError::NotMember));
    p.leave(id, 3).unwrap();
    let out = p.leave(id, 2).unwrap();
    assert_eq!(out.events.last(), Some(&PartyEvent::Disbanded));
    assert!(p.get(id).is_none() && p.party_of(2).is_none() && p.is_empty());
}

#[test]
fn dropping_the_last_connection_while_queued_takes_the_party_out() {
    let (mut p, id) = trio();
    for player in [1, 2, 3] {
        p.ready(id, player, true, rtt()).unwrap();
    }
    p.connection(id, 2, true);
    p.connection(id, 2, true);
    let members = p.get(id).unwrap().members.clone();
    p.queued(id, 1, &members, 9).unwrap();
    assert_eq!(p.connection(id, 2, false), Outcome::default(), "one of two tabs closed");
    let out = p.connection(id, 2, false);
    assert_eq!((out.cancel, out.events), (Some(9), vec![PartyEvent::Dequeued { reason: "member_dropped" }]));
}

#[test]
fn a_match_ends_the_queue_and_everyone_readies_again() {
    let (mut p, id) = trio();
    for player in [1, 2, 3] {
        p.ready(id, player, true, rtt()).unwrap();
    }
    let members = p.get(id).unwrap().members.clone();
    p.queued(id, 1, &members, 9).unwrap();
    let (party, out) = p.matched(9, 1234).unwrap();
    assert_eq!((party, out.events), (id, vec![PartyEvent::MatchFound { match_id: 1234 }]));
    assert!(p.get(id).unwrap().members.iter().all(|m| !m.ready));
    assert!(p.matched(9, 1234).is_none(), "once");
    // Unreadying a queued party dequeues it; a refused ticket idles it.
    for player in [1, 2, 3] {
        p.ready(id, player, true, Vec::new()).unwrap();
    }
    let members = p.get(id).unwrap().members.clone();
    p.queued(id, 1, &members, 10).unwrap();
    assert_eq!(p.ready(id, 3, false, Vec::new()).unwrap().cancel, Some(10));
    p.ready(id, 3, true, Vec::new()).unwrap();
    let members = p.get(id).unwrap().members.clone();
    p.queued(id, 1, &members, 11).unwrap();
    let (_, out) = p.ticket_ended(11, "rejected").unwrap();
    assert_eq!(out.events, [PartyEvent::Dequeued { reason: "rejected" }]);
    assert_eq!(p.get(id).unwrap().state, PartyState::Idle);
}

#[test]
fn a_party_whose_match_fell_through_goes_back_in_only_if_unchanged() {
    let (mut p, id) = trio();
    for player in [1, 2, 3] {
        p.ready(id, player, true, rtt()).unwrap();
    }
    let members = p.get(id).unwrap().members.clone();
    p.queued(id, 1, &members, 9).unwrap();
    p.matched(9, 77).unwrap();
    assert_eq!(p.requeue(id, &[1, 2, 3], 10).unwrap().events, [PartyEvent::Queued { ticket: 10 }]);
    assert!(p.get(id).unwrap().members.iter().all(|m| m.ready));
    assert_eq!(p.requeue(id, &[1, 2, 3], 11), Err(LobbyError::Queued));
    p.matched(10, 78).unwrap();
    p.leave(id, 3).unwrap();
    assert_eq!(p.requeue(id, &[1, 2, 3], 12), Err(LobbyError::NotAllReady), "someone left meanwhile");
}
