//! Commands that must not be applied twice: an edit carries a [`CommandId`], and the room
//! remembers what applying it did (the effective updates the transaction produced, and its
//! answer) in [`Applied`], which outlives the room's incarnation. A retry of the same id, on
//! the same incarnation or its successor, applies those same updates again instead of running
//! the edit again: a CRDT update applied twice changes nothing, so the edit's effect is in the
//! document once, whether the first incarnation stored it before it died or lost it with it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::EditError;

/// Names one command across its retries; unique in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandId(u64);

impl CommandId {
    /// A new id.
    pub fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What applying an edit did.
#[derive(Debug, Clone)]
pub struct Effect {
    /// The effective updates its transaction produced, in order.
    pub updates: std::sync::Arc<[Bytes]>,
    /// Its answer: a refused edit is refused again (what it integrated before it was refused
    /// is in `updates` all the same).
    pub result: Result<(), EditError>,
}

/// Effects of edits whose caller has not had an answer yet. The registry forgets an id once
/// its caller has the answer, so this holds only edits in flight; the bounds are a safety net
/// (the oldest go first).
#[derive(Debug, Default)]
pub struct Applied {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    effects: HashMap<CommandId, Effect>,
    order: VecDeque<CommandId>,
    bytes: usize,
}

/// At most this many effects are remembered...
const MAX_EFFECTS: usize = 4096;
/// ...holding at most this many bytes of updates.
const MAX_BYTES: usize = 64 << 20;

impl Applied {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers what applying `id` did.
    pub fn remember(&self, id: CommandId, effect: Effect) {
        let size = effect.updates.iter().map(Bytes::len).sum::<usize>();
        let mut inner = self.lock();
        if let Some(old) = inner.effects.insert(id, effect) {
            inner.bytes -= old.updates.iter().map(Bytes::len).sum::<usize>();
        } else {
            inner.order.push_back(id);
        }
        inner.bytes += size;
        while inner.effects.len() > MAX_EFFECTS || inner.bytes > MAX_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.effects.remove(&oldest) {
                inner.bytes -= gone.updates.iter().map(Bytes::len).sum::<usize>();
            }
        }
    }

    /// What applying `id` did, if it was applied.
    pub fn get(&self, id: CommandId) -> Option<Effect> {
        self.lock().effects.get(&id).cloned()
    }

    /// Forgets `id` (its caller has the answer; no retry follows).
    pub fn forget(&self, id: CommandId) {
        let mut inner = self.lock();
        if let Some(gone) = inner.effects.remove(&id) {
            inner.bytes -= gone.updates.iter().map(Bytes::len).sum::<usize>();
            inner.order.retain(|o| *o != id);
        }
    }

    /// Effects remembered now.
    pub fn len(&self) -> usize {
        self.lock().effects.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Faults a test can inject into a node's rooms, through the Rust API only: no configuration,
/// request or frame reaches them. Each is armed once and fires once.
#[derive(Debug, Default)]
pub struct Faults {
    after_edit: std::sync::atomic::AtomicU8,
}

/// How a room dies where a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Exits without answering, after saving what it applied (as if killed after its batch
    /// committed).
    AfterSaving,
    /// Exits without answering and without saving what is pending (as if killed before its
    /// batch was written).
    Discarding,
}

impl Faults {
    /// The next room to apply an edit dies between applying it and answering.
    pub fn crash_after_next_edit(&self, crash: Crash) {
        let code = match crash {
            Crash::AfterSaving => 1,
            Crash::Discarding => 2,
        };
        self.after_edit.store(code, Ordering::Release);
    }

    /// The fault armed for after an edit, disarming it.
    pub(super) fn take_after_edit(&self) -> Option<Crash> {
        // A load first: the swap's write would contend on every edit of every room.
        if self.after_edit.load(Ordering::Acquire) == 0 {
            return None;
        }
        match self.after_edit.swap(0, Ordering::AcqRel) {
            1 => Some(Crash::AfterSaving),
            2 => Some(Crash::Discarding),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(sizes: &[usize]) -> Effect {
        Effect {
            updates: sizes.iter().map(|n| Bytes::from(vec![0u8; *n])).collect(),
            result: Ok(()),
        }
    }

    #[test]
    fn effects_are_kept_until_forgotten_and_bounded() {
        let applied = Applied::default();
        let (a, b) = (CommandId::fresh(), CommandId::fresh());
        assert_ne!(a, b);
        applied.remember(a, effect(&[3, 4]));
        applied.remember(b, effect(&[1]));
        assert_eq!(applied.get(a).map(|e| e.updates.len()), Some(2));
        applied.forget(a);
        assert!(applied.get(a).is_none());
        assert_eq!(applied.len(), 1);
        applied.forget(b);
        assert!(applied.is_empty());

        // Past the byte bound the oldest go first.
        let ids: Vec<CommandId> = (0..3).map(|_| CommandId::fresh()).collect();
        for id in &ids {
            applied.remember(*id, effect(&[MAX_BYTES / 2]));
        }
        assert!(applied.get(ids[0]).is_none());
        assert!(applied.get(ids[1]).is_some() && applied.get(ids[2]).is_some());
        // Past the count bound too.
        for _ in 0..MAX_EFFECTS {
            applied.remember(CommandId::fresh(), effect(&[]));
        }
        assert_eq!(applied.len(), MAX_EFFECTS);
        assert!(applied.get(ids[2]).is_none());
    }

    #[test]
    fn a_fault_fires_once() {
        let faults = Faults::default();
        assert_eq!(faults.take_after_edit(), None);
        faults.crash_after_next_edit(Crash::Discarding);
        assert_eq!(faults.take_after_edit(), Some(Crash::Discarding));
        assert_eq!(faults.take_after_edit(), None);
    }
}
