-- Interlock store, SQLite dialect, migration 4: kill switches. Conventions as
-- in 0001_initial.sql.

-- A pause refuses new runs in its scope and ends the ones in flight:
--   global           every run of the daemon (sandbox_id '', target '')
--   end_user         one end user of one sandbox (target = end user id)
--   agent_provider   runs on one provider ("anthropic"), of one sandbox or all (sandbox_id '')
--   compute_provider runs placed on one compute provider ("daytona"), idem
-- The operator sets global and cross-sandbox pauses; a sandbox key only its own.
CREATE TABLE pauses (
    scope      TEXT NOT NULL
               CHECK (scope IN ('global', 'end_user', 'agent_provider', 'compute_provider')),
    sandbox_id TEXT NOT NULL,
    target     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, sandbox_id, target)
) STRICT;

-- Compute cost rows (kind 'compute') carry the active seconds they bill, and
-- every row the agent it ran for ('' when none).
ALTER TABLE ledger ADD COLUMN compute_seconds REAL NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN agent_id TEXT NOT NULL DEFAULT '';
