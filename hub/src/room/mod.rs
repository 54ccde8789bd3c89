//! One task per live room. It owns the `yrs::Doc` and the awareness states (`presence`, pure
//! state in its own module); everything else reaches it through [`Command`]s. Nothing here
//! holds a lock across `.await`, and nothing awaits a socket: members are reached through their
//! bounded queues ([`ConnHandle::send`]).
//!
//! Lifecycle: load (snapshot + log) before the first command is served, so a joiner's
//! SyncStep2 always carries the persisted content; serve; when the last member has left and
//! nothing is unsaved, wait `room_idle`, remove itself from the registry and exit. Shutdown
//! flushes and exits at once.
//!
//! Persistence: applied updates gather in `pending`; after `persist_batch` they go to the
//! [`Persister`] as one batch while the room keeps serving. One batch is in flight at a time,
//! so the log keeps the order of application. When it commits, opted-in members whose updates
//! were in it get `saved`. Past `compact_threshold` log entries (and a quarter of the
//! snapshot's size) the room compacts: it asks the store what the log holds, then writes the
//! document it already has in memory as the snapshot of that log. In a cluster only the
//! room's home node compacts, rebuilding from the store under its lock (`summed`).
//!
//! By concept, one module each (all of them `impl Room` blocks over the state defined here):
//! `command` (what a room is asked), `document` (applying updates, server edits, state
//! answers), `members` (join, leave, inbound, awareness, fan-out), `batch` (the batch to the
//! store and `saved`), `compaction`, `remote` (sequence numbers, gaps, resync and catch-up
//! across nodes) and `presence` (awareness states, pure). This file holds the state and the
//! lifecycle: load, the command loop, restart after a panic, close and finish.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_persistence::nesting::Refused;
use chorus_persistence::{
    AppendBatch, CompactStats, DepthIndex, DocStore, LogSummary, PastHoles, Persister, RoomKey,
    StoreError,
};
use chorus_protocol::CloseCode;
use chorus_protocol::awareness::Entry;
use chorus_protocol::ext::{ErrorCode, ServerMessage};
use chorus_protocol::nesting::NestingError;
use chorus_protocol::sync::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant as TokioInstant, sleep_until};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::auth::Role;
use crate::outbound::{ConnHandle, ConnId, Reply};

mod applied;
mod batch;
mod command;
mod compaction;
mod doc;
mod document;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
mod handle;
mod members;
mod presence;
mod remote;

pub use applied::{Applied, CommandId, Crash, Effect, Faults};
use batch::Batch;
pub use command::{Command, EditError, EditReply, Inbound, MemberInfo, ServerEdit};
use compaction::{COMPACT_RETRY, CompactionStep, Log, StoreWork};
use doc::{Document, NotApplied, held_back};
use document::{Answer, Deferred};
pub(crate) use handle::ATTEMPTS;
pub use handle::{JoinError, ROOM_TIMEOUT, RoomError, RoomHandle};
use members::Members;
pub use presence::MAX_AWARENESS_IDS_PER_CONNECTION;
use presence::Presence;
use remote::{RemoteState, Sequence};

/// Limits and timings rooms obey (from the config).
#[derive(Debug, Clone)]
pub struct RoomLimits {
    /// See `--max-rooms`.
    pub max_rooms: usize,
    /// See `--max-document-bytes`.
    pub max_document_bytes: usize,
    /// See `--persist-batch`.
    pub persist_batch: Duration,
    /// See `--compact-threshold`.
    pub compact_threshold: usize,
    /// See `--awareness-tick`.
    pub awareness_tick: Duration,
    /// See `--room-idle`.
    pub room_idle: Duration,
    /// See `--max-nesting-depth`.
    pub max_nesting_depth: u32,
    /// See `--max-tenant-share`.
    pub tenant_share_percent: u8,
}

/// What every room of a node shares.
pub struct RoomContext {
    /// Limits and timings.
    pub limits: RoomLimits,
    /// Tenant settings (per-tenant document size limit, webhook subscriptions).
    pub tenants: Arc<crate::tenants::Tenants>,
    /// Webhook events.
    pub events: crate::webhooks::events::Events,
    /// See `--webhook-debounce`.
    pub webhook_debounce: Duration,
    /// Where documents load from and compact into.
    pub store: Arc<dyn DocStore>,
    /// The group-committing writer.
    pub persister: Persister,
    /// Cluster mode: the pub/sub bus and the ring. `None` alone.
    pub cluster: Option<ClusterLink>,
    /// What edits in flight did, for their retries (outlives each room's incarnation).
    pub applied: Applied,
    /// Faults tests inject.
    pub faults: Faults,
    /// Search on: each flush queues the room for indexing, due this long after it.
    pub search_debounce: Option<Duration>,
}

/// How a room reaches the other nodes.
pub struct ClusterLink {
    /// Room topics between nodes.
    pub broker: Arc<dyn crate::cluster::broker::Broker>,
    /// This node and the ring: a room compacts on its home node (`Room::may_compact_here`).
    pub cluster: Arc<crate::cluster::Cluster>,
}

impl std::fmt::Debug for RoomContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomContext")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The member id server edits are attributed to: no connection has it (ids start at 1).
const SERVER: ConnId = 0;

/// Takes a room's incarnation out of the node's map of live rooms (see `Room::unlist`).
pub type Unlist = Box<dyn Fn() + Send + Sync>;

/// A room task's state. Built by the registry, consumed by [`Room::run`].
pub struct Room {
    handle: RoomHandle,
    ctx: Arc<RoomContext>,
    // Takes this incarnation out of the node's map of rooms (idempotent): joiners then spawn
    // its successor. Given by whoever spawned the room, which the room does not know.
    unlist: Unlist,
    // The document, its depth index, what a transaction added, cached answers (`doc`).
    document: Document,
    members: Members,
    // Connections closed for bad input: their messages still queued are dropped. Cleared by
    // their Leave.
    refused: HashSet<ConnId>,
    presence: Presence,
    awareness_due: Option<TokioInstant>,
    // Updates to store, the write in flight, and who is owed `saved` (`batch`).
    batch: Batch,
    // The write in flight's answer from the persister.
    writing: Option<oneshot::Receiver<Result<(), Arc<StoreError>>>>,
    flush_due: Option<TokioInstant>,
    // What the store holds for the room since the last snapshot (`compaction::Log`), and the
    // bytes stored for the document.
    log: Log,
    doc_bytes: usize,
    compaction: Option<oneshot::Receiver<Result<CompactionStep, StoreError>>>,
    // After a compaction failed or another node held the room's lock: no new one before.
    compact_after: Option<Instant>,
    idle_since: Option<TokioInstant>,
    failed: bool,
    // The node limit, lowered by the tenant's setting at load.
    max_document_bytes: usize,
    // When the current document.changed window opened (its event was written then).
    last_change_event: Option<TokioInstant>,
    // The tenant's settings and webhook subscription as last seen (refreshed from the cache
    // without waiting; kept when the cache has just been invalidated).
    tenant: Option<Arc<crate::tenants::TenantState>>,
    // Cluster mode: sequence numbers out and in. Boxed: most rooms of most nodes have none.
    remote: Option<Box<RemoteState>>,
    // Left by a command for an encode off the runtime workers; run before the next command.
    deferred: Option<Box<Deferred>>,
    // Store calls the logic asked for, made by the actor after each step (`start_store_work`).
    store_work: Vec<StoreWork>,
    // A fault fired (tests): the room dies this way after the current command, and drops
    // the answer it owes only then, as a killed task would.
    crash: Option<(Crash, oneshot::Sender<EditReply>)>,
    // The command being handled is a traced frame (`telemetry`).
    tracing: bool,
}

impl Room {
    /// A room that has not loaded yet.
    pub fn new(handle: RoomHandle, ctx: Arc<RoomContext>, unlist: Unlist) -> Self {
        Room {
            handle,
            unlist,
            document: Document::empty(ctx.limits.max_nesting_depth),
            members: Members::default(),
            refused: HashSet::new(),
            presence: Presence::default(),
            awareness_due: None,
            batch: Batch::default(),
            writing: None,
            flush_due: None,
            log: Log::default(),
            doc_bytes: 0,
            compaction: None,
            compact_after: None,
            idle_since: Some(TokioInstant::now()),
            failed: false,
            max_document_bytes: ctx.limits.max_document_bytes,
            last_change_event: None,
            tenant: None,
            remote: None,
            deferred: None,
            store_work: Vec::new(),
            crash: None,
            tracing: false,
            ctx,
        }
    }

    fn key(&self) -> &RoomKey {
        &self.handle.key
    }

    /// Loads the room, then serves commands until it is idle or shut down.
    ///
    /// Memory: this state is held by every open room. A function returning an `async move`
    /// block keeps `self` once and lends it to `serve` (an `async fn` taking `self` keeps
    /// its arguments twice: as captured and as bound locals, 752 bytes here), and the one-off
    /// or rare steps (load, flush, close, finish) are boxed so the idle state reserves no slot
    /// for them
    /// (`-Zprint-type-sizes`, see ARCHITECTURE.md).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would keep its arguments twice in every open room's state"
    )]
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) -> impl Future<Output = ()> + Send {
        async move { self.serve(&mut rx).await }
    }

    async fn serve(&mut self, rx: &mut mpsc::Receiver<Command>) {
        if let Err(e) = Box::pin(self.load()).await {
            tracing::error!(room = %self.key(), error = %e, "room load failed");
            metrics::counter!(crate::metrics::names::ROOM_LOAD_FAILURES_TOTAL).increment(1);
            (self.unlist)();
            rx.close();
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Command::Join { reply, .. } => {
                        let _ = reply.send(Err(JoinError::LoadFailed));
                    }
                    Command::Shutdown { done } | Command::Close { done, .. } => {
                        let _ = done.send(());
                    }
                    Command::Edit { reply, .. } => {
                        let _ = reply.send(EditReply::Lost);
                    }
                    // Dropping the reply tells the asker the room is unavailable.
                    Command::Leave { .. }
                    | Command::Inbound { .. }
                    | Command::State { .. }
                    | Command::Lines { .. }
                    | Command::Members { .. }
                    | Command::Remote { .. }
                    | Command::Resync
                    | Command::CatchUp
                    | Command::Drain { .. }
                    | Command::Stored { .. } => {}
                }
            }
            return;
        }
        let mut shutdown_reply = None;
        let mut dying = None;
        loop {
            self.start_store_work();
            let idle_due = self
                .idle_since
                .filter(|_| self.members.is_empty() && !self.has_unsaved())
                .map(|t| t + self.ctx.limits.room_idle);
            tokio::select! {
                biased;
                res = recv_opt(self.writing.as_mut()), if self.writing.is_some() => {
                    self.flushed(res.unwrap_or(Err(Arc::new(StoreError::Stopped))));
                }
                res = recv_opt(self.compaction.as_mut()), if self.compaction.is_some() => {
                    self.compaction = None;
                    match res.unwrap_or(Err(StoreError::Stopped)) {
                        Ok(CompactionStep::Summed(log)) => self.summed(log),
                        Ok(CompactionStep::Written(stats)) => self.compacted(stats),
                        Ok(CompactionStep::Skipped) => {
                            metrics::counter!(crate::metrics::names::COMPACTIONS_SKIPPED_TOTAL).increment(1);
                            self.compact_after = Some(Instant::now() + COMPACT_RETRY);
                        }
                        Err(e) => {
                            metrics::counter!(crate::metrics::names::COMPACTION_FAILURES_TOTAL).increment(1);
                            tracing::warn!(room = %self.key(), error = %e, "compaction failed");
                            self.compact_after = Some(Instant::now() + COMPACT_RETRY);
                        }
                    }
                }
                // Due timers come before commands: a room whose queue never empties must
                // still save and still send presence.
                _ = sleep_until(self.flush_due.unwrap_or_else(far_future)),
                    if self.flush_due.is_some() && self.writing.is_none() => {
                    Box::pin(self.start_flush()).await;
                }
                _ = sleep_until(self.awareness_due.unwrap_or_else(far_future)),
                    if self.awareness_due.is_some() => {
                    self.broadcast_awareness();
                }
                cmd = rx.recv() => match cmd {
                    Some(Command::Shutdown { done }) => {
                        shutdown_reply = Some(done);
                        break;
                    }
                    Some(Command::Close { code, reason, done }) => {
                        Box::pin(self.close_discarding(code, &reason)).await;
                        rx.close();
                        while let Some(cmd) = rx.recv().await {
                            not_taken(cmd);
                        }
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                _ = sleep_until(idle_due.unwrap_or_else(far_future)), if idle_due.is_some() => {
                    // Leave the registry first: joiners that already hold our handle get their
                    // Join dropped below and re-spawn the room, which loads what we saved.
                    (self.unlist)();
                    rx.close();
                    while let Some(cmd) = rx.recv().await {
                        not_taken(cmd);
                    }
                    break;
                }
            }
            if let Some((crash, unanswered)) = self.crash.take() {
                // A fault fired (tests): the room dies here without answering, as a killed
                // task would.
                match crash {
                    Crash::AfterSaving => {
                        dying = Some(unanswered);
                        break;
                    }
                    Crash::Discarding => {
                        // A batch already handed to the store lands all the same; the
                        // successor must load after it.
                        if let Some(w) = self.writing.take() {
                            let _ = w.await;
                        }
                        (self.unlist)();
                        for m in self.members.values() {
                            m.conn.close(CloseCode::Restarting, "room restarting");
                        }
                        self.batch.discard();
                        self.store_work.clear();
                        self.leave_bus().await;
                        rx.close();
                        while let Some(cmd) = rx.recv().await {
                            not_taken(cmd);
                        }
                        drop(unanswered);
                        return;
                    }
                }
            }
            // Boxed: rare (large documents only), and every idle room would reserve its slot.
            while let Some(work) = self.deferred.take() {
                Box::pin(self.run_deferred(*work)).await;
            }
            if self.failed {
                break;
            }
        }
        Box::pin(self.finish()).await;
        // Commands that reached the queue while the room was finishing: its successor (which
        // loads what `finish` saved) takes them.
        rx.close();
        while let Some(cmd) = rx.recv().await {
            not_taken(cmd);
        }
        drop(dying);
        if let Some(done) = shutdown_reply {
            let _ = done.send(());
        }
    }

    async fn load(&mut self) -> Result<(), StoreError> {
        let tenant = self.ctx.tenants.get(&self.key().tenant).await?;
        self.tenant = Some(tenant.clone());
        if let Some(max) = tenant.settings.max_document_bytes {
            self.max_document_bytes = self
                .max_document_bytes
                .min(usize::try_from(max).unwrap_or(usize::MAX));
        }
        let loaded = self.ctx.store.load(self.key()).await?;
        self.log = Log {
            entries: loaded.updates.len(),
            bytes: loaded.updates.iter().map(Bytes::len).sum(),
            snapshot_bytes: loaded.snapshot.as_ref().map_or(0, Bytes::len),
        };
        self.doc_bytes = loaded.stored_bytes();
        let key = self.key().clone();
        let mut depth = DepthIndex::new(self.ctx.limits.max_nesting_depth);
        let (doc, errors, depth, holes) = tokio::task::spawn_blocking(move || {
            // Server edits (REST) index text like Yjs does (UTF-16) and carry a 32-bit client
            // id like browser clients, which every peer handles.
            let doc = Doc::with_options(yrs::Options {
                offset_kind: yrs::OffsetKind::Utf16,
                ..yrs::Options::with_client_id(yrs::block::ClientID::new(u64::from(
                    rand::random::<u32>(),
                )))
            });
            let mut holes = PastHoles::default();
            let errors = chorus_persistence::merge_into_doc(
                &doc,
                &key,
                loaded.snapshot.iter().chain(loaded.updates.iter()),
                &mut depth,
                &mut holes,
            );
            (doc, errors, depth, holes)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        for e in errors {
            if matches!(e, StoreError::TooDeep { .. }) {
                // Stored before the depth check existed (or written by hand): not served, and
                // dropped by the next compaction.
                metrics::counter!(crate::metrics::names::NESTING_REFUSALS_TOTAL, "source" => "store")
                    .increment(1);
            }
            tracing::error!(room = %self.key(), error = %e, "skipping corrupt stored update");
        }
        self.document = Document::new(doc, depth, holes)?;
        if let Some(link) = &self.ctx.cluster {
            let topic = link.broker.topic(self.key());
            // Listen before asking: replies to our request must find us subscribed.
            if let Err(e) = link.broker.subscribe(&topic).await {
                tracing::warn!(room = %self.key(), error = %e, "not subscribed; resyncing when the broker is back");
            }
            self.remote = Some(Box::new(RemoteState {
                topic,
                seq: Sequence::default(),
            }));
            self.request_sync();
        }
        self.maybe_compact();
        Ok(())
    }

    fn has_unsaved(&self) -> bool {
        self.batch.unsaved()
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join { conn, reply } => self.join(*conn, reply),
            Command::Leave { conn } => {
                self.refused.remove(&conn);
                self.leave(conn);
            }
            Command::Inbound { conn, msgs, span } => {
                // A sampled connection's frame: its apply and publish get spans (children of
                // the frame's), and its write one. Nothing of the others is traced.
                let _traced = span.as_deref().map(tracing::Span::enter);
                self.tracing = span.is_some();
                self.inbound_all(conn, msgs.into_iter());
                self.tracing = false;
            }
            Command::State { reply } => {
                if self.encode_is_long() {
                    self.deferred = Some(Box::new(Deferred::State(reply)));
                } else {
                    match self.document.diff(&StateVector::default()) {
                        Some(state) => {
                            let _ = reply.send(Bytes::from(state));
                        }
                        // The reply is dropped: the caller sees the room fail.
                        None => self.restart_after_panic("encode"),
                    }
                }
            }
            Command::Lines { max_chars, reply } => {
                if self.encode_is_long() {
                    self.deferred = Some(Box::new(Deferred::Lines { max_chars, reply }));
                } else if let Some(lines) = document::read_lines(self.document.doc(), max_chars) {
                    let _ = reply.send(lines);
                }
            }
            Command::Edit { id, edit, reply } => {
                let answer = self.server_edit(id, edit);
                match self.ctx.faults.take_after_edit() {
                    // Killed between applying and answering: the asker retries.
                    Some(crash) => self.crash = Some((crash, reply)),
                    None => {
                        let _ = reply.send(answer);
                    }
                }
            }
            Command::Members { reply } => {
                let list = self
                    .members
                    .values()
                    .map(|m| MemberInfo {
                        connection: m.conn.id,
                        user: m.conn.user.as_deref().map(str::to_string),
                        role: m.conn.role.as_str(),
                        awareness: self
                            .presence
                            .states_of(m.conn.id)
                            .into_iter()
                            .map(|(id, state)| {
                                let state = serde_json::from_slice::<serde_json::Value>(&state)
                                    .unwrap_or(serde_json::Value::Null);
                                serde_json::json!({ "client_id": id, "state": state })
                            })
                            .collect(),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Remote { envelope } => self.remote_in(*envelope),
            Command::Resync => self.request_sync(),
            Command::CatchUp => self.catch_up(),
            Command::Drain { reason, done } => {
                for m in self.members.values() {
                    m.conn.close(CloseCode::Restarting, &reason);
                }
                let _ = done.send(());
            }
            Command::Stored { loaded } => {
                self.apply_remote(loaded.snapshot.iter().chain(loaded.updates.iter()));
            }
            Command::Shutdown { .. } | Command::Close { .. } => {}
        }
    }

    /// After yrs panicked inside a transaction the document may be half-applied: drop every
    /// member (they resync on reconnect) and exit after saving what was valid; the next join
    /// reloads from the store.
    fn restart_after_panic(&mut self, what: &str) {
        tracing::error!(room = %self.key(), what, "applying panicked; restarting room");
        metrics::counter!(crate::metrics::names::ROOM_PANICS_TOTAL).increment(1);
        let ids: Vec<ConnId> = self.members.keys().copied().collect();
        for id in &ids {
            if let Some(m) = self.members.get(id) {
                m.conn.close(CloseCode::Internal, "room restarting");
            }
        }
        self.leave_all(ids);
        self.failed = true;
    }

    /// Room deletion: members are closed with `code`, nothing pending is written, and the
    /// task waits for writes already started (a batch in flight, a compaction) so that none
    /// lands after the caller deletes the stored rows.
    async fn close_discarding(&mut self, code: CloseCode, reason: &str) {
        for m in self.members.values() {
            m.conn.close(code, reason);
        }
        self.members.clear();
        self.batch.discard();
        if let Some(w) = self.writing.take() {
            let _ = w.await;
        }
        // Nothing more is written for a deleted room: store calls not started yet never are.
        self.store_work.clear();
        if let Some(c) = self.compaction.take() {
            let _ = c.await;
        }
        self.leave_bus().await;
        (self.unlist)();
    }

    async fn leave_bus(&mut self) {
        if let (Some(link), Some(remote)) = (&self.ctx.cluster, self.remote.take()) {
            link.broker.unsubscribe(&remote.topic).await;
        }
    }

    /// Persists everything still unsaved before the task ends.
    async fn finish(&mut self) {
        for m in self.members.values() {
            m.conn.close(CloseCode::Restarting, "room closing");
        }
        // A failing store gets a few attempts; after that the loss is logged loudly.
        for attempt in 0..4 {
            if let Some(w) = self.writing.as_mut() {
                let res = w.await;
                self.flushed(res.unwrap_or(Err(Arc::new(StoreError::Stopped))));
            }
            if self.batch.settled() || attempt == 3 {
                break;
            }
            self.start_flush().await;
        }
        if self.batch.pending_len() > 0 {
            tracing::error!(room = %self.key(), updates = self.batch.pending_len(), "room exiting with unsaved updates");
        }
        // A compaction the last flush asked for runs to its end like one already running.
        self.start_store_work();
        if let Some(c) = self.compaction.take() {
            let _ = c.await;
        }
        self.leave_bus().await;
        // Leave the registry only now: until this task ends, joiners that reach us wait on
        // their (never answered) Join and then re-spawn the room, which loads what we saved.
        (self.unlist)();
    }
}

/// Answers a command an exiting room will not serve: a shutdown or close is done, an edit is
/// handed back for the room's successor; dropping the rest tells their askers the room closed
/// (a joiner joins the successor).
fn not_taken(cmd: Command) {
    match cmd {
        Command::Shutdown { done } | Command::Close { done, .. } => {
            let _ = done.send(());
        }
        Command::Edit { edit, reply, .. } => {
            let _ = reply.send(EditReply::NotTaken(edit));
        }
        _ => {}
    }
}

async fn recv_opt<T>(
    rx: Option<&mut oneshot::Receiver<T>>,
) -> Result<T, oneshot::error::RecvError> {
    match rx {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

fn far_future() -> TokioInstant {
    TokioInstant::now() + Duration::from_secs(86_400 * 365)
}
