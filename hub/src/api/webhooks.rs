//! The tenant's webhook: its target, secret and event filter, and the outbox of its events.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chorus_persistence::Webhook;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, Caller, JsonBody, Problem, QueryParams, random_secret};
use crate::server::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PutWebhook {
    url: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    events: Vec<String>,
}

fn webhook_json(w: &Webhook) -> Value {
    json!({
        "url": w.url,
        "events": w.events,
        "last_status": w.last_status,
        "last_error": w.last_error,
        "last_attempt": w.last_attempt,
    })
}

pub(super) async fn put_webhook(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<PutWebhook>,
) -> ApiResult<Json<Value>> {
    crate::webhooks::check_target(&body.url, app.config.webhook_allow_private)
        .map_err(Problem::invalid)?;
    if body.url.len() > 2048 {
        return Err(Problem::invalid("url must be at most 2048 bytes"));
    }
    if let Some(bad) = body
        .events
        .iter()
        .find(|e| !crate::webhooks::events::ALL.contains(&e.as_str()))
    {
        return Err(Problem::invalid(format!(
            "unknown event {bad:?}; known: {}",
            crate::webhooks::events::ALL.join(", ")
        )));
    }
    let (secret, generated) = match body.secret {
        Some(s) if s.len() < 16 || s.len() > 512 => {
            return Err(Problem::invalid("secret must be 16 to 512 bytes long"));
        }
        Some(s) => (s, false),
        None => (random_secret(), true),
    };
    if app.store.get_tenant(&caller.tenant).await?.is_none() {
        return Err(Problem::not_found(format!("no tenant {:?}", caller.tenant)));
    }
    let hook = Webhook {
        url: body.url,
        secret: secret.clone(),
        events: body.events,
        last_status: None,
        last_error: None,
        last_attempt: None,
    };
    app.store.set_webhook(&caller.tenant, &hook).await?;
    app.changed(crate::cluster::Change::tenant(&caller.tenant));
    let mut out = webhook_json(&hook);
    if generated {
        out["secret"] = json!(secret);
    }
    Ok(Json(out))
}

pub(super) async fn get_webhook(
    State(app): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    let hook = app
        .store
        .get_webhook(&caller.tenant)
        .await?
        .ok_or_else(|| Problem::not_found("no webhook configured"))?;
    Ok(Json(webhook_json(&hook)))
}

pub(super) async fn delete_webhook(
    State(app): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<StatusCode> {
    let existed = app.store.delete_webhook(&caller.tenant).await?;
    app.changed(crate::cluster::Change::tenant(&caller.tenant));
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("no webhook configured"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    #[serde(default)]
    limit: Option<u32>,
}

pub(super) async fn list_events(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    QueryParams(q): QueryParams<EventsQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Problem::invalid("limit must be between 1 and 500"));
    }
    let events = app.store.list_events(&caller.tenant, limit).await?;
    let list: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "event": e.event,
                "created": e.created,
                "attempts": e.attempts,
                "next_attempt": e.next_attempt,
                "delivered": e.delivered,
                "failed": e.failed,
                "last_status": e.last_status,
                "last_error": e.last_error,
                "data": e.body,
            })
        })
        .collect();
    Ok(Json(json!({ "events": list })))
}

/// For the fuzz targets: a webhook body, parsed and its target checked as the handler does.
#[cfg(any(test, feature = "fuzzing"))]
pub(super) fn fuzz(raw: &[u8]) {
    if let Ok(w) = super::parse_json::<PutWebhook>(raw) {
        let _ = crate::webhooks::check_target(&w.url, false);
    }
}
