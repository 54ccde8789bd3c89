//! The catalog: everything a store holds besides document content. Tenants and their settings,
//! token verification keys, REST API keys (hashed), room records, named versions, webhook
//! endpoints and the webhook outbox.
//!
//! Every method but the operator's tenant listing and the outbox claim is scoped to one
//! tenant: the Postgres store runs it in a transaction with `SET LOCAL chorus.tenant_id`, so
//! row-level security confines it to that tenant even if a query forgot its `WHERE tenant_id`.
//! Times are seconds since the Unix epoch.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use crate::StoreError;

/// A tenant (organisation).
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// Stable id, used in tokens (`tenant` claim) and API keys.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Limits and options as a JSON object (validated by the hub, stored as JSONB).
    pub settings: Value,
    /// Creation time.
    pub created: i64,
}

/// A token verification key of a tenant. Several are active at once; tokens name theirs with
/// the JWT `kid` header, so keys rotate without downtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// Owning tenant.
    pub tenant: String,
    /// Key id (JWT `kid`), unique within the tenant.
    pub kid: String,
    /// `HS256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// The HS256 secret, or the public key in PEM form.
    pub material: String,
    /// Creation time.
    pub created: i64,
    /// When it was revoked; revoked keys verify nothing.
    pub revoked: Option<i64>,
}

/// A REST API key of a tenant. Only the hash of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Owning tenant.
    pub tenant: String,
    /// Public part of the key, unique within the tenant.
    pub key_id: String,
    /// Password hash (PHC string) of the secret part.
    pub hash: String,
    /// What the operator called it.
    pub name: String,
    /// Creation time.
    pub created: i64,
    /// When it was revoked.
    pub revoked: Option<i64>,
}

/// A room as the REST API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomInfo {
    /// Room name.
    pub room: String,
    /// Application metadata (a JSON object, JSONB).
    pub meta: Value,
    /// When the room was created (first join or REST create).
    pub created: i64,
    /// Bytes stored for its document (snapshot plus update log).
    pub stored_bytes: i64,
    /// Time of the newest stored update or snapshot, if any.
    pub last_activity: Option<i64>,
}

/// Outcome of [`Catalog::create_room`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomCreated {
    /// A new room record was written.
    Created,
    /// The room already had a record (left unchanged).
    Exists,
    /// The tenant already has `max_rooms` rooms; nothing was written.
    LimitReached,
}

/// A named version of a room's document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Id, increasing within the store.
    pub id: i64,
    /// Room name.
    pub room: String,
    /// Name given when it was created.
    pub name: String,
    /// Creation time.
    pub created: i64,
    /// Size of the stored state.
    pub bytes: i64,
}

/// A tenant's webhook endpoint and the outcome of its latest delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where events are POSTed.
    pub url: String,
    /// HMAC-SHA256 signing secret.
    pub secret: String,
    /// Event names delivered; empty means every event.
    pub events: Vec<String>,
    /// HTTP status of the latest attempt (None before any, or when no response came).
    pub last_status: Option<i32>,
    /// Error of the latest attempt, when it failed.
    pub last_error: Option<String>,
    /// Time of the latest attempt.
    pub last_attempt: Option<i64>,
}

/// An event to deliver, written to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Tenant whose webhook receives it.
    pub tenant: String,
    /// Event name, e.g. `document.changed`.
    pub event: String,
    /// JSON body delivered.
    pub body: Value,
    /// Seconds before the first delivery attempt (0: at once). A debounced event is written
    /// with the first change it reports and delivered once its window has closed, so it is
    /// as durable as that change and reports every later change of the window too.
    pub delay: i64,
}

/// An outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Delivery id (stable across retries).
    pub id: i64,
    /// Tenant.
    pub tenant: String,
    /// Event name.
    pub event: String,
    /// JSON body.
    pub body: Value,
    /// Creation time.
    pub created: i64,
    /// Attempts made so far.
    pub attempts: i32,
    /// Earliest time of the next attempt.
    pub next_attempt: i64,
    /// When it was delivered (2xx), if it was.
    pub delivered: Option<i64>,
    /// Whether delivery was given up after too many failures.
    pub failed: bool,
    /// HTTP status of the latest attempt.
    pub last_status: Option<i32>,
    /// Error of the latest attempt.
    pub last_error: Option<String>,
}

/// What a store keeps besides documents. Implementations must pass
/// `suite::catalog` (feature `testing`).
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Creates a tenant; `false` if the id is taken.
    async fn create_tenant(&self, tenant: &Tenant) -> Result<bool, StoreError>;
    /// One tenant.
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError>;
    /// Every tenant, by id (operator only).
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Changes name and/or settings; `false` if there is no such tenant.
    async fn update_tenant(
        &self,
        id: &str,
        name: Option<&str>,
        settings: Option<&Value>,
    ) -> Result<bool, StoreError>;
    /// Deletes the tenant and every row it owns in every table; `false` if unknown.
    async fn delete_tenant(&self, id: &str) -> Result<bool, StoreError>;

    /// Adds a verification key; `false` if the tenant already has that `kid`.
    async fn add_signing_key(&self, key: &SigningKey) -> Result<bool, StoreError>;
    /// The tenant's keys, revoked ones included, oldest first.
    async fn list_signing_keys(&self, tenant: &str) -> Result<Vec<SigningKey>, StoreError>;
    /// Revokes a key at `at`; `false` if unknown or already revoked.
    async fn revoke_signing_key(
        &self,
        tenant: &str,
        kid: &str,
        at: i64,
    ) -> Result<bool, StoreError>;

    /// Adds an API key; `false` if the tenant already has that key id.
    async fn add_api_key(&self, key: &ApiKey) -> Result<bool, StoreError>;
    /// One API key (revoked or not).
    async fn get_api_key(&self, tenant: &str, key_id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// The tenant's API keys, oldest first.
    async fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, StoreError>;
    /// Revokes an API key at `at`; `false` if unknown or already revoked.
    async fn revoke_api_key(&self, tenant: &str, key_id: &str, at: i64)
    -> Result<bool, StoreError>;

    /// Records a room. With `max_rooms`, refuses when the tenant already has that many
    /// records (checked in the same transaction as the insert).
    async fn create_room(
        &self,
        tenant: &str,
        room: &str,
        meta: &Value,
        max_rooms: Option<u64>,
        now: i64,
    ) -> Result<RoomCreated, StoreError>;
    /// One room with its stored size and last activity; `None` without a record.
    async fn get_room(&self, tenant: &str, room: &str) -> Result<Option<RoomInfo>, StoreError>;
    /// The tenant's rooms by name, at most `limit`, names after `after` (paging).
    async fn list_rooms(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RoomInfo>, StoreError>;
    /// Deletes the room record, its document (snapshot and log) and its versions in one
    /// transaction; `false` if there was no record and no document.
    async fn delete_room_everything(&self, tenant: &str, room: &str) -> Result<bool, StoreError>;

    /// Stores a named version holding `state` (a v1 update of the whole document).
    async fn create_version(
        &self,
        tenant: &str,
        room: &str,
        name: &str,
        state: &[u8],
        now: i64,
    ) -> Result<VersionInfo, StoreError>;
    /// The room's versions, oldest first.
    async fn list_versions(&self, tenant: &str, room: &str)
    -> Result<Vec<VersionInfo>, StoreError>;
    /// One version and its state.
    async fn get_version(
        &self,
        tenant: &str,
        room: &str,
        id: i64,
    ) -> Result<Option<(VersionInfo, Bytes)>, StoreError>;

    /// Sets (replaces) the tenant's webhook; the delivery status starts empty.
    async fn set_webhook(&self, tenant: &str, hook: &Webhook) -> Result<(), StoreError>;
    /// The tenant's webhook.
    async fn get_webhook(&self, tenant: &str) -> Result<Option<Webhook>, StoreError>;
    /// Removes the webhook and its undelivered events (pending or given up; delivered ones
    /// stay listed); `false` if there was none.
    async fn delete_webhook(&self, tenant: &str) -> Result<bool, StoreError>;

    /// Writes events to the outbox (one transaction), due at once.
    async fn enqueue_events(&self, events: &[NewEvent], now: i64) -> Result<(), StoreError>;
    /// Claims up to `limit` undelivered, not given-up events due at `now`, of every tenant,
    /// oldest first: their next attempt moves to `now + lease` so other nodes skip them.
    async fn claim_events(
        &self,
        now: i64,
        lease: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError>;
    /// Records an attempt. `delivered`: mark delivered. Otherwise `retry_at` schedules the
    /// next attempt, or `None` gives up. Also updates the webhook's last status.
    async fn record_attempt(
        &self,
        tenant: &str,
        id: i64,
        attempt: &Attempt,
    ) -> Result<(), StoreError>;
    /// The tenant's newest outbox rows, newest first.
    async fn list_events(&self, tenant: &str, limit: u32) -> Result<Vec<OutboxEvent>, StoreError>;
    /// Deletes the tenant's delivered and given-up outbox rows created before `before`;
    /// returns how many. Pending events are never pruned.
    async fn prune_events(&self, tenant: &str, before: i64) -> Result<u64, StoreError>;
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When it was made.
    pub at: i64,
    /// HTTP status, if a response came.
    pub status: Option<i32>,
    /// What went wrong, if it failed.
    pub error: Option<String>,
    /// Whether the receiver accepted it (2xx).
    pub delivered: bool,
    /// When to try again after a failure; `None` gives up.
    pub retry_at: Option<i64>,
}

/// A store that keeps documents and the catalog: what the hub runs on.
pub trait Store: crate::DocStore + Catalog + crate::AiRuns + crate::SearchIndex {}

impl<T: crate::DocStore + Catalog + crate::AiRuns + crate::SearchIndex> Store for T {}
