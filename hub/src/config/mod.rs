//! Command line and environment configuration. Every field is a flag with a `CHORUS_*`
//! environment variable and a documented default; tests build [`Config`] values directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

mod ai;
mod cli;
mod search;
pub use ai::AiConfig;
pub use cli::{Cli, CliCommand, MigrateArgs, ReindexArgs, TokenArgs};
pub use search::SearchConfig;

/// Options of the server.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CHORUS_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Directory of the embedded SQLite database (`chorus.db`).
    #[arg(long, env = "CHORUS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Database URL; overrides --data-dir. `postgres://user@host/db` (see docs/OPERATIONS.md)
    /// or `sqlite://path`. Default: none.
    #[arg(long, env = "CHORUS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Do not apply schema migrations at start-up (when `chorus migrate` runs them with the
    /// schema owner's credentials and the hub's login may not change the schema). Default:
    /// false.
    #[arg(long, env = "CHORUS_SKIP_MIGRATIONS", value_parser = clap::builder::BoolishValueParser::new())]
    pub skip_migrations: bool,

    /// Operator key: a bearer token (at least 32 characters) that manages tenants over the REST
    /// API. Default: none (tenant management disabled).
    #[arg(long, env = "CHORUS_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<String>,

    /// Largest REST request body (JSON), in bytes; binary document uploads are bounded by
    /// --max-document-bytes instead.
    #[arg(long, env = "CHORUS_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Let webhooks reach loopback, private and link-local addresses (off: a tenant's webhook
    /// must not reach the internal network or a cloud metadata endpoint). Default: false.
    #[arg(long, env = "CHORUS_WEBHOOK_ALLOW_PRIVATE", value_parser = clap::builder::BoolishValueParser::new())]
    pub webhook_allow_private: bool,

    /// How long delivered and given-up webhook events stay in the outbox (visible through `GET
    /// /v1/webhook/events`) before they are pruned.
    #[arg(long, env = "CHORUS_WEBHOOK_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub webhook_retention: std::time::Duration,

    /// Shortest time between two `document.changed` webhook events of one room.
    #[arg(long, env = "CHORUS_WEBHOOK_DEBOUNCE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub webhook_debounce: Duration,

    /// HS256 secret that verifies tokens. Default: none.
    #[arg(long, env = "CHORUS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// EdDSA (Ed25519) or RS256 public key verifying tokens: PEM text or a path to a PEM file.
    /// Default: none.
    #[arg(long, env = "CHORUS_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,

    /// Accept connections without a token (tenant `default`, write access to every room).
    /// Default: true when listening on a loopback address with no JWT key, no operator key and
    /// no Postgres database configured, false otherwise.
    #[arg(long, env = "CHORUS_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_anonymous: Option<bool>,

    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, env = "CHORUS_MAX_FRAME_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Largest document, in stored bytes (snapshot plus update log); an update beyond it is refused
    /// and its sender closed with 4413.
    #[arg(long, env = "CHORUS_MAX_DOCUMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_document_bytes: usize,

    /// Largest awareness state of one client, in bytes of JSON.
    #[arg(long, env = "CHORUS_MAX_AWARENESS_BYTES", default_value_t = 64 * 1024)]
    pub max_awareness_bytes: usize,

    /// Deepest nesting an update may create, counting values (arrays, maps), shared types and XML
    /// elements together; a root type is depth 1. Deeper updates are refused (4422 on a socket, 422
    /// over REST) before any decoder sees them. At most 1024.
    #[arg(long, env = "CHORUS_MAX_NESTING_DEPTH", default_value_t = chorus_protocol::nesting::DEFAULT_MAX_NESTING_DEPTH)]
    pub max_nesting_depth: u32,

    /// Most y-sync messages in one binary frame; a frame with more is refused (1008). Stock clients
    /// send one per frame.
    #[arg(long, env = "CHORUS_MAX_MESSAGES_PER_FRAME", default_value_t = 64)]
    pub max_messages_per_frame: usize,

    /// Longest time a client may take to send a request's headers (also how long an idle keep-alive
    /// connection stays open); slower sockets are closed.
    #[arg(long, env = "CHORUS_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Most sockets at once that have not sent a request yet or not upgraded to a WebSocket (REST
    /// keep-alive connections included); past it new sockets are closed at once.
    #[arg(long, env = "CHORUS_MAX_PENDING_CONNECTIONS", default_value_t = 1024)]
    pub max_pending_connections: usize,

    /// Web origins (`https://app.example.com`, comma-separated) whose pages may open
    /// WebSockets here. Anonymous sessions are refused unless both the page's `Origin` and
    /// the `Host` asked for are loopback or listed (browsers apply no CORS to WebSockets, and
    /// DNS rebinding reaches loopback by name); with tokens, a listed set is enforced too.
    /// Clients that send no `Origin` (not browsers) are not affected. Default: none.
    #[arg(long, env = "CHORUS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Frames per second one connection may send when its tenant sets no `messages_per_second`
    /// (bursts of twice that); past it the connection is closed with 4429. High enough for a bot
    /// replaying edits at full speed (an editing trace sends bursts of 2,000 updates), low enough
    /// that one socket cannot take a core. 0 turns the default off.
    #[arg(long, env = "CHORUS_MESSAGES_PER_SECOND", default_value_t = 10_000)]
    pub messages_per_second: u32,

    /// Awareness bytes per second one connection may send (bursts of twice that); awareness beyond
    /// it is dropped, not relayed (`chorus_awareness_dropped_total`): presence is ephemeral and the
    /// next update replaces it.
    #[arg(long, env = "CHORUS_AWARENESS_BYTES_PER_SECOND", default_value_t = 64 * 1024)]
    pub awareness_bytes_per_second: u32,

    /// Percent of this node's --max-connections and --max-rooms (open rooms) one tenant may use, so
    /// no tenant can take a node from the others. A tenant's own `max_connections` replaces its
    /// connection share; the room share applies to every tenant. The `default` tenant (the node's
    /// own: anonymous sessions, node-key tokens without a tenant) is exempt. 100 turns shares off.
    #[arg(long, env = "CHORUS_MAX_TENANT_SHARE", default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub max_tenant_share: u8,

    /// Most sockets at once that have upgraded to the Hocuspocus endpoint but opened no
    /// document yet (their auth message is pending); they do not take a --max-connections
    /// place until then. Default: a tenth of --max-connections.
    #[arg(long, env = "CHORUS_MAX_PREAUTH_CONNECTIONS")]
    pub max_preauth_connections: Option<usize>,

    /// How long a Hocuspocus socket may stay open without an authenticated document.
    #[arg(long, env = "CHORUS_AUTH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub auth_timeout: Duration,

    /// Cluster mode: a secret shared by every node (at least 32 bytes). Each message on the
    /// Redis bus is signed with it (HMAC-SHA256 of channel and body) and unsigned or forged
    /// messages are dropped, so that a client of Redis cannot speak for a node. All nodes must
    /// agree: set it everywhere at once. Default: none (Redis itself is trusted).
    #[arg(long, env = "CHORUS_BUS_SECRET", hide_env_values = true)]
    pub bus_secret: Option<String>,

    /// Serve `/metrics` on this address only (say, a private interface for Prometheus)
    /// instead of on --listen, where it then answers 404. Default: none (on --listen).
    #[arg(long, env = "CHORUS_METRICS_LISTEN", value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// Most rooms open at once on this node.
    #[arg(long, env = "CHORUS_MAX_ROOMS", default_value_t = 10_000)]
    pub max_rooms: usize,

    /// Most WebSocket connections at once on this node (the default stays below the 20000
    /// open-file cap of one process on small hosts).
    #[arg(long, env = "CHORUS_MAX_CONNECTIONS", default_value_t = 18_000)]
    pub max_connections: usize,

    /// Most messages queued for one connection before it is closed as a slow consumer (1013).
    #[arg(long, env = "CHORUS_SEND_QUEUE_MESSAGES", default_value_t = 1024)]
    pub send_queue_messages: usize,

    /// Most bytes queued for one connection before it is closed as a slow consumer (1013).
    #[arg(long, env = "CHORUS_SEND_QUEUE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub send_queue_bytes: usize,

    /// How long updates gather before they are written in one batch: each room's updates, and then
    /// the rooms' batches, committed together at most once per this interval.
    #[arg(long, env = "CHORUS_PERSIST_BATCH", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub persist_batch: Duration,

    /// Log entries after which a room's log is compacted into a snapshot, once the log is also at
    /// least a quarter of the snapshot's size (so large documents are not rewritten every few
    /// hundred edits).
    #[arg(long, env = "CHORUS_COMPACT_THRESHOLD", default_value_t = 500)]
    pub compact_threshold: usize,

    /// Awareness coalescing period: changes within it go out as one message.
    #[arg(long, env = "CHORUS_AWARENESS_TICK", default_value = "30ms", value_parser = humantime::parse_duration)]
    pub awareness_tick: Duration,

    /// How long an empty room stays open before it is flushed and dropped.
    #[arg(long, env = "CHORUS_ROOM_IDLE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub room_idle: Duration,

    /// How often the hub pings each WebSocket; a peer silent for two intervals (no frame, no pong)
    /// is dropped, which detects dead TCP peers that never sent a FIN.
    #[arg(long, env = "CHORUS_PING_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// Longest a graceful shutdown waits for clients to close and rooms to flush.
    #[arg(long, env = "CHORUS_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Record every session's inbound frames (JSON lines, one file per session) into this
    /// directory, for `chorus-loadtest replay`. Holds document content: protect it. Default:
    /// none (off).
    #[arg(long, env = "CHORUS_RECORD_DIR")]
    pub record_dir: Option<PathBuf>,

    /// Log lines as `text` (for a terminal) or `json` (one object per line: level, target,
    /// message, fields, and the spans around it, for a log pipeline).
    #[arg(long, env = "CHORUS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The same as `--log-format json` (kept for existing deployments). Default: false.
    #[arg(long, env = "CHORUS_LOG_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub log_json: bool,

    /// Export traces to this OpenTelemetry collector over OTLP/HTTP (protobuf), such as
    /// `http://127.0.0.1:4318`: spans are posted to `{url}/v1/traces`. A span per connection
    /// and per room, and along each update's path: upgrade, join, apply, persist, publish, and
    /// the apply on the other nodes (docs/ARCHITECTURE.md). Default: none (off).
    #[arg(long, env = "CHORUS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// The share of connections and rooms traced with `--otlp-endpoint`, from 0 to 1: a
    /// traced connection's updates are traced on every node they reach. Tracing costs CPU
    /// (docs/BENCHMARKS.md, "Traces") and export bandwidth.
    #[arg(long, env = "CHORUS_OTLP_SAMPLE_RATIO", default_value_t = 0.1)]
    pub otlp_sample_ratio: f64,

    /// Runtime worker threads; 0 means one per CPU. On a machine shared with other busy
    /// processes (a load generator), fewer workers switch context less (docs/BENCHMARKS.md).
    #[arg(long, env = "CHORUS_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Redis URL (`redis://host:port`, `redis-cluster://host:port`): turns cluster mode on.
    /// Nodes sharing it (and `--redis-prefix`) form one ring. Default: none (the node runs
    /// alone).
    #[arg(long, env = "CHORUS_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of the cluster's Redis keys, so several clusters (or tests) can share one Redis.
    #[arg(long, env = "CHORUS_REDIS_PREFIX", default_value = "chorus")]
    pub redis_prefix: String,

    /// This node's id in the ring: letters, digits, `.`, `_`, `-`, at most 64. Default: random
    /// at every start.
    #[arg(long, env = "CHORUS_NODE_ID")]
    pub node_id: Option<String>,

    /// The base URL clients and load balancers reach this node at (`GET /v1/route` answers
    /// with it). Default: `http://` and `--listen`.
    #[arg(long, env = "CHORUS_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// How long a node stays in the ring after its last heartbeat; it beats every third of this.
    #[arg(long, env = "CHORUS_NODE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub node_ttl: Duration,

    /// The AI assistant (docs/AI.md).
    #[command(flatten)]
    pub ai: AiConfig,

    /// Search (docs/SEARCH.md).
    #[command(flatten)]
    pub search: SearchConfig,
}

/// A listen address: `host:port` with an IP address or a host name (`localhost:8080`); a
/// name is resolved once, at start-up, preferring IPv4 (what `localhost` usually means to
/// clients that connect to it).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    if !s.contains(':') {
        return Err(format!(
            "expected host:port (say 127.0.0.1:8080), got {s:?}"
        ));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

impl Default for Config {
    fn default() -> Self {
        // Parsing an empty command line yields exactly the documented defaults.
        match Cli::try_parse_from(["chorus"]) {
            Ok(cli) => cli.serve,
            Err(e) => unreachable!("defaults must parse: {e}"),
        }
    }
}

impl Config {
    /// Rejects values that cannot work, with a message naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        self.ai.validate()?;
        self.search.validate()?;
        let hour = Duration::from_secs(3600);
        let checks: [(bool, &str); 24] = [
            (
                self.otlp_endpoint.as_deref().is_none_or(|u| {
                    url::Url::parse(u)
                        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                }),
                "--otlp-endpoint must be an http:// or https:// URL with a host",
            ),
            (
                (0.0..=1.0).contains(&self.otlp_sample_ratio),
                "--otlp-sample-ratio must be between 0 and 1",
            ),
            (
                self.operator_key.as_ref().is_none_or(|k| k.len() >= 32),
                "--operator-key must be at least 32 characters",
            ),
            (
                self.max_request_bytes >= 1024 && self.webhook_debounce <= hour,
                "--max-request-bytes must be at least 1024 and --webhook-debounce at most 1h",
            ),
            (
                self.worker_threads <= 1024,
                "--worker-threads must be at most 1024",
            ),
            (
                self.max_frame_bytes >= 1024,
                "--max-frame-bytes must be at least 1024",
            ),
            (
                self.max_document_bytes >= 1024,
                "--max-document-bytes must be at least 1024",
            ),
            (
                self.max_awareness_bytes >= 64,
                "--max-awareness-bytes must be at least 64",
            ),
            (self.max_rooms >= 1, "--max-rooms must be at least 1"),
            (
                self.bus_secret.as_ref().is_none_or(|s| s.len() >= 32),
                "--bus-secret must be at least 32 bytes",
            ),
            (
                self.header_read_timeout >= Duration::from_millis(100)
                    && self.header_read_timeout <= hour
                    && self.max_pending_connections >= 1,
                "--header-read-timeout must be between 100ms and 1h and --max-pending-connections at least 1",
            ),
            (
                (2..=chorus_persistence::HARD_MAX_NESTING_DEPTH).contains(&self.max_nesting_depth),
                "--max-nesting-depth must be between 2 and 1024",
            ),
            (
                (1..=4096).contains(&self.max_messages_per_frame),
                "--max-messages-per-frame must be between 1 and 4096",
            ),
            (
                self.max_connections >= 1,
                "--max-connections must be at least 1",
            ),
            (
                self.send_queue_messages >= 2 && self.send_queue_bytes >= 1024,
                "--send-queue-messages must be at least 2 and --send-queue-bytes at least 1024",
            ),
            (
                self.compact_threshold >= 1,
                "--compact-threshold must be at least 1",
            ),
            (
                self.ping_interval >= Duration::from_millis(10) && self.ping_interval <= hour,
                "--ping-interval must be between 10ms and 1h",
            ),
            (
                self.send_queue_messages <= 1 << 20 && self.room_idle <= 24 * hour,
                "--send-queue-messages must be at most 1048576 and --room-idle at most 24h",
            ),
            (
                self.persist_batch <= Duration::from_secs(10)
                    && self.awareness_tick <= Duration::from_secs(60)
                    && self.shutdown_grace <= hour,
                "--persist-batch must be at most 10s, --awareness-tick at most 60s and --shutdown-grace at most 1h",
            ),
            (
                self.node_id
                    .as_deref()
                    .is_none_or(crate::cluster::valid_node_id),
                "--node-id must be 1-64 letters, digits, '.', '_' or '-'",
            ),
            (
                self.advertise_url
                    .as_deref()
                    .is_none_or(crate::cluster::valid_advertise_url),
                "--advertise-url must be an http:// or https:// URL with a host",
            ),
            (
                self.node_ttl >= Duration::from_millis(300) && self.node_ttl <= hour,
                "--node-ttl must be between 300ms and 1h",
            ),
            (
                !self.redis_prefix.is_empty()
                    && self.redis_prefix.len() <= 64
                    && !self.redis_prefix.contains(['{', '}']),
                "--redis-prefix must be 1-64 characters without braces",
            ),
            (
                self.redis_url
                    .as_deref()
                    .is_none_or(|u| u.starts_with("redis://") || u.starts_with("redis-cluster://")),
                "--redis-url must start with redis:// or redis-cluster:// (TLS is not supported yet)",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err((*msg).to_string()),
            None => Ok(()),
        }
    }

    /// Whether tokenless connections are accepted (see `--allow-anonymous`).
    pub fn anonymous_allowed(&self) -> bool {
        // A node that serves tenants (an operator key, or a shared Postgres database) must not
        // let tokenless clients in by default, even behind a proxy on loopback.
        self.allow_anonymous.unwrap_or_else(|| {
            self.listen.ip().is_loopback()
                && self.jwt_secret.is_none()
                && self.jwt_public_key.is_none()
                && self.operator_key.is_none()
                && self
                    .database_url
                    .as_deref()
                    .is_none_or(|u| u.starts_with("sqlite:"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_are_bounded() {
        let mut c = Config::default();
        assert_eq!(c.worker_threads, 0, "default: one per CPU");
        c.worker_threads = 1;
        assert!(c.validate().is_ok());
        c.worker_threads = 100_000;
        assert!(c.validate().is_err_and(|e| e.contains("--worker-threads")));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.anonymous_allowed());
        assert_eq!(c.persist_batch, Duration::from_millis(20));
    }

    #[test]
    fn anonymous_default_depends_on_listen_address_and_keys() {
        let mut c = Config {
            listen: "0.0.0.0:8080".parse().expect("addr"),
            ..Config::default()
        };
        assert!(!c.anonymous_allowed());
        c.listen = "127.0.0.1:8080".parse().expect("addr");
        c.jwt_secret = Some("s".into());
        assert!(!c.anonymous_allowed());
        c.allow_anonymous = Some(true);
        assert!(c.anonymous_allowed());
        let tenants = Config {
            operator_key: Some("k".repeat(32)),
            ..Config::default()
        };
        assert!(!tenants.anonymous_allowed(), "an operator key turns it off");
        let shared = Config {
            database_url: Some("postgres://db/chorus".into()),
            ..Config::default()
        };
        assert!(
            !shared.anonymous_allowed(),
            "a Postgres database turns it off"
        );
    }

    #[test]
    fn nonsense_limits_are_rejected() {
        assert!(Config::default().validate().is_ok());
        let c = Config {
            max_frame_bytes: 10,
            ..Config::default()
        };
        assert!(c.validate().is_err_and(|e| e.contains("--max-frame-bytes")));
        let c = Config {
            send_queue_messages: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn cluster_flags_are_checked() {
        let ok = Config {
            redis_url: Some("redis-cluster://10.0.0.1:7000".into()),
            node_id: Some("node-1".into()),
            advertise_url: Some("https://chorus-1.example.com".into()),
            ..Config::default()
        };
        assert!(ok.validate().is_ok());
        let bad = |c: Config, flag: &str| {
            assert!(c.validate().is_err_and(|e| e.contains(flag)), "{flag}");
        };
        bad(
            Config {
                redis_url: Some("rediss://h:6380".into()),
                ..ok.clone()
            },
            "--redis-url",
        );
        bad(
            Config {
                node_id: Some("node 1".into()),
                ..ok.clone()
            },
            "--node-id",
        );
        bad(
            Config {
                advertise_url: Some("ws://h:1".into()),
                ..ok.clone()
            },
            "--advertise-url",
        );
        bad(
            Config {
                redis_prefix: "{x}".into(),
                ..ok.clone()
            },
            "--redis-prefix",
        );
        bad(
            Config {
                node_ttl: Duration::from_millis(10),
                ..ok
            },
            "--node-ttl",
        );
    }

    #[test]
    fn subcommands_and_flags_parse() {
        let cli =
            Cli::try_parse_from(["chorus", "serve", "--listen", "127.0.0.1:0"]).expect("parse");
        assert!(matches!(cli.command, Some(CliCommand::Serve(c)) if c.listen.port() == 0));
        let cli = Cli::try_parse_from([
            "chorus",
            "token",
            "--room",
            "a*",
            "--role",
            "read",
            "--ttl",
            "2h",
            "--jwt-secret",
            "x",
        ])
        .expect("parse");
        assert!(
            matches!(cli.command, Some(CliCommand::Token(t)) if t.role == "read" && t.ttl.as_secs() == 7200)
        );
        assert!(
            Cli::try_parse_from([
                "chorus",
                "token",
                "--room",
                "a",
                "--role",
                "admin",
                "--jwt-secret",
                "x"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["chorus", "--max-rooms", "lots"]).is_err());
    }
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
