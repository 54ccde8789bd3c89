//! Several nodes in one process on the in-memory broker (`chorus_hub::Transport::Memory`):
//! the cluster's behaviour without Redis, and the faults Redis cannot be asked for on cue
//! (a node cut off, a node killed between storing an update and publishing it, a stranger on a
//! room's topic). `cluster.rs` runs the same paths against the real Redis.

mod common;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chorus_hub::Config;
use chorus_hub::Transport;
use chorus_hub::cluster::broker::{Broker, BrokerHandler};
use chorus_hub::cluster::envelope::{Envelope, Payload};
use chorus_hub::cluster::memory::MemoryNetwork;
use chorus_persistence::RoomKey;
use chorus_protocol::ext::ServerMessage;
use common::*;

fn node_config(dir: &std::path::Path, id: &str) -> Config {
    Config {
        node_id: Some(id.to_string()),
        // Beats every 100 ms: rings converge quickly.
        node_ttl: Duration::from_millis(300),
        ..test_config(dir)
    }
}

/// Nodes `ids` on `net`, sharing the data directory `dir` (as they would share Postgres);
/// returns once each sees all of them in its ring.
async fn nodes(net: &MemoryNetwork, dir: &std::path::Path, ids: &[&str]) -> Vec<TestServer> {
    let mut started = Vec::new();
    for id in ids {
        let node = TestServer::start_on(node_config(dir, id), Transport::Memory(net.clone())).await;
        // Serving means it migrated the shared database before the next one opens it.
        assert_eq!(node.get("/healthz").await.0, 200);
        started.push(node);
    }
    for node in &started {
        wait_ring(node, ids.len()).await;
    }
    started
}

async fn wait_ring(node: &TestServer, want: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while node.app.cluster.ring().len() != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ring of {} never held {want} nodes",
            node.app.cluster.node().id
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn saved_opt_in() -> chorus_protocol::client::ClientOptions {
    chorus_protocol::client::ClientOptions {
        ext: true,
        ..Default::default()
    }
}

/// Waits until `c` has been told that at least `n` of its updates are saved.
async fn wait_saved(c: &chorus_protocol::client::Client, n: u64) {
    c.wait_for("saved", PATIENCE, move |s, _| {
        s.events
            .iter()
            .any(|e| matches!(e, ServerMessage::Saved { updates } if *updates >= n))
    })
    .await
    .expect("saved");
}

#[tokio::test]
async fn three_nodes_in_one_process_share_rooms_presence_and_the_store() {
    let net = MemoryNetwork::new();
    let dir = tempfile::tempdir().expect("dir");
    let servers = nodes(&net, dir.path(), &["node-a", "node-b", "node-c"]).await;
    let mut clients = Vec::new();
    for s in &servers {
        clients.push(s.client("shared").await);
    }
    for (i, c) in clients.iter().enumerate() {
        append(c, "t", &format!("[{i}]"));
    }
    let all: Vec<&chorus_protocol::client::Client> = clients.iter().collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let texts: Vec<String> = all.iter().map(|c| text(c, "t")).collect();
        if texts.iter().all(|t| t == &texts[0] && t.len() == 9) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{texts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every node subscribed to the room's topic while it is open there.
    let key = RoomKey::new("default", "shared");
    let mut subscribed = net.subscribers(&key);
    subscribed.sort();
    assert_eq!(subscribed, ["node-a", "node-b", "node-c"]);

    // Presence crosses nodes and leaves with its member.
    let mut on_a = clients.remove(0);
    let id = on_a.doc().client_id().get();
    on_a.set_awareness(r#"{"user":"ada"}"#).expect("awareness");
    for c in &clients {
        c.wait_for("ada on another node", PATIENCE, move |s, _| {
            s.awareness
                .get(&id)
                .is_some_and(|(_, json)| json.contains("ada"))
        })
        .await
        .expect("presence crossed");
    }
    on_a.close().await;
    clients[1]
        .wait_for("ada gone", PATIENCE, move |s, _| {
            !s.awareness.contains_key(&id)
        })
        .await
        .expect("the removal crossed");

    drop(clients);
    for s in servers {
        s.stop().await.expect("stop");
    }
    // Each update is stored once, by the node its client sent it to.
    use chorus_persistence::DocStore;
    let store = chorus_persistence::SqliteStore::open_file(&dir.path().join("chorus.db"))
        .await
        .expect("open");
    let loaded = store.load(&key).await.expect("load");
    assert_eq!(loaded.updates.len(), 3, "each edit stored once");
    assert!(
        net.subscribers(&key).is_empty(),
        "rooms unsubscribe when they exit"
    );
}

/// A node of the network that only listens: what the nodes publish on one topic.
#[derive(Default)]
struct Listener(Mutex<Vec<Envelope>>);

impl BrokerHandler for Listener {
    fn envelope(&self, _key: &RoomKey, envelope: Envelope) {
        self.0.lock().expect("lock").push(envelope);
    }
    fn lost(&self) {}
    fn change(&self, _change: chorus_hub::cluster::Change) {}
}

impl Listener {
    async fn wait(&self, what: &str, pred: impl Fn(&Envelope) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.0.lock().expect("lock").iter().any(&pred) {
            assert!(tokio::time::Instant::now() < deadline, "never heard {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn a_skipped_number_makes_the_room_resync_and_strangers_are_ignored() {
    use yrs::Transact;
    let net = MemoryNetwork::new();
    let dir = tempfile::tempdir().expect("dir");
    let a = nodes(&net, dir.path(), &["node-a"]).await.remove(0);
    let member = a.client("gap").await;
    let key = RoomKey::new("default", "gap");
    let listener = Arc::new(Listener::default());
    let ear = net.broker("listener");
    let handler: Weak<dyn BrokerHandler> = Arc::downgrade(&(listener.clone() as Arc<_>));
    ear.attach(handler);
    ear.subscribe(&ear.topic(&key)).await.expect("subscribe");

    // Garbage, and messages that do not decode or nest too deeply: dropped, and the room
    // keeps serving.
    net.inject(&key, bytes::Bytes::from_static(b"not an envelope"));
    for junk in hostile_envelopes() {
        net.inject(&key, junk.encode());
    }
    // Another node's two edits, numbered 1 and 3: number 2 never arrived.
    let (first, second) = chorus_persistence::testing::consecutive_edits(77, "x", "y");
    for (seq, update) in [(1, first), (3, second)] {
        let e = Envelope {
            origin: "ghost".into(),
            seq,
            trace: None,
            payload: Payload::Update(update),
        };
        net.inject(&key, e.encode());
    }
    wait_text(&[&member], "t", "xy").await;
    let v_len = |doc: &yrs::Doc| {
        use yrs::Array;
        let v = doc.get_or_insert_array("v");
        v.len(&doc.transact())
    };
    member
        .wait_for("the value at the limit", PATIENCE, |_, doc| v_len(doc) == 1)
        .await
        .expect("only the nesting at the limit was applied");
    // The room asked for a resync once it saw the gap (after the one it asks on opening,
    // which the listener did not hear: it subscribed later).
    listener
        .wait("node-a's sync request after the gap", |e| {
            e.origin == "node-a" && matches!(e.payload, Payload::SyncRequest(_))
        })
        .await;

    // A node that asks with a state vector ahead of ours holds something we never received:
    // we answer with what it lacks of ours, then ask it back.
    listener.0.lock().expect("lock").clear();
    let ask = sync_request_from_ahead("other");
    net.inject(&key, ask.encode());
    listener
        .wait(
            "the answer to other",
            |e| matches!(&e.payload, Payload::SyncReply { to, .. } if to == "other"),
        )
        .await;
    listener
        .wait("node-a asking back", |e| {
            e.origin == "node-a" && matches!(e.payload, Payload::SyncRequest(_))
        })
        .await;
    a.stop().await.expect("stop");
}

#[tokio::test]
async fn a_node_cut_off_serves_alone_and_converges_when_it_is_back() {
    let net = MemoryNetwork::new();
    let dir = tempfile::tempdir().expect("dir");
    let mut servers = nodes(&net, dir.path(), &["node-a", "node-b"]).await;
    let b = servers.pop().expect("b");
    let a = servers.pop().expect("a");
    let on_a = a.client("split").await;
    let on_b = b.client("split").await;
    append(&on_a, "t", "a1 ");
    wait_text(&[&on_b], "t", "a1 ").await;

    net.sever("node-b");
    append(&on_a, "t", "a2 ");
    append(&on_b, "t", "b1 ");
    // Each side sees its own edit and not the other's.
    on_a.wait_for("a2", PATIENCE, |_, doc| text_of(doc, "t").contains("a2"))
        .await
        .expect("a2");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!text(&on_a, "t").contains("b1"), "nothing crosses a cut");
    assert!(!text(&on_b, "t").contains("a2"), "nothing crosses a cut");

    // Back: both sides hear that messages were lost, resync, and converge.
    net.heal("node-b");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (ta, tb) = (text(&on_a, "t"), text(&on_b, "t"));
        if ta == tb && ["a1", "a2", "b1"].iter().all(|w| ta.contains(w)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ta:?} vs {tb:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((on_a, on_b));
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

#[tokio::test]
async fn what_a_dead_node_stored_but_never_published_reaches_the_others_from_the_store() {
    let net = MemoryNetwork::new();
    let dir = tempfile::tempdir().expect("dir");
    let mut servers = nodes(&net, dir.path(), &["node-a", "node-b"]).await;
    let b = servers.pop().expect("b");
    let a = servers.pop().expect("a");
    let on_a = a.client("orphan").await;
    let on_b = chorus_protocol::client::Client::connect(&b.url("orphan"), saved_opt_in())
        .await
        .expect("connect");
    on_b.synced(PATIENCE).await.expect("synced");

    // B stores the edit (its client is told saved) but its publish is lost: B is cut off.
    net.sever("node-b");
    append(&on_b, "t", "stored, never published");
    wait_saved(&on_b, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(text(&on_a, "t"), "", "the publish was lost");

    // B dies. A's ring drops it, and A's open room reads the store: the edit arrives.
    net.kill("node-b");
    wait_ring(&a, 1).await;
    wait_text(&[&on_a], "t", "stored, never published").await;
    drop((on_a, on_b));
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}
