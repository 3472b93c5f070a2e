-- Interlock store, SQLite dialect, migration 5: saved agents ("the agent row").
-- Conventions as in 0001_initial.sql.

-- A named bundle of what a run needs (provider, model, system prompt, tool
-- allow-list, model and compute settings), run by slug. The settings are one
-- sealed JSON document bound to the row "<slug>" (system prompts are often
-- proprietary).
CREATE TABLE agents (
    sandbox_id      TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    slug            TEXT NOT NULL CHECK (length(slug) BETWEEN 1 AND 64),
    settings_sealed BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, slug)
) STRICT;
