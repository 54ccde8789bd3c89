//! The fuzz targets' bodies (`fuzz/` runs them under libFuzzer; feature `fuzzing`): the same
//! decoders, checks and document code the node runs, reachable without sockets, store or
//! actor. The unit test below replays every committed corpus and regression input through
//! them, so `cargo test` keeps what the campaigns found fixed.

mod update_apply;

use bytes::Bytes;

use crate::auth::Role;
pub use crate::room::fuzz::FuzzRoom;
pub use update_apply::{Script, run_script};

/// The fuzz targets' panic hook. The room catches yrs' panics and restarts from its log;
/// libFuzzer's own hook would abort on them, so this one only prints (yrs' own quietly, unless
/// `FUZZ_VERBOSE` is set). A panic nothing catches still ends the run as a crash.
pub fn panic_hook() {
    let verbose = std::env::var_os("FUZZ_VERBOSE").is_some();
    std::panic::set_hook(Box::new(move |info| {
        let in_yrs = info.location().is_some_and(|l| l.file().contains("/yrs-"));
        if verbose || !in_yrs {
            eprintln!("panic: {info}");
        }
    }));
}

/// Raw bytes as a y-websocket frame from a writer, then from a reader: the protocol's
/// decoders (frame, state vector, awareness), the session's checks (nesting before yrs) and
/// the room's apply, then the room's invariants (its log reloads to the same document).
pub fn sync_frame(data: &[u8]) {
    use chorus_protocol::sync::Message;
    let frame = Bytes::copy_from_slice(data);
    for m in chorus_protocol::sync::decode_frame(frame.clone()).take(64) {
        match m {
            Ok(Message::SyncStep1(sv)) => {
                let _ = chorus_protocol::sync::decode_state_vector(sv);
            }
            Ok(Message::Awareness(p)) => {
                if let Ok(entries) = chorus_protocol::awareness::decode_update(p) {
                    // What the hub relays re-encodes to what decodes the same.
                    let again = chorus_protocol::awareness::encode_update(entries.iter());
                    match chorus_protocol::awareness::decode_update(again) {
                        Ok(back) => assert_eq!(back.len(), entries.len()),
                        Err(e) => panic!("a re-encoded awareness update does not decode: {e}"),
                    }
                }
            }
            Ok(Message::Update(u) | Message::SyncStep2(u)) => {
                let _ = chorus_protocol::nesting::scan_update(&u, 64);
                let _ = chorus_protocol::sync::check_update_header(&u);
            }
            _ => {}
        }
    }
    let mut room = FuzzRoom::new(64);
    room.frame(frame.clone(), Role::Write);
    room.frame(frame, Role::Read);
    room.check();
}

/// Raw bytes as a Hocuspocus-dialect frame: the address, auth, stateless and wrapped
/// y-websocket messages, each wrapped frame then going through the session and the room.
pub fn hocuspocus_frame(data: &[u8]) {
    use chorus_protocol::hocuspocus::{DocMessage, Incoming};
    let Ok(Incoming::Doc { address, body }) = Incoming::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = chorus_protocol::hocuspocus::document_name(&address);
    let prefix = chorus_protocol::hocuspocus::address_prefix(&address);
    if let DocMessage::YSync(frame) = body {
        // The reply the hub wraps for this address decodes back to the same address.
        let wrapped = chorus_protocol::hocuspocus::wrap(&prefix, &frame);
        if let Ok(Incoming::Doc { address: again, .. }) = Incoming::decode(wrapped) {
            assert_eq!(again, address, "a wrapped reply carries another address");
        }
        let mut room = FuzzRoom::new(64);
        room.frame(frame, Role::Write);
        room.check();
    }
}

/// A JSON-mode bot's frames, one per line, on one room: parsed as the session parses them
/// (nesting bounded before serde), their operations applied as the room applies a server
/// edit, then the room's invariants.
pub fn json_ops(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut room = FuzzRoom::new(16);
    for line in text.lines().take(16) {
        if let Ok(Some(ops)) = crate::session::json::fuzz_parse(line, 16) {
            room.ops(&ops);
        }
    }
    room.check();
}

/// Every JSON body of the REST API (tenants, keys, tokens, rooms, versions, webhooks,
/// edits), parsed and checked as its handler does; an edit's operations applied to a
/// document.
pub fn rest_bodies(data: &[u8]) {
    let doc = yrs::Doc::new();
    crate::api::fuzz_bodies(data, &doc, 16);
}

/// Text frames of the extended protocol (ai.ask, auth, search...) as both sides decode them:
/// whatever decodes re-encodes to the same message.
pub fn ext_envelope(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = chorus_protocol::ext::decode_client(text) {
        let mut value = match serde_json::to_value(&msg) {
            Ok(v) => v,
            Err(e) => panic!("a decoded client message does not serialize: {e}"),
        };
        if let Some(obj) = value.as_object_mut() {
            obj.insert("v".into(), serde_json::json!(1));
        }
        match chorus_protocol::ext::decode_client(&value.to_string()) {
            Ok(back) => assert_eq!(
                back, msg,
                "a client message changes through encode and decode"
            ),
            Err(e) => panic!("a re-encoded client message does not decode: {e}"),
        }
    }
    if let Ok(msg) = chorus_protocol::ext::decode_server(text) {
        let text = chorus_protocol::ext::encode_server(&msg);
        match chorus_protocol::ext::decode_server(&text) {
            Ok(back) => assert_eq!(
                back, msg,
                "a server message changes through encode and decode"
            ),
            Err(e) => panic!("a re-encoded server message does not decode: {e}"),
        }
    }
}

/// The decode-then-apply target on raw bytes (what libFuzzer hands it): the bytes become a
/// script through `arbitrary`, as in the fuzz target.
pub fn update_apply(data: &[u8]) {
    let u = arbitrary::Unstructured::new(data);
    if let Ok(script) = <Script as arbitrary::Arbitrary>::arbitrary_take_rest(u) {
        run_script(&script);
    }
}

/// A target's body.
pub type Target = fn(&[u8]);

/// Each target by name, for the replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("sync_frame", sync_frame),
    ("hocuspocus_frame", hocuspocus_frame),
    ("update_apply", update_apply),
    ("json_ops", json_ops),
    ("rest_bodies", rest_bodies),
    ("ext_envelope", ext_envelope),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every committed input (the corpus and the regressions, crashes the campaigns found
    /// included) passes its target: a fix that regresses fails here, in `cargo test`.
    #[test]
    fn the_committed_fuzz_inputs_pass_their_targets() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut ran = 0;
        for (name, target) in super::TARGETS {
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for e in entries.flatten() {
                    let data = std::fs::read(e.path()).expect("read a committed input");
                    let path = e.path();
                    // The regressions' findings are fixed: every invariant holds for them.
                    let outcome = std::panic::catch_unwind(|| {
                        if dir == "regressions" {
                            crate::room::fuzz::strictly(|| target(&data));
                        } else {
                            target(&data);
                        }
                    });
                    assert!(outcome.is_ok(), "{name}: {} fails", path.display());
                    ran += 1;
                }
            }
        }
        assert!(ran >= 50, "only {ran} committed fuzz inputs found");
    }
}
