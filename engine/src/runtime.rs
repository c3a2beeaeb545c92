//! The shard runtime: one OS thread per shard, a bounded mailbox in front of each,
//! a real-clock tick, and events out through an [`EventSink`].
//!
//! The thread owns its shard outright — no lock is taken on the tick path. Senders never
//! block: a full mailbox is backpressure, answered with [`SubmitError::MailboxFull`], which
//! callers pass on to clients as a retryable error.
//!
//! The other direction runs on the shard's thread: the sink is called there, in event
//! order. A crossbeam `Sender` is a sink (a blocking `send`, so a bounded channel nobody
//! drains stalls the shard: use an unbounded one, or drain it from a dedicated thread).
//! A service can instead hand in a sink that applies events directly, saving a thread
//! hop per event, as long as it never blocks for long.

use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::command::{Command, Event};
use crate::rules::{Rules, ShardId};
use crate::shard::{Shard, ShardConfig};

/// Runtime settings.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Commands a shard's mailbox holds before submitters are turned away.
    pub mailbox_capacity: usize,
    /// Most commands a shard applies per wake-up before it checks its tick deadline.
    pub max_batch: usize,
    /// Settings of each shard.
    pub shard: ShardConfig,
    /// Runs first on each shard's thread, before it takes any command: where a service
    /// sets the thread's scheduling priority or CPU affinity (the engine makes no system
    /// calls of its own).
    pub on_thread_start: Option<ThreadStartHook>,
}

/// See [`RuntimeConfig::on_thread_start`].
pub type ThreadStartHook = Arc<dyn Fn(ShardId) + Send + Sync>;

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            mailbox_capacity: 65_536,
            max_batch: 4_096,
            shard: ShardConfig::default(),
            on_thread_start: None,
        }
    }
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("mailbox_capacity", &self.mailbox_capacity)
            .field("max_batch", &self.max_batch)
            .field("shard", &self.shard)
            .field("on_thread_start", &self.on_thread_start.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// Why a command was not accepted into a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The shard is behind; retry shortly (backpressure, the caller is not at fault).
    #[error("shard mailbox is full, retry shortly")]
    MailboxFull,
    /// The runtime is shutting down.
    #[error("shard is shutting down")]
    ShuttingDown,
    /// No such shard.
    #[error("no such shard")]
    UnknownShard,
}

impl SubmitError {
    /// Whether the same command may succeed if sent again later.
    pub fn is_retryable(self) -> bool {
        matches!(self, SubmitError::MailboxFull)
    }
}

/// What the runtime reports, from any shard.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeEvent {
    /// A shard's event.
    Shard {
        /// Which shard.
        shard: ShardId,
        /// The event.
        event: Event,
    },
    /// A tick ran.
    Tick {
        /// Which shard.
        shard: ShardId,
        /// The shard clock at the tick, ms since the runtime started.
        at_ms: u64,
        /// How long the tick took.
        duration: Duration,
        /// Tickets still waiting after it.
        waiting: usize,
        /// Searches for a match it ran (`Shard::searches`).
        searches: u64,
    },
}

/// Where shards deliver their events: called on each shard's thread, in that shard's
/// event order. It must not block for long, or the shard stalls.
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event.
    fn deliver(&self, event: RuntimeEvent);
}

impl<T: EventSink + ?Sized> EventSink for Arc<T> {
    fn deliver(&self, event: RuntimeEvent) {
        (**self).deliver(event);
    }
}

impl EventSink for Sender<RuntimeEvent> {
    fn deliver(&self, event: RuntimeEvent) {
        // A consumer that went away has nothing left to be told.
        let _ = self.send(event);
    }
}

/// A cheap, cloneable way to reach one shard.
#[derive(Clone, Debug)]
pub struct ShardHandle {
    shard: ShardId,
    tx: Sender<Command>,
    /// Whether the runtime takes commands. A submit holds it (read) across its send, and
    /// shutdown closes it (write) before telling the shards to stop: so every command a
    /// submit accepted is in a mailbox before its shard's last drain.
    accepting: Arc<RwLock<bool>>,
}

impl ShardHandle {
    /// Which shard this reaches.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Queues a command without blocking.
    pub fn try_submit(&self, cmd: Command) -> Result<(), SubmitError> {
        let accepting = self.accepting.read().unwrap_or_else(PoisonError::into_inner);
        if !*accepting {
            return Err(SubmitError::ShuttingDown);
        }
        self.tx.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::MailboxFull,
            TrySendError::Disconnected(_) => SubmitError::ShuttingDown,
        })
    }
}

/// Running shards, one thread each.
pub struct Runtime {
    handles: Vec<ShardHandle>,
    threads: Vec<JoinHandle<()>>,
    accepting: Arc<RwLock<bool>>,
}

impl Runtime {
    /// Starts one thread per shard of `rules`; events go to `events`.
    pub fn start(rules: Arc<Rules>, config: RuntimeConfig, events: impl EventSink) -> std::io::Result<Self> {
        let events: Arc<dyn EventSink> = Arc::new(events);
        let accepting = Arc::new(RwLock::new(true));
        let started = Instant::now();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for idx in 0..rules.shards.len() {
            let id = ShardId(idx as u16);
            let (tx, rx) = crossbeam_channel::bounded(config.mailbox_capacity.max(1));
            let shard = Shard::new(rules.clone(), id, config.shard);
            let worker = Worker {
                shard,
                rx,
                events: events.clone(),
                accepting: accepting.clone(),
                started,
                tick_ms: rules.tick_ms,
                max_batch: config.max_batch.max(1),
            };
            let name = format!("shard-{}", rules.shards[idx].name);
            let hook = config.on_thread_start.clone();
            threads.push(std::thread::Builder::new().name(name).spawn(move || {
                if let Some(hook) = hook {
                    hook(id);
                }
                worker.run()
            })?);
            handles.push(ShardHandle { shard: id, tx, accepting: accepting.clone() });
        }
        Ok(Runtime { handles, threads, accepting })
    }

    /// The handle of shard `id`.
    pub fn shard(&self, id: ShardId) -> Result<&ShardHandle, SubmitError> {
        self.handles.get(usize::from(id.0)).ok_or(SubmitError::UnknownShard)
    }

    /// Every shard's handle, in shard order.
    pub fn shards(&self) -> &[ShardHandle] {
        &self.handles
    }

    /// Stops accepting commands, lets each shard apply what its mailbox already holds, and
    /// joins the threads. Tickets still waiting are dropped with the shards.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        // Waits for submits in flight; none starts after, and the shards see it closed.
        *self.accepting.write().unwrap_or_else(PoisonError::into_inner) = false;
        for t in self.threads.drain(..) {
            // A panicking shard already reported through the panic hook.
            let _ = t.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Ticks take at most this share of a shard's time (1 / `TICK_DUTY_DIVISOR`): a tick that
/// ran long puts the next one further off, so a short period stays cheap on a big pool and
/// the mailbox is served in between.
const TICK_DUTY_DIVISOR: u32 = 4;

/// When the tick after one that started at `now` ms and ran `duration` is due: the cadence
/// of `tick_ms` from `due` (the time it was due), afresh from `now` after a stall rather
/// than in a burst, and no sooner than `TICK_DUTY_DIVISOR` times `duration` after `now`.
fn next_tick_at(due: u64, now: u64, tick_ms: u64, duration: Duration) -> u64 {
    let mut next = due + tick_ms;
    if next <= now {
        next = now + tick_ms;
    }
    let stretched = now + (duration * TICK_DUTY_DIVISOR).as_millis() as u64;
    next.max(stretched)
}

struct Worker {
    shard: Shard,
    rx: Receiver<Command>,
    events: Arc<dyn EventSink>,
    /// The runtime's `accepting` gate: once closed, the shard drains its mailbox and stops.
    accepting: Arc<RwLock<bool>>,
    started: Instant,
    tick_ms: u64,
    max_batch: usize,
}

impl Worker {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn run(mut self) {
        let shard = self.shard.id();
        let mut out = Vec::new();
        let mut next_tick_ms = self.now_ms();
        // The shutdown flag is polled at least this often.
        let max_sleep = Duration::from_millis(self.tick_ms.min(50));
        loop {
            let now = self.now_ms();
            if now >= next_tick_ms {
                let (t0, searches_before) = (Instant::now(), self.shard.searches());
                self.shard.tick(now, &mut out);
                let duration = t0.elapsed();
                self.flush(&mut out);
                self.events.deliver(RuntimeEvent::Tick {
                    shard,
                    at_ms: now,
                    duration,
                    waiting: self.shard.waiting_total(),
                    searches: self.shard.searches() - searches_before,
                });
                next_tick_ms = next_tick_at(next_tick_ms, now, self.tick_ms, duration);
            }
            if !*self.accepting.read().unwrap_or_else(PoisonError::into_inner) {
                self.drain_mailbox(&mut out);
                return;
            }
            let wait = Duration::from_millis(next_tick_ms.saturating_sub(self.now_ms())).min(max_sleep);
            match self.rx.recv_timeout(wait) {
                Ok(cmd) => {
                    let now = self.now_ms();
                    self.shard.handle(now, cmd, &mut out);
                    for cmd in self.rx.try_iter().take(self.max_batch - 1) {
                        self.shard.handle(now, cmd, &mut out);
                    }
                    self.flush(&mut out);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn drain_mailbox(&mut self, out: &mut Vec<Event>) {
        let now = self.now_ms();
        while let Ok(cmd) = self.rx.try_recv() {
            self.shard.handle(now, cmd, out);
        }
        self.flush(out);
    }

    fn flush(&self, out: &mut Vec<Event>) {
        let shard = self.shard.id();
        for event in out.drain(..) {
            self.events.deliver(RuntimeEvent::Shard { shard, event });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_keep_their_cadence_start_afresh_after_a_stall_and_stay_under_a_quarter_of_the_time() {
        let ms = Duration::from_millis;
        // On time, quick: the next is one period after this one was due.
        assert_eq!(next_tick_at(100, 101, 5, Duration::from_micros(300)), 105);
        // Late by a stall of many periods: one period from now, not a burst of catch-ups.
        assert_eq!(next_tick_at(100, 140, 5, Duration::from_micros(300)), 145);
        // A 9 ms tick with a 5 ms period: the next starts 36 ms after this one started.
        assert_eq!(next_tick_at(100, 100, 5, ms(9)), 136);
        // A long period is not shortened by the stretch.
        assert_eq!(next_tick_at(100, 100, 100, ms(9)), 200);
    }
}
