//! Compaction: when the log is long enough, the document in memory becomes the snapshot of
//! what the log holds (in a cluster, on the room's home node, rebuilt from the store).

use super::*;

/// The two steps of a compaction, each the answer of a store task.
pub(super) enum CompactionStep {
    /// What the log holds: every entry up to `last_id` has committed, so the document as the
    /// room holds it now (every committed update was applied before it was stored) covers it.
    Summed(LogSummary),
    /// The snapshot is written and the log up to it trimmed.
    Written(CompactStats),
    /// Another node was compacting the room (cluster mode): nothing changed.
    Skipped,
}

/// A store call the room's logic asked for; the actor makes it (`Room::start_store_work`), so
/// that nothing but the actor does I/O. Each answers on its channel.
pub(super) enum StoreWork {
    /// Compaction, step 1: what the log holds.
    Summarize(oneshot::Sender<Result<CompactionStep, StoreError>>),
    /// Compaction, step 2 in a cluster: the store rebuilds the room under its lock.
    CompactExclusive(oneshot::Sender<Result<CompactionStep, StoreError>>),
    /// Compaction, step 2 alone: the document becomes the snapshot of the log up to `upto`.
    WriteSnapshot {
        upto: i64,
        snapshot: Vec<u8>,
        stats: CompactStats,
        done: oneshot::Sender<Result<CompactionStep, StoreError>>,
    },
    /// Catching up: what the store holds, back to the room as `Command::Stored`.
    Load,
}

impl Room {
    /// Starts the store calls the last command asked for, each on a task of its own.
    pub(super) fn start_store_work(&mut self) {
        for work in std::mem::take(&mut self.store_work) {
            let store = self.ctx.store.clone();
            let key = self.key().clone();
            match work {
                StoreWork::Summarize(done) => {
                    tokio::spawn(async move {
                        let _ =
                            done.send(store.log_summary(&key).await.map(CompactionStep::Summed));
                    });
                }
                StoreWork::CompactExclusive(done) => {
                    tokio::spawn(async move {
                        let res = store.compact_exclusive(&key).await.map(|stats| {
                            stats.map_or(CompactionStep::Skipped, CompactionStep::Written)
                        });
                        let _ = done.send(res);
                    });
                }
                StoreWork::WriteSnapshot {
                    upto,
                    snapshot,
                    stats,
                    done,
                } => {
                    tokio::spawn(async move {
                        let res = store.write_snapshot(&key, upto, &snapshot).await;
                        let _ = done.send(res.map(|()| CompactionStep::Written(stats)));
                    });
                }
                StoreWork::Load => {
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
                            Err(e) => {
                                tracing::warn!(room = %key, error = %e, "catch-up from the store failed")
                            }
                        }
                    });
                }
            }
        }
    }
}

/// A log this many times smaller than the snapshot is not compacted yet (`compaction_due`).
pub(super) const COMPACT_LOG_FRACTION: usize = 4;

/// In a cluster, a node that is not a room's home compacts it only once the log is this many
/// times longer than the home would let it grow (`Room::may_compact_here`).
pub(super) const OFF_HOME_COMPACT_FACTOR: usize = 4;

/// After a compaction failed, or was skipped because another node held the room's lock, the
/// room waits this long before trying again (the log stays due; without a pause every flush
/// would try).
pub(super) const COMPACT_RETRY: Duration = Duration::from_secs(1);

/// What the store holds for the room, as the room counts it, and when that calls for a
/// compaction: no I/O.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Log {
    /// Entries in the log since the snapshot.
    pub(super) entries: usize,
    /// Their bytes.
    pub(super) bytes: usize,
    /// The snapshot's size.
    pub(super) snapshot_bytes: usize,
}

impl Log {
    /// `entries` more entries of `bytes` (this node's batch, or another node's update).
    pub(super) fn appended(&mut self, entries: usize, bytes: usize) {
        self.entries += entries;
        self.bytes += bytes;
    }

    /// A compaction rewrites the whole document, so it waits for `threshold` log entries *and*
    /// a log of at least a quarter of the snapshot's size: its cost per stored update then
    /// stays flat in the document's size. (Every 500 updates, a 5 MB room spent most of its
    /// CPU re-encoding itself: 240 against 65 us per edit for an empty one.)
    pub(super) fn due(&self, threshold: usize) -> bool {
        self.entries > threshold
            && self.bytes.saturating_mul(COMPACT_LOG_FRACTION) >= self.snapshot_bytes
    }

    /// Due even for a node that is not the room's home: `OFF_HOME_COMPACT_FACTOR` times past
    /// both of [`Log::due`]'s limits, which the home never lets happen while it holds the room.
    pub(super) fn due_off_home(&self, threshold: usize) -> bool {
        self.entries > threshold.saturating_mul(OFF_HOME_COMPACT_FACTOR)
            && self.bytes.saturating_mul(COMPACT_LOG_FRACTION)
                >= self.snapshot_bytes.saturating_mul(OFF_HOME_COMPACT_FACTOR)
    }

    /// A compaction merged `stats.merged` entries into a new snapshot. Returns how the
    /// document's stored size changes (the merged entries and the old snapshot go, the new
    /// snapshot comes).
    pub(super) fn compacted(&mut self, stats: &CompactStats) -> (usize, usize) {
        self.entries = self.entries.saturating_sub(stats.merged);
        self.bytes = self.bytes.saturating_sub(stats.merged_bytes);
        self.snapshot_bytes = stats.snapshot_bytes;
        (
            stats.merged_bytes + stats.previous_snapshot_bytes,
            stats.snapshot_bytes,
        )
    }
}

impl Room {
    pub(super) fn compaction_due(&self) -> bool {
        self.log.due(self.ctx.limits.compact_threshold)
    }

    /// Compaction, step 1, when one is due here and none runs: sum up the log. The summary
    /// must come before the encoding (step 2), so that everything it counts is already in the
    /// document.
    pub(super) fn maybe_compact(&mut self) {
        if self.compaction.is_some()
            || !self.compaction_due()
            || self.compact_after.is_some_and(|t| Instant::now() < t)
            || !self.may_compact_here()
        {
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.store_work.push(StoreWork::Summarize(tx));
        self.compaction = Some(rx);
    }

    /// Alone, every room compacts where it is. In a cluster, a room's home node compacts it;
    /// another node with the room open does too once the log is `OFF_HOME_COMPACT_FACTOR`
    /// times past both limits of `compaction_due` (entries and the share of the snapshot),
    /// which the home never lets happen while it holds the room (it counts every node's
    /// updates): so a room nobody opened on its home is still compacted. Either way the
    /// store's lock lets one node at a time do it.
    pub(super) fn may_compact_here(&self) -> bool {
        match &self.ctx.cluster {
            None => true,
            Some(link) => {
                link.cluster.is_home(&self.key().room)
                    || self.log.due_off_home(self.ctx.limits.compact_threshold)
            }
        }
    }

    /// Compaction, step 2. Alone, the room's document covers the log (`write_snapshot`). In a
    /// cluster the other nodes append to the log too and what they stored may not have
    /// reached this document yet, so the store rebuilds it, unless another node already is.
    /// The summary also corrects the counts here, which other nodes' compactions make stale.
    pub(super) fn summed(&mut self, log: LogSummary) {
        if self.ctx.cluster.is_none() {
            if log.entries > 0 {
                // Encoded off the workers: compactions happen to large documents.
                self.deferred = Some(Box::new(Deferred::Snapshot(log)));
            }
            return;
        }
        self.log = Log {
            entries: log.entries,
            bytes: log.bytes,
            snapshot_bytes: log.snapshot_bytes,
        };
        if !(self.compaction_due() && self.may_compact_here()) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.store_work.push(StoreWork::CompactExclusive(tx));
        self.compaction = Some(rx);
    }

    /// Compaction, step 2: the document as the room holds it becomes the snapshot of the log
    /// up to `log.last_id`. Encoding the live document costs a fraction of rebuilding it from
    /// the store (5 MB of text with 28,000 edits: 29 against 365 ms); it holds held-back
    /// updates too: yrs encodes its pending blocks, and the room merges in what waits past a
    /// hole (`encode_with_held`).
    pub(super) fn write_snapshot(&mut self, log: LogSummary, snapshot: Vec<u8>) {
        let stats = CompactStats {
            merged: log.entries,
            merged_bytes: log.bytes,
            previous_snapshot_bytes: log.snapshot_bytes,
            snapshot_bytes: snapshot.len(),
        };
        let (tx, rx) = oneshot::channel();
        self.store_work.push(StoreWork::WriteSnapshot {
            upto: log.last_id,
            snapshot,
            stats,
            done: tx,
        });
        self.compaction = Some(rx);
    }

    pub(super) fn compacted(&mut self, stats: CompactStats) {
        if stats.merged == 0 {
            // Another node emptied the log between our summary and our lock: nothing done.
            return;
        }
        metrics::counter!(crate::metrics::names::COMPACTIONS_TOTAL).increment(1);
        let (gone, came) = self.log.compacted(&stats);
        self.doc_bytes = self.doc_bytes.saturating_add(came).saturating_sub(gone);
        // What was stored while this one ran may already call for the next: start it now,
        // while the room may be quiet, rather than at its next edit.
        self.maybe_compact();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compaction_is_due_past_the_threshold_and_a_quarter_of_the_snapshot() {
        let mut log = Log {
            entries: 0,
            bytes: 0,
            snapshot_bytes: 4_000,
        };
        log.appended(10, 999);
        assert!(!log.due(10), "10 entries are not past 10");
        log.appended(1, 0);
        assert!(!log.due(10), "999 bytes are under a quarter of 4,000");
        log.appended(0, 1);
        assert!(log.due(10));
        // A node that is not home waits four times longer on both counts.
        assert!(!log.due_off_home(10));
        log.appended(30, 3_000);
        assert!(log.due_off_home(10));
        // An empty snapshot: entries decide.
        let fresh = Log {
            entries: 11,
            bytes: 1,
            snapshot_bytes: 0,
        };
        assert!(fresh.due(10));
    }

    #[test]
    fn a_compaction_moves_the_merged_entries_into_the_snapshot() {
        let mut log = Log {
            entries: 50,
            bytes: 5_000,
            snapshot_bytes: 10_000,
        };
        // Another node stored 8 more entries meanwhile; this compaction merged the first 42.
        let stats = CompactStats {
            merged: 42,
            merged_bytes: 4_200,
            previous_snapshot_bytes: 10_000,
            snapshot_bytes: 11_000,
        };
        let (gone, came) = log.compacted(&stats);
        assert_eq!((gone, came), (14_200, 11_000));
        assert_eq!(
            log,
            Log {
                entries: 8,
                bytes: 800,
                snapshot_bytes: 11_000
            }
        );
        // Counts never go below zero, even when another node's compaction made them stale.
        log.compacted(&CompactStats {
            merged: 100,
            merged_bytes: 100_000,
            previous_snapshot_bytes: 0,
            snapshot_bytes: 1,
        });
        assert_eq!((log.entries, log.bytes), (0, 0));
    }
}
