//! [`restore_to`]: the version is copied out first (`copy`), then every root is checked against
//! the document before the first change, then each root is rewritten (`patch` for minimal edits).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use yrs::branch::{Branch, BranchPtr};
use yrs::types::TypeRef;
use yrs::{
    Array, ArrayRef, Doc, Map, MapRef, ReadTxn, Text, TextRef, Transact, TransactionMut, WriteTxn,
};

use super::copy::{Copier, RootCopy};
use super::kinds::{has_strings, kind_of, ptr_of};
use super::patch::{insert_items, restore_array, restore_map, restore_text};
use super::render::write_xml;
use super::text::text_units;
use super::{OpError, ROOT_DEPTH, RootKind};

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
/// [`MAX_DEPTH`](super::MAX_DEPTH); restoring an equal version changes nothing and emits no update.
///
/// The room's chat (`chat`) and the assistant's provenance map (`ai`) are left as they are:
/// restoring a version brings back content, not an older conversation or attribution.
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

/// Roots a restore leaves alone (docs/AI.md).
pub(crate) const KEPT_ROOTS: [&str; 2] = ["chat", "ai"];

/// An owned deep copy of a version's roots, so no transaction on it stays open while writing.
struct VersionCopy {
    roots: Vec<(Arc<str>, RootCopy)>,
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
            if KEPT_ROOTS.contains(&name) {
                continue;
            }
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
            if KEPT_ROOTS.contains(&name) {
                continue;
            }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;
    use yrs::{Out, Xml, XmlElementPrelim, XmlFragment};

    use super::*;
    use crate::docjson::testing::{
        apply, json_of, new_doc, record, replica, root_is_undefined, sample_doc, sample_json, state,
    };
    use crate::docjson::{Op, apply_ops};

    #[test]
    fn restore_leaves_the_chat_and_the_assistants_provenance_alone() {
        let doc = new_doc(1);
        let version = new_doc(2);
        {
            let mut txn = version.transact_mut();
            txn.get_or_insert_text("text").insert(&mut txn, 0, "old");
            let chat = txn.get_or_insert_array("chat");
            chat.push_back(&mut txn, "a message from before");
        }
        {
            let mut txn = doc.transact_mut();
            txn.get_or_insert_text("text").insert(&mut txn, 0, "new");
            let chat = txn.get_or_insert_array("chat");
            chat.push_back(&mut txn, "hello");
            chat.push_back(&mut txn, "world");
            txn.get_or_insert_map("ai").insert(&mut txn, "42", "run");
        }
        restore_to(&doc, &version).expect("restore");
        let got = json_of(&doc);
        assert_eq!(got["text"], json!("old"));
        assert_eq!(got["chat"], json!(["hello", "world"]));
        assert_eq!(got["ai"], json!({"42": "run"}));
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
    fn restore_onto_itself_changes_nothing() {
        let doc = sample_doc(1);
        let updates = record(&doc);
        let same = doc.clone();
        restore_to(&doc, &same).expect("restore");
        assert!(updates.lock().expect("lock").is_empty());
        let mut txn = doc.transact_mut();
        assert_eq!(restore_in(&mut txn, &same), Err(OpError::Busy));
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
}
