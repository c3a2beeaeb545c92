//! The replay summary: counts, match quality and timing.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use rally_engine::Match;
use serde::Serialize;

/// Three percentiles and the maximum of a distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `h`, each the lowest value of its histogram bucket (at most 0.1%
    /// below the recorded value, and a round value stays round: 3200 reads 3200, not the
    /// bucket's top, 3201); `max` is the exact largest value, kept beside the histogram.
    fn of(h: &Histogram<u64>, max: u64) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let at = |q| h.lowest_equivalent(h.value_at_quantile(q)) as f64;
        Percentiles { p50: at(0.50), p95: at(0.95), p99: at(0.99), max: max as f64 }
    }
}

/// What a replay did. Everything but the timing fields is deterministic.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Non-blank input lines.
    pub lines_read: u64,
    /// Lines applied (enqueues accepted, cancels processed).
    pub accepted: u64,
    /// Skipped lines by reason code.
    pub rejected: BTreeMap<String, u64>,
    /// Cancels that removed a waiting ticket.
    pub cancelled: u64,
    /// Cancels of tickets no longer (or never) waiting: counted, not errors.
    pub cancel_not_waiting: u64,
    /// Matches formed.
    pub matches: u64,
    /// Tickets placed in matches.
    pub tickets_matched: u64,
    /// Players placed in matches.
    pub players_matched: u64,
    /// Tickets still waiting when the clock stopped.
    pub still_waiting: u64,
    /// Wait of matched tickets, ms.
    pub wait_ms: Percentiles,
    /// Mean wait of matched tickets, ms.
    pub mean_wait_ms: f64,
    /// Mean MMR spread per match.
    pub mean_spread: f64,
    /// Mean team imbalance per match (max − min team mean MMR).
    pub mean_imbalance: f64,
    /// Mean worst-player RTT per match, ms.
    pub mean_worst_rtt_ms: f64,
    /// Wall time of one tick of all shards, µs.
    pub tick_us: Percentiles,
    /// Ticks run.
    pub ticks: u64,
    /// The virtual time the clock stopped at, ms.
    pub virtual_end_ms: u64,
    /// Wall time of the whole replay, JSON included, ms.
    pub wall_ms: f64,
    #[serde(skip)]
    waits: Histogram<u64>,
    #[serde(skip)]
    tick_times: Histogram<u64>,
    #[serde(skip)]
    sums: Sums,
}

#[derive(Clone, Debug, Default)]
struct Sums {
    /// Exact maxima (the histograms round to their buckets).
    wait_max_ms: u64,
    tick_max_us: u64,
    wait: f64,
    spread: f64,
    imbalance: f64,
    rtt: f64,
}

impl Default for Summary {
    fn default() -> Self {
        // Three significant figures: percentiles within 0.1%.
        let hist = || Histogram::new_with_bounds(1, 1 << 40, 3).expect("valid histogram bounds");
        Summary {
            lines_read: 0,
            accepted: 0,
            rejected: BTreeMap::new(),
            cancelled: 0,
            cancel_not_waiting: 0,
            matches: 0,
            tickets_matched: 0,
            players_matched: 0,
            still_waiting: 0,
            wait_ms: Percentiles::default(),
            mean_wait_ms: 0.0,
            mean_spread: 0.0,
            mean_imbalance: 0.0,
            mean_worst_rtt_ms: 0.0,
            tick_us: Percentiles::default(),
            ticks: 0,
            virtual_end_ms: 0,
            wall_ms: 0.0,
            waits: hist(),
            tick_times: hist(),
            sums: Sums::default(),
        }
    }
}

impl Summary {
    pub(crate) fn record_match(&mut self, m: &Match) {
        self.matches += 1;
        self.tickets_matched += m.tickets.len() as u64;
        self.players_matched += m.players.len() as u64;
        for t in &m.tickets {
            self.waits.saturating_record(t.wait_ms);
            self.sums.wait_max_ms = self.sums.wait_max_ms.max(t.wait_ms);
            self.sums.wait += t.wait_ms as f64;
        }
        self.sums.spread += m.mmr_spread;
        self.sums.imbalance += m.team_imbalance;
        self.sums.rtt += m.worst_rtt_ms;
        let n = self.matches as f64;
        self.mean_spread = self.sums.spread / n;
        self.mean_imbalance = self.sums.imbalance / n;
        self.mean_worst_rtt_ms = self.sums.rtt / n;
        self.mean_wait_ms = self.sums.wait / self.tickets_matched as f64;
    }

    pub(crate) fn record_tick(&mut self, took: Duration) {
        self.ticks += 1;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.tick_times.saturating_record(us);
        self.sums.tick_max_us = self.sums.tick_max_us.max(us);
    }

    /// Brings derived figures up to date; called once at the end of a replay.
    pub(crate) fn finish(&mut self) {
        self.tick_us = Percentiles::of(&self.tick_times, self.sums.tick_max_us);
        self.wait_ms = Percentiles::of(&self.waits, self.sums.wait_max_ms);
    }

    /// Total lines skipped as bad.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "lines read        {}", self.lines_read)?;
        writeln!(f, "accepted          {}", self.accepted)?;
        writeln!(f, "rejected          {}", self.rejected_total())?;
        for (reason, n) in &self.rejected {
            writeln!(f, "  {reason:<30} {n}")?;
        }
        writeln!(f, "cancelled         {} (+{} not waiting)", self.cancelled, self.cancel_not_waiting)?;
        writeln!(f, "matches           {}", self.matches)?;
        writeln!(f, "tickets matched   {} ({} players)", self.tickets_matched, self.players_matched)?;
        writeln!(f, "still waiting     {}", self.still_waiting)?;
        let w = &self.wait_ms;
        writeln!(
            f,
            "wait ms           p50 {} p95 {} p99 {} max {} mean {:.1}",
            w.p50, w.p95, w.p99, w.max, self.mean_wait_ms
        )?;
        writeln!(f, "mean spread       {:.2}", self.mean_spread)?;
        writeln!(f, "mean imbalance    {:.2}", self.mean_imbalance)?;
        writeln!(f, "mean worst rtt ms {:.2}", self.mean_worst_rtt_ms)?;
        let t = &self.tick_us;
        writeln!(f, "tick µs           p50 {} p99 {} max {} ({} ticks)", t.p50, t.p99, t.max, self.ticks)?;
        write!(f, "wall ms           {:.1}", self.wall_ms)
    }
}
