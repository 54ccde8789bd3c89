//! Reverting a run as one step. Every run writes under its own Yjs client id, so "the run's
//! items" are exactly the items of that client, in any document, after any interleaved edits
//! and any reload: the revert deletes them (as a delete set, the way Yjs itself deletes), and
//! nothing any other client wrote.
//!
//! One case needs care: a person who typed inside a block the run created. Deleting the block
//! would delete their text with it, so a run's block (an XmlElement or XmlText) that still
//! holds content of someone else stays; only its own pieces go.

use yrs::block::ClientID;
use yrs::types::xml::{XmlFragmentRef, XmlOut};
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, Text, TransactionMut, Update, XmlFragment};

/// Why a revert failed (only a malformed internal update, which would be a bug).
#[derive(Debug, thiserror::Error)]
#[error("revert failed: {0}")]
pub struct RevertError(String);

/// Deletes every item client `client` wrote, except blocks under `fragments` that hold
/// another client's content. Returns whether anything was deleted.
pub fn revert(
    txn: &mut TransactionMut,
    client: u64,
    fragments: &[XmlFragmentRef],
) -> Result<bool, RevertError> {
    let end = txn.state_vector().get(&ClientID::new(client));
    if end == 0 {
        return Ok(false);
    }
    // The run's own blocks: deleted only once empty of others' content.
    let mut blocks: Vec<(u32, XmlOut)> = Vec::new();
    for fragment in fragments {
        for node in fragment.successors(txn) {
            if let Some(clock) = run_clock(&node, client) {
                blocks.push((clock, node));
            }
        }
    }
    let mut keep: Vec<u32> = blocks.iter().map(|(c, _)| *c).collect();
    keep.sort_unstable();
    let mut ranges = Vec::new();
    let mut from = 0u32;
    for clock in keep {
        if clock > from {
            ranges.push((from, clock - from));
        }
        from = clock + 1;
    }
    if end > from {
        ranges.push((from, end - from));
    }
    apply_deletes(txn, client, &ranges)?;
    // Now the blocks: those holding nothing of anyone else go too.
    let empty: Vec<u32> = blocks
        .iter()
        .filter(|(_, node)| !holds_foreign(txn, node, client, 0))
        .map(|(c, _)| *c)
        .collect();
    let ranges: Vec<(u32, u32)> = empty.into_iter().map(|c| (c, 1)).collect();
    apply_deletes(txn, client, &ranges)?;
    Ok(true)
}

fn run_clock(node: &XmlOut, client: u64) -> Option<u32> {
    let id = match node {
        XmlOut::Element(e) => crate::writer::branch_id(e),
        XmlOut::Text(t) => crate::writer::branch_id(t),
        XmlOut::Fragment(f) => crate::writer::branch_id(f),
    };
    match id {
        yrs::BranchID::Nested(id) if id.client.get() == client => Some(id.clock),
        _ => None,
    }
}

/// Whether a node holds content another client wrote (after the run's own pieces are gone,
/// any text left is someone else's).
fn holds_foreign(txn: &TransactionMut, node: &XmlOut, client: u64, depth: u32) -> bool {
    if depth > 256 {
        // Deeper than any editor nests: keep it rather than recurse further.
        return true;
    }
    match node {
        XmlOut::Text(t) => run_clock(node, client).is_none() || t.len(txn) > 0,
        XmlOut::Element(e) => {
            run_clock(node, client).is_none()
                || e.children(txn)
                    .any(|c| holds_foreign(txn, &c, client, depth + 1))
        }
        XmlOut::Fragment(_) => true,
    }
}

/// Applies a delete set of `ranges` (clock, length) of `client` as an update, so it is
/// recorded in the transaction like any deletion.
fn apply_deletes(
    txn: &mut TransactionMut,
    client: u64,
    ranges: &[(u32, u32)],
) -> Result<(), RevertError> {
    if ranges.is_empty() {
        return Ok(());
    }
    let mut buf = Vec::new();
    write_var(&mut buf, 0); // no structs
    write_var(&mut buf, 1); // one client in the delete set
    write_var(&mut buf, client);
    write_var(&mut buf, ranges.len() as u64);
    for (clock, len) in ranges {
        write_var(&mut buf, u64::from(*clock));
        write_var(&mut buf, u64::from(*len));
    }
    let update = Update::decode_v1(&buf).map_err(|e| RevertError(e.to_string()))?;
    txn.apply_update(update)
        .map_err(|e| RevertError(e.to_string()))
}

fn write_var(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}
