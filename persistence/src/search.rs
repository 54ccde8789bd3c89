//! What search keeps in the store: the indexing queue, each room's indexed chunks (text, full
//! text index, embedding) and a change sequence that every node follows to keep its in-memory
//! vector index current. Tenant-scoped like the catalog (row-level security, forced, in
//! Postgres; a tenant in every `WHERE` in SQLite), except the few cross-tenant reads that
//! return ids only (Postgres: SECURITY DEFINER functions).
//!
//! - The queue: [`AppendBatch::search_due`](crate::AppendBatch) queues a room in the same
//!   transaction as the updates that changed it, so a crash never keeps a change and loses
//!   its indexing. A room already queued keeps its due time (a burst of edits costs one
//!   indexing) and counts a new generation, so an indexer that was working meanwhile sees that
//!   it must run again ([`SearchIndex::finish_search_job`]). Claiming leases a row (its due
//!   time moves ahead), so a node that dies mid-indexing leaves it to the next claim.
//! - Chunks: keyed by room and content hash. Replacing a room's chunks keeps the rows (and
//!   embeddings) whose hash is unchanged and bumps the room's change number.
//! - Full text: Postgres `tsvector` (generated from the chunk text with the tenant's language)
//!   with a GIN index; SQLite FTS5 (`porter unicode61`). Snippets mark matches with
//!   [`HIT_START`] and [`HIT_END`].

use async_trait::async_trait;

use crate::StoreError;

/// Marks the start of a match in a snippet (a control character that indexed text never
/// holds: the indexer strips them).
pub const HIT_START: char = '\u{2}';
/// Marks the end of a match in a snippet.
pub const HIT_END: char = '\u{3}';

/// Longest vector stored (the largest embedding models' 3,072 dimensions).
pub const MAX_DIMENSIONS: usize = 3072;

/// A room claimed for indexing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchJob {
    /// Tenant.
    pub tenant: String,
    /// Room.
    pub room: String,
    /// The row's generation when claimed.
    pub generation: i64,
}

/// One chunk of a room's text as indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Hex of the content hash (the chunk's key within the room).
    pub hash: String,
    /// Its place among the room's chunks.
    pub ord: i32,
    /// Where it starts in the room's plain text, in characters.
    pub start: i64,
    /// The root (Y.XmlFragment or Y.Text) it starts in.
    pub field: String,
    /// A Yjs relative position (base64 of `Y.encodeRelativePosition`) where it starts.
    pub position: Option<String>,
    /// Where each of its lines starts (offsets and relative positions, JSON written and read
    /// by the hub), so that a hit inside the chunk opens at its own line.
    pub lines: Option<String>,
    /// Its text.
    pub text: String,
    /// The embedding model, empty without an embedding.
    pub model: String,
    /// The embedding (unit length), if any.
    pub vector: Option<Vec<f32>>,
}

/// Which rooms a query may return: what the caller's token grants, narrowed by an optional
/// prefix. Applied inside the query, so a caller granted a few rooms of many still gets their
/// best matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomFilter {
    /// Every room of the tenant.
    pub all: bool,
    /// Rooms by exact name.
    pub exact: Vec<String>,
    /// Rooms by name prefix.
    pub prefixes: Vec<String>,
    /// Only rooms starting with this, in any case.
    pub within: Option<String>,
}

impl RoomFilter {
    /// From token patterns (`name`, `prefix*`, `*`).
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S], within: Option<String>) -> Self {
        let mut f = RoomFilter {
            within,
            ..RoomFilter::default()
        };
        for p in patterns {
            match p.as_ref().strip_suffix('*') {
                Some("") => f.all = true,
                Some(prefix) => f.prefixes.push(prefix.to_owned()),
                None => f.exact.push(p.as_ref().to_owned()),
            }
        }
        f
    }

    /// Whether `room` passes.
    pub fn allows(&self, room: &str) -> bool {
        let granted = self.all
            || self.exact.iter().any(|r| r == room)
            || self.prefixes.iter().any(|p| room.starts_with(p.as_str()));
        granted && self.within.as_deref().is_none_or(|w| room.starts_with(w))
    }

    /// Whether no room can pass.
    pub fn is_empty(&self) -> bool {
        !self.all && self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// A full-text match: the best chunk of a room.
#[derive(Debug, Clone, PartialEq)]
pub struct TextHit {
    /// Room.
    pub room: String,
    /// The chunk.
    pub hash: String,
    /// Where the chunk starts in the room's text.
    pub start: i64,
    /// Its root.
    pub field: String,
    /// Its relative position.
    pub position: Option<String>,
    /// Its lines' offsets and positions (see [`Chunk::lines`]).
    pub lines: Option<String>,
    /// Its text.
    pub body: String,
    /// An excerpt around the matches, which are between [`HIT_START`] and [`HIT_END`].
    pub snippet: String,
    /// The engine's score (higher is better).
    pub score: f64,
}

/// A room whose index changed, from the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchChange {
    /// Tenant.
    pub tenant: String,
    /// Room.
    pub room: String,
    /// Change number (increasing across the store, in commit order).
    pub seq: i64,
}

/// A chunk's vector, for building a node's vector index.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVector {
    /// Room.
    pub room: String,
    /// The chunk's hash.
    pub hash: String,
    /// The embedding model.
    pub model: String,
    /// The vector.
    pub vector: Vec<f32>,
}

/// Search's part of a store. Implementations must pass `suite::search` (feature `testing`).
#[async_trait]
pub trait SearchIndex: Send + Sync + 'static {
    /// Queues rooms for indexing at `due_ms` (milliseconds since the epoch): backfill and
    /// reindexing. A queued room keeps the earlier due time.
    async fn enqueue_search(
        &self,
        tenant: &str,
        rooms: &[String],
        due_ms: i64,
    ) -> Result<(), StoreError>;

    /// Queues every room with a stored document (of `tenant`, or of every tenant), due at
    /// `due_ms`: the backfill and `chorus reindex`. Rooms already queued keep their row. How
    /// many were queued.
    async fn enqueue_stored_rooms(
        &self,
        tenant: Option<&str>,
        due_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Claims up to `limit` rooms due at `now_ms` and not leased, of every tenant, oldest due
    /// first: each is leased until `now_ms + lease_ms`, so other nodes skip it until then (an
    /// edit meanwhile moves its due time and generation, never its lease).
    async fn claim_search_jobs(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<SearchJob>, StoreError>;

    /// Ends a claimed job and its lease: the row goes unless the room changed since the claim
    /// (its generation moved; generations only grow); then it stays, due at `again_ms`.
    /// Whether it went.
    async fn finish_search_job(&self, job: &SearchJob, again_ms: i64) -> Result<bool, StoreError>;

    /// Rows in the queue (all tenants), and how many are due at `now_ms`.
    async fn search_queue_depth(&self, now_ms: i64) -> Result<(u64, u64), StoreError>;

    /// The room's chunks as indexed, in order.
    async fn room_chunks(&self, tenant: &str, room: &str) -> Result<Vec<Chunk>, StoreError>;

    /// Makes `chunks` the room's index: rows of other hashes go, new ones come, kept ones are
    /// updated (order, offsets, position; their embedding stays unless a new one is given).
    /// `language` is the full-text configuration (Postgres). Bumps the room's change number.
    /// With `job`, only while the room is still queued (in the same transaction): an indexing
    /// that overlaps the room's deletion writes nothing, instead of bringing it back.
    async fn replace_room_chunks(
        &self,
        tenant: &str,
        room: &str,
        chunks: &[Chunk],
        language: &str,
        now: i64,
        job: Option<&SearchJob>,
    ) -> Result<(), StoreError>;

    /// Removes the room from the index (a deleted room): its chunks go, and its change number
    /// moves so that every node drops its vectors.
    async fn delete_room_index(&self, tenant: &str, room: &str) -> Result<(), StoreError>;

    /// Full-text search of the tenant's rooms that `filter` allows: the best chunk of each
    /// room, best first.
    async fn search_text(
        &self,
        tenant: &str,
        query: &str,
        language: &str,
        filter: &RoomFilter,
        limit: u32,
    ) -> Result<Vec<TextHit>, StoreError>;

    /// Chunks by room and hash (for semantic hits): only rows that still exist come back.
    async fn chunks_by_hash(
        &self,
        tenant: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<(String, Chunk)>, StoreError>;

    /// Rooms whose index changed after `after`, in change order, at most `limit` (all tenants).
    async fn search_changes(&self, after: i64, limit: u32)
    -> Result<Vec<SearchChange>, StoreError>;

    /// The newest change number (0 before any).
    async fn last_search_change(&self) -> Result<i64, StoreError>;

    /// The room's vectors.
    async fn room_vectors(&self, tenant: &str, room: &str)
    -> Result<Vec<StoredVector>, StoreError>;

    /// The tenant's vectors in pages, by room and hash: at most `limit` after `after` (pass
    /// `("", "")` first, then the last row's room and hash).
    async fn tenant_vectors(
        &self,
        tenant: &str,
        after: (&str, &str),
        limit: u32,
    ) -> Result<Vec<StoredVector>, StoreError>;

    /// Counts `tokens` of AI use that is not a run (embeddings) at `at` toward the tenant's
    /// daily budget ([`crate::AiRuns::ai_tokens_since`] includes it).
    async fn record_ai_usage(&self, tenant: &str, at: i64, tokens: u64) -> Result<(), StoreError>;
}

/// Reads a chunk row (columns `hash, ord, start_offset, field, position, lines, body, model,
/// embedding`) from either database.
pub(crate) fn chunk_from_row<R>(row: &R) -> Result<Chunk, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i32: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<Vec<u8>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let embedding: Option<Vec<u8>> = row.try_get("embedding")?;
    Ok(Chunk {
        hash: row.try_get("hash")?,
        ord: row.try_get("ord")?,
        start: row.try_get("start_offset")?,
        field: row.try_get("field")?,
        position: row.try_get("position")?,
        lines: row.try_get("lines")?,
        text: row.try_get("body")?,
        model: row.try_get("model")?,
        vector: embedding.as_deref().and_then(vector_from_bytes),
    })
}

/// Reads a vector row (`room, hash, model, embedding`) from either database; a corrupt vector
/// reads as empty (the caller skips it, and pages on past it).
pub(crate) fn vector_from_row<R>(row: &R) -> Result<StoredVector, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Vec<u8>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let bytes: Vec<u8> = row.try_get("embedding")?;
    Ok(StoredVector {
        room: row.try_get("room")?,
        hash: row.try_get("hash")?,
        model: row.try_get("model")?,
        vector: vector_from_bytes(&bytes).unwrap_or_default(),
    })
}

/// A vector as stored: little-endian `f32`s.
pub fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A stored vector back; `None` for a length that is not whole `f32`s or too long.
pub fn vector_from_bytes(b: &[u8]) -> Option<Vec<f32>> {
    if !b.len().is_multiple_of(4) || b.len() / 4 > MAX_DIMENSIONS {
        return None;
    }
    Some(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// The UTC day (its first second) that `at` falls in.
pub fn utc_day(at: i64) -> i64 {
    at - at.rem_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_roundtrip_and_bad_lengths_are_refused() {
        let v = vec![0.5f32, -1.25, 3.0];
        assert_eq!(vector_from_bytes(&vector_bytes(&v)), Some(v));
        assert_eq!(vector_from_bytes(&[1, 2, 3]), None);
        assert_eq!(vector_from_bytes(&vec![0; 4 * (MAX_DIMENSIONS + 1)]), None);
    }

    #[test]
    fn filters_follow_token_patterns() {
        let f = RoomFilter::from_patterns(&["team/*", "hr/open"], None);
        assert!(f.allows("team/plan") && f.allows("hr/open"));
        assert!(!f.allows("hr/pay") && !f.allows("hr/open2") && !f.allows("team"));
        let narrowed = RoomFilter::from_patterns(&["*"], Some("eng/".into()));
        assert!(narrowed.allows("eng/a") && !narrowed.allows("team/a"));
        assert!(RoomFilter::from_patterns::<&str>(&[], None).is_empty());
    }
}
