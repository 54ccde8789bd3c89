//! The shared store behaviour suites (documents and catalog) against the SQLite store, one
//! fresh file per test.

use std::sync::Arc;

use chorus_persistence::{DocStore, SqliteStore, suite};

async fn fresh() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_file(&dir.path().join("chorus.db"))
        .await
        .expect("open sqlite");
    (dir, Arc::new(store))
}

macro_rules! suite_tests {
    ($suite:path: $($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (_dir, store) = fresh().await;
            { use $suite as s; s::$name(store).await; }
        }
    )*};
}

suite_tests!(suite:
    unknown_room_is_empty,
    append_then_load_in_order,
    large_batch_keeps_order,
    rooms_and_tenants_are_separate,
    compaction_keeps_everything,
    compaction_keeps_held_back_updates,
    persister_commits_concurrent_rooms,
    map_content_roundtrips,
    concurrent_appends_survive_compaction,
    log_summary_counts_the_log_after_the_snapshot,
    exclusive_compaction_compacts,
);

mod ai_runs {
    use super::*;

    suite_tests!(suite::ai_runs:
        record_update_and_list,
        idempotency_keys_return_the_first_run,
        interrupted_runs_are_marked_at_start,
        runs_are_per_tenant,
    );
}

mod search {
    use super::*;

    suite_tests!(suite::search:
        queue_is_durable_and_coalesces,
        full_text_finds_ranked_marked_and_filtered,
        replace_delete_and_change_feed,
        embedding_tokens_count_toward_the_day,
    );
}

mod catalog {
    use super::*;

    suite_tests!(suite::catalog:
        tenant_crud,
        signing_keys,
        api_keys,
        create_room_and_limit,
        create_room_limit_under_concurrency,
        list_rooms_paging_and_stats,
        delete_room_everything,
        versions_roundtrip,
        webhook_set_get_delete,
        enqueued_events_are_claimed_once,
        appended_events_are_claimed_once,
        concurrent_claims_are_disjoint,
        record_attempt_outcomes,
        prune_keeps_pending_and_recent_events,
        tenant_isolation,
    );
}

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
                events: Vec::new(),
                search_due: None,
            }])
            .await
            .expect("append");
    }
    let store = SqliteStore::open_file(&path).await.expect("reopen");
    assert_eq!(store.load(&key).await.expect("load").updates.len(), 1);
}

/// A database written by the first schema (column `tenant`) opens under the current one
/// with its documents intact.
#[tokio::test]
async fn upgrading_from_the_first_schema_keeps_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chorus.db");
    let first_only = dir.path().join("migrations");
    std::fs::create_dir(&first_only).expect("mkdir");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite/0001_update_log.sql"
        ),
        first_only.join("0001_update_log.sql"),
    )
    .expect("copy migration");
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.expect("open");
        let migrator = sqlx::migrate::Migrator::new(first_only.as_path())
            .await
            .expect("migrator");
        migrator.run(&pool).await.expect("first schema");
        sqlx::query("INSERT INTO updates (tenant, room, data) VALUES ('t', 'r', x'0000')")
            .execute(&pool)
            .await
            .expect("old row");
        pool.close().await;
    }
    let store = SqliteStore::open_file(&path).await.expect("upgrade");
    let loaded = store
        .load(&chorus_persistence::RoomKey::new("t", "r"))
        .await
        .expect("load");
    assert_eq!(loaded.updates, vec![bytes::Bytes::from_static(&[0, 0])]);
}
