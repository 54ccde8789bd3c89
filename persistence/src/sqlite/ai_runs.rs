//! [`AiRuns`] on SQLite: every statement names its tenant.

use async_trait::async_trait;
use sqlx::Row;

use super::SqliteStore;
use crate::ai_runs::{COLUMNS, from_row, int};
use crate::{AiRun, AiRunFilter, AiRunUpdate, AiRuns, StoreError};

#[async_trait]
impl AiRuns for SqliteStore {
    async fn insert_ai_run(&self, r: &AiRun) -> Result<Option<AiRun>, StoreError> {
        let mut tx = self.write_tx().await?;
        if let Some(key) = &r.idempotency_key {
            let sql = format!(
                "SELECT {COLUMNS} FROM ai_runs WHERE tenant_id = ? AND user_id = ? \
                 AND idempotency_key = ?"
            );
            let existing = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&r.tenant)
                .bind(&r.user)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = existing {
                return Ok(Some(from_row(&row)?));
            }
        }
        let sql = format!(
            "INSERT INTO ai_runs ({COLUMNS}) VALUES \
             (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
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
            .await?;
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
        let done = sqlx::query(
            "UPDATE ai_runs SET status = ?,
                 prompt_tokens = COALESCE(?, prompt_tokens),
                 completion_tokens = COALESCE(?, completion_tokens),
                 ttft_ms = COALESCE(?, ttft_ms), duration_ms = COALESCE(?, duration_ms),
                 error = COALESCE(?, error), finished = COALESCE(?, finished)
             WHERE tenant_id = ? AND id = ?",
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
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_ai_run(&self, tenant: &str, id: &str) -> Result<Option<AiRun>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM ai_runs WHERE tenant_id = ? AND id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| from_row(&r)).transpose()
    }

    async fn list_ai_runs(&self, tenant: &str, f: &AiRunFilter) -> Result<Vec<AiRun>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM ai_runs WHERE tenant_id = ?
               AND (? IS NULL OR room = ?) AND (? IS NULL OR user_id = ?)
               AND (? IS NULL OR status = ?) AND (? IS NULL OR created < ?)
             ORDER BY created DESC, rowid DESC LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(&f.room)
            .bind(&f.room)
            .bind(&f.user)
            .bind(&f.user)
            .bind(&f.status)
            .bind(&f.status)
            .bind(f.before)
            .bind(f.before)
            .bind(i64::from(f.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    async fn interrupt_ai_runs(
        &self,
        tenant: &str,
        node: &str,
        at: i64,
    ) -> Result<Vec<AiRun>, StoreError> {
        let mut tx = self.write_tx().await?;
        let sql = format!(
            "UPDATE ai_runs SET status = 'interrupted', error = 'interrupted', finished = ?
             WHERE tenant_id = ? AND node = ? AND status IN ('queued', 'running')
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
        let row = sqlx::query(
            "SELECT COALESCE((SELECT sum(prompt_tokens + completion_tokens) FROM ai_runs
                               WHERE tenant_id = ?1 AND created >= ?2), 0)
                  + COALESCE((SELECT sum(tokens) FROM ai_usage
                               WHERE tenant_id = ?1 AND day >= ?2 - 86399), 0) AS n",
        )
        .bind(tenant)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }
}
