//! Graceful stop of a node's background tasks (the mini-redis pattern): one
//! signal every task watches between units of work, and a bounded wait for
//! them to finish. Each task leaves resumable state whatever point it stops
//! at (pending links are files, partial transfers resume from their length,
//! sessions are on disk), so a task still running after the bound is
//! aborted without losing anything; the signal only spares it the abort.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the node waits for its tasks after the signal.
pub const DRAIN_S: u64 = 5;

/// Sends the signal and collects the tasks to wait for.
pub struct Shutdown {
    tx: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// What a task watches.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves once the node is stopping (at once if it already is).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    /// Whether the node is stopping.
    pub fn stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// The receiver itself, for crates that take a `watch` (the mover).
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (tx, _) = watch::channel(false);
        Shutdown {
            tx,
            tasks: Vec::new(),
        }
    }

    pub fn stop(&self) -> Stop {
        Stop(self.tx.subscribe())
    }

    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Signal every task and wait (bounded) for each to finish.
    pub async fn run(self) {
        self.run_within(Duration::from_secs(DRAIN_S)).await
    }

    async fn run_within(self, drain: Duration) {
        self.tx.send_replace(true);
        let deadline = tokio::time::Instant::now() + drain;
        for (name, mut task) in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(_) => tracing::debug!(task = name, "stopped"),
                Err(_) => {
                    tracing::warn!(task = name, "still running after {drain:?}: aborted");
                    task.abort();
                }
            }
        }
        tracing::info!("background tasks stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_stop_on_the_signal_and_stragglers_are_aborted() {
        let mut s = Shutdown::new();
        let mut stop = s.stop();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        s.spawn("polite", async move {
            stop.wait().await;
            let _ = done_tx.send(());
        });
        let (aborted_tx, aborted_rx) = tokio::sync::oneshot::channel::<()>();
        s.spawn("holds a sender", async move {
            let _kept = aborted_tx;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        s.run_within(Duration::from_millis(200)).await;
        assert!(done_rx.await.is_ok(), "the polite task saw the signal");
        assert!(
            aborted_rx.await.is_err(),
            "a task still running after the bound is aborted (its sender dropped)"
        );
    }
}
