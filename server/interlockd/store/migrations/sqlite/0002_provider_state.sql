-- Interlock store, SQLite dialect, migration 2: state kept for managed-agent
-- providers (their sessions per conversation, the resources created at them)
-- and the sandbox's own secrets. Conventions as in 0001_initial.sql.

-- A managed runtime's own session per (conversation, provider). The session
-- id leads to conversation content at the provider, so it is sealed, bound
-- to the row "<conversation_id>/<provider>". through_seq: the last entry seq
-- the session has seen. sandbox_id is copied from the conversation so every
-- query is scoped by it; the rows go with the conversation.
CREATE TABLE provider_sessions (
    conversation_id   TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sandbox_id        TEXT NOT NULL,
    provider          TEXT NOT NULL,
    session_id_sealed BLOB NOT NULL,
    through_seq       INTEGER NOT NULL CHECK (through_seq >= 0),
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, provider)
) STRICT;

-- Resources (agents, environments) created at a provider for a sandbox,
-- keyed by what they were created from (fingerprint). The first id stored
-- for a key wins; concurrent creators adopt it.
CREATE TABLE provider_resources (
    sandbox_id  TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, provider, kind, fingerprint)
) STRICT;

-- The sandbox's own secrets (e.g. its provider API key), sealed, bound to
-- the row name.
CREATE TABLE sandbox_secrets (
    sandbox_id   TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    value_sealed BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, name)
) STRICT;
