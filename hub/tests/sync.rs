//! Document sync through the hub with real WebSocket clients.

mod common;

use std::time::Duration;

use chorus_protocol::client::{Client, ClientOptions};
use common::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use yrs::types::ToJson;
use yrs::{Array, Doc, GetString, Map, Text, Transact, WriteTxn, XmlFragment, XmlTextPrelim};

type Snapshot = (String, yrs::Any, yrs::Any, String);

fn snapshot(doc: &Doc) -> Snapshot {
    let (t, m, a, x) = (
        doc.get_or_insert_text("text"),
        doc.get_or_insert_map("map"),
        doc.get_or_insert_array("array"),
        doc.get_or_insert_xml_fragment("xml"),
    );
    let txn = doc.transact();
    (
        t.get_string(&txn),
        m.to_json(&txn),
        a.to_json(&txn),
        x.get_string(&txn),
    )
}

fn random_edit(rng: &mut StdRng, doc: &Doc, who: usize, i: usize) {
    let mut txn = doc.transact_mut();
    match rng.random_range(0..4) {
        0 => {
            let t = txn.get_or_insert_text("text");
            let len = t.len(&txn);
            if len > 0 && rng.random_bool(0.3) {
                let at = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - at).min(3));
                t.remove_range(&mut txn, at, n);
            } else {
                let at = if len == 0 {
                    0
                } else {
                    rng.random_range(0..=len)
                };
                t.insert(&mut txn, at, &format!("{who}:{i} "));
            }
        }
        1 => {
            let m = txn.get_or_insert_map("map");
            let key = format!("k{}", rng.random_range(0..5));
            m.insert(&mut txn, key, format!("{who}-{i}"));
        }
        2 => {
            let a = txn.get_or_insert_array("array");
            let len = a.len(&txn);
            if len > 0 && rng.random_bool(0.3) {
                a.remove(&mut txn, rng.random_range(0..len));
            } else {
                let at = if len == 0 {
                    0
                } else {
                    rng.random_range(0..=len)
                };
                a.insert(&mut txn, at, (who * 1000 + i) as i64);
            }
        }
        _ => {
            let x = txn.get_or_insert_xml_fragment("xml");
            let len = x.len(&txn);
            let at = if len == 0 {
                0
            } else {
                rng.random_range(0..=len)
            };
            let node = x.insert(&mut txn, at, XmlTextPrelim::new(format!("<{who}.{i}>")));
            let _ = node;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_concurrent_edits_converge_on_every_shared_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(server.client("converge").await);
    }
    let mut rng = StdRng::seed_from_u64(0xC0FFEE);
    for round in 0..40 {
        for (who, c) in clients.iter().enumerate() {
            random_edit(&mut rng, c.doc(), who, round);
        }
        if round % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Everyone converges to the same state.
    let first = &clients[0];
    let last;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let snaps: Vec<Snapshot> = clients.iter().map(|c| snapshot(c.doc())).collect();
        if snaps.iter().all(|s| *s == snaps[0]) {
            last = snaps[0].clone();
            break;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("replicas diverged: {snaps:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        last.0.len() > 10 && last.3.len() > 10,
        "edits happened: {last:?}"
    );
    // A late joiner sees exactly the same state at "synced".
    let late = server.client("converge").await;
    assert_eq!(snapshot(late.doc()), snapshot(first.doc()));
}

#[tokio::test]
async fn late_joiner_has_everything_when_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let a = server.client("late").await;
    for i in 0..20 {
        append(&a, "t", &format!("line {i}\n"));
    }
    let b = server.client("late").await;
    wait_text(&[&b], "t", &text(&a, "t")).await;
    // A third client must have it at the moment it reports synced, not after.
    let c = Client::connect(&server.url("late"), ClientOptions::default())
        .await
        .expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    assert_eq!(text(&c, "t"), text(&a, "t"));
}

#[tokio::test]
async fn offline_edits_merge_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let a = server.client("offline").await;
    append(&a, "t", "base.");
    let b = server.client("offline").await;
    wait_text(&[&b], "t", "base.").await;

    // B goes offline, keeps its document and edits it.
    let b_doc = b.doc().clone();
    b.close().await;
    {
        let t = b_doc.get_or_insert_text("t");
        let mut txn = b_doc.transact_mut();
        t.insert(&mut txn, 0, "[offline-b]");
    }
    append(&a, "t", "[online-a]");

    // B reconnects with its document: its edits go up, A's come down.
    let b2 = Client::connect_with_doc(&server.url("offline"), ClientOptions::default(), b_doc)
        .await
        .expect("reconnect");
    b2.synced(PATIENCE).await.expect("synced");
    let expected = "[offline-b]base.[online-a]";
    wait_text(&[&a, &b2], "t", expected).await;
}

#[tokio::test]
async fn rooms_are_isolated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let a = server.client("room-a").await;
    let b = server.client("room-b").await;
    append(&a, "t", "only in a");
    let a2 = server.client("room-a").await;
    wait_text(&[&a2], "t", "only in a").await;
    assert_eq!(text(&b, "t"), "");
}

#[tokio::test]
async fn map_values_from_different_clients_converge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let a = server.client("map").await;
    let b = server.client("map").await;
    {
        let m = a.doc().get_or_insert_map("m");
        m.insert(&mut a.doc().transact_mut(), "from-a", 1);
    }
    {
        let m = b.doc().get_or_insert_map("m");
        m.insert(&mut b.doc().transact_mut(), "from-b", 2);
    }
    for c in [&a, &b] {
        c.wait_for("both keys", PATIENCE, |_, doc| {
            let m = doc.get_or_insert_map("m");
            let txn = doc.transact();
            m.len(&txn) == 2
        })
        .await
        .expect("map converges");
    }
}

#[tokio::test]
async fn edits_sent_right_before_closing_are_kept() {
    // A tab that types and closes at once: the hub often handles the edit after the socket is
    // gone (its send queue dropped). The edit must still be applied, relayed and stored.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    for round in 0..5 {
        let a = server.client("close-fast").await;
        // A SyncStep1 right before the edit makes the hub answer to a socket that is gone.
        a.send_message(&chorus_protocol::sync::Message::SyncStep1(
            bytes::Bytes::from_static(&[0]),
        ))
        .expect("send");
        append(&a, "t", &format!("<{round}>"));
        a.close().await;
    }
    let b = server.client("close-fast").await;
    wait_text(&[&b], "t", "<0><1><2><3><4>").await;
}

#[tokio::test]
async fn an_update_released_by_another_members_update_reaches_both() {
    use yrs::{ReadTxn, StateVector};
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(data.path())).await;
    let a = server.client("released").await;
    let b = server.client("released").await;
    // Made offline: x writes "hello ", y builds " world" on top of it.
    let x = Doc::with_client_id(100);
    x.get_or_insert_text("t")
        .insert(&mut x.transact_mut(), 0, "hello");
    let ux = x
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let y = Doc::with_client_id(200);
    let t = y.get_or_insert_text("t");
    {
        use yrs::updates::decoder::Decode;
        let mut txn = y.transact_mut();
        txn.apply_update(yrs::Update::decode_v1(&ux).expect("decode"))
            .expect("apply");
    }
    let sv = y.transact().state_vector();
    t.insert(&mut y.transact_mut(), 5, " world");
    let uy = y.transact().encode_state_as_update_v1(&sv);
    // b sends y's part first: the hub must hold it back; a's part then releases it, and the
    // released content (b's) must reach a as well as everyone else, and a's must reach b.
    b.send_update(&uy).expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send_update(&ux).expect("send");
    let c = server.client("released").await;
    wait_text(&[&a, &b, &c], "t", "hello world").await;
    server.stop().await.expect("stop");
}
