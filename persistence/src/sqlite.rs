use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{AppendBatch, DocStore, LoadedDoc, LogSummary, NewEvent, RoomKey, StoreError};

mod ai_runs;
mod catalog;
mod search;

// LIMIT in the text. A bound `LIMIT ?` makes SQLite (3.51) re-prepare the statement at every
// run: the planner reads the bound integer (`sqlite3ExprIsInteger`) and marks the statement
// to expire whenever that parameter is bound again, which every run does. The background
// loops (search jobs and changes, webhook claims) ran that way many times a second, each
// re-prepare parsing and planning the whole statement again: about a sixth of the hub's
// user-space instructions per delivery under light load (docs/BENCHMARKS.md, issue 20). Their
// limits are the node's own integers, formatted into the SQL, so each keeps one cached
// statement. The REST listings keep a bound limit: a client's page size would otherwise make
// a statement per value.

/// The embedded store: one SQLite file in WAL mode, holding documents and the catalog.
///
/// SQLite has no row-level security, so every query filters by `tenant_id` itself.
///
/// `synchronous = FULL` makes every committed batch survive a power cut, not just a process
/// kill: "saved" must mean saved. The cost is one fsync per group commit, which the
/// [`crate::Persister`] amortises over every room that flushed in that window.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies migrations.
    pub async fn open_file(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::new().filename(path);
        Self::open(opts).await
    }

    /// Opens a `sqlite:` URL (e.g. `sqlite:///var/lib/chorus/chorus.db`).
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad sqlite url: {e}")))?;
        // Like `--data-dir`: the folder is created, not a "unable to open database file".
        let path = opts.get_filename();
        let in_memory = path.as_os_str().is_empty() || path.as_os_str() == ":memory:";
        if let Some(dir) = path
            .parent()
            .filter(|d| !in_memory && !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        Self::open(opts).await
    }

    async fn open(opts: SqliteConnectOptions) -> Result<Self, StoreError> {
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // SQLite has one writer at a time; a few readers serve room loads in parallel.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl DocStore for SqliteStore {
    async fn load(&self, key: &RoomKey) -> Result<LoadedDoc, StoreError> {
        let mut tx = self.pool.begin().await?;
        let snap =
            sqlx::query("SELECT upto_id, data FROM snapshots WHERE tenant_id = ? AND room = ?")
                .bind(&*key.tenant)
                .bind(&*key.room)
                .fetch_optional(&mut *tx)
                .await?;
        let (snapshot, upto) = match snap {
            Some(row) => (
                Some(Bytes::from(row.try_get::<Vec<u8>, _>("data")?)),
                row.try_get::<i64, _>("upto_id")?,
            ),
            None => (None, 0),
        };
        let rows = sqlx::query(
            "SELECT id, data FROM updates WHERE tenant_id = ? AND room = ? AND id > ? ORDER BY id",
        )
        .bind(&*key.tenant)
        .bind(&*key.room)
        .bind(upto)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut last_id = upto;
        let mut updates = Vec::with_capacity(rows.len());
        for row in rows {
            last_id = row.try_get("id")?;
            updates.push(Bytes::from(row.try_get::<Vec<u8>, _>("data")?));
        }
        Ok(LoadedDoc {
            snapshot,
            snapshot_upto: upto,
            updates,
            last_id,
        })
    }

    async fn append(&self, batches: &[AppendBatch]) -> Result<(), StoreError> {
        // Multi-row INSERTs: every statement is a round trip to SQLite's worker thread (a
        // futex wake-up each way), so one statement per update dominated the cost of a commit.
        const ROWS_PER_STATEMENT: usize = 256; // 768 parameters, far below SQLite's limit
        let rows: Vec<(&str, &str, &[u8])> = batches
            .iter()
            .flat_map(|b| {
                b.updates
                    .iter()
                    .map(move |u| (&*b.key.tenant, &*b.key.room, &u[..]))
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO updates (tenant_id, room, data) ",
            );
            q.push_values(chunk, |mut row, (tenant, room, data)| {
                row.push_bind(tenant.to_string())
                    .push_bind(room.to_string())
                    .push_bind(data.to_vec());
            });
            q.build().execute(&mut *tx).await?;
        }
        let events: Vec<&NewEvent> = batches.iter().flat_map(|b| &b.events).collect();
        insert_events(&mut tx, &events, None).await?;
        let queued = AppendBatch::search_keys(batches);
        if !queued.is_empty() {
            search::enqueue(&mut tx, &queued).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn log_summary(&self, key: &RoomKey) -> Result<LogSummary, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(u.id), 0) AS last_id, COUNT(u.id) AS entries,
                    COALESCE(SUM(LENGTH(u.data)), 0) AS bytes,
                    COALESCE((SELECT LENGTH(s.data) FROM snapshots s
                               WHERE s.tenant_id = ?1 AND s.room = ?2), 0) AS snapshot_bytes
             FROM updates u
             WHERE u.tenant_id = ?1 AND u.room = ?2
               AND u.id > COALESCE((SELECT s.upto_id FROM snapshots s
                                     WHERE s.tenant_id = ?1 AND s.room = ?2), 0)",
        )
        .bind(&*key.tenant)
        .bind(&*key.room)
        .fetch_one(&self.pool)
        .await?;
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
        let mut tx = self.pool.begin().await?;
        let written = sqlx::query(
            "INSERT INTO snapshots (tenant_id, room, upto_id, data) VALUES (?, ?, ?, ?)
             ON CONFLICT (tenant_id, room) DO UPDATE
               SET upto_id = excluded.upto_id, data = excluded.data, updated = unixepoch()
               WHERE excluded.upto_id >= snapshots.upto_id",
        )
        .bind(&*key.tenant)
        .bind(&*key.room)
        .bind(upto_id)
        .bind(snapshot)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if written > 0 {
            sqlx::query("DELETE FROM updates WHERE tenant_id = ? AND room = ? AND id <= ?")
                .bind(&*key.tenant)
                .bind(&*key.room)
                .bind(upto_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn compact_exclusive(
        &self,
        key: &RoomKey,
    ) -> Result<Option<crate::CompactStats>, StoreError> {
        // A file is one host's: SQLite's own locking serialises its writers, and a snapshot
        // older than the stored one is ignored, so compactions need no lock of their own.
        crate::compact(self, key).await.map(Some)
    }

    async fn delete_room(&self, key: &RoomKey) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM updates WHERE tenant_id = ? AND room = ?",
            "DELETE FROM snapshots WHERE tenant_id = ? AND room = ?",
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

/// Writes outbox rows, due at once. `now: None` uses the database clock (`append` has no
/// caller time; the outbox claim compares with the caller's, which is the same machine).
async fn insert_events(
    conn: &mut sqlx::SqliteConnection,
    events: &[&NewEvent],
    now: Option<i64>,
) -> Result<(), StoreError> {
    // 5 parameters a row: far below SQLite's limit of 32766.
    const ROWS_PER_STATEMENT: usize = 256;
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO outbox (tenant_id, event, body, created, next_attempt) ",
        );
        q.push_values(chunk, |mut row, e| {
            row.push_bind(e.tenant.clone())
                .push_bind(e.event.clone())
                .push_bind(e.body.clone());
            match now {
                Some(t) => row.push_bind(t).push_bind(t.saturating_add(e.delay.max(0))),
                None => row
                    .push("unixepoch()")
                    .push("unixepoch() + ")
                    .push_bind_unseparated(e.delay.max(0)),
            };
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}
