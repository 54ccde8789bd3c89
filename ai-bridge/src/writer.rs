//! Writing an answer into a document as it streams, in transactions the caller opens (the
//! hub's server-side peer coalesces tokens into one transaction every ~50 ms).
//!
//! - [`DocWriter`] writes into a Y.XmlFragment (the editor's own structure: the parser's
//!   blocks and marks become Tiptap StarterKit nodes and marks, [`Schema`]) or into a Y.Text
//!   (the answer's text as it comes).
//! - Every position is a `StickyIndex` tied to the run's own last inserted item, never an
//!   index: people typing next to the insertion point shift nothing and lose nothing, and
//!   the answer stays in one piece.
//! - Nothing here deletes or re-inserts what anyone else wrote; the only deletion is of the
//!   range an asker chose to replace (and in suggestion mode not even that: the range keeps
//!   its text, marked as the suggestion's deletion, until someone accepts).
//! - In suggestion mode, every inline piece carries the suggestion mark of its run, and every
//!   block the attribute of the same name: an editor shows them as a suggestion until
//!   [`accept`] removes the mark or [`crate::revert`] removes the run's content.

use std::collections::HashMap;
use std::sync::Arc;

use yrs::types::Attrs;
use yrs::types::text::YChange;
use yrs::types::xml::{XmlElementPrelim, XmlElementRef, XmlFragmentRef, XmlOut, XmlTextPrelim};
use yrs::{
    Any, Assoc, BranchID, IndexedSequence, Offset, OffsetKind, Out, StickyIndex, Text, TextRef,
    TransactionMut, Xml, XmlFragment, XmlTextRef,
};

use crate::markdown::{Block, Event, Mark, Markdown};

/// Node and mark names, after Tiptap's StarterKit (ProseMirror schema names). An editor with
/// another schema names its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Schema {
    /// `paragraph`.
    pub paragraph: String,
    /// `heading` (attribute `level`, a number).
    pub heading: String,
    /// `bulletList`.
    pub bullet_list: String,
    /// `orderedList` (attribute `start`, a number).
    pub ordered_list: String,
    /// `listItem`.
    pub list_item: String,
    /// `codeBlock` (attribute `language`).
    pub code_block: String,
    /// `blockquote`.
    pub blockquote: String,
    /// `horizontalRule`.
    pub horizontal_rule: String,
    /// `bold`.
    pub bold: String,
    /// `italic`.
    pub italic: String,
    /// `code`.
    pub code: String,
    /// `link` (attribute `href`).
    pub link: String,
    /// The suggestion mark and block attribute (`aiSuggestion`, attribute `run`). An editor
    /// that shows suggestions declares this mark; ProseMirror ignores the block attribute.
    pub suggestion: String,
}

impl Default for Schema {
    fn default() -> Self {
        Schema {
            paragraph: "paragraph".into(),
            heading: "heading".into(),
            bullet_list: "bulletList".into(),
            ordered_list: "orderedList".into(),
            list_item: "listItem".into(),
            code_block: "codeBlock".into(),
            blockquote: "blockquote".into(),
            horizontal_rule: "horizontalRule".into(),
            bold: "bold".into(),
            italic: "italic".into(),
            code: "code".into(),
            link: "link".into(),
            suggestion: "aiSuggestion".into(),
        }
    }
}

/// Where the answer goes in the document.
#[derive(Debug, Clone)]
pub enum Place {
    /// After the block holding this position (into an XmlFragment), or at it (into a Text).
    At(StickyIndex),
    /// Replace the text between two positions of one text (deleted as the run starts).
    Replace(StickyIndex, StickyIndex),
    /// At the end of the document.
    End,
}

/// Why a writer could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The position does not resolve in this document (deleted, or from another document).
    #[error("the position is not in this document")]
    BadPosition,
    /// A range's ends are in different texts, or in the wrong order.
    #[error("the range must lie within one text")]
    BadRange,
}

/// A block being written: its text and where the run's text ends in it.
#[derive(Debug)]
struct OpenBlock {
    text: XmlTextRef,
    /// After the run's last character in the block (`Assoc::Before`: it sticks to that
    /// character, so text typed right after it stays after the answer).
    end: StickyIndex,
    code: bool,
}

#[derive(Debug)]
enum Kind {
    Xml {
        fragment: XmlFragmentRef,
        /// After the run's last top-level block.
        after: StickyIndex,
        /// The list or quote the last block went into, to add the next item to it.
        group: Option<(GroupKind, XmlElementRef)>,
        open: Option<OpenBlock>,
        // Boxed: the parser is large, and the text writer needs none.
        parser: Box<Markdown>,
    },
    Text {
        text: TextRef,
        end: StickyIndex,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupKind {
    Bullet,
    Ordered,
    Quote,
}

/// Writes one run's answer into a document.
#[derive(Debug)]
pub struct DocWriter {
    kind: Kind,
    schema: Arc<Schema>,
    unit: OffsetKind,
    anchors: HashMap<u32, StickyIndex>,
    /// `Some(run)` in suggestion mode.
    suggest: Option<Arc<str>>,
    written: usize,
}

fn units(unit: OffsetKind, s: &str) -> u32 {
    let n = match unit {
        OffsetKind::Bytes => s.len(),
        OffsetKind::Utf16 => s.encode_utf16().count(),
    };
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The id of a shared type.
pub(crate) fn branch_id<B: AsRef<yrs::branch::Branch>>(b: &B) -> BranchID {
    b.as_ref().id()
}

fn resolve(txn: &TransactionMut, at: &StickyIndex) -> Option<Offset> {
    at.get_offset(txn)
}

impl DocWriter {
    /// A writer into the XmlFragment `fragment` at `place`. `unit` is the document's offset
    /// kind. `suggest` names the run in suggestion mode.
    pub fn xml(
        txn: &mut TransactionMut,
        fragment: XmlFragmentRef,
        place: &Place,
        schema: Arc<Schema>,
        unit: OffsetKind,
        suggest: Option<Arc<str>>,
    ) -> Result<Self, WriteError> {
        let index = match place {
            Place::End => fragment.len(txn),
            Place::At(pos) => top_level_after(txn, &fragment, pos)?,
            Place::Replace(a, b) => {
                let index = top_level_after(txn, &fragment, a)?;
                match &suggest {
                    None => {
                        delete_range(txn, a, b, unit)?;
                    }
                    Some(run) => {
                        mark_range(txn, a, b, &schema, run)?;
                    }
                }
                index
            }
        };
        let after = fragment
            .sticky_index(txn, index, Assoc::Before)
            .ok_or(WriteError::BadPosition)?;
        Ok(DocWriter {
            kind: Kind::Xml {
                fragment,
                after,
                group: None,
                open: None,
                parser: Box::new(Markdown::new()),
            },
            schema,
            unit,
            anchors: HashMap::new(),
            suggest,
            written: 0,
        })
    }

    /// A writer into the Y.Text `text` (the answer's text as it comes, markdown included: a
    /// text editor shows it as written).
    pub fn text(
        txn: &mut TransactionMut,
        text: TextRef,
        place: &Place,
        unit: OffsetKind,
        suggest: Option<Arc<str>>,
    ) -> Result<Self, WriteError> {
        let index = match place {
            Place::End => text.len(txn),
            Place::At(pos) => {
                let off = resolve(txn, pos).ok_or(WriteError::BadPosition)?;
                if off.branch.id() != branch_id(&text) {
                    return Err(WriteError::BadPosition);
                }
                off.index
            }
            Place::Replace(a, b) => match &suggest {
                None => delete_range(txn, a, b, unit)?,
                // The suggestion follows the text it would replace.
                Some(run) => mark_range(txn, a, b, &Schema::default(), run)?,
            },
        };
        let end = text
            .sticky_index(txn, index, Assoc::Before)
            .ok_or(WriteError::BadPosition)?;
        Ok(DocWriter {
            kind: Kind::Text { text, end },
            schema: Arc::new(Schema::default()),
            unit,
            anchors: HashMap::new(),
            suggest,
            written: 0,
        })
    }

    /// Characters of the answer written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Writes the next piece of the answer.
    pub fn push(&mut self, txn: &mut TransactionMut, piece: &str) {
        self.written += piece.chars().count();
        match &mut self.kind {
            Kind::Text { text, end } => {
                let Some(off) = resolve(txn, end) else { return };
                let attrs = self
                    .suggest
                    .as_ref()
                    .map_or_else(Attrs::new, |run| suggestion(&self.schema, run));
                let index = insert_at(txn, text, off.index, piece, attrs) + units(self.unit, piece);
                if let Some(next) = text.sticky_index(txn, index, Assoc::Before) {
                    *end = next;
                }
            }
            Kind::Xml { parser, .. } => {
                let events = parser.push(piece);
                self.apply(txn, events);
            }
        }
    }

    /// The answer ended (or was cut): closes what is open, puts back unclosed delimiters.
    pub fn finish(&mut self, txn: &mut TransactionMut) {
        if let Kind::Xml { parser, .. } = &mut self.kind {
            let events = parser.finish();
            self.apply(txn, events);
        }
    }

    /// Where the run's text ends now (for the assistant's cursor in awareness).
    pub fn cursor(&self) -> Option<&StickyIndex> {
        match &self.kind {
            Kind::Text { end, .. } => Some(end),
            Kind::Xml { open, after, .. } => Some(open.as_ref().map_or(after, |o| &o.end)),
        }
    }

    fn apply(&mut self, txn: &mut TransactionMut, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Open(block) => self.open(txn, block),
                Event::Text(t) => self.insert(txn, &t),
                Event::Anchor(id) => {
                    if let Some(end) = self.open_block().map(|o| o.end.clone()) {
                        self.anchors.insert(id, end);
                    }
                }
                Event::Format(id, mark) => self.format(txn, id, &mark),
                Event::Unanchor(id, literal) => {
                    let Some(at) = self.anchors.remove(&id) else {
                        continue;
                    };
                    if literal.is_empty() {
                        continue;
                    }
                    let Some(open) = self.open_block() else {
                        continue;
                    };
                    let text = open.text.clone();
                    if let Some(off) = resolve(txn, &at) {
                        let attrs = self.inline_attrs();
                        insert_at(txn, &text, off.index, &literal, attrs);
                    }
                }
                Event::Close => {
                    if let Kind::Xml { open, .. } = &mut self.kind {
                        *open = None;
                    }
                    self.anchors.clear();
                }
            }
        }
    }

    fn open_block(&self) -> Option<&OpenBlock> {
        match &self.kind {
            Kind::Xml { open, .. } => open.as_ref(),
            Kind::Text { .. } => None,
        }
    }

    fn inline_attrs(&self) -> Attrs {
        match &self.suggest {
            Some(run) => suggestion(&self.schema, run),
            None => Attrs::new(),
        }
    }

    fn insert(&mut self, txn: &mut TransactionMut, piece: &str) {
        let unit = self.unit;
        let attrs = self.inline_attrs();
        let Kind::Xml {
            open: Some(open), ..
        } = &mut self.kind
        else {
            return;
        };
        let Some(off) = resolve(txn, &open.end) else {
            return;
        };
        let index = insert_at(txn, &open.text, off.index, piece, attrs) + units(unit, piece);
        if let Some(next) = open.text.sticky_index(txn, index, Assoc::Before) {
            open.end = next;
        }
    }

    fn format(&mut self, txn: &mut TransactionMut, id: u32, mark: &Mark) {
        let Some(start) = self.anchors.remove(&id) else {
            return;
        };
        let schema = self.schema.clone();
        let Some(open) = self.open_block() else {
            return;
        };
        if open.code {
            return;
        }
        let (Some(a), Some(b)) = (resolve(txn, &start), resolve(txn, &open.end)) else {
            return;
        };
        if b.index <= a.index || b.index > open.text.len(txn) {
            return;
        }
        let (name, value) = match mark {
            Mark::Bold => (&schema.bold, Any::Map(Arc::default())),
            Mark::Italic => (&schema.italic, Any::Map(Arc::default())),
            Mark::Code => (&schema.code, Any::Map(Arc::default())),
            Mark::Link(href) => {
                let attrs = HashMap::from([("href".to_owned(), Any::from(href.as_str()))]);
                (&schema.link, Any::Map(Arc::new(attrs)))
            }
        };
        let attrs = Attrs::from([(Arc::from(name.as_str()), value)]);
        let text = open.text.clone();
        text.format(txn, a.index, b.index - a.index, attrs);
    }

    fn open(&mut self, txn: &mut TransactionMut, block: Block) {
        let schema = self.schema.clone();
        let suggest = self.suggest.clone();
        let Kind::Xml {
            fragment,
            after,
            group,
            open,
            ..
        } = &mut self.kind
        else {
            return;
        };
        let Some(off) = resolve(txn, after) else {
            return;
        };
        let mut index = off.index;
        let wanted = match &block {
            Block::BulletItem => Some(GroupKind::Bullet),
            Block::OrderedItem(_) => Some(GroupKind::Ordered),
            Block::Quote => Some(GroupKind::Quote),
            _ => None,
        };
        let mark = |el: &XmlElementRef, txn: &mut TransactionMut| {
            if let Some(run) = &suggest {
                el.insert_attribute(txn, schema.suggestion.as_str(), run.to_string());
            }
        };
        // The element the block's text goes into.
        let holder: XmlElementRef = match (wanted, group.as_ref()) {
            (Some(kind), Some((current, list))) if *current == kind => {
                append_into(txn, list, kind, &schema, &mark)
            }
            (Some(kind), _) => {
                let name = match kind {
                    GroupKind::Bullet => &schema.bullet_list,
                    GroupKind::Ordered => &schema.ordered_list,
                    GroupKind::Quote => &schema.blockquote,
                };
                let list = fragment.insert(txn, index, XmlElementPrelim::empty(name.as_str()));
                if let Block::OrderedItem(n) = block {
                    list.insert_attribute(txn, "start", Any::from(n as f64));
                }
                mark(&list, txn);
                index += 1;
                let holder = append_into(txn, &list, kind, &schema, &mark);
                *group = Some((kind, list));
                holder
            }
            (None, _) => {
                *group = None;
                let name = match &block {
                    Block::Heading(_) => &schema.heading,
                    Block::CodeBlock(_) => &schema.code_block,
                    Block::Rule => &schema.horizontal_rule,
                    _ => &schema.paragraph,
                };
                let el = fragment.insert(txn, index, XmlElementPrelim::empty(name.as_str()));
                match &block {
                    Block::Heading(level) => {
                        el.insert_attribute(txn, "level", Any::from(f64::from(*level)));
                    }
                    Block::CodeBlock(lang) => {
                        let lang = lang.as_deref().map_or(Any::Null, Any::from);
                        el.insert_attribute(txn, "language", lang);
                    }
                    _ => {}
                }
                mark(&el, txn);
                index += 1;
                el
            }
        };
        if let Some(next) = fragment.sticky_index(txn, index, Assoc::Before) {
            *after = next;
        }
        if block == Block::Rule {
            *open = None;
            return;
        }
        let text = holder.push_back(txn, XmlTextPrelim::new(""));
        let Some(end) = text.sticky_index(txn, 0, Assoc::Before) else {
            return;
        };
        *open = Some(OpenBlock {
            text,
            end,
            code: matches!(block, Block::CodeBlock(_)),
        });
    }
}

/// Inserts `piece` at `index` (or at the end, if the text shrank under it: yrs panics on an
/// index past the end) with exactly `attrs`: the formatting of the text to the left is not
/// inherited (a closed bold mark must not run on). Returns where it went.
fn insert_at<T: Text>(
    txn: &mut TransactionMut,
    text: &T,
    index: u32,
    piece: &str,
    attrs: Attrs,
) -> u32 {
    let index = index.min(text.len(txn));
    text.insert_with_attributes(txn, index, piece, attrs);
    index
}

/// Adds an item to a list (`listItem > paragraph`) or a paragraph to a quote; returns the
/// paragraph.
fn append_into(
    txn: &mut TransactionMut,
    list: &XmlElementRef,
    kind: GroupKind,
    schema: &Schema,
    mark: &impl Fn(&XmlElementRef, &mut TransactionMut),
) -> XmlElementRef {
    let parent = if kind == GroupKind::Quote {
        list.clone()
    } else {
        let item = list.push_back(txn, XmlElementPrelim::empty(schema.list_item.as_str()));
        mark(&item, txn);
        item
    };
    let p = parent.push_back(txn, XmlElementPrelim::empty(schema.paragraph.as_str()));
    mark(&p, txn);
    p
}

fn suggestion(schema: &Schema, run: &str) -> Attrs {
    let value = HashMap::from([("run".to_owned(), Any::from(run))]);
    Attrs::from([(
        Arc::from(schema.suggestion.as_str()),
        Any::Map(Arc::new(value)),
    )])
}

/// The index in `fragment` just after the top-level block holding `pos`.
fn top_level_after(
    txn: &TransactionMut,
    fragment: &XmlFragmentRef,
    pos: &StickyIndex,
) -> Result<u32, WriteError> {
    let off = resolve(txn, pos).ok_or(WriteError::BadPosition)?;
    let root = branch_id(fragment);
    if off.branch.id() == root {
        return Ok(off.index);
    }
    // Climb from the position's type to the child of the fragment that holds it.
    let mut node = XmlOut::try_from(off.branch).map_err(|_| WriteError::BadPosition)?;
    for _ in 0..1024 {
        let parent = match &node {
            XmlOut::Element(e) => e.parent(),
            XmlOut::Text(t) => t.parent(),
            XmlOut::Fragment(_) => None,
        }
        .ok_or(WriteError::BadPosition)?;
        let parent_id = match &parent {
            XmlOut::Element(e) => branch_id(e),
            XmlOut::Text(t) => branch_id(t),
            XmlOut::Fragment(f) => branch_id(f),
        };
        if parent_id == root {
            let id = match &node {
                XmlOut::Element(e) => branch_id(e),
                XmlOut::Text(t) => branch_id(t),
                XmlOut::Fragment(f) => branch_id(f),
            };
            for (i, child) in fragment.children(txn).enumerate() {
                let child_id = match &child {
                    XmlOut::Element(e) => branch_id(e),
                    XmlOut::Text(t) => branch_id(t),
                    XmlOut::Fragment(f) => branch_id(f),
                };
                if child_id == id {
                    return u32::try_from(i + 1).map_err(|_| WriteError::BadPosition);
                }
            }
            return Err(WriteError::BadPosition);
        }
        node = parent;
    }
    Err(WriteError::BadPosition)
}

/// The text between two positions, as (its text, start, length): both in one Y.Text or
/// XmlText (they keep their characters the same way), in order.
fn text_range(
    txn: &TransactionMut,
    a: &StickyIndex,
    b: &StickyIndex,
) -> Result<(TextRef, u32, u32), WriteError> {
    let a = resolve(txn, a).ok_or(WriteError::BadPosition)?;
    let b = resolve(txn, b).ok_or(WriteError::BadPosition)?;
    if a.branch.id() != b.branch.id() || b.index < a.index {
        return Err(WriteError::BadRange);
    }
    match a.branch.type_ref() {
        yrs::types::TypeRef::Text | yrs::types::TypeRef::XmlText => {
            Ok((TextRef::from(a.branch), a.index, b.index - a.index))
        }
        _ => Err(WriteError::BadRange),
    }
}

/// Deletes the text between two positions of one text; returns where it was.
fn delete_range(
    txn: &mut TransactionMut,
    a: &StickyIndex,
    b: &StickyIndex,
    _unit: OffsetKind,
) -> Result<u32, WriteError> {
    let (text, at, len) = text_range(txn, a, b)?;
    if len > 0 {
        text.remove_range(txn, at, len);
    }
    Ok(at)
}

/// Marks the text between two positions of one text as run `run`'s suggested deletion;
/// returns the index just after it.
fn mark_range(
    txn: &mut TransactionMut,
    a: &StickyIndex,
    b: &StickyIndex,
    schema: &Schema,
    run: &str,
) -> Result<u32, WriteError> {
    let (text, at, len) = text_range(txn, a, b)?;
    if len > 0 {
        let value = HashMap::from([
            ("run".to_owned(), Any::from(run)),
            ("kind".to_owned(), Any::from(DELETION)),
        ]);
        let attrs = Attrs::from([(
            Arc::from(schema.suggestion.as_str()),
            Any::Map(Arc::new(value)),
        )]);
        text.format(txn, at, len, attrs);
    }
    Ok(at + len)
}

/// The `kind` of a suggestion mark on text the suggestion would delete.
pub const DELETION: &str = "deletion";

/// Accepts run `run`'s suggestion: removes its mark from every text and its attribute from
/// every block under `fragment`. Returns how many pieces changed.
pub fn accept(
    txn: &mut TransactionMut,
    fragment: &XmlFragmentRef,
    schema: &Schema,
    run: &str,
) -> usize {
    let mut changed = 0;
    let nodes: Vec<XmlOut> = fragment.successors(txn).collect();
    for node in nodes {
        match node {
            XmlOut::Element(el) => {
                if let Some(Out::Any(Any::String(r))) =
                    el.get_attribute(txn, schema.suggestion.as_str())
                    && &*r == run
                {
                    el.remove_attribute(txn, &schema.suggestion);
                    changed += 1;
                }
            }
            XmlOut::Text(text) => changed += unmark_text(txn, &text, schema, run),
            XmlOut::Fragment(_) => {}
        }
    }
    changed
}

/// Accepts run `run`'s suggestion in a text: removes its mark from what it wrote, and deletes
/// what it suggested deleting. Returns the ranges changed.
pub fn unmark_text<T: Text>(
    txn: &mut TransactionMut,
    text: &T,
    schema: &Schema,
    run: &str,
) -> usize {
    settle_text(txn, text, schema, run, true)
}

/// Rejects run `run`'s suggested deletions in a text: the text stays, unmarked (the run's own
/// content goes by revert). Returns the ranges changed.
pub fn keep_text<T: Text>(txn: &mut TransactionMut, text: &T, schema: &Schema, run: &str) -> usize {
    settle_text(txn, text, schema, run, false)
}

/// Rejects run `run`'s suggested deletions under `fragment` (see [`keep_text`]).
pub fn keep(
    txn: &mut TransactionMut,
    fragment: &XmlFragmentRef,
    schema: &Schema,
    run: &str,
) -> usize {
    let nodes: Vec<XmlOut> = fragment.successors(txn).collect();
    nodes
        .into_iter()
        .map(|node| match node {
            XmlOut::Text(text) => keep_text(txn, &text, schema, run),
            _ => 0,
        })
        .sum()
}

fn settle_text<T: Text>(
    txn: &mut TransactionMut,
    text: &T,
    schema: &Schema,
    run: &str,
    accepted: bool,
) -> usize {
    let key: &str = schema.suggestion.as_str();
    // (index, length, whether it is a suggested deletion)
    let mut ranges: Vec<(u32, u32, bool)> = Vec::new();
    let mut index = 0u32;
    for diff in text.diff(txn, YChange::identity) {
        let len = match &diff.insert {
            Out::Any(Any::String(s)) => units(txn.doc().offset_kind(), s),
            _ => 1,
        };
        let ours = diff
            .attributes
            .as_ref()
            .and_then(|a| a.get(key))
            .and_then(|v| match v {
                Any::Map(m) if m.get("run").is_some_and(|r| r == &Any::from(run)) => {
                    Some(m.get("kind").is_some_and(|k| k == &Any::from(DELETION)))
                }
                _ => None,
            });
        if let Some(deletion) = ours
            && (accepted || deletion)
        {
            ranges.push((index, len, deletion));
        }
        index += len;
    }
    // From the end, so that a deletion moves nothing still to do.
    for (at, len, deletion) in ranges.iter().rev() {
        if *deletion && accepted {
            text.remove_range(txn, *at, *len);
        } else {
            let attrs = Attrs::from([(Arc::from(key), Any::Null)]);
            text.format(txn, *at, *len, attrs);
        }
    }
    ranges.len()
}
