//! [`SearchIndex`] on Postgres: tenant work runs in transactions confined to the tenant
//! (row-level security, forced); the cross-tenant reads go through SECURITY DEFINER functions
//! that return ids and numbers only (migrations/postgres/0003_search.sql).

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::{PostgresStore, set_tenant};
use crate::StoreError;
use crate::ai_runs::int;
use crate::search::{
    Chunk, RoomFilter, SearchChange, SearchIndex, SearchJob, StoredVector, TextHit, chunk_from_row,
    utc_day, vector_bytes, vector_from_row,
};

/// The advisory lock every change-number writer holds until commit ('Chor', 'Sear'), so change
/// numbers commit in order and a node following the feed never skips one.
const CHANGE_LOCK: (i32, i32) = (1_130_916_978, 1_399_153_010);

/// Queues rooms (in the caller's transaction), grouped by tenant under each tenant's policy.
pub(super) async fn enqueue(
    conn: &mut PgConnection,
    keys: &[(&str, &str, i64)],
) -> Result<(), StoreError> {
    let mut by_tenant: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (tenant, room, due) in keys {
        if seen.insert((*tenant, *room)) {
            by_tenant.entry(tenant).or_default().push((room, *due));
        }
    }
    for (tenant, rooms) in by_tenant {
        set_tenant(conn, tenant).await?;
        for chunk in rooms.chunks(1000) {
            let mut q = QueryBuilder::<Postgres>::new(
                "INSERT INTO search_queue (tenant_id, room, due_ms) ",
            );
            q.push_values(chunk, |mut row, (room, due)| {
                row.push_bind(tenant).push_bind(*room).push_bind(*due);
            });
            q.push(
                " ON CONFLICT (tenant_id, room) DO UPDATE
                     SET generation = search_queue.generation + 1,
                         due_ms = LEAST(search_queue.due_ms, excluded.due_ms)",
            );
            q.build().execute(&mut *conn).await?;
        }
    }
    Ok(())
}

async fn next_change(conn: &mut PgConnection) -> Result<i64, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(CHANGE_LOCK.0)
        .bind(CHANGE_LOCK.1)
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_scalar("SELECT nextval('search_change_seq')")
        .fetch_one(&mut *conn)
        .await?)
}

/// Takes the room out of the index (in the caller's transaction, tenant already set).
pub(super) async fn forget_room(
    conn: &mut PgConnection,
    tenant: &str,
    room: &str,
) -> Result<(), StoreError> {
    // The queue row first: an indexing of the room holds it locked until it commits, so the
    // chunks are deleted after that indexing's, never before.
    for sql in [
        "DELETE FROM search_queue WHERE tenant_id = $1 AND room = $2",
        "DELETE FROM search_chunks WHERE tenant_id = $1 AND room = $2",
    ] {
        sqlx::query(sql)
            .bind(tenant)
            .bind(room)
            .execute(&mut *conn)
            .await?;
    }
    let indexed: Option<i32> =
        sqlx::query_scalar("SELECT chunks FROM search_rooms WHERE tenant_id = $1 AND room = $2")
            .bind(tenant)
            .bind(room)
            .fetch_optional(&mut *conn)
            .await?;
    if indexed.is_some() {
        let seq = next_change(conn).await?;
        sqlx::query(
            "UPDATE search_rooms SET chunks = 0, seq = $3 WHERE tenant_id = $1 AND room = $2",
        )
        .bind(tenant)
        .bind(room)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Appends the room conditions of `filter` (column `room`).
fn push_filter(q: &mut QueryBuilder<Postgres>, filter: &RoomFilter) {
    if !filter.all {
        q.push(" AND (room = ANY(")
            .push_bind(filter.exact.clone())
            .push(") OR EXISTS (SELECT 1 FROM unnest(")
            .push_bind(filter.prefixes.clone())
            .push("::text[]) p WHERE starts_with(room, p)))");
    }
    if let Some(w) = &filter.within {
        q.push(" AND starts_with(room, ")
            .push_bind(w.clone())
            .push(")");
    }
}

#[async_trait]
impl SearchIndex for PostgresStore {
    async fn enqueue_search(
        &self,
        tenant: &str,
        rooms: &[String],
        due_ms: i64,
    ) -> Result<(), StoreError> {
        let keys: Vec<(&str, &str, i64)> =
            rooms.iter().map(|r| (tenant, r.as_str(), due_ms)).collect();
        let mut tx = self.pool.begin().await?;
        enqueue(&mut tx, &keys).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn enqueue_stored_rooms(
        &self,
        tenant: Option<&str>,
        due_ms: i64,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT chorus_search_backfill($1, $2)")
            .bind(due_ms)
            .bind(tenant)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn claim_search_jobs(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<SearchJob>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let due: Vec<(String, String)> =
            sqlx::query_as("SELECT tenant_id, room FROM chorus_search_due($1, $2)")
                .bind(now_ms)
                .bind(i32::try_from(limit).unwrap_or(i32::MAX))
                .fetch_all(&mut *tx)
                .await?;
        let mut jobs = Vec::with_capacity(due.len());
        for (tenant, room) in due {
            set_tenant(&mut tx, &tenant).await?;
            // SKIP LOCKED and the due check again: another node claiming the same row right
            // now keeps it.
            let generation: Option<i64> = sqlx::query_scalar(
                "UPDATE search_queue SET leased_until = $1
                  WHERE tenant_id = $2 AND room = $3 AND due_ms <= $4 AND leased_until <= $4
                    AND ctid IN (SELECT ctid FROM search_queue
                                  WHERE tenant_id = $2 AND room = $3
                                  FOR UPDATE SKIP LOCKED)
                  RETURNING generation",
            )
            .bind(now_ms.saturating_add(lease_ms))
            .bind(&tenant)
            .bind(&room)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(generation) = generation {
                jobs.push(SearchJob {
                    tenant,
                    room,
                    generation,
                });
            }
        }
        tx.commit().await?;
        Ok(jobs)
    }

    async fn finish_search_job(&self, job: &SearchJob, again_ms: i64) -> Result<bool, StoreError> {
        let mut tx = self.scoped(&job.tenant).await?;
        let gone = sqlx::query(
            "DELETE FROM search_queue WHERE tenant_id = $1 AND room = $2 AND generation = $3",
        )
        .bind(&job.tenant)
        .bind(&job.room)
        .bind(job.generation)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !gone {
            sqlx::query(
                "UPDATE search_queue SET due_ms = $1, leased_until = 0
                  WHERE tenant_id = $2 AND room = $3",
            )
            .bind(again_ms)
            .bind(&job.tenant)
            .bind(&job.room)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    async fn search_queue_depth(&self, now_ms: i64) -> Result<(u64, u64), StoreError> {
        let (queued, due): (i64, i64) =
            sqlx::query_as("SELECT queued, due FROM chorus_search_depth($1)")
                .bind(now_ms)
                .fetch_one(&self.pool)
                .await?;
        Ok((
            u64::try_from(queued).unwrap_or(0),
            u64::try_from(due).unwrap_or(0),
        ))
    }

    async fn room_chunks(&self, tenant: &str, room: &str) -> Result<Vec<Chunk>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let rows = sqlx::query(
            "SELECT hash, ord, start_offset, field, position, lines, body, model, embedding
               FROM search_chunks WHERE tenant_id = $1 AND room = $2 ORDER BY ord",
        )
        .bind(tenant)
        .bind(room)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(chunk_from_row).collect()
    }

    async fn replace_room_chunks(
        &self,
        tenant: &str,
        room: &str,
        chunks: &[Chunk],
        language: &str,
        now: i64,
        job: Option<&SearchJob>,
    ) -> Result<(), StoreError> {
        let mut tx = self.scoped(tenant).await?;
        if job.is_some() {
            // Locked until commit: a deletion of the room waits for this write, or this one
            // sees the row gone and writes nothing.
            let queued: Option<i64> = sqlx::query_scalar(
                "SELECT generation FROM search_queue WHERE tenant_id = $1 AND room = $2
                    FOR UPDATE",
            )
            .bind(tenant)
            .bind(room)
            .fetch_optional(&mut *tx)
            .await?;
            if queued.is_none() {
                tx.commit().await?;
                return Ok(());
            }
        }
        let hashes: Vec<&str> = chunks.iter().map(|c| c.hash.as_str()).collect();
        sqlx::query(
            "DELETE FROM search_chunks WHERE tenant_id = $1 AND room = $2
                AND NOT (hash = ANY($3))",
        )
        .bind(tenant)
        .bind(room)
        .bind(&hashes)
        .execute(&mut *tx)
        .await?;
        for c in chunks {
            sqlx::query(
                "INSERT INTO search_chunks (tenant_id, room, hash, ord, start_offset, field,
                                            position, lines, body, lang, model, embedding)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::regconfig, $11, $12)
                 ON CONFLICT (tenant_id, room, hash) DO UPDATE SET ord = excluded.ord,
                     start_offset = excluded.start_offset, field = excluded.field,
                     position = excluded.position, lines = excluded.lines, lang = excluded.lang,
                     model = CASE WHEN excluded.embedding IS NULL THEN search_chunks.model
                                  ELSE excluded.model END,
                     embedding = COALESCE(excluded.embedding, search_chunks.embedding)",
            )
            .bind(tenant)
            .bind(room)
            .bind(&c.hash)
            .bind(c.ord)
            .bind(c.start)
            .bind(&c.field)
            .bind(&c.position)
            .bind(&c.lines)
            .bind(&c.text)
            .bind(language)
            .bind(&c.model)
            .bind(c.vector.as_deref().map(vector_bytes))
            .execute(&mut *tx)
            .await?;
        }
        let seq = next_change(&mut tx).await?;
        sqlx::query(
            "INSERT INTO search_rooms (tenant_id, room, seq, chunks, indexed)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, room) DO UPDATE SET seq = excluded.seq,
                 chunks = excluded.chunks, indexed = excluded.indexed",
        )
        .bind(tenant)
        .bind(room)
        .bind(seq)
        .bind(i32::try_from(chunks.len()).unwrap_or(i32::MAX))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_room_index(&self, tenant: &str, room: &str) -> Result<(), StoreError> {
        let mut tx = self.scoped(tenant).await?;
        forget_room(&mut tx, tenant, room).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn search_text(
        &self,
        tenant: &str,
        query: &str,
        language: &str,
        filter: &RoomFilter,
        limit: u32,
    ) -> Result<Vec<TextHit>, StoreError> {
        if filter.is_empty() || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.scoped(tenant).await?;
        // The best chunk of each room, then the best rooms; headlines only for those.
        let mut q = QueryBuilder::<Postgres>::new("WITH q AS (SELECT websearch_to_tsquery(");
        q.push_bind(language.to_owned())
            .push("::regconfig, ")
            .push_bind(query.to_owned())
            .push(
                ") AS query),
             best AS (
               SELECT DISTINCT ON (room) room, hash, start_offset, field, position, lines, body,
                      ts_rank_cd(tsv, q.query) AS score
                 FROM search_chunks, q
                WHERE tenant_id = ",
            )
            .push_bind(tenant.to_owned())
            .push(" AND tsv @@ q.query");
        push_filter(&mut q, filter);
        q.push(
            " ORDER BY room, score DESC),
             top AS (SELECT * FROM best ORDER BY score DESC, room LIMIT ",
        )
        .push_bind(i64::from(limit))
        .push(
            ")
             SELECT room, hash, start_offset, field, position, lines, body, score::float8 AS score,
                    ts_headline(",
        )
        .push_bind(language.to_owned())
        .push(
            "::regconfig, body, q.query,
                        'StartSel=' || chr(2) || ', StopSel=' || chr(3) ||
                        ', MaxWords=30, MinWords=12, ShortWord=2, MaxFragments=1')
                      AS snippet
               FROM top, q ORDER BY score DESC, room",
        );
        let rows = q.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(TextHit {
                    room: r.try_get("room")?,
                    hash: r.try_get("hash")?,
                    start: r.try_get("start_offset")?,
                    field: r.try_get("field")?,
                    position: r.try_get("position")?,
                    lines: r.try_get("lines")?,
                    body: r.try_get("body")?,
                    snippet: r.try_get("snippet")?,
                    score: r.try_get("score")?,
                })
            })
            .collect()
    }

    async fn chunks_by_hash(
        &self,
        tenant: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<(String, Chunk)>, StoreError> {
        let rooms: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let hashes: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let mut tx = self.scoped(tenant).await?;
        let rows = sqlx::query(
            "SELECT c.room, c.hash, c.ord, c.start_offset, c.field, c.position, c.lines, c.body, c.model,
                    NULL::bytea AS embedding
               FROM search_chunks c
               JOIN unnest($2::text[], $3::text[]) AS k(room, hash)
                 ON c.room = k.room AND c.hash = k.hash
              WHERE c.tenant_id = $1",
        )
        .bind(tenant)
        .bind(&rooms)
        .bind(&hashes)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| Ok((r.try_get("room")?, chunk_from_row(r)?)))
            .collect()
    }

    async fn search_changes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<SearchChange>, StoreError> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT tenant_id, room, seq FROM chorus_search_changes($1, $2)")
                .bind(after)
                .bind(i32::try_from(limit).unwrap_or(i32::MAX))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(tenant, room, seq)| SearchChange { tenant, room, seq })
            .collect())
    }

    async fn last_search_change(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT chorus_search_last_change()")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn room_vectors(
        &self,
        tenant: &str,
        room: &str,
    ) -> Result<Vec<StoredVector>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let rows = sqlx::query(
            "SELECT room, hash, model, embedding FROM search_chunks
              WHERE tenant_id = $1 AND room = $2 AND embedding IS NOT NULL ORDER BY ord",
        )
        .bind(tenant)
        .bind(room)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(vector_from_row).collect()
    }

    async fn tenant_vectors(
        &self,
        tenant: &str,
        after: (&str, &str),
        limit: u32,
    ) -> Result<Vec<StoredVector>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let rows = sqlx::query(
            "SELECT room, hash, model, embedding FROM search_chunks
              WHERE tenant_id = $1 AND (room, hash) > ($2, $3) AND embedding IS NOT NULL
              ORDER BY room, hash LIMIT $4",
        )
        .bind(tenant)
        .bind(after.0)
        .bind(after.1)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(vector_from_row).collect()
    }

    async fn record_ai_usage(&self, tenant: &str, at: i64, tokens: u64) -> Result<(), StoreError> {
        let mut tx = self.scoped(tenant).await?;
        sqlx::query(
            "INSERT INTO ai_usage (tenant_id, day, tokens) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, day) DO UPDATE SET tokens = ai_usage.tokens + excluded.tokens",
        )
        .bind(tenant)
        .bind(utc_day(at))
        .bind(int(tokens))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
