use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use chorus_protocol::nesting::Clocks;

use crate::holes::PastHoles;
use crate::nesting::{DepthIndex, HARD_MAX_NESTING_DEPTH};
use crate::{DocStore, LoadedDoc, RoomKey, StoreError};

impl LoadedDoc {
    /// Applies the snapshot and the log into a fresh document. Entries that do not decode are
    /// skipped and reported (the hub validates updates before storing them, so this only
    /// happens if the database was edited by hand); the rest of the room stays available.
    /// Entries nesting deeper than [`HARD_MAX_NESTING_DEPTH`] are skipped and reported the
    /// same way: yrs would overflow the stack on them.
    pub fn into_doc(&self, key: &RoomKey) -> (Doc, Vec<StoreError>) {
        let (doc, _, errors) = self.into_doc_holding(key);
        (doc, errors)
    }

    /// [`LoadedDoc::into_doc`], with what waits for earlier clocks of its clients (which the
    /// document does not show, and a snapshot must keep).
    pub fn into_doc_holding(&self, key: &RoomKey) -> (Doc, PastHoles, Vec<StoreError>) {
        let doc = Doc::new();
        let mut depth = DepthIndex::new(HARD_MAX_NESTING_DEPTH);
        let mut holes = PastHoles::default();
        let errors = merge_into_doc(
            &doc,
            key,
            self.snapshot.iter().chain(self.updates.iter()),
            &mut depth,
            &mut holes,
        );
        (doc, holes, errors)
    }
}

/// Applies encoded v1 updates to `doc` in one transaction, returning the ones that failed.
/// Each is checked against `depth` (the index of `doc`) before yrs decodes it; one that nests
/// too deeply is skipped and reported as [`StoreError::TooDeep`]. What would start past a hole
/// in its client's clocks waits in `holes` (see [`PastHoles`]).
pub fn merge_into_doc<'a>(
    doc: &Doc,
    key: &RoomKey,
    updates: impl IntoIterator<Item = &'a bytes::Bytes>,
    depth: &mut DepthIndex,
    holes: &mut PastHoles,
) -> Vec<StoreError> {
    let mut errors = Vec::new();
    let mut txn = doc.transact_mut();
    // A lower bound of the document's clocks (they only grow): what passes against it passes
    // against the document; what does not is checked again against the exact clocks. Kept
    // up as updates integrate whole, so a log of one client's runs builds it once.
    let mut have: Option<StateVector> = None;
    for bytes in updates {
        let corrupt = |detail: String| StoreError::Corrupt {
            room: key.to_string(),
            detail,
        };
        let clocks = match depth.check(&txn, bytes) {
            Ok(clocks) => clocks,
            Err(e) => {
                errors.push(StoreError::TooDeep {
                    room: key.to_string(),
                    detail: e.to_string(),
                });
                continue;
            }
        };
        let u = match Update::decode_v1(bytes) {
            Ok(u) => u,
            Err(e) => {
                errors.push(corrupt(e.to_string()));
                continue;
            }
        };
        let split = match clocks {
            Clocks::Nothing => None,
            _ => {
                let bound = have.get_or_insert_with(|| txn.state_vector());
                match PastHoles::cut(bytes, clocks, bound) {
                    None => None,
                    Some(_) => {
                        *bound = txn.state_vector();
                        PastHoles::cut(bytes, clocks, bound)
                    }
                }
            }
        };
        let whole = split.is_none();
        let applied = holes.apply(&mut txn, u, split);
        let integrated = applied.result.is_ok();
        if let Err(e) = applied.result {
            errors.push(corrupt(e));
        }
        // Given whole to yrs and nothing left pending: all of it integrated.
        if whole
            && integrated
            && txn.store().pending_update().is_none()
            && let (Some(bound), Clocks::One { client, to, .. }) = (&mut have, clocks)
        {
            bound.set_max(yrs::block::ClientID::new(client), to);
        }
    }
    errors
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Log entries merged (and deleted).
    pub merged: usize,
    /// Their total size.
    pub merged_bytes: usize,
    /// Size of the snapshot before.
    pub previous_snapshot_bytes: usize,
    /// Size of the new snapshot.
    pub snapshot_bytes: usize,
}

/// Merges a room's snapshot and log into a new snapshot and trims the log.
///
/// The highest log id is read *before* encoding and only entries up to it are deleted, so an
/// update appended while this runs is kept.
pub async fn compact(store: &dyn DocStore, key: &RoomKey) -> Result<CompactStats, StoreError> {
    let loaded = store.load(key).await?;
    let Some(merged) = merge_loaded(key, loaded).await? else {
        return Ok(CompactStats::default());
    };
    store
        .write_snapshot(key, merged.upto, &merged.snapshot)
        .await?;
    Ok(merged.stats)
}

/// A snapshot to write: the whole document up to log id `upto`.
pub(crate) struct Merged {
    pub upto: i64,
    pub snapshot: Vec<u8>,
    pub stats: CompactStats,
}

/// Encodes what `load` returned as one snapshot; `None` when the log is empty (nothing to
/// merge). Shared by [`compact`] and the stores' `compact_exclusive`.
pub(crate) async fn merge_loaded(
    key: &RoomKey,
    loaded: LoadedDoc,
) -> Result<Option<Merged>, StoreError> {
    if loaded.updates.is_empty() {
        return Ok(None);
    }
    let upto = loaded.last_id;
    let mut stats = CompactStats {
        merged: loaded.updates.len(),
        merged_bytes: loaded.updates.iter().map(bytes::Bytes::len).sum(),
        previous_snapshot_bytes: loaded.snapshot.as_ref().map_or(0, bytes::Bytes::len),
        snapshot_bytes: 0,
    };
    let k = key.clone();
    // Encoding a large document is CPU-bound; keep it off the async workers.
    let snapshot = tokio::task::spawn_blocking(move || {
        let (doc, holes, errors) = loaded.into_doc_holding(&k);
        for e in errors {
            tracing::error!(room = %k, error = %e, "skipping corrupt stored update during compaction");
        }
        let state = doc.transact().encode_state_as_update_v1(&StateVector::default());
        // What waits for earlier clocks is kept: the updates it came in are deleted.
        if holes.is_empty() {
            Ok(state)
        } else {
            holes.merged_into(&state)
        }
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?
    .map_err(|e| StoreError::Task(format!("merging held-back updates: {e}")))?;
    stats.snapshot_bytes = snapshot.len();
    Ok(Some(Merged {
        upto,
        snapshot,
        stats,
    }))
}
