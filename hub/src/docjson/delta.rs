//! What changed between two views ([`doc_to_view`](super::doc_to_view)), as path ops
//! ([`Op::Set`], [`Op::Delete`], [`Op::Splice`], [`Op::SpliceText`]): applied in order to the
//! old view they give the new one ([`apply_delta`]). The JSON socket sends these to bots, so a
//! bot keeps its view current without a CRDT library, and reads changes in the same vocabulary
//! it writes in.
//!
//! Lists and strings are compared by their common prefix and suffix: one splice per changed
//! list or string, or, where exactly one item changed into an item of the same kind, the
//! change inside that item (a ticked checkbox is one `set` of an attribute, not a new list).
//! String positions count UTF-16 units, and a splice never cuts a surrogate pair.

use serde_json::Value;

use super::Op;
use super::path::Seg;

/// The ops that turn `old` into `new` (both objects: views of a document).
pub fn diff(old: &Value, new: &Value) -> Vec<Op> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    diff_into(old, new, &mut path, &mut out);
    out
}

fn same_kind(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::Object(_), Value::Object(_))
            | (Value::Array(_), Value::Array(_))
            | (Value::String(_), Value::String(_))
    )
}

/// `old` and `new` are of the same kind (see `same_kind`) or the caller replaces the value.
fn diff_into(old: &Value, new: &Value, path: &mut Vec<Seg>, out: &mut Vec<Op>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for key in o.keys() {
                if !n.contains_key(key) {
                    path.push(Seg::Key(key.clone()));
                    out.push(Op::Delete { path: path.clone() });
                    path.pop();
                }
            }
            for (key, nv) in n {
                path.push(Seg::Key(key.clone()));
                match o.get(key) {
                    Some(ov) if ov == nv => {}
                    Some(ov) if same_kind(ov, nv) => diff_into(ov, nv, path, out),
                    _ => out.push(Op::Set {
                        path: path.clone(),
                        value: nv.clone(),
                    }),
                }
                path.pop();
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            let prefix = o.iter().zip(n).take_while(|(a, b)| a == b).count();
            let suffix = o[prefix..]
                .iter()
                .rev()
                .zip(n[prefix..].iter().rev())
                .take_while(|(a, b)| a == b)
                .count();
            let (old_mid, new_mid) = (&o[prefix..o.len() - suffix], &n[prefix..n.len() - suffix]);
            if let ([ov], [nv]) = (old_mid, new_mid)
                && same_kind(ov, nv)
            {
                path.push(Seg::Index(prefix as u64));
                diff_into(ov, nv, path, out);
                path.pop();
                return;
            }
            out.push(Op::Splice {
                path: path.clone(),
                index: prefix as u64,
                delete: old_mid.len() as u64,
                insert: new_mid.to_vec(),
                xml: false,
            });
        }
        (Value::String(o), Value::String(n)) => {
            let (o, n): (Vec<u16>, Vec<u16>) =
                (o.encode_utf16().collect(), n.encode_utf16().collect());
            let mut prefix = o.iter().zip(&n).take_while(|(a, b)| a == b).count();
            // Never between the halves of a surrogate pair.
            if prefix > 0 && is_high(o[prefix - 1]) {
                prefix -= 1;
            }
            let mut suffix = o[prefix..]
                .iter()
                .rev()
                .zip(n[prefix..].iter().rev())
                .take_while(|(a, b)| a == b)
                .count();
            if suffix > 0 && is_low(o[o.len() - suffix]) {
                suffix -= 1;
            }
            out.push(Op::SpliceText {
                path: path.clone(),
                index: prefix as u64,
                delete: (o.len() - suffix - prefix) as u64,
                insert: String::from_utf16_lossy(&n[prefix..n.len() - suffix]),
            });
        }
        // Different kinds at the top: views are objects, so this is a caller's bug.
        _ => {}
    }
}

fn is_high(u: u16) -> bool {
    (0xD800..0xDC00).contains(&u)
}

fn is_low(u: u16) -> bool {
    (0xDC00..0xE000).contains(&u)
}

/// Applies path ops to a view, as a bot does with a delta; `Err` names the first op that does
/// not fit (the view was not the one the delta was computed from).
pub fn apply_delta(view: &mut Value, ops: &[Op]) -> Result<(), usize> {
    for (i, op) in ops.iter().enumerate() {
        apply_one(view, op).ok_or(i)?;
    }
    Ok(())
}

fn at<'v>(view: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    let mut cur = view;
    for seg in path {
        cur = match (cur, seg) {
            (Value::Object(o), Seg::Key(k)) => o.get_mut(k)?,
            (Value::Array(a), Seg::Index(i)) => a.get_mut(usize::try_from(*i).ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn apply_one(view: &mut Value, op: &Op) -> Option<()> {
    match op {
        Op::Set { path, value } => {
            let (Seg::Key(key), parent) = path.split_last()? else {
                return None;
            };
            at(view, parent)?
                .as_object_mut()?
                .insert(key.clone(), value.clone());
        }
        Op::Delete { path } => {
            let (Seg::Key(key), parent) = path.split_last()? else {
                return None;
            };
            at(view, parent)?.as_object_mut()?.remove(key)?;
        }
        Op::Splice {
            path,
            index,
            delete,
            insert,
            ..
        } => {
            let list = at(view, path)?.as_array_mut()?;
            let start = usize::try_from(*index).ok()?;
            let end = start.checked_add(usize::try_from(*delete).ok()?)?;
            if end > list.len() {
                return None;
            }
            list.splice(start..end, insert.iter().cloned());
        }
        Op::SpliceText {
            path,
            index,
            delete,
            insert,
        } => {
            let s = at(view, path)?;
            let mut units: Vec<u16> = s.as_str()?.encode_utf16().collect();
            let start = usize::try_from(*index).ok()?;
            let end = start.checked_add(usize::try_from(*delete).ok()?)?;
            if end > units.len() {
                return None;
            }
            units.splice(start..end, insert.encode_utf16());
            *s = Value::String(String::from_utf16(&units).ok()?);
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_ticked_box_is_one_set() {
        let old = json!({"default": [
            {"type": "taskItem", "attrs": {"checked": false}, "content": [{"type": "text", "text": "milk"}]},
            {"type": "taskItem", "attrs": {"checked": false}, "content": []}
        ]});
        let mut new = old.clone();
        new["default"][0]["attrs"]["checked"] = json!(true);
        let ops = diff(&old, &new);
        assert_eq!(
            serde_json::to_value(&ops).expect("json"),
            json!([{"op": "set", "path": ["default", 0, "attrs", "checked"], "value": true}])
        );
    }

    #[test]
    fn typing_is_one_text_splice_and_never_splits_a_pair() {
        let ops = diff(&json!({"t": "a😀b"}), &json!({"t": "a😁b"}));
        assert_eq!(
            serde_json::to_value(&ops).expect("json"),
            json!([{"op": "splice_text", "path": ["t"], "index": 1, "delete": 2, "insert": "😁"}])
        );
        let ops = diff(
            &json!({"l": [1, 2, 3]}),
            &json!({"l": [1, 9, 8, 3], "new": {"k": 1}}),
        );
        assert_eq!(
            serde_json::to_value(&ops).expect("json"),
            json!([
                {"op": "splice", "path": ["l"], "index": 1, "delete": 1, "insert": [9, 8]},
                {"op": "set", "path": ["new"], "value": {"k": 1}}
            ])
        );
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0i64..5).prop_map(Value::from),
            "[a-c😀]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn view() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-c]", value(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn a_delta_turns_the_old_view_into_the_new(old in view(), new in view()) {
            let ops = diff(&old, &new);
            let mut view = old.clone();
            prop_assert_eq!(apply_delta(&mut view, &ops), Ok(()));
            prop_assert_eq!(view, new);
            // And it survives the wire.
            let wire: Vec<Op> = serde_json::from_value(serde_json::to_value(&ops).expect("json")).expect("ops");
            prop_assert_eq!(wire, ops);
        }
    }
}
