//! [`doc_to_view`]: the document as bots see it over the JSON socket. Like [`doc_to_json`](super::doc_to_json)
//! except that XML is structured rather than a string, in ProseMirror's JSON shape, so that a
//! bot can address a paragraph or a list item by its path:
//!
//! ```text
//! Y.XmlFragment  -> [node, ...]
//! Y.XmlElement   -> {"type": tag, "attrs": {name: value, ...}, "content": [node, ...]}
//! Y.XmlText      -> {"type": "text", "text": "plain text"}
//! ```
//!
//! `attrs` and `content` are always present (possibly empty), so paths into them never depend
//! on whether an element had any. Formatting marks of XML text are not shown: a bot reads and
//! edits the characters; the marks stay where they are. Every path of the view is a path the
//! JSON operations accept ([`Op`](super::Op) with `path`).

use serde_json::{Map as JsonMap, Value};
use yrs::branch::BranchPtr;
use yrs::types::TypeRef;
use yrs::{Array, ArrayRef, GetString, Map, MapRef, Out, ReadTxn, TextRef};

use super::kinds::{kind_of, ptr_of};
use super::render::{any_to_json, is_empty_json};
use super::{MAX_DEPTH, RootKind};

/// The type name of a text node in the view; no element may take it.
pub(super) const TEXT_NODE: &str = "text";

/// Every non-empty root by name (see the module doc for XML). Never changes the document.
pub fn doc_to_view(txn: &impl ReadTxn) -> Value {
    let mut roots = JsonMap::new();
    for (name, out) in txn.root_refs() {
        let value = out_to_view(txn, &out, MAX_DEPTH);
        if !is_empty_json(&value) {
            roots.insert(name.to_owned(), value);
        }
    }
    Value::Object(roots)
}

fn out_to_view<T: ReadTxn>(txn: &T, out: &Out, depth: usize) -> Value {
    let Some(depth) = depth.checked_sub(1) else {
        return Value::Null;
    };
    match out {
        Out::Any(any) => any_to_json(any, depth),
        other => match ptr_of(other) {
            Some(ptr) => branch_to_view(txn, ptr, depth),
            None => Value::Null,
        },
    }
}

fn branch_to_view<T: ReadTxn>(txn: &T, ptr: BranchPtr, depth: usize) -> Value {
    match kind_of(txn, ptr) {
        RootKind::Empty | RootKind::Other => Value::Null,
        RootKind::Text => Value::String(TextRef::from(ptr).get_string(txn)),
        RootKind::Map => Value::Object(
            MapRef::from(ptr)
                .iter(txn)
                .map(|(key, value)| (key.to_owned(), out_to_view(txn, &value, depth)))
                .collect(),
        ),
        RootKind::Array => {
            // A typed array that a client filled with text chunks: show the text (edits
            // refuse it as mixed content).
            let text = TextRef::from(ptr).get_string(txn);
            if !text.is_empty() {
                return Value::String(text);
            }
            Value::Array(
                ArrayRef::from(ptr)
                    .iter(txn)
                    .map(|v| out_to_view(txn, &v, depth))
                    .collect(),
            )
        }
        RootKind::XmlFragment => Value::Array(children(txn, ptr, depth)),
        RootKind::XmlElement => {
            let tag = match ptr.type_ref() {
                TypeRef::XmlElement(tag) => tag.to_string(),
                _ => String::new(),
            };
            let attrs: JsonMap<String, Value> = MapRef::from(ptr)
                .iter(txn)
                .map(|(key, value)| (key.to_owned(), out_to_view(txn, &value, depth)))
                .collect();
            let mut node = JsonMap::new();
            node.insert("type".into(), Value::String(tag));
            node.insert("attrs".into(), Value::Object(attrs));
            node.insert("content".into(), Value::Array(children(txn, ptr, depth)));
            Value::Object(node)
        }
        RootKind::XmlText => text_node(TextRef::from(ptr).get_string(txn)),
    }
}

/// An XML container's children as nodes. Plain values a client put among them (not valid XML,
/// but possible) are shown as they are, so indexes still count every child.
fn children<T: ReadTxn>(txn: &T, ptr: BranchPtr, depth: usize) -> Vec<Value> {
    let text = TextRef::from(ptr).get_string(txn);
    if !text.is_empty() {
        // Characters directly in a fragment (a client's doing): one text node.
        return vec![text_node(text)];
    }
    let Some(depth) = depth.checked_sub(1) else {
        return Vec::new();
    };
    ArrayRef::from(ptr)
        .iter(txn)
        .map(|child| out_to_view(txn, &child, depth + 1))
        .collect()
}

fn text_node(text: String) -> Value {
    let mut node = JsonMap::new();
    node.insert("type".into(), Value::String(TEXT_NODE.into()));
    node.insert("text".into(), Value::String(text));
    Value::Object(node)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use yrs::{Any, Transact, WriteTxn, Xml, XmlElementPrelim, XmlFragment, XmlTextPrelim};

    use super::*;
    use crate::docjson::testing::{new_doc, replica, sample_doc};

    #[test]
    fn xml_is_structured_and_other_roots_render_as_json() {
        let doc = new_doc(1);
        {
            let mut txn = doc.transact_mut();
            let f = txn.get_or_insert_xml_fragment("default");
            let list = f.insert(&mut txn, 0, XmlElementPrelim::empty("taskList"));
            let item = list.insert(&mut txn, 0, XmlElementPrelim::empty("taskItem"));
            item.insert_attribute(&mut txn, "checked", Any::Bool(false));
            let p = item.insert(&mut txn, 0, XmlElementPrelim::empty("paragraph"));
            p.insert(&mut txn, 0, XmlTextPrelim::new("milk"));
            f.insert(&mut txn, 1, XmlElementPrelim::empty("paragraph"));
        }
        let expected = json!({"default": [
            {"type": "taskList", "attrs": {}, "content": [
                {"type": "taskItem", "attrs": {"checked": false}, "content": [
                    {"type": "paragraph", "attrs": {}, "content": [{"type": "text", "text": "milk"}]}
                ]}
            ]},
            {"type": "paragraph", "attrs": {}, "content": []}
        ]});
        assert_eq!(doc_to_view(&doc.transact()), expected);
        // A replica's roots are undefined: inferred the same, and not typed by reading.
        assert_eq!(doc_to_view(&replica(&doc, 2).transact()), expected);

        let sample = sample_doc(1);
        let view = doc_to_view(&sample.transact());
        assert_eq!(view["text"], json!("héllo 😀 world"));
        assert_eq!(
            view["xml"],
            json!([
                {"type": "p", "attrs": {"a": "x\"y", "z": "1"}, "content": [
                    {"type": "text", "text": "bold and <plain>"}
                ]},
                {"type": "text", "text": "tail"}
            ])
        );
    }
}
