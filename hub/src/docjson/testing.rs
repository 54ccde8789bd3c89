//! Documents and helpers shared by the tests of every part.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use yrs::types::Attrs;
use yrs::types::text::YChange;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, ClientID, Doc, Map, MapPrelim, OffsetKind, Options, Out, ReadTxn,
    StateVector, Text, TextPrelim, TextRef, Transact, Update, WriteTxn, Xml, XmlElementPrelim,
    XmlFragment, XmlTextPrelim,
};

use super::kinds::ptr_of;
use super::ops::json_to_any;
use super::render::{any_to_json, out_to_json};
use super::{MAX_DEPTH, Op, doc_to_json};

/// A document as the hub creates them: UTF-16 offsets, a 32-bit client id like Yjs.
pub(super) fn new_doc(client_id: u64) -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::with_client_id(ClientID::new(client_id))
    })
}

pub(super) fn state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

pub(super) fn apply(doc: &Doc, update: &[u8]) {
    let update = Update::decode_v1(update).expect("update decodes");
    doc.transact_mut()
        .apply_update(update)
        .expect("update applies");
}

/// A fresh document that got `doc`'s content as a client update: its roots are undefined.
pub(super) fn replica(doc: &Doc, client_id: u64) -> Doc {
    let copy = new_doc(client_id);
    apply(&copy, &state(doc));
    copy
}

pub(super) fn json_of(doc: &Doc) -> Value {
    doc_to_json(&doc.transact())
}

pub(super) fn ops(value: Value) -> Vec<Op> {
    serde_json::from_value(value).expect("ops deserialise")
}

/// Every update `doc` emits from now on.
pub(super) fn record(doc: &Doc) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let updates = Arc::new(Mutex::new(Vec::new()));
    let sink = updates.clone();
    doc.observe_update_v1("record", move |_, e| {
        sink.lock().expect("lock").push(e.update.clone());
    })
    .expect("observer");
    updates
}

pub(super) fn root_is_undefined(doc: &Doc, name: &str) -> bool {
    let txn = doc.transact();
    matches!(txn.get(name), Some(Out::UndefinedRef(_)))
}

/// Text, map (nested), array (nested), binary, NaN and XML with formatting.
pub(super) fn sample_doc(client_id: u64) -> Doc {
    let doc = new_doc(client_id);
    {
        let mut txn = doc.transact_mut();
        let text = txn.get_or_insert_text("text");
        text.insert(&mut txn, 0, "héllo 😀 world");

        let map = txn.get_or_insert_map("map");
        map.insert(&mut txn, "n", 3);
        map.insert(&mut txn, "f", 1.5);
        map.insert(&mut txn, "nan", f64::NAN);
        map.insert(&mut txn, "bin", Any::Buffer(Arc::from(&b"hi"[..])));
        map.insert(&mut txn, "plain", json_any(json!({"a": [1, "x"]})));
        let inner = map.insert(&mut txn, "inner", MapPrelim::default());
        inner.insert(&mut txn, "deep", true);
        let nested_text = map.insert(&mut txn, "note", TextPrelim::new("nested"));
        nested_text.insert(&mut txn, 6, "!");

        let array = txn.get_or_insert_array("list");
        array.insert_range(&mut txn, 0, [1, 2]);
        let element = array.push_back(&mut txn, MapPrelim::default());
        element.insert(&mut txn, "k", "v");
        array.push_back(&mut txn, ArrayPrelim::from([Any::from("a")]));

        let xml = txn.get_or_insert_xml_fragment("xml");
        let p = xml.push_back(&mut txn, XmlElementPrelim::empty("p"));
        p.insert_attribute(&mut txn, "z", "1");
        p.insert_attribute(&mut txn, "a", "x\"y");
        let t = p.push_back(&mut txn, XmlTextPrelim::new("bold and <plain>"));
        let bold = Attrs::from([(Arc::from("b"), Any::Bool(true))]);
        t.format(&mut txn, 0, 4, bold);
        xml.push_back(&mut txn, XmlTextPrelim::new("tail"));
    }
    doc
}

pub(super) fn json_any(value: Value) -> Any {
    json_to_any(&value, MAX_DEPTH).expect("shallow value")
}

pub(super) fn sample_json() -> Value {
    json!({
        "text": "héllo 😀 world",
        "map": {
            "n": 3, "f": 1.5, "nan": null, "bin": "aGk=",
            "plain": {"a": [1, "x"]},
            "inner": {"deep": true},
            "note": "nested!",
        },
        "list": [1, 2, {"k": "v"}, ["a"]],
        "xml": "<p a=\"x&quot;y\" z=\"1\"><b>bold</b> and &lt;plain&gt;</p>tail",
    })
}

/// A text's content with embeds visible: strings, plain embeds as JSON, shared types by kind.
pub(super) fn text_content(doc: &Doc, name: &str) -> Vec<Value> {
    let txn = doc.transact();
    let Some(ptr) = txn.get(name).as_ref().and_then(ptr_of) else {
        return Vec::new();
    };
    TextRef::from(ptr)
        .diff(&txn, YChange::identity)
        .into_iter()
        .map(|chunk| match chunk.insert {
            Out::Any(any) => any_to_json(&any, MAX_DEPTH),
            other => json!({"shared": out_to_json(&txn, &other, MAX_DEPTH)}),
        })
        .collect()
}
