-- Chorus schema for Postgres: documents, catalog, row-level security.
--
-- Rules for every later migration (docs/OPERATIONS.md, "Database"):
-- * expand-migrate-contract: add nullable or defaulted columns and new tables first, backfill,
--   and drop or tighten only in a later release, once no running binary uses the old shape;
-- * every table carries `tenant_id TEXT NOT NULL` with the `tenant_isolation` policy below,
--   RLS enabled and forced, and grants to chorus_app;
-- * RLS is forced on the owner too: a backfill run by a non-superuser owner sees no rows
--   unless it sets `chorus.tenant_id` per tenant or brackets the statement with
--   `ALTER TABLE ... NO FORCE ROW LEVEL SECURITY` / `FORCE ROW LEVEL SECURITY`.

-- Roles are cluster-wide, databases are not: create them once, tolerate an existing one (and
-- a concurrent migration of another database creating it at the same moment).
--   chorus_app:     what the hub's queries run as (`SET ROLE chorus_app` on every pooled
--                   connection); row-level security applies to it.
--   chorus_definer: owns the few cross-tenant SECURITY DEFINER functions; can read only the
--                   columns those functions return. Nobody logs in as either.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'chorus_app') THEN
        CREATE ROLE chorus_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'chorus_definer') THEN
        CREATE ROLE chorus_definer NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- `chorus_epoch()`: now() in whole seconds, the unit of every time column.
CREATE FUNCTION chorus_epoch() RETURNS BIGINT
    LANGUAGE sql STABLE
    AS $$ SELECT floor(extract(epoch FROM now()))::bigint $$;

CREATE TABLE tenants (
    tenant_id TEXT   PRIMARY KEY CHECK (tenant_id <> ''),
    name      TEXT   NOT NULL,
    settings  JSONB  NOT NULL DEFAULT '{}'::jsonb,
    created   BIGINT NOT NULL
);

-- `seq` orders "oldest first" listings within one second.
CREATE TABLE signing_keys (
    tenant_id TEXT   NOT NULL CHECK (tenant_id <> ''),
    kid       TEXT   NOT NULL,
    seq       BIGINT GENERATED ALWAYS AS IDENTITY,
    alg       TEXT   NOT NULL,
    material  TEXT   NOT NULL,
    created   BIGINT NOT NULL,
    revoked   BIGINT,
    PRIMARY KEY (tenant_id, kid)
);

CREATE TABLE api_keys (
    tenant_id TEXT   NOT NULL CHECK (tenant_id <> ''),
    key_id    TEXT   NOT NULL,
    seq       BIGINT GENERATED ALWAYS AS IDENTITY,
    hash      TEXT   NOT NULL,
    name      TEXT   NOT NULL,
    created   BIGINT NOT NULL,
    revoked   BIGINT,
    PRIMARY KEY (tenant_id, key_id)
);

CREATE TABLE rooms (
    tenant_id TEXT   NOT NULL CHECK (tenant_id <> ''),
    room      TEXT   NOT NULL,
    meta      JSONB  NOT NULL DEFAULT '{}'::jsonb,
    created   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, room)
);

-- The update log. Appends of one room are serialised (advisory lock, see chorus_lock_rooms),
-- so within a room ids are committed in order and a compaction's marker never skips a row
-- that commits later.
CREATE TABLE updates (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT   NOT NULL CHECK (tenant_id <> ''),
    room      TEXT   NOT NULL,
    data      BYTEA  NOT NULL,
    created   BIGINT NOT NULL DEFAULT chorus_epoch()
);
CREATE INDEX updates_by_room ON updates (tenant_id, room, id);

-- `upto_id`: highest update id merged into `data`.
CREATE TABLE snapshots (
    tenant_id TEXT   NOT NULL CHECK (tenant_id <> ''),
    room      TEXT   NOT NULL,
    upto_id   BIGINT NOT NULL,
    data      BYTEA  NOT NULL,
    updated   BIGINT NOT NULL DEFAULT chorus_epoch(),
    PRIMARY KEY (tenant_id, room)
);

CREATE TABLE versions (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT   NOT NULL CHECK (tenant_id <> ''),
    room      TEXT   NOT NULL,
    name      TEXT   NOT NULL,
    created   BIGINT NOT NULL,
    state     BYTEA  NOT NULL
);
CREATE INDEX versions_by_room ON versions (tenant_id, room, id);

CREATE TABLE webhooks (
    tenant_id    TEXT   PRIMARY KEY CHECK (tenant_id <> ''),
    url          TEXT   NOT NULL,
    secret       TEXT   NOT NULL,
    events       TEXT[] NOT NULL DEFAULT '{}',
    last_status  INT,
    last_error   TEXT,
    last_attempt BIGINT
);

CREATE TABLE outbox (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    TEXT    NOT NULL CHECK (tenant_id <> ''),
    event        TEXT    NOT NULL,
    body         JSONB   NOT NULL,
    created      BIGINT  NOT NULL DEFAULT chorus_epoch(),
    attempts     INT     NOT NULL DEFAULT 0,
    next_attempt BIGINT  NOT NULL DEFAULT chorus_epoch(),
    delivered    BIGINT,
    failed       BOOLEAN NOT NULL DEFAULT false,
    last_status  INT,
    last_error   TEXT
);
-- The claim scans only pending rows, in due order.
CREATE INDEX outbox_due ON outbox (next_attempt, id) WHERE delivered IS NULL AND NOT failed;
CREATE INDEX outbox_pending_by_tenant ON outbox (tenant_id, id)
    WHERE delivered IS NULL AND NOT failed;
CREATE INDEX outbox_by_tenant ON outbox (tenant_id, id);

-- Row-level security: a row is visible and writable only in a transaction that set
-- `chorus.tenant_id` to its tenant (`SELECT set_config('chorus.tenant_id', $1, true)`).
-- Without the setting, current_setting(..., true) is NULL (or '' on a connection that set it
-- in an earlier transaction; the CHECKs above keep '' from matching a row), so nothing is seen.
-- FORCE applies the policies to the table owner as well; superusers still bypass them.
DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'signing_keys', 'api_keys', 'rooms', 'updates',
                             'snapshots', 'versions', 'webhooks', 'outbox']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''chorus.tenant_id'', true))
                 WITH CHECK (tenant_id = current_setting(''chorus.tenant_id'', true))', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO chorus_app', t);
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA public TO chorus_app;
GRANT USAGE ON SEQUENCE signing_keys_seq_seq, api_keys_seq_seq, updates_id_seq, versions_id_seq,
    outbox_id_seq TO chorus_app;

-- Serialises appends per room across hub nodes (each node persists its own clients' updates):
-- without it, node A could take id 10, node B id 11 and commit first, a compaction could
-- snapshot up to 11 and trim, and A's row 10 would commit below the marker, never loaded again.
-- Takes one transaction-scoped advisory lock per distinct room key (`tenant/room`) in hash
-- order, so two group commits never wait on each other in opposite orders. Hash collisions
-- only serialise two unrelated rooms. Runs as the caller.
CREATE FUNCTION chorus_lock_rooms(room_keys TEXT[]) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k INT;
BEGIN
    FOR k IN SELECT DISTINCT hashtext(r) FROM unnest(room_keys) AS r ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(1130916978, k); -- 1130916978 = 'Chor' in ASCII
    END LOOP;
END
$$;

-- Cross-tenant reads, without a role that bypasses RLS. Each function runs as chorus_definer,
-- which may read only the columns it returns and only through the `definer_reads` policies,
-- and returns tenant ids, nothing else; the caller then works per tenant under RLS.
GRANT SELECT (tenant_id) ON tenants TO chorus_definer;
GRANT SELECT (id, tenant_id, next_attempt, delivered, failed) ON outbox TO chorus_definer;
-- `current_user` is chorus_definer only inside its SECURITY DEFINER functions: members of the
-- role (the schema owner) reading the tables directly still see nothing.
CREATE POLICY definer_reads ON tenants FOR SELECT TO chorus_definer
    USING (current_user = 'chorus_definer');
CREATE POLICY definer_reads ON outbox FOR SELECT TO chorus_definer
    USING (current_user = 'chorus_definer');

-- Every tenant id, for the operator's tenant listing.
CREATE FUNCTION chorus_tenant_ids() RETURNS SETOF TEXT
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT t.tenant_id FROM public.tenants t ORDER BY t.tenant_id $$;

-- The outbox claim's plan: of the `max_events` oldest events due at `due_at`, how many each
-- tenant has, the tenant with the oldest first. The caller claims that many of each tenant's
-- oldest due events under the tenant's policy, so the claim is oldest first across tenants
-- (a burst of one tenant does not starve the others' older events).
CREATE FUNCTION chorus_due_tenants(due_at BIGINT, max_events INT)
    RETURNS TABLE (tenant_id TEXT, due INT)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT d.tenant_id, count(*)::int FROM (
            SELECT o.tenant_id, o.id FROM public.outbox o
             WHERE o.delivered IS NULL AND NOT o.failed AND o.next_attempt <= due_at
             ORDER BY o.id
             LIMIT max_events
        ) d
        GROUP BY d.tenant_id
        ORDER BY min(d.id)
    $$;

REVOKE ALL ON FUNCTION chorus_tenant_ids(), chorus_due_tenants(BIGINT, INT),
    chorus_lock_rooms(TEXT[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chorus_tenant_ids(), chorus_due_tenants(BIGINT, INT),
    chorus_lock_rooms(TEXT[]) TO chorus_app;

-- Hand the definer functions to chorus_definer. Changing a function's owner needs the new
-- owner to hold CREATE on the schema: granted for these two statements only. A non-superuser
-- migrating role must be a member of chorus_definer (docs/OPERATIONS.md, role setup).
GRANT USAGE, CREATE ON SCHEMA public TO chorus_definer;
ALTER FUNCTION chorus_tenant_ids() OWNER TO chorus_definer;
ALTER FUNCTION chorus_due_tenants(BIGINT, INT) OWNER TO chorus_definer;
REVOKE CREATE ON SCHEMA public FROM chorus_definer;
