-- Interlock store, SQLite dialect, migration 6: compute sessions and placements.
-- Conventions as in 0001_initial.sql.

-- One long-lived compute session (a process, a sandbox, a sprite running a
-- self-hosted runtime) per (sandbox, end user, agent key): the agent's slug,
-- or "<provider>/<model>" for runs without a saved agent. Destroyed sessions
-- stay as history, and a failed one until the reaper has destroyed it at its
-- provider; at most one other session exists per key.
CREATE TABLE compute_sessions (
    id               TEXT PRIMARY KEY,                 -- cs_...
    sandbox_id       TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    end_user_id      TEXT NOT NULL,
    agent_key        TEXT NOT NULL,
    runtime          TEXT NOT NULL,                    -- the agent provider, e.g. "hermes"
    provider         TEXT NOT NULL,                    -- the compute provider, e.g. "local"
    external_id      TEXT NOT NULL DEFAULT '',         -- the provider's id once created
    status           TEXT NOT NULL
                     CHECK (status IN ('creating', 'running', 'suspended', 'archived',
                                       'destroyed', 'failed')),
    region           TEXT NOT NULL DEFAULT '',
    endpoint         TEXT NOT NULL DEFAULT '',         -- base URL while running (no tokens)
    spec_fingerprint TEXT NOT NULL,                    -- a changed spec gets a new session
    secrets_sealed   BLOB NOT NULL,                    -- JSON {api_key, mcp_token}
    tags             TEXT NOT NULL DEFAULT '{}',       -- JSON {user_id, sandbox_id, agent_id, run_id}
    active_seconds   REAL NOT NULL DEFAULT 0,          -- billed so far, over all runs
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    last_active_at   INTEGER NOT NULL                  -- the end of its last run (idle timer)
) STRICT;

CREATE UNIQUE INDEX compute_sessions_by_key
    ON compute_sessions (sandbox_id, end_user_id, agent_key)
    WHERE status NOT IN ('destroyed', 'failed');

CREATE INDEX compute_sessions_by_status ON compute_sessions (status, last_active_at);

-- Why each run went where it went (`interlock compute explain <run_id>`).
CREATE TABLE placements (
    run_id             TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    sandbox_id         TEXT NOT NULL,
    compute_session_id TEXT NOT NULL,
    provider           TEXT NOT NULL,
    policy             TEXT NOT NULL,
    reason             TEXT NOT NULL,
    candidates         TEXT NOT NULL DEFAULT '[]',     -- JSON [{provider, verdict, note}]
    ready_seconds      REAL NOT NULL DEFAULT 0,        -- until the runtime answered
    created_at         INTEGER NOT NULL
) STRICT;
