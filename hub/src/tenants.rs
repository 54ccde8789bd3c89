//! Tenants as the hub sees them: validated settings (limits), token verification keys by
//! `kid`, and per-tenant connection counts.
//!
//! Every connection needs its tenant's keys and limits, so they are cached here for
//! [`CACHE_TTL`]: a node does not query the database per connection. Changes made through this
//! node's REST API invalidate the entry at once; in a cluster every other node is told through
//! Redis (`AppState::changed`), and without Redis they see the change within the TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chorus_persistence::{SigningKey, Store, StoreError};
use dashmap::DashMap;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long a tenant's settings and keys are reused before they are read again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// Oldest entry served while its refresh runs in the background; older ones are waited for.
/// Bounds how long another node may accept a revoked key: at most this long.
pub const MAX_STALE: Duration = Duration::from_secs(15);

/// Cached tenants beyond which entries are dropped (bounds memory under tokens naming many
/// tenants).
const MAX_CACHED: usize = 50_000;

/// A tenant's limits, stored as JSONB in `tenants.settings`. Absent limits fall back to the
/// node's flags. Unknown keys are refused so a typo never silently means "unlimited".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Most WebSocket connections of the tenant at once on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Most rooms the tenant may have (records in the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rooms: Option<u64>,
    /// Largest document, in stored bytes (never above the node's `--max-document-bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_document_bytes: Option<u64>,
    /// Messages per second one connection may send (a burst of twice that is allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_second: Option<u32>,
    /// AI tokens (prompt and completion) per UTC day, across the tenant's runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_tokens_per_day: Option<u64>,
    /// The AI assistant: on or off, provider, models, prompt, limits (docs/AI.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<TenantAi>,
    /// Search: on or off, the full-text language, the embedding model (docs/SEARCH.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<TenantSearch>,
}

/// A tenant's search settings. Absent values fall back to the node's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSearch {
    /// Whether the tenant's rooms are indexed and searchable (default: as the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The full-text language (a Postgres text search configuration among
    /// [`SEARCH_LANGUAGES`]; default `english`). SQLite stems English whatever it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The embedding model, among the node's `--search-embedding-model` (default: its first);
    /// `""` turns search by meaning off for the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
}

/// The full-text languages a tenant may pick: Postgres' built-in text search configurations.
pub const SEARCH_LANGUAGES: [&str; 16] = [
    "simple",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "hungarian",
    "italian",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "spanish",
    "swedish",
    "turkish",
];

/// A tenant's AI settings. Absent values fall back to the node's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantAi {
    /// Whether the assistant serves the tenant (default: on where the node has a provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The operator's provider, by name (default: the node's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Models askers may choose (default: every model of the provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// The model used when the asker names none (default: the provider's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Instructions sent before every request, after the node's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Runs executing at once on one node (at most `--ai-max-tenant-runs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_runs: Option<u32>,
    /// Most output tokens of one run (at most `--ai-max-output-tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Largest prompt, in bytes (at most `--ai-max-prompt-bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prompt_bytes: Option<u32>,
    /// Runs one user may start per minute (at most `--ai-runs-per-minute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_per_minute: Option<u32>,
    /// Whether read-only members may ask (default: no).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readers_may_ask: Option<bool>,
}

/// The longest tenant system prompt.
pub const MAX_SYSTEM_PROMPT_BYTES: usize = 16 * 1024;

/// The lowest `messages_per_second` a tenant may set. Measured (docs/API.md): a stock
/// provider opens a document with a burst of 6 frames (y-websocket: SyncStep1, awareness,
/// SyncStep2, the first edit, two awareness changes) or 7 (Hocuspocus adds its Auth message)
/// within 10 ms; the bucket holds twice the rate, so 5 a second lets that burst through with
/// room to spare. Below it every session would close with 4429 as it opens.
pub const MIN_MESSAGES_PER_SECOND: u32 = 5;

impl TenantSettings {
    /// Parses and checks settings an operator submits: [`TenantSettings::parse`], and rates
    /// that stock clients can live with. Stored settings are only parsed, so a tenant saved
    /// before a minimum was raised keeps working.
    pub fn parse_submitted(value: &Value) -> Result<Self, String> {
        let s = Self::parse(value)?;
        if s.messages_per_second
            .is_some_and(|r| r < MIN_MESSAGES_PER_SECOND)
        {
            return Err(format!(
                "settings.messages_per_second must be at least {MIN_MESSAGES_PER_SECOND}: a stock \
                 provider sends up to 7 frames as it opens a document, and the limit allows bursts \
                 of twice the rate"
            ));
        }
        Ok(s)
    }

    /// Parses and checks stored or submitted settings.
    pub fn parse(value: &Value) -> Result<Self, String> {
        if !value.is_object() {
            return Err("settings must be a JSON object".into());
        }
        let s: TenantSettings =
            serde_json::from_value(value.clone()).map_err(|e| format!("settings: {e}"))?;
        let positive = [
            ("max_connections", s.max_connections),
            ("max_rooms", s.max_rooms),
            ("max_document_bytes", s.max_document_bytes),
            ("messages_per_second", s.messages_per_second.map(u64::from)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == Some(0)) {
            return Err(format!("settings.{name} must be at least 1"));
        }
        if s.max_document_bytes.is_some_and(|b| b < 1024) {
            return Err("settings.max_document_bytes must be at least 1024".into());
        }
        if let Some(ai) = &s.ai {
            if ai
                .system_prompt
                .as_ref()
                .is_some_and(|p| p.len() > MAX_SYSTEM_PROMPT_BYTES)
            {
                return Err(format!(
                    "settings.ai.system_prompt must be at most {MAX_SYSTEM_PROMPT_BYTES} bytes"
                ));
            }
            if ai.models.as_ref().is_some_and(|m| m.len() > 64) {
                return Err("settings.ai.models may name at most 64 models".into());
            }
            let zero = [
                ai.max_concurrent_runs,
                ai.max_output_tokens,
                ai.max_prompt_bytes,
                ai.runs_per_minute,
            ];
            if zero.contains(&Some(0)) {
                return Err("settings.ai limits must be at least 1".into());
            }
        }
        if let Some(search) = &s.search
            && let Some(lang) = &search.language
            && !SEARCH_LANGUAGES.contains(&lang.as_str())
        {
            return Err(format!(
                "settings.search.language must be one of {}",
                SEARCH_LANGUAGES.join(", ")
            ));
        }
        if s.search
            .as_ref()
            .and_then(|x| x.embedding_model.as_ref())
            .is_some_and(|m| m.len() > 128)
        {
            return Err("settings.search.embedding_model is at most 128 bytes".into());
        }
        Ok(s)
    }

    /// As stored.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Default::default()))
    }
}

/// One verification key, ready to use.
#[derive(Clone)]
pub struct VerifyKey {
    /// The decoded key.
    pub key: DecodingKey,
    /// The algorithm it verifies (pinned: a token cannot choose another).
    pub alg: Algorithm,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey").field("alg", &self.alg).finish()
    }
}

/// What the hub knows about one tenant.
#[derive(Debug)]
pub struct TenantState {
    /// Whether the tenant has a row (tenants named only by operator-signed tokens have none).
    pub exists: bool,
    /// Its limits.
    pub settings: TenantSettings,
    /// Active verification keys by `kid`.
    pub keys: HashMap<String, VerifyKey>,
    /// The newest active HS256 key (kid, secret): what `POST /v1/tokens` signs with.
    pub mint_key: Option<(String, String)>,
    /// Events the tenant's webhook wants (empty: all); `None` without a webhook.
    pub webhook_events: Option<Vec<String>>,
    loaded: Instant,
}

impl TenantState {
    /// Whether it is older than [`CACHE_TTL`] (a holder should look for a fresher one).
    pub fn is_stale(&self) -> bool {
        self.loaded.elapsed() >= CACHE_TTL
    }

    /// Whether an event of this name should be written to the outbox.
    pub fn wants_event(&self, event: &str) -> bool {
        self.webhook_events
            .as_ref()
            .is_some_and(|e| e.is_empty() || e.iter().any(|x| x == event))
    }
}

/// Whether `id` is a valid tenant id: 1 to 63 of `a-z 0-9 _ -`, starting with a letter or
/// digit (ids appear in API keys, tokens and URLs).
/// A tenant's share of one of this node's limits (`--max-tenant-share` percent of it), so
/// that no tenant can take a node from the others. `None` for the default tenant: it is the
/// node's own (anonymous sessions and node-key tokens without a tenant), which a single-tenant
/// deployment uses for everything.
pub fn node_share(tenant: &str, node_limit: usize, percent: u8) -> Option<usize> {
    (tenant != crate::auth::DEFAULT_TENANT && percent < 100)
        .then(|| (node_limit * usize::from(percent) / 100).max(1))
}

/// Whether `id` is a valid tenant id: 1-63 bytes of lowercase ASCII letters, digits, `_` and
/// `-`, starting with a letter or a digit.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Parses a stored key; `None` for an unknown algorithm or bad key material (logged).
pub fn decode_key(k: &SigningKey) -> Option<VerifyKey> {
    let parsed = match k.alg.as_str() {
        "HS256" => Ok(VerifyKey {
            key: DecodingKey::from_secret(k.material.as_bytes()),
            alg: Algorithm::HS256,
        }),
        "EdDSA" => DecodingKey::from_ed_pem(k.material.as_bytes()).map(|key| VerifyKey {
            key,
            alg: Algorithm::EdDSA,
        }),
        "RS256" => DecodingKey::from_rsa_pem(k.material.as_bytes()).map(|key| VerifyKey {
            key,
            alg: Algorithm::RS256,
        }),
        other => {
            tracing::warn!(
                tenant = k.tenant,
                kid = k.kid,
                alg = other,
                "unknown key algorithm"
            );
            return None;
        }
    };
    match parsed {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(tenant = k.tenant, kid = k.kid, error = %e, "unusable stored key");
            None
        }
    }
}

/// The tenant cache and per-tenant connection counts of this node.
pub struct Tenants {
    store: Arc<dyn Store>,
    cache: DashMap<String, Arc<TenantState>>,
    // Bumped by every invalidation: a load that started before one must not cache what it
    // read (it may hold a key revoked meanwhile).
    invalidations: std::sync::atomic::AtomicU64,
    // Tenants whose background refresh is running: one at a time per tenant, however many
    // rooms and connections ask meanwhile.
    refreshing: DashMap<String, ()>,
    // Tenants being deleted on this node (by how many deletions): refused everywhere.
    deleting: crate::counts::Counts<String>,
    connections: DashMap<String, Arc<AtomicUsize>>,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// Ends a tenant's deletion window (see [`Tenants::begin_delete`]).
#[derive(Debug)]
pub struct TenantDeleteGuard {
    tenants: Arc<Tenants>,
    tenant: String,
}

impl Drop for TenantDeleteGuard {
    fn drop(&mut self) {
        self.tenants.deleting.remove(self.tenant.as_str());
        self.tenants.invalidate(&self.tenant);
    }
}

/// Holds one of a tenant's connection slots; released on drop.
#[derive(Debug)]
pub struct TenantSlot(Arc<AtomicUsize>);

impl Drop for TenantSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Tenants {
    /// An empty cache over `store`.
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Tenants {
            store,
            cache: DashMap::new(),
            invalidations: std::sync::atomic::AtomicU64::new(0),
            refreshing: DashMap::new(),
            deleting: Default::default(),
            connections: DashMap::new(),
        })
    }

    /// The tenant's settings and keys, from the cache when fresh.
    ///
    /// A stale entry is returned at once and refreshed in the background (one refresh per
    /// tenant at a time): when it expires under thousands of connections a second, they must
    /// not all wait on, and query, the database. Only a missing entry (first use, or just
    /// invalidated by a change on this node) waits for the database.
    pub async fn get(self: &Arc<Self>, tenant: &str) -> Result<Arc<TenantState>, StoreError> {
        let entry = self.cache.get(tenant).map(|s| s.clone());
        match entry {
            Some(s) if s.loaded.elapsed() < MAX_STALE => {
                if s.loaded.elapsed() >= CACHE_TTL {
                    self.refresh(tenant);
                }
                Ok(s)
            }
            _ => self.load(tenant).await,
        }
    }

    /// Reads the tenant from the store and caches it (unless invalidated meanwhile).
    async fn load(&self, tenant: &str) -> Result<Arc<TenantState>, StoreError> {
        let generation = self.invalidations.load(Ordering::Acquire);
        let row = self.store.get_tenant(tenant).await?;
        let state = match row {
            None => TenantState {
                exists: false,
                settings: TenantSettings::default(),
                keys: HashMap::new(),
                mint_key: None,
                webhook_events: None,
                loaded: Instant::now(),
            },
            Some(t) => {
                let settings = TenantSettings::parse(&t.settings).unwrap_or_else(|e| {
                    // Only the REST API writes settings, and it validates them; a bad row
                    // was edited by hand. Refusing the tenant entirely would be worse.
                    tracing::error!(
                        tenant,
                        error = e,
                        "stored tenant settings are invalid; using node limits"
                    );
                    TenantSettings::default()
                });
                let stored = self.store.list_signing_keys(tenant).await?;
                let mut keys = HashMap::new();
                let mut mint_key = None;
                for k in stored.iter().filter(|k| k.revoked.is_none()) {
                    if let Some(v) = decode_key(k) {
                        keys.insert(k.kid.clone(), v);
                        if k.alg == "HS256" {
                            // Oldest first: the last one is the newest.
                            mint_key = Some((k.kid.clone(), k.material.clone()));
                        }
                    }
                }
                let webhook_events = self.store.get_webhook(tenant).await?.map(|w| w.events);
                TenantState {
                    exists: true,
                    settings,
                    keys,
                    mint_key,
                    webhook_events,
                    loaded: Instant::now(),
                }
            }
        };
        let state = Arc::new(state);
        if self.cache.len() >= MAX_CACHED {
            // Unknown tenants (tokens naming made-up ones) go first; real ones stay cached.
            self.cache.retain(|_, s| s.exists);
            if self.cache.len() >= MAX_CACHED {
                self.cache.clear();
            }
        }
        // Checked while holding the entry's lock: an invalidation bumps the counter before it
        // removes the entry (which takes the same lock), so either it removes what we insert
        // or we see its bump and insert nothing.
        let slot = self.cache.entry(tenant.to_string());
        if self.invalidations.load(Ordering::Acquire) == generation {
            slot.insert(state.clone());
        }
        Ok(state)
    }

    /// The cached state even if stale, without waiting; a stale or missing entry is
    /// refreshed in the background. For hot paths (a room's flush) that must never wait on
    /// the database.
    pub fn cached(self: &Arc<Self>, tenant: &str) -> Option<Arc<TenantState>> {
        let entry = self.cache.get(tenant).map(|s| s.clone());
        if entry
            .as_ref()
            .is_none_or(|s| s.loaded.elapsed() >= CACHE_TTL)
        {
            self.refresh(tenant);
        }
        entry
    }

    /// Reloads the tenant in the background, unless a reload of it is already running.
    fn refresh(self: &Arc<Self>, tenant: &str) {
        if self.refreshing.insert(tenant.to_string(), ()).is_some() {
            return;
        }
        let this = self.clone();
        let tenant = tenant.to_string();
        tokio::spawn(async move {
            if let Err(e) = this.load(&tenant).await {
                tracing::debug!(tenant, error = %e, "tenant refresh failed");
            }
            this.refreshing.remove(&tenant);
        });
    }

    /// Refuses the tenant's new sessions and requests on this node until the guard drops, so
    /// that nothing writes rows for it while they are deleted.
    pub fn begin_delete(self: &Arc<Self>, tenant: &str) -> TenantDeleteGuard {
        self.deleting.add(tenant.to_string());
        self.invalidate(tenant);
        TenantDeleteGuard {
            tenants: self.clone(),
            tenant: tenant.to_string(),
        }
    }

    /// Whether the tenant is being deleted on this node.
    pub fn is_deleting(&self, tenant: &str) -> bool {
        self.deleting.contains(tenant)
    }

    /// Forgets the cached entry (after a change through the REST API).
    pub fn invalidate(&self, tenant: &str) {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        self.cache.remove(tenant);
    }

    /// Takes one of the tenant's connection slots, or `None` at `max`.
    pub fn reserve_connection(&self, tenant: &str, max: Option<u64>) -> Option<TenantSlot> {
        let counter = match self.connections.get(tenant) {
            Some(c) => c.clone(),
            None => self
                .connections
                .entry(tenant.to_string())
                .or_default()
                .clone(),
        };
        let before = counter.fetch_add(1, Ordering::AcqRel);
        let slot = TenantSlot(counter);
        match max {
            Some(max) if before as u64 >= max => None,
            _ => Some(slot),
        }
    }

    /// Connections of the tenant open on this node.
    pub fn connections(&self, tenant: &str) -> usize {
        self.connections
            .get(tenant)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_validated() {
        let ok =
            TenantSettings::parse(&json!({"max_connections": 10, "max_rooms": 2})).expect("valid");
        assert_eq!(ok.max_connections, Some(10));
        assert_eq!(ok.messages_per_second, None);
        assert!(TenantSettings::parse(&json!({"max_conections": 10})).is_err());
        assert!(TenantSettings::parse(&json!({"max_rooms": 0})).is_err());
        assert!(TenantSettings::parse(&json!({"max_rooms": -1})).is_err());
        assert!(TenantSettings::parse(&json!({"max_rooms": "many"})).is_err());
        assert!(TenantSettings::parse(&json!([1])).is_err());
        assert!(TenantSettings::parse(&json!({"max_document_bytes": 10})).is_err());
        assert_eq!(
            TenantSettings::parse(&ok.to_value()).expect("roundtrip"),
            ok
        );
    }
}
