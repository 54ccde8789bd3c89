//! The record of AI runs: one row per run, written when it is asked for and updated as it
//! ends. Tenant-scoped like the catalog (row-level security, forced, in Postgres; a tenant in
//! every `WHERE` in SQLite).

use async_trait::async_trait;

use crate::StoreError;

/// One AI run as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiRun {
    /// Tenant.
    pub tenant: String,
    /// Run id.
    pub id: String,
    /// Room.
    pub room: String,
    /// Who asked (`sub`; empty for anonymous and API-key callers).
    pub user: String,
    /// The operator's provider name.
    pub provider: String,
    /// The model.
    pub model: String,
    /// `chat` or `document`.
    pub target: String,
    /// `direct` or `suggest`.
    pub mode: String,
    /// `queued`, `running`, `done`, `cancelled`, `failed`, `interrupted`, `reverted`,
    /// `accepted`, `rejected`.
    pub status: String,
    /// The Yjs client id the run wrote under (its items are attributable to it).
    pub client_id: u64,
    /// The node that ran it.
    pub node: String,
    /// The caller's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// Prompt tokens (reported by the provider, or estimated).
    pub prompt_tokens: u64,
    /// Completion tokens (reported by the provider, or estimated).
    pub completion_tokens: u64,
    /// Milliseconds to the first token.
    pub ttft_ms: Option<u64>,
    /// Milliseconds from start to end.
    pub duration_ms: Option<u64>,
    /// The error code, for runs that did not complete.
    pub error: Option<String>,
    /// When it was asked (seconds since the epoch).
    pub created: i64,
    /// When it ended.
    pub finished: Option<i64>,
}

/// How a run ended (or changed status later: reverted, accepted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AiRunUpdate {
    /// The new status.
    pub status: String,
    /// Token counts, if known now.
    pub tokens: Option<(u64, u64)>,
    /// Milliseconds to the first token.
    pub ttft_ms: Option<u64>,
    /// Milliseconds from start to end.
    pub duration_ms: Option<u64>,
    /// The error code.
    pub error: Option<String>,
    /// When it ended.
    pub finished: Option<i64>,
}

/// Filters of a run listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AiRunFilter {
    /// Only this room.
    pub room: Option<String>,
    /// Only this asker.
    pub user: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only runs asked before this time (paging: pass the last `created`).
    pub before: Option<i64>,
    /// At most this many (newest first).
    pub limit: u32,
}

/// The record of AI runs.
#[async_trait]
pub trait AiRuns: Send + Sync + 'static {
    /// Records a new run. `Ok(Some(existing))` if the caller's idempotency key was used
    /// before (nothing is written); `Ok(None)` once recorded.
    async fn insert_ai_run(&self, run: &AiRun) -> Result<Option<AiRun>, StoreError>;
    /// Updates a run's status and figures; whether the run exists.
    async fn update_ai_run(
        &self,
        tenant: &str,
        id: &str,
        update: &AiRunUpdate,
    ) -> Result<bool, StoreError>;
    /// One run.
    async fn get_ai_run(&self, tenant: &str, id: &str) -> Result<Option<AiRun>, StoreError>;
    /// Runs, newest first.
    async fn list_ai_runs(
        &self,
        tenant: &str,
        filter: &AiRunFilter,
    ) -> Result<Vec<AiRun>, StoreError>;
    /// Marks the tenant's runs that `node` left `queued` or `running` as `interrupted` and
    /// returns them (at start, after a crash).
    async fn interrupt_ai_runs(
        &self,
        tenant: &str,
        node: &str,
        at: i64,
    ) -> Result<Vec<AiRun>, StoreError>;
    /// Tokens (prompt and completion) of the tenant's runs asked at or after `since`.
    async fn ai_tokens_since(&self, tenant: &str, since: i64) -> Result<u64, StoreError>;
}

/// The columns every query reads, in [`AiRun`]'s order.
pub(crate) const COLUMNS: &str = "tenant_id, id, room, user_id, provider, model, target, mode, \
     status, client_id, node, idempotency_key, prompt_tokens, completion_tokens, ttft_ms, \
     duration_ms, error, created, finished";

/// Reads a row of [`COLUMNS`] from either database.
pub(crate) fn from_row<R>(row: &R) -> Result<AiRun, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(AiRun {
        tenant: row.try_get("tenant_id")?,
        id: row.try_get("id")?,
        room: row.try_get("room")?,
        user: row.try_get("user_id")?,
        provider: row.try_get("provider")?,
        model: row.try_get("model")?,
        target: row.try_get("target")?,
        mode: row.try_get("mode")?,
        status: row.try_get("status")?,
        client_id: n(row.try_get("client_id")?),
        node: row.try_get("node")?,
        idempotency_key: row.try_get("idempotency_key")?,
        prompt_tokens: n(row.try_get("prompt_tokens")?),
        completion_tokens: n(row.try_get("completion_tokens")?),
        ttft_ms: row.try_get::<Option<i64>, _>("ttft_ms")?.map(n),
        duration_ms: row.try_get::<Option<i64>, _>("duration_ms")?.map(n),
        error: row.try_get("error")?,
        created: row.try_get("created")?,
        finished: row.try_get("finished")?,
    })
}

/// A count as a database integer.
pub(crate) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
