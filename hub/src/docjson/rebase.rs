//! Rebasing a bot's op, built on an older view, over the deltas sent since ([`rebase`]).
//!
//! Positions move with what was inserted or deleted before them, as a Yjs relative position
//! would; an op whose target changed under it is a conflict: it is never applied by an index
//! that now means something else. The rules, for each delta op in order:
//!
//! - a splice of a list (or text) the op's path goes *through* at index `j`: before the
//!   spliced range, `j` stays; after it, `j` moves by the size change; inside it, conflict;
//! - a splice of the list (or text) the op itself splices: the op's range `[i, i + delete)`
//!   moves the same way; a range that overlaps the spliced one (or holds a position where
//!   something was inserted) is a conflict, an insertion at the same place goes first;
//! - a `set` or `delete` of a key the op's path goes through (or below): the value it meant
//!   was replaced, conflict; of the very key the op sets or deletes: fine, the last write wins;
//! - a change inside an item that the op deletes: conflict (the reader deleted what it saw).

use super::Op;
use super::path::{Seg, ShowPath};

/// Why an op could not be rebased.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Conflict(pub String);

fn starts_with(path: &[Seg], prefix: &[Seg]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}

/// Moves a position `j` over a splice of `[i, i + d)` by `k` items; `None` inside the range.
fn shift(j: u64, i: u64, d: u64, k: u64) -> Option<u64> {
    if j < i {
        Some(j)
    } else if j >= i + d {
        Some(j - d + k)
    } else {
        None
    }
}

/// Rebases `op` over `since` (the delta ops sent after the op's view, in order).
pub fn rebase(op: &mut Op, since: &[Op]) -> Result<(), Conflict> {
    for change in since {
        rebase_one(op, change)?;
    }
    Ok(())
}

fn rebase_one(op: &mut Op, change: &Op) -> Result<(), Conflict> {
    let conflict = |what: &str| {
        Conflict(format!(
            "{} changed since the view this op was built on ({what}); read the newer view and try again",
            ShowPath(change.path().unwrap_or_default())
        ))
    };
    let Some(cpath) = change.path() else {
        return Ok(());
    };
    // The op's own range, if it splices the list or text the change splices too.
    let op_range = match op {
        Op::Splice {
            path,
            index,
            delete,
            ..
        }
        | Op::SpliceText {
            path,
            index,
            delete,
            ..
        } if path.as_slice() == cpath => Some((index, delete)),
        _ => None,
    };
    let (ci, cd, ck) = match change {
        Op::Splice {
            index,
            delete,
            insert,
            ..
        } => (*index, *delete, insert.len() as u64),
        Op::SpliceText {
            index,
            delete,
            insert,
            ..
        } => (*index, *delete, insert.encode_utf16().count() as u64),
        // A key set or deleted.
        _ => {
            let opath = op.path().unwrap_or_default();
            let same_key = opath == cpath && matches!(op, Op::Set { .. } | Op::Delete { .. });
            if !same_key && starts_with(opath, cpath) {
                return Err(conflict("replaced"));
            }
            return deleted_under(op, cpath)
                .map_err(|()| conflict("changed inside what the op deletes"));
        }
    };
    if let Some((index, delete)) = op_range {
        let (j, d) = (*index, *delete);
        // Before the change (an insertion at the same place goes first), after it (moved),
        // or overlapping it: then it cannot be placed.
        if j + d <= ci {
            return Ok(());
        }
        if j >= ci + cd {
            *index = j - cd + ck;
            return Ok(());
        }
        return Err(conflict("the same range was edited"));
    }
    // A path going through the spliced list at index j.
    let opath = op.path_mut().map(|p| p.as_mut_slice()).unwrap_or_default();
    if opath.len() > cpath.len()
        && starts_with(opath, cpath)
        && let Seg::Index(j) = opath[cpath.len()]
    {
        return match shift(j, ci, cd, ck) {
            Some(moved) => {
                opath[cpath.len()] = Seg::Index(moved);
                Ok(())
            }
            None => Err(conflict(
                "the item the path goes through was replaced or deleted",
            )),
        };
    }
    deleted_under(op, cpath).map_err(|()| conflict("changed inside what the op deletes"))
}

/// `Err` when `op` deletes list items and the change at `cpath` is inside one of them.
fn deleted_under(op: &Op, cpath: &[Seg]) -> Result<(), ()> {
    if let Op::Splice {
        path,
        index,
        delete,
        ..
    } = op
        && *delete > 0
        && cpath.len() > path.len()
        && starts_with(cpath, path)
        && let Seg::Index(m) = cpath[path.len()]
        && (*index..index + delete).contains(&m)
    {
        return Err(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn op(v: serde_json::Value) -> Op {
        serde_json::from_value(v).expect("op")
    }

    #[test]
    fn positions_move_over_earlier_splices() {
        // Someone inserted two items before the one the bot ticks.
        let mut tick =
            op(json!({"op": "set", "path": ["default", 3, "attrs", "checked"], "value": true}));
        let insert = op(
            json!({"op": "splice", "path": ["default"], "index": 1, "insert": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
        );
        rebase(&mut tick, std::slice::from_ref(&insert)).expect("rebases");
        assert_eq!(tick.path().expect("path")[1], Seg::Index(5));

        // A change after it moves nothing.
        let mut tick =
            op(json!({"op": "set", "path": ["default", 0, "attrs", "checked"], "value": true}));
        rebase(&mut tick, &[insert]).expect("rebases");
        assert_eq!(tick.path().expect("path")[1], Seg::Index(0));

        // Typing: text positions move too.
        let mut typing = op(json!({"op": "splice_text", "path": ["t"], "index": 5, "insert": "!"}));
        let earlier = op(
            json!({"op": "splice_text", "path": ["t"], "index": 0, "delete": 1, "insert": "Hey"}),
        );
        rebase(&mut typing, &[earlier]).expect("rebases");
        assert!(matches!(typing, Op::SpliceText { index: 7, .. }));
    }

    #[test]
    fn a_changed_target_is_a_conflict() {
        let deleted = op(json!({"op": "splice", "path": ["default"], "index": 2, "delete": 1}));
        let mut tick =
            op(json!({"op": "set", "path": ["default", 2, "attrs", "checked"], "value": true}));
        assert!(rebase(&mut tick, std::slice::from_ref(&deleted)).is_err());

        let replaced = op(json!({"op": "set", "path": ["meta"], "value": {}}));
        let mut inner = op(json!({"op": "set", "path": ["meta", "title"], "value": "x"}));
        assert!(rebase(&mut inner, &[replaced]).is_err());

        let mut same_key = op(json!({"op": "set", "path": ["meta", "title"], "value": "x"}));
        let other_write = op(json!({"op": "set", "path": ["meta", "title"], "value": "y"}));
        assert!(rebase(&mut same_key, &[other_write]).is_ok());

        let typed_inside =
            op(json!({"op": "splice_text", "path": ["t"], "index": 3, "insert": "x"}));
        let mut cut = op(json!({"op": "splice_text", "path": ["t"], "index": 1, "delete": 4}));
        assert!(rebase(&mut cut, &[typed_inside]).is_err());

        let edited_item = op(
            json!({"op": "splice_text", "path": ["default", 1, "content", 0, "text"], "index": 0, "insert": "x"}),
        );
        let mut remove = op(json!({"op": "splice", "path": ["default"], "index": 1, "delete": 1}));
        assert!(rebase(&mut remove, &[edited_item]).is_err());
    }
}
