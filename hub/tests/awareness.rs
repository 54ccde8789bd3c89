//! Awareness (presence) through the hub.

mod common;

use std::time::Duration;

use chorus_protocol::sync::Message;
use common::*;

#[tokio::test]
async fn awareness_add_update_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let mut a = server.client("aw").await;
    let b = server.client("aw").await;
    let a_id = a.doc().client_id().get();

    a.set_awareness(r#"{"user":{"name":"alice"}}"#)
        .expect("send");
    b.wait_for("a's state", PATIENCE, |s, _| {
        s.awareness
            .get(&a_id)
            .is_some_and(|(_, st)| st.contains("alice"))
    })
    .await
    .expect("b sees a");

    a.set_awareness(r#"{"user":{"name":"alice"},"cursor":7}"#)
        .expect("send");
    b.wait_for("a's update", PATIENCE, |s, _| {
        s.awareness
            .get(&a_id)
            .is_some_and(|(_, st)| st.contains("cursor"))
    })
    .await
    .expect("b sees the update");

    // The sender hears its own state back: that is what keeps a lone client's socket alive.
    a.wait_for("own state relayed", PATIENCE, |s, _| {
        s.awareness.contains_key(&a_id)
    })
    .await
    .expect("relayed to sender");

    a.close().await;
    b.wait_for("a removed", PATIENCE, |s, _| {
        !s.awareness.contains_key(&a_id)
    })
    .await
    .expect("removal broadcast on close");
}

#[tokio::test]
async fn abrupt_tcp_death_removes_awareness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let mut a = server.client("aw-kill").await;
    let b = server.client("aw-kill").await;
    let a_id = a.doc().client_id().get();
    a.set_awareness(r#"{"n":1}"#).expect("send");
    b.wait_for("a's state", PATIENCE, |s, _| {
        s.awareness.contains_key(&a_id)
    })
    .await
    .expect("b sees a");
    a.kill(); // drops the TCP connection without a close frame
    b.wait_for("a removed", PATIENCE, |s, _| {
        !s.awareness.contains_key(&a_id)
    })
    .await
    .expect("removal after TCP death");
}

#[tokio::test]
async fn joiners_and_queries_get_current_states() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let mut a = server.client("aw-join").await;
    let a_id = a.doc().client_id().get();
    a.set_awareness(r#"{"here":true}"#).expect("send");
    a.wait_for("relayed", PATIENCE, |s, _| s.awareness.contains_key(&a_id))
        .await
        .expect("relayed");

    let c = server.client("aw-join").await;
    c.wait_for("state on join", PATIENCE, |s, _| {
        s.awareness.contains_key(&a_id)
    })
    .await
    .expect("joiner receives current states");

    let before = c.state().awareness_messages;
    c.send_message(&Message::QueryAwareness).expect("send");
    c.wait_for("query answered", PATIENCE, |s, _| {
        s.awareness_messages > before
    })
    .await
    .expect("query-awareness answered");
}

#[tokio::test]
async fn awareness_is_coalesced_per_tick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.awareness_tick = Duration::from_millis(400);
    let server = TestServer::start(config).await;
    let mut a = server.client("aw-tick").await;
    let b = server.client("aw-tick").await;
    let a_id = a.doc().client_id().get();
    let before = b.state().awareness_messages;
    for i in 0..30 {
        a.set_awareness(&format!(r#"{{"cursor":{i}}}"#))
            .expect("send");
    }
    b.wait_for("final state", PATIENCE, |s, _| {
        s.awareness
            .get(&a_id)
            .is_some_and(|(_, st)| st.contains("29"))
    })
    .await
    .expect("final state arrives");
    let got = b.state().awareness_messages - before;
    assert!(
        got < 30,
        "30 changes should be merged into fewer messages, got {got}"
    );
}

#[tokio::test]
async fn stale_awareness_clock_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let a = server.client("aw-clock").await;
    let b = server.client("aw-clock").await;
    let id = 4242;
    let send = |clock: u64, state: &str| {
        let e = chorus_protocol::awareness::Entry {
            client_id: id,
            clock,
            state: bytes::Bytes::copy_from_slice(state.as_bytes()),
        };
        a.send_message(&Message::Awareness(
            chorus_protocol::awareness::encode_update([&e]),
        ))
        .expect("send");
    };
    send(5, r#""new""#);
    b.wait_for("clock 5", PATIENCE, |s, _| {
        s.awareness.get(&id).is_some_and(|(c, _)| *c == 5)
    })
    .await
    .expect("accepted");
    send(3, r#""old""#);
    send(6, r#""newer""#);
    b.wait_for("clock 6", PATIENCE, |s, _| {
        s.awareness.get(&id).is_some_and(|(c, _)| *c == 6)
    })
    .await
    .expect("accepted");
    assert!(
        b.state()
            .awareness
            .get(&id)
            .is_some_and(|(_, st)| st.contains("newer"))
    );
}
