//! Group commit on the leader: proposals that arrive while earlier ones are
//! being written are sent to Raft together, as one `Command::Batch` entry.
//!
//! openraft 0.9 writes one log entry per client write and waits for each
//! fsync in its core, so without batching every write costs its own fsync.
//! Here concurrent writes share one entry and one fsync; a lone write goes
//! through alone, with no added wait.

use std::sync::Arc;

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
}

struct Proposal {
    command: Command,
    reply: oneshot::Sender<Result<CommandResult, WriteError>>,
}

/// The batching front of `Raft::client_write`.
#[derive(Clone)]
pub struct Proposer {
    proposals: mpsc::UnboundedSender<Proposal>,
}

impl Proposer {
    /// Starts the batching task; it ends when every `Proposer` is dropped.
    pub fn start(raft: Raft) -> Proposer {
        let (proposals, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, queue));
        Proposer { proposals }
    }

    /// Writes a command through Raft and returns the state machine's answer.
    pub async fn write(&self, command: Command) -> Result<CommandResult, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.proposals
            .send(Proposal { command, reply })
            .map_err(|_| WriteError::Failed("the proposer stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(WriteError::Failed("the proposer stopped".into())))
    }
}

async fn run(raft: Raft, mut queue: mpsc::UnboundedReceiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
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
        let raft = raft.clone();
        tokio::spawn(async move {
            write_batch(&raft, batch).await;
            drop(slot);
        });
    }
}

async fn write_batch(raft: &Raft, batch: Vec<Proposal>) {
    let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let single = commands.len() == 1;
    let entry = if single {
        commands.into_iter().next().expect("one command")
    } else {
        Command::Batch(commands)
    };
    let results: Vec<Result<CommandResult, WriteError>> = match raft.client_write(entry).await {
        Ok(response) if single => vec![Ok(response.data)],
        Ok(response) => match response.data {
            Ok(Response::Batch(results)) if results.len() == replies.len() => results.into_iter().map(Ok).collect(),
            other => {
                let error = WriteError::Failed(format!("a batch was answered with {other:?}"));
                vec![Err(error); replies.len()]
            }
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            vec![Err(WriteError::NotLeader); replies.len()]
        }
        Err(e) => vec![Err(WriteError::Failed(e.to_string())); replies.len()],
    };
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}
