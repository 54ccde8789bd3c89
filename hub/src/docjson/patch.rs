//! Minimal edits that make a root hold a version's content: texts and arrays keep their common
//! prefix and suffix and replace the middle, maps set only changed keys (recursing into nested
//! maps), values that are already equal stay.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use yrs::types::Delta;
use yrs::types::text::YChange;
use yrs::{
    Any, Array, ArrayRef, In, Map, MapRef, Number, OffsetKind, Out, ReadTxn, Text, TextRef,
    TransactionMut,
};

use super::copy::{Entry, Item, Piece, entries_prelim};
use super::kinds::{kind_of, ptr_of};
use super::render::out_to_json;
use super::{MAX_DEPTH, RootKind};

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

pub(super) fn restore_text(txn: &mut TransactionMut, text: &TextRef, pieces: &[Piece]) {
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

pub(super) fn restore_map(
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

pub(super) fn restore_array(
    txn: &mut TransactionMut,
    array: &ArrayRef,
    items: Vec<Entry>,
    depth: usize,
) {
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
pub(super) fn insert_items(
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
    use serde_json::json;
    use yrs::{ClientID, Doc, Map, MapPrelim, Options, Text, Transact, WriteTxn};

    use crate::docjson::restore_to;
    use crate::docjson::testing::{
        apply, json_any, json_of, new_doc, record, replica, text_content,
    };

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
}
