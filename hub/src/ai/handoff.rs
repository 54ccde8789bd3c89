//! Runs in a cluster: the node that takes a request hands the run to the room's home node
//! through the home's queue (`cluster::queue`, a Redis stream per node), so one node holds
//! every run of a room: runs at one position take turns there, and the room's cap on the
//! assistant's commits holds.
//!
//! - The asking node records the run under the home's name, keeps a stand-in for it (the
//!   asker's socket and REST subscribers hear from the stand-in) and pushes a [`Job`].
//! - The home executes it like a local run, tells the asking node every status change
//!   ([`Handoff::Told`], in order), and acknowledges the entry when the run ended. While it
//!   runs, the home keeps the entry's idle time low.
//! - A cancel that reaches a node other than the home goes to the home's queue.
//! - When a node leaves the ring, the survivors claim the entries of its queue that stayed
//!   idle for [`STALE`] (XAUTOCLAIM), and those it never read. Its runs are marked
//!   `interrupted` (never run again, so nothing is written twice) and their askers are told.
//!
//! Entries come from Redis: they are checked like any input (size, JSON shape, signature with
//! `--bus-secret`, and the run must exist in the store as recorded).

use std::sync::Arc;
use std::time::Duration;

use chorus_persistence::{AiRun, AiRunUpdate, RoomKey};
use chorus_protocol::ext::{AiAsk, ServerMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Active, Assistant, Plan, TenantSlot, now_secs};
use crate::cluster::queue::{QueueEntry, RunQueue};

/// A departed node's entries idle this long are claimed by a survivor.
pub(super) const STALE: Duration = Duration::from_secs(10);
/// How often the home says it still works on its entries (well within [`STALE`]).
const TOUCH_EVERY: Duration = Duration::from_secs(3);
/// How often survivors look for a departed node's entries.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// What travels through a node's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Handoff {
    /// Execute a run (to the room's home).
    Run(Job),
    /// Stop a run (to the node executing it).
    Cancel {
        /// The run's tenant.
        tenant: String,
        /// The run.
        run: String,
    },
    /// A status change of a run (to the node the asker is on).
    Told {
        /// The run.
        run: String,
        /// `ai.run`, `ai.error` or `ai.done`.
        message: ServerMessage,
    },
}

/// A run handed to the room's home: what the asking node decided, checked there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Job {
    pub tenant: String,
    pub run: String,
    /// The node the asker is on.
    pub origin: String,
    pub ask: AiAsk,
    pub system_prompt: Option<String>,
    pub max_output_tokens: u32,
    /// The tenant's runs at once per node.
    pub tenant_limit: u32,
    /// The asker's rooms, for the run's searches (none from a node that sends none).
    #[serde(default)]
    pub grants: Vec<String>,
}

/// Where a handed run's status changes go: to the asking node, in order.
#[derive(Debug, Clone)]
pub(crate) struct Teller {
    tx: mpsc::UnboundedSender<ServerMessage>,
}

impl Teller {
    pub(super) fn tell(&self, msg: &ServerMessage) {
        let _ = self.tx.send(msg.clone());
    }
}

fn encode(h: &Handoff) -> Option<bytes::Bytes> {
    serde_json::to_vec(h).ok().map(bytes::Bytes::from)
}

fn decode(entry: &QueueEntry) -> Option<Handoff> {
    serde_json::from_slice(entry.body.as_deref()?).ok()
}

/// Resolves once a run ended (the guard `wait_for` returns is not `Send`: dropped here).
async fn until_ended(ended: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = ended.wait_for(|e| *e).await.map(|_| ());
}

/// Whether a record still waits for its end.
fn live(run: &AiRun) -> bool {
    matches!(run.status.as_str(), "queued" | "running")
}

impl Assistant {
    /// The node a run of `key` executes on, if not this one: the room's home, when the
    /// cluster can hand runs over and the ring is current.
    pub(super) fn home_of(&self, key: &RoomKey) -> Option<(Arc<dyn RunQueue>, String)> {
        let cluster = self.cluster.as_ref()?;
        let queue = cluster.queue()?;
        if !cluster.healthy() {
            return None;
        }
        let home = cluster.home(&key.room).id;
        (home != self.node).then_some((queue, home))
    }

    /// Hands the recorded run `record` to `home`, keeping a stand-in here for the asker.
    pub(super) async fn hand_over(
        self: &Arc<Self>,
        queue: Arc<dyn RunQueue>,
        home: String,
        active: Arc<Active>,
        job: Job,
        conn: Option<crate::outbound::ConnHandle>,
    ) -> Result<(), ()> {
        self.remote
            .insert(active.id.clone(), (active.clone(), conn));
        let pushed = match encode(&Handoff::Run(job)) {
            Some(body) => queue.push(&home, body).await.map_err(|e| e.0),
            None => Err("cannot encode".into()),
        };
        if let Err(e) = pushed {
            tracing::warn!(run = %active.id, %home, error = %e, "cannot hand a run to its room's home");
            self.remote.remove(&active.id);
            self.fail_record(&active.key.tenant, &active.id, "unavailable")
                .await;
            return Err(());
        }
        metrics::counter!(crate::metrics::names::AI_HANDOFFS_TOTAL, "kind" => "run").increment(1);
        let this = self.clone();
        tokio::spawn(async move { this.stand_in(queue, home, active).await });
        Ok(())
    }

    /// The stand-in of a run executing on `home`: passes a cancel on, and ends by itself if
    /// the home never says the run ended.
    async fn stand_in(
        self: Arc<Self>,
        queue: Arc<dyn RunQueue>,
        home: String,
        active: Arc<Active>,
    ) {
        let mut ended = active.ended.subscribe();
        // Every run ends within its total timeout; a home that died is found out by the
        // survivors within the node TTL plus STALE.
        let patience = self.config.ai_run_timeout + STALE + Duration::from_secs(60);
        let deadline = tokio::time::sleep(patience);
        tokio::pin!(deadline);
        let mut cancel_sent = false;
        loop {
            tokio::select! {
                () = until_ended(&mut ended) => return,
                () = active.cancel.cancelled(), if !cancel_sent => {
                    cancel_sent = true;
                    let cancel = Handoff::Cancel {
                        tenant: active.key.tenant.to_string(),
                        run: active.id.clone(),
                    };
                    if let Some(body) = encode(&cancel)
                        && let Err(e) = queue.push(&home, body).await
                    {
                        tracing::warn!(run = %active.id, error = %e.0, "cannot pass a cancel on");
                    }
                }
                () = &mut deadline => break,
            }
        }
        // Never heard the end: say what the record says.
        let record = self.store.get_ai_run(&active.key.tenant, &active.id).await;
        let (status, p, c) = match record {
            Ok(Some(r)) if !live(&r) => (r.status, r.prompt_tokens, r.completion_tokens),
            _ => ("interrupted".to_owned(), 0, 0),
        };
        self.told(
            &active.id,
            ServerMessage::AiDone {
                run: active.id.clone(),
                status,
                prompt_tokens: p,
                completion_tokens: c,
            },
        );
    }

    /// A status change of a run handed elsewhere: to the asker and subscribers here.
    fn told(&self, run: &str, message: ServerMessage) {
        let Some(entry) = self.remote.get(run).map(|e| e.clone()) else {
            return;
        };
        let (active, conn) = entry;
        if let Some(conn) = &conn {
            conn.send_ext(&message);
        }
        let end = matches!(message, ServerMessage::AiDone { .. });
        let _ = active.events.send(message);
        if end {
            self.remote.remove(run);
            let _ = active.ended.send(true);
        }
    }

    /// Passes a cancel to the node executing `run` (not this one).
    pub(super) async fn cancel_elsewhere(&self, run: &AiRun) -> bool {
        let Some(queue) = self.cluster.as_ref().and_then(|c| c.queue()) else {
            return false;
        };
        if run.node == self.node || !live(run) {
            return false;
        }
        let cancel = Handoff::Cancel {
            tenant: run.tenant.clone(),
            run: run.id.clone(),
        };
        match encode(&cancel) {
            Some(body) => queue.push(&run.node, body).await.is_ok(),
            None => false,
        }
    }

    /// Consumes this node's queue, keeps its entries fresh and sweeps departed nodes'
    /// queues, until the assistant is dropped.
    pub(crate) fn start_handoff(self: &Arc<Self>) {
        let Some(queue) = self.cluster.as_ref().and_then(|c| c.queue()) else {
            return;
        };
        let weak = Arc::downgrade(self);
        let q = queue.clone();
        tokio::spawn(async move {
            // What a previous life of this node left: its runs are interrupted (at start,
            // `interrupt_leftovers`); their askers are told here.
            loop {
                let Some(this) = weak.upgrade() else { return };
                match q.read(true, Duration::ZERO).await {
                    Ok(entries) => {
                        let me = this.node.clone();
                        for e in entries {
                            this.settle_claimed(&q, &me, e).await;
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e.0, "ai queue unreachable; retrying");
                        drop(this);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            loop {
                let res = q.read(false, Duration::from_secs(1)).await;
                let Some(this) = weak.upgrade() else { return };
                match res {
                    Ok(entries) => {
                        for e in entries {
                            this.clone().handle(&q, e).await;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e.0, "ai queue unreachable; retrying");
                        drop(this);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let weak = Arc::downgrade(self);
        let q = queue.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOUCH_EVERY).await;
                let Some(this) = weak.upgrade() else { return };
                let ids: Vec<String> = this.working.iter().map(|e| e.key().clone()).collect();
                drop(this);
                if let Err(e) = q.touch(&ids).await {
                    tracing::debug!(error = %e.0, "cannot refresh the ai queue's entries");
                }
            }
        });
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(this) = weak.upgrade() else { return };
                this.sweep(&queue).await;
            }
        });
    }

    /// One entry of this node's queue.
    async fn handle(self: Arc<Self>, queue: &Arc<dyn RunQueue>, entry: QueueEntry) {
        let me = self.node.clone();
        match decode(&entry) {
            None => {
                metrics::counter!(crate::metrics::names::AI_HANDOFFS_TOTAL, "kind" => "dropped")
                    .increment(1);
                tracing::warn!(id = %entry.id, "dropping an ai queue entry that is not ours");
                let _ = queue.ack(&me, &entry.id).await;
            }
            Some(Handoff::Told { run, message }) => {
                self.told(&run, message);
                let _ = queue.ack(&me, &entry.id).await;
            }
            Some(Handoff::Cancel { tenant, run }) => {
                if let Some(active) = self.runs.get(&run)
                    && *active.key.tenant == *tenant
                {
                    active.cancel.cancel();
                }
                let _ = queue.ack(&me, &entry.id).await;
            }
            Some(Handoff::Run(job)) => {
                self.working.insert(entry.id.clone(), ());
                let queue = queue.clone();
                tokio::spawn(async move {
                    self.take(&queue, &entry.id, job).await;
                    self.working.remove(&entry.id);
                    let _ = queue.ack(&me, &entry.id).await;
                });
            }
        }
    }

    /// Executes a run handed to this node.
    async fn take(self: &Arc<Self>, queue: &Arc<dyn RunQueue>, entry: &str, job: Job) {
        let record = match self.store.get_ai_run(&job.tenant, &job.run).await {
            Ok(Some(r)) if r.node == self.node && r.status == "queued" => r,
            Ok(_) => {
                tracing::warn!(%entry, run = %job.run, "a handed run that is not ours to run");
                return;
            }
            Err(e) => {
                tracing::warn!(run = %job.run, error = %e, "cannot read a handed run");
                return;
            }
        };
        let teller = self.teller(queue, &job.origin, &job.run);
        let key = RoomKey::new(record.tenant.as_str(), record.room.as_str());
        let active = Arc::new(Active::new(
            &record.id,
            key.clone(),
            job.ask.revert_on_cancel,
        ));
        let refuse = |code: &'static str, message: String| {
            let m = [
                ServerMessage::AiError {
                    run: Some(record.id.clone()),
                    request: job.ask.id.clone(),
                    code: code.to_owned(),
                    message,
                },
                ServerMessage::AiDone {
                    run: record.id.clone(),
                    status: "failed".into(),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                },
            ];
            for m in &m {
                teller.tell(m);
            }
        };
        let provider = match self.providers.iter().find(|p| p.name() == record.provider) {
            Some(p) => p.clone(),
            None => {
                self.fail_record(&record.tenant, &record.id, "ai_disabled")
                    .await;
                refuse(
                    "ai_disabled",
                    "the tenant's provider is not configured on the room's home node".into(),
                );
                return;
            }
        };
        let (position, range) = match self.places(&job.ask) {
            Ok(p) => p,
            Err(r) => {
                self.fail_record(&record.tenant, &record.id, r.code).await;
                refuse(r.code, r.message);
                return;
            }
        };
        let slot = match TenantSlot::take(self, &record.tenant, job.tenant_limit) {
            Ok(s) => s,
            Err(r) => {
                self.fail_record(&record.tenant, &record.id, r.code).await;
                refuse(r.code, r.message);
                return;
            }
        };
        self.runs.insert(record.id.clone(), active.clone());
        metrics::gauge!(crate::metrics::names::AI_ACTIVE_RUNS).set(self.runs.len() as f64);
        let plan = Plan {
            request: job.ask.id.clone(),
            system_prompt: job.system_prompt,
            max_output_tokens: job.max_output_tokens.max(1),
            record,
            ask: job.ask,
            provider,
            position,
            range,
            conn: None,
            teller: Some(teller),
            grants: job.grants,
        };
        self.clone().execute(active, plan, slot).await;
    }

    /// Records that a run failed before it started.
    async fn fail_record(&self, tenant: &str, run: &str, code: &str) {
        let update = AiRunUpdate {
            status: "failed".into(),
            tokens: None,
            ttft_ms: None,
            duration_ms: Some(0),
            error: Some(code.to_owned()),
            finished: Some(now_secs()),
        };
        if let Err(e) = self.store.update_ai_run(tenant, run, &update).await {
            tracing::warn!(%run, error = %e, "cannot record the end of an ai run");
        }
        metrics::counter!(crate::metrics::names::AI_RUNS_TOTAL, "outcome" => "failed").increment(1);
    }

    /// Tells `origin` about `run`'s status changes, in order (nothing when it is this node).
    fn teller(&self, queue: &Arc<dyn RunQueue>, origin: &str, run: &str) -> Teller {
        let (tx, mut rx) = mpsc::unbounded_channel::<ServerMessage>();
        let queue = queue.clone();
        let origin = origin.to_owned();
        let run = run.to_owned();
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                let told = Handoff::Told {
                    run: run.clone(),
                    message,
                };
                if let Some(body) = encode(&told)
                    && let Err(e) = queue.push(&origin, body).await
                {
                    tracing::debug!(%run, error = %e.0, "cannot tell the asking node");
                }
            }
        });
        Teller { tx }
    }

    /// Claims the entries of nodes that left the ring.
    async fn sweep(self: &Arc<Self>, queue: &Arc<dyn RunQueue>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        if !cluster.healthy() {
            return;
        }
        let Ok(nodes) = queue.queues().await else {
            return;
        };
        for node in nodes {
            if node == self.node || cluster.has(&node) {
                continue;
            }
            match queue.claim(&node, STALE).await {
                Ok(entries) if entries.is_empty() => {
                    let _ = queue.forget(&node).await;
                }
                Ok(entries) => {
                    for e in entries {
                        self.settle_claimed(queue, &node, e).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(%node, error = %e.0, "cannot claim a departed node's runs")
                }
            }
        }
    }

    /// An entry `node` left: its run ends `interrupted` (never executed again) and its asker
    /// is told; anything else is dropped.
    async fn settle_claimed(
        self: &Arc<Self>,
        queue: &Arc<dyn RunQueue>,
        node: &str,
        e: QueueEntry,
    ) {
        if let Some(Handoff::Run(job)) = decode(&e) {
            metrics::counter!(crate::metrics::names::AI_HANDOFFS_TOTAL, "kind" => "claimed")
                .increment(1);
            match self
                .store
                .interrupt_ai_runs(&job.tenant, node, now_secs())
                .await
            {
                Ok(runs) => self.settle_all_interrupted(runs),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot mark a departed node's runs interrupted");
                    // Left pending: the next sweep claims it again.
                    return;
                }
            }
            if let Ok(Some(run)) = self.store.get_ai_run(&job.tenant, &job.run).await
                && job.origin != node
            {
                let teller = self.teller(queue, &job.origin, &job.run);
                teller.tell(&ServerMessage::AiDone {
                    run: run.id.clone(),
                    status: run.status.clone(),
                    prompt_tokens: run.prompt_tokens,
                    completion_tokens: run.completion_tokens,
                });
            }
        }
        if let Err(err) = queue.ack(node, &e.id).await {
            tracing::debug!(%node, error = %err.0, "cannot acknowledge a claimed entry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_foreign_ones_are_refused() {
        let told = Handoff::Told {
            run: "run_1".into(),
            message: ServerMessage::AiDone {
                run: "run_1".into(),
                status: "done".into(),
                prompt_tokens: 1,
                completion_tokens: 2,
            },
        };
        let body = encode(&told).expect("encodes");
        let entry = QueueEntry {
            id: "1-0".into(),
            body: Some(body),
        };
        assert_eq!(decode(&entry), Some(told));
        for bad in [&b"{}"[..], b"null", b"{\"kind\":\"run\"}", b"\xff"] {
            let entry = QueueEntry {
                id: "1-0".into(),
                body: Some(bytes::Bytes::copy_from_slice(bad)),
            };
            assert_eq!(decode(&entry), None);
        }
        let unsigned = QueueEntry {
            id: "1-0".into(),
            body: None,
        };
        assert_eq!(decode(&unsigned), None);
    }
}
