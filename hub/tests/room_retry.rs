//! A room killed between applying an edit and answering: the registry retries the edit on the
//! room's successor under the same command id, and the edit's effect is in the document once,
//! whether the dead incarnation saved it or lost it.

mod common;

use chorus_hub::docjson::Op;
use chorus_hub::room::{Crash, ServerEdit};
use chorus_persistence::RoomKey;
use common::*;

fn insert(text: &str) -> ServerEdit {
    ServerEdit::Ops(vec![Op::InsertText {
        name: "t".into(),
        // At the start, whatever is there: a second application would add a second copy.
        index: 0,
        text: text.into(),
    }])
}

/// The room's text as the live room serves it.
async fn live_text(server: &TestServer, key: &RoomKey) -> String {
    use yrs::updates::decoder::Decode;
    let state = server.app.registry.state(key).await.expect("state");
    let doc = yrs::Doc::new();
    {
        use yrs::Transact;
        let u = yrs::Update::decode_v1(&state).expect("decode");
        doc.transact_mut().apply_update(u).expect("apply");
    }
    text_of(&doc, "t")
}

/// The room's text as the store holds it.
async fn stored_text(server: &TestServer, key: &RoomKey) -> String {
    let loaded = server.app.store.load(key).await.expect("load");
    let doc = yrs::Doc::new();
    let mut depth = chorus_persistence::DepthIndex::new(64);
    let errors = chorus_persistence::merge_into_doc(
        &doc,
        key,
        loaded.snapshot.iter().chain(loaded.updates.iter()),
        &mut depth,
        &mut chorus_persistence::PastHoles::default(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    text_of(&doc, "t")
}

async fn edit_through_a_crash(crash: Crash) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let key = RoomKey::new("default", "retry");
    let registry = &server.app.registry;
    let durable = registry
        .edit(&key, insert("first;"))
        .await
        .expect("answered")
        .expect("applied");
    assert_eq!(durable.await, Ok(true));
    let before = registry.get(&key).expect("open").generation;

    registry.faults().crash_after_next_edit(crash);
    let durable = registry
        .edit(&key, insert("once;"))
        .await
        .expect("the retry is answered by the successor")
        .expect("applied");
    assert_eq!(durable.await, Ok(true), "durable after the retry");
    let after = registry.get(&key).expect("open").generation;
    assert_ne!(before, after, "the room that applied it died ({crash:?})");

    assert_eq!(live_text(&server, &key).await, "once;first;", "{crash:?}");
    assert_eq!(stored_text(&server, &key).await, "once;first;", "{crash:?}");
    // The effect is forgotten once the caller has its answer.
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn an_edit_saved_by_a_room_that_died_before_answering_is_not_applied_again() {
    edit_through_a_crash(Crash::AfterSaving).await;
}

#[tokio::test]
async fn an_edit_lost_with_a_room_that_died_before_answering_is_applied_once_by_its_successor() {
    edit_through_a_crash(Crash::Discarding).await;
}

#[tokio::test]
async fn edits_queued_behind_a_dying_room_go_to_its_successor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let key = RoomKey::new("default", "queued");
    let registry = server.app.registry.clone();
    registry
        .edit(&key, insert("0;"))
        .await
        .expect("answered")
        .expect("applied");
    registry.faults().crash_after_next_edit(Crash::AfterSaving);
    // Several edits at once: the first kills the room, the rest wait in its queue and are
    // handed back to the registry, which gives them to the successor.
    let edits = (1..=8).map(|i| {
        let registry = registry.clone();
        let key = key.clone();
        async move {
            registry
                .edit(&key, insert(&format!("{i};")))
                .await
                .expect("answered")
                .expect("applied")
                .await
        }
    });
    for durable in futures_util::future::join_all(edits).await {
        assert_eq!(durable, Ok(true));
    }
    let text = live_text(&server, &key).await;
    for i in 0..=8 {
        assert_eq!(
            text.matches(&format!("{i};")).count(),
            1,
            "{i} once: {text}"
        );
    }
    server.stop().await.expect("stop");
}
