//! Webhook events the hub emits: written to the durable outbox (when the tenant's webhook
//! wants them) and delivered by [`crate::webhooks`]. `document.changed` is written by rooms
//! together with the updates (same transaction); the others go through [`Events::emit`].

use std::sync::Arc;

use chorus_persistence::{NewEvent, Store};
use serde_json::Value;

use crate::tenants::Tenants;
use crate::webhooks::WebhookNotify;

/// A room was created (first join of an unknown room, or `POST /v1/rooms`).
pub const ROOM_CREATED: &str = "room.created";
/// A room was deleted through the REST API.
pub const ROOM_DELETED: &str = "room.deleted";
/// A connection joined a room.
pub const USER_JOINED: &str = "user.joined";
/// A connection left a room.
pub const USER_LEFT: &str = "user.left";
/// A room's document changed (debounced per room by `--webhook-debounce`).
pub const DOCUMENT_CHANGED: &str = "document.changed";

/// An AI run ended (done, cancelled, failed, interrupted).
pub const AI_RUN_FINISHED: &str = "ai.run.finished";

/// Every event name, for validation of webhook subscriptions.
pub const ALL: [&str; 6] = [
    AI_RUN_FINISHED,
    DOCUMENT_CHANGED,
    USER_JOINED,
    USER_LEFT,
    ROOM_CREATED,
    ROOM_DELETED,
];

/// Writes events to the outbox and wakes the dispatcher.
#[derive(Clone)]
pub struct Events {
    store: Arc<dyn Store>,
    tenants: Arc<Tenants>,
    notify: WebhookNotify,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// An emitter over `store`.
    pub fn new(store: Arc<dyn Store>, tenants: Arc<Tenants>, notify: WebhookNotify) -> Self {
        Events {
            store,
            tenants,
            notify,
        }
    }

    /// Emits in the background: the caller (a connection, a request) does not wait on the
    /// database. Skipped when the tenant has no webhook wanting it.
    pub fn emit(&self, tenant: &str, event: &'static str, body: Value) {
        let this = self.clone();
        let tenant = tenant.to_string();
        tokio::spawn(async move {
            if let Err(e) = this.emit_now(&tenant, event, body).await {
                tracing::warn!(tenant, event, error = %e, "cannot write webhook event");
            }
        });
    }

    /// Emits and waits until the event is in the outbox.
    pub async fn emit_now(
        &self,
        tenant: &str,
        event: &'static str,
        body: Value,
    ) -> Result<(), chorus_persistence::StoreError> {
        let state = self.tenants.get(tenant).await?;
        if !state.wants_event(event) {
            return Ok(());
        }
        let e = NewEvent {
            tenant: tenant.to_string(),
            event: event.to_string(),
            body,
            delay: 0,
        };
        self.store
            .enqueue_events(&[e], crate::auth::now_secs() as i64)
            .await?;
        self.notify.notify();
        Ok(())
    }

    /// Whether `event` may be wanted by the tenant's webhook, from the cache (never waits):
    /// `false` only when the cache knows it is not; unknown means [`Events::emit`] checks.
    pub fn may_want(&self, tenant: &str, event: &str) -> bool {
        self.tenants
            .cached(tenant)
            .is_none_or(|s| s.wants_event(event))
    }

    /// Wakes the dispatcher (after a room committed events with its updates).
    pub fn notify(&self) {
        self.notify.notify();
    }
}

/// How often delivered and given-up outbox rows are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes delivered and given-up outbox rows older than `retention`, for every tenant, once
/// an hour: every connection may write `user.joined`/`user.left`, so the outbox would otherwise
/// grow without bound. Pending events are never pruned. Several nodes pruning at once is
/// harmless.
pub fn spawn_pruner(
    store: Arc<dyn Store>,
    retention: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let cutoff = (crate::auth::now_secs() as i64)
                .saturating_sub(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX));
            if let Err(e) = prune_once(&*store, cutoff).await {
                tracing::warn!(error = %e, "pruning the webhook outbox failed; retrying in an hour");
            }
        }
    })
}

/// One pruning pass over every tenant; returns the rows deleted.
pub async fn prune_once(
    store: &dyn Store,
    before: i64,
) -> Result<u64, chorus_persistence::StoreError> {
    let mut total = 0;
    for t in store.list_tenants().await? {
        total += store.prune_events(&t.id, before).await?;
    }
    if total > 0 {
        tracing::info!(rows = total, "pruned delivered webhook events");
    }
    Ok(total)
}
