-- The catalog (tenants, keys, room records, versions, webhooks, outbox) and the Postgres column
-- name `tenant_id` for the document tables, so both stores share one vocabulary.
--
-- SQLite has no row-level security: every query of the store filters by tenant_id itself.
-- The rename is safe here (one embedded process opens the file, never an older binary at the
-- same time); the Postgres schema only ever adds columns first (expand-migrate-contract).
ALTER TABLE updates RENAME COLUMN tenant TO tenant_id;
ALTER TABLE snapshots RENAME COLUMN tenant TO tenant_id;

CREATE TABLE tenants (
    tenant_id TEXT    PRIMARY KEY,
    name      TEXT    NOT NULL,
    settings  TEXT    NOT NULL DEFAULT '{}', -- JSON object
    created   INTEGER NOT NULL
);

-- "Oldest first" listings order by (created, rowid): rowid keeps insertion order within a second.
CREATE TABLE signing_keys (
    tenant_id TEXT    NOT NULL,
    kid       TEXT    NOT NULL,
    alg       TEXT    NOT NULL,
    material  TEXT    NOT NULL,
    created   INTEGER NOT NULL,
    revoked   INTEGER,
    PRIMARY KEY (tenant_id, kid)
);

CREATE TABLE api_keys (
    tenant_id TEXT    NOT NULL,
    key_id    TEXT    NOT NULL,
    hash      TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    created   INTEGER NOT NULL,
    revoked   INTEGER,
    PRIMARY KEY (tenant_id, key_id)
);

CREATE TABLE rooms (
    tenant_id TEXT    NOT NULL,
    room      TEXT    NOT NULL,
    meta      TEXT    NOT NULL DEFAULT '{}', -- JSON object
    created   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, room)
);

CREATE TABLE versions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT    NOT NULL,
    room      TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    created   INTEGER NOT NULL,
    state     BLOB    NOT NULL
);
CREATE INDEX versions_by_room ON versions (tenant_id, room, id);

CREATE TABLE webhooks (
    tenant_id    TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,
    events       TEXT NOT NULL DEFAULT '[]', -- JSON array of event names
    last_status  INTEGER,
    last_error   TEXT,
    last_attempt INTEGER
);

-- AUTOINCREMENT: a delivery id is never reused, even after the newest row is deleted, so a
-- receiver can deduplicate on it.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    body         TEXT    NOT NULL, -- JSON
    created      INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    delivered    INTEGER,
    failed       INTEGER NOT NULL DEFAULT 0,
    last_status  INTEGER,
    last_error   TEXT
);
-- The claim scans only pending rows, in due order.
CREATE INDEX outbox_due ON outbox (next_attempt, id) WHERE delivered IS NULL AND failed = 0;
CREATE INDEX outbox_by_tenant ON outbox (tenant_id, id);
