//! The room's view of a connection: a bounded outbound queue (by count and by bytes) and a
//! close signal. The queue is a `VecDeque` under a mutex with a `Notify`, not a tokio mpsc
//! channel: an mpsc channel allocates its first 32-slot block up front (over 1 KiB per
//! connection), while an idle deque holds nothing and a drained one gives back what a burst
//! made it grow to. The connection task ([`crate::connection`]) owns the socket and drains the
//! queue; rooms only ever `try_send`, so a slow reader can never stall a room. A connection
//! whose queue overflows is closed with 1013: skipping one CRDT update would leave it silently
//! diverged, while a reconnect repairs it through the sync handshake.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use chorus_protocol::CloseCode;
use chorus_protocol::ext::{self, ServerMessage};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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

/// Why and how a connection is to be closed; set once, first reason wins.
#[derive(Debug, Default)]
pub struct CloseSignal {
    token: CancellationToken,
    reason: OnceLock<(CloseCode, String)>,
}

impl CloseSignal {
    /// The token the connection task waits on.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The code and reason to send, if a close was requested.
    pub fn reason(&self) -> Option<&(CloseCode, String)> {
        self.reason.get()
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
    // Hocuspocus connections: the document's encoded address, put in front of every y-sync
    // frame (one socket carries many documents, each a separate room member).
    prefix: Option<Bytes>,
    queue: Arc<Queue>,
    close: Arc<CloseSignal>,
}

/// The outbound messages of one socket.
#[derive(Debug)]
struct Queue {
    items: Mutex<VecDeque<Outbound>>,
    ready: Notify,
    // Bytes sitting in the queue (the count bounds entries, this bounds memory).
    queued: AtomicUsize,
    max_messages: usize,
    max_bytes: usize,
    // The connection task is gone: nothing will ever be written.
    receiver_gone: AtomicBool,
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
    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<Outbound>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `msg` unless the queue holds `max_messages` already.
    fn push(&self, msg: Outbound) -> Result<(), Refused> {
        {
            let mut items = self.items();
            // Checked under the lock: Drop clears the queue under it too, so nothing pushed
            // after the receiver left lingers.
            if self.receiver_gone.load(Ordering::Acquire) {
                return Err(Refused::Gone);
            }
            if items.len() >= self.max_messages {
                return Err(Refused::Full);
            }
            items.push_back(msg);
        }
        self.ready.notify_one();
        Ok(())
    }

    fn pop(&self) -> Option<Outbound> {
        let mut items = self.items();
        let out = items.pop_front();
        if items.is_empty() && items.capacity() > KEEP_CAPACITY {
            items.shrink_to(KEEP_CAPACITY);
        }
        out
    }
}

/// The connection task's side of a [`ConnHandle`].
#[derive(Debug)]
pub struct ConnQueue {
    queue: Arc<Queue>,
    /// Close requests from rooms or the server.
    pub close: Arc<CloseSignal>,
}

impl ConnQueue {
    /// Waits for the next message.
    pub async fn recv(&self) -> Outbound {
        loop {
            // Register interest before checking, so a push between the check and the wait
            // is not missed (Notify keeps one permit for exactly this).
            let notified = self.queue.ready.notified();
            if let Some(m) = self.queue.pop() {
                return m;
            }
            notified.await;
        }
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
        items.clear();
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
        items: Mutex::new(VecDeque::new()),
        ready: Notify::new(),
        queued: AtomicUsize::new(0),
        max_messages: max_messages.max(1),
        max_bytes,
        receiver_gone: AtomicBool::new(false),
    });
    let close = Arc::new(CloseSignal::default());
    (
        ConnHandle {
            id,
            ext,
            role,
            user: None,
            prefix: None,
            queue: queue.clone(),
            close: close.clone(),
        },
        ConnQueue { queue, close },
    )
}

impl ConnHandle {
    /// The same handle naming its user.
    pub fn with_user(mut self, user: Option<&str>) -> ConnHandle {
        self.user = user.map(Arc::from);
        self
    }

    /// A handle for one document of a Hocuspocus connection: its own id (so rooms see a
    /// separate member), role and address, sharing this connection's queue, byte budget and
    /// close signal.
    pub fn for_document(&self, id: ConnId, role: Role, prefix: Bytes) -> ConnHandle {
        ConnHandle {
            id,
            ext: false,
            role,
            prefix: Some(prefix),
            ..self.clone()
        }
    }

    /// The Hocuspocus address prefix, if this handle is one document of such a connection.
    pub fn prefix(&self) -> Option<&Bytes> {
        self.prefix.as_ref()
    }

    // What a room's y-sync frame becomes on this connection: itself, or for Hocuspocus the
    // address plus the frame (the message types coincide), except that a refused update is
    // answered the Hocuspocus way, with a negative sync status.
    fn dialect(&self, frame: Bytes) -> Outbound {
        match &self.prefix {
            None => Outbound::Binary(frame),
            Some(p) if frame.starts_with(&[2, 0]) => Outbound::Statuses {
                prefix: p.clone(),
                applied: false,
                count: 1,
            },
            Some(p) => Outbound::Prefixed {
                prefix: p.clone(),
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
                    prefix: p.clone(),
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
                prefix: p.clone(),
                applied: true,
                count: 1,
            });
        }
    }

    /// Queues a message. Returns false (and closes the connection with 1013) if the queue is
    /// full, or false if the connection is already gone.
    pub fn send(&self, msg: Outbound) -> bool {
        self.enqueue(msg, true)
    }

    /// Queues a y-sync frame.
    pub fn send_binary(&self, frame: Bytes) -> bool {
        self.send(self.dialect(frame))
    }

    /// Queues a frame the connection asked for (its join handshake, its SyncStep2) outside
    /// the byte budget: a full document larger than the budget must still reach a joiner.
    /// The message count still bounds the queue.
    pub fn send_reply(&self, frame: Bytes) -> bool {
        self.enqueue(self.dialect(frame), false)
    }

    fn enqueue(&self, msg: Outbound, within_budget: bool) -> bool {
        if self.close.token.is_cancelled() {
            return false;
        }
        let len = msg.len();
        let q = &self.queue;
        let before = q.queued.fetch_add(len, Ordering::Relaxed);
        // One message larger than the budget (a joiner's full state of a big document) is
        // accepted when nothing else is queued; only a backlog counts as slow.
        let refused = if within_budget && before > 0 && before + len > q.max_bytes {
            Some(Refused::Full)
        } else {
            q.push(msg).err()
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

    /// Asks the connection task to close with `code`; the first request wins.
    pub fn close(&self, code: CloseCode, reason: &str) {
        let _ = self.close.reason.set((
            code,
            chorus_protocol::close::truncate_reason(reason).to_string(),
        ));
        self.close.token.cancel();
    }

    /// Whether a close was requested.
    pub fn is_closed(&self) -> bool {
        self.close.token.is_cancelled()
    }

    fn overflow(&self) {
        if !self.is_closed() {
            metrics::counter!("chorus_slow_consumer_closes_total").increment(1);
            tracing::info!(conn = self.id, "closing slow consumer");
        }
        self.close(CloseCode::Overloaded, "slow consumer: send queue full");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_by_count_closes_with_1013() {
        let (h, q) = channel(1, false, Role::Write, 2, 1 << 20);
        assert!(h.send_binary(Bytes::from_static(b"a")));
        assert!(h.send_binary(Bytes::from_static(b"b")));
        assert!(!h.send_binary(Bytes::from_static(b"c")));
        assert_eq!(q.close.reason().map(|r| r.0), Some(CloseCode::Overloaded));
        assert!(
            !h.send_binary(Bytes::from_static(b"d")),
            "closed stays closed"
        );
    }

    #[test]
    fn overflow_by_bytes_closes_with_1013() {
        let (h, q) = channel(1, false, Role::Write, 100, 10);
        assert!(h.send_binary(Bytes::from_static(b"12345")));
        assert!(!h.send_binary(Bytes::from_static(b"123456")));
        assert_eq!(q.close.reason().map(|r| r.0), Some(CloseCode::Overloaded));
    }

    #[test]
    fn one_large_message_fits_an_empty_queue() {
        let (h, _q) = channel(1, false, Role::Write, 100, 10);
        assert!(h.send_binary(Bytes::from(vec![0u8; 50])));
        assert!(!h.send_binary(Bytes::from_static(b"x")));
    }

    #[test]
    fn a_gone_receiver_refuses_without_closing_as_slow() {
        let (h, q) = channel(1, false, Role::Write, 2, 1 << 20);
        drop(q);
        assert!(!h.send_binary(Bytes::from_static(b"a")));
        assert!(!h.is_closed(), "not a slow consumer, just gone");
    }

    #[tokio::test]
    async fn recv_wakes_on_a_later_send_and_gives_back_burst_capacity() {
        let (h, q) = channel(1, false, Role::Write, 1000, 1 << 20);
        let waiter = tokio::spawn(async move {
            let first = q.recv().await;
            (first, q)
        });
        tokio::task::yield_now().await;
        assert!(h.send_binary(Bytes::from_static(b"x")));
        let (first, q) = waiter.await.expect("join");
        assert!(matches!(first, Outbound::Binary(ref b) if b.as_ref() == b"x"));
        for _ in 0..500 {
            assert!(h.send_binary(Bytes::from_static(b"y")));
        }
        while let Some(m) = q.try_recv() {
            q.written(&m);
        }
        assert_eq!(h.queue.items().capacity(), KEEP_CAPACITY);
    }

    #[test]
    fn written_messages_free_their_bytes() {
        let (h, q) = channel(1, false, Role::Write, 100, 10);
        assert!(h.send_binary(Bytes::from_static(b"1234567")));
        let m = q.try_recv().expect("queued");
        q.written(&m);
        assert!(h.send_binary(Bytes::from_static(b"1234567")));
    }
}
