//! One task per WebSocket connection. It reads frames, decodes and validates them (so bad input
//! is refused here, before it reaches the room), forwards what is valid to the room, and writes
//! what the room queued for it. Reading and writing share one task: the room never waits on a
//! socket (it only `try_send`s into the bounded queue), so a blocked write cannot deadlock it.

mod ai;
mod frames;
pub mod hocuspocus;
pub mod json;
mod limits;
pub mod recording;
pub mod websocket;

pub use frames::{Checked, Decoded, FrameLimits, decode_frame, decode_update};
pub use limits::{ByteBudget, RateLimit};

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use tungstenite::protocol::CloseFrame;

use crate::session::websocket::{Message as WsMessage, WebSocket, feed_binary};
use bytes::Bytes;
use chorus_persistence::RoomKey;
use chorus_protocol::CloseCode;
use chorus_protocol::awareness;
use chorus_protocol::ext::{self, ClientMessage, ErrorCode, ServerMessage};
use chorus_protocol::nesting::{Clocks, Nesting, NestingError, scan_update};
use chorus_protocol::sync::Message;
use futures_util::SinkExt;
use yrs::StateVector;
use yrs::Update;
use yrs::updates::decoder::Decode;

use crate::auth::{Identity, Role};
use crate::outbound::{ConnHandle, ConnQueue, Next, Outbound};
use crate::registry::{JoinError, Registry, RoomHandle};
use crate::room::Inbound;

/// Everything a connection task needs, prepared by the HTTP handler before the upgrade.
pub struct Session {
    /// The room.
    pub key: RoomKey,
    /// Who is connected.
    pub identity: Identity,
    /// The room's handle to this connection.
    pub conn: ConnHandle,
    /// This task's end of the queue.
    pub queue: ConnQueue,
    /// Live rooms.
    pub registry: Arc<Registry>,
    /// What one frame may hold.
    pub limits: FrameLimits,
    /// See `--ping-interval`.
    pub ping_interval: Duration,
    /// Verifies in-band token refreshes.
    pub verifier: Arc<crate::auth::Verifier>,
    /// Writes inbound frames to `--record-dir`, when recording is on.
    pub recorder: Option<Box<crate::session::recording::Recorder>>,
    /// The tenant's messages-per-second limit for this connection.
    pub rate_limit: Option<u32>,
    /// Released when the connection ends (connection count).
    pub guard: Box<dyn Send + Sync>,
    /// Whether the connection's trace is sampled (`--otlp-endpoint`): its joins and updates
    /// get spans.
    pub traced: bool,
}

/// Most queued messages written before one flush: batches writes under load.
const WRITE_BATCH: usize = 64;

/// How long a write in progress may finish once the connection is to be closed.
const CLOSE_WRITE_GRACE: Duration = Duration::from_secs(2);

/// Runs a y-websocket connection (one room per socket) until either side closes it.
///
/// Values live in this future once and are lent to [`serve`]: a value moved into an awaited
/// callee keeps its old slot in the caller's state too, and this state is held per connection.
/// For the same reason this is a function returning an `async move` block rather than an
/// `async fn`: an `async fn` keeps its arguments twice (as captured and as bound locals),
/// 648 bytes per connection here (`-Zprint-type-sizes`).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep its arguments twice in every connection's state"
)]
pub fn run(mut socket: WebSocket, mut s: Session) -> impl Future<Output = ()> + Send {
    async move {
        metrics::counter!(crate::metrics::names::CONNECTIONS_TOTAL).increment(1);
        s.conn.send_ext(&ServerMessage::Welcome {
            room: s.key.room.to_string(),
            tenant: s.key.tenant.to_string(),
            role: s.identity.role.as_str().to_string(),
            user: s.identity.user.clone(),
        });
        // The join and the refusal run once; boxed, they take no slot in the state every
        // idle connection keeps (see `serve`).
        let joining = if s.traced {
            tracing::debug_span!("join", room = %s.key)
        } else {
            tracing::Span::none()
        };
        let room = match Box::pin(tracing::Instrument::instrument(
            s.registry.join(&s.key, s.conn.clone()),
            joining,
        ))
        .await
        {
            Ok(room) => room,
            Err(e) => {
                Box::pin(close(
                    &mut socket,
                    &mut s.queue,
                    join_close_code(&e),
                    &e.to_string(),
                ))
                .await;
                return;
            }
        };
        emit_presence(s.registry.events(), &s.key, &s.conn, true);
        let kid = s.identity.kid.take();
        let mut dialect = YWebsocket {
            key: &s.key,
            role: s.identity.role,
            conn: &s.conn,
            room,
            limits: s.limits,
            awareness: None,
            expires: s.identity.expires.unwrap_or(u64::MAX),
            kid,
            grants: s.identity.rooms(),
            regranted: None,
            registry: &s.registry,
            verifier: &s.verifier,
            recorder: s.recorder.take(),
            rate: s.rate_limit.map(RateLimit::new),
            traced: s.traced,
        };
        serve(&mut socket, &mut s.queue, s.ping_interval, &mut dialect).await;
        emit_presence(s.registry.events(), &s.key, &s.conn, false);
        // The block captures the fields it uses, not the whole session: naming the guard here
        // keeps the connection counted (node and tenant limits) until the session ends.
        drop(s.guard);
    }
}

/// `user.joined` / `user.left` for a member, when the tenant's webhook wants them.
pub fn emit_presence(
    events: &crate::webhooks::events::Events,
    key: &RoomKey,
    conn: &ConnHandle,
    joined: bool,
) {
    let event = if joined {
        crate::webhooks::events::USER_JOINED
    } else {
        crate::webhooks::events::USER_LEFT
    };
    // Checked from the cache first: most tenants have no webhook, and a spawned task per
    // connection would cost them for nothing.
    if events.may_want(&key.tenant, event) {
        events.emit(
            &key.tenant,
            event,
            serde_json::json!({
                "room": &*key.room,
                "user": conn.user.as_deref(),
                "connection": conn.id,
            }),
        );
    }
}

/// The close of a connection over its tenant's message rate.
pub fn rate_exceeded() -> Closing {
    metrics::counter!(crate::metrics::names::LIMIT_REJECTIONS_TOTAL, "limit" => "messages_per_second")
        .increment(1);
    (
        CloseCode::QuotaExceeded,
        "message rate limit exceeded".into(),
    )
}

/// The close code for a connection whose room could not be joined.
pub fn join_close_code(e: &JoinError) -> CloseCode {
    match e {
        JoinError::LoadFailed => CloseCode::RoomUnavailable,
        JoinError::TooManyRooms | JoinError::Unavailable => CloseCode::Overloaded,
        JoinError::TenantShare => CloseCode::QuotaExceeded,
        JoinError::Deleted => CloseCode::RoomDeleted,
    }
}

/// Why a connection ends: the close code and reason to send.
pub type Closing = (CloseCode, String);

/// What differs between the wire dialects; [`serve`] does the rest (writing the queue,
/// keepalive, limits, closing).
pub trait Dialect: Send {
    /// Handles one binary frame; an error closes the connection with that code and reason.
    fn binary(&mut self, frame: Bytes) -> impl Future<Output = Result<(), Closing>> + Send;
    /// Handles one text frame.
    fn text(&mut self, text: &str) -> impl Future<Output = Result<(), Closing>> + Send;
    /// Called at every keepalive tick (after the WebSocket ping); an error closes.
    fn tick(&mut self) -> impl Future<Output = Result<(), Closing>> + Send {
        async { Ok(()) }
    }
    /// The connection ended: leave every room.
    fn leave(&mut self) -> impl Future<Output = ()> + Send;
}

/// Reads and writes until either side closes, then leaves the rooms and says goodbye. A close
/// requested by a room or by the node's shutdown ([`crate::outbound::Connections::close_all`])
/// arrives through the queue.
pub async fn serve<D: Dialect>(
    socket: &mut WebSocket,
    queue: &mut ConnQueue,
    ping_interval: Duration,
    dialect: &mut D,
) {
    // Keepalive: a peer that sends nothing (not even a pong) for two intervals is gone.
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = tokio::time::Instant::now();

    // Not biased: a member with a constant stream of outbound traffic must still be read
    // (its edits, its pongs), and a chatty peer must still receive.
    let (code, reason): Closing = loop {
        tokio::select! {
            next = queue.next() => {
                let out = match next {
                    Next::Message(out) => out,
                    Next::Close => {
                        break queue
                            .close_reason()
                            .cloned()
                            .unwrap_or((CloseCode::Internal, String::new()));
                    }
                };
                // Boxed: the write is the largest future here, and every idle connection would
                // carry its slot; one allocation per write (which batches up to WRITE_BATCH
                // messages and costs a syscall) is small beside that.
                if let Some(closing) = Box::pin(write_out(socket, queue, out, ping_interval)).await {
                    break closing;
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() >= ping_interval * 2 {
                    tracing::info!("peer unresponsive; dropping");
                    break (CloseCode::Normal, String::new());
                }
                // Boxed: a timed send is the largest future here, and every idle connection's
                // state would reserve its slot for a ping every few seconds.
                let sent = Box::pin(tokio::time::timeout(
                    ping_interval,
                    socket.send(WsMessage::Ping(Bytes::new())),
                ))
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    break (CloseCode::Normal, String::new());
                }
                if let Err(closing) = Box::pin(dialect.tick()).await {
                    break closing;
                }
            }
            incoming = socket.next() => match incoming.inspect(|r| {
                if r.is_ok() {
                    last_seen = tokio::time::Instant::now();
                }
            }) {
                Some(Ok(WsMessage::Binary(frame))) => {
                    metrics::counter!(crate::metrics::names::MESSAGES_IN_TOTAL).increment(1);
                    // Boxed, like the write above: a frame's handling (decode, forward to the
                    // room) is a large future that idle connections need no slot for.
                    if let Err(closing) = Box::pin(dialect.binary(frame)).await {
                        break closing;
                    }
                    // Time spent handling the frame (a room loading) is ours, not the peer's
                    // silence.
                    last_seen = tokio::time::Instant::now();
                }
                Some(Ok(WsMessage::Text(text))) => {
                    if let Err(closing) = Box::pin(dialect.text(text.as_str())).await {
                        break closing;
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None => break (CloseCode::Normal, String::new()),
                Some(Ok(_)) => {} // ping/pong: answered by the WebSocket layer
                Some(Err(e)) => {
                    if is_too_big(e) {
                        metrics::counter!(crate::metrics::names::LIMIT_REJECTIONS_TOTAL, "limit" => "frame_bytes").increment(1);
                        break (CloseCode::TooBig, "frame exceeds the size limit".into());
                    }
                    break (CloseCode::Normal, String::new());
                }
            }
        }
    };
    Box::pin(dialect.leave()).await;
    // Say goodbye unless the peer already went away.
    if !(code == CloseCode::Normal && reason.is_empty()) {
        Box::pin(close(socket, queue, code, &reason)).await;
    }
}

/// The y-websocket dialect: one room per socket, the room in the URL.
struct YWebsocket<'a> {
    key: &'a RoomKey,
    role: Role,
    conn: &'a ConnHandle,
    room: RoomHandle,
    limits: FrameLimits,
    // Boxed, like `rate`: built at the first awareness message (most connections of a
    // large room send little or none).
    awareness: Option<Box<ByteBudget>>,

    // When the token expires: the session closes with 4401 at the first tick after it (a
    // stock client then stops reconnecting; its app fetches a fresh token and reconnects).
    expires: u64,
    // The tenant key that signed the token, checked at each tick (revocation ends the
    // session, on every node: revocations invalidate every node's tenant cache).
    kid: Option<Arc<str>>,
    // Tenants (revocations) and the assistant are reached through it.
    registry: &'a Arc<Registry>,
    // Verifies in-band token refreshes (`ClientMessage::Auth`).
    verifier: &'a Arc<crate::auth::Verifier>,
    // Boxed, like `rate`: recording is rare, and this struct lives in every connection.
    recorder: Option<Box<crate::session::recording::Recorder>>,
    // Boxed: most connections have no limit, and this struct lives in every connection's
    // future.
    rate: Option<RateLimit>,
    // The rooms the session's token grants (its searches see no others), borrowed from the
    // session; a refreshed token that grants others replaces them (boxed: rare).
    grants: &'a [String],
    regranted: Option<Box<[String]>>,
    // The connection's trace is sampled: its updates get spans.
    traced: bool,
}

impl YWebsocket<'_> {
    /// A fresh token for this session (see [`refresh_token`]).
    async fn refresh(&mut self, token: &str) -> Result<ServerMessage, Closing> {
        let (expires, kid, rooms) =
            refresh_token(self.verifier, self.key, self.role, token).await?;
        self.expires = expires;
        self.kid = kid;
        if rooms.as_slice() != self.grants {
            self.regranted = Some(rooms.into_boxed_slice());
        }
        Ok(ServerMessage::Authenticated { expires })
    }
}

/// Checks a fresh token for a session: it must name the same tenant, still grant the room,
/// and give the same role (a new role needs a new session). The session then runs until the
/// new token's expiry (returned), under its key; its searches see the new token's rooms
/// (returned).
pub async fn refresh_token(
    verifier: &crate::auth::Verifier,
    key: &RoomKey,
    role: Role,
    token: &str,
) -> Result<(u64, Option<Arc<str>>, Vec<String>), Closing> {
    let identity = verifier
        .verify(Some(token))
        .await
        .map_err(|e| (CloseCode::Unauthenticated, format!("refresh refused: {e}")))?;
    if identity.tenant != *key.tenant || !identity.may_open(&key.room) || identity.role != role {
        return Err((
            CloseCode::Forbidden,
            "the new token does not grant this session".into(),
        ));
    }
    let rooms = identity.rooms().to_vec();
    Ok((identity.expires.unwrap_or(u64::MAX), identity.kid, rooms))
}

/// The keepalive tick's check of a session's token: expired, or its tenant key revoked (on
/// every node: revocations invalidate every node's tenant cache), closes with 4401.
pub async fn check_token(
    registry: &Registry,
    key: &RoomKey,
    expires: u64,
    kid: Option<&str>,
) -> Result<(), Closing> {
    if expires <= crate::auth::now_secs() {
        metrics::counter!(crate::metrics::names::SESSIONS_EXPIRED_TOTAL).increment(1);
        return Err((CloseCode::Unauthenticated, "token expired".into()));
    }
    if let Some(kid) = kid
        && let Ok(tenant) = registry.tenants().get(&key.tenant).await
        && !tenant.keys.contains_key(kid)
    {
        metrics::counter!(crate::metrics::names::SESSIONS_EXPIRED_TOTAL).increment(1);
        return Err((CloseCode::Unauthenticated, "token key revoked".into()));
    }
    Ok(())
}

impl Dialect for YWebsocket<'_> {
    async fn binary(&mut self, frame: Bytes) -> Result<(), Closing> {
        if self.rate.as_mut().is_some_and(|r| !r.take()) {
            return Err(rate_exceeded());
        }
        if let Some(r) = self.recorder.as_mut() {
            r.binary(&frame);
        }
        forward(
            self.key,
            self.conn,
            &self.room,
            frame,
            self.role,
            self.limits,
            self.awareness.get_or_insert_with(|| {
                Box::new(ByteBudget::new(self.limits.awareness_bytes_per_second))
            }),
            self.traced,
        )
        .await
    }

    async fn tick(&mut self) -> Result<(), Closing> {
        check_token(self.registry, self.key, self.expires, self.kid.as_deref()).await
    }

    async fn text(&mut self, text: &str) -> Result<(), Closing> {
        if self.rate.as_mut().is_some_and(|r| !r.take()) {
            return Err(rate_exceeded());
        }
        if let Some(r) = self.recorder.as_mut() {
            r.text(text);
        }
        if !self.conn.ext {
            return Err((
                CloseCode::UnsupportedData,
                "text frames need the chorus.v1 extension".into(),
            ));
        }
        let reply = match ext::decode_client(text) {
            Ok(msg) if ai::is_ai(&msg) => {
                let grants = self.regranted.as_deref().unwrap_or(self.grants);
                let conn = self.conn.clone();
                let reply = move |m: &ServerMessage| {
                    conn.send_ext(m);
                };
                Box::pin(ai::handle(
                    self.registry,
                    self.key,
                    self.conn,
                    self.role,
                    grants,
                    msg,
                    reply,
                ))
                .await;
                return Ok(());
            }
            Ok(ClientMessage::Ping { id }) => ServerMessage::Pong { id },
            Ok(ClientMessage::Auth { token }) => Box::pin(self.refresh(&token)).await?,
            Ok(ClientMessage::Search(request)) => {
                let grants = self.regranted.as_deref().unwrap_or(self.grants);
                Box::pin(search_frame(self.registry, self.key, grants, request)).await
            }
            // The assistant's messages were handled above.
            Ok(_) => return Ok(()),
            Err(e) => ServerMessage::Error {
                code: ErrorCode::BadRequest,
                message: e.to_string(),
            },
        };
        self.conn.send_ext(&reply);
        Ok(())
    }

    async fn leave(&mut self) {
        self.room.leave(self.conn.id).await;
    }
}

/// Validates a y-websocket frame from `conn` and passes what it carries to its room.
#[expect(
    clippy::too_many_arguments,
    reason = "the frame and its sender's state, borrowed from two dialects' own structs"
)]
pub async fn forward(
    key: &RoomKey,
    conn: &ConnHandle,
    room: &RoomHandle,
    frame: Bytes,
    role: Role,
    limits: FrameLimits,
    awareness: &mut ByteBudget,
    traced: bool,
) -> Result<(), Closing> {
    match decode_frame(frame, role, limits) {
        Ok(mut decoded) => {
            // Awareness past the sender's byte budget is dropped: one member flooding
            // presence would otherwise be fanned out to everyone, and slow members cut off.
            decoded.msgs.retain(|m| match m {
                Inbound::Awareness(entries) => {
                    let bytes = entries.iter().map(|e| e.state.len() + 16).sum();
                    let ok = awareness.spend(bytes);
                    if !ok {
                        metrics::counter!(crate::metrics::names::AWARENESS_DROPPED_TOTAL)
                            .increment(1);
                    }
                    ok
                }
                _ => true,
            });
            if decoded.denied {
                deny(conn);
            }
            // A traced connection's frame that carries an update (see `telemetry`).
            let span = if traced
                && decoded
                    .msgs
                    .iter()
                    .any(|m| matches!(m, Inbound::Update { .. }))
            {
                tracing::debug_span!("update", conn = conn.id, room = %key)
            } else {
                tracing::Span::none()
            };
            if !decoded.msgs.is_empty() && !room.inbound_traced(conn.id, decoded.msgs, span).await {
                return Err((CloseCode::Restarting, "room closed".into()));
            }
            Ok(())
        }
        Err((code, reason)) => {
            metrics::counter!(crate::metrics::names::BAD_FRAMES_TOTAL).increment(1);
            tracing::info!(room = %key, conn = conn.id, code = code.code(), reason, "refusing frame");
            conn.send_ext(&ServerMessage::Error {
                code: match code {
                    CloseCode::TooBig | CloseCode::TooDeep => ErrorCode::TooLarge,
                    _ => ErrorCode::BadRequest,
                },
                message: reason.to_string(),
            });
            Err((code, reason.to_string()))
        }
    }
}

fn is_too_big(e: tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}

/// Writes `out` and what else is queued; `Some` ends the connection (a failed or stalled
/// write). A close requested meanwhile gives the write a moment to finish first: it holds
/// messages already taken from the queue (an error report queued just before a close, say).
async fn write_out(
    socket: &mut WebSocket,
    queue: &ConnQueue,
    out: Outbound,
    ping_interval: Duration,
) -> Option<Closing> {
    let gone = || Some((CloseCode::Normal, String::new()));
    let done = {
        let mut writing = std::pin::pin!(write(socket, queue, out));
        // Most writes finish at once (the socket has room). Only one that waits gets the
        // watchdogs below, so the common case registers no timer.
        match std::future::poll_fn(|cx| Poll::Ready(writing.as_mut().poll(cx))).await {
            Poll::Ready(res) => Some(res),
            // Boxed once more: the timers are for the rare write that waits.
            Poll::Pending => match Box::pin(watch_write(writing, queue, ping_interval)).await {
                Ok(res) => res,
                Err(()) => return gone(),
            },
        }
    };
    if matches!(done, Some(Err(_))) || socket.torn() {
        // A failed write, or one cut off mid-frame (see `WebSocket::torn`): nothing more
        // can be sent.
        return gone();
    }
    None
}

/// Finishes a write that is waiting for the peer. `Ok(None)`: a close was requested and the
/// write had its grace period; `Err`: the peer accepted nothing for two ping intervals.
async fn watch_write<W: Future<Output = Result<(), tungstenite::Error>>>(
    mut writing: Pin<&mut W>,
    queue: &ConnQueue,
    ping_interval: Duration,
) -> Result<Option<Result<(), tungstenite::Error>>, ()> {
    tokio::select! {
        res = &mut writing => Ok(Some(res)),
        () = queue.closed() => {
            let _ = tokio::time::timeout(CLOSE_WRITE_GRACE, writing).await;
            Ok(None)
        }
        () = tokio::time::sleep(ping_interval * 2) => Err(()),
    }
}

async fn write(
    socket: &mut WebSocket,
    queue: &ConnQueue,
    first: Outbound,
) -> Result<(), tungstenite::Error> {
    // Feed everything already queued, then flush once: one write for many small messages.
    let mut next = Some(first);
    let mut n = 0;
    while let Some(out) = next.take() {
        queue.written(&out);
        feed(socket, out).await?;
        n += 1;
        if n < WRITE_BATCH {
            next = queue.try_recv();
        }
    }
    socket.flush().await
}

/// Feeds one queued message: one frame, or several for a batch of Hocuspocus statuses.
async fn feed(socket: &mut WebSocket, out: Outbound) -> Result<(), tungstenite::Error> {
    match out {
        Outbound::Binary(b) => feed_binary(socket, &[], b).await,
        Outbound::Text(t) => socket.feed(WsMessage::Text(t.into())).await,
        Outbound::Prefixed { prefix, frame } => feed_binary(socket, &prefix, frame).await,
        Outbound::Statuses {
            prefix,
            applied,
            count,
        } => {
            let status = chorus_protocol::hocuspocus::sync_status(&prefix, applied);
            for _ in 0..count {
                socket.feed(WsMessage::Binary(status.clone())).await?;
            }
            Ok(())
        }
    }
}

/// Writes what is still queued (briefly), then the close frame, then waits briefly for the
/// peer's close reply so the close is clean.
pub async fn close(socket: &mut WebSocket, queue: &mut ConnQueue, code: CloseCode, reason: &str) {
    if socket.torn() {
        // A large message was cut off mid-frame: anything written now would be read as its
        // rest. Dropping the connection is the only clean end left.
        return;
    }
    let bounded = async {
        if code != CloseCode::Overloaded {
            while let Some(out) = queue.try_recv() {
                queue.written(&out);
                if feed(socket, out).await.is_err() {
                    return;
                }
            }
        }
        let frame = CloseFrame {
            code: code.code().into(),
            reason: chorus_protocol::close::truncate_reason(reason).into(),
        };
        if socket.send(WsMessage::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(m)) = socket.next().await {
            if matches!(m, WsMessage::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), bounded).await;
}

fn deny(conn: &ConnHandle) {
    conn.update_refused("read-only: updates are not accepted");
}

/// Answers a `search` frame: the session's tenant, the rooms its token grants. The frame is
/// answered before the next one is read, so a connection runs one search at a time.
pub async fn search_frame(
    registry: &Registry,
    key: &RoomKey,
    grants: &[String],
    request: ext::SearchRequest,
) -> ServerMessage {
    let id = request.id.clone();
    let refuse = |code: &str, message: String| ServerMessage::SearchError {
        id: id.clone(),
        code: code.to_owned(),
        message,
    };
    let Some(search) = registry.search() else {
        return refuse("unavailable", "search is off on this hub".into());
    };
    let mode = match request.mode.as_deref() {
        None => crate::search::Mode::Hybrid,
        Some(m) => match crate::search::Mode::parse(m) {
            Some(m) => m,
            None => {
                return refuse(
                    "bad_request",
                    "mode must be text, semantic or hybrid".into(),
                );
            }
        },
    };
    let query =
        match crate::search::Query::new(&request.q, mode, request.limit, request.room_prefix) {
            Ok(q) => q,
            Err(e) => return refuse("bad_request", e.to_string()),
        };
    match search.query(&key.tenant, &query, grants).await {
        Ok(answer) => ServerMessage::SearchResults {
            id,
            answer: serde_json::to_value(&answer).unwrap_or_default(),
        },
        Err(e) => {
            let code = match e {
                crate::search::SearchError::BadRequest(_) => "bad_request",
                crate::search::SearchError::Unavailable(_) => "unavailable",
                crate::search::SearchError::Budget | crate::search::SearchError::Busy => {
                    "rate_limited"
                }
                crate::search::SearchError::Internal => "internal",
            };
            refuse(code, e.to_string())
        }
    }
}
