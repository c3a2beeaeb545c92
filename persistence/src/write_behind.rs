//! [`WriteBehind`]: rated matches go into a bounded queue and a worker writes them in
//! batches, so a result costs its reporter a queue push, not a database round trip.
//!
//! The worker takes the first waiting match, gathers more for at most `flush_interval`
//! (or until `max_batch_rows` player rows), and writes the batch in one transaction
//! ([`Store::record_matches`]: bulk inserts, idempotent per match id), up to `writers`
//! batches at once. Ratings stay right when batches commit out of order: a stored rating
//! is only replaced by one with more games. A transient
//! failure is retried with backoff, the same batch again; a batch the database refuses
//! (a player with no account, say) is split in halves until the refused match is alone,
//! and that one is dropped with an error log, so one bad record cannot block the rest.
//! After each commit the [`CommitListener`]s run (leaderboards, rating caches).
//!
//! Shutdown closes the queue and writes everything already in it; only if the database
//! stays down past `shutdown_timeout` are the remaining matches reported lost. A crash
//! loses what is in the queue: at most one flush interval of results when the database
//! keeps up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::{MatchRecord, Store};

/// Write-behind settings.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteBehindConfig {
    /// Matches the queue holds before submitters are turned away.
    pub queue_capacity: usize,
    /// Player rows in one batch (one transaction).
    pub max_batch_rows: usize,
    /// Batches written at once, each on its own connection. Listeners still hear of
    /// them in submission order.
    pub writers: usize,
    /// How long the worker gathers a batch after its first match; the longest a result
    /// waits before it is written, when the database keeps up.
    pub flush_interval: Duration,
    /// First pause after a transient failure; doubled on each retry.
    pub retry_initial: Duration,
    /// Longest pause between retries.
    pub retry_max: Duration,
    /// How long shutdown keeps retrying a failing database before giving up.
    pub shutdown_timeout: Duration,
}

impl Default for WriteBehindConfig {
    fn default() -> Self {
        WriteBehindConfig {
            queue_capacity: 65_536,
            max_batch_rows: 8_192,
            // One database backend per batch is CPU-bound; two use two cores.
            writers: 2,
            flush_interval: Duration::from_millis(100),
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Told about every batch the worker committed, in commit order.
#[async_trait::async_trait]
pub trait CommitListener: Send + Sync + 'static {
    /// `matches` are now in the store.
    async fn committed(&self, matches: &[MatchRecord]);
}

/// Why a match was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: the database is behind. Retry shortly.
    #[error("write-behind queue is full, retry shortly")]
    Full,
    /// The worker is shutting down.
    #[error("write-behind is shutting down")]
    ShuttingDown,
}

/// What the worker did over its life, returned by [`WriteBehind::shutdown`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteBehindReport {
    /// Matches committed (or found already stored).
    pub matches: u64,
    /// Player rows inserted.
    pub rows: u64,
    /// Matches the database refused and that were dropped.
    pub rejected: u64,
    /// Matches still unwritten when shutdown gave up on a failing database.
    pub lost: u64,
}

enum Job {
    Record(MatchRecord, Instant),
    Flush(oneshot::Sender<()>),
}

/// The queue and its worker. Share it behind an `Arc`.
pub struct WriteBehind {
    tx: mpsc::Sender<Job>,
    capacity: usize,
    closing: Arc<Notify>,
    worker: Mutex<Option<tokio::task::JoinHandle<WriteBehindReport>>>,
}

impl WriteBehind {
    /// Starts the worker on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>, config: WriteBehindConfig, listeners: Vec<Arc<dyn CommitListener>>) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let closing = Arc::new(Notify::new());
        let capacity = config.queue_capacity.max(1);
        let worker = Worker {
            store,
            config,
            listeners,
            rx,
            closing: closing.clone(),
            give_up_at: Default::default(),
            report: Default::default(),
        };
        let worker = tokio::spawn(worker.run());
        WriteBehind { tx, capacity, closing, worker: Mutex::new(Some(worker)) }
    }

    /// Queues a match, or says why not at once.
    pub fn submit(&self, record: MatchRecord) -> Result<(), SubmitError> {
        let sent = self.tx.try_send(Job::Record(record, Instant::now())).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::Full,
            mpsc::error::TrySendError::Closed(_) => SubmitError::ShuttingDown,
        });
        self.observe_depth();
        sent
    }

    /// Queues a match, waiting for room (backpressure instead of refusal).
    pub async fn submit_waiting(&self, record: MatchRecord) -> Result<(), SubmitError> {
        let sent = self.tx.send(Job::Record(record, Instant::now())).await.map_err(|_| SubmitError::ShuttingDown);
        self.observe_depth();
        sent
    }

    /// Matches waiting in the queue.
    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    /// Waits until every match submitted before this call is written (or dropped).
    pub async fn flush(&self) -> Result<(), SubmitError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Job::Flush(done)).await.map_err(|_| SubmitError::ShuttingDown)?;
        wait.await.map_err(|_| SubmitError::ShuttingDown)
    }

    /// Stops taking matches, writes everything queued, and reports. Later calls return
    /// an empty report.
    pub async fn shutdown(&self) -> WriteBehindReport {
        self.closing.notify_one();
        let Some(worker) = self.worker.lock().await.take() else { return WriteBehindReport::default() };
        worker.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "write-behind worker failed");
            WriteBehindReport::default()
        })
    }

    fn observe_depth(&self) {
        metrics::gauge!("rally_write_behind_queue_depth").set(self.depth() as f64);
    }
}

struct Worker {
    store: Arc<dyn Store>,
    config: WriteBehindConfig,
    listeners: Vec<Arc<dyn CommitListener>>,
    rx: mpsc::Receiver<Job>,
    closing: Arc<Notify>,
    /// Set when shutdown starts: batches already being written see it too and stop
    /// retrying a failing database at that time.
    give_up_at: Arc<std::sync::OnceLock<Instant>>,
    report: WriteBehindReport,
}

/// Whether the worker is still taking matches, or draining before it stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
}

/// A batch on its way to the store, written by its own task.
type InFlight = tokio::task::JoinHandle<Written>;

/// What became of one batch.
#[derive(Default)]
struct Written {
    /// The matches now in the store, for the listeners.
    committed: Vec<MatchRecord>,
    rows: u64,
    rejected: u64,
    lost: u64,
}

impl Worker {
    async fn run(mut self) -> WriteBehindReport {
        let mut phase = Phase::Running;
        let mut batch: Vec<(MatchRecord, Instant)> = Vec::new();
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        loop {
            // Waiting for work, a batch that commits meanwhile is finished at once (its
            // listeners must not wait for the next batch to come along).
            let first = match phase {
                Phase::Running => tokio::select! {
                    job = self.rx.recv() => job,
                    () = self.closing.notified() => {
                        phase = self.start_draining();
                        continue;
                    }
                    done = oldest_done(&mut in_flight) => {
                        in_flight.pop_front();
                        self.finished(done).await;
                        continue;
                    }
                },
                Phase::Draining => tokio::select! {
                    job = self.rx.recv() => job,
                    done = oldest_done(&mut in_flight) => {
                        in_flight.pop_front();
                        self.finished(done).await;
                        continue;
                    }
                },
            };
            let Some(first) = first else { break };
            let mut rows = take(first, &mut batch, &mut flushes);
            let deadline = Instant::now() + self.config.flush_interval;
            while rows < self.config.max_batch_rows && flushes.is_empty() {
                let next = match phase {
                    Phase::Running => tokio::select! {
                        job = tokio::time::timeout_at(deadline, self.rx.recv()) => job,
                        () = self.closing.notified() => {
                            phase = self.start_draining();
                            continue;
                        }
                        done = oldest_done(&mut in_flight) => {
                            in_flight.pop_front();
                            self.finished(done).await;
                            continue;
                        }
                    },
                    // Draining: write what is there now, without waiting for more.
                    Phase::Draining => Ok(self.rx.try_recv().ok()),
                };
                match next {
                    Ok(Some(job)) => rows += take(job, &mut batch, &mut flushes),
                    Ok(None) | Err(_) => break,
                }
            }
            if !batch.is_empty() {
                if in_flight.len() >= self.config.writers.max(1) {
                    let oldest = in_flight.pop_front().expect("at least one batch in flight");
                    self.finish(oldest).await;
                }
                let store = self.store.clone();
                let config = self.config.clone();
                let give_up_at = self.give_up_at.clone();
                in_flight.push_back(tokio::spawn(write(store, config, std::mem::take(&mut batch), give_up_at)));
            }
            if !flushes.is_empty() {
                while let Some(oldest) = in_flight.pop_front() {
                    self.finish(oldest).await;
                }
                for done in flushes.drain(..) {
                    let _ = done.send(());
                }
            }
        }
        while let Some(oldest) = in_flight.pop_front() {
            self.finish(oldest).await;
        }
        metrics::gauge!("rally_write_behind_queue_depth").set(0.0);
        tracing::info!(
            matches = self.report.matches,
            rows = self.report.rows,
            rejected = self.report.rejected,
            lost = self.report.lost,
            "write-behind stopped"
        );
        self.report
    }

    fn start_draining(&mut self) -> Phase {
        // No new matches; what is queued is still received, then `recv` returns `None`.
        self.rx.close();
        let give_up_at = Instant::now() + self.config.shutdown_timeout;
        let _ = self.give_up_at.set(give_up_at);
        Phase::Draining
    }

    /// Waits for a batch and tells the listeners. Batches are finished in the order they
    /// were gathered, so listeners see commits in submission order even when two
    /// batches commit the other way round (a leaderboard never goes back to an older
    /// rating).
    async fn finish(&mut self, batch: InFlight) {
        self.finished(batch.await).await;
    }

    /// [`Worker::finish`] for a batch already awaited.
    async fn finished(&mut self, done: Result<Written, tokio::task::JoinError>) {
        let written = done.unwrap_or_else(|e| {
            tracing::error!(error = %e, "write-behind batch task failed");
            Written::default()
        });
        self.report.matches += written.committed.len() as u64;
        self.report.rows += written.rows;
        self.report.rejected += written.rejected;
        self.report.lost += written.lost;
        if !written.committed.is_empty() {
            for listener in &self.listeners {
                listener.committed(&written.committed).await;
            }
        }
    }
}

/// The oldest batch in flight, once written; never, if none is.
async fn oldest_done(in_flight: &mut VecDeque<InFlight>) -> Result<Written, tokio::task::JoinError> {
    match in_flight.front_mut() {
        Some(oldest) => oldest.await,
        None => std::future::pending().await,
    }
}

/// Adds a job to the batch; the player rows it adds.
fn take(job: Job, batch: &mut Vec<(MatchRecord, Instant)>, flushes: &mut Vec<oneshot::Sender<()>>) -> usize {
    match job {
        Job::Record(record, queued_at) => {
            let rows = record.players.len();
            batch.push((record, queued_at));
            rows
        }
        Job::Flush(done) => {
            flushes.push(done);
            0
        }
    }
}

/// Writes one batch: retries transient failures, splits refused parts down to the match
/// the database refuses.
async fn write(
    store: Arc<dyn Store>,
    config: WriteBehindConfig,
    batch: Vec<(MatchRecord, Instant)>,
    give_up_at: Arc<std::sync::OnceLock<Instant>>,
) -> Written {
    let (records, queued): (Vec<MatchRecord>, Vec<Instant>) = batch.into_iter().unzip();
    let mut written = Written::default();
    let mut committed = vec![false; records.len()];
    // Ranges of `records` still to write; a refused range is split in two.
    let mut todo = Vec::with_capacity(8);
    todo.push(0..records.len());
    let mut backoff = config.retry_initial;
    while let Some(range) = todo.pop() {
        let part = &records[range.clone()];
        let started = Instant::now();
        match store.record_matches(part).await {
            Ok(rows) => {
                let now = Instant::now();
                metrics::histogram!("rally_write_behind_batch_seconds").record((now - started).as_secs_f64());
                metrics::histogram!("rally_write_behind_batch_rows").record(rows as f64);
                metrics::counter!("rally_write_behind_rows_total").increment(rows);
                let lag = metrics::histogram!("rally_write_behind_lag_seconds");
                for at in &queued[range.clone()] {
                    lag.record((now - *at).as_secs_f64());
                }
                written.rows += rows;
                committed[range].fill(true);
                backoff = config.retry_initial;
            }
            Err(e) if e.is_retryable() => {
                if give_up_at.get().is_some_and(|at| Instant::now() >= *at) {
                    let lost: usize = todo.iter().map(|r| r.len()).sum::<usize>() + range.len();
                    written.lost += lost as u64;
                    tracing::error!(error = %e, lost, "database still failing at shutdown; matches not written");
                    break;
                }
                metrics::counter!("rally_write_behind_retries_total").increment(1);
                tracing::warn!(error = %e, matches = range.len(), retry_in_ms = backoff.as_millis() as u64, "write-behind batch failed; retrying");
                // Sleep no later than a shutdown's give-up time, so the check above runs then.
                let wake = Instant::now() + backoff;
                tokio::time::sleep_until(give_up_at.get().map_or(wake, |at| wake.min((*at).max(Instant::now())))).await;
                backoff = (backoff * 2).min(config.retry_max);
                todo.push(range);
            }
            Err(e) => {
                if range.len() == 1 {
                    written.rejected += 1;
                    metrics::counter!("rally_write_behind_rejected_total").increment(1);
                    tracing::error!(error = %e, match_id = records[range.start].match_id, "database refused a match; dropped");
                } else {
                    let mid = range.start + range.len() / 2;
                    // Second half pushed first, so the first half is written first.
                    todo.push(mid..range.end);
                    todo.push(range.start..mid);
                }
            }
        }
    }
    written.committed = records.into_iter().zip(committed).filter_map(|(r, done)| done.then_some(r)).collect();
    written
}
