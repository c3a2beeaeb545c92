//! The shard runtime on real threads: events delivered, backpressure, graceful shutdown.
//! Waits are on channel receives with deadlines, never on sleeps.

mod common;

use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::Receiver;
use rally_engine::{Command, Event, Runtime, RuntimeConfig, RuntimeEvent, ShardId, SubmitError, TicketId};

const DEADLINE: Duration = Duration::from_secs(10);

/// Receives until `pick` returns something, or fails after `DEADLINE`.
fn wait_for<T>(rx: &Receiver<RuntimeEvent>, mut pick: impl FnMut(&RuntimeEvent) -> Option<T>) -> T {
    let until = Instant::now() + DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let event = rx.recv_timeout(left).expect("the expected event arrived in time");
        if let Some(found) = pick(&event) {
            return found;
        }
    }
}

/// A runtime with default settings and two duelists rated `mmr` (tickets and players 1
/// and 2) enqueued on shard 0, and its event stream.
fn runtime_with_duelists(mmr: [f64; 2]) -> (Runtime, Receiver<RuntimeEvent>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let runtime = Runtime::start(rules(), RuntimeConfig::default(), tx).unwrap();
    let shard = runtime.shard(ShardId(0)).unwrap().clone();
    for (id, mmr) in [1, 2].into_iter().zip(mmr) {
        shard.try_submit(Command::Enqueue(ticket(id, "duel", vec![eu(id, mmr)]))).unwrap();
    }
    (runtime, rx)
}

#[test]
fn enqueued_tickets_are_matched_on_a_real_clock_tick() {
    let (runtime, rx) = runtime_with_duelists([1500.0, 1510.0]);
    let m = wait_for(&rx, |e| match e {
        RuntimeEvent::Shard { event: Event::Matched(m), .. } => Some(m.clone()),
        _ => None,
    });
    let mut ids: Vec<u64> = m.tickets.iter().map(|t| t.id.0).collect();
    ids.sort();
    assert_eq!(ids, [1, 2]);
    // Ticks keep coming and report the queue.
    let waiting = wait_for(&rx, |e| match e {
        RuntimeEvent::Tick { waiting, .. } => Some(*waiting),
        _ => None,
    });
    assert_eq!(waiting, 0);
    runtime.shutdown();
}

#[test]
fn ticks_report_the_searches_they_ran() {
    // Too far apart to match for minutes: each searches and fails.
    let (runtime, rx) = runtime_with_duelists([1500.0, 3000.0]);
    let searches = wait_for(&rx, |e| match e {
        RuntimeEvent::Tick { waiting: 2, searches, .. } if *searches > 0 => Some(*searches),
        _ => None,
    });
    assert!(searches <= 4, "two anchors, each now and ahead at most: {searches}");
    runtime.shutdown();
}

#[test]
fn a_full_mailbox_is_a_retryable_rejection() {
    // A rendezvous event channel nobody reads: the shard thread blocks on its first event,
    // so nothing leaves its mailbox of one.
    let (tx, rx) = crossbeam_channel::bounded(0);
    let config = RuntimeConfig { mailbox_capacity: 1, ..RuntimeConfig::default() };
    let runtime = Runtime::start(rules(), config, tx).unwrap();
    let shard = runtime.shard(ShardId(0)).unwrap().clone();
    shard.try_submit(Command::Cancel(TicketId(1))).unwrap();
    let err = shard.try_submit(Command::Cancel(TicketId(2))).unwrap_err();
    assert_eq!(err, SubmitError::MailboxFull);
    assert!(err.is_retryable());
    // Once the consumer reads, the shard catches up and the retry is accepted.
    let until = Instant::now() + DEADLINE;
    loop {
        let _ = rx.recv_timeout(Duration::from_millis(10));
        match shard.try_submit(Command::Cancel(TicketId(2))) {
            Ok(()) => break,
            Err(SubmitError::MailboxFull) if Instant::now() < until => continue,
            Err(e) => panic!("retry failed: {e}"),
        }
    }
    drop(rx);
    runtime.shutdown();
}

#[test]
fn shutdown_applies_what_was_queued_then_refuses_more() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let runtime = Runtime::start(rules(), RuntimeConfig::default(), tx).unwrap();
    let shard = runtime.shard(ShardId(0)).unwrap().clone();
    for id in 0..100 {
        shard.try_submit(Command::Enqueue(ticket(id, "trio", vec![eu(id, 1000.0 + 50.0 * id as f64)]))).unwrap();
    }
    runtime.shutdown();
    let answered = rx.try_iter().filter(|e| matches!(e, RuntimeEvent::Shard { event: Event::Enqueued(_), .. })).count();
    assert_eq!(answered, 100, "every command submitted before shutdown is applied");
    assert_eq!(shard.try_submit(Command::Cancel(TicketId(1))), Err(SubmitError::ShuttingDown));
}

#[test]
fn every_command_accepted_while_shutdown_begins_is_applied() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let config = RuntimeConfig { mailbox_capacity: 1 << 16, ..RuntimeConfig::default() };
    let runtime = Runtime::start(rules(), config, tx).unwrap();
    // Submitters race the shutdown: each counts the commands the runtime accepted.
    let submitters: Vec<_> = (0..3u64)
        .map(|k| {
            let shard = runtime.shard(ShardId(0)).unwrap().clone();
            std::thread::spawn(move || {
                let mut accepted = 0u64;
                for n in 0.. {
                    let id = k << 32 | n;
                    match shard.try_submit(Command::Enqueue(ticket(id, "trio", vec![eu(id, 1000.0)]))) {
                        Ok(()) => accepted += 1,
                        Err(SubmitError::MailboxFull) => std::thread::yield_now(),
                        Err(SubmitError::ShuttingDown) => return accepted,
                        Err(e) => panic!("{e}"),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    wait_for(&rx, |e| matches!(e, RuntimeEvent::Shard { event: Event::Enqueued(_), .. }).then_some(()));
    runtime.shutdown();
    let accepted: u64 = submitters.into_iter().map(|s| s.join().unwrap()).sum();
    let answered =
        1 + rx.try_iter().filter(|e| matches!(e, RuntimeEvent::Shard { event: Event::Enqueued(_), .. })).count();
    assert_eq!(answered as u64, accepted, "every accepted command is applied before the shard stops");
}

#[test]
fn an_unknown_shard_is_a_typed_error() {
    let (tx, _rx) = crossbeam_channel::unbounded();
    let runtime = Runtime::start(rules(), RuntimeConfig::default(), tx).unwrap();
    assert_eq!(runtime.shards().len(), 1);
    assert_eq!(runtime.shard(ShardId(7)).unwrap_err(), SubmitError::UnknownShard);
    assert!(!SubmitError::UnknownShard.is_retryable());
}

#[test]
fn one_thread_per_configured_shard() {
    let mut text = RULES.to_owned();
    text.insert_str(0, "shards = [[\"eu\"], [\"na\"]]\n");
    let rules = std::sync::Arc::new(rally_engine::Rules::from_toml(&text).unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    let runtime = Runtime::start(rules, RuntimeConfig::default(), tx).unwrap();
    assert_eq!(runtime.shards().len(), 2);
    let mut seen = [false; 2];
    while !seen.iter().all(|&s| s) {
        let shard = wait_for(&rx, |e| match e {
            RuntimeEvent::Tick { shard, .. } => Some(*shard),
            _ => None,
        });
        seen[usize::from(shard.0)] = true;
    }
    runtime.shutdown();
}

#[test]
fn the_thread_start_hook_runs_once_on_each_shards_own_thread() {
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded();
    let hook: rally_engine::ThreadStartHook = std::sync::Arc::new(move |shard: ShardId| {
        let thread = std::thread::current();
        let _ = seen_tx.send((shard, thread.name().map(str::to_owned), thread.id()));
    });
    let config = RuntimeConfig { on_thread_start: Some(hook), ..RuntimeConfig::default() };
    let (tx, rx) = crossbeam_channel::unbounded();
    let runtime = Runtime::start(rules(), config, tx).unwrap();
    let (shard, name, hook_thread) = seen_rx.recv_timeout(DEADLINE).expect("the hook ran");
    assert_eq!(shard, ShardId(0));
    assert_eq!(name.as_deref(), Some("shard-eu+na"), "on the shard's own thread");
    assert_ne!(hook_thread, std::thread::current().id());
    assert!(seen_rx.try_recv().is_err(), "once per shard thread");
    // The shard serves as usual after it.
    let handle = runtime.shard(ShardId(0)).unwrap().clone();
    handle.try_submit(Command::Cancel(TicketId(7))).unwrap();
    wait_for(&rx, |e| matches!(e, RuntimeEvent::Shard { event: Event::NotWaiting(TicketId(7)), .. }).then_some(()));
    runtime.shutdown();
}
