//! How the edge reaches engine shards. In-process today (the engine `Runtime`'s shard
//! handles); a NATS router later implements the same trait, which is why commands stay
//! owned, plain data.

use rally_engine::{Command, Runtime, ShardHandle, ShardId, SubmitError};

/// Sends commands to engine shards. Events come back on the channel the shards were
/// started with (`ShardEvents`).
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
