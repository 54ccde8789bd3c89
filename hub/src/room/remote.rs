//! The room across nodes (cluster mode): sequence numbers out and in, gaps and resync, and
//! catching up from the store when a node leaves.

use super::*;

/// A room's bookkeeping for the bus.
#[derive(Debug)]
pub(super) struct RemoteState {
    /// The room's topic.
    pub(super) topic: crate::cluster::broker::Topic,
    /// Our last message's number.
    pub(super) sent: u64,
    /// The last number seen from each other node.
    pub(super) seen: HashMap<String, u64>,
}

impl Room {
    /// Queues `payload` for the other nodes with our next number (cluster mode).
    pub(super) fn publish(&mut self, payload: crate::cluster::envelope::Payload) {
        let (Some(link), Some(remote)) = (&self.ctx.cluster, self.remote.as_mut()) else {
            return;
        };
        remote.sent += 1;
        link.broker.publish(&remote.topic, remote.sent, &payload);
    }

    /// Asks the other nodes for what this room lacks: they answer with the difference from
    /// our state vector.
    pub(super) fn request_sync(&mut self) {
        if self.remote.is_some() {
            metrics::counter!("chorus_resyncs_total").increment(1);
            let sv = self.doc.transact().state_vector().encode_v1();
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
        let last = match remote.seen.get_mut(&envelope.origin) {
            Some(seen) => Some(std::mem::replace(seen, envelope.seq)),
            None => remote.seen.insert(envelope.origin.clone(), envelope.seq),
        };
        // A number skipped: something of that node's never reached us.
        let gap = last.is_some_and(|l| envelope.seq > l + 1);
        match envelope.payload {
            Payload::Update(u) => {
                // Its node stored it: one more entry in the log this room may compact.
                self.log_len += 1;
                self.log_bytes += u.len();
                self.apply_remote([&u]);
                self.maybe_compact();
            }
            Payload::SyncRequest(sv) => {
                let Ok(sv) = StateVector::decode_v1(&sv) else {
                    tracing::debug!(room = %self.key(), "dropping a malformed sync request");
                    return;
                };
                let (diff, ours) = {
                    let txn = self.doc.transact();
                    (txn.encode_state_as_update_v1(&sv), txn.state_vector())
                };
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
        metrics::counter!("chorus_catch_ups_total").increment(1);
        let store = self.ctx.store.clone();
        let key = self.key().clone();
        let tx = self.handle.sender();
        tokio::spawn(async move {
            match store.load(&key).await {
                Ok(loaded) => {
                    let _ = tx
                        .send(Command::Stored {
                            loaded: Box::new(loaded),
                        })
                        .await;
                }
                Err(e) => tracing::warn!(room = %key, error = %e, "catch-up from the store failed"),
            }
        });
    }

    /// Applies updates other nodes stored, in one transaction (a catch-up brings the whole
    /// stored room): what is new is relayed to every member here, and neither stored again
    /// (its node stored it) nor published again.
    pub(super) fn apply_remote<'a>(&mut self, updates: impl IntoIterator<Item = &'a Bytes>) {
        let (doc, key, depth) = (&self.doc, &self.handle.key, &mut self.depth);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            chorus_persistence::merge_into_doc(doc, key, updates, depth)
        }));
        let effective =
            std::mem::take(&mut *self.captured.lock().unwrap_or_else(|p| p.into_inner()));
        match outcome {
            Ok(refused) => {
                let mut resync = false;
                for e in refused {
                    if let StoreError::TooDeep { detail, .. } = &e {
                        metrics::counter!("chorus_nesting_refusals_total", "source" => "remote")
                            .increment(1);
                        // Built on something that has not reached us yet: a resync brings both.
                        resync |= detail == &Refused::Unresolved.to_string();
                    }
                    tracing::debug!(room = %self.key(), error = %e, "remote update refused");
                }
                if resync {
                    self.request_sync();
                }
            }
            Err(_) => {
                self.restart_after_panic("remote update");
                return;
            }
        }
        self.commit_effective(SERVER, effective, true, false);
    }
}
