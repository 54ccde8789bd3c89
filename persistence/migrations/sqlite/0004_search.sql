-- Search (docs/SEARCH.md): the indexing queue, each room's indexed chunks with an FTS5 index
-- over their text, the change feed of indexed rooms, and AI use that is not a run (embedding
-- tokens). As every SQLite table, queries name the tenant themselves.

-- A room waiting to be indexed (see the Postgres schema for the columns).
CREATE TABLE search_queue (
    tenant_id  TEXT    NOT NULL,
    room       TEXT    NOT NULL,
    due_ms     INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    leased_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, room)
);
CREATE INDEX search_queue_due ON search_queue (due_ms);

-- The last change number given: it only grows (a MAX over `search_rooms` would fall back when
-- a tenant's rows go, and a follower would then skip the numbers given again).
CREATE TABLE search_seq (n INTEGER NOT NULL);
INSERT INTO search_seq (n) VALUES (0);

-- Change numbers of indexed rooms (one writer at a time: numbers commit in order).
CREATE TABLE search_rooms (
    tenant_id TEXT    NOT NULL,
    room      TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    chunks    INTEGER NOT NULL,
    indexed   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, room)
);
CREATE INDEX search_rooms_seq ON search_rooms (seq);

CREATE TABLE search_chunks (
    id           INTEGER PRIMARY KEY,
    tenant_id    TEXT    NOT NULL,
    room         TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    ord          INTEGER NOT NULL,
    start_offset INTEGER NOT NULL,
    field        TEXT    NOT NULL,
    position     TEXT,
    lines        TEXT,
    body         TEXT    NOT NULL,
    model        TEXT    NOT NULL DEFAULT '',
    embedding    BLOB,
    UNIQUE (tenant_id, room, hash)
);

-- The full-text index over chunk bodies (external content: the text is stored once), kept in
-- step by the triggers below. `porter unicode61`: English stemming over Unicode words,
-- diacritics folded.
CREATE VIRTUAL TABLE search_fts USING fts5(
    body, content = 'search_chunks', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER search_chunks_ai AFTER INSERT ON search_chunks BEGIN
    INSERT INTO search_fts (rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER search_chunks_ad AFTER DELETE ON search_chunks BEGIN
    INSERT INTO search_fts (search_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
CREATE TRIGGER search_chunks_au AFTER UPDATE OF body ON search_chunks BEGIN
    INSERT INTO search_fts (search_fts, rowid, body) VALUES ('delete', old.id, old.body);
    INSERT INTO search_fts (rowid, body) VALUES (new.id, new.body);
END;

CREATE TABLE ai_usage (
    tenant_id TEXT    NOT NULL,
    day       INTEGER NOT NULL,
    tokens    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day)
);
