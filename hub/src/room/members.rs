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

/// The members and what the room owes each, without I/O of its own: a member is reached
/// through its bounded outbound queue, which never waits (a full queue refuses, and the
/// member is closed). Derefs to the map of members by connection.
#[derive(Default)]
pub(super) struct Members {
    by_conn: HashMap<ConnId, Member>,
}

impl std::ops::Deref for Members {
    type Target = HashMap<ConnId, Member>;
    fn deref(&self) -> &Self::Target {
        &self.by_conn
    }
}

impl std::ops::DerefMut for Members {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.by_conn
    }
}

impl Members {
    /// A new member, owed nothing yet.
    pub(super) fn add(&mut self, conn: ConnHandle) {
        self.by_conn.insert(
            conn.id,
            Member {
                conn,
                accepted: 0,
                acked: 0,
            },
        );
    }

    /// Queues `frame` (encoded once, shared) to every member but `except`; returns how many
    /// took it, and pushes onto `dead` those whose queues refused it.
    pub(super) fn fan_out(
        &self,
        frame: &Bytes,
        except: Option<ConnId>,
        dead: &mut Vec<ConnId>,
    ) -> u64 {
        let mut sent = 0;
        for (id, m) in &self.by_conn {
            if Some(*id) == except {
                continue;
            }
            if m.conn.send_binary(frame.clone()) {
                sent += 1;
            } else {
                dead.push(*id);
            }
        }
        sent
    }

    /// One more update of `conn` accepted; its count (`None` for a member that left).
    pub(super) fn accept(&mut self, conn: ConnId) -> Option<u64> {
        self.by_conn.get_mut(&conn).map(|m| {
            m.accepted += 1;
            m.accepted
        })
    }

    /// The last accepted update of `conn` was refused after all.
    pub(super) fn unaccept(&mut self, conn: ConnId) {
        if let Some(m) = self.by_conn.get_mut(&conn) {
            m.accepted = m.accepted.saturating_sub(1);
        }
    }

    /// The first `updates` updates of each member in `acks` are durable: each is told how
    /// many more than it was last told (never fewer: acks of one member only grow).
    pub(super) fn saved(&mut self, acks: HashMap<ConnId, u64>) {
        for (conn, updates) in acks {
            if let Some(m) = self.by_conn.get_mut(&conn)
                && updates > m.acked
            {
                let newly = updates - m.acked;
                m.acked = updates;
                m.conn.saved(newly, updates);
            }
        }
    }
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
        self.members.add(conn);
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
            metrics::counter!(crate::metrics::names::REPLIES_SKIPPED_TOTAL).increment(1);
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
            metrics::counter!(crate::metrics::names::AWARENESS_FOREIGN_IDS_TOTAL)
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
        let sent = self.members.fan_out(&frame, None, &mut dead);
        metrics::counter!(crate::metrics::names::MESSAGES_OUT_TOTAL).increment(sent);
        dead
    }

    /// Answers a member's own request (SyncStep2, query-awareness) outside the byte budget.
    pub(super) fn send_to(&mut self, conn: ConnId, kind: Reply, frame: Bytes) {
        let ok = self
            .members
            .get(&conn)
            .is_some_and(|m| m.conn.send_answer(kind, frame));
        if ok {
            metrics::counter!(crate::metrics::names::MESSAGES_OUT_TOTAL).increment(1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{ConnQueue, Outbound};

    fn member(members: &mut Members, id: ConnId, max_messages: usize) -> ConnQueue {
        let (conn, queue) = crate::outbound::channel(id, true, Role::Write, max_messages, 1 << 20);
        members.add(conn);
        queue
    }

    fn frames(queue: &ConnQueue) -> Vec<Outbound> {
        let mut out = Vec::new();
        while let Some(m) = queue.try_recv() {
            queue.written(&m);
            out.push(m);
        }
        out
    }

    #[test]
    fn a_frame_goes_once_to_every_member_but_the_sender_and_full_queues_are_reported() {
        let mut members = Members::default();
        let (a, b) = (member(&mut members, 1, 8), member(&mut members, 2, 8));
        let _full = member(&mut members, 3, 1);
        let frame = Bytes::from_static(b"update");
        let mut dead = Vec::new();
        assert_eq!(members.fan_out(&frame, Some(1), &mut dead), 2);
        assert!(dead.is_empty());
        assert_eq!(
            members.fan_out(&frame, None, &mut dead),
            2,
            "3's queue is full"
        );
        assert_eq!(dead, [3]);
        assert_eq!(frames(&a).len(), 1, "the sender got only the second");
        assert_eq!(frames(&b).len(), 2);
    }

    #[test]
    fn saved_tells_each_member_what_is_newly_durable_and_never_less() {
        let mut members = Members::default();
        let queue = member(&mut members, 1, 8);
        assert_eq!(members.accept(1), Some(1));
        assert_eq!(members.accept(1), Some(2));
        assert_eq!(members.accept(9), None, "not a member");
        members.unaccept(1);
        assert_eq!(members.accept(1), Some(2));
        members.saved(HashMap::from([(1, 2), (9, 5)]));
        // A stale, smaller count (an older write committing late) tells nothing.
        members.saved(HashMap::from([(1, 1)]));
        members.saved(HashMap::from([(1, 2)]));
        let told: Vec<String> = frames(&queue)
            .into_iter()
            .filter_map(|m| match m {
                Outbound::Text(t) => Some(t.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].contains("\"updates\":2"), "{told:?}");
    }
}
