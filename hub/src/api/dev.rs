//! `GET /v1/dev-token?room=<room>`: a development token for a page of a local hub.
//!
//! Where anonymous access is allowed (the README's run command: loopback, no keys), the web
//! client asks for one so that it has a user and a token for the REST API, as it would when
//! embedded. Refused unless the request's `Host` is loopback or an allowed origin's host,
//! and its `Origin`, if any, is loopback or listed in `--allowed-origins`: a page elsewhere
//! (or a name rebound to 127.0.0.1) gets nothing. The token opens one room, with the write
//! role, for an hour, and dies with the process when the node has no `--jwt-secret`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::server::{AppState, PageTrust, is_loopback_host, page_trust, strip_port};

#[derive(Debug, Deserialize)]
pub(super) struct DevTokenQuery {
    room: String,
}

pub(super) async fn token(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<DevTokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| ApiError::BadRequest("expected ?room=<room>".into()))?;
    crate::server::validate_room(&q.room)?;
    if q.room.contains('*') {
        // A token's rooms are patterns: `*` would open every room behind a prefix.
        return Err(ApiError::BadRequest(
            "a development token's room cannot contain '*'".into(),
        ));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(strip_port);
    let host_ok = host.is_some_and(|h| {
        is_loopback_host(h)
            || app
                .config
                .allowed_origins
                .iter()
                .filter_map(|o| {
                    o.split_once("://")
                        .map(|(_, rest)| strip_port(rest.trim_end_matches('/')))
                })
                .any(|o| o.eq_ignore_ascii_case(h))
    });
    if !host_ok || page_trust(&app.config, &headers) != PageTrust::Full {
        return Err(ApiError::Forbidden(
            "development tokens are for pages of a local hub (loopback Host and Origin)".into(),
        ));
    }
    let (token, expires) = app.verifier.mint_dev(&q.room).ok_or_else(|| {
        ApiError::NotFound(
            "this node hands out no development tokens (anonymous access is off)".into(),
        )
    })?;
    Ok(Json(json!({
        "token": token,
        "room": q.room,
        "role": "write",
        "expires": expires,
    })))
}
