//! Rally's matchmaking engine.
//!
//! A [`Shard`] owns the waiting tickets of a group of regions (by default all of them), one pool per mode, and forms matches in
//! ticks. It is a sans-IO state machine: [`Shard::handle`] applies a [`Command`] at a time
//! the caller gives, [`Shard::tick`] forms matches into a caller-owned `Vec<Event>`. No
//! clock, no sockets, no threads, no JSON inside — which is what lets `rally replay` run the
//! very same code on a virtual clock and get byte-identical results for the same input.
//!
//! [`Runtime`] puts each shard on its own OS thread behind a bounded mailbox with a
//! real-clock tick; the edge and admin services talk to shards only through it.
//!
//! [`Rules`] (regions, datacenters, modes) are loaded from TOML and validated up front.
//! [`RatingModel`] turns match results into new skills (Weng-Lin via `skillratings`).
//! Deliberately absent: wire formats and persistence (the protocol and persistence crates).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod command;
mod pool;
mod rating;
mod recent_waits;
mod route;
mod router;
mod rules;
mod runtime;
mod shard;

pub use command::{
    Command, Event, Match, MatchId, MatchedTicket, PlayerEntry, PlayerId, Rejection, TicketId, TicketRequest,
};
pub use rating::{RateError, RatingModel, Skill};
pub use route::{home_region, home_shard};
pub use router::{InProcessRouter, ShardRouter};
pub use rules::{
    DatacenterId, MAX_DATACENTERS_PER_SHARD, MAX_PLAYERS_PER_MATCH, Mode, ModeId, ReadyCheck, Region, RegionId, Rules,
    RulesError, ShardId, ShardPlan, Widening,
};
pub use runtime::{EventSink, Runtime, RuntimeConfig, RuntimeEvent, ShardHandle, SubmitError, ThreadStartHook};
pub use shard::{PoolTick, PoolTicks, Shard, ShardConfig};
