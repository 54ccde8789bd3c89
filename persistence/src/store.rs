use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::StoreError;

/// A room's identity: rooms of different tenants never share anything, even a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    /// Tenant (organisation) id.
    pub tenant: Arc<str>,
    /// Room name within the tenant.
    pub room: Arc<str>,
}

impl RoomKey {
    /// Builds a key.
    pub fn new(tenant: impl Into<Arc<str>>, room: impl Into<Arc<str>>) -> Self {
        Self {
            tenant: tenant.into(),
            room: room.into(),
        }
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.room)
    }
}

/// What a store holds for one room.
#[derive(Debug, Clone, Default)]
pub struct LoadedDoc {
    /// The latest snapshot (a v1 update holding the whole document up to `snapshot_upto`).
    pub snapshot: Option<Bytes>,
    /// Log id merged into the snapshot (0 without a snapshot).
    pub snapshot_upto: i64,
    /// Updates appended after the snapshot, oldest first.
    pub updates: Vec<Bytes>,
    /// Highest log id returned (equals `snapshot_upto` when the log is empty).
    pub last_id: i64,
}

impl LoadedDoc {
    /// Whether nothing was ever stored for the room.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.updates.is_empty()
    }

    /// Bytes stored for the room (snapshot plus log).
    pub fn stored_bytes(&self) -> usize {
        self.snapshot.as_ref().map_or(0, Bytes::len)
            + self.updates.iter().map(Bytes::len).sum::<usize>()
    }
}

/// Updates of one room to append, in order.
#[derive(Debug, Clone)]
pub struct AppendBatch {
    /// The room.
    pub key: RoomKey,
    /// v1 updates, oldest first.
    pub updates: Vec<Bytes>,
    /// Webhook events written to the outbox in the same transaction as the updates, so a
    /// crash never keeps the change and loses its event (or the reverse).
    pub events: Vec<crate::NewEvent>,
    /// Queues the room for search indexing, due at this time (milliseconds since the epoch),
    /// in the same transaction: a crash never keeps the change and loses its indexing.
    /// `None` where search is off.
    pub search_due: Option<i64>,
}

impl AppendBatch {
    /// The rooms of `batches` to queue for search, with their due times.
    pub(crate) fn search_keys(batches: &[AppendBatch]) -> Vec<(&str, &str, i64)> {
        batches
            .iter()
            .filter_map(|b| b.search_due.map(|due| (&*b.key.tenant, &*b.key.room, due)))
            .collect()
    }
}

/// What a room's log holds now: what a compaction of the document the room already has in
/// memory merges and deletes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogSummary {
    /// Highest log id (0 when the log is empty).
    pub last_id: i64,
    /// Log entries after the snapshot.
    pub entries: usize,
    /// Their total size.
    pub bytes: usize,
    /// The snapshot's size (0 without one).
    pub snapshot_bytes: usize,
}

impl LogSummary {
    /// From the figures a database returned: a negative count means a broken database.
    pub fn from_counts(
        key: &RoomKey,
        last_id: i64,
        entries: i64,
        bytes: i64,
        snapshot_bytes: i64,
    ) -> Result<Self, StoreError> {
        let size = |n: i64, what: &str| {
            usize::try_from(n).map_err(|_| StoreError::Corrupt {
                room: key.to_string(),
                detail: format!("{what} is {n}"),
            })
        };
        Ok(Self {
            last_id,
            entries: size(entries, "log length")?,
            bytes: size(bytes, "log size")?,
            snapshot_bytes: size(snapshot_bytes, "snapshot size")?,
        })
    }
}

/// A document store. Implementations must pass the shared suite (`suite`, feature `testing`).
#[async_trait]
pub trait DocStore: Send + Sync + 'static {
    /// Loads a room's snapshot and the log after it. An unknown room loads as empty.
    async fn load(&self, key: &RoomKey) -> Result<LoadedDoc, StoreError>;

    /// Appends every batch in one transaction: either all are durable or none is.
    async fn append(&self, batches: &[AppendBatch]) -> Result<(), StoreError>;

    /// Sums up the room's log. Every entry up to `last_id` has committed: a compaction that
    /// reads this first and then encodes a document holding every committed update may write
    /// it as the snapshot up to `last_id`.
    async fn log_summary(&self, key: &RoomKey) -> Result<LogSummary, StoreError>;

    /// Replaces the room's snapshot with `snapshot`, which merges every log entry up to and
    /// including `upto_id`, and deletes those entries, atomically. Entries after `upto_id` stay.
    /// A snapshot older than the stored one (`upto_id` lower) is ignored.
    async fn write_snapshot(
        &self,
        key: &RoomKey,
        upto_id: i64,
        snapshot: &[u8],
    ) -> Result<(), StoreError>;

    /// Compacts the room like [`crate::compact`] unless another compaction of it is running
    /// (on another node sharing the database): `Ok(None)` then, and nothing changes. Postgres
    /// holds a transaction-scoped advisory lock on the room for the whole compaction, released
    /// by the database even when the node dies; SQLite, one node's file, needs none.
    async fn compact_exclusive(
        &self,
        key: &RoomKey,
    ) -> Result<Option<crate::CompactStats>, StoreError>;

    /// Deletes everything stored for the room.
    async fn delete_room(&self, key: &RoomKey) -> Result<(), StoreError>;

    /// Checks that the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}
