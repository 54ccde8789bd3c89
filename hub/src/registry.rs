//! The live rooms of this node. Get-or-spawn is atomic per `(tenant, room)` (a DashMap entry),
//! so two first joiners never load a room twice. A room removes itself when it exits, and only
//! if the map still holds *its* generation, so a newer incarnation is never evicted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chorus_persistence::RoomKey;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::envelope::Envelope;
use crate::counts::Counts;
use crate::outbound::ConnHandle;
use crate::room::{
    Command, CommandId, EditError, EditReply, MemberInfo, Room, RoomContext, ServerEdit,
};
pub use crate::room::{JoinError, ROOM_TIMEOUT, RoomError, RoomHandle};

/// Ends a room's deletion window (see [`Registry::begin_delete`]).
#[derive(Debug)]
pub struct DeleteGuard {
    registry: Arc<Registry>,
    key: RoomKey,
}

impl Drop for DeleteGuard {
    fn drop(&mut self) {
        // Only the last of concurrent deletions of one room lifts the block.
        self.registry.deleting.remove(&self.key);
    }
}

/// Live rooms by key.
#[derive(Debug)]
pub struct Registry {
    rooms: DashMap<RoomKey, RoomHandle>,
    // Rooms being deleted (by how many deletions): not re-spawned until the rows are gone.
    deleting: Counts<RoomKey>,
    // Room tasks still running per key, including ones that already left `rooms` (an idle
    // room flushing on its way out): a deletion waits for them to write nothing more.
    tasks: Counts<RoomKey>,
    // Open rooms per tenant, against the tenant's share of `--max-rooms`.
    per_tenant: Counts<Arc<str>>,
    ctx: Arc<RoomContext>,
    generation: AtomicU64,
    // The AI assistant, once the node has built it (it holds the registry weakly).
    ai: std::sync::OnceLock<Arc<crate::ai::Assistant>>,
    search: std::sync::OnceLock<Arc<crate::search::Search>>,
}

/// Commands a room's queue holds before joiners and readers wait (backpressure).
const ROOM_QUEUE: usize = 4096;

impl Registry {
    /// An empty registry whose rooms share `ctx`.
    pub fn new(ctx: Arc<RoomContext>) -> Arc<Self> {
        Arc::new(Registry {
            rooms: DashMap::new(),
            deleting: Counts::default(),
            per_tenant: Counts::default(),
            tasks: Counts::default(),
            ctx,
            generation: AtomicU64::new(1),
            ai: std::sync::OnceLock::new(),
            search: std::sync::OnceLock::new(),
        })
    }

    /// The node's AI assistant (`None` without a provider).
    pub fn assistant(&self) -> Option<&Arc<crate::ai::Assistant>> {
        self.ai.get()
    }

    pub(crate) fn set_assistant(&self, ai: Arc<crate::ai::Assistant>) {
        let _ = self.ai.set(ai);
    }

    /// Search, when it is on (`--search`).
    pub fn search(&self) -> Option<&Arc<crate::search::Search>> {
        self.search.get()
    }

    pub(crate) fn set_search(&self, search: Arc<crate::search::Search>) {
        let _ = self.search.set(search);
    }

    /// Webhook events of the node (shared by rooms and connections).
    pub fn events(&self) -> &crate::webhooks::events::Events {
        &self.ctx.events
    }

    /// Rooms open now.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Commands waiting in the open rooms' queues, summed (read for /metrics).
    pub fn queued_commands(&self) -> usize {
        self.rooms.iter().map(|r| r.value().queued()).sum()
    }

    /// Whether no room is open.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Handles of every open room (for shutdown).
    pub fn handles(&self) -> Vec<RoomHandle> {
        self.rooms.iter().map(|r| r.value().clone()).collect()
    }

    /// The open room, if it is open.
    pub fn get(&self, key: &RoomKey) -> Option<RoomHandle> {
        self.rooms.get(key).map(|h| h.clone())
    }

    /// The plain text of `key`'s document (search) from its live room, when the room is open
    /// here and this node is its only writer: alone, every stored update went through this
    /// room's document before the store, so the document covers what the store holds (which
    /// compaction relies on too; in a cluster, another node's update may not have reached it
    /// yet). `None` otherwise, or when the room is being deleted, exits or does not answer in
    /// time: the caller reads the store.
    pub async fn live_lines(
        &self,
        key: &RoomKey,
        max_chars: usize,
    ) -> Option<Vec<crate::docjson::Line>> {
        if self.ctx.cluster.is_some() || self.deleting.contains(key) {
            return None;
        }
        let handle = self.get(key)?;
        let (reply, rx) = oneshot::channel();
        handle
            .offer(Command::Lines { max_chars, reply })
            .await
            .ok()?;
        tokio::time::timeout(ROOM_TIMEOUT, rx).await.ok()?.ok()
    }

    /// Keys of the open rooms of one tenant.
    pub fn rooms_of(&self, tenant: &str) -> Vec<RoomKey> {
        self.rooms
            .iter()
            .filter(|r| &*r.key().tenant == tenant)
            .map(|r| r.key().clone())
            .collect()
    }

    /// Blocks (re-)spawning the room until the guard drops: while a deletion removes its
    /// stored rows, a joiner must not load them back.
    pub fn begin_delete(self: &Arc<Self>, key: &RoomKey) -> DeleteGuard {
        self.deleting.add(key.clone());
        DeleteGuard {
            registry: self.clone(),
            key: key.clone(),
        }
    }

    /// Waits until no task of the room runs any more (it wrote everything it will write), at
    /// most `patience`; `false` if one still runs.
    pub async fn wait_gone(&self, key: &RoomKey, patience: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        while self.tasks.contains(key) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    /// The open room, or a freshly spawned one.
    pub fn get_or_spawn(self: &Arc<Self>, key: &RoomKey) -> Result<RoomHandle, JoinError> {
        if self.deleting.contains(key) {
            return Err(JoinError::Deleted);
        }
        if let Some(h) = self.rooms.get(key) {
            return Ok(h.clone());
        }
        // Checked outside the entry lock: DashMap::len takes every shard's lock. The count may
        // overshoot by the number of concurrent first joins, which is fine for a soft cap.
        if self.rooms.len() >= self.ctx.limits.max_rooms {
            return Err(JoinError::TooManyRooms);
        }
        if let Some(share) = crate::tenants::node_share(
            &key.tenant,
            self.ctx.limits.max_rooms,
            self.ctx.limits.tenant_share_percent,
        ) && self.per_tenant.count(&key.tenant) >= share
        {
            metrics::counter!(crate::metrics::names::LIMIT_REJECTIONS_TOTAL, "limit" => "tenant_room_share")
                .increment(1);
            return Err(JoinError::TenantShare);
        }
        match self.rooms.entry(key.clone()) {
            Entry::Occupied(e) => Ok(e.get().clone()),
            Entry::Vacant(e) => {
                let (tx, rx) = mpsc::channel(ROOM_QUEUE);
                let generation = self.generation.fetch_add(1, Ordering::Relaxed);
                let handle = RoomHandle::new(generation, key.clone(), tx);
                // The room leaves the map through this (it knows nothing of the registry), at
                // the moment it chooses: before it flushes when idle, so that a joiner spawns
                // its successor at once.
                let weak = Arc::downgrade(self);
                let unlist_key = key.clone();
                let unlist = Box::new(move || {
                    if let Some(registry) = weak.upgrade() {
                        registry.remove(&unlist_key, generation);
                    }
                });
                let room = Room::new(handle.clone(), self.ctx.clone(), unlist);
                self.tasks.add(key.clone());
                self.per_tenant.add(key.tenant.clone());
                let registry = self.clone();
                let task_key = key.clone();
                // A root: the room outlives the connection whose join spawned it.
                let span = crate::telemetry::keep_if_sampled(tracing::debug_span!(
                    parent: None,
                    "room",
                    tenant = %key.tenant,
                    room = %key.room,
                ));
                tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        room.run(rx).await;
                        registry.tasks.remove(&task_key);
                        registry.per_tenant.remove(&task_key.tenant);
                    },
                    span,
                ));
                metrics::gauge!(crate::metrics::names::ROOMS_OPEN).increment(1.0);
                e.insert(handle.clone());
                Ok(handle)
            }
        }
    }

    /// The deepest nesting an update may create (`--max-nesting-depth`).
    pub fn max_nesting_depth(&self) -> u32 {
        self.ctx.limits.max_nesting_depth
    }

    /// Tenant settings and keys, as every room sees them.
    pub fn tenants(&self) -> &Arc<crate::tenants::Tenants> {
        &self.ctx.tenants
    }

    /// Removes the room if the map still holds this generation of it.
    pub fn remove(&self, key: &RoomKey, generation: u64) {
        if self
            .rooms
            .remove_if(key, |_, h| h.generation == generation)
            .is_some()
        {
            metrics::gauge!(crate::metrics::names::ROOMS_OPEN).decrement(1.0);
        }
    }

    /// Hands `cmd` to the live incarnation of the room, spawning it as needed. An incarnation
    /// exiting before it takes the command hands it back, and its successor gets it: this is
    /// the one place that retries. Returns the incarnation that took it.
    async fn deliver(
        self: &Arc<Self>,
        key: &RoomKey,
        mut cmd: Command,
    ) -> Result<RoomHandle, JoinError> {
        for _ in 0..crate::room::ATTEMPTS {
            let handle = self.get_or_spawn(key)?;
            match handle.offer(cmd).await {
                Ok(()) => return Ok(handle),
                Err(back) => {
                    self.remove(key, handle.generation);
                    cmd = back;
                    tokio::task::yield_now().await;
                }
            }
        }
        Err(JoinError::Unavailable)
    }

    /// Asks the room (spawning it) a question that changes nothing, built by `ask` around the
    /// reply channel; a room that took it and exited unanswered is asked again in its
    /// successor.
    async fn query<T>(
        self: &Arc<Self>,
        key: &RoomKey,
        ask: impl Fn(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RoomError> {
        for _ in 0..crate::room::ATTEMPTS {
            let (reply, rx) = oneshot::channel();
            let handle = self.deliver(key, ask(reply)).await?;
            match tokio::time::timeout(ROOM_TIMEOUT, rx).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(_)) => self.remove(key, handle.generation),
                Err(_) => return Err(RoomError::Timeout),
            }
        }
        Err(RoomError::Join(JoinError::Unavailable))
    }

    /// Joins `conn` to its room, spawning or re-spawning the room as needed. Once this returns
    /// the room has loaded and has queued its SyncStep1 to the connection.
    pub async fn join(
        self: &Arc<Self>,
        key: &RoomKey,
        conn: ConnHandle,
    ) -> Result<RoomHandle, JoinError> {
        for _ in 0..crate::room::ATTEMPTS {
            let (reply, rx) = oneshot::channel();
            let cmd = Command::Join {
                conn: Box::new(conn.clone()),
                reply,
            };
            let handle = self.deliver(key, cmd).await?;
            match rx.await {
                Ok(Ok(())) => return Ok(handle),
                Ok(Err(e)) => return Err(e),
                // Taken, then the room exited: joining again is harmless.
                Err(_) => {
                    self.remove(key, handle.generation);
                    tokio::task::yield_now().await;
                }
            }
        }
        Err(JoinError::Unavailable)
    }

    /// The whole document as a v1 update, from the live room (spawned to load it if needed).
    pub async fn state(self: &Arc<Self>, key: &RoomKey) -> Result<Bytes, RoomError> {
        self.query(key, |reply| Command::State { reply }).await
    }

    /// Applies a server-side edit through the live room (spawning it) like a member's update,
    /// relayed to every member. Resolves once the room has applied it, with a receiver that
    /// turns `true` when the edit is durable. Applied once: the edit carries a
    /// [`CommandId`], and a room that dies between applying it and answering leaves its effect
    /// behind, which the retry on its successor applies again instead of the edit (a CRDT
    /// update applied twice changes nothing).
    pub async fn edit(
        self: &Arc<Self>,
        key: &RoomKey,
        edit: ServerEdit,
    ) -> Result<Result<oneshot::Receiver<bool>, EditError>, RoomError> {
        let id = CommandId::fresh();
        let answer = self.edit_once(key, id, edit).await;
        self.ctx.applied.forget(id);
        answer
    }

    async fn edit_once(
        self: &Arc<Self>,
        key: &RoomKey,
        id: CommandId,
        edit: ServerEdit,
    ) -> Result<Result<oneshot::Receiver<bool>, EditError>, RoomError> {
        let mut edit = Some(Box::new(edit));
        for _ in 0..crate::room::ATTEMPTS {
            let (reply, rx) = oneshot::channel();
            let cmd = Command::Edit {
                id,
                edit: edit.take(),
                reply,
            };
            self.deliver(key, cmd).await?;
            match tokio::time::timeout(ROOM_TIMEOUT, rx).await {
                Ok(Ok(EditReply::Applied(result))) => return Ok(result),
                Ok(Ok(EditReply::Lost)) => return Err(RoomError::Closed),
                // The room was exiting: its successor gets the edit.
                Ok(Ok(EditReply::NotTaken(back))) => edit = back,
                // Taken, and the room ended without answering: it applied the edit or not;
                // its successor knows by `id`. (Not unlisted here: a room that ends unlists
                // itself once it has saved what it will save, and its successor must load
                // after that.)
                Ok(Err(_)) => {}
                Err(_) => return Err(RoomError::Timeout),
            }
            tokio::task::yield_now().await;
        }
        Err(RoomError::Join(JoinError::Unavailable))
    }

    /// Faults tests inject into this node's rooms.
    pub fn faults(&self) -> &crate::room::Faults {
        &self.ctx.faults
    }

    /// Members of the room if it is open on this node (empty otherwise: nothing is spawned).
    pub async fn members(&self, key: &RoomKey) -> Vec<MemberInfo> {
        match self.get(key) {
            Some(handle) => handle.members().await,
            None => Vec::new(),
        }
    }

    /// Asks every open room to read the store for what a departed node stored but never
    /// published.
    pub fn catch_up_all(&self) {
        for room in &self.rooms {
            room.value().try_offer(Command::CatchUp);
        }
    }

    /// Hands another node's message to the live incarnation of its room, if one is open here.
    pub fn route(&self, key: &RoomKey, envelope: Envelope) {
        if let Some(room) = self.rooms.get(key) {
            // Never wait here: one slow room must not hold up every other. A dropped message
            // shows as a gap in its sequence, and the room resyncs.
            if !room.try_offer(Command::Remote {
                envelope: Box::new(envelope),
            }) {
                metrics::counter!(crate::metrics::names::REDIS_DROPPED_TOTAL).increment(1);
            }
        }
    }

    /// Asks every open room to ask the other nodes for what it lacks (messages were lost).
    pub fn resync_all(&self) {
        for room in &self.rooms {
            room.value().try_offer(Command::Resync);
        }
    }
}
