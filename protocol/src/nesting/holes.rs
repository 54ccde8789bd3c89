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
