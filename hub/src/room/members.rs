//! Members: join, leave, what each sent (in order, with its answers), awareness, and the
//! fan-out to every member's outbound queue.

use super::*;

pub(super) struct Member {
    pub(super) conn: ConnHandle,
    // Update messages accepted from this member so far (what `saved` acknowledges).
    pub(super) accepted: u64,
    // How many of them it was told are durable.
    pub(super) acked: u64,
}

impl Room {
    pub(super) fn join(&mut self, conn: ConnHandle, reply: oneshot::Sender<Result<(), JoinError>>) {
        if conn.greets_with_step1() {
            conn.send_handshake(self.document.step1());
        }
        if let Some(snapshot) = self.presence.snapshot() {
            conn.send_handshake(snapshot);
        }
        let id = conn.id;
        self.members.insert(
            id,
            Member {
                conn,
                accepted: 0,
                acked: 0,
            },
        );
        self.idle_since = None;
        if reply.send(Ok(())).is_err() {
            // The joiner gave up while we loaded; it will never send Leave.
            self.leave(id);
        }
    }

    /// Removes members (and their awareness states), then tells everyone at once. Members
    /// found dead while telling are removed in the same loop, not by recursion.
    pub(super) fn leave(&mut self, conn: ConnId) {
        self.leave_all(vec![conn]);
    }

    pub(super) fn leave_all(&mut self, mut gone: Vec<ConnId>) {
        while !gone.is_empty() {
            for conn in gone.drain(..) {
                self.remove_member(conn);
            }
            if self.presence.has_removals() {
                gone = self.broadcast_awareness_collect();
            }
        }
        if self.members.is_empty() {
            self.idle_since = Some(TokioInstant::now());
        }
    }

    pub(super) fn remove_member(&mut self, conn: ConnId) {
        if self.members.remove(&conn).is_none() {
            return;
        }
        self.batch.forget(conn);
        let gone = self.presence.remove_connection(conn);
        if !gone.is_empty() && self.remote.is_some() {
            let update = chorus_protocol::awareness::encode_update(&gone);
            self.publish(crate::cluster::envelope::Payload::Awareness(update));
        }
    }

    /// A member's messages, in order. Not gated on membership: a client that sends an edit
    /// and closes at once is often gone (its queue dropped) before the room gets to the edit,
    /// and the edit must still count. Only refused connections' later messages are dropped,
    /// and questions from members that are gone are not answered (`answerable`). An answer
    /// that needs a long whole-document encode stops here and continues in `run_deferred`.
    pub(super) fn inbound_all(&mut self, conn: ConnId, mut msgs: std::vec::IntoIter<Inbound>) {
        while let Some(m) = msgs.next() {
            if self.failed || self.refused.contains(&conn) {
                break;
            }
            if let Inbound::SyncStep1(sv) = m {
                match self.state_answer(conn, sv) {
                    Some(Answer::Ready(frame)) => self.answer_state(conn, frame),
                    Some(Answer::Encode(sv)) => {
                        self.deferred = Some(Box::new(Deferred::Answer {
                            conn,
                            sv,
                            rest: msgs,
                        }));
                        return;
                    }
                    None => {}
                }
                continue;
            }
            self.inbound(conn, m);
        }
    }

    /// Whether a question from `conn` is still worth answering: nothing more is done for a
    /// member that left or is being closed.
    pub(super) fn answerable(&self, conn: ConnId) -> bool {
        let ok = self
            .members
            .get(&conn)
            .is_some_and(|m| !m.conn.is_closed() && !m.conn.is_gone());
        if !ok {
            metrics::counter!("chorus_replies_skipped_total").increment(1);
        }
        ok
    }

    pub(super) fn awareness_in(&mut self, conn: ConnId, mut entries: Vec<Entry>) {
        // A connection that is gone can no longer own presence: its state would never be
        // removed.
        let Some(me) = self.members.get(&conn) else {
            return;
        };
        // A client id belongs to the connection that first used it: another member may not
        // change or remove it, unless it is the same user (a tab reconnecting before its old
        // socket timed out). Anonymous members are all "nobody", as before.
        let before = entries.len();
        entries.retain(|e| {
            self.presence.owner_of(e.client_id).is_none_or(|owner| {
                owner == conn
                    || self
                        .members
                        .get(&owner)
                        .is_none_or(|o| o.conn.user == me.conn.user)
            })
        });
        if entries.len() < before {
            metrics::counter!("chorus_awareness_foreign_ids_total")
                .increment((before - entries.len()) as u64);
        }
        // What the token says about the member wins over what its states claim.
        if let Some(shown) = &me.conn.shown_as {
            for e in entries.iter_mut().filter(|e| !e.is_removal()) {
                e.state = shown.apply(&e.state);
            }
        }
        if entries.is_empty() {
            return;
        }
        // The other nodes apply the same clock rule, so what we refuse they refuse too.
        let relay = self
            .remote
            .is_some()
            .then(|| chorus_protocol::awareness::encode_update(&entries));
        if self.presence.apply(conn, entries).is_err() {
            // One tab owns one state; dozens from one socket is an attack on every joiner's
            // handshake size.
            self.close_member(conn, CloseCode::Policy, "too many awareness states");
            return;
        }
        if let Some(update) = relay {
            self.publish(crate::cluster::envelope::Payload::Awareness(update));
        }
        self.schedule_awareness();
    }

    /// Sends presence changes at the next tick, unless one is due already.
    pub(super) fn schedule_awareness(&mut self) {
        if self.awareness_due.is_none() && self.presence.has_changes() {
            self.awareness_due = Some(TokioInstant::now() + self.ctx.limits.awareness_tick);
        }
    }

    /// Sends every awareness change since the last tick as one message to every member,
    /// including the senders: stock clients drop a connection that hears nothing for 30 s,
    /// and their own renewals relayed back are what keeps a lone client's socket alive.
    pub(super) fn broadcast_awareness(&mut self) {
        let dead = self.broadcast_awareness_collect();
        if !dead.is_empty() {
            self.leave_all(dead);
        }
    }

    /// Sends the pending awareness changes; returns members whose queues refused them.
    pub(super) fn broadcast_awareness_collect(&mut self) -> Vec<ConnId> {
        self.awareness_due = None;
        let Some(frame) = self.presence.take_changes() else {
            return Vec::new();
        };
        let mut dead = Vec::new();
        for (id, m) in &self.members {
            if !m.conn.send_binary(frame.clone()) {
                dead.push(*id);
            }
        }
        metrics::counter!("chorus_messages_out_total")
            .increment((self.members.len() - dead.len()) as u64);
        dead
    }

    /// Answers a member's own request (SyncStep2, query-awareness) outside the byte budget.
    pub(super) fn send_to(&mut self, conn: ConnId, kind: Reply, frame: Bytes) {
        let ok = self
            .members
            .get(&conn)
            .is_some_and(|m| m.conn.send_answer(kind, frame));
        if ok {
            metrics::counter!("chorus_messages_out_total").increment(1);
        } else if self.members.contains_key(&conn) {
            self.leave(conn);
        }
    }

    pub(super) fn close_member(&mut self, conn: ConnId, code: CloseCode, reason: &str) {
        self.refused.insert(conn);
        if let Some(m) = self.members.get(&conn) {
            m.conn.close(code, reason);
        }
        self.leave(conn);
    }
}
