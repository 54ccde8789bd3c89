-- Append-only update log and one snapshot per room.
-- Rows carry the tenant so the same shape moves to Postgres with row-level security later.
CREATE TABLE IF NOT EXISTS updates (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant  TEXT    NOT NULL,
    room    TEXT    NOT NULL,
    data    BLOB    NOT NULL,
    created INTEGER NOT NULL DEFAULT (unixepoch())
);
CREATE INDEX IF NOT EXISTS updates_by_room ON updates (tenant, room, id);

-- `upto_id` is the highest update id merged into `data`; compaction deletes log rows at or
-- below it in the same transaction that writes the snapshot.
CREATE TABLE IF NOT EXISTS snapshots (
    tenant  TEXT    NOT NULL,
    room    TEXT    NOT NULL,
    upto_id INTEGER NOT NULL,
    data    BLOB    NOT NULL,
    updated INTEGER NOT NULL DEFAULT (unixepoch()),
    PRIMARY KEY (tenant, room)
);
