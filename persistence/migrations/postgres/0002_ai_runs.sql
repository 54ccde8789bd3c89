-- A record of every AI run: who asked, where it wrote, what it cost, how it ended.
-- Times are seconds since the epoch; durations milliseconds. Row-level security, forced, as
-- every tenant table (0001_initial.sql).
CREATE TABLE ai_runs (
    tenant_id         TEXT    NOT NULL CHECK (tenant_id <> ''),
    id                TEXT    NOT NULL,
    room              TEXT    NOT NULL,
    user_id           TEXT    NOT NULL DEFAULT '',
    provider          TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    target            TEXT    NOT NULL,
    mode              TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    client_id         BIGINT  NOT NULL,
    node              TEXT    NOT NULL,
    idempotency_key   TEXT,
    prompt_tokens     BIGINT  NOT NULL DEFAULT 0,
    completion_tokens BIGINT  NOT NULL DEFAULT 0,
    ttft_ms           BIGINT,
    duration_ms       BIGINT,
    error             TEXT,
    created           BIGINT  NOT NULL,
    finished          BIGINT,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX ai_runs_idempotency ON ai_runs (tenant_id, user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX ai_runs_created ON ai_runs (tenant_id, created);

ALTER TABLE ai_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ai_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ai_runs
    USING (tenant_id = current_setting('chorus.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('chorus.tenant_id', true));
GRANT SELECT, INSERT, UPDATE, DELETE ON ai_runs TO chorus_app;
