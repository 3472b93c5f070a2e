-- Interlock store, SQLite dialect, migration 10: run leases and run-scoped
-- tool grants, so several processes can share the store. Conventions as in
-- 0001_initial.sql.
--
-- A running run is held by the process running it (lease_owner, an id the
-- process makes at start) until lease_expires_at; the process renews its
-- leases while it lives. A run whose lease has expired is marked interrupted
-- by whichever process notices. Runs begun without a lease (owner '') are
-- never swept that way.

ALTER TABLE runs ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';

ALTER TABLE runs ADD COLUMN lease_expires_at INTEGER;

CREATE INDEX runs_leases ON runs (lease_expires_at) WHERE status = 'running';

-- Bearer tokens a run hands to runtimes that call its tools from outside
-- (the MCP endpoint, a hosted agent's dispatch callback). Only the token's
-- SHA-256 is kept; what it opens (the run's end user, conversation and tool
-- names) is sealed. Any process sharing the store accepts the token until
-- it expires or the run ends (the row is deleted).
CREATE TABLE tool_grants (
    token_hash   TEXT PRIMARY KEY,
    sandbox_id   TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    run_id       TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('mcp', 'dispatch')),
    scope_sealed BLOB NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX tool_grants_by_run ON tool_grants (run_id);

CREATE INDEX tool_grants_by_expiry ON tool_grants (expires_at);
