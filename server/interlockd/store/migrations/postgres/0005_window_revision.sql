-- Interlock store, PostgreSQL dialect, migration 5: a conversation's window
-- revision (see the SQLite dialect's migration 13 for what it is).
-- Conventions as in 0001_initial.sql.
ALTER TABLE conversations ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
