//! The public edit type [`Op`] and [`apply_ops`]: the whole batch is checked first (`plan`),
//! then applied in one transaction, so a request lands completely or not at all.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use yrs::{Any, Array, Doc, In, Map, Number, Text, Transact, TransactionMut, WriteTxn};

use super::path::Seg;
use super::plan::{Step, plan_ops};
use super::{MAX_DEPTH, OpError};

/// One JSON edit. Text indexes and lengths are UTF-16 code units (see the [module doc](super)); array
/// indexes count elements.
#[expect(
    missing_docs,
    reason = "each variant's documentation names its fields, as docs/API.md does"
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Inserts `text` into the text root `name` at `index`.
    InsertText {
        name: String,
        index: u64,
        text: String,
    },
    /// Deletes `length` units of the text root `name` from `index`.
    DeleteText {
        name: String,
        index: u64,
        length: u64,
    },
    /// Sets `key` of the map root `name` to `value`, stored as a plain value (nested objects and
    /// arrays included: they are not shared types). Numbers become JavaScript numbers.
    SetMap {
        name: String,
        key: String,
        value: Value,
    },
    /// Deletes `key` of the map root `name`; deleting a missing key is a no-op, since a peer
    /// may have deleted it a moment ago.
    DeleteMap { name: String, key: String },
    /// Appends `values` (plain values) to the array root `name`.
    PushArray { name: String, values: Vec<Value> },
    /// Deletes `length` elements of the array root `name` from `index`.
    DeleteArray {
        name: String,
        index: u64,
        length: u64,
    },
    /// Sets the key `path` ends with: of a map (nested or root), or an XML element's attribute
    /// (`[..., "attrs", name]`). The value is stored as a plain value.
    Set { path: Vec<Seg>, value: Value },
    /// Deletes the key `path` ends with (a missing key is a no-op, as for `delete_map`).
    Delete { path: Vec<Seg> },
    /// At the list `path` leads to (an array, an XML fragment, or an element's `content`),
    /// deletes `delete` items from `index` and inserts `insert` there: plain values into an
    /// array, nodes (`{"type", "attrs", "content"}` or `{"type": "text", "text"}`) into XML.
    /// `xml` makes a root that holds nothing an XML fragment rather than an array.
    Splice {
        path: Vec<Seg>,
        index: u64,
        #[serde(default)]
        delete: u64,
        #[serde(default)]
        insert: Vec<Value>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        xml: bool,
    },
    /// In the text `path` leads to (a Y.Text, or `[..., "text"]` of an XML text node), deletes
    /// `delete` UTF-16 units from `index` and inserts `insert` there.
    SpliceText {
        path: Vec<Seg>,
        index: u64,
        #[serde(default)]
        delete: u64,
        #[serde(default)]
        insert: String,
    },
}

impl Op {
    /// The root a root op names; `None` for a path op.
    pub(super) fn name(&self) -> Option<&str> {
        match self {
            Op::InsertText { name, .. }
            | Op::DeleteText { name, .. }
            | Op::SetMap { name, .. }
            | Op::DeleteMap { name, .. }
            | Op::PushArray { name, .. }
            | Op::DeleteArray { name, .. } => Some(name),
            Op::Set { .. } | Op::Delete { .. } | Op::Splice { .. } | Op::SpliceText { .. } => None,
        }
    }

    /// The path a path op names; `None` for a root op.
    pub fn path(&self) -> Option<&[Seg]> {
        match self {
            Op::Set { path, .. }
            | Op::Delete { path }
            | Op::Splice { path, .. }
            | Op::SpliceText { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The path a path op names, to rewrite (rebasing).
    pub fn path_mut(&mut self) -> Option<&mut Vec<Seg>> {
        match self {
            Op::Set { path, .. }
            | Op::Delete { path }
            | Op::Splice { path, .. }
            | Op::SpliceText { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Checks `ops` against the document and applies all of them in one transaction, or none.
///
/// Every op is checked first, against the document as the ops before it leave it: root name
/// (non-empty, at most [`MAX_NAME_BYTES`](super::MAX_NAME_BYTES)), root type (an undefined root holding nothing takes
/// the type of the first op on it; one holding content must match the inferred type), index
/// and length bounds, surrogate pairs, value depth, and the batch limits [`MAX_OPS`](super::MAX_OPS) and
/// [`MAX_TEXT_BYTES`](super::MAX_TEXT_BYTES). Text positions are UTF-16 code units (see the [module doc](super)).
pub fn apply_ops(doc: &Doc, ops: &[Op]) -> Result<(), OpError> {
    apply_ops_limited(doc, ops, MAX_DEPTH)
}

/// [`apply_ops`] with values nested at most `max_depth` deep in the document, the root
/// counting as 1 (pass the node's `--max-nesting-depth`; at most [`MAX_DEPTH`]).
pub fn apply_ops_limited(doc: &Doc, ops: &[Op], max_depth: usize) -> Result<(), OpError> {
    let mut txn = doc.try_transact_mut().map_err(|_| OpError::Busy)?;
    apply_ops_in(&mut txn, ops, max_depth)
}

/// [`apply_ops_limited`] inside a transaction the caller opened (for instance with an origin).
/// On error the transaction is left unchanged.
pub fn apply_ops_in(txn: &mut TransactionMut, ops: &[Op], max_depth: usize) -> Result<(), OpError> {
    let steps = plan_ops(txn, ops, max_depth.min(MAX_DEPTH))?;
    for step in steps {
        match step {
            Step::Path(step) => super::path::apply(txn, step),
            Step::InsertText { name, index, text } => {
                let t = txn.get_or_insert_text(name);
                t.insert(txn, index, text);
            }
            Step::DeleteText { name, index, len } => {
                let t = txn.get_or_insert_text(name);
                t.remove_range(txn, index, len);
            }
            Step::SetMap { name, key, value } => {
                let m = txn.get_or_insert_map(name);
                m.insert(txn, key, In::Any(value));
            }
            Step::DeleteMap { name, key } => {
                let m = txn.get_or_insert_map(name);
                m.remove(txn, key);
            }
            Step::PushArray { name, values } => {
                let a = txn.get_or_insert_array(name);
                let end = a.len(txn);
                a.insert_range(txn, end, values);
            }
            Step::DeleteArray { name, index, len } => {
                let a = txn.get_or_insert_array(name);
                a.remove_range(txn, index, len);
            }
        }
    }
    Ok(())
}

/// A JSON value as a plain Yjs value; `None` when nested deeper than `depth`. Integers within
/// JavaScript's safe range stay integers, other numbers become floats (never BigInt, which
/// JavaScript peers would not expect).
pub(super) fn json_to_any(value: &Value, depth: usize) -> Option<Any> {
    let depth = depth.checked_sub(1)?;
    Some(match value {
        Value::Null => Any::Null,
        Value::Bool(b) => Any::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i)
                if (Number::I64_MIN_SAFE_INTEGER..=Number::I64_MAX_SAFE_INTEGER).contains(&i) =>
            {
                Any::Number(Number::Int(i))
            }
            _ => n
                .as_f64()
                .map_or(Any::Null, |f| Any::Number(Number::Float(f))),
        },
        Value::String(s) => Any::String(s.as_str().into()),
        Value::Array(items) => Any::Array(
            items
                .iter()
                .map(|v| json_to_any(v, depth))
                .collect::<Option<Vec<_>>>()?
                .into(),
        ),
        Value::Object(entries) => Any::Map(Arc::new(
            entries
                .iter()
                .map(|(k, v)| Some((k.clone(), json_to_any(v, depth)?)))
                .collect::<Option<HashMap<_, _>>>()?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::docjson::InvalidOp;
    use crate::docjson::testing::{apply, json_of, ops, record, replica, sample_doc, sample_json};

    #[test]
    fn ops_deserialise_strictly() {
        let parsed = ops(json!([
            {"op": "insert_text", "name": "t", "index": 0, "text": "hi"},
            {"op": "delete_text", "name": "t", "index": 0, "length": 2},
            {"op": "set_map", "name": "m", "key": "k", "value": {"a": [1]}},
            {"op": "delete_map", "name": "m", "key": "k"},
            {"op": "push_array", "name": "a", "values": [1, "x"]},
            {"op": "delete_array", "name": "a", "index": 0, "length": 1},
        ]));
        assert_eq!(parsed.len(), 6);
        let unknown_field = json!({"op": "delete_map", "name": "m", "key": "k", "x": 1});
        assert!(serde_json::from_value::<Op>(unknown_field).is_err());
        let unknown_op = json!({"op": "clear", "name": "m"});
        assert!(serde_json::from_value::<Op>(unknown_op).is_err());
        let negative = json!({"op": "delete_text", "name": "t", "index": -1, "length": 1});
        assert!(serde_json::from_value::<Op>(negative).is_err());
    }

    #[test]
    fn applies_ops_to_undefined_roots_and_peers_converge() {
        let origin = sample_doc(1);
        let server = replica(&origin, 2);
        let updates = record(&server);
        let batch = ops(json!([
            {"op": "insert_text", "name": "text", "index": 8, "text": "!"},
            {"op": "delete_text", "name": "text", "index": 0, "length": 6},
            {"op": "set_map", "name": "map", "key": "n", "value": {"x": [1, 2.5, null]}},
            {"op": "delete_map", "name": "map", "key": "bin"},
            {"op": "delete_map", "name": "map", "key": "never-there"},
            {"op": "push_array", "name": "list", "values": [true, "z"]},
            {"op": "delete_array", "name": "list", "index": 0, "length": 2},
            {"op": "insert_text", "name": "fresh", "index": 0, "text": "new"},
        ]));
        apply_ops(&server, &batch).expect("ops apply");
        let mut expected = sample_json();
        expected["text"] = json!("😀! world");
        expected["map"]["n"] = json!({"x": [1, 2.5, null]});
        expected["map"]
            .as_object_mut()
            .expect("object")
            .remove("bin");
        expected["list"] = json!([{"k": "v"}, ["a"], true, "z"]);
        expected["fresh"] = json!("new");
        assert_eq!(json_of(&server), expected);

        let updates = updates.lock().expect("lock");
        assert_eq!(updates.len(), 1, "one transaction, one update");
        apply(&origin, &updates[0]);
        assert_eq!(json_of(&origin), expected);
    }

    #[test]
    fn a_bad_op_changes_nothing() {
        let doc = sample_doc(1);
        let before = json_of(&doc);
        let updates = record(&doc);
        let batch = ops(json!([
            {"op": "insert_text", "name": "text", "index": 0, "text": "x"},
            {"op": "set_map", "name": "map", "key": "k", "value": 1},
            {"op": "delete_array", "name": "list", "index": 3, "length": 2},
        ]));
        let err = apply_ops(&doc, &batch).expect_err("out of bounds");
        assert_eq!(
            err,
            OpError::Invalid {
                index: 2,
                reason: InvalidOp::RangeOutOfBounds {
                    index: 3,
                    length: 2,
                    len: 4
                }
            }
        );
        assert_eq!(
            err.to_string(),
            "op 2: range of 2 from index 3 reaches past the end (4)"
        );
        assert_eq!(json_of(&doc), before);
        assert!(updates.lock().expect("lock").is_empty());
    }
}
