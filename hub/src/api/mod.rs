//! The REST API under `/v1`: JSON in and out, every error an `application/problem+json` body
//! (RFC 9457) with a precise `detail`, and the OpenAPI document at `/v1/openapi.json`.
//!
//! Two kinds of callers:
//! - the operator (`Authorization: Bearer <--operator-key>`) manages tenants and their API
//!   keys, and may act as any tenant by adding `Chorus-Tenant: <id>`;
//! - a tenant's API key (`Bearer chk_<tenant>.<key id>.<secret>`, shown once when created,
//!   stored as an argon2 hash) manages that tenant's rooms, documents, keys and webhook.
//!
//! Every tenant-scoped handler takes the tenant from the verified caller, never from the
//! request body or path, so no request can reach another tenant's data.

mod admin;
mod ai;
mod dev;
mod keys;
mod member;
mod openapi;
mod rooms;
mod search;
mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use dashmap::DashMap;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::server::AppState;
pub(crate) use keys::KeyCache;
use keys::*;

/// Builds the `/v1` routes.
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/openapi.json", get(openapi::serve))
        .route("/dev-token", get(dev::token))
        .route("/route", get(route))
        .route(
            "/tenants",
            get(admin::list_tenants).post(admin::create_tenant),
        )
        .route(
            "/tenants/{tenant}",
            get(admin::get_tenant)
                .patch(admin::update_tenant)
                .delete(admin::delete_tenant),
        )
        .route(
            "/tenants/{tenant}/api-keys",
            get(admin::list_api_keys).post(admin::create_api_key),
        )
        .route(
            "/tenants/{tenant}/api-keys/{key_id}",
            delete(admin::revoke_api_key),
        )
        .route("/keys", get(admin::list_keys).post(admin::create_key))
        .route("/keys/{kid}", delete(admin::revoke_key))
        .route("/tokens", post(admin::mint_token))
        .route(
            "/webhook",
            get(webhooks::get_webhook)
                .put(webhooks::put_webhook)
                .delete(webhooks::delete_webhook),
        )
        .route("/webhook/events", get(webhooks::list_events))
        .route("/rooms", get(rooms::list).post(rooms::create))
        .route("/rooms/{room}", get(rooms::get).delete(rooms::delete))
        .route(
            "/rooms/{room}/document",
            get(rooms::read_document).post(rooms::edit_document),
        )
        .route(
            "/rooms/{room}/versions",
            get(rooms::list_versions).post(rooms::create_version),
        )
        .route("/rooms/{room}/versions/{id}", get(rooms::get_version))
        .route(
            "/rooms/{room}/versions/{id}/restore",
            post(rooms::restore_version),
        )
        .route("/rooms/{room}/presence", get(rooms::presence))
        .route("/ai/runs", get(ai::list))
        .route("/search", get(search::search))
        .route("/rooms/{room}/ai/runs", get(ai::list_room).post(ai::create))
        .route("/rooms/{room}/ai/runs/{id}", get(ai::get))
        .route("/rooms/{room}/ai/runs/{id}/cancel", post(ai::cancel))
        .route("/rooms/{room}/ai/runs/{id}/revert", post(ai::revert))
        .route("/rooms/{room}/ai/runs/{id}/accept", post(ai::accept))
        .route("/rooms/{room}/ai/runs/{id}/reject", post(ai::reject))
        .fallback(|| async { Problem::not_found("no such endpoint") })
}

/// An RFC 9457 problem: what every REST error looks like.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            code,
            detail: detail.into(),
        }
    }
    /// 400.
    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }
    /// 401.
    pub(crate) fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }
    /// 403.
    pub(crate) fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }
    /// 404.
    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
    /// 409.
    pub(crate) fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }
    /// 413.
    pub(crate) fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", detail)
    }
    /// 415.
    pub(crate) fn unsupported_media(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            detail,
        )
    }
    /// 422.
    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
    }
    /// 422 `too_deep`: an update nests deeper than `--max-nesting-depth`.
    pub(crate) fn too_deep(limit: u32) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_deep",
            format!("the update nests deeper than {limit} levels"),
        )
    }
    /// 429.
    pub(crate) fn quota(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
    }
    /// 503.
    pub(crate) fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }
    /// 500; the cause goes to the log, not to the client.
    pub(crate) fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "REST request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl From<chorus_persistence::StoreError> for Problem {
    fn from(e: chorus_persistence::StoreError) -> Self {
        tracing::warn!(error = %e, "store error in REST request");
        Problem::unavailable("the database is unavailable; retry later")
    }
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Self {
        let (status, _) = e.parts();
        let code = match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            _ => "unavailable",
        };
        Problem::new(status, code, e.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        let mut res = (self.status, body.to_string()).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

/// Result of a handler.
pub(crate) type ApiResult<T> = Result<T, Problem>;

/// A JSON body: `Content-Type: application/json`, at most `--max-request-bytes`, parsed with
/// errors that name the field and position.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, app: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Problem::unsupported_media(
                "expected Content-Type: application/json",
            ));
        }
        let bytes = read_body(req, app.config.max_request_bytes).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Parses JSON: syntax errors are 400, well-formed JSON of the wrong shape is 422.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                Problem::bad_request(format!("malformed JSON: {e}"))
            }
            Category::Data => Problem::invalid(format!("invalid request body: {e}")),
        }
    })
}

/// Reads a body of at most `limit` bytes (413 beyond).
pub(crate) async fn read_body(req: Request, limit: usize) -> ApiResult<Bytes> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(Problem::too_large(format!(
            "request body is larger than {limit} bytes"
        )));
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| Problem::too_large(format!("request body is larger than {limit} bytes")))
}

/// Extractors of axum whose rejections become problem bodies: `$name<T>` wraps `$inner<T>`.
macro_rules! problem_extractor {
    ($(#[$doc:meta])* $name:ident, $inner:ident, $what:literal) => {
        $(#[$doc])*
        pub(crate) struct $name<T>(pub T);

        impl<T, S> FromRequestParts<S> for $name<T>
        where
            T: DeserializeOwned + Send,
            S: Send + Sync,
        {
            type Rejection = Problem;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                axum::extract::$inner::<T>::from_request_parts(parts, state)
                    .await
                    .map(|p| $name(p.0))
                    .map_err(|e| Problem::bad_request(format!(concat!("invalid ", $what, ": {}"), e)))
            }
        }
    };
}

problem_extractor!(
    /// Path parameters, with a problem body when they do not parse.
    PathParams,
    Path,
    "path"
);
problem_extractor!(
    /// Query parameters, with a problem body when they do not parse.
    QueryParams,
    Query,
    "query"
);

/// The operator, verified by `--operator-key`.
pub(crate) struct Operator;

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if app.config.operator_key.is_none() {
            // Not "invalid key": no key could be valid, and the caller should know why.
            return Err(Problem::forbidden(
                "tenant management is off on this node: start it with --operator-key \
                 (or CHORUS_OPERATOR_KEY, at least 32 characters) and send that key as a bearer \
                 token",
            ));
        }
        let key = bearer(&parts.headers)?;
        if is_operator(app, key) {
            Ok(Operator)
        } else if key.starts_with(API_KEY_PREFIX) {
            Err(Problem::forbidden(
                "this endpoint needs the operator key, not a tenant API key",
            ))
        } else {
            Err(Problem::unauthenticated("invalid operator key"))
        }
    }
}

/// The tenant a request acts for: from its API key, or the operator's `Chorus-Tenant` header.
pub(crate) struct Caller {
    /// Tenant id.
    pub tenant: String,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if app.config.operator_key.is_none() {
            // Not "invalid key": no key could be valid, and the caller should know why.
            return Err(Problem::forbidden(
                "tenant management is off on this node: start it with --operator-key \
                 (or CHORUS_OPERATOR_KEY, at least 32 characters) and send that key as a bearer \
                 token",
            ));
        }
        let key = bearer(&parts.headers)?;
        if is_operator(app, key) {
            let tenant = parts
                .headers
                .get("chorus-tenant")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Problem::bad_request("the operator must name a tenant with Chorus-Tenant")
                })?;
            validate_tenant_id(tenant)?;
            return Ok(Caller {
                tenant: tenant.to_string(),
            });
        }
        let tenant = verify_api_key(app, key).await?;
        if app.tenants.is_deleting(&tenant) {
            return Err(Problem::not_found("the tenant is being deleted"));
        }
        Ok(Caller { tenant })
    }
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let v = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Problem::unauthenticated("missing Authorization: Bearer <key>"))?
        .to_str()
        .map_err(|_| Problem::unauthenticated("malformed authorization header"))?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(token.trim())
        }
        _ => Err(Problem::unauthenticated(
            "authorization header must be a bearer token",
        )),
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn is_operator(app: &AppState, presented: &str) -> bool {
    // Comparing digests: equal-length inputs, and an early mismatch reveals nothing about
    // the key itself.
    app.config
        .operator_key
        .as_deref()
        .is_some_and(|k| digest(k) == digest(presented))
}

/// Tenant ids: 1 to 63 of `a-z 0-9 _ -`, starting with a letter or digit (they appear in API
/// keys, tokens and URLs).
pub(crate) fn validate_tenant_id(id: &str) -> ApiResult<()> {
    if crate::tenants::valid_id(id) {
        Ok(())
    } else {
        Err(Problem::invalid(
            "tenant id must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit",
        ))
    }
}

fn now() -> i64 {
    i64::try_from(crate::auth::now_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        assert!(validate_tenant_id("acme-1").is_ok());
        for bad in ["", "Acme", "-x", "a.b", "a b", &"x".repeat(64)] {
            assert!(validate_tenant_id(bad).is_err(), "{bad:?}");
        }
    }
}

/// `GET /v1/route?room=NAME`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteQuery {
    room: Option<String>,
}

/// Where a room lives: its home node in the ring, for clients and load balancers. Public:
/// it tells only which node serves a name, never whether the room exists.
async fn route(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
    QueryParams(query): QueryParams<RouteQuery>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let room = query
        .room
        .ok_or_else(|| Problem::bad_request("missing ?room="))?;
    crate::server::validate_room(&room)?;
    let home = app.cluster.home(&room);
    Ok(axum::Json(serde_json::json!({
        "local": home.id == app.cluster.node().id,
        "nodes": app.cluster.ring().len(),
        "room": room,
        "node": home.id,
        "url": home.url,
    })))
}

/// For the fuzz targets: every JSON request body the REST API takes, parsed and checked as
/// its handler does before touching the store; an edit's operations are applied to `doc`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_bodies(raw: &[u8], doc: &yrs::Doc, max_depth: u32) {
    admin::fuzz(raw);
    webhooks::fuzz(raw);
    rooms::fuzz(raw, doc, max_depth);
}
