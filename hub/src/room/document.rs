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
    /// The plain text for `Command::Lines`.
    Lines {
        max_chars: usize,
        reply: oneshot::Sender<Vec<crate::docjson::Line>>,
    },
}

/// The document's plain text (search), `None` if reading it panicked (a read changes nothing:
/// the room goes on, and the indexer reads the store instead).
pub(super) fn read_lines(doc: &Doc, max_chars: usize) -> Option<Vec<crate::docjson::Line>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::docjson::plain_lines(doc, max_chars)
    }))
    .ok()
}

/// How a SyncStep1 is answered.
pub(super) enum Answer {
    Ready(Bytes),
    Encode(StateVector),
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
            metrics::counter!(crate::metrics::names::EDIT_RETRIES_TOTAL).increment(1);
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
        let outcome = self.document.edit(|doc, _| {
            let mut txn = doc.transact_mut();
            let before = held_back(&txn);
            for u in effect.updates.iter() {
                // Past a hole, it builds on what died with the earlier incarnation; yrs
                // must not see it (see `PastHoles`).
                let sv = txn.state_vector();
                let split = chorus_protocol::nesting::holes::split_past_holes(u, |c| {
                    chorus_persistence::holes::clock_of(&sv, c)
                });
                if !matches!(split, Ok(None)) {
                    return Err("it builds on changes that were lost with the room".to_owned());
                }
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
        });
        let Some((outcome, effective)) = outcome else {
            self.restart_after_panic("edit retry");
            return Err(EditError::Invalid("the edit could not be applied".into()));
        };
        // Whatever integrated is relayed and saved like any edit.
        self.commit_effective(SERVER, effective, true, true);
        // The edit's own updates are written again too: the dead room may have published them
        // without storing them, and another node's copy of them (which that node does not
        // store either) may be what this document already holds. A duplicate in the log
        // changes nothing.
        for u in effect.updates.iter() {
            self.doc_bytes += u.len();
            self.batch.push(u.clone());
        }
        if let Err(e) = outcome {
            tracing::warn!(room = %self.key(), error = %e, "an edit's retry did not apply");
            return Err(EditError::Invalid(format!("the edit was lost: {e}")));
        }
        effect.result?;
        let rx = self.batch.wait();
        self.schedule_flush();
        Ok(rx)
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
        if let ServerEdit::Update {
            update,
            raw,
            clocks,
            ..
        } = &edit
        {
            if self.doc_bytes + raw.len() > self.max_document_bytes
                && self.document.carries_new(update)
            {
                return Err(EditError::TooLarge);
            }
            // A server edit must apply completely now: an update whose predecessors this
            // document lacks would be held back, and "applied" would be a lie.
            if self.document.lacks_predecessors_of(raw, *clocks) {
                return Err(EditError::Invalid(
                    "the update depends on changes this document does not have".into(),
                ));
            }
        }
        let outcome = self.document.edit(|doc, depth| match edit {
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
                crate::docjson::apply_ops_limited(doc, &ops, depth.max() as usize)
                    .map_err(|e| EditError::Invalid(e.to_string()))
            }
            ServerEdit::Restore(state) => {
                let version = Doc::new();
                // Versions were saved from documents within the limit, but may predate it.
                let clocks = DepthIndex::new(depth.max())
                    .check(&version.transact(), &state)
                    .map_err(|e| EditError::Invalid(format!("stored version refused: {e}")))?;
                let u = Update::decode_v1(&state)
                    .map_err(|e| EditError::Invalid(format!("stored version is corrupt: {e}")))?;
                // Like any update: what would start past a hole never reaches yrs.
                let mut txn = version.transact_mut();
                let split = PastHoles::cut(&state, clocks, &txn.state_vector());
                PastHoles::default()
                    .apply(&mut txn, u, split)
                    .result
                    .map_err(|e| EditError::Invalid(format!("stored version is corrupt: {e}")))?;
                drop(txn);
                crate::docjson::restore_to(doc, &version)
                    .map_err(|e| EditError::Invalid(e.to_string()))
            }
        });
        let Some((result, effective)) = outcome else {
            self.restart_after_panic("server edit");
            return Err(EditError::Invalid("the edit could not be applied".into()));
        };
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
        if full && let Some(frame) = self.document.full_state() {
            return Some(Answer::Ready(frame.clone()));
        }
        let sv = if full { StateVector::default() } else { sv };
        if self.encode_is_long() {
            return Some(Answer::Encode(sv));
        }
        let Some(u) = self.document.diff(&sv) else {
            self.restart_after_panic("encode");
            return None;
        };
        Some(Answer::Ready(self.document.state_encoded(&sv, u)))
    }

    pub(super) fn answer_state(&mut self, conn: ConnId, frame: Bytes) {
        self.send_to(conn, Reply::State, frame);
        if self
            .members
            .get(&conn)
            .is_some_and(|m| m.conn.answers_with_step1())
        {
            let step1 = self.document.step1();
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
    pub(super) async fn encode_off_worker(&self, sv: StateVector, strict: bool) -> Option<Vec<u8>> {
        metrics::counter!(crate::metrics::names::ENCODES_OFF_WORKER_TOTAL).increment(1);
        self.off_worker(move |doc, holes| super::doc::encode_with_held(doc, holes, &sv, strict))
            .await
    }

    /// Runs `read` over the whole document on the blocking pool, as one of `ENCODES` (see
    /// `encode_off_worker`, which is one such read); `None` if it could not run or gave none.
    async fn off_worker<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Doc, &PastHoles) -> Option<T> + Send + 'static,
    ) -> Option<T> {
        let _permit = ENCODES.acquire().await.ok()?;
        let doc = self.document.doc().clone();
        let holes = self.document.holes().clone();
        tokio::task::spawn_blocking(move || read(&doc, &holes))
            .await
            .ok()
            .flatten()
    }

    /// Finishes what `handle` left for an encode off the workers.
    pub(super) async fn run_deferred(&mut self, work: Deferred) {
        match work {
            Deferred::Answer { conn, sv, rest } => {
                if self.answerable(conn)
                    && let Some(u) = self.encode_off_worker(sv.clone(), false).await
                {
                    let frame = self.document.state_encoded(&sv, u);
                    self.answer_state(conn, frame);
                }
                self.inbound_all(conn, rest);
            }
            Deferred::State(reply) => {
                if let Some(u) = self.encode_off_worker(StateVector::default(), false).await {
                    let _ = reply.send(Bytes::from(u));
                }
            }
            Deferred::Lines { max_chars, reply } => {
                if let Some(lines) = self
                    .off_worker(move |doc, _| read_lines(doc, max_chars))
                    .await
                {
                    let _ = reply.send(lines);
                }
            }
            Deferred::Snapshot(log) => {
                // What waits past a hole is in the snapshot, or it is not written: the log
                // entries it came in are deleted with it.
                if let Some(u) = self.encode_off_worker(StateVector::default(), true).await {
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
                clocks,
            } => self.apply(conn, update, raw, nesting, clocks),
            Inbound::ReadOnlyStep2(update) => {
                if self.document.carries_new(&update) {
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
        clocks: chorus_protocol::nesting::Clocks,
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
        if self.doc_bytes + len > self.max_document_bytes && self.document.carries_new(&update) {
            metrics::counter!(crate::metrics::names::LIMIT_REJECTIONS_TOTAL, "limit" => "document_bytes")
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
        // A child of the frame's `update` span (entered by the room), when traced.
        let span = if self.tracing {
            tracing::debug_span!("apply", bytes = len)
        } else {
            tracing::Span::none()
        };
        let _applying = span.enter();
        let accepted = self.members.accept(conn);
        let outcome = match self
            .document
            .apply(update, &raw, nesting.as_deref(), clocks)
        {
            Ok(outcome) => outcome,
            Err(NotApplied::Refused(refused)) => {
                // Nothing was applied.
                metrics::counter!(crate::metrics::names::NESTING_REFUSALS_TOTAL, "source" => "client")
                    .increment(1);
                let (code, reason, error) = match refused {
                    Refused::Nesting(NestingError::TooDeep { .. }) => (
                        CloseCode::TooDeep,
                        "update nests deeper than the limit",
                        ErrorCode::TooLarge,
                    ),
                    _ => (
                        CloseCode::InvalidPayload,
                        "update builds on content the room does not have",
                        ErrorCode::TooLarge,
                    ),
                };
                self.members.unaccept(conn);
                if let Some(m) = self.members.get(&conn) {
                    m.conn.send_ext(&ServerMessage::Error {
                        code: error,
                        message: reason.into(),
                    });
                }
                self.close_member(conn, code, reason);
                return;
            }
            Err(NotApplied::Panicked) => {
                tracing::error!(room = %self.key(), conn, "update from this connection panicked");
                self.restart_after_panic("update");
                return;
            }
        };
        let (result, held_back) = (outcome.result, outcome.held_back);
        // Whatever yrs integrated, even from an update it then refused, is now in the
        // document: it must be relayed and stored like any edit. If something was held back
        // before, this update may have released it: then the effective update also carries
        // other members' content that the sender has never seen, so it goes to the sender too.
        self.commit_effective(conn, outcome.effective, outcome.released, true);
        self.batch.traced(&span);
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
            let except = (!echo_sender).then_some(from);
            let sent = self.members.fan_out(&frame, except, &mut dead);
            metrics::counter!(crate::metrics::names::MESSAGES_OUT_TOTAL).increment(sent);
            metrics::histogram!(crate::metrics::names::FANOUT_SECONDS)
                .record(started.elapsed().as_secs_f64());
        }
        if !dead.is_empty() {
            dead.sort_unstable();
            dead.dedup();
            self.leave_all(dead);
        }
    }
}
