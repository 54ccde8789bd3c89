//! `GET /v1/search`: the tenant's rooms that the caller may open, by words, by meaning, or
//! both (docs/SEARCH.md). A client's JWT searches the rooms its `rooms` claim grants; an API
//! key every room of its tenant.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::member::Member;
use super::{ApiResult, Problem};
use crate::search::{Answer, Mode, SearchError};
use crate::server::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    q: Option<String>,
    mode: Option<String>,
    limit: Option<u32>,
    room_prefix: Option<String>,
}

pub(crate) async fn search(
    State(app): State<Arc<AppState>>,
    member: Member,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Answer>> {
    let Query(p) = params.map_err(|e| Problem::bad_request(e.body_text()))?;
    let Some(search) = app.registry.search() else {
        return Err(Problem::unavailable("search is off on this hub (--search)"));
    };
    let mode = match p.mode.as_deref() {
        None => Mode::Hybrid,
        Some(m) => Mode::parse(m)
            .ok_or_else(|| Problem::bad_request("mode must be text, semantic or hybrid"))?,
    };
    let query =
        crate::search::Query::new(p.q.as_deref().unwrap_or(""), mode, p.limit, p.room_prefix)
            .map_err(problem)?;
    let answer = search
        .query(&member.tenant, &query, &member.grants())
        .await
        .map_err(problem)?;
    Ok(Json(answer))
}

pub(crate) fn problem(e: SearchError) -> Problem {
    match e {
        SearchError::BadRequest(m) => Problem::bad_request(m),
        SearchError::Unavailable(m) => Problem::unavailable(m),
        SearchError::Budget | SearchError::Busy => Problem::quota(e.to_string()),
        SearchError::Internal => Problem::internal("search failed"),
    }
}
