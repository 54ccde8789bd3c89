//! Hostile frames: each closes only its sender with a documented code, never changes the
//! document, and never disturbs the other members.

mod common;

use bytes::Bytes;
use chorus_protocol::awareness::Entry;
use chorus_protocol::client::{Client, ClientOptions};
use chorus_protocol::lib0::{write_var_string, write_var_uint};
use chorus_protocol::sync::Message;
use common::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

struct Room {
    server: TestServer,
    a: Client,
    b: Client,
    name: String,
}

async fn room(config: chorus_hub::Config, name: &str) -> Room {
    let server = TestServer::start(config).await;
    let a = server.client(name).await;
    append(&a, "t", "keep");
    let b = server.client(name).await;
    wait_text(&[&b], "t", "keep").await;
    Room {
        server,
        a,
        b,
        name: name.to_string(),
    }
}

impl Room {
    /// Sends `frame` from a fresh attacker connection and returns its close code.
    async fn attack(&self, frame: Bytes) -> u16 {
        let bad = Client::connect(&self.server.url(&self.name), ClientOptions::default())
            .await
            .expect("connect");
        bad.synced(PATIENCE).await.expect("synced");
        bad.send_raw(frame).expect("send");
        bad.wait_closed(PATIENCE).await.expect("attacker closed").0
    }

    /// The document is unchanged and the good members still work.
    async fn still_healthy(&self, round: usize) {
        assert!(
            self.a.closed().is_none() && self.b.closed().is_none(),
            "bystanders stay connected"
        );
        let before = text(&self.a, "t");
        append(&self.a, "t", &format!("+{round}"));
        let expected = format!("{before}+{round}");
        wait_text(&[&self.b], "t", &expected).await;
        let fresh = self.server.client(&self.name).await;
        assert_eq!(text(&fresh, "t"), expected, "document changed by bad input");
        fresh.close().await;
    }
}

fn ext_opts() -> ClientOptions {
    ClientOptions {
        ext: true,
        ..Default::default()
    }
}

fn cfg() -> (tempfile::TempDir, chorus_hub::Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = test_config(dir.path());
    (dir, c)
}

#[tokio::test]
async fn malformed_frames_close_with_1007() {
    let (_dir, config) = cfg();
    let r = room(config, "malformed").await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty frame", vec![]),
        ("truncated varint", vec![0x80]),
        ("overlong varint", vec![0xff; 12]),
        ("unknown message type", vec![9]),
        ("unknown sync type", vec![0, 5, 0]),
        ("length past end", vec![0, 2, 0x7f, 1, 2]),
        (
            "garbage update payload",
            Message::Update(Bytes::from_static(&[0xff, 0xff, 0xff, 0x01]))
                .encode()
                .to_vec(),
        ),
        (
            "garbage step2 payload",
            Message::SyncStep2(Bytes::from_static(&[9, 9, 9]))
                .encode()
                .to_vec(),
        ),
        (
            "garbage state vector",
            Message::SyncStep1(Bytes::from_static(&[0xff]))
                .encode()
                .to_vec(),
        ),
        (
            "valid message then garbage",
            [Message::QueryAwareness.encode().to_vec(), vec![0xee]].concat(),
        ),
        ("unknown auth type", vec![2, 7]),
    ];
    for (i, (what, frame)) in cases.into_iter().enumerate() {
        let code = r.attack(Bytes::from(frame)).await;
        assert_eq!(code, 1007, "{what}");
        r.still_healthy(i).await;
    }
}

#[tokio::test]
async fn invalid_awareness_json_closes_with_1007() {
    let (_dir, config) = cfg();
    let r = room(config, "aw-json").await;
    let mut payload = bytes::BytesMut::new();
    write_var_uint(&mut payload, 1);
    write_var_uint(&mut payload, 77);
    write_var_uint(&mut payload, 1);
    write_var_string(&mut payload, "{\"unterminated\": ");
    let code = r
        .attack(Message::Awareness(payload.freeze()).encode())
        .await;
    assert_eq!(code, 1007);
    assert!(!r.b.state().awareness.contains_key(&77));
    r.still_healthy(0).await;
}

#[tokio::test]
async fn random_frames_never_change_the_document() {
    let (_dir, config) = cfg();
    let r = room(config, "random").await;
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..25 {
        let len = rng.random_range(1..64);
        let frame: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let bad = Client::connect(&r.server.url(&r.name), ClientOptions::default())
            .await
            .expect("connect");
        bad.synced(PATIENCE).await.expect("synced");
        bad.send_raw(Bytes::from(frame)).expect("send");
        // Random bytes are almost always malformed (1007); a few happen to be valid messages
        // that change nothing. Either way the node stays up and the document is intact.
        if let Ok((code, _)) = bad.wait_closed(std::time::Duration::from_millis(300)).await {
            assert!([1007, 1009].contains(&code), "unexpected close {code}");
        }
        r.still_healthy(i).await;
    }
}

#[tokio::test]
async fn text_frames_on_the_binary_endpoint_close_with_1003() {
    let (_dir, config) = cfg();
    let r = room(config, "text").await;
    let bad = Client::connect(&r.server.url(&r.name), ClientOptions::default())
        .await
        .expect("connect");
    bad.synced(PATIENCE).await.expect("synced");
    bad.send_text("{\"hello\":1}").expect("send");
    assert_eq!(bad.wait_closed(PATIENCE).await.expect("closed").0, 1003);
    r.still_healthy(0).await;

    // Opted-in clients get a JSON error for a bad text frame and stay connected.
    let ext = r.server.client_with(&r.name, ext_opts()).await;
    ext.send_text("not json").expect("send");
    ext.send_text(r#"{"v":1,"type":"ping","id":3}"#)
        .expect("send");
    ext.wait_for("pong", PATIENCE, |s, _| {
        s.events
            .iter()
            .any(|e| matches!(e, chorus_protocol::ext::ServerMessage::Pong { id: Some(3) }))
    })
    .await
    .expect("pong");
    assert!(
        ext.state()
            .events
            .iter()
            .any(|e| matches!(e, chorus_protocol::ext::ServerMessage::Error { .. }))
    );
    assert!(ext.closed().is_none());
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let (_dir, mut config) = cfg();
    config.max_frame_bytes = 4096;
    let r = room(config, "big-frame").await;
    let big = Message::Update(Bytes::from(vec![0u8; 8192])).encode();
    assert_eq!(r.attack(big).await, 1009);
    r.still_healthy(0).await;
}

#[tokio::test]
async fn oversized_awareness_state_closes_with_1009() {
    let (_dir, mut config) = cfg();
    config.max_awareness_bytes = 100;
    let r = room(config, "big-aw").await;
    let state = format!("{{\"pad\":\"{}\"}}", "x".repeat(200));
    let e = Entry {
        client_id: 5,
        clock: 1,
        state: Bytes::from(state),
    };
    let frame = Message::Awareness(chorus_protocol::awareness::encode_update([&e])).encode();
    assert_eq!(r.attack(frame).await, 1009);
    assert!(!r.b.state().awareness.contains_key(&5));
    r.still_healthy(0).await;
}

#[tokio::test]
async fn update_past_the_document_limit_closes_with_4413_and_is_not_applied() {
    let (_dir, mut config) = cfg();
    config.max_document_bytes = 4096;
    let r = room(config, "doc-limit").await;
    let bad = r.server.client_with(&r.name, ext_opts()).await;
    append(&bad, "t", &"y".repeat(8000));
    assert_eq!(bad.wait_closed(PATIENCE).await.expect("closed").0, 4413);
    assert!(bad.state().events.iter().any(|e| matches!(
        e,
        chorus_protocol::ext::ServerMessage::Error {
            code: chorus_protocol::ext::ErrorCode::TooLarge,
            ..
        }
    )));
    r.still_healthy(0).await;
    assert!(!text(&r.b, "t").contains('y'));
}

#[tokio::test]
async fn connection_and_room_limits_refuse_with_503_json() {
    let (_dir, mut config) = cfg();
    config.max_connections = 2;
    config.max_rooms = 1;
    let server = TestServer::start(config).await;
    let a = server.client("only-room").await;
    // Second room: refused, the first is still the only one.
    let err = Client::connect(&server.url("second-room"), ClientOptions::default()).await;
    match err {
        Err(chorus_protocol::client::ClientError::Ws(
            tokio_tungstenite::tungstenite::Error::Http(resp),
        )) => {
            assert_eq!(resp.status().as_u16(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).expect("json");
            assert_eq!(body["error"]["code"], "unavailable");
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    let b = server.client("only-room").await;
    // Third connection: refused.
    match Client::connect(&server.url("only-room"), ClientOptions::default()).await {
        Err(chorus_protocol::client::ClientError::Ws(
            tokio_tungstenite::tungstenite::Error::Http(resp),
        )) => {
            assert_eq!(resp.status().as_u16(), 503);
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // A slot frees when a client leaves.
    b.close().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(c) = Client::connect(&server.url("only-room"), ClientOptions::default()).await {
            c.synced(PATIENCE).await.expect("synced");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(a.closed().is_none());
}

#[tokio::test]
async fn allocation_bombs_and_unsafe_integers_close_with_1007() {
    let (_dir, config) = cfg();
    let r = room(config, "bombs").await;
    // A state vector declaring u32::MAX entries in five bytes.
    let sv_bomb = Message::SyncStep1(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f])).encode();
    assert_eq!(r.attack(sv_bomb).await, 1007);
    // An update declaring ~2^28 clients.
    let update_bomb = Message::Update(Bytes::from_static(&[0xff, 0xff, 0xff, 0x7f, 0, 0])).encode();
    assert_eq!(r.attack(update_bomb).await, 1007);
    // An awareness client id JavaScript cannot represent.
    let e = Entry {
        client_id: 1 << 60,
        clock: 1,
        state: Bytes::from_static(b"{}"),
    };
    let frame = Message::Awareness(chorus_protocol::awareness::encode_update([&e])).encode();
    assert_eq!(r.attack(frame).await, 1007);
    r.still_healthy(0).await;
}

#[tokio::test]
async fn one_connection_cannot_flood_awareness_states() {
    let (_dir, config) = cfg();
    let r = room(config, "aw-flood").await;
    let entries: Vec<Entry> = (0..50u64)
        .map(|i| Entry {
            client_id: 1000 + i,
            clock: 1,
            state: Bytes::from_static(b"{}"),
        })
        .collect();
    let frame = Message::Awareness(chorus_protocol::awareness::encode_update(&entries)).encode();
    assert_eq!(r.attack(frame).await, 1008);
    r.still_healthy(0).await;
}

#[tokio::test]
async fn reconnecting_with_known_content_near_the_size_limit_is_not_refused() {
    let (_dir, mut config) = cfg();
    config.max_document_bytes = 4096;
    let server = TestServer::start(config).await;
    let a = server.client("near-limit").await;
    append(&a, "t", &"n".repeat(3000));
    let b = server.client("near-limit").await;
    wait_text(&[&b], "t", &"n".repeat(3000)).await;
    // B reconnects with its full copy: its SyncStep2 repeats 3000 known bytes.
    let doc = b.doc().clone();
    b.close().await;
    let b2 = Client::connect_with_doc(&server.url("near-limit"), ClientOptions::default(), doc)
        .await
        .expect("reconnect");
    b2.synced(PATIENCE).await.expect("synced");
    append(&a, "t", "!");
    wait_text(&[&b2], "t", &format!("{}!", "n".repeat(3000))).await;
    assert!(
        b2.closed().is_none(),
        "known content must not count against the limit"
    );
}

/// The subprotocol the hub selects when a client offers `offered`.
async fn selected_subprotocol(server: &TestServer, offered: &str) -> Option<String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = server.url("proto").into_client_request().expect("request");
    req.headers_mut()
        .insert("sec-websocket-protocol", offered.parse().expect("header"));
    let (_ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("handshake");
    resp.headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test]
async fn unknown_subprotocols_are_echoed_for_browsers() {
    let (_dir, config) = cfg();
    let server = TestServer::start(config).await;
    assert_eq!(
        selected_subprotocol(&server, "app-v2, other")
            .await
            .as_deref(),
        Some("app-v2")
    );
    assert_eq!(
        selected_subprotocol(&server, "x, chorus.v1")
            .await
            .as_deref(),
        Some("chorus.v1")
    );
}
