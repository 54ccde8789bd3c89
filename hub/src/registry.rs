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

use chorus_protocol::CloseCode;

use crate::counts::Counts;
use crate::outbound::{ConnHandle, ConnId};
use crate::room::{Command, EditError, MemberInfo, Room, RoomContext, ServerEdit};

/// How a room is reached: one incarnation of it. Its methods ask that incarnation only; the
/// [`Registry`]'s methods of the same names find (or spawn) the live incarnation and hand a
/// request that an exiting room did not take to its successor.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    /// Incarnation number, unique per node.
    pub generation: u64,
    /// The room.
    pub key: RoomKey,
    /// The room task's command queue.
    tx: mpsc::Sender<Command>,
}

/// Why a request to a room got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The room could not be found or spawned.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// The room took the request and then closed without answering (it was deleted or went
    /// idle). A request that changes the room was not applied: rooms answer before they exit.
    #[error("the room closed before answering; retry")]
    Closed,
    /// The room did not answer within [`ROOM_TIMEOUT`].
    #[error("the room did not answer in time")]
    Timeout,
}

/// How long a request waits for a room's answer.
pub const ROOM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How many incarnations of a room a request is offered to before giving up: a room may be
/// exiting (idle) just as it is asked; a few rounds cover any realistic race.
const ATTEMPTS: usize = 8;

impl RoomHandle {
    /// The room's queue, for the parts of the node that feed it directly (the cluster bus,
    /// background tasks of the room itself).
    pub(crate) fn sender(&self) -> mpsc::Sender<Command> {
        self.tx.clone()
    }

    /// Messages a member sent, in order. `false` when this incarnation has exited.
    pub async fn inbound(&self, conn: ConnId, msgs: Vec<crate::room::Inbound>) -> bool {
        self.tx.send(Command::Inbound { conn, msgs }).await.is_ok()
    }

    /// A member's connection ended.
    pub async fn leave(&self, conn: ConnId) {
        let _ = self.tx.send(Command::Leave { conn }).await;
    }

    /// Who is connected, with their awareness states (empty if the room has exited).
    pub async fn members(&self) -> Vec<MemberInfo> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Members { reply }).await.is_err() {
            return Vec::new();
        }
        tokio::time::timeout(ROOM_TIMEOUT, rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Closes every member with `code` and exits without saving what is pending (the room is
    /// being deleted); returns once nothing of the room will be written any more, or after
    /// [`ROOM_TIMEOUT`].
    pub async fn close(&self, code: CloseCode, reason: &str) {
        let (done, rx) = oneshot::channel();
        let cmd = Command::Close {
            code,
            reason: reason.to_owned(),
            done,
        };
        if self.tx.send(cmd).await.is_ok() {
            let _ = tokio::time::timeout(ROOM_TIMEOUT, rx).await;
        }
    }

    /// The node is draining: members are told to reconnect (1012) with `reason`. `None` when
    /// the room's queue is full or it has exited; otherwise resolves once every member was
    /// told.
    pub fn drain(&self, reason: String) -> Option<oneshot::Receiver<()>> {
        let (done, rx) = oneshot::channel();
        self.tx.try_send(Command::Drain { reason, done }).ok()?;
        Some(rx)
    }

    /// Flushes everything and exits; resolves when the room's data is durable (at once if it
    /// has exited).
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Why a connection could not join its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The node has `--max-rooms` rooms open.
    #[error("too many rooms open on this node")]
    TooManyRooms,
    /// The room could not be loaded from the store.
    #[error("room could not be loaded")]
    LoadFailed,
    /// The room kept exiting under us or is shutting down.
    #[error("room unavailable")]
    Unavailable,
    /// The room is being deleted.
    #[error("room deleted")]
    Deleted,
    /// The tenant has its share of this node's rooms open (`--max-tenant-share`).
    #[error("the tenant has its share of this node's rooms open")]
    TenantShare,
}

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
        })
    }

    /// Webhook events of the node (shared by rooms and connections).
    pub fn events(&self) -> &crate::webhooks::events::Events {
        &self.ctx.events
    }

    /// Rooms open now.
    pub fn len(&self) -> usize {
        self.rooms.len()
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
            metrics::counter!("chorus_limit_rejections_total", "limit" => "tenant_room_share")
                .increment(1);
            return Err(JoinError::TenantShare);
        }
        match self.rooms.entry(key.clone()) {
            Entry::Occupied(e) => Ok(e.get().clone()),
            Entry::Vacant(e) => {
                let (tx, rx) = mpsc::channel(ROOM_QUEUE);
                let handle = RoomHandle {
                    generation: self.generation.fetch_add(1, Ordering::Relaxed),
                    key: key.clone(),
                    tx,
                };
                let room = Room::new(handle.clone(), self.ctx.clone(), self.clone());
                self.tasks.add(key.clone());
                self.per_tenant.add(key.tenant.clone());
                let registry = self.clone();
                let task_key = key.clone();
                tokio::spawn(async move {
                    room.run(rx).await;
                    registry.tasks.remove(&task_key);
                    registry.per_tenant.remove(&task_key.tenant);
                });
                metrics::gauge!("chorus_rooms_open").increment(1.0);
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
            metrics::gauge!("chorus_rooms_open").decrement(1.0);
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
        for _ in 0..ATTEMPTS {
            let handle = self.get_or_spawn(key)?;
            match handle.tx.send(cmd).await {
                Ok(()) => return Ok(handle),
                Err(mpsc::error::SendError(back)) => {
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
        for _ in 0..ATTEMPTS {
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
        for _ in 0..ATTEMPTS {
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
    /// turns `true` when the edit is durable. Never applied twice: an edit is only offered to
    /// a successor when the room it was sent to did not take it.
    pub async fn edit(
        self: &Arc<Self>,
        key: &RoomKey,
        edit: ServerEdit,
    ) -> Result<Result<oneshot::Receiver<bool>, EditError>, RoomError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Edit {
            edit: Box::new(edit),
            reply,
        };
        self.deliver(key, cmd).await?;
        match tokio::time::timeout(ROOM_TIMEOUT, rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(RoomError::Closed),
            Err(_) => Err(RoomError::Timeout),
        }
    }

    /// Members of the room if it is open on this node (empty otherwise: nothing is spawned).
    pub async fn members(&self, key: &RoomKey) -> Vec<MemberInfo> {
        match self.get(key) {
            Some(handle) => handle.members().await,
            None => Vec::new(),
        }
    }
}
