-- Interlock store, PostgreSQL dialect, migration 2: run leases and run-scoped
-- tool grants (see the SQLite dialect's migration 10 for what they are).
-- Conventions as in 0001_initial.sql.

-- The shared SQL casts a bytes parameter whose type PostgreSQL cannot infer
-- with CAST(x AS BLOB), which SQLite reads as its own BLOB type.
CREATE DOMAIN blob AS BYTEA;

ALTER TABLE runs ADD COLUMN lease_owner TEXT COLLATE "C" NOT NULL DEFAULT '';

ALTER TABLE runs ADD COLUMN lease_expires_at BIGINT;

CREATE INDEX runs_leases ON runs (lease_expires_at) WHERE status = 'running';

CREATE TABLE tool_grants (
    token_hash   TEXT COLLATE "C" PRIMARY KEY,
    sandbox_id   TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    run_id       TEXT COLLATE "C" NOT NULL,
    kind         TEXT COLLATE "C" NOT NULL CHECK (kind IN ('mcp', 'dispatch')),
    scope_sealed BYTEA NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE INDEX tool_grants_by_run ON tool_grants (run_id);

CREATE INDEX tool_grants_by_expiry ON tool_grants (expires_at);
