//! The assistant over REST: ask, follow a run (JSON, or its events as server-sent events),
//! cancel, revert, accept, reject, list.
//!
//! These endpoints take a [`Member`]: a tenant's API key, the operator's, or a client's JWT
//! (runs are then recorded under its `sub`). A browser never needs an API key.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chorus_persistence::{AiRun, AiRunFilter};
use chorus_protocol::ext::{AiAsk, ServerMessage};
use serde::Deserialize;
use serde_json::{Value, json};

use super::member::Member;
use super::{ApiResult, JsonBody, PathParams, Problem, QueryParams};
use crate::ai::{Assistant, Op, Refusal};
use crate::server::AppState;

/// Longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Most runs one listing returns.
const MAX_LIST: u32 = 200;

fn problem(r: Refusal) -> Problem {
    let status = match r.code {
        "ai_disabled" | "forbidden" => StatusCode::FORBIDDEN,
        "budget_exhausted" | "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "bad_request" => StatusCode::BAD_REQUEST,
        "not_found" => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    Problem::new(status, r.code, r.message)
}

fn assistant(app: &AppState) -> ApiResult<Arc<Assistant>> {
    app.registry.assistant().cloned().ok_or_else(|| {
        Problem::new(
            StatusCode::FORBIDDEN,
            "ai_disabled",
            "no model provider is configured on this node (--ai-base-url)",
        )
    })
}

/// A run as the API shows it.
pub(crate) fn run_json(r: &AiRun) -> Value {
    json!({
        "id": r.id,
        "room": r.room,
        "user": (!r.user.is_empty()).then_some(&r.user),
        "provider": r.provider,
        "model": r.model,
        "target": r.target,
        "mode": r.mode,
        "status": r.status,
        "client_id": r.client_id,
        "node": r.node,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "ttft_ms": r.ttft_ms,
        "duration_ms": r.duration_ms,
        "error": r.error,
        "created": r.created,
        "finished": r.finished,
    })
}

/// `POST /v1/rooms/{room}/ai/runs`: ask. `201` with the run; the same `Idempotency-Key` from
/// the same caller gives back the same run.
pub(super) async fn create(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams(room): PathParams<String>,
    headers: HeaderMap,
    JsonBody(ask): JsonBody<AiAsk>,
) -> ApiResult<Response> {
    let key = member.room(room)?;
    let assistant = assistant(&app)?;
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| Problem::bad_request("Idempotency-Key must be text"))?;
            if v.is_empty() || v.len() > MAX_IDEMPOTENCY_KEY {
                return Err(Problem::bad_request(format!(
                    "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters"
                )));
            }
            Some(v.to_owned())
        }
    };
    let run = assistant
        .ask(member.asker(key), ask, idempotency)
        .await
        .map_err(problem)?;
    Ok((StatusCode::CREATED, Json(run_json(&run))).into_response())
}

/// `GET /v1/rooms/{room}/ai/runs/{id}`: the run, or with `Accept: text/event-stream` its
/// events (`ai.run`, `ai.error`, `ai.done`) until it ends.
pub(super) async fn get(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams((room, id)): PathParams<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let key = member.room(room)?;
    let assistant = assistant(&app)?;
    let who = member.asker(key);
    let run = assistant.record(&who, &id).await.map_err(problem)?;
    let wants_events = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_events {
        return Ok(Json(run_json(&run)).into_response());
    }
    let first = sse(&ServerMessage::AiRun {
        run: run.id.clone(),
        status: run.status.clone(),
        request: None,
        queued_behind: None,
    });
    let live = assistant.active(&id).map(|a| a.subscribe());
    let body = match live {
        None => {
            let done = sse(&ServerMessage::AiDone {
                run: run.id.clone(),
                status: run.status.clone(),
                prompt_tokens: run.prompt_tokens,
                completion_tokens: run.completion_tokens,
            });
            Body::from(format!("{first}{done}"))
        }
        Some(events) => {
            let head = futures_util::stream::iter([Ok::<_, std::io::Error>(first)]);
            let rest = futures_util::stream::unfold(Some(events), |state| async move {
                let mut events = state?;
                loop {
                    match events.recv().await {
                        Ok(m) => {
                            let end = matches!(m, ServerMessage::AiDone { .. });
                            let next = if end { None } else { Some(events) };
                            return Some((Ok(sse(&m)), next));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return None,
                    }
                }
            });
            Body::from_stream(futures_util::StreamExt::chain(head, rest))
        }
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

fn sse(m: &ServerMessage) -> String {
    let name = match m {
        ServerMessage::AiRun { .. } => "ai.run",
        ServerMessage::AiDone { .. } => "ai.done",
        ServerMessage::AiError { .. } => "ai.error",
        _ => "message",
    };
    format!(
        "event: {name}\ndata: {}\n\n",
        chorus_protocol::ext::encode_server(m)
    )
}

async fn change(
    app: Arc<AppState>,
    member: Member,
    room: String,
    id: String,
    op: Option<Op>,
) -> ApiResult<Json<Value>> {
    let key = member.room(room)?;
    let assistant = assistant(&app)?;
    let who = member.asker(key);
    let run = match op {
        None => assistant.cancel(&who, &id).await,
        Some(op) => assistant.change(&who, &id, op).await,
    }
    .map_err(problem)?;
    Ok(Json(run_json(&run)))
}

/// `POST .../ai/runs/{id}/cancel`.
pub(super) async fn cancel(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams((room, id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    change(app, member, room, id, None).await
}

/// `POST .../ai/runs/{id}/revert`.
pub(super) async fn revert(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams((room, id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    change(app, member, room, id, Some(Op::Revert)).await
}

/// `POST .../ai/runs/{id}/accept`.
pub(super) async fn accept(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams((room, id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    change(app, member, room, id, Some(Op::Accept)).await
}

/// `POST .../ai/runs/{id}/reject`.
pub(super) async fn reject(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams((room, id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    change(app, member, room, id, Some(Op::Reject)).await
}

/// Filters of `GET /v1/ai/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    room: Option<String>,
    user: Option<String>,
    status: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

/// `GET /v1/ai/runs`: the tenant's runs, newest first (a client token sees its rooms only).
pub(super) async fn list(
    State(app): State<Arc<AppState>>,
    member: Member,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    if let Some(room) = &q.room {
        member.room(room.clone())?;
    }
    let filter = AiRunFilter {
        room: q.room,
        user: q.user,
        status: q.status,
        before: q.before,
        limit: q.limit.unwrap_or(50).clamp(1, MAX_LIST),
    };
    let runs = app.store.list_ai_runs(&member.tenant, &filter).await?;
    let runs: Vec<Value> = runs
        .iter()
        .filter(|r| member.may_see(&r.room))
        .map(run_json)
        .collect();
    let next = runs
        .last()
        .filter(|_| runs.len() as u32 == filter.limit)
        .and_then(|r| r["created"].as_i64());
    Ok(Json(json!({ "runs": runs, "next_before": next })))
}

/// `GET /v1/rooms/{room}/ai/runs`: one room's runs.
pub(super) async fn list_room(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let q = ListQuery {
        room: Some(room),
        ..q
    };
    list(State(app), member, QueryParams(q)).await
}
