//! Behaviour tests every [`DocStore`] must pass, written once and run against each store by
//! that store's test file (`tests/sqlite.rs`, `tests/postgres.rs`). Each function takes a
//! fresh, empty store and panics with a description when the store misbehaves. The catalog's
//! tests are in [`catalog`].

pub mod ai_runs;
pub mod catalog;
pub mod search;

use std::sync::Arc;

use bytes::Bytes;
use yrs::{Doc, GetString, Map, ReadTxn, StateVector, Text, Transact};

use crate::{AppendBatch, DocStore, LogSummary, Persister, RoomKey, compact};

/// A v1 update that inserts `text` at the end of the `t` text of a fresh doc with `client`.
fn text_update(client: u64, prefix_state: &Doc, text: &str) -> Bytes {
    let doc = Doc::with_client_id(client);
    {
        let st = prefix_state
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let mut txn = doc.transact_mut();
        if let Ok(u) = <yrs::Update as yrs::updates::decoder::Decode>::decode_v1(&st) {
            let _ = txn.apply_update(u);
        }
    }
    let sv = doc.transact().state_vector();
    let t = doc.get_or_insert_text("t");
    {
        let mut txn = doc.transact_mut();
        let len = t.get_string(&txn).len() as u32;
        t.insert(&mut txn, len, text);
    }
    // Mirror the edit into prefix_state so the next update builds on it.
    let update = doc.transact().encode_state_as_update_v1(&sv);
    if let Ok(u) = <yrs::Update as yrs::updates::decoder::Decode>::decode_v1(&update) {
        let _ = prefix_state.transact_mut().apply_update(u);
    }
    Bytes::from(update)
}

fn text_of(store_doc: &Doc) -> String {
    let t = store_doc.get_or_insert_text("t");
    t.get_string(&store_doc.transact())
}

async fn loaded_text(store: &dyn DocStore, key: &RoomKey) -> String {
    let loaded = store.load(key).await.expect("load");
    let (doc, errors) = loaded.into_doc(key);
    assert!(
        errors.is_empty(),
        "stored updates failed to apply: {errors:?}"
    );
    text_of(&doc)
}

/// An unknown room loads as empty.
pub async fn unknown_room_is_empty(store: Arc<dyn DocStore>) {
    let loaded = store.load(&RoomKey::new("t", "nope")).await.expect("load");
    assert!(loaded.is_empty());
    assert_eq!(loaded.last_id, 0);
    store.ping().await.expect("ping");
}

/// Appended updates come back in order and rebuild the document.
pub async fn append_then_load_in_order(store: Arc<dyn DocStore>) {
    let key = RoomKey::new("t", "room");
    let mirror = Doc::new();
    let mut updates = Vec::new();
    for word in ["one ", "two ", "three"] {
        updates.push(text_update(7, &mirror, word));
    }
    store
        .append(&[AppendBatch {
            key: key.clone(),
            updates: updates[..2].to_vec(),
            events: Vec::new(),
            search_due: None,
        }])
        .await
        .expect("append");
    store
        .append(&[AppendBatch {
            key: key.clone(),
            updates: updates[2..].to_vec(),
            events: Vec::new(),
            search_due: None,
        }])
        .await
        .expect("append");
    let loaded = store.load(&key).await.expect("load");
    assert_eq!(
        loaded.updates, updates,
        "log must come back in append order"
    );
    assert!(loaded.last_id > 0);
    assert_eq!(loaded_text(&*store, &key).await, "one two three");
}

/// A large batch (many statements' worth of rows) keeps its order and every row.
pub async fn large_batch_keeps_order(store: Arc<dyn DocStore>) {
    let key = RoomKey::new("t", "large");
    let mirror = Doc::new();
    let mut expected = String::new();
    let mut updates = Vec::new();
    for i in 0..700 {
        let word = format!("{i},");
        expected.push_str(&word);
        updates.push(text_update(5, &mirror, &word));
    }
    store
        .append(&[AppendBatch {
            key: key.clone(),
            updates: updates.clone(),
            events: Vec::new(),
            search_due: None,
        }])
        .await
        .expect("append");
    let loaded = store.load(&key).await.expect("load");
    assert_eq!(
        loaded.updates, updates,
        "rows lost or reordered in a large batch"
    );
    assert_eq!(loaded_text(&*store, &key).await, expected);
}

/// Rooms and tenants never see each other's updates, even with the same room name.
pub async fn rooms_and_tenants_are_separate(store: Arc<dyn DocStore>) {
    let a = RoomKey::new("tenant-a", "shared-name");
    let b = RoomKey::new("tenant-b", "shared-name");
    let c = RoomKey::new("tenant-a", "other");
    let (ma, mb) = (Doc::new(), Doc::new());
    store
        .append(&[
            AppendBatch {
                key: a.clone(),
                updates: vec![text_update(1, &ma, "alpha")],
                events: Vec::new(),
                search_due: None,
            },
            AppendBatch {
                key: b.clone(),
                updates: vec![text_update(2, &mb, "beta")],
                events: Vec::new(),
                search_due: None,
            },
        ])
        .await
        .expect("append");
    assert_eq!(loaded_text(&*store, &a).await, "alpha");
    assert_eq!(loaded_text(&*store, &b).await, "beta");
    assert!(store.load(&c).await.expect("load").is_empty());
    store.delete_room(&a).await.expect("delete");
    assert!(store.load(&a).await.expect("load").is_empty());
    assert_eq!(loaded_text(&*store, &b).await, "beta");
}

/// Compaction keeps the content, empties the log, and keeps updates appended after its marker.
pub async fn compaction_keeps_everything(store: Arc<dyn DocStore>) {
    let key = RoomKey::new("t", "compact");
    let mirror = Doc::new();
    let mut expected = String::new();
    for i in 0..50 {
        let word = format!("w{i} ");
        expected.push_str(&word);
        store
            .append(&[AppendBatch {
                key: key.clone(),
                updates: vec![text_update(3, &mirror, &word)],
                events: Vec::new(),
                search_due: None,
            }])
            .await
            .expect("append");
    }
    let stats = compact(&*store, &key).await.expect("compact");
    assert_eq!(stats.merged, 50);
    assert!(stats.snapshot_bytes > 0);
    let loaded = store.load(&key).await.expect("load");
    assert!(loaded.snapshot.is_some());
    assert!(
        loaded.updates.is_empty(),
        "compacted log entries must be deleted"
    );
    assert_eq!(loaded_text(&*store, &key).await, expected);

    // Simulate an edit landing while a compaction encodes: the compactor read up to `marker`,
    // then an update is appended, then the snapshot is written with the old marker.
    let before = store.load(&key).await.expect("load");
    let marker = before.last_id;
    let (doc, _) = before.into_doc(&key);
    let snapshot = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    store
        .append(&[AppendBatch {
            key: key.clone(),
            updates: vec![text_update(3, &mirror, "late")],
            events: Vec::new(),
            search_due: None,
        }])
        .await
        .expect("append");
    store
        .write_snapshot(&key, marker, &snapshot)
        .await
        .expect("snapshot");
    expected.push_str("late");
    assert_eq!(
        loaded_text(&*store, &key).await,
        expected,
        "an update appended during compaction was lost"
    );

    // A stale snapshot (lower marker) never replaces a newer one.
    store
        .write_snapshot(
            &key,
            0,
            &Doc::new()
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        )
        .await
        .expect("stale snapshot");
    assert_eq!(loaded_text(&*store, &key).await, expected);
}

/// The group-committing persister makes many rooms' concurrent batches durable.
pub async fn persister_commits_concurrent_rooms(store: Arc<dyn DocStore>) {
    let persister = Persister::spawn(store.clone(), 64, std::time::Duration::from_millis(10));
    let mut tasks = Vec::new();
    for r in 0..20 {
        let p = persister.clone();
        tasks.push(tokio::spawn(async move {
            let key = RoomKey::new("t", format!("room-{r}"));
            let mirror = Doc::new();
            for i in 0..5 {
                let u = text_update(100 + r, &mirror, &format!("{i}"));
                p.persist(AppendBatch {
                    key: key.clone(),
                    updates: vec![u],
                    events: Vec::new(),
                    search_due: None,
                })
                .await
                .expect("persist");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    for r in 0..20 {
        let key = RoomKey::new("t", format!("room-{r}"));
        assert_eq!(loaded_text(&*store, &key).await, "01234");
    }
}

/// Map entries survive as well as text (any shared type is stored as opaque updates).
pub async fn map_content_roundtrips(store: Arc<dyn DocStore>) {
    let key = RoomKey::new("t", "map");
    let doc = Doc::with_client_id(9);
    let map = doc.get_or_insert_map("m");
    map.insert(&mut doc.transact_mut(), "k", "v");
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    store
        .append(&[AppendBatch {
            key: key.clone(),
            updates: vec![Bytes::from(update)],
            events: Vec::new(),
            search_due: None,
        }])
        .await
        .expect("append");
    let (loaded, _) = store.load(&key).await.expect("load").into_doc(&key);
    let m = loaded.get_or_insert_map("m");
    let got = m
        .get(&loaded.transact(), "k")
        .map(|v| v.to_string(&loaded.transact()));
    assert_eq!(got.as_deref(), Some("v"));
}

/// Appends to one room from many tasks at once, while it is compacted over and over, lose
/// nothing: a compaction's marker must never pass an update that commits after it.
pub async fn concurrent_appends_survive_compaction(store: Arc<dyn DocStore>) {
    const WRITERS: u64 = 6;
    const EDITS: u64 = 40;
    let key = RoomKey::new("t", "busy");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let compactor = {
        let (store, key, done) = (store.clone(), key.clone(), done.clone());
        tokio::spawn(async move {
            let mut runs = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                compact(&*store, &key).await.expect("compact");
                runs += 1;
                tokio::task::yield_now().await;
            }
            runs
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, key) = (store.clone(), key.clone());
        writers.push(tokio::spawn(async move {
            let doc = Doc::with_client_id(1000 + w);
            let map = doc.get_or_insert_map("m");
            for e in 0..EDITS {
                let sv = doc.transact().state_vector();
                map.insert(&mut doc.transact_mut(), format!("{w}-{e}"), e as i64);
                let update = doc.transact().encode_state_as_update_v1(&sv);
                store
                    .append(&[AppendBatch {
                        key: key.clone(),
                        updates: vec![Bytes::from(update)],
                        events: Vec::new(),
                        search_due: None,
                    }])
                    .await
                    .expect("append");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = compactor.await.expect("compactor");
    assert!(runs > 0);
    let (doc, errors) = store.load(&key).await.expect("load").into_doc(&key);
    assert!(errors.is_empty(), "{errors:?}");
    let len = doc.get_or_insert_map("m").len(&doc.transact());
    assert_eq!(
        u64::from(len),
        WRITERS * EDITS,
        "updates lost between concurrent appends and compaction ({runs} compactions)"
    );
}

/// An update stored while its predecessor is missing (held back, acknowledged by the hub)
/// survives compaction: the snapshot carries it, and it applies once the predecessor arrives.
/// (It starts past a hole in its client's clocks: it waits in `PastHoles`, which compaction
/// merges into the snapshot; this guards it.)
pub async fn compaction_keeps_held_back_updates(store: Arc<dyn DocStore>) {
    let key = RoomKey::new("t", "held");
    let (first, second) = crate::testing::consecutive_edits(7, "a", "b");
    let other = text_update(8, &Doc::new(), "x");
    for u in [second, other] {
        store
            .append(&[AppendBatch {
                key: key.clone(),
                updates: vec![u],
                events: Vec::new(),
                search_due: None,
            }])
            .await
            .expect("append");
    }
    let stats = compact(&*store, &key).await.expect("compact");
    assert_eq!(stats.merged, 2);
    let loaded = store.load(&key).await.expect("load");
    assert!(loaded.updates.is_empty(), "the log was compacted");
    let (doc, mut holes, errors) = loaded.into_doc_holding(&key);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(holes.len(), 1, "the second edit waits for the first");
    {
        let mut txn = doc.transact_mut();
        let clocks = chorus_protocol::nesting::scan_update(&first, 64)
            .expect("scans")
            .clocks;
        let split = crate::PastHoles::cut(&first, clocks, &txn.state_vector());
        let u = <yrs::Update as yrs::updates::decoder::Decode>::decode_v1(&first).expect("update");
        assert!(holes.apply(&mut txn, u, split).result.is_ok());
    }
    assert!(holes.is_empty(), "released by the first");
    let text = text_of(&doc);
    assert!(
        text.contains("ab") && text.contains('x'),
        "the held-back update was lost by compaction: {text:?}"
    );
}

/// `log_summary` counts the log after the snapshot, for this room only.
pub async fn log_summary_counts_the_log_after_the_snapshot(store: Arc<dyn DocStore>) {
    let key = RoomKey::new("t", "summed");
    assert_eq!(
        store.log_summary(&key).await.expect("summary"),
        LogSummary::default(),
        "an unknown room has an empty log"
    );
    let state = Doc::new();
    let updates: Vec<Bytes> = ["one", "two", "three"]
        .iter()
        .map(|w| text_update(1, &state, w))
        .collect();
    let append = |key: RoomKey, updates: Vec<Bytes>| {
        let store = store.clone();
        async move {
            store
                .append(&[AppendBatch {
                    key,
                    updates,
                    events: Vec::new(),
                    search_due: None,
                }])
                .await
                .expect("append");
        }
    };
    append(key.clone(), updates.clone()).await;
    // Other rooms and tenants do not count.
    append(
        RoomKey::new("t", "other"),
        vec![text_update(2, &Doc::new(), "x")],
    )
    .await;
    append(
        RoomKey::new("u", "summed"),
        vec![text_update(3, &Doc::new(), "y")],
    )
    .await;
    let loaded = store.load(&key).await.expect("load");
    let log = store.log_summary(&key).await.expect("summary");
    assert_eq!(
        log,
        LogSummary {
            last_id: loaded.last_id,
            entries: 3,
            bytes: updates.iter().map(Bytes::len).sum(),
            snapshot_bytes: 0,
        }
    );
    let snapshot = state
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    store
        .write_snapshot(&key, log.last_id, &snapshot)
        .await
        .expect("snapshot");
    assert_eq!(
        store.log_summary(&key).await.expect("summary"),
        LogSummary {
            last_id: 0,
            entries: 0,
            bytes: 0,
            snapshot_bytes: snapshot.len(),
        },
        "the compacted log is empty"
    );
    let later = text_update(1, &state, "four");
    append(key.clone(), vec![later.clone()]).await;
    let after = store.log_summary(&key).await.expect("summary");
    assert!(after.last_id > log.last_id, "{after:?} after {log:?}");
    assert_eq!(
        (after.entries, after.bytes, after.snapshot_bytes),
        (1, later.len(), snapshot.len())
    );
}

/// `compact_exclusive`, with no other compaction running, compacts like `compact`, and
/// reports an empty log as nothing merged.
pub async fn exclusive_compaction_compacts(store: Arc<dyn DocStore>) {
    let key = RoomKey::new("t", "exclusive");
    let empty = store.compact_exclusive(&key).await.expect("compact empty");
    assert_eq!(empty, Some(crate::CompactStats::default()));
    let mirror = Doc::new();
    let updates: Vec<Bytes> = ["a", "b", "c"]
        .iter()
        .map(|w| text_update(4, &mirror, w))
        .collect();
    store
        .append(&[AppendBatch {
            key: key.clone(),
            updates,
            events: Vec::new(),
            search_due: None,
        }])
        .await
        .expect("append");
    let stats = store
        .compact_exclusive(&key)
        .await
        .expect("compact")
        .expect("no other compaction runs, so this one must");
    assert_eq!(stats.merged, 3);
    let loaded = store.load(&key).await.expect("load");
    assert!(loaded.snapshot.is_some() && loaded.updates.is_empty());
    assert_eq!(loaded_text(&*store, &key).await, "abc");
}

/// Every behaviour test, for stores that want to run them in one go.
pub async fn run_all<F, Fut>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn DocStore>>,
{
    unknown_room_is_empty(fresh().await).await;
    append_then_load_in_order(fresh().await).await;
    large_batch_keeps_order(fresh().await).await;
    rooms_and_tenants_are_separate(fresh().await).await;
    compaction_keeps_everything(fresh().await).await;
    compaction_keeps_held_back_updates(fresh().await).await;
    persister_commits_concurrent_rooms(fresh().await).await;
    map_content_roundtrips(fresh().await).await;
    concurrent_appends_survive_compaction(fresh().await).await;
    log_summary_counts_the_log_after_the_snapshot(fresh().await).await;
    exclusive_compaction_compacts(fresh().await).await;
}
