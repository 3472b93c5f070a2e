-- Interlock store, SQLite dialect, migration 3: integrations (data sources of
-- a sandbox: OAuth app connections, MCP servers, custom sources), the OAuth
-- connect flows that create them, and the source of each window entry.
-- Conventions as in 0001_initial.sql.

-- One connected integration, for the whole sandbox (end_user_id = '') or for
-- one end user. config (account login, URLs, scopes) and credentials (tokens,
-- headers) are both sealed, bound to the row "<id>". At most one live
-- (active or broken) connection per (sandbox, app, end user); disconnected
-- rows are archived, not deleted.
CREATE TABLE integrations (
    id                 TEXT PRIMARY KEY,
    sandbox_id         TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    kind               TEXT NOT NULL CHECK (kind IN ('oauth', 'mcp', 'custom')),
    app                TEXT NOT NULL CHECK (length(app) BETWEEN 1 AND 64),
    end_user_id        TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('active', 'broken', 'disconnected')),
    status_reason      TEXT NOT NULL,
    config_sealed      BLOB NOT NULL,
    credentials_sealed BLOB NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    last_used_at       INTEGER
) STRICT;

CREATE UNIQUE INDEX integrations_live
    ON integrations (sandbox_id, app, end_user_id) WHERE status <> 'disconnected';

CREATE INDEX integrations_by_user ON integrations (sandbox_id, end_user_id, status);

-- An OAuth connect flow: pending until the callback completes it (connected),
-- fails it, or it expires. Only a hash of the state travels back to us; the
-- PKCE verifier is sealed, bound to the row "<id>".
CREATE TABLE connect_flows (
    id              TEXT PRIMARY KEY,
    sandbox_id      TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    app             TEXT NOT NULL,
    end_user_id     TEXT NOT NULL,
    for_end_user    INTEGER NOT NULL CHECK (for_end_user IN (0, 1)),
    state_hash      TEXT NOT NULL UNIQUE,
    verifier_sealed BLOB NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'connected', 'failed', 'expired')),
    reason          TEXT NOT NULL,
    integration_id  TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    finished_at     INTEGER
) STRICT;

-- Which data source an entry came from (a tool result of an integration's
-- tool carries its integration id; '' for everything else).
ALTER TABLE entries ADD COLUMN source_id TEXT NOT NULL DEFAULT '';
