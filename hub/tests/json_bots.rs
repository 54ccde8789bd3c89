//! The JSON mode (`/ws/{room}?format=json`): bots without a CRDT library get the document as
//! JSON and then deltas, send path ops with acks, and use presence and chat, alongside real
//! Yjs clients in the same room.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use yrs::{Any, Array, ReadTxn, Transact, Xml, XmlElementPrelim, XmlFragment, XmlTextPrelim};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bot as a user would write one: it keeps the view current by applying deltas.
struct Bot {
    ws: Ws,
    view: Value,
    version: u64,
    welcome: Value,
}

impl Bot {
    async fn connect(server: &TestServer, room: &str, query: &str) -> Bot {
        let url = format!(
            "ws://{}/ws/{room}?format=json&interval=50{query}",
            server.addr
        );
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let mut bot = Bot {
            ws,
            view: Value::Null,
            version: 0,
            welcome: Value::Null,
        };
        bot.welcome = bot.until(|f| f["type"] == "welcome").await;
        bot.until(|f| f["type"] == "snapshot").await;
        bot
    }

    /// The next frame; snapshots and deltas are applied to the view on the way.
    async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("frame");
            let Message::Text(text) = msg else {
                if let Message::Close(c) = msg {
                    return json!({"type": "closed", "close": c.map(|c| (u16::from(c.code), c.reason.to_string()))});
                }
                continue;
            };
            let frame: Value = serde_json::from_str(&text).expect("JSON frame");
            assert_eq!(frame["v"], 1, "{frame}");
            match frame["type"].as_str() {
                Some("snapshot") => {
                    self.view = frame["doc"].clone();
                    self.version = frame["version"].as_u64().expect("version");
                }
                Some("delta") => {
                    let v = frame["version"].as_u64().expect("version");
                    assert_eq!(v, self.version + 1, "versions follow each other");
                    let ops = serde_json::from_value::<Vec<chorus_hub::docjson::Op>>(
                        frame["ops"].clone(),
                    )
                    .expect("delta ops");
                    chorus_hub::docjson::delta::apply_delta(&mut self.view, &ops)
                        .expect("the delta fits the view");
                    self.version = v;
                }
                _ => {}
            }
            return frame;
        }
    }

    async fn until(&mut self, mut want: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let f = self.next().await;
            if want(&f) {
                return f;
            }
            assert_ne!(f["type"], "closed", "closed while waiting: {f}");
        }
    }

    /// Reads until the view satisfies `want`.
    async fn until_view(&mut self, mut want: impl FnMut(&Value) -> bool) {
        while !want(&self.view) {
            self.next().await;
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }

    /// Sends ops built on the current view and waits for their ack or error.
    async fn ops(&mut self, id: &str, ops: Value) -> Value {
        let base = self.version;
        self.ops_on(id, base, ops).await
    }

    async fn ops_on(&mut self, id: &str, base: u64, ops: Value) -> Value {
        self.send(json!({"v": 1, "type": "ops", "id": id, "base": base, "ops": ops}))
            .await;
        self.until(|f| f["id"] == id && (f["type"] == "ack" || f["type"] == "error"))
            .await
    }
}

/// A checklist in the `default` fragment, as Tiptap's TaskList would store it.
fn write_checklist(c: &chorus_protocol::client::Client, items: &[&str]) {
    let doc = c.doc();
    let f = doc.get_or_insert_xml_fragment("default");
    let mut txn = doc.transact_mut();
    let list = f.insert(&mut txn, 0, XmlElementPrelim::empty("taskList"));
    for (i, item) in items.iter().enumerate() {
        let li = list.insert(&mut txn, i as u32, XmlElementPrelim::empty("taskItem"));
        li.insert_attribute(&mut txn, "checked", Any::Bool(false));
        let p = li.insert(&mut txn, 0, XmlElementPrelim::empty("paragraph"));
        p.insert(&mut txn, 0, XmlTextPrelim::new(*item));
    }
}

fn item(view: &Value, i: usize) -> &Value {
    &view["default"][0]["content"][i]
}

fn item_text(view: &Value, i: usize) -> &Value {
    &item(view, i)["content"][0]["content"][0]["text"]
}

/// The checked attribute of the `i`-th task item in a Yjs client's document.
fn checked_in(c: &chorus_protocol::client::Client, i: u32) -> Option<Any> {
    let doc = c.doc();
    let txn = doc.transact();
    let f = txn.get_xml_fragment("default")?;
    let list = f.get(&txn, 0)?.into_xml_element()?;
    let li = list.get(&txn, i)?.into_xml_element()?;
    match li.get_attribute(&txn, "checked")? {
        yrs::Out::Any(a) => Some(a),
        _ => None,
    }
}

/// Edits Alice's checklist (the first element of `default`) in one transaction.
fn edit_list(
    c: &chorus_protocol::client::Client,
    edit: impl FnOnce(&mut yrs::TransactionMut, &yrs::XmlElementRef),
) {
    let doc = c.doc();
    let f = doc.get_or_insert_xml_fragment("default");
    let mut txn = doc.transact_mut();
    let list = f
        .get(&txn, 0)
        .and_then(|n| n.into_xml_element())
        .expect("list");
    edit(&mut txn, &list);
}

/// Inserts `s` at `at` in the text of item `i` of Alice's checklist.
fn type_in_item(c: &chorus_protocol::client::Client, i: u32, at: u32, s: &str) {
    edit_list(c, |txn, list| {
        let text = list
            .get(txn, i)
            .and_then(|n| n.into_xml_element())
            .and_then(|li| li.get(txn, 0))
            .and_then(|n| n.into_xml_element())
            .and_then(|p| p.get(txn, 0))
            .and_then(|n| n.into_xml_text())
            .expect("the item's text");
        yrs::Text::insert(&text, txn, at, s);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_reads_writes_and_follows_the_room_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let alice = server.client("trip").await;
    write_checklist(&alice, &["tickets", "passport"]);

    let mut bot = Bot::connect(&server, "trip", "").await;
    assert_eq!(bot.welcome["mode"], "json");
    assert_eq!(bot.welcome["role"], "write");
    bot.until_view(|v| item_text(v, 1) == "passport").await;
    assert_eq!(item(&bot.view, 0)["attrs"]["checked"], false);

    // Alice types: the bot gets a delta, not the document again.
    type_in_item(&alice, 0, 7, " (2)");
    let delta = bot.until(|f| f["type"] == "delta").await;
    assert_eq!(
        delta["ops"],
        json!([{"op": "splice_text", "path": ["default", 0, "content", 0, "content", 0, "content", 0, "text"], "index": 7, "delete": 0, "insert": " (2)"}])
    );
    assert_eq!(item_text(&bot.view, 0), "tickets (2)");

    // The bot ticks the second item and adds a third: Alice's editor structure has them.
    let ack = bot
        .ops(
            "tick",
            json!([
                {"op": "set", "path": ["default", 0, "content", 1, "attrs", "checked"], "value": true},
                {"op": "splice", "path": ["default", 0, "content"], "index": 2, "insert": [
                    {"type": "taskItem", "attrs": {"checked": false}, "content": [
                        {"type": "paragraph", "content": [{"type": "text", "text": "maps"}]}]}]}
            ]),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["rebased"], false);
    // The ack names the version that shows the change; the bot already has it.
    assert_eq!(ack["version"].as_u64(), Some(bot.version));
    assert_eq!(item(&bot.view, 1)["attrs"]["checked"], true);
    assert_eq!(item_text(&bot.view, 2), "maps");
    tokio::time::timeout(PATIENCE, async {
        while checked_in(&alice, 1) != Some(Any::Bool(true)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("Alice sees the tick");
    // Acked means durable: the REST tree view (from the room) agrees with the bot's view.
    let (status, body) = server.get("/v1/rooms/trip/document?view=tree").await;
    assert_eq!(status, 200, "{body}");
    let stored: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(stored["default"], bot.view["default"]);

    // Chat both ways: Alice's message reaches the bot as a chat frame, the bot's is in the
    // document's chat.
    {
        let doc = alice.doc();
        let chat = doc.get_or_insert_array("chat");
        let mut txn = doc.transact_mut();
        let m = chat.push_back(&mut txn, yrs::MapPrelim::default());
        yrs::Map::insert(&m, &mut txn, "id", "m1");
        yrs::Map::insert(&m, &mut txn, "author", "alice");
        yrs::Map::insert(&m, &mut txn, "role", "user");
        yrs::Map::insert(&m, &mut txn, "status", "done");
        yrs::Map::insert(&m, &mut txn, "text", yrs::TextPrelim::new("/done passport"));
    }
    let chat = bot.until(|f| f["type"] == "chat").await;
    assert_eq!(chat["message"]["text"], "/done passport");
    assert_eq!(chat["message"]["author"], "alice");
    bot.send(json!({"v": 1, "type": "chat", "id": "c1", "text": "Ticked passport."}))
        .await;
    let ack = bot.until(|f| f["id"] == "c1").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    tokio::time::timeout(PATIENCE, async {
        loop {
            let n = {
                let doc = alice.doc();
                let txn = doc.transact();
                txn.get_array("chat").map_or(0, |c| c.len(&txn))
            };
            if n == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("Alice sees the bot's message");

    // Presence both ways.
    let mut alice = alice;
    alice
        .set_awareness(r#"{"user":{"name":"Alice"},"cursor":3}"#)
        .expect("awareness");
    let p = bot
        .until(|f| {
            f["type"] == "presence"
                && f["peers"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["state"]["cursor"] == 3))
        })
        .await;
    assert!(p["peers"].as_array().is_some_and(|ps| !ps.is_empty()));
    bot.send(json!({"v": 1, "type": "presence", "state": {"status": "checking"}}))
        .await;
    tokio::time::timeout(PATIENCE, async {
        loop {
            let seen = alice
                .state()
                .awareness
                .values()
                .any(|(_, s)| s.contains("checking") && s.contains("\"name\""));
            if seen {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("Alice sees the bot's presence, with its name");

    // Ping.
    bot.send(json!({"v": 1, "type": "ping", "id": 7})).await;
    let pong = bot.until(|f| f["type"] == "pong").await;
    assert_eq!(pong["id"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_on_a_stale_view_are_rebased_or_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let alice = server.client("stale").await;
    write_checklist(&alice, &["a", "b", "c"]);
    let mut bot = Bot::connect(&server, "stale", "").await;
    bot.until_view(|v| item_text(v, 2) == "c").await;
    let seen = bot.version;

    // Alice inserts an item at the top; the bot, still thinking in its older view, ticks "b"
    // (index 1 then, index 2 now).
    edit_list(&alice, |txn, list| {
        let li = list.insert(txn, 0, XmlElementPrelim::empty("taskItem"));
        li.insert_attribute(txn, "checked", Any::Bool(false));
        let p = li.insert(txn, 0, XmlElementPrelim::empty("paragraph"));
        p.insert(txn, 0, XmlTextPrelim::new("new"));
    });
    bot.until_view(|v| item_text(v, 0) == "new").await;
    let ack = bot
        .ops_on(
            "tick-b",
            seen,
            json!([{"op": "set", "path": ["default", 0, "content", 1, "attrs", "checked"], "value": true}]),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["rebased"], true);
    bot.until_view(|v| item(v, 2)["attrs"]["checked"] == true)
        .await;
    assert_eq!(
        item_text(&bot.view, 2),
        "b",
        "the item the bot saw, not index 1"
    );
    assert_eq!(item(&bot.view, 1)["attrs"]["checked"], false);

    // Alice deletes "c"; an op on it from before is a conflict, and nothing changes.
    let before_delete = bot.version;
    edit_list(&alice, |txn, list| list.remove_range(txn, 3, 1));
    bot.until_view(|v| v["default"][0]["content"].as_array().map(Vec::len) == Some(3))
        .await;
    let refused = bot
        .ops_on(
            "tick-c",
            before_delete,
            json!([{"op": "set", "path": ["default", 0, "content", 3, "attrs", "checked"], "value": true}]),
        )
        .await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "conflict", "{refused}");
    // Text typed at a stale position lands where the bot meant it.
    let typed_on = bot.version;
    type_in_item(&alice, 2, 0, ">> ");
    bot.until_view(|v| item_text(v, 2) == ">> b").await;
    let ack = bot
        .ops_on(
            "append",
            typed_on,
            json!([{"op": "splice_text", "path": ["default", 0, "content", 2, "content", 0, "content", 0, "text"], "index": 1, "insert": "!"}]),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    bot.until_view(|v| item_text(v, 2) == ">> b!").await;

    // A version the bot never saw, and one from before its snapshot.
    let r = bot
        .ops_on(
            "future",
            bot.version + 5,
            json!([{"op": "set", "path": ["m", "k"], "value": 1}]),
        )
        .await;
    assert_eq!(r["code"], "bad_request", "{r}");
    bot.send(json!({"v": 1, "type": "snapshot"})).await;
    let snap = bot.until(|f| f["type"] == "snapshot").await;
    assert_eq!(snap["doc"]["default"], bot.view["default"]);
    let r = bot
        .ops_on(
            "old",
            typed_on,
            json!([{"op": "set", "path": ["m", "k"], "value": 1}]),
        )
        .await;
    assert_eq!(r["code"], "stale", "{r}");

    // Rebasing is bounded: 1000 ops over 101 changes is more than one frame may cost.
    let m = alice.doc().get_or_insert_map("many");
    yrs::Map::insert(&m, &mut alice.doc().transact_mut(), "start", 0);
    bot.until_view(|v| v["many"]["start"] == 0).await;
    let seen = bot.version;
    {
        let mut txn = alice.doc().transact_mut();
        for i in 0..101 {
            yrs::Map::insert(&m, &mut txn, format!("k{i}"), i);
        }
    }
    bot.until_view(|v| v["many"].as_object().map(|m| m.len()) == Some(102))
        .await;
    let ops: Vec<Value> = (0..1000)
        .map(|i| json!({"op": "set", "path": ["other", format!("k{i}")], "value": i}))
        .collect();
    let r = bot.ops_on("costly", seen, Value::Array(ops.clone())).await;
    assert_eq!(r["code"], "stale", "{r}");
    let r = bot.ops("cheap", Value::Array(ops)).await;
    assert_eq!(r["type"], "ack", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_and_readers_get_clear_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = chorus_hub::Config {
        jwt_secret: Some(SECRET.into()),
        ..test_config(dir.path())
    };
    let server = TestServer::start(config).await;
    let writer = token(json!({"role": "write"}));
    let mut bot = Bot::connect(&server, "bad", &format!("&token={writer}")).await;

    for (frame, code, says) in [
        ("not json".to_string(), "bad_request", "not JSON"),
        (json!({"type": "ping"}).to_string(), "bad_request", "\"v\": 1"),
        (json!({"v": 1, "type": "explode"}).to_string(), "bad_request", "unknown variant"),
        (
            json!({"v": 1, "type": "ops", "base": 1, "ops": [{"op": "insert_text", "name": "t", "index": 0, "text": "x"}]}).to_string(),
            "bad_request",
            "path ops",
        ),
        (
            json!({"v": 1, "type": "ops", "id": "x".repeat(200), "base": 1, "ops": []}).to_string(),
            "bad_request",
            "128 bytes",
        ),
        (
            format!("{{\"v\":1,\"type\":\"presence\",\"state\":{}{}}}", "[".repeat(200), "]".repeat(200)),
            "too_large",
            "nests",
        ),
        (
            json!({"v": 1, "type": "presence", "state": "not an object"}).to_string(),
            "bad_request",
            "object",
        ),
        (
            json!({"v": 1, "type": "ping", "id": {"big": [1, 2, 3]}}).to_string(),
            "bad_request",
            "ping id",
        ),
    ] {
        bot.send_raw(frame).await;
        let e = bot.until(|f| f["type"] == "error").await;
        assert_eq!(e["code"], code, "{e}");
        assert!(e["message"].as_str().is_some_and(|m| m.contains(says)), "{e} should say {says}");
    }
    // A bad op changes nothing and says which op and why.
    let e = bot
        .ops(
            "bad-op",
            json!([{"op": "splice", "path": ["list"], "index": 3, "insert": [1]}]),
        )
        .await;
    assert_eq!(e["code"], "bad_request");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("op 0")),
        "{e}"
    );
    // Still connected.
    bot.send(json!({"v": 1, "type": "ping", "id": 1})).await;
    bot.until(|f| f["type"] == "pong").await;
    // A binary frame ends the session with 1003.
    bot.ws
        .send(Message::Binary(vec![0, 0, 1, 0].into()))
        .await
        .expect("send");
    let closed = bot.until(|f| f["type"] == "closed").await;
    assert_eq!(closed["close"][0], 1003, "{closed}");

    // A reader sees the document and may not edit or chat.
    let reader = token(json!({"role": "read", "sub": "reader"}));
    let mut ro = Bot::connect(&server, "bad", &format!("&token={reader}")).await;
    assert_eq!(ro.welcome["role"], "read");
    let e = ro
        .ops("ro", json!([{"op": "set", "path": ["m", "k"], "value": 1}]))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    ro.send(json!({"v": 1, "type": "chat", "id": "roc", "text": "hi"}))
        .await;
    let e = ro.until(|f| f["id"] == "roc").await;
    assert_eq!(e["code"], "forbidden", "{e}");

    // Refusals before the upgrade: a bad interval, and no token where one is needed.
    let (status, body) = http_get(
        server.addr,
        &format!("/ws/bad?format=json&interval=5&token={writer}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let url = format!("ws://{}/ws/bad?format=json", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let closed = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("close");
    match closed {
        Some(Ok(Message::Close(Some(c)))) => assert_eq!(u16::from(c.code), 4401),
        other => panic!("expected a 4401 close, got {other:?}"),
    }
}

impl Bot {
    async fn send_raw(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }
}
