//! The shared store behaviour suites against the Postgres store, each test in a fresh
//! database (see `chorus_persistence::testing`), plus raw-SQL checks of row-level security
//! and a run under the production role setup of docs/OPERATIONS.md.
//!
//! Without a reachable Postgres these tests print a notice and pass, unless `CI` is set.

use std::sync::Arc;

use chorus_persistence::testing::TestDatabase;
use chorus_persistence::{Catalog, DocStore, PostgresStore, RoomKey, suite};
use sqlx::{Connection, PgConnection};

macro_rules! suite_tests {
    ($suite:path: $($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let Some(db) = TestDatabase::create().await else { return };
            let store = Arc::new(db.open_store().await);
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

/// Every table of the schema, with an INSERT of one row for tenant `$1`. A new table must be
/// added here, which puts it under the RLS checks below.
const TABLES: [(&str, &str); 14] = [
    (
        "tenants",
        "INSERT INTO tenants (tenant_id, name, created) VALUES ($1, 'n', 1)",
    ),
    (
        "signing_keys",
        "INSERT INTO signing_keys (tenant_id, kid, alg, material, created)
         VALUES ($1, 'k', 'HS256', 'm', 1)",
    ),
    (
        "api_keys",
        "INSERT INTO api_keys (tenant_id, key_id, hash, name, created)
         VALUES ($1, 'k', 'h', 'n', 1)",
    ),
    (
        "rooms",
        "INSERT INTO rooms (tenant_id, room, created) VALUES ($1, 'r', 1)",
    ),
    (
        "updates",
        "INSERT INTO updates (tenant_id, room, data) VALUES ($1, 'r', '\\x00')",
    ),
    (
        "snapshots",
        "INSERT INTO snapshots (tenant_id, room, upto_id, data) VALUES ($1, 'r', 0, '\\x00')",
    ),
    (
        "versions",
        "INSERT INTO versions (tenant_id, room, name, created, state)
         VALUES ($1, 'r', 'v', 1, '\\x00')",
    ),
    (
        "webhooks",
        "INSERT INTO webhooks (tenant_id, url, secret) VALUES ($1, 'u', 's')",
    ),
    (
        "outbox",
        "INSERT INTO outbox (tenant_id, event, body) VALUES ($1, 'e', '{}')",
    ),
    (
        "ai_runs",
        "INSERT INTO ai_runs (tenant_id, id, room, provider, model, target, mode, status,
                              client_id, node, created)
         VALUES ($1, 'x', 'r', 'p', 'm', 'chat', 'direct', 'done', 1, 'n', 1)",
    ),
    (
        "search_queue",
        "INSERT INTO search_queue (tenant_id, room, due_ms) VALUES ($1, 'r', 0)",
    ),
    (
        "search_rooms",
        "INSERT INTO search_rooms (tenant_id, room, seq, chunks, indexed) VALUES ($1, 'r', 1, 1, 1)",
    ),
    (
        "search_chunks",
        "INSERT INTO search_chunks (tenant_id, room, hash, ord, start_offset, field, body)
         VALUES ($1, 'r', 'h', 0, 0, 'default', 'secret words')",
    ),
    (
        "ai_usage",
        "INSERT INTO ai_usage (tenant_id, day, tokens) VALUES ($1, 0, 1)",
    ),
];

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.expect("connect")
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn set_tenant(conn: &mut PgConnection, tenant: &str) {
    sqlx::query("SELECT set_config('chorus.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *conn)
        .await
        .expect("set tenant");
}

async fn count(conn: &mut PgConnection, sql: String) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every table sees nothing on `conn` (in a transaction with no tenant set).
async fn sees_nothing(conn: &mut PgConnection, why: &str) {
    exec(conn, "BEGIN").await;
    for (table, _) in TABLES {
        let n = count(conn, format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(n, 0, "{why}: {table} shows {n} rows without a tenant");
    }
    exec(conn, "COMMIT").await;
}

/// Row-level security with raw SQL, as chorus_app: a transaction scoped to A can neither see,
/// change, delete nor create B's rows, and one without a tenant sees nothing.
#[tokio::test]
async fn row_level_security_confines_raw_sql() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    PostgresStore::migrate(db.url()).await.expect("migrate");
    let mut conn = connect(db.url()).await;
    exec(&mut conn, "SET ROLE chorus_app").await;

    for tenant in ["a", "b"] {
        exec(&mut conn, "BEGIN").await;
        set_tenant(&mut conn, tenant).await;
        for (table, insert) in TABLES {
            sqlx::query(insert)
                .bind(tenant)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("insert into {table} as {tenant}: {e}"));
        }
        exec(&mut conn, "COMMIT").await;
    }

    exec(&mut conn, "BEGIN").await;
    set_tenant(&mut conn, "a").await;
    for (table, _) in TABLES {
        let visible = count(&mut conn, format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(visible, 1, "{table}: A sees exactly its own row");
        let of_b = count(
            &mut conn,
            format!("SELECT count(*) FROM {table} WHERE tenant_id = 'b'"),
        )
        .await;
        assert_eq!(of_b, 0, "{table}: A sees B's rows");
        for sql in [
            format!("UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id = 'b'"),
            format!("DELETE FROM {table} WHERE tenant_id = 'b'"),
        ] {
            let done = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(done.rows_affected(), 0, "{sql} touched B's rows");
        }
    }
    exec(&mut conn, "COMMIT").await;

    // Writing a row of B, or moving A's row to B, fails the WITH CHECK in a scope of A.
    for (table, insert) in TABLES {
        exec(&mut conn, "BEGIN").await;
        set_tenant(&mut conn, "a").await;
        let err = sqlx::query(insert)
            .bind("b")
            .execute(&mut conn)
            .await
            .expect_err("inserting B's row as A must fail");
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{table}: {err}");
        exec(&mut conn, "ROLLBACK").await;

        exec(&mut conn, "BEGIN").await;
        set_tenant(&mut conn, "a").await;
        let sql = format!("UPDATE {table} SET tenant_id = 'b' WHERE tenant_id = 'a'");
        let moved = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
        assert!(moved.is_err(), "{table}: A's row moved to B");
        exec(&mut conn, "ROLLBACK").await;
    }

    // B still has every row; a deleting sweep in A's scope removes only A's.
    exec(&mut conn, "BEGIN").await;
    set_tenant(&mut conn, "a").await;
    for (table, _) in TABLES {
        let sql = format!("DELETE FROM {table}");
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("delete");
        assert_eq!(
            done.rows_affected(),
            1,
            "{table}: an unfiltered DELETE reached beyond A"
        );
    }
    exec(&mut conn, "ROLLBACK").await;
    exec(&mut conn, "BEGIN").await;
    set_tenant(&mut conn, "b").await;
    for (table, _) in TABLES {
        let n = count(&mut conn, format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(n, 1, "{table}: B's row must be intact");
    }
    exec(&mut conn, "COMMIT").await;

    // No tenant: on this connection the setting now reads '' (it was set before), on a new
    // one it is undefined (NULL). Neither matches a row.
    sees_nothing(&mut conn, "connection that had a tenant").await;
    let mut fresh = connect(db.url()).await;
    exec(&mut fresh, "SET ROLE chorus_app").await;
    sees_nothing(&mut fresh, "new connection").await;
    // And the empty tenant id is no tenant: no row can carry it.
    exec(&mut fresh, "BEGIN").await;
    set_tenant(&mut fresh, "").await;
    let empty = sqlx::query(TABLES[3].1).bind("").execute(&mut fresh).await;
    assert!(empty.is_err(), "a row with an empty tenant id was accepted");
    exec(&mut fresh, "ROLLBACK").await;
    let _ = fresh.close().await;
    let _ = conn.close().await;
}

/// The roles and grants the migration sets up: chorus_app is subject to RLS and owns nothing;
/// every table has RLS enabled and forced; the definer functions are not public.
#[tokio::test]
async fn roles_and_policies_are_as_documented() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    PostgresStore::migrate(db.url()).await.expect("migrate");
    let mut conn = connect(db.url()).await;

    for role in ["chorus_app", "chorus_definer"] {
        let (superuser, bypass, login): (bool, bool, bool) = sqlx::query_as(
            "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = $1",
        )
        .bind(role)
        .fetch_one(&mut conn)
        .await
        .expect("role exists");
        assert!(
            !superuser && !bypass && !login,
            "{role}: super {superuser} bypassrls {bypass}"
        );
    }
    let definer_member: bool =
        sqlx::query_scalar("SELECT pg_has_role('chorus_app', 'chorus_definer', 'MEMBER')")
            .fetch_one(&mut conn)
            .await
            .expect("membership");
    assert!(!definer_member, "chorus_app must not act as chorus_definer");

    let tables: Vec<(String, String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text,
                c.relrowsecurity, c.relforcerowsecurity
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> '_sqlx_migrations'
          ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    let mut expected: Vec<&str> = TABLES.iter().map(|(t, _)| *t).collect();
    expected.sort_unstable();
    let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, expected, "a table is missing from the RLS checks");
    for (table, owner, rls, forced) in &tables {
        assert_ne!(owner, "chorus_app", "{table} is owned by chorus_app");
        assert!(*rls && *forced, "{table}: rls {rls}, forced {forced}");
        let has_tenant: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM information_schema.columns
                             WHERE table_name = $1 AND column_name = 'tenant_id'
                               AND is_nullable = 'NO')",
        )
        .bind(table)
        .fetch_one(&mut conn)
        .await
        .expect("columns");
        assert!(has_tenant, "{table} lacks tenant_id NOT NULL");
    }

    let functions: Vec<(String, String, bool, Vec<String>)> = sqlx::query_as(
        "SELECT p.proname::text, pg_get_userbyid(p.proowner)::text, p.prosecdef,
                COALESCE(p.proacl::text[], '{}')
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'public' AND p.proname IN
                ('chorus_tenant_ids', 'chorus_due_tenants', 'chorus_lock_rooms')
          ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .expect("functions");
    assert_eq!(functions.len(), 3);
    for (name, owner, definer, acl) in &functions {
        assert!(
            !acl.is_empty(),
            "{name} has the default ACL (executable by PUBLIC)"
        );
        assert!(
            acl.iter().all(|entry| !entry.starts_with('=')),
            "{name} is executable by PUBLIC: {acl:?}"
        );
        assert!(
            acl.iter().any(|e| e.starts_with("chorus_app=X")),
            "{name}: {acl:?}"
        );
        if name == "chorus_lock_rooms" {
            assert!(!definer, "chorus_lock_rooms needs no privileges of its own");
        } else {
            assert!(definer, "{name} must be SECURITY DEFINER");
            assert_eq!(owner, "chorus_definer", "{name} must run as chorus_definer");
        }
    }
    let _ = conn.close().await;
}

/// The production setup: a non-superuser owner runs `chorus migrate`, the hub logs in as a
/// role `IN ROLE chorus_app` and opens the store without migrating. Cross-tenant operations
/// must work without any bypass.
#[tokio::test]
async fn production_roles_run_the_store() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let mut admin = connect(db.url()).await;
    // The role setup of docs/OPERATIONS.md, tolerant of other tests doing it concurrently.
    for sql in [
        "CREATE ROLE chorus_app NOLOGIN NOSUPERUSER NOBYPASSRLS",
        "CREATE ROLE chorus_definer NOLOGIN NOSUPERUSER NOBYPASSRLS",
        "CREATE ROLE chorus_test_owner LOGIN PASSWORD 'owner' NOSUPERUSER NOBYPASSRLS",
        "CREATE ROLE chorus_test_hub LOGIN PASSWORD 'hub' NOSUPERUSER NOBYPASSRLS IN ROLE chorus_app",
        "CREATE ROLE chorus_test_stranger LOGIN PASSWORD 'stranger' NOSUPERUSER NOBYPASSRLS",
    ] {
        let guarded = format!(
            "DO $$ BEGIN {sql}; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        );
        exec(&mut admin, &guarded).await;
    }
    for sql in [
        "GRANT chorus_definer TO chorus_test_owner".to_owned(),
        format!(
            "ALTER DATABASE \"{}\" OWNER TO chorus_test_owner",
            db.name()
        ),
    ] {
        exec(&mut admin, &sql).await;
    }
    let _ = admin.close().await;

    let owner_url = db.url_as("chorus_test_owner", Some("owner"));
    let hub_url = db.url_as("chorus_test_hub", Some("hub"));
    PostgresStore::migrate(&owner_url)
        .await
        .expect("migrate as the owner");
    PostgresStore::migrate(&owner_url)
        .await
        .expect("migrating again is a no-op");
    let store = Arc::new(
        PostgresStore::open(&hub_url, false)
            .await
            .expect("open as the hub"),
    );

    // The owner does not own-bypass RLS either (FORCE), yet the definer functions see across.
    suite::catalog::tenant_isolation(store.clone()).await;
    suite::catalog::enqueued_events_are_claimed_once(Arc::new(
        PostgresStore::open(&hub_url, false).await.expect("open"),
    ))
    .await;
    suite::append_then_load_in_order(store.clone()).await;
    store
        .create_tenant(&chorus_persistence::Tenant {
            id: "x".to_owned(),
            name: "X".to_owned(),
            settings: serde_json::json!({}),
            created: 1,
        })
        .await
        .expect("create");
    assert_eq!(store.list_tenants().await.expect("list").len(), 1);

    // A login outside chorus_app is refused with a message that says what to do.
    let stranger = db.url_as("chorus_test_stranger", Some("stranger"));
    match PostgresStore::open(&stranger, false).await {
        Err(chorus_persistence::StoreError::Config(msg)) => {
            assert!(msg.contains("IN ROLE chorus_app"), "{msg}");
        }
        other => panic!("a login outside chorus_app must be refused: {other:?}"),
    }

    // The hub's login cannot change the schema.
    let mut hub = connect(&hub_url).await;
    let ddl = sqlx::raw_sql("CREATE TABLE sneaky (x int)")
        .execute(&mut hub)
        .await;
    assert!(ddl.is_err(), "the hub role could create a table");
    let _ = hub.close().await;
}

/// Several nodes starting at once all migrate; sqlx's advisory lock serialises them.
#[tokio::test]
async fn concurrent_start_up_migrations() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let opens: Vec<_> = (0..3)
        .map(|_| {
            let url = db.url().to_owned();
            tokio::spawn(async move { PostgresStore::open(&url, true).await })
        })
        .collect();
    for o in opens {
        let store = o.await.expect("task").expect("open with migrations");
        store.ping().await.expect("ping");
        assert!(
            store
                .load(&RoomKey::new("t", "r"))
                .await
                .expect("load")
                .is_empty()
        );
    }
}

/// A URL that is not a Postgres URL is a configuration error, not a panic.
#[tokio::test]
async fn bad_url_is_a_config_error() {
    let err = PostgresStore::open("mysql://nope", false)
        .await
        .expect_err("bad url");
    assert!(
        matches!(err, chorus_persistence::StoreError::Config(_)),
        "{err}"
    );
}

/// While another session holds a room's compaction lock (another node compacting it),
/// `compact_exclusive` leaves the room alone and says so; once the lock is free it compacts.
/// Other rooms are not held up by it.
#[tokio::test]
async fn a_compaction_running_elsewhere_makes_exclusive_compaction_skip() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = db.open_store().await;
    let held = RoomKey::new("t", "held");
    let free = RoomKey::new("t", "free");
    for key in [&held, &free] {
        let (a, b) = chorus_persistence::testing::consecutive_edits(5, "x", "y");
        store
            .append(&[chorus_persistence::AppendBatch {
                key: key.clone(),
                updates: vec![a, b],
                events: Vec::new(),
                search_due: None,
            }])
            .await
            .expect("append");
    }
    let mut other = connect(db.url()).await;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(chorus_persistence::COMPACTION_LOCK)
        .bind(held.to_string())
        .fetch_one(&mut other)
        .await
        .expect("lock");
    assert!(got);

    assert_eq!(store.compact_exclusive(&held).await.expect("skip"), None);
    let loaded = store.load(&held).await.expect("load");
    assert!(
        loaded.snapshot.is_none() && loaded.updates.len() == 2,
        "a skipped compaction changed the room"
    );
    let other_room = store.compact_exclusive(&free).await.expect("compact");
    assert_eq!(other_room.map(|s| s.merged), Some(2));

    // The holder lets go (a node dying does the same when its session ends).
    let _: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(chorus_persistence::COMPACTION_LOCK)
        .bind(held.to_string())
        .fetch_one(&mut other)
        .await
        .expect("unlock");
    let stats = store.compact_exclusive(&held).await.expect("compact");
    assert_eq!(stats.map(|s| s.merged), Some(2));
    assert!(store.load(&held).await.expect("load").updates.is_empty());
}
