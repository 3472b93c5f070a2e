-- Interlock store, SQLite dialect, migration 9: the plaintext columns that
-- migration 8 replaced, now converted, go. Conventions as in 0001_initial.sql.
--
-- With secure_delete on, SQLite zeroes the freed cells; the store
-- checkpoints the WAL after migrating, so the old values leave the file.

ALTER TABLE runs DROP COLUMN labels;

ALTER TABLE compute_sessions DROP COLUMN tags;
