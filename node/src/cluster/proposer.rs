//! Group commit on the leader: proposals that arrive while earlier ones are
//! being written are sent to Raft together, as one `Command::Batch` entry.
//!
//! openraft 0.9 makes one log entry per client write, and a follower's core
//! syncs each append before it takes the next, so without batching every
//! write costs its own fsync on the followers. Here concurrent writes share
//! one entry, one replication round and one fsync per node; a lone write
//! goes through alone, with no added wait, straight from its caller's task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use floe_raft_store::{Command, CommandResult, Raft, Response};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most commands in one batch.
const MAX_BATCH: usize = 256;
/// Batches handed to Raft at once: one being written while the next fills.
const IN_FLIGHT: usize = 2;

/// Why a proposal was not applied.
#[derive(Debug, Clone)]
pub enum WriteError {
    /// This node is not the leader: nothing was written.
    NotLeader,
    /// Raft failed; the message says how.
    Failed(String),
    /// Raft did not answer within the write timeout: the entry may still be
    /// committed (or may already be), so the outcome is unknown.
    Unanswered(Duration),
    /// The command failed apply's stateless checks: nothing was written.
    Invalid(floe_raft_store::ApplyError),
}

impl From<WriteError> for crate::error::NodeError {
    fn from(error: WriteError) -> Self {
        use crate::error::NodeError;
        match error {
            WriteError::NotLeader => NodeError::FailedPrecondition("not the leader".into()),
            WriteError::Failed(e) => NodeError::Unavailable(format!("write failed: {e}")),
            WriteError::Unanswered(after) => NodeError::OutcomeUnknown(format!(
                "Raft did not answer the write within {after:?}: it may or may not have been applied"
            )),
            WriteError::Invalid(refusal) => refusal.into(),
        }
    }
}

/// A proposal's outcome: the state machine's answer and the index of the
/// log entry that carried it.
#[derive(Debug, Clone)]
pub struct Written {
    pub result: CommandResult,
    pub index: u64,
}

struct Proposal {
    command: Command,
    reply: oneshot::Sender<Result<Written, WriteError>>,
}

/// The batching front of `Raft::client_write`.
#[derive(Clone)]
pub struct Proposer {
    raft: Raft,
    /// How long a write may wait for Raft's answer.
    timeout: Duration,
    proposals: mpsc::UnboundedSender<Proposal>,
    /// Batches (or lone writes) in Raft at once.
    slots: Arc<Semaphore>,
    /// Proposals sent to the batching task and not yet taken by it.
    queued: Arc<AtomicUsize>,
}

impl Proposer {
    /// Starts the batching task; it ends when every `Proposer` is dropped.
    pub fn start(raft: Raft, timeout: Duration) -> Proposer {
        let (proposals, queue) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(raft.clone(), timeout, queue, slots.clone(), queued.clone()));
        Proposer {
            raft,
            timeout,
            proposals,
            slots,
            queued,
        }
    }

    /// Writes a command through Raft and returns the state machine's answer.
    pub async fn write(&self, command: Command) -> Result<Written, WriteError> {
        // Only what apply would accept reaches the log, whoever proposes it:
        // the log must hold nothing a restart cannot read back.
        floe_raft_store::validate::command(&command).map_err(WriteError::Invalid)?;
        // A lone write — a slot free and nothing queued to join it — goes to
        // Raft from this task: two hand-offs fewer on the way in and back.
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Ok(_slot) = self.slots.clone().try_acquire_owned() {
                let mut results = write_batch(&self.raft, self.timeout, vec![command]).await;
                return results.pop().expect("one result per command");
            }
        }
        let (reply, answer) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.proposals
            .send(Proposal { command, reply })
            .map_err(|_| WriteError::Failed("the proposer stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(WriteError::Failed("the proposer stopped".into())))
    }
}

async fn run(
    raft: Raft,
    timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<Proposal>,
    slots: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
) {
    while let Some(first) = queue.recv().await {
        // While no slot is free, more proposals queue up and join this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(proposal) => batch.push(proposal),
                Err(_) => break,
            }
        }
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        let raft = raft.clone();
        tokio::spawn(async move {
            let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            let results = write_batch(&raft, timeout, commands).await;
            drop(slot);
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        });
    }
}

/// Writes `commands` as one entry; one result per command, as if each had
/// been written alone.
///
/// Raft's answer is awaited for `timeout` at most. openraft 0.9 answers a
/// write when its entry applies or is truncated as a conflict, but a leader
/// cut off with entries not yet committed, then brought up to date by a
/// snapshot that covers their indexes, purges them and answers nobody: the
/// write would wait forever, holding one of the `IN_FLIGHT` slots, and two
/// such writes stop every later write through this node.
async fn write_batch(raft: &Raft, timeout: Duration, commands: Vec<Command>) -> Vec<Result<Written, WriteError>> {
    let count = commands.len();
    let single = count == 1;
    let entry = if single {
        commands.into_iter().next().expect("one command")
    } else {
        Command::Batch(commands)
    };
    let Ok(answer) = tokio::time::timeout(timeout, raft.client_write(entry)).await else {
        return vec![Err(WriteError::Unanswered(timeout)); count];
    };
    match answer {
        Ok(response) => {
            let index = response.log_id.index;
            let results = match response.data {
                result if single => vec![result],
                Ok(Response::Batch(results)) if results.len() == count => results,
                other => {
                    let error = WriteError::Failed(format!("a batch was answered with {other:?}"));
                    return vec![Err(error); count];
                }
            };
            results
                .into_iter()
                .map(|result| Ok(Written { result, index }))
                .collect()
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => vec![Err(WriteError::NotLeader); count],
        Err(e) => vec![Err(WriteError::Failed(e.to_string())); count],
    }
}
