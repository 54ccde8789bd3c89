//! A document as plain text, for search: the text of every Y.Text root and of the text nodes
//! of every XML root, one line per block (paragraph, heading, list item, code line), roots in
//! name order. Tag and attribute names, marks and other roots (maps, arrays, the chat) are
//! left out. Each line carries a Yjs relative position of its start, so a hit can be opened
//! where it is even after later edits.
//!
//! Like the JSON views it reads without typing undefined roots, never reads a sequence holding
//! text as an array (yrs' array iterator may not end there), and stops at [`MAX_DEPTH`].

use base64::Engine as _;
use yrs::branch::BranchPtr;
use yrs::types::TypeRef;
use yrs::types::text::YChange;
use yrs::updates::encoder::Encode;
use yrs::{Any, Array, ArrayRef, Assoc, Doc, GetString, OffsetKind, Out, ReadTxn, StickyIndex};
use yrs::{Text, TextRef, Transact};

use super::kinds::{kind_of, ptr_of};
use super::{MAX_DEPTH, RootKind};

/// One line of a document's plain text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Its text (control characters other than tabs read as spaces; never empty).
    pub text: String,
    /// The root it is in.
    pub field: String,
    /// Base64 of a Yjs relative position (`Y.encodeRelativePosition`) at its start.
    pub position: Option<String>,
}

/// Roots that are never indexed: the assistant's provenance map.
const SKIP: [&str; 1] = [crate::ai::PROVENANCE];

/// The document's lines, at most `max_chars` characters in all (the rest is left out).
pub fn plain_lines(doc: &Doc, max_chars: usize) -> Vec<Line> {
    let txn = doc.transact();
    let offset_kind = doc.offset_kind();
    let mut roots: Vec<(String, BranchPtr)> = txn
        .root_refs()
        .filter(|(name, _)| !SKIP.contains(name))
        .filter_map(|(name, out)| ptr_of(&out).map(|p| (name.to_owned(), p)))
        .collect();
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Lines {
        lines: Vec::new(),
        chars: 0,
        max_chars,
        offset_kind,
    };
    for (name, ptr) in roots {
        match kind_of(&txn, ptr) {
            RootKind::Text => out.text(&txn, &name, ptr),
            RootKind::XmlFragment => out.children(&txn, &name, ptr, MAX_DEPTH - 1),
            _ => {}
        }
    }
    out.lines
}

struct Lines {
    lines: Vec<Line>,
    chars: usize,
    max_chars: usize,
    offset_kind: OffsetKind,
}

impl Lines {
    fn full(&self) -> bool {
        self.chars >= self.max_chars
    }

    /// The lines of a text branch (a Y.Text root or an XML text node): its string content
    /// split at line breaks, embeds left out.
    fn text<T: ReadTxn>(&mut self, txn: &T, field: &str, ptr: BranchPtr) {
        let mut buf = String::new();
        // Position in the branch's own units where `buf` starts.
        let mut buf_start: u32 = 0;
        let mut units: u32 = 0;
        for chunk in TextRef::from(ptr).diff(txn, YChange::identity) {
            if self.full() {
                return;
            }
            match chunk.insert {
                Out::Any(Any::String(s)) => {
                    for (i, part) in s.split('\n').enumerate() {
                        if i > 0 {
                            self.push(txn, field, ptr, buf_start, &buf);
                            buf.clear();
                            units = units.saturating_add(1);
                            buf_start = units;
                        }
                        buf.push_str(part);
                        units = units.saturating_add(self.width(part));
                    }
                }
                _ => units = units.saturating_add(1),
            }
        }
        self.push(txn, field, ptr, buf_start, &buf);
    }

    fn width(&self, s: &str) -> u32 {
        let n = match self.offset_kind {
            OffsetKind::Bytes => s.len(),
            OffsetKind::Utf16 => s.encode_utf16().count(),
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn push<T: ReadTxn>(&mut self, txn: &T, field: &str, ptr: BranchPtr, index: u32, text: &str) {
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
            .collect();
        let trimmed = clean.trim_end();
        if trimmed.trim_start().is_empty() || self.full() {
            return;
        }
        let room = self.max_chars - self.chars;
        let text: String = trimmed.chars().take(room).collect();
        self.chars += text.chars().count() + 1;
        let position = StickyIndex::at(txn, ptr, index, Assoc::After)
            .map(|p| base64::engine::general_purpose::STANDARD.encode(p.encode_v1()));
        self.lines.push(Line {
            text,
            field: field.to_owned(),
            position,
        });
    }

    /// The children of an XML element or fragment: elements are blocks, text nodes are text.
    fn children<T: ReadTxn>(&mut self, txn: &T, field: &str, ptr: BranchPtr, depth: usize) {
        let Some(depth) = depth.checked_sub(1) else {
            return;
        };
        // A sequence holding strings is text, whatever its declared type: never iterate it as
        // an array.
        if !TextRef::from(ptr).get_string(txn).is_empty() {
            self.text(txn, field, ptr);
            return;
        }
        for child in ArrayRef::from(ptr).iter(txn) {
            if self.full() {
                return;
            }
            let Some(child) = ptr_of(&child) else {
                continue;
            };
            match child.type_ref() {
                TypeRef::XmlText => self.text(txn, field, child),
                TypeRef::XmlElement(_) | TypeRef::XmlFragment => {
                    self.children(txn, field, child, depth);
                }
                TypeRef::Undefined
                    if matches!(
                        kind_of(txn, child),
                        RootKind::XmlElement | RootKind::XmlFragment | RootKind::XmlText
                    ) =>
                {
                    self.children(txn, field, child, depth);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::types::xml::Xml;
    use yrs::{
        Map, WriteTxn, XmlElementPrelim, XmlFragment, XmlTextPrelim, updates::decoder::Decode,
    };

    fn tiptap_doc() -> Doc {
        let doc = Doc::with_client_id(1);
        let f = doc.get_or_insert_xml_fragment("default");
        let mut txn = doc.transact_mut();
        let h = f.push_back(&mut txn, XmlElementPrelim::empty("heading"));
        h.insert_attribute(&mut txn, "level", "1");
        h.push_back(&mut txn, XmlTextPrelim::new("Pricing"));
        let p = f.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        let t = p.push_back(&mut txn, XmlTextPrelim::new("We decided on ten euros."));
        t.format(&mut txn, 3, 7, [("bold".into(), Any::Bool(true))].into());
        f.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        let list = f.push_back(&mut txn, XmlElementPrelim::empty("taskList"));
        let item = list.push_back(&mut txn, XmlElementPrelim::empty("taskItem"));
        let para = item.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        para.push_back(&mut txn, XmlTextPrelim::new("ship\u{2}it"));
        let code = txn.get_or_insert_text("code");
        code.insert(&mut txn, 0, "fn a() {}\n\nfn b() {}");
        let meta = txn.get_or_insert_map("meta");
        meta.insert(&mut txn, "secret", "not indexed");
        drop(txn);
        doc
    }

    #[test]
    fn blocks_become_lines_without_tags_or_attributes() {
        let doc = tiptap_doc();
        let lines = plain_lines(&doc, 10_000);
        let texts: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.field.as_str(), l.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                ("code", "fn a() {}"),
                ("code", "fn b() {}"),
                ("default", "Pricing"),
                ("default", "We decided on ten euros."),
                ("default", "ship it"),
            ]
        );
        assert!(lines.iter().all(|l| l.position.is_some()));
    }

    #[test]
    fn a_replica_reads_the_same_without_typing_its_roots_and_positions_resolve() {
        let doc = tiptap_doc();
        let update = doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        let replica = Doc::with_client_id(2);
        replica
            .transact_mut()
            .apply_update(yrs::Update::decode_v1(&update).expect("decode"))
            .expect("apply");
        let lines = plain_lines(&replica, 10_000);
        assert_eq!(lines, plain_lines(&doc, 10_000));
        // The position of "We decided..." resolves, in the original, to the start of that
        // paragraph's text.
        let line = &lines[3];
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(line.position.as_deref().expect("position"))
            .expect("base64");
        let pos = StickyIndex::decode_v1(&bytes).expect("decode");
        let txn = doc.transact();
        let offset = pos.get_offset(&txn).expect("resolves");
        assert_eq!(offset.index, 0);
    }

    #[test]
    fn the_text_is_bounded() {
        let doc = tiptap_doc();
        let lines = plain_lines(&doc, 12);
        let total: usize = lines.iter().map(|l| l.text.chars().count()).sum();
        assert!(total <= 12, "{lines:?}");
        assert_eq!(lines[0].text, "fn a() {}");
    }
}
