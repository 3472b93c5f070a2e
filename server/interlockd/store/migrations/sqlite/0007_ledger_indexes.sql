-- Interlock store, SQLite dialect, migration 7: the ledger read by time. Conventions
-- as in 0001_initial.sql.

-- The Ledger service lists a sandbox's rows newest first, paging by
-- (created_at, id), and adds up its rows over time ranges. Every SQLite index
-- ends with the rowid (here the id), so this one serves both in index order,
-- and it makes the one on sandbox_id alone redundant.
CREATE INDEX ledger_by_sandbox_time ON ledger (sandbox_id, created_at);

DROP INDEX ledger_by_sandbox;
