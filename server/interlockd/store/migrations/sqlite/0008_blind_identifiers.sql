-- Interlock store, SQLite dialect, migration 8: identifiers the tenant chooses
-- (end user ids, request ids) and run labels leave the file in clear.
-- Conventions as in 0001_initial.sql.
--
-- An end user id or a request id is stored as its blind id: a keyed hash
-- under the sandbox's index key (crypto.SandboxKeys.blind_id), 32 hex
-- characters, deterministic within the sandbox so equality lookups, unique
-- indexes and GROUP BY keep working on it, and unlinkable across sandboxes.
-- Every end_user_id column (conversations, runs, ledger, integrations,
-- connect_flows, compute_sessions; pauses.target of an end_user pause) and
-- runs.request_id hold blind ids from now on; '' keeps meaning "none".
-- Where the store must give the id back, it is sealed once per end user in
-- end_users.id_sealed (bound to the row "<blind id>") and the request id
-- beside its run. Labels are content: sealed. Compute session tags name the
-- end user: sealed.
--
-- Rows written before this migration are converted by the store's Python
-- step for version 8 (sqlite.py, _blind_identifiers), in the same transaction,
-- after these statements; migration 9 then drops the plaintext columns.

-- The end user's own id, sealed; id is its blind id. NULL only until the
-- conversion step has run.
ALTER TABLE end_users ADD COLUMN id_sealed BLOB;

-- The request id as the caller sent it (request_id holds its blind id); NULL: none.
ALTER TABLE runs ADD COLUMN request_id_sealed BLOB;

-- The request's labels, a sealed JSON object; NULL: no labels.
ALTER TABLE runs ADD COLUMN labels_sealed BLOB;

-- JSON {user_id, sandbox_id, agent_id, run_id, model}, sealed.
ALTER TABLE compute_sessions ADD COLUMN tags_sealed BLOB;
