-- Interlock store, SQLite dialect, migration 12: the compute scheduler's claims
-- kept in the store, so they hold across every process sharing it. Conventions
-- as in 0001_initial.sql.
--
-- A run slot of an end user on self-hosted runtimes
-- (compute.max_concurrent_runs_per_user): taken at admission, counted and
-- inserted in one transaction in turn with the sandbox's other admissions.
-- Bound to its run once the run is placed, it counts while that run is
-- running (a run interrupted by its lease's expiry frees it on every
-- process); until then it counts until expires_at (a process that died
-- between admission and placement frees it then). Given back when the run
-- ends or its admission is refused.
CREATE TABLE compute_run_slots (
    id          TEXT PRIMARY KEY,                  -- slot_...
    sandbox_id  TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    end_user_id TEXT NOT NULL,                     -- blind, as everywhere
    run_id      TEXT,                              -- NULL until the run is placed
    expires_at  INTEGER NOT NULL                   -- for an unplaced slot
) STRICT;

CREATE INDEX compute_run_slots_by_user ON compute_run_slots (sandbox_id, end_user_id);

CREATE INDEX compute_run_slots_by_run ON compute_run_slots (run_id);

-- The run a compute session is serving: a runtime holds one run's tools at a
-- time. Claimed with a conditional update (free, or its run no longer
-- running), cleared when the run ends.
ALTER TABLE compute_sessions ADD COLUMN busy_run_id TEXT;

CREATE INDEX compute_sessions_by_busy_run ON compute_sessions (busy_run_id);
