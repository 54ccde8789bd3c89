//! Documents survive restarts, crashes and idle room eviction; opted-in clients hear "saved".

mod common;

use std::time::Duration;

use chorus_persistence::{DocStore, RoomKey, SqliteStore};
use chorus_protocol::client::{Client, ClientOptions};
use chorus_protocol::ext::ServerMessage;
use common::*;

fn ext() -> ClientOptions {
    ClientOptions {
        ext: true,
        ..Default::default()
    }
}

/// Waits until the first `n` update messages are durable. Every connection's first update
/// message is its SyncStep2 answering the hub's SyncStep1, so a client's k-th edit is
/// message k + 1.
async fn wait_saved(c: &Client, n: u64) {
    c.wait_for("saved", PATIENCE, |s, _| {
        s.events
            .iter()
            .any(|e| matches!(e, ServerMessage::Saved { updates } if *updates >= n))
    })
    .await
    .expect("saved acknowledgement");
}

#[tokio::test]
async fn saved_acknowledges_durable_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let c = server.client_with("ack", ext()).await;
    for i in 0..5 {
        append(&c, "t", &format!("{i}"));
    }
    wait_saved(&c, 1 + 5).await;
    // What was acknowledged is in the store right now.
    let store = SqliteStore::open_file(&dir.path().join("chorus.db"))
        .await
        .expect("open");
    let loaded = store
        .load(&RoomKey::new("default", "ack"))
        .await
        .expect("load");
    let (doc, errors) = loaded.into_doc(&RoomKey::new("default", "ack"));
    assert!(errors.is_empty());
    use yrs::{GetString, Transact};
    assert_eq!(
        doc.get_or_insert_text("t").get_string(&doc.transact()),
        "01234"
    );
    // Stock clients (no extension) never receive JSON frames.
    let plain = server.client("ack").await;
    append(&plain, "t", "x");
    wait_text(&[&c], "t", "01234x").await;
    assert!(plain.state().events.is_empty());
}

#[tokio::test]
async fn documents_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let a = server.client("restart").await;
    append(&a, "t", "persisted text");
    {
        let m = a.doc().get_or_insert_map("m");
        use yrs::{Map, Transact};
        m.insert(&mut a.doc().transact_mut(), "k", "v");
    }
    // Once the server has applied the edits (another member sees them), stop at once:
    // shutdown must flush what is still pending.
    let watcher = server.client("restart").await;
    wait_text(&[&watcher], "t", "persisted text").await;
    watcher
        .wait_for("map key", PATIENCE, |_, doc| {
            use yrs::{Map, Transact};
            doc.get_or_insert_map("m")
                .get(&doc.transact(), "k")
                .is_some()
        })
        .await
        .expect("map edit applied");
    server.stop().await.expect("graceful stop");
    assert_eq!(a.wait_closed(PATIENCE).await.expect("closed").0, 1012);

    let server = TestServer::start(test_config(dir.path())).await;
    let b = server.client("restart").await;
    assert_eq!(text(&b, "t"), "persisted text", "content present at synced");
    use yrs::{Map, Transact};
    let m = b.doc().get_or_insert_map("m");
    assert!(m.get(&b.doc().transact(), "k").is_some());
}

#[tokio::test]
async fn idle_rooms_are_flushed_dropped_and_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.room_idle = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let a = server.client("idle").await;
    append(&a, "t", "before idle");
    a.close().await;
    server.wait_health("rooms", 0).await;
    let b = server.client("idle").await;
    assert_eq!(text(&b, "t"), "before idle");
}

/// Waits until the room has a snapshot and at most `most` log entries.
async fn compacted_to(store: &SqliteStore, key: &RoomKey, most: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let loaded = store.load(key).await.expect("load");
        if loaded.snapshot.is_some() && loaded.updates.len() <= most {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "log never compacted: {} entries",
            loaded.updates.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn compaction_keeps_the_document_and_trims_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.compact_threshold = 10;
    let server = TestServer::start(config).await;
    let c = server.client_with("compact", ext()).await;
    let mut expected = String::new();
    for i in 0..60 {
        let w = format!("{i},");
        expected.push_str(&w);
        append(&c, "t", &w);
        if i % 7 == 0 {
            wait_saved(&c, 1 + i + 1).await;
        }
    }
    wait_saved(&c, 1 + 60).await;
    let store = SqliteStore::open_file(&dir.path().join("chorus.db"))
        .await
        .expect("open");
    compacted_to(&store, &RoomKey::new("default", "compact"), 10).await;
    drop(c);
    server.stop().await.expect("stop");
    let server = TestServer::start(test_config(dir.path())).await;
    let b = server.client("compact").await;
    assert_eq!(text(&b, "t"), expected);
}

#[tokio::test]
async fn a_large_document_is_compacted_only_once_its_log_is_a_quarter_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.compact_threshold = 5;
    let server = TestServer::start(config).await;
    let c = server.client_with("big", ext()).await;
    let store = SqliteStore::open_file(&dir.path().join("chorus.db"))
        .await
        .expect("open");
    let key = RoomKey::new("default", "big");
    // 40 KB, then past the threshold: compacted into a ~40 KB snapshot.
    append(&c, "t", &"x".repeat(40_000));
    for _ in 0..6 {
        append(&c, "t", "a");
    }
    wait_saved(&c, 1 + 7).await;
    compacted_to(&store, &key, 1).await;
    // Ten small edits: past the threshold, far below a quarter of the snapshot. Kept.
    for _ in 0..10 {
        append(&c, "t", "b");
    }
    wait_saved(&c, 1 + 17).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = store.load(&key).await.expect("load").updates.len();
    assert!(kept >= 10, "compacted with a log of {kept} small entries");
    // A 12 KB edit takes the log past a quarter of the snapshot: compacted.
    append(&c, "t", &"y".repeat(12_000));
    wait_saved(&c, 1 + 18).await;
    compacted_to(&store, &key, 0).await;
    server.stop().await.expect("stop");
}

/// Starts the real binary; returns the child and its address.
async fn spawn_binary(dir: &std::path::Path) -> (tokio::process::Child, std::net::SocketAddr) {
    let dir = dir.as_os_str();
    spawn_chorus(&[
        std::ffi::OsStr::new("--persist-batch"),
        std::ffi::OsStr::new("10ms"),
        std::ffi::OsStr::new("--data-dir"),
        dir,
    ])
    .await
}

#[tokio::test]
async fn acknowledged_updates_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = spawn_binary(dir.path()).await;
    let url = format!("ws://{addr}/ws/crash");
    let c = Client::connect(&url, ext()).await.expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    for i in 0..20 {
        append(&c, "t", &format!("{i};"));
    }
    wait_saved(&c, 1 + 20).await;
    let expected = text(&c, "t");
    child.start_kill().expect("kill -9");
    let _ = child.wait().await;

    let (mut child, addr) = spawn_binary(dir.path()).await;
    let c2 = Client::connect(&format!("ws://{addr}/ws/crash"), ClientOptions::default())
        .await
        .expect("connect");
    c2.synced(PATIENCE).await.expect("synced");
    assert_eq!(
        text(&c2, "t"),
        expected,
        "acknowledged updates lost by kill -9"
    );
    let _ = child.start_kill();
}

#[tokio::test]
async fn sigterm_drains_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = spawn_binary(dir.path()).await;
    let c = Client::connect(&format!("ws://{addr}/ws/term"), ClientOptions::default())
        .await
        .expect("connect");
    c.synced(PATIENCE).await.expect("synced");
    append(&c, "t", "flushed on sigterm");
    // Let the edit reach the server (another client sees it), then SIGTERM at once.
    let d = Client::connect(&format!("ws://{addr}/ws/term"), ClientOptions::default())
        .await
        .expect("connect");
    wait_text(&[&d], "t", "flushed on sigterm").await;
    sigterm(&child);
    let (code, _) = c.wait_closed(PATIENCE).await.expect("closed");
    assert_eq!(code, 1012, "clients are told the server restarts");
    let exit = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exits in grace")
        .expect("wait");
    assert!(exit.success(), "clean exit: {exit:?}");

    let (mut child, addr) = spawn_binary(dir.path()).await;
    let c2 = Client::connect(&format!("ws://{addr}/ws/term"), ClientOptions::default())
        .await
        .expect("connect");
    c2.synced(PATIENCE).await.expect("synced");
    assert_eq!(text(&c2, "t"), "flushed on sigterm");
    let _ = child.start_kill();
}

#[tokio::test]
async fn updates_waiting_for_predecessors_survive_a_restart() {
    use chorus_protocol::sync::Message;
    // The second edit arrives first (its predecessor is missing), is acknowledged, and must
    // still be there after a restart.
    let (first, second) = chorus_persistence::testing::consecutive_edits(99, "a", "b");

    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let c = server.client_with("pending", ext()).await;
    c.send_message(&Message::Update(second)).expect("send");
    wait_saved(&c, 1 + 1).await;
    // An ordinary edit while something is held back is stored once, not again as raw bytes.
    append(&c, "other", "x");
    wait_saved(&c, 1 + 2).await;
    {
        let store = SqliteStore::open_file(&dir.path().join("chorus.db"))
            .await
            .expect("open");
        let stored = store
            .load(&RoomKey::new("default", "pending"))
            .await
            .expect("load");
        assert_eq!(
            stored.updates.len(),
            2,
            "the held-back update and the ordinary edit, each stored once"
        );
    }
    drop(c);
    server.stop().await.expect("stop");

    let server = TestServer::start(test_config(dir.path())).await;
    let c = server.client("pending").await;
    let watcher = server.client("pending").await;
    c.send_message(&Message::Update(first)).expect("send");
    wait_text(&[&watcher], "t", "ab").await;
}

/// The room compacts the document it holds in memory: what yrs holds back for a missing
/// predecessor must reach the snapshot, or trimming the log loses it.
#[tokio::test]
async fn compaction_keeps_updates_waiting_for_predecessors() {
    use chorus_protocol::sync::Message;
    let (first, second) = chorus_persistence::testing::consecutive_edits(99, "a", "b");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.compact_threshold = 2;
    let server = TestServer::start(config).await;
    let c = server.client_with("pending-compacted", ext()).await;
    c.send_message(&Message::Update(second)).expect("send");
    wait_saved(&c, 1 + 1).await;
    for w in ["x", "y", "z"] {
        append(&c, "other", w);
    }
    wait_saved(&c, 1 + 4).await;
    let store = SqliteStore::open_file(&dir.path().join("chorus.db"))
        .await
        .expect("open");
    compacted_to(&store, &RoomKey::new("default", "pending-compacted"), 0).await;
    drop(c);
    server.stop().await.expect("stop");

    let server = TestServer::start(test_config(dir.path())).await;
    let c = server.client("pending-compacted").await;
    let watcher = server.client("pending-compacted").await;
    assert_eq!(text(&watcher, "other"), "xyz");
    c.send_message(&Message::Update(first)).expect("send");
    wait_text(&[&watcher], "t", "ab").await;
}

#[tokio::test]
async fn database_url_selects_a_sqlite_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("elsewhere.db");
    let mut config = test_config(&dir.path().join("unused"));
    config.database_url = Some(format!("sqlite://{}", db.display()));
    let server = TestServer::start(config.clone()).await;
    let c = server.client_with("url", ext()).await;
    append(&c, "t", "via url");
    wait_saved(&c, 1 + 1).await;
    server.stop().await.expect("stop");
    assert!(db.exists(), "the URL's file holds the data");
    assert!(!dir.path().join("unused/chorus.db").exists());
    let server = TestServer::start(config).await;
    let c = server.client("url").await;
    assert_eq!(text(&c, "t"), "via url");
}
