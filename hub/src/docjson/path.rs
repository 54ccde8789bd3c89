//! Operations addressed by a path into the document's JSON view ([`doc_to_view`](super::doc_to_view)):
//! a root name, then map keys and sequence indexes; into XML, `"content", i` for an element's
//! i-th child, `"attrs", name` for an attribute, `"text"` for an XML text's characters.
//!
//! Checking follows the same rule as the root operations: the whole batch is checked before
//! anything changes. Each op is resolved against the document as it is before the batch,
//! except that a sequence's length and a text's characters account for earlier ops on the
//! same sequence or text. A path that goes *through* something an earlier op of the batch
//! changed (an index of a sequence that changed length, a key that was set or deleted) is
//! refused: its meaning would depend on how the reader counts. Send such ops in two batches.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use yrs::branch::BranchPtr;
use yrs::{
    Any, Array, ArrayRef, Map, MapRef, OffsetKind, Out, ReadTxn, Text, TextRef, TransactionMut,
    WriteTxn, Xml, XmlElementPrelim, XmlElementRef, XmlFragment, XmlFragmentRef, XmlTextPrelim,
    XmlTextRef,
};

use super::kinds::{has_strings, kind_of, ptr_of};
use super::ops::json_to_any;
use super::text::{EMBED, doc_offset, text_position, text_units, to_u32};
use super::view::TEXT_NODE;
use super::{InvalidOp, MAX_NAME_BYTES, RootKind};

/// One step of a path: a map key (or `content` / `attrs` / `text` in XML), or an index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Seg {
    /// A position in a list (array, XML children, or, as an op's last step, a gap).
    Index(u64),
    /// A key of an object.
    Key(String),
}

/// A path as a list of steps, shown as JSON in errors.
pub struct ShowPath<'a>(pub &'a [Seg]);

impl fmt::Display for ShowPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self.0).unwrap_or_default())
    }
}

fn show(path: &[Seg]) -> String {
    ShowPath(path).to_string()
}

/// Longest path accepted: deeper content cannot exist under the nesting limit.
pub(super) const MAX_PATH: usize = 2 * super::MAX_DEPTH;

/// Where a checked step applies: a root by name (typed when the step runs, as the root ops do)
/// or a nested type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Container {
    Root(String),
    Ptr(BranchPtr),
}

/// An XML node to insert.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Element {
        tag: String,
        attrs: Vec<(String, Any)>,
        children: Vec<Node>,
    },
    Text(String),
}

/// A checked path op, positions in the document's own units.
pub(super) enum PathStep {
    MapSet {
        map: Container,
        key: String,
        value: Any,
    },
    MapDelete {
        map: Container,
        key: String,
    },
    AttrSet {
        elem: BranchPtr,
        key: String,
        value: Any,
    },
    AttrDelete {
        elem: BranchPtr,
        key: String,
    },
    ArrayInsert {
        array: Container,
        index: u32,
        values: Vec<Any>,
    },
    XmlInsert {
        parent: Container,
        index: u32,
        nodes: Vec<Node>,
    },
    Remove {
        seq: Container,
        xml: bool,
        index: u32,
        len: u32,
    },
    TextInsert {
        text: Container,
        xml: bool,
        index: u32,
        text_value: String,
    },
    TextDelete {
        text: Container,
        xml: bool,
        index: u32,
        len: u32,
    },
}

/// What a path leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A root that holds nothing yet: the op decides its type.
    Free,
    Map,
    Array,
    /// An XML fragment's or element's children.
    XmlChildren,
    /// An XML element, before the step that names its `content` or `attrs`.
    Element,
    /// An element's attributes.
    Attrs,
    Text,
    XmlText,
}

struct Resolved {
    container: Container,
    target: Target,
    /// Nesting depth of the container (a root is 1).
    depth: usize,
}

/// What the path ops checked so far have done.
#[derive(Default)]
pub(super) struct PathSim {
    /// Roots addressed by path ops (root ops may not address them in the same batch).
    pub(super) roots: HashSet<String>,
    /// Roots that held nothing and that an earlier op typed.
    typed: HashMap<String, Target>,
    /// Lengths of sequences earlier ops changed.
    seqs: HashMap<Container, u64>,
    /// Texts earlier ops changed, as UTF-16 units.
    texts: HashMap<Container, Vec<u32>>,
    /// Keys and attributes earlier ops set or deleted.
    keys: HashSet<(Container, String)>,
}

/// The path ops, as [`Op`](super::Op) variants hand them over.
pub(super) enum PathOp<'a> {
    Set {
        path: &'a [Seg],
        value: &'a Value,
    },
    Delete {
        path: &'a [Seg],
    },
    Splice {
        path: &'a [Seg],
        index: u64,
        delete: u64,
        insert: &'a [Value],
        xml: bool,
    },
    SpliceText {
        path: &'a [Seg],
        index: u64,
        delete: u64,
        insert: &'a str,
    },
}

/// Checks one path op against the document and what the ops before it did; the steps that
/// carry it out (none for an op that changes nothing).
pub(super) fn plan(
    txn: &TransactionMut,
    offset_kind: OffsetKind,
    sim: &mut PathSim,
    op: PathOp<'_>,
    max_depth: usize,
) -> Result<Vec<PathStep>, InvalidOp> {
    if let PathOp::Set { path, .. }
    | PathOp::Delete { path }
    | PathOp::Splice { path, .. }
    | PathOp::SpliceText { path, .. } = &op
        && let Some(Seg::Key(root)) = path.first()
    {
        sim.roots.insert(root.clone());
    }
    match op {
        PathOp::Set { path, value } => {
            let (at, key) = split_key(path)?;
            let r = resolve(txn, sim, at)?;
            let value = json_to_any(value, value_budget(max_depth, r.depth))
                .ok_or(InvalidOp::TooDeep { max: max_depth })?;
            let step = match r.target {
                Target::Free | Target::Map => {
                    type_root(sim, &r, Target::Map);
                    PathStep::MapSet {
                        map: r.container.clone(),
                        key: key.to_owned(),
                        value,
                    }
                }
                Target::Attrs => PathStep::AttrSet {
                    elem: ptr(&r.container)?,
                    key: key.to_owned(),
                    value,
                },
                other => return Err(not_a(at, "map or attributes", other)),
            };
            sim.keys.insert((r.container, key.to_owned()));
            Ok(vec![step])
        }
        PathOp::Delete { path } => {
            let (at, key) = split_key(path)?;
            let r = resolve(txn, sim, at)?;
            let step = match r.target {
                Target::Free | Target::Map => {
                    type_root(sim, &r, Target::Map);
                    PathStep::MapDelete {
                        map: r.container.clone(),
                        key: key.to_owned(),
                    }
                }
                Target::Attrs => PathStep::AttrDelete {
                    elem: ptr(&r.container)?,
                    key: key.to_owned(),
                },
                other => return Err(not_a(at, "map or attributes", other)),
            };
            sim.keys.insert((r.container, key.to_owned()));
            Ok(vec![step])
        }
        PathOp::Splice {
            path,
            index,
            delete,
            insert,
            xml,
        } => {
            let r = resolve(txn, sim, path)?;
            let target = match (r.target, xml) {
                (Target::Free, false) => Target::Array,
                (Target::Free, true) => Target::XmlChildren,
                (t @ (Target::Array | Target::XmlChildren), _) => t,
                (other, _) => return Err(not_a(path, "list", other)),
            };
            type_root(sim, &r, target);
            let len = seq_len(txn, sim, &r)?;
            index.checked_add(delete).filter(|end| *end <= len).ok_or(
                InvalidOp::RangeOutOfBounds {
                    index,
                    length: delete,
                    len,
                },
            )?;
            sim.seqs
                .insert(r.container.clone(), len - delete + insert.len() as u64);
            let at = to_u32(usize::try_from(index).unwrap_or(usize::MAX))?;
            let mut steps = Vec::new();
            if delete > 0 {
                steps.push(PathStep::Remove {
                    seq: r.container.clone(),
                    xml: target == Target::XmlChildren,
                    index: at,
                    len: to_u32(usize::try_from(delete).unwrap_or(usize::MAX))?,
                });
            }
            if insert.is_empty() {
                return Ok(steps);
            }
            let budget = max_depth.saturating_sub(r.depth);
            steps.push(if target == Target::Array {
                PathStep::ArrayInsert {
                    array: r.container,
                    index: at,
                    values: insert
                        .iter()
                        .map(|v| json_to_any(v, value_budget(max_depth, r.depth)))
                        .collect::<Option<Vec<_>>>()
                        .ok_or(InvalidOp::TooDeep { max: max_depth })?,
                }
            } else {
                PathStep::XmlInsert {
                    parent: r.container,
                    index: at,
                    nodes: insert
                        .iter()
                        .map(|v| node(v, budget, max_depth))
                        .collect::<Result<Vec<_>, _>>()?,
                }
            });
            Ok(steps)
        }
        PathOp::SpliceText {
            path,
            index,
            delete,
            insert,
        } => {
            let r = resolve(txn, sim, path)?;
            let xml = text_target(path, &r)?;
            type_root(sim, &r, Target::Text);
            let units = text_sim(txn, offset_kind, sim, &r, path)?;
            let len = units.len() as u64;
            let end = index.checked_add(delete).filter(|end| *end <= len).ok_or(
                InvalidOp::RangeOutOfBounds {
                    index,
                    length: delete,
                    len,
                },
            )?;
            let start = text_position(units, index)?;
            let end = text_position(units, end)?;
            let doc_index = doc_offset(units, start, offset_kind)?;
            let doc_len = doc_offset(units, end, offset_kind)? - doc_index;
            units.splice(start..end, insert.encode_utf16().map(u32::from));
            let mut steps = Vec::new();
            if doc_len > 0 {
                steps.push(PathStep::TextDelete {
                    text: r.container.clone(),
                    xml,
                    index: doc_index,
                    len: doc_len,
                });
            }
            if !insert.is_empty() {
                steps.push(PathStep::TextInsert {
                    text: r.container,
                    xml,
                    index: doc_index,
                    text_value: insert.to_owned(),
                });
            }
            Ok(steps)
        }
    }
}

/// Levels a plain value may use below a container at `depth`: its lists and objects count,
/// its scalars do not (as the nesting limit counts them), while `json_to_any` counts both.
fn value_budget(max_depth: usize, depth: usize) -> usize {
    max_depth.saturating_sub(depth) + 1
}

fn split_key(path: &[Seg]) -> Result<(&[Seg], &str), InvalidOp> {
    match path.split_last() {
        Some((Seg::Key(key), at)) if !at.is_empty() => Ok((at, key)),
        _ => Err(bad_path(path, "must end with a key, after the root")),
    }
}

fn bad_path(path: &[Seg], why: &str) -> InvalidOp {
    InvalidOp::BadPath {
        path: show(path),
        reason: why.to_owned(),
    }
}

fn not_a(path: &[Seg], expected: &str, found: Target) -> InvalidOp {
    let found = match found {
        Target::Free => "nothing",
        Target::Map => "a map",
        Target::Array => "an array",
        Target::XmlChildren => "XML children",
        Target::Element => "an element",
        Target::Attrs => "attributes",
        Target::Text => "a text",
        Target::XmlText => "an XML text",
    };
    bad_path(path, &format!("leads to {found}, not a {expected}"))
}

fn ptr(c: &Container) -> Result<BranchPtr, InvalidOp> {
    match c {
        Container::Ptr(p) => Ok(*p),
        Container::Root(name) => Err(InvalidOp::BadPath {
            path: show(&[Seg::Key(name.clone())]),
            reason: "a root has no attributes".into(),
        }),
    }
}

/// A root that held nothing takes the type of the first op on it.
fn type_root(sim: &mut PathSim, r: &Resolved, target: Target) {
    if r.target == Target::Free
        && let Container::Root(name) = &r.container
    {
        sim.typed.insert(name.clone(), target);
    }
}

fn text_target(path: &[Seg], r: &Resolved) -> Result<bool, InvalidOp> {
    match r.target {
        Target::Free | Target::Text => Ok(false),
        Target::XmlText => Ok(true),
        other => Err(not_a(path, "text", other)),
    }
}

fn seq_len(txn: &TransactionMut, sim: &PathSim, r: &Resolved) -> Result<u64, InvalidOp> {
    if let Some(len) = sim.seqs.get(&r.container) {
        return Ok(*len);
    }
    match &r.container {
        Container::Root(_) if r.target == Target::Free => Ok(0),
        Container::Root(name) => {
            let ptr = txn
                .get(name)
                .as_ref()
                .and_then(ptr_of)
                .ok_or_else(|| bad_path(&[Seg::Key(name.clone())], "no such root"))?;
            seq_len_of(txn, ptr, name)
        }
        Container::Ptr(ptr) => seq_len_of(txn, *ptr, "nested list"),
    }
}

fn seq_len_of(txn: &TransactionMut, ptr: BranchPtr, name: &str) -> Result<u64, InvalidOp> {
    if has_strings(txn, ptr) {
        return Err(InvalidOp::MixedContent {
            name: name.to_owned(),
        });
    }
    Ok(u64::from(ArrayRef::from(ptr).len(txn)))
}

fn text_sim<'s>(
    txn: &TransactionMut,
    offset_kind: OffsetKind,
    sim: &'s mut PathSim,
    r: &Resolved,
    path: &[Seg],
) -> Result<&'s mut Vec<u32>, InvalidOp> {
    if !sim.texts.contains_key(&r.container) {
        let units = match &r.container {
            Container::Root(_) if r.target == Target::Free => Vec::new(),
            Container::Root(name) => txn
                .get(name)
                .as_ref()
                .and_then(ptr_of)
                .and_then(|p| text_units(txn, p, offset_kind))
                .ok_or_else(|| InvalidOp::MixedContent { name: name.clone() })?,
            Container::Ptr(p) => text_units(txn, *p, offset_kind)
                .ok_or_else(|| InvalidOp::MixedContent { name: show(path) })?,
        };
        // The view shows characters only: an index past an embed would mean something
        // else to the reader than to the document.
        if units.contains(&EMBED) {
            return Err(InvalidOp::MixedContent { name: show(path) });
        }
        sim.texts.insert(r.container.clone(), units);
    }
    sim.texts
        .get_mut(&r.container)
        .ok_or_else(|| bad_path(path, "no such text"))
}

/// Follows `path` (a root name, then steps) to what it names.
fn resolve(txn: &TransactionMut, sim: &PathSim, path: &[Seg]) -> Result<Resolved, InvalidOp> {
    if path.len() > MAX_PATH {
        return Err(bad_path(&path[..8], "is too long"));
    }
    let Some((Seg::Key(name), rest)) = path.split_first() else {
        return Err(bad_path(path, "must start with a root name"));
    };
    super::plan::check_root_name(name)?;
    let root_target = match sim.typed.get(name) {
        Some(t) => *t,
        None => match txn.get(name).as_ref().and_then(ptr_of) {
            None => Target::Free,
            Some(ptr) => match kind_of(txn, ptr) {
                RootKind::Empty => Target::Free,
                kind => target_of(kind).ok_or_else(|| {
                    bad_path(&path[..1], &format!("is a {kind}, which ops do not edit"))
                })?,
            },
        },
    };
    let mut cur = Resolved {
        container: Container::Root(name.clone()),
        target: root_target,
        depth: 1,
    };
    let mut i = 0;
    while i < rest.len() {
        let seg = &rest[i];
        let here = &path[..i + 2];
        let ptr = match &cur.container {
            Container::Ptr(p) => *p,
            Container::Root(_) if cur.target == Target::Free || sim.typed.contains_key(name) => {
                return Err(bad_path(here, "does not exist"));
            }
            Container::Root(name) => txn
                .get(name)
                .as_ref()
                .and_then(ptr_of)
                .ok_or_else(|| bad_path(here, "does not exist"))?,
        };
        let child = match (cur.target, seg) {
            (Target::Map, Seg::Key(k)) => {
                if sim.keys.contains(&(cur.container.clone(), k.clone())) {
                    return Err(changed(here));
                }
                MapRef::from(ptr)
                    .get(txn, k)
                    .ok_or_else(|| bad_path(here, "does not exist"))?
            }
            (Target::Array, Seg::Index(j)) => {
                if sim.seqs.contains_key(&cur.container) {
                    return Err(changed(here));
                }
                if has_strings(txn, ptr) {
                    return Err(InvalidOp::MixedContent { name: show(here) });
                }
                element(txn, ptr, *j, here)?
            }
            (Target::XmlChildren, Seg::Index(j)) => {
                if sim.seqs.contains_key(&cur.container) {
                    return Err(changed(here));
                }
                element(txn, ptr, *j, here)?
            }
            (Target::Element, Seg::Key(k)) if k == "content" => {
                cur.target = Target::XmlChildren;
                i += 1;
                continue;
            }
            (Target::Element, Seg::Key(k)) if k == "attrs" => {
                cur = Resolved {
                    container: cur.container,
                    target: Target::Attrs,
                    depth: cur.depth,
                };
                i += 1;
                continue;
            }
            (Target::XmlText, Seg::Key(k)) if k == "text" => {
                i += 1;
                if i < rest.len() {
                    return Err(bad_path(path, "goes into a text"));
                }
                return Ok(cur);
            }
            _ => return Err(bad_path(here, "does not fit the content")),
        };
        let Some(child_ptr) = ptr_of(&child) else {
            return Err(bad_path(
                here,
                "is a plain value: set it whole from its parent",
            ));
        };
        let kind = kind_of(txn, child_ptr);
        let target = target_of(kind)
            .filter(|t| *t != Target::Free)
            .ok_or_else(|| bad_path(here, &format!("is a {kind}, which ops do not edit")))?;
        cur = Resolved {
            container: Container::Ptr(child_ptr),
            target,
            depth: cur.depth + 1,
        };
        i += 1;
    }
    if cur.target == Target::Element {
        return Err(bad_path(
            path,
            "is an element: name its \"content\" or \"attrs\"",
        ));
    }
    if cur.target == Target::XmlText {
        return Err(bad_path(
            path,
            "is a text node: its characters are at \"text\"",
        ));
    }
    Ok(cur)
}

fn changed(path: &[Seg]) -> InvalidOp {
    InvalidOp::ChangedEarlier { path: show(path) }
}

fn element(
    txn: &TransactionMut,
    seq: BranchPtr,
    index: u64,
    here: &[Seg],
) -> Result<Out, InvalidOp> {
    u32::try_from(index)
        .ok()
        .and_then(|j| ArrayRef::from(seq).get(txn, j))
        .ok_or_else(|| bad_path(here, "does not exist"))
}

fn target_of(kind: RootKind) -> Option<Target> {
    Some(match kind {
        RootKind::Empty => Target::Free,
        RootKind::Text => Target::Text,
        RootKind::Map => Target::Map,
        RootKind::Array => Target::Array,
        RootKind::XmlFragment => Target::XmlChildren,
        RootKind::XmlElement => Target::Element,
        RootKind::XmlText => Target::XmlText,
        RootKind::Other => return None,
    })
}

/// An XML node from its view JSON: `{"type": tag, "attrs": {...}, "content": [...]}` or
/// `{"type": "text", "text": "..."}`. `depth` levels may still be used.
fn node(value: &Value, depth: usize, max: usize) -> Result<Node, InvalidOp> {
    let depth = depth.checked_sub(1).ok_or(InvalidOp::TooDeep { max })?;
    let bad = |why: &str| InvalidOp::BadNode {
        reason: why.to_owned(),
    };
    let Value::Object(o) = value else {
        return Err(bad("a node is an object with a \"type\""));
    };
    let Some(Value::String(tag)) = o.get("type") else {
        return Err(bad("a node needs a \"type\" string"));
    };
    if tag == TEXT_NODE {
        if o.keys().any(|k| k != "type" && k != "text") {
            return Err(bad("a text node has only \"type\" and \"text\""));
        }
        return match o.get("text") {
            Some(Value::String(t)) => Ok(Node::Text(t.clone())),
            _ => Err(bad("a text node needs a \"text\" string")),
        };
    }
    if tag.is_empty() || tag.len() > MAX_NAME_BYTES {
        return Err(bad("an element's type is 1 to 256 bytes"));
    }
    if o.keys()
        .any(|k| !matches!(k.as_str(), "type" | "attrs" | "content"))
    {
        return Err(bad(
            "an element has only \"type\", \"attrs\" and \"content\"",
        ));
    }
    let attrs = match o.get("attrs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(a)) => a
            .iter()
            .map(|(k, v)| Some((k.clone(), json_to_any(v, depth)?)))
            .collect::<Option<Vec<_>>>()
            .ok_or(InvalidOp::TooDeep { max })?,
        Some(_) => return Err(bad("\"attrs\" is an object")),
    };
    let children = match o.get("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(c)) => c
            .iter()
            .map(|v| node(v, depth, max))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad("\"content\" is a list of nodes")),
    };
    Ok(Node::Element {
        tag: tag.clone(),
        attrs,
        children,
    })
}

/// Bytes of text an op inserts (for the batch's text limit).
pub(super) fn text_bytes(values: &[Value]) -> usize {
    fn walk(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(walk).sum(),
            Value::Object(o) => o.iter().map(|(k, v)| k.len() + walk(v)).sum(),
            _ => 0,
        }
    }
    values.iter().map(walk).sum()
}

/// Applies a checked step.
pub(super) fn apply(txn: &mut TransactionMut, step: PathStep) {
    match step {
        PathStep::MapSet { map, key, value } => {
            map_of(txn, map).insert(txn, key, yrs::In::Any(value));
        }
        PathStep::MapDelete { map, key } => {
            map_of(txn, map).remove(txn, &key);
        }
        PathStep::AttrSet { elem, key, value } => {
            XmlElementRef::from(elem).insert_attribute(txn, key, value);
        }
        PathStep::AttrDelete { elem, key } => {
            XmlElementRef::from(elem).remove_attribute(txn, &key);
        }
        PathStep::ArrayInsert {
            array,
            index,
            values,
        } => {
            let a = match array {
                Container::Root(name) => txn.get_or_insert_array(name),
                Container::Ptr(p) => ArrayRef::from(p),
            };
            a.insert_range(txn, index, values);
        }
        PathStep::XmlInsert {
            parent,
            index,
            nodes,
        } => {
            let f = match parent {
                Container::Root(name) => txn.get_or_insert_xml_fragment(name),
                Container::Ptr(p) => XmlFragmentRef::from(p),
            };
            for (i, n) in nodes.into_iter().enumerate() {
                insert_node(txn, &f, index + i as u32, n);
            }
        }
        PathStep::Remove {
            seq,
            xml,
            index,
            len,
        } => match (seq, xml) {
            (Container::Root(name), false) => {
                txn.get_or_insert_array(name).remove_range(txn, index, len)
            }
            (Container::Root(name), true) => txn
                .get_or_insert_xml_fragment(name)
                .remove_range(txn, index, len),
            (Container::Ptr(p), false) => ArrayRef::from(p).remove_range(txn, index, len),
            (Container::Ptr(p), true) => XmlFragmentRef::from(p).remove_range(txn, index, len),
        },
        PathStep::TextInsert {
            text,
            xml,
            index,
            text_value,
        } => match (text, xml) {
            (Container::Root(name), _) => {
                txn.get_or_insert_text(name).insert(txn, index, &text_value)
            }
            (Container::Ptr(p), true) => XmlTextRef::from(p).insert(txn, index, &text_value),
            (Container::Ptr(p), false) => TextRef::from(p).insert(txn, index, &text_value),
        },
        PathStep::TextDelete {
            text,
            xml,
            index,
            len,
        } => match (text, xml) {
            (Container::Root(name), _) => {
                txn.get_or_insert_text(name).remove_range(txn, index, len)
            }
            (Container::Ptr(p), true) => XmlTextRef::from(p).remove_range(txn, index, len),
            (Container::Ptr(p), false) => TextRef::from(p).remove_range(txn, index, len),
        },
    }
}

fn map_of(txn: &mut TransactionMut, map: Container) -> MapRef {
    match map {
        Container::Root(name) => txn.get_or_insert_map(name),
        Container::Ptr(p) => MapRef::from(p),
    }
}

/// Inserts a node (an `XmlFragmentRef` stands for any XML parent: elements share its code).
fn insert_node(txn: &mut TransactionMut, parent: &XmlFragmentRef, index: u32, node: Node) {
    match node {
        Node::Text(text) => {
            parent.insert(txn, index, XmlTextPrelim::new(text));
        }
        Node::Element {
            tag,
            attrs,
            children,
        } => {
            let elem = parent.insert(txn, index, XmlElementPrelim::empty(Arc::<str>::from(tag)));
            for (key, value) in attrs {
                elem.insert_attribute(txn, key, value);
            }
            let as_parent: &XmlFragmentRef = elem.as_ref();
            for (i, child) in children.into_iter().enumerate() {
                insert_node(txn, as_parent, i as u32, child);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use yrs::{Doc, Transact};

    use crate::docjson::testing::{apply, new_doc, ops, record, replica};
    use crate::docjson::{InvalidOp, OpError, apply_ops, apply_ops_limited, doc_to_view};

    fn view(doc: &Doc) -> Value {
        doc_to_view(&doc.transact())
    }

    /// A Tiptap-shaped document: a heading and a checklist in the `default` fragment.
    fn checklist() -> Doc {
        let doc = new_doc(1);
        apply_ops(
            &doc,
            &ops(json!([{"op": "splice", "path": ["default"], "index": 0, "xml": true, "insert": [
                {"type": "heading", "attrs": {"level": 1}, "content": [{"type": "text", "text": "Trip"}]},
                {"type": "taskList", "content": [
                    {"type": "taskItem", "attrs": {"checked": false}, "content": [
                        {"type": "paragraph", "content": [{"type": "text", "text": "tickets"}]}]},
                    {"type": "taskItem", "attrs": {"checked": false}, "content": [
                        {"type": "paragraph", "content": [{"type": "text", "text": "passport"}]}]}
                ]}
            ]}])),
        )
        .expect("builds");
        doc
    }

    #[test]
    fn edits_nested_xml_maps_and_arrays_and_peers_converge() {
        let origin = checklist();
        let server = replica(&origin, 2);
        let updates = record(&server);
        apply_ops(
            &server,
            &ops(json!([
                {"op": "set", "path": ["default", 1, "content", 1, "attrs", "checked"], "value": true},
                {"op": "splice_text", "path": ["default", 0, "content", 0, "text"], "index": 4, "insert": " 😀"},
                {"op": "splice", "path": ["default", 1, "content"], "index": 2, "insert": [
                    {"type": "taskItem", "attrs": {"checked": false}, "content": [
                        {"type": "paragraph", "content": [{"type": "text", "text": "maps"}]}]}]},
                {"op": "splice", "path": ["default"], "index": 2, "insert": [{"type": "paragraph"}]},
                {"op": "set", "path": ["meta", "owner"], "value": {"name": "bot"}},
                {"op": "splice", "path": ["items"], "index": 0, "insert": [1, 2, 3]},
            ])),
        )
        .expect("applies");
        let v = view(&server);
        assert_eq!(
            v["default"][1]["content"][1]["attrs"]["checked"],
            json!(true)
        );
        assert_eq!(
            v["default"][1]["content"][0]["attrs"]["checked"],
            json!(false)
        );
        assert_eq!(v["default"][0]["content"][0]["text"], json!("Trip 😀"));
        assert_eq!(
            v["default"][1]["content"][2]["content"][0]["content"][0]["text"],
            json!("maps")
        );
        assert_eq!(
            v["default"][2],
            json!({"type": "paragraph", "attrs": {}, "content": []})
        );
        assert_eq!(v["meta"], json!({"owner": {"name": "bot"}}));
        assert_eq!(v["items"], json!([1, 2, 3]));
        {
            let updates = updates.lock().expect("lock");
            assert_eq!(updates.len(), 1, "one transaction, one update");
            apply(&origin, &updates[0]);
        }
        assert_eq!(view(&origin), v);

        // Second batch: paths into what the first created, array insert and delete at an
        // index, a nested map key removed, an attribute removed.
        apply_ops(
            &server,
            &ops(json!([
                {"op": "splice", "path": ["items"], "index": 1, "delete": 1, "insert": ["two", "2b"]},
                {"op": "delete", "path": ["meta", "owner"]},
                {"op": "delete", "path": ["default", 0, "attrs", "level"]},
                {"op": "splice", "path": ["default", 1, "content"], "index": 0, "delete": 1},
            ])),
        )
        .expect("applies");
        let v = view(&server);
        assert_eq!(v["items"], json!([1, "two", "2b", 3]));
        assert_eq!(v["meta"], Value::Null, "an empty root is left out");
        assert_eq!(v["default"][0]["attrs"], json!({}));
        assert_eq!(v["default"][1]["content"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn bad_paths_are_refused_and_change_nothing() {
        let doc = checklist();
        let before = view(&doc);
        let updates = record(&doc);
        let refused = |batch: Value| {
            let err = apply_ops(&doc, &ops(batch)).expect_err("refused");
            assert_eq!(view(&doc), before);
            err
        };
        for (batch, why) in [
            (
                json!([{"op": "set", "path": ["default", 9, "attrs", "x"], "value": 1}]),
                "does not exist",
            ),
            (
                json!([{"op": "set", "path": ["default", 0, "x"], "value": 1}]),
                "is an element",
            ),
            (
                json!([{"op": "set", "path": ["default", 0, "content", "x"], "value": 1}]),
                "not a map",
            ),
            (
                json!([{"op": "set", "path": ["default", 0, "bogus", "x"], "value": 1}]),
                "does not fit",
            ),
            (
                json!([{"op": "set", "path": ["default", 0], "value": 1}]),
                "must end with a key",
            ),
            (
                json!([{"op": "splice", "path": ["default", 0], "index": 0}]),
                "is an element",
            ),
            (
                json!([{"op": "splice_text", "path": ["default", 0, "content", 0], "index": 0, "insert": "x"}]),
                "is a text node",
            ),
            (
                json!([{"op": "splice", "path": ["default"], "index": 3, "insert": []}]),
                "past the end",
            ),
            (
                json!([{"op": "splice", "path": ["default"], "index": 0, "insert": [{"type": "p", "bogus": 1}]}]),
                "bad XML node",
            ),
            (
                json!([{"op": "splice", "path": ["default"], "index": 0, "insert": [{"type": "text"}]}]),
                "bad XML node",
            ),
        ] {
            let err = refused(batch);
            assert!(err.to_string().contains(why), "{err} should say {why}");
        }
        // The first op is fine; the second goes through the list it changed.
        let err = refused(json!([
            {"op": "splice", "path": ["default"], "index": 0, "insert": [{"type": "paragraph"}]},
            {"op": "set", "path": ["default", 1, "attrs", "x"], "value": 1},
        ]));
        assert!(
            matches!(
                err,
                OpError::Invalid {
                    index: 1,
                    reason: InvalidOp::ChangedEarlier { .. }
                }
            ),
            "{err}"
        );
        // Root ops and path ops on one root in one batch.
        let err = refused(json!([
            {"op": "push_array", "name": "items", "values": [1]},
            {"op": "splice", "path": ["items"], "index": 0, "insert": [0]},
        ]));
        assert!(
            matches!(
                err,
                OpError::Invalid {
                    index: 1,
                    reason: InvalidOp::MixedStyles { .. }
                }
            ),
            "{err}"
        );
        assert!(updates.lock().expect("lock").is_empty());
    }

    #[test]
    fn depth_counts_the_path() {
        let doc = checklist();
        // The taskItem's paragraph's text is at depth 5 (fragment, list, item, paragraph, text).
        let deep = |levels: usize| {
            let mut node = json!({"type": "text", "text": "x"});
            for _ in 0..levels {
                node = json!({"type": "p", "content": [node]});
            }
            ops(
                json!([{"op": "splice", "path": ["default", 1, "content", 0, "content"], "index": 0, "insert": [node]}]),
            )
        };
        // Below the item (depth 3): 10 elements and a text node reach depth 14.
        apply_ops_limited(&doc, &deep(10), 14).expect("fits");
        let err = apply_ops_limited(&doc, &deep(11), 14).expect_err("too deep");
        assert!(
            matches!(
                err,
                OpError::Invalid {
                    reason: InvalidOp::TooDeep { .. },
                    ..
                }
            ),
            "{err}"
        );
    }
}
