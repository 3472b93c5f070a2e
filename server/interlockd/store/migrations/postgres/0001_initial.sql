-- Interlock store, PostgreSQL dialect, migration 1: the initial schema, equal
-- to the SQLite dialect after its migrations 1 to 9 (same tables, columns in
-- the same order, constraints, indexes and cascades). PostgreSQL starts fresh:
-- SQLite's migrations 8 and 9 (identifiers made blind, plaintext columns
-- dropped) are folded in, and no data step runs.
--
-- Conventions (as in the SQLite dialect, so one SQL text and the same Python
-- values serve both engines):
--   * Public ids are TEXT made by the store: a type prefix, "_", and 26
--     characters of Crockford base32 that sort by creation time
--     (interlockd/ids.py): sbx_, key_, conv_, cs_; run ids come from the
--     caller. Rows never addressed from outside (entries, ledger) have a
--     BIGINT identity key.
--   * Timestamps are BIGINT microseconds since the Unix epoch, UTC, not
--     timestamptz: the store binds and reads Python ints on both engines.
--     Days are BIGINT days since the epoch, UTC.
--   * Booleans are BIGINT 0/1 with a CHECK, like SQLite's INTEGER 0/1. Money
--     is DOUBLE PRECISION US dollars (SQLite's REAL), as in the API.
--   * Every TEXT column is COLLATE "C": SQLite compares text byte by byte
--     (BINARY), and listings ordered by ids, slugs, names or providers, and
--     pages resumed after a key, must come out the same on both engines
--     whatever the database's default locale.
--   * *_sealed columns (BYTEA) hold values sealed by crypto.py, bound to their
--     (sandbox, table, row, column); wrapped_key holds a key wrapped by a
--     master key. Nothing here is plaintext conversation content.
--   * Identifiers the tenant chooses (end user ids, request ids) are stored
--     as blind ids: a keyed hash under the sandbox's index key
--     (crypto.SandboxKeys.blind_id), 32 hex characters; '' means "none".
--     Where the store must give one back, it is sealed beside it
--     (end_users.id_sealed, runs.request_id_sealed).
--   * Everything of a sandbox goes with it (ON DELETE CASCADE), data keys
--     included, so copies of its sealed values elsewhere can never open.
--   * The runner splits scripts into statements at a ';' that ends a line:
--     never put two statements on one line, nor a ';' inside a statement.

CREATE TABLE operator_keys (
    key_hash   TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE sandboxes (
    id                               TEXT COLLATE "C" PRIMARY KEY,
    name                             TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at                       BIGINT NOT NULL,
    max_concurrent_runs              BIGINT NOT NULL CHECK (max_concurrent_runs >= 0),
    max_concurrent_runs_per_end_user BIGINT NOT NULL CHECK (max_concurrent_runs_per_end_user >= 0),
    max_tokens_per_day               BIGINT NOT NULL CHECK (max_tokens_per_day >= 0)
);

CREATE INDEX sandboxes_by_creation ON sandboxes (created_at, id);

-- Per-sandbox keys, wrapped by a master key. key_id 0 is the index key (blind
-- search terms and blind ids, never rotated); data keys are 1, 2, ... and
-- exactly one is current (used for new seals). Old data keys stay so old rows
-- keep opening.
CREATE TABLE data_keys (
    sandbox_id    TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    key_id        BIGINT NOT NULL,
    kind          TEXT COLLATE "C" NOT NULL CHECK (kind IN ('data', 'index')),
    wrapped_key   BYTEA NOT NULL,
    master_key_id TEXT COLLATE "C" NOT NULL,
    is_current    BIGINT NOT NULL CHECK (is_current IN (0, 1)),
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, key_id),
    CHECK ((kind = 'index') = (key_id = 0)),
    CHECK (kind = 'data' OR is_current = 0)
);

CREATE UNIQUE INDEX data_keys_one_current ON data_keys (sandbox_id) WHERE is_current = 1;

-- Sandbox API keys: only a hash of the secret is stored.
CREATE TABLE api_keys (
    id         TEXT COLLATE "C" PRIMARY KEY,
    sandbox_id TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    name       TEXT COLLATE "C" NOT NULL,
    key_hash   TEXT COLLATE "C" NOT NULL UNIQUE,
    prefix     TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX api_keys_by_sandbox ON api_keys (sandbox_id, created_at, id);

-- End users are the application's own ids, scoped to the sandbox: id is the
-- blind id, id_sealed the id itself, sealed, bound to the row "<blind id>"
-- (nullable as in SQLite, where rows older than its migration 8 had none
-- until converted; the store always writes it).
CREATE TABLE end_users (
    sandbox_id TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    id         TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    id_sealed  BYTEA,
    PRIMARY KEY (sandbox_id, id)
);

CREATE TABLE conversations (
    id            TEXT COLLATE "C" PRIMARY KEY,
    sandbox_id    TEXT COLLATE "C" NOT NULL,
    end_user_id   TEXT COLLATE "C" NOT NULL,
    title_sealed  BYTEA,                                  -- NULL: no title
    last_provider TEXT COLLATE "C" NOT NULL DEFAULT '',
    last_model    TEXT COLLATE "C" NOT NULL DEFAULT '',
    entry_count   BIGINT NOT NULL DEFAULT 0,              -- also the seq of the newest entry
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    FOREIGN KEY (sandbox_id, end_user_id) REFERENCES end_users (sandbox_id, id) ON DELETE CASCADE
);

CREATE INDEX conversations_by_end_user
    ON conversations (sandbox_id, end_user_id, updated_at DESC, id DESC);

-- The window. seq is 1, 2, ... per conversation; text is sealed with the row
-- bound to (conversation_id, seq). sandbox_id is denormalised so every query
-- can be scoped by it without a join. source_id: the data source an entry
-- came from (a tool result of an integration's tool carries its integration
-- id; '' for everything else).
CREATE TABLE entries (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sandbox_id      TEXT COLLATE "C" NOT NULL,
    seq             BIGINT NOT NULL,
    kind            TEXT COLLATE "C" NOT NULL
                    CHECK (kind IN ('user', 'assistant', 'tool_call', 'tool_result', 'summary')),
    text_sealed     BYTEA NOT NULL,
    tokens          BIGINT NOT NULL,
    run_id          TEXT COLLATE "C" NOT NULL,
    provider        TEXT COLLATE "C" NOT NULL,
    model           TEXT COLLATE "C" NOT NULL,
    tool_call_id    TEXT COLLATE "C" NOT NULL,
    tool_name       TEXT COLLATE "C" NOT NULL,
    is_error        BIGINT NOT NULL CHECK (is_error IN (0, 1)),
    created_at      BIGINT NOT NULL,
    source_id       TEXT COLLATE "C" NOT NULL DEFAULT '',
    UNIQUE (conversation_id, seq)
);

CREATE INDEX entries_by_run ON entries (run_id, seq);

CREATE INDEX entries_by_tool_call ON entries (conversation_id, tool_call_id) WHERE tool_call_id <> '';

-- The blind search index (SQLite: an FTS5 table): one row per (term, entry),
-- term a keyed hash of a word of the entry (crypto.blind_terms, hex), never
-- the word. Hashes are keyed per sandbox and end user, so a term only ever
-- reaches the asking end user's rows; queries still join entries and
-- conversations to scope by sandbox and end user. The terms go with their
-- entry through the foreign key (SQLite needs a trigger for that).
CREATE TABLE entry_terms (
    entry_id BIGINT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    term     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (term, entry_id)
);

-- The cascade from entries finds an entry's terms by entry_id (the primary
-- key leads with the term).
CREATE INDEX entry_terms_by_entry ON entry_terms (entry_id);

-- Runs outlive a deleted conversation (their money is in the ledger), so
-- conversation_id is not a foreign key. end_user_id and request_id are blind
-- ids; request_id_sealed is the request id as the caller sent it (NULL:
-- none), labels_sealed the request's labels, a sealed JSON object (NULL: no
-- labels).
CREATE TABLE runs (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    sandbox_id         TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    end_user_id        TEXT COLLATE "C" NOT NULL,
    conversation_id    TEXT COLLATE "C" NOT NULL,
    provider           TEXT COLLATE "C" NOT NULL,
    model              TEXT COLLATE "C" NOT NULL,
    request_id         TEXT COLLATE "C" NOT NULL,          -- '': no idempotency key
    status             TEXT COLLATE "C" NOT NULL
                       CHECK (status IN ('running', 'finished', 'failed', 'cancelled', 'interrupted')),
    started_at         BIGINT NOT NULL,
    finished_at        BIGINT,
    stop_reason        TEXT COLLATE "C" NOT NULL DEFAULT '',
    error_code         TEXT COLLATE "C" NOT NULL DEFAULT '',
    error_message      TEXT COLLATE "C" NOT NULL DEFAULT '',
    input_tokens       BIGINT NOT NULL DEFAULT 0,
    output_tokens      BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens  BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens   BIGINT NOT NULL DEFAULT 0,
    cost_usd           DOUBLE PRECISION NOT NULL DEFAULT 0,
    request_id_sealed  BYTEA,
    labels_sealed      BYTEA
);

CREATE INDEX runs_by_sandbox ON runs (sandbox_id, started_at);

CREATE UNIQUE INDEX runs_request_id ON runs (sandbox_id, request_id) WHERE request_id <> '';

-- One turn at a time per conversation, enforced by the database itself.
CREATE UNIQUE INDEX runs_one_running_per_conversation ON runs (conversation_id) WHERE status = 'running';

CREATE INDEX runs_running_by_end_user ON runs (sandbox_id, end_user_id) WHERE status = 'running';

-- Compute cost rows (kind 'compute') carry the active seconds they bill, and
-- every row the agent it ran for ('' when none).
CREATE TABLE ledger (
    id                 BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    run_id             TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    sandbox_id         TEXT COLLATE "C" NOT NULL,
    end_user_id        TEXT COLLATE "C" NOT NULL,
    kind               TEXT COLLATE "C" NOT NULL CHECK (kind IN ('tokens', 'compute')),
    provider           TEXT COLLATE "C" NOT NULL,
    model              TEXT COLLATE "C" NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    reasoning_tokens   BIGINT NOT NULL,
    cost_usd           DOUBLE PRECISION NOT NULL,
    price_version      TEXT COLLATE "C" NOT NULL,
    created_at         BIGINT NOT NULL,
    compute_seconds    DOUBLE PRECISION NOT NULL DEFAULT 0,
    agent_id           TEXT COLLATE "C" NOT NULL DEFAULT ''
);

-- The Ledger service lists a sandbox's rows newest first, paging by
-- (created_at, id), and adds up its rows over time ranges. SQLite's index on
-- (sandbox_id, created_at) ends with the rowid implicitly; here id is named.
CREATE INDEX ledger_by_sandbox_time ON ledger (sandbox_id, created_at, id);

CREATE INDEX ledger_by_run ON ledger (run_id);

-- Tokens (input + output) of finished runs per sandbox and UTC day: an O(1)
-- counter for the max_tokens_per_day admission check.
CREATE TABLE usage_daily (
    sandbox_id TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    day        BIGINT NOT NULL,
    tokens     BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, day)
);

-- A managed runtime's own session per (conversation, provider). The session
-- id leads to conversation content at the provider, so it is sealed, bound
-- to the row "<conversation_id>/<provider>". through_seq: the last entry seq
-- the session has seen. sandbox_id is copied from the conversation so every
-- query is scoped by it; the rows go with the conversation.
CREATE TABLE provider_sessions (
    conversation_id   TEXT COLLATE "C" NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sandbox_id        TEXT COLLATE "C" NOT NULL,
    provider          TEXT COLLATE "C" NOT NULL,
    session_id_sealed BYTEA NOT NULL,
    through_seq       BIGINT NOT NULL CHECK (through_seq >= 0),
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, provider)
);

-- Resources (agents, environments) created at a provider for a sandbox,
-- keyed by what they were created from (fingerprint). The first id stored
-- for a key wins; concurrent creators adopt it.
CREATE TABLE provider_resources (
    sandbox_id  TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    provider    TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    fingerprint TEXT COLLATE "C" NOT NULL,
    resource_id TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, provider, kind, fingerprint)
);

-- The sandbox's own secrets (e.g. its provider API key), sealed, bound to
-- the row name.
CREATE TABLE sandbox_secrets (
    sandbox_id   TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    name         TEXT COLLATE "C" NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    value_sealed BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, name)
);

-- One connected integration, for the whole sandbox (end_user_id = '') or for
-- one end user. config (account login, URLs, scopes) and credentials (tokens,
-- headers) are both sealed, bound to the row "<id>". At most one live
-- (active or broken) connection per (sandbox, app, end user); disconnected
-- rows are archived, not deleted.
CREATE TABLE integrations (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    sandbox_id         TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    kind               TEXT COLLATE "C" NOT NULL CHECK (kind IN ('oauth', 'mcp', 'custom')),
    app                TEXT COLLATE "C" NOT NULL CHECK (length(app) BETWEEN 1 AND 64),
    end_user_id        TEXT COLLATE "C" NOT NULL,
    status             TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'broken', 'disconnected')),
    status_reason      TEXT COLLATE "C" NOT NULL,
    config_sealed      BYTEA NOT NULL,
    credentials_sealed BYTEA NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    last_used_at       BIGINT
);

CREATE UNIQUE INDEX integrations_live
    ON integrations (sandbox_id, app, end_user_id) WHERE status <> 'disconnected';

CREATE INDEX integrations_by_user ON integrations (sandbox_id, end_user_id, status);

-- An OAuth connect flow: pending until the callback completes it (connected),
-- fails it, or it expires. Only a hash of the state travels back to us; the
-- PKCE verifier is sealed, bound to the row "<id>".
CREATE TABLE connect_flows (
    id              TEXT COLLATE "C" PRIMARY KEY,
    sandbox_id      TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    app             TEXT COLLATE "C" NOT NULL,
    end_user_id     TEXT COLLATE "C" NOT NULL,
    for_end_user    BIGINT NOT NULL CHECK (for_end_user IN (0, 1)),
    state_hash      TEXT COLLATE "C" NOT NULL UNIQUE,
    verifier_sealed BYTEA NOT NULL,
    status          TEXT COLLATE "C" NOT NULL CHECK (status IN ('pending', 'connected', 'failed', 'expired')),
    reason          TEXT COLLATE "C" NOT NULL,
    integration_id  TEXT COLLATE "C" NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    finished_at     BIGINT
);

-- A pause refuses new runs in its scope and ends the ones in flight:
--   global           every run of the daemon (sandbox_id '', target '')
--   end_user         one end user of one sandbox (target = its blind id)
--   agent_provider   runs on one provider ("anthropic"), of one sandbox or all (sandbox_id '')
--   compute_provider runs placed on one compute provider ("daytona"), idem
-- The operator sets global and cross-sandbox pauses; a sandbox key only its own.
CREATE TABLE pauses (
    scope      TEXT COLLATE "C" NOT NULL
               CHECK (scope IN ('global', 'end_user', 'agent_provider', 'compute_provider')),
    sandbox_id TEXT COLLATE "C" NOT NULL,
    target     TEXT COLLATE "C" NOT NULL,
    reason     TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, sandbox_id, target)
);

-- A named bundle of what a run needs (provider, model, system prompt, tool
-- allow-list, model and compute settings), run by slug. The settings are one
-- sealed JSON document bound to the row "<slug>" (system prompts are often
-- proprietary).
CREATE TABLE agents (
    sandbox_id      TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    slug            TEXT COLLATE "C" NOT NULL CHECK (length(slug) BETWEEN 1 AND 64),
    settings_sealed BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, slug)
);

-- One long-lived compute session (a process, a sandbox, a sprite running a
-- self-hosted runtime) per (sandbox, end user, agent key): the agent's slug,
-- or "<provider>/<model>" for runs without a saved agent. Destroyed sessions
-- stay as history, and a failed one until the reaper has destroyed it at its
-- provider; at most one other session exists per key. The tags name the end
-- user: sealed.
CREATE TABLE compute_sessions (
    id               TEXT COLLATE "C" PRIMARY KEY,                 -- cs_...
    sandbox_id       TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    end_user_id      TEXT COLLATE "C" NOT NULL,
    agent_key        TEXT COLLATE "C" NOT NULL,
    runtime          TEXT COLLATE "C" NOT NULL,                    -- the agent provider, e.g. "hermes"
    provider         TEXT COLLATE "C" NOT NULL,                    -- the compute provider, e.g. "local"
    external_id      TEXT COLLATE "C" NOT NULL DEFAULT '',         -- the provider's id once created
    status           TEXT COLLATE "C" NOT NULL
                     CHECK (status IN ('creating', 'running', 'suspended', 'archived',
                                       'destroyed', 'failed')),
    region           TEXT COLLATE "C" NOT NULL DEFAULT '',
    endpoint         TEXT COLLATE "C" NOT NULL DEFAULT '',         -- base URL while running (no tokens)
    spec_fingerprint TEXT COLLATE "C" NOT NULL,                    -- a changed spec gets a new session
    secrets_sealed   BYTEA NOT NULL,                               -- JSON {api_key, mcp_token}
    active_seconds   DOUBLE PRECISION NOT NULL DEFAULT 0,          -- billed so far, over all runs
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    last_active_at   BIGINT NOT NULL,                              -- the end of its last run (idle timer)
    tags_sealed      BYTEA                                         -- JSON {user_id, sandbox_id, agent_id, run_id, model}
);

CREATE UNIQUE INDEX compute_sessions_by_key
    ON compute_sessions (sandbox_id, end_user_id, agent_key)
    WHERE status NOT IN ('destroyed', 'failed');

CREATE INDEX compute_sessions_by_status ON compute_sessions (status, last_active_at);

-- Why each run went where it went (`interlock compute explain <run_id>`).
CREATE TABLE placements (
    run_id             TEXT COLLATE "C" PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    sandbox_id         TEXT COLLATE "C" NOT NULL,
    compute_session_id TEXT COLLATE "C" NOT NULL,
    provider           TEXT COLLATE "C" NOT NULL,
    policy             TEXT COLLATE "C" NOT NULL,
    reason             TEXT COLLATE "C" NOT NULL,
    candidates         TEXT COLLATE "C" NOT NULL DEFAULT '[]',     -- JSON [{provider, verdict, note}]
    ready_seconds      DOUBLE PRECISION NOT NULL DEFAULT 0,        -- until the runtime answered
    created_at         BIGINT NOT NULL
);
