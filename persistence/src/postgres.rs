//! The production store: Postgres with row-level security.
//!
//! Every row carries `tenant_id`. Queries run as the role `chorus_app` (set on each pooled
//! connection), to which the `tenant_isolation` policies apply; every tenant-scoped method
//! opens a transaction, sets `chorus.tenant_id` for it (transaction-local), and still names
//! the tenant in its SQL, so a forgotten `WHERE` is caught by the database and a policy
//! mistake by the query. The two cross-tenant reads (tenant listing, outbox claim) go through
//! SECURITY DEFINER functions that return tenant ids only. See `migrations/postgres`.

use std::collections::BTreeMap;
use std::str::FromStr;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Row, Transaction};

use crate::{AppendBatch, DocStore, LoadedDoc, LogSummary, NewEvent, RoomKey, StoreError};

mod ai_runs;
mod catalog;
mod search;

/// Schema migrations, embedded at compile time (`build.rs` reruns on changes).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per hub node: one for the group commit, the rest for room loads, compaction
/// and the REST API. Several nodes share the server's `max_connections` (100 by default).
const MAX_CONNECTIONS: u32 = 16;

/// First key of the advisory lock a compaction holds on a room (the second is `hashtext` of
/// `tenant/room`): 'Cmpt' in ASCII, apart from `chorus_lock_rooms`' 'Chor', so compacting a
/// room never blocks appends to it.
pub const COMPACTION_LOCK: i32 = 1_131_245_684;

/// Compactions at once per node: each holds a connection for its whole merge, and appends and
/// room loads must keep the rest of the pool.
const COMPACTIONS: usize = 4;

/// The role every pooled connection switches to. Created by the migrations.
const APP_ROLE: &str = "chorus_app";

/// Documents and catalog in Postgres, isolated per tenant by row-level security.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Compactions holding a connection at once (see `compact_exclusive`).
    compactions: std::sync::Arc<tokio::sync::Semaphore>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:pass@host/db?sslmode=verify-full`). With `migrate`,
    /// first applies pending migrations as the login role, which must then own the schema
    /// (see [`PostgresStore::migrate`]); with `false` the schema must be current already.
    ///
    /// Each pooled connection runs `SET ROLE chorus_app`, so the login role must be a member
    /// of `chorus_app` (or a superuser, as in tests) and queries are subject to row-level
    /// security even when it owns the tables.
    pub async fn open(url: &str, migrate: bool) -> Result<Self, StoreError> {
        let opts = connect_options(url)?;
        // One plain connection first: it fails within seconds with the real cause (refused,
        // unknown host, bad password), where the pool retries for its acquire timeout and then
        // reports only "pool timed out".
        let mut probe = probe(&opts).await?;
        if migrate {
            migrate_with(&opts).await?;
        }
        // Check the role switch once up front: the pool retries a failing `after_connect`
        // until its acquire timeout and then reports only "timed out".
        sqlx::raw_sql("SET ROLE chorus_app")
            .execute(&mut probe)
            .await
            .map_err(explain_role_error)?;
        probe.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::raw_sql("SET ROLE chorus_app").execute(conn).await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        Ok(Self {
            pool,
            compactions: std::sync::Arc::new(tokio::sync::Semaphore::new(COMPACTIONS)),
        })
    }

    /// Applies pending migrations to the database at `url` and returns (`chorus migrate`).
    /// Run it as the role that owns the schema; it needs no `chorus_app` membership. Safe to
    /// run from several nodes at once: sqlx serialises migrators with an advisory lock.
    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        let opts = connect_options(url)?;
        probe(&opts).await?.close().await?;
        migrate_with(&opts).await
    }

    /// Starts a transaction confined to `tenant` (setting and policies, see the module doc).
    async fn scoped(&self, tenant: &str) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        set_tenant(&mut tx, tenant).await?;
        Ok(tx)
    }
}

fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    // sqlx parses any scheme as Postgres; a `sqlite:` or typo'd URL would then fail later
    // with a confusing connection error.
    if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
        return Err(StoreError::Config(
            "postgres url must start with postgres:// or postgresql://".to_owned(),
        ));
    }
    PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Config(format!("bad postgres url: {e}")))
}

/// How long the first connection may take before the server counts as unreachable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens one connection, within [`CONNECT_TIMEOUT`], with an error that names the server.
async fn probe(opts: &PgConnectOptions) -> Result<PgConnection, StoreError> {
    let server = format!("{}:{}", opts.get_host(), opts.get_port());
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(StoreError::Setup(format!(
            "cannot connect to Postgres at {server}: {}",
            plain(&e)
        ))),
        Err(_) => Err(StoreError::Setup(format!(
            "cannot connect to Postgres at {server}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// A database error's message alone (sqlx's `Display` adds "error returned from database:"
/// and the I/O wrappers; the server's own words say what is wrong).
fn plain(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

async fn migrate_with(opts: &PgConnectOptions) -> Result<(), StoreError> {
    // A one-connection pool rather than a bare connection: `Migrator::run(&mut PgConnection)`
    // makes a future that is not `Send` for every lifetime, so callers could not spawn it.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(opts.clone())
        .await?;
    let ran = MIGRATOR.run(&pool).await;
    pool.close().await;
    ran.map_err(explain_migrate_error)
}

/// Says what to do when the login may not change the schema: that is the hub's least-
/// privilege role, which runs with `--skip-migrations` after `chorus migrate` as the owner.
fn explain_migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError;
    let database = match &e {
        MigrateError::Execute(d) | MigrateError::ExecuteMigration(d, _) => Some(d),
        _ => None,
    };
    let denied = database
        .and_then(|d| d.as_database_error())
        .filter(|d| d.code().as_deref() == Some("42501"));
    match denied {
        Some(d) => StoreError::Setup(format!(
            "this login may not change the schema ({}): run `chorus migrate` as the schema's \
             owner and start the hub with --skip-migrations (docs/OPERATIONS.md)",
            d.message()
        )),
        None => StoreError::Migrate(e),
    }
}

/// Turns "cannot SET ROLE" failures into a message that says what to do.
fn explain_role_error(e: sqlx::Error) -> StoreError {
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned());
    match code.as_deref() {
        // insufficient_privilege
        Some("42501") => StoreError::Config(format!(
            "the login role cannot SET ROLE {APP_ROLE}: create it `IN ROLE {APP_ROLE}` \
             (docs/OPERATIONS.md): {e}"
        )),
        // undefined_object
        Some("42704") => StoreError::Config(format!(
            "role {APP_ROLE} does not exist: run `chorus migrate` first: {e}"
        )),
        _ => StoreError::Database(e),
    }
}

/// Confines the rest of the transaction to `tenant`. `set_config(..., true)` is `SET LOCAL`
/// with a bind parameter; calling it again switches tenant within the transaction.
async fn set_tenant(conn: &mut PgConnection, tenant: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT set_config('chorus.tenant_id', $1, true)")
        .bind(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes outbox rows of one tenant (already set on the transaction), due at once. `now:
/// None` uses the database clock: `append` has no caller time.
async fn insert_events(
    conn: &mut PgConnection,
    tenant: &str,
    events: &[&NewEvent],
    now: Option<i64>,
) -> Result<(), StoreError> {
    // 3-5 parameters a row, far below the protocol's 65535.
    const ROWS_PER_STATEMENT: usize = 1000;
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<Postgres>::new(
            "INSERT INTO outbox (tenant_id, event, body, created, next_attempt) ",
        );
        q.push_values(chunk, |mut row, e| {
            row.push_bind(tenant).push_bind(&e.event).push_bind(&e.body);
            match now {
                Some(t) => row.push_bind(t).push_bind(t.saturating_add(e.delay.max(0))),
                None => row
                    .push("chorus_epoch()")
                    .push("chorus_epoch() + ")
                    .push_bind_unseparated(e.delay.max(0)),
            };
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes `events` in their order, switching the transaction's tenant at each change of
/// tenant (ids are delivery order, so events are not regrouped by tenant).
async fn insert_events_in_order(
    conn: &mut PgConnection,
    events: &[&NewEvent],
    now: Option<i64>,
) -> Result<(), StoreError> {
    for run in events.chunk_by(|a, b| a.tenant == b.tenant) {
        let Some(first) = run.first() else { continue };
        set_tenant(conn, &first.tenant).await?;
        insert_events(conn, &first.tenant, run, now).await?;
    }
    Ok(())
}

/// A room's snapshot and log, in the caller's transaction (tenant already set).
async fn load_in(conn: &mut PgConnection, key: &RoomKey) -> Result<LoadedDoc, StoreError> {
    // One statement, so the snapshot and the log come from one MVCC snapshot: read as two
    // statements, a compaction committing in between would hide the rows it trimmed.
    let rows = sqlx::query(
        "SELECT upto_id AS id, data, true AS is_snapshot FROM snapshots
          WHERE tenant_id = $1 AND room = $2
         UNION ALL
         SELECT u.id, u.data, false FROM updates u
          WHERE u.tenant_id = $1 AND u.room = $2
            AND u.id > COALESCE((SELECT s.upto_id FROM snapshots s
                                  WHERE s.tenant_id = $1 AND s.room = $2), 0)
         ORDER BY is_snapshot DESC, id",
    )
    .bind(&*key.tenant)
    .bind(&*key.room)
    .fetch_all(&mut *conn)
    .await?;
    let mut doc = LoadedDoc::default();
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let data = Bytes::from(row.try_get::<Vec<u8>, _>("data")?);
        if row.try_get::<bool, _>("is_snapshot")? {
            doc.snapshot = Some(data);
            doc.snapshot_upto = id;
        } else {
            doc.updates.push(data);
        }
        doc.last_id = id;
    }
    Ok(doc)
}

/// Replaces the snapshot and trims the log up to `upto_id`, in the caller's transaction
/// (see [`DocStore::write_snapshot`]).
async fn write_snapshot_in(
    conn: &mut PgConnection,
    key: &RoomKey,
    upto_id: i64,
    snapshot: &[u8],
) -> Result<(), StoreError> {
    let written = sqlx::query(
        "INSERT INTO snapshots (tenant_id, room, upto_id, data) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, room) DO UPDATE
           SET upto_id = excluded.upto_id, data = excluded.data, updated = chorus_epoch()
           WHERE excluded.upto_id >= snapshots.upto_id",
    )
    .bind(&*key.tenant)
    .bind(&*key.room)
    .bind(upto_id)
    .bind(snapshot)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if written > 0 {
        sqlx::query("DELETE FROM updates WHERE tenant_id = $1 AND room = $2 AND id <= $3")
            .bind(&*key.tenant)
            .bind(&*key.room)
            .bind(upto_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl DocStore for PostgresStore {
    async fn load(&self, key: &RoomKey) -> Result<LoadedDoc, StoreError> {
        let mut tx = self.scoped(&key.tenant).await?;
        let doc = load_in(&mut tx, key).await?;
        tx.commit().await?;
        Ok(doc)
    }

    async fn append(&self, batches: &[AppendBatch]) -> Result<(), StoreError> {
        // Multi-row INSERTs: one round trip per 1000 rows instead of one per update.
        const ROWS_PER_STATEMENT: usize = 1000; // 3000 parameters of 65535
        // Updates grouped by tenant (one policy scope each; a room's order is kept).
        let mut by_tenant: BTreeMap<&str, Vec<(&str, &[u8])>> = BTreeMap::new();
        let mut room_keys = Vec::new();
        for b in batches.iter().filter(|b| !b.updates.is_empty()) {
            room_keys.push(b.key.to_string());
            by_tenant
                .entry(&b.key.tenant)
                .or_default()
                .extend(b.updates.iter().map(|u| (&*b.key.room, &u[..])));
        }
        let events: Vec<&NewEvent> = batches.iter().flat_map(|b| &b.events).collect();
        if by_tenant.is_empty()
            && events.is_empty()
            && batches.iter().all(|b| b.search_due.is_none())
        {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        if !room_keys.is_empty() {
            sqlx::query("SELECT chorus_lock_rooms($1)")
                .bind(&room_keys)
                .execute(&mut *tx)
                .await?;
        }
        for (tenant, rows) in by_tenant {
            set_tenant(&mut tx, tenant).await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<Postgres>::new(
                    "INSERT INTO updates (tenant_id, room, data) ",
                );
                q.push_values(chunk, |mut row, (room, data)| {
                    row.push_bind(tenant).push_bind(*room).push_bind(*data);
                });
                q.build().execute(&mut *tx).await?;
            }
        }
        insert_events_in_order(&mut tx, &events, None).await?;
        let queued = AppendBatch::search_keys(batches);
        if !queued.is_empty() {
            search::enqueue(&mut tx, &queued).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn log_summary(&self, key: &RoomKey) -> Result<LogSummary, StoreError> {
        let mut tx = self.scoped(&key.tenant).await?;
        // One statement: one MVCC snapshot (see `load`).
        let row = sqlx::query(
            "SELECT COALESCE(MAX(u.id), 0)::BIGINT AS last_id, COUNT(u.id)::BIGINT AS entries,
                    COALESCE(SUM(octet_length(u.data)), 0)::BIGINT AS bytes,
                    COALESCE((SELECT octet_length(s.data) FROM snapshots s
                               WHERE s.tenant_id = $1 AND s.room = $2), 0)::BIGINT
                      AS snapshot_bytes
             FROM updates u
             WHERE u.tenant_id = $1 AND u.room = $2
               AND u.id > COALESCE((SELECT s.upto_id FROM snapshots s
                                     WHERE s.tenant_id = $1 AND s.room = $2), 0)",
        )
        .bind(&*key.tenant)
        .bind(&*key.room)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        LogSummary::from_counts(
            key,
            row.try_get("last_id")?,
            row.try_get("entries")?,
            row.try_get("bytes")?,
            row.try_get("snapshot_bytes")?,
        )
    }

    async fn write_snapshot(
        &self,
        key: &RoomKey,
        upto_id: i64,
        snapshot: &[u8],
    ) -> Result<(), StoreError> {
        let mut tx = self.scoped(&key.tenant).await?;
        write_snapshot_in(&mut tx, key, upto_id, snapshot).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn compact_exclusive(
        &self,
        key: &RoomKey,
    ) -> Result<Option<crate::CompactStats>, StoreError> {
        // Load, encode and write in one transaction holding the room's compaction lock: a
        // second node trying the same room meanwhile gets `false` at once and skips, and a
        // node dying mid-way releases the lock with its connection. The lock does not guard
        // correctness (a stale snapshot is ignored, see `write_snapshot`); it keeps two nodes
        // from rebuilding one document twice.
        // Past the node's share of connections, skip like a held lock: the room retries.
        let Ok(_slot) = self.compactions.try_acquire() else {
            return Ok(None);
        };
        let mut tx = self.scoped(&key.tenant).await?;
        // A node cut off mid-merge would otherwise hold the lock until TCP keepalive notices
        // (hours by default): the server ends a transaction idle this long, and the lock
        // with it. The merge runs while the transaction idles, so this bounds it too.
        sqlx::query("SET LOCAL idle_in_transaction_session_timeout = '60s'")
            .execute(&mut *tx)
            .await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
            .bind(COMPACTION_LOCK)
            .bind(key.to_string())
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            tx.rollback().await?;
            return Ok(None);
        }
        let loaded = load_in(&mut tx, key).await?;
        let stats = match crate::compact::merge_loaded(key, loaded).await? {
            Some(m) => {
                write_snapshot_in(&mut tx, key, m.upto, &m.snapshot).await?;
                m.stats
            }
            None => crate::CompactStats::default(),
        };
        tx.commit().await?;
        Ok(Some(stats))
    }

    async fn delete_room(&self, key: &RoomKey) -> Result<(), StoreError> {
        let mut tx = self.scoped(&key.tenant).await?;
        for sql in [
            "DELETE FROM updates WHERE tenant_id = $1 AND room = $2",
            "DELETE FROM snapshots WHERE tenant_id = $1 AND room = $2",
        ] {
            sqlx::query(sql)
                .bind(&*key.tenant)
                .bind(&*key.room)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
