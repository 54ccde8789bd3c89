//! The room's view of a connection: a bounded outbound queue (by count and by bytes) and a
//! close signal. The queue is a `VecDeque` under a mutex with a `Notify`, not a tokio mpsc
//! channel: an mpsc channel allocates its first 32-slot block up front (over 1 KiB per
//! connection), while an idle deque holds nothing and a drained one gives back what a burst
//! made it grow to. The connection task ([`crate::session`]) owns the socket and drains the
//! queue; rooms only ever `try_send`, so a slow reader can never stall a room. A connection
//! whose queue overflows is closed with 1013: skipping one CRDT update would leave it silently
//! diverged, while a reconnect repairs it through the sync handshake.

mod connections;

pub use connections::{Closer, Connections, Slot};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use chorus_protocol::CloseCode;
use chorus_protocol::ext::{self, ServerMessage};
use tokio::sync::Notify;

use crate::auth::Role;

/// Identifies a connection within the node.
pub type ConnId = u64;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A new, node-unique connection id.
pub fn next_conn_id() -> ConnId {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// A message waiting to be written to a socket.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A y-sync frame, possibly shared with every other member of the room.
    Binary(Bytes),
    /// An extension JSON frame.
    Text(String),
    /// A shared y-sync frame for one document of a Hocuspocus connection: written as the
    /// address followed by the frame. Joined only when written, so queues keep sharing the
    /// room's one encoding.
    Prefixed {
        /// The encoded document address.
        prefix: Bytes,
        /// The y-sync frame.
        frame: Bytes,
    },
    /// `count` Hocuspocus sync statuses for one document, written as that many frames: one
    /// queue entry, so acknowledging a large backlog cannot overflow the queue.
    Statuses {
        /// The encoded document address.
        prefix: Bytes,
        /// Applied (true) or refused.
        applied: bool,
        /// How many.
        count: u32,
    },
}

impl Outbound {
    fn len(&self) -> usize {
        match self {
            Outbound::Binary(b) => b.len(),
            Outbound::Text(t) => t.len(),
            Outbound::Prefixed { prefix, frame } => prefix.len() + frame.len(),
            Outbound::Statuses { prefix, count, .. } => (prefix.len() + 2) * *count as usize,
        }
    }
}

/// How a member is shown to others, from its token (`name`, `color` claims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownAs {
    /// Display name.
    pub name: Option<String>,
    /// Colour.
    pub color: Option<String>,
}

impl ShownAs {
    /// `state` (awareness JSON) with `user.name` and `user.color` set from the token, so a
    /// member cannot pass for someone else. States that are not JSON objects are kept.
    pub fn apply(&self, state: &Bytes) -> Bytes {
        let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice(state) else {
            return state.clone();
        };
        let user = obj
            .entry("user")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !user.is_object() {
            *user = serde_json::Value::Object(Default::default());
        }
        if let Some(u) = user.as_object_mut() {
            if let Some(n) = &self.name {
                u.insert("name".into(), n.clone().into());
            }
            if let Some(c) = &self.color {
                u.insert("color".into(), c.clone().into());
            }
        }
        serde_json::to_vec(&obj).map_or_else(|_| state.clone(), Bytes::from)
    }
}

/// A cheap, cloneable handle rooms use to reach a connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Node-unique id.
    pub id: ConnId,
    /// Whether the connection opted in to extension JSON frames.
    pub ext: bool,
    /// Its access level.
    pub role: Role,
    /// The user (`sub` claim), for presence lists and webhook events.
    pub user: Option<Arc<str>>,
    /// The token's `name` and `color` claims: written into the member's awareness states so
    /// others see who it really is. Boxed: most tokens carry neither.
    pub shown_as: Option<Arc<ShownAs>>,
    // Hocuspocus connections: the document's encoded address, put in front of every y-sync
    // frame (one socket carries many documents, each a separate room member).
    // Boxed: handles sit in every room's member map and every connection's state, and
    // y-websocket handles (most) have none.
    prefix: Option<Box<Bytes>>,
    queue: Arc<Queue>,
}

/// An answer to something the peer asked for. At most one of each kind waits in a queue: a
/// newer one replaces the waiting one, so a peer that asks a thousand times and never reads
/// holds one answer, not a thousand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A SyncStep2 answering the peer's SyncStep1.
    State,
    /// Our SyncStep1 sent with it (Hocuspocus).
    Step1,
    /// Every awareness state, answering QueryAwareness.
    Awareness,
}

impl Reply {
    fn label(self) -> &'static str {
        match self {
            Reply::State => "state",
            Reply::Step1 => "step1",
            Reply::Awareness => "awareness",
        }
    }
}

/// Whose answer a queued message is: its kind and the member (a Hocuspocus socket's
/// documents share one queue, each a member with its own id: their answers are separate).
type Tag = (Reply, ConnId);

/// The queued messages, and which answers wait among them.
#[derive(Debug, Default)]
struct Items {
    q: VecDeque<(Outbound, Option<Tag>)>,
    // Answers waiting in `q` (a few at most: one per kind and document).
    waiting: Vec<Tag>,
}

/// The outbound messages of one socket.
#[derive(Debug)]
struct Queue {
    items: Mutex<Items>,
    ready: Notify,
    // Bytes sitting in the queue (the count bounds entries, this bounds memory).
    queued: AtomicUsize,
    max_messages: usize,
    max_bytes: usize,
    // The connection task is gone: nothing will ever be written.
    receiver_gone: AtomicBool,
    // A close was requested (set before `ready` is notified), and why: the first request
    // wins. Closing wakes the connection through `ready` like a message does: one waiter per
    // connection, no cancellation token (a mutex and ~170 bytes per connection, and one more
    // future in every wait of the connection task).
    closed: AtomicBool,
    close_reason: OnceLock<(CloseCode, String)>,
}

/// How a message counts against the byte budget.
#[derive(Clone, Copy)]
enum Budget {
    Within,
    Outside,
    Answer(Reply),
}

/// Why a message was not queued.
enum Refused {
    Full,
    Gone,
}

/// Capacity a drained queue keeps: none, so an idle connection holds no queue memory (one
/// small allocation per burst of messages costs nothing measurable next to the write).
const KEEP_CAPACITY: usize = 0;

impl Queue {
    fn items(&self) -> std::sync::MutexGuard<'_, Items> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Messages and bytes waiting now.
    fn depth(&self) -> (usize, usize) {
        let messages = self.items().q.len();
        (messages, self.queued.load(Ordering::Acquire))
    }

    /// Appends `msg` unless the queue holds `max_messages` already. A reply replaces a waiting
    /// reply of its kind instead (returned, so its bytes leave the budget).
    fn push(&self, msg: Outbound, reply: Option<Tag>) -> Result<Option<Outbound>, Refused> {
        let replaced = {
            let mut items = self.items();
            // Checked under the lock: Drop clears the queue under it too, so nothing pushed
            // after the receiver left lingers.
            if self.receiver_gone.load(Ordering::Acquire) {
                return Err(Refused::Gone);
            }
            if let Some(tag) = reply
                && items.waiting.contains(&tag)
                && let Some(slot) = items.q.iter_mut().find(|(_, r)| *r == Some(tag))
            {
                Some(std::mem::replace(&mut slot.0, msg))
            } else {
                if items.q.len() >= self.max_messages {
                    return Err(Refused::Full);
                }
                if let Some(tag) = reply {
                    items.waiting.push(tag);
                }
                items.q.push_back((msg, reply));
                None
            }
        };
        if replaced.is_none() {
            self.ready.notify_one();
        }
        Ok(replaced)
    }

    fn pop(&self) -> Option<Outbound> {
        let mut items = self.items();
        let (out, reply) = items.q.pop_front()?;
        if let Some(tag) = reply {
            items.waiting.retain(|t| *t != tag);
            // Like the queue: an answered connection keeps no list (its first SyncStep1's
            // answer left 64 bytes in every idle connection).
            if items.waiting.is_empty() {
                items.waiting = Vec::new();
            }
        }
        if items.q.is_empty() && items.q.capacity() > KEEP_CAPACITY {
            items.q.shrink_to(KEEP_CAPACITY);
        }
        Some(out)
    }
}

/// The connection task's side of a [`ConnHandle`].
#[derive(Debug)]
pub struct ConnQueue {
    queue: Arc<Queue>,
}

/// What the connection task is to do next.
#[derive(Debug)]
pub enum Next {
    /// Write this.
    Message(Outbound),
    /// A close was requested: see [`ConnQueue::close_reason`].
    Close,
}

impl ConnQueue {
    /// Waits for the next message or a close request (which comes first, once made).
    pub async fn next(&self) -> Next {
        loop {
            // Register interest before checking, so a push between the check and the wait
            // is not missed (Notify keeps one permit for exactly this).
            let notified = self.queue.ready.notified();
            if self.queue.closed.load(Ordering::Acquire) {
                return Next::Close;
            }
            if let Some(m) = self.queue.pop() {
                return Next::Message(m);
            }
            notified.await;
        }
    }

    /// Waits until a close is requested. (Wake-ups by messages are absorbed: the task only
    /// waits here while a write is in progress, and `next` looks at the queue itself.)
    pub async fn closed(&self) {
        loop {
            let notified = self.queue.ready.notified();
            if self.queue.closed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// The code and reason to send, if a close was requested.
    pub fn close_reason(&self) -> Option<&(CloseCode, String)> {
        self.queue.close_reason.get()
    }

    /// A handle that can close this connection (node shutdown) without keeping it alive.
    pub fn closer(&self) -> Closer {
        Closer(Arc::downgrade(&self.queue))
    }

    /// The next message, if one is queued.
    pub fn try_recv(&self) -> Option<Outbound> {
        self.queue.pop()
    }

    /// Marks a message as written, releasing its bytes from the budget.
    pub fn written(&self, msg: &Outbound) {
        self.queue.queued.fetch_sub(msg.len(), Ordering::Relaxed);
    }
}

impl Drop for ConnQueue {
    fn drop(&mut self) {
        let mut items = self.queue.items();
        self.queue.receiver_gone.store(true, Ordering::Release);
        // What is still queued is never written: free it now, not when the last handle goes.
        items.q.clear();
        items.waiting = Vec::new();
    }
}

/// Builds a connected handle/queue pair.
pub fn channel(
    id: ConnId,
    ext: bool,
    role: Role,
    max_messages: usize,
    max_bytes: usize,
) -> (ConnHandle, ConnQueue) {
    let queue = Arc::new(Queue {
        items: Mutex::new(Items::default()),
        ready: Notify::new(),
        queued: AtomicUsize::new(0),
        max_messages: max_messages.max(1),
        max_bytes,
        receiver_gone: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        close_reason: OnceLock::new(),
    });
    (
        ConnHandle {
            id,
            ext,
            role,
            user: None,
            shown_as: None,
            prefix: None,
            queue: queue.clone(),
        },
        ConnQueue { queue },
    )
}

impl Queue {
    fn close(&self, code: CloseCode, reason: &str) {
        let _ = self.close_reason.set((
            code,
            chorus_protocol::close::truncate_reason(reason).to_string(),
        ));
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }
}

impl ConnHandle {
    /// The same handle naming its user.
    pub fn with_user(mut self, user: Option<&str>) -> ConnHandle {
        self.user = user.map(Arc::from);
        self
    }

    /// The same handle with the name and colour its token gives it.
    pub fn shown_as(mut self, shown: Option<Arc<ShownAs>>) -> ConnHandle {
        self.shown_as = shown;
        self
    }

    /// Closes this handle's connection from elsewhere without keeping it alive.
    pub fn closer(&self) -> Closer {
        Closer(Arc::downgrade(&self.queue))
    }

    /// A handle for one document of a Hocuspocus connection: its own id (so rooms see a
    /// separate member), role and address, sharing this connection's queue, byte budget and
    /// close signal.
    pub fn for_document(&self, id: ConnId, role: Role, prefix: Bytes) -> ConnHandle {
        ConnHandle {
            id,
            ext: false,
            role,
            prefix: Some(Box::new(prefix)),
            ..self.clone()
        }
    }

    // The dialect is decided here, from how the handle was made, and nowhere else: rooms say
    // what they mean (greet, answer, refuse, saved) and this handle says it in the member's
    // protocol.

    /// Whether the member gets our SyncStep1 as it joins. y-websocket clients do; Hocuspocus
    /// clients get it with the answer to each of theirs instead (as Hocuspocus does): a
    /// provider counts its SyncStep1 as an unsynced change that only the acknowledgement of
    /// its reply clears, also for the SyncStep1s it re-sends (`forceSyncInterval`).
    pub fn greets_with_step1(&self) -> bool {
        self.prefix.is_none()
    }

    /// Whether the answer to the member's SyncStep1 is followed by our SyncStep1 (see
    /// [`ConnHandle::greets_with_step1`]).
    pub fn answers_with_step1(&self) -> bool {
        self.prefix.is_some()
    }

    /// Tells the member an update it sent was refused: a permission-denied message (and the
    /// `error` extension message for opted-in clients), or for Hocuspocus a negative sync
    /// status.
    pub fn update_refused(&self, reason: &str) {
        match &self.prefix {
            Some(p) => {
                self.send(Outbound::Statuses {
                    prefix: Bytes::clone(p),
                    applied: false,
                    count: 1,
                });
            }
            None => {
                self.send(Outbound::Binary(
                    chorus_protocol::sync::Message::PermissionDenied(reason.to_owned()).encode(),
                ));
                self.send_ext(&ServerMessage::Error {
                    code: chorus_protocol::ext::ErrorCode::Forbidden,
                    message: reason.to_owned(),
                });
            }
        }
    }

    // What a room's y-sync frame becomes on this connection: itself, or for Hocuspocus the
    // address plus the frame (the message types coincide).
    fn dialect(&self, frame: Bytes) -> Outbound {
        match &self.prefix {
            None => Outbound::Binary(frame),
            Some(p) => Outbound::Prefixed {
                prefix: Bytes::clone(p),
                frame,
            },
        }
    }

    /// Tells the member that `newly` more of its updates are durable, `total` in all: the
    /// `saved` extension message, or one positive sync status per update for Hocuspocus.
    pub fn saved(&self, newly: u64, total: u64) {
        match &self.prefix {
            Some(p) if newly > 0 => {
                self.send(Outbound::Statuses {
                    prefix: Bytes::clone(p),
                    applied: true,
                    count: u32::try_from(newly).unwrap_or(u32::MAX),
                });
            }
            Some(_) => {}
            None => {
                self.send_ext(&ServerMessage::Saved { updates: total });
            }
        }
    }

    /// Answers a Hocuspocus reader's sync step 2 that carried nothing new (a no-op for the
    /// other dialect, which has no such acknowledgement).
    pub fn nothing_new(&self) {
        if let Some(p) = &self.prefix {
            self.send(Outbound::Statuses {
                prefix: Bytes::clone(p),
                applied: true,
                count: 1,
            });
        }
    }

    /// Queues a message. Returns false (and closes the connection with 1013) if the queue is
    /// full, or false if the connection is already gone.
    pub fn send(&self, msg: Outbound) -> bool {
        self.enqueue(msg, Budget::Within)
    }

    /// Queues a y-sync frame.
    pub fn send_binary(&self, frame: Bytes) -> bool {
        self.send(self.dialect(frame))
    }

    /// Queues the join handshake (our SyncStep1, the awareness states) outside the byte
    /// budget: it is sent once per member, and a member must be able to join a room whose
    /// presence is larger than the budget. The message count still bounds the queue.
    pub fn send_handshake(&self, frame: Bytes) -> bool {
        self.enqueue(self.dialect(frame), Budget::Outside)
    }

    /// Queues an answer the peer asked for. It counts against the byte budget, except that
    /// one answer larger than the whole budget (a big document's state) is accepted while
    /// the backlog is within it; and it replaces a waiting answer of its kind (counted in
    /// `chorus_replies_coalesced_total`), so a peer that asks again and again without reading
    /// holds at most one answer of each kind.
    pub fn send_answer(&self, kind: Reply, frame: Bytes) -> bool {
        self.enqueue(self.dialect(frame), Budget::Answer(kind))
    }

    /// Whether an answer of `kind` waits unwritten (a new one would replace it).
    pub fn answer_waiting(&self, kind: Reply) -> bool {
        self.queue.items().waiting.contains(&(kind, self.id))
    }

    /// Bytes queued now (tests and the attack scenario check the budget holds).
    pub fn queued_bytes(&self) -> usize {
        self.queue.queued.load(Ordering::Relaxed)
    }

    fn enqueue(&self, msg: Outbound, budget: Budget) -> bool {
        if self.is_closed() {
            return false;
        }
        let len = msg.len();
        let q = &self.queue;
        let before = q.queued.fetch_add(len, Ordering::Relaxed);
        let refused = match budget {
            // One message larger than the budget (a big document's update) is accepted when
            // nothing else is queued; only a backlog counts as slow.
            Budget::Within if before > 0 && before + len > q.max_bytes => Some(Refused::Full),
            Budget::Answer(_) if before > q.max_bytes => Some(Refused::Full),
            Budget::Within | Budget::Outside => q.push(msg, None).err(),
            Budget::Answer(kind) => match q.push(msg, Some((kind, self.id))) {
                Ok(Some(old)) => {
                    q.queued.fetch_sub(old.len(), Ordering::Relaxed);
                    metrics::counter!(crate::metrics::names::REPLIES_COALESCED_TOTAL, "kind" => kind.label())
                        .increment(1);
                    None
                }
                Ok(None) => None,
                Err(e) => Some(e),
            },
        };
        match refused {
            None => true,
            Some(refused) => {
                q.queued.fetch_sub(len, Ordering::Relaxed);
                if matches!(refused, Refused::Full) {
                    self.overflow();
                }
                false
            }
        }
    }

    /// Queues an extension message if the connection opted in; true if not opted in.
    pub fn send_ext(&self, msg: &ServerMessage) -> bool {
        !self.ext || self.send(Outbound::Text(ext::encode_server(msg)))
    }

    /// Sends an extension message to a Hocuspocus document as a stateless message (its
    /// clients read the same JSON there); nothing for other connections.
    pub fn send_stateless(&self, msg: &ServerMessage) -> bool {
        match &self.prefix {
            Some(p) => self.send(Outbound::Binary(chorus_protocol::hocuspocus::stateless(
                p,
                &ext::encode_server(msg),
            ))),
            None => false,
        }
    }

    /// Asks the connection task to close with `code`; the first request wins.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.queue.close(code, reason);
    }

    /// Whether a close was requested.
    pub fn is_closed(&self) -> bool {
        self.queue.closed.load(Ordering::Acquire)
    }

    /// Whether the connection task is gone (nothing queued will ever be written).
    pub fn is_gone(&self) -> bool {
        self.queue.receiver_gone.load(Ordering::Acquire)
    }

    fn overflow(&self) {
        if !self.is_closed() {
            metrics::counter!(crate::metrics::names::SLOW_CONSUMER_CLOSES_TOTAL).increment(1);
            tracing::info!(conn = self.id, "closing slow consumer");
        }
        self.close(CloseCode::Overloaded, "slow consumer: send queue full");
    }
}

#[cfg(test)]
mod tests;
