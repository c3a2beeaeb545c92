//! How services reach engine shards (the edge with players' tickets, the admin API with
//! parties'). In-process today (the `Runtime`'s shard handles); a NATS router later
//! implements the same trait, which is why commands stay owned, plain data.

use crate::{Command, Runtime, ShardHandle, ShardId, SubmitError};

/// Sends commands to engine shards. Events come back through the sink the shards were
/// started with.
pub trait ShardRouter: Send + Sync + 'static {
    /// Queues `command` for `shard` without blocking; `MailboxFull` is retryable.
    fn submit(&self, shard: ShardId, command: Command) -> Result<(), SubmitError>;
}

/// Shards running in this process. The caller keeps the `Runtime` (to shut it down after
/// the edge); the router holds only the handles.
#[derive(Clone, Debug)]
pub struct InProcessRouter {
    shards: Vec<ShardHandle>,
}

impl InProcessRouter {
    /// Routes to `runtime`'s shards.
    pub fn new(runtime: &Runtime) -> InProcessRouter {
        InProcessRouter { shards: runtime.shards().to_vec() }
    }
}

impl ShardRouter for InProcessRouter {
    fn submit(&self, shard: ShardId, command: Command) -> Result<(), SubmitError> {
        self.shards.get(usize::from(shard.0)).ok_or(SubmitError::UnknownShard)?.try_submit(command)
    }
}
