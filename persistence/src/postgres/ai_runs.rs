//! [`AiRuns`] on Postgres: every statement runs in a transaction confined to its tenant
//! (row-level security, forced).

use async_trait::async_trait;
use sqlx::Row;

use super::PostgresStore;
use crate::ai_runs::{COLUMNS, from_row, int};
use crate::{AiRun, AiRunFilter, AiRunUpdate, AiRuns, StoreError};

#[async_trait]
impl AiRuns for PostgresStore {
    async fn insert_ai_run(&self, r: &AiRun) -> Result<Option<AiRun>, StoreError> {
        let mut tx = self.scoped(&r.tenant).await?;
        let sql = format!(
            "INSERT INTO ai_runs ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
             ON CONFLICT (tenant_id, user_id, idempotency_key)
                 WHERE idempotency_key IS NOT NULL DO NOTHING"
        );
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&r.tenant)
            .bind(&r.id)
            .bind(&r.room)
            .bind(&r.user)
            .bind(&r.provider)
            .bind(&r.model)
            .bind(&r.target)
            .bind(&r.mode)
            .bind(&r.status)
            .bind(int(r.client_id))
            .bind(&r.node)
            .bind(&r.idempotency_key)
            .bind(int(r.prompt_tokens))
            .bind(int(r.completion_tokens))
            .bind(r.ttft_ms.map(int))
            .bind(r.duration_ms.map(int))
            .bind(&r.error)
            .bind(r.created)
            .bind(r.finished)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0
            && let Some(key) = &r.idempotency_key
        {
            let sql = format!(
                "SELECT {COLUMNS} FROM ai_runs WHERE tenant_id = $1 AND user_id = $2 \
                 AND idempotency_key = $3"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&r.tenant)
                .bind(&r.user)
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Some(from_row(&row)?));
        }
        tx.commit().await?;
        Ok(None)
    }

    async fn update_ai_run(
        &self,
        tenant: &str,
        id: &str,
        u: &AiRunUpdate,
    ) -> Result<bool, StoreError> {
        let (prompt, completion) = u.tokens.map_or((None, None), |(p, c)| (Some(p), Some(c)));
        let mut tx = self.scoped(tenant).await?;
        let done = sqlx::query(
            "UPDATE ai_runs SET status = $1,
                 prompt_tokens = COALESCE($2, prompt_tokens),
                 completion_tokens = COALESCE($3, completion_tokens),
                 ttft_ms = COALESCE($4, ttft_ms), duration_ms = COALESCE($5, duration_ms),
                 error = COALESCE($6, error), finished = COALESCE($7, finished)
             WHERE tenant_id = $8 AND id = $9",
        )
        .bind(&u.status)
        .bind(prompt.map(int))
        .bind(completion.map(int))
        .bind(u.ttft_ms.map(int))
        .bind(u.duration_ms.map(int))
        .bind(&u.error)
        .bind(u.finished)
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_ai_run(&self, tenant: &str, id: &str) -> Result<Option<AiRun>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let sql = format!("SELECT {COLUMNS} FROM ai_runs WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.map(|r| from_row(&r)).transpose()
    }

    async fn list_ai_runs(&self, tenant: &str, f: &AiRunFilter) -> Result<Vec<AiRun>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM ai_runs WHERE tenant_id = $1
               AND ($2::text IS NULL OR room = $2) AND ($3::text IS NULL OR user_id = $3)
               AND ($4::text IS NULL OR status = $4) AND ($5::bigint IS NULL OR created < $5)
             ORDER BY created DESC, id DESC LIMIT $6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(&f.room)
            .bind(&f.user)
            .bind(&f.status)
            .bind(f.before)
            .bind(i64::from(f.limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(from_row).collect()
    }

    async fn interrupt_ai_runs(
        &self,
        tenant: &str,
        node: &str,
        at: i64,
    ) -> Result<Vec<AiRun>, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let sql = format!(
            "UPDATE ai_runs SET status = 'interrupted', error = 'interrupted', finished = $1
             WHERE tenant_id = $2 AND node = $3 AND status IN ('queued', 'running')
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(at)
            .bind(tenant)
            .bind(node)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(from_row).collect()
    }

    async fn ai_tokens_since(&self, tenant: &str, since: i64) -> Result<u64, StoreError> {
        let mut tx = self.scoped(tenant).await?;
        let row = sqlx::query(
            "SELECT (COALESCE((SELECT sum(prompt_tokens + completion_tokens) FROM ai_runs
                                WHERE tenant_id = $1 AND created >= $2), 0)
                   + COALESCE((SELECT sum(tokens) FROM ai_usage
                                WHERE tenant_id = $1 AND day >= $2 - 86399), 0))::bigint AS n",
        )
        .bind(tenant)
        .bind(since)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }
}
