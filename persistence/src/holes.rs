//! What a document holds back because it would start past a hole in its clients' clocks: a
//! queue of its own beside yrs' pending update, so that yrs never integrates a block past a
//! hole (see `chorus_protocol::nesting::holes` for the use-after-free that follows when it
//! does). Every path that hands updates to a room's document goes through it: members'
//! updates, other nodes' updates, and the store's at load.

use std::collections::BTreeMap;

use chorus_protocol::nesting::Clocks;
use chorus_protocol::nesting::holes::{Run, Split, split_past_holes};
use yrs::block::ClientID;
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, TransactionMut, Update};

/// Most runs a document holds back for members' updates. A client typing ahead of a hole waits
/// as one run (its updates continue one another), so only runs that leave gaps between them
/// count up. Past it a member's update that would add one is refused: updates whose
/// predecessors never come must not grow what every later update rechecks. What the store
/// holds is always taken.
pub const MAX_HELD_RUNS: usize = 1024;

/// Runs of blocks waiting for earlier clocks of their clients.
#[derive(Debug, Clone, Default)]
pub struct PastHoles {
    // Per client, its runs by first clock.
    runs: BTreeMap<u64, Vec<Run>>,
    count: usize,
}

/// What applying an update did.
#[derive(Debug)]
pub struct Applied {
    /// Part of it now waits here.
    pub held: bool,
    /// yrs' verdict on what it was given (what it integrated before an error stays).
    pub result: Result<(), String>,
}

/// The clock `sv` holds for `client`. Ids past 53 bits are refused by the scan before this is
/// reached; they are masked here only so that this never panics.
pub fn clock_of(sv: &StateVector, client: u64) -> u32 {
    sv.get(&ClientID::new(client & ((1 << 53) - 1)))
}

impl PastHoles {
    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Runs held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Cuts update `raw` (with `clocks` from its scan) against a document's clocks `sv`:
    /// `None` if nothing of it lies past a hole. The usual update (one client's run) is
    /// decided from `clocks` alone; only one with several runs or a skip inside is walked.
    pub fn cut(raw: &[u8], clocks: Clocks, sv: &StateVector) -> Option<Split> {
        match clocks {
            Clocks::Nothing => None,
            Clocks::One { client, from, .. } if from <= clock_of(sv, client) => None,
            // It passed the scan, so it walks; if it did not, yrs refuses it whole.
            _ => split_past_holes(raw, |c| clock_of(sv, c)).ok().flatten(),
        }
    }

    /// Whether holding `split` would pass [`MAX_HELD_RUNS`].
    pub fn would_overflow(&self, split: &Split) -> bool {
        let new = split.held.iter().filter(|r| !self.absorbs(r)).count();
        self.count + new > MAX_HELD_RUNS
    }

    /// Applies in `txn` an update cut by [`PastHoles::cut`] (`decoded` whole if `split` is
    /// `None`, else the ready part, holding the rest), then lets go on whatever waited for
    /// what it brought.
    pub fn apply(
        &mut self,
        txn: &mut TransactionMut,
        decoded: Update,
        split: Option<Split>,
    ) -> Applied {
        let (ready, held) = match split {
            None => (Some(decoded), false),
            Some(split) => {
                for run in split.held {
                    self.hold(run);
                }
                match split.ready.map(|r| Update::decode_v1(&r)) {
                    Some(Err(e)) => {
                        return Applied {
                            held: true,
                            result: Err(e.to_string()),
                        };
                    }
                    Some(Ok(u)) => (Some(u), true),
                    None => (None, true),
                }
            }
        };
        let result = match ready {
            Some(u) => txn.apply_update(u).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        self.release(txn);
        Applied { held, result }
    }

    /// Whether `run` adds no run to what is held: it repeats a held run, or continues one.
    fn absorbs(&self, run: &Run) -> bool {
        self.runs
            .get(&run.client)
            .is_some_and(|list| list.iter().any(|r| repeats(r, run) || r.to == run.from))
    }

    fn hold(&mut self, run: Run) {
        let list = self.runs.entry(run.client).or_default();
        // A repeat of what waits already (a client's resync): nothing to add.
        if list.iter().any(|r| repeats(r, &run)) {
            return;
        }
        // Continuing a run: the two wait as one.
        if let Some(r) = list.iter_mut().find(|r| r.to == run.from) {
            r.append(run);
            return;
        }
        let at = list.partition_point(|r| r.from <= run.from);
        list.insert(at, run);
        self.count += 1;
    }

    /// Applies every held run whose wait is over (or its ready part), until none is.
    fn release(&mut self, txn: &mut TransactionMut) {
        // Each round hands yrs at least one held block, so this ends.
        while !self.is_empty() {
            let sv = txn.state_vector();
            let mut due = Vec::new();
            for (client, list) in self.runs.iter_mut() {
                let have = clock_of(&sv, *client);
                let waiting = list.partition_point(|r| r.from <= have);
                due.extend(list.drain(..waiting));
            }
            if due.is_empty() {
                return;
            }
            self.runs.retain(|_, list| !list.is_empty());
            self.count -= due.len();
            for run in due {
                let update = run.to_update();
                // A run may hold a skip (from a merged update) with content past it.
                let sv = txn.state_vector();
                let ready = match split_past_holes(&update, |c| clock_of(&sv, c)) {
                    Ok(None) => Some(update),
                    Ok(Some(split)) => {
                        for run in split.held {
                            self.hold(run);
                        }
                        split.ready
                    }
                    // Cut from an update that walked: cannot happen.
                    Err(_) => None,
                };
                let Some(ready) = ready else { continue };
                match Update::decode_v1(&ready) {
                    Ok(u) => {
                        if let Err(e) = txn.apply_update(u) {
                            tracing::warn!(error = %e, "a held-back update did not apply");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "a held-back update does not decode"),
                }
            }
        }
    }

    /// `state` (a v1 update of a whole document) with the held runs merged in, for a
    /// snapshot that replaces the updates they came from. `Err` if yrs cannot merge them.
    /// It decodes and encodes the whole state: callers skip it when nothing is held.
    pub fn merged_into(&self, state: &[u8]) -> Result<Vec<u8>, String> {
        let runs: Vec<Vec<u8>> = self.runs.values().flatten().map(Run::to_update).collect();
        yrs::merge_updates_v1(std::iter::once(state).chain(runs.iter().map(Vec::as_slice)))
            .map_err(|e| e.to_string())
    }
}

/// Whether held run `r` holds all of `run` (a repeat: same client, same clocks).
fn repeats(r: &Run, run: &Run) -> bool {
    r.from <= run.from && run.to <= r.to
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::nesting::{NestingError, scan_update};
    use yrs::{Doc, GetString, Text, Transact};

    // The cut itself (`chorus_protocol::nesting::holes`), tested here where yrs is at hand.

    /// Client 5 types `parts`.
    fn typing(parts: &[&str]) -> Vec<Vec<u8>> {
        crate::testing::typing(5, parts)
    }

    fn offer(doc: &Doc, holes: &mut PastHoles, u: &[u8]) -> Applied {
        let clocks = chorus_protocol::nesting::scan_update(u, 64)
            .expect("scans")
            .clocks;
        let mut txn = doc.transact_mut();
        let split = PastHoles::cut(u, clocks, &txn.state_vector());
        holes.apply(&mut txn, Update::decode_v1(u).expect("decodes"), split)
    }

    #[test]
    fn updates_out_of_order_wait_here_and_yrs_never_holds_a_skip() {
        let u = typing(&["ab", "cd", "ef"]);
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut holes = PastHoles::default();
        assert!(offer(&doc, &mut holes, &u[2]).held);
        assert!(offer(&doc, &mut holes, &u[1]).held);
        assert_eq!(holes.len(), 2, "the second arrived first: two runs");
        assert!(offer(&doc, &mut holes, &u[1]).held);
        assert_eq!(holes.len(), 2, "a repeat adds nothing");
        // Nothing reached yrs: its state names nothing of client 5 (with a skip it would).
        assert_eq!(clock_of(&doc.transact().state_vector(), 5), 0);
        let snapshot = holes
            .merged_into(
                &doc.transact()
                    .encode_state_as_update_v1(&StateVector::default()),
            )
            .expect("merges");
        let first = offer(&doc, &mut holes, &u[0]);
        assert!(!first.held && first.result.is_ok());
        assert!(holes.is_empty());
        assert_eq!(text.get_string(&doc.transact()), "abcdef");
        // The snapshot written while they waited holds them: loaded, then the first edit,
        // it gives the same text.
        let again = Doc::new();
        let t2 = again.get_or_insert_text("t");
        let mut h2 = PastHoles::default();
        assert!(offer(&again, &mut h2, &snapshot).held);
        offer(&again, &mut h2, &u[0]);
        assert_eq!(t2.get_string(&again.transact()), "abcdef");
    }

    /// A log merged in one transaction (a load): the clocks the merge keeps as it goes must
    /// not run ahead of the document when yrs holds an update back for a missing origin.
    #[test]
    fn a_load_holds_what_starts_past_a_hole_behind_an_update_yrs_holds_back() {
        let five = typing(&["ab", "cd"]);
        // Client 6 has both of 5's edits, types "X" after "cd" (its origin is 5's "d"), then
        // "Y" at the start (which needs only 5's "a").
        let six = Doc::with_client_id(6);
        let text = six.get_or_insert_text("t");
        for u in &five {
            six.transact_mut()
                .apply_update(Update::decode_v1(u).expect("decodes"))
                .expect("applies");
        }
        let edit = |at: u32, s: &str| {
            let before = six.transact().state_vector();
            text.insert(&mut six.transact_mut(), at, s);
            bytes::Bytes::from(six.transact().encode_state_as_update_v1(&before))
        };
        let (x, y) = (edit(4, "X"), edit(0, "Y"));
        let key = crate::RoomKey::new("t", "r");
        let log = [bytes::Bytes::from(five[0].clone()), x, y];
        let doc = Doc::new();
        let mut depth = crate::DepthIndex::new(64);
        let mut holes = PastHoles::default();
        let errors = crate::merge_into_doc(&doc, &key, log.iter(), &mut depth, &mut holes);
        assert!(errors.is_empty(), "{errors:?}");
        // yrs holds "X" back (5's "cd" is missing); "Y" must wait here, not reach yrs past
        // the hole "X" leaves in client 6's clocks.
        assert_eq!(holes.len(), 1);
        assert_eq!(clock_of(&doc.transact().state_vector(), 6), 0, "no skip");
        // The missing edit comes: everything goes in, as client 6 has it.
        let rest = [bytes::Bytes::from(five[1].clone())];
        let errors = crate::merge_into_doc(&doc, &key, rest.iter(), &mut depth, &mut holes);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(holes.is_empty());
        let want = text.get_string(&six.transact());
        let got = doc.get_or_insert_text("t").get_string(&doc.transact());
        assert_eq!(got, want);
    }

    #[test]
    fn a_client_typing_ahead_of_a_hole_waits_as_one_run() {
        let u = typing(&["a", "b", "c", "d", "e"]);
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut holes = PastHoles::default();
        for later in &u[1..] {
            assert!(offer(&doc, &mut holes, later).held);
        }
        assert_eq!(holes.len(), 1);
        offer(&doc, &mut holes, &u[0]);
        assert!(holes.is_empty());
        assert_eq!(text.get_string(&doc.transact()), "abcde");
    }

    #[test]
    fn the_use_after_free_input_no_longer_reaches_yrs_past_a_hole() {
        // docs/SECURITY.md Z8 (b): client 3 writes "ab" at clock 2 into root text "t", then
        // "xyzw" at clock 0. yrs alone integrates the first behind a skip, and splitting the
        // second against it frees a block still pointed to.
        let ab = [1, 1, 3, 2, 4, 1, 1, b't', 2, b'a', b'b', 0];
        let xyzw = [1, 1, 3, 0, 4, 1, 1, b't', 4, b'x', b'y', b'z', b'w', 0];
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut holes = PastHoles::default();
        assert!(offer(&doc, &mut holes, &ab).held);
        assert_eq!(
            clock_of(&doc.transact().state_vector(), 3),
            0,
            "yrs saw nothing"
        );
        let applied = offer(&doc, &mut holes, &xyzw);
        assert!(!applied.held && applied.result.is_ok());
        assert!(holes.is_empty(), "released, and found known");
        assert_eq!(text.get_string(&doc.transact()), "xyzw");
    }

    fn text_of(update: &[u8]) -> String {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).expect("decodes"))
            .expect("applies");
        text.get_string(&doc.transact())
    }

    #[test]
    fn an_update_within_the_documents_clocks_is_left_whole() {
        let u = crate::testing::typing(5, &["ab", "cd"]);
        assert_eq!(split_past_holes(&u[1], |_| 2), Ok(None));
        assert_eq!(split_past_holes(&u[0], |_| 0), Ok(None));
        // Overlapping what the document has is no hole.
        let both = yrs::merge_updates_v1([&u[0], &u[1]]).expect("merges");
        assert_eq!(split_past_holes(&both, |_| 1), Ok(None));
        assert_eq!(
            scan_update(&u[1], 64).map(|n| n.clocks),
            Ok(Clocks::One {
                client: 5,
                from: 2,
                to: 4
            })
        );
    }

    #[test]
    fn content_past_a_hole_is_held_and_applies_once_the_hole_fills() {
        let u = crate::testing::typing(5, &["ab", "cd", "ef"]);
        // The second edit alone, to a document that has nothing of client 5.
        let split = split_past_holes(&u[1], |_| 0).expect("walks").expect("cut");
        assert_eq!(split.ready, None);
        assert_eq!((split.held.len(), split.held[0].from), (1, 2));
        assert_eq!(
            split.held[0].to_update(),
            u[1],
            "held whole, as it came (empty delete set)"
        );
        // First and third merged (a skip between them): the first is ready, the third waits.
        let gapped = yrs::merge_updates_v1([&u[0], &u[2]]).expect("merges");
        assert_eq!(
            scan_update(&gapped, 64).map(|n| n.clocks),
            Ok(Clocks::Other)
        );
        let split = split_past_holes(&gapped, |_| 0)
            .expect("walks")
            .expect("cut");
        let ready = split.ready.expect("the first edit is ready");
        assert_eq!(text_of(&ready), "ab");
        assert_eq!(split.held.len(), 1);
        assert_eq!((split.held[0].client, split.held[0].from), (5, 4));
        // The held part decodes, and a document with the first two edits takes it whole.
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let held = split.held[0].to_update();
        for u in [&ready, &u[1], &held] {
            let have = |c| {
                doc.transact()
                    .state_vector()
                    .get(&yrs::block::ClientID::new(c))
            };
            assert_eq!(
                split_past_holes(u, have),
                Ok(None),
                "nothing past a hole now"
            );
            doc.transact_mut()
                .apply_update(Update::decode_v1(u).expect("decodes"))
                .expect("applies");
        }
        assert_eq!(text.get_string(&doc.transact()), "abcdef");
    }

    #[test]
    fn only_the_clients_past_a_hole_wait_and_the_delete_set_goes_ahead() {
        let a = crate::testing::typing(1, &["xy"]);
        let b = crate::testing::typing(2, &["12", "34"]);
        let both = yrs::merge_updates_v1([&a[0], &b[1]]).expect("merges");
        let split = split_past_holes(&both, |_| 0).expect("walks").expect("cut");
        assert_eq!(text_of(&split.ready.expect("client 1 is ready")), "xy");
        assert_eq!(split.held.len(), 1);
        assert_eq!((split.held[0].client, split.held[0].from), (2, 2));
        // A delete set alone is ready even when every block waits.
        let doc = Doc::with_client_id(2);
        let text = doc.get_or_insert_text("t");
        doc.transact_mut()
            .apply_update(Update::decode_v1(&b[0]).expect("decodes"))
            .expect("applies");
        let sv = doc.transact().state_vector();
        text.remove_range(&mut doc.transact_mut(), 0, 1);
        text.insert(&mut doc.transact_mut(), 1, "34");
        let del = doc.transact().encode_state_as_update_v1(&sv);
        let held = split_past_holes(&del, |_| 0).expect("walks").expect("cut");
        let ready = held.ready.expect("the deletion goes ahead");
        assert_eq!(
            Update::decode_v1(&ready)
                .expect("decodes")
                .delete_set()
                .len(),
            1
        );
        assert!(
            Update::decode_v1(&held.held[0].to_update())
                .expect("decodes")
                .delete_set()
                .is_empty()
        );
    }

    #[test]
    fn runs_that_continue_one_another_make_one() {
        let u = crate::testing::typing(5, &["ab", "cd", "ef"]);
        let cut = |u: &[u8]| {
            let mut s = split_past_holes(u, |_| 0).expect("walks").expect("cut");
            s.held.remove(0)
        };
        let mut run = cut(&u[1]);
        run.append(cut(&u[2]));
        assert_eq!((run.from, run.to), (2, 6));
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        for u in [u[0].clone(), run.to_update()] {
            doc.transact_mut()
                .apply_update(Update::decode_v1(&u).expect("decodes"))
                .expect("applies");
        }
        assert_eq!(text.get_string(&doc.transact()), "abcdef");
    }

    #[test]
    fn a_run_that_does_not_continue_the_clients_last_is_refused() {
        // Z8 (a)'s shape: client 3 written twice, the second run starting before the first ended.
        let one = crate::testing::typing(3, &["abcd"]);
        let mut twice = vec![2];
        twice.extend_from_slice(&one[0][1..one[0].len() - 1]);
        twice.extend_from_slice(&one[0][1..]);
        assert_eq!(
            split_past_holes(&twice, |_| 0),
            Err(NestingError::Malformed)
        );
    }
}
