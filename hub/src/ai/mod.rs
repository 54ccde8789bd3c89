//! The AI assistant in rooms: members ask (`ai.ask` over the socket, or REST), and a run
//! streams the answer into the room's chat or document through a server-side peer, so its
//! edits take the ordinary path (fan-out, persistence with `saved`, the cluster bus,
//! webhooks).
//!
//! - `mod.rs` (here): the [`Assistant`]: admission (on or off, role, model, prompt size,
//!   per-user rate, per-tenant concurrency, the tenant's daily tokens), the live runs,
//!   cancel, and the record of every run.
//! - `run.rs`: one run: queue, peer, context, provider stream coalesced into transactions
//!   every `--ai-commit-interval`, the end (status, record, webhook, metrics).
//! - `context.rs`: what the model is told: the tenant's prompt, the document as plain text
//!   within a budget, the text around the cursor, the recent chat, all marked untrusted.
//! - `ops.rs`: revert, accept and reject, at any later time, by anyone with write access.
//!
//! Every run writes under its own Yjs client id, recorded with the run: that is what makes its
//! items attributable (the document's `ai` map names the run, model and asker of each client
//! id) and revertible in one step.

mod context;
mod handoff;
mod ops;
mod run;

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use chorus_ai_bridge::openai::{OpenAiProvider, ProviderConfig, Secret};
use chorus_ai_bridge::provider::Provider;
use chorus_ai_bridge::writer::Schema;
use chorus_persistence::{AiRun, RoomKey, Store};
use chorus_protocol::ext::{AiApply, AiAsk, AiTarget, ServerMessage};
use dashmap::DashMap;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;
use yrs::StickyIndex;
use yrs::updates::decoder::Decode;

use crate::auth::Role;
use crate::config::AiConfig;
use crate::outbound::ConnHandle;
use crate::registry::Registry;
use crate::tenants::{TenantAi, Tenants};
use crate::webhooks::events::Events;

pub use ops::Op;

/// The root Y.Map naming the run behind each client id (provenance).
pub const PROVENANCE: &str = "ai";

/// Events kept for a run's late subscribers.
const RUN_EVENTS: usize = 64;

/// Who asks (or cancels, reverts): from a socket's session or a REST caller.
#[derive(Debug, Clone)]
pub struct Asker {
    /// The room.
    pub key: RoomKey,
    /// The user (`sub`), if any.
    pub user: Option<String>,
    /// Their access.
    pub role: Role,
    /// The socket to tell about the run (`ai.run`, `ai.done`, `ai.error`).
    pub conn: Option<ConnHandle>,
    /// The rooms the asker's token grants: the run's searches (`search_documents`) see no
    /// others.
    pub grants: Vec<String>,
}

/// Why a request was refused: an `ai.error` code and a message for the asker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `ai_disabled`, `forbidden`, `budget_exhausted`, `rate_limited`, `too_large`,
    /// `bad_request`, `not_found`, `unavailable`.
    pub code: &'static str,
    /// What to tell the asker.
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// A run that is queued or running on this node.
#[derive(Debug)]
pub struct Active {
    /// Its id.
    pub id: String,
    key: RoomKey,
    cancel: CancellationToken,
    /// Status changes (`ai.run`, `ai.done`, `ai.error` messages), for the asker's socket and
    /// REST subscribers.
    events: broadcast::Sender<ServerMessage>,
    /// The latest status; `true` once it ended.
    ended: watch::Sender<bool>,
    revert_on_cancel: std::sync::atomic::AtomicBool,
}

impl Active {
    fn new(id: &str, key: RoomKey, revert_on_cancel: bool) -> Self {
        Active {
            id: id.to_owned(),
            key,
            cancel: CancellationToken::new(),
            events: broadcast::channel(RUN_EVENTS).0,
            ended: watch::channel(false).0,
            revert_on_cancel: revert_on_cancel.into(),
        }
    }

    /// Subscribes to its status changes.
    pub fn subscribe(&self) -> broadcast::Receiver<ServerMessage> {
        self.events.subscribe()
    }
}

/// What a run was asked to do (checked).
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub record: AiRun,
    pub ask: AiAsk,
    pub provider: Arc<dyn Provider>,
    pub position: Option<StickyIndex>,
    pub range: Option<(StickyIndex, StickyIndex)>,
    pub system_prompt: Option<String>,
    pub max_output_tokens: u32,
    pub request: Option<String>,
    pub conn: Option<ConnHandle>,
    /// A run handed over from another node: its status changes go back there.
    pub teller: Option<handoff::Teller>,
    /// The asker's rooms (see [`Asker::grants`]).
    pub grants: Vec<String>,
}

/// Where a run writes: a position, and a range to replace.
type Places = (Option<StickyIndex>, Option<(StickyIndex, StickyIndex)>);

/// The node's assistant.
pub struct Assistant {
    registry: Weak<Registry>,
    store: Arc<dyn Store>,
    tenants: Arc<Tenants>,
    events: Events,
    node: String,
    /// The cluster, when runs go to their room's home.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    config: AiConfig,
    providers: Vec<Arc<dyn Provider>>,
    schema: Arc<Schema>,
    /// Runs executing on this node (`--ai-max-runs`).
    slots: Arc<Semaphore>,
    /// Runs queued or executing per tenant on this node.
    per_tenant: DashMap<String, u32>,
    /// Runs started per (tenant, user) in the current minute.
    per_user: DashMap<(String, String), (Instant, u32)>,
    /// Assistant commits per room (`--ai-room-commits-per-second`).
    room_rates: DashMap<RoomKey, Arc<Mutex<crate::session::RateLimit>>>,
    /// Runs writing at one position take turns: (room, field, position) -> its turn.
    positions: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Live runs by id.
    runs: DashMap<String, Arc<Active>>,
    /// Runs asked here and executing on their room's home, with the asker's socket.
    remote: DashMap<String, (Arc<Active>, Option<ConnHandle>)>,
    /// Entries of this node's queue whose runs execute here.
    working: DashMap<String, ()>,
    /// Tokens used per tenant today: (UTC day, tokens, when read from the store).
    tokens: DashMap<String, (i64, u64, Instant)>,
}

impl std::fmt::Debug for Assistant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assistant")
            .field("node", &self.node)
            .field("providers", &self.providers)
            .field("runs", &self.runs.len())
            .finish_non_exhaustive()
    }
}

/// Reads the operator's providers: `--ai-base-url` (the default) and `--ai-providers`.
pub fn providers(config: &AiConfig) -> anyhow::Result<Vec<Arc<dyn Provider>>> {
    let mut out: Vec<Arc<dyn Provider>> = Vec::new();
    if let Some(base) = &config.ai_base_url {
        let models: Vec<String> = config
            .ai_model
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        let p = OpenAiProvider::new(ProviderConfig {
            name: "default".into(),
            flavor: Default::default(),
            base_url: base.clone(),
            api_key: Secret::new(config.ai_api_key.clone().unwrap_or_default()),
            models,
            headers: Default::default(),
            api_version: None,
            connect_timeout_ms: None,
        })
        .map_err(anyhow::Error::msg)?;
        out.push(Arc::new(p));
    }
    if let Some(path) = &config.ai_providers {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--ai-providers {}: {e}", path.display()))?;
        let list: Vec<ProviderConfig> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--ai-providers {}: {e}", path.display()))?;
        for p in list {
            if out.iter().any(|o| o.name() == p.name) {
                anyhow::bail!("--ai-providers: provider {} is named twice", p.name);
            }
            out.push(Arc::new(
                OpenAiProvider::new(p).map_err(anyhow::Error::msg)?,
            ));
        }
    }
    Ok(out)
}

fn now_secs() -> i64 {
    i64::try_from(crate::auth::now_secs()).unwrap_or(i64::MAX)
}

fn utc_day(secs: i64) -> i64 {
    secs.div_euclid(86_400) * 86_400
}

/// A new run id: 16 random bytes, URL-safe.
fn run_id() -> String {
    let bytes: [u8; 16] = rand::random();
    format!(
        "run_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn decode_position(b64: &str) -> Result<StickyIndex, Refusal> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64.trim()))
        .map_err(|_| Refusal::new("bad_request", "position is not base64"))?;
    if bytes.len() > 256 {
        return Err(Refusal::new("bad_request", "position is too long"));
    }
    // yrs decodes positions without recursion; a malformed one is an error, never a panic,
    // but stay on the safe side of its decoder anyway.
    std::panic::catch_unwind(|| StickyIndex::decode_v1(&bytes))
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| Refusal::new("bad_request", "position is not a Yjs relative position"))
}

impl Assistant {
    /// The assistant of a node; `None` when no provider is configured.
    pub(crate) fn new(
        registry: &Arc<Registry>,
        store: Arc<dyn Store>,
        tenants: Arc<Tenants>,
        events: Events,
        node: String,
        cluster: Option<Arc<crate::cluster::Cluster>>,
        config: AiConfig,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let providers = providers(&config)?;
        if providers.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Assistant {
            registry: Arc::downgrade(registry),
            store,
            tenants,
            events,
            node,
            cluster,
            slots: Arc::new(Semaphore::new(config.ai_max_runs)),
            config,
            providers,
            schema: Arc::new(Schema::default()),
            per_tenant: DashMap::new(),
            per_user: DashMap::new(),
            room_rates: DashMap::new(),
            positions: DashMap::new(),
            runs: DashMap::new(),
            remote: DashMap::new(),
            working: DashMap::new(),
            tokens: DashMap::new(),
        })))
    }

    /// The node's name in run records.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A live run of this node.
    pub fn active(&self, id: &str) -> Option<Arc<Active>> {
        self.runs
            .get(id)
            .map(|r| r.clone())
            .or_else(|| self.remote.get(id).map(|r| r.0.clone()))
    }

    /// Runs queued or executing on this node.
    pub fn active_runs(&self) -> usize {
        self.runs.len()
    }

    /// Starts a run, or refuses. `idempotency_key`: the same key from the same asker gives
    /// back the first run instead of a second one.
    pub async fn ask(
        self: &Arc<Self>,
        who: Asker,
        ask: AiAsk,
        idempotency_key: Option<String>,
    ) -> Result<AiRun, Refusal> {
        let tenant = self
            .tenants
            .get(&who.key.tenant)
            .await
            .map_err(|_| Refusal::new("unavailable", "the tenant's settings cannot be read"))?;
        let settings = tenant.settings.ai.clone().unwrap_or_default();
        if settings.enabled == Some(false) {
            return Err(Refusal::new(
                "ai_disabled",
                "the assistant is off for this tenant",
            ));
        }
        if who.role == Role::Read && settings.readers_may_ask != Some(true) {
            return Err(Refusal::new(
                "forbidden",
                "read-only members may not ask the assistant",
            ));
        }
        let prompt = ask.prompt.trim();
        if prompt.is_empty() {
            return Err(Refusal::new("bad_request", "the prompt is empty"));
        }
        let max_prompt = settings
            .max_prompt_bytes
            .map_or(self.config.ai_max_prompt_bytes, |m| {
                (m as usize).min(self.config.ai_max_prompt_bytes)
            });
        if ask.prompt.len() > max_prompt {
            return Err(Refusal::new(
                "too_large",
                format!("the prompt is larger than {max_prompt} bytes"),
            ));
        }
        let provider = self.provider_for(&settings)?;
        let model = self.model_for(&settings, &provider, ask.model.as_deref())?;
        let (position, range) = self.places(&ask)?;
        let user = who.user.clone().unwrap_or_default();
        // In a cluster the room's home executes the run; the admission is decided here.
        let home = self.home_of(&who.key);
        self.take_user_rate(&who.key.tenant, &user, &settings)?;
        let budget = tenant.settings.ai_tokens_per_day;
        let remaining = self.remaining_tokens(&who.key.tenant, budget).await?;
        let max_output_tokens = settings
            .max_output_tokens
            .unwrap_or(self.config.ai_max_output_tokens)
            .min(self.config.ai_max_output_tokens)
            .min(u32::try_from(remaining).unwrap_or(u32::MAX))
            .max(1);
        let record = AiRun {
            tenant: who.key.tenant.to_string(),
            id: run_id(),
            room: who.key.room.to_string(),
            user,
            provider: provider.name().to_owned(),
            model,
            target: match ask.target {
                AiTarget::Chat => "chat".into(),
                AiTarget::Document => "document".into(),
            },
            mode: match ask.apply {
                AiApply::Direct => "direct".into(),
                AiApply::Suggest => "suggest".into(),
            },
            status: "queued".into(),
            // 32-bit, as browsers use (some servers mangle larger ids); never 0.
            client_id: u64::from(rand::random::<u32>().max(1)),
            node: home
                .as_ref()
                .map_or_else(|| self.node.clone(), |h| h.1.clone()),
            idempotency_key: idempotency_key.filter(|k| !k.is_empty()),
            prompt_tokens: 0,
            completion_tokens: 0,
            ttft_ms: None,
            duration_ms: None,
            error: None,
            created: now_secs(),
            finished: None,
        };
        // The tenant's place before the record: a refusal writes nothing.
        let limit = settings
            .max_concurrent_runs
            .unwrap_or(self.config.ai_max_tenant_runs)
            .min(self.config.ai_max_tenant_runs);
        // (A handed run takes its place on the home, which executes it.)
        let slot = match home {
            Some(_) => None,
            None => Some(TenantSlot::take(self, &who.key.tenant, limit)?),
        };
        match self.store.insert_ai_run(&record).await {
            Ok(Some(existing)) => return Ok(existing),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot record an ai run");
                return Err(Refusal::new("unavailable", "the run cannot be recorded"));
            }
        }
        let active = Arc::new(Active::new(
            &record.id,
            who.key.clone(),
            ask.revert_on_cancel,
        ));
        if let (Some((queue, home)), None) = (home, &slot) {
            let job = handoff::Job {
                tenant: record.tenant.clone(),
                run: record.id.clone(),
                origin: self.node.clone(),
                system_prompt: settings.system_prompt.clone(),
                max_output_tokens,
                tenant_limit: limit,
                ask,
                grants: who.grants.clone(),
            };
            return match self.hand_over(queue, home, active, job, who.conn).await {
                Ok(()) => Ok(record),
                Err(()) => Err(Refusal::new(
                    "unavailable",
                    "the room's home node cannot be reached",
                )),
            };
        }
        let Some(slot) = slot else {
            return Err(Refusal::new("unavailable", "no place for the run"));
        };
        self.runs.insert(record.id.clone(), active.clone());
        metrics::gauge!(crate::metrics::names::AI_ACTIVE_RUNS).set(self.runs.len() as f64);
        let plan = Plan {
            record: record.clone(),
            request: ask.id.clone(),
            system_prompt: settings.system_prompt.clone(),
            ask,
            provider,
            position,
            range,
            max_output_tokens,
            conn: who.conn,
            teller: None,
            grants: who.grants,
        };
        let this = self.clone();
        tokio::spawn(async move {
            this.execute(active, plan, slot).await;
        });
        Ok(record)
    }

    fn provider_for(&self, settings: &TenantAi) -> Result<Arc<dyn Provider>, Refusal> {
        match &settings.provider {
            None => self.providers.first().cloned(),
            Some(name) => self.providers.iter().find(|p| p.name() == name).cloned(),
        }
        .ok_or_else(|| {
            Refusal::new(
                "ai_disabled",
                "the tenant's provider is not configured on this node",
            )
        })
    }

    fn model_for(
        &self,
        settings: &TenantAi,
        provider: &Arc<dyn Provider>,
        asked: Option<&str>,
    ) -> Result<String, Refusal> {
        let model = asked
            .or(settings.model.as_deref())
            .unwrap_or(provider.default_model())
            .to_owned();
        let allowed = settings.models.as_ref().is_none_or(|m| m.contains(&model));
        if !allowed || !provider.serves(&model) {
            return Err(Refusal::new(
                "forbidden",
                format!("model {model:?} is not allowed for this tenant"),
            ));
        }
        Ok(model)
    }

    fn places(&self, ask: &AiAsk) -> Result<Places, Refusal> {
        if ask.target == AiTarget::Chat {
            if ask.apply == AiApply::Suggest {
                return Err(Refusal::new(
                    "bad_request",
                    "chat answers cannot be suggestions",
                ));
            }
            return Ok((None, None));
        }
        if let Some(field) = &ask.field
            && (field.is_empty() || field.len() > 128)
        {
            return Err(Refusal::new(
                "bad_request",
                "field must be 1-128 characters",
            ));
        }
        let position = ask.position.as_deref().map(decode_position).transpose()?;
        let range = match &ask.range {
            Some([a, b]) => Some((decode_position(a)?, decode_position(b)?)),
            None => None,
        };
        Ok((position, range))
    }

    fn take_user_rate(&self, tenant: &str, user: &str, s: &TenantAi) -> Result<(), Refusal> {
        let limit = s
            .runs_per_minute
            .unwrap_or(self.config.ai_runs_per_minute)
            .min(self.config.ai_runs_per_minute);
        let now = Instant::now();
        if self.per_user.len() > 100_000 {
            // Old windows of a flood of users: they hold nothing worth keeping.
            self.per_user
                .retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let mut entry = self
            .per_user
            .entry((tenant.to_owned(), user.to_owned()))
            .or_insert((now, 0));
        let (start, count) = &mut *entry;
        if now.duration_since(*start) >= Duration::from_secs(60) {
            *start = now;
            *count = 0;
        }
        if *count >= limit {
            return Err(Refusal::new(
                "rate_limited",
                format!("at most {limit} runs per minute per user"),
            ));
        }
        *count += 1;
        Ok(())
    }

    /// Tokens the tenant may still use today (`u64::MAX` without a budget).
    async fn remaining_tokens(&self, tenant: &str, budget: Option<u64>) -> Result<u64, Refusal> {
        let Some(budget) = budget else {
            return Ok(u64::MAX);
        };
        let used = self.tokens_today(tenant).await?;
        if used >= budget {
            return Err(Refusal::new(
                "budget_exhausted",
                "the tenant's AI tokens for today are used up",
            ));
        }
        Ok(budget - used)
    }

    async fn tokens_today(&self, tenant: &str) -> Result<u64, Refusal> {
        let day = utc_day(now_secs());
        if let Some(e) = self.tokens.get(tenant)
            && e.0 == day
            && e.2.elapsed() < Duration::from_secs(10)
        {
            return Ok(e.1);
        }
        // Read from the store now and then: other nodes' runs count too.
        let used = self.store.ai_tokens_since(tenant, day).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read ai token use");
            Refusal::new("unavailable", "the tenant's token use cannot be read")
        })?;
        self.tokens
            .insert(tenant.to_owned(), (day, used, Instant::now()));
        Ok(used)
    }

    fn count_tokens(&self, tenant: &str, n: u64) {
        if let Some(mut e) = self.tokens.get_mut(tenant) {
            e.1 = e.1.saturating_add(n);
        }
    }

    /// Stops a run (write access). A run that already ended is returned as recorded.
    pub async fn cancel(&self, who: &Asker, id: &str) -> Result<AiRun, Refusal> {
        if who.role != Role::Write {
            return Err(Refusal::new(
                "forbidden",
                "read-only members may not cancel runs",
            ));
        }
        let record = self.record(who, id).await?;
        if let Some(active) = self.active(id) {
            active.cancel.cancel();
            let mut ended = active.ended.subscribe();
            // Every run ends within one commit interval of a cancel; wait a little longer.
            let _ = tokio::time::timeout(Duration::from_secs(10), ended.wait_for(|e| *e)).await;
            return self.record(who, id).await;
        }
        if self.cancel_elsewhere(&record).await {
            // The run's node answers by recording its end.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = self.record(who, id).await?;
                if !matches!(now.status.as_str(), "queued" | "running") {
                    return Ok(now);
                }
            }
            return self.record(who, id).await;
        }
        Ok(record)
    }

    /// A run of the asker's room, as recorded.
    pub async fn record(&self, who: &Asker, id: &str) -> Result<AiRun, Refusal> {
        match self.store.get_ai_run(&who.key.tenant, id).await {
            Ok(Some(r)) if r.room == *who.key.room => Ok(r),
            Ok(_) => Err(Refusal::new("not_found", "no such run in this room")),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read an ai run");
                Err(Refusal::new("unavailable", "the run cannot be read"))
            }
        }
    }

    /// Runs `node` left queued or running become `interrupted`, and their chat messages say
    /// so: this node's own at start (it crashed or was killed), and in a cluster those of a
    /// node that left the ring. The store's update hands each run to one caller only.
    pub(crate) async fn interrupt_leftovers(self: &Arc<Self>, node: &str) {
        let mut tenants = vec![crate::auth::DEFAULT_TENANT.to_owned()];
        match self.store.list_tenants().await {
            Ok(list) => tenants.extend(list.into_iter().map(|t| t.id)),
            Err(e) => tracing::warn!(error = %e, "cannot list tenants for ai runs"),
        }
        tenants.dedup();
        for tenant in tenants {
            match self
                .store
                .interrupt_ai_runs(&tenant, node, now_secs())
                .await
            {
                Ok(runs) => self.settle_all_interrupted(runs),
                Err(e) => tracing::warn!(tenant, error = %e, "cannot mark interrupted ai runs"),
            }
        }
    }
}

impl Assistant {
    /// Counts runs just marked interrupted, and marks each in its document.
    fn settle_all_interrupted(self: &Arc<Self>, runs: Vec<AiRun>) {
        for run in runs {
            metrics::counter!(crate::metrics::names::AI_RUNS_TOTAL, "outcome" => "interrupted")
                .increment(1);
            let this = self.clone();
            tokio::spawn(async move { this.settle_interrupted(run).await });
        }
    }
}

/// A tenant's place among its runs on this node, given back when the run ends.
pub(crate) struct TenantSlot {
    assistant: Weak<Assistant>,
    tenant: String,
}

impl TenantSlot {
    fn take(a: &Arc<Assistant>, tenant: &str, limit: u32) -> Result<TenantSlot, Refusal> {
        let mut n = a.per_tenant.entry(tenant.to_owned()).or_insert(0);
        if *n >= limit {
            return Err(Refusal::new(
                "rate_limited",
                format!("the tenant already has {limit} runs on this node"),
            ));
        }
        *n += 1;
        Ok(TenantSlot {
            assistant: Arc::downgrade(a),
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        if let Some(a) = self.assistant.upgrade() {
            a.per_tenant.remove_if_mut(&self.tenant, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(providers: Option<&std::path::Path>) -> AiConfig {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            ai: AiConfig,
        }
        let mut c = Cli::parse_from(["chorus"]).ai;
        c.ai_base_url = Some("http://127.0.0.1:9/v1".into());
        c.ai_model = Some("small, large".into());
        c.ai_api_key = Some("sk-default-key".into());
        c.ai_providers = providers.map(Into::into);
        c
    }

    #[test]
    fn the_providers_file_adds_named_providers_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("providers.json");
        std::fs::write(
            &file,
            r#"[{"name": "azure", "flavor": "azure", "base_url": "https://x.openai.azure.com",
                 "api_key": "sk-azure-secret", "models": ["gpt-4o"], "api_version": "2024-10-21"},
                {"name": "local", "base_url": "http://127.0.0.1:11434/v1", "models": ["llama3"]}]"#,
        )
        .expect("write");
        let list = providers(&config(Some(&file))).expect("providers");
        let names: Vec<&str> = list.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["default", "azure", "local"]);
        assert!(list[0].serves("large") && !list[0].serves("llama3"));
        assert!(list[2].serves("llama3"));
        // Keys never show, not even in a debug print.
        let shown = format!("{list:?}");
        assert!(!shown.contains("sk-azure-secret") && !shown.contains("sk-default-key"));

        for (body, want) in [
            (
                r#"[{"name": "default", "base_url": "http://h/v1", "models": ["m"]}]"#,
                "named twice",
            ),
            (r#"{"name": "x"}"#, "providers.json"),
            (
                r#"[{"name": "x", "base_url": "ftp://h", "models": ["m"]}]"#,
                "http(s)",
            ),
            ("not json", "providers.json"),
        ] {
            std::fs::write(&file, body).expect("write");
            let e = providers(&config(Some(&file))).expect_err(body).to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        let missing = dir.path().join("missing.json");
        let e = providers(&config(Some(&missing)))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("missing.json"), "{e}");
    }
}
