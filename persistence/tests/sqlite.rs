//! The shared store behaviour suite against the SQLite store, one fresh file per test.

use std::sync::Arc;

use chorus_persistence::{DocStore, SqliteStore, suite};

async fn fresh() -> (tempfile::TempDir, Arc<dyn DocStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_file(&dir.path().join("chorus.db"))
        .await
        .expect("open sqlite");
    (dir, Arc::new(store))
}

macro_rules! suite_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (_dir, store) = fresh().await;
            suite::$name(store).await;
        }
    )*};
}

suite_tests!(
    unknown_room_is_empty,
    append_then_load_in_order,
    large_batch_keeps_order,
    rooms_and_tenants_are_separate,
    compaction_keeps_everything,
    persister_commits_concurrent_rooms,
    map_content_roundtrips,
);

#[tokio::test]
async fn reopening_the_file_keeps_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/dir/chorus.db");
    let key = chorus_persistence::RoomKey::new("t", "r");
    {
        let store = SqliteStore::open_file(&path).await.expect("open");
        store
            .append(&[chorus_persistence::AppendBatch {
                key: key.clone(),
                updates: vec![bytes::Bytes::from_static(&[0, 0])],
            }])
            .await
            .expect("append");
    }
    let store = SqliteStore::open_file(&path).await.expect("reopen");
    assert_eq!(store.load(&key).await.expect("load").updates.len(), 1);
}
