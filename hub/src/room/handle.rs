//! How a room is reached from outside its task: [`RoomHandle`], one incarnation's queue
//! behind typed methods, and the errors a request to a room can end in. The registry finds
//! (or spawns) the live incarnation and retries on its successor; this module knows nothing
//! of the registry.

use chorus_persistence::RoomKey;
use chorus_protocol::CloseCode;
use tokio::sync::{mpsc, oneshot};

use super::{Command, Inbound, MemberInfo};
use crate::outbound::ConnId;

/// How a room is reached: one incarnation of it. Its methods ask that incarnation only; the
/// the registry's methods of the same names find (or spawn) the live incarnation and hand a
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
pub(crate) const ATTEMPTS: usize = 8;

impl RoomHandle {
    /// The handle of incarnation `generation` of `key`, whose task reads `tx`'s queue.
    pub(crate) fn new(generation: u64, key: RoomKey, tx: mpsc::Sender<Command>) -> Self {
        Self {
            generation,
            key,
            tx,
        }
    }

    /// Commands waiting in the room's queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues `cmd`, waiting for room in the queue; hands it back if this incarnation has
    /// exited (its successor may take it).
    pub(crate) async fn offer(&self, cmd: Command) -> Result<(), Command> {
        self.tx
            .send(cmd)
            .await
            .map_err(|mpsc::error::SendError(back)| back)
    }

    /// Queues `cmd` if there is room at once: for senders that must never wait (the broker's
    /// dispatch, broadcasts to every room). `false` if it was dropped.
    pub(crate) fn try_offer(&self, cmd: Command) -> bool {
        self.tx.try_send(cmd).is_ok()
    }

    /// The room's queue, for the parts of the node that feed it directly (the cluster bus,
    /// background tasks of the room itself).
    pub(crate) fn sender(&self) -> mpsc::Sender<Command> {
        self.tx.clone()
    }

    /// Messages a member sent, in order. `false` when this incarnation has exited.
    pub async fn inbound(&self, conn: ConnId, msgs: Vec<Inbound>) -> bool {
        self.inbound_traced(conn, msgs, tracing::Span::none()).await
    }

    /// [`RoomHandle::inbound`] of a frame handled inside `span` (an `update` span): the room's
    /// work on it continues that span.
    pub async fn inbound_traced(
        &self,
        conn: ConnId,
        msgs: Vec<Inbound>,
        span: tracing::Span,
    ) -> bool {
        let span = (!span.is_disabled()).then(|| Box::new(span));
        self.tx
            .send(Command::Inbound { conn, msgs, span })
            .await
            .is_ok()
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
