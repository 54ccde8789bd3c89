//! HTTP side: the router, the WebSocket upgrade, health and metrics endpoints. Every check
//! happens before the upgrade. Refusals a retry can fix (limits, draining, a deleted room) are
//! HTTP errors with JSON bodies; refusals it cannot (no or bad token, a room not granted, a
//! page that may not connect) accept the upgrade and close at once with 4401 or 4403 (see
//! `refusal::refused_for_good`).

mod origin;
mod refusal;
mod web;

pub use web::bundled as web_client_bundled;

pub use origin::{PageTrust, page_trust};
pub(crate) use origin::{is_loopback_host, strip_port};
pub(crate) use refusal::log_refusal;
use refusal::{refused, refused_for_good};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chorus_persistence::{RoomCreated, RoomKey, Store};
use chorus_protocol::ext::SUBPROTOCOL;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::admission::Refusal;
use crate::auth::Verifier;
use crate::config::Config;
use crate::error::ApiError;
use crate::outbound;
use crate::registry::Registry;
use crate::session::websocket::Upgrade;
use crate::session::{self, Session};

/// State shared by every request.
pub struct AppState {
    /// The configuration the node runs with.
    pub config: Config,
    /// Token verification.
    pub verifier: Arc<Verifier>,
    /// Live rooms.
    pub registry: Arc<Registry>,
    /// The store (documents and catalog).
    pub store: Arc<dyn Store>,
    /// Tenant settings and keys (cached), per-tenant connection counts.
    pub tenants: Arc<crate::tenants::Tenants>,
    /// Webhook events.
    pub events: crate::webhooks::events::Events,
    /// Verified REST API keys.
    pub api_keys: crate::api::KeyCache,
    /// Cancelled when shutdown begins: the listener stops accepting.
    pub shutdown: CancellationToken,
    /// Set when shutdown begins: refuse new sessions, report not ready.
    pub draining: AtomicBool,
    /// Places for Hocuspocus sockets that have not authenticated a document yet
    /// (`--max-preauth-connections`): they take no `--max-connections` place until then.
    pub preauth: Arc<tokio::sync::Semaphore>,
    /// Open WebSocket connections (for `--max-connections`, and closed with 1012 on drain).
    pub connections: Arc<crate::outbound::Connections>,
    /// Prometheus exposition.
    pub metrics: PrometheusHandle,
    /// The ring of live nodes (this node alone without `--redis-url`).
    pub cluster: Arc<crate::cluster::Cluster>,
}

/// What other nodes publish reaches the node here: envelopes and resyncs go to the rooms
/// through the registry, cache invalidations to the caches.
impl crate::cluster::broker::BrokerHandler for AppState {
    fn envelope(
        &self,
        key: &chorus_persistence::RoomKey,
        envelope: crate::cluster::envelope::Envelope,
    ) {
        self.registry.route(key, envelope);
    }

    fn lost(&self) {
        self.registry.resync_all();
    }

    fn change(&self, change: crate::cluster::Change) {
        self.forget(&change);
    }
}

impl AppState {
    /// A tenant's settings, keys or API keys changed through this node: forget the cached
    /// copies here and, in a cluster, on every other node.
    pub fn changed(&self, change: crate::cluster::Change) {
        self.forget(&change);
        self.cluster.announce(&change);
    }

    /// Forgets what `change` makes stale (also for changes announced by other nodes).
    pub fn forget(&self, change: &crate::cluster::Change) {
        self.tenants.invalidate(&change.tenant);
        if let Some(key) = &change.api_key {
            self.api_keys.forget_key(&change.tenant, key);
        }
        if change.all_api_keys {
            self.api_keys.forget_tenant(&change.tenant);
        }
    }
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ws/{*room}", get(ws_handler))
        .route("/", get(root))
        .route("/assets/{*file}", get(web::asset))
        .route("/hocuspocus", get(hocuspocus_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .nest("/v1", crate::api::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(state)
}

/// Query parameters of the WebSocket endpoint. Unknown parameters (y-websocket passes its
/// `params` through) are ignored.
#[derive(Debug, Deserialize)]
pub struct WsParams {
    token: Option<String>,
    ext: Option<String>,
    /// `json`: the JSON mode for bots (session/json.rs).
    format: Option<String>,
    /// The JSON mode's delta interval, in milliseconds.
    interval: Option<u64>,
}

/// Longest room name accepted, in bytes.
pub const MAX_ROOM_NAME: usize = 512;

pub(crate) fn validate_room(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::BadRequest("room name is empty".into()));
    }
    if name.len() > MAX_ROOM_NAME {
        return Err(ApiError::BadRequest(format!(
            "room name longer than {MAX_ROOM_NAME} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "room name contains control characters".into(),
        ));
    }
    if name.chars().any(is_invisible_format) {
        return Err(ApiError::BadRequest(
            "room name contains invisible formatting characters".into(),
        ));
    }
    Ok(())
}

/// Unicode format characters (category Cf) and other invisible ones that make two names look
/// alike or reverse how a name reads: bidi overrides and isolates (U+202A-E, U+2066-9), zero
/// widths (U+200B-F, U+2060-4, U+FEFF), the soft hyphen, and the rest of Cf that occurs in
/// text (Arabic, Syriac, Mongolian, tags).
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}'
        | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E007F}')
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("malformed authorization header".into()))?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(ApiError::Unauthenticated(
            "authorization header must be a bearer token".into(),
        )),
    }
}

/// `GET /ws/{room}`: the `connection` span (the root of everything this socket does, see
/// `telemetry`) and, inside it, the `upgrade` span around the checks.
async fn ws_handler(
    State(app): State<Arc<AppState>>,
    room: Result<Path<String>, PathRejection>,
    params: Result<Query<WsParams>, QueryRejection>,
    headers: HeaderMap,
    ws: Result<Upgrade, ApiError>,
) -> Response {
    use tracing::Instrument;
    // Unsampled (or without --otlp-endpoint): no span at all, here or in the session.
    let span = crate::telemetry::keep_if_sampled(connection_span());
    let upgrade = if span.is_disabled() {
        tracing::Span::none()
    } else {
        tracing::debug_span!(parent: &span, "upgrade")
    };
    ws_upgrade(app, room, params, headers, ws, span)
        .instrument(upgrade)
        .await
}

/// A connection's span; its fields are recorded once known. At debug, like every span of the
/// node (see `telemetry`): kept for logs (`RUST_LOG=info,chorus_hub=debug`) it costs about
/// 570 bytes per idle connection and 6 % more CPU per delivery, too much to have by default.
pub(crate) fn connection_span() -> tracing::Span {
    tracing::debug_span!(
        "connection",
        conn = tracing::field::Empty,
        tenant = tracing::field::Empty,
        room = tracing::field::Empty,
        dialect = tracing::field::Empty,
    )
}

async fn ws_upgrade(
    app: Arc<AppState>,
    room: Result<Path<String>, PathRejection>,
    params: Result<Query<WsParams>, QueryRejection>,
    headers: HeaderMap,
    ws: Result<Upgrade, ApiError>,
    span: tracing::Span,
) -> Response {
    use tracing::Instrument;
    if let Some(refusal) = refuse_while_draining(&app) {
        return refusal;
    }
    let Ok(Path(room)) = room else {
        return refused(
            "bad_request",
            ApiError::BadRequest("invalid room path".into()),
        );
    };
    if let Err(e) = validate_room(&room) {
        return refused("bad_request", e);
    }
    let Ok(Query(params)) = params else {
        return refused(
            "bad_request",
            ApiError::BadRequest("invalid query string".into()),
        );
    };
    let token = match bearer(&headers) {
        Ok(Some(t)) => Some(t),
        Ok(None) => params.token.as_deref(),
        Err(e) => return refused_for_good(&app, ws, "unauthenticated", e),
    };
    let identity = match app.verifier.verify(token).await {
        Ok(i) => i,
        Err(e) => return refused_for_good(&app, ws, "unauthenticated", e),
    };
    match page_trust(&app.config, &headers) {
        PageTrust::Full => {}
        PageTrust::TokenOnly if identity.expires.is_some() => {}
        PageTrust::TokenOnly => {
            return refused_for_good(
                &app,
                ws,
                "origin",
                ApiError::Forbidden(
                    "anonymous access is only for local pages: send a token or list the origin in --allowed-origins".into(),
                ),
            );
        }
        PageTrust::None => {
            return refused_for_good(
                &app,
                ws,
                "origin",
                ApiError::Forbidden("this page's origin is not in --allowed-origins".into()),
            );
        }
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return refused(
                "bad_request",
                ApiError::BadRequest("expected a websocket upgrade".into()),
            );
        }
    };
    let mut slot = match reserve_connection(&app) {
        Ok(g) => g,
        Err(e) => return refused("connections", e),
    };
    let admitted = match crate::admission::admit(&app, &identity, &room).await {
        Ok(a) => a,
        Err(Refusal::NotGranted) => {
            let e = Refusal::NotGranted.into_api_error();
            return refused_for_good(&app, Ok(ws), "forbidden", e);
        }
        Err(r) => return refused(r.metric(), r.into_api_error()),
    };
    let key = admitted.room.key.clone();
    let protocol = select_protocol(&ws);
    let ext_protocol = protocol.as_deref() == Some(SUBPROTOCOL);
    let ext = ext_protocol || matches!(params.ext.as_deref(), Some("1" | "true"));
    let json_mode = protocol.as_deref() == Some(session::json::SUBPROTOCOL)
        || params.format.as_deref() == Some("json");
    let interval = match params.interval {
        None => session::json::DEFAULT_INTERVAL,
        Some(ms) => {
            let d = std::time::Duration::from_millis(ms);
            if !(session::json::MIN_INTERVAL..=session::json::MAX_INTERVAL).contains(&d) {
                return refused(
                    "bad_request",
                    ApiError::BadRequest("interval must be 50 to 10000 milliseconds".into()),
                );
            }
            d
        }
    };
    let (handle, queue) = outbound::channel(
        outbound::next_conn_id(),
        ext,
        identity.role,
        app.config.send_queue_messages,
        app.config.send_queue_bytes,
    );
    let handle = handle
        .with_user(identity.user.as_deref())
        .shown_as(identity.shown_as.clone());
    let conn_id = handle.id;
    span.record("conn", conn_id);
    span.record("tenant", &*key.tenant);
    span.record("room", &*key.room);
    span.record("dialect", if json_mode { "json" } else { "y-websocket" });
    slot.attach(conn_id, &queue);
    let recorder = app
        .config
        .record_dir
        .as_deref()
        .and_then(|dir| crate::session::recording::Recorder::open(dir, &key, conn_id))
        .map(Box::new);
    let rate_limit = admitted.tenant.settings.messages_per_second.or((app
        .config
        .messages_per_second
        > 0)
    .then_some(app.config.messages_per_second));
    if json_mode {
        let session = session::json::JsonSession {
            key,
            identity,
            // The JSON mode's frames are text: the handle sends them whatever `ext` says.
            conn: handle,
            queue,
            registry: app.registry.clone(),
            verifier: app.verifier.clone(),
            ping_interval: app.config.ping_interval,
            rate_limit,
            interval,
            max_awareness_bytes: app.config.max_awareness_bytes,
            guard: Box::new((slot, admitted.slot)),
        };
        return ws.respond(protocol.as_deref(), ws_config(&app.config), move |socket| {
            session::json::run(socket, session).instrument(span)
        });
    }
    let session = Session {
        traced: !span.is_disabled(),
        recorder,
        key,
        identity,
        conn: handle,
        queue,
        registry: app.registry.clone(),
        limits: session::FrameLimits::of(&app.config),
        verifier: app.verifier.clone(),
        ping_interval: app.config.ping_interval,
        rate_limit,
        guard: Box::new((slot, admitted.slot)),
    };
    ws.respond(protocol.as_deref(), ws_config(&app.config), move |socket| {
        session::run(socket, session).instrument(span)
    })
}

/// Records a room the first time it is joined, within the tenant's room limit. Rooms are
/// recorded when they spawn on this node, not per connection. Without a limit the record is
/// written in the background: a first joiner does not wait for a database commit. Rooms of
/// tenants without a tenant record (anonymous connections, node-key tokens naming any tenant)
/// are not recorded: nothing lists or limits them, and a write per room would only cost.
pub(crate) async fn record_room(
    app: &Arc<AppState>,
    key: &RoomKey,
    tenant: &crate::tenants::TenantState,
) -> Result<(), ApiError> {
    if !tenant.exists {
        return Ok(());
    }
    let max_rooms = tenant.settings.max_rooms;
    let write = {
        let app = app.clone();
        let key = key.clone();
        async move {
            let now = crate::auth::now_secs() as i64;
            let meta = serde_json::Value::Object(Default::default());
            let created = app
                .store
                .create_room(&key.tenant, &key.room, &meta, max_rooms, now)
                .await;
            if let Ok(RoomCreated::Created) = created {
                app.events.emit(
                    &key.tenant,
                    crate::webhooks::events::ROOM_CREATED,
                    json!({ "room": &*key.room, "via": "join" }),
                );
            }
            created
        }
    };
    if max_rooms.is_none() {
        tokio::spawn(async move {
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "cannot record room");
            }
        });
        return Ok(());
    }
    match write.await {
        Ok(RoomCreated::Created | RoomCreated::Exists) => Ok(()),
        Ok(RoomCreated::LimitReached) => Err(ApiError::TooManyRequests(
            "the tenant's room limit is reached".into(),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "cannot record room");
            Err(ApiError::Unavailable(
                "room records unavailable; retry later".into(),
            ))
        }
    }
}

/// New sessions are refused (503) once shutdown has begun.
fn refuse_while_draining(app: &AppState) -> Option<Response> {
    app.draining.load(Ordering::Acquire).then(|| {
        refused(
            "draining",
            ApiError::Unavailable("server is shutting down".into()),
        )
    })
}

/// Reserves a connection slot, released when the session ends.
/// A tenant's connection limit on this node: its own setting, else its share of the node's.
pub(crate) fn tenant_connection_limit(
    app: &AppState,
    tenant_id: &str,
    tenant: &crate::tenants::TenantState,
) -> Option<u64> {
    tenant.settings.max_connections.or_else(|| {
        crate::tenants::node_share(
            tenant_id,
            app.config.max_connections,
            app.config.max_tenant_share,
        )
        .map(|n| n as u64)
    })
}

pub(crate) fn reserve_connection(app: &AppState) -> Result<outbound::Slot, ApiError> {
    let (slot, open) = app.connections.reserve();
    if open >= app.config.max_connections {
        return Err(ApiError::Unavailable(
            "too many connections on this node".into(),
        ));
    }
    Ok(slot)
}

/// Selects chorus.v1 when offered; otherwise echoes the client's first subprotocol, as the
/// reference server does, since browsers fail a handshake that ignores their request.
fn select_protocol(ws: &Upgrade) -> Option<String> {
    for wanted in [session::json::SUBPROTOCOL, SUBPROTOCOL] {
        if ws.requested_protocols().any(|p| p == wanted) {
            return Some(wanted.to_string());
        }
    }
    ws.requested_protocols().next().map(str::to_string)
}

/// Buffer and size settings every socket gets.
fn ws_config(config: &Config) -> tungstenite::protocol::WebSocketConfig {
    // tungstenite zero-fills its read buffer up front and keeps it per connection: 256 bytes
    // instead of 4 KiB cuts ~3.8 KiB per connection (docs/BENCHMARKS.md). Typical updates and
    // awareness messages fit; a larger frame reserves its own length, so it takes no more
    // reads than it would anyway. Writes
    // collect up to 64 KiB before going to the socket (fragments are no larger, see session/websocket.rs).
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(crate::session::websocket::FRAGMENT_BYTES)
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes))
}

/// Hocuspocus keepalive: providers drop a socket that heard nothing for 30 s.
const HOCUSPOCUS_PING: std::time::Duration = std::time::Duration::from_secs(10);

/// The Hocuspocus dialect: documents and tokens come inside the socket, so only the
/// node-level checks happen before the upgrade.
/// `/`: the web client's page, or the Hocuspocus endpoint for a WebSocket upgrade.
async fn root(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    ws: Result<Upgrade, ApiError>,
) -> Response {
    if ws.is_err() && !headers.contains_key(header::UPGRADE) {
        return web::page(&headers);
    }
    hocuspocus_handler(state, headers, ws).await
}

async fn hocuspocus_handler(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    ws: Result<Upgrade, ApiError>,
) -> Response {
    if let Some(refusal) = refuse_while_draining(&app) {
        return refusal;
    }
    // Documents authenticate inside the socket: a page that may not open anonymous sessions
    // gets the socket, and its anonymous documents are refused there.
    let trust = page_trust(&app.config, &headers);
    if trust == PageTrust::None {
        return refused_for_good(
            &app,
            ws,
            "origin",
            ApiError::Forbidden("this page's origin is not in --allowed-origins".into()),
        );
    }
    let Ok(ws) = ws else {
        return refused(
            "bad_request",
            ApiError::BadRequest(
                "expected a websocket upgrade (the hocuspocus protocol is served here)".into(),
            ),
        );
    };
    let Ok(preauth) = app.preauth.clone().try_acquire_owned() else {
        return refused(
            "preauth",
            ApiError::Unavailable("too many unauthenticated connections; retry".into()),
        );
    };
    let protocol = select_protocol(&ws);
    // Role and ext belong to each document's handle; the root handle only carries pings.
    let (root, queue) = outbound::channel(
        outbound::next_conn_id(),
        false,
        crate::auth::Role::Read,
        app.config.send_queue_messages,
        app.config.send_queue_bytes,
    );
    // Documents (rooms) are opened inside the socket: each one's `join` span names its room.
    let span = crate::telemetry::keep_if_sampled(connection_span());
    span.record("conn", root.id);
    span.record("dialect", "hocuspocus");
    let mut dialect = crate::session::hocuspocus::Hocuspocus::new(root, app.clone(), preauth);
    dialect.anonymous_allowed = trust == PageTrust::Full;
    dialect.traced = !span.is_disabled();
    // Ticks also enforce the auth deadline.
    let ping = app
        .config
        .ping_interval
        .min(HOCUSPOCUS_PING)
        .min(app.config.auth_timeout);
    let mut queue = queue;
    ws.respond(
        protocol.as_deref(),
        ws_config(&app.config),
        move |mut socket| {
            use tracing::Instrument;
            async move {
                session::serve(&mut socket, &mut queue, ping, &mut dialect).await;
            }
            .instrument(span)
        },
    )
}

/// Liveness, with the node's load for operators and tests.
async fn healthz(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(json!({
        "status": "ok",
        "rooms": app.registry.len(),
        "connections": app.connections.count(),
    }))
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.draining.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    // A busy store must not make the probe hang past the prober's own timeout.
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), app.store.ping()).await;
    match ping.unwrap_or_else(|_| {
        Err(chorus_persistence::StoreError::Task(
            "ping timed out".into(),
        ))
    }) {
        // Without Redis the node still serves its own sessions; cross-node rooms wait.
        Ok(()) if !app.cluster.healthy() => {
            axum::Json(json!({ "status": "degraded", "redis": "unreachable" })).into_response()
        }
        Ok(()) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "status": "store unreachable" })),
            )
                .into_response()
        }
    }
}

async fn metrics_handler(State(app): State<Arc<AppState>>) -> Response {
    if app.config.metrics_listen.is_some() {
        return ApiError::NotFound("no such endpoint".into()).into_response();
    }
    render_metrics(&app)
}

/// The metrics router for `--metrics-listen`: `/metrics` and nothing else.
pub fn metrics_router(app: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(app): State<Arc<AppState>>| async move { render_metrics(&app) }),
        )
        .with_state(app)
}

fn render_metrics(app: &AppState) -> Response {
    // Queue depths are read now rather than kept up to date: counting every message in and
    // out would cost the hot path a shared atomic per member per update.
    let (messages, bytes) = app.connections.queued();
    metrics::gauge!(crate::metrics::names::OUTBOUND_QUEUED_MESSAGES).set(messages as f64);
    metrics::gauge!(crate::metrics::names::OUTBOUND_QUEUED_BYTES).set(bytes as f64);
    metrics::gauge!(crate::metrics::names::ROOM_QUEUED_COMMANDS)
        .set(app.registry.queued_commands() as f64);
    app.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_checked() {
        assert!(validate_room("notes/2026").is_ok());
        assert!(validate_room("").is_err());
        assert!(validate_room("a\u{0}b").is_err());
        // Issue 13: names that read differently from what they are.
        for sneaky in [
            "invoice\u{202E}fdp.exe",
            "a\u{200B}b",
            "\u{FEFF}room",
            "x\u{2066}y",
        ] {
            assert!(validate_room(sneaky).is_err(), "{sneaky:?}");
        }
        assert!(validate_room("café/日本語/ünïcödé").is_ok());
        assert!(validate_room(&"x".repeat(MAX_ROOM_NAME + 1)).is_err());
    }

    #[test]
    fn bearer_header_parsing() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer(&h), Ok(None)));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("header"));
        assert!(matches!(bearer(&h), Ok(Some("abc"))));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert!(bearer(&h).is_err());
    }
}
