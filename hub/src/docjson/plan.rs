//! Checking a batch of [`Op`]s before anything changes: each op against the document as the ops
//! before it leave it (simulated per root, without touching the document), giving [`Step`]s
//! with positions in the document's own units.

use std::collections::HashMap;

use yrs::branch::BranchPtr;
use yrs::{Any, Array, ArrayRef, OffsetKind, ReadTxn, TransactionMut};

use super::kinds::{has_strings, kind_of, ptr_of};
use super::ops::{Op, json_to_any};
use super::path::{self, PathOp, PathSim, PathStep, text_bytes};
use super::text::{doc_offset, text_position, text_units, to_u32};
use super::{InvalidOp, MAX_DEPTH, MAX_NAME_BYTES, MAX_OPS, MAX_TEXT_BYTES, OpError, RootKind};

/// A checked op, with positions already in the document's own units.
pub(super) enum Step<'a> {
    InsertText {
        name: &'a str,
        index: u32,
        text: &'a str,
    },
    DeleteText {
        name: &'a str,
        index: u32,
        len: u32,
    },
    SetMap {
        name: &'a str,
        key: &'a str,
        value: Any,
    },
    DeleteMap {
        name: &'a str,
        key: &'a str,
    },
    PushArray {
        name: &'a str,
        values: Vec<Any>,
    },
    DeleteArray {
        name: &'a str,
        index: u32,
        len: u32,
    },
    /// A path op's step.
    Path(PathStep),
}

/// A root as the ops checked so far leave it.
enum Sim {
    /// Absent or undefined and empty: the first op decides its type.
    Free,
    /// Not loaded yet: loading a text copies it, so only text ops do.
    Unloaded(RootKind, BranchPtr),
    /// A text as UTF-16 units, [`EMBED`](super::text::EMBED) for embeds.
    Text(Vec<u32>),
    Map,
    /// An array of this many elements.
    Array(u64),
}

impl Sim {
    fn kind(&self) -> RootKind {
        match self {
            Sim::Free => RootKind::Empty,
            Sim::Unloaded(kind, _) => *kind,
            Sim::Text(_) => RootKind::Text,
            Sim::Map => RootKind::Map,
            Sim::Array(_) => RootKind::Array,
        }
    }
}

pub(super) fn plan_ops<'a>(
    txn: &TransactionMut,
    ops: &'a [Op],
    max_depth: usize,
) -> Result<Vec<Step<'a>>, OpError> {
    if ops.len() > MAX_OPS {
        return Err(OpError::TooManyOps {
            count: ops.len(),
            max: MAX_OPS,
        });
    }
    let text_bytes: usize = ops
        .iter()
        .map(|op| match op {
            Op::InsertText { text, .. } => text.len(),
            Op::SpliceText { insert, .. } => insert.len(),
            Op::Splice { insert, .. } => text_bytes(insert),
            _ => 0,
        })
        .sum();
    if text_bytes > MAX_TEXT_BYTES {
        return Err(OpError::TextTooLarge {
            bytes: text_bytes,
            max: MAX_TEXT_BYTES,
        });
    }
    let offset_kind = txn.doc().offset_kind();
    let mut roots: HashMap<&str, Sim> = HashMap::new();
    let mut paths = PathSim::default();
    let mut steps = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let invalid = |reason| OpError::Invalid { index, reason };
        match path_op(op) {
            Some(path_op) => {
                let planned = path::plan(txn, offset_kind, &mut paths, path_op, max_depth)
                    .map_err(invalid)?;
                if let Some(root) = paths.roots.iter().find(|r| roots.contains_key(r.as_str())) {
                    return Err(invalid(InvalidOp::MixedStyles { name: root.clone() }));
                }
                steps.extend(planned.into_iter().map(Step::Path));
            }
            None => {
                if let Some(name) = op.name()
                    && paths.roots.contains(name)
                {
                    return Err(invalid(InvalidOp::MixedStyles {
                        name: name.to_owned(),
                    }));
                }
                let step = plan_op(txn, offset_kind, &mut roots, op).map_err(invalid)?;
                steps.extend(step);
            }
        }
    }
    Ok(steps)
}

fn path_op(op: &Op) -> Option<PathOp<'_>> {
    Some(match op {
        Op::Set { path, value } => PathOp::Set { path, value },
        Op::Delete { path } => PathOp::Delete { path },
        Op::Splice {
            path,
            index,
            delete,
            insert,
            xml,
        } => PathOp::Splice {
            path,
            index: *index,
            delete: *delete,
            insert,
            xml: *xml,
        },
        Op::SpliceText {
            path,
            index,
            delete,
            insert,
        } => PathOp::SpliceText {
            path,
            index: *index,
            delete: *delete,
            insert,
        },
        _ => return None,
    })
}

/// Checks one op and records its effect in `roots`; `None` for an op that changes nothing.
fn plan_op<'a>(
    txn: &TransactionMut,
    offset_kind: OffsetKind,
    roots: &mut HashMap<&'a str, Sim>,
    op: &'a Op,
) -> Result<Option<Step<'a>>, InvalidOp> {
    let name = op.name().unwrap_or_default();
    check_root_name(name)?;
    let sim = roots.entry(name).or_insert_with(|| load_root(txn, name));
    match op {
        Op::InsertText { index, text, .. } => {
            let units = text_sim(txn, offset_kind, sim, name)?;
            let at = text_position(units, *index)?;
            let doc_index = doc_offset(units, at, offset_kind)?;
            units.splice(at..at, text.encode_utf16().map(u32::from));
            Ok((!text.is_empty()).then_some(Step::InsertText {
                name,
                index: doc_index,
                text,
            }))
        }
        Op::DeleteText { index, length, .. } => {
            let units = text_sim(txn, offset_kind, sim, name)?;
            let (start, end) = range(*index, *length, units.len())?;
            let start = text_position(units, start as u64)?;
            let end = text_position(units, end as u64)?;
            let doc_index = doc_offset(units, start, offset_kind)?;
            let doc_len = doc_offset(units, end, offset_kind)? - doc_index;
            units.drain(start..end);
            Ok((doc_len > 0).then_some(Step::DeleteText {
                name,
                index: doc_index,
                len: doc_len,
            }))
        }
        Op::SetMap { key, value, .. } => {
            map_sim(sim, name)?;
            let value =
                json_to_any(value, MAX_DEPTH).ok_or(InvalidOp::TooDeep { max: MAX_DEPTH })?;
            Ok(Some(Step::SetMap { name, key, value }))
        }
        Op::DeleteMap { key, .. } => {
            map_sim(sim, name)?;
            Ok(Some(Step::DeleteMap { name, key }))
        }
        Op::PushArray { values, .. } => {
            let len = array_sim(txn, sim, name)?;
            let values = values
                .iter()
                .map(|v| json_to_any(v, MAX_DEPTH))
                .collect::<Option<Vec<_>>>()
                .ok_or(InvalidOp::TooDeep { max: MAX_DEPTH })?;
            *len += values.len() as u64;
            Ok((!values.is_empty()).then_some(Step::PushArray { name, values }))
        }
        Op::Set { .. } | Op::Delete { .. } | Op::Splice { .. } | Op::SpliceText { .. } => {
            // Routed to `path::plan` by `plan_ops`.
            Ok(None)
        }
        Op::DeleteArray { index, length, .. } => {
            let len = array_sim(txn, sim, name)?;
            let (start, end) = range(*index, *length, usize::try_from(*len).unwrap_or(usize::MAX))?;
            *len -= (end - start) as u64;
            Ok((end > start).then_some(Step::DeleteArray {
                name,
                index: to_u32(start)?,
                len: to_u32(end - start)?,
            }))
        }
    }
}

/// A root name: not empty, at most [`MAX_NAME_BYTES`].
pub(super) fn check_root_name(name: &str) -> Result<(), InvalidOp> {
    if name.is_empty() {
        return Err(InvalidOp::EmptyName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(InvalidOp::NameTooLong {
            len: name.len(),
            max: MAX_NAME_BYTES,
        });
    }
    Ok(())
}

fn load_root(txn: &TransactionMut, name: &str) -> Sim {
    // A root is always a branch in yrs' store, so `ptr_of` only fails for an absent one.
    match txn.get(name).as_ref().and_then(ptr_of) {
        Some(ptr) => match kind_of(txn, ptr) {
            RootKind::Empty => Sim::Free,
            kind => Sim::Unloaded(kind, ptr),
        },
        None => Sim::Free,
    }
}

fn wrong_type(name: &str, expected: RootKind, found: RootKind) -> InvalidOp {
    InvalidOp::WrongType {
        name: name.to_owned(),
        expected,
        found,
    }
}

fn text_sim<'s>(
    txn: &TransactionMut,
    offset_kind: OffsetKind,
    sim: &'s mut Sim,
    name: &str,
) -> Result<&'s mut Vec<u32>, InvalidOp> {
    match sim {
        Sim::Free => *sim = Sim::Text(Vec::new()),
        Sim::Unloaded(RootKind::Text, ptr) => {
            let units = text_units(txn, *ptr, offset_kind).ok_or(InvalidOp::MixedContent {
                name: name.to_owned(),
            })?;
            *sim = Sim::Text(units);
        }
        _ => {}
    }
    match sim {
        Sim::Text(units) => Ok(units),
        other => Err(wrong_type(name, RootKind::Text, other.kind())),
    }
}

fn map_sim(sim: &mut Sim, name: &str) -> Result<(), InvalidOp> {
    match sim {
        Sim::Free | Sim::Unloaded(RootKind::Map, _) => {
            *sim = Sim::Map;
            Ok(())
        }
        Sim::Map => Ok(()),
        other => Err(wrong_type(name, RootKind::Map, other.kind())),
    }
}

fn array_sim<'s>(
    txn: &TransactionMut,
    sim: &'s mut Sim,
    name: &str,
) -> Result<&'s mut u64, InvalidOp> {
    match sim {
        Sim::Free => *sim = Sim::Array(0),
        Sim::Unloaded(RootKind::Array, ptr) => {
            if has_strings(txn, *ptr) {
                return Err(InvalidOp::MixedContent {
                    name: name.to_owned(),
                });
            }
            *sim = Sim::Array(u64::from(ArrayRef::from(*ptr).len(txn)));
        }
        _ => {}
    }
    match sim {
        Sim::Array(len) => Ok(len),
        other => Err(wrong_type(name, RootKind::Array, other.kind())),
    }
}

/// A deletion range `[start, end)` within `len`.
fn range(index: u64, length: u64, len: usize) -> Result<(usize, usize), InvalidOp> {
    let out_of_bounds = InvalidOp::RangeOutOfBounds {
        index,
        length,
        len: len as u64,
    };
    let end = index.checked_add(length).ok_or(out_of_bounds.clone())?;
    match (usize::try_from(index), usize::try_from(end)) {
        (Ok(start), Ok(end)) if end <= len => Ok((start, end)),
        _ => Err(out_of_bounds),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::docjson::apply_ops;
    use crate::docjson::testing::{json_of, new_doc, ops, replica, sample_doc};

    #[test]
    fn ops_see_the_ops_before_them() {
        let doc = new_doc(1);
        let batch = ops(json!([
            {"op": "insert_text", "name": "t", "index": 0, "text": "hello"},
            {"op": "delete_text", "name": "t", "index": 1, "length": 3},
            {"op": "insert_text", "name": "t", "index": 2, "text": "!"},
            {"op": "push_array", "name": "a", "values": [1, 2, 3]},
            {"op": "delete_array", "name": "a", "index": 1, "length": 2},
        ]));
        apply_ops(&doc, &batch).expect("ops apply");
        assert_eq!(json_of(&doc), json!({"t": "ho!", "a": [1]}));
        let err = apply_ops(
            &doc,
            &ops(json!([{"op": "insert_text", "name": "t", "index": 4, "text": "x"}])),
        )
        .expect_err("past the end");
        assert_eq!(
            err,
            OpError::Invalid {
                index: 0,
                reason: InvalidOp::IndexOutOfBounds { index: 4, len: 3 }
            }
        );
    }

    #[test]
    fn refuses_mismatched_root_types() {
        let doc = sample_doc(1);
        let cases = [
            (
                json!({"op": "insert_text", "name": "map", "index": 0, "text": "x"}),
                RootKind::Text,
                RootKind::Map,
            ),
            (
                json!({"op": "set_map", "name": "text", "key": "k", "value": 1}),
                RootKind::Map,
                RootKind::Text,
            ),
            (
                json!({"op": "push_array", "name": "xml", "values": [1]}),
                RootKind::Array,
                RootKind::XmlFragment,
            ),
            (
                json!({"op": "delete_text", "name": "list", "index": 0, "length": 0}),
                RootKind::Text,
                RootKind::Array,
            ),
        ];
        for (op, expected, found) in cases {
            let name = op["name"].as_str().expect("name").to_owned();
            let err = apply_ops(&doc, &ops(json!([op]))).expect_err("wrong type");
            assert_eq!(
                err,
                OpError::Invalid {
                    index: 0,
                    reason: InvalidOp::WrongType {
                        name,
                        expected,
                        found
                    }
                }
            );
        }
        // The same holds for undefined roots, and for a root an earlier op typed.
        let copy = replica(&doc, 2);
        assert!(
            apply_ops(
                &copy,
                &ops(json!([{"op": "set_map", "name": "text", "key": "k", "value": 1}]))
            )
            .is_err()
        );
        let batch = ops(json!([
            {"op": "set_map", "name": "new", "key": "k", "value": 1},
            {"op": "push_array", "name": "new", "values": [1]},
        ]));
        let err = apply_ops(&copy, &batch).expect_err("typed by op 0");
        assert!(matches!(
            err,
            OpError::Invalid {
                index: 1,
                reason: InvalidOp::WrongType { .. }
            }
        ));
        assert_eq!(
            err.to_string(),
            "op 1: root \"new\" is of type map, not array"
        );
    }

    #[test]
    fn enforces_limits() {
        let doc = new_doc(1);
        let many = vec![
            Op::DeleteMap {
                name: "m".into(),
                key: "k".into()
            };
            MAX_OPS + 1
        ];
        assert_eq!(
            apply_ops(&doc, &many),
            Err(OpError::TooManyOps {
                count: MAX_OPS + 1,
                max: MAX_OPS
            })
        );
        let half = "x".repeat(MAX_TEXT_BYTES / 2 + 1);
        let big = vec![
            Op::InsertText {
                name: "t".into(),
                index: 0,
                text: half.clone(),
            },
            Op::InsertText {
                name: "t".into(),
                index: 0,
                text: half,
            },
        ];
        assert!(matches!(
            apply_ops(&doc, &big),
            Err(OpError::TextTooLarge { .. })
        ));
        let unnamed = Op::DeleteMap {
            name: String::new(),
            key: "k".into(),
        };
        assert_eq!(
            apply_ops(&doc, &[unnamed]),
            Err(OpError::Invalid {
                index: 0,
                reason: InvalidOp::EmptyName
            })
        );
        let long = Op::DeleteMap {
            name: "n".repeat(MAX_NAME_BYTES + 1),
            key: "k".into(),
        };
        assert!(matches!(
            apply_ops(&doc, &[long]),
            Err(OpError::Invalid {
                reason: InvalidOp::NameTooLong { .. },
                ..
            })
        ));
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        let deep = Op::SetMap {
            name: "m".into(),
            key: "k".into(),
            value: deep,
        };
        assert_eq!(
            apply_ops(&doc, &[deep]),
            Err(OpError::Invalid {
                index: 0,
                reason: InvalidOp::TooDeep { max: MAX_DEPTH }
            })
        );
        let overflow = Op::DeleteArray {
            name: "a".into(),
            index: u64::MAX,
            length: 2,
        };
        assert!(matches!(
            apply_ops(&doc, &[overflow]),
            Err(OpError::Invalid {
                reason: InvalidOp::RangeOutOfBounds { .. },
                ..
            })
        ));
        assert_eq!(json_of(&doc), json!({}));
    }
}
