//! The node's open connections: places counted against `--max-connections`, and a way to
//! close every one of them (drain) or one from elsewhere, without keeping it alive.

use super::*;

/// The node's open WebSockets: counted (the node's limit, health, drain) and closable all at
/// once when the node shuts down.
#[derive(Debug, Default)]
pub struct Connections {
    count: AtomicUsize,
    open: Mutex<HashMap<ConnId, Closer>>,
    // Set by `close_all`; connections attached later are closed at once.
    closing: OnceLock<(CloseCode, String)>,
}

impl Connections {
    /// Connections open now (including those between their upgrade and their first frame).
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Counts a new connection; the slot releases it when dropped. Also returns how many
    /// were open before, for the caller's limit check.
    pub fn reserve(self: &Arc<Self>) -> (Slot, usize) {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!(crate::metrics::names::CONNECTIONS_ACTIVE).increment(1.0);
        (
            Slot {
                set: self.clone(),
                id: None,
            },
            before,
        )
    }

    /// Closes every open connection with `code` and `reason`, and any attached later.
    pub fn close_all(&self, code: CloseCode, reason: &str) {
        let _ = self.closing.set((code, reason.to_string()));
        let open: Vec<Closer> = self.lock().values().cloned().collect();
        for c in open {
            c.close(code, reason);
        }
    }

    /// Messages and bytes waiting in the open connections' outbound queues, summed: read for
    /// /metrics (each queue's lock is taken in turn, never with the set's).
    pub fn queued(&self) -> (usize, usize) {
        let queues: Vec<Closer> = self.lock().values().cloned().collect();
        queues
            .iter()
            .filter_map(|c| c.0.upgrade())
            .map(|q| q.depth())
            .fold((0, 0), |(m, b), (m2, b2)| (m + m2, b + b2))
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Closer>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One counted connection (see [`Connections::reserve`]).
#[derive(Debug)]
pub struct Slot {
    set: Arc<Connections>,
    id: Option<ConnId>,
}

impl Slot {
    /// Makes the connection closable by [`Connections::close_all`].
    pub fn attach(&mut self, id: ConnId, queue: &ConnQueue) {
        self.attach_closer(id, queue.closer());
    }

    /// The same, from a closer (a Hocuspocus socket takes its place after the upgrade).
    pub fn attach_closer(&mut self, id: ConnId, closer: Closer) {
        self.set.lock().insert(id, closer.clone());
        self.id = Some(id);
        // Checked after inserting: a close_all running meanwhile either saw this entry or
        // set `closing` before we read it.
        if let Some((code, reason)) = self.set.closing.get() {
            closer.close(*code, reason);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.set.lock().remove(&id);
        }
        self.set.count.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(crate::metrics::names::CONNECTIONS_ACTIVE).decrement(1.0);
    }
}

/// Closes a connection from outside its rooms (node shutdown); does not keep it alive.
#[derive(Debug, Clone)]
pub struct Closer(pub(super) std::sync::Weak<Queue>);

impl Closer {
    /// Asks the connection task to close, if it still runs; the first request wins.
    pub fn close(&self, code: CloseCode, reason: &str) {
        if let Some(q) = self.0.upgrade() {
            q.close(code, reason);
        }
    }
}
