//! Shared test harness: a real hub on 127.0.0.1:0 with its own data directory, token helpers,
//! raw HTTP, and bounded waits (never fixed sleeps as assertions).
// Each test crate uses a different part of this module, so `expect` (which fails where
// nothing is unused) cannot name them: the one `allow` of the workspace.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test crate uses a different part of this module"
)]

pub mod services;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chorus_hub::Config;
use chorus_protocol::client::{Client, ClientOptions};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Patience for anything that should happen "soon" on a loaded 2-core CI machine.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const SECRET: &str = "test-secret-for-chorus-0123456789abcdef";

pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The node's state (its registry reaches rooms from inside the node).
    pub app: std::sync::Arc<chorus_hub::server::AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A config for tests: loopback port 0, the given data dir, fast timings.
pub fn test_config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data_dir.to_path_buf(),
        persist_batch: Duration::from_millis(10),
        awareness_tick: Duration::from_millis(10),
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        Self::start_on(config, chorus_hub::Transport::FromConfig).await
    }

    /// A node reaching the others through `transport` (an in-memory network, for several
    /// nodes in this process).
    pub async fn start_on(config: Config, transport: chorus_hub::Transport) -> TestServer {
        let listener = TcpListener::bind(config.listen).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let data_dir = config.data_dir.clone();
        let (stop, rx) = oneshot::channel::<()>();
        let (app_tx, app_rx) = oneshot::channel();
        let task = tokio::spawn(chorus_hub::run_on(
            listener,
            config,
            transport,
            async move {
                let _ = rx.await;
            },
            move |app| {
                let _ = app_tx.send(app);
            },
        ));
        let app = app_rx.await.expect("the node started");
        TestServer {
            addr,
            data_dir,
            app,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, room: &str) -> String {
        format!("ws://{}/ws/{}", self.addr, room)
    }

    pub async fn client(&self, room: &str) -> Client {
        self.client_with(room, ClientOptions::default()).await
    }

    pub async fn client_with(&self, room: &str, opts: ClientOptions) -> Client {
        let c = Client::connect(&self.url(room), opts)
            .await
            .expect("connect");
        c.synced(PATIENCE).await.expect("synced");
        c
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("run returns after shutdown")
            .expect("run task")
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// The `/healthz` counter `field` ("rooms" or "connections").
    pub async fn health_count(&self, field: &str) -> u64 {
        let (_, body) = self.get("/healthz").await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("healthz json");
        v[field].as_u64().expect("healthz count")
    }

    /// Waits until the `/healthz` counter `field` equals `want`.
    pub async fn wait_health(&self, field: &str, want: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let got = self.health_count(field).await;
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "healthz {field} stayed {got}, expected {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A bare HTTP/1.1 GET; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
    .await
}

pub async fn http_request(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Bodies may be chunked; tests only look for substrings and JSON fields.
    (status, body)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// HS256 token with the given claims merged over sensible defaults.
pub fn token(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

pub fn sign(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    let mut base = json!({ "sub": "user-1", "rooms": ["*"], "role": "write", "exp": now() + 3600 });
    if let (Some(b), Some(c)) = (base.as_object_mut(), claims.as_object()) {
        for (k, v) in c {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    jsonwebtoken::encode(&Header::new(alg), &base, key).expect("sign")
}

/// Text of the root Y.Text `name` of a client's document.
pub fn text(c: &Client, name: &str) -> String {
    use yrs::{GetString, Transact};
    let t = c.doc().get_or_insert_text(name);
    t.get_string(&c.doc().transact())
}

/// Appends to a client's Y.Text.
pub fn append(c: &Client, name: &str, s: &str) {
    use yrs::{Text, Transact};
    let t = c.doc().get_or_insert_text(name);
    let mut txn = c.doc().transact_mut();
    let len = t.len(&txn);
    t.insert(&mut txn, len, s);
}

/// Waits until every client's text `name` equals `expected`.
pub async fn wait_text(clients: &[&Client], name: &str, expected: &str) {
    for c in clients {
        let exp = expected.to_string();
        let n = name.to_string();
        let res = c
            .wait_for("text", PATIENCE, move |_, doc| {
                use yrs::{GetString, Transact};
                doc.get_or_insert_text(n.as_str())
                    .get_string(&doc.transact())
                    == exp
            })
            .await;
        if res.is_err() {
            let got = text(c, name);
            panic!(
                "text {name:?} never became the expected {} bytes ({:?}...); it is {} bytes ({:?}...), closed: {:?}",
                expected.len(),
                expected.chars().take(60).collect::<String>(),
                got.len(),
                got.chars().take(60).collect::<String>(),
                c.closed()
            );
        }
    }
}

/// Text of the root Y.Text `name` of any document.
pub fn text_of(doc: &yrs::Doc, name: &str) -> String {
    use yrs::{GetString, Transact};
    let t = doc.get_or_insert_text(name);
    t.get_string(&doc.transact())
}

/// Starts the real `chorus` binary with `args` (after `serve`), listening on 127.0.0.1:0;
/// returns the child (killed on drop) and the address it logged.
pub async fn spawn_chorus<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("CHORUS_TEST_NODE_LOGS").unwrap_or_else(|_| "info".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chorus");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(PATIENCE * 2, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("addr=").nth(1)
                && line.contains("listening")
            {
                let a: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                return a.parse().expect("addr");
            }
        }
        panic!("chorus exited before listening");
    })
    .await
    .expect("listening in time");
    // Keep draining stderr so the child never blocks on a full pipe (and show it with
    // CHORUS_TEST_NODE_LOGS set to a log filter, such as `info`, to debug a test).
    let show = std::env::var_os("CHORUS_TEST_NODE_LOGS").is_some();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if show {
                eprintln!("[{addr}] {line}");
            }
        }
    });
    (child, addr)
}

/// Sends SIGTERM to a `chorus` child (a graceful stop: drain, flush, exit).
pub fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// What another node (or a stranger on its channel) might publish that a room must drop
/// without harm: a sync request whose state vector does not decode, an update and awareness
/// that do not decode, an update nesting far past the limit (it would overflow yrs' stack and
/// abort the node), one just past it, and one at the limit of 64, the only one applied (it
/// adds one element to the array `v`). Each from its own origin, numbered 1.
pub fn hostile_envelopes() -> Vec<chorus_hub::cluster::envelope::Envelope> {
    use chorus_hub::cluster::envelope::{Envelope, Payload};
    let deep = chorus_protocol::nesting::nested_value_update(7, "v", 6_500);
    let at_limit = chorus_protocol::nesting::nested_value_update(8, "v", 63);
    let past = chorus_protocol::nesting::nested_value_update(9, "v", 64);
    [
        (
            "ghost-0",
            Payload::SyncRequest(bytes::Bytes::from_static(&[0xff, 0xff, 0xff])),
        ),
        (
            "ghost-1",
            Payload::Update(bytes::Bytes::from_static(&[0xff, 0x01, 0x02])),
        ),
        ("ghost-3", Payload::Update(bytes::Bytes::from(deep))),
        ("ghost-4", Payload::Update(bytes::Bytes::from(past))),
        ("ghost-5", Payload::Update(bytes::Bytes::from(at_limit))),
        (
            "ghost-2",
            Payload::Awareness(bytes::Bytes::from_static(&[0x05, 0xff])),
        ),
    ]
    .into_iter()
    .map(|(origin, payload)| Envelope {
        origin: origin.into(),
        seq: 1,
        trace: None,
        payload,
    })
    .collect()
}

/// A sync request from node `origin` whose state vector is ahead of the room's: the node
/// holds an edit (client 99) that never reached anyone.
pub fn sync_request_from_ahead(origin: &str) -> chorus_hub::cluster::envelope::Envelope {
    use chorus_hub::cluster::envelope::{Envelope, Payload};
    use yrs::updates::encoder::Encode;
    use yrs::{ReadTxn, Text, Transact};
    let ahead = yrs::Doc::with_client_id(99);
    ahead
        .get_or_insert_text("t")
        .insert(&mut ahead.transact_mut(), 0, "hidden");
    let sv = ahead.transact().state_vector().encode_v1();
    Envelope {
        origin: origin.into(),
        seq: 1,
        trace: None,
        payload: Payload::SyncRequest(sv.into()),
    }
}

/// Runs `npm ci` with `args` in `dir` unless every package of `installed` is there already.
/// Tests that share a folder take turns: two `npm ci` in one folder at once break each other.
pub async fn npm_ci(dir: &Path, installed: &[&str], args: &[&str]) {
    static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _installing = INSTALL.lock().await;
    // Installed, and from the current lockfile: npm writes node_modules/.package-lock.json on
    // every install, so one older than package-lock.json means the packages changed since.
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let current = match (
        modified(dir.join("node_modules/.package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    };
    if current
        && installed
            .iter()
            .all(|p| dir.join("node_modules").join(p).exists())
    {
        return;
    }
    let out = tokio::process::Command::new("npm")
        .arg("ci")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .expect("npm ci");
    assert!(
        out.status.success(),
        "npm ci failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `cmd --version` runs (node, npm).
pub fn have(cmd: &str) -> bool {
    std::process::Command::new(cmd)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}
