//! The document's roots by type. A replica that learned of a root from an update does not
//! know its type (Yjs sends none): `root_refs` shows it as undefined until someone asks for it
//! as a text or a fragment. These are told apart by their first live content, then asked for
//! by that type, as an editor would.

use yrs::types::xml::XmlFragmentRef;
use yrs::{Doc, Out, ReadTxn, Text, TextRef, Transact, XmlFragment};

/// A root of a known type.
#[derive(Debug, Clone)]
pub enum Root {
    /// A Y.XmlFragment (ProseMirror, Tiptap).
    Xml(XmlFragmentRef),
    /// A Y.Text (CodeMirror, Monaco, plain text).
    Text(TextRef),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Xml,
    Text,
}

/// The XmlFragment and Y.Text roots of `doc`, by name (sorted), except those in `skip`.
/// Roots of other types, and empty roots of unknown type, are left out.
pub fn typed_roots(doc: &Doc, skip: &[&str]) -> Vec<(String, Root)> {
    let kinds: Vec<(String, Kind)> = {
        let txn = doc.transact();
        let mut v: Vec<(String, Kind)> = txn
            .root_refs()
            .filter(|(name, _)| !skip.contains(name))
            .filter_map(|(name, out)| {
                let kind = match out {
                    Out::YXmlFragment(_) => Kind::Xml,
                    Out::YText(_) => Kind::Text,
                    Out::UndefinedRef(branch) => {
                        if XmlFragmentRef::from(branch).children(&txn).next().is_some() {
                            Kind::Xml
                        } else if TextRef::from(branch).len(&txn) > 0 {
                            Kind::Text
                        } else {
                            return None;
                        }
                    }
                    _ => return None,
                };
                Some((name.to_owned(), kind))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    kinds
        .into_iter()
        .map(|(name, kind)| {
            let root = match kind {
                Kind::Xml => Root::Xml(doc.get_or_insert_xml_fragment(name.as_str())),
                Kind::Text => Root::Text(doc.get_or_insert_text(name.as_str())),
            };
            (name, root)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{StateVector, Update, XmlElementPrelim};

    #[test]
    fn roots_learned_from_updates_are_typed_by_their_content() {
        let a = Doc::with_client_id(1);
        let f = a.get_or_insert_xml_fragment("prosemirror");
        let t = a.get_or_insert_text("code");
        let m = a.get_or_insert_map("meta");
        {
            let mut txn = a.transact_mut();
            f.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            t.insert(&mut txn, 0, "x");
            yrs::Map::insert(&m, &mut txn, "k", "v");
        }
        let update = a
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let b = Doc::with_client_id(2);
        b.transact_mut()
            .apply_update(Update::decode_v1(&update).expect("decode"))
            .expect("apply");
        let roots = typed_roots(&b, &["skipped"]);
        let names: Vec<(&str, bool)> = roots
            .iter()
            .map(|(n, r)| (n.as_str(), matches!(r, Root::Xml(_))))
            .collect();
        assert_eq!(names, [("code", false), ("prosemirror", true)]);
    }
}
