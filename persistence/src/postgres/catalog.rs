//! [`Catalog`] on Postgres. Every tenant-scoped method runs in [`PostgresStore::scoped`]
//! (row-level security) and names the tenant in its SQL as well.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};

use super::{PostgresStore, insert_events_in_order, set_tenant};
use crate::{
    ApiKey, Attempt, Catalog, NewEvent, OutboxEvent, RoomCreated, RoomInfo, SigningKey, StoreError,
    Tenant, VersionInfo, Webhook,
};

/// Advisory lock namespace ('Chot') of a tenant's room count, so two `create_room` calls
/// racing for the last free slot cannot both win. Rooms' append locks use 'Chor'.
const ROOM_COUNT_LOCK: i32 = 1_130_916_980;

/// Columns of an outbox row, in the order [`outbox_event`] reads them.
const OUTBOX_COLUMNS: &str = "id, tenant_id, event, body, created, attempts, next_attempt, \
     delivered, failed, last_status, last_error";

/// A room record plus its document's size and latest write.
const ROOM_COLUMNS: &str = "SELECT r.room, r.meta, r.created,
        (COALESCE((SELECT sum(octet_length(u.data)) FROM updates u
                   WHERE u.tenant_id = r.tenant_id AND u.room = r.room), 0)
       + COALESCE((SELECT octet_length(s.data) FROM snapshots s
                   WHERE s.tenant_id = r.tenant_id AND s.room = r.room), 0))::bigint
          AS stored_bytes,
        (SELECT max(u.created) FROM updates u
          WHERE u.tenant_id = r.tenant_id AND u.room = r.room) AS last_update,
        (SELECT s.updated FROM snapshots s
          WHERE s.tenant_id = r.tenant_id AND s.room = r.room) AS last_snapshot
     FROM rooms r";

/// Every table holding rows of a tenant besides `tenants` itself.
const OWNED_TABLES: [&str; 13] = [
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
];

fn tenant(row: &PgRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        settings: row.try_get::<Value, _>("settings")?,
        created: row.try_get("created")?,
    })
}

fn signing_key(row: &PgRow) -> Result<SigningKey, StoreError> {
    Ok(SigningKey {
        tenant: row.try_get("tenant_id")?,
        kid: row.try_get("kid")?,
        alg: row.try_get("alg")?,
        material: row.try_get("material")?,
        created: row.try_get("created")?,
        revoked: row.try_get("revoked")?,
    })
}

fn api_key(row: &PgRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        tenant: row.try_get("tenant_id")?,
        key_id: row.try_get("key_id")?,
        hash: row.try_get("hash")?,
        name: row.try_get("name")?,
        created: row.try_get("created")?,
        revoked: row.try_get("revoked")?,
    })
}

fn room_info(row: &PgRow) -> Result<RoomInfo, StoreError> {
    let last_update: Option<i64> = row.try_get("last_update")?;
    let last_snapshot: Option<i64> = row.try_get("last_snapshot")?;
    Ok(RoomInfo {
        room: row.try_get("room")?,
        meta: row.try_get::<Value, _>("meta")?,
        created: row.try_get("created")?,
        stored_bytes: row.try_get("stored_bytes")?,
        last_activity: last_update.max(last_snapshot),
    })
}

fn version_info(row: &PgRow) -> Result<VersionInfo, StoreError> {
    Ok(VersionInfo {
        id: row.try_get("id")?,
        room: row.try_get("room")?,
        name: row.try_get("name")?,
        created: row.try_get("created")?,
        bytes: row.try_get("bytes")?,
    })
}

fn outbox_event(row: &PgRow) -> Result<OutboxEvent, StoreError> {
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
    tx: &mut Transaction<'static, Postgres>,
    table: &'static str,
    tenant: &str,
) -> Result<u64, StoreError> {
    let sql = format!("DELETE FROM {table} WHERE tenant_id = $1");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// Runs a one-statement, tenant-scoped write and reports whether it touched a row.
async fn scoped_write(
    store: &PostgresStore,
    tenant: &str,
    query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
) -> Result<bool, StoreError> {
    let mut tx = store.scoped(tenant).await?;
    let done = query.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

#[async_trait]
impl Catalog for PostgresStore {
    async fn create_tenant(&self, t: &Tenant) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "INSERT INTO tenants (tenant_id, name, settings, created) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.settings)
        .bind(t.created);
        scoped_write(self, &t.id, q).await
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let mut tx = self.scoped(id).await?;
        let row = sqlx::query(
            "SELECT tenant_id, name, settings, created FROM tenants WHERE tenant_id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(tenant).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        // The ids come from a SECURITY DEFINER function; each record is then read under its
        // own tenant's policy, so chorus_app never needs to see across tenants.
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM chorus_tenant_ids() AS id")
            .fetch_all(&mut *tx)
            .await?;
        let mut tenants = Vec::with_capacity(ids.len());
        for id in ids {
            set_tenant(&mut tx, &id).await?;
            let row = sqlx::query(
                "SELECT tenant_id, name, settings, created FROM tenants WHERE tenant_id = $1",
            )
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
            // Absent when deleted since the id list was read.
            if let Some(row) = row {
                tenants.push(tenant(&row)?);
            }
        }
        tx.commit().await?;
        Ok(tenants)
    }

    async fn update_tenant(
        &self,
        id: &str,
        name: Option<&str>,
        settings: Option<&Value>,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE tenants SET name = COALESCE($1, name), settings = COALESCE($2, settings)
             WHERE tenant_id = $3",
        )
        .bind(name)
        .bind(settings)
        .bind(id);
        scoped_write(self, id, q).await
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.scoped(id).await?;
        // Rows of the tenant id go even without a tenant record: the id is what owns them.
        for table in OWNED_TABLES {
            delete_all_of(&mut tx, table, id).await?;
        }
        let existed = delete_all_of(&mut tx, "tenants", id).await? > 0;
        tx.commit().await?;
        Ok(existed)
    }

    async fn add_signing_key(&self, k: &SigningKey) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "INSERT INTO signing_keys (tenant_id, kid, alg, material, created, revoked)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, kid) DO NOTHING",
        )
        .bind(&k.tenant)
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.material)
        .bind(k.created)
        .bind(k.revoked);
        scoped_write(self, &k.tenant, q).await
    }

    async fn list_signing_keys(&self, tenant: &str) -> Result<Vec<SigningKey>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let rows = sqlx::query(
            "SELECT tenant_id, kid, alg, material, created, revoked FROM signing_keys
             WHERE tenant_id = $1 ORDER BY created, seq",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(signing_key).collect()
    }

    async fn revoke_signing_key(
        &self,
        tenant: &str,
        kid: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE signing_keys SET revoked = $1
             WHERE tenant_id = $2 AND kid = $3 AND revoked IS NULL",
        )
        .bind(at)
        .bind(tenant)
        .bind(kid);
        scoped_write(self, tenant, q).await
    }

    async fn add_api_key(&self, k: &ApiKey) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "INSERT INTO api_keys (tenant_id, key_id, hash, name, created, revoked)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, key_id) DO NOTHING",
        )
        .bind(&k.tenant)
        .bind(&k.key_id)
        .bind(&k.hash)
        .bind(&k.name)
        .bind(k.created)
        .bind(k.revoked);
        scoped_write(self, &k.tenant, q).await
    }

    async fn get_api_key(&self, tenant: &str, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(
            "SELECT tenant_id, key_id, hash, name, created, revoked FROM api_keys
             WHERE tenant_id = $1 AND key_id = $2",
        )
        .bind(tenant)
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(api_key).transpose()
    }

    async fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let rows = sqlx::query(
            "SELECT tenant_id, key_id, hash, name, created, revoked FROM api_keys
             WHERE tenant_id = $1 ORDER BY created, seq",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(api_key).collect()
    }

    async fn revoke_api_key(
        &self,
        tenant: &str,
        key_id: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE api_keys SET revoked = $1
             WHERE tenant_id = $2 AND key_id = $3 AND revoked IS NULL",
        )
        .bind(at)
        .bind(tenant)
        .bind(key_id);
        scoped_write(self, tenant, q).await
    }

    async fn create_room(
        &self,
        tenant: &str,
        room: &str,
        meta: &Value,
        max_rooms: Option<u64>,
        now: i64,
    ) -> Result<RoomCreated, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        if let Some(max) = max_rooms {
            // Read committed would let two creates count the same rooms; the lock makes the
            // count and the insert one step per tenant.
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(ROOM_COUNT_LOCK)
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
            let row = sqlx::query(
                "SELECT count(*) AS n, bool_or(room = $2) AS present
                   FROM rooms WHERE tenant_id = $1",
            )
            .bind(tenant)
            .bind(room)
            .fetch_one(&mut *tx)
            .await?;
            if row.try_get::<Option<bool>, _>("present")?.unwrap_or(false) {
                return Ok(RoomCreated::Exists);
            }
            if u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0) >= max {
                return Ok(RoomCreated::LimitReached);
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO rooms (tenant_id, room, meta, created) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, room) DO NOTHING",
        )
        .bind(tenant)
        .bind(room)
        .bind(meta)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(if inserted > 0 {
            RoomCreated::Created
        } else {
            RoomCreated::Exists
        })
    }

    async fn get_room(&self, tenant: &str, room: &str) -> Result<Option<RoomInfo>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let sql = format!("{ROOM_COLUMNS} WHERE r.tenant_id = $1 AND r.room = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(room)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(room_info).transpose()
    }

    async fn list_rooms(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RoomInfo>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let sql = format!(
            "{ROOM_COLUMNS} WHERE r.tenant_id = $1 AND ($2::text IS NULL OR r.room > $2)
             ORDER BY r.room LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(room_info).collect()
    }

    async fn delete_room_everything(&self, tenant: &str, room: &str) -> Result<bool, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let mut deleted = 0;
        for sql in [
            "DELETE FROM updates WHERE tenant_id = $1 AND room = $2",
            "DELETE FROM snapshots WHERE tenant_id = $1 AND room = $2",
            "DELETE FROM versions WHERE tenant_id = $1 AND room = $2",
            "DELETE FROM rooms WHERE tenant_id = $1 AND room = $2",
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
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(
            "INSERT INTO versions (tenant_id, room, name, created, state)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING id, room, name, created, octet_length(state)::bigint AS bytes",
        )
        .bind(tenant)
        .bind(room)
        .bind(name)
        .bind(now)
        .bind(state)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        version_info(&row)
    }

    async fn list_versions(
        &self,
        tenant: &str,
        room: &str,
    ) -> Result<Vec<VersionInfo>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let rows = sqlx::query(
            "SELECT id, room, name, created, octet_length(state)::bigint AS bytes FROM versions
             WHERE tenant_id = $1 AND room = $2 ORDER BY id",
        )
        .bind(tenant)
        .bind(room)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(version_info).collect()
    }

    async fn get_version(
        &self,
        tenant: &str,
        room: &str,
        id: i64,
    ) -> Result<Option<(VersionInfo, Bytes)>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(
            "SELECT id, room, name, created, octet_length(state)::bigint AS bytes, state
               FROM versions WHERE tenant_id = $1 AND room = $2 AND id = $3",
        )
        .bind(tenant)
        .bind(room)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match row {
            Some(row) => Ok(Some((
                version_info(&row)?,
                Bytes::from(row.try_get::<Vec<u8>, _>("state")?),
            ))),
            None => Ok(None),
        }
    }

    async fn set_webhook(&self, tenant: &str, hook: &Webhook) -> Result<(), StoreError> {
        let q = sqlx::query(
            "INSERT INTO webhooks (tenant_id, url, secret, events) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id) DO UPDATE SET url = excluded.url, secret = excluded.secret,
               events = excluded.events, last_status = NULL, last_error = NULL,
               last_attempt = NULL",
        )
        .bind(tenant)
        .bind(&hook.url)
        .bind(&hook.secret)
        .bind(&hook.events);
        scoped_write(self, tenant, q).await?;
        Ok(())
    }

    async fn get_webhook(&self, tenant: &str) -> Result<Option<Webhook>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(
            "SELECT url, secret, events, last_status, last_error, last_attempt FROM webhooks
             WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Webhook {
            url: row.try_get("url")?,
            secret: row.try_get("secret")?,
            events: row.try_get("events")?,
            last_status: row.try_get("last_status")?,
            last_error: row.try_get("last_error")?,
            last_attempt: row.try_get("last_attempt")?,
        }))
    }

    async fn delete_webhook(&self, tenant: &str) -> Result<bool, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let existed = delete_all_of(&mut tx, "webhooks", tenant).await? > 0;
        sqlx::query("DELETE FROM outbox WHERE tenant_id = $1 AND delivered IS NULL")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(existed)
    }

    async fn enqueue_events(&self, events: &[NewEvent], now: i64) -> Result<(), StoreError> {
        let refs: Vec<&NewEvent> = events.iter().collect();
        let mut tx = self.pool.begin().await?;
        insert_events_in_order(&mut tx, &refs, Some(now)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_events(
        &self,
        now: i64,
        lease: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // How many of the oldest due events each tenant has comes from a SECURITY DEFINER
        // function (ids and counts only); the claim itself runs per tenant under its policy.
        let plan: Vec<(String, i32)> =
            sqlx::query_as("SELECT tenant_id, due FROM chorus_due_tenants($1, $2)")
                .bind(now)
                .bind(i32::try_from(limit).unwrap_or(i32::MAX))
                .fetch_all(&mut *tx)
                .await?;
        // SKIP LOCKED: rows another node is claiming right now are left to it, and this node
        // takes the tenant's next due events instead of waiting; once the other commits,
        // its rows are leased into the future and no longer match.
        let sql = format!(
            "UPDATE outbox SET next_attempt = $1
              WHERE tenant_id = $2 AND id IN (
                    SELECT id FROM outbox
                     WHERE tenant_id = $2 AND delivered IS NULL AND NOT failed
                       AND next_attempt <= $3
                     ORDER BY id LIMIT $4
                       FOR UPDATE SKIP LOCKED)
             RETURNING {OUTBOX_COLUMNS}"
        );
        let mut claimed = Vec::new();
        for (tenant, due) in plan {
            set_tenant(&mut tx, &tenant).await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(now.saturating_add(lease))
                .bind(&tenant)
                .bind(now)
                .bind(i64::from(due))
                .fetch_all(&mut *tx)
                .await?;
            for row in &rows {
                claimed.push(outbox_event(row)?);
            }
        }
        tx.commit().await?;
        claimed.sort_by_key(|e| e.id);
        Ok(claimed)
    }

    async fn record_attempt(
        &self,
        tenant: &str,
        id: i64,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let delivered = attempt.delivered.then_some(attempt.at);
        let gave_up = !attempt.delivered && attempt.retry_at.is_none();
        let done = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_status = $1, last_error = $2,
               delivered = $3, failed = $4, next_attempt = COALESCE($5, next_attempt)
             WHERE tenant_id = $6 AND id = $7 AND delivered IS NULL AND NOT failed",
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
                "UPDATE webhooks SET last_status = $1, last_error = $2, last_attempt = $3
                 WHERE tenant_id = $4",
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
        let mut tx = self.scoped(tenant).await?;
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(outbox_event).collect()
    }

    async fn prune_events(&self, tenant: &str, before: i64) -> Result<u64, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let n = sqlx::query(
            "DELETE FROM outbox WHERE tenant_id = $1 AND created < $2
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
