//! Cutting an update at the holes of a document's clocks.
//!
//! yrs 0.28 integrates a block whose client's earlier clocks the document lacks, as long as the
//! block's origins are there, and marks the gap with a skip in its block store. An update that
//! later overlaps the gap makes yrs' `Update::exclude` split a block, keep one half and free
//! the other while the kept half still points to it: a heap use-after-free
//! (docs/SECURITY.md, Z8 (b)). Yjs instead holds such blocks back until the gap fills, and the
//! room does the same with [`split_past_holes`]: the part of an update yrs may integrate now,
//! and the part to hold back until the document's clocks reach it. yrs then never sees a block
//! past a hole, and its store never holds a skip.
//!
//! v1 updates make this a matter of bytes: each client's run is self-contained (every block
//! writes its own ids and parent), so a run cut at a block boundary, behind a header naming
//! its first clock, is an update of its own.

use std::ops::Range;

use bytes::BytesMut;

use super::{NestingError, Reader, Runs, Scan};
use crate::lib0::write_var_uint;

/// An update cut at the holes of a document's clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// What yrs may integrate now: each client's content up to its first hole, and the whole
    /// delete set (yrs holds back deletions of what it lacks by itself). `None` if nothing.
    pub ready: Option<Vec<u8>>,
    /// What must wait, one run per client.
    pub held: Vec<Run>,
}

/// A run of one client's blocks that continue one another, as v1 bytes: what waits for the
/// document's clock for `client` to reach `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The client.
    pub client: u64,
    /// The clock of its first block (content, never a skip).
    pub from: u32,
    /// One past the clock of its last block (content, never a skip).
    pub to: u32,
    blocks: u64,
    bytes: Vec<u8>,
}

impl Run {
    /// Appends `next`, which starts where this run ends (`next.from == self.to`) for the
    /// same client: one run, so a client typing ahead of a hole waits as one run, not as one
    /// per update.
    pub fn append(&mut self, next: Run) {
        debug_assert!(next.client == self.client && next.from == self.to);
        self.to = next.to;
        self.blocks += next.blocks;
        self.bytes.extend_from_slice(&next.bytes);
    }

    /// Its encoded size.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never: a run holds at least one block.
    pub fn is_empty(&self) -> bool {
        self.blocks == 0
    }

    /// The run as a v1 update of its own (with an empty delete set).
    pub fn to_update(&self) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(self.bytes.len() + 16);
        write_var_uint(&mut out, 1);
        write_var_uint(&mut out, self.blocks);
        write_var_uint(&mut out, self.client);
        write_var_uint(&mut out, u64::from(self.from));
        out.extend_from_slice(&self.bytes);
        write_var_uint(&mut out, 0);
        out.to_vec()
    }
}

struct Block {
    clock: u32,
    len: u32,
    skip: bool,
    bytes: Range<usize>,
}

/// Cuts v1 `update` where its content would start past what the document has: `have(client)`
/// is the document's clock for `client` (one past its last). A client's content is ready up
/// to its first block that starts beyond both the document's clock and the content before it
/// in the update; that block and the rest of the client wait. `Ok(None)` when nothing waits
/// (hand the update to yrs as it is). `Err` for what [`super::scan_update`] refuses too.
pub fn split_past_holes(
    update: &[u8],
    have: impl Fn(u64) -> u32,
) -> Result<Option<Split>, NestingError> {
    let mut r = Reader {
        buf: update,
        pos: 0,
    };
    // Only the walk is wanted: no depth limit, and what it records is dropped.
    let mut walk = Scan {
        max: u32::MAX,
        items: Vec::new(),
        gcs: Vec::new(),
        runs: Runs::default(),
    };
    let count = r.var_u32()?;
    r.fits(u64::from(count), 3)?;
    let mut clients: Vec<(u64, Vec<Block>)> = Vec::new();
    for _ in 0..count {
        let blocks = r.var_u64()?;
        r.fits(blocks, 1)?;
        let client = r.client()?;
        let mut clock = r.var_u32()?;
        let at = match clients.iter().position(|(c, _)| *c == client) {
            Some(at) => at,
            None => {
                clients.push((client, Vec::new()));
                clients.len() - 1
            }
        };
        let list = &mut clients[at].1;
        // A client written twice must continue where it ended (as `scan_update` requires).
        if list.last().is_some_and(|b| b.clock + b.len != clock) {
            return Err(NestingError::Malformed);
        }
        for _ in 0..blocks {
            let start = r.pos;
            let (len, skip) = walk.block(&mut r, client, clock)?;
            list.push(Block {
                clock,
                len,
                skip,
                bytes: start..r.pos,
            });
            clock = clock.checked_add(len).ok_or(NestingError::Malformed)?;
        }
    }
    let delete_set = &update[r.pos..];
    // Per client: where its held part starts, if anywhere.
    let cuts: Vec<Option<usize>> = clients
        .iter()
        .map(|(client, blocks)| {
            let mut reached = have(*client);
            for (i, b) in blocks.iter().enumerate() {
                if b.skip || b.len == 0 {
                    continue;
                }
                if b.clock > reached {
                    return Some(i);
                }
                reached = reached.max(b.clock + b.len);
            }
            None
        })
        .collect();
    if cuts.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut ready = Vec::new();
    let mut held = Vec::new();
    for ((client, blocks), cut) in clients.iter().zip(&cuts) {
        let cut = cut.unwrap_or(blocks.len());
        // Each part without the skips that end it (they carry nothing).
        let ready_part = without_trailing_skips(&blocks[..cut]);
        if !ready_part.is_empty() {
            ready.push((*client, ready_part));
        }
        let held_part = without_trailing_skips(&blocks[cut..]);
        if let (Some(first), Some(last)) = (held_part.first(), held_part.last()) {
            let mut bytes = Vec::new();
            for b in held_part {
                bytes.extend_from_slice(&update[b.bytes.clone()]);
            }
            held.push(Run {
                client: *client,
                from: first.clock,
                to: last.clock + last.len,
                blocks: held_part.len() as u64,
                bytes,
            });
        }
    }
    let ready = if ready.is_empty() && delete_set == [0] {
        None
    } else {
        let mut out = BytesMut::with_capacity(update.len());
        write_var_uint(&mut out, ready.len() as u64);
        for (client, blocks) in &ready {
            write_var_uint(&mut out, blocks.len() as u64);
            write_var_uint(&mut out, *client);
            write_var_uint(&mut out, u64::from(blocks.first().map_or(0, |b| b.clock)));
            for b in *blocks {
                out.extend_from_slice(&update[b.bytes.clone()]);
            }
        }
        out.extend_from_slice(delete_set);
        Some(out.to_vec())
    };
    Ok(Some(Split { ready, held }))
}

fn without_trailing_skips(blocks: &[Block]) -> &[Block] {
    let end = blocks.iter().rposition(|b| !b.skip).map_or(0, |i| i + 1);
    &blocks[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nesting::{Clocks, scan_update};
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

    /// Client `client` types `parts` one after another at the end of text "t": one update
    /// per part.
    fn typing(client: u64, parts: &[&str]) -> Vec<Vec<u8>> {
        let doc = Doc::with_client_id(client);
        let text = doc.get_or_insert_text("t");
        let mut out = Vec::new();
        for p in parts {
            let before = doc.transact().state_vector();
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, p);
            drop(txn);
            out.push(doc.transact().encode_state_as_update_v1(&before));
        }
        out
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
        let u = typing(5, &["ab", "cd"]);
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
        let u = typing(5, &["ab", "cd", "ef"]);
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
        let a = typing(1, &["xy"]);
        let b = typing(2, &["12", "34"]);
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
        let u = typing(5, &["ab", "cd", "ef"]);
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
        let one = typing(3, &["abcd"]);
        let mut twice = vec![2];
        twice.extend_from_slice(&one[0][1..one[0].len() - 1]);
        twice.extend_from_slice(&one[0][1..]);
        assert_eq!(
            split_past_holes(&twice, |_| 0),
            Err(NestingError::Malformed)
        );
    }
}
