//! The batch: applied updates gather, go to the group-committing writer once per
//! `persist_batch`, and when they commit the members who sent them are told `saved`.

use super::*;

/// The batch's bookkeeping, without I/O: updates waiting to be written, the one write in
/// flight, and who is owed `saved` (or a durability answer) once it commits. Nothing is
/// acknowledged before the write that holds it has committed; a failed write goes back in
/// front of anything newer, with what it owed.
#[derive(Default)]
pub(super) struct Batch {
    pending: Vec<Bytes>,
    pending_bytes: usize,
    // Per member, how many of its updates are acknowledged once `pending` commits.
    acks: HashMap<ConnId, u64>,
    // Server edits waiting for the write that holds them.
    waiters: Vec<oneshot::Sender<bool>>,
    in_flight: Option<Written>,
    // The `apply` span of the first traced update pending: the next write's `persist` span
    // is its child.
    // (Boxed, as `persisting`: each open room keeps the slot.)
    traced: Option<Box<tracing::Span>>,
    // The write in flight's `persist` span, when it holds a traced update: open until the
    // write commits (and those it owes are told) or fails.
    persisting: Option<Box<tracing::Span>>,
}

/// A write in flight, or one that has just committed: what it holds and what it owes.
#[derive(Debug, Default)]
pub(super) struct Written {
    /// How many updates it held.
    pub(super) updates: usize,
    /// Their bytes.
    pub(super) bytes: usize,
    /// Per member, how many of its updates are durable once it commits.
    pub(super) acks: HashMap<ConnId, u64>,
    /// Server edits told `true` once it commits.
    pub(super) waiters: Vec<oneshot::Sender<bool>>,
    /// A `document.changed` event rode in it (owed again if it fails).
    pub(super) event: bool,
    // The updates themselves, kept to go back in front if the write fails.
    held: Vec<Bytes>,
}

impl Batch {
    /// An update to write with the next batch.
    pub(super) fn push(&mut self, update: Bytes) {
        self.pending_bytes += update.len();
        self.pending.push(update);
    }

    /// `span` (an `apply`) put what it applied in the batch: the write that holds it is
    /// traced as its child, unless an earlier traced update pending already is its parent.
    pub(super) fn traced(&mut self, span: &tracing::Span) {
        if self.traced.is_none() && !span.is_disabled() && !self.pending.is_empty() {
            self.traced = Some(Box::new(span.clone()));
        }
    }

    /// `conn` is owed `saved` for its first `accepted` updates once what is pending now
    /// commits.
    pub(super) fn ack(&mut self, conn: ConnId, accepted: u64) {
        self.acks.insert(conn, accepted);
    }

    /// Resolves `true` once what is pending now commits.
    pub(super) fn wait(&mut self) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        rx
    }

    /// `conn` left: it is owed nothing any more.
    pub(super) fn forget(&mut self, conn: ConnId) {
        self.acks.remove(&conn);
        if let Some(w) = self.in_flight.as_mut() {
            w.acks.remove(&conn);
        }
    }

    /// Something is not durable yet, or someone is still owed an answer.
    pub(super) fn unsaved(&self) -> bool {
        self.in_flight.is_some() || !self.settled()
    }

    /// Nothing waits to be written, and nobody (member or server edit) is owed an answer for
    /// what waits.
    pub(super) fn settled(&self) -> bool {
        self.pending.is_empty() && self.acks.is_empty() && self.waiters.is_empty()
    }

    /// Updates waiting to be written.
    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Starts the next write. `Err` with what is owed when nothing is pending: the
    /// acknowledged updates were already known, and are as durable as everything before them
    /// (nothing is in flight: the caller starts a write only then). `Ok` with the updates to
    /// write, now in flight.
    pub(super) fn begin(&mut self, event: bool) -> Result<Vec<Bytes>, Written> {
        debug_assert!(self.in_flight.is_none(), "one write at a time");
        let acks = std::mem::take(&mut self.acks);
        let waiters = std::mem::take(&mut self.waiters);
        if self.pending.is_empty() {
            return Err(Written {
                acks,
                waiters,
                ..Written::default()
            });
        }
        let held = std::mem::take(&mut self.pending);
        self.persisting = self.traced.take().map(|parent| {
            Box::new(tracing::debug_span!(parent: &*parent, "persist", updates = held.len()))
        });
        self.in_flight = Some(Written {
            updates: held.len(),
            bytes: std::mem::take(&mut self.pending_bytes),
            acks,
            waiters,
            event,
            held: held.clone(),
        });
        Ok(held)
    }

    /// The write in flight committed: what it owes.
    pub(super) fn committed(&mut self) -> Option<Written> {
        let mut w = self.in_flight.take()?;
        w.held = Vec::new();
        Some(w)
    }

    /// The write in flight's `persist` span, if it is traced: it ends when dropped.
    pub(super) fn take_persist_span(&mut self) -> Option<Box<tracing::Span>> {
        self.persisting.take()
    }

    /// The write in flight failed: its updates go back in front of anything newer, with what
    /// they owe. Returns whether an event rode in it.
    pub(super) fn failed(&mut self) -> Option<bool> {
        let w = self.in_flight.take()?;
        let mut updates = w.held;
        updates.append(&mut self.pending);
        self.pending = updates;
        self.pending_bytes += w.bytes;
        for (c, n) in w.acks {
            let e = self.acks.entry(c).or_insert(n);
            *e = (*e).max(n);
        }
        let mut waiters = w.waiters;
        waiters.append(&mut self.waiters);
        self.waiters = waiters;
        Some(w.event)
    }

    /// The room is deleted: nothing pending is written, and nobody is owed anything. A write
    /// in flight lands all the same.
    pub(super) fn discard(&mut self) {
        self.traced = None;
        self.pending.clear();
        self.pending_bytes = 0;
        self.acks.clear();
        self.waiters.clear();
    }
}

impl Room {
    pub(super) fn schedule_flush(&mut self) {
        if self.flush_due.is_none() {
            self.flush_due = Some(TokioInstant::now() + self.ctx.limits.persist_batch);
        }
    }

    pub(super) async fn start_flush(&mut self) {
        self.flush_due = None;
        // The event rides with new content only.
        let events = if self.batch.pending_len() > 0 {
            self.change_event()
        } else {
            Vec::new()
        };
        match self.batch.begin(!events.is_empty()) {
            Err(owed) => self.settle(owed),
            Ok(updates) => {
                let done = self
                    .ctx
                    .persister
                    .submit(AppendBatch {
                        key: self.key().clone(),
                        search_due: self
                            .ctx
                            .search_debounce
                            .filter(|_| !updates.is_empty())
                            .map(crate::search::due_ms),
                        updates,
                        events,
                    })
                    .await;
                self.writing = Some(done);
            }
        }
    }

    /// Tells members and server edits that what `owed` covers is durable.
    fn settle(&mut self, owed: Written) {
        self.send_saved(owed.acks);
        for w in owed.waiters {
            let _ = w.send(true);
        }
    }

    /// The `document.changed` event to write with this batch, if the tenant's webhook wants
    /// it and no window is open. The event opens a window of `--webhook-debounce`: it is
    /// delivered when the window closes, so it reports every change of the window, and it is
    /// written in the same transaction as the window's first change, so no change is ever
    /// saved without an event that reports it.
    pub(super) fn change_event(&mut self) -> Vec<chorus_persistence::NewEvent> {
        // Looked up only when ours is stale: this runs for every batch of every room.
        if self.tenant.as_ref().is_none_or(|t| t.is_stale())
            && let Some(fresh) = self.ctx.tenants.cached(&self.key().tenant)
        {
            self.tenant = Some(fresh);
        }
        let wanted = self
            .tenant
            .as_ref()
            .is_some_and(|t| t.wants_event(crate::webhooks::events::DOCUMENT_CHANGED));
        let now = TokioInstant::now();
        let debounce = self.ctx.webhook_debounce;
        if !wanted || self.last_change_event.is_some_and(|t| now < t + debounce) {
            return Vec::new();
        }
        self.last_change_event = Some(now);
        let sv = self.document.state_vector().encode_v1();
        use base64::Engine;
        vec![chorus_persistence::NewEvent {
            tenant: self.key().tenant.to_string(),
            event: crate::webhooks::events::DOCUMENT_CHANGED.to_string(),
            body: serde_json::json!({
                "room": &*self.key().room,
                "state_vector": base64::engine::general_purpose::STANDARD.encode(sv),
                "stored_bytes": self.doc_bytes,
            }),
            // Whole seconds, rounded up: the outbox's unit.
            delay: i64::try_from(debounce.as_millis().div_ceil(1000)).unwrap_or(i64::MAX),
        }]
    }

    pub(super) fn flushed(&mut self, result: Result<(), Arc<StoreError>>) {
        self.writing = None;
        // The write's `persist` span ends once everyone it owed is told, or with the failure.
        let span = self.batch.take_persist_span();
        let _persisting = span.as_deref().map(tracing::Span::enter);
        match result {
            Ok(()) => {
                let Some(written) = self.batch.committed() else {
                    return;
                };
                self.log.appended(written.updates, written.bytes);
                if written.event {
                    self.ctx.events.notify();
                }
                self.settle(written);
                self.maybe_compact();
            }
            Err(e) => {
                // Retried ahead of anything newer; members are not told "saved" until it
                // commits.
                tracing::warn!(room = %self.key(), error = %e, "persist failed; will retry");
                if self.batch.failed() == Some(true) {
                    // The event failed with its batch: the retry writes a new one.
                    self.last_change_event = None;
                }
                self.flush_due = Some(TokioInstant::now() + Duration::from_millis(500));
            }
        }
    }

    pub(super) fn send_saved(&mut self, acks: HashMap<ConnId, u64>) {
        self.members.saved(acks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(b: &'static [u8]) -> Bytes {
        Bytes::from_static(b)
    }

    #[test]
    fn nothing_is_acknowledged_before_its_write_commits() {
        let mut batch = Batch::default();
        batch.push(u(b"a"));
        batch.ack(1, 1);
        let mut edit = batch.wait();
        assert!(batch.unsaved() && !batch.settled());
        let written = batch.begin(false).expect("something to write");
        assert_eq!(written, [u(b"a")]);
        // In flight: owed, not yet told.
        assert!(batch.unsaved() && batch.settled());
        assert!(edit.try_recv().is_err());
        // Newer updates wait behind it, with their own acks.
        batch.push(u(b"bb"));
        batch.ack(1, 2);
        let owed = batch.committed().expect("in flight");
        assert_eq!((owed.updates, owed.bytes), (1, 1));
        assert_eq!(owed.acks.get(&1), Some(&1), "only what the write held");
        assert_eq!(owed.waiters.len(), 1);
        assert!(batch.committed().is_none(), "nothing in flight any more");
        assert!(batch.unsaved());
        let next = batch.begin(false).expect("the newer update");
        assert_eq!(next, [u(b"bb")]);
        assert_eq!(batch.committed().expect("committed").acks.get(&1), Some(&2));
        assert!(!batch.unsaved());
    }

    #[test]
    fn a_failed_write_goes_back_in_front_with_what_it_owes() {
        let mut batch = Batch::default();
        batch.push(u(b"1"));
        batch.ack(7, 3);
        let _edit = batch.wait();
        batch.begin(true).expect("write");
        batch.push(u(b"2"));
        batch.ack(7, 4);
        batch.ack(8, 1);
        assert_eq!(batch.failed(), Some(true), "the event rode in it");
        let retry = batch.begin(false).expect("retry");
        assert_eq!(retry, [u(b"1"), u(b"2")], "in the order applied");
        let owed = batch.committed().expect("committed");
        assert_eq!((owed.updates, owed.bytes), (2, 2));
        assert_eq!(owed.acks.get(&7), Some(&4), "the larger count wins");
        assert_eq!(owed.acks.get(&8), Some(&1));
        assert_eq!(owed.waiters.len(), 1);
        assert!(batch.failed().is_none(), "nothing in flight");
    }

    #[test]
    fn acks_of_known_updates_settle_at_once_and_leavers_are_owed_nothing() {
        let mut batch = Batch::default();
        // A member repeated what the document had: nothing to write, and nothing in flight,
        // so its updates are as durable as everything before them.
        batch.ack(3, 5);
        let owed = batch.begin(false).expect_err("nothing to write");
        assert_eq!(owed.acks.get(&3), Some(&5));
        assert!(!batch.unsaved());

        batch.push(u(b"x"));
        batch.ack(4, 1);
        batch.begin(false).expect("write");
        batch.ack(4, 2);
        batch.forget(4);
        let owed = batch.committed().expect("committed");
        assert!(owed.acks.is_empty(), "a member that left is told nothing");
        assert!(batch.settled());

        // An edit that changed nothing still waits for its answer (everything before it
        // durable), and the batch is not settled until it has it.
        let mut noop = batch.wait();
        assert!(!batch.settled() && batch.unsaved());
        let owed = batch.begin(false).expect_err("nothing to write");
        assert_eq!(owed.waiters.len(), 1);
        for w in owed.waiters {
            let _ = w.send(true);
        }
        assert_eq!(noop.try_recv(), Ok(true));

        // Deleted: nothing pending is written, nobody is owed.
        batch.push(u(b"y"));
        batch.ack(5, 1);
        let mut w = batch.wait();
        batch.discard();
        assert!(!batch.unsaved());
        assert!(
            w.try_recv().is_err(),
            "the waiter was dropped, never told true"
        );
    }
}
