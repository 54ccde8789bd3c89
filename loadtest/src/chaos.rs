//! `chaos`: clients edit at a steady rate across a cluster the scenario starts itself (three
//! `chorus` nodes on 127.0.0.1, its own PostgreSQL made with `initdb`, its own `redis-server`),
//! while faults strike in turn: a node killed with SIGKILL and restarted, Redis restarted,
//! PostgreSQL stopped in immediate mode (a crash) and restarted, a fourth node joining (rooms
//! move home while their members type). The machine's shared services are never touched.
//!
//! Checks, each a problem in the report when it fails:
//! - every edit acknowledged with `saved` is in the final document, exactly once (a client that
//!   loses its connection drops its local copy and comes back with a fresh document, so only
//!   the hub can have kept what it acknowledged);
//! - no edit is in the document twice, acknowledged or not;
//! - every client converges on one text per room;
//! - a fresh node, started after the others stopped, loads that same text from the database.
//!
//! Reported per fault: how long deliveries stalled (the longest time any room went without a
//! delivery to any of its members, from the fault until `--settle` later) and how long
//! acknowledgements stalled.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chorus_protocol::client::{Client, ClientOptions};
use chorus_protocol::ext::ServerMessage;
use serde::Serialize;

use crate::report::Report;

/// One fault of the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL one of the three nodes (in turn), then start it again on its port.
    Kill,
    /// Kill `redis-server` and start it again, empty, on its port.
    Redis,
    /// `pg_ctl stop -m immediate` (no shutdown checkpoint, as a crash) and start again.
    Postgres,
    /// Start one more node: rooms whose home moves to it move while their members type.
    Join,
}

/// Parameters of a chaos run.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosParams {
    /// The `chorus` binary the nodes run.
    pub chorus_bin: PathBuf,
    /// Rooms.
    pub rooms: usize,
    /// Editing clients per room, spread over the three nodes.
    pub clients_per_room: usize,
    /// Edits per second per client.
    pub rate: f64,
    /// Editing before the first fault, and after each one before the next.
    pub settle: Duration,
    /// The faults, in order.
    pub faults: Vec<Fault>,
    /// Patience for the final convergence.
    pub patience: Duration,
}

/// Where PostgreSQL's server programs are: `CHORUS_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` holding `initdb` (Debian), else `None` (then `initdb` must be
/// on `PATH`).
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CHORUS_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// What this machine lacks to run the scenario (`initdb` or `redis-server` do not run), or
/// `None` when it has both.
pub fn tools_missing() -> Option<String> {
    let pg = postgres_bin_dir().map_or_else(|| PathBuf::from("initdb"), |d| d.join("initdb"));
    let runs = |cmd: &Path, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !runs(&pg, "--version") {
        return Some(format!("{} does not run (set CHORUS_PG_BIN)", pg.display()));
    }
    if !runs(Path::new("redis-server"), "--version") {
        return Some("redis-server is not on PATH".into());
    }
    None
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn run_checked(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: could not run"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A PostgreSQL cluster of its own in `dir`, on `port`.
struct Postgres {
    bin: Option<PathBuf>,
    data: PathBuf,
    port: u16,
    /// Running as root: PostgreSQL refuses root, so its programs run as `postgres`.
    as_postgres: bool,
}

impl Postgres {
    fn program(&self, name: &str) -> Command {
        let path = self
            .bin
            .as_ref()
            .map_or_else(|| PathBuf::from(name), |b| b.join(name));
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn create(root: &Path) -> anyhow::Result<Self> {
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let data = root.join("pg");
        std::fs::create_dir(&data)?;
        if as_postgres {
            run_checked(
                Command::new("chown").arg("postgres:").arg(&data),
                "chown postgres: of the data directory",
            )?;
        }
        let pg = Postgres {
            bin: postgres_bin_dir(),
            data,
            port: free_port()?,
            as_postgres,
        };
        run_checked(
            pg.program("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&pg.data),
            "initdb",
        )?;
        pg.start()?;
        Ok(pg)
    }

    fn start(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.data.display()
        );
        run_checked(
            self.program("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.data.join("server.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
            "pg_ctl start",
        )
    }

    fn stop_immediate(&self) -> anyhow::Result<()> {
        run_checked(
            self.program("pg_ctl").arg("-D").arg(&self.data).args([
                "-m",
                "immediate",
                "-w",
                "stop",
            ]),
            "pg_ctl stop",
        )
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
    }
}

/// A `redis-server` of its own, keeping nothing on disk.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(port: u16) -> anyhow::Result<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server")?;
        let redis = Redis {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `chorus` node on a fixed port (a restart comes back on the same one).
struct Node {
    id: String,
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn spawn(
        bin: &Path,
        root: &Path,
        id: &str,
        port: u16,
        db: &str,
        redis: &str,
    ) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join(format!("{id}.log")))?;
        let child = Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--persist-batch", "10ms", "--node-ttl", "900ms"])
            .args([
                "--allow-anonymous",
                "--node-id",
                id,
                "--redis-prefix",
                "chaos",
            ])
            .args(["--redis-url", redis, "--database-url", db])
            .env("RUST_LOG", "warn")
            .current_dir(root)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Node {
            id: id.to_string(),
            port,
            child: Some(child),
        })
    }

    /// Waits until `/healthz` answers 200.
    async fn ready(&self) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {} never became healthy (its log is {}.log)",
                self.id,
                self.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no goodbye, nothing flushed.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a graceful stop, which flushes what the node holds.
    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = tokio::task::spawn_blocking(move || c.wait()).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What one room's clients did, shared with the sampler and the final check.
#[derive(Default)]
struct RoomLog {
    /// Edits acknowledged with `saved`.
    acked: Mutex<HashSet<String>>,
    sent: AtomicU64,
    /// Updates delivered to any member (counted as the members' counters grow).
    deliveries: AtomicU64,
    acks: AtomicU64,
    reconnects: AtomicU64,
}

fn room_name(room: usize) -> String {
    format!("chaos-{room}")
}

fn append(c: &Client, s: &str) {
    use yrs::{Text, Transact};
    let t = c.doc().get_or_insert_text("t");
    let mut txn = c.doc().transact_mut();
    let len = t.len(&txn);
    t.insert(&mut txn, len, s);
}

fn text(c: &Client) -> String {
    use yrs::{GetString, Transact};
    let t = c.doc().get_or_insert_text("t");
    t.get_string(&c.doc().transact())
}

async fn connect(port: u16, room: usize) -> Option<Client> {
    let url = format!("ws://127.0.0.1:{port}/ws/{}", room_name(room));
    let opts = ClientOptions {
        ext: true,
        ..Default::default()
    };
    let c = tokio::time::timeout(Duration::from_secs(5), Client::connect(&url, opts))
        .await
        .ok()?
        .ok()?;
    c.synced(Duration::from_secs(5)).await.ok()?;
    Some(c)
}

/// One editing client: connects to a node (the next one after a failure), appends a unique
/// token every `1/rate` seconds, records which are acknowledged, and after losing its
/// connection comes back with a fresh document. Returns its last connection when `stop` is
/// set.
async fn writer(
    room: usize,
    slot: usize,
    ports: Vec<u16>,
    rate: f64,
    log: Arc<RoomLog>,
    window: Arc<Mutex<Option<Stall>>>,
    stop: Arc<AtomicBool>,
) -> Option<Client> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut attempt = 0usize;
    let mut generation = 0u32;
    // When the last connection was lost: the time to be synced again is the fault's outage.
    let mut lost_at: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let port = ports[(slot + attempt) % ports.len()];
        attempt += 1;
        let Some(client) = connect(port, room).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if generation > 0 {
            log.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(t) = lost_at.take()
            && let Some(s) = window.lock().unwrap_or_else(|e| e.into_inner()).as_mut()
        {
            s.outage = s.outage.max(t.elapsed());
        }
        generation += 1;
        // Message 1 of a session is the client's SyncStep2; each append is one more.
        let mut messages = 1u64;
        let mut pending: VecDeque<(u64, String)> = VecDeque::new();
        let (mut received, mut seen_events, mut edit) = (0u64, 0usize, 0u64);
        // Deliveries and acknowledgements are counted every 10 ms (the stalls' resolution);
        // an edit goes out every `period`.
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Members of a room take turns (not all at once), so a room's baseline gap between
        // deliveries is a fraction of `period`.
        let mut next_edit = Instant::now() + period.mul_f64((slot % 8) as f64 / 8.0);
        loop {
            tick.tick().await;
            let closed = {
                let st = client.state();
                log.deliveries
                    .fetch_add(st.updates_received - received, Ordering::Relaxed);
                received = st.updates_received;
                for e in &st.events[seen_events..] {
                    if let ServerMessage::Saved { updates } = e {
                        let mut acked = log.acked.lock().unwrap_or_else(|p| p.into_inner());
                        while pending.front().is_some_and(|(n, _)| n <= updates) {
                            if let Some((_, token)) = pending.pop_front() {
                                acked.insert(token);
                                log.acks.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                seen_events = st.events.len();
                st.closed.is_some()
            };
            if closed {
                // Whatever was not acknowledged may or may not have made it.
                lost_at = Some(Instant::now());
                break;
            }
            if stop.load(Ordering::Relaxed) {
                return Some(client);
            }
            if Instant::now() < next_edit {
                continue;
            }
            next_edit += period;
            let token = format!("r{room}s{slot}g{generation}e{edit};");
            edit += 1;
            append(&client, &token);
            messages += 1;
            pending.push_back((messages, token));
            log.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    None
}

/// Longest stretch without a delivery (and without an acknowledgement) in any room, per
/// window.
#[derive(Default, Clone, Copy)]
struct Stall {
    delivery: Duration,
    ack: Duration,
    /// The longest a client took to be synced again after losing its connection.
    outage: Duration,
}

/// Ends the open window of measurement and returns what it measured.
fn close_window(window: &Mutex<Option<Stall>>) -> Stall {
    window
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default()
}

/// Samples the rooms' counters every 10 ms and keeps, for the open window, the longest time
/// a room went without a delivery and without an acknowledgement.
async fn sample(
    rooms: Vec<Arc<RoomLog>>,
    window: Arc<Mutex<Option<Stall>>>,
    stop: Arc<AtomicBool>,
) {
    let now = Instant::now();
    let mut last: Vec<(u64, Instant, u64, Instant)> = rooms
        .iter()
        .map(|r| {
            (
                r.deliveries.load(Ordering::Relaxed),
                now,
                r.acks.load(Ordering::Relaxed),
                now,
            )
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = Instant::now();
        let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
        for (r, l) in rooms.iter().zip(last.iter_mut()) {
            let (d, a) = (
                r.deliveries.load(Ordering::Relaxed),
                r.acks.load(Ordering::Relaxed),
            );
            if d != l.0 {
                l.0 = d;
                l.1 = now;
            }
            if a != l.2 {
                l.2 = a;
                l.3 = now;
            }
            if let Some(s) = w.as_mut() {
                s.delivery = s.delivery.max(now - l.1);
                s.ack = s.ack.max(now - l.3);
            }
        }
    }
}

/// Sets a metric of the report (units by name, see [`Report::metrics`]).
fn set(report: &mut Report, name: &str, value: f64) {
    report.metrics.insert(name.to_string(), value);
}

/// Adds to a metric of the report.
fn add(report: &mut Report, name: &str, value: f64) {
    *report.metrics.entry(name.to_string()).or_insert(0.0) += value;
}

/// Every token (`...;`) of a text, with how often it appears.
fn tokens(text: &str) -> HashMap<&str, usize> {
    let mut out = HashMap::new();
    for t in text.split_inclusive(';') {
        *out.entry(t).or_insert(0) += 1;
    }
    out
}

/// Runs the scenario. Setup failures (no `initdb`, a node that never starts) are problems in
/// the report, as are lost, duplicated or diverging edits.
pub async fn chaos(p: &ChaosParams) -> Report {
    let mut report = Report::of("chaos", &"own cluster on 127.0.0.1", p);
    if let Err(e) = run(p, &mut report).await {
        report.problems.push(format!("{e:#}"));
    }
    report
}

async fn run(p: &ChaosParams, report: &mut Report) -> anyhow::Result<()> {
    let root = tempfile::Builder::new().prefix("chorus-chaos-").tempdir()?;
    // PostgreSQL's own user must reach its data directory inside.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let started = Instant::now();
    let pg = {
        let root = root.path().to_path_buf();
        tokio::task::spawn_blocking(move || Postgres::create(&root)).await??
    };
    let mut redis = Redis::start(free_port()?)?;
    let (db, redis_url) = (pg.url(), redis.url());
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let node = Node::spawn(
            &p.chorus_bin,
            root.path(),
            &format!("node-{i}"),
            free_port()?,
            &db,
            &redis_url,
        )?;
        // One at a time: the first runs the migrations.
        node.ready().await?;
        nodes.push(node);
    }
    set(report, "setup_s", started.elapsed().as_secs_f64());
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();

    let stop = Arc::new(AtomicBool::new(false));
    // However the run ends, its tasks stop.
    let _stop_writers = StopOnDrop(stop.clone());
    let logs: Vec<Arc<RoomLog>> = (0..p.rooms).map(|_| Arc::default()).collect();
    let window: Arc<Mutex<Option<Stall>>> = Arc::default();
    let mut writers = Vec::new();
    for (room, log) in logs.iter().enumerate() {
        for slot in 0..p.clients_per_room {
            writers.push((
                room,
                tokio::spawn(writer(
                    room,
                    slot,
                    ports.clone(),
                    p.rate,
                    log.clone(),
                    window.clone(),
                    stop.clone(),
                )),
            ));
        }
    }
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let _stop_sampler = StopOnDrop(sampler_stop.clone());
    let sampler = tokio::spawn(sample(logs.clone(), window.clone(), sampler_stop.clone()));

    // The warm-up is the baseline: the same stalls without a fault.
    *window.lock().unwrap_or_else(|e| e.into_inner()) = Some(Stall::default());
    tokio::time::sleep(p.settle).await;
    let baseline = close_window(&window);
    set(
        report,
        "baseline_delivery_stall_s",
        baseline.delivery.as_secs_f64(),
    );
    set(report, "baseline_save_stall_s", baseline.ack.as_secs_f64());
    let mut kills = 0usize;
    for (i, fault) in p.faults.iter().enumerate() {
        *window.lock().unwrap_or_else(|e| e.into_inner()) = Some(Stall::default());
        let began = Instant::now();
        match fault {
            // The blocking steps (waiting for a process, pg_ctl) run where the runtime can
            // move the clients' tasks off this worker.
            Fault::Kill => {
                let n = &mut nodes[kills % 3];
                kills += 1;
                tokio::task::block_in_place(|| n.kill());
                // Its clients notice and move to the other nodes meanwhile.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let fresh =
                    Node::spawn(&p.chorus_bin, root.path(), &n.id, n.port, &db, &redis_url)?;
                *n = fresh;
                n.ready().await?;
            }
            Fault::Redis => {
                tokio::task::block_in_place(|| redis.kill());
                tokio::time::sleep(Duration::from_secs(1)).await;
                redis = tokio::task::block_in_place(|| Redis::start(redis.port))?;
            }
            Fault::Postgres => {
                tokio::task::block_in_place(|| pg.stop_immediate())?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                tokio::task::block_in_place(|| pg.start())?;
            }
            Fault::Join => {
                let id = format!("node-{}", nodes.len() + 1);
                let n = Node::spawn(
                    &p.chorus_bin,
                    root.path(),
                    &id,
                    free_port()?,
                    &db,
                    &redis_url,
                )?;
                n.ready().await?;
                nodes.push(n);
            }
        }
        set(
            report,
            &format!("fault_{}_{:?}_action_s", i + 1, fault).to_lowercase(),
            began.elapsed().as_secs_f64(),
        );
        tokio::time::sleep(p.settle).await;
        let stall = close_window(&window);
        let name = format!("fault_{}_{:?}", i + 1, fault).to_lowercase();
        set(
            report,
            &format!("{name}_delivery_stall_s"),
            stall.delivery.as_secs_f64(),
        );
        set(
            report,
            &format!("{name}_save_stall_s"),
            stall.ack.as_secs_f64(),
        );
        set(
            report,
            &format!("{name}_reconnect_s"),
            stall.outage.as_secs_f64(),
        );
    }

    // Stop editing; wait for the last acknowledgements and for every room to converge.
    stop.store(true, Ordering::Relaxed);
    let mut clients: Vec<Vec<Client>> = (0..p.rooms).map(|_| Vec::new()).collect();
    for (room, w) in writers {
        if let Ok(Some(c)) = w.await {
            clients[room].push(c);
        }
    }
    sampler_stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;

    let deadline = Instant::now() + p.patience;
    let mut finals = Vec::new();
    for (room, members) in clients.iter().enumerate() {
        let reader = loop {
            if let Some(c) = connect(ports[room % ports.len()], room).await {
                break c;
            }
            anyhow::ensure!(Instant::now() < deadline, "room {room}: no node answers");
        };
        let acked = logs[room]
            .acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut converged = false;
        while Instant::now() < deadline {
            let t = text(&reader);
            if members.iter().all(|m| text(m) == t) && acked.iter().all(|a| t.contains(a.as_str()))
            {
                converged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let t = text(&reader);
        if !converged {
            report.problems.push(format!(
                "room {room}: {} members did not converge on one text holding every acknowledged edit within {:?}",
                members.len(),
                p.patience
            ));
        }
        let counts = tokens(&t);
        let lost: Vec<&String> = acked
            .iter()
            .filter(|a| !counts.contains_key(a.as_str()))
            .collect();
        let twice: Vec<&&str> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(t, _)| t)
            .collect();
        if !lost.is_empty() {
            report.problems.push(format!(
                "room {room}: {} acknowledged edits lost, e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(5)]
            ));
        }
        if !twice.is_empty() {
            report.problems.push(format!(
                "room {room}: {} edits in the document more than once, e.g. {:?}",
                twice.len(),
                &twice[..twice.len().min(5)]
            ));
        }
        add(report, "lost", lost.len() as f64);
        add(report, "duplicated", twice.len() as f64);
        add(report, "edits_in_document", counts.len() as f64);
        finals.push(t);
    }
    drop(clients);
    for l in &logs {
        add(report, "edits_sent", l.sent.load(Ordering::Relaxed) as f64);
        add(report, "edits_acked", l.acks.load(Ordering::Relaxed) as f64);
        add(
            report,
            "reconnects",
            l.reconnects.load(Ordering::Relaxed) as f64,
        );
    }
    if report.metrics.get("edits_acked").copied().unwrap_or(0.0) == 0.0 {
        report.problems.push("no edit was acknowledged".into());
    }

    // What the database holds: stop every node (graceful), start a fresh one, read each room.
    for n in &mut nodes {
        n.stop().await;
    }
    let fresh = Node::spawn(
        &p.chorus_bin,
        root.path(),
        "node-fresh",
        free_port()?,
        &db,
        &redis_url,
    )?;
    fresh.ready().await?;
    for (room, expected) in finals.iter().enumerate() {
        let Some(c) = connect(fresh.port, room).await else {
            report
                .problems
                .push(format!("room {room}: the fresh node does not serve it"));
            continue;
        };
        if &text(&c) != expected {
            report.problems.push(format!(
                "room {room}: a fresh node loads another text from the database than the cluster converged on"
            ));
        }
    }
    set(report, "run_s", started.elapsed().as_secs_f64());
    drop(fresh);
    drop(nodes);
    drop(redis);
    drop(pg);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_counted_by_their_terminator() {
        let c = tokens("a;b;a;c;");
        assert_eq!(c.get("a;"), Some(&2));
        assert_eq!(c.get("b;"), Some(&1));
        assert_eq!(c.len(), 3);
        assert!(tokens("").is_empty());
    }
}
