use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::{AppendBatch, DocStore, StoreError};

/// One room's request to make updates durable.
#[derive(Debug)]
pub struct PersistRequest {
    /// The room and its updates, oldest first.
    pub batch: AppendBatch,
    /// Answered once the updates are committed (or the commit failed).
    pub done: oneshot::Sender<Result<(), Arc<StoreError>>>,
}

/// Group commit: one task per store appends every request queued since its last commit in one
/// transaction. While a commit is in flight, new requests gather, so the commit rate adapts to
/// the database's latency instead of issuing one transaction per room; and commits are at least
/// `min_interval` apart, because each costs a fixed price (an fsync, the b-tree pages it
/// touches, a wake-up of every room in it) that dominates at moderate load.
#[derive(Debug, Clone)]
pub struct Persister {
    tx: mpsc::Sender<PersistRequest>,
}

/// Most requests merged into one transaction, to bound its size and latency.
const MAX_GROUP: usize = 512;

impl Persister {
    /// Starts the writer task for `store`, committing at most once per `min_interval`. It ends
    /// when every `Persister` clone is dropped, after committing what was queued.
    pub fn spawn(store: Arc<dyn DocStore>, queue: usize, min_interval: Duration) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(run(store, rx, min_interval));
        Self { tx }
    }

    /// Queues `batch` and waits until it is durable.
    pub async fn persist(&self, batch: AppendBatch) -> Result<(), Arc<StoreError>> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(PersistRequest { batch, done })
            .await
            .map_err(|_| Arc::new(StoreError::Stopped))?;
        rx.await.map_err(|_| Arc::new(StoreError::Stopped))?
    }

    /// Queues `batch`; the returned receiver resolves once it is durable. Lets a room keep
    /// serving while its batch commits.
    pub async fn submit(
        &self,
        batch: AppendBatch,
    ) -> oneshot::Receiver<Result<(), Arc<StoreError>>> {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(req)) = self.tx.send(PersistRequest { batch, done }).await
        {
            let _ = req.done.send(Err(Arc::new(StoreError::Stopped)));
        }
        rx
    }
}

async fn run(
    store: Arc<dyn DocStore>,
    mut rx: mpsc::Receiver<PersistRequest>,
    min_interval: Duration,
) {
    let mut group: Vec<PersistRequest> = Vec::with_capacity(MAX_GROUP);
    let mut last_commit = tokio::time::Instant::now();
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        // Requests arriving meanwhile join this commit.
        tokio::time::sleep_until(last_commit + min_interval).await;
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        last_commit = tokio::time::Instant::now();
        let (batches, replies): (Vec<AppendBatch>, Vec<_>) =
            group.drain(..).map(|r| (r.batch, r.done)).unzip();
        let updates: usize = batches.iter().map(|b| b.updates.len()).sum();
        let started = Instant::now();
        let result = store.append(&batches).await.map_err(Arc::new);
        let elapsed = started.elapsed();
        metrics::histogram!(crate::metric_names::PERSIST_BATCH_SECONDS)
            .record(elapsed.as_secs_f64());
        match &result {
            Ok(()) => metrics::counter!(crate::metric_names::PERSISTED_UPDATES_TOTAL)
                .increment(updates as u64),
            Err(e) => {
                metrics::counter!(crate::metric_names::PERSIST_ERRORS_TOTAL).increment(1);
                tracing::error!(error = %e, rooms = batches.len(), updates, "persist batch failed");
            }
        }
        for done in replies {
            // A room that went away no longer needs the answer.
            let _ = done.send(result.clone());
        }
    }
}
