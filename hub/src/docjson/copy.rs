//! Reading a version into owned values and prelims, so no transaction on it stays open while
//! the document is written (they may be the same document). Values carry their kind and JSON,
//! so that an equal value already in the document can be left alone.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use yrs::branch::BranchPtr;
use yrs::types::text::{DeltaPrelim, YChange};
use yrs::types::xml::{XmlDeltaPrelim, XmlIn};
use yrs::types::{AsPrelim, Delta, TypeRef};
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, GetString, In, Map, MapPrelim, MapRef, Options, Out,
    ReadTxn, Text, TextPrelim, TextRef, XmlElementPrelim, XmlFragmentPrelim, XmlTextPrelim,
};

use super::kinds::{has_strings, kind_of, ptr_of};
use super::render::{out_to_json, sorted_attributes, value_text, write_xml};
use super::{ROOT_DEPTH, RootKind};

/// One root of the version, as restore will write it.
pub(super) enum RootCopy {
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
    pub(super) fn kind(&self) -> Option<RootKind> {
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
pub(super) enum Piece {
    Str(String),
    Embed(Any),
    Shared(In),
}

/// A map value, with what it takes to tell whether the document already holds it.
pub(super) enum Entry {
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

    pub(super) fn into_item(self) -> Item {
        match self {
            Entry::Subdoc(doc) => Item::Subdoc(doc),
            other => Item::from(other.into_in()),
        }
    }
}

/// Something to insert into a sequence or map.
pub(super) enum Item {
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

pub(super) fn entries_prelim(entries: Vec<(Arc<str>, Entry)>) -> MapPrelim {
    entries.into_iter().map(|(k, e)| (k, e.into_in())).collect()
}

/// Reads a version into owned prelims.
pub(super) struct Copier<'t, T> {
    pub(super) txn: &'t T,
    pub(super) has_subdocs: bool,
}

impl<T: ReadTxn> Copier<'_, T> {
    pub(super) fn root(&mut self, ptr: BranchPtr) -> RootCopy {
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use yrs::types::Attrs;
    use yrs::{ClientID, Transact, WriteTxn, Xml, XmlElementRef, XmlFragment, XmlTextRef};

    use super::*;
    use crate::docjson::restore_to;
    use crate::docjson::testing::{apply, json_any, json_of, new_doc, record, replica};

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
}
