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
//! "😀" is 2, an embed is 1. They stay UTF-16 whatever the document's
//! [`OffsetKind`](yrs::OffsetKind) (the conversion is done here), and an index inside a surrogate
//! pair is refused.
//!
//! Content from clients is untrusted: a branch typed as an array may hold text chunks, a text
//! may hold array values. yrs' own array iterator never terminates over some text chunks, so no
//! sequence is read as an array before it is known to hold no text, and edits refuse roots that
//! mix both ([`InvalidOp::MixedContent`]). Nesting deeper than [`MAX_DEPTH`] is cut off (read as
//! `null`) rather than recursed into.
//!
//! The parts: `kinds` says what a branch holds (declared or inferred); `render` turns content
//! into JSON (and XML strings); `ops` applies a batch of [`Op`]s that `plan` has checked first,
//! with `text` converting UTF-16 positions to the document's own; `restore` checks every root of
//! a version, `copy` reads the version into owned prelims, and `patch` edits each root minimally.

use std::fmt;

mod copy;
pub mod delta;
mod kinds;
mod ops;
mod patch;
mod path;
mod plain;
mod plan;
pub mod rebase;
mod render;
mod restore;
#[cfg(test)]
mod testing;
mod text;
mod view;

pub use ops::{Op, apply_ops, apply_ops_in, apply_ops_limited};
pub use path::{Seg, ShowPath};
pub use plain::{Line, plain_lines};
pub use render::doc_to_json;
pub use restore::{restore_in, restore_to};
pub use view::doc_to_view;

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

/// Why an edit or a restore was refused. Nothing was changed when one is returned.
#[expect(
    missing_docs,
    reason = "each field is named by its variant's documentation and error message"
)]
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
#[expect(
    missing_docs,
    reason = "each field is named by its variant's documentation and error message"
)]
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
    /// A value nested deeper than [`MAX_DEPTH`] (or the node's limit), counted from the root.
    #[error("the value nests deeper than {max} levels")]
    TooDeep { max: usize },
    /// A path that does not lead where the op needs it to.
    #[error("path {path} {reason}")]
    BadPath { path: String, reason: String },
    /// A path through something an earlier op of the same batch changed.
    #[error(
        "path {path} goes through content an earlier op of this batch changed; send it in another batch"
    )]
    ChangedEarlier { path: String },
    /// An XML node that is not `{"type", "attrs", "content"}` or `{"type": "text", "text"}`.
    #[error("bad XML node: {reason}")]
    BadNode { reason: String },
    /// A root named both by root ops (`name`) and path ops (`path`) in one batch.
    #[error("root {name:?} is edited by both root ops and path ops in one batch")]
    MixedStyles { name: String },
}
