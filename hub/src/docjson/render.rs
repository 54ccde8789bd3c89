//! [`doc_to_json`] and the rendering behind it, XML strings included. Restore renders too: it
//! compares a document's values with a version's by their JSON.

use base64::Engine as _;
use serde_json::Value;
use yrs::branch::BranchPtr;
use yrs::types::text::YChange;
use yrs::types::{Attrs, TypeRef};
use yrs::{Any, Array, ArrayRef, GetString, Map, MapRef, Number, Out, ReadTxn, Text, TextRef};

use super::kinds::{kind_of, ptr_of};
use super::{MAX_DEPTH, RootKind};

/// Renders every root as JSON, by name: text -> string, map -> object, array -> list, XML ->
/// string (see below), nested shared types recursively, binary -> base64 string, undefined and
/// non-finite numbers -> `null`, sub-documents -> `null`.
///
/// Roots whose rendering is empty (`""`, `[]`, `{}`, `null`) are left out: every root name
/// exists implicitly in Yjs, and whether a peer has declared one is local state, not content.
///
/// XML renders like Yjs' `toString()`, except that attributes are sorted by name, and text and
/// attribute values are escaped (`& < > "`) so the result parses as XML. It never changes the
/// document (undefined roots keep their undefined type; see the [module doc](super)).
pub fn doc_to_json(txn: &impl ReadTxn) -> Value {
    let mut roots = serde_json::Map::new();
    for (name, out) in txn.root_refs() {
        let value = out_to_json(txn, &out, MAX_DEPTH);
        if !is_empty_json(&value) {
            roots.insert(name.to_owned(), value);
        }
    }
    Value::Object(roots)
}

pub(super) fn is_empty_json(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Renders one value; `depth` levels may still be entered.
pub(super) fn out_to_json<T: ReadTxn>(txn: &T, out: &Out, depth: usize) -> Value {
    let Some(depth) = depth.checked_sub(1) else {
        return Value::Null;
    };
    match out {
        Out::Any(any) => any_to_json(any, depth),
        other => match ptr_of(other) {
            Some(ptr) => branch_to_json(txn, ptr, depth),
            None => Value::Null,
        },
    }
}

fn branch_to_json<T: ReadTxn>(txn: &T, ptr: BranchPtr, depth: usize) -> Value {
    match kind_of(txn, ptr) {
        RootKind::Empty | RootKind::Other => Value::Null,
        RootKind::Text => Value::String(TextRef::from(ptr).get_string(txn)),
        RootKind::Map => {
            let map = MapRef::from(ptr);
            let entries = map
                .iter(txn)
                .map(|(key, value)| (key.to_owned(), out_to_json(txn, &value, depth)))
                .collect();
            Value::Object(entries)
        }
        RootKind::Array => {
            // A typed array that a client filled with text chunks: show the text.
            let text = TextRef::from(ptr).get_string(txn);
            if !text.is_empty() {
                return Value::String(text);
            }
            let array = ArrayRef::from(ptr);
            let items = array
                .iter(txn)
                .map(|v| out_to_json(txn, &v, depth))
                .collect();
            Value::Array(items)
        }
        RootKind::XmlFragment | RootKind::XmlElement | RootKind::XmlText => {
            let mut buf = String::new();
            write_xml(txn, ptr, &mut buf, depth);
            Value::String(buf)
        }
    }
}

pub(super) fn any_to_json(any: &Any, depth: usize) -> Value {
    match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(n) => number_to_json(*n),
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(bytes) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Any::Array(items) => match depth.checked_sub(1) {
            Some(depth) => Value::Array(items.iter().map(|v| any_to_json(v, depth)).collect()),
            None => Value::Null,
        },
        Any::Map(entries) => match depth.checked_sub(1) {
            Some(depth) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), any_to_json(v, depth)))
                    .collect(),
            ),
            None => Value::Null,
        },
    }
}

fn number_to_json(n: Number) -> Value {
    match n {
        Number::Int(i) => Value::from(i),
        // JavaScript has one number type: 3.0 is 3.
        Number::Float(f)
            if f.is_finite() && f.trunc() == f && f.abs() <= Number::F64_MAX_SAFE_INTEGER =>
        {
            Value::from(f as i64)
        }
        Number::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
    }
}

/// The text of a value in XML (a non-XML child, an attribute, a format value): strings as they
/// are, `null` as nothing, anything else as JSON. Restore relies on rendering a copy the same.
pub(super) fn value_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn escape_into(buf: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => buf.push_str("&amp;"),
            '<' => buf.push_str("&lt;"),
            '>' => buf.push_str("&gt;"),
            '"' => buf.push_str("&quot;"),
            c => buf.push(c),
        }
    }
}

/// Writes an XML branch (element, text, or fragment, also an undefined one read as fragment).
pub(super) fn write_xml<T: ReadTxn>(txn: &T, ptr: BranchPtr, buf: &mut String, depth: usize) {
    let Some(depth) = depth.checked_sub(1) else {
        return;
    };
    match ptr.type_ref() {
        TypeRef::XmlElement(tag) => {
            buf.push('<');
            buf.push_str(tag);
            for (key, value) in sorted_attributes(txn, ptr, depth) {
                buf.push(' ');
                buf.push_str(&key);
                buf.push_str("=\"");
                escape_into(buf, &value);
                buf.push('"');
            }
            buf.push('>');
            write_xml_children(txn, ptr, buf, depth);
            buf.push_str("</");
            buf.push_str(tag);
            buf.push('>');
        }
        TypeRef::XmlText => write_xml_text(txn, ptr, buf, depth),
        _ => write_xml_children(txn, ptr, buf, depth),
    }
}

pub(super) fn sorted_attributes<T: ReadTxn>(
    txn: &T,
    ptr: BranchPtr,
    depth: usize,
) -> Vec<(String, String)> {
    let map = MapRef::from(ptr);
    let mut attrs: Vec<(String, String)> = map
        .iter(txn)
        .map(|(k, v)| (k.to_owned(), value_text(out_to_json(txn, &v, depth))))
        .collect();
    attrs.sort();
    attrs
}

fn is_xml(kind: RootKind) -> bool {
    matches!(
        kind,
        RootKind::XmlElement | RootKind::XmlText | RootKind::XmlFragment
    )
}

fn write_xml_children<T: ReadTxn>(txn: &T, ptr: BranchPtr, buf: &mut String, depth: usize) {
    let text = TextRef::from(ptr).get_string(txn);
    if !text.is_empty() {
        escape_into(buf, &text);
        return;
    }
    let array = ArrayRef::from(ptr);
    for child in array.iter(txn) {
        match ptr_of(&child) {
            Some(child) if is_xml(kind_of(txn, child)) => write_xml(txn, child, buf, depth),
            _ => escape_into(buf, &value_text(out_to_json(txn, &child, depth))),
        }
    }
}

/// Writes an XML text: formatted runs become tags, like Yjs' `XmlText.toString()`. Adjacent runs
/// with equal formatting are merged first, so the result does not depend on how the text
/// happens to be split into items.
fn write_xml_text<T: ReadTxn>(txn: &T, ptr: BranchPtr, buf: &mut String, depth: usize) {
    let mut pending: Option<(Option<Box<Attrs>>, String)> = None;
    for chunk in TextRef::from(ptr).diff(txn, YChange::identity) {
        let attrs = chunk.attributes.filter(|a| !a.is_empty());
        match chunk.insert {
            Out::Any(Any::String(s)) => match &mut pending {
                Some((run_attrs, run)) if *run_attrs == attrs => run.push_str(&s),
                _ => {
                    if let Some((run_attrs, run)) = pending.take() {
                        write_run(buf, run_attrs.as_deref(), depth, |buf| {
                            escape_into(buf, &run)
                        });
                    }
                    pending = Some((attrs, s.to_string()));
                }
            },
            other => {
                if let Some((run_attrs, run)) = pending.take() {
                    write_run(buf, run_attrs.as_deref(), depth, |buf| {
                        escape_into(buf, &run)
                    });
                }
                write_run(buf, attrs.as_deref(), depth, |buf| match ptr_of(&other) {
                    Some(child) if is_xml(kind_of(txn, child)) => {
                        write_xml(txn, child, buf, depth);
                    }
                    _ => escape_into(buf, &value_text(out_to_json(txn, &other, depth))),
                });
            }
        }
    }
    if let Some((run_attrs, run)) = pending {
        write_run(buf, run_attrs.as_deref(), depth, |buf| {
            escape_into(buf, &run)
        });
    }
}

fn write_run(
    buf: &mut String,
    attrs: Option<&Attrs>,
    depth: usize,
    content: impl FnOnce(&mut String),
) {
    let mut tags: Vec<(&str, &Any)> = attrs
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_ref(), v))
        .collect();
    tags.sort_by(|a, b| a.0.cmp(b.0));
    for (tag, value) in &tags {
        buf.push('<');
        buf.push_str(tag);
        if let Any::Map(params) = value {
            let mut params: Vec<(&String, &Any)> = params.iter().collect();
            params.sort_by(|a, b| a.0.cmp(b.0));
            for (key, param) in params {
                buf.push(' ');
                buf.push_str(key);
                buf.push_str("=\"");
                escape_into(buf, &value_text(any_to_json(param, depth)));
                buf.push('"');
            }
        }
        buf.push('>');
    }
    content(buf);
    for (tag, _) in tags.iter().rev() {
        buf.push_str("</");
        buf.push_str(tag);
        buf.push('>');
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use yrs::{Array, Transact, WriteTxn};

    use crate::docjson::testing::{
        json_of, new_doc, replica, root_is_undefined, sample_doc, sample_json,
    };

    #[test]
    fn renders_typed_roots() {
        assert_eq!(json_of(&sample_doc(1)), sample_json());
    }

    #[test]
    fn renders_undefined_roots_by_inference_without_typing_them() {
        let copy = replica(&sample_doc(1), 2);
        for name in ["text", "map", "list", "xml"] {
            assert!(root_is_undefined(&copy, name), "{name} should be undefined");
        }
        assert_eq!(json_of(&copy), sample_json());
        for name in ["text", "map", "list", "xml"] {
            assert!(
                root_is_undefined(&copy, name),
                "{name} was typed by reading"
            );
        }
    }

    #[test]
    fn omits_empty_roots() {
        let doc = new_doc(1);
        {
            let mut txn = doc.transact_mut();
            txn.get_or_insert_text("t");
            txn.get_or_insert_map("m");
            let a = txn.get_or_insert_array("a");
            a.push_back(&mut txn, 1);
            a.remove(&mut txn, 0);
        }
        assert_eq!(json_of(&doc), json!({}));
        assert_eq!(json_of(&replica(&doc, 2)), json!({}));
    }
}
