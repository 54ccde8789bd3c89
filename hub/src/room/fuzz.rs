//! For the fuzz targets (`fuzz/`, feature `fuzzing`): a room's document driven the way the
//! room drives it, without the actor, and the invariants a room must keep whatever its
//! members send.

use bytes::Bytes;
use chorus_persistence::{DepthIndex, RoomKey};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact};

use super::Inbound;
use super::doc::{Document, NotApplied};
use crate::auth::Role;
use crate::session::FrameLimits;

std::thread_local! {
    static STRICT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the strict invariants on, on this thread (as `CHORUS_FUZZ_STRICT` turns them
/// on everywhere): the replay of the regressions, whose findings are fixed, checks them all.
pub fn strictly<T>(f: impl FnOnce() -> T) -> T {
    let before = STRICT.replace(true);
    let out = f();
    STRICT.set(before);
    out
}

fn strict() -> bool {
    STRICT.get() || std::env::var_os("CHORUS_FUZZ_STRICT").is_some()
}

/// A room's document and the log of what it would have stored.
pub struct FuzzRoom {
    document: Document,
    /// The effective updates, in order: what the room persists and relays.
    log: Vec<Bytes>,
    limits: FrameLimits,
    /// yrs panicked while applying and the room was reloaded from its log.
    pub restarts: u32,
}

impl FuzzRoom {
    /// An empty room with the node's default limits, at nesting depth `max_depth`.
    pub fn new(max_depth: u32) -> Self {
        // As a room that loaded (an empty store): observed from the start.
        let document = match Document::new(
            Doc::new(),
            DepthIndex::new(max_depth),
            chorus_persistence::PastHoles::default(),
        ) {
            Ok(d) => d,
            Err(e) => panic!("observing a new document failed: {e}"),
        };
        Self {
            document,
            log: Vec::new(),
            limits: FrameLimits {
                max_awareness_bytes: 64 * 1024,
                max_nesting_depth: max_depth,
                max_messages: 64,
                awareness_bytes_per_second: 1 << 20,
            },
            restarts: 0,
        }
    }

    /// One binary frame from a member with `role`, as the session decodes it and the room
    /// applies it. Returns whether the session accepted the frame.
    pub fn frame(&mut self, frame: Bytes, role: Role) -> bool {
        let Ok(decoded) = crate::session::decode_frame(frame, role, self.limits) else {
            return false;
        };
        for msg in decoded.msgs {
            match msg {
                Inbound::Update {
                    update,
                    nesting,
                    raw,
                    clocks,
                } => match self
                    .document
                    .apply(update, &raw, nesting.as_deref(), clocks)
                {
                    Ok(outcome) => {
                        self.log
                            .extend(outcome.effective.into_iter().map(Bytes::from));
                        // As the room does: what yrs held back is stored as received, so a
                        // restart holds it back again.
                        if outcome.held_back {
                            self.log.push(Bytes::copy_from_slice(&raw));
                        }
                    }
                    Err(NotApplied::Refused(_)) => {}
                    Err(NotApplied::Panicked) => self.restart(),
                },
                Inbound::SyncStep1(sv) => {
                    // The answer a joiner gets must decode (or the room restarts).
                    match self.document.diff(&sv) {
                        Some(diff) => assert!(
                            yrs::Update::decode_v1(&diff).is_ok(),
                            "the room's answer to a state vector does not decode"
                        ),
                        None => self.restart(),
                    }
                }
                Inbound::ReadOnlyStep2(update) => {
                    let _ = self.document.carries_new(&update);
                }
                _ => {}
            }
        }
        true
    }

    /// The room's state vector (clients at clock zero left out).
    pub fn clocks(&self) -> std::collections::BTreeMap<u64, u32> {
        clocks(&self.document.state_vector())
    }

    /// The room's document as plain JSON.
    pub fn to_json(&self) -> serde_json::Value {
        crate::docjson::doc_to_json(&self.document.doc().transact())
    }

    /// A bot's or a REST client's edit operations, applied as the room applies a server edit.
    pub fn ops(&mut self, ops: &[crate::docjson::Op]) {
        let outcome = self
            .document
            .edit(|doc, depth| crate::docjson::apply_ops_limited(doc, ops, depth.max() as usize));
        match outcome {
            Some((_, effective)) => self.log.extend(effective.into_iter().map(Bytes::from)),
            None => self.restart(),
        }
    }

    /// The room restarts from what it stored, as after a panic in yrs.
    fn restart(&mut self) {
        self.restarts += 1;
        let (document, refused) = self.reload();
        assert!(
            refused.is_empty(),
            "the room's own log was refused: {refused:?}"
        );
        self.document = document;
    }

    fn reload(&self) -> (Document, Vec<String>) {
        let max = self.limits.max_nesting_depth;
        let mut document = match Document::new(
            Doc::new(),
            DepthIndex::new(max),
            chorus_persistence::PastHoles::default(),
        ) {
            Ok(d) => d,
            Err(e) => panic!("observing a new document failed: {e}"),
        };
        let key = RoomKey::new("fuzz", "room");
        let refused = match document.merge(&key, self.log.iter()) {
            Some((refused, _)) => refused.into_iter().map(|e| e.to_string()).collect(),
            None => vec!["yrs panicked merging the room's own log".to_string()],
        };
        (document, refused)
    }

    /// The invariants, with CHORUS_FUZZ_STRICT (the campaign), panicking if one does not hold:
    /// - the log loads back, none of it refused (nothing acknowledged is lost on restart);
    /// - the reloaded document holds what the room holds (state vector and content);
    /// - the whole state encodes and decodes, and scans within the nesting limit.
    pub fn check(&self) {
        // Without CHORUS_FUZZ_STRICT (CI's short runs) only the joiners' answers are checked
        // (in `frame`), and that nothing escapes the room's catching of yrs' panics: the other
        // checks fail today on open findings (docs/SECURITY.md, Z3 to Z6), which the campaign
        // and the replay of the regressions run strictly.
        if !strict() {
            return;
        }
        let (reloaded, refused) = self.reload();
        assert!(
            refused.is_empty(),
            "the room's own log was refused: {refused:?}"
        );
        let (ours, theirs) = (self.document.doc(), reloaded.doc());
        let (a, b) = (ours.transact(), theirs.transact());
        // What the room holds against what its log reloads to.
        {
            assert_eq!(
                clocks(&a.state_vector()),
                clocks(&b.state_vector()),
                "the stored log does not hold what the room holds"
            );
            // A client listed at clock zero is the second case: its text shows in the live
            // document only.
            if !a.state_vector().iter().any(|(_, clock)| *clock == 0) {
                assert_eq!(
                    crate::docjson::doc_to_json(&a),
                    crate::docjson::doc_to_json(&b),
                    "the stored log renders differently from the room"
                );
            }
        }
        let state = a.encode_state_as_update_v1(&StateVector::default());
        assert!(
            yrs::Update::decode_v1(&state).is_ok(),
            "the full state does not decode"
        );
        // The root is depth 1: a document within the limit scans within it, plus one.
        let limit = self.limits.max_nesting_depth + 1;
        if let Err(e) = chorus_protocol::nesting::scan_update(&state, limit) {
            panic!("the room's whole state nests past the limit: {e:?}");
        }
    }
}

/// A state vector's clients with a clock above zero (yrs may list a client at zero once it
/// holds back that client's blocks; a replica without them lists nothing: the same state).
fn clocks(sv: &StateVector) -> std::collections::BTreeMap<u64, u32> {
    sv.iter()
        .filter(|(_, clock)| **clock > 0)
        .map(|(client, clock)| (client.get(), *clock))
        .collect()
}
