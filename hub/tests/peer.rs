//! Server-side peers: a member that lives in the node, with its own client id and awareness,
//! whose edits take the ordinary path (relayed, stored, held to the limits).

mod common;

use std::time::Duration;

use chorus_hub::peer::{PeerError, PeerEvent, PeerOptions};
use chorus_persistence::RoomKey;
use common::*;
use yrs::{Assoc, GetString, IndexedSequence, Text, Transact};

fn key(room: &str) -> RoomKey {
    RoomKey::new("default", room.to_owned())
}

#[tokio::test]
async fn a_peer_edits_at_a_relative_position_and_its_edit_is_relayed_and_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let alice = server.client("peer-room").await;
    append(&alice, "t", "Question: why?");
    wait_text(&[&alice], "t", "Question: why?").await;

    let mut peer = server
        .app
        .registry
        .peer(&key("peer-room"), PeerOptions::named("Assistant"))
        .await
        .expect("joined");
    peer.synced(PATIENCE).await.expect("synced");
    let text = peer.doc().get_or_insert_text("t");
    assert_eq!(text.get_string(&peer.doc().transact()), "Question: why?");
    assert_ne!(peer.client_id(), alice.doc().client_id().get());

    // The answer goes after the question, wherever the question ends up: a sticky index,
    // made before Alice types in front of it.
    let anchor = {
        let txn = peer.doc().transact();
        text.sticky_index(&txn, 14, Assoc::Before).expect("index")
    };
    {
        let t = alice.doc().get_or_insert_text("t");
        let mut txn = alice.doc().transact_mut();
        t.insert(&mut txn, 0, ">> ");
    }
    wait_for_text(&peer, "t", ">> Question: why?").await;
    peer.edit(|txn| {
        let at = anchor.get_offset(txn).expect("offset").index;
        text.insert(txn, at, " Because.");
    })
    .await
    .expect("edit");
    wait_text(&[&alice], "t", ">> Question: why? Because.").await;
    peer.durable(PATIENCE).await.expect("stored");
    // One change for the document the peer joined, one for Alice's edit.
    for what in ["the joined document", "Alice's edit"] {
        let event = tokio::time::timeout(PATIENCE, peer.next_event()).await;
        assert_eq!(event, Ok(Some(PeerEvent::Changed)), "{what}");
    }
    peer.leave().await;
    alice.close().await;
    server.stop().await.expect("stop");

    // Stored like anyone's edit: a new node loads it.
    let server = TestServer::start(test_config(dir.path())).await;
    let bob = server.client("peer-room").await;
    wait_text(&[&bob], "t", ">> Question: why? Because.").await;
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_peer_shows_in_awareness_under_its_name_and_leaves_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let alice = server.client("aware").await;
    let mut peer = server
        .app
        .registry
        .peer(
            &key("aware"),
            PeerOptions {
                color: Some("#8a2be2".into()),
                ..PeerOptions::named("Assistant")
            },
        )
        .await
        .expect("joined");
    peer.synced(PATIENCE).await.expect("synced");
    // It may not pass for someone else: the room writes its own name over the claim.
    peer.set_awareness(&serde_json::json!({ "user": { "name": "Alice" }, "typing": true }))
        .await
        .expect("awareness");
    let id = peer.client_id();
    alice
        .wait_for("the peer's awareness", PATIENCE, |s, _| {
            s.awareness.get(&id).is_some_and(|(_, st)| {
                st.contains("\"name\":\"Assistant\"")
                    && st.contains("#8a2be2")
                    && st.contains("typing")
            })
        })
        .await
        .expect("seen");
    let members = server.app.registry.members(&key("aware")).await;
    assert_eq!(members.len(), 2, "{members:?}");
    peer.leave().await;
    alice
        .wait_for("the peer's state removed", PATIENCE, |s, _| {
            !s.awareness.contains_key(&id)
        })
        .await
        .expect("removed");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_peer_is_held_to_the_limits_and_told_when_the_room_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.max_document_bytes = 4096;
    let server = TestServer::start(config).await;
    let options = PeerOptions {
        messages_per_second: Some(5),
        ..PeerOptions::named("Bot")
    };
    let mut peer = server
        .app
        .registry
        .peer(&key("limits"), options.clone())
        .await
        .expect("joined");
    peer.synced(PATIENCE).await.expect("synced");
    let text = peer.doc().get_or_insert_text("t");
    // The rate: a burst of twice the rate, then refusals (nothing applied).
    let mut refused = 0;
    for i in 0..12 {
        match peer.edit(|txn| text.insert(txn, 0, &i.to_string())).await {
            Ok(()) => {}
            Err(PeerError::RateLimited) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 1, "12 edits at once passed a limit of 5/s");
    // Nesting past --max-nesting-depth (64) is refused before the room sees it, as from a
    // socket.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let deep = (0..100).fold(yrs::Any::from("leaf"), |inner, _| {
        yrs::Any::Array(vec![inner].into())
    });
    let map = peer.doc().get_or_insert_map("m");
    let refusal = peer
        .edit(|txn| {
            use yrs::Map;
            map.insert(txn, "deep", deep);
        })
        .await;
    assert!(matches!(refusal, Err(PeerError::Refused(_))), "{refusal:?}");
    // Its replica holds the refused value at a clock the room never gets: the peer has left,
    // and joins again for a fresh replica.
    assert_eq!(
        peer.edit(|txn| text.insert(txn, 0, "no")).await,
        Err(PeerError::Closed)
    );
    drop(peer);
    let mut peer = server
        .app
        .registry
        .peer(&key("limits"), options.clone())
        .await
        .expect("joined again");
    peer.synced(PATIENCE).await.expect("synced");
    let text = peer.doc().get_or_insert_text("t");
    peer.edit(|txn| text.insert(txn, 0, "ok"))
        .await
        .expect("a member again");
    // The document size: an edit past it is refused and the peer removed with 4413.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    peer.edit(|txn| text.insert(txn, 0, &"x".repeat(8192)))
        .await
        .expect("sent");
    let closed = loop {
        match tokio::time::timeout(PATIENCE, peer.next_event()).await {
            Ok(Some(PeerEvent::Closed { code, .. })) => break code,
            Ok(Some(PeerEvent::Changed)) => continue,
            other => panic!("no close: {other:?}"),
        }
    };
    assert_eq!(closed, 4413);
    assert_eq!(
        peer.edit(|txn| text.insert(txn, 0, "more")).await,
        Err(PeerError::Closed)
    );

    // Draining: told with 1012.
    let mut peer = server
        .app
        .registry
        .peer(&key("limits"), PeerOptions::named("Bot"))
        .await
        .expect("joined again");
    peer.synced(PATIENCE).await.expect("synced");
    let stopping = tokio::spawn(server.stop());
    let closed = loop {
        match tokio::time::timeout(PATIENCE, peer.next_event()).await {
            Ok(Some(PeerEvent::Closed { code, .. })) => break code,
            Ok(Some(PeerEvent::Changed)) => continue,
            other => panic!("no close: {other:?}"),
        }
    };
    assert_eq!(closed, 1012);
    drop(peer);
    stopping.await.expect("join").expect("stop");
}

async fn wait_for_text(peer: &chorus_hub::peer::Peer, name: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if text_of(peer.doc(), name) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica holds {:?}, not {want:?}",
            text_of(peer.doc(), name)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
