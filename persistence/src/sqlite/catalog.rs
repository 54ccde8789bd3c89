//! [`Catalog`] on SQLite. There is no row-level security here: every statement names its
//! tenant in the `WHERE` clause (or the row it inserts), and the shared suite checks that one
//! tenant never sees another's rows. JSON is stored as TEXT.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use sqlx::{Row, Sqlite, Transaction};

use super::{SqliteStore, insert_events};
use crate::{
    ApiKey, Attempt, Catalog, NewEvent, OutboxEvent, RoomCreated, RoomInfo, SigningKey, StoreError,
    Tenant, VersionInfo, Webhook,
};

/// Columns of an outbox row, in the order [`outbox_event`] reads them.
const OUTBOX_COLUMNS: &str = "id, tenant_id, event, body, created, attempts, next_attempt, \
     delivered, failed, last_status, last_error";

/// Columns of a room listing: the record plus its document's size and latest write.
const ROOM_COLUMNS: &str = "SELECT r.room, r.meta, r.created,
        COALESCE((SELECT sum(length(u.data)) FROM updates u
                  WHERE u.tenant_id = r.tenant_id AND u.room = r.room), 0)
      + COALESCE((SELECT length(s.data) FROM snapshots s
                  WHERE s.tenant_id = r.tenant_id AND s.room = r.room), 0) AS stored_bytes,
        (SELECT max(u.created) FROM updates u
          WHERE u.tenant_id = r.tenant_id AND u.room = r.room) AS last_update,
        (SELECT s.updated FROM snapshots s
          WHERE s.tenant_id = r.tenant_id AND s.room = r.room) AS last_snapshot
     FROM rooms r";

impl SqliteStore {
    /// A write transaction that takes the write lock at once. A deferred transaction that
    /// reads first and writes later fails with `SQLITE_BUSY` instead of waiting when another
    /// connection wrote in between; `BEGIN IMMEDIATE` waits (busy timeout) at the start.
    pub(super) async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

fn tenant(row: &SqliteRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        settings: row.try_get::<Value, _>("settings")?,
        created: row.try_get("created")?,
    })
}

fn signing_key(row: &SqliteRow) -> Result<SigningKey, StoreError> {
    Ok(SigningKey {
        tenant: row.try_get("tenant_id")?,
        kid: row.try_get("kid")?,
        alg: row.try_get("alg")?,
        material: row.try_get("material")?,
        created: row.try_get("created")?,
        revoked: row.try_get("revoked")?,
    })
}

fn api_key(row: &SqliteRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        tenant: row.try_get("tenant_id")?,
        key_id: row.try_get("key_id")?,
        hash: row.try_get("hash")?,
        name: row.try_get("name")?,
        created: row.try_get("created")?,
        revoked: row.try_get("revoked")?,
    })
}

fn room_info(row: &SqliteRow) -> Result<RoomInfo, StoreError> {
    let last_update: Option<i64> = row.try_get("last_update")?;
    let last_snapshot: Option<i64> = row.try_get("last_snapshot")?;
    Ok(RoomInfo {
        room: row.try_get("room")?,
        meta: row.try_get::<Value, _>("meta")?,
        created: row.try_get("created")?,
        stored_bytes: row.try_get("stored_bytes")?,
        // SQLite's max(a, b) is NULL when either is NULL, so combine here.
        last_activity: last_update.max(last_snapshot),
    })
}

fn version_info(row: &SqliteRow) -> Result<VersionInfo, StoreError> {
    Ok(VersionInfo {
        id: row.try_get("id")?,
        room: row.try_get("room")?,
        name: row.try_get("name")?,
        created: row.try_get("created")?,
        bytes: row.try_get("bytes")?,
    })
}

fn outbox_event(row: &SqliteRow) -> Result<OutboxEvent, StoreError> {
    Ok(OutboxEvent {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant_id")?,
        event: row.try_get("event")?,
        body: row.try_get::<Value, _>("body")?,
        created: row.try_get("created")?,
        attempts: row.try_get("attempts")?,
        next_attempt: row.try_get("next_attempt")?,
        delivered: row.try_get("delivered")?,
        failed: row.try_get("failed")?,
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
    })
}

/// Deletes every row of `tenant` in `table` (a constant of this file, never user input).
async fn delete_all_of(
    tx: &mut Transaction<'static, Sqlite>,
    table: &'static str,
    tenant: &str,
) -> Result<u64, StoreError> {
    let sql = format!("DELETE FROM {table} WHERE tenant_id = ?");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

#[async_trait]
impl Catalog for SqliteStore {
    async fn create_tenant(&self, t: &Tenant) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO tenants (tenant_id, name, settings, created) VALUES (?, ?, ?, ?)
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.settings)
        .bind(t.created)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        sqlx::query("SELECT tenant_id, name, settings, created FROM tenants WHERE tenant_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tenant)
            .transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        sqlx::query("SELECT tenant_id, name, settings, created FROM tenants ORDER BY tenant_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(tenant)
            .collect()
    }

    async fn update_tenant(
        &self,
        id: &str,
        name: Option<&str>,
        settings: Option<&Value>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tenants SET name = COALESCE(?, name), settings = COALESCE(?, settings)
             WHERE tenant_id = ?",
        )
        .bind(name)
        .bind(settings)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        // Rows of a tenant without a record (e.g. rooms of a deleted tenant's token that was
        // still valid) go too: the tenant id is what owns them.
        for table in [
            "updates",
            "snapshots",
            "versions",
            "rooms",
            "signing_keys",
            "api_keys",
            "webhooks",
            "outbox",
            "ai_runs",
            "search_queue",
            "search_rooms",
            "search_chunks",
            "ai_usage",
        ] {
            delete_all_of(&mut tx, table, id).await?;
        }
        let existed = delete_all_of(&mut tx, "tenants", id).await? > 0;
        tx.commit().await?;
        Ok(existed)
    }

    async fn add_signing_key(&self, k: &SigningKey) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO signing_keys (tenant_id, kid, alg, material, created, revoked)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, kid) DO NOTHING",
        )
        .bind(&k.tenant)
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.material)
        .bind(k.created)
        .bind(k.revoked)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_signing_keys(&self, tenant: &str) -> Result<Vec<SigningKey>, StoreError> {
        sqlx::query(
            "SELECT tenant_id, kid, alg, material, created, revoked FROM signing_keys
             WHERE tenant_id = ? ORDER BY created, rowid",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(signing_key)
        .collect()
    }

    async fn revoke_signing_key(
        &self,
        tenant: &str,
        kid: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE signing_keys SET revoked = ?
             WHERE tenant_id = ? AND kid = ? AND revoked IS NULL",
        )
        .bind(at)
        .bind(tenant)
        .bind(kid)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_api_key(&self, k: &ApiKey) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO api_keys (tenant_id, key_id, hash, name, created, revoked)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, key_id) DO NOTHING",
        )
        .bind(&k.tenant)
        .bind(&k.key_id)
        .bind(&k.hash)
        .bind(&k.name)
        .bind(k.created)
        .bind(k.revoked)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_api_key(&self, tenant: &str, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        sqlx::query(
            "SELECT tenant_id, key_id, hash, name, created, revoked FROM api_keys
             WHERE tenant_id = ? AND key_id = ?",
        )
        .bind(tenant)
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(api_key)
        .transpose()
    }

    async fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, StoreError> {
        sqlx::query(
            "SELECT tenant_id, key_id, hash, name, created, revoked FROM api_keys
             WHERE tenant_id = ? ORDER BY created, rowid",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(api_key)
        .collect()
    }

    async fn revoke_api_key(
        &self,
        tenant: &str,
        key_id: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked = ?
             WHERE tenant_id = ? AND key_id = ? AND revoked IS NULL",
        )
        .bind(at)
        .bind(tenant)
        .bind(key_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_room(
        &self,
        tenant: &str,
        room: &str,
        meta: &Value,
        max_rooms: Option<u64>,
        now: i64,
    ) -> Result<RoomCreated, StoreError> {
        // IMMEDIATE: the count and the insert see the same rooms, so two creates racing for
        // the last free slot cannot both win.
        let mut tx = self.write_tx().await?;
        let exists = sqlx::query("SELECT 1 FROM rooms WHERE tenant_id = ? AND room = ?")
            .bind(tenant)
            .bind(room)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if exists {
            return Ok(RoomCreated::Exists);
        }
        if let Some(max) = max_rooms {
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM rooms WHERE tenant_id = ?")
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await?;
            if u64::try_from(count).unwrap_or(0) >= max {
                return Ok(RoomCreated::LimitReached);
            }
        }
        sqlx::query("INSERT INTO rooms (tenant_id, room, meta, created) VALUES (?, ?, ?, ?)")
            .bind(tenant)
            .bind(room)
            .bind(meta)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RoomCreated::Created)
    }

    async fn get_room(&self, tenant: &str, room: &str) -> Result<Option<RoomInfo>, StoreError> {
        let sql = format!("{ROOM_COLUMNS} WHERE r.tenant_id = ? AND r.room = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(room)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(room_info)
            .transpose()
    }

    async fn list_rooms(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RoomInfo>, StoreError> {
        let sql = format!(
            "{ROOM_COLUMNS} WHERE r.tenant_id = ? AND (? IS NULL OR r.room > ?)
             ORDER BY r.room LIMIT ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(after)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(room_info)
            .collect()
    }

    async fn delete_room_everything(&self, tenant: &str, room: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let mut deleted = 0;
        for sql in [
            "DELETE FROM updates WHERE tenant_id = ? AND room = ?",
            "DELETE FROM snapshots WHERE tenant_id = ? AND room = ?",
            "DELETE FROM versions WHERE tenant_id = ? AND room = ?",
            "DELETE FROM rooms WHERE tenant_id = ? AND room = ?",
        ] {
            deleted += sqlx::query(sql)
                .bind(tenant)
                .bind(room)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        // The index goes with the room, in the same transaction.
        super::search::forget_room(&mut tx, tenant, room).await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn create_version(
        &self,
        tenant: &str,
        room: &str,
        name: &str,
        state: &[u8],
        now: i64,
    ) -> Result<VersionInfo, StoreError> {
        let row = sqlx::query(
            "INSERT INTO versions (tenant_id, room, name, created, state) VALUES (?, ?, ?, ?, ?)
             RETURNING id, room, name, created, length(state) AS bytes",
        )
        .bind(tenant)
        .bind(room)
        .bind(name)
        .bind(now)
        .bind(state)
        .fetch_one(&self.pool)
        .await?;
        version_info(&row)
    }

    async fn list_versions(
        &self,
        tenant: &str,
        room: &str,
    ) -> Result<Vec<VersionInfo>, StoreError> {
        sqlx::query(
            "SELECT id, room, name, created, length(state) AS bytes FROM versions
             WHERE tenant_id = ? AND room = ? ORDER BY id",
        )
        .bind(tenant)
        .bind(room)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(version_info)
        .collect()
    }

    async fn get_version(
        &self,
        tenant: &str,
        room: &str,
        id: i64,
    ) -> Result<Option<(VersionInfo, Bytes)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, room, name, created, length(state) AS bytes, state FROM versions
             WHERE tenant_id = ? AND room = ? AND id = ?",
        )
        .bind(tenant)
        .bind(room)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some((
                version_info(&row)?,
                Bytes::from(row.try_get::<Vec<u8>, _>("state")?),
            ))),
            None => Ok(None),
        }
    }

    async fn set_webhook(&self, tenant: &str, hook: &Webhook) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhooks (tenant_id, url, secret, events) VALUES (?, ?, ?, ?)
             ON CONFLICT (tenant_id) DO UPDATE SET url = excluded.url, secret = excluded.secret,
               events = excluded.events, last_status = NULL, last_error = NULL,
               last_attempt = NULL",
        )
        .bind(tenant)
        .bind(&hook.url)
        .bind(&hook.secret)
        .bind(Json(&hook.events))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_webhook(&self, tenant: &str) -> Result<Option<Webhook>, StoreError> {
        let row = sqlx::query(
            "SELECT url, secret, events, last_status, last_error, last_attempt FROM webhooks
             WHERE tenant_id = ?",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Webhook {
            url: row.try_get("url")?,
            secret: row.try_get("secret")?,
            events: row.try_get::<Json<Vec<String>>, _>("events")?.0,
            last_status: row.try_get("last_status")?,
            last_error: row.try_get("last_error")?,
            last_attempt: row.try_get("last_attempt")?,
        }))
    }

    async fn delete_webhook(&self, tenant: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let existed = delete_all_of(&mut tx, "webhooks", tenant).await? > 0;
        sqlx::query("DELETE FROM outbox WHERE tenant_id = ? AND delivered IS NULL")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(existed)
    }

    async fn enqueue_events(&self, events: &[NewEvent], now: i64) -> Result<(), StoreError> {
        let refs: Vec<&NewEvent> = events.iter().collect();
        let mut tx = self.write_tx().await?;
        insert_events(&mut tx, &refs, Some(now)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_events(
        &self,
        now: i64,
        lease: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        // One statement: SQLite runs it under the single write lock, so two claimers (two
        // processes on one file) never take the same row. The limit is written into the text,
        // not bound: see "LIMIT in the text" in sqlite.rs.
        let sql = format!(
            "UPDATE outbox SET next_attempt = ?
             WHERE id IN (SELECT id FROM outbox
                          WHERE delivered IS NULL AND failed = 0 AND next_attempt <= ?
                          ORDER BY id LIMIT {limit})
             RETURNING {OUTBOX_COLUMNS}"
        );
        let mut claimed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now.saturating_add(lease))
            .bind(now)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(outbox_event)
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING does not promise an order.
        claimed.sort_by_key(|e| e.id);
        Ok(claimed)
    }

    async fn record_attempt(
        &self,
        tenant: &str,
        id: i64,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let delivered = attempt.delivered.then_some(attempt.at);
        let gave_up = !attempt.delivered && attempt.retry_at.is_none();
        let done = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_status = ?, last_error = ?,
               delivered = ?, failed = ?, next_attempt = COALESCE(?, next_attempt)
             WHERE tenant_id = ? AND id = ? AND delivered IS NULL AND failed = 0",
        )
        .bind(attempt.status)
        .bind(&attempt.error)
        .bind(delivered)
        .bind(gave_up)
        .bind(attempt.retry_at.filter(|_| !attempt.delivered))
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // An attempt for an event deleted meanwhile (webhook removed) says nothing about the
        // current endpoint.
        if done.rows_affected() > 0 {
            sqlx::query(
                "UPDATE webhooks SET last_status = ?, last_error = ?, last_attempt = ?
                 WHERE tenant_id = ?",
            )
            .bind(attempt.status)
            .bind(&attempt.error)
            .bind(attempt.at)
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_events(&self, tenant: &str, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = ? ORDER BY id DESC LIMIT ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(outbox_event)
            .collect()
    }

    async fn prune_events(&self, tenant: &str, before: i64) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query(
            "DELETE FROM outbox WHERE tenant_id = ? AND created < ?
               AND (delivered IS NOT NULL OR failed)",
        )
        .bind(tenant)
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
