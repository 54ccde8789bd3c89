//! JSON views of a room document, and JSON edits on it, for the REST API.
//!
//! - [`doc_to_json`]: every root by name as plain JSON.
//! - [`apply_ops`]: a batch of [`Op`]s, checked as a whole against the document and then applied
//!   in one transaction, so a request lands completely or not at all (one update for peers).
//! - [`restore_to`]: makes a document's content equal to another document's (an older version)
//!   as an ordinary edit: new items, history kept, so every replica just receives an update.
//!
//! Roots that only arrived in client updates have no type on the server: yrs keeps them as
//! undefined branches until a typed handle is asked for, and asking (`get_or_insert_*`) fixes
//! the type for good. Reading therefore never asks; it infers the type from the content: map
//! entries and no sequence -> map; any string chunk in the sequence -> text; a sequence of only
//! XML elements and XML texts -> XML fragment; any other sequence -> array. A text holding only
//! embeds is indistinguishable from an array and reads as one.
//!
//! Text indexes and lengths count UTF-16 code units, like JavaScript strings and Yjs: "é" is 1,
//! "😀" is 2, an embed is 1. They stay UTF-16 whatever the document's [`OffsetKind`] (the
//! conversion is done here), and an index inside a surrogate pair is refused.
//!
//! Content from clients is untrusted: a branch typed as an array may hold text chunks, a text
//! may hold array values. yrs' own array iterator never terminates over some text chunks, so no
//! sequence is read as an array before it is known to hold no text, and edits refuse roots that
//! mix both ([`InvalidOp::MixedContent`]). Nesting deeper than [`MAX_DEPTH`] is cut off (read as
//! `null`) rather than recursed into.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use yrs::branch::{Branch, BranchPtr};
use yrs::types::text::{DeltaPrelim, YChange};
use yrs::types::xml::{XmlDeltaPrelim, XmlIn};
use yrs::types::{AsPrelim, Attrs, Delta, TypeRef};
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, GetString, In, Map, MapPrelim, MapRef, Number,
    OffsetKind, Options, Out, ReadTxn, Text, TextPrelim, TextRef, Transact, TransactionMut,
    WriteTxn, XmlElementPrelim, XmlFragmentPrelim, XmlTextPrelim,
};

/// Most operations in one [`apply_ops`] call: one request is one transaction and one update.
pub const MAX_OPS: usize = 1000;
/// Longest root name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most text (UTF-8 bytes, summed over `insert_text` ops) in one [`apply_ops`] call.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Deepest nesting that is rendered, copied or accepted; deeper content reads as `null`. It
/// bounds recursion (and so stack use) on documents that clients built.
pub const MAX_DEPTH: usize = 128;

/// Depth budget left for a root's content: the root itself took one level.
const ROOT_DEPTH: usize = MAX_DEPTH - 1;
/// Stands for an embed (one index unit that is not a character) in a UTF-16 unit buffer.
const EMBED: u32 = 0x1_0000;

/// What a root or nested branch holds: its declared type or, for an undefined branch, the type
/// its content implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// Undefined and holding nothing: any type fits.
    Empty,
    /// `Y.Text`.
    Text,
    /// `Y.Map`.
    Map,
    /// `Y.Array`.
    Array,
    /// `Y.XmlFragment`.
    XmlFragment,
    /// `Y.XmlElement`.
    XmlElement,
    /// `Y.XmlText`.
    XmlText,
    /// A type none of these functions edits (XML hook, weak link).
    Other,
}

impl fmt::Display for RootKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RootKind::Empty => "empty root",
            RootKind::Text => "text",
            RootKind::Map => "map",
            RootKind::Array => "array",
            RootKind::XmlFragment => "XML fragment",
            RootKind::XmlElement => "XML element",
            RootKind::XmlText => "XML text",
            RootKind::Other => "shared type of another kind",
        })
    }
}

/// One JSON edit. Text indexes and lengths are UTF-16 code units (see the module doc); array
/// indexes count elements.
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
}

impl Op {
    fn name(&self) -> &str {
        match self {
            Op::InsertText { name, .. }
            | Op::DeleteText { name, .. }
            | Op::SetMap { name, .. }
            | Op::DeleteMap { name, .. }
            | Op::PushArray { name, .. }
            | Op::DeleteArray { name, .. } => name,
        }
    }
}

/// Why an edit or a restore was refused. Nothing was changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// More than [`MAX_OPS`] operations.
    #[error("{count} operations in one request, at most {max}")]
    TooManyOps { count: usize, max: usize },
    /// The `insert_text` ops insert more than [`MAX_TEXT_BYTES`] in total.
    #[error("the operations insert {bytes} bytes of text, at most {max} in one request")]
    TextTooLarge { bytes: usize, max: usize },
    /// Operation `index` (0-based) does not fit the document as the operations before it leave it.
    #[error("op {index}: {reason}")]
    Invalid { index: usize, reason: InvalidOp },
    /// A root has a different declared type in the document than in the version.
    #[error("root {name:?} is of type {current} in the document but {version} in the version")]
    KindConflict {
        name: String,
        current: RootKind,
        version: RootKind,
    },
    /// A root of a type that restore does not rewrite (XML element or XML text roots, hooks).
    #[error("root {name:?} is of type {kind}, which restore does not rewrite")]
    UnsupportedRoot { name: String, kind: RootKind },
    /// A root that restore would rewrite mixes text chunks with other sequence content.
    #[error("root {name:?} mixes text with other content")]
    MixedContent { name: String },
    /// The version holds sub-documents and the target is itself a sub-document (yrs cannot
    /// nest those).
    #[error("the version holds sub-documents, which cannot be restored into a sub-document")]
    NestedSubdocs,
    /// The document (or the version) is in another transaction.
    #[error("the document is busy in another transaction")]
    Busy,
}

/// What is wrong with one operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOp {
    /// The root name is empty.
    #[error("the root name is empty")]
    EmptyName,
    /// The root name is longer than [`MAX_NAME_BYTES`].
    #[error("the root name is {len} bytes, at most {max}")]
    NameTooLong { len: usize, max: usize },
    /// The root already holds (or an earlier op made it) another type.
    #[error("root {name:?} is of type {found}, not {expected}")]
    WrongType {
        name: String,
        expected: RootKind,
        found: RootKind,
    },
    /// An insert position past the end.
    #[error("index {index} is past the end ({len})")]
    IndexOutOfBounds { index: u64, len: u64 },
    /// A deleted range reaching past the end.
    #[error("range of {length} from index {index} reaches past the end ({len})")]
    RangeOutOfBounds { index: u64, length: u64, len: u64 },
    /// A text position between the two halves of a UTF-16 surrogate pair.
    #[error("text index {index} falls inside a UTF-16 surrogate pair")]
    SplitsSurrogatePair { index: u64 },
    /// The root mixes text chunks with other sequence content, so indexes are ambiguous.
    #[error("root {name:?} mixes text with other content")]
    MixedContent { name: String },
    /// A value nested deeper than [`MAX_DEPTH`].
    #[error("the value nests deeper than {max} levels")]
    TooDeep { max: usize },
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Renders every root as JSON, by name: text -> string, map -> object, array -> list, XML ->
/// string (see below), nested shared types recursively, binary -> base64 string, undefined and
/// non-finite numbers -> `null`, sub-documents -> `null`.
///
/// Roots whose rendering is empty (`""`, `[]`, `{}`, `null`) are left out: every root name
/// exists implicitly in Yjs, and whether a peer has declared one is local state, not content.
///
/// XML renders like Yjs' `toString()`, except that attributes are sorted by name, and text and
/// attribute values are escaped (`& < > "`) so the result parses as XML. It never changes the
/// document (undefined roots keep their undefined type; see the module doc).
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

fn is_empty_json(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The branch behind a shared value, `None` for plain values and sub-documents.
fn ptr_of(out: &Out) -> Option<BranchPtr> {
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

fn kind_of<T: ReadTxn>(txn: &T, ptr: BranchPtr) -> RootKind {
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
fn has_strings<T: ReadTxn>(txn: &T, ptr: BranchPtr) -> bool {
    !TextRef::from(ptr).get_string(txn).is_empty()
}

/// Renders one value; `depth` levels may still be entered.
fn out_to_json<T: ReadTxn>(txn: &T, out: &Out, depth: usize) -> Value {
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

fn any_to_json(any: &Any, depth: usize) -> Value {
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
fn value_text(value: Value) -> String {
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
fn write_xml<T: ReadTxn>(txn: &T, ptr: BranchPtr, buf: &mut String, depth: usize) {
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

fn sorted_attributes<T: ReadTxn>(txn: &T, ptr: BranchPtr, depth: usize) -> Vec<(String, String)> {
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

// ---------------------------------------------------------------------------------------------
// Editing

/// Checks `ops` against the document and applies all of them in one transaction, or none.
///
/// Every op is checked first, against the document as the ops before it leave it: root name
/// (non-empty, at most [`MAX_NAME_BYTES`]), root type (an undefined root holding nothing takes
/// the type of the first op on it; one holding content must match the inferred type), index
/// and length bounds, surrogate pairs, value depth, and the batch limits [`MAX_OPS`] and
/// [`MAX_TEXT_BYTES`]. Text positions are UTF-16 code units (see the module doc).
pub fn apply_ops(doc: &Doc, ops: &[Op]) -> Result<(), OpError> {
    let mut txn = doc.try_transact_mut().map_err(|_| OpError::Busy)?;
    apply_ops_in(&mut txn, ops)
}

/// [`apply_ops`] inside a transaction the caller opened (for instance with an origin). On error
/// the transaction is left unchanged.
pub fn apply_ops_in(txn: &mut TransactionMut, ops: &[Op]) -> Result<(), OpError> {
    let steps = plan_ops(txn, ops)?;
    for step in steps {
        match step {
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

/// A checked op, with positions already in the document's own units.
enum Step<'a> {
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
}

/// A root as the ops checked so far leave it.
enum Sim {
    /// Absent or undefined and empty: the first op decides its type.
    Free,
    /// Not loaded yet: loading a text copies it, so only text ops do.
    Unloaded(RootKind, BranchPtr),
    /// A text as UTF-16 units, [`EMBED`] for embeds.
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

fn plan_ops<'a>(txn: &TransactionMut, ops: &'a [Op]) -> Result<Vec<Step<'a>>, OpError> {
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
    let mut steps = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let step = plan_op(txn, offset_kind, &mut roots, op)
            .map_err(|reason| OpError::Invalid { index, reason })?;
        steps.extend(step);
    }
    Ok(steps)
}

/// Checks one op and records its effect in `roots`; `None` for an op that changes nothing.
fn plan_op<'a>(
    txn: &TransactionMut,
    offset_kind: OffsetKind,
    roots: &mut HashMap<&'a str, Sim>,
    op: &'a Op,
) -> Result<Option<Step<'a>>, InvalidOp> {
    let name = op.name();
    if name.is_empty() {
        return Err(InvalidOp::EmptyName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(InvalidOp::NameTooLong {
            len: name.len(),
            max: MAX_NAME_BYTES,
        });
    }
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

/// A text's content as UTF-16 units ([`EMBED`] for embeds and embedded types), or `None` when it
/// holds anything else: then yrs' indexes would count items that this view does not see.
fn text_units<T: ReadTxn>(txn: &T, ptr: BranchPtr, offset_kind: OffsetKind) -> Option<Vec<u32>> {
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
fn text_position(units: &[u32], index: u64) -> Result<usize, InvalidOp> {
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

/// A UTF-16 position as the document counts it (its [`OffsetKind`]).
fn doc_offset(units: &[u32], at: usize, offset_kind: OffsetKind) -> Result<u32, InvalidOp> {
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

fn to_u32(n: usize) -> Result<u32, InvalidOp> {
    u32::try_from(n).map_err(|_| InvalidOp::IndexOutOfBounds {
        index: n as u64,
        len: u64::from(u32::MAX),
    })
}

/// A JSON value as a plain Yjs value; `None` when nested deeper than `depth`. Integers within
/// JavaScript's safe range stay integers, other numbers become floats (never BigInt, which
/// JavaScript peers would not expect).
fn json_to_any(value: &Value, depth: usize) -> Option<Any> {
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

// ---------------------------------------------------------------------------------------------
// Restoring

/// Makes `doc`'s content equal to `version`'s in one transaction on `doc`, as an ordinary edit:
/// new items on top of the history, so peers converge by receiving the resulting update.
///
/// Texts get a minimal edit: the common prefix and suffix stay, the middle is replaced (the
/// replacement is unformatted text that takes the formatting of its left neighbour, as typing
/// would: the version's formatting of that middle is not restored). Maps set the keys whose
/// value changed and delete missing ones, recursing into nested maps. Arrays keep their common
/// prefix and suffix and replace the middle. A nested text, array or XML value is kept when its
/// JSON is already equal and otherwise replaced by a deep copy. XML fragments whose rendering
/// differs get all children deleted and deep copies of the version's children inserted
/// (elements with attributes, texts with formatting; attribute values become strings).
/// Sub-documents directly in a root or nested map are re-referenced by guid; inside deep copies
/// they become `null`. Roots in `doc` that are absent or empty in `version` are emptied.
/// Afterwards `doc_to_json` of both is equal, except for content nested deeper than
/// [`MAX_DEPTH`]; restoring an equal version changes nothing and emits no update.
///
/// Refused, with nothing changed: a root declared with different types on both sides (an
/// undefined root takes the version's type), roots of kinds restore does not rewrite (XML
/// element or XML text roots holding content), roots mixing text with other content, and a
/// busy document.
pub fn restore_to(doc: &Doc, version: &Doc) -> Result<(), OpError> {
    // Copy the version out before locking `doc`: they may be the same document.
    let copy = VersionCopy::read(version)?;
    let mut txn = doc.try_transact_mut().map_err(|_| OpError::Busy)?;
    copy.write(&mut txn)
}

/// [`restore_to`] inside a transaction the caller opened (for instance with an origin).
/// `version` must not be the transaction's own document ([`OpError::Busy`]).
pub fn restore_in(txn: &mut TransactionMut, version: &Doc) -> Result<(), OpError> {
    VersionCopy::read(version)?.write(txn)
}

/// An owned deep copy of a version's roots, so no transaction on it stays open while writing.
struct VersionCopy {
    roots: Vec<(Arc<str>, RootCopy)>,
    has_subdocs: bool,
}

enum RootCopy {
    Empty,
    Text(Vec<Piece>),
    Map(Vec<(Arc<str>, Entry)>),
    Array(Vec<Entry>),
    Xml {
        children: Vec<Item>,
        rendered: String,
    },
    Unsupported(RootKind),
    Mixed,
}

impl RootCopy {
    /// The kind a document root must have to receive this copy; `None`: it is emptied.
    fn kind(&self) -> Option<RootKind> {
        match self {
            RootCopy::Empty => None,
            RootCopy::Text(_) => Some(RootKind::Text),
            RootCopy::Map(_) => Some(RootKind::Map),
            RootCopy::Array(_) => Some(RootKind::Array),
            RootCopy::Xml { .. } => Some(RootKind::XmlFragment),
            RootCopy::Unsupported(kind) => Some(*kind),
            RootCopy::Mixed => Some(RootKind::Other),
        }
    }
}

/// One piece of a text: characters, an embedded plain value, or an embedded shared type.
enum Piece {
    Str(String),
    Embed(Any),
    Shared(In),
}

/// A map value, with what it takes to tell whether the document already holds it.
enum Entry {
    Any(Any),
    Map(Vec<(Arc<str>, Entry)>),
    Shared {
        value: In,
        kind: RootKind,
        json: Value,
    },
    Subdoc(Doc),
}

impl Entry {
    /// As a value nested in a deep copy (where sub-documents cannot go).
    fn into_in(self) -> In {
        match self {
            Entry::Any(any) => In::Any(any),
            Entry::Map(entries) => In::Map(entries_prelim(entries)),
            Entry::Shared { value, .. } => value,
            Entry::Subdoc(_) => In::Any(Any::Null),
        }
    }

    fn into_item(self) -> Item {
        match self {
            Entry::Subdoc(doc) => Item::Subdoc(doc),
            other => Item::from(other.into_in()),
        }
    }
}

/// Something to insert into a sequence or map.
enum Item {
    Value(Any),
    Shared(In),
    Subdoc(Doc),
}

impl From<In> for Item {
    fn from(value: In) -> Self {
        match value {
            In::Any(any) => Item::Value(any),
            other => Item::Shared(other),
        }
    }
}

fn entries_prelim(entries: Vec<(Arc<str>, Entry)>) -> MapPrelim {
    entries.into_iter().map(|(k, e)| (k, e.into_in())).collect()
}

/// Reads a version into owned prelims.
struct Copier<'t, T> {
    txn: &'t T,
    has_subdocs: bool,
}

impl VersionCopy {
    fn read(version: &Doc) -> Result<Self, OpError> {
        let txn = version.try_transact().map_err(|_| OpError::Busy)?;
        let mut copier = Copier {
            txn: &txn,
            has_subdocs: false,
        };
        let mut roots = Vec::new();
        for (name, out) in txn.root_refs() {
            let Some(ptr) = ptr_of(&out) else { continue };
            roots.push((Arc::from(name), copier.root(ptr)));
        }
        let has_subdocs = copier.has_subdocs;
        Ok(VersionCopy { roots, has_subdocs })
    }

    fn write(self, txn: &mut TransactionMut) -> Result<(), OpError> {
        if self.has_subdocs && txn.parent_doc().is_some() {
            return Err(OpError::NestedSubdocs);
        }
        let mut current: HashMap<Arc<str>, (BranchPtr, RootKind)> = HashMap::new();
        for (name, out) in txn.root_refs() {
            if let Some(ptr) = ptr_of(&out) {
                current.insert(Arc::from(name), (ptr, kind_of(txn, ptr)));
            }
        }
        // Check every root before the first change.
        let mut plans = Vec::new();
        let mut seen = HashSet::new();
        for (name, copy) in self.roots {
            seen.insert(name.clone());
            let doc_root = current.get(&*name).copied();
            let plan = plan_root(txn, name, doc_root, copy)?;
            plans.push(plan);
        }
        for (name, doc_root) in &current {
            if !seen.contains(name) {
                let plan = plan_root(txn, name.clone(), Some(*doc_root), RootCopy::Empty)?;
                plans.push(plan);
            }
        }
        for plan in plans {
            plan.execute(txn);
        }
        Ok(())
    }
}

impl<T: ReadTxn> Copier<'_, T> {
    fn root(&mut self, ptr: BranchPtr) -> RootCopy {
        let txn = self.txn;
        match kind_of(txn, ptr) {
            RootKind::Empty => RootCopy::Empty,
            RootKind::Text => RootCopy::Text(self.pieces(ptr, ROOT_DEPTH)),
            RootKind::Map => RootCopy::Map(self.entries(ptr, ROOT_DEPTH)),
            RootKind::Array | RootKind::XmlFragment if has_strings(txn, ptr) => RootCopy::Mixed,
            RootKind::Array => {
                let array = ArrayRef::from(ptr);
                let items = array.iter(txn).map(|v| self.item(&v, ROOT_DEPTH));
                RootCopy::Array(items.collect())
            }
            RootKind::XmlFragment => {
                let mut rendered = String::new();
                write_xml(txn, ptr, &mut rendered, ROOT_DEPTH);
                let array = ArrayRef::from(ptr);
                let children = array.iter(txn).map(|v| self.child(&v, ROOT_DEPTH - 1));
                let children = children.collect();
                RootCopy::Xml { children, rendered }
            }
            kind @ (RootKind::XmlElement | RootKind::XmlText | RootKind::Other) => {
                RootCopy::Unsupported(kind)
            }
        }
    }

    fn pieces(&mut self, ptr: BranchPtr, depth: usize) -> Vec<Piece> {
        TextRef::from(ptr)
            .diff(self.txn, YChange::identity)
            .into_iter()
            .map(|chunk| match chunk.insert {
                Out::Any(Any::String(s)) => Piece::Str(s.to_string()),
                Out::Any(any) => Piece::Embed(any),
                other => Piece::Shared(self.value(&other, depth)),
            })
            .collect()
    }

    fn entries(&mut self, ptr: BranchPtr, depth: usize) -> Vec<(Arc<str>, Entry)> {
        let txn = self.txn;
        let map = MapRef::from(ptr);
        map.iter(txn)
            .map(|(key, value)| (Arc::from(key), self.entry(&value, depth)))
            .collect()
    }

    /// Mirrors [`out_to_json`]'s depth accounting, so JSON comparisons cut off alike.
    fn entry(&mut self, out: &Out, depth: usize) -> Entry {
        if let Out::Any(any) = out {
            return Entry::Any(any.clone());
        }
        match (ptr_of(out), depth.checked_sub(1)) {
            (Some(ptr), Some(inner)) if kind_of(self.txn, ptr) == RootKind::Map => {
                Entry::Map(self.entries(ptr, inner))
            }
            _ => self.item(out, depth),
        }
    }

    /// A value with its kind and JSON, so an equal value in the document can be left alone.
    fn item(&mut self, out: &Out, depth: usize) -> Entry {
        match out {
            Out::Any(any) => return Entry::Any(any.clone()),
            Out::YDoc(subdoc) => return Entry::Subdoc(self.subdoc(subdoc)),
            _ => {}
        }
        let txn = self.txn;
        Entry::Shared {
            value: self.value(out, depth),
            kind: ptr_of(out).map_or(RootKind::Other, |ptr| kind_of(txn, ptr)),
            json: out_to_json(txn, out, depth),
        }
    }

    fn items(&mut self, ptr: BranchPtr, depth: usize) -> Vec<In> {
        let txn = self.txn;
        let array = ArrayRef::from(ptr);
        array.iter(txn).map(|v| self.value(&v, depth)).collect()
    }

    /// A new reference to the same sub-document (same guid), as Yjs identifies them.
    fn subdoc(&mut self, subdoc: &Doc) -> Doc {
        self.has_subdocs = true;
        Doc::with_options(Options {
            guid: subdoc.guid(),
            collection_id: subdoc.collection_id(),
            ..Options::default()
        })
    }

    /// A child of a root XML fragment.
    fn child(&mut self, out: &Out, depth: usize) -> Item {
        match out {
            Out::YDoc(subdoc) => Item::Subdoc(self.subdoc(subdoc)),
            other => Item::from(self.value(other, depth)),
        }
    }

    /// A deep copy of one value.
    fn value(&mut self, out: &Out, depth: usize) -> In {
        let Some(depth) = depth.checked_sub(1) else {
            return In::Any(Any::Null);
        };
        match out {
            Out::Any(any) => In::Any(any.clone()),
            // yrs' `In::Doc` integrates as a broken shared type that Yjs cannot read, so deep
            // copies hold no sub-documents; see `item` for those that can be re-referenced.
            Out::YDoc(_) => In::Any(Any::Null),
            other => match ptr_of(other) {
                Some(ptr) => self.branch(ptr, depth),
                None => In::Any(Any::Null),
            },
        }
    }

    fn branch(&mut self, ptr: BranchPtr, depth: usize) -> In {
        let txn = self.txn;
        match kind_of(txn, ptr) {
            RootKind::Empty | RootKind::Other => In::Any(Any::Null),
            RootKind::Text => In::Text(text_prelim(txn, ptr)),
            RootKind::Map => {
                let map = MapRef::from(ptr);
                let entries: MapPrelim = map
                    .iter(txn)
                    .map(|(key, value)| (key, self.value(&value, depth)))
                    .collect();
                In::Map(entries)
            }
            RootKind::Array if has_strings(txn, ptr) => In::Text(plain_text_prelim(txn, ptr)),
            RootKind::Array => In::Array(ArrayPrelim::from(self.items(ptr, depth))),
            RootKind::XmlElement => In::XmlElement(self.element(ptr, depth)),
            RootKind::XmlFragment => In::XmlFragment(XmlFragmentPrelim::new::<_, XmlIn>(
                self.xml_children(ptr, depth),
            )),
            RootKind::XmlText => In::XmlText(self.xml_text(ptr, depth)),
        }
    }

    fn element(&mut self, ptr: BranchPtr, depth: usize) -> XmlElementPrelim {
        let tag = match ptr.type_ref() {
            TypeRef::XmlElement(tag) => tag.clone(),
            _ => Arc::from("UNDEFINED"),
        };
        XmlElementPrelim {
            tag,
            attributes: self.xml_attributes(ptr, depth),
            children: self.xml_children(ptr, depth),
        }
    }

    /// Attribute values as the renderer prints them, since yrs' XML prelims hold strings.
    fn xml_attributes(&self, ptr: BranchPtr, depth: usize) -> HashMap<Arc<str>, String> {
        sorted_attributes(self.txn, ptr, depth)
            .into_iter()
            .map(|(k, v)| (Arc::from(k), v))
            .collect()
    }

    /// XML children; anything that is not an XML node becomes a text node of its rendering, so
    /// the copy renders the same.
    fn xml_children(&mut self, ptr: BranchPtr, depth: usize) -> Vec<XmlIn> {
        let txn = self.txn;
        let text = TextRef::from(ptr).get_string(txn);
        if !text.is_empty() {
            return vec![XmlIn::from(XmlTextPrelim::new(text))];
        }
        let array = ArrayRef::from(ptr);
        let mut children = Vec::new();
        for child in array.iter(txn) {
            let node = match ptr_of(&child).map(|p| (p, kind_of(txn, p))) {
                Some((p, RootKind::XmlElement)) => XmlIn::from(self.element(p, depth)),
                Some((p, RootKind::XmlText)) => XmlIn::from(self.xml_text(p, depth)),
                Some((p, RootKind::XmlFragment)) => XmlIn::from(
                    XmlFragmentPrelim::new::<_, XmlIn>(self.xml_children(p, depth)),
                ),
                _ => {
                    let text = value_text(out_to_json(txn, &child, depth));
                    if text.is_empty() {
                        continue;
                    }
                    XmlIn::from(XmlTextPrelim::new(text))
                }
            };
            children.push(node);
        }
        children
    }

    fn xml_text(&mut self, ptr: BranchPtr, depth: usize) -> XmlDeltaPrelim {
        let delta = TextRef::from(ptr)
            .diff(self.txn, YChange::identity)
            .into_iter()
            .filter(|chunk| !matches!(&chunk.insert, Out::Any(Any::String(s)) if s.is_empty()))
            .map(|chunk| {
                let value = match chunk.insert {
                    Out::Any(any) => In::Any(any),
                    other => self.value(&other, depth),
                };
                Delta::Inserted(value, chunk.attributes)
            })
            .collect();
        XmlDeltaPrelim {
            attributes: self.xml_attributes(ptr, depth),
            delta,
        }
    }
}

/// A nested text with its formatting when it embeds no shared types (yrs copies those only
/// through its own unchecked readers), else its plain string: the JSON view is the same.
fn text_prelim<T: ReadTxn>(txn: &T, ptr: BranchPtr) -> DeltaPrelim {
    let text = TextRef::from(ptr);
    let plain = text
        .diff(txn, YChange::identity)
        .iter()
        .all(|chunk| matches!(chunk.insert, Out::Any(_)));
    if plain {
        text.as_prelim(txn)
    } else {
        plain_text_prelim(txn, ptr)
    }
}

fn plain_text_prelim<T: ReadTxn>(txn: &T, ptr: BranchPtr) -> DeltaPrelim {
    let s = TextRef::from(ptr).get_string(txn);
    if s.is_empty() {
        DeltaPrelim::default()
    } else {
        TextPrelim::new(s).into()
    }
}

/// What restore does to one root.
struct RootPlan {
    name: Arc<str>,
    /// Empty the document's root first (through an untyped view, so an undefined root can then
    /// take the version's type).
    clear: Option<(BranchPtr, RootKind)>,
    /// Write the version's content; `incremental`: into a root that already holds its kind.
    write: Option<RootCopy>,
    incremental: bool,
}

fn plan_root(
    txn: &TransactionMut,
    name: Arc<str>,
    doc_root: Option<(BranchPtr, RootKind)>,
    copy: RootCopy,
) -> Result<RootPlan, OpError> {
    let target = copy.kind();
    match copy {
        RootCopy::Unsupported(kind) => {
            return Err(OpError::UnsupportedRoot {
                name: name.to_string(),
                kind,
            });
        }
        RootCopy::Mixed => {
            return Err(OpError::MixedContent {
                name: name.to_string(),
            });
        }
        _ => {}
    }
    let mut plan = RootPlan {
        name: name.clone(),
        clear: None,
        write: Some(copy).filter(|_| target.is_some()),
        incremental: false,
    };
    let Some((ptr, kind)) = doc_root.filter(|(_, kind)| *kind != RootKind::Empty) else {
        return Ok(plan);
    };
    let undefined = matches!(ptr.type_ref(), TypeRef::Undefined);
    if target != Some(kind) && target.is_some() && !undefined {
        return Err(OpError::KindConflict {
            name: name.to_string(),
            current: kind,
            version: target.unwrap_or(RootKind::Empty),
        });
    }
    if !matches!(
        kind,
        RootKind::Text | RootKind::Map | RootKind::Array | RootKind::XmlFragment
    ) {
        let holds_nothing = ptr.len() == 0 && MapRef::from(ptr).len(txn) == 0;
        if target.is_none() && holds_nothing {
            return Ok(plan);
        }
        return Err(OpError::UnsupportedRoot {
            name: name.to_string(),
            kind,
        });
    }
    let well_formed = match kind {
        RootKind::Text => text_units(txn, ptr, txn.doc().offset_kind()).is_some(),
        RootKind::Array | RootKind::XmlFragment => !has_strings(txn, ptr),
        _ => true,
    };
    if !well_formed {
        return Err(OpError::MixedContent {
            name: name.to_string(),
        });
    }
    if target == Some(kind) {
        plan.incremental = true;
    } else {
        plan.clear = Some((ptr, kind));
    }
    Ok(plan)
}

impl RootPlan {
    fn execute(self, txn: &mut TransactionMut) {
        if let Some((ptr, kind)) = self.clear {
            clear(txn, ptr, kind);
        }
        let name = self.name;
        match self.write {
            None | Some(RootCopy::Empty | RootCopy::Unsupported(_) | RootCopy::Mixed) => {}
            Some(RootCopy::Text(pieces)) => {
                let text = txn.get_or_insert_text(name);
                restore_text(txn, &text, &pieces);
            }
            Some(RootCopy::Map(entries)) => {
                let map = txn.get_or_insert_map(name);
                restore_map(txn, &map, entries, ROOT_DEPTH);
            }
            Some(RootCopy::Array(items)) => {
                let array = txn.get_or_insert_array(name);
                restore_array(txn, &array, items, ROOT_DEPTH);
            }
            Some(RootCopy::Xml { children, rendered }) => {
                let fragment = txn.get_or_insert_xml_fragment(name);
                let ptr = BranchPtr::from(AsRef::<Branch>::as_ref(&fragment));
                if self.incremental {
                    let mut now = String::new();
                    write_xml(txn, ptr, &mut now, ROOT_DEPTH);
                    if now == rendered {
                        return;
                    }
                    clear(txn, ptr, RootKind::XmlFragment);
                }
                insert_items(txn, &ArrayRef::from(ptr), 0, children);
            }
        }
    }
}

/// Empties a root that [`plan_root`] checked to be well formed.
fn clear(txn: &mut TransactionMut, ptr: BranchPtr, kind: RootKind) {
    match kind {
        RootKind::Text => {
            let text = TextRef::from(ptr);
            let len = text.len(txn);
            if len > 0 {
                text.remove_range(txn, 0, len);
            }
        }
        RootKind::Map => {
            let map = MapRef::from(ptr);
            let keys: Vec<String> = map.keys(txn).map(str::to_owned).collect();
            for key in keys {
                map.remove(txn, &key);
            }
        }
        RootKind::Array | RootKind::XmlFragment => {
            let array = ArrayRef::from(ptr);
            let len = array.len(txn);
            if len > 0 {
                array.remove_range(txn, 0, len);
            }
        }
        _ => {}
    }
}

/// One text position unit for the minimal edit.
#[derive(Clone, Copy)]
enum Atom<'a> {
    Char(char),
    Embed(&'a Any),
    /// An embedded shared type (index into the version's pieces); never equal to anything.
    Shared(usize),
}

impl Atom<'_> {
    fn same(&self, other: &Atom<'_>) -> bool {
        match (self, other) {
            (Atom::Char(a), Atom::Char(b)) => a == b,
            (Atom::Embed(a), Atom::Embed(b)) => same_any(a, b),
            _ => false,
        }
    }

    fn width(&self, offset_kind: OffsetKind) -> u32 {
        match (self, offset_kind) {
            (Atom::Char(c), OffsetKind::Utf16) => c.len_utf16() as u32,
            (Atom::Char(c), OffsetKind::Bytes) => c.len_utf8() as u32,
            _ => 1,
        }
    }
}

fn width(atoms: &[Atom<'_>], offset_kind: OffsetKind) -> u32 {
    atoms
        .iter()
        .fold(0u32, |sum, a| sum.saturating_add(a.width(offset_kind)))
}

fn restore_text(txn: &mut TransactionMut, text: &TextRef, pieces: &[Piece]) {
    let offset_kind = txn.doc().offset_kind();
    let now: Vec<Out> = text
        .diff(txn, YChange::identity)
        .into_iter()
        .map(|chunk| chunk.insert)
        .collect();
    let mut current = Vec::new();
    for out in &now {
        match out {
            Out::Any(Any::String(s)) => current.extend(s.chars().map(Atom::Char)),
            Out::Any(any) => current.push(Atom::Embed(any)),
            _ => current.push(Atom::Shared(usize::MAX)),
        }
    }
    let mut wanted = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Str(s) => wanted.extend(s.chars().map(Atom::Char)),
            Piece::Embed(any) => wanted.push(Atom::Embed(any)),
            Piece::Shared(_) => wanted.push(Atom::Shared(i)),
        }
    }
    let (prefix, suffix) = common_ends(&current, &wanted, Atom::same);
    let index = width(current.get(..prefix).unwrap_or_default(), offset_kind);
    let removed = current
        .get(prefix..current.len() - suffix)
        .unwrap_or_default();
    let removed = width(removed, offset_kind);
    if removed > 0 {
        text.remove_range(txn, index, removed);
    }
    let mut at = index;
    let mut run = String::new();
    let middle = wanted
        .get(prefix..wanted.len() - suffix)
        .unwrap_or_default();
    for atom in middle {
        if let Atom::Char(c) = atom {
            run.push(*c);
            continue;
        }
        at = flush_run(txn, text, at, &mut run, offset_kind);
        match atom {
            Atom::Embed(any) => {
                text.insert_embed(txn, at, (*any).clone());
            }
            Atom::Shared(i) => {
                if let Some(Piece::Shared(value)) = pieces.get(*i) {
                    text.apply_delta(
                        txn,
                        [
                            Delta::Retain(at, None),
                            Delta::Inserted(value.clone(), None),
                        ],
                    );
                }
            }
            Atom::Char(_) => {}
        }
        at = at.saturating_add(1);
    }
    flush_run(txn, text, at, &mut run, offset_kind);
}

fn flush_run(
    txn: &mut TransactionMut,
    text: &TextRef,
    at: u32,
    run: &mut String,
    offset_kind: OffsetKind,
) -> u32 {
    if run.is_empty() {
        return at;
    }
    text.insert(txn, at, run);
    let len = match offset_kind {
        OffsetKind::Utf16 => run.encode_utf16().count(),
        OffsetKind::Bytes => run.len(),
    };
    run.clear();
    at.saturating_add(u32::try_from(len).unwrap_or(u32::MAX))
}

/// Lengths of the common prefix and of the common suffix (not overlapping the prefix).
fn common_ends<A, B>(a: &[A], b: &[B], same: impl Fn(&A, &B) -> bool) -> (usize, usize) {
    let prefix = a.iter().zip(b).take_while(|(x, y)| same(x, y)).count();
    let rest = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(rest)
        .take_while(|(x, y)| same(x, y))
        .count();
    (prefix, suffix)
}

fn restore_map(
    txn: &mut TransactionMut,
    map: &MapRef,
    entries: Vec<(Arc<str>, Entry)>,
    depth: usize,
) {
    let current: HashMap<String, Out> = map
        .iter(txn)
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    let wanted: HashSet<&str> = entries.iter().map(|(key, _)| &**key).collect();
    let mut stale: Vec<&String> = current
        .keys()
        .filter(|key| !wanted.contains(key.as_str()))
        .collect();
    stale.sort();
    for key in stale {
        map.remove(txn, key);
    }
    for (key, entry) in entries {
        let now = current.get(&*key);
        match entry {
            Entry::Any(any) => {
                if !matches!(now, Some(Out::Any(cur)) if same_any(cur, &any)) {
                    map.insert(txn, key, In::Any(any));
                }
            }
            Entry::Map(inner) => {
                let nested = now
                    .and_then(ptr_of)
                    .filter(|ptr| kind_of(txn, *ptr) == RootKind::Map);
                match (nested, depth.checked_sub(1)) {
                    (Some(ptr), Some(inner_depth)) => {
                        restore_map(txn, &MapRef::from(ptr), inner, inner_depth);
                    }
                    _ => {
                        map.insert(txn, key, In::Map(entries_prelim(inner)));
                    }
                }
            }
            other => {
                if !now.is_some_and(|out| holds(txn, out, &other, depth)) {
                    match other.into_item() {
                        Item::Value(any) => {
                            map.insert(txn, key, In::Any(any));
                        }
                        Item::Shared(value) => {
                            map.insert(txn, key, value);
                        }
                        Item::Subdoc(doc) => {
                            map.insert(txn, key, doc);
                        }
                    }
                }
            }
        }
    }
}

/// Value equality where NaN equals NaN: a NaN left in place is no change, and rewriting it on
/// every restore would be churn.
fn same_any(a: &Any, b: &Any) -> bool {
    same_any_within(a, b, MAX_DEPTH)
}

/// Past `depth` levels values count as different: rewriting them is correct, only not minimal.
fn same_any_within(a: &Any, b: &Any, depth: usize) -> bool {
    let Some(depth) = depth.checked_sub(1) else {
        return false;
    };
    match (a, b) {
        (Any::Number(Number::Float(x)), Any::Number(Number::Float(y))) => {
            x == y || (x.is_nan() && y.is_nan())
        }
        (Any::Array(x), Any::Array(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(x, y)| same_any_within(x, y, depth))
        }
        (Any::Map(x), Any::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_any_within(v, w, depth)))
        }
        (Any::Array(_) | Any::Map(_), _) | (_, Any::Array(_) | Any::Map(_)) => false,
        _ => a == b,
    }
}

/// Whether the document's value `now` already is `entry` (nested maps: see `restore_map`).
fn holds<T: ReadTxn>(txn: &T, now: &Out, entry: &Entry, depth: usize) -> bool {
    match (now, entry) {
        (Out::Any(cur), Entry::Any(any)) => same_any(cur, any),
        (Out::YDoc(cur), Entry::Subdoc(doc)) => cur.guid() == doc.guid(),
        (_, Entry::Shared { kind, json, .. }) => {
            ptr_of(now).is_some_and(|ptr| kind_of(txn, ptr) == *kind)
                && out_to_json(txn, now, depth) == *json
        }
        _ => false,
    }
}

fn restore_array(txn: &mut TransactionMut, array: &ArrayRef, items: Vec<Entry>, depth: usize) {
    let current: Vec<Out> = array.iter(txn).collect();
    let (prefix, suffix) = common_ends(&current, &items, |a, b| holds(txn, a, b, depth));
    let removed = current.len() - prefix - suffix;
    let index = u32::try_from(prefix).unwrap_or(u32::MAX);
    if removed > 0 {
        array.remove_range(txn, index, u32::try_from(removed).unwrap_or(u32::MAX));
    }
    let middle = items.len() - prefix - suffix;
    let items = items
        .into_iter()
        .skip(prefix)
        .take(middle)
        .map(Entry::into_item);
    insert_items(txn, array, index, items);
}

/// Inserts values at `index`, runs of plain values as one item each (as Yjs does).
fn insert_items(
    txn: &mut TransactionMut,
    array: &ArrayRef,
    index: u32,
    items: impl IntoIterator<Item = Item>,
) {
    let mut at = index;
    let mut run: Vec<Any> = Vec::new();
    for item in items {
        if let Item::Value(any) = item {
            run.push(any);
            continue;
        }
        at = flush_values(txn, array, at, &mut run);
        match item {
            Item::Shared(value) => {
                array.insert(txn, at, value);
            }
            Item::Subdoc(doc) => {
                array.insert(txn, at, doc);
            }
            Item::Value(_) => {}
        }
        at = at.saturating_add(1);
    }
    flush_values(txn, array, at, &mut run);
}

fn flush_values(txn: &mut TransactionMut, array: &ArrayRef, at: u32, run: &mut Vec<Any>) -> u32 {
    let len = u32::try_from(run.len()).unwrap_or(u32::MAX);
    if !run.is_empty() {
        array.insert_range(txn, at, std::mem::take(run));
    }
    at.saturating_add(len)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use proptest::prelude::*;
    use serde_json::json;
    use yrs::updates::decoder::Decode;
    use yrs::{ClientID, StateVector, Update, Xml, XmlElementRef, XmlFragment, XmlTextRef};

    use super::*;

    /// A document as the hub creates them: UTF-16 offsets, a 32-bit client id like Yjs.
    fn new_doc(client_id: u64) -> Doc {
        Doc::with_options(Options {
            offset_kind: OffsetKind::Utf16,
            ..Options::with_client_id(ClientID::new(client_id))
        })
    }

    fn state(doc: &Doc) -> Vec<u8> {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    fn apply(doc: &Doc, update: &[u8]) {
        let update = Update::decode_v1(update).expect("update decodes");
        doc.transact_mut()
            .apply_update(update)
            .expect("update applies");
    }

    /// A fresh document that got `doc`'s content as a client update: its roots are undefined.
    fn replica(doc: &Doc, client_id: u64) -> Doc {
        let copy = new_doc(client_id);
        apply(&copy, &state(doc));
        copy
    }

    fn json_of(doc: &Doc) -> Value {
        doc_to_json(&doc.transact())
    }

    fn ops(value: Value) -> Vec<Op> {
        serde_json::from_value(value).expect("ops deserialise")
    }

    /// Every update `doc` emits from now on.
    fn record(doc: &Doc) -> Arc<Mutex<Vec<Vec<u8>>>> {
        let updates = Arc::new(Mutex::new(Vec::new()));
        let sink = updates.clone();
        doc.observe_update_v1("record", move |_, e| {
            sink.lock().expect("lock").push(e.update.clone());
        })
        .expect("observer");
        updates
    }

    fn root_is_undefined(doc: &Doc, name: &str) -> bool {
        let txn = doc.transact();
        matches!(txn.get(name), Some(Out::UndefinedRef(_)))
    }

    /// Text, map (nested), array (nested), binary, NaN and XML with formatting.
    fn sample_doc(client_id: u64) -> Doc {
        let doc = new_doc(client_id);
        {
            let mut txn = doc.transact_mut();
            let text = txn.get_or_insert_text("text");
            text.insert(&mut txn, 0, "héllo 😀 world");

            let map = txn.get_or_insert_map("map");
            map.insert(&mut txn, "n", 3);
            map.insert(&mut txn, "f", 1.5);
            map.insert(&mut txn, "nan", f64::NAN);
            map.insert(&mut txn, "bin", Any::Buffer(Arc::from(&b"hi"[..])));
            map.insert(&mut txn, "plain", json_any(json!({"a": [1, "x"]})));
            let inner = map.insert(&mut txn, "inner", MapPrelim::default());
            inner.insert(&mut txn, "deep", true);
            let nested_text = map.insert(&mut txn, "note", TextPrelim::new("nested"));
            nested_text.insert(&mut txn, 6, "!");

            let array = txn.get_or_insert_array("list");
            array.insert_range(&mut txn, 0, [1, 2]);
            let element = array.push_back(&mut txn, MapPrelim::default());
            element.insert(&mut txn, "k", "v");
            array.push_back(&mut txn, ArrayPrelim::from([Any::from("a")]));

            let xml = txn.get_or_insert_xml_fragment("xml");
            let p = xml.push_back(&mut txn, XmlElementPrelim::empty("p"));
            p.insert_attribute(&mut txn, "z", "1");
            p.insert_attribute(&mut txn, "a", "x\"y");
            let t = p.push_back(&mut txn, XmlTextPrelim::new("bold and <plain>"));
            let bold = Attrs::from([(Arc::from("b"), Any::Bool(true))]);
            t.format(&mut txn, 0, 4, bold);
            xml.push_back(&mut txn, XmlTextPrelim::new("tail"));
        }
        doc
    }

    fn json_any(value: Value) -> Any {
        json_to_any(&value, MAX_DEPTH).expect("shallow value")
    }

    fn sample_json() -> Value {
        json!({
            "text": "héllo 😀 world",
            "map": {
                "n": 3, "f": 1.5, "nan": null, "bin": "aGk=",
                "plain": {"a": [1, "x"]},
                "inner": {"deep": true},
                "note": "nested!",
            },
            "list": [1, 2, {"k": "v"}, ["a"]],
            "xml": "<p a=\"x&quot;y\" z=\"1\"><b>bold</b> and &lt;plain&gt;</p>tail",
        })
    }

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

    /// Builds a document history: `version` is the state after the first edits.
    fn edited_pair(client_id: u64) -> (Doc, Doc) {
        let doc = sample_doc(client_id);
        let version = replica(&doc, 90);
        {
            let mut txn = doc.transact_mut();
            let text = txn.get_or_insert_text("text");
            text.remove_range(&mut txn, 2, 3);
            text.insert(&mut txn, 2, "ZZ");
            let map = txn.get_or_insert_map("map");
            map.insert(&mut txn, "n", 4);
            map.remove(&mut txn, "bin");
            map.insert(&mut txn, "added", "x");
            if let Some(Out::YMap(inner)) = map.get(&txn, "inner") {
                inner.insert(&mut txn, "deep", false);
                inner.insert(&mut txn, "more", 1);
            }
            if let Some(Out::YText(note)) = map.get(&txn, "note") {
                note.insert(&mut txn, 0, "re");
            }
            let list = txn.get_or_insert_array("list");
            list.remove_range(&mut txn, 0, 1);
            list.push_back(&mut txn, 9);
            let xml = txn.get_or_insert_xml_fragment("xml");
            if let Some(first) = xml.get(&txn, 0).and_then(|n| n.into_xml_element()) {
                first.insert_attribute(&mut txn, "z", "2");
                first.push_back(&mut txn, XmlElementPrelim::empty("br"));
            }
            let extra = txn.get_or_insert_text("extra");
            extra.insert(&mut txn, 0, "only in the document");
        }
        (doc, version)
    }

    #[test]
    fn restore_makes_content_equal_and_replicas_converge() {
        let (doc, version) = edited_pair(1);
        let peer = replica(&doc, 3);
        assert_ne!(json_of(&doc), json_of(&version));
        let updates = record(&doc);
        restore_to(&doc, &version).expect("restore");
        assert_eq!(json_of(&doc), json_of(&version));
        assert_eq!(json_of(&doc), sample_json());

        let updates = updates.lock().expect("lock").clone();
        assert_eq!(updates.len(), 1, "one transaction, one update");
        apply(&peer, &updates[0]);
        assert_eq!(json_of(&peer), sample_json());
        // The same through a state-vector diff.
        let late = new_doc(4);
        apply(&late, &state(&replica(&version, 5)));
        let sv = late.transact().state_vector();
        apply(&late, &doc.transact().encode_diff_v1(&sv));
        assert_eq!(json_of(&late), sample_json());
    }

    #[test]
    fn restore_works_on_undefined_roots_on_both_sides() {
        let (doc, version) = edited_pair(1);
        // The server's room doc got everything as client updates.
        let server = replica(&doc, 2);
        assert!(root_is_undefined(&server, "text"));
        restore_to(&server, &version).expect("restore");
        assert_eq!(json_of(&server), sample_json());
        // And the client that made the edits converges on the server's restore.
        apply(&doc, &state(&server));
        assert_eq!(json_of(&doc), sample_json());
    }

    #[test]
    fn restore_again_is_a_no_op() {
        let (doc, version) = edited_pair(1);
        restore_to(&doc, &version).expect("restore");
        let updates = record(&doc);
        restore_to(&doc, &version).expect("restore again");
        assert!(
            updates.lock().expect("lock").is_empty(),
            "nothing left to change"
        );
    }

    #[test]
    fn restore_edits_text_minimally() {
        let long = "a".repeat(5000);
        let doc = new_doc(1);
        {
            let mut txn = doc.transact_mut();
            let t = txn.get_or_insert_text("t");
            t.insert(&mut txn, 0, &format!("{long}😀 old {long}"));
        }
        let version = new_doc(2);
        {
            let mut txn = version.transact_mut();
            let t = txn.get_or_insert_text("t");
            t.insert(&mut txn, 0, &format!("{long}😀 brand new {long}"));
        }
        let updates = record(&doc);
        restore_to(&doc, &version).expect("restore");
        assert_eq!(json_of(&doc), json_of(&version));
        let updates = updates.lock().expect("lock");
        assert!(
            updates[0].len() < 100,
            "update of {} bytes",
            updates[0].len()
        );
    }

    #[test]
    fn restore_into_a_byte_offset_doc() {
        let doc = Doc::with_options(Options::with_client_id(ClientID::new(1)));
        {
            let mut txn = doc.transact_mut();
            let t = txn.get_or_insert_text("t");
            t.insert(&mut txn, 0, "é😀 old ü");
        }
        let version = new_doc(2);
        {
            let mut txn = version.transact_mut();
            let t = txn.get_or_insert_text("t");
            t.insert(&mut txn, 0, "é😀 néw ü");
        }
        restore_to(&doc, &version).expect("restore");
        assert_eq!(json_of(&doc), json!({"t": "é😀 néw ü"}));
    }

    #[test]
    fn restore_refuses_conflicting_types_and_changes_nothing() {
        let doc = new_doc(1);
        {
            let mut txn = doc.transact_mut();
            let m = txn.get_or_insert_map("x");
            m.insert(&mut txn, "k", 1);
            let t = txn.get_or_insert_text("t");
            t.insert(&mut txn, 0, "keep");
        }
        let version = new_doc(2);
        {
            let mut txn = version.transact_mut();
            let t = txn.get_or_insert_text("x");
            t.insert(&mut txn, 0, "text");
        }
        let updates = record(&doc);
        assert_eq!(
            restore_to(&doc, &version),
            Err(OpError::KindConflict {
                name: "x".into(),
                current: RootKind::Map,
                version: RootKind::Text
            })
        );
        assert_eq!(json_of(&doc), json!({"x": {"k": 1}, "t": "keep"}));
        assert!(updates.lock().expect("lock").is_empty());
    }

    #[test]
    fn restore_replaces_an_undefined_root_of_another_inferred_kind() {
        // The version's "x" is a text; the document's undefined "x" holds plain values (a
        // peer made it an array): no declared type stands in the way.
        let version = new_doc(1);
        {
            let mut txn = version.transact_mut();
            let t = txn.get_or_insert_text("x");
            t.insert(&mut txn, 0, "text");
        }
        let source = new_doc(2);
        {
            let mut txn = source.transact_mut();
            let a = txn.get_or_insert_array("x");
            a.insert_range(&mut txn, 0, [1, 2]);
        }
        let doc = replica(&source, 3);
        restore_to(&doc, &version).expect("restore");
        assert_eq!(json_of(&doc), json!({"x": "text"}));
    }

    #[test]
    fn restore_copies_xml_deeply() {
        let version = new_doc(1);
        {
            let mut txn = version.transact_mut();
            let xml = txn.get_or_insert_xml_fragment("prosemirror");
            let p = xml.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            p.insert_attribute(&mut txn, "align", "left");
            let t = p.push_back(&mut txn, XmlTextPrelim::new("Hello world"));
            let link = Attrs::from([(
                Arc::from("link"),
                json_any(json!({"href": "https://x.test/?a&b"})),
            )]);
            t.format(&mut txn, 6, 5, link);
            let list = xml.push_back(&mut txn, XmlElementPrelim::empty("list"));
            let item: XmlElementRef = list.push_back(&mut txn, XmlElementPrelim::empty("item"));
            let _: XmlTextRef = item.push_back(&mut txn, XmlTextPrelim::new("one"));
        }
        let doc = new_doc(2);
        {
            let mut txn = doc.transact_mut();
            let xml = txn.get_or_insert_xml_fragment("prosemirror");
            xml.push_back(&mut txn, XmlTextPrelim::new("something else"));
        }
        let peer = replica(&doc, 3);
        let updates = record(&doc);
        restore_to(&doc, &version).expect("restore");
        let expected = json!({"prosemirror": "<paragraph align=\"left\">Hello <link href=\"https://x.test/?a&amp;b\">world</link></paragraph><list><item>one</item></list>"});
        assert_eq!(json_of(&version), expected);
        assert_eq!(json_of(&doc), expected);
        apply(&peer, &updates.lock().expect("lock")[0]);
        assert_eq!(json_of(&peer), expected);
        // A version loaded from updates (undefined roots) restores the same.
        let doc2 = new_doc(4);
        restore_to(&doc2, &replica(&version, 5)).expect("restore");
        assert_eq!(json_of(&doc2), expected);
    }

    #[test]
    fn restore_onto_itself_changes_nothing() {
        let doc = sample_doc(1);
        let updates = record(&doc);
        let same = doc.clone();
        restore_to(&doc, &same).expect("restore");
        assert!(updates.lock().expect("lock").is_empty());
        let mut txn = doc.transact_mut();
        assert_eq!(restore_in(&mut txn, &same), Err(OpError::Busy));
    }

    /// A text's content with embeds visible: strings, plain embeds as JSON, shared types by kind.
    fn text_content(doc: &Doc, name: &str) -> Vec<Value> {
        let txn = doc.transact();
        let Some(ptr) = txn.get(name).as_ref().and_then(ptr_of) else {
            return Vec::new();
        };
        TextRef::from(ptr)
            .diff(&txn, YChange::identity)
            .into_iter()
            .map(|chunk| match chunk.insert {
                Out::Any(any) => any_to_json(&any, MAX_DEPTH),
                other => json!({"shared": out_to_json(&txn, &other, MAX_DEPTH)}),
            })
            .collect()
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

    #[test]
    fn restore_keeps_embeds_in_texts() {
        let version = new_doc(1);
        {
            let mut txn = version.transact_mut();
            let t = txn.get_or_insert_text("t");
            t.insert(&mut txn, 0, "start end");
            t.insert_embed(&mut txn, 6, json_any(json!({"img": "a.png"})));
            let inner = t.insert_embed(&mut txn, 5, MapPrelim::from([("k", "v")]));
            inner.insert(&mut txn, "n", 1);
        }
        let doc = new_doc(2);
        {
            let mut txn = doc.transact_mut();
            let t = txn.get_or_insert_text("t");
            t.insert(&mut txn, 0, "start middle end");
            t.insert_embed(&mut txn, 0, json_any(json!({"img": "old.png"})));
        }
        let peer = replica(&doc, 3);
        let updates = record(&doc);
        restore_to(&doc, &replica(&version, 4)).expect("restore");
        let expected = vec![
            json!("start"),
            json!({"shared": {"k": "v", "n": 1}}),
            json!(" "),
            json!({"img": "a.png"}),
            json!("end"),
        ];
        assert_eq!(text_content(&version, "t"), expected);
        assert_eq!(text_content(&doc, "t"), expected);
        apply(&peer, &updates.lock().expect("lock")[0]);
        assert_eq!(text_content(&peer, "t"), expected);
    }

    #[test]
    fn restore_copies_odd_xml_children_and_subdocs() {
        let version = new_doc(1);
        {
            let mut txn = version.transact_mut();
            let xml = txn.get_or_insert_xml_fragment("x");
            let as_array: &ArrayRef = xml.as_ref();
            as_array.insert(&mut txn, 0, "a <plain> string");
            as_array.insert(&mut txn, 1, MapPrelim::from([("k", 1)]));
            let e = xml.push_back(&mut txn, XmlElementPrelim::empty("e"));
            e.insert_attribute(&mut txn, "n", 5);
            let e_array: &ArrayRef = e.as_ref();
            e_array.insert(&mut txn, 0, 42);
            let m = txn.get_or_insert_map("m");
            m.insert(
                &mut txn,
                "sub",
                Doc::with_options(Options::with_client_id(ClientID::new(9))),
            );
        }
        let guid = {
            let txn = version.transact();
            let m = txn.get_map("m").expect("map");
            match m.get(&txn, "sub") {
                Some(Out::YDoc(sub)) => sub.guid(),
                other => panic!("not a subdoc: {other:?}"),
            }
        };
        let expected = json!({
            "x": "a &lt;plain&gt; string{&quot;k&quot;:1}<e n=\"5\">42</e>",
            "m": {"sub": null},
        });
        assert_eq!(json_of(&version), expected);
        let doc = new_doc(2);
        restore_to(&doc, &version).expect("restore");
        assert_eq!(json_of(&doc), expected);
        // Without its declared type, a fragment holding non-XML children reads as an array;
        // restoring from such a version still gives equal JSON.
        let untyped = replica(&version, 3);
        let doc2 = new_doc(4);
        restore_to(&doc2, &untyped).expect("restore");
        assert_eq!(json_of(&doc2), json_of(&untyped));
        let txn = doc.transact();
        let m = txn.get_map("m").expect("map restored");
        assert!(matches!(m.get(&txn, "sub"), Some(Out::YDoc(sub)) if sub.guid() == guid));
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

    fn any_op() -> impl Strategy<Value = Op> {
        let name = || prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from);
        let key = || prop::sample::select(vec!["k", "l"]).prop_map(String::from);
        let value = || {
            prop::sample::select(vec![
                json!(1),
                json!("s"),
                json!({"x": [1.5, null]}),
                json!(true),
            ])
        };
        let text = prop::sample::select(vec!["x", "😀", "é!"]).prop_map(String::from);
        prop_oneof![
            (name(), 0u64..6, text).prop_map(|(name, index, text)| Op::InsertText {
                name,
                index,
                text
            }),
            (name(), 0u64..6, 0u64..3).prop_map(|(name, index, length)| Op::DeleteText {
                name,
                index,
                length
            }),
            (name(), key(), value()).prop_map(|(name, key, value)| Op::SetMap { name, key, value }),
            (name(), key()).prop_map(|(name, key)| Op::DeleteMap { name, key }),
            (name(), prop::collection::vec(value(), 0..3))
                .prop_map(|(name, values)| Op::PushArray { name, values }),
            (name(), 0u64..6, 0u64..3).prop_map(|(name, index, length)| Op::DeleteArray {
                name,
                index,
                length
            }),
        ]
    }

    fn edited(client_id: u64, batches: &[Vec<Op>]) -> Doc {
        let doc = new_doc(client_id);
        for batch in batches {
            // Invalid batches are part of the test: they must change nothing.
            let before = json_of(&doc);
            if apply_ops(&doc, batch).is_err() {
                assert_eq!(json_of(&doc), before);
            }
        }
        doc
    }

    proptest! {
        #[test]
        fn restore_converges_between_random_documents(
            a in prop::collection::vec(prop::collection::vec(any_op(), 1..4), 0..6),
            b in prop::collection::vec(prop::collection::vec(any_op(), 1..4), 0..6),
        ) {
            let doc_a = edited(11, &a);
            let doc_b = edited(12, &b);
            let version = replica(&doc_a, 13);
            prop_assert_eq!(json_of(&version), json_of(&doc_a));
            // Undefined roots on both sides: any type can replace any other.
            let server = replica(&doc_b, 14);
            let peer = replica(&doc_b, 15);
            let updates = record(&server);
            restore_to(&server, &version).expect("restore");
            prop_assert_eq!(json_of(&server), json_of(&version));
            for update in updates.lock().expect("lock").iter() {
                apply(&peer, update);
            }
            prop_assert_eq!(json_of(&peer), json_of(&version));
            // Declared types may refuse, never half-apply.
            let before = json_of(&doc_b);
            match restore_to(&doc_b, &version) {
                Ok(()) => prop_assert_eq!(json_of(&doc_b), json_of(&version)),
                Err(OpError::KindConflict { .. }) => prop_assert_eq!(json_of(&doc_b), before),
                Err(e) => prop_assert!(false, "unexpected error: {}", e),
            }
        }
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
