//! Cluster membership against the real Redis (`CHORUS_TEST_REDIS_URL`, default
//! redis://127.0.0.1:6379): nodes register, agree on every room's home, leave on shutdown, and
//! a node that stops beating drops out after its TTL. Each test uses its own key prefix.
//! Without Redis these tests skip loudly, unless `CI` is set: then they fail.

mod common;

use std::time::Duration;

use chorus_hub::Config;
use common::services::*;
use common::*;
use fred::prelude::{ClientLike, Expiration, KeysInterface, SetsInterface};

fn node_config(dir: &std::path::Path, prefix: &str, id: &str, ttl: Duration) -> Config {
    Config {
        redis_url: Some(redis_url()),
        redis_prefix: prefix.to_string(),
        node_id: Some(id.to_string()),
        node_ttl: ttl,
        ..test_config(dir)
    }
}

async fn route(addr: std::net::SocketAddr, room: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, &format!("/v1/route?room={room}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("route json")
}

/// Waits until `server`'s ring holds `nodes` nodes.
async fn wait_ring(server: &TestServer, nodes: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = route(server.addr, "any").await;
        if r["nodes"] == nodes {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ring never reached {nodes} nodes: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two nodes from `config(id)`: A first (serving means it migrated the data directory, which B
/// may share), then B; returns once each sees both in its ring.
async fn two_nodes(config: impl Fn(&str) -> Config) -> (TestServer, TestServer) {
    let a = TestServer::start(config("node-a")).await;
    assert_eq!(a.get("/healthz").await.0, 200);
    let b = TestServer::start(config("node-b")).await;
    wait_ring(&a, 2).await;
    wait_ring(&b, 2).await;
    (a, b)
}

/// [`two_nodes`] sharing one data directory (as they would share Postgres), with a key prefix
/// of their own for `test`; the directory lives as long as the returned guard.
async fn paired(test: &str, ttl: Duration) -> (tempfile::TempDir, TestServer, TestServer) {
    let prefix = unique_prefix(test);
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = two_nodes(|id| node_config(dir.path(), &prefix, id, ttl)).await;
    (dir, a, b)
}

#[tokio::test]
async fn nodes_sharing_redis_agree_on_every_rooms_home_and_leave_on_shutdown() {
    let Some(_redis) = redis().await else { return };
    let prefix = unique_prefix("agree");
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    // A TTL far beyond the test's patience: only leaving can take a node out in time.
    let ttl = Duration::from_secs(120);
    let a = TestServer::start(node_config(da.path(), &prefix, "node-a", ttl)).await;
    let b = TestServer::start(node_config(db.path(), &prefix, "node-b", ttl)).await;
    wait_ring(&a, 2).await;
    wait_ring(&b, 2).await;
    let mut homes = std::collections::HashSet::new();
    for i in 0..40 {
        let room = format!("doc-{i}");
        let (ra, rb) = (route(a.addr, &room).await, route(b.addr, &room).await);
        assert_eq!(ra["node"], rb["node"], "{room}: {ra} vs {rb}");
        assert_eq!(ra["url"], rb["url"]);
        assert_ne!(
            ra["local"], rb["local"],
            "exactly one node is {room}'s home"
        );
        let url = if ra["node"] == "node-a" {
            a.addr
        } else {
            b.addr
        };
        assert_eq!(ra["url"], format!("http://{url}"));
        homes.insert(ra["node"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(homes.len(), 2, "both nodes are home to some of 40 rooms");

    // A node that shuts down leaves at once, long before its TTL would expire.
    b.stop().await.expect("stop b");
    wait_ring(&a, 1).await;
    for i in 0..10 {
        let r = route(a.addr, &format!("doc-{i}")).await;
        assert_eq!(
            (r["node"].as_str(), r["local"].as_bool()),
            (Some("node-a"), Some(true))
        );
    }
    a.stop().await.expect("stop a");
}

#[tokio::test]
async fn a_node_that_stops_beating_drops_out_after_its_ttl() {
    let Some(redis) = redis().await else { return };
    let prefix = unique_prefix("ttl");
    // A node that died without leaving (kill -9): its entry is there, its heartbeats stop.
    let ghost = serde_json::json!({ "id": "ghost", "url": "http://127.0.0.9:1" }).to_string();
    let _: () = redis
        .set(
            format!("{{{prefix}}}:node:ghost"),
            ghost,
            Some(Expiration::PX(3_000)),
            None,
            false,
        )
        .await
        .expect("set");
    let _: () = redis
        .sadd(format!("{{{prefix}}}:nodes"), "ghost")
        .await
        .expect("sadd");
    let dir = tempfile::tempdir().expect("dir");
    let a = TestServer::start(node_config(
        dir.path(),
        &prefix,
        "node-a",
        Duration::from_millis(900),
    ))
    .await;
    assert_eq!(
        route(a.addr, "any").await["nodes"],
        2,
        "the ghost is live until its TTL"
    );
    wait_ring(&a, 1).await;
    let still: bool = redis
        .sismember(format!("{{{prefix}}}:nodes"), "ghost")
        .await
        .expect("sismember");
    assert!(!still, "the expired node was dropped from the member set");
    a.stop().await.expect("stop");
    let left: Vec<String> = redis
        .smembers(format!("{{{prefix}}}:nodes"))
        .await
        .expect("smembers");
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}

#[tokio::test]
async fn alone_every_room_is_local_and_bad_queries_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(test_config(dir.path())).await;
    let r = route(server.addr, "some%2Froom").await;
    assert_eq!(r["room"], "some/room");
    assert_eq!(r["local"], true);
    assert_eq!(r["nodes"], 1);
    assert_eq!(r["url"], format!("http://{}", server.addr));
    for (query, detail) in [
        ("/v1/route", "missing ?room="),
        ("/v1/route?room=", "room name is empty"),
        ("/v1/route?room=a%01b", "control characters"),
        ("/v1/route?room=a&node=b", "unknown field"),
    ] {
        let (status, body) = server.get(query).await;
        assert_eq!(status, 400, "{query}: {body}");
        let problem: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            problem["status"], 400,
            "{query}: an RFC 9457 problem: {body}"
        );
        assert!(body.contains(detail), "{query}: {body}");
    }
    let (status, body) = server.get("/readyz").await;
    assert_eq!((status, body.contains("\"ready\"")), (200, true), "{body}");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn without_redis_a_clustered_node_serves_alone_and_reports_degraded() {
    // Nothing listens on port 1: the node must start, serve and say so.
    let dir = tempfile::tempdir().expect("dir");
    let config = Config {
        redis_url: Some("redis://127.0.0.1:1".into()),
        node_ttl: Duration::from_millis(900),
        ..test_config(dir.path())
    };
    let server = TestServer::start(config).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("degraded") && body.contains("redis"),
        "{body}"
    );
    assert_eq!(route(server.addr, "r").await["local"], true);
    let c = server.client("still-served").await;
    append(&c, "t", "hello");
    let d = server.client("still-served").await;
    wait_text(&[&d], "t", "hello").await;
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn updates_cross_nodes_once_and_a_room_opening_late_catches_up() {
    let Some(_redis) = redis().await else { return };
    let (dir, a, b) = paired("fanout", Duration::from_millis(900)).await;

    let on_a = a.client("shared").await;
    let on_b = b.client("shared").await;
    append(&on_a, "t", "hello ");
    wait_text(&[&on_b], "t", "hello ").await;
    append(&on_b, "t", "world");
    wait_text(&[&on_a, &on_b], "t", "hello world").await;

    // Written on A only; B opens the room afterwards and asks the others for what it lacks
    // (whether or not A has stored it yet).
    let early = a.client("late").await;
    append(&early, "t", "before B opened it");
    let late = b.client("late").await;
    wait_text(&[&late], "t", "before B opened it").await;
    append(&late, "t", "!");
    wait_text(&[&early], "t", "before B opened it!").await;

    drop((on_a, on_b, early, late));
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
    // Each update is stored once, by the node its client sent it to.
    let store = chorus_persistence::SqliteStore::open_file(&dir.path().join("chorus.db"))
        .await
        .expect("open");
    use chorus_persistence::DocStore;
    for (room, edits) in [("shared", 2), ("late", 2)] {
        let loaded = store
            .load(&chorus_persistence::RoomKey::new("default", room))
            .await
            .expect("load");
        assert_eq!(loaded.updates.len(), edits, "{room}: each edit stored once");
    }
}

#[tokio::test]
async fn a_skipped_number_makes_the_room_ask_for_a_resync_and_strangers_are_ignored() {
    use chorus_hub::cluster::envelope::{Envelope, Payload};
    use fred::interfaces::{EventInterface, PubsubInterface};
    use yrs::Transact;
    let Some(redis) = redis().await else { return };
    let prefix = unique_prefix("gap");
    let dir = tempfile::tempdir().expect("dir");
    let a = TestServer::start(node_config(
        dir.path(),
        &prefix,
        "node-a",
        Duration::from_millis(900),
    ))
    .await;
    let member = a.client("gap").await;
    let channel = format!("{prefix}:room:default/gap");
    let listener = fred::clients::SubscriberClient::new(
        fred::prelude::Config::from_url(&redis_url()).expect("url"),
        None,
        None,
        None,
    );
    listener.init().await.expect("subscriber");
    let mut heard = listener.message_rx();
    listener
        .subscribe(channel.as_str())
        .await
        .expect("subscribe");

    // Another node's two edits, numbered 1 and 3: number 2 never arrived.
    let (first, second) = chorus_persistence::testing::consecutive_edits(77, "x", "y");
    let publish = |body: bytes::Bytes| {
        let redis = redis.clone();
        let channel = channel.clone();
        async move {
            let _: () = redis.publish(channel, body).await.expect("publish");
        }
    };
    publish(bytes::Bytes::from_static(b"not an envelope")).await;
    // Messages that do not decode or nest too deeply are dropped; the room keeps serving.
    for junk in hostile_envelopes() {
        publish(junk.encode()).await;
    }
    for (seq, update) in [(1, first), (3, second)] {
        let e = Envelope {
            origin: "ghost".into(),
            seq,
            trace: None,
            payload: Payload::Update(update),
        };
        publish(e.encode()).await;
    }
    wait_text(&[&member], "t", "xy").await;
    // Of the nested values, only the one at the limit was applied.
    let v_len = |doc: &yrs::Doc| {
        use yrs::Array;
        let v = doc.get_or_insert_array("v");
        v.len(&doc.transact())
    };
    member
        .wait_for("the value at the limit", PATIENCE, |_, doc| v_len(doc) == 1)
        .await
        .expect("applied");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, heard.recv())
            .await
            .expect("node-a asked for a resync after the gap")
            .expect("message");
        let Some(e) = msg.value.into_bytes().and_then(Envelope::decode) else {
            continue;
        };
        if e.origin == "node-a" && matches!(e.payload, Payload::SyncRequest(_)) {
            break;
        }
    }

    // A node that asks with a state vector ahead of ours holds something we never received
    // (its publish was lost, and no later number shows it): we ask it back.
    let ask = sync_request_from_ahead("other");
    publish(ask.encode()).await;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, heard.recv())
            .await
            .expect("node-a asked back")
            .expect("message");
        let Some(e) = msg.value.into_bytes().and_then(Envelope::decode) else {
            continue;
        };
        // Its answer to "other" comes first (what "other" lacks of ours), then its question.
        if e.origin == "node-a" && matches!(e.payload, Payload::SyncRequest(_)) {
            break;
        }
    }
    a.stop().await.expect("stop");
}

#[tokio::test]
async fn presence_crosses_nodes_and_leaves_with_its_member() {
    let Some(_redis) = redis().await else { return };
    let (_dir, a, b) = paired("presence", Duration::from_millis(900)).await;
    let mut on_a = a.client("cursors").await;
    let on_b = b.client("cursors").await;
    let id = on_a.doc().client_id().get();
    on_a.set_awareness(r#"{"user":"ada","cursor":7}"#)
        .expect("awareness");
    on_b.wait_for("ada's state on the other node", PATIENCE, move |s, _| {
        s.awareness
            .get(&id)
            .is_some_and(|(_, json)| json.contains("ada"))
    })
    .await
    .expect("presence crossed nodes");
    on_a.close().await;
    on_b.wait_for("ada's state removed", PATIENCE, move |s, _| {
        !s.awareness.contains_key(&id)
    })
    .await
    .expect("the removal crossed nodes");
    drop(on_b);
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

async fn wait_ready(server: &TestServer, want: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, body) = server.get("/readyz").await;
        if body.contains(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never said {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn nodes_serve_through_a_redis_outage_and_converge_when_it_returns() {
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let config = |id: &str| Config {
        redis_url: Some(redis.url()),
        ..node_config(dir.path(), "outage", id, Duration::from_millis(900))
    };
    let (a, b) = two_nodes(config).await;
    let on_a = a.client("outage").await;
    let on_b = b.client("outage").await;
    append(&on_a, "t", "a1 ");
    wait_text(&[&on_b], "t", "a1 ").await;

    redis.kill();
    wait_ready(&a, "degraded").await;
    // Each node keeps serving its own members; the other side's edits wait for Redis.
    append(&on_a, "t", "a2 ");
    append(&on_b, "u", "b1");
    let also_on_a = a.client("outage").await;
    wait_text(&[&also_on_a], "t", "a1 a2 ").await;

    assert!(redis.spawn(), "redis-server restarts");
    wait_ready(&a, "\"ready\"").await;
    wait_ready(&b, "\"ready\"").await;
    // Rooms resync after the reconnection: everything written during the outage arrives.
    wait_text(&[&on_a, &on_b, &also_on_a], "t", "a1 a2 ").await;
    wait_text(&[&on_a, &on_b, &also_on_a], "u", "b1").await;
    drop((on_a, on_b, also_on_a));
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

fn ext() -> chorus_protocol::client::ClientOptions {
    chorus_protocol::client::ClientOptions {
        ext: true,
        ..Default::default()
    }
}

async fn connect(
    addr: std::net::SocketAddr,
    room: &str,
    ext_on: bool,
) -> chorus_protocol::client::Client {
    let opts = if ext_on { ext() } else { Default::default() };
    let c = chorus_protocol::client::Client::connect(&format!("ws://{addr}/ws/{room}"), opts)
        .await
        .expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    c
}

/// Waits until every client holds one text `t` that contains every word of `words`.
async fn wait_converged(clients: &[&chorus_protocol::client::Client], words: &[String]) {
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    loop {
        let texts: Vec<String> = clients.iter().map(|c| text(c, "t")).collect();
        let complete = words.iter().all(|w| texts[0].contains(w.as_str()));
        if complete && texts.iter().all(|t| *t == texts[0]) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence on every edit: {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The counter `name` of the node at `addr` (0 before it first counts).
async fn counter(addr: std::net::SocketAddr, name: &str) -> u64 {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().expect("counter") as u64)
}

async fn compactions(addr: std::net::SocketAddr) -> u64 {
    counter(addr, "chorus_compactions_total").await
}

/// Waits until the node at `addr` has compacted (`failure` says what did not happen).
async fn wait_compacted(addr: std::net::SocketAddr, failure: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while compactions(addr).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "{failure}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kill_9_of_a_node_mid_edits_loses_no_acknowledged_update() {
    use chorus_protocol::ext::ServerMessage;
    let Some(_redis) = redis().await else { return };
    let Some(db) = chorus_persistence::testing::TestDatabase::create().await else {
        return;
    };
    let prefix = unique_prefix("kill9");
    let (mut n1, a1) = spawn_node(db.url(), &prefix, "node-1", &[]).await;
    let (mut n2, a2) = spawn_node(db.url(), &prefix, "node-2", &[]).await;
    let (mut n3, a3) = spawn_node(db.url(), &prefix, "node-3", &[]).await;
    let writer = connect(a1, "crash", true).await;
    let on_2 = connect(a2, "crash", false).await;
    let on_3 = connect(a3, "crash", false).await;
    for i in 0..20 {
        append(&writer, "t", &format!("w{i};"));
        append(&on_2, "t", &format!("x{i};"));
    }
    // The writer's first 20 edits are acknowledged as saved (message 1 is its SyncStep2).
    writer
        .wait_for("saved", PATIENCE, |s, _| {
            s.events
                .iter()
                .any(|e| matches!(e, ServerMessage::Saved { updates } if *updates >= 21))
        })
        .await
        .expect("saved");
    // More edits in flight, then the node dies without a word.
    for i in 20..30 {
        append(&writer, "t", &format!("w{i};"));
    }
    n1.start_kill().expect("kill -9");
    let _ = n1.wait().await;
    drop(writer);

    // Its client comes back on another node; everyone converges on one text that holds every
    // acknowledged edit (later ones may or may not have made it).
    let back = connect(a2, "crash", false).await;
    let acked: Vec<String> = (0..20)
        .flat_map(|i| [format!("w{i};"), format!("x{i};")])
        .collect();
    wait_converged(&[&back, &on_2, &on_3], &acked).await;
    // And a fresh node loading from the database has them too.
    drop((back, on_2, on_3));
    let _ = n2.start_kill();
    let _ = n3.start_kill();
    let (mut n4, a4) = spawn_node(db.url(), &prefix, "node-4", &[]).await;
    let fresh = connect(a4, "crash", false).await;
    let stored = text(&fresh, "t");
    for i in 0..20 {
        assert!(stored.contains(&format!("w{i};")), "w{i} lost: {stored}");
    }
    let _ = n4.start_kill();
}

#[tokio::test]
async fn a_draining_node_names_each_rooms_next_home_and_the_room_carries_on_there() {
    let Some(_redis) = redis().await else { return };
    let (_dir, a, b) = paired("drain", Duration::from_secs(120)).await;
    let on_a = a.client("moving").await;
    let on_b = b.client("moving").await;
    append(&on_a, "t", "before ");
    wait_text(&[&on_b], "t", "before ").await;
    let b_addr = b.addr;

    a.stop().await.expect("stop a");
    let (code, reason) = on_a
        .wait_for("closed", PATIENCE, |s, _| s.closed.is_some())
        .await
        .ok()
        .and_then(|()| on_a.closed())
        .expect("closed by the drain");
    assert_eq!(code, 1012);
    assert_eq!(
        reason,
        format!("server shutting down; next: http://{b_addr}")
    );
    // Its member reconnects where the hint says, to the same document.
    wait_ring(&b, 1).await;
    let back = b.client("moving").await;
    wait_text(&[&back], "t", "before ").await;
    append(&back, "t", "after");
    wait_text(&[&on_b, &back], "t", "before after").await;
    drop((back, on_b));
    b.stop().await.expect("stop b");
}

async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: &str,
    body: &str,
) -> (u16, String) {
    http_request(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

#[tokio::test]
async fn keys_revoked_on_one_node_stop_working_on_the_others_at_once() {
    let Some(_redis) = redis().await else { return };
    let prefix = unique_prefix("revoke");
    let dir = tempfile::tempdir().expect("dir");
    let operator = "operator-key-for-the-cluster-test-0123456789";
    let config = |id: &str| Config {
        operator_key: Some(operator.into()),
        ..node_config(dir.path(), &prefix, id, Duration::from_millis(900))
    };
    let (a, b) = two_nodes(config).await;

    let (status, body) = call(a.addr, "POST", "/v1/tenants", operator, r#"{"id":"acme"}"#).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(a.addr, "POST", "/v1/tenants/acme/api-keys", operator, "{}").await;
    assert_eq!(status, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("json");
    let key = created["key"].as_str().expect("key").to_string();
    let key_id = created["key_id"].as_str().expect("key_id").to_string();
    // B verifies the key once and caches it (30 s).
    assert_eq!(call(b.addr, "GET", "/v1/rooms", &key, "").await.0, 200);

    // Stray or malformed invalidations are dropped; the node keeps serving.
    {
        use fred::interfaces::PubsubInterface;
        let redis = redis().await.expect("redis");
        for junk in ["not json", r#"{"tenant":7}"#] {
            let _: () = redis
                .publish(format!("{prefix}:changes"), junk)
                .await
                .expect("publish");
        }
    }
    assert_eq!(call(b.addr, "GET", "/v1/rooms", &key, "").await.0, 200);

    // A token verification key revoked on A stops opening rooms on B, which cached it.
    let (status, body) = call(
        a.addr,
        "POST",
        "/v1/keys",
        &key,
        r#"{"alg":"HS256","kid":"k1"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("json");
    let secret = created["secret"].as_str().expect("secret").to_string();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({ "tenant": "acme", "rooms": ["r"], "role": "write", "exp": now() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign");
    let ws = format!("ws://{}/ws/r?token={token}", b.addr);
    let opened = chorus_protocol::client::Client::connect(&ws, Default::default())
        .await
        .expect("B accepts the new key");
    drop(opened);
    assert_eq!(call(a.addr, "DELETE", "/v1/keys/k1", &key, "").await.0, 204);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        use chorus_protocol::client::Client;
        let client = Client::connect(&ws, Default::default())
            .await
            .expect("upgrade");
        // Refused for good: accepted and closed at once with 4401.
        match client.wait_closed(Duration::from_millis(300)).await {
            Ok((code, reason)) => {
                assert_eq!(code, 4401, "refused for another reason: {reason}");
                break;
            }
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "node B still accepts tokens of the revoked key"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let path = format!("/v1/tenants/acme/api-keys/{key_id}");
    assert_eq!(call(a.addr, "DELETE", &path, operator, "").await.0, 204);
    // Far sooner than B's cache would expire.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (status, _) = call(b.addr, "GET", "/v1/rooms", &key, "").await;
        if status == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B still accepts the revoked key: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

#[tokio::test]
async fn a_rolling_restart_of_every_node_under_edits_loses_nothing() {
    use chorus_protocol::ext::ServerMessage;
    let Some(_redis) = redis().await else { return };
    let prefix = unique_prefix("rolling");
    let dir = tempfile::tempdir().expect("dir");
    let ttl = Duration::from_millis(900);
    let ids = ["node-1", "node-2", "node-3"];
    let mut nodes = Vec::new();
    for id in ids {
        let n = TestServer::start(node_config(dir.path(), &prefix, id, ttl)).await;
        // One at a time: each must have migrated the shared file before the next starts.
        assert_eq!(n.get("/healthz").await.0, 200);
        nodes.push(Some(n));
    }
    async fn saved(c: &chorus_protocol::client::Client, n: u64) {
        c.wait_for("saved", PATIENCE, move |s, _| {
            s.events
                .iter()
                .any(|e| matches!(e, ServerMessage::Saved { updates } if *updates >= n))
        })
        .await
        .expect("saved");
    }
    let mut writers = Vec::new();
    for n in nodes.iter().flatten() {
        writers.push((n.addr, connect(n.addr, "rolling", true).await, 0u64));
    }
    let mut expected = Vec::new();
    let edit = |w: &mut (std::net::SocketAddr, chorus_protocol::client::Client, u64),
                who: usize,
                i: usize| {
        let word = format!("n{who}e{i};");
        append(&w.1, "t", &word);
        w.2 += 1;
        word
    };
    for (round, id) in ids.iter().enumerate() {
        // Everyone writes; every edit so far is acknowledged.
        for (who, w) in writers.iter_mut().enumerate() {
            for i in 0..5 {
                expected.push(edit(w, who, round * 100 + i));
            }
        }
        for w in &writers {
            saved(&w.1, 1 + w.2).await;
        }
        // Restart one node while the others keep writing.
        let old = nodes[round].take().expect("running");
        let stopping = tokio::spawn(async move { old.stop().await });
        for (who, w) in writers.iter_mut().enumerate() {
            if who != round {
                for i in 50..53 {
                    expected.push(edit(w, who, round * 100 + i));
                }
            }
        }
        stopping.await.expect("join").expect("graceful stop");
        let fresh = TestServer::start(node_config(dir.path(), &prefix, id, ttl)).await;
        // Its writer reconnects there (a new session, counting from its SyncStep2).
        let c = connect(fresh.addr, "rolling", true).await;
        writers[round] = (fresh.addr, c, 0);
        nodes[round] = Some(fresh);
    }
    // Everyone converges on a text holding every edit.
    let clients: Vec<_> = writers.iter().map(|w| &w.1).collect();
    wait_converged(&clients, &expected).await;
    drop(writers);
    for n in nodes.into_iter().flatten() {
        n.stop().await.expect("stop");
    }
    // And the store holds all of it.
    let n = TestServer::start(node_config(dir.path(), &prefix, "node-9", ttl)).await;
    let reader = n.client("rolling").await;
    let stored = text(&reader, "t");
    for w in &expected {
        assert!(stored.contains(w.as_str()), "{w} lost: {stored}");
    }
    drop(reader);
    n.stop().await.expect("stop");
}

#[tokio::test]
async fn a_redis_cluster_url_selects_sharded_pub_sub() {
    let Some(redis) = OwnRedisCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let config = |id: &str| Config {
        redis_url: Some(format!("redis-cluster://127.0.0.1:{}", redis.ports[0])),
        ..node_config(dir.path(), "sharded", id, Duration::from_millis(900))
    };
    let (a, b) = two_nodes(config).await;
    let on_a = a.client("sharded-room").await;
    let on_b = b.client("sharded-room").await;
    append(&on_a, "t", "over ");
    wait_text(&[&on_b], "t", "over ").await;
    append(&on_b, "t", "shards");
    wait_text(&[&on_a, &on_b], "t", "over shards").await;
    assert_eq!(
        redis.shard_subscribers("sharded:room:default/sharded-room"),
        2,
        "both nodes hold a sharded subscription to the room's channel"
    );
    drop((on_a, on_b));
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

/// A room compacts on its home node only, under the store's lock. When a node joins and
/// becomes the room's home, compaction moves there with it, while members on every node,
/// the new one included, keep converging and the store keeps every edit.
#[tokio::test]
async fn a_room_compacts_on_its_home_and_compaction_follows_it_to_a_joining_node() {
    use chorus_hub::cluster::{Node, Ring};
    let Some(_redis) = redis().await else { return };
    let Some(db) = chorus_persistence::testing::TestDatabase::create().await else {
        return;
    };
    let node = |id: &str| Node {
        id: id.into(),
        url: String::new(),
    };
    let home = |ids: &[&str], room: &str| {
        let ring = Ring::new(ids.iter().map(|id| node(id)).collect());
        ring.home(room).map(|n| n.id.clone())
    };
    // A room at home on node-1 of two, which node-3 takes over when it joins.
    let room = (0..1000)
        .map(|i| format!("moving-{i}"))
        .find(|r| {
            home(&["node-1", "node-2"], r).as_deref() == Some("node-1")
                && home(&["node-1", "node-2", "node-3"], r).as_deref() == Some("node-3")
        })
        .expect("a room that moves");
    let prefix = unique_prefix("home-compaction");
    // Off its home a node compacts only past 4 times the threshold (40 entries). node-2's
    // count (its own edits and node-1's) passes that, but the summary it then reads finds the
    // log short, since node-1 keeps compacting it: each round waits for every edit to be saved.
    let flags = ["--compact-threshold", "10"];
    let (mut n1, a1) = spawn_node(db.url(), &prefix, "node-1", &flags).await;
    let (mut n2, a2) = spawn_node(db.url(), &prefix, "node-2", &flags).await;
    let mut clients = vec![
        (connect(a1, &room, true).await, 1u64),
        (connect(a2, &room, true).await, 1u64),
    ];
    let mut words = Vec::new();
    let round = |clients: &mut Vec<(chorus_protocol::client::Client, u64)>,
                 words: &mut Vec<String>,
                 r: usize| {
        for (who, (c, sent)) in clients.iter_mut().enumerate() {
            for i in 0..4 {
                let w = format!("r{r}c{who}e{i};");
                append(c, "t", &w);
                *sent += 1;
                words.push(w);
            }
        }
    };
    async fn all_saved(clients: &[(chorus_protocol::client::Client, u64)]) {
        use chorus_protocol::ext::ServerMessage;
        for (c, sent) in clients {
            let want = *sent;
            c.wait_for("saved", PATIENCE, move |s, _| {
                s.events
                    .iter()
                    .any(|e| matches!(e, ServerMessage::Saved { updates } if *updates >= want))
            })
            .await
            .expect("saved");
        }
    }
    for r in 0..6 {
        round(&mut clients, &mut words, r);
        all_saved(&clients).await;
    }
    let refs: Vec<_> = clients.iter().map(|c| &c.0).collect();
    wait_converged(&refs, &words).await;
    wait_compacted(a1, "the home never compacted").await;
    assert_eq!(
        compactions(a2).await,
        0,
        "a node off the room's home compacted it"
    );

    // A room open only away from its home is still compacted there, once its log is long.
    let away = (0..1000)
        .map(|i| format!("away-{i}"))
        .find(|r| home(&["node-1", "node-2"], r).as_deref() == Some("node-1"))
        .expect("a room at home on node-1");
    let mut lone = vec![(connect(a2, &away, true).await, 1u64)];
    let mut away_words = Vec::new();
    for r in 0..12 {
        round(&mut lone, &mut away_words, r);
        all_saved(&lone).await;
    }
    wait_compacted(
        a2,
        "a room nobody opened on its home grew without compaction",
    )
    .await;
    drop(lone);

    // node-3 joins and becomes the room's home; a member connects there.
    let (mut n3, a3) = spawn_node(db.url(), &prefix, "node-3", &flags).await;
    for addr in [a1, a2, a3] {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let r = route(addr, &room).await;
            if r["node"] == "node-3" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{room} never moved: {r}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A compaction node-1 started before it saw node-3 may still finish: wait until its
    // count holds still for half a second.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut before = compactions(a1).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = compactions(a1).await;
        if now == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-1 keeps compacting"
        );
        before = now;
    }
    clients.push((connect(a3, &room, true).await, 1));
    for r in 6..12 {
        round(&mut clients, &mut words, r);
        all_saved(&clients).await;
    }
    let refs: Vec<_> = clients.iter().map(|c| &c.0).collect();
    wait_converged(&refs, &words).await;
    wait_compacted(a3, "the new home never compacted").await;
    assert_eq!(compactions(a1).await, before, "the old home still compacts");

    // The store holds every edit: a node started afresh loads them.
    drop(clients);
    for n in [&mut n1, &mut n2, &mut n3] {
        let _ = n.start_kill();
    }
    let (mut n4, a4) = spawn_node(db.url(), &prefix, "node-4", &[]).await;
    let fresh = connect(a4, &room, false).await;
    let stored = text(&fresh, "t");
    for w in &words {
        assert!(stored.contains(w.as_str()), "{w} lost: {stored}");
    }
    let _ = n4.start_kill();
}

/// A burst of edits on one node reaches the other in order: its room sees every number in
/// sequence, so it never resyncs beyond the sync it asks for when it opens.
#[tokio::test]
async fn a_burst_of_edits_crosses_nodes_in_order() {
    let Some(_redis) = redis().await else { return };
    burst_crosses_in_order(&redis_url()).await;
}

/// The same over Redis Cluster's sharded pub/sub.
#[tokio::test]
async fn a_burst_of_edits_crosses_sharded_pub_sub_in_order() {
    let Some(redis) = OwnRedisCluster::start() else {
        return;
    };
    burst_crosses_in_order(&format!("redis-cluster://127.0.0.1:{}", redis.ports[0])).await;
}

async fn burst_crosses_in_order(redis: &str) {
    let Some(db) = chorus_persistence::testing::TestDatabase::create().await else {
        return;
    };
    let prefix = unique_prefix("burst");
    let (mut n1, a1) = spawn_node_on(redis, db.url(), &prefix, "node-1", &[]).await;
    let (mut n2, a2) = spawn_node_on(redis, db.url(), &prefix, "node-2", &[]).await;
    let reader = connect(a2, "burst", false).await;
    let writer = connect(a1, "burst", false).await;
    let opened = counter(a2, "chorus_resyncs_total").await;
    let mut expected = String::new();
    for i in 0..2000 {
        let w = format!("{i};");
        append(&writer, "t", &w);
        expected.push_str(&w);
    }
    wait_text(&[&reader, &writer], "t", &expected).await;
    assert_eq!(
        counter(a2, "chorus_resyncs_total").await,
        opened,
        "the burst arrived out of order or with a gap"
    );
    let _ = n1.start_kill();
    let _ = n2.start_kill();
}

#[tokio::test]
async fn with_a_bus_secret_nodes_still_share_rooms_and_unsigned_messages_are_dropped() {
    use chorus_hub::cluster::envelope::{Envelope, Payload};
    use fred::interfaces::PubsubInterface;
    const BUS_SECRET: &str = "bus-secret-for-the-cluster-tests-0123456789";
    let Some(redis) = redis().await else { return };
    let prefix = unique_prefix("signed");
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = two_nodes(|id| Config {
        bus_secret: Some(BUS_SECRET.into()),
        ..node_config(dir.path(), &prefix, id, Duration::from_millis(900))
    })
    .await;
    let on_a = a.client("signed").await;
    let on_b = b.client("signed").await;
    append(&on_a, "t", "from a");
    wait_text(&[&on_b], "t", "from a").await;
    // Anyone who can publish on Redis, without the secret: a well-formed envelope, unsigned
    // and with a forged signature, is dropped.
    let (forged, _) = chorus_persistence::testing::consecutive_edits(88, "EVIL", "!");
    let envelope = Envelope {
        origin: "intruder".into(),
        seq: 1,
        trace: None,
        payload: Payload::Update(forged),
    }
    .encode();
    let channel = format!("{prefix}:room:default/signed");
    let wrong = chorus_hub::cluster::redis::seal(
        b"not-the-secret-not-the-secret-000",
        &channel,
        envelope.clone(),
    );
    for body in [envelope, wrong] {
        let _: () = redis
            .publish(channel.as_str(), body)
            .await
            .expect("publish");
    }
    // Both are counted (nodes a and b each drop both; metrics are per process here).
    let dropped = |m: String| {
        m.lines()
            .find_map(|l| {
                l.strip_prefix("chorus_bus_unsigned_dropped_total ")?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while dropped(a.get("/metrics").await.1) < 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unsigned messages not dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    append(&on_b, "t", "+b");
    wait_text(&[&on_a], "t", "from a+b").await;
    assert!(!text(&on_a, "t").contains("EVIL"));
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
}

/// Waits until the node at `addr` sees `n` nodes; returns the home of `room` it names.
async fn home_when_ring_has(addr: std::net::SocketAddr, room: &str, n: u64) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = route(addr, room).await;
        if r["nodes"] == n {
            return r["node"].as_str().expect("node").to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ring never reached {n}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three nodes with the stand-in model at `tokens_per_second`; the room's home, and the
/// others, by address.
async fn ai_cluster(
    db: &str,
    test: &str,
    room: &str,
    tokens_per_second: f64,
    extra: &[&str],
) -> (
    chorus_ai_bridge::standin::StandIn,
    Vec<(String, tokio::process::Child, std::net::SocketAddr)>,
    String,
    String,
) {
    use chorus_ai_bridge::standin::{Behavior, StandIn};
    let standin = StandIn::start(Behavior {
        tokens_per_second,
        ..Behavior::default()
    })
    .await
    .expect("standin");
    let base = standin.base_url();
    let mut ai = vec!["--ai-base-url", base.as_str(), "--ai-model", "standin"];
    ai.extend_from_slice(extra);
    let prefix = unique_prefix(test);
    let mut nodes = Vec::new();
    for id in ["node-1", "node-2", "node-3"] {
        let (child, addr) = spawn_node(db, &prefix, id, &ai).await;
        nodes.push((id.to_owned(), child, addr));
    }
    let mut home = String::new();
    for (_, _, addr) in &nodes {
        home = home_when_ring_has(*addr, room, 3).await;
    }
    (standin, nodes, home, prefix)
}

fn ai_events(c: &chorus_protocol::client::Client) -> Vec<chorus_protocol::ext::ServerMessage> {
    c.state().events.clone()
}

async fn wait_ai_done(c: &chorus_protocol::client::Client, what: &'static str) -> String {
    use chorus_protocol::ext::ServerMessage;
    c.wait_for(what, PATIENCE * 3, |s, _| {
        s.events
            .iter()
            .any(|e| matches!(e, ServerMessage::AiDone { .. }))
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: no ai.done; events: {:?}", ai_events(c)));
    ai_events(c)
        .iter()
        .find_map(|e| match e {
            ServerMessage::AiDone { status, .. } => Some(status.clone()),
            _ => None,
        })
        .expect("done")
}

#[tokio::test]
async fn a_run_asked_on_any_node_executes_on_the_rooms_home_and_is_cancelled_from_a_third() {
    use chorus_ai_bridge::chat;
    use chorus_protocol::ext::ServerMessage;
    let Some(redis) = redis().await else { return };
    let Some(db) = chorus_persistence::testing::TestDatabase::create().await else {
        return;
    };
    let room = "ai-handoff";
    let (_standin, nodes, home, prefix) = ai_cluster(
        db.url(),
        "ai-handoff",
        room,
        20.0,
        // Queue entries are signed like bus messages.
        &[
            "--bus-secret",
            "bus-secret-for-the-cluster-tests-0123456789",
        ],
    )
    .await;
    let others: Vec<std::net::SocketAddr> =
        nodes.iter().filter(|n| n.0 != home).map(|n| n.2).collect();
    let home_addr = nodes.iter().find(|n| n.0 == home).expect("home").2;
    // The asker is on a node that is not the room's home.
    let asker = connect(others[0], room, true).await;
    let watcher = connect(home_addr, room, false).await;
    asker
        .send_text(r#"{"v":1,"type":"ai.ask","id":"q1","prompt":"write a lot"}"#)
        .expect("ask");
    asker
        .wait_for("ai.run from the home", PATIENCE, |s, _| {
            s.events.iter().any(|e| {
                matches!(e, ServerMessage::AiRun { status, request, .. }
                    if status == "running" && request.as_deref() == Some("q1"))
            })
        })
        .await
        .unwrap_or_else(|_| panic!("no ai.run; events: {:?}", ai_events(&asker)));
    let run = ai_events(&asker)
        .iter()
        .find_map(|e| match e {
            ServerMessage::AiRun { run, .. } => Some(run.clone()),
            _ => None,
        })
        .expect("run id");
    // Recorded as the home's run.
    let (status, body) = http_get(others[1], &format!("/v1/rooms/{room}/ai/runs/{run}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!(r#""node":"{home}""#)), "{body}");
    watcher
        .wait_for("the answer streams", PATIENCE, |_, doc| {
            let arr = doc.get_or_insert_array(chat::CHAT);
            chat::recent(&yrs::Transact::transact(doc), &arr, 1)
                .first()
                .is_some_and(|m| m.text.len() >= 8)
        })
        .await
        .expect("streaming");
    // A cancel over REST on the third node reaches the home.
    let (status, body) = http_request(
        others[1],
        &format!(
            "POST /v1/rooms/{room}/ai/runs/{run}/cancel HTTP/1.1\r\nHost: test\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"cancelled""#), "{body}");
    // The asker hears the end, through the node it is on.
    assert_eq!(wait_ai_done(&asker, "the asker hears").await, "cancelled");
    let settled = |doc: &yrs::Doc| {
        let arr = doc.get_or_insert_array(chat::CHAT);
        chat::recent(&yrs::Transact::transact(doc), &arr, 1)
            .first()
            .is_some_and(|m| m.status.as_deref() == Some("cancelled"))
    };
    watcher
        .wait_for("cancelled", PATIENCE, |_, doc| settled(doc))
        .await
        .expect("marked cancelled");
    // Whoever can write to Redis cannot hand a node a run: without the bus secret's
    // signature the entry is dropped.
    use fred::interfaces::StreamsInterface;
    let forged = serde_json::json!({"kind": "cancel", "tenant": "default", "run": run}).to_string();
    let dropped = r#"chorus_ai_handoffs_total{kind="dropped"}"#;
    let before = counter(home_addr, dropped).await;
    let _: String = redis
        .xadd(
            format!("{{{prefix}}}:ai:{home}"),
            false,
            None::<()>,
            "*",
            vec![("m", forged)],
        )
        .await
        .expect("xadd");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while counter(home_addr, dropped).await == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a forged entry was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Redis loses the home's queue (a restart without persistence): the home creates it
    // again, and the next run still goes through it.
    let _: i64 = redis
        .del(format!("{{{prefix}}}:ai:{home}"))
        .await
        .expect("del");
    asker
        .send_text(r#"{"v":1,"type":"ai.ask","id":"q2","prompt":"again","target":"chat"}"#)
        .expect("ask again");
    asker
        .wait_for(
            "a second run after the queue was lost",
            PATIENCE * 2,
            |s, _| {
                s.events
                    .iter()
                    .any(|e| matches!(e, ServerMessage::AiDone { status, .. } if status == "done"))
            },
        )
        .await
        .unwrap_or_else(|_| panic!("no second run; events: {:?}", ai_events(&asker)));
}

#[tokio::test]
async fn an_ai_run_on_a_node_killed_mid_answer_ends_interrupted_without_duplicated_text() {
    use chorus_ai_bridge::chat;
    use chorus_ai_bridge::standin::SAMPLE_ANSWER;
    let Some(_redis) = redis().await else { return };
    let Some(db) = chorus_persistence::testing::TestDatabase::create().await else {
        return;
    };
    let room = "ai-crash";
    let (_standin, mut nodes, home, _) = ai_cluster(db.url(), "ai-kill9", room, 10.0, &[]).await;
    let at = nodes.iter().position(|n| n.0 == home).expect("home");
    let (_, mut killed, _) = nodes.remove(at);
    // The asker and a watcher on the survivors.
    let asker = connect(nodes[0].2, room, true).await;
    let on_3 = connect(nodes[1].2, room, false).await;
    asker
        .send_text(r#"{"v":1,"type":"ai.ask","prompt":"write a lot"}"#)
        .expect("ask");
    let started = |doc: &yrs::Doc| {
        let arr = doc.get_or_insert_array(chat::CHAT);
        chat::recent(&yrs::Transact::transact(doc), &arr, 1)
            .first()
            .is_some_and(|m| m.text.len() >= 12)
    };
    on_3.wait_for("the answer starts", PATIENCE, |_, doc| started(doc))
        .await
        .expect("streaming");
    // The home, running the run, dies without a word.
    killed.start_kill().expect("kill -9");
    let _ = killed.wait().await;
    // A survivor marks it interrupted once the home leaves the ring (its TTL is 900 ms),
    // and claims its queue's entry once idle: the asker hears.
    for c in [&asker, &on_3] {
        c.wait_for("interrupted", PATIENCE * 2, |_, doc| {
            let arr = doc.get_or_insert_array(chat::CHAT);
            chat::recent(&yrs::Transact::transact(doc), &arr, 5)
                .first()
                .is_some_and(|m| m.status.as_deref() == Some("interrupted"))
        })
        .await
        .expect("marked interrupted");
    }
    assert_eq!(
        wait_ai_done(&asker, "the asker is told").await,
        "interrupted"
    );
    let arr = on_3.doc().get_or_insert_array(chat::CHAT);
    let msgs = chat::recent(&yrs::Transact::transact(on_3.doc()), &arr, 5);
    assert_eq!(msgs.len(), 1, "one message");
    assert!(
        !msgs[0].text.is_empty() && SAMPLE_ANSWER.starts_with(&msgs[0].text),
        "no duplicated text: {:?}",
        msgs[0].text
    );
    // The record says so too.
    let run = msgs[0].run.clone().expect("run");
    let (status, body) = http_get(nodes[1].2, &format!("/v1/rooms/{room}/ai/runs/{run}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"interrupted""#), "{body}");
}
