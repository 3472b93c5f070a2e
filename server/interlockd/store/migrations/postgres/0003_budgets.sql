-- Interlock store, PostgreSQL dialect, migration 3: spend budgets, reserved at
-- admission and settled when the run ends. Conventions as in 0001_initial.sql.
--
-- Limits are USD (0: no limit) per UTC day and per UTC calendar month:
-- the sandbox's own, and one that applies to each end user of the sandbox,
-- beside its quotas; a saved agent's beside its (sealed) settings, in clear
-- so admission reads them in SQL. Amounts spent and reserved are integer
-- micro-dollars, so sums are exact on both engines.
ALTER TABLE sandboxes ADD COLUMN usd_per_day DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (usd_per_day >= 0);
ALTER TABLE sandboxes ADD COLUMN usd_per_month DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (usd_per_month >= 0);
ALTER TABLE sandboxes ADD COLUMN end_user_usd_per_day DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (end_user_usd_per_day >= 0);
ALTER TABLE sandboxes ADD COLUMN end_user_usd_per_month DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (end_user_usd_per_month >= 0);
ALTER TABLE agents ADD COLUMN usd_per_day DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (usd_per_day >= 0);
ALTER TABLE agents ADD COLUMN usd_per_month DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (usd_per_month >= 0);

-- A run's budgets: the saved agent it runs as ('' none), its worst-case
-- cost (reserved by each attempt: a resumed run reserves it again), what it
-- holds now (0 once settled) and the UTC day and month (their first
-- microsecond) it reserved in, which its settlement charges.
ALTER TABLE runs ADD COLUMN agent TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN reservation_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN reserved_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN budget_day BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN budget_month BIGINT NOT NULL DEFAULT 0;

-- Per budget and period: what running runs hold and what ended runs cost.
-- scope 'sandbox' (target ''), 'end_user' (target: the blind end user id),
-- 'agent' (target: the slug); period 'day' or 'month', period_start its
-- first microsecond (UTC).
CREATE TABLE budget_spend (
    sandbox_id      TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    scope           TEXT COLLATE "C" NOT NULL CHECK (scope IN ('sandbox', 'end_user', 'agent')),
    target          TEXT COLLATE "C" NOT NULL,
    period          TEXT COLLATE "C" NOT NULL CHECK (period IN ('day', 'month')),
    period_start    BIGINT NOT NULL,
    reserved_micros BIGINT NOT NULL,
    spent_micros    BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, scope, target, period, period_start)
);
