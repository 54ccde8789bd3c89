//! An async y-websocket client (tokio-tungstenite + yrs) for tests, bots and the load tester.
//!
//! It behaves like the stock `WebsocketProvider`: on connect it sends SyncStep1, answers the
//! server's SyncStep1 with SyncStep2, reports `synced` when the server's SyncStep2 arrives,
//! applies remote updates, sends local edits as updates and tracks awareness. Extension JSON
//! frames (when opted in) are collected as [`ServerMessage`]s.
//!
//! One task owns the socket; the [`Client`] handle talks to it through an unbounded channel (the
//! client is a test and bot tool, so memory is bounded by what its owner sends).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, Options, Origin, ReadTxn, StateVector, Transact, Update};

use crate::awareness::{self, Entry};
use crate::ext::{self, ServerMessage};
use crate::hocuspocus;
use crate::sync::{Message, decode_frame};

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Token sent as `?token=` (what y-websocket's `params` does).
    pub token: Option<String>,
    /// Token sent as `Authorization: Bearer` instead.
    pub bearer: Option<String>,
    /// Opt in to extension JSON frames (`?ext=1`).
    pub ext: bool,
    /// Yjs client id; defaults to a random 32-bit id as browsers use.
    pub client_id: Option<u64>,
    /// Speak the Hocuspocus dialect for this document address (the URL is then the server's
    /// Hocuspocus endpoint, and the token travels in the auth message).
    pub hocuspocus: Option<String>,
    /// Measure only: do not apply remote updates to the local document (a load generator's
    /// joiners need not decode a large document to know it arrived; see `State::step2_bytes`).
    pub skip_apply: bool,
    /// Local address to connect from (e.g. 127.0.0.2 to spread load tests over more source
    /// ports); plain `ws://` only.
    pub bind: Option<std::net::IpAddr>,
}

/// The provider version the client announces in Hocuspocus auth messages.
pub const HOCUSPOCUS_VERSION: &str = "4.8.0";

/// Why connecting or talking failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket handshake or transport failed (includes HTTP refusals with their status).
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// A wait ran out of patience.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
}

/// What the client has seen so far.
#[derive(Debug, Default)]
pub struct State {
    /// The server's SyncStep2 arrived.
    pub synced: bool,
    /// Awareness states by client id: (clock, JSON). Removed clients are absent.
    pub awareness: HashMap<u64, (u64, String)>,
    /// Extension messages received, in order.
    pub events: Vec<ServerMessage>,
    /// Permission-denied reasons received.
    pub denied: Vec<String>,
    /// Close code and reason once the socket closed (code 1006 if it closed without a frame).
    pub closed: Option<(u16, String)>,
    /// Binary messages received.
    pub messages_received: u64,
    /// Awareness messages received.
    pub awareness_messages: u64,
    /// Update messages received (sync updates after the handshake).
    pub updates_received: u64,
    /// Bytes of the update in the last SyncStep2 received.
    pub step2_bytes: usize,
    /// Hocuspocus: the scope the server granted last (`read-write` or `readonly`).
    pub authenticated: Option<String>,
    /// Hocuspocus: documents granted so far (any address on this socket).
    pub granted: u64,
    /// Hocuspocus: positive sync statuses received (updates acknowledged).
    pub sync_ok: u64,
    /// Hocuspocus: negative sync statuses received (updates refused).
    pub sync_refused: u64,
    /// Hocuspocus: the server closed the document, with this reason.
    pub doc_closed: Option<String>,
}

/// Called with every awareness entry this client receives (load testers time them).
pub type AwarenessHook = Box<dyn Fn(&Entry) + Send + Sync>;

struct Shared {
    state: Mutex<State>,
    skip_apply: bool,
    // Bumped on every change so waiters re-check their condition.
    changed: watch::Sender<u64>,
    awareness_hook: Mutex<Option<AwarenessHook>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.send_modify(|v| *v += 1);
    }
}

const REMOTE: &str = "chorus-remote";

/// A connected client with its own Yjs document.
pub struct Client {
    doc: Doc,
    // Hocuspocus: the encoded document address put in front of every message.
    prefix: Option<Bytes>,
    out: mpsc::UnboundedSender<WsMessage>,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    awareness_clock: u64,
}

impl Client {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/ws/my-room`) with a fresh document.
    pub async fn connect(url: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        let client_id = opts
            .client_id
            .unwrap_or_else(|| u64::from(random_u32()).max(1));
        // Yjs ids are at most 53 bits (JavaScript numbers); yrs asserts it.
        let doc = Doc::with_options(Options::with_client_id(ClientID::new(
            client_id & ((1 << 53) - 1),
        )));
        // Boxed: the handshake's state is 4.5 KiB, which would otherwise sit in every caller's
        // future for as long as that lives (clippy::large_futures).
        Box::pin(Self::connect_with_doc(url, opts, doc)).await
    }

    /// Connects with an existing document (offline edits are uploaded in reply to SyncStep1).
    pub async fn connect_with_doc(
        url: &str,
        opts: ClientOptions,
        doc: Doc,
    ) -> Result<Client, ClientError> {
        let mut full = url.to_string();
        let mut params = Vec::new();
        let prefix = opts.hocuspocus.as_deref().map(hocuspocus::address_prefix);
        if let Some(t) = opts.token.as_ref().filter(|_| prefix.is_none()) {
            params.push(format!("token={t}"));
        }
        if opts.ext {
            params.push("ext=1".to_string());
        }
        if !params.is_empty() {
            full.push(if full.contains('?') { '&' } else { '?' });
            full.push_str(&params.join("&"));
        }
        let mut req = full.into_client_request()?;
        if let Some(b) = &opts.bearer {
            let v = HeaderValue::from_str(&format!("Bearer {b}"))
                .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
            req.headers_mut().insert("authorization", v);
        }
        // Small reads keep thousands of idle clients cheap. A measuring joiner (`skip_apply`)
        // exists to receive a whole document at once: a 5 MB state in 4 KiB reads is 1,250
        // reads, and a storm of such joiners made the load generator the limit.
        let read_buffer = if opts.skip_apply { 256 << 10 } else { 4096 };
        let config = WebSocketConfig::default()
            .read_buffer_size(read_buffer)
            .write_buffer_size(0);
        let (ws, _resp) = match opts.bind {
            None => tokio_tungstenite::connect_async_with_config(req, Some(config), true).await?,
            Some(local) => {
                let stream = connect_from(local, &req).await?;
                tokio_tungstenite::client_async_with_config(
                    req,
                    tokio_tungstenite::MaybeTlsStream::Plain(stream),
                    Some(config),
                )
                .await?
            }
        };

        let (out, rx) = mpsc::unbounded_channel();
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            skip_apply: opts.skip_apply,
            changed,
            awareness_hook: Mutex::new(None),
        });

        // Local edits go out as updates; remote ones carry the REMOTE origin and are skipped.
        let tx = out.clone();
        let pre = prefix.clone();
        let sub = doc.observe_update_v1(
            format!("chorus-client-{client_id}", client_id = doc.client_id()),
            move |txn, e| {
                if txn.origin() == Some(&Origin::from(REMOTE)) {
                    return;
                }
                let msg = Message::Update(Bytes::from(e.update.clone())).encode();
                let _ = tx.send(WsMessage::Binary(dialect(pre.as_ref(), msg)));
            },
        );
        debug_assert!(sub.is_ok());

        // Like the providers: (Hocuspocus: the token first, then) our SyncStep1.
        if let Some(p) = &prefix {
            let token = opts
                .token
                .as_deref()
                .or(opts.bearer.as_deref())
                .unwrap_or("");
            let _ = out.send(WsMessage::Binary(hocuspocus::auth(
                p,
                token,
                HOCUSPOCUS_VERSION,
            )));
        }
        let sv = doc.transact().state_vector().encode_v1();
        let _ = out.send(WsMessage::Binary(dialect(
            prefix.as_ref(),
            Message::SyncStep1(Bytes::from(sv)).encode(),
        )));

        let task = tokio::spawn(run(
            ws,
            rx,
            out.clone(),
            doc.clone(),
            shared.clone(),
            prefix.clone(),
        ));
        Ok(Client {
            doc,
            prefix,
            out,
            shared,
            task: Some(task),
            awareness_clock: 0,
        })
    }

    /// The client's document. Edit it with `transact_mut()`; edits are sent automatically.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// Reads the client's state.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// The close code and reason, if the socket closed.
    pub fn closed(&self) -> Option<(u16, String)> {
        self.shared.lock().closed.clone()
    }

    /// Calls `hook` with every awareness entry received from now on.
    pub fn set_awareness_hook(&self, hook: AwarenessHook) {
        *self
            .shared
            .awareness_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Sets this client's awareness state (JSON text) and sends it.
    pub fn set_awareness(&mut self, json: &str) -> Result<(), ClientError> {
        self.awareness_clock += 1;
        let entry = Entry {
            client_id: self.doc.client_id().get(),
            clock: self.awareness_clock,
            state: Bytes::copy_from_slice(json.as_bytes()),
        };
        self.send_message(&Message::Awareness(awareness::encode_update([&entry])))
    }

    /// Sends one y-sync message (with the document address in the Hocuspocus dialect).
    pub fn send_message(&self, msg: &Message) -> Result<(), ClientError> {
        self.send_raw(dialect(self.prefix.as_ref(), msg.encode()))
    }

    /// Sends an update made elsewhere (e.g. replayed from a recording) as this client's own,
    /// and applies it to the local document without sending it twice. Unlike applying it in
    /// a local transaction, it goes out whole even when its dependencies have not arrived yet.
    pub fn send_update(&self, update: &[u8]) -> Result<(), ClientError> {
        self.send_message(&Message::Update(Bytes::copy_from_slice(update)))?;
        apply_remote(&self.doc, update);
        Ok(())
    }

    /// Sends an arbitrary binary frame (for bad-input tests).
    pub fn send_raw(&self, frame: Bytes) -> Result<(), ClientError> {
        self.out
            .send(WsMessage::Binary(frame))
            .map_err(|_| ClientError::Closed)
    }

    /// Sends a text frame.
    pub fn send_text(&self, text: &str) -> Result<(), ClientError> {
        self.out
            .send(WsMessage::Text(text.into()))
            .map_err(|_| ClientError::Closed)
    }

    /// Hocuspocus: sends a stateless message with `payload` for this client's document (what
    /// `provider.sendStateless` does). Refused on a y-websocket connection.
    pub fn send_stateless(&self, payload: &str) -> Result<(), ClientError> {
        let Some(prefix) = &self.prefix else {
            return Err(ClientError::Closed);
        };
        self.send_raw(hocuspocus::stateless(prefix, payload))
    }

    /// Waits until `cond` holds for the state and document, or `patience` runs out.
    pub async fn wait_for(
        &self,
        what: &'static str,
        patience: Duration,
        mut cond: impl FnMut(&State, &Doc) -> bool,
    ) -> Result<(), ClientError> {
        let mut rx = self.shared.changed.subscribe();
        let check = async {
            loop {
                if cond(&self.shared.lock(), &self.doc) {
                    return;
                }
                if rx.changed().await.is_err() {
                    // The task ended; the state will not change again. Check once more.
                    if cond(&self.shared.lock(), &self.doc) {
                        return;
                    }
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(patience, check)
            .await
            .map_err(|_| ClientError::Timeout(patience, what))
    }

    /// Waits for the server's SyncStep2.
    pub async fn synced(&self, patience: Duration) -> Result<(), ClientError> {
        self.wait_for("synced", patience, |s, _| s.synced).await
    }

    /// Waits for the socket to close and returns the close code and reason.
    pub async fn wait_closed(&self, patience: Duration) -> Result<(u16, String), ClientError> {
        self.wait_for("close", patience, |s, _| s.closed.is_some())
            .await?;
        self.closed().ok_or(ClientError::Closed)
    }

    /// Sends a normal close frame and waits (briefly) for the socket task to end.
    pub async fn close(mut self) {
        let _ = self.out.send(WsMessage::Close(Some(CloseFrame {
            code: WsCloseCode::Normal,
            reason: "bye".into(),
        })));
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Drops the TCP connection without a close frame (an abrupt network death).
    pub fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run(
    ws: Ws,
    mut rx: mpsc::UnboundedReceiver<WsMessage>,
    out: mpsc::UnboundedSender<WsMessage>,
    doc: Doc,
    shared: Arc<Shared>,
    prefix: Option<Bytes>,
) {
    let (mut sink, mut stream) = ws.split();
    let close = loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break None };
                if sink.send(msg).await.is_err() {
                    break None;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Binary(frame))) => match &prefix {
                    None => handle_binary(frame, &doc, &out, &shared, None),
                    Some(p) => handle_hocuspocus(frame, &doc, &out, &shared, p),
                },
                Some(Ok(WsMessage::Text(text))) => {
                    if let Ok(msg) = ext::decode_server(&text) {
                        shared.update(|s| s.events.push(msg));
                    }
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    break Some(frame.map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new())));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        }
    };
    shared.update(|s| s.closed = Some(close.unwrap_or((1006, String::new()))));
}

/// Opens the TCP connection for `req` from the local address `local`.
async fn connect_from(
    local: std::net::IpAddr,
    req: &tungstenite::handshake::client::Request,
) -> Result<tokio::net::TcpStream, ClientError> {
    let uri = req.uri();
    let io = |e: std::io::Error| ClientError::Ws(tungstenite::Error::Io(e));
    if uri.scheme_str() != Some("ws") {
        return Err(ClientError::Ws(tungstenite::Error::Url(
            tungstenite::error::UrlError::UnsupportedUrlScheme,
        )));
    }
    let host = uri.host().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(80);
    let remote = tokio::net::lookup_host((host, port))
        .await
        .map_err(io)?
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                "no remote address of the bind address's family",
            ))
        })?;
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(io)?;
    socket.bind((local, 0).into()).map_err(io)?;
    let stream = socket.connect(remote).await.map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    Ok(stream)
}

/// Prefixes a y-sync frame with the Hocuspocus address, if the client speaks that dialect.
fn dialect(prefix: Option<&Bytes>, frame: Bytes) -> Bytes {
    match prefix {
        Some(p) => hocuspocus::wrap(p, &frame),
        None => frame,
    }
}

fn handle_hocuspocus(
    frame: Bytes,
    doc: &Doc,
    out: &mpsc::UnboundedSender<WsMessage>,
    shared: &Shared,
    prefix: &Bytes,
) {
    if frame.as_ref() == hocuspocus::PING_FRAME {
        let _ = out.send(WsMessage::Binary(Bytes::from_static(
            hocuspocus::PONG_FRAME,
        )));
        return;
    }
    // Server messages: address, type, then a y-sync frame (0, 1, 3) or Hocuspocus' own.
    let mut d = crate::lib0::Decoder::new(frame);
    if d.read_var_string().is_err() {
        return;
    }
    let rest = d.rest();
    match d.read_var_uint() {
        Ok(
            hocuspocus::kind::SYNC
            | hocuspocus::kind::AWARENESS
            | hocuspocus::kind::QUERY_AWARENESS,
        ) => {
            handle_binary(rest, doc, out, shared, Some(prefix));
        }
        Ok(hocuspocus::kind::AUTH) => {
            let sub = d.read_var_uint();
            let text = d
                .read_var_string()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            shared.update(|s| match sub {
                Ok(1) => s.denied.push(text),
                Ok(2) => {
                    s.granted += 1;
                    s.authenticated = Some(text);
                }
                _ => {}
            });
        }
        Ok(hocuspocus::kind::SYNC_STATUS) => {
            let ok = d.read_var_uint() == Ok(1);
            shared.update(|s| {
                if ok {
                    s.sync_ok += 1;
                } else {
                    s.sync_refused += 1;
                }
            });
        }
        Ok(hocuspocus::kind::CLOSE) => {
            let reason = d
                .read_var_string()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            shared.update(|s| s.doc_closed = Some(reason));
        }
        // Stateless messages carrying extension JSON (the assistant's answers) join the
        // extension events; others are the application's business.
        Ok(hocuspocus::kind::STATELESS) => {
            let Ok(payload) = d.read_var_string() else {
                return;
            };
            if let Ok(msg) = ext::decode_server(&String::from_utf8_lossy(&payload)) {
                shared.update(|s| s.events.push(msg));
            }
        }
        _ => {}
    }
}

fn handle_binary(
    frame: Bytes,
    doc: &Doc,
    out: &mpsc::UnboundedSender<WsMessage>,
    shared: &Shared,
    prefix: Option<&Bytes>,
) {
    let mut synced = false;
    let mut step2_bytes = None;
    let mut denied = Vec::new();
    let mut aware = Vec::new();
    let (mut n_aware, mut n_updates) = (0, 0);
    for msg in decode_frame(frame) {
        let Ok(msg) = msg else { break };
        match msg {
            Message::SyncStep1(sv) => {
                if let Ok(sv) = StateVector::decode_v1(&sv) {
                    let update = doc.transact().encode_state_as_update_v1(&sv);
                    let _ = out.send(WsMessage::Binary(dialect(
                        prefix,
                        Message::SyncStep2(Bytes::from(update)).encode(),
                    )));
                }
            }
            Message::SyncStep2(u) => {
                step2_bytes = Some(u.len());
                if !shared.skip_apply {
                    apply_remote(doc, &u);
                }
                synced = true;
            }
            Message::Update(u) => {
                n_updates += 1;
                if !shared.skip_apply {
                    apply_remote(doc, &u);
                }
            }
            Message::Awareness(p) => {
                n_aware += 1;
                if let Ok(entries) = awareness::decode_update(p) {
                    aware.extend(entries);
                }
            }
            Message::PermissionDenied(reason) => denied.push(reason),
            Message::QueryAwareness => {}
        }
    }
    if !aware.is_empty()
        && let Some(hook) = shared
            .awareness_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
    {
        for e in &aware {
            hook(e);
        }
    }
    shared.update(|s| {
        s.messages_received += 1;
        s.awareness_messages += n_aware;
        s.updates_received += n_updates;
        s.synced |= synced;
        if let Some(n) = step2_bytes {
            s.step2_bytes = n;
        }
        s.denied.extend(denied);
        for e in aware {
            let newer = s
                .awareness
                .get(&e.client_id)
                .is_none_or(|(c, _)| *c < e.clock);
            if e.is_removal() {
                s.awareness.remove(&e.client_id);
            } else if newer {
                s.awareness
                    .insert(e.client_id, (e.clock, e.state_str().to_string()));
            }
        }
    });
}

fn apply_remote(doc: &Doc, update: &[u8]) {
    if let Ok(update) = Update::decode_v1(update) {
        let _ = doc.transact_mut_with(REMOTE).apply_update(update);
    }
}

/// A random 32-bit number without pulling in a RNG crate: hash of time and a counter.
fn random_u32() -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}
