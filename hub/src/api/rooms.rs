//! Rooms, their documents, versions and presence (tenant API).
//!
//! Reads and edits go through the live room (spawned if needed), so a REST edit is an ordinary
//! update every member receives, and a read sees what members see.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chorus_persistence::{RoomCreated, RoomInfo, RoomKey};
use chorus_protocol::CloseCode;
use serde::Deserialize;
use serde_json::{Value, json};
use yrs::updates::decoder::Decode;
use yrs::{Doc, Transact, Update};

use super::member::Member;
use super::{ApiResult, Caller, PathParams, Problem, QueryParams, now, parse_json, read_body};
use crate::registry::{DeleteGuard, JoinError, ROOM_TIMEOUT, RoomError};
use crate::room::{EditError, ServerEdit};
use crate::server::{AppState, validate_room};

/// Patience for an edit to become durable before the API says it could not confirm it.
const DURABLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most named versions one room keeps.
const MAX_VERSIONS: usize = 1000;

/// Largest `meta` object of a room, in bytes of JSON.
const MAX_META_BYTES: usize = 64 * 1024;

fn room_key(caller: &Caller, room: String) -> ApiResult<RoomKey> {
    validate_room(&room).map_err(|e| Problem::bad_request(e.to_string()))?;
    Ok(RoomKey::new(caller.tenant.clone(), room))
}

fn join_problem(e: JoinError) -> Problem {
    match e {
        JoinError::Deleted => Problem::not_found("the room is being deleted"),
        JoinError::TooManyRooms => Problem::unavailable("too many rooms open on this node"),
        JoinError::TenantShare => {
            Problem::quota("the tenant has its share of this node's rooms open")
        }
        JoinError::LoadFailed | JoinError::Unavailable => {
            Problem::unavailable("the room could not be loaded; retry later")
        }
    }
}

/// The problem for a room that gave no answer.
fn room_problem(e: RoomError) -> Problem {
    match e {
        RoomError::Join(e) => join_problem(e),
        RoomError::Closed => {
            Problem::unavailable("the room closed before applying the edit; retry")
        }
        RoomError::Timeout => Problem::unavailable("the room did not answer in time"),
    }
}

fn room_json(info: &RoomInfo, members: usize) -> Value {
    json!({
        "name": info.room,
        "meta": info.meta,
        "created": info.created,
        "stored_bytes": info.stored_bytes,
        "last_activity": info.last_activity,
        "members": members,
    })
}

/// 404 unless the room is open on this node or has a record (a room's record is written in
/// the background when it first spawns, so an open room may not have one yet).
async fn require_room(app: &AppState, key: &RoomKey) -> ApiResult<()> {
    if app.registry.get(key).is_none() {
        existing(app, key).await?;
    }
    Ok(())
}

/// The room's record, or 404.
async fn existing(app: &AppState, key: &RoomKey) -> ApiResult<RoomInfo> {
    app.store
        .get_room(&key.tenant, &key.room)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no room {:?}", &*key.room)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

pub(super) async fn list(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::invalid("limit must be between 1 and 1000"));
    }
    let rooms = app
        .store
        .list_rooms(&caller.tenant, q.after.as_deref(), limit)
        .await?;
    let mut out = Vec::with_capacity(rooms.len());
    for r in &rooms {
        let key = RoomKey::new(caller.tenant.clone(), r.room.clone());
        out.push(room_json(r, app.registry.members(&key).await.len()));
    }
    let next = (rooms.len() == limit as usize)
        .then(|| rooms.last().map(|r| r.room.clone()))
        .flatten();
    Ok(Json(json!({ "rooms": out, "next": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRoom {
    name: String,
    #[serde(default)]
    meta: Option<Value>,
}

pub(super) async fn create(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    super::JsonBody(body): super::JsonBody<NewRoom>,
) -> ApiResult<impl IntoResponse> {
    validate_room(&body.name).map_err(|e| Problem::invalid(format!("name: {e}")))?;
    let key = room_key(&caller, body.name)?;
    let meta = body.meta.unwrap_or_else(|| json!({}));
    if !meta.is_object() {
        return Err(Problem::invalid("meta must be a JSON object"));
    }
    let text = meta.to_string();
    // Postgres' JSONB cannot hold NUL characters; refuse them on every store alike.
    if text.contains("\\u0000") {
        return Err(Problem::invalid("meta must not contain NUL characters"));
    }
    if text.len() > MAX_META_BYTES {
        return Err(Problem::invalid(format!(
            "meta must be at most {MAX_META_BYTES} bytes of JSON"
        )));
    }
    let tenant = app.tenants.get(&caller.tenant).await?;
    match app
        .store
        .create_room(
            &key.tenant,
            &key.room,
            &meta,
            tenant.settings.max_rooms,
            now(),
        )
        .await?
    {
        RoomCreated::Created => {}
        RoomCreated::Exists => {
            return Err(Problem::conflict(format!(
                "room {:?} already exists",
                &*key.room
            )));
        }
        RoomCreated::LimitReached => {
            return Err(Problem::quota("the tenant's room limit is reached"));
        }
    }
    app.events.emit(
        &key.tenant,
        crate::webhooks::events::ROOM_CREATED,
        json!({ "room": &*key.room, "via": "api" }),
    );
    let info = existing(&app, &key).await?;
    Ok((StatusCode::CREATED, Json(room_json(&info, 0))))
}

pub(super) async fn get(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams(room): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let key = member.room(room)?;
    let info = existing(&app, &key).await?;
    Ok(Json(room_json(
        &info,
        app.registry.members(&key).await.len(),
    )))
}

/// Closes a live room's members with 4404 and waits until no task of the room will write
/// anything more (also one exiting on its own); until the returned guard drops, the room
/// cannot be re-opened on this node. 503 when the room does not finish in time: deleting
/// then would let its last writes bring rows back.
pub(super) async fn close_room(
    app: &Arc<AppState>,
    key: &RoomKey,
    reason: &str,
) -> ApiResult<DeleteGuard> {
    let guard = app.registry.begin_delete(key);
    if let Some(handle) = app.registry.get(key) {
        handle.close(CloseCode::RoomDeleted, reason).await;
    }
    if !app.registry.wait_gone(key, ROOM_TIMEOUT).await {
        return Err(Problem::unavailable(
            "the room is still writing; nothing was deleted, retry",
        ));
    }
    Ok(guard)
}

pub(super) async fn delete(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    PathParams(room): PathParams<String>,
) -> ApiResult<StatusCode> {
    let key = room_key(&caller, room)?;
    let guard = close_room(&app, &key, "room deleted").await?;
    let existed = app
        .store
        .delete_room_everything(&key.tenant, &key.room)
        .await?;
    drop(guard);
    if !existed {
        return Err(Problem::not_found(format!("no room {:?}", &*key.room)));
    }
    app.events.emit(
        &key.tenant,
        crate::webhooks::events::ROOM_DELETED,
        json!({ "room": &*key.room }),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FormatQuery {
    #[serde(default)]
    format: Option<String>,
    /// `tree`: XML as nodes (`docjson::doc_to_view`) rather than strings.
    #[serde(default)]
    view: Option<String>,
}

/// Whether the client asked for the tree view (XML as nodes).
fn wants_tree(q: &FormatQuery) -> ApiResult<bool> {
    match q.view.as_deref() {
        None | Some("json") => Ok(false),
        Some("tree") => Ok(true),
        Some(other) => Err(Problem::invalid(format!(
            "view must be \"json\" or \"tree\", not {other:?}"
        ))),
    }
}

/// Whether the client asked for the binary Yjs update rather than JSON.
fn wants_binary(q: &FormatQuery, headers: &HeaderMap) -> ApiResult<bool> {
    match q.format.as_deref() {
        Some("update") => return Ok(true),
        Some("json") => return Ok(false),
        Some(other) => {
            return Err(Problem::invalid(format!(
                "format must be \"json\" or \"update\", not {other:?}"
            )));
        }
        None => {}
    }
    Ok(headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/octet-stream")))
}

/// A whole-document v1 update as the response: binary or JSON.
async fn render_state(state: Bytes, binary: bool, tree: bool) -> ApiResult<Response> {
    if binary {
        return Ok(([(header::CONTENT_TYPE, "application/octet-stream")], state).into_response());
    }
    // Decoding and walking a large document is CPU work: off the async workers.
    let json = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let doc = Doc::new();
        let update = Update::decode_v1(&state).map_err(|e| e.to_string())?;
        doc.transact_mut()
            .apply_update(update)
            .map_err(|e| e.to_string())?;
        let txn = doc.transact();
        Ok(if tree {
            crate::docjson::doc_to_view(&txn)
        } else {
            crate::docjson::doc_to_json(&txn)
        })
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    Ok(Json(json).into_response())
}

pub(super) async fn read_document(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<FormatQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let key = member.room(room)?;
    let binary = wants_binary(&q, &headers)?;
    let tree = wants_tree(&q)?;
    require_room(&app, &key).await?;
    let state = app.registry.state(&key).await.map_err(room_problem)?;
    render_state(state, binary, tree).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpsBody {
    ops: Vec<crate::docjson::Op>,
}

/// An edit's body (`{"ops": [...]}`), its nesting bounded before serde walks it.
fn parse_ops(raw: &[u8], max_depth: u32) -> ApiResult<Vec<crate::docjson::Op>> {
    // Values are stored below a root type (depth 1) and sit three levels into the body
    // (`{"ops":[{"value":...}]}`): the body may nest two more than the limit.
    if chorus_protocol::nesting::json_depth(raw, max_depth + 2).is_err() {
        return Err(Problem::too_deep(max_depth));
    }
    let body: OpsBody = parse_json(raw)?;
    if body.ops.is_empty() {
        return Err(Problem::invalid("ops must not be empty"));
    }
    Ok(body.ops)
}

/// Applies an edit through the live room and waits until it is durable.
async fn edit(app: &AppState, key: &RoomKey, edit: ServerEdit) -> ApiResult<Json<Value>> {
    let durable = app
        .registry
        .edit(key, edit)
        .await
        .map_err(room_problem)?
        .map_err(|e| match e {
            EditError::TooLarge => Problem::too_large("the document size limit is reached"),
            EditError::TooDeep(limit) => Problem::too_deep(limit),
            EditError::Invalid(msg) => Problem::invalid(msg),
        })?;
    match tokio::time::timeout(DURABLE_TIMEOUT, durable).await {
        Ok(Ok(true)) => Ok(Json(json!({ "applied": true, "durable": true }))),
        _ => Err(Problem::unavailable(
            "the edit was applied but not confirmed durable; read the document to check",
        )),
    }
}

pub(super) async fn edit_document(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams(room): PathParams<String>,
    req: Request,
) -> ApiResult<Json<Value>> {
    let key = member.room(room)?;
    member.require_write()?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let server_edit = match content_type.as_str() {
        "application/octet-stream" => {
            let raw = read_body(req, app.config.max_document_bytes).await?;
            // Up to 64 MiB of hostile input: decoded off the async workers, with the same
            // guards (header check, panics caught) as updates from sockets.
            let max_depth = app.config.max_nesting_depth;
            let (decoded, raw) = tokio::task::spawn_blocking(move || {
                (crate::session::decode_update(&raw, max_depth), raw)
            })
            .await
            .map_err(Problem::internal)?;
            let (update, nesting, clocks) = decoded.map_err(|(code, _)| {
                if code == chorus_protocol::CloseCode::TooDeep {
                    Problem::too_deep(max_depth)
                } else {
                    Problem::invalid("not a Yjs v1 update")
                }
            })?;
            ServerEdit::Update {
                update,
                raw,
                nesting,
                clocks,
            }
        }
        "application/json" => {
            let raw = read_body(req, app.config.max_request_bytes).await?;
            ServerEdit::Ops(parse_ops(&raw, app.config.max_nesting_depth)?)
        }
        _ => {
            return Err(Problem::unsupported_media(
                "send application/octet-stream (a Yjs v1 update) or application/json ({\"ops\": [...]})",
            ));
        }
    };
    // Writing creates the room if needed (within the tenant's room limit).
    if app.registry.get(&key).is_none() {
        let tenant = app.tenants.get(&key.tenant).await?;
        crate::server::record_room(&app, &key, &tenant).await?;
    }
    edit(&app, &key, server_edit).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewVersion {
    name: String,
}

fn version_json(v: &chorus_persistence::VersionInfo) -> Value {
    json!({ "id": v.id, "name": v.name, "created": v.created, "bytes": v.bytes })
}

pub(super) async fn create_version(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams(room): PathParams<String>,
    super::JsonBody(body): super::JsonBody<NewVersion>,
) -> ApiResult<impl IntoResponse> {
    let key = member.room(room)?;
    member.require_write()?;
    if body.name.is_empty() || body.name.len() > 200 || body.name.chars().any(char::is_control) {
        return Err(Problem::invalid(
            "name must be 1-200 bytes without control characters",
        ));
    }
    require_room(&app, &key).await?;
    // Each version is a whole copy of the document: bound how many one room keeps.
    if app.store.list_versions(&key.tenant, &key.room).await?.len() >= MAX_VERSIONS {
        return Err(Problem::conflict(format!(
            "the room already has {MAX_VERSIONS} versions"
        )));
    }
    let state = app.registry.state(&key).await.map_err(room_problem)?;
    let v = app
        .store
        .create_version(&key.tenant, &key.room, &body.name, &state, now())
        .await?;
    Ok((StatusCode::CREATED, Json(version_json(&v))))
}

pub(super) async fn list_versions(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams(room): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let key = member.room(room)?;
    require_room(&app, &key).await?;
    let versions = app.store.list_versions(&key.tenant, &key.room).await?;
    Ok(Json(json!({
        "versions": versions.iter().map(version_json).collect::<Vec<_>>()
    })))
}

async fn load_version(
    app: &AppState,
    key: &RoomKey,
    id: &str,
) -> ApiResult<(chorus_persistence::VersionInfo, Bytes)> {
    let id: i64 = id
        .parse()
        .map_err(|_| Problem::bad_request("version id must be an integer"))?;
    app.store
        .get_version(&key.tenant, &key.room, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no version {id} of this room")))
}

pub(super) async fn get_version(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams((room, id)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<FormatQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let key = member.room(room)?;
    let binary = wants_binary(&q, &headers)?;
    let tree = wants_tree(&q)?;
    let (info, state) = load_version(&app, &key, &id).await?;
    if binary {
        return render_state(state, true, false).await;
    }
    let content = render_state(state, false, tree).await?;
    let body = axum::body::to_bytes(content.into_body(), usize::MAX)
        .await
        .map_err(Problem::internal)?;
    let content: Value = serde_json::from_slice(&body).map_err(Problem::internal)?;
    let mut out = version_json(&info);
    out["content"] = content;
    Ok(Json(out).into_response())
}

pub(super) async fn restore_version(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams((room, id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let key = member.room(room)?;
    member.require_write()?;
    let (_, state) = load_version(&app, &key, &id).await?;
    edit(&app, &key, ServerEdit::Restore(state)).await
}

pub(super) async fn presence(
    State(app): State<Arc<AppState>>,
    member: Member,
    PathParams(room): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let key = member.room(room)?;
    require_room(&app, &key).await?;
    let members = app.registry.members(&key).await;
    Ok(Json(json!({ "room": &*key.room, "members": members })))
}

/// For the fuzz targets: the rooms' bodies as the handlers parse them, and an `ops` body
/// applied to `doc` as a REST edit would be (depth bounded before serde walks it).
#[cfg(any(test, feature = "fuzzing"))]
pub(super) fn fuzz(raw: &[u8], doc: &yrs::Doc, max_depth: u32) {
    if let Ok(r) = super::parse_json::<NewRoom>(raw) {
        let _ = validate_room(&r.name);
    }
    let _ = super::parse_json::<NewVersion>(raw);
    if let Ok(ops) = parse_ops(raw, max_depth) {
        let _ = crate::docjson::apply_ops_limited(doc, &ops, max_depth as usize);
    }
}
