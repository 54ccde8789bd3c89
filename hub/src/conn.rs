//! The room's view of a connection: a bounded outbound queue (by count and by bytes) and a
//! close signal. The connection task ([`crate::connection`]) owns the socket and drains the
//! queue; rooms only ever `try_send`, so a slow reader can never stall a room. A connection
//! whose queue overflows is closed with 1013: skipping one CRDT update would leave it silently
//! diverged, while a reconnect repairs it through the sync handshake.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use chorus_protocol::CloseCode;
use chorus_protocol::ext::{self, ServerMessage};
use chorus_protocol::hocuspocus;
use tokio::sync::mpsc;
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
}

impl Outbound {
    fn len(&self) -> usize {
        match self {
            Outbound::Binary(b) => b.len(),
            Outbound::Text(t) => t.len(),
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
    // Hocuspocus connections: the document's encoded address, put in front of every y-sync
    // frame (one socket carries many documents, each a separate room member).
    prefix: Option<Bytes>,
    tx: mpsc::Sender<Outbound>,
    // Bytes sitting in the queue: the channel bounds the count, this bounds memory.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    close: Arc<CloseSignal>,
}

/// The connection task's side of a [`ConnHandle`].
#[derive(Debug)]
pub struct ConnQueue {
    /// Messages to write.
    pub rx: mpsc::Receiver<Outbound>,
    queued: Arc<AtomicUsize>,
    /// Close requests from rooms or the server.
    pub close: Arc<CloseSignal>,
}

impl ConnQueue {
    /// Marks a message as written, releasing its bytes from the budget.
    pub fn written(&self, msg: &Outbound) {
        self.queued.fetch_sub(msg.len(), Ordering::Relaxed);
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
    let (tx, rx) = mpsc::channel(max_messages.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    let close = Arc::new(CloseSignal::default());
    (
        ConnHandle {
            id,
            ext,
            role,
            prefix: None,
            tx,
            queued: queued.clone(),
            max_bytes,
            close: close.clone(),
        },
        ConnQueue { rx, queued, close },
    )
}

impl ConnHandle {
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
    fn dialect(&self, frame: Bytes) -> Bytes {
        match &self.prefix {
            None => frame,
            Some(p) if frame.starts_with(&[2, 0]) => hocuspocus::sync_status(p, false),
            Some(p) => hocuspocus::wrap(p, &frame),
        }
    }

    /// Tells the member that `newly` more of its updates are durable, `total` in all: the
    /// `saved` extension message, or one positive sync status per update for Hocuspocus.
    pub fn saved(&self, newly: u64, total: u64) {
        if let Some(p) = &self.prefix {
            for _ in 0..newly {
                if !self.send(Outbound::Binary(hocuspocus::sync_status(p, true))) {
                    return;
                }
            }
        } else {
            self.send_ext(&ServerMessage::Saved { updates: total });
        }
    }

    /// Answers a Hocuspocus reader's sync step 2 that carried nothing new (a no-op for the
    /// other dialect, which has no such acknowledgement).
    pub fn nothing_new(&self) {
        if let Some(p) = &self.prefix {
            self.send(Outbound::Binary(hocuspocus::sync_status(p, true)));
        }
    }

    /// Queues a message. Returns false (and closes the connection with 1013) if the queue is
    /// full, or false if the connection is already gone.
    pub fn send(&self, msg: Outbound) -> bool {
        if self.close.token.is_cancelled() {
            return false;
        }
        let len = msg.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        // One message larger than the budget (a joiner's full state of a big document) is
        // accepted when nothing else is queued; only a backlog counts as slow.
        if before > 0 && before + len > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.overflow();
            return false;
        }
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                self.overflow();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues a y-sync frame.
    pub fn send_binary(&self, frame: Bytes) -> bool {
        self.send(Outbound::Binary(self.dialect(frame)))
    }

    /// Queues a frame the connection asked for (its join handshake, its SyncStep2) outside
    /// the byte budget: a full document larger than the budget must still reach a joiner.
    /// The message count still bounds the queue.
    pub fn send_reply(&self, frame: Bytes) -> bool {
        if self.close.token.is_cancelled() {
            return false;
        }
        let frame = self.dialect(frame);
        let len = frame.len();
        self.queued.fetch_add(len, Ordering::Relaxed);
        match self.tx.try_send(Outbound::Binary(frame)) {
            Ok(()) => true,
            Err(e) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
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
    fn written_messages_free_their_bytes() {
        let (h, mut q) = channel(1, false, Role::Write, 100, 10);
        assert!(h.send_binary(Bytes::from_static(b"1234567")));
        let m = q.rx.try_recv().expect("queued");
        q.written(&m);
        assert!(h.send_binary(Bytes::from_static(b"1234567")));
    }
}
