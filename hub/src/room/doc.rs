//! The room's document without I/O: the yrs document, the index of its nesting depths that
//! every update is checked against before yrs sees it (yrs recurses without a limit), the
//! effective updates its observer captures (what a transaction actually added, which is what
//! is relayed, stored and published), what waits for missing predecessors (yrs' pending update
//! for missing origins, and [`PastHoles`] for blocks past a hole in their client's clocks,
//! which yrs must never see), and the answers to a state vector cached until the next
//! change. `document.rs` is the room's glue
//! around it: who may apply, limits, fan-out and the batch.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chorus_persistence::nesting::Refused;
use chorus_persistence::{DepthIndex, PastHoles, RoomKey, StoreError};
use chorus_protocol::nesting::Clocks;
use chorus_protocol::sync::Message;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

/// What applying one update did.
#[derive(Debug)]
pub(super) struct Outcome {
    /// The effective updates the transaction produced (empty if nothing was new).
    pub(super) effective: Vec<Vec<u8>>,
    /// yrs' verdict. Whatever it integrated before refusing is in `effective` all the same.
    pub(super) result: Result<(), String>,
    /// Part of this update lacks predecessors and is held back in memory only.
    pub(super) held_back: bool,
    /// Something was held back before: this update may have released it, so `effective` may
    /// carry other members' content that the sender has never seen.
    pub(super) released: bool,
}

/// Why an update was not applied at all.
#[derive(Debug)]
pub(super) enum NotApplied {
    /// Refused before yrs saw it (nesting past the limit, or built on a type it lacks).
    Refused(Refused),
    /// yrs panicked: the document may be half-applied, and the room must restart.
    Panicked,
}

/// The document and what is derived from it.
pub(super) struct Document {
    doc: Doc,
    depth: DepthIndex,
    // What waits for earlier clocks of its clients.
    holes: PastHoles,
    // Effective updates the doc observer captured during the last transaction.
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    // Our SyncStep1, shared by every joiner until the next change.
    step1: Option<Bytes>,
    // SyncStep2 of the whole document, shared by every joiner until the next change.
    full_state: Option<Bytes>,
}

impl Document {
    /// `doc` with its depth index and what waits for earlier clocks (as loaded), observed
    /// from now on.
    pub(super) fn new(doc: Doc, depth: DepthIndex, holes: PastHoles) -> Result<Self, StoreError> {
        let captured = Arc::new(Mutex::new(Vec::new()));
        let sink = captured.clone();
        doc.observe_update_v1("chorus-room", move |_, e| {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.update.clone());
        })
        .map_err(|e| StoreError::Task(format!("observe: {e}")))?;
        Ok(Self {
            doc,
            depth,
            holes,
            captured,
            step1: None,
            full_state: None,
        })
    }

    /// An empty document (a room before it loads).
    pub(super) fn empty(max_depth: u32) -> Self {
        Self {
            doc: Doc::new(),
            depth: DepthIndex::new(max_depth),
            holes: PastHoles::default(),
            captured: Arc::default(),
            step1: None,
            full_state: None,
        }
    }

    /// The yrs document (reads; an encode off the runtime workers clones it).
    pub(super) fn doc(&self) -> &Doc {
        &self.doc
    }

    fn take_effective(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.captured.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Applies a member's decoded update (`raw` as received, `clocks` from its scan) in one
    /// transaction, after checking what its nesting needs from the document in that same
    /// transaction (the depths it is checked against are the document's as it applies). What
    /// would start past a hole in its client's clocks waits in [`PastHoles`] instead of
    /// reaching yrs. Never panics: yrs may, on adversarial input that decodes.
    pub(super) fn apply(
        &mut self,
        update: Update,
        raw: &[u8],
        nesting: Option<&chorus_protocol::nesting::Nesting>,
        clocks: Clocks,
    ) -> Result<Outcome, NotApplied> {
        let (doc, depth, holes) = (&self.doc, &mut self.depth, &mut self.holes);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            // yrs' clocks as the transaction starts: its update event computes them at
            // commit anyway, so asking now costs nothing.
            let split = match clocks {
                Clocks::Nothing => None,
                _ => PastHoles::cut(raw, clocks, txn.before_state()),
            };
            if split.as_ref().is_some_and(|s| holes.would_overflow(s)) {
                return Err(Refused::Unresolved);
            }
            if let Some(n) = nesting {
                depth.admit(&txn, n)?;
            }
            let before = held_back(&txn);
            let waited = !holes.is_empty();
            let applied = holes.apply(&mut txn, update, split);
            let after = held_back(&txn);
            // yrs holds back what lacks predecessors; if that set grew, or part of the update
            // waits past a hole, part of it lives only in memory.
            Ok((
                applied.result,
                applied.held || (after.is_some() && after != before),
                before.is_some() || waited,
            ))
        }));
        let effective = self.take_effective();
        let (result, held_back, released) = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(refused)) => return Err(NotApplied::Refused(refused)),
            Err(_) => return Err(NotApplied::Panicked),
        };
        if !effective.is_empty() {
            self.changed();
        }
        Ok(Outcome {
            effective,
            result,
            held_back,
            released,
        })
    }

    /// Runs `edit` in a transaction of its own making (a server edit through yrs' API),
    /// returning its answer and the effective updates. Types it created are indexed, so later
    /// updates can build on them. `None` if yrs panicked.
    pub(super) fn edit<T>(
        &mut self,
        edit: impl FnOnce(&Doc, &mut DepthIndex) -> T,
    ) -> Option<(T, Vec<Vec<u8>>)> {
        let (doc, depth) = (&self.doc, &mut self.depth);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| edit(doc, depth)));
        let effective = self.take_effective();
        let answer = outcome.ok()?;
        if !effective.is_empty() {
            self.changed();
        }
        let txn = self.doc.transact();
        for u in &effective {
            if let Err(e) = self.depth.check(&txn, u) {
                tracing::warn!(error = %e, "server edit past the nesting limit");
            }
        }
        Some((answer, effective))
    }

    /// Merges updates other nodes stored (or the store holds) in one transaction, skipping
    /// any that is corrupt or nests too deeply (returned). `None` if yrs panicked.
    pub(super) fn merge<'a>(
        &mut self,
        key: &RoomKey,
        updates: impl IntoIterator<Item = &'a Bytes>,
    ) -> Option<(Vec<StoreError>, Vec<Vec<u8>>)> {
        let (doc, depth, holes) = (&self.doc, &mut self.depth, &mut self.holes);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            chorus_persistence::merge_into_doc(doc, key, updates, depth, holes)
        }));
        let effective = self.take_effective();
        let refused = outcome.ok()?;
        if !effective.is_empty() {
            self.changed();
        }
        Some((refused, effective))
    }

    /// The document changed: cached answers are stale.
    fn changed(&mut self) {
        self.step1 = None;
        self.full_state = None;
    }

    /// Our state vector.
    pub(super) fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// Our SyncStep1, cached until the next change.
    pub(super) fn step1(&mut self) -> Bytes {
        self.step1
            .get_or_insert_with(|| {
                let sv = self.doc.transact().state_vector().encode_v1();
                Message::SyncStep1(Bytes::from(sv)).encode()
            })
            .clone()
    }

    /// The cached SyncStep2 of the whole document, if it is current.
    pub(super) fn full_state(&self) -> Option<&Bytes> {
        self.full_state.as_ref()
    }

    /// What a state vector `sv` lacks, as a v1 update; `None` if yrs panicked (it merges
    /// what it holds back into the answer, and a held-back block it cannot re-read panics
    /// there: the room must restart).
    pub(super) fn diff(&self, sv: &StateVector) -> Option<Vec<u8>> {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            encode_with_held(&self.doc, &self.holes, sv, false)
        }))
        .ok()
        .flatten()
    }

    /// The SyncStep2 of an encoded state, cached if it is the full state.
    pub(super) fn state_encoded(&mut self, sv: &StateVector, update: Vec<u8>) -> Bytes {
        let frame = Message::SyncStep2(Bytes::from(update)).encode();
        if *sv == StateVector::default() {
            self.full_state = Some(frame.clone());
        }
        frame
    }

    /// Whether `update` holds blocks this document lacks: either overlapping and extending
    /// its state, or starting beyond it (a gap yrs will hold back until the predecessors
    /// arrive).
    pub(super) fn carries_new(&self, update: &Update) -> bool {
        let ours = self.state_vector();
        update.extends(&ours)
            || update
                .state_vector_lower()
                .iter()
                .any(|(client, clock)| *clock >= ours.get(client))
    }

    /// Whether part of update `raw` (with `clocks` from its scan) starts beyond what this
    /// document has in its client's clocks (it would be held back).
    pub(super) fn lacks_predecessors_of(&self, raw: &[u8], clocks: Clocks) -> bool {
        clocks != Clocks::Nothing && PastHoles::cut(raw, clocks, &self.state_vector()).is_some()
    }

    /// What waits for earlier clocks of its clients.
    pub(super) fn holes(&self) -> &PastHoles {
        &self.holes
    }
}

/// What `doc` lacks against `sv`, as a v1 update, with what waits in `holes` merged in (as yrs
/// merges its own pending blocks): a peer then holds it back too, and a snapshot keeps it.
/// If yrs cannot merge them (it decoded every part before, so it should), `strict` (a
/// snapshot, which replaces the updates they came in) gives `None`; otherwise the document's
/// part alone is answered.
pub(super) fn encode_with_held(
    doc: &Doc,
    holes: &PastHoles,
    sv: &StateVector,
    strict: bool,
) -> Option<Vec<u8>> {
    let state = doc.transact().encode_state_as_update_v1(sv);
    if holes.is_empty() {
        return Some(state);
    }
    match holes.merged_into(&state) {
        Ok(all) => Some(all),
        Err(e) => {
            tracing::error!(error = %e, "held-back updates do not merge into the state");
            (!strict).then_some(state)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_persistence::holes::MAX_HELD_RUNS;
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Text};

    fn document() -> Document {
        Document::new(
            Doc::with_client_id(1),
            DepthIndex::new(64),
            PastHoles::default(),
        )
        .expect("observe")
    }

    /// Applies `u` as the room does a member's: with its bytes and its scan's clocks.
    fn apply(d: &mut Document, u: Update) -> Result<Outcome, NotApplied> {
        let raw = u.encode_v1();
        let nesting = chorus_protocol::nesting::scan_update(&raw, 64).expect("scans");
        let n = (!nesting.is_empty()).then_some(&nesting);
        d.apply(u, &raw, n, nesting.clocks)
    }

    /// Two consecutive edits of client 9 on text `t`, as updates.
    fn edits() -> (Update, Update) {
        let src = Doc::with_client_id(9);
        let t = src.get_or_insert_text("t");
        t.insert(&mut src.transact_mut(), 0, "ab");
        let first = src
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let sv = src.transact().state_vector();
        t.insert(&mut src.transact_mut(), 2, "cd");
        let second = src.transact().encode_state_as_update_v1(&sv);
        (
            Update::decode_v1(&first).expect("first"),
            Update::decode_v1(&second).expect("second"),
        )
    }

    fn text(d: &Document) -> String {
        let t = d.doc().get_or_insert_text("t");
        t.get_string(&d.doc().transact())
    }

    #[test]
    fn the_effective_update_is_what_was_new_and_a_repeat_adds_nothing() {
        let mut d = document();
        let (first, _) = edits();
        let raw = first.encode_v1();
        let out = apply(&mut d, first).expect("applied");
        assert_eq!(out.result, Ok(()));
        assert_eq!(out.effective.len(), 1);
        assert!(!out.held_back && !out.released);
        assert_eq!(text(&d), "ab");
        let again = apply(&mut d, Update::decode_v1(&raw).expect("decode")).expect("applied");
        assert!(
            again.effective.is_empty(),
            "nothing new: nothing to relay or store"
        );
    }

    #[test]
    fn an_update_without_its_predecessors_is_held_back_until_they_come() {
        let mut d = document();
        let (first, second) = edits();
        let raw = second.encode_v1();
        let clocks = chorus_protocol::nesting::scan_update(&raw, 64)
            .expect("scans")
            .clocks;
        assert!(d.lacks_predecessors_of(&raw, clocks));
        assert!(d.carries_new(&second));
        let out = apply(&mut d, second).expect("applied");
        assert!(out.held_back, "it lives only in memory");
        assert!(out.effective.is_empty());
        assert_eq!(text(&d), "");
        let out = apply(&mut d, first).expect("applied");
        assert!(out.released, "something was held back before");
        assert!(!out.held_back);
        assert_eq!(text(&d), "abcd", "the first released the second");
        // The effective update carries both, so every member gets the whole.
        let replica = Doc::new();
        for u in &out.effective {
            replica
                .transact_mut()
                .apply_update(Update::decode_v1(u).expect("decode"))
                .expect("apply");
        }
        assert_eq!(
            replica
                .get_or_insert_text("t")
                .get_string(&replica.transact()),
            "abcd"
        );
    }

    /// Client 4 types "ab" at clock 2 into text "t" (past a hole when clocks 0 and 1 are
    /// missing), as bytes.
    const PAST_A_HOLE: [u8; 12] = [1, 1, 4, 2, 4, 1, 1, b't', 2, b'a', b'b', 0];

    #[test]
    fn what_starts_past_a_hole_waits_outside_yrs_is_answered_and_counted() {
        let mut d = document();
        let out = apply(&mut d, Update::decode_v1(&PAST_A_HOLE).expect("decodes")).expect("ok");
        assert!(out.held_back && out.effective.is_empty());
        assert_eq!(d.holes().len(), 1);
        assert!(
            held_back(&d.doc().transact()).is_none(),
            "yrs saw none of it"
        );
        assert_eq!(
            d.state_vector(),
            StateVector::default(),
            "no skip in yrs' store"
        );
        // Not shown either (docs/SECURITY.md Z3: yrs showed such text, which no encode held).
        assert_eq!(text(&d), "");
        // A joiner's answer carries it, as yrs' answers carry its pending blocks.
        let answer = d.diff(&StateVector::default()).expect("encodes");
        let carried = Update::decode_v1(&answer)
            .expect("decodes")
            .insertions(true);
        assert!(carried.contains(&yrs::ID::new(yrs::block::ClientID::new(4), 3)));
        // Client 4's first two clocks ("xy") fill the hole: both go in, in clock order.
        let fill = [1, 1, 4, 0, 4, 1, 1, b't', 2, b'x', b'y', 0];
        let out = apply(&mut d, Update::decode_v1(&fill).expect("decodes")).expect("ok");
        assert!(out.released && !out.held_back);
        assert!(d.holes().is_empty());
        // As yrs has it when they come in order.
        let reference = Doc::new();
        for u in [&fill[..], &PAST_A_HOLE[..]] {
            let u = Update::decode_v1(u).expect("decodes");
            reference.transact_mut().apply_update(u).expect("applies");
        }
        let want = reference.get_or_insert_text("t");
        assert_eq!(text(&d), want.get_string(&reference.transact()));
        assert_eq!(text(&d).len(), 4);
    }

    #[test]
    fn a_member_cannot_hold_back_more_than_the_bound() {
        let mut d = document();
        // Runs of one client with gaps between them: each waits on its own.
        for i in 0..MAX_HELD_RUNS {
            let mut u = PAST_A_HOLE.to_vec();
            let clock = 2 + 3 * i as u64;
            let mut var = bytes::BytesMut::new();
            chorus_protocol::lib0::write_var_uint(&mut var, clock);
            u.splice(3..4, var.iter().copied());
            let out = apply(&mut d, Update::decode_v1(&u).expect("decodes")).expect("held");
            assert!(out.held_back);
            assert_eq!(d.holes().len(), i + 1);
        }
        let mut another = PAST_A_HOLE;
        another[2] = 5;
        match apply(&mut d, Update::decode_v1(&another).expect("decodes")) {
            Err(NotApplied::Refused(Refused::Unresolved)) => {}
            other => panic!("not refused: {other:?}"),
        }
        // What adds no run is taken: a repeat, and what starts within the clocks.
        let repeat = apply(&mut d, Update::decode_v1(&PAST_A_HOLE).expect("decodes"));
        assert!(repeat.is_ok());
        let fill = [1, 1, 4, 0, 4, 1, 1, b't', 1, b'x', 0];
        assert!(apply(&mut d, Update::decode_v1(&fill).expect("decodes")).is_ok());
    }

    #[test]
    fn cached_answers_last_until_the_document_changes() {
        let mut d = document();
        let empty_step1 = d.step1();
        assert_eq!(d.step1(), empty_step1, "cached");
        let frame = d.state_encoded(
            &StateVector::default(),
            d.diff(&StateVector::default()).expect("encodes"),
        );
        assert_eq!(d.full_state(), Some(&frame));
        // A partial answer is not the full state, and is not cached as one.
        let mut sv = StateVector::default();
        sv.set_max(yrs::block::ClientID::new(5), 1);
        d.state_encoded(&sv, d.diff(&sv).expect("encodes"));
        assert_eq!(d.full_state(), Some(&frame));

        let (first, _) = edits();
        apply(&mut d, first).expect("applied");
        assert!(d.full_state().is_none(), "stale after a change");
        assert_ne!(d.step1(), empty_step1);
    }

    #[test]
    fn a_nesting_past_the_limit_is_refused_before_yrs_sees_it() {
        use chorus_protocol::nesting::{NestingError, scan_update};
        let mut d = Document::new(
            Doc::with_client_id(1),
            DepthIndex::new(8),
            PastHoles::default(),
        )
        .expect("observe");
        let offer = |d: &mut Document, u: Vec<u8>| {
            let nesting = scan_update(&u, 8).expect("each alone is shallow");
            d.apply(
                Update::decode_v1(&u).expect("decode"),
                &u,
                Some(&nesting),
                nesting.clocks,
            )
        };
        // Maps nested one update at a time: the root is depth 1, the 7th nested map 8.
        let mut chain = chorus_persistence::testing::MapChain::new(7);
        for level in 2..=8 {
            let out = offer(&mut d, chain.deeper()).unwrap_or_else(|e| panic!("{level}: {e:?}"));
            assert_eq!(out.result, Ok(()));
        }
        let before = d.state_vector();
        match offer(&mut d, chain.deeper()) {
            Err(NotApplied::Refused(Refused::Nesting(NestingError::TooDeep { limit: 8 }))) => {}
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(d.state_vector(), before, "nothing applied");
    }

    #[test]
    fn merges_skip_what_is_corrupt_and_server_edits_are_indexed() {
        let mut d = document();
        let key = RoomKey::new("t", "r");
        let (first, second) = edits();
        let good = [
            Bytes::from(first.encode_v1()),
            Bytes::from(second.encode_v1()),
        ];
        let junk = Bytes::from_static(&[0xff, 0x01]);
        let (refused, effective) = d
            .merge(&key, [&good[0], &junk, &good[1]])
            .expect("no panic");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(effective.len(), 1, "one transaction");
        assert_eq!(text(&d), "abcd");

        let (answer, effective) = d
            .edit(|doc, _| {
                let t = doc.get_or_insert_text("t");
                t.insert(&mut doc.transact_mut(), 0, ">");
                7
            })
            .expect("no panic");
        assert_eq!(answer, 7);
        assert_eq!(effective.len(), 1);
        assert_eq!(text(&d), ">abcd");
    }
}
