-- Interlock store, SQLite dialect, migration 1: the initial schema.
--
-- Conventions (the PostgreSQL dialect follows the same logical tables):
--   * Public ids are TEXT made by the store: a type prefix, "_", and 26
--     characters of Crockford base32 that sort by creation time
--     (interlockd/ids.py): sbx_, key_, conv_; run ids come from the caller.
--     Rows never addressed from outside (entries, ledger) have an INTEGER key.
--   * Timestamps are INTEGER microseconds since the Unix epoch, UTC
--     (PostgreSQL: timestamptz). Days are INTEGER days since the epoch, UTC.
--   * Booleans are INTEGER 0/1. Money is REAL US dollars, as in the API.
--   * *_sealed columns hold values sealed by crypto.py, bound to their
--     (sandbox, table, row, column); wrapped_key holds a key wrapped by a
--     master key. Nothing here is plaintext conversation content.
--   * Everything of a sandbox goes with it (ON DELETE CASCADE), data keys
--     included, so copies of its sealed values elsewhere can never open.
--   * The runner splits scripts into statements at line ends with
--     sqlite3.complete_statement: never put two statements on one line.

CREATE TABLE operator_keys (
    key_hash   TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE sandboxes (
    id                               TEXT PRIMARY KEY,
    name                             TEXT NOT NULL UNIQUE,
    created_at                       INTEGER NOT NULL,
    max_concurrent_runs              INTEGER NOT NULL CHECK (max_concurrent_runs >= 0),
    max_concurrent_runs_per_end_user INTEGER NOT NULL CHECK (max_concurrent_runs_per_end_user >= 0),
    max_tokens_per_day               INTEGER NOT NULL CHECK (max_tokens_per_day >= 0)
) STRICT;

CREATE INDEX sandboxes_by_creation ON sandboxes (created_at, id);

-- Per-sandbox keys, wrapped by a master key. key_id 0 is the index key (blind
-- search terms, never rotated); data keys are 1, 2, ... and exactly one is
-- current (used for new seals). Old data keys stay so old rows keep opening.
CREATE TABLE data_keys (
    sandbox_id    TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    key_id        INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('data', 'index')),
    wrapped_key   BLOB NOT NULL,
    master_key_id TEXT NOT NULL,
    is_current    INTEGER NOT NULL CHECK (is_current IN (0, 1)),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, key_id),
    CHECK ((kind = 'index') = (key_id = 0)),
    CHECK (kind = 'data' OR is_current = 0)
) STRICT;

CREATE UNIQUE INDEX data_keys_one_current ON data_keys (sandbox_id) WHERE is_current = 1;

-- Sandbox API keys: only a hash of the secret is stored.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE INDEX api_keys_by_sandbox ON api_keys (sandbox_id, created_at, id);

-- End users are the application's own ids, scoped to the sandbox.
CREATE TABLE end_users (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    id         TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, id)
) STRICT;

CREATE TABLE conversations (
    id            TEXT PRIMARY KEY,
    sandbox_id    TEXT NOT NULL,
    end_user_id   TEXT NOT NULL,
    title_sealed  BLOB,                        -- NULL: no title
    last_provider TEXT NOT NULL DEFAULT '',
    last_model    TEXT NOT NULL DEFAULT '',
    entry_count   INTEGER NOT NULL DEFAULT 0,  -- also the seq of the newest entry
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    FOREIGN KEY (sandbox_id, end_user_id) REFERENCES end_users (sandbox_id, id) ON DELETE CASCADE
) STRICT;

CREATE INDEX conversations_by_end_user
    ON conversations (sandbox_id, end_user_id, updated_at DESC, id DESC);

-- The window. seq is 1, 2, ... per conversation; text is sealed with the row
-- bound to (conversation_id, seq). sandbox_id is denormalised so every query
-- can be scoped by it without a join.
CREATE TABLE entries (
    id              INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sandbox_id      TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    kind            TEXT NOT NULL
                    CHECK (kind IN ('user', 'assistant', 'tool_call', 'tool_result', 'summary')),
    text_sealed     BLOB NOT NULL,
    tokens          INTEGER NOT NULL,
    run_id          TEXT NOT NULL,
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,
    tool_call_id    TEXT NOT NULL,
    tool_name       TEXT NOT NULL,
    is_error        INTEGER NOT NULL CHECK (is_error IN (0, 1)),
    created_at      INTEGER NOT NULL,
    UNIQUE (conversation_id, seq)
) STRICT;

CREATE INDEX entries_by_run ON entries (run_id, seq);

CREATE INDEX entries_by_tool_call ON entries (conversation_id, tool_call_id) WHERE tool_call_id <> '';

-- The blind search index: one row per indexed entry (rowid = entries.id)
-- holding the keyed hashes of its words (crypto.blind_terms), never the
-- words. Hashes are keyed per sandbox and end user, so a MATCH only ever
-- reaches the asking end user's rows; queries still join entries and
-- conversations to scope by sandbox and end user. detail=none: only "which
-- rows hold the term" is needed.
CREATE VIRTUAL TABLE entry_terms USING fts5 (terms, tokenize = 'ascii', detail = 'none');

CREATE TRIGGER entries_drop_terms AFTER DELETE ON entries BEGIN
    DELETE FROM entry_terms WHERE rowid = old.id;
END;

-- Runs outlive a deleted conversation (their money is in the ledger), so
-- conversation_id is not a foreign key.
CREATE TABLE runs (
    id                 TEXT PRIMARY KEY,
    sandbox_id         TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    end_user_id        TEXT NOT NULL,
    conversation_id    TEXT NOT NULL,
    provider           TEXT NOT NULL,
    model              TEXT NOT NULL,
    request_id         TEXT NOT NULL,              -- '': no idempotency key
    labels             TEXT NOT NULL DEFAULT '{}', -- JSON object: the request's labels
    status             TEXT NOT NULL
                       CHECK (status IN ('running', 'finished', 'failed', 'cancelled', 'interrupted')),
    started_at         INTEGER NOT NULL,
    finished_at        INTEGER,
    stop_reason        TEXT NOT NULL DEFAULT '',
    error_code         TEXT NOT NULL DEFAULT '',
    error_message      TEXT NOT NULL DEFAULT '',
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens   INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX runs_by_sandbox ON runs (sandbox_id, started_at);

CREATE UNIQUE INDEX runs_request_id ON runs (sandbox_id, request_id) WHERE request_id <> '';

-- One turn at a time per conversation, enforced by the database itself.
CREATE UNIQUE INDEX runs_one_running_per_conversation ON runs (conversation_id) WHERE status = 'running';

CREATE INDEX runs_running_by_end_user ON runs (sandbox_id, end_user_id) WHERE status = 'running';

CREATE TABLE ledger (
    id                 INTEGER PRIMARY KEY,
    run_id             TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    sandbox_id         TEXT NOT NULL,
    end_user_id        TEXT NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('tokens', 'compute')),
    provider           TEXT NOT NULL,
    model              TEXT NOT NULL,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens   INTEGER NOT NULL,
    cost_usd           REAL NOT NULL,
    price_version      TEXT NOT NULL,
    created_at         INTEGER NOT NULL
) STRICT;

CREATE INDEX ledger_by_sandbox ON ledger (sandbox_id);

CREATE INDEX ledger_by_run ON ledger (run_id);

-- Tokens (input + output) of finished runs per sandbox and UTC day: an O(1)
-- counter for the max_tokens_per_day admission check.
CREATE TABLE usage_daily (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    day        INTEGER NOT NULL,
    tokens     INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, day)
) STRICT;
