//! The room across nodes (cluster mode): sequence numbers out and in, gaps and resync, and
//! catching up from the store when a node leaves.

use super::*;

/// A room's bookkeeping for the other nodes.
#[derive(Debug)]
pub(super) struct RemoteState {
    /// The room's topic.
    pub(super) topic: crate::cluster::broker::Topic,
    /// Numbers out and in.
    pub(super) seq: Sequence,
}

/// Sequence numbers, without I/O: ours (one per message this room publishes) and the last
/// seen from each other node, which reveal a message that never arrived.
#[derive(Debug, Default)]
pub(super) struct Sequence {
    sent: u64,
    seen: HashMap<String, u64>,
}

impl Sequence {
    /// The number of our next message.
    pub(super) fn next(&mut self) -> u64 {
        self.sent += 1;
        self.sent
    }

    /// Records message `seq` of `origin`; `true` when something of that node's may never
    /// have reached us: a number was skipped, or the first number heard from it (or from its
    /// restarted room, whose numbers go back) is not 1, so what it published before may be
    /// lost and nothing else would reveal it (one extra sync request at worst).
    pub(super) fn observe(&mut self, origin: &str, seq: u64) -> bool {
        let last = match self.seen.get_mut(origin) {
            Some(seen) => Some(std::mem::replace(seen, seq)),
            None => self.seen.insert(origin.to_owned(), seq),
        };
        match last {
            Some(l) if seq <= l => seq != 1,
            _ => seq > last.unwrap_or(0) + 1,
        }
    }
}

impl Room {
    /// Queues `payload` for the other nodes with our next number (cluster mode).
    pub(super) fn publish(&mut self, payload: crate::cluster::envelope::Payload) {
        let (Some(link), Some(remote)) = (&self.ctx.cluster, self.remote.as_mut()) else {
            return;
        };
        let seq = remote.seq.next();
        // An update is traced as a child of the `apply` that made it (when that is traced):
        // the envelope carries the span's context, and the other nodes continue it.
        let span = match &payload {
            crate::cluster::envelope::Payload::Update(_) if self.tracing => {
                tracing::debug_span!("publish", seq)
            }
            _ => tracing::Span::none(),
        };
        let _publishing = span.enter();
        let trace = crate::telemetry::trace_context(&span);
        link.broker
            .publish(&remote.topic, seq, trace.as_ref(), &payload);
    }

    /// Asks the other nodes for what this room lacks: they answer with the difference from
    /// our state vector.
    pub(super) fn request_sync(&mut self) {
        if self.remote.is_some() {
            metrics::counter!(crate::metrics::names::RESYNCS_TOTAL).increment(1);
            let sv = self.document.state_vector().encode_v1();
            self.publish(crate::cluster::envelope::Payload::SyncRequest(Bytes::from(
                sv,
            )));
        }
    }

    /// A message from another node.
    pub(super) fn remote_in(&mut self, envelope: crate::cluster::envelope::Envelope) {
        use crate::cluster::envelope::Payload;
        let (Some(link), Some(remote)) = (&self.ctx.cluster, self.remote.as_mut()) else {
            return;
        };
        // Our own messages stopped at the broker.
        let me = &link.cluster.node().id;
        let for_us = matches!(&envelope.payload, Payload::SyncReply { to, .. } if to == me);
        let gap = remote.seq.observe(&envelope.origin, envelope.seq);
        match envelope.payload {
            Payload::Update(u) => {
                // A child of the origin's `publish` when it was traced.
                let span = match &envelope.trace {
                    Some(trace) => {
                        let span = tracing::debug_span!(
                            "remote_apply",
                            origin = %envelope.origin,
                            seq = envelope.seq,
                        );
                        crate::telemetry::continue_trace(&span, trace);
                        span
                    }
                    None => tracing::Span::none(),
                };
                let _applying = span.enter();
                // Its node stored it: one more entry in the log this room may compact.
                self.log.appended(1, u.len());
                self.apply_remote([&u]);
                self.maybe_compact();
            }
            Payload::SyncRequest(sv) => {
                let Ok(sv) = StateVector::decode_v1(&sv) else {
                    tracing::debug!(room = %self.key(), "dropping a malformed sync request");
                    return;
                };
                let Some(diff) = self.document.diff(&sv) else {
                    self.restart_after_panic("encode");
                    return;
                };
                let ours = self.document.state_vector();
                // Two bytes is the empty update: the asker has everything we have.
                if diff.len() > 2 {
                    self.publish(Payload::SyncReply {
                        to: envelope.origin,
                        update: Bytes::from(diff),
                    });
                }
                // The asker holds something we lack (its publish of it was lost): ask back.
                if sv.iter().any(|(client, clock)| *clock > ours.get(client)) {
                    self.request_sync();
                }
            }
            Payload::SyncReply { update, .. } => {
                if for_us {
                    self.apply_remote([&update]);
                }
            }
            Payload::Awareness(update) => {
                match chorus_protocol::awareness::decode_update(update) {
                    Ok(entries) => self.presence.apply_remote(entries),
                    Err(_) => {
                        tracing::debug!(room = %self.key(), "dropping malformed remote awareness")
                    }
                }
                self.schedule_awareness();
            }
        }
        if gap {
            self.request_sync();
        }
    }

    /// Loads the room from the store in the background and merges it in (`Command::Stored`):
    /// a CRDT merge only adds what is missing.
    pub(super) fn catch_up(&mut self) {
        metrics::counter!(crate::metrics::names::CATCH_UPS_TOTAL).increment(1);
        self.store_work.push(StoreWork::Load);
    }

    /// Applies updates other nodes stored, in one transaction (a catch-up brings the whole
    /// stored room): what is new is relayed to every member here, and neither stored again
    /// (its node stored it) nor published again.
    pub(super) fn apply_remote<'a>(&mut self, updates: impl IntoIterator<Item = &'a Bytes>) {
        let key = self.handle.key.clone();
        let Some((refused, effective)) = self.document.merge(&key, updates) else {
            self.restart_after_panic("remote update");
            return;
        };
        let mut resync = false;
        for e in refused {
            if let StoreError::TooDeep { detail, .. } = &e {
                metrics::counter!(crate::metrics::names::NESTING_REFUSALS_TOTAL, "source" => "remote")
                    .increment(1);
                // Built on something that has not reached us yet: a resync brings both.
                resync |= detail == &Refused::Unresolved.to_string();
            }
            tracing::debug!(room = %self.key(), error = %e, "remote update refused");
        }
        if resync {
            self.request_sync();
        }
        self.commit_effective(SERVER, effective, true, false);
    }
}

#[cfg(test)]
mod tests {
    use super::Sequence;

    #[test]
    fn our_numbers_count_from_one() {
        let mut seq = Sequence::default();
        assert_eq!((seq.next(), seq.next(), seq.next()), (1, 2, 3));
    }

    #[test]
    fn a_skipped_number_is_a_gap() {
        let mut seq = Sequence::default();
        assert!(
            seq.observe("a", 5),
            "the first heard, past 1: 1 to 4 may be lost"
        );
        assert!(!seq.observe("a", 6));
        assert!(seq.observe("a", 8), "7 never arrived");
        assert!(!seq.observe("a", 9));
        assert!(!seq.observe("b", 1), "each node counts for itself, from 1");
        assert!(!seq.observe("a", 1), "a restarted room counts from 1 again");
        assert!(!seq.observe("a", 2));
        assert!(seq.observe("b", 3));
        // A restarted room heard first past its number 1: its first messages may be lost.
        assert!(seq.observe("a", 2), "back to 2, not 1");
        assert!(!seq.observe("a", 3));
    }
}
