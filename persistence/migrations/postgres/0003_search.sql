-- Search (docs/SEARCH.md): the indexing queue, each room's indexed chunks with their full-text
-- vector and embedding, the change feed every node follows for its vector index, and AI use
-- that is not a run (embedding tokens). Row-level security, forced, as every tenant table
-- (0001_initial.sql).

-- A room waiting to be indexed. `due_ms`: when it may be claimed (milliseconds since the
-- epoch). `leased_until`: a claim's lease (edits never move it). `generation` counts changes
-- and only grows: the indexer deletes the row only if it is unchanged since its claim.
CREATE TABLE search_queue (
    tenant_id    TEXT   NOT NULL CHECK (tenant_id <> ''),
    room         TEXT   NOT NULL,
    due_ms       BIGINT NOT NULL,
    generation   BIGINT NOT NULL DEFAULT 0,
    leased_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, room)
);
CREATE INDEX search_queue_due ON search_queue (due_ms);

-- Change numbers of indexed rooms, in commit order: writers take a transaction-scoped advisory
-- lock before `nextval`, so a number is never committed after a higher one (a node following
-- the feed never skips one). A deleted room keeps its row, with `chunks` 0, as a tombstone.
CREATE SEQUENCE search_change_seq;
CREATE TABLE search_rooms (
    tenant_id TEXT    NOT NULL CHECK (tenant_id <> ''),
    room      TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,
    chunks    INT     NOT NULL,
    indexed   BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, room)
);
CREATE INDEX search_rooms_seq ON search_rooms (seq);

-- One chunk of a room's plain text. `hash`: hex of its content hash (the key). `position`: a
-- Yjs relative position of its start; `lines`: its lines' offsets and positions (JSON). `tsv` is
-- generated with the tenant's text search configuration (`lang`); `embedding`: little-endian
-- float4s of the model in `model` (empty without one).
CREATE TABLE search_chunks (
    tenant_id    TEXT      NOT NULL CHECK (tenant_id <> ''),
    room         TEXT      NOT NULL,
    hash         TEXT      NOT NULL,
    ord          INT       NOT NULL,
    start_offset BIGINT    NOT NULL,
    field        TEXT      NOT NULL,
    position     TEXT,
    lines        TEXT,
    body         TEXT      NOT NULL,
    lang         REGCONFIG NOT NULL DEFAULT 'simple',
    tsv          TSVECTOR  GENERATED ALWAYS AS (to_tsvector(lang, body)) STORED,
    model        TEXT      NOT NULL DEFAULT '',
    embedding    BYTEA,
    PRIMARY KEY (tenant_id, room, hash)
);
CREATE INDEX search_chunks_tsv ON search_chunks USING GIN (tsv);

-- Tokens of AI use outside runs, per tenant and UTC day (seconds of the day's start).
CREATE TABLE ai_usage (
    tenant_id TEXT   NOT NULL CHECK (tenant_id <> ''),
    day       BIGINT NOT NULL,
    tokens    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, day)
);

ALTER TABLE search_queue ENABLE ROW LEVEL SECURITY;
ALTER TABLE search_queue FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON search_queue
    USING (tenant_id = current_setting('chorus.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('chorus.tenant_id', true));
ALTER TABLE search_rooms ENABLE ROW LEVEL SECURITY;
ALTER TABLE search_rooms FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON search_rooms
    USING (tenant_id = current_setting('chorus.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('chorus.tenant_id', true));
ALTER TABLE search_chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE search_chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON search_chunks
    USING (tenant_id = current_setting('chorus.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('chorus.tenant_id', true));
ALTER TABLE ai_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE ai_usage FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ai_usage
    USING (tenant_id = current_setting('chorus.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('chorus.tenant_id', true));
GRANT SELECT, INSERT, UPDATE, DELETE ON search_queue, search_rooms, search_chunks, ai_usage
    TO chorus_app;
GRANT USAGE ON SEQUENCE search_change_seq TO chorus_app;

-- The cross-tenant reads of search, ids and numbers only (as chorus_due_tenants):
--   chorus_search_due: of the `max_rows` rooms due first at `due_at`, tenant and room; the
--     caller claims each under its tenant's policy.
--   chorus_search_changes: rooms whose change number is above `after`, in order.
--   chorus_search_depth: rows queued, and how many are due at `due_at`.
--   chorus_search_last_change: the last change number given (the sequence's: it never falls
--     back, even when the rows holding the highest go with their tenant).
CREATE FUNCTION chorus_search_due(due_at BIGINT, max_rows INT)
    RETURNS TABLE (tenant_id TEXT, room TEXT)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT q.tenant_id, q.room FROM public.search_queue q
         WHERE q.due_ms <= due_at AND q.leased_until <= due_at ORDER BY q.due_ms LIMIT max_rows
    $$;
CREATE FUNCTION chorus_search_changes(after BIGINT, max_rows INT)
    RETURNS TABLE (tenant_id TEXT, room TEXT, seq BIGINT)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT r.tenant_id, r.room, r.seq FROM public.search_rooms r
         WHERE r.seq > after ORDER BY r.seq LIMIT max_rows
    $$;
CREATE FUNCTION chorus_search_depth(due_at BIGINT)
    RETURNS TABLE (queued BIGINT, due BIGINT)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT count(*)::bigint, count(*) FILTER (WHERE q.due_ms <= due_at)::bigint
          FROM public.search_queue q
    $$;
CREATE FUNCTION chorus_search_last_change()
    RETURNS BIGINT
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END FROM public.search_change_seq s $$;

GRANT SELECT (tenant_id, room, due_ms, leased_until) ON search_queue TO chorus_definer;
GRANT SELECT (tenant_id, room, seq) ON search_rooms TO chorus_definer;
GRANT SELECT ON SEQUENCE search_change_seq TO chorus_definer;
CREATE POLICY definer_reads ON search_queue FOR SELECT TO chorus_definer
    USING (current_user = 'chorus_definer');
CREATE POLICY definer_reads ON search_rooms FOR SELECT TO chorus_definer
    USING (current_user = 'chorus_definer');

-- The backfill: every room with a stored document (of one tenant, or all) into the queue, in
-- one statement. The definer reads only the rooms' ids and may only add queue rows.
GRANT SELECT (tenant_id, room) ON updates, snapshots TO chorus_definer;
GRANT INSERT ON search_queue TO chorus_definer;
CREATE POLICY definer_reads ON updates FOR SELECT TO chorus_definer
    USING (current_user = 'chorus_definer');
CREATE POLICY definer_reads ON snapshots FOR SELECT TO chorus_definer
    USING (current_user = 'chorus_definer');
CREATE POLICY definer_queues ON search_queue FOR INSERT TO chorus_definer
    WITH CHECK (current_user = 'chorus_definer');
CREATE FUNCTION chorus_search_backfill(due_at BIGINT, only_tenant TEXT)
    RETURNS BIGINT
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        WITH queued AS (
            INSERT INTO public.search_queue (tenant_id, room, due_ms)
            SELECT DISTINCT r.tenant_id, r.room, due_at FROM (
                SELECT u.tenant_id, u.room FROM public.updates u
                UNION SELECT s.tenant_id, s.room FROM public.snapshots s) r
             WHERE only_tenant IS NULL OR r.tenant_id = only_tenant
            ON CONFLICT (tenant_id, room) DO NOTHING
            RETURNING 1)
        SELECT count(*)::bigint FROM queued
    $$;

REVOKE ALL ON FUNCTION chorus_search_due(BIGINT, INT), chorus_search_changes(BIGINT, INT),
    chorus_search_depth(BIGINT), chorus_search_last_change(), chorus_search_backfill(BIGINT, TEXT)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chorus_search_due(BIGINT, INT), chorus_search_changes(BIGINT, INT),
    chorus_search_depth(BIGINT), chorus_search_last_change(), chorus_search_backfill(BIGINT, TEXT)
    TO chorus_app;

GRANT USAGE, CREATE ON SCHEMA public TO chorus_definer;
ALTER FUNCTION chorus_search_due(BIGINT, INT) OWNER TO chorus_definer;
ALTER FUNCTION chorus_search_changes(BIGINT, INT) OWNER TO chorus_definer;
ALTER FUNCTION chorus_search_depth(BIGINT) OWNER TO chorus_definer;
ALTER FUNCTION chorus_search_last_change() OWNER TO chorus_definer;
ALTER FUNCTION chorus_search_backfill(BIGINT, TEXT) OWNER TO chorus_definer;
REVOKE CREATE ON SCHEMA public FROM chorus_definer;
