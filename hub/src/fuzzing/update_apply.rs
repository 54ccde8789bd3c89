//! The structure-aware decode-then-apply target: the input is a script of edits by up to
//! three Yjs clients (text, maps, arrays, XML, deletions, nestings past the limit, clients
//! syncing with each other), which yields well-formed updates; they reach one room in the
//! script's order (out of order, repeated, merged, some with bytes changed), wrapped in either
//! dialect, with awareness updates between them. Then the room's invariants, and, when every
//! update was delivered intact and none nests past the limit, convergence with the clients.

use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use chorus_protocol::sync::Message;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, Doc, GetString, Map, MapPrelim, Options, ReadTxn, Text, Transact,
    Update, WriteTxn, XmlElementPrelim, XmlFragment, XmlTextPrelim,
};

use super::FuzzRoom;
use crate::auth::Role;

/// The room's nesting limit: small, so scripts reach it.
const LIMIT: u32 = 12;
const ROOTS: [&str; 3] = ["text", "map", "list"];

#[derive(Arbitrary, Debug)]
enum Value {
    Null,
    Bool(bool),
    Int(i32),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Step {
    InsertText {
        client: u8,
        index: u16,
        text: String,
    },
    DeleteText {
        client: u8,
        index: u16,
        len: u8,
    },
    FormatText {
        client: u8,
        index: u16,
        len: u8,
        bold: bool,
    },
    MapSet {
        client: u8,
        key: u8,
        value: Value,
    },
    MapRemove {
        client: u8,
        key: u8,
    },
    ListPush {
        client: u8,
        value: Value,
    },
    ListRemove {
        client: u8,
        index: u16,
        len: u8,
    },
    /// Maps and arrays nested `depth` deep under the map root (past the limit at 12).
    Nest {
        client: u8,
        key: u8,
        depth: u8,
        arrays: bool,
    },
    /// A paragraph with text in the XML fragment, and a nested element inside it.
    Xml {
        client: u8,
        tag: u8,
        text: String,
        depth: u8,
    },
    /// `to` receives everything `from` has: concurrent edits interleave.
    Sync {
        from: u8,
        to: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Delivery {
    /// Update `index` (of those the script made), as it was or with one byte changed.
    One {
        index: u16,
        change: Option<(u16, u8)>,
        hocuspocus: bool,
        step2: bool,
    },
    /// Updates `from..to` merged into one (as a provider does after being offline).
    Merged { from: u16, to: u16 },
    /// A member's awareness state.
    Awareness {
        client: u8,
        clock: u8,
        state: String,
    },
    /// A joiner's state vector: the room answers it.
    Join { client: u8 },
    /// The same frame from a reader.
    Reader { index: u16 },
}

/// One input.
#[derive(Arbitrary, Debug)]
pub struct Script {
    steps: Vec<Step>,
    deliveries: Vec<Delivery>,
    /// Deliver everything in order at the end (the usual case: the room ends complete).
    complete: bool,
}

fn client_doc(id: u64) -> (Doc, Arc<Mutex<Vec<Vec<u8>>>>) {
    let doc = Doc::with_options(Options {
        client_id: yrs::block::ClientID::new(id),
        ..Options::default()
    });
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    doc.observe_update_v1("fuzz", move |_, e| {
        sink.lock().expect("sink").push(e.update.clone())
    })
    .expect("observe");
    (doc, out)
}

fn any(v: &Value) -> Any {
    match v {
        Value::Null => Any::Null,
        Value::Bool(b) => Any::Bool(*b),
        Value::Int(i) => Any::from(f64::from(*i)),
        Value::Float(f) if f.is_finite() => Any::from(*f),
        Value::Float(_) => Any::Null,
        Value::Str(s) => Any::from(s.as_str()),
        Value::Bytes(b) => Any::from(b.clone()),
    }
}

/// A byte offset into `s` (yrs' default offsets are bytes) at a character boundary: a client
/// never edits inside a character.
fn boundary(s: &str, i: usize) -> u32 {
    let mut at = i % (s.len() + 1);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    u32::try_from(at).unwrap_or(0)
}

/// A range of `s` from `index`, `len` bytes long at most, both ends at character boundaries.
fn range(s: &str, index: u16, len: u8) -> (u32, u32) {
    let at = boundary(s, usize::from(index));
    let end = (at as usize + usize::from(len)).min(s.len());
    let mut end = end;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (at, u32::try_from(end).unwrap_or(at).max(at))
}

fn edit(doc: &Doc, step: &Step) {
    let mut txn = doc.transact_mut();
    match step {
        Step::InsertText { index, text, .. } => {
            let t = txn.get_or_insert_text(ROOTS[0]);
            let at = boundary(&t.get_string(&txn), usize::from(*index));
            t.insert(&mut txn, at, text);
        }
        Step::DeleteText { index, len, .. } => {
            let t = txn.get_or_insert_text(ROOTS[0]);
            let (at, end) = range(&t.get_string(&txn), *index, *len);
            if end > at {
                t.remove_range(&mut txn, at, end - at);
            }
        }
        Step::FormatText {
            index, len, bold, ..
        } => {
            let t = txn.get_or_insert_text(ROOTS[0]);
            let (at, end) = range(&t.get_string(&txn), *index, *len);
            if end > at {
                let attrs = yrs::types::Attrs::from([("bold".into(), Any::Bool(*bold))]);
                t.format(&mut txn, at, end - at, attrs);
            }
        }
        Step::MapSet { key, value, .. } => {
            let m = txn.get_or_insert_map(ROOTS[1]);
            m.insert(&mut txn, format!("k{}", key % 8), any(value));
        }
        Step::MapRemove { key, .. } => {
            let m = txn.get_or_insert_map(ROOTS[1]);
            m.remove(&mut txn, &format!("k{}", key % 8));
        }
        Step::ListPush { value, .. } => {
            let a = txn.get_or_insert_array(ROOTS[2]);
            a.push_back(&mut txn, any(value));
        }
        Step::ListRemove { index, len, .. } => {
            let a = txn.get_or_insert_array(ROOTS[2]);
            let size = a.len(&txn);
            if size > 0 {
                let at = u32::from(*index) % size;
                a.remove_range(&mut txn, at, u32::from(*len).min(size - at));
            }
        }
        Step::Nest {
            key, depth, arrays, ..
        } => {
            let m = txn.get_or_insert_map(ROOTS[1]);
            let depth = usize::from(*depth % 24);
            if *arrays {
                let mut a = m.insert(&mut txn, format!("n{}", key % 4), ArrayPrelim::default());
                for _ in 0..depth {
                    a = a.push_back(&mut txn, ArrayPrelim::default());
                }
                a.push_back(&mut txn, Any::from("leaf"));
            } else {
                let mut inner = m.insert(&mut txn, format!("n{}", key % 4), MapPrelim::default());
                for _ in 0..depth {
                    inner = inner.insert(&mut txn, "m", MapPrelim::default());
                }
                inner.insert(&mut txn, "leaf", true);
            }
        }
        Step::Xml {
            tag, text, depth, ..
        } => {
            let f = txn.get_or_insert_xml_fragment("prosemirror");
            let name = ["paragraph", "heading", "blockquote", "listItem"][usize::from(tag % 4)];
            let mut el = f.push_back(&mut txn, XmlElementPrelim::empty(name));
            for _ in 0..(depth % 24) {
                el = el.push_back(&mut txn, XmlElementPrelim::empty("blockquote"));
            }
            el.push_back(&mut txn, XmlTextPrelim::new(text.as_str()));
        }
        Step::Sync { .. } => {}
    }
}

fn client_of(step: &Step) -> u8 {
    match step {
        Step::InsertText { client, .. }
        | Step::DeleteText { client, .. }
        | Step::FormatText { client, .. }
        | Step::MapSet { client, .. }
        | Step::MapRemove { client, .. }
        | Step::ListPush { client, .. }
        | Step::ListRemove { client, .. }
        | Step::Nest { client, .. }
        | Step::Xml { client, .. } => client % 3,
        Step::Sync { to, .. } => to % 3,
    }
}

fn frame(msg: Message, hocuspocus: bool) -> Bytes {
    let inner = msg.encode();
    if !hocuspocus {
        return inner;
    }
    // Through the Hocuspocus decoder, as a Hocuspocus provider's frame for document "doc".
    let wrapped = chorus_protocol::hocuspocus::wrap(
        &chorus_protocol::hocuspocus::address_prefix("doc"),
        &inner,
    );
    match chorus_protocol::hocuspocus::Incoming::decode(wrapped) {
        Ok(chorus_protocol::hocuspocus::Incoming::Doc {
            body: chorus_protocol::hocuspocus::DocMessage::YSync(f),
            ..
        }) => f,
        other => panic!("a wrapped sync frame decodes as {other:?}"),
    }
}

/// Runs one script.
pub fn run_script(script: &Script) {
    let clients: Vec<_> = (0..3u64).map(|i| client_doc(1_000 + i)).collect();
    let mut updates: Vec<Vec<u8>> = Vec::new();
    let mut deep = false;
    for step in script.steps.iter().take(64) {
        let c = usize::from(client_of(step));
        if let Step::Sync { from, .. } = step {
            let from = &clients[usize::from(from % 3)].0;
            let sv = clients[c].0.transact().state_vector();
            let diff = from.transact().encode_state_as_update_v1(&sv);
            if let Ok(u) = Update::decode_v1(&diff) {
                let _ = clients[c].0.transact_mut().apply_update(u);
            }
        } else {
            if let Step::Nest { depth, .. } | Step::Xml { depth, .. } = step {
                deep |= u32::from(*depth % 24) + 3 >= LIMIT;
            }
            edit(&clients[c].0, step);
        }
        updates.extend(clients[c].1.lock().expect("sink").drain(..));
    }
    let mut room = FuzzRoom::new(LIMIT);
    let mut intact = true;
    let pick = |i: u16| updates.get(usize::from(i) % updates.len().max(1));
    for d in script.deliveries.iter().take(64) {
        match d {
            Delivery::One {
                index,
                change,
                hocuspocus,
                step2,
            } => {
                let Some(u) = pick(*index) else { continue };
                let mut u = u.clone();
                if let Some((at, byte)) = change
                    && !u.is_empty()
                {
                    let at = usize::from(*at) % u.len();
                    intact &= u[at] == *byte;
                    u[at] = *byte;
                }
                let u = Bytes::from(u);
                let msg = if *step2 {
                    Message::SyncStep2(u)
                } else {
                    Message::Update(u)
                };
                room.frame(frame(msg, *hocuspocus), Role::Write);
            }
            Delivery::Merged { from, to } => {
                if updates.is_empty() {
                    continue;
                }
                let a = usize::from(*from) % updates.len();
                let b = (usize::from(*to) % updates.len()).max(a);
                if let Ok(merged) = yrs::merge_updates_v1(&updates[a..=b]) {
                    room.frame(Message::Update(Bytes::from(merged)).encode(), Role::Write);
                }
            }
            Delivery::Awareness {
                client,
                clock,
                state,
            } => {
                let mut p = BytesMut::new();
                chorus_protocol::lib0::write_var_uint(&mut p, 1);
                chorus_protocol::lib0::write_var_uint(&mut p, 1_000 + u64::from(client % 3));
                chorus_protocol::lib0::write_var_uint(&mut p, u64::from(*clock));
                chorus_protocol::lib0::write_var_string(&mut p, state);
                room.frame(Message::Awareness(p.freeze()).encode(), Role::Write);
            }
            Delivery::Join { client } => {
                let sv = clients[usize::from(client % 3)].0.transact().state_vector();
                let sv = yrs::updates::encoder::Encode::encode_v1(&sv);
                room.frame(Message::SyncStep1(Bytes::from(sv)).encode(), Role::Read);
            }
            Delivery::Reader { index } => {
                let Some(u) = pick(*index) else { continue };
                room.frame(Message::Update(Bytes::from(u.clone())).encode(), Role::Read);
            }
        }
    }
    if script.complete {
        for u in &updates {
            room.frame(
                Message::Update(Bytes::from(u.clone())).encode(),
                Role::Write,
            );
        }
    }
    room.check();
    // Convergence: every update delivered, none changed, none past the limit: the room holds
    // what the clients together hold.
    if script.complete && intact && !deep && room.restarts == 0 {
        let all = Doc::new();
        {
            let mut txn = all.transact_mut();
            for u in &updates {
                txn.apply_update(Update::decode_v1(u).expect("a client's update decodes"))
                    .expect("a client's update applies");
            }
        }
        let want: std::collections::BTreeMap<u64, u32> = all
            .transact()
            .state_vector()
            .iter()
            .filter(|(_, clock)| **clock > 0)
            .map(|(client, clock)| (client.get(), *clock))
            .collect();
        assert_eq!(room.clocks(), want, "the room lacks what its members sent");
        let want = crate::docjson::doc_to_json(&all.transact());
        assert_eq!(
            room.to_json(),
            want,
            "the room renders differently from its members"
        );
    }
}
