//! What a branch holds: its declared type or, for an undefined branch, the type its content
//! implies (the rules are in the [module doc](super)). Reading never asks yrs for a typed
//! handle, since that would fix the type of an undefined root for good.

use yrs::branch::{Branch, BranchPtr};
use yrs::types::TypeRef;
use yrs::{Array, ArrayRef, GetString, Map, MapRef, Out, ReadTxn, TextRef};

use super::RootKind;

/// The branch behind a shared value, `None` for plain values and sub-documents.
pub(super) fn ptr_of(out: &Out) -> Option<BranchPtr> {
    let branch: &Branch = match out {
        Out::YText(v) => v.as_ref(),
        Out::YArray(v) => v.as_ref(),
        Out::YMap(v) => v.as_ref(),
        Out::YXmlElement(v) => v.as_ref(),
        Out::YXmlFragment(v) => v.as_ref(),
        Out::YXmlText(v) => v.as_ref(),
        Out::UndefinedRef(ptr) => return Some(*ptr),
        _ => return None,
    };
    Some(BranchPtr::from(branch))
}

pub(super) fn kind_of<T: ReadTxn>(txn: &T, ptr: BranchPtr) -> RootKind {
    match ptr.type_ref() {
        TypeRef::Text => RootKind::Text,
        TypeRef::Map => RootKind::Map,
        TypeRef::Array => RootKind::Array,
        TypeRef::XmlFragment => RootKind::XmlFragment,
        TypeRef::XmlElement(_) => RootKind::XmlElement,
        TypeRef::XmlText => RootKind::XmlText,
        TypeRef::Undefined => infer_kind(txn, ptr),
        _ => RootKind::Other,
    }
}

fn infer_kind<T: ReadTxn>(txn: &T, ptr: BranchPtr) -> RootKind {
    if ptr.len() == 0 {
        if MapRef::from(ptr).len(txn) > 0 {
            RootKind::Map
        } else {
            RootKind::Empty
        }
    } else if has_strings(txn, ptr) {
        RootKind::Text
    } else if ArrayRef::from(ptr)
        .iter(txn)
        .all(|v| matches!(v, Out::YXmlElement(_) | Out::YXmlText(_)))
    {
        RootKind::XmlFragment
    } else {
        RootKind::Array
    }
}

/// Whether the sequence holds text chunks; such a sequence must not be read as an array.
pub(super) fn has_strings<T: ReadTxn>(txn: &T, ptr: BranchPtr) -> bool {
    !TextRef::from(ptr).get_string(txn).is_empty()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use yrs::{Text, Transact, WriteTxn};

    use crate::docjson::testing::{apply, json_of, new_doc, ops, state};
    use crate::docjson::{InvalidOp, OpError, apply_ops, restore_to};

    /// A client can put text chunks into a root the server declared an array; yrs' array
    /// iterator would spin on them forever.
    #[test]
    fn survives_text_in_an_array_root() {
        let client = new_doc(1);
        {
            let mut txn = client.transact_mut();
            let t = txn.get_or_insert_text("x");
            t.insert(&mut txn, 0, "😀é");
        }
        let server = new_doc(2);
        server.transact_mut().get_or_insert_array("x");
        apply(&server, &state(&client));
        assert_eq!(json_of(&server), json!({"x": "😀é"}));
        let err = apply_ops(
            &server,
            &ops(json!([{"op": "push_array", "name": "x", "values": [1]}])),
        )
        .expect_err("mixed");
        assert_eq!(
            err,
            OpError::Invalid {
                index: 0,
                reason: InvalidOp::MixedContent { name: "x".into() }
            }
        );
        let version = new_doc(3);
        assert_eq!(
            restore_to(&server, &version),
            Err(OpError::MixedContent { name: "x".into() })
        );
    }
}
