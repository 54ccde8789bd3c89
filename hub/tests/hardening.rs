//! Issue 13's attacks, each against a real hub: what one hostile member can send must neither
//! take the node down nor reach the document. Before the fixes, the deep-nesting tests here
//! aborted the whole test process (a stack overflow inside yrs).

mod common;

use bytes::{Bytes, BytesMut};
use chorus_protocol::awareness::Entry;
use chorus_protocol::client::{Client, ClientOptions};
use chorus_protocol::lib0::{write_var_bytes, write_var_string, write_var_uint};
use chorus_protocol::sync::Message;
use common::*;
use yrs::{Array, Map, ReadTxn, Transact};

/// One value in root array `v` nested `d` arrays deep (the issue's crashing update).
fn deep_value(client: u64, d: usize) -> Bytes {
    Bytes::from(chorus_protocol::nesting::nested_value_update(
        client, "v", d,
    ))
}

/// A node that requires tokens signed with [`SECRET`] (no anonymous sessions).
fn with_tokens(dir: &std::path::Path) -> chorus_hub::Config {
    chorus_hub::Config {
        jwt_secret: Some(SECRET.into()),
        allow_anonymous: Some(false),
        ..test_config(dir)
    }
}

fn entries_in_v(doc: &yrs::Doc) -> u32 {
    let v = doc.get_or_insert_array("v");
    v.len(&doc.transact())
}

/// A counter's value in the node's /metrics (0 when absent). Metrics are process-wide and
/// tests run in parallel, so callers compare with what they caused at least.
async fn counter(server: &TestServer, series: &str) -> u64 {
    let metrics = server.get("/metrics").await.1;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn sender(server: &TestServer, room: &str) -> Client {
    server.client(room).await
}

#[tokio::test]
async fn deep_values_close_4422_and_the_node_keeps_serving() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let keep = server.client("deep").await;
    append(&keep, "t", "keep");

    // At the limit (root type 1 + 63 arrays = 64) the update is applied like any other.
    let ok = sender(&server, "deep").await;
    ok.send_update(&deep_value(11, 63)).expect("send");
    keep.wait_for("the value at the limit", PATIENCE, |_, doc| {
        entries_in_v(doc) == 1
    })
    .await
    .expect("applied");
    assert!(ok.closed().is_none());

    // One past it, and far past it (13 KB that used to abort the process), in both sync
    // messages: refused with 4422, nothing applied.
    for (client, d, step2) in [(12, 64, false), (13, 6_500, false), (14, 6_500, true)] {
        let bad = sender(&server, "deep").await;
        let u = deep_value(client, d);
        let msg = if step2 {
            Message::SyncStep2(u)
        } else {
            Message::Update(u)
        };
        bad.send_message(&msg).expect("send");
        let (code, reason) = bad.wait_closed(PATIENCE).await.expect("closed");
        assert_eq!(code, 4422, "depth {d}: {reason}");
    }
    let fresh = server.client("deep").await;
    assert_eq!(
        entries_in_v(fresh.doc()),
        1,
        "a refused update reached the document"
    );
    assert_eq!(text(&fresh, "t"), "keep");
    assert!(keep.closed().is_none());
    assert!(
        counter(
            &server,
            "chorus_limit_rejections_total{limit=\"nesting_depth\"}"
        )
        .await
            >= 3
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_reader_cannot_crash_the_node_with_a_deep_update_either() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = with_tokens(data.path());
    let server = TestServer::start(config).await;
    let read = token(serde_json::json!({ "role": "read" }));
    let url = format!("{}?token={read}", server.url("ro"));
    let reader = Client::connect(&url, ClientOptions::default())
        .await
        .expect("connect");
    reader.synced(PATIENCE).await.expect("synced");
    reader
        .send_message(&Message::Update(deep_value(15, 6_500)))
        .expect("send");
    assert_eq!(reader.wait_closed(PATIENCE).await.expect("closed").0, 4422);
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn nested_maps_one_level_per_update_stop_at_the_limit() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data.path());
    config.max_nesting_depth = 8;
    let server = TestServer::start(config).await;
    let keep = server.client("chain").await;
    let writer = sender(&server, "chain").await;
    let mut chain = chorus_persistence::testing::MapChain::new(21);
    // Root map 1, nested maps 2..=8.
    for _ in 2..=8 {
        writer.send_update(&chain.deeper()).expect("send");
    }
    let past = chain.deeper();
    writer.send_update(&past).expect("send");
    let (code, reason) = writer.wait_closed(PATIENCE).await.expect("closed");
    assert_eq!(code, 4422, "{reason}");
    // The seven levels within the limit arrived; the eighth nested map did not.
    let depth = |doc: &yrs::Doc| {
        let mut tip = doc.get_or_insert_map("root");
        let txn = doc.transact();
        let mut depth = 1;
        while let Some(yrs::Out::YMap(next)) = tip.get(&txn, "k") {
            depth += 1;
            tip = next;
        }
        depth
    };
    keep.wait_for("seven nested maps", PATIENCE, |_, doc| depth(doc) == 8)
        .await
        .expect("levels within the limit arrive");
    let fresh = server.client("chain").await;
    assert_eq!(depth(fresh.doc()), 8);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn the_hocuspocus_endpoint_refuses_deep_updates_too() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let opts = ClientOptions {
        hocuspocus: Some("hp-deep".into()),
        ..ClientOptions::default()
    };
    let url = format!("ws://{}/hocuspocus", server.addr);
    let bad = Client::connect(&url, opts).await.expect("connect");
    bad.synced(PATIENCE).await.expect("synced");
    let mut frame = BytesMut::new();
    write_var_string(&mut frame, "hp-deep");
    write_var_uint(&mut frame, 0);
    write_var_uint(&mut frame, 2);
    write_var_bytes(&mut frame, &deep_value(16, 6_500));
    bad.send_raw(frame.freeze()).expect("send");
    assert_eq!(bad.wait_closed(PATIENCE).await.expect("closed").0, 4422);
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_deep_update_already_in_the_store_is_skipped_at_load() {
    use chorus_persistence::{AppendBatch, DocStore, RoomKey, SqliteStore};
    let data = tempfile::tempdir().expect("tempdir");
    // Stored before the check existed: a good edit, then the crashing one.
    let good = {
        let doc = yrs::Doc::with_client_id(31);
        let t = doc.get_or_insert_text("t");
        yrs::Text::insert(&t, &mut doc.transact_mut(), 0, "stored");
        doc.transact()
            .encode_state_as_update_v1(&yrs::StateVector::default())
    };
    {
        let store = SqliteStore::open_file(&data.path().join("chorus.db"))
            .await
            .expect("store");
        store
            .append(&[AppendBatch {
                key: RoomKey::new("default", "legacy"),
                // Within the limit (root 1 + 63 arrays), one past it, and far past it.
                updates: vec![
                    Bytes::from(good),
                    deep_value(17, 63),
                    deep_value(20, 64),
                    deep_value(21, 6_500),
                ],
                events: Vec::new(),
                search_due: None,
            }])
            .await
            .expect("append");
    }
    let server = TestServer::start(test_config(data.path())).await;
    let c = server.client("legacy").await;
    assert_eq!(text(&c, "t"), "stored");
    assert_eq!(
        entries_in_v(c.doc()),
        1,
        "only the value at the limit loads"
    );
    append(&c, "t", "+live");
    let other = server.client("legacy").await;
    wait_text(&[&other], "t", "stored+live").await;
    assert!(counter(&server, "chorus_nesting_refusals_total{source=\"store\"}").await >= 2);
    server.stop().await.expect("stop");
}

/// A counter summed over all its label sets.
async fn counter_sum(server: &TestServer, name: &str) -> u64 {
    let metrics = server.get("/metrics").await.1;
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn a_peer_that_asks_without_reading_holds_one_answer_and_the_node_keeps_serving() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    // A document above the size whose encodes leave the runtime workers.
    let writer = server.client("flood").await;
    for i in 0..20 {
        append(&writer, "t", &format!("{i:04}{}", "x".repeat(10_000)));
    }
    let bystander = server.client("elsewhere").await;

    // The attacker never reads: every answer it asks for has to wait in its queue.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url("flood"))
        .await
        .expect("connect");
    let sv = {
        let mut sv = BytesMut::new();
        write_var_uint(&mut sv, 1);
        write_var_uint(&mut sv, 424_242);
        write_var_uint(&mut sv, 1);
        sv.freeze()
    };
    let mut frame = BytesMut::new();
    for _ in 0..32 {
        Message::SyncStep1(sv.clone()).encode_into(&mut frame);
        Message::QueryAwareness.encode_into(&mut frame);
    }
    let frame = frame.freeze();
    for _ in 0..200 {
        let sent = tokio::time::timeout(PATIENCE, ws.send(WsMessage::Binary(frame.clone()))).await;
        if !matches!(sent, Ok(Ok(()))) {
            break; // the node may close it as a slow consumer; that is fine too
        }
    }
    // 6,400 state requests: answers beyond what the socket took were coalesced in the queue,
    // not stacked (unit-tested in conn.rs: one waiting answer of each kind).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while counter(&server, "chorus_replies_coalesced_total{kind=\"state\"}").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer was coalesced"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(counter_sum(&server, "chorus_encodes_off_worker_total").await >= 1);
    // The node serves everyone else meanwhile.
    append(&bystander, "t", "still here");
    let fresh = server.client("elsewhere").await;
    wait_text(&[&fresh], "t", "still here").await;
    assert_eq!(server.get("/healthz").await.0, 200);
    drop(ws);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn tokens_are_checked_for_nbf_iat_and_tenant_and_sessions_end_when_they_expire() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = with_tokens(data.path());
    config.ping_interval = std::time::Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let connect = |t: String| {
        let url = format!("{}?token={t}", server.url("tok"));
        async move { Client::connect(&url, ClientOptions::default()).await }
    };
    let exp = now() + 600;
    for (what, claims) in [
        (
            "nbf in the future",
            serde_json::json!({ "exp": exp, "nbf": now() + 300 }),
        ),
        (
            "iat in the future",
            serde_json::json!({ "exp": exp, "iat": now() + 300 }),
        ),
        (
            "a tenant id that is not one",
            serde_json::json!({ "exp": exp, "tenant": "' OR 1=1--" }),
        ),
        (
            "a tenant with a slash",
            serde_json::json!({ "exp": exp, "tenant": "a/b" }),
        ),
    ] {
        let refused = connect(token(claims)).await.expect("upgrade");
        let (code, _) = refused.wait_closed(PATIENCE).await.expect("closed at once");
        assert_eq!(code, 4401, "{what}");
    }
    // A token that expires while its session is open ends the session with 4401.
    let short = token(serde_json::json!({ "exp": now() + 2 }));
    let c = connect(short).await.expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    let (code, reason) = c.wait_closed(PATIENCE).await.expect("closed at expiry");
    assert_eq!((code, reason.as_str()), (4401, "token expired"));
    server.stop().await.expect("stop");
}

/// Reads until the server closes the socket; `true` if it did within patience.
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_pending_sockets_are_capped() {
    use tokio::io::AsyncWriteExt;
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data.path());
    config.header_read_timeout = std::time::Duration::from_millis(300);
    config.max_pending_connections = 2;
    let server = TestServer::start(config).await;
    // Two sockets that send half a request line and stop (slowloris).
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        s.write_all(b"GET /healthz HT").await.expect("write");
        slow.push(s);
    }
    // While they wait, a third socket is over the cap: closed without an answer.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut third = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    assert!(closed_by_server(&mut third).await);
    // The slow ones are closed by the header timeout, and the node answers again.
    for s in &mut slow {
        assert!(closed_by_server(s).await, "a slow socket stayed open");
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if server.get("/healthz").await.0 == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A WebSocket holds no pending place once upgraded.
    let a = server.client("pending").await;
    let b = server.client("pending").await;
    let c = server.client("pending").await;
    append(&a, "t", "x");
    wait_text(&[&b, &c], "t", "x").await;
    server.stop().await.expect("stop");
}

/// What a WebSocket upgrade with extra headers meets: the HTTP status of a refused upgrade,
/// the close code of a socket accepted and closed at once (a refusal a retry cannot fix), or
/// 101 for a session that is served.
async fn upgrade_status(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> u16 {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    use tokio_tungstenite::tungstenite::{Error, Message as Ws};
    let mut req = format!("ws://{}{path}", server.addr)
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    let connected = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
        .await
        .expect("answer in time");
    let mut socket = match connected {
        Ok((socket, _)) => socket,
        Err(Error::Http(resp)) => return resp.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    };
    match tokio::time::timeout(PATIENCE, socket.next()).await {
        Ok(Some(Ok(Ws::Close(Some(frame))))) => frame.code.into(),
        Ok(Some(Ok(Ws::Close(None)))) => panic!("closed without a code"),
        // The hub speaks first in both dialects only once a session is served (y-websocket:
        // SyncStep1; Hocuspocus: nothing until the client authenticates, so time out).
        Ok(Some(Ok(_))) | Err(_) => 101,
        Ok(other) => panic!("socket ended without a close frame: {other:?}"),
    }
}

#[tokio::test]
async fn anonymous_sessions_are_only_for_local_pages_and_listed_origins_are_enforced() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let local = format!("127.0.0.1:{}", server.addr.port());
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let cases: [Case; 5] = [
        (&[], 101, "no Origin: not a browser"),
        (&[("origin", "http://localhost:5173")], 101, "a local page"),
        (
            &[("origin", "https://evil.example")],
            4403,
            "any web page the user opens",
        ),
        (
            &[
                ("origin", "http://evil.example"),
                ("host", "evil.example:8080"),
            ],
            4403,
            "DNS rebinding: a page on a name that resolves to loopback",
        ),
        (&[("origin", "null")], 4403, "a sandboxed or file page"),
    ];
    for (headers, want, what) in cases {
        let mut h = headers.to_vec();
        if !h.iter().any(|(k, _)| *k == "host") {
            h.push(("host", &local));
        }
        assert_eq!(upgrade_status(&server, "/ws/o", &h).await, want, "{what}");
    }
    // Hocuspocus authenticates inside the socket: the socket opens, anonymous documents don't.
    let opts = ClientOptions {
        hocuspocus: Some("o".into()),
        ..ClientOptions::default()
    };
    let url = format!("ws://{}/hocuspocus", server.addr);
    let local_doc = Client::connect(&url, opts).await.expect("connect");
    local_doc.synced(PATIENCE).await.expect("no Origin: served");
    server.stop().await.expect("stop");

    // With a list, tokens are held to it too.
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = with_tokens(data.path());
    config.allowed_origins = vec!["https://app.example".into()];
    let server = TestServer::start(config).await;
    let path = format!("/ws/o?token={}", token(serde_json::json!({})));
    assert_eq!(
        upgrade_status(&server, &path, &[("origin", "https://app.example")]).await,
        101
    );
    assert_eq!(
        upgrade_status(&server, &path, &[("origin", "https://other.example")]).await,
        4403
    );
    assert_eq!(
        upgrade_status(
            &server,
            "/hocuspocus",
            &[("origin", "https://other.example")]
        )
        .await,
        4403
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn guessing_api_key_secrets_is_bounded_per_key_id() {
    const OPERATOR: &str = "operator-key-for-hardening-0123456789abcdef";
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data.path());
    config.operator_key = Some(OPERATOR.into());
    config.allow_anonymous = Some(false);
    let server = TestServer::start(config).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let post = |path: &str, key: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let r = post(
        "/v1/tenants",
        OPERATOR,
        serde_json::json!({ "id": "guess", "name": "g" }),
    )
    .await
    .expect("tenant");
    assert_eq!(r.status(), 201);
    let r = post(
        "/v1/tenants/guess/api-keys",
        OPERATOR,
        serde_json::json!({ "name": "k" }),
    )
    .await
    .expect("key");
    let key: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    let key = key["key"].as_str().expect("key").to_string();
    let id = key
        .rsplit_once('.')
        .map(|(id, _)| id.to_string())
        .expect("tenant and id");
    let get = |k: String| {
        let http = http.clone();
        let url = format!("{base}/v1/rooms");
        async move {
            http.get(url)
                .bearer_auth(k)
                .send()
                .await
                .expect("answer")
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(key.clone()).await, 200);
    // The same wrong key twice: the second is refused from the cache of failures.
    let wrong = format!("{id}.not-the-secret");
    assert_eq!(get(wrong.clone()).await, 401);
    let before = counter(&server, "chorus_api_key_failures_cached_total").await;
    assert_eq!(get(wrong).await, 401);
    assert!(counter(&server, "chorus_api_key_failures_cached_total").await > before);
    // Thirty different guesses at once against one key id: argon2 runs for a few, the rest
    // are told to retry.
    let guesses = (0..30).map(|i| get(format!("{id}.guess-{i}")));
    let statuses = futures_util::future::join_all(guesses).await;
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 15,
        "{statuses:?}"
    );
    // The real key, verified before, still works (from the cache of verified keys).
    assert_eq!(get(key).await, 200);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn awareness_floods_are_dropped_and_a_node_wide_message_rate_applies() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data.path());
    config.awareness_bytes_per_second = 1_000;
    config.messages_per_second = 20;
    let server = TestServer::start(config).await;
    let mut flooder = server.client("aw-flood").await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(500));
    for _ in 0..10 {
        flooder.set_awareness(&big).expect("send");
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while counter(&server, "chorus_awareness_dropped_total").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no awareness was dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        flooder.closed().is_none(),
        "dropping presence does not close the sender"
    );
    // Past the node's default frame rate (no tenant setting): 4429.
    for _ in 0..100 {
        if flooder.send_message(&Message::QueryAwareness).is_err() {
            break;
        }
    }
    let (code, reason) = flooder.wait_closed(PATIENCE).await.expect("closed");
    assert_eq!(code, 4429, "{reason}");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn unauthenticated_hocuspocus_sockets_have_their_own_small_budget_and_deadline() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data.path());
    config.max_connections = 3;
    config.max_preauth_connections = Some(2);
    config.auth_timeout = std::time::Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let url = format!("ws://{}/hocuspocus", server.addr);
    // Two sockets that never authenticate fill the pre-auth budget, not the node's.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(
            tokio_tungstenite::connect_async(&url)
                .await
                .expect("upgrade")
                .0,
        );
    }
    assert_eq!(upgrade_status(&server, "/hocuspocus", &[]).await, 503);
    // Every node place is still there for sessions that authenticate.
    let a = server.client("preauth").await;
    let b = server.client("preauth").await;
    let c = server.client("preauth").await;
    append(&a, "t", "in");
    wait_text(&[&b, &c], "t", "in").await;
    // The deadline closes the idle ones (1008), which frees the budget.
    for mut s in idle {
        use futures_util::StreamExt;
        let closed = tokio::time::timeout(PATIENCE, async {
            while let Some(m) = s.next().await {
                if let Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f))) = m {
                    return Some(u16::from(f.code));
                }
            }
            None
        })
        .await
        .expect("closed in time");
        assert_eq!(closed, Some(1008));
    }
    drop((a, b, c));
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_tenant_gets_its_share_of_a_node_and_readers_record_no_rooms() {
    const OPERATOR: &str = "operator-key-for-hardening-0123456789abcdef";
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = with_tokens(data.path());
    config.operator_key = Some(OPERATOR.into());
    config.max_rooms = 6;
    config.max_connections = 6;
    config.ping_interval = std::time::Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let open = |room: &str, claims: serde_json::Value| {
        let url = format!("{}?token={}", server.url(room), token(claims));
        async move { Client::connect(&url, ClientOptions::default()).await }
    };
    // Tenant acme may hold half of the node's 6 rooms and half of its 6 connections.
    let acme = serde_json::json!({ "tenant": "acme" });
    let mut held = Vec::new();
    for room in ["r1", "r2", "r3"] {
        held.push(open(room, acme.clone()).await.expect("within the share"));
    }
    let path = format!("/ws/r4?token={}", token(acme.clone()));
    assert_eq!(
        upgrade_status(&server, &path, &[]).await,
        429,
        "a fourth room"
    );
    let path = format!("/ws/r1?token={}", token(acme));
    assert_eq!(
        upgrade_status(&server, &path, &[]).await,
        429,
        "a fourth connection"
    );
    // The node's own tenant is not held to a share, and still finds rooms.
    held.push(
        open("r4", serde_json::json!({}))
            .await
            .expect("default tenant"),
    );

    // A reader's visit records no room; a writer's does (rooms are recorded for tenants
    // that exist).
    let created = reqwest::Client::new()
        .post(format!("http://{}/v1/tenants", server.addr))
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "id": "rec", "name": "rec" }).to_string())
        .send()
        .await
        .expect("tenant");
    assert_eq!(created.status(), 201);
    let created: serde_json::Value =
        serde_json::from_slice(&created.bytes().await.expect("body")).expect("json");
    let secret = created["signing_key"]["secret"].as_str().expect("secret");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = created["signing_key"]["kid"].as_str().map(str::to_string);
    let tenant_token = |role: &str| {
        jsonwebtoken::encode(
            &header,
            &serde_json::json!({ "tenant": "rec", "rooms": ["*"], "role": role, "exp": now() + 600 }),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    // A tenant-key token may live at most 24 hours.
    let long = jsonwebtoken::encode(
        &header,
        &serde_json::json!({ "tenant": "rec", "rooms": ["*"], "iat": now(), "exp": now() + 48 * 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign");
    assert_eq!(
        upgrade_status(&server, &format!("/ws/long?token={long}"), &[]).await,
        4401
    );
    drop(held);
    let visit = |room: &str, role: &str| {
        let url = format!("{}?token={}", server.url(room), tenant_token(role));
        async move { Client::connect(&url, ClientOptions::default()).await }
    };
    let reader = visit("visit-ro", "read").await.expect("reader");
    reader.synced(PATIENCE).await.expect("synced");
    let writer = visit("visit-rw", "write").await.expect("writer");
    writer.synced(PATIENCE).await.expect("synced");
    // Recording happens in the background: wait for the writer's room to show.
    let list = || async {
        reqwest::Client::new()
            .get(format!("http://{}/v1/rooms", server.addr))
            .bearer_auth(OPERATOR)
            .header("chorus-tenant", "rec")
            .send()
            .await
            .expect("list")
            .text()
            .await
            .expect("body")
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let body = loop {
        let body = list().await;
        if body.contains("visit-rw") || tokio::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(body.contains("visit-rw"), "{body}");
    assert!(!body.contains("visit-ro"), "{body}");
    // Revoking the key that signed their tokens ends the open sessions (4401).
    let kid = header.kid.clone().expect("kid");
    let revoked = reqwest::Client::new()
        .delete(format!("http://{}/v1/keys/{kid}", server.addr))
        .bearer_auth(OPERATOR)
        .header("chorus-tenant", "rec")
        .send()
        .await
        .expect("revoke");
    assert!(revoked.status().is_success(), "{}", revoked.status());
    for c in [&reader, &writer] {
        let (code, reason) = c.wait_closed(PATIENCE).await.expect("closed");
        assert_eq!((code, reason.as_str()), (4401, "token key revoked"));
    }
    server.stop().await.expect("stop");
}
#[tokio::test]
async fn one_hocuspocus_socket_cannot_open_documents_in_a_loop() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let opts = ClientOptions {
        hocuspocus: Some("loop-0".into()),
        ..ClientOptions::default()
    };
    let url = format!("ws://{}/hocuspocus", server.addr);
    let c = Client::connect(&url, opts).await.expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    // Open and close documents in a loop: past the first burst, opens are refused.
    for i in 1..400 {
        let address = format!("loop-{i}");
        let p = chorus_protocol::hocuspocus::address_prefix(&address);
        if c.send_raw(chorus_protocol::hocuspocus::auth(&p, "", "4.8.0"))
            .is_err()
        {
            break;
        }
        let mut close = BytesMut::new();
        write_var_string(&mut close, &address);
        write_var_uint(&mut close, chorus_protocol::hocuspocus::kind::CLOSE);
        let _ = c.send_raw(close.freeze());
    }
    c.wait_for("a refusal for opening too fast", PATIENCE, |s, _| {
        s.denied.iter().any(|d| d.contains("too fast"))
    })
    .await
    .expect("refused");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn presence_ids_belong_to_their_first_connection_and_tokens_name_their_members() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = with_tokens(data.path());
    let server = TestServer::start(config).await;
    let join = |claims: serde_json::Value| {
        let url = format!("{}?token={}", server.url("who"), token(claims));
        async move {
            let c = Client::connect(&url, ClientOptions::default())
                .await
                .expect("connect");
            c.synced(PATIENCE).await.expect("synced");
            c
        }
    };
    let mut alice =
        join(serde_json::json!({ "sub": "alice", "name": "Alice", "color": "#f00" })).await;
    let bob = join(serde_json::json!({ "sub": "bob" })).await;
    let watcher = join(serde_json::json!({ "sub": "carol" })).await;
    // Alice claims to be Mallory; the token's name and colour are what others see.
    alice
        .set_awareness(r##"{"user":{"name":"Mallory","color":"#000"},"cursor":1}"##)
        .expect("send");
    let alice_id = alice.doc().client_id().get();
    let shown = |w: &Client| {
        w.state()
            .awareness
            .get(&alice_id)
            .map(|(_, s)| serde_json::from_str::<serde_json::Value>(s).expect("json"))
    };
    watcher
        .wait_for("alice's state", PATIENCE, |s, _| {
            s.awareness.contains_key(&alice_id)
        })
        .await
        .expect("arrives");
    let state = shown(&watcher).expect("state");
    assert_eq!(state["user"]["name"], "Alice");
    assert_eq!(state["user"]["color"], "#f00");
    assert_eq!(state["cursor"], 1);
    // Bob tries to take over and then to remove Alice's id: neither happens.
    let forged = [
        Entry {
            client_id: alice_id,
            clock: 50,
            state: Bytes::from_static(br#"{"user":{"name":"Alice"},"cursor":666}"#),
        },
        Entry {
            client_id: alice_id,
            clock: 51,
            state: Bytes::from_static(b"null"),
        },
    ];
    for e in &forged {
        bob.send_message(&Message::Awareness(
            chorus_protocol::awareness::encode_update([e]),
        ))
        .expect("send");
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while counter(&server, "chorus_awareness_foreign_ids_total").await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "forgeries not refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A later change of Alice's own still arrives, at her own clock.
    alice
        .set_awareness(r#"{"user":{"name":"Alice"},"cursor":2}"#)
        .expect("send");
    watcher
        .wait_for("alice's second state", PATIENCE, |s, _| {
            s.awareness
                .get(&alice_id)
                .is_some_and(|(_, st)| st.contains("\"cursor\":2"))
        })
        .await
        .expect("alice keeps her id");
    assert!(bob.closed().is_none());
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn metrics_can_move_to_their_own_address() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data.path());
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics_addr = free.local_addr().expect("addr");
    drop(free);
    config.metrics_listen = Some(metrics_addr);
    let server = TestServer::start(config).await;
    assert_eq!(server.get("/metrics").await.0, 404);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (status, body) = loop {
        if tokio::net::TcpStream::connect(metrics_addr).await.is_ok() {
            break http_get(metrics_addr, "/metrics").await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics listener never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(status, 200);
    assert!(body.contains("chorus_"), "{body}");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_session_renews_its_token_in_band_before_it_expires() {
    use chorus_protocol::ext::ServerMessage;
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = with_tokens(data.path());
    config.ping_interval = std::time::Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let connect = |t: String| {
        let url = format!("{}?token={t}", server.url("renew"));
        async move {
            let c = Client::connect(
                &url,
                ClientOptions {
                    ext: true,
                    ..ClientOptions::default()
                },
            )
            .await
            .expect("connect");
            c.synced(PATIENCE).await.expect("synced");
            c
        }
    };
    let old_exp = now() + 2;
    let c = connect(token(serde_json::json!({ "exp": old_exp }))).await;
    let fresh_exp = now() + 600;
    let fresh = token(serde_json::json!({ "exp": fresh_exp }));
    c.send_text(&format!(r#"{{"v":1,"type":"auth","token":"{fresh}"}}"#))
        .expect("send");
    c.wait_for("authenticated", PATIENCE, |s, _| {
        s.events
            .contains(&ServerMessage::Authenticated { expires: fresh_exp })
    })
    .await
    .expect("renewed");
    // Past the old expiry (and a few ticks), the session goes on.
    while now() <= old_exp + 1 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(c.closed().is_none(), "closed despite the renewal");
    // A token for another role, or a bad one, ends the session.
    let reader = token(serde_json::json!({ "role": "read" }));
    c.send_text(&format!(r#"{{"v":1,"type":"auth","token":"{reader}"}}"#))
        .expect("send");
    assert_eq!(c.wait_closed(PATIENCE).await.expect("closed").0, 4403);
    let d = connect(token(serde_json::json!({}))).await;
    d.send_text(r#"{"v":1,"type":"auth","token":"not-a-token"}"#)
        .expect("send");
    assert_eq!(d.wait_closed(PATIENCE).await.expect("closed").0, 4401);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_hocuspocus_document_closes_when_its_token_expires() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = with_tokens(data.path());
    config.ping_interval = std::time::Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let opts = ClientOptions {
        hocuspocus: Some("hp-exp".into()),
        token: Some(token(serde_json::json!({ "exp": now() + 2 }))),
        ..ClientOptions::default()
    };
    let url = format!("ws://{}/hocuspocus", server.addr);
    let c = Client::connect(&url, opts).await.expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    c.wait_for("the document's expiry", PATIENCE, |s, _| {
        s.denied.iter().any(|d| d.contains("token expired"))
    })
    .await
    .expect("closed at expiry");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn the_hocuspocus_endpoint_applies_an_update_at_the_limit() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let opts = ClientOptions {
        hocuspocus: Some("hp-limit".into()),
        ..ClientOptions::default()
    };
    let url = format!("ws://{}/hocuspocus", server.addr);
    let c = Client::connect(&url, opts).await.expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    c.send_update(&deep_value(18, 63)).expect("send");
    let reader = server.client("hp-limit").await;
    reader
        .wait_for("the value at the limit", PATIENCE, |_, doc| {
            entries_in_v(doc) == 1
        })
        .await
        .expect("applied");
    c.send_update(&deep_value(19, 64)).expect("send");
    assert_eq!(c.wait_closed(PATIENCE).await.expect("closed").0, 4422);
    let fresh = server.client("hp-limit").await;
    assert_eq!(entries_in_v(fresh.doc()), 1);
    server.stop().await.expect("stop");
}
