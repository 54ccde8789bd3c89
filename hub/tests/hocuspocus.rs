//! The Hocuspocus endpoint with the protocol client in that dialect: it shares rooms with
//! y-websocket clients, acknowledges durable updates, multiplexes documents, and refuses bad
//! input per document or per socket as documented. (The stock `@hocuspocus/provider` runs
//! against it in `node_interop.rs`.)

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use chorus_protocol::client::{Client, ClientOptions};
use chorus_protocol::hocuspocus;
use chorus_protocol::lib0::{write_var_string, write_var_uint};
use chorus_protocol::sync::Message;
use common::*;
use serde_json::json;

fn hp_url(server: &TestServer) -> String {
    format!("ws://{}/hocuspocus", server.addr)
}

async fn hp_client(server: &TestServer, doc: &str, token: Option<String>) -> Client {
    hp_client_at(&hp_url(server), doc, token).await
}

async fn hp_client_at(url: &str, doc: &str, token: Option<String>) -> Client {
    let opts = ClientOptions {
        hocuspocus: Some(doc.to_string()),
        token,
        ..ClientOptions::default()
    };
    Client::connect(url, opts).await.expect("connect")
}

async fn secured() -> (tempfile::TempDir, TestServer) {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data.path());
    config.jwt_secret = Some(SECRET.into());
    config.allow_anonymous = Some(false);
    let server = TestServer::start(config).await;
    (data, server)
}

#[tokio::test]
async fn shares_rooms_with_y_websocket_and_acknowledges_durable_updates() {
    let (data, server) = secured().await;
    let write = token(json!({}));
    let hp = hp_client(&server, "shared", Some(write.clone())).await;
    hp.synced(PATIENCE).await.expect("synced");
    assert_eq!(hp.state().authenticated.as_deref(), Some("read-write"));
    let ws = server
        .client_with(
            "shared",
            ClientOptions {
                token: Some(write.clone()),
                ..ClientOptions::default()
            },
        )
        .await;
    append(&hp, "t", "from hocuspocus;");
    wait_text(&[&ws], "t", "from hocuspocus;").await;
    append(&ws, "t", "from y-websocket");
    wait_text(&[&hp], "t", "from hocuspocus;from y-websocket").await;
    // One status for the handshake's SyncStep2 and one for the update, each once saved.
    hp.wait_for("acks", PATIENCE, |s, _| s.sync_ok >= 2)
        .await
        .expect("sync statuses");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        hp.state().sync_ok,
        2,
        "exactly one status per step 2 or update"
    );
    // A re-sent SyncStep1 (forceSyncInterval) is answered with our SyncStep1 as well, so its
    // reply gets acknowledged too and the provider's unsynced count can drain again.
    let sv = {
        use yrs::updates::encoder::Encode;
        use yrs::{ReadTxn, Transact};
        hp.doc().transact().state_vector().encode_v1()
    };
    hp.send_message(&Message::SyncStep1(Bytes::from(sv)))
        .expect("force sync");
    hp.wait_for("force-sync ack", PATIENCE, |s, _| s.sync_ok == 3)
        .await
        .expect("the reply to our SyncStep1 was acknowledged");
    server.stop().await.expect("stop");
    // What was acknowledged is on disk.
    let server = TestServer::start({
        let mut c = test_config(data.path());
        c.jwt_secret = Some(SECRET.into());
        c
    })
    .await;
    let again = hp_client(&server, "shared", Some(write)).await;
    wait_text(&[&again], "t", "from hocuspocus;from y-websocket").await;
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn refusals_are_per_document() {
    let (_data, server) = secured().await;
    // No token, a garbage token, a token for other rooms, a bad name: each is denied and the
    // socket stays open.
    let cases = [
        ("doc-a", None, "missing token"),
        ("doc-b", Some("garbage".to_string()), "token"),
        (
            "doc-c",
            Some(token(json!({ "rooms": ["other-*"] }))),
            "does not grant",
        ),
        ("bad\u{1}name", Some(token(json!({}))), "control characters"),
    ];
    for (doc, tok, reason) in cases {
        let c = hp_client(&server, doc, tok).await;
        c.wait_for("denied", PATIENCE, |s, _| !s.denied.is_empty())
            .await
            .expect("denied");
        let denied = c.state().denied.clone();
        assert!(denied[0].contains(reason), "{doc}: {denied:?}");
        assert!(!c.state().synced, "{doc}: a denied document never syncs");
        assert!(c.closed().is_none(), "{doc}: the socket stays open");
    }
    // A read-only token syncs, but its update is refused with a negative status and reaches
    // nobody.
    let writer = hp_client(&server, "ro", Some(token(json!({})))).await;
    writer.synced(PATIENCE).await.expect("synced");
    append(&writer, "t", "w");
    let reader = hp_client(&server, "ro", Some(token(json!({ "role": "read" })))).await;
    wait_text(&[&reader], "t", "w").await;
    assert_eq!(reader.state().authenticated.as_deref(), Some("readonly"));
    append(&reader, "t", "r");
    reader
        .wait_for("refused", PATIENCE, |s, _| s.sync_refused == 1)
        .await
        .expect("negative sync status");
    let late = hp_client(&server, "ro", Some(token(json!({})))).await;
    late.synced(PATIENCE).await.expect("synced");
    assert_eq!(text(&late, "t"), "w");
    server.stop().await.expect("stop");
}

fn doc_message(address: &str, kind: u64, body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    write_var_string(&mut out, address);
    write_var_uint(&mut out, kind);
    out.put_slice(body);
    out.freeze()
}

#[tokio::test]
async fn one_socket_many_documents_and_their_limits() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let c = hp_client(&server, "first", None).await;
    c.synced(PATIENCE).await.expect("synced");
    // Messages for a document that was never opened are dropped, not applied.
    let stray = Message::Update(Bytes::from_static(&[1, 1, 5, 0, 4, 1, 1, 116, 1, 120, 0]));
    c.send_raw(hocuspocus::wrap(
        &hocuspocus::address_prefix("unopened"),
        &stray.encode(),
    ))
    .expect("send");
    // Open documents up to the limit on the same socket; the next one is denied.
    for i in 1..chorus_hub::session::hocuspocus::MAX_DOCUMENTS_PER_CONNECTION + 1 {
        let p = hocuspocus::address_prefix(&format!("doc-{i}"));
        c.send_raw(hocuspocus::auth(&p, "", "4.8.0")).expect("auth");
    }
    c.wait_for("the limit", PATIENCE, |s, _| !s.denied.is_empty())
        .await
        .expect("denied past the limit");
    assert!(c.state().denied[0].contains("too many documents"));
    assert!(c.closed().is_none());
    let fresh = server.client("unopened").await;
    assert_eq!(text(&fresh, "t"), "", "the stray update was dropped");
    assert_eq!(c.state().granted, 100);
    // Detaching frees a slot.
    c.send_raw(doc_message("doc-1", hocuspocus::kind::CLOSE, &[]))
        .expect("close doc");
    let p = hocuspocus::address_prefix("one-more");
    c.send_raw(hocuspocus::auth(&p, "", "4.8.0")).expect("auth");
    c.wait_for("granted", PATIENCE, |s, _| s.granted == 101)
        .await
        .expect("the freed slot is usable");
    assert_eq!(c.state().denied.len(), 1);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn bad_frames_close_the_socket_with_documented_codes() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let keep = hp_client(&server, "victim", None).await;
    keep.synced(PATIENCE).await.expect("synced");
    append(&keep, "t", "keep");
    let cases: Vec<(Bytes, u16)> = vec![
        // Address length beyond the frame.
        (Bytes::from_static(&[50, 1, 2]), 1007),
        // A sync message whose update is garbage.
        (doc_message("victim", 0, &[2, 3, 0xff, 0xff, 0xff]), 1007),
        // Server-only message types.
        (
            hocuspocus::sync_status(&hocuspocus::address_prefix("victim"), true),
            1003,
        ),
        (doc_message("victim", 6, &[0]), 1003),
        // An auth reply sent by a client.
        (
            hocuspocus::authenticated(&hocuspocus::address_prefix("victim"), false),
            1007,
        ),
    ];
    for (frame, code) in cases {
        let bad = hp_client(&server, "victim", None).await;
        bad.synced(PATIENCE).await.expect("synced");
        bad.send_raw(frame.clone()).expect("send");
        let (got, reason) = bad.wait_closed(PATIENCE).await.expect("closed");
        assert_eq!(got, code, "{frame:?}: {reason}");
    }
    let text_sender = hp_client(&server, "victim", None).await;
    text_sender.synced(PATIENCE).await.expect("synced");
    text_sender.send_text("hello").expect("send");
    assert_eq!(
        text_sender.wait_closed(PATIENCE).await.expect("closed").0,
        1003
    );
    // The victim and its document are untouched.
    assert!(keep.closed().is_none());
    let fresh = hp_client(&server, "victim", None).await;
    wait_text(&[&fresh], "t", "keep").await;
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_refreshed_token_that_no_longer_grants_the_room_closes_the_document() {
    let (_data, server) = secured().await;
    let c = hp_client(&server, "refresh", Some(token(json!({})))).await;
    c.synced(PATIENCE).await.expect("synced");
    let p = hocuspocus::address_prefix("refresh");
    c.send_raw(hocuspocus::auth(
        &p,
        &token(json!({ "rooms": ["x"] })),
        "4.8.0",
    ))
    .expect("refresh");
    c.wait_for("denied", PATIENCE, |s, _| !s.denied.is_empty())
        .await
        .expect("denied");
    assert_eq!(
        c.state().doc_closed.as_deref(),
        Some("token no longer grants this document")
    );
    // Its later edits reach nobody.
    append(&c, "t", "after");
    let other = hp_client(&server, "refresh", Some(token(json!({})))).await;
    other.synced(PATIENCE).await.expect("synced");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(text(&other, "t"), "");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_refreshed_token_with_another_role_reopens_the_document_under_it() {
    let (_data, server) = secured().await;
    // Served at the root too, where providers connect by default.
    let root = format!("ws://{}/", server.addr);
    let c = hp_client_at(&root, "roles", Some(token(json!({})))).await;
    c.synced(PATIENCE).await.expect("synced");
    let p = hocuspocus::address_prefix("roles");
    // The same role again: nothing changes, nothing is sent.
    c.send_raw(hocuspocus::auth(&p, &token(json!({})), "4.8.0"))
        .expect("refresh");
    // A read-only token: the document reopens as read-only and edits are refused.
    c.send_raw(hocuspocus::auth(
        &p,
        &token(json!({ "role": "read" })),
        "4.8.0",
    ))
    .expect("refresh");
    c.wait_for("readonly", PATIENCE, |s, _| {
        s.authenticated.as_deref() == Some("readonly")
    })
    .await
    .expect("re-authenticated read-only");
    assert_eq!(c.state().granted, 2);
    append(&c, "t", "nope");
    c.wait_for("refused", PATIENCE, |s, _| s.sync_refused == 1)
        .await
        .expect("the edit is refused");
    let other = hp_client(&server, "roles", Some(token(json!({})))).await;
    other.synced(PATIENCE).await.expect("synced");
    assert_eq!(text(&other, "t"), "");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_socket_that_keeps_getting_refused_is_closed() {
    let (_data, server) = secured().await;
    let c = hp_client(&server, "x", Some("garbage".into())).await;
    for i in 0..chorus_hub::session::hocuspocus::MAX_REFUSALS + 5 {
        let p = hocuspocus::address_prefix(&format!("d{i}"));
        if c.send_raw(hocuspocus::auth(&p, "garbage", "4.8.0"))
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = c.wait_closed(PATIENCE).await.expect("closed");
    assert_eq!(code, 1008, "{reason}");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn one_room_may_be_open_only_a_few_times_per_socket() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let c = hp_client(&server, "same", None).await;
    c.synced(PATIENCE).await.expect("synced");
    for i in 0..chorus_hub::session::hocuspocus::MAX_SAME_ROOM {
        let p = hocuspocus::address_prefix(&format!("same\0session-{i}"));
        c.send_raw(hocuspocus::auth(&p, "", "4.8.0")).expect("auth");
    }
    c.wait_for("the limit", PATIENCE, |s, _| !s.denied.is_empty())
        .await
        .expect("denied");
    assert!(c.state().denied[0].contains("too many times"));
    assert_eq!(
        c.state().granted as usize,
        chorus_hub::session::hocuspocus::MAX_SAME_ROOM
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_large_document_arrives_whole_behind_its_address_and_later_updates_follow() {
    // Over 64 KiB the hub writes the address and the state itself, as fragments: the address
    // lies in the first fragment only, and what is queued after must still arrive in order.
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let writer = server.client("big").await;
    let text = "y".repeat(300_000);
    append(&writer, "t", &text);
    wait_text(&[&writer], "t", &text).await;
    let probe = server.client("big").await;
    wait_text(&[&probe], "t", &text).await;
    let hp = hp_client(&server, "big", None).await;
    wait_text(&[&hp], "t", &text).await;
    append(&writer, "t", "!");
    wait_text(&[&hp], "t", &format!("{text}!")).await;
    append(&hp, "t", "?");
    wait_text(&[&writer], "t", &format!("{text}!?")).await;
    server.stop().await.expect("stop");
}
