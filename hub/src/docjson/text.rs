//! Text positions. Ops count UTF-16 code units, like JavaScript and Yjs; the document counts in
//! its own [`OffsetKind`]. These check a position (bounds, surrogate pairs) and convert it.

use yrs::branch::BranchPtr;
use yrs::types::text::YChange;
use yrs::{Any, GetString, OffsetKind, Out, ReadTxn, Text, TextRef};

use super::InvalidOp;

/// Stands for an embed (one index unit that is not a character) in a UTF-16 unit buffer.
pub(super) const EMBED: u32 = 0x1_0000;

/// A text's content as UTF-16 units ([`EMBED`] for embeds and embedded types), or `None` when it
/// holds anything else: then yrs' indexes would count items that this view does not see.
pub(super) fn text_units<T: ReadTxn>(
    txn: &T,
    ptr: BranchPtr,
    offset_kind: OffsetKind,
) -> Option<Vec<u32>> {
    let text = TextRef::from(ptr);
    let mut units = Vec::new();
    let mut string_units = 0usize;
    let mut doc_len = 0u64;
    for chunk in text.diff(txn, YChange::identity) {
        match chunk.insert {
            Out::Any(Any::String(s)) => {
                let before = units.len();
                units.extend(s.encode_utf16().map(u32::from));
                string_units += units.len() - before;
                doc_len += match offset_kind {
                    OffsetKind::Utf16 => (units.len() - before) as u64,
                    OffsetKind::Bytes => s.len() as u64,
                };
            }
            _ => {
                units.push(EMBED);
                doc_len += 1;
            }
        }
    }
    // A string embed looks like a chunk of text in the diff; only real text is in get_string.
    let plain_units = text.get_string(txn).encode_utf16().count();
    let consistent = plain_units == string_units && doc_len == u64::from(text.len(txn));
    consistent.then_some(units)
}

/// Checks a text position: within bounds and not inside a surrogate pair.
pub(super) fn text_position(units: &[u32], index: u64) -> Result<usize, InvalidOp> {
    let len = units.len() as u64;
    let at = usize::try_from(index)
        .ok()
        .filter(|at| *at <= units.len())
        .ok_or(InvalidOp::IndexOutOfBounds { index, len })?;
    let splits = match (at.checked_sub(1).and_then(|i| units.get(i)), units.get(at)) {
        (Some(high), Some(low)) => {
            (0xD800..0xDC00).contains(high) && (0xDC00..0xE000).contains(low)
        }
        _ => false,
    };
    if splits {
        return Err(InvalidOp::SplitsSurrogatePair { index });
    }
    Ok(at)
}

/// A UTF-16 position as the document counts it (its [`OffsetKind`]).
pub(super) fn doc_offset(
    units: &[u32],
    at: usize,
    offset_kind: OffsetKind,
) -> Result<u32, InvalidOp> {
    let offset = match offset_kind {
        OffsetKind::Utf16 => at,
        OffsetKind::Bytes => units.iter().take(at).map(|u| unit_bytes(*u)).sum(),
    };
    to_u32(offset)
}

/// UTF-8 bytes of one UTF-16 unit (a surrogate is half of a 4-byte character); an embed is 1.
fn unit_bytes(unit: u32) -> usize {
    match unit {
        EMBED => 1,
        0..0x80 => 1,
        0x80..0x800 => 2,
        0xD800..0xE000 => 2,
        _ => 3,
    }
}

pub(super) fn to_u32(n: usize) -> Result<u32, InvalidOp> {
    u32::try_from(n).map_err(|_| InvalidOp::IndexOutOfBounds {
        index: n as u64,
        len: u64::from(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;
    use yrs::{ClientID, Doc, Options, Transact, WriteTxn};

    use super::*;
    use crate::docjson::testing::{json_any, json_of, new_doc, ops, record, replica, text_content};
    use crate::docjson::{Op, OpError, apply_ops, restore_to};

    #[test]
    fn text_indexes_are_utf16() {
        let doc = new_doc(1);
        apply_ops(
            &doc,
            &ops(json!([{"op": "insert_text", "name": "t", "index": 0, "text": "a😀b"}])),
        )
        .expect("insert");
        apply_ops(
            &doc,
            &ops(json!([{"op": "insert_text", "name": "t", "index": 3, "text": "é"}])),
        )
        .expect("insert after the pair");
        assert_eq!(json_of(&doc)["t"], json!("a😀éb"));
        let err = apply_ops(
            &doc,
            &ops(json!([{"op": "insert_text", "name": "t", "index": 2, "text": "x"}])),
        )
        .expect_err("inside the pair");
        assert_eq!(
            err,
            OpError::Invalid {
                index: 0,
                reason: InvalidOp::SplitsSurrogatePair { index: 2 }
            }
        );
        let err = apply_ops(
            &doc,
            &ops(json!([{"op": "delete_text", "name": "t", "index": 1, "length": 1}])),
        )
        .expect_err("half a pair");
        assert_eq!(
            err,
            OpError::Invalid {
                index: 0,
                reason: InvalidOp::SplitsSurrogatePair { index: 2 }
            }
        );
        apply_ops(
            &doc,
            &ops(json!([{"op": "delete_text", "name": "t", "index": 1, "length": 2}])),
        )
        .expect("the whole pair");
        assert_eq!(json_of(&doc)["t"], json!("aéb"));
    }

    #[test]
    fn text_indexes_are_utf16_in_a_byte_offset_doc_too() {
        let doc = Doc::with_options(Options::with_client_id(ClientID::new(1)));
        assert_eq!(doc.offset_kind(), OffsetKind::Bytes);
        let batch = ops(json!([
            {"op": "insert_text", "name": "t", "index": 0, "text": "é😀b"},
            {"op": "insert_text", "name": "t", "index": 3, "text": "-"},
            {"op": "delete_text", "name": "t", "index": 0, "length": 1},
        ]));
        apply_ops(&doc, &batch).expect("ops apply");
        assert_eq!(json_of(&doc)["t"], json!("😀-b"));
    }

    #[test]
    fn embeds_count_one_unit() {
        let doc = new_doc(1);
        {
            let mut txn = doc.transact_mut();
            let t = txn.get_or_insert_text("t");
            t.insert(&mut txn, 0, "ab");
            t.insert_embed(&mut txn, 1, json_any(json!({"img": "x.png"})));
        }
        let batch = ops(json!([
            {"op": "insert_text", "name": "t", "index": 2, "text": "😀"},
            {"op": "delete_text", "name": "t", "index": 0, "length": 1},
        ]));
        apply_ops(&replica(&doc, 2), &batch).expect("on an undefined root");
        apply_ops(&doc, &batch).expect("on a typed root");
        assert_eq!(
            text_content(&doc, "t"),
            vec![json!({"img": "x.png"}), json!("😀b")]
        );
        let err = apply_ops(
            &doc,
            &ops(json!([{"op": "delete_text", "name": "t", "index": 0, "length": 5}])),
        )
        .expect_err("past the end");
        assert!(matches!(
            err,
            OpError::Invalid {
                reason: InvalidOp::RangeOutOfBounds { len: 4, .. },
                ..
            }
        ));
    }

    /// What the text should be after applying ops, modelled on UTF-16 units like JavaScript.
    fn model_apply(model: &mut Vec<u16>, op: &Op) -> bool {
        let splits = |m: &[u16], i: usize| {
            i > 0
                && i < m.len()
                && (0xD800..0xDC00).contains(&m[i - 1])
                && (0xDC00..0xE000).contains(&m[i])
        };
        match op {
            Op::InsertText { index, text, .. } => {
                let i = *index as usize;
                if i > model.len() || splits(model, i) {
                    return false;
                }
                model.splice(i..i, text.encode_utf16());
            }
            Op::DeleteText { index, length, .. } => {
                let (i, n) = (*index as usize, *length as usize);
                if i + n > model.len() || splits(model, i) || splits(model, i + n) {
                    return false;
                }
                model.drain(i..i + n);
            }
            _ => unreachable!("text ops only"),
        }
        true
    }

    fn text_op() -> impl Strategy<Value = Op> {
        let text = prop::collection::vec(
            prop::sample::select(vec!["a", "é", "😀", "\u{FFFC}", "z"]),
            0..4,
        )
        .prop_map(|parts| parts.concat());
        prop_oneof![
            (0u64..12, text).prop_map(|(index, text)| Op::InsertText {
                name: "t".into(),
                index,
                text
            }),
            (0u64..12, 0u64..5).prop_map(|(index, length)| Op::DeleteText {
                name: "t".into(),
                index,
                length
            }),
        ]
    }

    proptest! {
        #[test]
        fn text_ops_match_a_utf16_model(
            batches in prop::collection::vec(prop::collection::vec(text_op(), 1..4), 1..8),
            bytes_offsets in any::<bool>(),
        ) {
            let doc = if bytes_offsets {
                Doc::with_options(Options::with_client_id(ClientID::new(7)))
            } else {
                new_doc(7)
            };
            let mut model: Vec<u16> = Vec::new();
            for batch in batches {
                let mut next = model.clone();
                let valid = batch.iter().all(|op| model_apply(&mut next, op));
                let result = apply_ops(&doc, &batch);
                prop_assert_eq!(result.is_ok(), valid, "{:?}", result);
                if valid {
                    model = next;
                }
                let text = String::from_utf16(&model).expect("model stays valid UTF-16");
                let rendered = json_of(&doc).get("t").cloned().unwrap_or(json!(""));
                prop_assert_eq!(rendered, json!(text));
            }
            // A replica that got it all as updates converges, and a restore from it is a no-op.
            let copy = replica(&doc, 8);
            prop_assert_eq!(json_of(&copy), json_of(&doc));
            let updates = record(&doc);
            restore_to(&doc, &copy).expect("restore");
            prop_assert!(updates.lock().expect("lock").is_empty());
        }
    }
}
