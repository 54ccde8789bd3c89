//! The document: applying updates (with the effective update the observer captured, and
//! what yrs holds back), server edits, and the answers to a state vector (our SyncStep1 and
//! the full state, cached until the next update; large encodes off the runtime workers).

use super::*;

/// Whole-document encodes of documents at least this large (stored bytes) run on the
/// blocking pool: about a millisecond of encoding on this class of machine.
pub(super) const OFF_WORKER_ENCODE_BYTES: usize = 64 * 1024;

/// Whole-document encodes running on the blocking pool at once, across the node: a flood of
/// joiners or REST reads of large documents queues here instead of taking every thread.
pub(super) static ENCODES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Work a command left for an encode off the runtime workers (`Room::run_deferred`).
pub(super) enum Deferred {
    /// Answer `conn`'s SyncStep1 from `sv`, then handle the rest of its messages.
    Answer {
        conn: ConnId,
        sv: StateVector,
        rest: std::vec::IntoIter<Inbound>,
    },
    /// The whole state for `Command::State`.
    State(oneshot::Sender<Bytes>),
    /// The snapshot of a compaction.
    Snapshot(LogSummary),
}

/// How a SyncStep1 is answered.
pub(super) enum Answer {
    Ready(Bytes),
    Encode(StateVector),
}

/// What yrs holds back for missing predecessors (encoded pending blocks, pending delete
/// count), or `None`. Encodes only when something is held back, which is rare.
pub(super) fn held_back(txn: &impl ReadTxn) -> Option<(Vec<u8>, usize)> {
    let store = ReadTxn::store(txn);
    let (update, ds) = (store.pending_update(), store.pending_ds());
    if update.is_none() && ds.is_none() {
        return None;
    }
    Some((
        update.map(|p| p.update.encode_v1()).unwrap_or_default(),
        ds.map_or(0, |d| d.len()),
    ))
}

/// Whether `update` holds blocks `doc` lacks: either overlapping and extending its state, or
/// starting beyond it (a gap yrs will hold back until the predecessors arrive).
pub(super) fn carries_new(update: &Update, doc: &Doc) -> bool {
    let ours = doc.transact().state_vector();
    update.extends(&ours)
        || update
            .state_vector_lower()
            .iter()
            .any(|(client, clock)| *clock >= ours.get(client))
}

impl Room {
    /// Applies edit `id` once: the first time from `edit`, and on a retry (this incarnation's
    /// or a successor's) by applying again what the first application produced (see
    /// `applied`).
    pub(super) fn server_edit(
        &mut self,
        id: CommandId,
        edit: Option<Box<ServerEdit>>,
    ) -> EditReply {
        if let Some(effect) = self.ctx.applied.get(id) {
            metrics::counter!("chorus_edit_retries_total").increment(1);
            return EditReply::Applied(self.reapply(effect));
        }
        let Some(edit) = edit else {
            return EditReply::Lost;
        };
        EditReply::Applied(self.apply_edit(id, *edit))
    }

    /// What edit `id` did, again: the same updates, so nothing the document already holds is
    /// added twice, and whatever died with an earlier incarnation is back.
    fn reapply(&mut self, effect: Effect) -> Result<oneshot::Receiver<bool>, EditError> {
        let doc = &self.doc;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            let before = held_back(&txn);
            for u in effect.updates.iter() {
                let u = Update::decode_v1(u).map_err(|e| e.to_string())?;
                txn.apply_update(u).map_err(|e| e.to_string())?;
            }
            let after = held_back(&txn);
            // Built on content that died with the earlier incarnation (another member's
            // unsaved update): it cannot apply, and must not be reported as applied.
            if after.is_some() && after != before {
                return Err("it builds on changes that were lost with the room".to_owned());
            }
            Ok::<(), String>(())
        }));
        let effective =
            std::mem::take(&mut *self.captured.lock().unwrap_or_else(|p| p.into_inner()));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(room = %self.key(), error = %e, "an edit's retry did not apply");
                // Whatever did integrate is relayed and saved like any edit.
                self.index_server_updates(&effective);
                self.commit_effective(SERVER, effective, true, true);
                return Err(EditError::Invalid(format!("the edit was lost: {e}")));
            }
            Err(_) => {
                self.restart_after_panic("edit retry");
                return Err(EditError::Invalid("the edit could not be applied".into()));
            }
        }
        self.index_server_updates(&effective);
        self.commit_effective(SERVER, effective, true, true);
        effect.result?;
        let rx = self.batch.wait();
        self.schedule_flush();
        Ok(rx)
    }

    /// JSON operations and restores create types through yrs' API, not through an update
    /// that was checked: index what they made so later updates can build on it.
    fn index_server_updates(&mut self, effective: &[Vec<u8>]) {
        let txn = self.doc.transact();
        for u in effective {
            if let Err(e) = self.depth.check(&txn, u) {
                tracing::warn!(room = %self.key(), error = %e, "server edit past the nesting limit");
            }
        }
    }

    /// Applies a REST edit like a member's update: relayed to every member, saved in the next
    /// batch, and remembered as `id`'s effect. Refused edits change nothing.
    fn apply_edit(
        &mut self,
        id: CommandId,
        edit: ServerEdit,
    ) -> Result<oneshot::Receiver<bool>, EditError> {
        if self.doc_bytes >= self.max_document_bytes {
            return Err(EditError::TooLarge);
        }
        if let ServerEdit::Update { update, raw, .. } = &edit {
            if self.doc_bytes + raw.len() > self.max_document_bytes
                && carries_new(update, &self.doc)
            {
                return Err(EditError::TooLarge);
            }
            // A server edit must apply completely now: an update whose predecessors this
            // document lacks would be held back, and "applied" would be a lie.
            let ours = self.doc.transact().state_vector();
            if update
                .state_vector_lower()
                .iter()
                .any(|(client, clock)| *clock > ours.get(client))
            {
                return Err(EditError::Invalid(
                    "the update depends on changes this document does not have".into(),
                ));
            }
        }
        let (doc, depth) = (&self.doc, &mut self.depth);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match edit {
            ServerEdit::Update {
                update, nesting, ..
            } => {
                let mut txn = doc.transact_mut();
                if let Some(n) = nesting {
                    depth.admit(&txn, &n).map_err(|e| match e {
                        Refused::Nesting(NestingError::TooDeep { limit }) => {
                            EditError::TooDeep(limit)
                        }
                        e => EditError::Invalid(e.to_string()),
                    })?;
                }
                txn.apply_update(update)
                    .map_err(|e| EditError::Invalid(format!("invalid update: {e}")))
            }
            ServerEdit::Ops(ops) => {
                crate::docjson::apply_ops(doc, &ops).map_err(|e| EditError::Invalid(e.to_string()))
            }
            ServerEdit::Restore(state) => {
                let version = Doc::new();
                // Versions were saved from documents within the limit, but may predate it.
                DepthIndex::new(depth.max())
                    .check(&version.transact(), &state)
                    .map_err(|e| EditError::Invalid(format!("stored version refused: {e}")))?;
                let u = Update::decode_v1(&state)
                    .map_err(|e| EditError::Invalid(format!("stored version is corrupt: {e}")))?;
                version
                    .transact_mut()
                    .apply_update(u)
                    .map_err(|e| EditError::Invalid(format!("stored version is corrupt: {e}")))?;
                crate::docjson::restore_to(doc, &version)
                    .map_err(|e| EditError::Invalid(e.to_string()))
            }
        }));
        let effective =
            std::mem::take(&mut *self.captured.lock().unwrap_or_else(|p| p.into_inner()));
        let result = match outcome {
            Ok(r) => r,
            Err(_) => {
                self.restart_after_panic("server edit");
                return Err(EditError::Invalid("the edit could not be applied".into()));
            }
        };
        self.index_server_updates(&effective);
        // Remembered before anything else can happen to the room: a retry of `id` finds it.
        self.ctx.applied.remember(
            id,
            Effect {
                updates: effective
                    .iter()
                    .map(|u| Bytes::copy_from_slice(u))
                    .collect(),
                result: result.as_ref().map(|_| ()).map_err(Clone::clone),
            },
        );
        // Whatever was integrated is in the document and must be relayed and saved.
        self.commit_effective(SERVER, effective, true, true);
        result?;
        let rx = self.batch.wait();
        self.schedule_flush();
        Ok(rx)
    }

    /// Our SyncStep1, cached until the next update.
    pub(super) fn step1(&mut self) -> Bytes {
        self.step1
            .get_or_insert_with(|| {
                let sv = self.doc.transact().state_vector().encode_v1();
                Message::SyncStep1(Bytes::from(sv)).encode()
            })
            .clone()
    }

    /// What answers `conn`'s SyncStep1. The full state (cached until the next update, shared by
    /// every joiner) answers an empty state vector, and any request while an earlier answer
    /// still waits in the member's queue: the new answer replaces it there, and the full state
    /// covers every state vector, so a flood of requests costs one encode per document
    /// version, not one per request.
    pub(super) fn state_answer(&mut self, conn: ConnId, sv: StateVector) -> Option<Answer> {
        if !self.answerable(conn) {
            return None;
        }
        let waiting = self
            .members
            .get(&conn)
            .is_some_and(|m| m.conn.answer_waiting(Reply::State));
        let full = sv == StateVector::default() || waiting;
        if full && let Some(frame) = &self.full_state {
            return Some(Answer::Ready(frame.clone()));
        }
        let sv = if full { StateVector::default() } else { sv };
        if self.encode_is_long() {
            return Some(Answer::Encode(sv));
        }
        let u = self.doc.transact().encode_state_as_update_v1(&sv);
        Some(Answer::Ready(self.state_encoded(&sv, u)))
    }

    /// The SyncStep2 of an encoded state, cached if it is the full state.
    pub(super) fn state_encoded(&mut self, sv: &StateVector, update: Vec<u8>) -> Bytes {
        let frame = Message::SyncStep2(Bytes::from(update)).encode();
        if *sv == StateVector::default() {
            self.full_state = Some(frame.clone());
        }
        frame
    }

    pub(super) fn answer_state(&mut self, conn: ConnId, frame: Bytes) {
        self.send_to(conn, Reply::State, frame);
        if self
            .members
            .get(&conn)
            .is_some_and(|m| m.conn.answers_with_step1())
        {
            let step1 = self.step1();
            self.send_to(conn, Reply::Step1, step1);
        }
    }

    /// Encodes of documents this large go to the blocking pool (`encode_off_worker`).
    pub(super) fn encode_is_long(&self) -> bool {
        self.doc_bytes >= OFF_WORKER_ENCODE_BYTES
    }

    /// Encodes the document from `sv` on the blocking pool, at most `ENCODES` at a time
    /// across the node, so a runtime worker never spends a large document's encode (tens of
    /// milliseconds for megabytes). The room waits: nothing else touches its document
    /// meanwhile, so the encode never contends with an update for the document's lock.
    pub(super) async fn encode_off_worker(&self, sv: StateVector) -> Option<Vec<u8>> {
        let _permit = ENCODES.acquire().await.ok()?;
        metrics::counter!("chorus_encodes_off_worker_total").increment(1);
        let doc = self.doc.clone();
        tokio::task::spawn_blocking(move || doc.transact().encode_state_as_update_v1(&sv))
            .await
            .ok()
    }

    /// Finishes what `handle` left for an encode off the workers.
    pub(super) async fn run_deferred(&mut self, work: Deferred) {
        match work {
            Deferred::Answer { conn, sv, rest } => {
                if self.answerable(conn)
                    && let Some(u) = self.encode_off_worker(sv.clone()).await
                {
                    let frame = self.state_encoded(&sv, u);
                    self.answer_state(conn, frame);
                }
                self.inbound_all(conn, rest);
            }
            Deferred::State(reply) => {
                if let Some(u) = self.encode_off_worker(StateVector::default()).await {
                    let _ = reply.send(Bytes::from(u));
                }
            }
            Deferred::Snapshot(log) => {
                if let Some(u) = self.encode_off_worker(StateVector::default()).await {
                    self.write_snapshot(log, u);
                }
            }
        }
    }

    pub(super) fn inbound(&mut self, conn: ConnId, msg: Inbound) {
        match msg {
            // Handled by `inbound_all`.
            Inbound::SyncStep1(_) => {}
            Inbound::Update {
                update,
                raw,
                nesting,
            } => self.apply(conn, update, raw, nesting),
            Inbound::ReadOnlyStep2(update) => {
                if carries_new(&update, &self.doc) {
                    self.deny(conn, "read-only: updates are not accepted");
                } else if let Some(m) = self.members.get(&conn) {
                    m.conn.nothing_new();
                }
            }
            Inbound::Awareness(entries) => self.awareness_in(conn, entries),
            Inbound::QueryAwareness => {
                if !self.answerable(conn) {
                    return;
                }
                let msg = self
                    .presence
                    .snapshot()
                    .unwrap_or_else(|| Message::Awareness(Bytes::from_static(&[0])).encode());
                self.send_to(conn, Reply::Awareness, msg);
            }
        }
    }

    pub(super) fn deny(&mut self, conn: ConnId, reason: &str) {
        if let Some(m) = self.members.get(&conn) {
            m.conn.update_refused(reason);
        }
    }

    pub(super) fn apply(
        &mut self,
        conn: ConnId,
        update: Update,
        raw: Bytes,
        nesting: Option<Box<chorus_protocol::nesting::Nesting>>,
    ) {
        let len = raw.len();
        // The connection already refused readers' updates; this is defence in depth. A
        // member that is gone (closed right after sending) was a writer, or its update would
        // not be here.
        if self
            .members
            .get(&conn)
            .is_some_and(|m| m.conn.role != Role::Write)
        {
            self.deny(conn, "read-only: updates are not accepted");
            return;
        }
        // Only updates carrying blocks this document lacks count against the size limit (a
        // reconnect's SyncStep2 repeating known content must not). Checked only near the
        // limit: it builds the document's whole state vector.
        if self.doc_bytes + len > self.max_document_bytes && carries_new(&update, &self.doc) {
            metrics::counter!("chorus_limit_rejections_total", "limit" => "document_bytes")
                .increment(1);
            if let Some(m) = self.members.get(&conn) {
                m.conn.send_ext(&ServerMessage::Error {
                    code: ErrorCode::TooLarge,
                    message: "document size limit reached".into(),
                });
            }
            self.close_member(
                conn,
                CloseCode::DocumentTooLarge,
                "document size limit reached",
            );
            return;
        }
        let accepted = self.members.get_mut(&conn).map(|m| {
            m.accepted += 1;
            m.accepted
        });
        // yrs may panic on adversarial input that decodes; never let that kill the node.
        let (doc, depth) = (&self.doc, &mut self.depth);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            // Checked in the transaction that applies it: the depths it is checked against
            // are the document's as it applies.
            if let Some(n) = nesting {
                depth.admit(&txn, &n)?;
            }
            let before = held_back(&txn);
            let res = txn.apply_update(update);
            let after = held_back(&txn);
            // yrs holds back what lacks predecessors; if that set grew, part of this update
            // lives only in memory.
            Ok((res, after.is_some() && after != before, before.is_some()))
        }));
        let effective =
            std::mem::take(&mut *self.captured.lock().unwrap_or_else(|p| p.into_inner()));
        let (result, held_back, had_held_back) = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(refused)) => {
                // Nothing was applied.
                metrics::counter!("chorus_nesting_refusals_total", "source" => "client")
                    .increment(1);
                let (code, reason) = match refused {
                    Refused::Nesting(NestingError::TooDeep { .. }) => {
                        (CloseCode::TooDeep, "update nests deeper than the limit")
                    }
                    _ => (
                        CloseCode::InvalidPayload,
                        "update builds on content the room does not have",
                    ),
                };
                if let Some(m) = self.members.get_mut(&conn) {
                    m.accepted -= 1;
                    m.conn.send_ext(&ServerMessage::Error {
                        code: ErrorCode::TooLarge,
                        message: reason.into(),
                    });
                }
                self.close_member(conn, code, reason);
                return;
            }
            Err(_) => {
                tracing::error!(room = %self.key(), conn, "update from this connection panicked");
                self.restart_after_panic("update");
                return;
            }
        };
        // Whatever yrs integrated, even from an update it then refused, is now in the
        // document: it must be relayed and stored like any edit. If something was held back
        // before, this update may have released it: then the effective update also carries
        // other members' content that the sender has never seen, so it goes to the sender too.
        self.commit_effective(conn, effective, had_held_back, true);
        if held_back {
            // Store it as received so a restart re-queues the held-back part; the rest is a
            // duplicate, harmless to a CRDT. Copied: `raw` is a slice of the sender's frame,
            // which it would keep alive whole.
            self.doc_bytes += len;
            self.batch.push(Bytes::copy_from_slice(&raw));
        }
        if let Err(e) = result {
            tracing::info!(room = %self.key(), conn, error = %e, "update refused");
            self.close_member(conn, CloseCode::InvalidPayload, "invalid update");
            self.schedule_flush();
            return;
        }
        if let Some(accepted) = accepted {
            self.batch.ack(conn, accepted);
        }
        self.schedule_flush();
    }

    /// Relays (to everyone but `from`, unless `echo_sender`) and, if it was made here
    /// (`local`), queues for saving and publishes to the other nodes the updates a transaction
    /// produced. Another node's update is stored by that node.
    pub(super) fn commit_effective(
        &mut self,
        from: ConnId,
        effective: Vec<Vec<u8>>,
        echo_sender: bool,
        local: bool,
    ) {
        if effective.is_empty() {
            return;
        }
        self.full_state = None;
        self.step1 = None;
        let mut dead = Vec::new();
        for u in effective {
            let u = Bytes::from(u);
            let frame = Message::Update(u.clone()).encode();
            // Counted wherever it was made: every node's doc holds it.
            self.doc_bytes += u.len();
            if local {
                self.publish(crate::cluster::envelope::Payload::Update(u.clone()));
                self.batch.push(u);
            }
            let started = Instant::now();
            let mut sent = 0u64;
            for (id, m) in &self.members {
                if *id == from && !echo_sender {
                    continue;
                }
                if m.conn.send_binary(frame.clone()) {
                    sent += 1;
                } else {
                    dead.push(*id);
                }
            }
            metrics::counter!("chorus_messages_out_total").increment(sent);
            metrics::histogram!("chorus_fanout_seconds").record(started.elapsed().as_secs_f64());
        }
        if !dead.is_empty() {
            dead.sort_unstable();
            dead.dedup();
            self.leave_all(dead);
        }
    }
}
