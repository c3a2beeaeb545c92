//! Counters and histograms shared by every simulated player, and the report made of them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use rally_client::ClientError;
use serde::Serialize;

/// A latency histogram in µs, 1 µs to 1 hour, 3 significant digits.
pub(crate) struct Latency(Mutex<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")))
    }
}

impl Latency {
    pub fn record(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).record(us).expect("clamped into bounds");
    }

    fn summary(&self) -> Summary {
        let h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let ms = |us: u64| us as f64 / 1000.0;
        Summary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// Enqueue→ack per second of load: tails on a shared machine come in bursts (a stall of
/// a few hundred ms every so often), which one run-wide percentile cannot tell from a
/// steady slowness. Each second costs about 1.5 KiB; the first `MAX_SECONDS` of load are
/// kept (the run-wide histogram has the rest).
#[derive(Default)]
pub(crate) struct AckTimeline(Mutex<Vec<(Histogram<u32>, u64)>>);

/// The enqueue→ack goal: acks slower than this are counted per second.
pub const SLOW_ACK: Duration = Duration::from_millis(2);

impl AckTimeline {
    const MAX_SECONDS: usize = 24 * 3600;
    /// Longest ack the histograms tell apart (the client's request timeout is 10 s).
    const MAX_US: u64 = 60_000_000;

    /// An ack that took `d`, for an enqueue sent `since_load` after the load started.
    pub fn record(&self, since_load: Duration, d: Duration) {
        let second = since_load.as_secs() as usize;
        if second >= Self::MAX_SECONDS {
            return;
        }
        let us = (d.as_micros() as u64).clamp(1, Self::MAX_US);
        let mut seconds = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while seconds.len() <= second {
            // One significant digit (within about 6%): enough to tell a slow second.
            seconds.push((Histogram::new_with_bounds(1, Self::MAX_US, 1).expect("valid bounds"), 0));
        }
        let (histogram, slow) = &mut seconds[second];
        histogram.saturating_record(us);
        *slow += u64::from(d > SLOW_ACK);
    }

    fn seconds(&self) -> Vec<AckSecond> {
        let seconds = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let ms = |us: u64| us as f64 / 1000.0;
        seconds
            .iter()
            .enumerate()
            .map(|(second, (h, slow))| AckSecond {
                second: second as u64,
                enqueues: h.len(),
                ack_p99_ms: ms(h.value_at_quantile(0.99)),
                ack_max_ms: ms(h.max()),
                acks_over_2ms: *slow,
            })
            .collect()
    }
}

/// What the players report as they go.
#[derive(Default)]
pub struct Counters {
    pub(crate) connect: Latency,
    pub(crate) enqueue_ack: Latency,
    pub(crate) ack_timeline: AckTimeline,
    pub(crate) time_to_match: Latency,
    pub(crate) delivery: Latency,
    pub(crate) connected: AtomicU64,
    pub(crate) waiting: AtomicU64,
    pub(crate) enqueues: AtomicU64,
    pub(crate) matches: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub(crate) fn error(&self, e: &ClientError) {
        let key = match e {
            ClientError::Server { code: Some(code), .. } => format!("{code:?}"),
            ClientError::Server { raw, .. } => format!("code {raw}"),
            ClientError::Closed { code: Some(code), .. } => format!("closed: {code:?}"),
            ClientError::Closed { raw, .. } => format!("closed: code {raw}"),
            ClientError::Connect(_) => "connect failed".into(),
            ClientError::ConnectionLost => "connection lost".into(),
            ClientError::Timeout => "timeout".into(),
            ClientError::Protocol(_) => "protocol violation".into(),
        };
        tracing::debug!(error = %e, "load error");
        *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
    }

    fn error_count(&self) -> u64 {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).values().sum()
    }

    pub(crate) fn snapshot(&self, elapsed: Duration) -> Snapshot {
        Snapshot {
            elapsed,
            connected: self.connected.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            enqueues: self.enqueues.load(Ordering::Relaxed),
            matches: self.matches.load(Ordering::Relaxed),
            errors: self.error_count(),
            time_to_match: self.time_to_match.summary(),
        }
    }

    /// The report of a run that took `elapsed`, `load` of it queueing.
    pub(crate) fn report(&self, elapsed: Duration, load: Duration) -> Report {
        let secs = load.as_secs_f64().max(1e-9);
        let enqueues = self.enqueues.load(Ordering::Relaxed);
        Report {
            elapsed_s: elapsed.as_secs_f64(),
            enqueues,
            enqueues_per_s: enqueues as f64 / secs,
            matches_received: self.matches.load(Ordering::Relaxed),
            connect: self.connect.summary(),
            enqueue_ack: self.enqueue_ack.summary(),
            time_to_match: self.time_to_match.summary(),
            delivery: self.delivery.summary(),
            ack_timeline: self.ack_timeline.seconds(),
            errors: self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// Progress, about once a second.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Since the run started.
    pub elapsed: Duration,
    /// Players connected now.
    pub connected: u64,
    /// Players with a waiting ticket now.
    pub waiting: u64,
    /// Enqueues acknowledged so far.
    pub enqueues: u64,
    /// `MatchFound` received so far (one per matched player).
    pub matches: u64,
    /// Errors so far.
    pub errors: u64,
    /// Time to match so far.
    pub time_to_match: Summary,
}

/// Percentiles of one latency, in ms.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// The result of a run (`--report FILE` writes it as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Wall time of the run.
    pub elapsed_s: f64,
    /// Enqueues acknowledged.
    pub enqueues: u64,
    /// Enqueues acknowledged per second of load (the ramp and the closing second left out).
    pub enqueues_per_s: f64,
    /// `MatchFound` messages received.
    pub matches_received: u64,
    /// Connect → `Welcome`.
    pub connect: Summary,
    /// Enqueue sent → `Enqueued` received.
    pub enqueue_ack: Summary,
    /// `Enqueued` → `MatchFound`.
    pub time_to_match: Summary,
    /// The edge receiving the match → the client receiving `MatchFound`.
    pub delivery: Summary,
    /// Enqueue→ack in each second of load (from the end of the connect ramp), by when the
    /// enqueue was sent.
    pub ack_timeline: Vec<AckSecond>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
}

/// Enqueue→ack over one second of load.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AckSecond {
    /// Seconds since the load started.
    pub second: u64,
    /// Enqueues sent in this second and acknowledged.
    pub enqueues: u64,
    /// 99th percentile (within about 6%).
    pub ack_p99_ms: f64,
    /// Largest.
    pub ack_max_ms: f64,
    /// Acks that took over [`SLOW_ACK`].
    pub acks_over_2ms: u64,
}

/// How many of a run's seconds the table names.
const WORST_SECONDS_SHOWN: usize = 3;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "elapsed           {:.1} s", self.elapsed_s)?;
        writeln!(f, "enqueues          {} ({:.0}/s)", self.enqueues, self.enqueues_per_s)?;
        writeln!(f, "matches received  {}", self.matches_received)?;
        writeln!(
            f,
            "{:<17} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        )?;
        for (name, s) in [
            ("connect", &self.connect),
            ("enqueue→ack", &self.enqueue_ack),
            ("time to match", &self.time_to_match),
            ("delivery", &self.delivery),
        ] {
            writeln!(
                f,
                "{:<17} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                name, s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms
            )?;
        }
        let mut worst: Vec<&AckSecond> = self.ack_timeline.iter().filter(|s| s.enqueues > 0).collect();
        if !worst.is_empty() {
            worst.sort_by(|a, b| b.ack_p99_ms.total_cmp(&a.ack_p99_ms).then(a.second.cmp(&b.second)));
            let shown: Vec<String> = worst
                .iter()
                .take(WORST_SECONDS_SHOWN)
                .map(|s| format!("{:.1} ms at {} s", s.ack_p99_ms, s.second))
                .collect();
            writeln!(f, "{:<17} ack p99 {}", "slowest seconds", shown.join(", "))?;
            let slow: u64 = self.ack_timeline.iter().map(|s| s.acks_over_2ms).sum();
            let seconds = self.ack_timeline.iter().filter(|s| s.acks_over_2ms > 0).count();
            let label = format!("acks over {} ms", SLOW_ACK.as_millis());
            writeln!(f, "{label:<17} {slow}, in {seconds} of {} s", self.ack_timeline.len())?;
        }
        if self.errors.is_empty() {
            write!(f, "errors            none")
        } else {
            write!(f, "errors           ")?;
            for (kind, n) in &self.errors {
                write!(f, " {kind}: {n};")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_ack_timeline_keeps_each_second_apart() {
        let timeline = AckTimeline::default();
        timeline.record(ms(200), ms(1));
        timeline.record(ms(900), ms(3));
        timeline.record(ms(2_500), Duration::from_micros(2_000));
        let seconds = timeline.seconds();
        assert_eq!(seconds.len(), 3, "second 1 is there, empty: {seconds:?}");
        assert_eq!((seconds[0].enqueues, seconds[0].acks_over_2ms), (2, 1));
        assert_eq!((seconds[1].enqueues, seconds[1].acks_over_2ms), (0, 0));
        // Exactly 2 ms is not over.
        assert_eq!((seconds[2].enqueues, seconds[2].acks_over_2ms), (1, 0));
        // The top of 3 ms's bucket: within about 6%.
        assert!((3.0..3.2).contains(&seconds[0].ack_max_ms), "{seconds:?}");
    }

    #[test]
    fn the_table_names_the_slowest_seconds() {
        let timeline = AckTimeline::default();
        for (second, ack_ms) in [(0, 1), (1, 9), (2, 4)] {
            timeline.record(ms(second * 1_000), ms(ack_ms));
        }
        let counters = Counters::default();
        let report = Report { ack_timeline: timeline.seconds(), ..counters.report(ms(3_000), ms(3_000)) };
        let table = report.to_string();
        assert!(table.contains("\nslowest seconds   ack p99 9.2 ms at 1 s, 4.1 ms at 2 s, 1.0 ms at 0 s\n"), "{table}");
        assert!(table.contains("\nacks over 2 ms    2, in 2 of 3 s\n"), "{table}");
    }

    #[test]
    fn an_idle_run_has_no_timeline_lines() {
        let table = Counters::default().report(ms(3_000), ms(3_000)).to_string();
        assert!(!table.contains("slowest seconds") && !table.contains("acks over"), "{table}");
    }

    #[test]
    fn seconds_past_the_cap_are_left_out() {
        let timeline = AckTimeline::default();
        timeline.record(Duration::from_secs(AckTimeline::MAX_SECONDS as u64), ms(1));
        assert!(timeline.seconds().is_empty());
    }
}
