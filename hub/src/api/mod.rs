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
mod openapi;
mod rooms;
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

/// Builds the `/v1` routes.
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/openapi.json", get(openapi::serve))
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

/// What every API key starts with.
pub(crate) const API_KEY_PREFIX: &str = "chk_";

/// How long a verified API key is trusted without re-checking its hash and revocation.
const API_KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// Verified API keys (by digest of the whole key): argon2 is slow by design, so it runs once
/// per key per [`API_KEY_CACHE_TTL`], not per request. Revocation through this node clears
/// the entry at once.
#[derive(Debug, Default)]
pub struct KeyCache {
    verified: DashMap<[u8; 32], (String, String, Instant)>,
    // Keys that failed verification, by digest, when: refused again without argon2 for
    // `API_KEY_CACHE_TTL` (a client retrying a bad key costs nothing).
    failed: DashMap<[u8; 32], Instant>,
    // argon2 runs per key id (`tenant`, `key id`): the id is not secret, so anyone can make
    // the node verify guesses against it; this bounds how often.
    attempts: DashMap<(String, String), crate::session::RateLimit>,
}

/// argon2 verifications running at once (each takes ~19 MiB and tens of milliseconds of a
/// core); more wait, up to `ARGON2_WAIT`.
static ARGON2: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// How long a request waits for an argon2 slot before it is told to retry (429).
const ARGON2_WAIT: Duration = Duration::from_secs(2);

/// argon2 verifications per second for one key id (bursts of twice that).
const ARGON2_PER_KEY_ID: u32 = 5;

/// Entries the key caches may hold before they are cleared (a flood of made-up keys).
const KEY_CACHE_MAX: usize = 100_000;

impl KeyCache {
    pub(crate) fn forget_key(&self, tenant: &str, key_id: &str) {
        self.verified
            .retain(|_, (t, k, _)| !(t == tenant && k == key_id));
    }

    pub(crate) fn forget_tenant(&self, tenant: &str) {
        self.verified.retain(|_, (t, _, _)| t != tenant);
    }
}

/// Splits `chk_<tenant>.<key id>.<secret>`.
fn parse_api_key(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let mut parts = rest.splitn(3, '.');
    let (tenant, key_id, secret) = (parts.next()?, parts.next()?, parts.next()?);
    (!tenant.is_empty() && !key_id.is_empty() && !secret.is_empty())
        .then_some((tenant, key_id, secret))
}

async fn verify_api_key(app: &AppState, key: &str) -> ApiResult<String> {
    let invalid = || Problem::unauthenticated("invalid or revoked API key");
    let d = digest(key);
    if let Some(hit) = app.api_keys.verified.get(&d)
        && hit.2.elapsed() < API_KEY_CACHE_TTL
    {
        return Ok(hit.0.clone());
    }
    if app
        .api_keys
        .failed
        .get(&d)
        .is_some_and(|t| t.elapsed() < API_KEY_CACHE_TTL)
    {
        metrics::counter!("chorus_api_key_failures_cached_total").increment(1);
        return Err(invalid());
    }
    let (tenant, key_id, secret) = parse_api_key(key).ok_or_else(invalid)?;
    if validate_tenant_id(tenant).is_err() || key_id.len() > 64 || secret.len() > 256 {
        return Err(invalid());
    }
    let stored = app
        .store
        .get_api_key(tenant, key_id)
        .await?
        .filter(|k| k.revoked.is_none())
        .ok_or_else(invalid)?;
    let allowed = {
        if app.api_keys.attempts.len() > KEY_CACHE_MAX {
            app.api_keys.attempts.clear();
        }
        app.api_keys
            .attempts
            .entry((tenant.to_string(), key_id.to_string()))
            .or_insert_with(|| crate::session::RateLimit::new(ARGON2_PER_KEY_ID))
            .take()
    };
    if !allowed {
        metrics::counter!("chorus_limit_rejections_total", "limit" => "api_key_verifications")
            .increment(1);
        return Err(Problem::quota(
            "too many attempts with this API key id; retry in a few seconds",
        ));
    }
    let Ok(Ok(permit)) = tokio::time::timeout(ARGON2_WAIT, ARGON2.acquire()).await else {
        metrics::counter!("chorus_limit_rejections_total", "limit" => "api_key_verifications")
            .increment(1);
        return Err(Problem::quota("too many API key verifications; retry"));
    };
    let secret = secret.to_string();
    let ok = tokio::task::spawn_blocking(move || verify_secret(&secret, &stored.hash))
        .await
        .map_err(Problem::internal)?;
    drop(permit);
    if !ok {
        if app.api_keys.failed.len() > KEY_CACHE_MAX {
            app.api_keys.failed.clear();
        }
        app.api_keys.failed.insert(d, Instant::now());
        return Err(invalid());
    }
    if app.api_keys.verified.len() > KEY_CACHE_MAX {
        app.api_keys.verified.clear();
    }
    app.api_keys
        .verified
        .insert(d, (tenant.to_string(), key_id.to_string(), Instant::now()));
    Ok(tenant.to_string())
}

/// Argon2id hash (PHC string) of an API key secret.
fn hash_secret(secret: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_secret(secret: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// A random secret: 32 bytes, URL-safe base64 (no `.`, so it never splits an API key).
fn random_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A short random id (12 hex digits).
fn random_id() -> String {
    let n: u64 = rand::random();
    format!("{:012x}", n & 0xffff_ffff_ffff)
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
    fn api_keys_parse() {
        assert_eq!(
            parse_api_key("chk_acme.k1.s3cr3t"),
            Some(("acme", "k1", "s3cr3t"))
        );
        assert_eq!(parse_api_key("chk_acme.k1."), None);
        assert_eq!(parse_api_key("acme.k1.s"), None);
        assert_eq!(parse_api_key("chk_.k1.s"), None);
    }

    #[test]
    fn secrets_hash_and_verify() {
        let h = hash_secret("abc").expect("hash");
        assert!(verify_secret("abc", &h));
        assert!(!verify_secret("abd", &h));
        assert!(!verify_secret("abc", "not a hash"));
    }

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
