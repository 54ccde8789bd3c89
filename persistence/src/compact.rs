use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::{DocStore, LoadedDoc, RoomKey, StoreError};

impl LoadedDoc {
    /// Applies the snapshot and the log into a fresh document. Entries that do not decode are
    /// skipped and reported (the hub validates updates before storing them, so this only
    /// happens if the database was edited by hand); the rest of the room stays available.
    pub fn into_doc(&self, key: &RoomKey) -> (Doc, Vec<StoreError>) {
        let doc = Doc::new();
        let errors = merge_into_doc(&doc, key, self.snapshot.iter().chain(self.updates.iter()));
        (doc, errors)
    }
}

/// Applies encoded v1 updates to `doc` in one transaction, returning the ones that failed.
pub fn merge_into_doc<'a>(
    doc: &Doc,
    key: &RoomKey,
    updates: impl IntoIterator<Item = &'a bytes::Bytes>,
) -> Vec<StoreError> {
    let mut errors = Vec::new();
    let mut txn = doc.transact_mut();
    for bytes in updates {
        let corrupt = |detail: String| StoreError::Corrupt {
            room: key.to_string(),
            detail,
        };
        match Update::decode_v1(bytes) {
            Ok(u) => {
                if let Err(e) = txn.apply_update(u) {
                    errors.push(corrupt(e.to_string()));
                }
            }
            Err(e) => errors.push(corrupt(e.to_string())),
        }
    }
    errors
}

/// Merges a room's snapshot and log into a new snapshot and trims the log.
///
/// The highest log id is read *before* encoding and only entries up to it are deleted, so an
/// update appended while this runs is kept. Returns the number of log entries merged.
pub async fn compact(store: &dyn DocStore, key: &RoomKey) -> Result<usize, StoreError> {
    let loaded = store.load(key).await?;
    if loaded.updates.is_empty() {
        return Ok(0);
    }
    let upto = loaded.last_id;
    let merged = loaded.updates.len();
    let k = key.clone();
    // Encoding a large document is CPU-bound; keep it off the async workers.
    let snapshot = tokio::task::spawn_blocking(move || {
        let (doc, errors) = loaded.into_doc(&k);
        for e in errors {
            tracing::error!(room = %k, error = %e, "skipping corrupt stored update during compaction");
        }
        doc.transact().encode_state_as_update_v1(&StateVector::default())
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?;
    store.write_snapshot(key, upto, &snapshot).await?;
    Ok(merged)
}
