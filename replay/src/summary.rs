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
    /// Tickets still waiting when the clock stopped.
    pub still_waiting: u64,
    /// The matches formed, over every mode.
    #[serde(flatten)]
    pub formed: Formed,
    /// Each mode's part, in the rules' order (a JSON object keyed by mode name): the
    /// figures to tune one mode's rules by, which the totals blend with the others'.
    #[serde(serialize_with = "by_name")]
    pub by_mode: Vec<(String, ModeSummary)>,
    /// Wall time of one tick of all shards, µs.
    pub tick_us: Percentiles,
    /// Ticks run.
    pub ticks: u64,
    /// Searches for a match the engine ran, each one anchor's look at its neighbours: what
    /// the ticks' time is made of, so a mode's rules can be compared by it (deterministic,
    /// unlike the times).
    pub searches: u64,
    /// Neighbours those searches looked at: with `searches`, the work the rules make a tick
    /// do (deterministic too).
    pub neighbours_scanned: u64,
    /// The virtual time the clock stopped at, ms.
    pub virtual_end_ms: u64,
    /// Wall time of the whole replay, JSON included, ms.
    pub wall_ms: f64,
    #[serde(skip)]
    tick_times: Histogram<u64>,
    #[serde(skip)]
    tick_max_us: u64,
}

/// The matches formed (in all, or in one mode) and their quality.
#[derive(Clone, Debug, Serialize)]
pub struct Formed {
    /// Matches formed.
    pub matches: u64,
    /// Tickets placed in matches.
    pub tickets_matched: u64,
    /// Players placed in matches.
    pub players_matched: u64,
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
    #[serde(skip)]
    waits: Histogram<u64>,
    #[serde(skip)]
    sums: Sums,
}

/// One mode's part of a replay.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ModeSummary {
    /// Its tickets the engine accepted.
    pub enqueued: u64,
    /// Cancels that removed one of its waiting tickets.
    pub cancelled: u64,
    /// Its tickets still waiting when the clock stopped.
    pub still_waiting: u64,
    /// Searches for a match its pools ran (see `Summary::searches`).
    pub searches: u64,
    /// Its matches.
    #[serde(flatten)]
    pub formed: Formed,
}

#[derive(Clone, Debug, Default)]
struct Sums {
    /// The exact maximum (the histogram rounds to its buckets).
    wait_max_ms: u64,
    wait: f64,
    spread: f64,
    imbalance: f64,
    rtt: f64,
}

/// A histogram of waits or tick times: three significant figures, so percentiles are
/// within 0.1%.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1 << 40, 3).expect("valid histogram bounds")
}

impl Default for Formed {
    fn default() -> Self {
        Formed {
            matches: 0,
            tickets_matched: 0,
            players_matched: 0,
            wait_ms: Percentiles::default(),
            mean_wait_ms: 0.0,
            mean_spread: 0.0,
            mean_imbalance: 0.0,
            mean_worst_rtt_ms: 0.0,
            waits: histogram(),
            sums: Sums::default(),
        }
    }
}

impl Formed {
    fn record(&mut self, m: &Match) {
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

    fn finish(&mut self) {
        self.wait_ms = Percentiles::of(&self.waits, self.sums.wait_max_ms);
    }
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            lines_read: 0,
            accepted: 0,
            rejected: BTreeMap::new(),
            cancelled: 0,
            cancel_not_waiting: 0,
            still_waiting: 0,
            formed: Formed::default(),
            by_mode: Vec::new(),
            tick_us: Percentiles::default(),
            ticks: 0,
            searches: 0,
            neighbours_scanned: 0,
            virtual_end_ms: 0,
            wall_ms: 0.0,
            tick_times: histogram(),
            tick_max_us: 0,
        }
    }
}

impl Summary {
    /// An empty summary with a part for each of `modes` (names in the rules' order, so
    /// `ModeId(i)` is `by_mode[i]`).
    pub(crate) fn for_modes(modes: impl IntoIterator<Item = String>) -> Self {
        Summary { by_mode: modes.into_iter().map(|name| (name, ModeSummary::default())).collect(), ..Self::default() }
    }

    /// Mode `mode`'s part (`ModeId(mode)`); `None` for an id no mode has.
    pub(crate) fn mode_mut(&mut self, mode: u16) -> Option<&mut ModeSummary> {
        self.by_mode.get_mut(usize::from(mode)).map(|(_, part)| part)
    }

    pub(crate) fn record_match(&mut self, m: &Match) {
        self.formed.record(m);
        if let Some(part) = self.mode_mut(m.mode.0) {
            part.formed.record(m);
        }
    }

    pub(crate) fn record_tick(&mut self, took: Duration) {
        self.ticks += 1;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.tick_times.saturating_record(us);
        self.tick_max_us = self.tick_max_us.max(us);
    }

    /// Brings derived figures up to date; called once at the end of a replay.
    pub(crate) fn finish(&mut self) {
        self.tick_us = Percentiles::of(&self.tick_times, self.tick_max_us);
        self.formed.finish();
        for (_, part) in &mut self.by_mode {
            part.formed.finish();
        }
    }

    /// Total lines skipped as bad.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Serialises the modes' parts as one JSON object keyed by mode name, in the rules' order.
fn by_name<S: serde::Serializer>(by_mode: &[(String, ModeSummary)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(by_mode.iter().map(|(name, part)| (name, part)))
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
        let formed = &self.formed;
        writeln!(f, "matches           {}", formed.matches)?;
        writeln!(f, "tickets matched   {} ({} players)", formed.tickets_matched, formed.players_matched)?;
        writeln!(f, "still waiting     {}", self.still_waiting)?;
        let w = &formed.wait_ms;
        writeln!(
            f,
            "wait ms           p50 {} p95 {} p99 {} max {} mean {:.1}",
            w.p50, w.p95, w.p99, w.max, formed.mean_wait_ms
        )?;
        writeln!(f, "mean spread       {:.2}", formed.mean_spread)?;
        writeln!(f, "mean imbalance    {:.2}", formed.mean_imbalance)?;
        writeln!(f, "mean worst rtt ms {:.2}", formed.mean_worst_rtt_ms)?;
        if !self.by_mode.is_empty() {
            let width = self.by_mode.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0).max(4);
            writeln!(
                f,
                "{:<width$}  {:>7} {:>7} {:>9} {:>7} {:>7}  {:>8} {:>7} {:>7}  {:>9} {:>7} {:>9}",
                "mode",
                "tickets",
                "matched",
                "cancelled",
                "waiting",
                "matches",
                "wait p50",
                "p95",
                "p99",
                "imbalance",
                "spread",
                "worst rtt"
            )?;
            for (name, part) in &self.by_mode {
                let (formed, w) = (&part.formed, &part.formed.wait_ms);
                writeln!(
                    f,
                    "{name:<width$}  {:>7} {:>7} {:>9} {:>7} {:>7}  {:>8} {:>7} {:>7}  {:>9.2} {:>7.2} {:>9.2}",
                    part.enqueued,
                    formed.tickets_matched,
                    part.cancelled,
                    part.still_waiting,
                    formed.matches,
                    w.p50,
                    w.p95,
                    w.p99,
                    formed.mean_imbalance,
                    formed.mean_spread,
                    formed.mean_worst_rtt_ms
                )?;
            }
        }
        let t = &self.tick_us;
        writeln!(
            f,
            "tick µs           p50 {} p99 {} max {} ({} ticks, {} searches, {} neighbours scanned)",
            t.p50, t.p99, t.max, self.ticks, self.searches, self.neighbours_scanned
        )?;
        write!(f, "wall ms           {:.1}", self.wall_ms)
    }
}
