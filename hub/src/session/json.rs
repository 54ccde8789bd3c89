//! The JSON mode: bots that speak JSON, not Yjs (`GET /ws/{room}?format=json`, or the
//! `chorus.json.v1` subprotocol). docs/PROTOCOL.md ("JSON mode") is the reference.
//!
//! The hub keeps the Yjs side for the bot: the connection's worker owns a server-side
//! [`Peer`] (a replica of the document, a member of the room like any socket). The bot gets
//! the document as JSON (the tree view, [`doc_to_view`]), then deltas: the path ops that turn
//! one view into the next ([`delta::diff`]), computed at most once per interval and only when
//! something changed, each with the next version number. The bot sends path ops naming the
//! version its view was at; the worker rebases them over the deltas sent since
//! ([`rebase::rebase`]), or answers with a conflict, and applies them to the replica, which
//! sends the room one Yjs update. The ack comes once the update is durable.
//!
//! Costs are the bot's: every frame counts against the tenant's message rate, a render of the
//! view runs on the blocking pool at most once per interval, and the replica and the last
//! view are held per connection (about three times the document). Read-only tokens get the
//! view, deltas, presence and chat, and may set their presence; ops and chat are refused.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_persistence::RoomKey;
use chorus_protocol::CloseCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use yrs::Transact;

use super::{Closing, Dialect, RateLimit, check_token, rate_exceeded, refresh_token};
use crate::auth::{Identity, Role};
use crate::docjson::{self, Op, delta, doc_to_view, rebase};
use crate::outbound::{ConnHandle, Outbound};
use crate::peer::{Peer, PeerError, PeerEvent, PeerOptions};
use crate::registry::Registry;

/// The subprotocol that asks for the JSON mode.
pub const SUBPROTOCOL: &str = "chorus.json.v1";
/// How often deltas may be sent, unless the bot asks for another interval (`?interval=`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);
/// Shortest interval a bot may ask for.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Longest interval a bot may ask for.
pub const MAX_INTERVAL: Duration = Duration::from_secs(10);
/// Deltas kept for rebasing: an op built on an older view is refused as `stale`.
const HISTORY_VERSIONS: usize = 256;
/// Ops kept in those deltas, at most.
const HISTORY_OPS: usize = 20_000;
/// Bytes of those deltas (as sent), at most: a paste of a large text is not kept 256 times.
const HISTORY_BYTES: usize = 4 << 20;
/// Op-and-change pairs one frame may rebase (each compares two paths): past it the bot is
/// told its view is `stale`, so one frame costs the worker a bounded amount of CPU.
const MAX_REBASE_PAIRS: usize = 100_000;
/// Longest request id, in bytes.
const MAX_ID: usize = 128;
/// Longest chat message, in bytes.
const MAX_CHAT: usize = 16 * 1024;
/// Frames from the socket waiting for the worker; the socket is not read meanwhile.
const COMMANDS: usize = 16;
/// How long the replica may take to sync when the bot joins.
const SYNC_PATIENCE: Duration = Duration::from_secs(10);

/// A frame from the bot.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Ops {
        #[serde(default)]
        id: Option<String>,
        base: u64,
        ops: Vec<Op>,
    },
    Presence {
        state: Value,
    },
    Chat {
        #[serde(default)]
        id: Option<String>,
        text: String,
    },
    Snapshot,
    Ping {
        #[serde(default)]
        id: Value,
    },
    Auth {
        token: String,
    },
}

/// Parses a bot's frame; `Err` is the error frame's code and message.
fn parse_frame(text: &str, max_depth: u32) -> Result<ClientFrame, (&'static str, String)> {
    // Nesting is bounded before serde walks it (ops nest values three levels into the
    // frame, `{"ops":[{"value":...}]}`, and a path adds its length; the op check bounds
    // the result against the document).
    if chorus_protocol::nesting::json_depth(text.as_bytes(), max_depth + 4).is_err() {
        return Err(("too_large", "the frame nests too deeply".into()));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| ("bad_request", format!("not JSON: {e}")))?;
    if value.get("v") != Some(&json!(1)) {
        return Err(("bad_request", "frames carry \"v\": 1".into()));
    }
    serde_json::from_value(value).map_err(|e| ("bad_request", e.to_string()))
}

/// For the fuzz targets: parses a bot's frame as the session does, and returns its edit
/// operations if it is an `ops` frame.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_parse(text: &str, max_depth: u32) -> Result<Option<Vec<Op>>, String> {
    match parse_frame(text, max_depth) {
        Ok(ClientFrame::Ops { ops, .. }) => Ok(Some(ops)),
        Ok(_) => Ok(None),
        Err((code, msg)) => Err(format!("{code}: {msg}")),
    }
}

/// What the socket side hands the worker.
#[derive(Debug)]
enum Command {
    Ops {
        id: Option<String>,
        base: u64,
        ops: Vec<Op>,
    },
    Presence(Value),
    Chat {
        id: Option<String>,
        text: String,
    },
    Snapshot,
}

/// Everything a JSON session needs, prepared by the HTTP handler.
pub struct JsonSession {
    /// The room.
    pub key: RoomKey,
    /// Who is connected.
    pub identity: Identity,
    /// The socket's queue handle: the worker's frames go through it.
    pub conn: ConnHandle,
    /// This task's end of the queue.
    pub queue: crate::outbound::ConnQueue,
    /// Live rooms.
    pub registry: Arc<Registry>,
    /// Verifies in-band token refreshes.
    pub verifier: Arc<crate::auth::Verifier>,
    /// See `--ping-interval`.
    pub ping_interval: Duration,
    /// The tenant's messages-per-second limit.
    pub rate_limit: Option<u32>,
    /// How often deltas may be sent.
    pub interval: Duration,
    /// See `--max-awareness-bytes`.
    pub max_awareness_bytes: usize,
    /// Released when the connection ends (connection counts).
    pub guard: Box<dyn Send + Sync>,
}

/// Runs a JSON-mode connection until either side closes it.
pub async fn run(mut socket: super::websocket::WebSocket, mut s: JsonSession) {
    metrics::counter!(crate::metrics::names::CONNECTIONS_TOTAL).increment(1);
    let user = s.identity.user.clone();
    send(
        &s.conn,
        &json!({
            "v": 1, "type": "welcome", "mode": "json",
            "room": &*s.key.room, "tenant": &*s.key.tenant,
            "role": s.identity.role.as_str(), "user": user,
            "interval": s.interval.as_millis() as u64,
        }),
    );
    let name = s
        .identity
        .shown_as
        .as_ref()
        .and_then(|a| a.name.clone())
        .or_else(|| user.clone())
        .unwrap_or_else(|| "bot".into());
    let opts = PeerOptions {
        name,
        color: s.identity.shown_as.as_ref().and_then(|a| a.color.clone()),
        user: user.clone(),
        // Frames are counted on the socket; the peer's own edits and presence follow them.
        messages_per_second: None,
        presence: true,
    };
    let peer = match Box::pin(s.registry.peer(&s.key, opts)).await {
        Ok(p) => p,
        Err(e) => {
            let code = super::join_close_code(&e);
            Box::pin(super::close(
                &mut socket,
                &mut s.queue,
                code,
                &e.to_string(),
            ))
            .await;
            return;
        }
    };
    super::emit_presence(s.registry.events(), &s.key, &s.conn, true);
    let (tx, rx) = mpsc::channel(COMMANDS);
    let worker = Worker {
        max_depth: s.registry.max_nesting_depth() as usize,
        peer,
        out: s.conn.clone(),
        author: user.unwrap_or_else(|| "bot".into()),
        view: Value::Object(Default::default()),
        version: 0,
        history: VecDeque::new(),
        floor: 0,
        history_ops: 0,
        history_bytes: 0,
        dirty: false,
        acks: VecDeque::new(),
        own_chat: HashSet::new(),
        seen_chat: HashSet::new(),
        interval: s.interval,
    };
    let worker = tokio::spawn(worker.run(rx));
    let mut dialect = JsonBot {
        key: &s.key,
        role: s.identity.role,
        conn: &s.conn,
        commands: Some(tx),
        worker: Some(worker),
        expires: s.identity.expires.unwrap_or(u64::MAX),
        kid: s.identity.kid.take(),
        registry: &s.registry,
        verifier: &s.verifier,
        rate: s.rate_limit.map(RateLimit::new),
        max_depth: s.registry.max_nesting_depth(),
        max_awareness_bytes: s.max_awareness_bytes,
    };
    super::serve(&mut socket, &mut s.queue, s.ping_interval, &mut dialect).await;
    super::emit_presence(s.registry.events(), &s.key, &s.conn, false);
    drop(s.guard);
}

fn send(conn: &ConnHandle, frame: &Value) -> bool {
    conn.send(Outbound::Text(frame.to_string()))
}

fn error(conn: &ConnHandle, id: Option<&str>, code: &str, message: &str) {
    send(
        conn,
        &json!({"v": 1, "type": "error", "id": id, "code": code, "message": message}),
    );
}

/// The socket side: reads and checks frames, answers what needs no document, and hands the
/// rest to the worker.
struct JsonBot<'a> {
    key: &'a RoomKey,
    role: Role,
    conn: &'a ConnHandle,
    commands: Option<mpsc::Sender<Command>>,
    worker: Option<tokio::task::JoinHandle<()>>,
    expires: u64,
    kid: Option<Arc<str>>,
    registry: &'a Arc<Registry>,
    verifier: &'a Arc<crate::auth::Verifier>,
    rate: Option<RateLimit>,
    max_depth: u32,
    max_awareness_bytes: usize,
}

impl JsonBot<'_> {
    /// Parses a frame; `Err` is the error frame's code and message.
    fn parse(&self, text: &str) -> Result<ClientFrame, (&'static str, String)> {
        parse_frame(text, self.max_depth)
    }

    fn id_ok(&self, id: Option<&String>) -> bool {
        if id.is_some_and(|id| id.len() > MAX_ID) {
            error(self.conn, None, "bad_request", "ids are at most 128 bytes");
            return false;
        }
        true
    }

    async fn command(&mut self, cmd: Command) -> Result<(), Closing> {
        let Some(tx) = &self.commands else {
            return Err((CloseCode::Internal, "room closed".into()));
        };
        // Waiting here stops reading the socket: a bot sending faster than its ops apply is
        // slowed down, not buffered without bound.
        tx.send(cmd)
            .await
            .map_err(|_| (CloseCode::Internal, "room closed".into()))
    }
}

impl Dialect for JsonBot<'_> {
    async fn binary(&mut self, _frame: Bytes) -> Result<(), Closing> {
        Err((
            CloseCode::UnsupportedData,
            "the JSON mode takes text frames only".into(),
        ))
    }

    async fn text(&mut self, text: &str) -> Result<(), Closing> {
        if self.rate.as_mut().is_some_and(|r| !r.take()) {
            return Err(rate_exceeded());
        }
        let frame = match self.parse(text) {
            Ok(f) => f,
            Err((code, message)) => {
                error(self.conn, None, code, &message);
                return Ok(());
            }
        };
        let writer = self.role == Role::Write;
        match frame {
            ClientFrame::Ping { id } => {
                // Echoed back: a number or a short string, not a large value to reflect.
                let small = match &id {
                    Value::Null | Value::Number(_) => true,
                    Value::String(s) => s.len() <= MAX_ID,
                    _ => false,
                };
                if small {
                    send(self.conn, &json!({"v": 1, "type": "pong", "id": id}));
                } else {
                    error(
                        self.conn,
                        None,
                        "bad_request",
                        "a ping id is a number or a string of at most 128 bytes",
                    );
                }
            }
            ClientFrame::Auth { token } => {
                // A JSON-mode session does not search: the token's rooms are not kept.
                let (expires, kid, _rooms) =
                    Box::pin(refresh_token(self.verifier, self.key, self.role, &token)).await?;
                self.expires = expires;
                self.kid = kid;
                send(
                    self.conn,
                    &json!({"v": 1, "type": "authenticated", "expires": expires}),
                );
            }
            ClientFrame::Ops { id, .. } | ClientFrame::Chat { id, .. } if !writer => {
                if self.id_ok(id.as_ref()) {
                    error(
                        self.conn,
                        id.as_deref(),
                        "forbidden",
                        "read-only: edits are not accepted",
                    );
                }
            }
            ClientFrame::Ops { id, base, ops } => {
                if !self.id_ok(id.as_ref()) {
                    return Ok(());
                }
                if ops.is_empty() || ops.len() > docjson::MAX_OPS {
                    error(
                        self.conn,
                        id.as_deref(),
                        "bad_request",
                        "1 to 1000 ops per frame",
                    );
                } else if let Some(i) = ops.iter().position(|op| op.path().is_none()) {
                    error(
                        self.conn,
                        id.as_deref(),
                        "bad_request",
                        &format!(
                            "op {i}: the JSON mode takes path ops (set, delete, splice, splice_text)"
                        ),
                    );
                } else {
                    self.command(Command::Ops { id, base, ops }).await?;
                }
            }
            ClientFrame::Chat { id, text } => {
                if !self.id_ok(id.as_ref()) {
                    return Ok(());
                }
                if text.is_empty() || text.len() > MAX_CHAT {
                    error(
                        self.conn,
                        id.as_deref(),
                        "bad_request",
                        "a chat message is 1 byte to 16 KiB",
                    );
                } else {
                    self.command(Command::Chat { id, text }).await?;
                }
            }
            ClientFrame::Presence { state } => {
                if !state.is_object() || state.to_string().len() > self.max_awareness_bytes {
                    error(
                        self.conn,
                        None,
                        "bad_request",
                        "presence is an object within the awareness size limit",
                    );
                } else {
                    self.command(Command::Presence(state)).await?;
                }
            }
            ClientFrame::Snapshot => self.command(Command::Snapshot).await?,
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), Closing> {
        if self.worker.as_ref().is_some_and(|w| w.is_finished()) {
            // The worker ended (the room closed the peer and said why through the queue).
            return Err((CloseCode::Internal, "room closed".into()));
        }
        check_token(self.registry, self.key, self.expires, self.kid.as_deref()).await
    }

    async fn leave(&mut self) {
        // Closing the channel tells the worker to leave the room.
        self.commands = None;
        if let Some(worker) = self.worker.take() {
            let abort = worker.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), worker)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// The document side: owns the peer, sends views and deltas, applies ops.
struct Worker {
    peer: Peer,
    out: ConnHandle,
    author: String,
    max_depth: usize,
    /// The view as last sent, and its version.
    view: Value,
    version: u64,
    /// Deltas sent, by version (each turns version - 1 into version), for rebasing; ops
    /// built on `floor` or later can be rebased.
    history: VecDeque<(u64, Vec<Op>, usize)>,
    floor: u64,
    history_ops: usize,
    history_bytes: usize,
    /// The replica changed since the last delta.
    dirty: bool,
    /// Acks waiting for durability: the peer's edit count they need, and the frame.
    acks: VecDeque<(u64, Value)>,
    /// Chat messages this session wrote (not echoed back) and those already reported.
    own_chat: HashSet<String>,
    seen_chat: HashSet<String>,
    interval: Duration,
}

impl Worker {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        if self.peer.synced(SYNC_PATIENCE).await.is_err() {
            self.out
                .close(CloseCode::RoomUnavailable, "the room did not sync in time");
            return;
        }
        self.snapshot().await;
        let mut saved = self.peer.saved();
        let mut presence = self.peer.presence();
        let mut presence_dirty = true;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        if !self.handle(cmd).await {
                            return;
                        }
                    }
                    None => break,
                },
                event = self.peer.next_event() => match event {
                    Some(PeerEvent::Changed) => self.dirty = true,
                    Some(PeerEvent::Closed { code, reason }) => {
                        let code = CloseCode::from_code(code).unwrap_or(CloseCode::Internal);
                        self.out.close(code, &reason);
                        return;
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    if self.dirty {
                        self.flush().await;
                    }
                    if presence_dirty && let Some(p) = &presence {
                        presence_dirty = false;
                        let me = self.peer.client_id();
                        let peers: Vec<Value> = p
                            .borrow()
                            .iter()
                            .filter(|(client, _)| **client != me)
                            .map(|(client, (_, state))| json!({"client": client, "state": state}))
                            .collect();
                        send(&self.out, &json!({"v": 1, "type": "presence", "peers": peers}));
                    }
                }
                changed = saved.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.release_acks();
                }
                changed = async { presence.as_mut()?.changed().await.ok() } , if presence.is_some() => {
                    match changed {
                        Some(()) => presence_dirty = true,
                        None => presence = None,
                    }
                }
            }
        }
        self.peer.leave().await;
    }

    /// Handles a command; `false` ends the session (the peer left the room).
    async fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Ops { id, base, ops } => self.ops(id, base, ops).await,
            Command::Presence(state) => match self.peer.set_awareness(&state).await {
                Ok(()) => true,
                Err(PeerError::Closed) => false,
                Err(e) => {
                    error(&self.out, None, "rate_limited", &e.to_string());
                    true
                }
            },
            Command::Chat { id, text } => {
                let message = format!(
                    "m_{}_{:08x}",
                    crate::auth::now_secs(),
                    rand::random::<u32>()
                );
                let author = self.author.clone();
                let time = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let written = self
                    .peer
                    .edit(|txn| {
                        let chat =
                            yrs::WriteTxn::get_or_insert_array(txn, chorus_ai_bridge::chat::CHAT);
                        chorus_ai_bridge::chat::push_user(
                            txn, &chat, &message, &author, &text, time,
                        );
                    })
                    .await;
                self.own_chat.insert(message.clone());
                self.after_edit(written.map(Ok), id, false, Some(message))
                    .await
            }
            Command::Snapshot => {
                self.snapshot().await;
                true
            }
        }
    }

    async fn ops(&mut self, id: Option<String>, base: u64, mut ops: Vec<Op>) -> bool {
        let id_ref = id.as_deref();
        if base == 0 || base > self.version {
            error(
                &self.out,
                id_ref,
                "bad_request",
                &format!("no view version {base}: the latest is {}", self.version),
            );
            return true;
        }
        // Everything the replica holds goes out first, so the op rebases over all of it.
        if self.dirty {
            self.flush().await;
        }
        if base < self.floor {
            error(
                &self.out,
                id_ref,
                "stale",
                &format!(
                    "view version {base} is too old to rebase (oldest {}): ask for a snapshot",
                    self.floor
                ),
            );
            return true;
        }
        let since: Vec<&Op> = self
            .history
            .iter()
            .filter(|(v, _, _)| *v > base)
            .flat_map(|(_, ops, _)| ops)
            .collect();
        if since.len().saturating_mul(ops.len()) > MAX_REBASE_PAIRS {
            error(
                &self.out,
                id_ref,
                "stale",
                &format!(
                    "{} changes since view version {base}: too many to rebase {} ops over; build them on version {}",
                    since.len(),
                    ops.len(),
                    self.version
                ),
            );
            return true;
        }
        let rebased = !since.is_empty();
        for (i, op) in ops.iter_mut().enumerate() {
            for change in &since {
                if let Err(c) = rebase::rebase(op, std::slice::from_ref(*change)) {
                    error(&self.out, id_ref, "conflict", &format!("op {i}: {c}"));
                    return true;
                }
            }
        }
        let max_depth = self.max_depth;
        let result = self
            .peer
            .edit(|txn| docjson::apply_ops_in(txn, &ops, max_depth))
            .await;
        self.after_edit(result, id, rebased, None).await
    }

    /// Sends the delta an edit made and queues its ack, or reports why it failed.
    async fn after_edit(
        &mut self,
        result: Result<Result<(), docjson::OpError>, PeerError>,
        id: Option<String>,
        rebased: bool,
        message: Option<String>,
    ) -> bool {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error(&self.out, id.as_deref(), "bad_request", &e.to_string());
                return true;
            }
            Err(PeerError::Closed) => return false,
            Err(PeerError::RateLimited) => {
                error(
                    &self.out,
                    id.as_deref(),
                    "rate_limited",
                    "message rate limit exceeded",
                );
                return true;
            }
            Err(e @ (PeerError::Refused(_) | PeerError::Timeout)) => {
                error(&self.out, id.as_deref(), "too_large", &e.to_string());
                return true;
            }
        }
        self.flush().await;
        let mut ack =
            json!({"v": 1, "type": "ack", "id": id, "version": self.version, "rebased": rebased});
        if let Some(m) = message {
            ack["message"] = Value::String(m);
        }
        self.acks.push_back((self.peer.sent(), ack));
        self.release_acks();
        true
    }

    fn release_acks(&mut self) {
        let durable = *self.peer.saved().borrow();
        while self.acks.front().is_some_and(|(need, _)| *need <= durable) {
            if let Some((_, ack)) = self.acks.pop_front() {
                send(&self.out, &ack);
            }
        }
    }

    /// Renders the view off the runtime's workers; the new view and what changed.
    async fn render(&mut self) -> Option<(Value, Vec<Op>)> {
        let doc = self.peer.doc().clone();
        let old = std::mem::take(&mut self.view);
        tokio::task::spawn_blocking(move || {
            let new = doc_to_view(&doc.transact());
            let ops = delta::diff(&old, &new);
            (new, ops)
        })
        .await
        .ok()
    }

    /// Sends the whole view as a new version (on join, and when the bot asks).
    async fn snapshot(&mut self) {
        self.dirty = false;
        let Some((view, _)) = self.render().await else {
            return;
        };
        self.view = view;
        self.version += 1;
        // A snapshot starts the history over: ops must be built on it or later.
        self.history.clear();
        self.history_ops = 0;
        self.history_bytes = 0;
        self.floor = self.version;
        self.note_chat(false);
        send(
            &self.out,
            &json!({"v": 1, "type": "snapshot", "version": self.version, "doc": &self.view}),
        );
    }

    /// Sends what changed since the last view, if anything.
    async fn flush(&mut self) {
        self.dirty = false;
        let Some((view, ops)) = self.render().await else {
            return;
        };
        self.view = view;
        if ops.is_empty() {
            return;
        }
        self.version += 1;
        let chat = ops
            .iter()
            .any(|op| op.path().and_then(|p| p.first()) == Some(&docjson::Seg::Key("chat".into())));
        let frame =
            json!({"v": 1, "type": "delta", "version": self.version, "ops": &ops}).to_string();
        let bytes = frame.len();
        self.out.send(Outbound::Text(frame));
        self.history_ops += ops.len();
        self.history_bytes += bytes;
        self.history.push_back((self.version, ops, bytes));
        while self.history.len() > HISTORY_VERSIONS
            || self.history_ops > HISTORY_OPS
            || self.history_bytes > HISTORY_BYTES
        {
            let Some((v, old, bytes)) = self.history.pop_front() else {
                break;
            };
            self.history_ops -= old.len();
            self.history_bytes -= bytes;
            self.floor = v;
        }
        if chat {
            self.note_chat(true);
        }
    }

    /// Reports chat messages that are complete and new (not this session's own).
    fn note_chat(&mut self, report: bool) {
        let Some(Value::Array(messages)) = self.view.get("chat") else {
            return;
        };
        for m in messages {
            let Some(id) = m.get("id").and_then(Value::as_str) else {
                continue;
            };
            if m.get("status").and_then(Value::as_str) == Some("streaming")
                || self.seen_chat.contains(id)
            {
                continue;
            }
            self.seen_chat.insert(id.to_owned());
            if report && !self.own_chat.contains(id) {
                send(&self.out, &json!({"v": 1, "type": "chat", "message": m}));
            }
        }
    }
}
