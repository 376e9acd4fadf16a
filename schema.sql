-- hivelet schema, version 5: the whole current schema, which a new database gets at once. Each
-- change also appends a numbered migration in src/store/migrate.rs that takes an existing
-- database from the version before to the same tables.
-- Times are Unix milliseconds (*_at), durations end in _ms, ids are prefixed text.

CREATE TABLE deployments (
    key             TEXT PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,               -- dep_…
    description     TEXT,
    current_version INTEGER NOT NULL,
    signing_secret  TEXT NOT NULL,                      -- whsec_…; never logged
    previous_secret TEXT,                               -- still valid until previous_secret_until
    previous_secret_until INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE deployment_versions (
    deployment_key  TEXT NOT NULL REFERENCES deployments(key) ON DELETE CASCADE,
    version         INTEGER NOT NULL,
    definition      TEXT NOT NULL,                      -- the validated definition as JSON
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (deployment_key, version)
) WITHOUT ROWID;

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,                      -- key_…
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'invoke')),
    key_hash     TEXT NOT NULL UNIQUE,                  -- hex SHA-256 of the key
    key_prefix   TEXT NOT NULL,                         -- first characters, for masked display
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    -- A rotation with an overlap (`expires_in`) keeps the old secret's hash until then.
    previous_key_hash  TEXT,
    previous_key_until INTEGER
);

CREATE TABLE runs (
    request_id     TEXT PRIMARY KEY,                    -- req_ + UUIDv7 hex: time-ordered
    deployment_key TEXT NOT NULL,
    variant        TEXT NOT NULL,
    version        INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    source         TEXT NOT NULL CHECK (source IN ('api', 'webhook', 'cli', 'ui', 'workflow', 'schedule')),
    delivery       TEXT NOT NULL CHECK (delivery IN ('direct', 'callback')),
    callback_url   TEXT,
    api_key_id     TEXT,
    inputs         TEXT NOT NULL,                       -- JSON object
    metadata       TEXT NOT NULL,                       -- JSON object
    user           TEXT,
    output         TEXT,                                -- JSON value
    error          TEXT,                                -- JSON {message, error_code, step}
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    ended_at       INTEGER,
    duration_ms    INTEGER,
    usage          TEXT,                                -- JSON: summed token usage (SPEC §10)
    rerun_of       TEXT,                                -- the run this one reruns
    parent_request_id TEXT,                             -- the run whose workflow step started it
    schedule_id    TEXT,                                -- sch_…: the schedule that started it
    scheduled_for  INTEGER,                             -- the due time it serves; NULL for a trigger
    events         TEXT,                                -- JSON array: async.events; NULL = the default
    priority       INTEGER NOT NULL DEFAULT 5,          -- 0–9: higher leaves the queue first
    concurrency_key TEXT                                -- the rendered [concurrency] key
) WITHOUT ROWID;
CREATE INDEX runs_by_deployment ON runs (deployment_key, request_id);
CREATE INDEX runs_by_status ON runs (status, request_id);
CREATE INDEX runs_unfinished ON runs (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX runs_by_parent ON runs (parent_request_id) WHERE parent_request_id IS NOT NULL;
CREATE INDEX runs_by_schedule ON runs (schedule_id, request_id) WHERE schedule_id IS NOT NULL;

-- Schedules (SPEC §12). A fire stores its run and the new next_run_at in one transaction.
CREATE TABLE schedules (
    schedule_id     TEXT PRIMARY KEY,                   -- sch_…
    name            TEXT,                               -- set for [[schedules]] of a workflow file
    deployment_key  TEXT NOT NULL REFERENCES deployments(key) ON DELETE CASCADE,
    variant         TEXT NOT NULL,
    inputs          TEXT NOT NULL,                      -- JSON object
    metadata        TEXT NOT NULL,                      -- JSON object
    user            TEXT,
    cron            TEXT,
    every           TEXT,
    timezone        TEXT NOT NULL,                      -- IANA name
    callback_url    TEXT,
    active          INTEGER NOT NULL,
    catch_up        TEXT NOT NULL CHECK (catch_up IN ('skip', 'once', 'all')),
    next_run_at     INTEGER,                            -- NULL while paused
    last_request_id TEXT,
    last_run_at     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CHECK ((cron IS NULL) <> (every IS NULL))
) WITHOUT ROWID;
CREATE UNIQUE INDEX schedules_by_name ON schedules (deployment_key, name) WHERE name IS NOT NULL;

CREATE TABLE run_steps (
    request_id   TEXT NOT NULL REFERENCES runs(request_id) ON DELETE CASCADE,
    step_index   INTEGER NOT NULL,                      -- position in the definition, depth first
    step_id      TEXT NOT NULL,
    step_type    TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('completed', 'failed', 'skipped', 'waiting', 'interrupted', 'reused')),
    started_at   INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    output       TEXT,
    error        TEXT,
    attempts     INTEGER NOT NULL,
    usage        TEXT,
    parent       TEXT,                                  -- the enclosing branch/loop step id
    passes       TEXT NOT NULL DEFAULT '',              -- enclosing loop passes, outermost first: '3.0'
    reason       TEXT,                                  -- why a waiting step waits
    child_request_id TEXT,                              -- the run a workflow step started
    PRIMARY KEY (request_id, step_index, passes, started_at)
) WITHOUT ROWID;

-- The answer to an approval step (SPEC §7), written before the run resumes so a restart
-- continues with it. At most one per step: a second answer is refused.
CREATE TABLE approval_responses (
    request_id   TEXT NOT NULL REFERENCES runs(request_id) ON DELETE CASCADE,
    step_id      TEXT NOT NULL,
    response     TEXT NOT NULL,                         -- JSON: the step's output, {"choice"} or {"text"}
    responded_at INTEGER NOT NULL,
    PRIMARY KEY (request_id, step_id)
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    api_key_id      TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    response        TEXT NOT NULL,                      -- the first response: {"status", "body"}
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, idempotency_key)
) WITHOUT ROWID;

-- The completion event of a callback run (transactional outbox: written with the run's end).
CREATE TABLE events (
    event_id        TEXT PRIMARY KEY,                   -- evt_…: the webhook-id, stable across retries
    request_id      TEXT NOT NULL REFERENCES runs(request_id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL DEFAULT 1,         -- order within the run, from 1
    deployment_key  TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    callback_url    TEXT NOT NULL,
    body            BLOB NOT NULL,                      -- the exact bytes sent on every attempt
    state           TEXT NOT NULL CHECK (state IN ('held', 'pending', 'retrying', 'delivered', 'failed')),
    series          INTEGER NOT NULL DEFAULT 1,         -- 1 + redeliveries
    attempts        INTEGER NOT NULL DEFAULT 0,         -- attempts in the current series
    total_attempts  INTEGER NOT NULL DEFAULT 0,         -- attempts ever made
    next_attempt_at INTEGER,                            -- due time while pending/retrying
    failure_reason  TEXT,                               -- e.g. 'gone', 'exhausted'
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (request_id, seq)
) WITHOUT ROWID;
CREATE INDEX events_due ON events (next_attempt_at) WHERE state IN ('pending', 'retrying');

-- One HTTP POST of an event. Request headers never include a secret.
CREATE TABLE attempts (
    attempt_id       TEXT PRIMARY KEY,                  -- att_…
    event_id         TEXT NOT NULL REFERENCES events(event_id) ON DELETE CASCADE,
    request_id       TEXT NOT NULL,
    attempt_number   INTEGER NOT NULL,                  -- 1-based over the event's whole life
    series           INTEGER NOT NULL,                  -- 1 + redeliveries
    url              TEXT NOT NULL,
    request_headers  TEXT NOT NULL,                     -- JSON object
    status_code      INTEGER,
    error_kind       TEXT CHECK (error_kind IN ('timeout', 'connect', 'dns', 'tls', 'too_large', 'redirect', 'http_status', 'denied', 'gone')),
    error_message    TEXT,
    response_headers TEXT,                              -- JSON object
    response_body    TEXT,                              -- first 4 KiB
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    outcome          TEXT NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'failed')),
    next_attempt_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX attempts_by_event ON attempts (event_id, attempt_number);
CREATE INDEX attempts_by_request ON attempts (request_id, attempt_number);
