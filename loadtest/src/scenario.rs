//! Scenarios. Each is bounded in count and time and ends by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chorus_protocol::client::{Client, ClientOptions};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use yrs::types::EntryChange;
use yrs::types::ToJson;
use yrs::types::map::MapEvent;
use yrs::{Any, Map, Observable, Out, Text, Transact};

use crate::auth::Refusal;
use crate::human::thousands;
use crate::proc;
use crate::progress::Progress;
use crate::report::{Latency, Report, histogram};

/// The wire dialect to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// y-websocket: one room per socket, the room name appended to the URL.
    #[default]
    YWebsocket,
    /// Hocuspocus: the URL is the server's endpoint, the room is the document name.
    Hocuspocus,
}

/// This process's share of a run split over several worker processes: it serves the rooms
/// whose number is `index` modulo `count` (whole rooms, so delivery accounting stays local).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Worker {
    /// 0-based.
    pub index: usize,
    /// Workers in all.
    pub count: usize,
}

/// Where and how to connect.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Base URL; the room name is appended (`ws://127.0.0.1:8080/ws`) or replaces `{room}`.
    /// Several, separated by commas (the nodes of a cluster): connections take them in turn,
    /// so the members of a room are spread over the nodes.
    pub url: String,
    /// Token sent as `?token=`.
    #[serde(skip)]
    pub token: Option<String>,
    /// Prefix of room names, so runs do not collide.
    pub room_prefix: String,
    /// Most handshakes in flight at once.
    pub concurrency: usize,
    /// Patience for one handshake and for draining at the end.
    #[serde(rename = "timeout_s", serialize_with = "crate::report::seconds")]
    pub timeout: Duration,
    /// The server's pid, to read its memory and CPU from /proc.
    pub server_pid: Option<u32>,
    /// The wire dialect.
    pub dialect: Dialect,
    /// Local addresses connections are spread over, round-robin (empty: the OS picks). One
    /// source/destination pair has only ~28k ephemeral ports.
    pub sources: Vec<std::net::IpAddr>,
    /// Set in worker processes.
    pub worker: Option<Worker>,
    /// Clients do not apply what they receive (they only count it): see `join-storm`.
    #[serde(skip)]
    pub skip_apply: bool,
    /// Every member of a room goes to one node (room r to node r modulo the node count), as
    /// behind a load balancer that hashes room names; otherwise clients go round the nodes.
    pub by_room: bool,
    /// Draw progress bars on stderr (when it is a terminal). Off by default; the command line
    /// turns it on.
    #[serde(skip)]
    pub progress: bool,
    /// The first refusal of the credentials, as advice for people (see [`Target::refused`]).
    #[serde(skip)]
    refusal: Arc<OnceLock<String>>,
    #[serde(skip)]
    next_source: Arc<AtomicU64>,
    #[serde(skip)]
    next_url: Arc<AtomicU64>,
}

impl Target {
    /// A target with the defaults: y-websocket, no token, 200 handshakes at once, 30 s.
    pub fn new(url: &str) -> Target {
        Target {
            url: url.to_string(),
            token: None,
            room_prefix: format!("lt-{}-", std::process::id()),
            concurrency: 200,
            timeout: Duration::from_secs(30),
            server_pid: None,
            dialect: Dialect::YWebsocket,
            sources: Vec::new(),
            worker: None,
            skip_apply: false,
            by_room: false,
            progress: false,
            refusal: Arc::new(OnceLock::new()),
            next_source: Arc::new(AtomicU64::new(0)),
            next_url: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many nodes `url` names (comma-separated).
    pub fn nodes(&self) -> usize {
        self.url.split(',').count()
    }

    /// The base URL of node `slot` modulo the node count.
    fn base_url(&self, slot: usize) -> &str {
        self.url
            .split(',')
            .nth(slot % self.nodes())
            .unwrap_or(&self.url)
    }

    /// The node (index into `url`, modulo the node count) a client of room `room` goes to,
    /// `slot` being its turn among the clients.
    fn node_for(&self, room: usize, slot: usize) -> usize {
        (if self.by_room { room } else { slot }) % self.nodes()
    }

    /// The name of room number `room`.
    pub fn room_name(&self, room: usize) -> String {
        format!("{}{room}", self.room_prefix)
    }

    fn room_url(&self, room: usize, slot: usize) -> String {
        let url = self.base_url(slot);
        match self.dialect {
            // Servers with the room inside the path (y-sweet: /d/{room}/ws).
            Dialect::YWebsocket if url.contains("{room}") => {
                url.replace("{room}", &self.room_name(room))
            }
            Dialect::YWebsocket => {
                format!("{}/{}", url.trim_end_matches('/'), self.room_name(room))
            }
            Dialect::Hocuspocus => url.to_string(),
        }
    }

    /// The URL of room number `room` on the first node, with the token: for raw sockets.
    pub fn room_url_for(&self, room: usize) -> String {
        let url = self.room_url(room, 0);
        match &self.token {
            Some(t) => format!("{url}?token={t}"),
            None => url,
        }
    }

    /// Whether this process serves room number `room` (always, unless it is a worker).
    pub fn serves(&self, room: usize) -> bool {
        self.worker.is_none_or(|w| room % w.count == w.index)
    }

    /// In a worker: prints a marker line for the parent. Does nothing otherwise.
    pub fn signal(&self, marker: &str) {
        if self.worker.is_some() {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{marker}");
            let _ = out.flush();
        }
    }

    /// In a worker: tells the parent this worker is connected and waits for its go-ahead, so
    /// every worker's timed phase starts together. Does nothing otherwise.
    pub async fn ready(&self) {
        if self.worker.is_none() {
            return;
        }
        self.signal(crate::workers::READY);
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)
        })
        .await;
    }

    /// CPU seconds the server has used so far, when its pid was given.
    pub fn server_cpu_seconds(&self) -> Option<f64> {
        self.server_pid
            .and_then(|pid| proc::cpu_seconds(&pid.to_string()))
    }

    /// Connects one client to room number `room` (on the next node, with several) and waits
    /// until it is synced.
    pub async fn connect_room(&self, room: usize) -> anyhow::Result<Client> {
        let slot = self.next_url.fetch_add(1, Ordering::Relaxed) as usize;
        self.connect_room_on(room, slot).await
    }

    /// [`Target::connect_room`] on node `slot` (modulo the node count).
    async fn connect_room_on(&self, room: usize, slot: usize) -> anyhow::Result<Client> {
        let slot = self.node_for(room, slot);
        let bind = (!self.sources.is_empty()).then(|| {
            let n = self.next_source.fetch_add(1, Ordering::Relaxed) as usize;
            self.sources[n % self.sources.len()]
        });
        let opts = ClientOptions {
            token: self.token.clone(),
            hocuspocus: (self.dialect == Dialect::Hocuspocus).then(|| self.room_name(room)),
            bind,
            skip_apply: self.skip_apply,
            ..Default::default()
        };
        self.connect_url(&self.room_url(room, slot), opts).await
    }

    /// Connects one client to `url` and waits until it is synced. A refusal of the
    /// credentials (HTTP 401/403, close 4401/4403, Hocuspocus permission-denied) fails with
    /// advice on `--token` and is remembered ([`Target::refused`]); once one was seen, further
    /// connections are not tried.
    pub async fn connect_url(&self, url: &str, opts: ClientOptions) -> anyhow::Result<Client> {
        if self.refusal.get().is_some() {
            anyhow::bail!("not tried: the hub refused the credentials");
        }
        let client = match tokio::time::timeout(self.timeout, Client::connect(url, opts)).await {
            Err(_) => anyhow::bail!("handshake timed out"),
            Ok(Err(e)) => {
                return Err(match Refusal::from_error(&e) {
                    Some(r) => self.refuse(&r),
                    None => e.into(),
                });
            }
            Ok(Ok(c)) => c,
        };
        // A refused socket closes (or is denied) without syncing: stop waiting then.
        client
            .wait_for("synced", self.timeout, |s, _| {
                s.synced || s.closed.is_some() || !s.denied.is_empty()
            })
            .await?;
        let refused = {
            let state = client.state();
            match (&state.denied[..], &state.closed) {
                _ if state.synced => None,
                ([reason, ..], _) => Some(Ok(Refusal::from_hocuspocus_denied(reason))),
                ([], Some((code, reason))) => {
                    Some(Refusal::from_close(*code, reason).ok_or_else(|| {
                        anyhow::anyhow!(
                            "the server closed the connection before it synced ({code} {reason})"
                        )
                    }))
                }
                ([], None) => None,
            }
        };
        match refused {
            None => Ok(client),
            Some(Ok(r)) => Err(self.refuse(&r)),
            Some(Err(e)) => Err(e),
        }
    }

    /// Remembers a refusal and returns it as an error with advice.
    pub(crate) fn refuse(&self, r: &Refusal) -> anyhow::Error {
        let advice = r.advice(self.token.is_some(), &self.room_prefix);
        let _ = self.refusal.set(advice.clone());
        anyhow::anyhow!(advice)
    }

    /// When the server refused this run's credentials: what to do about it (`--token`).
    pub fn refused(&self) -> Option<String> {
        self.refusal.get().cloned()
    }

    /// Connects `n` clients, client `i` to room `room_of(i)` on node `i` modulo the node count,
    /// at most `concurrency` at a time. Returns the clients that made it (by index), handshake
    /// latencies and failures.
    pub async fn connect_many(
        &self,
        label: &str,
        n: usize,
        room_of: impl Fn(usize) -> usize,
    ) -> (Vec<(usize, Client)>, Histogram<u64>, Vec<String>) {
        let sem = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut tasks = Vec::with_capacity(n);
        // Connected and failed so far, for the bar.
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        for i in 0..n {
            let room = room_of(i);
            if !self.serves(room) {
                continue;
            }
            let sem = sem.clone();
            let target = self.clone();
            let counts = counts.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let started = Instant::now();
                let res = target.connect_room_on(room, i).await;
                let (ok, failed) = &*counts;
                if res.is_ok() { ok } else { failed }.fetch_add(1, Ordering::Relaxed);
                (i, started.elapsed(), res)
            }));
        }
        let bar = {
            let counts = counts.clone();
            Progress::steps(self.progress, label, tasks.len() as u64, move || {
                let (ok, failed) = (
                    counts.0.load(Ordering::Relaxed),
                    counts.1.load(Ordering::Relaxed),
                );
                let msg = if failed > 0 {
                    format!("connected, {} failed", thousands(failed))
                } else {
                    "connected".to_string()
                };
                (ok + failed, msg)
            })
        };
        let mut clients = Vec::with_capacity(n);
        let mut hist = histogram();
        let mut failures = Vec::new();
        for t in tasks {
            match t.await {
                Ok((i, took, Ok(c))) => {
                    let _ = hist.record(took.as_micros().max(1) as u64);
                    clients.push((i, c));
                }
                Ok((i, _, Err(e))) => failures.push(format!("client {i}: {e}")),
                Err(e) => failures.push(format!("task: {e}")),
            }
        }
        drop(bar);
        (clients, hist, failures)
    }
}

pub(crate) fn problems_from_failures(target: &Target, report: &mut Report, failures: &[String]) {
    if let Some(advice) = target.refused() {
        report.problems.push(format!(
            "{} connections failed: {advice}",
            thousands(failures.len() as u64)
        ));
    } else if !failures.is_empty() {
        let sample: Vec<&str> = failures.iter().take(3).map(String::as_str).collect();
        report.problems.push(format!(
            "{} connections failed, e.g. {}",
            failures.len(),
            sample.join("; ")
        ));
    }
}

/// `connect`: N sessions over M rooms, held for a while.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectParams {
    /// Sessions to open.
    pub sessions: usize,
    /// Rooms they spread over.
    pub rooms: usize,
    /// How long to hold them open once connected.
    #[serde(rename = "hold_s", serialize_with = "crate::report::seconds")]
    pub hold: Duration,
}

/// Runs the `connect` scenario.
pub async fn connect(target: &Target, p: &ConnectParams) -> Report {
    let mut report = Report::of("connect", target, p);
    let rss_before = target.server_pid.and_then(proc::rss_bytes);
    let server_cpu_before = target.server_cpu_seconds();
    let cpu_before = proc::cpu_seconds("self");
    let started = Instant::now();
    let rooms = p.rooms.max(1);
    let (clients, hist, failures) = target
        .connect_many("connect", p.sessions, |i| i % rooms)
        .await;
    let took = started.elapsed();
    target.ready().await;
    let ok = clients.len() as f64;
    report.metrics.insert("sessions_ok".into(), ok);
    report
        .metrics
        .insert("sessions_failed".into(), failures.len() as f64);
    report.metrics.insert(
        "connect_rate_per_s".into(),
        ok / took.as_secs_f64().max(1e-9),
    );
    report
        .latency
        .insert("handshake_to_synced".into(), Latency::from_micros(&hist));
    report.histograms.insert("handshake_to_synced".into(), hist);
    if let (Some(before), Some(after)) = (rss_before, target.server_pid.and_then(proc::rss_bytes)) {
        report
            .metrics
            .insert("server_rss_mib".into(), after as f64 / 1048576.0);
        if ok > 0.0 {
            report.metrics.insert(
                "server_bytes_per_connection".into(),
                (after.saturating_sub(before)) as f64 / ok,
            );
        }
    }
    if let (Some(before), Some(after)) = (server_cpu_before, target.server_cpu_seconds())
        && ok > 0.0
    {
        report.metrics.insert(
            "server_cpu_us_per_connection".into(),
            (after - before) * 1e6 / ok,
        );
    }
    // Holding refused sessions open would measure nothing.
    if target.refused().is_none() {
        let clients = Arc::new(clients);
        let open = clients.clone();
        let _bar = Progress::timed(target.progress, "hold", p.hold, move || {
            let n = open.iter().filter(|(_, c)| c.closed().is_none()).count();
            format!("{} sessions open", thousands(n as u64))
        });
        tokio::time::sleep(p.hold).await;
    }
    if let (Some(b), Some(a)) = (cpu_before, proc::cpu_seconds("self")) {
        report.metrics.insert("generator_cpu_s".into(), a - b);
    }
    problems_from_failures(target, &mut report, &failures);
    // The clients were dropped above, which closed their sockets.
    report
}

/// `edit`: N users in rooms of K, each editing at a fixed rate.
#[derive(Debug, Clone, Serialize)]
pub struct EditParams {
    /// Users (connections).
    pub users: usize,
    /// Users per room.
    pub room_size: usize,
    /// Edits per second per user.
    pub rate: f64,
    /// How long users edit.
    #[serde(rename = "duration_s", serialize_with = "crate::report::seconds")]
    pub duration: Duration,
    /// Text each room's document holds before the timed edits start (0 = empty): edits into
    /// a large document show whether a server's cost per update grows with the document.
    pub doc_bytes: usize,
}

/// A ticker for one simulated user: first tick after `offset`, then every `period`; ticks
/// the generator could not keep up with are skipped, not bunched.
pub fn ticker(offset: Duration, period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// One simulated user's edits until `deadline`: at every tick after `offset`, user `i` sets
/// its key of the `loadtest` map to `seq:<send time in µs>` (the others' observers time the
/// delivery from it), then calls `sent`.
pub(crate) async fn edit_until(
    c: Arc<Client>,
    i: usize,
    offset: Duration,
    period: Duration,
    deadline: tokio::time::Instant,
    sent: impl Fn(),
) {
    let mut tick = ticker(offset, period);
    let map = c.doc().get_or_insert_map("loadtest");
    let key = i.to_string();
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        seq += 1;
        let value = format!("{seq}:{}", proc::now_micros());
        map.insert(&mut c.doc().transact_mut(), key.as_str(), value);
        sent();
    }
}

/// Pause between a preload and the timed edits.
const PRELOAD_SETTLE: Duration = Duration::from_secs(2);

/// Longest wait for the server to go quiet after a preload.
const PRELOAD_SETTLE_MAX: Duration = Duration::from_secs(60);

/// Waits out the work a preload leaves behind (storing megabytes, compacting them), so the
/// edits' CPU figure (or a join storm's) is their own. With the server's pid: until it used under 5 % of a
/// core over a quarter second (at most a minute); without it, a fixed pause.
pub(crate) async fn settle(target: &Target) {
    let _bar = Progress::spinner(target.progress, "settle", || {
        "waiting for the server to finish storing the document".to_string()
    });
    tokio::time::sleep(PRELOAD_SETTLE).await;
    let Some(mut last) = target.server_cpu_seconds() else {
        return;
    };
    let step = Duration::from_millis(250);
    let deadline = tokio::time::Instant::now() + PRELOAD_SETTLE_MAX;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(step).await;
        let Some(now) = target.server_cpu_seconds() else {
            return;
        };
        if now - last < 0.05 * step.as_secs_f64() {
            return;
        }
        last = now;
    }
}

/// The first member of each room writes `bytes` of text in 4 KiB updates, like a long editing
/// session (and like `join-storm`'s document: a log of over a thousand updates, which the hub
/// compacts before the timed edits); every member must then hold all of it. False (with a
/// problem) if that did not happen in time.
async fn preload(
    target: &Target,
    clients: &[(usize, Client)],
    room_size: usize,
    bytes: usize,
    report: &mut Report,
) -> bool {
    let _bar = Progress::spinner(target.progress, "preload", move || {
        format!("{} bytes into each room", thousands(bytes as u64))
    });
    let chunk = "lorem ipsum dolor sit amet, ".repeat(4096 / 28 + 1);
    let mut seen = std::collections::HashSet::new();
    for (i, c) in clients {
        if !seen.insert(i / room_size) {
            continue;
        }
        let text = c.doc().get_or_insert_text("preload");
        let mut len = 0usize;
        while len < bytes {
            let piece = &chunk[..chunk.len().min(bytes - len)];
            text.insert(&mut c.doc().transact_mut(), len as u32, piece);
            len += piece.len();
        }
    }
    let want = bytes as u32;
    for (_, c) in clients {
        let full = c
            .wait_for("preloaded document", target.timeout, |_, doc| {
                doc.get_or_insert_text("preload").len(&doc.transact()) == want
            })
            .await;
        if full.is_err() {
            report
                .problems
                .push("not every member received the preloaded document".into());
            return false;
        }
    }
    report.metrics.insert("doc_bytes".into(), bytes as f64);
    true
}

/// A spinner while the last deliveries arrive: `received / expected`.
pub(crate) fn drain_bar(target: &Target, received: &Arc<AtomicU64>, want: u64) -> Progress {
    let received = received.clone();
    Progress::spinner(target.progress, "drain", move || {
        format!(
            "{} / {} deliveries",
            thousands(received.load(Ordering::Relaxed)),
            thousands(want)
        )
    })
}

/// Shared delivery accounting: every edit carries its send time, every receiver records the
/// delay from send to arrival.
struct Deliveries {
    latency: Mutex<Histogram<u64>>,
    /// With several nodes: deliveries whose sender and receiver share a node, and the rest.
    same_node: Mutex<Histogram<u64>>,
    cross_node: Mutex<Histogram<u64>>,
    received: Arc<AtomicU64>,
}

/// Runs the `edit` scenario.
pub async fn edit(target: &Target, p: &EditParams) -> Report {
    let mut report = Report::of("edit", target, p);
    let room_size = p.room_size.max(1);
    let (clients, hist, failures) = target
        .connect_many("connect", p.users, |i| i / room_size)
        .await;
    report
        .latency
        .insert("handshake_to_synced".into(), Latency::from_micros(&hist));
    problems_from_failures(target, &mut report, &failures);
    report.histograms.insert("handshake_to_synced".into(), hist);
    if target.refused().is_some() {
        // Nothing to measure; a worker still tells its parent it is ready and done.
        target.ready().await;
        target.signal(crate::workers::DONE);
        return report;
    }
    if p.doc_bytes > 0 {
        if !preload(target, &clients, room_size, p.doc_bytes, &mut report).await {
            return report;
        }
        settle(target).await;
    }

    let deliveries = Arc::new(Deliveries {
        latency: Mutex::new(histogram()),
        same_node: Mutex::new(histogram()),
        cross_node: Mutex::new(histogram()),
        received: Arc::new(AtomicU64::new(0)),
    });
    let nodes = target.nodes();
    let mut members: HashMap<usize, usize> = HashMap::new();
    for (i, c) in &clients {
        *members.entry(i / room_size).or_default() += 1;
        // Each user writes key = its index; others' keys arriving are deliveries.
        let own = i.to_string();
        let me = *i;
        let d = deliveries.clone();
        let map = c.doc().get_or_insert_map("loadtest");
        map.observe("loadtest", move |txn, e: &MapEvent| {
            let now = proc::now_micros();
            for (key, change) in e.keys(txn) {
                if **key == *own {
                    continue;
                }
                let value = match change {
                    EntryChange::Inserted(v) | EntryChange::Updated(_, v) => v,
                    EntryChange::Removed(_) => continue,
                };
                if let Out::Any(Any::String(s)) = value
                    && let Some(sent) = s.split(':').nth(1).and_then(|t| t.parse::<u64>().ok())
                {
                    d.received.fetch_add(1, Ordering::Relaxed);
                    let took = now.saturating_sub(sent).max(1);
                    let _ = d
                        .latency
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(took);
                    // Client `i` is on node `i % nodes` (`connect_many`); keys are indexes.
                    if nodes > 1
                        && let Ok(sender) = key.parse::<usize>()
                    {
                        let split = if sender % nodes == me % nodes {
                            &d.same_node
                        } else {
                            &d.cross_node
                        };
                        let _ = split.lock().unwrap_or_else(|p| p.into_inner()).record(took);
                    }
                }
            }
        });
    }

    target.ready().await;
    let cpu_before = proc::cpu_seconds("self");
    let server_cpu_before = target.server_cpu_seconds();
    let expected = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(1.0 / p.rate.max(0.001));
    let deadline = tokio::time::Instant::now() + p.duration;
    let clients: Vec<(usize, Arc<Client>)> =
        clients.into_iter().map(|(i, c)| (i, Arc::new(c))).collect();
    let bar = {
        let (sent, d) = (sent.clone(), deliveries.clone());
        Progress::timed(target.progress, "edit", p.duration, move || {
            format!(
                "{} edits sent, {} delivered",
                thousands(sent.load(Ordering::Relaxed)),
                thousands(d.received.load(Ordering::Relaxed))
            )
        })
    };
    let mut tasks = Vec::new();
    for (n, (i, c)) in clients.iter().enumerate() {
        let (i, c) = (*i, c.clone());
        let peers = members.get(&(i / room_size)).copied().unwrap_or(1) as u64 - 1;
        let (expected, sent) = (expected.clone(), sent.clone());
        // Spread first edits over one period so users do not fire in lockstep.
        let offset = period.mul_f64((n % 1000) as f64 / 1000.0);
        tasks.push(tokio::spawn(edit_until(
            c,
            i,
            offset,
            period,
            deadline,
            move || {
                sent.fetch_add(1, Ordering::Relaxed);
                expected.fetch_add(peers, Ordering::Relaxed);
            },
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(bar);
    let edit_secs = p.duration.as_secs_f64();
    // Drain: wait until every expected delivery arrived, or the timeout.
    let want = expected.load(Ordering::Relaxed);
    let drain_deadline = Instant::now() + target.timeout;
    let bar = drain_bar(target, &deliveries.received, want);
    while deliveries.received.load(Ordering::Relaxed) < want && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(bar);
    let got = deliveries.received.load(Ordering::Relaxed);
    target.signal(crate::workers::DONE);
    if let (Some(b), Some(a)) = (cpu_before, proc::cpu_seconds("self")) {
        report.metrics.insert("generator_cpu_s".into(), a - b);
    }
    if let (Some(b), Some(a)) = (server_cpu_before, target.server_cpu_seconds()) {
        report.metrics.insert("server_cpu_s".into(), a - b);
        if got > 0 {
            report.metrics.insert(
                "server_cpu_us_per_delivery".into(),
                (a - b) * 1e6 / got as f64,
            );
        }
        let edits = sent.load(Ordering::Relaxed);
        if edits > 0 {
            report.metrics.insert(
                "server_cpu_us_per_edit".into(),
                (a - b) * 1e6 / edits as f64,
            );
        }
    }
    let sent = sent.load(Ordering::Relaxed);
    report.metrics.insert("edits_sent".into(), sent as f64);
    report
        .metrics
        .insert("deliveries_expected".into(), want as f64);
    report
        .metrics
        .insert("deliveries_received".into(), got as f64);
    report
        .metrics
        .insert("deliveries_per_s".into(), got as f64 / edit_secs.max(1e-9));
    let latency = deliveries
        .latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    report
        .latency
        .insert("delivery".into(), Latency::from_micros(&latency));
    report.histograms.insert("delivery".into(), latency);
    if nodes > 1 {
        for (name, h) in [
            ("delivery_same_node", &deliveries.same_node),
            ("delivery_cross_node", &deliveries.cross_node),
        ] {
            let h = h.lock().unwrap_or_else(|p| p.into_inner()).clone();
            report.latency.insert(name.into(), Latency::from_micros(&h));
            report.histograms.insert(name.into(), h);
        }
    }
    if got != want {
        report
            .problems
            .push(format!("deliveries: expected {want}, received {got}"));
    }

    // Convergence: every replica of a room holds the same map.
    let mut by_room: HashMap<usize, Vec<Any>> = HashMap::new();
    for (i, c) in &clients {
        let map = c.doc().get_or_insert_map("loadtest");
        let json = map.to_json(&c.doc().transact());
        by_room.entry(i / room_size).or_default().push(json);
    }
    let diverged = by_room
        .values()
        .filter(|states| states.windows(2).any(|w| w[0] != w[1]))
        .count();
    report
        .metrics
        .insert("rooms_diverged".into(), diverged as f64);
    if diverged > 0 {
        report
            .problems
            .push(format!("{diverged} rooms did not converge"));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_by_room_keeps_a_room_on_one_node_and_spread_goes_round() {
        let mut t = Target::new("ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws,ws://127.0.0.1:3/ws");
        // Spread: client turns 0..6 of room 4 land on every node in turn.
        let spread: Vec<usize> = (0..6).map(|turn| t.node_for(4, turn)).collect();
        assert_eq!(spread, [0, 1, 2, 0, 1, 2]);
        t.by_room = true;
        // By room: every client of room 4 on node 1, of room 5 on node 2.
        assert!((0..6).all(|turn| t.node_for(4, turn) == 1));
        assert!((0..6).all(|turn| t.node_for(5, turn) == 2));
        assert_eq!(
            t.room_url(4, t.node_for(4, 0)),
            format!("ws://127.0.0.1:2/ws/{}", t.room_name(4))
        );
    }
}
