//! The Chorus hub: a real-time collaboration server for Yjs documents.
//!
//! - [`config`]: the one `Config` (clap flags with `CHORUS_*` env vars).
//! - [`server`]: HTTP routes; every check (auth, limits, bad names) happens before the
//!   WebSocket upgrade: an HTTP error with a JSON body, or, for refusals a retry cannot fix
//!   (no or bad token, a room not granted), an accepted socket closed with 4401/4403.
//! - `admission` (private): may this session open this room (one path for both dialects, a typed
//!   refusal each dialect answers in its own way).
//! - [`auth`]: JWT verification (node keys, and tenant keys by `kid`), room patterns.
//! - [`tenants`]: tenant settings and keys (cached), per-tenant connection counts.
//! - `api` (private): the REST API under `/v1` (problem+json errors, OpenAPI document).
//! - [`docjson`]: documents as JSON, JSON edit operations, version restore.
//! - [`webhooks`]: webhook events into the outbox (`webhooks::events`), and their signed
//!   delivery.
//! - `counts` (private): keys held by several holders at once (deletions, room incarnations).
//! - [`session`]: the socket side, one task per socket: decode and validate frames, forward
//!   them to the room, write what the room queued; `session::websocket` (the upgrade and
//!   fragmented writes), `session::hocuspocus` (the Hocuspocus dialect), `session::recording`
//!   (opt-in session recording, `--record-dir`, for replay by the load tester).
//! - [`outbound`]: the room's handle to a member: its bounded outbound queue, answers
//!   coalesced per member, slow-consumer close.
//! - [`ai`]: the AI assistant: asking, runs streaming into the chat or the document through
//!   a peer, cancel, revert, accept, the record of runs.
//! - [`peer`]: server-side peers (the AI assistant, Rust bots): members with a replica of the
//!   document whose edits take the ordinary path.
//! - [`registry`]: live rooms, atomic get-or-spawn per `(tenant, room)`.
//! - [`room`]: one actor per room owning the `yrs::Doc` and awareness; fan-out, persistence
//!   batching, compaction, idle exit.
//! - `metrics` (private): the Prometheus recorder (the metrics' table is
//!   `chorus_persistence::metric_names`).
//! - `fuzzing` (feature `fuzzing`, and in unit tests): the fuzz targets' bodies over the
//!   session's decoders and a room's document without its actor (`fuzz/`, docs/SECURITY.md).
//!
//! A frame travels: socket -> `session` (decode, validate, role check) -> room command queue
//! -> `room` (apply, encode once) -> every member's `outbound` queue -> their sockets; and
//! `room` -> `Persister` (group commit) -> `saved` to opted-in senders.
//!
//! The API for code that embeds or extends a node: [`run`], [`run_with`] and [`run_on`] (with
//! a [`Transport`]), [`Config`], [`migrate`]; [`registry`] and [`room`] (reaching rooms,
//! server edits), [`peer`] (server-side peers), [`cluster`] (the `Broker` and `Membership`
//! traits and their implementations) and [`server::AppState`] (what `run_with` hands over).
//! [`auth`], [`session`], [`outbound`], [`tenants`], [`webhooks`] and [`docjson`] are public
//! for the test suites and the load tester, which drive a room without sockets and decode
//! what it sends; the HTTP plumbing, the REST handlers, admission, counts and metrics are
//! private.

mod admission;
pub mod ai;
mod api;
pub mod auth;
pub mod cluster;
pub mod config;
mod counts;
pub mod docjson;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod http;
mod metrics;
pub mod outbound;
pub mod peer;
pub mod registry;
pub mod room;
pub mod search;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod tenants;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chorus_persistence::{DocStore, Persister, PostgresStore, SqliteStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::auth::Verifier;
use crate::registry::Registry;
use crate::room::{RoomContext, RoomLimits};
use crate::server::AppState;
use crate::tenants::Tenants;
use crate::webhooks::events::Events;

/// Opens the store the config names: `--database-url`, else `chorus.db` in `--data-dir`.
/// Migrations run first unless `--skip-migrations`.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let migrate = !config.skip_migrations;
    match config.database_url.as_deref() {
        Some(url) if url.starts_with("sqlite:") => {
            let store = SqliteStore::open_url(url)
                .await
                .context("opening the sqlite database")?;
            Ok(Arc::new(store))
        }
        Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
            let store = PostgresStore::open(url, migrate)
                .await
                .context("opening the postgres database")?;
            Ok(Arc::new(store))
        }
        Some(url) => {
            let scheme = url.split(':').next().unwrap_or_default();
            anyhow::bail!(
                "unsupported --database-url scheme {scheme:?}: use postgres:// or sqlite://"
            )
        }
        None => {
            let path = config.data_dir.join("chorus.db");
            let store = SqliteStore::open_file(&path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            Ok(Arc::new(store))
        }
    }
}

/// `chorus migrate`: applies the schema migrations of the database `url` names.
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        PostgresStore::migrate(url)
            .await
            .context("migrating the postgres database")?;
    } else if url.starts_with("sqlite:") {
        // Opening a SQLite store applies its migrations.
        SqliteStore::open_url(url)
            .await
            .context("migrating the sqlite database")?;
    } else {
        anyhow::bail!("unsupported database URL: use postgres:// or sqlite://");
    }
    Ok(())
}

/// Serves on `listener` until `shutdown` resolves, then drains: refuse new sessions, close every
/// socket with 1012, flush every room, and return within `--shutdown-grace`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(listener, config, shutdown, |_| {}).await
}

/// [`run`], handing the node's state to `started` once it is built and before it serves: what
/// runs inside the node (server-side peers through `app.registry`, tests) starts from there.
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    started: impl FnOnce(Arc<AppState>),
) -> anyhow::Result<()> {
    run_on(listener, config, Transport::FromConfig, shutdown, started).await
}

/// How a node reaches the others.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    /// Redis at `--redis-url`, or alone without it.
    #[default]
    FromConfig,
    /// The nodes of this process that share the network (tests, embedding). `--redis-url`
    /// is ignored.
    Memory(cluster::memory::MemoryNetwork),
}

/// [`run_with`] on the given transport.
pub async fn run_on(
    listener: TcpListener,
    config: Config,
    transport: Transport,
    shutdown: impl Future<Output = ()> + Send + 'static,
    started: impl FnOnce(Arc<AppState>),
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let store = open_store(&config).await?;
    let tenants = Tenants::new(store.clone());
    let verifier = Verifier::from_config(&config, tenants.clone())?;
    let docs: Arc<dyn DocStore> = store.clone();
    let persister = Persister::spawn(docs.clone(), 4096, config.persist_batch);
    // The recorder first: the webhook dispatcher describes its metrics when it starts.
    let metrics = metrics::handle();
    let stop_webhooks = CancellationToken::new();
    let (notify, webhooks) = webhooks::spawn(
        store.clone(),
        webhooks::WebhookOptions {
            allow_private: config.webhook_allow_private,
            ..webhooks::WebhookOptions::default()
        },
        stop_webhooks.clone(),
    );
    let events = Events::new(store.clone(), tenants.clone(), notify);
    let pruner = webhooks::events::spawn_pruner(
        store.clone(),
        config.webhook_retention,
        stop_webhooks.clone(),
    );
    if config.anonymous_allowed() {
        tracing::warn!(
            "anonymous connections are allowed: clients without a token can edit every room of tenant \"default\" (pass --allow-anonymous=false or configure a JWT key to require tokens)"
        );
    }
    let addr = listener.local_addr()?;
    let node = cluster::Cluster::node_of(&config, addr);
    let stop_cluster = CancellationToken::new();
    let cluster = match (&transport, &config.redis_url) {
        (Transport::Memory(network), _) => {
            cluster::Cluster::start(
                node.clone(),
                network.membership(),
                network.broker(&node.id),
                config.node_ttl,
                stop_cluster.clone(),
            )
            .await
        }
        (Transport::FromConfig, Some(url)) => {
            cluster::Cluster::join(
                node,
                url,
                &config.redis_prefix,
                config.node_ttl,
                stop_cluster.clone(),
                config.bus_secret.as_deref().map(str::as_bytes),
            )
            .await?
        }
        (Transport::FromConfig, None) => cluster::Cluster::alone(node),
    };
    let ctx = Arc::new(RoomContext {
        limits: RoomLimits {
            max_rooms: config.max_rooms,
            max_document_bytes: config.max_document_bytes,
            persist_batch: config.persist_batch,
            compact_threshold: config.compact_threshold,
            awareness_tick: config.awareness_tick,
            room_idle: config.room_idle,
            max_nesting_depth: config.max_nesting_depth,
            tenant_share_percent: config.max_tenant_share,
        },
        tenants: tenants.clone(),
        events: events.clone(),
        webhook_debounce: config.webhook_debounce,
        store: docs,
        persister,
        cluster: cluster.broker().map(|broker| crate::room::ClusterLink {
            broker,
            cluster: cluster.clone(),
        }),
        applied: Default::default(),
        faults: Default::default(),
        search_debounce: config
            .search
            .search_enabled
            .then_some(config.search.search_debounce),
    });
    let grace = config.shutdown_grace;
    let preauth_places = config
        .max_preauth_connections
        .unwrap_or(config.max_connections / 10)
        .max(1);
    let app = Arc::new(AppState {
        config,
        verifier: Arc::new(verifier),
        registry: Registry::new(ctx),
        store,
        tenants,
        events,
        api_keys: Default::default(),
        shutdown: CancellationToken::new(),
        draining: AtomicBool::new(false),
        preauth: Arc::new(tokio::sync::Semaphore::new(preauth_places)),
        connections: Arc::default(),
        metrics,
        cluster,
    });
    // Runs are recorded under the node's name: a restarted node finds the runs it left
    // running by it (`--node-id`, or `local` alone), and in a cluster the survivors find a
    // departed node's runs by its ring id.
    let ai_node = if app.cluster.clustered() {
        app.cluster.node().id.clone()
    } else {
        app.config.node_id.clone().unwrap_or_else(|| "local".into())
    };
    let stop_search = CancellationToken::new();
    if let Some(search) = search::Search::new(
        app.store.clone(),
        app.tenants.clone(),
        &app.config,
        ai::providers(&app.config.ai)?,
    ) {
        search.attach_rooms(std::sync::Arc::downgrade(&app.registry));
        search.start(stop_search.clone());
        app.registry.set_search(search);
    }
    if let Some(assistant) = ai::Assistant::new(
        &app.registry,
        app.store.clone(),
        app.tenants.clone(),
        app.events.clone(),
        ai_node,
        app.cluster.clustered().then(|| app.cluster.clone()),
        app.config.ai.clone(),
    )? {
        app.registry.set_assistant(assistant.clone());
        assistant.start_handoff();
        let me = assistant.node().to_owned();
        let leftovers = assistant.clone();
        tokio::spawn(async move { leftovers.interrupt_leftovers(&me).await });
        if app.cluster.clustered() {
            // A node that leaves the ring may have left runs mid-answer: one survivor (the
            // store's update decides which) marks them interrupted.
            let cluster = app.cluster.clone();
            let weak = Arc::downgrade(&assistant);
            tokio::spawn(async move {
                let mut departures = cluster.departures();
                let mut known: std::collections::HashSet<String> = cluster
                    .ring()
                    .nodes()
                    .iter()
                    .map(|n| n.id.clone())
                    .collect();
                loop {
                    // The ring as of now: nodes that joined since are learned here too (a
                    // departure is only announced, a join is not), so that a node that
                    // joined after this one is known when it leaves.
                    let gone: Vec<String> = {
                        let now: std::collections::HashSet<String> = cluster
                            .ring()
                            .nodes()
                            .iter()
                            .map(|n| n.id.clone())
                            .collect();
                        let gone = known.difference(&now).cloned().collect();
                        known = now;
                        gone
                    };
                    let Some(assistant) = weak.upgrade() else {
                        break;
                    };
                    for node in gone {
                        assistant.interrupt_leftovers(&node).await;
                    }
                    drop(assistant);
                    tokio::select! {
                        changed = departures.changed() => if changed.is_err() { break },
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            });
        }
    }
    if let Some(broker) = app.cluster.broker() {
        // Weak: the broker lives in `app`, and must not keep it alive.
        let weak = Arc::downgrade(&app);
        let handler: std::sync::Weak<dyn cluster::broker::BrokerHandler> = weak;
        broker.attach(handler);
        // The ring announces departures; the rooms read what the departed node stored.
        let mut departures = app.cluster.departures();
        let registry = Arc::downgrade(&app.registry);
        tokio::spawn(async move {
            while departures.changed().await.is_ok() {
                let Some(registry) = registry.upgrade() else {
                    break;
                };
                registry.catch_up_all();
            }
        });
    }
    started(app.clone());
    tracing::info!(%addr, node = %app.cluster.node().id, "listening");
    tracing::info!(
        "{}",
        startup_summary(&app.config, addr, &app.cluster.node().url)
    );
    if let Some(warning) = nobody_can_connect(&app.config) {
        tracing::warn!("{warning}");
    }
    let stop_accepting = app.shutdown.clone();
    // The state is applied once, here: `Router::with_state` on a shared router copies each
    // route, and cloning the stateless router afterwards shares them.
    let router = server::router(app.clone()).with_state(());
    let limits = http::HttpLimits {
        header_read_timeout: app.config.header_read_timeout,
        max_pending: app.config.max_pending_connections,
    };
    if let Some(addr) = app.config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-listen {addr}"))?;
        let metrics = server::metrics_router(app.clone()).into_make_service();
        let stop = app.shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, metrics)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    let mut server = tokio::spawn(http::serve(listener, router, limits, stop_accepting));

    tokio::select! {
        () = shutdown => {}
        res = &mut server => {
            // The accept loop ended by itself; nothing to drain gracefully from.
            res.context("server task")?;
            return Ok(());
        }
    }
    drain(&app, grace).await;
    // Flushed: now the ring may hand our rooms on.
    stop_cluster.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), app.cluster.leave()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    // Events not delivered yet stay in the outbox for the next start (or another node).
    stop_webhooks.cancel();
    stop_search.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), webhooks).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), pruner).await;
    Ok(())
}

/// What an operator needs at start: where the data lives, the URLs clients use, and which
/// ways in are open.
pub fn startup_summary(config: &Config, addr: std::net::SocketAddr, advertised: &str) -> String {
    let data = match config.database_url.as_deref() {
        Some(url) if url.starts_with("sqlite:") => format!("SQLite {url}"),
        Some(url) => format!("Postgres {}", redact_url(url)),
        None => format!("SQLite {}", config.data_dir.join("chorus.db").display()),
    };
    // A wildcard address is not one a client can dial: show where to find it on this machine.
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{} (listening on all interfaces)", addr.port())
    } else {
        addr.to_string()
    };
    let base = if config.advertise_url.is_some() {
        advertised.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", host.split(' ').next().unwrap_or(&host))
    };
    let ws = base.replacen("http", "ws", 1);
    let metrics = match config.metrics_listen {
        Some(m) => format!("http://{m}/metrics"),
        None => format!("{base}/metrics"),
    };
    let mut auth = Vec::new();
    if config.anonymous_allowed() {
        auth.push("anonymous (no token needed)".to_owned());
    }
    if config.jwt_secret.is_some() {
        auth.push("HS256 tokens (--jwt-secret)".to_owned());
    }
    if config.jwt_public_key.is_some() {
        auth.push("EdDSA/RS256 tokens (--jwt-public-key)".to_owned());
    }
    auth.push("tenant-key tokens (kid)".to_owned());
    let tenants = if config.operator_key.is_some() {
        "on (--operator-key)"
    } else {
        "off (set --operator-key to manage tenants over REST)"
    };
    let cluster = match config.redis_url.as_deref() {
        Some(url) => format!("Redis {} (prefix {})", redact_url(url), config.redis_prefix),
        None => "off (this node runs alone)".to_owned(),
    };
    let editor = if server::web_client_bundled() {
        format!("{base}/ (open it in a browser)")
    } else {
        "not in this build (web-client/dist was empty)".to_owned()
    };
    format!(
        "chorus {version} ready on {host}\n  \
         editor:      {editor}\n  \
         data:        {data}\n  \
         y-websocket: {ws}/ws/<room>\n  \
         hocuspocus:  {ws}/\n  \
         REST:        {base}/v1 (OpenAPI: {base}/v1/openapi.json)\n  \
         metrics:     {metrics}\n  \
         health:      {base}/healthz, {base}/readyz\n  \
         auth:        {auth}\n  \
         tenants:     {tenants}\n  \
         cluster:     {cluster}",
        version = env!("CARGO_PKG_VERSION"),
        auth = auth.join(", "),
    )
}

/// A warning when no client can get in: anonymous access is off, no node key verifies tokens
/// and no operator key can create tenants and their keys.
pub fn nobody_can_connect(config: &Config) -> Option<&'static str> {
    let node_keys = config.jwt_secret.is_some() || config.jwt_public_key.is_some();
    (!config.anonymous_allowed() && !node_keys && config.operator_key.is_none()).then_some(
        "no client can connect unless a tenant key already exists in the database: anonymous \
         access is off and there is no --jwt-secret, --jwt-public-key or --operator-key \
         (set CHORUS_JWT_SECRET for development tokens, see README.md)",
    )
}

/// A URL without its password.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The user info ends at the last '@' of the authority (a password may hold '@'); when a
    // '/' in the password cuts the authority short, the last '@' of the whole URL.
    let end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@').or_else(|| rest.rfind('@')) else {
        return url.to_owned();
    };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

async fn drain(app: &AppState, grace: Duration) {
    let deadline = Instant::now() + grace;
    tracing::info!(
        connections = app.connections.count(),
        rooms = app.registry.len(),
        "draining"
    );
    app.draining.store(true, Ordering::Release);
    app.shutdown.cancel();
    ::metrics::counter!(crate::metrics::names::DRAINED_SESSIONS_TOTAL)
        .increment(app.connections.count() as u64);
    // In a cluster each room's members learn where the room goes next: its home in the ring
    // without this node (the close reason, at most 123 bytes, or the plain reason if longer).
    if app.cluster.clustered() {
        let me = &app.cluster.node().id;
        let rest = cluster::Ring::new(
            app.cluster
                .ring()
                .nodes()
                .iter()
                .filter(|n| &n.id != me)
                .cloned()
                .collect(),
        );
        let mut told = Vec::new();
        for handle in app.registry.handles() {
            if let Some(next) = rest.home(&handle.key.room) {
                let reason = format!("server shutting down; next: {}", next.url);
                if reason.len() <= 123
                    && let Some(rx) = handle.drain(reason)
                {
                    told.push(rx);
                }
            }
        }
        // The first close request wins: the hints must land before the generic one below.
        let _ = tokio::time::timeout(Duration::from_secs(1), futures_util::future::join_all(told))
            .await;
    }
    // Connections close with 1012 and leave their rooms.
    app.connections.close_all(
        chorus_protocol::CloseCode::Restarting,
        "server shutting down",
    );
    while app.connections.count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Then every room flushes and exits.
    let rooms = async {
        let handles = app.registry.handles();
        futures_util::future::join_all(handles.iter().map(|h| h.shutdown())).await
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(remaining.max(Duration::from_millis(100)), rooms)
        .await
        .is_err()
    {
        tracing::error!("shutdown grace period ran out before every room flushed");
    } else {
        tracing::info!("drained");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_summary_names_data_urls_and_ways_in() {
        let mut config = Config::default();
        let addr: std::net::SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        config.listen = addr;
        let text = startup_summary(&config, addr, "http://0.0.0.0:8080");
        for needle in [
            "data:        SQLite ./data/chorus.db",
            "y-websocket: ws://127.0.0.1:8080/ws/<room>",
            "hocuspocus:  ws://127.0.0.1:8080/",
            "REST:        http://127.0.0.1:8080/v1",
            "metrics:     http://127.0.0.1:8080/metrics",
            "tenants:     off (set --operator-key",
            "cluster:     off",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        // Off loopback, without keys: nobody can connect, and the start says so.
        assert!(!text.contains("anonymous"), "{text}");
        assert!(nobody_can_connect(&config).is_some());
        config.jwt_secret = Some("s".repeat(32));
        assert!(nobody_can_connect(&config).is_none());
        config.database_url = Some("postgres://hub:secret@db:5432/chorus".into());
        config.redis_url = Some("redis://:pw@cache:6379".into());
        let text = startup_summary(&config, addr, "");
        assert!(
            text.contains("Postgres postgres://hub:***@db:5432/chorus"),
            "{text}"
        );
        assert!(text.contains("HS256 tokens"), "{text}");
        assert!(!text.contains(":secret@"), "{text}");
        assert!(!text.contains(":pw@"), "{text}");
    }

    #[test]
    fn urls_lose_their_passwords() {
        for (url, want) in [
            ("postgres://u:p@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p@ss@h/db?x=@", "postgres://u:***@h/db?x=@"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("redis://h:6379", "redis://h:6379"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), want);
        }
    }
}
