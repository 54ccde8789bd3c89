//! The batch: applied updates gather, go to the group-committing writer once per
//! `persist_batch`, and when they commit the members who sent them are told `saved`.

use super::*;

pub(super) struct InFlight {
    pub(super) done: oneshot::Receiver<Result<(), Arc<StoreError>>>,
    pub(super) updates: Vec<Bytes>,
    pub(super) bytes: usize,
    pub(super) acks: HashMap<ConnId, u64>,
    pub(super) waiters: Vec<oneshot::Sender<bool>>,
    // A document.changed event rode in this batch (re-owed if the batch fails).
    pub(super) event: bool,
}

impl Room {
    pub(super) fn schedule_flush(&mut self) {
        if self.flush_due.is_none() {
            self.flush_due = Some(TokioInstant::now() + self.ctx.limits.persist_batch);
        }
    }

    pub(super) async fn start_flush(&mut self) {
        self.flush_due = None;
        let acks = std::mem::take(&mut self.pending_acks);
        let waiters = std::mem::take(&mut self.waiters);
        if self.pending.is_empty() {
            // Only already-known updates were acknowledged, and nothing is in flight: they
            // are as durable as everything before them.
            self.send_saved(acks);
            for w in waiters {
                let _ = w.send(true);
            }
            return;
        }
        let events = self.change_event();
        let event = !events.is_empty();
        let updates = std::mem::take(&mut self.pending);
        let bytes = std::mem::take(&mut self.pending_bytes);
        let done = self
            .ctx
            .persister
            .submit(AppendBatch {
                key: self.key().clone(),
                updates: updates.clone(),
                events,
            })
            .await;
        self.in_flight = Some(InFlight {
            done,
            updates,
            bytes,
            acks,
            waiters,
            event,
        });
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
        let sv = self.doc.transact().state_vector().encode_v1();
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
        let Some(f) = self.in_flight.take() else {
            return;
        };
        match result {
            Ok(()) => {
                self.log_len += f.updates.len();
                self.log_bytes += f.bytes;
                self.send_saved(f.acks);
                for w in f.waiters {
                    let _ = w.send(true);
                }
                if f.event {
                    self.ctx.events.notify();
                }
                self.maybe_compact();
            }
            Err(e) => {
                // Keep the batch in front of anything newer and retry; members are not told
                // "saved" until it commits.
                tracing::warn!(room = %self.key(), error = %e, "persist failed; will retry");
                let mut updates = f.updates;
                updates.append(&mut self.pending);
                self.pending = updates;
                self.pending_bytes += f.bytes;
                for (c, n) in f.acks {
                    let e = self.pending_acks.entry(c).or_insert(n);
                    *e = (*e).max(n);
                }
                let mut waiters = f.waiters;
                waiters.append(&mut self.waiters);
                self.waiters = waiters;
                if f.event {
                    // The event failed with its batch: the retry writes a new one.
                    self.last_change_event = None;
                }
                self.flush_due = Some(TokioInstant::now() + Duration::from_millis(500));
            }
        }
    }

    pub(super) fn send_saved(&mut self, acks: HashMap<ConnId, u64>) {
        for (conn, updates) in acks {
            if let Some(m) = self.members.get_mut(&conn) {
                let newly = updates.saturating_sub(m.acked);
                m.acked = m.acked.max(updates);
                m.conn.saved(newly, updates);
            }
        }
    }
}
