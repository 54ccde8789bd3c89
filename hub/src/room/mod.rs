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

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_persistence::nesting::Refused;
use chorus_persistence::{
    AppendBatch, CompactStats, DepthIndex, DocStore, LogSummary, Persister, RoomKey, StoreError,
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
use crate::registry::{JoinError, Registry, RoomHandle};

mod presence;

pub use presence::MAX_AWARENESS_IDS_PER_CONNECTION;
use presence::Presence;

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
}

/// How a room reaches the other nodes.
pub struct ClusterLink {
    /// Room channels over Redis.
    pub bus: Arc<crate::cluster::bus::Bus>,
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

/// A message a connection's reader has decoded and validated for the room.
#[derive(Debug)]
pub enum Inbound {
    /// The client's state vector; answered with SyncStep2.
    SyncStep1(StateVector),
    /// A decoded update (from SyncStep2 or Update) of a writer.
    Update {
        /// The decoded update.
        update: Update,
        /// Its encoding: sized against the document limit, and stored as-is if yrs has to
        /// hold it back waiting for missing predecessors.
        raw: Bytes,
        /// What its nesting needs from the document (`None`: nothing).
        nesting: Option<Box<chorus_protocol::nesting::Nesting>>,
    },
    /// A reader's SyncStep2: refused, but only reported if it holds something new.
    ReadOnlyStep2(Update),
    /// Validated awareness entries.
    Awareness(Vec<Entry>),
    /// Send every awareness state to the asker.
    QueryAwareness,
}

/// What a room task is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Add a member; answered once its SyncStep1 and the awareness states are queued.
    Join {
        /// The new member. Boxed, like `Edit`'s payload: the room's queue allocates its
        /// slots in blocks of 32 sized by the largest command, one block per idle room.
        conn: Box<ConnHandle>,
        /// Ok, or why it cannot join.
        reply: oneshot::Sender<Result<(), JoinError>>,
    },
    /// A member's connection ended.
    Leave {
        /// Which member.
        conn: ConnId,
    },
    /// Messages from a member, in order.
    Inbound {
        /// Which member.
        conn: ConnId,
        /// What it sent.
        msgs: Vec<Inbound>,
    },
    /// Flush everything and exit; answered when the room's data is durable.
    Shutdown {
        /// Answered on exit.
        done: oneshot::Sender<()>,
    },
    /// The whole document as a v1 update (REST reads and versions).
    State {
        /// The encoded state.
        reply: oneshot::Sender<Bytes>,
    },
    /// A server-side edit (REST API): applied like a member's update and relayed to every
    /// member. The reply carries a receiver that resolves `true` once the edit is durable.
    Edit {
        /// What to apply.
        edit: Box<ServerEdit>,
        /// Accepted (with the durability receiver) or refused.
        reply: oneshot::Sender<Result<oneshot::Receiver<bool>, EditError>>,
    },
    /// Who is connected, with their awareness states.
    Members {
        /// The list.
        reply: oneshot::Sender<Vec<MemberInfo>>,
    },
    /// A message from another node on the room's channel (cluster mode).
    Remote {
        /// The message. Boxed: see `Join`.
        envelope: Box<crate::cluster::bus::Envelope>,
    },
    /// The bus reconnected or fell behind: ask the other nodes for what we lack.
    Resync,
    /// A node left the ring: read the store for what it stored but never published.
    CatchUp,
    /// The node is draining: tell every member to reconnect (1012) with `reason`, which names
    /// the room's next home in a cluster. Members' connections then leave as usual.
    Drain {
        /// Close reason.
        reason: String,
        /// Answered once every member was told (before the node's generic close reaches them).
        done: oneshot::Sender<()>,
    },
    /// What the store held, for [`Command::CatchUp`].
    Stored {
        /// Snapshot and log, as loaded.
        loaded: Box<chorus_persistence::LoadedDoc>,
    },
    /// Closes every member with `code` and exits WITHOUT saving what is pending (the room is
    /// being deleted); answered once nothing of the room will be written any more.
    Close {
        /// Close code sent to members.
        code: CloseCode,
        /// Close reason.
        reason: String,
        /// Answered on exit.
        done: oneshot::Sender<()>,
    },
}

/// An edit made by the server (REST API).
#[derive(Debug)]
pub enum ServerEdit {
    /// A binary v1 update.
    Update {
        /// Decoded.
        update: Update,
        /// As received (sized against the limit).
        raw: Bytes,
        /// What its nesting needs from the document.
        nesting: Option<Box<chorus_protocol::nesting::Nesting>>,
    },
    /// JSON operations.
    Ops(Vec<crate::docjson::Op>),
    /// Make the content equal to a stored version's (a v1 update of the whole version).
    Restore(Bytes),
}

/// Why a server edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The document is at its size limit.
    #[error("document size limit reached")]
    TooLarge,
    /// The update nests deeper than `--max-nesting-depth` below the document's types.
    #[error("the update nests deeper than {0} levels")]
    TooDeep(u32),
    /// The edit does not apply.
    #[error("{0}")]
    Invalid(String),
}

/// One member of a room, for the REST presence list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberInfo {
    /// Connection id (node-local).
    pub connection: ConnId,
    /// User (`sub` claim), if the token named one.
    pub user: Option<String>,
    /// `read` or `write`.
    pub role: &'static str,
    /// Awareness states this connection controls: `{client_id, state}`.
    pub awareness: Vec<serde_json::Value>,
}

struct Member {
    conn: ConnHandle,
    // Update messages accepted from this member so far (what `saved` acknowledges).
    accepted: u64,
    // How many of them it was told are durable.
    acked: u64,
}

struct InFlight {
    done: oneshot::Receiver<Result<(), Arc<StoreError>>>,
    updates: Vec<Bytes>,
    bytes: usize,
    acks: HashMap<ConnId, u64>,
    waiters: Vec<oneshot::Sender<bool>>,
    // A document.changed event rode in this batch (re-owed if the batch fails).
    event: bool,
}

/// The two steps of a compaction, each the answer of a store task.
enum CompactionStep {
    /// What the log holds: every entry up to `last_id` has committed, so the document as the
    /// room holds it now (every committed update was applied before it was stored) covers it.
    Summed(LogSummary),
    /// The snapshot is written and the log up to it trimmed.
    Written(CompactStats),
    /// Another node was compacting the room (cluster mode): nothing changed.
    Skipped,
}

/// A log this many times smaller than the snapshot is not compacted yet (`compaction_due`).
const COMPACT_LOG_FRACTION: usize = 4;

/// In a cluster, a node that is not a room's home compacts it only once the log is this many
/// times longer than the home would let it grow (`Room::may_compact_here`).
const OFF_HOME_COMPACT_FACTOR: usize = 4;

/// After a compaction failed, or was skipped because another node held the room's lock, the
/// room waits this long before trying again (the log stays due; without a pause every flush
/// would try).
const COMPACT_RETRY: Duration = Duration::from_secs(1);

/// Whole-document encodes of documents at least this large (stored bytes) run on the
/// blocking pool: about a millisecond of encoding on this class of machine.
const OFF_WORKER_ENCODE_BYTES: usize = 64 * 1024;

/// Whole-document encodes running on the blocking pool at once, across the node: a flood of
/// joiners or REST reads of large documents queues here instead of taking every thread.
static ENCODES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Work a command left for an encode off the runtime workers (`Room::run_deferred`).
enum Deferred {
    /// Answer `conn`'s SyncStep1 from `sv`, then handle the rest of its messages.
    Answer {
        conn: ConnId,
        sv: StateVector,
        rest: std::vec::IntoIter<Inbound>,
    },
    /// The whole state for `Command::State`.
    State(oneshot::Sender<Bytes>),
    /// The snapshot of a compaction.
    Snapshot(LogSummary),
}

/// How a SyncStep1 is answered.
enum Answer {
    Ready(Bytes),
    Encode(StateVector),
}

/// The member id server edits are attributed to: no connection has it (ids start at 1).
const SERVER: ConnId = 0;

/// A room task's state. Built by the registry, consumed by [`Room::run`].
pub struct Room {
    handle: RoomHandle,
    ctx: Arc<RoomContext>,
    registry: Arc<Registry>,
    doc: Doc,
    // Depth of the doc's nested types: every update is checked against it before yrs sees it
    // (yrs recurses without a limit; see chorus_protocol::nesting).
    depth: DepthIndex,
    // Effective updates the doc observer captured during the last transaction.
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    members: HashMap<ConnId, Member>,
    // Connections closed for bad input: their messages still queued are dropped. Cleared by
    // their Leave.
    refused: HashSet<ConnId>,
    presence: Presence,
    awareness_due: Option<TokioInstant>,
    // SyncStep2 of the whole document, shared by every joiner until the next update.
    full_state: Option<Bytes>,
    // Our SyncStep1, shared by every joiner until the next update.
    step1: Option<Bytes>,
    pending: Vec<Bytes>,
    pending_bytes: usize,
    pending_acks: HashMap<ConnId, u64>,
    flush_due: Option<TokioInstant>,
    in_flight: Option<InFlight>,
    // Log entries since the last snapshot, and bytes stored for the document.
    log_len: usize,
    // Bytes in the log since the last snapshot, and the snapshot's size (see
    // `compaction_due`).
    log_bytes: usize,
    snapshot_bytes: usize,
    doc_bytes: usize,
    compaction: Option<oneshot::Receiver<Result<CompactionStep, StoreError>>>,
    // After a compaction failed or another node held the room's lock: no new one before.
    compact_after: Option<Instant>,
    idle_since: Option<TokioInstant>,
    failed: bool,
    // Server edits waiting for the batch that holds them to commit.
    waiters: Vec<oneshot::Sender<bool>>,
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
}

/// A room's bookkeeping for the bus.
#[derive(Debug, Default)]
struct RemoteState {
    /// The room's channel.
    channel: fred::bytes_utils::Str,
    /// Our last message's number.
    sent: u64,
    /// The last number seen from each other node.
    seen: HashMap<String, u64>,
}

impl Room {
    /// A room that has not loaded yet.
    pub fn new(handle: RoomHandle, ctx: Arc<RoomContext>, registry: Arc<Registry>) -> Self {
        Room {
            handle,
            registry,
            doc: Doc::new(),
            depth: DepthIndex::new(ctx.limits.max_nesting_depth),
            captured: Arc::new(Mutex::new(Vec::new())),
            members: HashMap::new(),
            refused: HashSet::new(),
            presence: Presence::default(),
            awareness_due: None,
            full_state: None,
            step1: None,
            pending: Vec::new(),
            pending_bytes: 0,
            pending_acks: HashMap::new(),
            flush_due: None,
            in_flight: None,
            log_len: 0,
            log_bytes: 0,
            snapshot_bytes: 0,
            doc_bytes: 0,
            compaction: None,
            compact_after: None,
            idle_since: Some(TokioInstant::now()),
            failed: false,
            waiters: Vec::new(),
            max_document_bytes: ctx.limits.max_document_bytes,
            last_change_event: None,
            tenant: None,
            remote: None,
            deferred: None,
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
    #[allow(clippy::manual_async_fn)] // deliberate, see above
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) -> impl Future<Output = ()> + Send {
        async move { self.serve(&mut rx).await }
    }

    async fn serve(&mut self, rx: &mut mpsc::Receiver<Command>) {
        if let Err(e) = Box::pin(self.load()).await {
            tracing::error!(room = %self.key(), error = %e, "room load failed");
            metrics::counter!("chorus_room_load_failures_total").increment(1);
            self.registry.remove(self.key(), self.handle.generation);
            rx.close();
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Command::Join { reply, .. } => {
                        let _ = reply.send(Err(JoinError::LoadFailed));
                    }
                    Command::Shutdown { done } | Command::Close { done, .. } => {
                        let _ = done.send(());
                    }
                    // Dropping the reply tells the asker the room is unavailable.
                    Command::Leave { .. }
                    | Command::Inbound { .. }
                    | Command::State { .. }
                    | Command::Edit { .. }
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
        loop {
            let idle_due = self
                .idle_since
                .filter(|_| self.members.is_empty() && !self.has_unsaved())
                .map(|t| t + self.ctx.limits.room_idle);
            tokio::select! {
                biased;
                res = recv_opt(self.in_flight.as_mut().map(|f| &mut f.done)),
                    if self.in_flight.is_some() => {
                    self.flushed(res.unwrap_or(Err(Arc::new(StoreError::Stopped))));
                }
                res = recv_opt(self.compaction.as_mut()), if self.compaction.is_some() => {
                    self.compaction = None;
                    match res.unwrap_or(Err(StoreError::Stopped)) {
                        Ok(CompactionStep::Summed(log)) => self.summed(log),
                        Ok(CompactionStep::Written(stats)) => self.compacted(stats),
                        Ok(CompactionStep::Skipped) => {
                            metrics::counter!("chorus_compactions_skipped_total").increment(1);
                            self.compact_after = Some(Instant::now() + COMPACT_RETRY);
                        }
                        Err(e) => {
                            metrics::counter!("chorus_compaction_failures_total").increment(1);
                            tracing::warn!(room = %self.key(), error = %e, "compaction failed");
                            self.compact_after = Some(Instant::now() + COMPACT_RETRY);
                        }
                    }
                }
                // Due timers come before commands: a room whose queue never empties must
                // still save and still send presence.
                _ = sleep_until(self.flush_due.unwrap_or_else(far_future)),
                    if self.flush_due.is_some() && self.in_flight.is_none() => {
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
                            if let Command::Shutdown { done } | Command::Close { done, .. } = cmd {
                                let _ = done.send(());
                            }
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
                    self.registry.remove(self.key(), self.handle.generation);
                    rx.close();
                    while let Some(cmd) = rx.recv().await {
                        if let Command::Shutdown { done } = cmd {
                            let _ = done.send(());
                        }
                    }
                    break;
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
        self.log_len = loaded.updates.len();
        self.log_bytes = loaded.updates.iter().map(Bytes::len).sum();
        self.snapshot_bytes = loaded.snapshot.as_ref().map_or(0, Bytes::len);
        self.doc_bytes = loaded.stored_bytes();
        let key = self.key().clone();
        let mut depth = DepthIndex::new(self.ctx.limits.max_nesting_depth);
        let (doc, errors, depth) = tokio::task::spawn_blocking(move || {
            // Server edits (REST) index text like Yjs does (UTF-16) and carry a 32-bit client
            // id like browser clients, which every peer handles.
            let doc = Doc::with_options(yrs::Options {
                offset_kind: yrs::OffsetKind::Utf16,
                ..yrs::Options::with_client_id(yrs::block::ClientID::new(u64::from(
                    rand::random::<u32>(),
                )))
            });
            let errors = chorus_persistence::merge_into_doc(
                &doc,
                &key,
                loaded.snapshot.iter().chain(loaded.updates.iter()),
                &mut depth,
            );
            (doc, errors, depth)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        for e in errors {
            if matches!(e, StoreError::TooDeep { .. }) {
                // Stored before the depth check existed (or written by hand): not served, and
                // dropped by the next compaction.
                metrics::counter!("chorus_nesting_refusals_total", "source" => "store")
                    .increment(1);
            }
            tracing::error!(room = %self.key(), error = %e, "skipping corrupt stored update");
        }
        self.depth = depth;
        let captured = self.captured.clone();
        doc.observe_update_v1("chorus-room", move |_, e| {
            captured
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.update.clone());
        })
        .map_err(|e| StoreError::Task(format!("observe: {e}")))?;
        self.doc = doc;
        if let Some(link) = &self.ctx.cluster {
            let channel = link.bus.channel(self.key());
            // Listen before asking: replies to our request must find us subscribed.
            if let Err(e) = link.bus.join(&channel, self.handle.sender()).await {
                tracing::warn!(room = %self.key(), error = %e, "not subscribed; resyncing when Redis is back");
            }
            self.remote = Some(Box::new(RemoteState {
                channel: channel.into(),
                sent: 0,
                seen: HashMap::new(),
            }));
            self.request_sync();
        }
        self.maybe_compact();
        Ok(())
    }

    /// A compaction rewrites the whole document, so it waits for `--compact-threshold` log
    /// entries *and* a log of at least a quarter of the snapshot's size: its cost per stored
    /// update then stays flat in the document's size. (Every 500 updates, a 5 MB room spent
    /// most of its CPU re-encoding itself: 240 against 65 us per edit for an empty one.)
    fn compaction_due(&self) -> bool {
        self.log_len > self.ctx.limits.compact_threshold
            && self.log_bytes.saturating_mul(COMPACT_LOG_FRACTION) >= self.snapshot_bytes
    }

    fn has_unsaved(&self) -> bool {
        !self.pending.is_empty() || self.in_flight.is_some() || !self.pending_acks.is_empty()
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join { conn, reply } => self.join(*conn, reply),
            Command::Leave { conn } => {
                self.refused.remove(&conn);
                self.leave(conn);
            }
            Command::Inbound { conn, msgs } => self.inbound_all(conn, msgs.into_iter()),
            Command::State { reply } => {
                if self.encode_is_long() {
                    self.deferred = Some(Box::new(Deferred::State(reply)));
                } else {
                    let state = self
                        .doc
                        .transact()
                        .encode_state_as_update_v1(&StateVector::default());
                    let _ = reply.send(Bytes::from(state));
                }
            }
            Command::Edit { edit, reply } => {
                let _ = reply.send(self.server_edit(*edit));
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

    /// Applies a REST edit like a member's update: relayed to every member, saved in the next
    /// batch. Refused edits change nothing.
    fn server_edit(&mut self, edit: ServerEdit) -> Result<oneshot::Receiver<bool>, EditError> {
        if self.doc_bytes >= self.max_document_bytes {
            return Err(EditError::TooLarge);
        }
        if let ServerEdit::Update { update, raw, .. } = &edit {
            if self.doc_bytes + raw.len() > self.max_document_bytes
                && carries_new(update, &self.doc)
            {
                return Err(EditError::TooLarge);
            }
            // A server edit must apply completely now: an update whose predecessors this
            // document lacks would be held back, and "applied" would be a lie.
            let ours = self.doc.transact().state_vector();
            if update
                .state_vector_lower()
                .iter()
                .any(|(client, clock)| *clock > ours.get(client))
            {
                return Err(EditError::Invalid(
                    "the update depends on changes this document does not have".into(),
                ));
            }
        }
        let (doc, depth) = (&self.doc, &mut self.depth);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match edit {
            ServerEdit::Update {
                update, nesting, ..
            } => {
                let mut txn = doc.transact_mut();
                if let Some(n) = nesting {
                    depth.admit(&txn, &n).map_err(|e| match e {
                        Refused::Nesting(NestingError::TooDeep { limit }) => {
                            EditError::TooDeep(limit)
                        }
                        e => EditError::Invalid(e.to_string()),
                    })?;
                }
                txn.apply_update(update)
                    .map_err(|e| EditError::Invalid(format!("invalid update: {e}")))
            }
            ServerEdit::Ops(ops) => {
                crate::docjson::apply_ops(doc, &ops).map_err(|e| EditError::Invalid(e.to_string()))
            }
            ServerEdit::Restore(state) => {
                let version = Doc::new();
                // Versions were saved from documents within the limit, but may predate it.
                DepthIndex::new(depth.max())
                    .check(&version.transact(), &state)
                    .map_err(|e| EditError::Invalid(format!("stored version refused: {e}")))?;
                let u = Update::decode_v1(&state)
                    .map_err(|e| EditError::Invalid(format!("stored version is corrupt: {e}")))?;
                version
                    .transact_mut()
                    .apply_update(u)
                    .map_err(|e| EditError::Invalid(format!("stored version is corrupt: {e}")))?;
                crate::docjson::restore_to(doc, &version)
                    .map_err(|e| EditError::Invalid(e.to_string()))
            }
        }));
        let effective =
            std::mem::take(&mut *self.captured.lock().unwrap_or_else(|p| p.into_inner()));
        let result = match outcome {
            Ok(r) => r,
            Err(_) => {
                self.restart_after_panic("server edit");
                return Err(EditError::Invalid("the edit could not be applied".into()));
            }
        };
        // JSON operations and restores create types through yrs' API, not through an update
        // that was checked: index what they made so later updates can build on it.
        let txn = self.doc.transact();
        for u in &effective {
            if let Err(e) = self.depth.check(&txn, u) {
                tracing::warn!(room = %self.key(), error = %e, "server edit past the nesting limit");
            }
        }
        drop(txn);
        // Whatever was integrated is in the document and must be relayed and saved.
        self.commit_effective(SERVER, effective, true, true);
        result?;
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.schedule_flush();
        Ok(rx)
    }

    /// Queues `payload` for the other nodes with our next number (cluster mode).
    fn publish(&mut self, payload: crate::cluster::bus::Payload) {
        let (Some(link), Some(remote)) = (&self.ctx.cluster, self.remote.as_mut()) else {
            return;
        };
        remote.sent += 1;
        link.bus.send(&remote.channel, remote.sent, &payload);
    }

    /// Asks the other nodes for what this room lacks: they answer with the difference from
    /// our state vector.
    fn request_sync(&mut self) {
        if self.remote.is_some() {
            metrics::counter!("chorus_resyncs_total").increment(1);
            let sv = self.doc.transact().state_vector().encode_v1();
            self.publish(crate::cluster::bus::Payload::SyncRequest(Bytes::from(sv)));
        }
    }

    /// A message from another node.
    fn remote_in(&mut self, envelope: crate::cluster::bus::Envelope) {
        use crate::cluster::bus::Payload;
        let (Some(link), Some(remote)) = (&self.ctx.cluster, self.remote.as_mut()) else {
            return;
        };
        // Our own messages stopped at the bus (`Bus::dispatch`).
        let me = &link.cluster.node().id;
        let for_us = matches!(&envelope.payload, Payload::SyncReply { to, .. } if to == me);
        let last = match remote.seen.get_mut(&envelope.origin) {
            Some(seen) => Some(std::mem::replace(seen, envelope.seq)),
            None => remote.seen.insert(envelope.origin.clone(), envelope.seq),
        };
        // A number skipped: something of that node's never reached us.
        let gap = last.is_some_and(|l| envelope.seq > l + 1);
        match envelope.payload {
            Payload::Update(u) => {
                // Its node stored it: one more entry in the log this room may compact.
                self.log_len += 1;
                self.log_bytes += u.len();
                self.apply_remote([&u]);
                self.maybe_compact();
            }
            Payload::SyncRequest(sv) => {
                let Ok(sv) = StateVector::decode_v1(&sv) else {
                    tracing::debug!(room = %self.key(), "dropping a malformed sync request");
                    return;
                };
                let (diff, ours) = {
                    let txn = self.doc.transact();
                    (txn.encode_state_as_update_v1(&sv), txn.state_vector())
                };
                // Two bytes is the empty update: the asker has everything we have.
                if diff.len() > 2 {
                    self.publish(Payload::SyncReply {
                        to: envelope.origin,
                        update: Bytes::from(diff),
                    });
                }
                // The asker holds something we lack (its publish of it was lost): ask back.
                if sv.iter().any(|(client, clock)| *clock > ours.get(client)) {
                    self.request_sync();
                }
            }
            Payload::SyncReply { update, .. } => {
                if for_us {
                    self.apply_remote([&update]);
                }
            }
            Payload::Awareness(update) => {
                match chorus_protocol::awareness::decode_update(update) {
                    Ok(entries) => self.presence.apply_remote(entries),
                    Err(_) => {
                        tracing::debug!(room = %self.key(), "dropping malformed remote awareness")
                    }
                }
                self.schedule_awareness();
            }
        }
        if gap {
            self.request_sync();
        }
    }

    /// Loads the room from the store in the background and merges it in (`Command::Stored`):
    /// a CRDT merge only adds what is missing.
    fn catch_up(&mut self) {
        metrics::counter!("chorus_catch_ups_total").increment(1);
        let store = self.ctx.store.clone();
        let key = self.key().clone();
        let tx = self.handle.sender();
        tokio::spawn(async move {
            match store.load(&key).await {
                Ok(loaded) => {
                    let _ = tx
                        .send(Command::Stored {
                            loaded: Box::new(loaded),
                        })
                        .await;
                }
                Err(e) => tracing::warn!(room = %key, error = %e, "catch-up from the store failed"),
            }
        });
    }

    /// Applies updates other nodes stored, in one transaction (a catch-up brings the whole
    /// stored room): what is new is relayed to every member here, and neither stored again
    /// (its node stored it) nor published again.
    fn apply_remote<'a>(&mut self, updates: impl IntoIterator<Item = &'a Bytes>) {
        let (doc, key, depth) = (&self.doc, &self.handle.key, &mut self.depth);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            chorus_persistence::merge_into_doc(doc, key, updates, depth)
        }));
        let effective =
            std::mem::take(&mut *self.captured.lock().unwrap_or_else(|p| p.into_inner()));
        match outcome {
            Ok(refused) => {
                let mut resync = false;
                for e in refused {
                    if let StoreError::TooDeep { detail, .. } = &e {
                        metrics::counter!("chorus_nesting_refusals_total", "source" => "remote")
                            .increment(1);
                        // Built on something that has not reached us yet: a resync brings both.
                        resync |= detail == &Refused::Unresolved.to_string();
                    }
                    tracing::debug!(room = %self.key(), error = %e, "remote update refused");
                }
                if resync {
                    self.request_sync();
                }
            }
            Err(_) => {
                self.restart_after_panic("remote update");
                return;
            }
        }
        self.commit_effective(SERVER, effective, true, false);
    }

    /// After yrs panicked inside a transaction the document may be half-applied: drop every
    /// member (they resync on reconnect) and exit after saving what was valid; the next join
    /// reloads from the store.
    fn restart_after_panic(&mut self, what: &str) {
        tracing::error!(room = %self.key(), what, "applying panicked; restarting room");
        metrics::counter!("chorus_room_panics_total").increment(1);
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
        self.pending.clear();
        self.pending_acks.clear();
        self.waiters.clear();
        if let Some(f) = self.in_flight.take() {
            let _ = f.done.await;
        }
        if let Some(c) = self.compaction.take() {
            let _ = c.await;
        }
        self.leave_bus().await;
        self.registry.remove(self.key(), self.handle.generation);
    }

    async fn leave_bus(&mut self) {
        if let (Some(link), Some(remote)) = (&self.ctx.cluster, self.remote.take()) {
            link.bus.leave(&remote.channel).await;
        }
    }

    /// Our SyncStep1, cached until the next update.
    fn step1(&mut self) -> Bytes {
        self.step1
            .get_or_insert_with(|| {
                let sv = self.doc.transact().state_vector().encode_v1();
                Message::SyncStep1(Bytes::from(sv)).encode()
            })
            .clone()
    }

    fn join(&mut self, conn: ConnHandle, reply: oneshot::Sender<Result<(), JoinError>>) {
        // y-websocket clients get our SyncStep1 at once. Hocuspocus clients get it with the
        // answer to each of theirs instead (as Hocuspocus does): a provider counts its
        // SyncStep1 as an unsynced change that only the acknowledgement of its reply clears,
        // also for the SyncStep1s it re-sends (`forceSyncInterval`).
        if conn.prefix().is_none() {
            conn.send_handshake(self.step1());
        }
        if let Some(snapshot) = self.presence.snapshot() {
            conn.send_handshake(snapshot);
        }
        let id = conn.id;
        self.members.insert(
            id,
            Member {
                conn,
                accepted: 0,
                acked: 0,
            },
        );
        self.idle_since = None;
        if reply.send(Ok(())).is_err() {
            // The joiner gave up while we loaded; it will never send Leave.
            self.leave(id);
        }
    }

    /// Removes members (and their awareness states), then tells everyone at once. Members
    /// found dead while telling are removed in the same loop, not by recursion.
    fn leave(&mut self, conn: ConnId) {
        self.leave_all(vec![conn]);
    }

    fn leave_all(&mut self, mut gone: Vec<ConnId>) {
        while !gone.is_empty() {
            for conn in gone.drain(..) {
                self.remove_member(conn);
            }
            if self.presence.has_removals() {
                gone = self.broadcast_awareness_collect();
            }
        }
        if self.members.is_empty() {
            self.idle_since = Some(TokioInstant::now());
        }
    }

    fn remove_member(&mut self, conn: ConnId) {
        if self.members.remove(&conn).is_none() {
            return;
        }
        self.pending_acks.remove(&conn);
        if let Some(f) = self.in_flight.as_mut() {
            f.acks.remove(&conn);
        }
        let gone = self.presence.remove_connection(conn);
        if !gone.is_empty() && self.remote.is_some() {
            let update = chorus_protocol::awareness::encode_update(&gone);
            self.publish(crate::cluster::bus::Payload::Awareness(update));
        }
    }

    /// A member's messages, in order. Not gated on membership: a client that sends an edit
    /// and closes at once is often gone (its queue dropped) before the room gets to the edit,
    /// and the edit must still count. Only refused connections' later messages are dropped,
    /// and questions from members that are gone are not answered (`answerable`). An answer
    /// that needs a long whole-document encode stops here and continues in `run_deferred`.
    fn inbound_all(&mut self, conn: ConnId, mut msgs: std::vec::IntoIter<Inbound>) {
        while let Some(m) = msgs.next() {
            if self.failed || self.refused.contains(&conn) {
                break;
            }
            if let Inbound::SyncStep1(sv) = m {
                match self.state_answer(conn, sv) {
                    Some(Answer::Ready(frame)) => self.answer_state(conn, frame),
                    Some(Answer::Encode(sv)) => {
                        self.deferred = Some(Box::new(Deferred::Answer {
                            conn,
                            sv,
                            rest: msgs,
                        }));
                        return;
                    }
                    None => {}
                }
                continue;
            }
            self.inbound(conn, m);
        }
    }

    /// Whether a question from `conn` is still worth answering: nothing more is done for a
    /// member that left or is being closed.
    fn answerable(&self, conn: ConnId) -> bool {
        let ok = self
            .members
            .get(&conn)
            .is_some_and(|m| !m.conn.is_closed() && !m.conn.is_gone());
        if !ok {
            metrics::counter!("chorus_replies_skipped_total").increment(1);
        }
        ok
    }

    /// What answers `conn`'s SyncStep1. The full state (cached until the next update, shared by
    /// every joiner) answers an empty state vector, and any request while an earlier answer
    /// still waits in the member's queue: the new answer replaces it there, and the full state
    /// covers every state vector, so a flood of requests costs one encode per document
    /// version, not one per request.
    fn state_answer(&mut self, conn: ConnId, sv: StateVector) -> Option<Answer> {
        if !self.answerable(conn) {
            return None;
        }
        let waiting = self
            .members
            .get(&conn)
            .is_some_and(|m| m.conn.answer_waiting(Reply::State));
        let full = sv == StateVector::default() || waiting;
        if full && let Some(frame) = &self.full_state {
            return Some(Answer::Ready(frame.clone()));
        }
        let sv = if full { StateVector::default() } else { sv };
        if self.encode_is_long() {
            return Some(Answer::Encode(sv));
        }
        let u = self.doc.transact().encode_state_as_update_v1(&sv);
        Some(Answer::Ready(self.state_encoded(&sv, u)))
    }

    /// The SyncStep2 of an encoded state, cached if it is the full state.
    fn state_encoded(&mut self, sv: &StateVector, update: Vec<u8>) -> Bytes {
        let frame = Message::SyncStep2(Bytes::from(update)).encode();
        if *sv == StateVector::default() {
            self.full_state = Some(frame.clone());
        }
        frame
    }

    fn answer_state(&mut self, conn: ConnId, frame: Bytes) {
        self.send_to(conn, Reply::State, frame);
        if self
            .members
            .get(&conn)
            .is_some_and(|m| m.conn.prefix().is_some())
        {
            let step1 = self.step1();
            self.send_to(conn, Reply::Step1, step1);
        }
    }

    /// Encodes of documents this large go to the blocking pool (`encode_off_worker`).
    fn encode_is_long(&self) -> bool {
        self.doc_bytes >= OFF_WORKER_ENCODE_BYTES
    }

    /// Encodes the document from `sv` on the blocking pool, at most `ENCODES` at a time
    /// across the node, so a runtime worker never spends a large document's encode (tens of
    /// milliseconds for megabytes). The room waits: nothing else touches its document
    /// meanwhile, so the encode never contends with an update for the document's lock.
    async fn encode_off_worker(&self, sv: StateVector) -> Option<Vec<u8>> {
        let _permit = ENCODES.acquire().await.ok()?;
        metrics::counter!("chorus_encodes_off_worker_total").increment(1);
        let doc = self.doc.clone();
        tokio::task::spawn_blocking(move || doc.transact().encode_state_as_update_v1(&sv))
            .await
            .ok()
    }

    /// Finishes what `handle` left for an encode off the workers.
    async fn run_deferred(&mut self, work: Deferred) {
        match work {
            Deferred::Answer { conn, sv, rest } => {
                if self.answerable(conn)
                    && let Some(u) = self.encode_off_worker(sv.clone()).await
                {
                    let frame = self.state_encoded(&sv, u);
                    self.answer_state(conn, frame);
                }
                self.inbound_all(conn, rest);
            }
            Deferred::State(reply) => {
                if let Some(u) = self.encode_off_worker(StateVector::default()).await {
                    let _ = reply.send(Bytes::from(u));
                }
            }
            Deferred::Snapshot(log) => {
                if let Some(u) = self.encode_off_worker(StateVector::default()).await {
                    self.write_snapshot(log, u);
                }
            }
        }
    }

    fn inbound(&mut self, conn: ConnId, msg: Inbound) {
        match msg {
            // Handled by `inbound_all`.
            Inbound::SyncStep1(_) => {}
            Inbound::Update {
                update,
                raw,
                nesting,
            } => self.apply(conn, update, raw, nesting),
            Inbound::ReadOnlyStep2(update) => {
                if carries_new(&update, &self.doc) {
                    self.deny(conn, "read-only: updates are not accepted");
                } else if let Some(m) = self.members.get(&conn) {
                    m.conn.nothing_new();
                }
            }
            Inbound::Awareness(entries) => self.awareness_in(conn, entries),
            Inbound::QueryAwareness => {
                if !self.answerable(conn) {
                    return;
                }
                let msg = self
                    .presence
                    .snapshot()
                    .unwrap_or_else(|| Message::Awareness(Bytes::from_static(&[0])).encode());
                self.send_to(conn, Reply::Awareness, msg);
            }
        }
    }

    fn deny(&mut self, conn: ConnId, reason: &str) {
        if let Some(m) = self.members.get(&conn) {
            m.conn
                .send_binary(Message::PermissionDenied(reason.to_string()).encode());
            m.conn.send_ext(&ServerMessage::Error {
                code: ErrorCode::Forbidden,
                message: reason.to_string(),
            });
        }
    }

    fn apply(
        &mut self,
        conn: ConnId,
        update: Update,
        raw: Bytes,
        nesting: Option<Box<chorus_protocol::nesting::Nesting>>,
    ) {
        let len = raw.len();
        // The connection already refused readers' updates; this is defence in depth. A
        // member that is gone (closed right after sending) was a writer, or its update would
        // not be here.
        if self
            .members
            .get(&conn)
            .is_some_and(|m| m.conn.role != Role::Write)
        {
            self.deny(conn, "read-only: updates are not accepted");
            return;
        }
        // Only updates carrying blocks this document lacks count against the size limit (a
        // reconnect's SyncStep2 repeating known content must not). Checked only near the
        // limit: it builds the document's whole state vector.
        if self.doc_bytes + len > self.max_document_bytes && carries_new(&update, &self.doc) {
            metrics::counter!("chorus_limit_rejections_total", "limit" => "document_bytes")
                .increment(1);
            if let Some(m) = self.members.get(&conn) {
                m.conn.send_ext(&ServerMessage::Error {
                    code: ErrorCode::TooLarge,
                    message: "document size limit reached".into(),
                });
            }
            self.close_member(
                conn,
                CloseCode::DocumentTooLarge,
                "document size limit reached",
            );
            return;
        }
        let accepted = self.members.get_mut(&conn).map(|m| {
            m.accepted += 1;
            m.accepted
        });
        // yrs may panic on adversarial input that decodes; never let that kill the node.
        let (doc, depth) = (&self.doc, &mut self.depth);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            // Checked in the transaction that applies it: the depths it is checked against
            // are the document's as it applies.
            if let Some(n) = nesting {
                depth.admit(&txn, &n)?;
            }
            let before = held_back(&txn);
            let res = txn.apply_update(update);
            let after = held_back(&txn);
            // yrs holds back what lacks predecessors; if that set grew, part of this update
            // lives only in memory.
            Ok((res, after.is_some() && after != before, before.is_some()))
        }));
        let effective =
            std::mem::take(&mut *self.captured.lock().unwrap_or_else(|p| p.into_inner()));
        let (result, held_back, had_held_back) = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(refused)) => {
                // Nothing was applied.
                metrics::counter!("chorus_nesting_refusals_total", "source" => "client")
                    .increment(1);
                let (code, reason) = match refused {
                    Refused::Nesting(NestingError::TooDeep { .. }) => {
                        (CloseCode::TooDeep, "update nests deeper than the limit")
                    }
                    _ => (
                        CloseCode::InvalidPayload,
                        "update builds on content the room does not have",
                    ),
                };
                if let Some(m) = self.members.get_mut(&conn) {
                    m.accepted -= 1;
                    m.conn.send_ext(&ServerMessage::Error {
                        code: ErrorCode::TooLarge,
                        message: reason.into(),
                    });
                }
                self.close_member(conn, code, reason);
                return;
            }
            Err(_) => {
                tracing::error!(room = %self.key(), conn, "update from this connection panicked");
                self.restart_after_panic("update");
                return;
            }
        };
        // Whatever yrs integrated, even from an update it then refused, is now in the
        // document: it must be relayed and stored like any edit. If something was held back
        // before, this update may have released it: then the effective update also carries
        // other members' content that the sender has never seen, so it goes to the sender too.
        self.commit_effective(conn, effective, had_held_back, true);
        if held_back {
            // Store it as received so a restart re-queues the held-back part; the rest is a
            // duplicate, harmless to a CRDT. Copied: `raw` is a slice of the sender's frame,
            // which it would keep alive whole.
            self.doc_bytes += len;
            self.pending_bytes += len;
            self.pending.push(Bytes::copy_from_slice(&raw));
        }
        if let Err(e) = result {
            tracing::info!(room = %self.key(), conn, error = %e, "update refused");
            self.close_member(conn, CloseCode::InvalidPayload, "invalid update");
            self.schedule_flush();
            return;
        }
        if let Some(accepted) = accepted {
            self.pending_acks.insert(conn, accepted);
        }
        self.schedule_flush();
    }

    /// Relays (to everyone but `from`, unless `echo_sender`) and, if it was made here
    /// (`local`), queues for saving and publishes to the other nodes the updates a transaction
    /// produced. Another node's update is stored by that node.
    fn commit_effective(
        &mut self,
        from: ConnId,
        effective: Vec<Vec<u8>>,
        echo_sender: bool,
        local: bool,
    ) {
        if effective.is_empty() {
            return;
        }
        self.full_state = None;
        self.step1 = None;
        let mut dead = Vec::new();
        for u in effective {
            let u = Bytes::from(u);
            let frame = Message::Update(u.clone()).encode();
            // Counted wherever it was made: every node's doc holds it.
            self.doc_bytes += u.len();
            if local {
                self.pending_bytes += u.len();
                self.publish(crate::cluster::bus::Payload::Update(u.clone()));
                self.pending.push(u);
            }
            let started = Instant::now();
            let mut sent = 0u64;
            for (id, m) in &self.members {
                if *id == from && !echo_sender {
                    continue;
                }
                if m.conn.send_binary(frame.clone()) {
                    sent += 1;
                } else {
                    dead.push(*id);
                }
            }
            metrics::counter!("chorus_messages_out_total").increment(sent);
            metrics::histogram!("chorus_fanout_seconds").record(started.elapsed().as_secs_f64());
        }
        if !dead.is_empty() {
            dead.sort_unstable();
            dead.dedup();
            self.leave_all(dead);
        }
    }

    fn schedule_flush(&mut self) {
        if self.flush_due.is_none() {
            self.flush_due = Some(TokioInstant::now() + self.ctx.limits.persist_batch);
        }
    }

    async fn start_flush(&mut self) {
        self.flush_due = None;
        let acks = std::mem::take(&mut self.pending_acks);
        let waiters = std::mem::take(&mut self.waiters);
        if self.pending.is_empty() {
            // Only already-known updates were acknowledged, and nothing is in flight: they
            // are as durable as everything before them.
            self.send_saved(acks);
            for w in waiters {
                let _ = w.send(true);
            }
            return;
        }
        let events = self.change_event();
        let event = !events.is_empty();
        let updates = std::mem::take(&mut self.pending);
        let bytes = std::mem::take(&mut self.pending_bytes);
        let done = self
            .ctx
            .persister
            .submit(AppendBatch {
                key: self.key().clone(),
                updates: updates.clone(),
                events,
            })
            .await;
        self.in_flight = Some(InFlight {
            done,
            updates,
            bytes,
            acks,
            waiters,
            event,
        });
    }

    /// The `document.changed` event to write with this batch, if the tenant's webhook wants
    /// it and no window is open. The event opens a window of `--webhook-debounce`: it is
    /// delivered when the window closes, so it reports every change of the window, and it is
    /// written in the same transaction as the window's first change, so no change is ever
    /// saved without an event that reports it.
    fn change_event(&mut self) -> Vec<chorus_persistence::NewEvent> {
        // Looked up only when ours is stale: this runs for every batch of every room.
        if self.tenant.as_ref().is_none_or(|t| t.is_stale())
            && let Some(fresh) = self.ctx.tenants.cached(&self.key().tenant)
        {
            self.tenant = Some(fresh);
        }
        let wanted = self
            .tenant
            .as_ref()
            .is_some_and(|t| t.wants_event(crate::webhooks::events::DOCUMENT_CHANGED));
        let now = TokioInstant::now();
        let debounce = self.ctx.webhook_debounce;
        if !wanted || self.last_change_event.is_some_and(|t| now < t + debounce) {
            return Vec::new();
        }
        self.last_change_event = Some(now);
        let sv = self.doc.transact().state_vector().encode_v1();
        use base64::Engine;
        vec![chorus_persistence::NewEvent {
            tenant: self.key().tenant.to_string(),
            event: crate::webhooks::events::DOCUMENT_CHANGED.to_string(),
            body: serde_json::json!({
                "room": &*self.key().room,
                "state_vector": base64::engine::general_purpose::STANDARD.encode(sv),
                "stored_bytes": self.doc_bytes,
            }),
            // Whole seconds, rounded up: the outbox's unit.
            delay: i64::try_from(debounce.as_millis().div_ceil(1000)).unwrap_or(i64::MAX),
        }]
    }

    fn flushed(&mut self, result: Result<(), Arc<StoreError>>) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        match result {
            Ok(()) => {
                self.log_len += f.updates.len();
                self.log_bytes += f.bytes;
                self.send_saved(f.acks);
                for w in f.waiters {
                    let _ = w.send(true);
                }
                if f.event {
                    self.ctx.events.notify();
                }
                self.maybe_compact();
            }
            Err(e) => {
                // Keep the batch in front of anything newer and retry; members are not told
                // "saved" until it commits.
                tracing::warn!(room = %self.key(), error = %e, "persist failed; will retry");
                let mut updates = f.updates;
                updates.append(&mut self.pending);
                self.pending = updates;
                self.pending_bytes += f.bytes;
                for (c, n) in f.acks {
                    let e = self.pending_acks.entry(c).or_insert(n);
                    *e = (*e).max(n);
                }
                let mut waiters = f.waiters;
                waiters.append(&mut self.waiters);
                self.waiters = waiters;
                if f.event {
                    // The event failed with its batch: the retry writes a new one.
                    self.last_change_event = None;
                }
                self.flush_due = Some(TokioInstant::now() + Duration::from_millis(500));
            }
        }
    }

    fn send_saved(&mut self, acks: HashMap<ConnId, u64>) {
        for (conn, updates) in acks {
            if let Some(m) = self.members.get_mut(&conn) {
                let newly = updates.saturating_sub(m.acked);
                m.acked = m.acked.max(updates);
                m.conn.saved(newly, updates);
            }
        }
    }

    /// Compaction, step 1, when one is due here and none runs: sum up the log. The summary
    /// must come before the encoding (step 2), so that everything it counts is already in the
    /// document.
    fn maybe_compact(&mut self) {
        if self.compaction.is_some()
            || !self.compaction_due()
            || self.compact_after.is_some_and(|t| Instant::now() < t)
            || !self.may_compact_here()
        {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let store = self.ctx.store.clone();
        let key = self.key().clone();
        tokio::spawn(async move {
            let _ = tx.send(store.log_summary(&key).await.map(CompactionStep::Summed));
        });
        self.compaction = Some(rx);
    }

    /// Alone, every room compacts where it is. In a cluster, a room's home node compacts it;
    /// another node with the room open does too once the log is `OFF_HOME_COMPACT_FACTOR`
    /// times past both limits of `compaction_due` (entries and the share of the snapshot),
    /// which the home never lets happen while it holds the room (it counts every node's
    /// updates): so a room nobody opened on its home is still compacted. Either way the
    /// store's lock lets one node at a time do it.
    fn may_compact_here(&self) -> bool {
        match &self.ctx.cluster {
            None => true,
            Some(link) => {
                link.cluster.is_home(&self.key().room)
                    || (self.log_len
                        > self
                            .ctx
                            .limits
                            .compact_threshold
                            .saturating_mul(OFF_HOME_COMPACT_FACTOR)
                        && self.log_bytes.saturating_mul(COMPACT_LOG_FRACTION)
                            >= self.snapshot_bytes.saturating_mul(OFF_HOME_COMPACT_FACTOR))
            }
        }
    }

    /// Compaction, step 2. Alone, the room's document covers the log (`write_snapshot`). In a
    /// cluster the other nodes append to the log too and what they stored may not have
    /// reached this document yet, so the store rebuilds it, unless another node already is.
    /// The summary also corrects the counts here, which other nodes' compactions make stale.
    fn summed(&mut self, log: LogSummary) {
        if self.ctx.cluster.is_none() {
            if log.entries > 0 {
                // Encoded off the workers: compactions happen to large documents.
                self.deferred = Some(Box::new(Deferred::Snapshot(log)));
            }
            return;
        }
        self.log_len = log.entries;
        self.log_bytes = log.bytes;
        self.snapshot_bytes = log.snapshot_bytes;
        if !(self.compaction_due() && self.may_compact_here()) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let store = self.ctx.store.clone();
        let key = self.key().clone();
        tokio::spawn(async move {
            let res = store
                .compact_exclusive(&key)
                .await
                .map(|stats| stats.map_or(CompactionStep::Skipped, CompactionStep::Written));
            let _ = tx.send(res);
        });
        self.compaction = Some(rx);
    }

    /// Compaction, step 2: the document as the room holds it becomes the snapshot of the log
    /// up to `log.last_id`. Encoding the live document costs a fraction of rebuilding it from
    /// the store (5 MB of text with 28,000 edits: 29 against 365 ms); it holds held-back
    /// updates too, since yrs encodes its pending blocks.
    fn write_snapshot(&mut self, log: LogSummary, snapshot: Vec<u8>) {
        let stats = CompactStats {
            merged: log.entries,
            merged_bytes: log.bytes,
            previous_snapshot_bytes: log.snapshot_bytes,
            snapshot_bytes: snapshot.len(),
        };
        let (tx, rx) = oneshot::channel();
        let store = self.ctx.store.clone();
        let key = self.key().clone();
        tokio::spawn(async move {
            let res = store.write_snapshot(&key, log.last_id, &snapshot).await;
            let _ = tx.send(res.map(|()| CompactionStep::Written(stats)));
        });
        self.compaction = Some(rx);
    }

    fn compacted(&mut self, stats: CompactStats) {
        if stats.merged == 0 {
            // Another node emptied the log between our summary and our lock: nothing done.
            return;
        }
        metrics::counter!("chorus_compactions_total").increment(1);
        self.log_len = self.log_len.saturating_sub(stats.merged);
        self.log_bytes = self.log_bytes.saturating_sub(stats.merged_bytes);
        self.snapshot_bytes = stats.snapshot_bytes;
        self.doc_bytes = self
            .doc_bytes
            .saturating_sub(stats.merged_bytes)
            .saturating_add(stats.snapshot_bytes)
            .saturating_sub(stats.previous_snapshot_bytes);
        // What was stored while this one ran may already call for the next: start it now,
        // while the room may be quiet, rather than at its next edit.
        self.maybe_compact();
    }

    fn awareness_in(&mut self, conn: ConnId, mut entries: Vec<Entry>) {
        // A connection that is gone can no longer own presence: its state would never be
        // removed.
        let Some(me) = self.members.get(&conn) else {
            return;
        };
        // A client id belongs to the connection that first used it: another member may not
        // change or remove it, unless it is the same user (a tab reconnecting before its old
        // socket timed out). Anonymous members are all "nobody", as before.
        let before = entries.len();
        entries.retain(|e| {
            self.presence.owner_of(e.client_id).is_none_or(|owner| {
                owner == conn
                    || self
                        .members
                        .get(&owner)
                        .is_none_or(|o| o.conn.user == me.conn.user)
            })
        });
        if entries.len() < before {
            metrics::counter!("chorus_awareness_foreign_ids_total")
                .increment((before - entries.len()) as u64);
        }
        // What the token says about the member wins over what its states claim.
        if let Some(shown) = &me.conn.shown_as {
            for e in entries.iter_mut().filter(|e| !e.is_removal()) {
                e.state = shown.apply(&e.state);
            }
        }
        if entries.is_empty() {
            return;
        }
        // The other nodes apply the same clock rule, so what we refuse they refuse too.
        let relay = self
            .remote
            .is_some()
            .then(|| chorus_protocol::awareness::encode_update(&entries));
        if self.presence.apply(conn, entries).is_err() {
            // One tab owns one state; dozens from one socket is an attack on every joiner's
            // handshake size.
            self.close_member(conn, CloseCode::Policy, "too many awareness states");
            return;
        }
        if let Some(update) = relay {
            self.publish(crate::cluster::bus::Payload::Awareness(update));
        }
        self.schedule_awareness();
    }

    /// Sends presence changes at the next tick, unless one is due already.
    fn schedule_awareness(&mut self) {
        if self.awareness_due.is_none() && self.presence.has_changes() {
            self.awareness_due = Some(TokioInstant::now() + self.ctx.limits.awareness_tick);
        }
    }

    /// Sends every awareness change since the last tick as one message to every member,
    /// including the senders: stock clients drop a connection that hears nothing for 30 s,
    /// and their own renewals relayed back are what keeps a lone client's socket alive.
    fn broadcast_awareness(&mut self) {
        let dead = self.broadcast_awareness_collect();
        if !dead.is_empty() {
            self.leave_all(dead);
        }
    }

    /// Sends the pending awareness changes; returns members whose queues refused them.
    fn broadcast_awareness_collect(&mut self) -> Vec<ConnId> {
        self.awareness_due = None;
        let Some(frame) = self.presence.take_changes() else {
            return Vec::new();
        };
        let mut dead = Vec::new();
        for (id, m) in &self.members {
            if !m.conn.send_binary(frame.clone()) {
                dead.push(*id);
            }
        }
        metrics::counter!("chorus_messages_out_total")
            .increment((self.members.len() - dead.len()) as u64);
        dead
    }

    /// Answers a member's own request (SyncStep2, query-awareness) outside the byte budget.
    fn send_to(&mut self, conn: ConnId, kind: Reply, frame: Bytes) {
        let ok = self
            .members
            .get(&conn)
            .is_some_and(|m| m.conn.send_answer(kind, frame));
        if ok {
            metrics::counter!("chorus_messages_out_total").increment(1);
        } else if self.members.contains_key(&conn) {
            self.leave(conn);
        }
    }

    fn close_member(&mut self, conn: ConnId, code: CloseCode, reason: &str) {
        self.refused.insert(conn);
        if let Some(m) = self.members.get(&conn) {
            m.conn.close(code, reason);
        }
        self.leave(conn);
    }

    /// Persists everything still unsaved before the task ends.
    async fn finish(&mut self) {
        for m in self.members.values() {
            m.conn.close(CloseCode::Restarting, "room closing");
        }
        // A failing store gets a few attempts; after that the loss is logged loudly.
        for attempt in 0..4 {
            if let Some(f) = self.in_flight.as_mut() {
                let res = (&mut f.done).await;
                self.flushed(res.unwrap_or(Err(Arc::new(StoreError::Stopped))));
            }
            if (self.pending.is_empty() && self.pending_acks.is_empty()) || attempt == 3 {
                break;
            }
            self.start_flush().await;
        }
        if !self.pending.is_empty() {
            tracing::error!(room = %self.key(), updates = self.pending.len(), "room exiting with unsaved updates");
        }
        if let Some(c) = self.compaction.take() {
            let _ = c.await;
        }
        self.leave_bus().await;
        // Leave the registry only now: until this task ends, joiners that reach us wait on
        // their (never answered) Join and then re-spawn the room, which loads what we saved.
        self.registry.remove(self.key(), self.handle.generation);
    }
}

/// What yrs holds back for missing predecessors (encoded pending blocks, pending delete
/// count), or `None`. Encodes only when something is held back, which is rare.
fn held_back(txn: &impl ReadTxn) -> Option<(Vec<u8>, usize)> {
    let store = ReadTxn::store(txn);
    let (update, ds) = (store.pending_update(), store.pending_ds());
    if update.is_none() && ds.is_none() {
        return None;
    }
    Some((
        update.map(|p| p.update.encode_v1()).unwrap_or_default(),
        ds.map_or(0, |d| d.len()),
    ))
}

/// Whether `update` holds blocks `doc` lacks: either overlapping and extending its state, or
/// starting beyond it (a gap yrs will hold back until the predecessors arrive).
fn carries_new(update: &Update, doc: &Doc) -> bool {
    let ours = doc.transact().state_vector();
    update.extends(&ours)
        || update
            .state_vector_lower()
            .iter()
            .any(|(client, clock)| *clock >= ours.get(client))
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
