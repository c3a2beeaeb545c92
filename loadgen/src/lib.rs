//! Rally's load generator: simulated players over real QUIC, through the client SDK.
//!
//! Players connect during a ramp (`players / connect_rate` seconds); then, all together,
//! each loops: wait for an enqueue permit (when a total rate is set), enqueue a random
//! mode with a rating and an RTT map, wait for `MatchFound`, "play" for a moment, repeat
//! — until the run's duration or match count is reached. Or, with `idle`, it only connects and holds the
//! connection (to measure what idle connections cost the edge).
//!
//! Measured with hdrhistogram, in µs: connect time (to `Welcome`), enqueue → ack, time
//! to match (ack → `MatchFound`), and delivery delay (from when the edge got the match from
//! its shard, by the edge's clock, to client receipt — meaningful when both run on one
//! machine). Errors are counted by code.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rally_client::{Client, ClientConfig, ClientError, ClientEvent, Trust, Welcome};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

pub use stats::{AckSecond, Counters, Report, SLOW_ACK, Snapshot, Summary};

/// Mints an access token for a simulated player (player id, rating).
pub type TokenSource = Arc<dyn Fn(u64, f64) -> String + Send + Sync>;

/// What to run.
#[derive(Clone)]
pub struct LoadSpec {
    /// The edge.
    pub target: SocketAddr,
    /// How to trust its certificate.
    pub trust: Trust,
    /// Tokens for the simulated players.
    pub tokens: TokenSource,
    /// Simulated players, one connection each.
    pub players: usize,
    /// New connections per second while ramping up.
    pub connect_rate: f64,
    /// How long the run lasts once every player has had its chance to connect.
    pub duration: Duration,
    /// Stop once this many matches were received (over all players).
    pub max_matches: Option<u64>,
    /// Only connect and hold the connections; no queueing.
    pub idle: bool,
    /// Modes to queue for, picked uniformly per enqueue.
    pub modes: Vec<String>,
    /// Total enqueues per second over all players; `None`: as fast as matches come.
    pub enqueue_rate: Option<f64>,
    /// Ratings ~ Normal(mean, sd), fixed per player.
    pub rating: (f64, f64),
    /// Pause between a match and the next enqueue (uniform in this range).
    pub play_time: (Duration, Duration),
    /// Player ids are `first_player_id ..`.
    pub first_player_id: u64,
    /// QUIC endpoints (UDP sockets) the connections are spread over.
    pub endpoints: usize,
    /// RNG seed (ratings, home datacenters, modes, play times).
    pub seed: u64,
}

impl LoadSpec {
    /// Defaults for `players` players against `target`.
    pub fn new(target: SocketAddr, trust: Trust, tokens: TokenSource, players: usize) -> LoadSpec {
        LoadSpec {
            target,
            trust,
            tokens,
            players,
            connect_rate: 2_000.0,
            duration: Duration::from_secs(30),
            max_matches: None,
            idle: false,
            modes: Vec::new(),
            enqueue_rate: None,
            rating: (1500.0, 250.0),
            play_time: (Duration::from_millis(200), Duration::from_millis(1_000)),
            first_player_id: 1,
            endpoints: 8,
            seed: 1,
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Setting up the QUIC endpoints failed.
    #[error("client endpoint: {0}")]
    Endpoint(ClientError),
    /// The spec makes no sense.
    #[error("{0}")]
    Spec(&'static str),
}

/// How long after the deadline the players close their connections.
const CLOSE_AFTER_DEADLINE: Duration = Duration::from_secs(1);

/// Kernel buffer asked for on each endpoint's UDP socket (as the edge does).
const UDP_BUFFER_BYTES: usize = 4 << 20;

/// Runs the load and reports. `progress` is called about once a second.
pub async fn run(spec: LoadSpec, mut progress: impl FnMut(&Snapshot)) -> Result<Report, LoadError> {
    if spec.players == 0 {
        return Err(LoadError::Spec("at least one player"));
    }
    if !spec.idle && spec.modes.is_empty() {
        return Err(LoadError::Spec("at least one mode to queue for"));
    }
    if !spec.connect_rate.is_finite() || spec.connect_rate <= 0.0 {
        return Err(LoadError::Spec("the connect rate must be positive"));
    }
    let mut base = ClientConfig::new(spec.target, spec.trust.clone(), String::new());
    // Each endpoint carries thousands of connections: a default-sized socket buffer
    // overflowed whenever this process waited for a core, and the load generator then
    // measured its own dropped packets as edge latency.
    base.udp_buffer_bytes = Some(UDP_BUFFER_BYTES);
    let endpoints: Vec<quinn::Endpoint> = (0..spec.endpoints.max(1))
        .map(|_| rally_client::endpoint(&base))
        .collect::<Result<_, _>>()
        .map_err(LoadError::Endpoint)?;
    let counters = Arc::new(Counters::default());
    let ramp = Duration::from_secs_f64(spec.players as f64 / spec.connect_rate);
    let started = Instant::now();
    let pacer = spec.enqueue_rate.map(|rate| start_pacer(rate, started + ramp, started + ramp + spec.duration));
    let deadline = started + ramp + spec.duration;
    let spec = Arc::new(spec);

    let mut bots = tokio::task::JoinSet::new();
    let launcher = {
        let (spec, counters) = (spec.clone(), counters.clone());
        async move {
            let mut rng = SmallRng::seed_from_u64(spec.seed);
            let gap = Duration::from_secs_f64(1.0 / spec.connect_rate);
            for i in 0..spec.players {
                let at = started + gap.mul_f64(i as f64);
                tokio::time::sleep_until(at.into()).await;
                let bot = Bot {
                    spec: spec.clone(),
                    counters: counters.clone(),
                    pacer: pacer.clone(),
                    endpoint: endpoints[i % endpoints.len()].clone(),
                    player: spec.first_player_id + i as u64,
                    rng: SmallRng::seed_from_u64(rng.random()),
                    load_from: started + ramp,
                    deadline,
                };
                bots.spawn(bot.run());
            }
            while bots.join_next().await.is_some() {}
        }
    };
    let mut launcher = std::pin::pin!(launcher);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut launcher => break,
            _ = ticker.tick() => progress(&counters.snapshot(started.elapsed())),
        }
    }
    let elapsed = started.elapsed();
    progress(&counters.snapshot(elapsed));
    // Load ran from the ramp's end to the deadline (or until `max_matches`), not through
    // the ramp and the closing second.
    let load = elapsed.saturating_sub(ramp).min(spec.duration);
    Ok(counters.report(elapsed, load))
}

/// Enqueue permits at `rate` per second from `from` to `until`, as a semaphore the bots
/// take from: each permit wakes exactly one waiting bot (a shared rate limiter polled by
/// thousands of sleeping bots costs more CPU than the edge it is measuring). Permits not
/// taken pile up to at most 10 ms worth, like a token bucket.
fn start_pacer(rate: f64, from: Instant, until: Instant) -> Arc<Semaphore> {
    let permits = Arc::new(Semaphore::new(0));
    let burst = (rate / 100.0).ceil().max(1.0) as usize;
    let issuer = permits.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut issued = 0u64;
        while Instant::now() < until {
            ticker.tick().await;
            let due = (rate * from.elapsed().as_secs_f64()) as u64;
            let room = burst.saturating_sub(issuer.available_permits());
            let add = (due.saturating_sub(issued) as usize).min(room);
            issuer.add_permits(add);
            // Permits that found no room are skipped, not owed.
            issued = due;
        }
    });
    permits
}

struct Bot {
    spec: Arc<LoadSpec>,
    counters: Arc<Counters>,
    pacer: Option<Arc<Semaphore>>,
    endpoint: quinn::Endpoint,
    player: u64,
    rng: SmallRng,
    /// When the ramp ends and queueing starts.
    load_from: Instant,
    deadline: Instant,
}

impl Bot {
    async fn run(mut self) {
        let c = self.counters.clone();
        let mmr = (self.spec.rating.0 + self.spec.rating.1 * normal(&mut self.rng)).max(0.0);
        let mut config =
            ClientConfig::new(self.spec.target, self.spec.trust.clone(), (self.spec.tokens)(self.player, mmr));
        config.request_timeout = Duration::from_secs(10);
        let t0 = Instant::now();
        let (client, welcome) = match Client::connect_on(self.endpoint.clone(), config).await {
            Ok(ok) => ok,
            Err(e) => {
                c.error(&e);
                return;
            }
        };
        c.connect.record(t0.elapsed());
        c.connected.fetch_add(1, Ordering::Relaxed);
        if self.spec.idle {
            tokio::time::sleep_until(self.deadline.into()).await;
        } else {
            let rtt = self.rtt_map(&client, &welcome).await;
            // Everyone starts queueing together once the ramp is over, so the latencies
            // measure steady load, not load mixed with thousands of TLS handshakes.
            tokio::time::sleep_until(self.load_from.into()).await;
            if self.play(&client, &rtt).await == Stopped::Deadline {
                // Everyone closes together, after the requests sent before the deadline
                // have been answered: ten thousand closes at once would otherwise land on
                // those last answers and be measured as their latency.
                tokio::time::sleep_until((self.deadline + CLOSE_AFTER_DEADLINE).into()).await;
            }
        }
        c.connected.fetch_sub(1, Ordering::Relaxed);
        client.close().await;
    }

    /// The measured ping plus a synthetic distance: near a home datacenter, farther from
    /// the rest (every datacenter is this one machine in a test).
    async fn rtt_map(&mut self, client: &Client, welcome: &Welcome) -> Vec<(String, f32)> {
        let mut measured = client.measure_rtt(welcome, 1).await;
        if measured.is_empty() {
            // The ping was lost (datagrams are unreliable): distances alone will do.
            measured = welcome.datacenters.iter().map(|dc| (dc.name.clone(), 0.0)).collect();
        }
        let home = self.rng.random_range(0..measured.len().max(1));
        measured
            .into_iter()
            .enumerate()
            .map(|(i, (dc, ping))| {
                let distance =
                    if i == home { self.rng.random_range(8.0..30.0) } else { self.rng.random_range(40.0..150.0) };
                (dc, ping + distance)
            })
            .collect()
    }

    async fn play(&mut self, client: &Client, rtt: &[(String, f32)]) -> Stopped {
        let c = self.counters.clone();
        loop {
            if Instant::now() >= self.deadline {
                return Stopped::Deadline;
            }
            if self.enough_matches() {
                return Stopped::Enough;
            }
            if let Some(pacer) = &self.pacer {
                tokio::select! {
                    permit = pacer.acquire() => match permit {
                        Ok(permit) => permit.forget(),
                        Err(_) => return Stopped::Deadline,
                    },
                    _ = tokio::time::sleep_until(self.deadline.into()) => return Stopped::Deadline,
                }
                // A permit taken at or just before the deadline (both ready at once, or the
                // task run late): the run is over all the same.
                if Instant::now() >= self.deadline {
                    return Stopped::Deadline;
                }
            }
            let mode = &self.spec.modes[self.rng.random_range(0..self.spec.modes.len())];
            let t0 = Instant::now();
            let ticket = match client.enqueue(mode, rtt).await {
                Ok(ticket) => ticket,
                Err(e) => {
                    c.error(&e);
                    if !e.is_retryable() {
                        return Stopped::Failed;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acked = Instant::now();
            c.enqueue_ack.record(acked - t0);
            c.ack_timeline.record(t0.saturating_duration_since(self.load_from), acked - t0);
            c.enqueues.fetch_add(1, Ordering::Relaxed);
            c.waiting.fetch_add(1, Ordering::Relaxed);
            let outcome = tokio::time::timeout_at(self.deadline.into(), wait_for_match(client, ticket)).await;
            c.waiting.fetch_sub(1, Ordering::Relaxed);
            match outcome {
                Ok(Ok(formed_at_unix_us)) => {
                    c.time_to_match.record(acked.elapsed());
                    let now_us = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64;
                    c.delivery.record(Duration::from_micros(now_us.saturating_sub(formed_at_unix_us)));
                    c.matches.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    c.error(&e);
                    return Stopped::Failed;
                }
                Err(_) => {
                    // The run is over; leave the queue tidily.
                    let _ = client.cancel(ticket).await;
                    return Stopped::Deadline;
                }
            }
            let (lo, hi) = self.spec.play_time;
            let pause = if hi > lo { self.rng.random_range(lo..hi) } else { lo };
            tokio::time::sleep_until((Instant::now() + pause).min(self.deadline).into()).await;
        }
    }

    fn enough_matches(&self) -> bool {
        self.spec.max_matches.is_some_and(|max| self.counters.matches.load(Ordering::Relaxed) >= max)
    }
}

/// Why a player stopped playing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopped {
    /// The run's time is up.
    Deadline,
    /// `max_matches` were received.
    Enough,
    /// Its connection failed, or the edge refused it for good (counted as an error).
    Failed,
}

/// Waits for this ticket's match; its formation time (µs since the epoch, edge clock).
/// A match that falls through and queues the bot again is followed to its new ticket.
async fn wait_for_match(client: &Client, mut ticket: u64) -> Result<u64, ClientError> {
    loop {
        match client.next_event().await {
            Some(ClientEvent::MatchFound(m)) if m.ticket_id == ticket => {
                // Bots accept every ready check; the match is theirs either way.
                if m.accept_by_unix_ms != 0 {
                    let _ = client.respond_to_match(m.match_id, true).await;
                }
                return Ok(m.formed_at_unix_us);
            }
            Some(ClientEvent::MatchAbandoned { ticket: Some(again), .. }) => ticket = again.ticket_id,
            Some(ClientEvent::Closed(e)) => return Err(e),
            None => return Err(ClientError::ConnectionLost),
            Some(_) => {}
        }
    }
}

fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
