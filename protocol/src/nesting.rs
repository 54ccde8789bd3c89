//! How deeply a Yjs v1 update nests, found by an iterative scan before any recursive decoder
//! sees its bytes.
//!
//! yrs decodes, encodes, drops and deletes nested values and shared types by recursion with no
//! limit: an `Any` array nested ~6,500 deep (13 KB) or a chain of Y.Maps 50,000 deep overflows
//! a thread's stack, and a stack overflow aborts the whole process (`catch_unwind` cannot catch
//! it). [`scan_update`] walks the same bytes with loops and explicit counters and refuses an
//! update whose depth would pass the limit.
//!
//! Depth counts `Any` containers, shared types and XML elements together: a root type is at
//! depth 1, a type inside it at 2, and a value stored in a type at depth `d` adds its own
//! container nesting (a scalar adds nothing, `[1]` adds 1, `[[1]]` adds 2).
//!
//! Within one update every item's parent is resolved from the update itself where it can be
//! (an explicit parent, or the parent of its left or right origin). Where it cannot (the parent
//! is already in the document), the scan returns [`Bound`]s: "the depth of this anchor in the
//! document plus `extra` must stay within the limit". The hub checks those against the
//! document it holds (it keeps the depth of every nested type it accepted) before yrs applies
//! the update. Where yrs would take either origin's parent, both are bounded.
//!
//! The scan mirrors yrs 0.28's v1 decoder field by field (including its varint wrapping and its
//! reading of one more JSON string than the count says), so that what it accepts decodes the
//! same way in yrs. It is stricter in one way only: declared counts larger than the bytes that
//! could hold them are refused.

use std::collections::HashMap;

/// The default of `--max-nesting-depth`.
pub const DEFAULT_MAX_NESTING_DEPTH: u32 = 64;

/// At most this many distinct anchors bound one item's parent. Legitimate edits have one or
/// two (the left and right neighbours' parent); more can only be crafted, and without a cap a
/// crafted chain would make the scan quadratic.
const MAX_TERMS: usize = 8;

/// An item's id: the client that made it and its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId {
    /// Client id.
    pub client: u64,
    /// Clock.
    pub clock: u32,
}

/// Something already in the document whose depth bounds part of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Anchor {
    /// The shared type created by this item (an item holding a type).
    Type(ItemId),
    /// The type that holds the item containing this id.
    ParentOf(ItemId),
}

/// One term of an upper bound on a depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// Known from the update alone.
    Local(u32),
    /// The anchor's depth in the document, plus this much.
    Anchored(Anchor, u32),
}

/// "The depth of `anchor` in the document, plus `extra`, must not exceed the limit."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// What the document must tell.
    pub anchor: Anchor,
    /// Depth this update adds below it.
    pub extra: u32,
}

/// What an update needs from the document, and the shared types it creates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nesting {
    /// Bounds to check against the document (empty for plain text edits).
    pub bounds: Vec<Bound>,
    /// Every shared type the update creates, with an upper bound of its depth: the largest of
    /// its terms once anchored terms are resolved.
    pub types: Vec<(ItemId, Vec<Term>)>,
    /// Where its content sits in its clients' clocks (not part of [`Nesting::is_empty`]).
    pub clocks: Clocks,
}

impl Nesting {
    /// Nothing to check or record (the common case: text typed into an existing type).
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty() && self.types.is_empty()
    }
}

/// Where an update's content (items and GC ranges, not skips) sits in its clients' clocks, in
/// the one shape that needs no second pass: enough to tell whether it would start past a hole
/// in a document's clocks (see [`holes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clocks {
    /// No content at all (a delete set, or skips only).
    #[default]
    Nothing,
    /// One client's content, without a skip inside it: clocks `from..to`.
    One {
        /// The client.
        client: u64,
        /// Its first clock with content.
        from: u32,
        /// One past its last clock with content.
        to: u32,
    },
    /// Several clients, a client written in several runs, or a skip between content: only
    /// [`holes::split_past_holes`] can tell.
    Other,
}

pub mod holes;

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NestingError {
    /// It nests deeper than the limit.
    #[error("nesting deeper than {limit} levels")]
    TooDeep {
        /// The limit it passed.
        limit: u32,
    },
    /// It does not decode the way yrs would decode it.
    #[error("malformed update")]
    Malformed,
    /// Its items' parents are tangled past what legitimate edits produce.
    #[error("update structure too complex to check")]
    TooComplex,
}

/// Scans a v1 update. `Ok` with the bounds the document must satisfy; `Err` when the update
/// alone passes `max_depth` or does not decode.
pub fn scan_update(update: &[u8], max_depth: u32) -> Result<Nesting, NestingError> {
    let mut r = Reader {
        buf: update,
        pos: 0,
    };
    let mut s = Scan {
        max: max_depth,
        items: Vec::new(),
        gcs: Vec::new(),
        runs: Runs::default(),
    };
    let clients = r.var_u32()?;
    r.fits(clients as u64, 3)?;
    let mut clocks = Clocks::Nothing;
    for _ in 0..clients {
        let blocks = r.var_u64()? as usize;
        r.fits(blocks as u64, 1)?;
        let client = r.client()?;
        let mut clock = r.var_u32()?;
        let start = clock;
        // This run's content (`from..to`), and whether a skip came after some of it and
        // content after that skip.
        let (mut content, mut skipped, mut hole) = (None::<(u32, u32)>, false, false);
        for _ in 0..blocks {
            let (len, skip) = s.block(&mut r, client, clock)?;
            // A block reaching past the last clock: yrs would wrap it around (or panic where
            // it checks), and the room's own encodes of it would not read back.
            let end = clock.checked_add(len).ok_or(NestingError::Malformed)?;
            if skip {
                skipped |= content.is_some();
            } else if len > 0 {
                hole |= skipped;
                content = Some(content.map_or((clock, end), |(from, _)| (from, end)));
            }
            clock = end;
        }
        if clock > start {
            s.runs.push((client, start, clock));
        }
        if let Some((from, to)) = content {
            clocks = match clocks {
                Clocks::Nothing if !hole => Clocks::One { client, from, to },
                _ => Clocks::Other,
            };
        }
    }
    if !s.runs.continuous() {
        return Err(NestingError::Malformed);
    }
    // The delete set that follows cannot nest (yrs reads it with loops), but its ranges
    // must not reach past the last clock either.
    if delete_set_overflows(&mut r) {
        return Err(NestingError::Malformed);
    }
    let mut nesting = s.resolve()?;
    nesting.clocks = clocks;
    Ok(nesting)
}

/// Whether a range of the delete set at `r` reaches past the last clock, or names a client
/// past 53 bits. A delete set that does not parse otherwise is left to yrs' decoder, which
/// refuses it.
fn delete_set_overflows(r: &mut Reader<'_>) -> bool {
    let mut ranges = || -> Result<bool, NestingError> {
        let clients = r.var_u32()?;
        r.fits(u64::from(clients), 2)?;
        for _ in 0..clients {
            if r.client().is_err() {
                return Ok(true);
            }
            let n = r.var_u32()?;
            r.fits(u64::from(n), 2)?;
            for _ in 0..n {
                let (clock, len) = (r.var_u32()?, r.var_u32()?);
                if clock.checked_add(len).is_none() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    };
    ranges().unwrap_or(false)
}

/// How an item names its parent.
#[derive(Debug, Clone, Copy)]
enum ParentRef {
    Root,
    /// The type this item holds.
    Type(ItemId),
    /// The parent of its left origin and/or of its right origin (yrs takes the left's if it
    /// can, else the right's).
    Origins(Option<ItemId>, Option<ItemId>),
}

#[derive(Debug)]
struct ItemRec {
    id: ItemId,
    len: u32,
    parent: ParentRef,
    /// Holds a shared type.
    is_type: bool,
    /// Depth its content adds below its parent (a type: 1; a value: its container nesting).
    adds: u32,
}

struct Scan {
    max: u32,
    items: Vec<ItemRec>,
    /// GC ranges: an item whose parent would be found through them is discarded by yrs.
    gcs: Vec<(ItemId, u32)>,
    runs: Runs,
}

/// The clock ranges an update carries, one per client's section (client, from, to), in the
/// order written: to check that a client written twice continues where it ended. No
/// allocation for the common update of one client.
#[derive(Default)]
struct Runs {
    first: Option<(u64, u32, u32)>,
    rest: Vec<(u64, u32, u32)>,
}

impl Runs {
    fn push(&mut self, run: (u64, u32, u32)) {
        if self.first.is_none() {
            self.first = Some(run);
        } else {
            self.rest.push(run);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &(u64, u32, u32)> {
        self.first.iter().chain(&self.rest)
    }

    /// Whether each client's runs, in the order written, continue one another. Encoders write
    /// a client once; yrs appends a client's second run to its first, so a run starting
    /// anywhere but where the last one ended leaves its blocks out of clock order. yrs 0.28
    /// trusts that order: overlapping runs free a block it still points to (a heap
    /// use-after-free in `integrate_item`, docs/SECURITY.md Z8) and a gap integrates blocks
    /// past a missing clock.
    fn continuous(&self) -> bool {
        if self.rest.is_empty() {
            return true;
        }
        let mut all: Vec<_> = self.iter().copied().collect();
        // Stable: each client's runs stay in the order written.
        all.sort_by_key(|run| run.0);
        all.windows(2).all(|w| w[0].0 != w[1].0 || w[0].2 == w[1].1)
    }
}

impl Scan {
    /// Reads one block; returns the clock length it takes (0 for a block yrs drops) and
    /// whether it is a skip.
    fn block(
        &mut self,
        r: &mut Reader<'_>,
        client: u64,
        clock: u32,
    ) -> Result<(u32, bool), NestingError> {
        let info = r.u8()?;
        let id = ItemId { client, clock };
        match info {
            10 => {
                let len = r.var_u32()?;
                if len == 0 {
                    return Err(NestingError::Malformed);
                }
                Ok((len, true))
            }
            0 => {
                let len = r.var_u32()?;
                if len == 0 {
                    return Err(NestingError::Malformed);
                }
                self.gcs.push((id, len));
                Ok((len, false))
            }
            info => {
                let copies_parent = info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0;
                let origin = (info & HAS_ORIGIN != 0).then(|| r.id()).transpose()?;
                let right = (info & HAS_RIGHT_ORIGIN != 0).then(|| r.id()).transpose()?;
                let parent = if copies_parent {
                    let parent = if r.var_u32()? == 1 {
                        r.string()?;
                        ParentRef::Root
                    } else {
                        ParentRef::Type(r.id()?)
                    };
                    if info & HAS_PARENT_SUB != 0 {
                        r.string()?;
                    }
                    parent
                } else {
                    ParentRef::Origins(origin, right)
                };
                let (len, adds, is_type) = content(r, info & 0b1111, self.max)?;
                if len == 0 {
                    return Ok((0, false));
                }
                self.items.push(ItemRec {
                    id,
                    len,
                    parent,
                    is_type,
                    adds,
                });
                Ok((len, false))
            }
        }
    }

    /// Resolves every depth-adding item's parent within the update, and returns what is left
    /// for the document to answer.
    fn resolve(mut self) -> Result<Nesting, NestingError> {
        if !self.items.iter().any(|i| i.adds > 0) {
            return Ok(Nesting::default());
        }
        // Items of one client are in clock order; index them for lookups by id.
        self.items.sort_by_key(|i| i.id);
        self.gcs.sort_by_key(|g| g.0);
        let mut memo: Vec<Option<Vec<Term>>> = vec![None; self.items.len()];
        let mut out = Nesting::default();
        for i in 0..self.items.len() {
            let adds = self.items[i].adds;
            if adds == 0 {
                continue;
            }
            let parent = self.parent_depth(i, &mut memo)?;
            for t in &parent {
                match *t {
                    Term::Local(d) => {
                        if d.saturating_add(adds) > self.max {
                            return Err(NestingError::TooDeep { limit: self.max });
                        }
                    }
                    Term::Anchored(anchor, r) => push_bound(
                        &mut out.bounds,
                        Bound {
                            anchor,
                            extra: r.saturating_add(adds),
                        },
                    ),
                }
            }
            if self.items[i].is_type {
                out.types
                    .push((self.items[i].id, plus(&parent, 1).collect()));
            }
        }
        Ok(out)
    }

    /// Upper-bound terms of the depth of item `i`'s parent type. Empty: yrs will discard the
    /// item (its parent is garbage-collected or never arrives). Iterative: origin chains are
    /// as long as the text typed.
    fn parent_depth(
        &self,
        i: usize,
        memo: &mut [Option<Vec<Term>>],
    ) -> Result<Vec<Term>, NestingError> {
        // Work stack: items whose terms wait for the terms of the items they point to.
        let mut stack = vec![i];
        // Items on the stack (an origin cycle never integrates: no terms).
        let mut visiting: HashMap<usize, ()> = HashMap::new();
        while let Some(&cur) = stack.last() {
            if memo[cur].is_some() {
                stack.pop();
                continue;
            }
            visiting.insert(cur, ());
            let mut terms = Vec::new();
            let mut waiting = None;
            for (via, through_type) in self.parents_of(cur) {
                match via {
                    Via::Root => terms.push(Term::Local(1)),
                    Via::Gone => {}
                    Via::Outside(anchor) => terms.push(Term::Anchored(anchor, 0)),
                    Via::Item(j) => match &memo[j] {
                        Some(t) => terms.extend(plus(t, u32::from(through_type))),
                        None if visiting.contains_key(&j) => {} // cycle
                        None => {
                            waiting = Some(j);
                            break;
                        }
                    },
                }
            }
            if let Some(j) = waiting {
                stack.push(j);
                continue;
            }
            let terms = merge(terms)?;
            memo[cur] = Some(terms);
            visiting.remove(&cur);
            stack.pop();
        }
        Ok(memo[i].clone().unwrap_or_default())
    }

    /// Where item `i`'s parent comes from; `true` when the item found is the parent type
    /// itself (its depth is one more than its own parent's).
    fn parents_of(&self, i: usize) -> Vec<(Via, bool)> {
        match self.items[i].parent {
            ParentRef::Root => vec![(Via::Root, false)],
            ParentRef::Type(p) => match self.find(p) {
                Found::Item(j) if self.items[j].is_type && self.items[j].id == p => {
                    vec![(Via::Item(j), true)]
                }
                // yrs refuses a parent that holds no type, and discards the item under a
                // collected one.
                Found::Item(_) | Found::Gc => vec![(Via::Gone, false)],
                Found::Nothing => vec![(Via::Outside(Anchor::Type(p)), false)],
            },
            ParentRef::Origins(left, right) => [left, right]
                .into_iter()
                .flatten()
                .map(|o| match self.find(o) {
                    Found::Item(j) => (Via::Item(j), false),
                    Found::Gc => (Via::Gone, false),
                    Found::Nothing => (Via::Outside(Anchor::ParentOf(o)), false),
                })
                .collect(),
        }
    }

    fn find(&self, id: ItemId) -> Found {
        let covers = |start: ItemId, len: u32| {
            start.client == id.client && start.clock <= id.clock && id.clock - start.clock < len
        };
        let k = self.items.partition_point(|it| it.id <= id);
        if k > 0 && covers(self.items[k - 1].id, self.items[k - 1].len) {
            return Found::Item(k - 1);
        }
        let k = self.gcs.partition_point(|g| g.0 <= id);
        if k > 0 && covers(self.gcs[k - 1].0, self.gcs[k - 1].1) {
            return Found::Gc;
        }
        Found::Nothing
    }
}

enum Via {
    Root,
    Gone,
    Outside(Anchor),
    Item(usize),
}

enum Found {
    Item(usize),
    Gc,
    Nothing,
}

fn plus(terms: &[Term], n: u32) -> impl Iterator<Item = Term> + '_ {
    terms.iter().map(move |t| match *t {
        Term::Local(d) => Term::Local(d.saturating_add(n)),
        Term::Anchored(a, r) => Term::Anchored(a, r.saturating_add(n)),
    })
}

/// One local term (the largest) and one per anchor (its largest extra).
fn merge(terms: Vec<Term>) -> Result<Vec<Term>, NestingError> {
    let mut out: Vec<Term> = Vec::with_capacity(terms.len().min(MAX_TERMS));
    for t in terms {
        let same = out.iter_mut().find(|o| match (o, &t) {
            (Term::Local(_), Term::Local(_)) => true,
            (Term::Anchored(a, _), Term::Anchored(b, _)) => a == b,
            _ => false,
        });
        match (same, t) {
            (Some(Term::Local(a)), Term::Local(b)) => *a = (*a).max(b),
            (Some(Term::Anchored(_, a)), Term::Anchored(_, b)) => *a = (*a).max(b),
            (_, t) => out.push(t),
        }
    }
    if out.len() > MAX_TERMS {
        return Err(NestingError::TooComplex);
    }
    Ok(out)
}

fn push_bound(bounds: &mut Vec<Bound>, b: Bound) {
    match bounds.iter_mut().find(|x| x.anchor == b.anchor) {
        Some(x) => x.extra = x.extra.max(b.extra),
        None => bounds.push(b),
    }
}

const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;

/// Reads an item's content: (clock length, depth it adds, holds a type).
fn content(r: &mut Reader<'_>, kind: u8, max: u32) -> Result<(u32, u32, bool), NestingError> {
    match kind {
        // Deleted
        1 => Ok((r.var_u32()?, 0, false)),
        // JSON (Yjs' legacy content, which no Yjs client writes since v13): refused. yrs 0.28
        // reads one string more than the count says but writes the count it holds, so once
        // in a document such an item makes every later encode of it unreadable: the answer
        // to joiners, the compacted snapshot, and (held back) a panic (found by fuzzing).
        2 => Err(NestingError::Malformed),
        // Binary
        3 => {
            r.buf_bytes()?;
            Ok((1, 0, false))
        }
        // String: its length in UTF-16 units, as yrs counts it.
        4 => {
            let s = r.string()?;
            Ok((s.encode_utf16().count() as u32, 0, false))
        }
        // Embed: one JSON value.
        5 => Ok((1, json_depth(r.string()?.as_bytes(), max)?, false)),
        // Format: key, JSON value.
        6 => {
            r.string()?;
            Ok((1, json_depth(r.string()?.as_bytes(), max)?, false))
        }
        // Type
        7 => {
            match r.u8()? {
                0..=2 | 4..=6 | 15 => {}
                3 => {
                    r.string()?;
                }
                // Sub-documents and weak links are not types yrs 0.28 decodes here (without
                // its `weak` feature, 7 is an error too).
                _ => return Err(NestingError::Malformed),
            }
            Ok((1, 1, true))
        }
        // Any
        8 => {
            let n = r.var_u32()?;
            r.fits(u64::from(n), 1)?;
            let mut depth = 0;
            for _ in 0..n {
                depth = depth.max(any_depth(r, max)?);
            }
            Ok((n, depth, false))
        }
        // Sub-document: guid, options (an Any).
        9 => {
            r.string()?;
            Ok((1, any_depth(r, max)?, false))
        }
        _ => Err(NestingError::Malformed),
    }
}

/// Container nesting of one lib0 `Any` value, read with a counter instead of recursion.
fn any_depth(r: &mut Reader<'_>, max: u32) -> Result<u32, NestingError> {
    // For each open container: values still to read. Map entries read their key first.
    let mut open: Vec<(u64, bool)> = Vec::new();
    let mut deepest = 0u32;
    loop {
        // Read one value.
        match r.u8()? {
            127 | 126 | 121 | 120 => {}
            125 => r.skip_var()?,
            124 => r.skip(4)?,
            123 | 122 => r.skip(8)?,
            119 => {
                r.string()?;
            }
            116 => r.buf_bytes()?,
            tag @ (118 | 117) => {
                let n = r.var_u64()?;
                let is_map = tag == 118;
                r.fits(n, if is_map { 2 } else { 1 })?;
                open.push((n, is_map));
                let depth = open.len() as u32;
                if depth > max {
                    return Err(NestingError::TooDeep { limit: max });
                }
                deepest = deepest.max(depth);
            }
            _ => return Err(NestingError::Malformed),
        }
        // Find the next value to read, closing finished containers.
        loop {
            match open.last_mut() {
                None => return Ok(deepest),
                Some((0, _)) => {
                    open.pop();
                }
                Some((n, is_map)) => {
                    *n -= 1;
                    if *is_map {
                        r.string()?;
                    }
                    break;
                }
            }
        }
    }
}

/// Bracket nesting of a JSON text (as yrs parses it with serde_json); refused past `max`
/// without building anything. Brackets inside strings do not count.
pub fn json_depth(s: &[u8], max: u32) -> Result<u32, NestingError> {
    let mut depth = 0u32;
    let mut deepest = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    for &b in s {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(NestingError::TooDeep { limit: max });
                }
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(deepest)
}

/// A cursor with yrs' reading rules.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, NestingError> {
        let b = *self.buf.get(self.pos).ok_or(NestingError::Malformed)?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), NestingError> {
        if n > self.buf.len() - self.pos {
            return Err(NestingError::Malformed);
        }
        self.pos += n;
        Ok(())
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Refuses a count of values that the rest of the input cannot hold.
    fn fits(&self, count: u64, min_each: u64) -> Result<(), NestingError> {
        if count.saturating_mul(min_each) > self.remaining() as u64 {
            return Err(NestingError::Malformed);
        }
        Ok(())
    }

    /// yrs' `read_var_u64`: up to 70 bits, high bits wrapping.
    fn var_u64(&mut self) -> Result<u64, NestingError> {
        let mut num = 0u64;
        let mut len = 0u32;
        loop {
            let b = self.u8()?;
            num |= u64::wrapping_shl(u64::from(b & 0x7f), len);
            len += 7;
            if b < 0x80 {
                return Ok(num);
            }
            if len > 70 {
                return Err(NestingError::Malformed);
            }
        }
    }

    /// yrs' `read_var_u32`: the same, wrapping into 32 bits.
    fn var_u32(&mut self) -> Result<u32, NestingError> {
        let mut num = 0u32;
        let mut len = 0u32;
        loop {
            let b = self.u8()?;
            num |= u32::wrapping_shl(u32::from(b & 0x7f), len);
            len += 7;
            if b < 0x80 {
                return Ok(num);
            }
            if len > 70 {
                return Err(NestingError::Malformed);
            }
        }
    }

    /// A signed varint, skipped (yrs' `read_var_i64` reads the same bytes).
    fn skip_var(&mut self) -> Result<(), NestingError> {
        let first = self.u8()?;
        if first & 0x80 == 0 {
            return Ok(());
        }
        let mut len = 6u32;
        loop {
            let b = self.u8()?;
            len += 7;
            if b < 0x80 {
                return Ok(());
            }
            if len > 70 {
                return Err(NestingError::Malformed);
            }
        }
    }

    /// A client id: Yjs' are 53 bits (JavaScript's safe integers). yrs keeps the low 53 bits
    /// of a larger one in release builds, so two ids of one update could name one client
    /// unseen by the checks here (a client written twice, docs/SECURITY.md Z8).
    fn client(&mut self) -> Result<u64, NestingError> {
        let client = self.var_u64()?;
        if client >> 53 != 0 {
            return Err(NestingError::Malformed);
        }
        Ok(client)
    }

    fn id(&mut self) -> Result<ItemId, NestingError> {
        let client = self.client()?;
        let clock = self.var_u32()?;
        Ok(ItemId { client, clock })
    }

    fn buf_bytes(&mut self) -> Result<(), NestingError> {
        let len = self.var_u32()? as usize;
        self.skip(len)
    }

    fn string(&mut self) -> Result<&'a str, NestingError> {
        let len = self.var_u32()? as usize;
        if len > self.remaining() {
            return Err(NestingError::Malformed);
        }
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        std::str::from_utf8(bytes).map_err(|_| NestingError::Malformed)
    }
}

/// A v1 update from `client` holding one value in root type `root` nested `depth` arrays
/// deep: the 13 KB frame (depth 6,500) that overflowed yrs' stack and aborted the process.
/// For tests, fuzzing seeds and the load tester's `attack` scenario.
pub fn nested_value_update(client: u64, root: &str, depth: usize) -> Vec<u8> {
    use crate::lib0::{write_var_string, write_var_uint};
    let mut u = bytes::BytesMut::new();
    // One client, one block, at clock 0: an item of Any content (8) whose parent is a root.
    write_var_uint(&mut u, 1);
    write_var_uint(&mut u, 1);
    write_var_uint(&mut u, client);
    write_var_uint(&mut u, 0);
    u.extend_from_slice(&[0x08, 0x01]);
    write_var_string(&mut u, root);
    // One value: `depth` arrays of one element (117, 1), around `undefined` (127).
    write_var_uint(&mut u, 1);
    for _ in 0..depth {
        u.extend_from_slice(&[0x75, 0x01]);
    }
    // ... and an empty delete set.
    u.extend_from_slice(&[0x7f, 0x00]);
    u.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_any(d: usize) -> Vec<u8> {
        nested_value_update(7, "t", d)
    }

    #[test]
    fn the_builder_makes_the_reviews_bytes() {
        // `01 01 07 00 08 01 01 74 01`, then `75 01` D times, then `7f 00` (issue 13).
        let mut want = vec![0x01, 0x01, 0x07, 0x00, 0x08, 0x01, 0x01, 0x74, 0x01];
        want.extend_from_slice(&[0x75, 0x01, 0x75, 0x01, 0x7f, 0x00]);
        assert_eq!(nested_value_update(7, "t", 2), want);
    }

    #[test]
    fn blocks_and_deletions_past_the_last_clock_are_refused() {
        // Blocks whose clock plus length passes u32::MAX (a class the fuzzing pointed at; its
        // input, fuzz/findings/state-encode-overflows, still overflows another way).
        let mut u = vec![1, 1, 7];
        u.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]); // clock u32::MAX - 1
        u.extend_from_slice(&[0x04, 0x01, 0x01, b't', 0x03, b'a', b'b', b'c', 0x00]);
        assert_eq!(scan_update(&u, 64), Err(NestingError::Malformed));
        // The same block at clock 0 is fine, and a deletion past the last clock is not.
        let mut ok = vec![1, 1, 7, 0];
        ok.extend_from_slice(&[0x04, 0x01, 0x01, b't', 0x03, b'a', b'b', b'c', 0x00]);
        assert!(scan_update(&ok, 64).is_ok());
        let mut del = vec![0, 1, 7, 1, 0xfe, 0xff, 0xff, 0xff, 0x0f, 5];
        assert_eq!(scan_update(&del, 64), Err(NestingError::Malformed));
        del[9] = 1;
        assert!(scan_update(&del, 64).is_ok());
    }

    /// Whether yrs' own decoder reads `update` (without applying it).
    fn yrs_decodes(update: &[u8]) -> bool {
        use yrs::updates::decoder::Decode;
        yrs::Update::decode_v1(update).is_ok()
    }

    #[test]
    fn a_client_written_twice_must_continue_where_it_ended() {
        // Found by fuzzing (Z8, fuzz/regressions/hocuspocus_frame/yrs-heap-use-after-free):
        // client 1 written in six runs that all start at clock 1. yrs 0.28 appends them to
        // one list and, integrating it, reads a block it has already freed.
        let z8 = [
            9, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 1, 1, 1, 1, 1, 1, 9, 1, 1, 1, 1,
            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
            0, 1, 0, 5, 0, 0, 0x3f, 0, 3, 3,
        ];
        assert!(yrs_decodes(&z8), "yrs itself accepts it");
        assert_eq!(scan_update(&z8, 64), Err(NestingError::Malformed));
        // "a" at clock 0 in one run, then "b" (left origin 1:0) in a second run of client 1.
        let two_runs = |second: u8| {
            vec![
                2, 1, 1, 0, 0x04, 1, 1, b't', 1, b'a', 1, 1, second, 0x84, 1, 0, 1, b'b', 0,
            ]
        };
        // Continuing at clock 1 is what one run of two blocks says.
        assert!(scan_update(&two_runs(1), 64).is_ok());
        // Overlapping (clock 0 again) or leaving a gap (clock 5, which yrs would integrate
        // past the missing clocks) is refused.
        assert_eq!(scan_update(&two_runs(0), 64), Err(NestingError::Malformed));
        assert_eq!(scan_update(&two_runs(5), 64), Err(NestingError::Malformed));
        // Other clients between the runs change nothing.
        let mut between = vec![3, 1, 1, 0, 0x04, 1, 1, b't', 1, b'a'];
        between.extend_from_slice(&[1, 2, 0, 0x04, 1, 1, b't', 1, b'x']);
        between.extend_from_slice(&[1, 1, 1, 0x84, 1, 0, 1, b'b', 0]);
        assert!(scan_update(&between, 64).is_ok());
        between[21] = 0;
        assert_eq!(scan_update(&between, 64), Err(NestingError::Malformed));
    }

    #[test]
    fn client_ids_past_53_bits_are_refused_wherever_they_appear() {
        let big = 1u64 << 53;
        let block = nested_value_update(big, "t", 0);
        assert_eq!(scan_update(&block, 64), Err(NestingError::Malformed));
        assert!(scan_update(&nested_value_update(big - 1, "t", 0), 64).is_ok());
        // In the delete set: no blocks, one client, one range.
        let mut del = bytes::BytesMut::new();
        for v in [0, 1, big, 1, 0, 1] {
            crate::lib0::write_var_uint(&mut del, v);
        }
        assert_eq!(scan_update(&del, 64), Err(NestingError::Malformed));
    }

    #[test]
    fn the_scan_tells_where_content_sits_in_its_clients_clocks() {
        use yrs::{Doc, ReadTxn, Text, Transact};
        let clocks = |u: &[u8]| scan_update(u, 64).map(|n| n.clocks);
        // A delete set alone: no content.
        let mut del = bytes::BytesMut::new();
        for v in [0, 1, 9, 1, 0, 1] {
            crate::lib0::write_var_uint(&mut del, v);
        }
        assert_eq!(clocks(&del), Ok(Clocks::Nothing));
        // One client's run, past a leading skip too: where its content is.
        let one = [1, 1, 4, 2, 4, 1, 1, b't', 2, b'a', b'b', 0];
        let want = Clocks::One {
            client: 4,
            from: 2,
            to: 4,
        };
        assert_eq!(clocks(&one), Ok(want));
        let skipped = [1, 2, 4, 0, 10, 2, 4, 1, 1, b't', 2, b'a', b'b', 0];
        assert_eq!(clocks(&skipped), Ok(want));
        // Content after a skip inside the run, or two clients: only a walk can tell.
        let holed = [
            1, 3, 4, 0, 4, 1, 1, b't', 1, b'x', 10, 1, 4, 1, 1, b't', 1, b'y', 0,
        ];
        assert_eq!(clocks(&holed), Ok(Clocks::Other));
        let a = Doc::with_client_id(1);
        a.get_or_insert_text("t")
            .insert(&mut a.transact_mut(), 0, "a");
        let b = Doc::with_client_id(2);
        b.get_or_insert_text("t")
            .insert(&mut b.transact_mut(), 0, "b");
        let both = yrs::merge_updates_v1([
            a.transact().encode_state_as_update_v1(&Default::default()),
            b.transact().encode_state_as_update_v1(&Default::default()),
        ])
        .expect("merges");
        assert_eq!(clocks(&both), Ok(Clocks::Other));
    }

    #[test]
    fn legacy_json_content_is_refused() {
        // Found by fuzzing (fuzz/regressions/sync_frame/json-content-held-back): one item of
        // JSON content (kind 2) with a count of 0, which yrs reads as one string and writes
        // back as a count of 1 it then reads as two, so every later encode of the document
        // fails to decode (held back: a panic in the next encode).
        let update = [1, 1, 137, 0, 1, 130, 5, 104, 0, 0, 0, 0, 1, 111, 0];
        assert_eq!(scan_update(&update, 64), Err(NestingError::Malformed));
        // The same item as Any content (8) is fine.
        let any = [1, 1, 9, 1, 136, 5, 104, 1, 119, 0, 0];
        assert!(scan_update(&any, 64).is_ok());
    }

    #[test]
    fn nested_any_is_refused_past_the_limit_and_accepted_at_it() {
        // Root type "t" is depth 1; the value adds d.
        assert!(scan_update(&nested_any(63), 64).is_ok());
        assert_eq!(
            scan_update(&nested_any(64), 64),
            Err(NestingError::TooDeep { limit: 64 })
        );
        assert_eq!(
            scan_update(&nested_any(6_500), 64),
            Err(NestingError::TooDeep { limit: 64 })
        );
    }

    #[test]
    fn huge_declared_counts_are_refused_without_reserving() {
        // An Any array declaring 2^40 elements.
        let u = [
            0x01, 0x01, 0x07, 0x00, 0x08, 0x01, 0x01, 0x74, 0x01, 0x75, 0x80, 0x80, 0x80, 0x80,
            0x80, 0x20,
        ];
        assert_eq!(scan_update(&u, 64), Err(NestingError::Malformed));
    }

    #[test]
    fn json_depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"a":[1,"[[[["]}"#, 64), Ok(2));
        assert_eq!(json_depth(br#""\"[""#, 64), Ok(0));
        assert!(json_depth("[".repeat(65).as_bytes(), 64).is_err());
    }
}
