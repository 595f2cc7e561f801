//! Background work, owned: every long-running loop of a node is a named
//! worker started through [`Workers`], and so is every short task spawned
//! off a caller's path (a release sent to the leader, an event's dispatch).
//! The tracker knows each worker's state, for `floe cluster status`, and
//! lets shutdown wait for all of them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::task::TaskTracker;

/// What a worker is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    Running,
    /// It returned: it was told to stop, or its work was done.
    Stopped,
    /// It returned an error, or panicked.
    Failed(String),
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerState::Running => f.write_str("running"),
            WorkerState::Stopped => f.write_str("stopped"),
            WorkerState::Failed(error) => write!(f, "failed: {error}"),
        }
    }
}

/// The node's workers and tasks.
#[derive(Clone, Default)]
pub struct Workers {
    tracker: TaskTracker,
    states: Arc<Mutex<BTreeMap<&'static str, WorkerState>>>,
}

impl Workers {
    /// Starts a named long-running worker; its state is kept until the node stops.
    pub fn spawn<F>(&self, name: &'static str, work: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.states
            .lock()
            .expect("workers lock")
            .insert(name, WorkerState::Running);
        let states = self.states.clone();
        let inner = self.tracker.spawn(work);
        self.tracker.spawn(async move {
            let state = match inner.await {
                Ok(Ok(())) => WorkerState::Stopped,
                Ok(Err(error)) => {
                    tracing::error!(worker = name, error = %format!("{error:#}"), "worker failed");
                    WorkerState::Failed(format!("{error:#}"))
                }
                Err(panic) => {
                    tracing::error!(worker = name, error = %panic, "worker panicked");
                    WorkerState::Failed(panic.to_string())
                }
            };
            states.lock().expect("workers lock").insert(name, state);
        });
    }

    /// Starts a short task off a caller's path; shutdown waits for it too.
    pub fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Every named worker and its state, by name.
    pub fn states(&self) -> Vec<(String, WorkerState)> {
        self.states
            .lock()
            .expect("workers lock")
            .iter()
            .map(|(name, state)| (name.to_string(), state.clone()))
            .collect()
    }

    /// Waits until every worker and task has returned (they stop on the
    /// node's shutdown token); no new one may start meanwhile.
    pub async fn stopped(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn workers_report_their_state_and_shutdown_waits_for_all() {
        let workers = Workers::default();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        workers.spawn("waits", async move {
            let _ = released.await;
            Ok(())
        });
        workers.spawn("fails", async { anyhow::bail!("disk on fire") });
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task_done = done.clone();
        workers.spawn_task(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            task_done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let states: BTreeMap<String, WorkerState> = workers.states().into_iter().collect();
        assert_eq!(states["waits"], WorkerState::Running);
        assert_eq!(states["fails"], WorkerState::Failed("disk on fire".into()));
        let _ = release.send(());
        workers.stopped().await;
        assert!(
            done.load(std::sync::atomic::Ordering::SeqCst),
            "the short task was waited for"
        );
        assert_eq!(
            workers.states().into_iter().collect::<BTreeMap<_, _>>()["waits"],
            WorkerState::Stopped
        );
    }
}
