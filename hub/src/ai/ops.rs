//! Revert, accept, reject: changes to a run's content at any later time, by anyone with write
//! access to its room, each in one transaction of a fresh peer (so they are stored, relayed
//! and attributable like any edit).

use std::sync::Arc;
use std::time::Duration;

use chorus_ai_bridge::revert::revert;
use chorus_ai_bridge::writer::{accept, keep, keep_text, unmark_text};
use chorus_persistence::{AiRun, AiRunUpdate};
use yrs::{Any, Map, Out, ReadTxn, Transact};

use super::{Asker, Assistant, PROVENANCE, Refusal, run::xml_roots};
use crate::auth::Role;
use crate::peer::PeerOptions;

/// What to do to a run's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Remove exactly the run's items.
    Revert,
    /// A suggestion becomes ordinary content.
    Accept,
    /// A suggestion's content goes.
    Reject,
}

impl Op {
    fn status(self) -> &'static str {
        match self {
            Op::Revert => "reverted",
            Op::Accept => "accepted",
            Op::Reject => "rejected",
        }
    }
}

const PATIENCE: Duration = Duration::from_secs(30);

impl Assistant {
    /// Reverts, accepts or rejects run `id` of the asker's room.
    pub async fn change(&self, who: &Asker, id: &str, op: Op) -> Result<AiRun, Refusal> {
        if who.role != Role::Write {
            return Err(Refusal::new(
                "forbidden",
                "read-only members may not change runs",
            ));
        }
        let record = self.record(who, id).await?;
        if matches!(op, Op::Accept | Op::Reject) && record.mode != "suggest" {
            return Err(Refusal::new("bad_request", "the run is not a suggestion"));
        }
        if matches!(op, Op::Accept | Op::Reject)
            && matches!(record.status.as_str(), "accepted" | "rejected" | "reverted")
        {
            return Err(Refusal::new(
                "bad_request",
                format!("the suggestion was already {}", record.status),
            ));
        }
        if let Some(active) = self.active(id) {
            if op == Op::Accept {
                return Err(Refusal::new(
                    "bad_request",
                    "the suggestion is still being written",
                ));
            }
            // A revert or reject of a running run stops it first.
            active.cancel.cancel();
            let mut ended = active.ended.subscribe();
            let _ = tokio::time::timeout(PATIENCE, ended.wait_for(|e| *e)).await;
        }
        let Some(registry) = self.registry.upgrade() else {
            return Err(Refusal::new("unavailable", "the node is stopping"));
        };
        let mut peer = registry
            .peer(&who.key, PeerOptions::named("Assistant"))
            .await
            .map_err(|_| Refusal::new("unavailable", "the room cannot be opened"))?;
        if peer.synced(PATIENCE).await.is_err() {
            return Err(Refusal::new("unavailable", "the room did not answer"));
        }
        let doc = peer.doc().clone();
        let fragments = xml_roots(&doc);
        let texts: Vec<yrs::TextRef> = {
            let names: Vec<String> = doc
                .transact()
                .root_refs()
                .filter(|(_, o)| matches!(o, Out::YText(_)))
                .map(|(n, _)| n.to_owned())
                .collect();
            names
                .iter()
                .map(|n| doc.get_or_insert_text(n.as_str()))
                .collect()
        };
        let provenance = doc.get_or_insert_map(PROVENANCE);
        let client = record.client_id;
        let run = record.id.clone();
        let schema = self.schema.clone();
        let key = client.to_string();
        let edited = peer
            .edit(|txn| {
                let entry = match provenance.get(txn, &key) {
                    Some(Out::Any(Any::Map(m))) => Some((*m).clone()),
                    _ => None,
                };
                match op {
                    Op::Revert => revert(txn, client, &fragments).map(|_| ()),
                    Op::Reject => {
                        revert(txn, client, &fragments)?;
                        // What it suggested deleting stays, unmarked.
                        for f in &fragments {
                            keep(txn, f, &schema, &run);
                        }
                        for t in &texts {
                            keep_text(txn, t, &schema, &run);
                        }
                        Ok(())
                    }
                    Op::Accept => {
                        for f in &fragments {
                            accept(txn, f, &schema, &run);
                        }
                        for t in &texts {
                            unmark_text(txn, t, &schema, &run);
                        }
                        Ok(())
                    }
                }?;
                // The provenance entry (the revert removed the run's own) says what happened.
                let mut entry = entry.unwrap_or_default();
                entry.insert("run".into(), Any::from(run.as_str()));
                entry.insert("status".into(), Any::from(op.status()));
                provenance.insert(txn, key.clone(), Any::Map(Arc::new(entry)));
                Ok::<(), chorus_ai_bridge::revert::RevertError>(())
            })
            .await;
        let outcome = match edited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(run = %id, error = %e, "cannot change an ai run");
                Err(Refusal::new("unavailable", "the change failed"))
            }
            Err(e) => Err(Refusal::new("unavailable", e.to_string())),
        };
        if outcome.is_ok() && peer.durable(PATIENCE).await.is_err() {
            tracing::warn!(run = %id, "ai run change not confirmed durable");
        }
        peer.leave().await;
        outcome?;
        let update = AiRunUpdate {
            status: op.status().into(),
            ..AiRunUpdate::default()
        };
        self.store
            .update_ai_run(&who.key.tenant, id, &update)
            .await
            .map_err(|_| Refusal::new("unavailable", "the run cannot be recorded"))?;
        self.record(who, id).await
    }
}
