//! Search across a tenant's rooms: full text and by meaning, for people (REST, the socket) and
//! for the assistant (its `search_documents` tool). docs/SEARCH.md tells the whole story.
//!
//! - Indexing: every flush of a room queues it in the store, in the same transaction as its
//!   updates (`AppendBatch::search_due`), due `--search-debounce` after the first unindexed
//!   edit. Workers claim due rooms (a lease: a node that dies mid-indexing leaves the room to
//!   the next claim), render the stored document to plain text (`docjson::plain_lines`, on the
//!   blocking pool), cut it into content-hashed chunks (`chunks`), embed the chunks whose hash
//!   has no vector of the tenant's model yet through the provider layer, and replace the
//!   room's chunks in one transaction. A room edited while it was indexed stays queued.
//! - Full text runs in the store (Postgres tsvector with GIN, SQLite FTS5).
//! - By meaning: the query is embedded and the node's per-tenant HNSW index (`vectors`) finds
//!   the nearest chunks among the rooms the caller may open; the chunks are then read from
//!   the store under the tenant's scope, so a vector of a deleted room or tenant never
//!   surfaces. Every node builds its index from the store on start and follows the store's
//!   change feed, so all nodes of a cluster answer alike.
//! - Hybrid (the default) fuses both rankings by reciprocal rank.

mod chunks;
mod vectors;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chorus_ai_bridge::provider::Provider;
use chorus_persistence::search::{
    Chunk, HIT_END, HIT_START, RoomFilter, SearchJob, TextHit, utc_day,
};
use chorus_persistence::{RoomKey, Store, StoreError};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::tenants::{TenantSettings, Tenants};

pub use chunks::{MAX_CHARS, hash};
pub use vectors::Vectors;

/// How long a claimed room is reserved for the node indexing it (far longer than an indexing
/// takes; a node that dies holding one leaves it to the next claim after this).
const LEASE: Duration = Duration::from_secs(300);
/// How often idle workers look for due rooms (other nodes' edits queue rooms too).
const POLL: Duration = Duration::from_millis(200);
/// How soon a room whose indexing failed is tried again.
const RETRY: Duration = Duration::from_secs(10);
/// Chunks per embeddings request.
const EMBED_BATCH: usize = 64;
/// Longest embeddings request while indexing.
const EMBED_PATIENCE: Duration = Duration::from_secs(60);
/// Longest embeddings request of a query: a person is waiting, and the query holds one of the
/// node's search slots meanwhile.
const QUERY_EMBED_PATIENCE: Duration = Duration::from_secs(10);
/// Most chunks of one room (about 2 MB of text).
const MAX_CHUNKS: usize = 2_500;
/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Most results of one query.
pub const MAX_LIMIT: u32 = 50;
/// Reciprocal rank fusion's constant (the usual 60: later ranks still count, the top few
/// of either list do not drown the other).
const RRF_K: f64 = 60.0;
/// Characters of a semantic hit's chunk shown as its snippet.
const SNIPPET_CHARS: usize = 240;
/// Queries answered at once on a node; more are refused at once (429), never queued: a flood
/// of searches (each may cost an embeddings request and a blocking-pool task) holds at most
/// this much of the node.
const MAX_QUERIES: usize = 64;
/// Queries of one tenant at once on a node (a quarter of [`MAX_QUERIES`]): one tenant's flood
/// leaves the others room.
const MAX_TENANT_QUERIES: usize = MAX_QUERIES / 4;

/// Milliseconds since the epoch, `after` from now.
pub fn due_ms(after: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How results are ranked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Words (full-text search).
    Text,
    /// Meaning (nearest embeddings).
    Semantic,
    /// Both, fused by reciprocal rank.
    #[default]
    Hybrid,
}

impl Mode {
    /// From a query parameter.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "text" => Some(Mode::Text),
            "semantic" => Some(Mode::Semantic),
            "hybrid" => Some(Mode::Hybrid),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::Text => "text",
            Mode::Semantic => "semantic",
            Mode::Hybrid => "hybrid",
        }
    }
}

/// A search request (checked with [`Query::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The words.
    pub q: String,
    /// The ranking.
    pub mode: Mode,
    /// Most results.
    pub limit: u32,
    /// Only rooms whose name starts with this.
    pub room_prefix: Option<String>,
}

impl Query {
    /// Checks a request from outside: 1-256 characters of query, a limit of 1-50, a prefix
    /// of at most 256 bytes.
    pub fn new(
        q: &str,
        mode: Mode,
        limit: Option<u32>,
        room_prefix: Option<String>,
    ) -> Result<Query, SearchError> {
        let q = q.trim();
        if q.is_empty() || q.chars().count() > MAX_QUERY_CHARS {
            return Err(SearchError::BadRequest(format!(
                "q must be 1-{MAX_QUERY_CHARS} characters"
            )));
        }
        let limit = limit.unwrap_or(10);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(SearchError::BadRequest(format!(
                "limit must be 1-{MAX_LIMIT}"
            )));
        }
        if room_prefix.as_ref().is_some_and(|p| p.len() > 256) {
            return Err(SearchError::BadRequest(
                "room_prefix is at most 256 bytes".into(),
            ));
        }
        Ok(Query {
            q: q.to_owned(),
            mode,
            limit,
            room_prefix: room_prefix.filter(|p| !p.is_empty()),
        })
    }
}

/// Why a query was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// A bad request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Search is off on this node or for the tenant, or search by meaning was asked for and is
    /// not available (503).
    #[error("{0}")]
    Unavailable(String),
    /// The tenant's AI tokens for today are used up (429, semantic queries).
    #[error("the tenant's AI tokens for today are used up")]
    Budget,
    /// Too many searches in progress on this node, or of this tenant (429; retry shortly).
    #[error("too many searches in progress; retry shortly")]
    Busy,
    /// The store failed (500; details in the log).
    #[error("search failed")]
    Internal,
}

/// Where a hit is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Position {
    /// The root (Y.XmlFragment or Y.Text) holding it.
    pub field: String,
    /// Its offset in the room's plain text, in characters (informative: the text moves).
    pub offset: i64,
    /// Base64 of a Yjs relative position at the chunk's start (`Y.decodeRelativePosition`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative: Option<String>,
}

/// One result: a room and its best passage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Room.
    pub room: String,
    /// Higher is better; comparable within one answer only.
    pub score: f64,
    /// The passage (plain text).
    pub snippet: String,
    /// Matched words in the snippet: `[start, end)` in Unicode code points.
    pub highlights: Vec<[usize; 2]>,
    /// Where the passage is.
    pub position: Position,
    /// Which rankings found it: `text`, `semantic`.
    pub matched: Vec<&'static str>,
}

/// A query's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The query as searched.
    pub query: String,
    /// The mode used.
    pub mode: Mode,
    /// Whether search by meaning took part.
    pub semantic: bool,
    /// Milliseconds it took.
    pub took_ms: u64,
    /// Best first.
    pub results: Vec<Hit>,
}

/// A tenant's search settings with the node's defaults applied.
struct Resolved {
    enabled: bool,
    language: String,
    embedding: Option<(Arc<dyn Provider>, String)>,
    budget: Option<u64>,
}

/// Search on one node: the indexing workers, the vector index, queries.
pub struct Search {
    store: Arc<dyn Store>,
    tenants: Arc<Tenants>,
    config: crate::config::SearchConfig,
    providers: Vec<Arc<dyn Provider>>,
    default_provider: Option<String>,
    vectors: Arc<Vectors>,
    /// Wakes the change follower (this node just indexed a room).
    changed: Notify,
    /// The change feed position this node's vector index has reached.
    seen: AtomicI64,
    /// Queries in progress on this node, and per tenant.
    running: Arc<tokio::sync::Semaphore>,
    running_per_tenant: crate::counts::Counts<String>,
    /// The node's rooms (held weakly: the registry holds this), whose live documents are read
    /// instead of the store's when they are open (`Registry::live_lines`).
    rooms: std::sync::OnceLock<std::sync::Weak<crate::registry::Registry>>,
}

impl std::fmt::Debug for Search {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search")
            .field("vectors", &self.vectors)
            .finish_non_exhaustive()
    }
}

impl Search {
    /// Search for a node (`None` with `--search=false`). `providers`: the operator's AI
    /// providers (embeddings go through them).
    pub fn new(
        store: Arc<dyn Store>,
        tenants: Arc<Tenants>,
        config: &Config,
        providers: Vec<Arc<dyn Provider>>,
    ) -> Option<Arc<Search>> {
        config.search.search_enabled.then(|| {
            Arc::new(Search {
                store,
                tenants,
                config: config.search.clone(),
                default_provider: providers.first().map(|p| p.name().to_owned()),
                providers,
                vectors: Arc::new(Vectors::new()),
                changed: Notify::new(),
                seen: AtomicI64::new(0),
                running: Arc::new(tokio::sync::Semaphore::new(MAX_QUERIES)),
                running_per_tenant: crate::counts::Counts::default(),
                rooms: std::sync::OnceLock::new(),
            })
        })
    }

    /// Lets indexing read the rooms open on this node from memory.
    pub(crate) fn attach_rooms(&self, rooms: std::sync::Weak<crate::registry::Registry>) {
        let _ = self.rooms.set(rooms);
    }

    /// Starts the workers, the vector index (built from the store, then following its change
    /// feed) and the first-start backfill. Everything stops with `stop`.
    pub fn start(self: &Arc<Self>, stop: CancellationToken) {
        for _ in 0..self.config.search_workers {
            let this = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move { this.work(stop).await });
        }
        let this = self.clone();
        let follow_stop = stop.clone();
        tokio::spawn(async move { this.follow(follow_stop).await });
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.backfill_once().await {
                tracing::warn!(error = %e, "search backfill failed");
            }
        });
        let this = self.clone();
        tokio::spawn(async move { this.gauges(stop).await });
    }

    /// The node's vector index.
    pub fn vectors(&self) -> &Arc<Vectors> {
        &self.vectors
    }

    async fn resolve(&self, tenant: &str) -> Result<Resolved, SearchError> {
        let state = self.tenants.get(tenant).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read tenant settings");
            SearchError::Internal
        })?;
        Ok(self.resolve_settings(&state.settings))
    }

    fn resolve_settings(&self, settings: &TenantSettings) -> Resolved {
        let s = settings.search.clone().unwrap_or_default();
        let models = self.config.embedding_models();
        let model = match s.embedding_model.as_deref() {
            Some("") => None,
            Some(m) if models.iter().any(|x| x == m) => Some(m.to_owned()),
            // A model the node no longer offers: the node's default.
            _ => models.first().cloned(),
        };
        let ai = settings.ai.clone().unwrap_or_default();
        let provider_name = ai.provider.or_else(|| self.default_provider.clone());
        let provider =
            provider_name.and_then(|n| self.providers.iter().find(|p| p.name() == n).cloned());
        let ai_on = ai.enabled != Some(false);
        Resolved {
            enabled: s.enabled != Some(false),
            language: s.language.unwrap_or_else(|| "english".into()),
            embedding: match (model, provider) {
                (Some(m), Some(p)) if ai_on => Some((p, m)),
                _ => None,
            },
            budget: settings.ai_tokens_per_day,
        }
    }

    /// Whether the tenant may spend `tokens` more today.
    async fn within_budget(&self, tenant: &str, budget: Option<u64>) -> bool {
        let Some(budget) = budget else { return true };
        match self
            .store
            .ai_tokens_since(tenant, utc_day(now_secs()))
            .await
        {
            Ok(used) => used < budget,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read ai token use");
                false
            }
        }
    }

    async fn embed(
        &self,
        tenant: &str,
        provider: &Arc<dyn Provider>,
        model: &str,
        inputs: &[String],
        patience: Duration,
    ) -> Option<Vec<Vec<f32>>> {
        let started = Instant::now();
        let out = tokio::time::timeout(
            patience,
            provider.embed(model, inputs, self.config.search_embedding_dimensions),
        )
        .await;
        metrics::histogram!(crate::metrics::names::SEARCH_EMBED_SECONDS)
            .record(started.elapsed().as_secs_f64());
        let out = match out {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                metrics::counter!(crate::metrics::names::SEARCH_EMBED_ERRORS_TOTAL).increment(1);
                tracing::info!(error = %e, "embedding failed");
                return None;
            }
            Err(_) => {
                metrics::counter!(crate::metrics::names::SEARCH_EMBED_ERRORS_TOTAL).increment(1);
                tracing::info!("embedding timed out");
                return None;
            }
        };
        // Provider usage, or an estimate when it reports none.
        let tokens = if out.tokens > 0 {
            out.tokens
        } else {
            inputs.iter().map(|t| t.len().div_ceil(4) as u64).sum()
        };
        if let Err(e) = self.store.record_ai_usage(tenant, now_secs(), tokens).await {
            tracing::warn!(error = %e, "cannot record embedding tokens");
        }
        if out.vectors.len() != inputs.len() {
            return None;
        }
        let dims = out.vectors.first().map_or(0, Vec::len);
        if !(1..=chorus_persistence::search::MAX_DIMENSIONS).contains(&dims)
            || out.vectors.iter().any(|v| v.len() != dims)
        {
            tracing::info!(dims, "the provider's embeddings have no usable length");
            return None;
        }
        out.vectors.into_iter().map(vectors::normalized).collect()
    }

    // ---- indexing --------------------------------------------------------------------

    async fn work(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let jobs = match self
                .store
                .claim_search_jobs(now_ms(), LEASE.as_millis() as i64, 1)
                .await
            {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim search jobs");
                    Vec::new()
                }
            };
            if jobs.is_empty() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(POLL) => continue,
                }
            }
            for job in jobs {
                let started = Instant::now();
                let (job, again) = match self.index(&job).await {
                    Ok(()) => {
                        metrics::histogram!(crate::metrics::names::SEARCH_INDEX_SECONDS)
                            .record(started.elapsed().as_secs_f64());
                        (job, due_ms(self.config.search_debounce))
                    }
                    Err(e) => {
                        metrics::counter!(crate::metrics::names::SEARCH_INDEX_ERRORS_TOTAL)
                            .increment(1);
                        tracing::warn!(tenant = %job.tenant, room = %job.room, error = %e, "indexing failed");
                        // It stays queued: finished with a generation it cannot have.
                        let failed = SearchJob {
                            generation: -1,
                            ..job
                        };
                        (failed, due_ms(RETRY))
                    }
                };
                if let Err(e) = self.store.finish_search_job(&job, again).await {
                    tracing::warn!(error = %e, "cannot finish a search job");
                }
                self.changed.notify_one();
            }
            if stop.is_cancelled() {
                return;
            }
        }
    }

    /// Indexes one room from its stored document.
    pub async fn index(&self, job: &SearchJob) -> Result<(), StoreError> {
        let resolved = match self.resolve(&job.tenant).await {
            Ok(r) => r,
            Err(_) => return Err(StoreError::Stopped),
        };
        if !resolved.enabled {
            return self.store.delete_room_index(&job.tenant, &job.room).await;
        }
        let key = RoomKey::new(job.tenant.as_str(), job.room.as_str());
        let max_chars = self.config.search_max_chars;
        // An open room's document is read where it is: rebuilding it from the store merged
        // the snapshot and every log entry again at each indexing, about a sixth of the
        // node's instructions per delivery under a steady edit load (docs/BENCHMARKS.md).
        let live = match self.rooms.get().and_then(std::sync::Weak::upgrade) {
            Some(rooms) => rooms.live_lines(&key, max_chars).await,
            None => None,
        };
        enum Read {
            Live(Vec<crate::docjson::Line>),
            Stored(chorus_persistence::LoadedDoc),
        }
        let (source, read) = match live {
            Some(lines) => ("live", Read::Live(lines)),
            None => ("store", Read::Stored(self.store.load(&key).await?)),
        };
        let pieces = tokio::task::spawn_blocking(move || {
            let lines = match read {
                Read::Live(lines) => lines,
                Read::Stored(loaded) => {
                    let (doc, errors) = loaded.into_doc(&key);
                    if !errors.is_empty() {
                        tracing::warn!(room = %key, errors = errors.len(), "stored updates were skipped while indexing");
                    }
                    crate::docjson::plain_lines(&doc, max_chars)
                }
            };
            chunks::chunk(&lines, MAX_CHUNKS)
        })
        .await
        .map_err(|_| StoreError::Stopped)?;
        let existing: HashMap<String, Chunk> = self
            .store
            .room_chunks(&job.tenant, &job.room)
            .await?
            .into_iter()
            .map(|c| (c.hash.clone(), c))
            .collect();
        let mut chunks: Vec<Chunk> = pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| Chunk {
                hash: p.hash,
                ord: i32::try_from(i).unwrap_or(i32::MAX),
                start: i64::try_from(p.start).unwrap_or(i64::MAX),
                field: p.field,
                position: p.position,
                lines: serde_json::to_string(&p.lines).ok(),
                text: p.text,
                model: String::new(),
                vector: None,
            })
            .collect();
        if let Some((provider, model)) = &resolved.embedding {
            // Only chunks without a vector of this model: an edit re-embeds what it changed,
            // a new model everything.
            let todo: Vec<usize> = chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    existing
                        .get(&c.hash)
                        .is_none_or(|e| e.model != *model || e.vector.is_none())
                })
                .map(|(i, _)| i)
                .collect();
            for batch in todo.chunks(EMBED_BATCH) {
                if !self.within_budget(&job.tenant, resolved.budget).await {
                    metrics::counter!(crate::metrics::names::SEARCH_EMBED_SKIPPED_TOTAL)
                        .increment(batch.len() as u64);
                    break;
                }
                let inputs: Vec<String> = batch.iter().map(|i| chunks[*i].text.clone()).collect();
                let Some(vectors) = self
                    .embed(&job.tenant, provider, model, &inputs, EMBED_PATIENCE)
                    .await
                else {
                    break;
                };
                metrics::counter!(crate::metrics::names::SEARCH_EMBEDDED_CHUNKS_TOTAL)
                    .increment(batch.len() as u64);
                for (i, v) in batch.iter().zip(vectors) {
                    chunks[*i].model = model.clone();
                    chunks[*i].vector = Some(v);
                }
            }
        }
        self.store
            .replace_room_chunks(
                &job.tenant,
                &job.room,
                &chunks,
                &resolved.language,
                now_secs(),
                Some(job),
            )
            .await?;
        metrics::counter!(crate::metrics::names::SEARCH_INDEXED_TOTAL, "source" => source)
            .increment(1);
        Ok(())
    }

    /// Queues every room with a stored document, of `tenant` or of every tenant, for
    /// indexing; how many.
    pub async fn queue_all(store: &dyn Store, tenant: Option<&str>) -> Result<u64, StoreError> {
        store.enqueue_stored_rooms(tenant, now_ms()).await
    }

    /// On the first start with search on (nothing indexed, nothing queued), queues every room.
    async fn backfill_once(&self) -> Result<(), StoreError> {
        if self.store.last_search_change().await? > 0
            || self.store.search_queue_depth(now_ms()).await?.0 > 0
        {
            return Ok(());
        }
        let n = Self::queue_all(&*self.store, None).await?;
        if n > 0 {
            tracing::info!(
                rooms = n,
                "search: queued every room for its first indexing"
            );
        }
        Ok(())
    }

    // ---- the vector index ------------------------------------------------------------

    /// Builds the vector index from the store, then follows the change feed.
    async fn follow(self: Arc<Self>, stop: CancellationToken) {
        loop {
            match self.build().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build the search vector index; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
        loop {
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %e, "cannot follow the search change feed");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.changed.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn build(&self) -> Result<(), StoreError> {
        let mark = self.store.last_search_change().await?;
        // The tenants with an index, from the feed (one row per indexed room).
        let mut tenants = std::collections::BTreeSet::new();
        let mut after = 0;
        loop {
            let page = self.store.search_changes(after, 5000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            tenants.extend(page.into_iter().map(|c| c.tenant));
        }
        for tenant in tenants {
            let mut cursor = (String::new(), String::new());
            let mut room: Option<String> = None;
            let mut batch: Vec<(String, String, Vec<f32>)> = Vec::new();
            loop {
                let page = self
                    .store
                    .tenant_vectors(&tenant, (&cursor.0, &cursor.1), 2000)
                    .await?;
                let Some(last) = page.last() else { break };
                cursor = (last.room.clone(), last.hash.clone());
                for v in page {
                    if room.as_deref() != Some(v.room.as_str()) {
                        if let Some(r) = room.take() {
                            self.set_room(&tenant, &r, std::mem::take(&mut batch)).await;
                        }
                        room = Some(v.room.clone());
                    }
                    if let Some(v2) = vectors::normalized(v.vector) {
                        batch.push((v.hash, v.model, v2));
                    }
                }
            }
            if let Some(r) = room.take() {
                self.set_room(&tenant, &r, batch).await;
            }
        }
        self.seen.store(mark, Ordering::Relaxed);
        let (n, bytes) = self.vectors.size();
        tracing::info!(vectors = n, bytes, "search vector index built");
        Ok(())
    }

    async fn set_room(&self, tenant: &str, room: &str, vectors: Vec<(String, String, Vec<f32>)>) {
        // The tenant's model now: only its vectors go in the index.
        let model = match self.resolve(tenant).await {
            Ok(r) => r.embedding.map(|(_, m)| m),
            Err(_) => return,
        };
        let index = self.vectors.clone();
        let (tenant, room) = (tenant.to_owned(), room.to_owned());
        let _ = tokio::task::spawn_blocking(move || match model {
            Some(model) => index.set_room(&tenant, &room, &model, &vectors),
            None => index.remove_room(&tenant, &room),
        })
        .await;
    }

    /// Applies the change feed since the last position.
    pub async fn catch_up(&self) -> Result<(), StoreError> {
        loop {
            let after = self.seen.load(Ordering::Relaxed);
            let changes = self.store.search_changes(after, 500).await?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                return Ok(());
            };
            for c in changes {
                let vectors = self.store.room_vectors(&c.tenant, &c.room).await?;
                let vectors = vectors
                    .into_iter()
                    .filter_map(|v| vectors::normalized(v.vector).map(|x| (v.hash, v.model, x)))
                    .collect();
                self.set_room(&c.tenant, &c.room, vectors).await;
            }
            self.seen.store(last, Ordering::Relaxed);
        }
    }

    /// A deleted tenant: its vectors go at once on this node (others drop them as its rooms'
    /// chunks are found gone, and on restart).
    pub fn forget_tenant(&self, tenant: &str) {
        self.vectors.remove_tenant(tenant);
    }

    async fn gauges(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Ok((queued, due)) = self.store.search_queue_depth(now_ms()).await {
                metrics::gauge!(crate::metrics::names::SEARCH_QUEUE_ROOMS).set(queued as f64);
                metrics::gauge!(crate::metrics::names::SEARCH_QUEUE_DUE_ROOMS).set(due as f64);
            }
            let (n, bytes) = self.vectors.size();
            metrics::gauge!(crate::metrics::names::SEARCH_VECTORS).set(n as f64);
            metrics::gauge!(crate::metrics::names::SEARCH_VECTOR_BYTES).set(bytes as f64);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    // ---- queries ---------------------------------------------------------------------

    /// Answers `query` over the tenant's rooms that `filter` allows.
    pub async fn query(
        &self,
        tenant: &str,
        query: &Query,
        grant: &[String],
    ) -> Result<Answer, SearchError> {
        let started = Instant::now();
        let Ok(_slot) = self.running.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::names::SEARCH_REFUSED_TOTAL).increment(1);
            return Err(SearchError::Busy);
        };
        if self.running_per_tenant.count(tenant) >= MAX_TENANT_QUERIES {
            metrics::counter!(crate::metrics::names::SEARCH_REFUSED_TOTAL).increment(1);
            return Err(SearchError::Busy);
        }
        self.running_per_tenant.add(tenant.to_owned());
        // Released when the query ends or is dropped (a caller that went away).
        let _tenant_slot = TenantSlot(&self.running_per_tenant, tenant);
        self.query_now(tenant, query, grant, started).await
    }

    async fn query_now(
        &self,
        tenant: &str,
        query: &Query,
        grant: &[String],
        started: Instant,
    ) -> Result<Answer, SearchError> {
        let resolved = self.resolve(tenant).await?;
        if !resolved.enabled {
            return Err(SearchError::Unavailable(
                "search is off for this tenant".into(),
            ));
        }
        let filter = RoomFilter::from_patterns(grant, query.room_prefix.clone());
        let want = query.limit as usize;
        let text = if query.mode == Mode::Semantic {
            Vec::new()
        } else {
            self.store
                .search_text(
                    tenant,
                    &query.q,
                    &resolved.language,
                    &filter,
                    query.limit * 2,
                )
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "full-text search failed");
                    SearchError::Internal
                })?
        };
        let mut semantic_used = false;
        let meaning = match (&resolved.embedding, query.mode) {
            (_, Mode::Text) => Vec::new(),
            (None, Mode::Semantic) => {
                return Err(SearchError::Unavailable(
                    "search by meaning is not configured for this tenant".into(),
                ));
            }
            (None, Mode::Hybrid) => Vec::new(),
            (Some((provider, model)), mode) => {
                if !self.within_budget(tenant, resolved.budget).await {
                    if mode == Mode::Semantic {
                        return Err(SearchError::Budget);
                    }
                    Vec::new()
                } else {
                    match self
                        .embed(
                            tenant,
                            provider,
                            model,
                            std::slice::from_ref(&query.q),
                            QUERY_EMBED_PATIENCE,
                        )
                        .await
                    {
                        Some(mut v) if !v.is_empty() => {
                            semantic_used = true;
                            self.nearest(tenant, model, v.swap_remove(0), want * 2, &filter)
                                .await?
                        }
                        _ if mode == Mode::Semantic => {
                            return Err(SearchError::Unavailable(
                                "the embedding provider did not answer".into(),
                            ));
                        }
                        _ => Vec::new(),
                    }
                }
            }
        };
        let mut results = fuse(query, text, meaning, query.mode);
        results.truncate(want);
        let took = started.elapsed();
        metrics::counter!(crate::metrics::names::SEARCH_QUERIES_TOTAL, "mode" => query.mode.as_str())
            .increment(1);
        metrics::histogram!(crate::metrics::names::SEARCH_QUERY_SECONDS).record(took.as_secs_f64());
        Ok(Answer {
            query: query.q.clone(),
            mode: query.mode,
            semantic: semantic_used,
            took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            results,
        })
    }

    /// The rooms nearest to `vector`, best chunk each, read back from the store.
    async fn nearest(
        &self,
        tenant: &str,
        model: &str,
        vector: Vec<f32>,
        rooms: usize,
        filter: &RoomFilter,
    ) -> Result<Vec<(Chunk, String, f32)>, SearchError> {
        let index = self.vectors.clone();
        let (t, m, f) = (tenant.to_owned(), model.to_owned(), filter.clone());
        let near =
            tokio::task::spawn_blocking(move || index.search(&t, &m, &vector, rooms * 4, &f))
                .await
                .map_err(|_| SearchError::Internal)?;
        // Best chunk per room, in order; a chunk pointing away from the query (or orthogonal
        // to it: nothing in common) is no match, however near it is among the rest.
        let mut best: Vec<vectors::Near> = Vec::new();
        for n in near.into_iter().filter(|n| n.similarity > 0.0) {
            if !best.iter().any(|b| b.room == n.room) {
                best.push(n);
            }
        }
        best.truncate(rooms);
        let keys: Vec<(String, String)> = best
            .iter()
            .map(|n| (n.room.to_string(), n.hash.clone()))
            .collect();
        let found = self
            .store
            .chunks_by_hash(tenant, &keys)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "reading semantic hits failed");
                SearchError::Internal
            })?;
        let mut by_key: HashMap<(String, String), Chunk> = found
            .into_iter()
            .map(|(room, c)| ((room, c.hash.clone()), c))
            .collect();
        Ok(best
            .into_iter()
            .filter_map(|n| {
                let room = n.room.to_string();
                by_key
                    .remove(&(room.clone(), n.hash.clone()))
                    .map(|c| (c, room, n.similarity))
            })
            .collect())
    }
}

/// One of a tenant's running searches, given back on drop.
struct TenantSlot<'a>(&'a crate::counts::Counts<String>, &'a str);

impl Drop for TenantSlot<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Text and semantic hits into one list: a mode's own scores, or reciprocal rank fusion.
fn fuse(
    query: &Query,
    text: Vec<TextHit>,
    meaning: Vec<(Chunk, String, f32)>,
    mode: Mode,
) -> Vec<Hit> {
    let mut hits: Vec<Hit> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (rank, t) in text.into_iter().enumerate() {
        let (snippet, highlights) = marked(&t.snippet);
        let chars: Vec<char> = snippet.chars().collect();
        let words: Vec<String> = highlights
            .iter()
            .map(|[a, b]| chars[*a..*b].iter().collect::<String>().to_lowercase())
            .collect();
        let (offset, relative) =
            locate(&t.body, t.lines.as_deref(), &words).unwrap_or((t.start, t.position.clone()));
        let score = match mode {
            Mode::Hybrid => 1.0 / (RRF_K + rank as f64 + 1.0),
            _ => t.score,
        };
        index.insert(t.room.clone(), hits.len());
        hits.push(Hit {
            room: t.room,
            score,
            snippet,
            highlights,
            position: Position {
                field: t.field,
                offset,
                relative,
            },
            matched: vec!["text"],
        });
    }
    for (rank, (chunk, room, similarity)) in meaning.into_iter().enumerate() {
        let rrf = 1.0 / (RRF_K + rank as f64 + 1.0);
        match index.get(&room) {
            Some(&i) => {
                hits[i].score += rrf;
                hits[i].matched.push("semantic");
            }
            None => {
                let (snippet, highlights) = excerpt(&chunk.text, &query.q);
                let (offset, relative) =
                    locate(&chunk.text, chunk.lines.as_deref(), &query_words(&query.q))
                        .unwrap_or((chunk.start, chunk.position.clone()));
                index.insert(room.clone(), hits.len());
                hits.push(Hit {
                    room,
                    score: if mode == Mode::Hybrid {
                        rrf
                    } else {
                        f64::from(similarity)
                    },
                    snippet,
                    highlights,
                    position: Position {
                        field: chunk.field,
                        offset,
                        relative,
                    },
                    matched: vec!["semantic"],
                });
            }
        }
    }
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.room.cmp(&b.room))
    });
    hits
}

/// The query's words worth finding in a passage (lower case, more than two characters).
fn query_words(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() > 2)
        .map(str::to_lowercase)
        .collect()
}

/// The line of a chunk where the first of `words` appears: its offset in the room's plain
/// text and its relative position. `None` when no word is found or the chunk has no lines.
fn locate(body: &str, lines: Option<&str>, words: &[String]) -> Option<(i64, Option<String>)> {
    let lines: Vec<(usize, Option<String>)> = serde_json::from_str(lines?).ok()?;
    let lower = body.to_lowercase();
    // Byte index of the earliest word (stemmed matches: the word's start is enough).
    let at = words
        .iter()
        .filter(|w| !w.is_empty())
        .filter_map(|w| lower.find(w.as_str()))
        .min()?;
    // Lower-casing may change lengths: count the lines before it in the lower-cased text.
    let line = lower.get(..at)?.matches('\n').count();
    let (offset, position) = lines.get(line)?.clone();
    Some((i64::try_from(offset).ok()?, position))
}

/// A snippet with the store's match markers, as plain text and code-point ranges.
fn marked(snippet: &str) -> (String, Vec<[usize; 2]>) {
    let mut text = String::with_capacity(snippet.len());
    let mut ranges = Vec::new();
    let mut at = 0usize;
    let mut open: Option<usize> = None;
    for c in snippet.chars() {
        match c {
            HIT_START => open = Some(at),
            HIT_END => {
                if let Some(s) = open.take()
                    && s < at
                {
                    ranges.push([s, at]);
                }
            }
            c => {
                text.push(c);
                at += 1;
            }
        }
    }
    (text, ranges)
}

/// The start of a chunk as a snippet, with the query's words marked where they appear.
fn excerpt(text: &str, query: &str) -> (String, Vec<[usize; 2]>) {
    // The chunk's own text, without the previous chunk's overlap line where it has more.
    let own = match text.split_once('\n') {
        Some((_, rest)) if rest.chars().count() > 40 => rest,
        _ => text,
    };
    let chars: Vec<char> = own.chars().take(SNIPPET_CHARS).collect();
    let mut snippet: String = chars.iter().collect();
    if own.chars().count() > SNIPPET_CHARS {
        snippet.push('…');
    }
    let words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() > 2)
        .map(str::to_lowercase)
        .collect();
    let mut ranges = Vec::new();
    let lower: Vec<char> = snippet.chars().flat_map(char::to_lowercase).collect();
    if lower.len() == snippet.chars().count() {
        let mut i = 0;
        while i < lower.len() {
            if !lower[i].is_alphanumeric() || (i > 0 && lower[i - 1].is_alphanumeric()) {
                i += 1;
                continue;
            }
            let end = (i..lower.len())
                .find(|j| !lower[*j].is_alphanumeric())
                .unwrap_or(lower.len());
            let word: String = lower[i..end].iter().collect();
            if words.iter().any(|w| word.starts_with(w.as_str())) {
                ranges.push([i, end]);
            }
            i = end;
        }
    }
    (snippet, ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_become_code_point_ranges() {
        let (text, ranges) = marked("a \u{2}pricé\u{3} and 😀 \u{2}x\u{3}");
        assert_eq!(text, "a pricé and 😀 x");
        assert_eq!(ranges, [[2, 7], [14, 15]]);
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(chars[2..7].iter().collect::<String>(), "pricé");
        // Unbalanced or empty markers from a broken store never panic.
        assert_eq!(marked("\u{3}a\u{2}\u{3}\u{2}b").0, "ab");
    }

    #[test]
    fn fusion_ranks_rooms_found_both_ways_first() {
        let q = Query::new("pricing plan", Mode::Hybrid, None, None).expect("query");
        let hit = |room: &str| TextHit {
            room: room.into(),
            hash: "h".into(),
            start: 0,
            field: "default".into(),
            position: None,
            lines: None,
            body: String::new(),
            snippet: format!("\u{2}pricing\u{3} of {room}"),
            score: 1.0,
        };
        let chunk = |text: &str| Chunk {
            hash: "h".into(),
            ord: 0,
            start: 5,
            field: "default".into(),
            position: Some("p".into()),
            lines: None,
            text: text.into(),
            model: "m".into(),
            vector: None,
        };
        let text = vec![hit("a"), hit("b")];
        let meaning = vec![
            (chunk("the plan for costs"), "c".to_owned(), 0.9),
            (chunk("pricing"), "b".to_owned(), 0.8),
        ];
        let fused = fuse(&q, text, meaning, Mode::Hybrid);
        let rooms: Vec<&str> = fused.iter().map(|h| h.room.as_str()).collect();
        assert_eq!(rooms, ["b", "a", "c"]);
        assert_eq!(fused[0].matched, ["text", "semantic"]);
        assert_eq!(fused[2].matched, ["semantic"]);
        assert_eq!(fused[2].snippet, "the plan for costs");
        assert_eq!(fused[2].highlights, [[4, 8]]);
    }

    #[test]
    fn a_hit_opens_at_its_own_line() {
        let lines = serde_json::to_string(&[(10usize, Some("a")), (40, Some("b")), (90, None)])
            .expect("json");
        let body = "First line\nThe Pricing line\nlast";
        assert_eq!(
            locate(body, Some(&lines), &["pricing".into()]),
            Some((40, Some("b".into())))
        );
        assert_eq!(
            locate(body, Some(&lines), &["last".into()]),
            Some((90, None))
        );
        assert_eq!(locate(body, Some(&lines), &["absent".into()]), None);
        assert_eq!(locate(body, Some("not json"), &["last".into()]), None);
        assert_eq!(locate(body, None, &["last".into()]), None);
    }

    #[test]
    fn queries_are_checked() {
        assert!(Query::new("  ", Mode::Text, None, None).is_err());
        assert!(Query::new(&"x".repeat(257), Mode::Text, None, None).is_err());
        assert!(Query::new("x", Mode::Text, Some(0), None).is_err());
        assert!(Query::new("x", Mode::Text, Some(51), None).is_err());
        assert!(Query::new("x", Mode::Text, None, Some("p".repeat(300))).is_err());
        let q = Query::new(" x ", Mode::Text, Some(50), Some(String::new())).expect("ok");
        assert_eq!((q.q.as_str(), q.room_prefix), ("x", None));
        assert_eq!(Mode::parse("semantic"), Some(Mode::Semantic));
        assert_eq!(Mode::parse("SEMANTIC"), None);
    }
}
