-- A record of every AI run: who asked, where it wrote, what it cost, how it ended.
-- Times are seconds since the epoch; durations milliseconds.
CREATE TABLE ai_runs (
    tenant_id         TEXT    NOT NULL,
    id                TEXT    NOT NULL,
    room              TEXT    NOT NULL,
    user_id           TEXT    NOT NULL DEFAULT '',
    provider          TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    target            TEXT    NOT NULL,
    mode              TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    client_id         INTEGER NOT NULL,
    node              TEXT    NOT NULL,
    idempotency_key   TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    ttft_ms           INTEGER,
    duration_ms       INTEGER,
    error             TEXT,
    created           INTEGER NOT NULL,
    finished          INTEGER,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX ai_runs_idempotency ON ai_runs (tenant_id, user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX ai_runs_created ON ai_runs (tenant_id, created);
CREATE INDEX ai_runs_status ON ai_runs (status);
