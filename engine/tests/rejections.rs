//! One test per rejection reason; a refused ticket leaves nothing behind.

mod common;

use common::*;
use rally_engine::{Event, PlayerEntry, Rejection, Shard, TicketId, TicketRequest};

/// Enqueues `req` into `s` and expects `reason`; checks nothing of it was kept.
fn assert_rejected(s: &mut Shard, req: TicketRequest, reason: Rejection) {
    let waiting = s.waiting_total();
    let id = req.id;
    let mut players: Vec<PlayerEntry> = req.players.clone();
    players.dedup_by_key(|p| p.id);
    assert_eq!(enqueue(s, 0, req), vec![Event::Rejected { ticket: id, reason }]);
    assert_eq!(s.waiting_total(), waiting, "a rejected ticket must not wait");
    // Its players that were not already waiting elsewhere are free to queue.
    for p in players {
        if p.id.0 >= 1_000 {
            let fresh = ticket(900_000 + p.id.0, "duel", vec![eu(p.id.0, 1500.0)]);
            let out = enqueue(s, 0, fresh);
            assert!(
                matches!(out[0], Event::Enqueued(_) | Event::Rejected { reason: Rejection::PlayerAlreadyWaiting, .. }),
                "{out:?}"
            );
        }
    }
}

#[test]
fn unknown_mode() {
    let mut s = shard();
    let req = TicketRequest {
        id: TicketId(1),
        mode: rally_engine::ModeId(99),
        players: vec![eu(1_000, 1500.0)],
        waited_ms: 0,
    };
    assert_rejected(&mut s, req, Rejection::UnknownMode);
}

#[test]
fn empty_ticket() {
    let mut s = shard();
    assert_rejected(&mut s, ticket(1, "duel", vec![]), Rejection::Empty);
}

#[test]
fn party_larger_than_team_size() {
    let mut s = shard();
    let party = (0..4).map(|i| eu(1_000 + i, 1500.0)).collect();
    assert_rejected(&mut s, ticket(1, "trio", party), Rejection::PartyTooLarge);
}

#[test]
fn duplicate_player_inside_a_ticket() {
    let mut s = shard();
    assert_rejected(&mut s, ticket(1, "trio", vec![eu(1_000, 1500.0), eu(1_000, 1600.0)]), Rejection::DuplicatePlayer);
}

#[test]
fn player_already_waiting_in_another_ticket() {
    let mut s = shard();
    assert_eq!(enqueue(&mut s, 0, ticket(1, "trio", vec![eu(7, 1500.0)])), vec![Event::Enqueued(TicketId(1))]);
    // Also across modes: a player waits in one queue at a time.
    assert_rejected(&mut s, ticket(2, "duel", vec![eu(7, 1500.0)]), Rejection::PlayerAlreadyWaiting);
    assert_rejected(&mut s, ticket(3, "trio", vec![eu(1_000, 1500.0), eu(7, 1500.0)]), Rejection::PlayerAlreadyWaiting);
}

#[test]
fn whether_a_waiting_player_is_matched_before_a_time_is_found_without_changing_the_shard() {
    // 200 apart: the duel window (50, growing 10 a second) reaches that at 15 s.
    let mut s = shard();
    enqueue(&mut s, 0, ticket(1, "duel", vec![eu(7, 1500.0)]));
    enqueue(&mut s, 0, ticket(2, "duel", vec![eu(8, 1700.0)]));
    assert_eq!(s.waiting_ticket_of(rally_engine::PlayerId(7)), Some(TicketId(1)));
    let ticks_before = |end_ms: u64| (0..end_ms).step_by(100);
    assert!(!s.would_match_all(&[TicketId(1)], ticks_before(15_000)));
    assert!(s.would_match_all(&[TicketId(1), TicketId(2)], ticks_before(15_001)));
    assert!(!s.would_match_all(&[TicketId(1)], ticks_before(0)), "no tick, no match");
    // The shard itself has not ticked: its own ticks match the pair at 15 s, not before.
    assert_eq!(s.waiting_total(), 2);
    assert!(run_ticks(&mut s, 0, 14_900).is_empty());
    assert_eq!(tick(&mut s, 15_000).len(), 1);
    assert_eq!(s.waiting_ticket_of(rally_engine::PlayerId(7)), None);
}

#[test]
fn ticket_id_used_before() {
    let mut s = shard();
    assert_eq!(enqueue(&mut s, 0, ticket(1, "duel", vec![eu(7, 1500.0)])), vec![Event::Enqueued(TicketId(1))]);
    // While waiting…
    assert_rejected(&mut s, ticket(1, "duel", vec![eu(1_000, 1500.0)]), Rejection::DuplicateTicket);
    // …and after it was matched.
    enqueue(&mut s, 0, ticket(2, "duel", vec![eu(8, 1500.0)]));
    assert_eq!(tick(&mut s, 0).len(), 1);
    assert_rejected(&mut s, ticket(1, "duel", vec![eu(1_001, 1500.0)]), Rejection::DuplicateTicket);
}

#[test]
fn non_finite_or_negative_numbers() {
    let mut s = shard();
    for (id, mmr, rtt) in [
        (1, f64::NAN, 20.0),
        (2, f64::INFINITY, 20.0),
        (3, -1.0, 20.0),
        (4, 1500.0, f64::NAN),
        (5, 1500.0, -0.5),
        (6, 1500.0, f64::NEG_INFINITY),
    ] {
        let p = player(1_000 + id, mmr, &[("eu-west", rtt)]);
        assert_rejected(&mut s, ticket(id, "duel", vec![p]), Rejection::BadNumber);
    }
}

#[test]
fn no_known_datacenter_in_the_rtt_map() {
    let mut s = shard();
    assert_rejected(&mut s, ticket(1, "duel", vec![player(1_000, 1500.0, &[])]), Rejection::NoKnownDatacenter);
    // Each player knows a datacenter, but none is common to the party.
    let party = vec![player(1_001, 1500.0, &[("eu-west", 20.0)]), player(1_002, 1500.0, &[("na-east", 20.0)])];
    assert_rejected(&mut s, ticket(2, "trio", party), Rejection::NoKnownDatacenter);
}

#[test]
fn every_reason_has_a_distinct_stable_code() {
    let codes: std::collections::BTreeSet<&str> = Rejection::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), Rejection::ALL.len());
    for r in Rejection::ALL {
        assert!(r.code().chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{}", r.code());
        assert!(!r.to_string().is_empty());
    }
}
