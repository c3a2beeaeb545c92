//! Matchmaking rules: regions, datacenters and modes, loaded from TOML and validated.
//!
//! The TOML shape is the one `rally replay` documents (`MODES.toml`): a `tick_ms`, a
//! `[regions]` table mapping region names to datacenter lists, and one `[[mode]]` table per
//! mode. Names are resolved to small integer ids here, once, so the shard never touches a
//! string on its hot path.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// Most datacenters one shard may serve: feasible datacenters are a `u32` bitmask.
pub const MAX_DATACENTERS_PER_SHARD: usize = 32;
/// Most players one match may hold (teams × team_size).
pub const MAX_PLAYERS_PER_MATCH: usize = 64;

/// Index of a region in [`Rules::regions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub u16);

/// Index of a mode in [`Rules::modes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModeId(pub u16);

/// Index of a shard in [`Rules::shards`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// Index of a datacenter in [`Rules::datacenters`] (global across regions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatacenterId(pub u16);

/// A limit that widens with a ticket's wait: `min(start + growth_per_s · wait_s, max)`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Widening {
    /// Value at zero wait.
    pub start: f64,
    /// Growth per second of wait.
    pub growth_per_s: f64,
    /// The value never grows past this.
    pub max: f64,
}

impl Widening {
    /// The limit after `wait_ms` milliseconds of waiting.
    ///
    /// The operations run in the order the replay contract writes them
    /// (`start + growth_per_s · wait_ms / 1000`), so an outside checker that follows the
    /// contract computes the very same float.
    #[inline]
    pub fn at(&self, wait_ms: u64) -> f64 {
        (self.start + self.growth_per_s * wait_ms as f64 / 1000.0).min(self.max)
    }

    /// When (ms, on the clock `since_ms` is on) the limit of a ticket that started waiting
    /// at `since_ms` first reaches `value`, rounded down so a caller that waits until then
    /// never misses the moment; `u64::MAX` if it never gets there.
    pub(crate) fn reached_at(&self, since_ms: u64, value: f64) -> u64 {
        if value <= self.start {
            return since_ms;
        }
        if value > self.max || self.growth_per_s <= 0.0 {
            return u64::MAX;
        }
        // `as` truncates: the floor of a positive number, without a libm call.
        since_ms.saturating_add(((value - self.start) * 1000.0 / self.growth_per_s) as u64)
    }

    /// When (ms, on the clock `since_ms` is on) the limit of a ticket that started waiting
    /// at `since_ms` covers `value` or has stopped growing short of it, rounded up: from
    /// then on, growing further changes nothing that `value` bounds.
    pub(crate) fn covers_at(&self, since_ms: u64, value: f64) -> u64 {
        let value = value.min(self.max);
        if value <= self.start || self.growth_per_s <= 0.0 {
            return since_ms;
        }
        since_ms.saturating_add(((value - self.start) * 1000.0 / self.growth_per_s).ceil() as u64)
    }

    fn validate(&self, mode: &str, field: &'static str) -> Result<(), RulesError> {
        let bad = |reason: &'static str| RulesError::BadWidening { mode: mode.to_owned(), field, reason };
        if !(self.start.is_finite() && self.growth_per_s.is_finite() && self.max.is_finite()) {
            return Err(bad("start, growth_per_s and max must be finite numbers"));
        }
        if self.start < 0.0 || self.growth_per_s < 0.0 {
            return Err(bad("start and growth_per_s must not be negative"));
        }
        if self.max < self.start {
            return Err(bad("max must be at least start"));
        }
        Ok(())
    }
}

/// One game mode's matching rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Mode {
    /// The mode's name, as clients and files spell it.
    pub name: String,
    /// Number of teams in a match (2 for NvN, 8 for an 8-player free-for-all of teams of 1).
    pub teams: u16,
    /// Players per team; a ticket (party) holds 1..=team_size players.
    pub team_size: u16,
    /// The MMR spread a ticket accepts, widening with its wait.
    pub mmr_window: Widening,
    /// The RTT (ms) a ticket's players accept to the match's datacenter, widening with wait.
    pub max_rtt_ms: Widening,
    /// Whether players must accept a formed match before it is played (off by default).
    pub ready_check: Option<ReadyCheck>,
}

/// A mode's ready check: every player of a formed match accepts it within a time limit;
/// a decline or a silence sends the others back to the queue (with the wait they had
/// served) and keeps the decliner out of it for a while. Applied by the session directory
/// around the engine (its expiry runs in the admin API's game loop), not by the shards
/// or `rally replay`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadyCheck {
    /// How long players have to accept, ms.
    pub accept_timeout_ms: u64,
    /// How long a player who declined or did not answer may not queue again, ms.
    pub decline_cooldown_ms: u64,
}

impl Mode {
    /// Players in one match of this mode.
    pub fn players_per_match(&self) -> usize {
        usize::from(self.teams) * usize::from(self.team_size)
    }
}

/// A region: a named group of datacenters. Shards serve whole regions.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    /// The region's name (`eu`, `na`, …).
    pub name: String,
    /// Its datacenters, in configuration order (ties between datacenters go to the first).
    pub datacenters: Vec<DatacenterId>,
}

/// A group of regions served by one shard (one thread, one set of pools).
///
/// Tickets of one shard can be matched together in any of its datacenters the players
/// accept; tickets of different shards never meet. One shard for everything gives the best
/// matches; one per region spreads the load over cores and machines.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardPlan {
    /// The regions' names joined with `+`.
    pub name: String,
    /// Its regions.
    pub regions: Vec<RegionId>,
    /// Their datacenters, region by region in configuration order (at most
    /// [`MAX_DATACENTERS_PER_SHARD`]).
    pub datacenters: Vec<DatacenterId>,
}

/// Validated rules for every shard: the shared, read-only configuration of the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// Tick period in milliseconds (virtual in `rally replay`, real in the runtime).
    pub tick_ms: u64,
    /// Regions in name order.
    pub regions: Vec<Region>,
    /// Every datacenter's name, indexed by [`DatacenterId`].
    pub datacenters: Vec<String>,
    /// The region each datacenter belongs to, indexed by [`DatacenterId`].
    pub datacenter_region: Vec<RegionId>,
    /// Modes in file order.
    pub modes: Vec<Mode>,
    /// Shards and the regions each serves.
    pub shards: Vec<ShardPlan>,
    /// The shard serving each region, indexed by [`RegionId`].
    pub region_shard: Vec<ShardId>,
}

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RulesError {
    /// The text is not TOML of the expected shape.
    #[error("invalid rules file: {0}")]
    Parse(String),
    /// `tick_ms` is zero.
    #[error("tick_ms must be at least 1")]
    ZeroTick,
    /// No `[regions]` entry.
    #[error("no regions: add a [regions] table such as `eu = [\"eu-west\"]`")]
    NoRegions,
    /// A region lists no datacenters.
    #[error("region `{0}` lists no datacenters")]
    EmptyRegion(String),
    /// A shard would serve more datacenters than its bitmasks hold.
    #[error(
        "shard `{shard}` would serve {count} datacenters; at most {MAX_DATACENTERS_PER_SHARD} are supported: split its regions with `shards = [[...], [...]]`"
    )]
    TooManyDatacenters {
        /// The shard's regions.
        shard: String,
        /// How many datacenters they hold.
        count: usize,
    },
    /// `shards` names a region that does not exist.
    #[error("shards: unknown region `{0}`")]
    UnknownShardRegion(String),
    /// `shards` lists a region twice, or leaves one out.
    #[error("shards: region `{0}` must be in exactly one shard")]
    ShardCoverage(String),
    /// A datacenter appears twice (in one region or in two).
    #[error("datacenter `{0}` is listed more than once")]
    DuplicateDatacenter(String),
    /// A region or datacenter name is empty.
    #[error("region and datacenter names must not be empty")]
    EmptyName,
    /// No `[[mode]]` table.
    #[error("no modes: add at least one [[mode]] table")]
    NoModes,
    /// Two modes share a name.
    #[error("mode `{0}` is defined more than once")]
    DuplicateMode(String),
    /// A ready-check setting out of range.
    #[error("mode `{mode}`: {reason}")]
    BadReadyCheck {
        /// The mode.
        mode: String,
        /// What is wrong.
        reason: String,
    },
    /// A mode's name is empty.
    #[error("a mode has an empty name")]
    EmptyModeName,
    /// A mode's team shape is impossible.
    #[error("mode `{mode}`: {reason}")]
    BadTeams {
        /// The mode.
        mode: String,
        /// What is wrong.
        reason: String,
    },
    /// A widening limit is not a sane number.
    #[error("mode `{mode}`: {field}: {reason}")]
    BadWidening {
        /// The mode.
        mode: String,
        /// `mmr_window` or `max_rtt_ms`.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default = "default_tick_ms")]
    tick_ms: u64,
    #[serde(default)]
    regions: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    mode: Vec<ModeFile>,
    #[serde(default)]
    shards: Option<Vec<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeFile {
    name: String,
    teams: u16,
    team_size: u16,
    mmr_window: Widening,
    max_rtt_ms: Widening,
    /// Seconds players have to accept a match; absent: no ready check.
    accept_timeout_s: Option<f64>,
    /// Seconds a decliner waits before queueing again (default 60 with a ready check).
    decline_cooldown_s: Option<f64>,
}

fn default_tick_ms() -> u64 {
    100
}

impl Rules {
    /// Parses and validates a rules file in the `MODES.toml` format.
    pub fn from_toml(text: &str) -> Result<Self, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| RulesError::Parse(e.to_string()))?;
        Self::build(file)
    }

    fn build(file: RulesFile) -> Result<Self, RulesError> {
        if file.tick_ms == 0 {
            return Err(RulesError::ZeroTick);
        }
        if file.regions.is_empty() {
            return Err(RulesError::NoRegions);
        }
        let mut regions = Vec::with_capacity(file.regions.len());
        let mut datacenters: Vec<String> = Vec::new();
        let mut datacenter_region = Vec::new();
        for (region_idx, (name, dcs)) in file.regions.into_iter().enumerate() {
            if name.is_empty() {
                return Err(RulesError::EmptyName);
            }
            if dcs.is_empty() {
                return Err(RulesError::EmptyRegion(name));
            }
            let mut ids = Vec::with_capacity(dcs.len());
            for dc in dcs {
                if dc.is_empty() {
                    return Err(RulesError::EmptyName);
                }
                if datacenters.contains(&dc) {
                    return Err(RulesError::DuplicateDatacenter(dc));
                }
                ids.push(DatacenterId(datacenters.len() as u16));
                datacenters.push(dc);
                datacenter_region.push(RegionId(region_idx as u16));
            }
            regions.push(Region { name, datacenters: ids });
        }
        if file.mode.is_empty() {
            return Err(RulesError::NoModes);
        }
        let mut modes: Vec<Mode> = Vec::with_capacity(file.mode.len());
        for m in file.mode {
            if m.name.is_empty() {
                return Err(RulesError::EmptyModeName);
            }
            if modes.iter().any(|seen| seen.name == m.name) {
                return Err(RulesError::DuplicateMode(m.name));
            }
            let bad_teams = |reason: String| RulesError::BadTeams { mode: m.name.clone(), reason };
            if m.teams < 2 {
                return Err(bad_teams(format!("teams is {}; a match needs at least 2 teams", m.teams)));
            }
            if m.team_size < 1 {
                return Err(bad_teams("team_size must be at least 1".to_owned()));
            }
            let players = usize::from(m.teams) * usize::from(m.team_size);
            if players > MAX_PLAYERS_PER_MATCH {
                return Err(bad_teams(format!(
                    "teams × team_size is {players}; at most {MAX_PLAYERS_PER_MATCH} players per match are supported"
                )));
            }
            m.mmr_window.validate(&m.name, "mmr_window")?;
            m.max_rtt_ms.validate(&m.name, "max_rtt_ms")?;
            let bad_check =
                |reason: &str| RulesError::BadReadyCheck { mode: m.name.clone(), reason: reason.to_owned() };
            let ready_check = match (m.accept_timeout_s, m.decline_cooldown_s) {
                (None, None) => None,
                (None, Some(_)) => return Err(bad_check("decline_cooldown_s needs accept_timeout_s")),
                (Some(accept), cooldown) => {
                    if !(accept.is_finite() && accept > 0.0 && accept <= 300.0) {
                        return Err(bad_check("accept_timeout_s must be more than 0 and at most 300"));
                    }
                    let cooldown = cooldown.unwrap_or(60.0);
                    if !(cooldown.is_finite() && (0.0..=3600.0).contains(&cooldown)) {
                        return Err(bad_check("decline_cooldown_s must be 0 to 3600"));
                    }
                    Some(ReadyCheck {
                        accept_timeout_ms: (accept * 1000.0) as u64,
                        decline_cooldown_ms: (cooldown * 1000.0) as u64,
                    })
                }
            };
            modes.push(Mode {
                name: m.name,
                teams: m.teams,
                team_size: m.team_size,
                mmr_window: m.mmr_window,
                max_rtt_ms: m.max_rtt_ms,
                ready_check,
            });
        }
        let groups: Vec<Vec<RegionId>> = match file.shards {
            Some(groups) => {
                let mut seen = vec![false; regions.len()];
                let mut out = Vec::with_capacity(groups.len());
                for group in groups {
                    let mut ids = Vec::with_capacity(group.len());
                    for name in group {
                        let idx = regions
                            .iter()
                            .position(|r| r.name == name)
                            .ok_or_else(|| RulesError::UnknownShardRegion(name.clone()))?;
                        if std::mem::replace(&mut seen[idx], true) {
                            return Err(RulesError::ShardCoverage(name));
                        }
                        ids.push(RegionId(idx as u16));
                    }
                    if !ids.is_empty() {
                        out.push(ids);
                    }
                }
                if let Some(missing) = seen.iter().position(|s| !s) {
                    return Err(RulesError::ShardCoverage(regions[missing].name.clone()));
                }
                out
            }
            // Everything in one shard while it fits: the most matches and the best ones.
            None if datacenters.len() <= MAX_DATACENTERS_PER_SHARD => {
                vec![(0..regions.len()).map(|i| RegionId(i as u16)).collect()]
            }
            None => (0..regions.len()).map(|i| vec![RegionId(i as u16)]).collect(),
        };
        let mut shards = Vec::with_capacity(groups.len());
        let mut region_shard = vec![ShardId(0); regions.len()];
        for (shard_idx, group) in groups.into_iter().enumerate() {
            let name = group.iter().map(|r| regions[usize::from(r.0)].name.as_str()).collect::<Vec<_>>().join("+");
            let dcs: Vec<DatacenterId> =
                group.iter().flat_map(|r| regions[usize::from(r.0)].datacenters.iter().copied()).collect();
            if dcs.len() > MAX_DATACENTERS_PER_SHARD {
                return Err(RulesError::TooManyDatacenters { shard: name, count: dcs.len() });
            }
            for r in &group {
                region_shard[usize::from(r.0)] = ShardId(shard_idx as u16);
            }
            shards.push(ShardPlan { name, regions: group, datacenters: dcs });
        }
        Ok(Rules { tick_ms: file.tick_ms, regions, datacenters, datacenter_region, modes, shards, region_shard })
    }

    /// The id of the mode called `name`.
    pub fn mode_id(&self, name: &str) -> Option<ModeId> {
        self.modes.iter().position(|m| m.name == name).map(|i| ModeId(i as u16))
    }

    /// The mode with id `id`.
    pub fn mode(&self, id: ModeId) -> Option<&Mode> {
        self.modes.get(usize::from(id.0))
    }

    /// The id of the datacenter called `name`.
    pub fn datacenter_id(&self, name: &str) -> Option<DatacenterId> {
        self.datacenters.iter().position(|d| d == name).map(|i| DatacenterId(i as u16))
    }

    /// The name of datacenter `id`.
    pub fn datacenter_name(&self, id: DatacenterId) -> &str {
        &self.datacenters[usize::from(id.0)]
    }

    /// Region `id`.
    pub fn region(&self, id: RegionId) -> &Region {
        &self.regions[usize::from(id.0)]
    }

    /// Shard `id`.
    pub fn shard(&self, id: ShardId) -> &ShardPlan {
        &self.shards[usize::from(id.0)]
    }
}

impl fmt::Display for DatacenterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dc#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
tick_ms = 50
[regions]
na = ["na-east", "na-west"]
eu = ["eu-west", "eu-central", "eu-north"]
[[mode]]
name = "squad-5v5"
teams = 2
team_size = 5
mmr_window = { start = 100.0, growth_per_s = 15.0, max = 500.0 }
max_rtt_ms = { start = 80.0, growth_per_s = 8.0, max = 180.0 }
"#;

    #[test]
    fn ready_checks_are_off_by_default_and_checked_when_on() {
        assert_eq!(Rules::from_toml(GOOD).unwrap().modes[0].ready_check, None);
        let with = |extra: &str| Rules::from_toml(&format!("{GOOD}{extra}\n"));
        let on = with("accept_timeout_s = 10").unwrap();
        assert_eq!(
            on.modes[0].ready_check,
            Some(ReadyCheck { accept_timeout_ms: 10_000, decline_cooldown_ms: 60_000 })
        );
        let set = with("accept_timeout_s = 2.5\ndecline_cooldown_s = 5").unwrap();
        assert_eq!(set.modes[0].ready_check, Some(ReadyCheck { accept_timeout_ms: 2_500, decline_cooldown_ms: 5_000 }));
        for bad in [
            "accept_timeout_s = 0",
            "accept_timeout_s = 301",
            "decline_cooldown_s = 5",
            "accept_timeout_s = 1\ndecline_cooldown_s = -1",
        ] {
            assert!(matches!(with(bad), Err(RulesError::BadReadyCheck { .. })), "{bad}");
        }
    }

    #[test]
    fn parses_the_documented_shape() {
        let rules = Rules::from_toml(GOOD).unwrap();
        assert_eq!(rules.tick_ms, 50);
        assert_eq!(rules.regions.len(), 2);
        assert_eq!(rules.regions[0].name, "eu");
        assert_eq!(rules.datacenter_name(rules.regions[0].datacenters[0]), "eu-west");
        assert_eq!(rules.datacenter_region[usize::from(rules.datacenter_id("na-west").unwrap().0)], RegionId(1));
        assert_eq!(rules.mode_id("squad-5v5"), Some(ModeId(0)));
        assert_eq!(rules.modes[0].players_per_match(), 10);
        assert_eq!(rules.shards.len(), 1, "one shard for everything by default");
        assert_eq!(rules.shards[0].name, "eu+na");
        assert_eq!(rules.shards[0].datacenters.len(), 5);
    }

    #[test]
    fn tick_ms_defaults_to_100() {
        let rules = Rules::from_toml(&GOOD.replace("tick_ms = 50\n", "")).unwrap();
        assert_eq!(rules.tick_ms, 100);
    }

    #[test]
    fn shards_group_regions() {
        let text = GOOD.replace("tick_ms = 50", "tick_ms = 50\nshards = [[\"na\"], [\"eu\"]]");
        let rules = Rules::from_toml(&text).unwrap();
        assert_eq!(rules.shards.len(), 2);
        assert_eq!(rules.shards[0].name, "na");
        assert_eq!(rules.region_shard, vec![ShardId(1), ShardId(0)]);
        let missing = GOOD.replace("tick_ms = 50", "shards = [[\"na\"]]");
        assert_eq!(err(&missing), "shards: region `eu` must be in exactly one shard");
        let twice = GOOD.replace("tick_ms = 50", "shards = [[\"na\", \"eu\"], [\"na\"]]");
        assert_eq!(err(&twice), "shards: region `na` must be in exactly one shard");
        let unknown = GOOD.replace("tick_ms = 50", "shards = [[\"mars\"]]");
        assert_eq!(err(&unknown), "shards: unknown region `mars`");
        let many: Vec<String> = (0..33).map(|i| format!("\"dc{i}\"")).collect();
        let big = format!(
            "[regions]\nr = [{}]\n[[mode]]\nname='m'\nteams=2\nteam_size=1\nmmr_window={{start=1.0,growth_per_s=1.0,max=2.0}}\nmax_rtt_ms={{start=1.0,growth_per_s=1.0,max=2.0}}",
            many.join(",")
        );
        assert!(err(&big).contains("shard `r` would serve 33 datacenters"));
    }

    #[test]
    fn widening_grows_then_caps() {
        let w = Widening { start: 100.0, growth_per_s: 15.0, max: 500.0 };
        assert_eq!(w.at(0), 100.0);
        assert_eq!(w.at(2000), 130.0);
        assert_eq!(w.at(1_000_000), 500.0);
    }

    fn err(text: &str) -> String {
        Rules::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn refuses_bad_files_with_clear_reasons() {
        let cases = [
            ("tick_ms = 0\n[regions]\neu=[\"a\"]", "tick_ms must be at least 1"),
            ("tick_ms = 50", "no regions"),
            ("[regions]\neu=[]", "region `eu` lists no datacenters"),
            ("[regions]\neu=[\"a\"]\nna=[\"a\"]", "datacenter `a` is listed more than once"),
            ("[regions]\neu=[\"a\"]", "no modes"),
            ("bogus = 1\n[regions]\neu=[\"a\"]", "unknown field `bogus`"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text:?}: got {got:?}, want {want:?}");
        }
        let mode = |body: &str| format!("[regions]\neu=[\"a\"]\n[[mode]]\nname='m'\n{body}");
        let w = "mmr_window={start=1.0,growth_per_s=1.0,max=2.0}\nmax_rtt_ms={start=1.0,growth_per_s=1.0,max=2.0}";
        let cases = [
            (format!("teams=1\nteam_size=1\n{w}"), "a match needs at least 2 teams"),
            (format!("teams=2\nteam_size=0\n{w}"), "team_size must be at least 1"),
            (format!("teams=9\nteam_size=9\n{w}"), "at most 64 players"),
            (
                "teams=2\nteam_size=1\nmmr_window={start=5.0,growth_per_s=1.0,max=2.0}\nmax_rtt_ms={start=1.0,growth_per_s=1.0,max=2.0}".to_owned(),
                "mmr_window: max must be at least start",
            ),
            (
                "teams=2\nteam_size=1\nmmr_window={start=1.0,growth_per_s=-1.0,max=2.0}\nmax_rtt_ms={start=1.0,growth_per_s=1.0,max=2.0}".to_owned(),
                "must not be negative",
            ),
            (
                "teams=2\nteam_size=1\nmmr_window={start=1.0,growth_per_s=1.0,max=2.0}\nmax_rtt_ms={start=1.0,growth_per_s=nan,max=2.0}".to_owned(),
                "max_rtt_ms: start, growth_per_s and max must be finite",
            ),
        ];
        for (body, want) in cases {
            let got = err(&mode(&body));
            assert!(got.contains(want), "{body:?}: got {got:?}, want {want:?}");
        }
        let dup =
            format!("{}\n[[mode]]\nname='m'\nteams=2\nteam_size=1\n{w}", mode(&format!("teams=2\nteam_size=1\n{w}")));
        assert!(err(&dup).contains("mode `m` is defined more than once"));
    }
}
