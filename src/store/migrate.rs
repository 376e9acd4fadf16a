//! Schema versions. `schema.sql` is the whole current schema: a new database gets it at once
//! and is marked [`LATEST_VERSION`]. Each change to it also appends one migration here that
//! takes an existing database from the version before to the same tables. `PRAGMA
//! user_version` records what a database has; all pending steps apply in one transaction, and
//! a database newer than this binary is refused.

use std::path::Path;

use rusqlite::Connection;

use super::{StoreError, StoreResult};

const SCHEMA: &str = include_str!("../../schema.sql");

/// Version 2: the event state `sending`, which nothing wrote, is gone (such a row is due
/// again, as `pending`); a step may be `reused` (a rerun takes its output over). SQLite
/// cannot change a `CHECK`, so both tables are rebuilt, the way its manual describes
/// (foreign keys are off meanwhile, so dropping `events` keeps the attempts that refer to it).
const V2_STATES: &str = "
CREATE TABLE events_v2 (
    event_id        TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL UNIQUE REFERENCES runs(request_id) ON DELETE CASCADE,
    deployment_key  TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    callback_url    TEXT NOT NULL,
    body            BLOB NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'retrying', 'delivered', 'failed')),
    series          INTEGER NOT NULL DEFAULT 1,
    attempts        INTEGER NOT NULL DEFAULT 0,
    total_attempts  INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    failure_reason  TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO events_v2 (event_id, request_id, deployment_key, event_type, callback_url, body, state,
                       series, attempts, total_attempts, next_attempt_at, failure_reason,
                       created_at, updated_at)
    SELECT event_id, request_id, deployment_key, event_type, callback_url, body,
           CASE state WHEN 'sending' THEN 'pending' ELSE state END,
           series, attempts, total_attempts, next_attempt_at, failure_reason, created_at, updated_at
    FROM events;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
CREATE INDEX events_due ON events (next_attempt_at) WHERE state IN ('pending', 'retrying');

CREATE TABLE run_steps_v2 (
    request_id   TEXT NOT NULL REFERENCES runs(request_id) ON DELETE CASCADE,
    step_index   INTEGER NOT NULL,
    step_id      TEXT NOT NULL,
    step_type    TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('completed', 'failed', 'skipped', 'waiting', 'interrupted', 'reused')),
    started_at   INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    output       TEXT,
    error        TEXT,
    attempts     INTEGER NOT NULL,
    usage        TEXT,
    PRIMARY KEY (request_id, step_index, started_at)
) WITHOUT ROWID;
INSERT INTO run_steps_v2 (request_id, step_index, step_id, step_type, status, started_at,
                          duration_ms, output, error, attempts, usage)
    SELECT request_id, step_index, step_id, step_type, status, started_at,
           duration_ms, output, error, attempts, usage
    FROM run_steps;
DROP TABLE run_steps;
ALTER TABLE run_steps_v2 RENAME TO run_steps;
";

/// Version 3: a key rotated with an overlap (`expires_in`) keeps its old secret until then.
const V3_KEY_OVERLAP: &str = "
ALTER TABLE api_keys ADD COLUMN previous_key_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_key_until INTEGER;
";

/// Version 4 (SPEC §10): a run may be started by a `workflow` step (source `workflow`, with
/// `parent_request_id`), be a rerun (`rerun_of`) and carries its summed token `usage`. A trace
/// line may be a nested step: `parent` (the enclosing branch or loop), `passes` (the pass
/// indexes of the enclosing loops, outermost first, joined with `.`, `''` outside loops: part
/// of the key, so two passes never collide even within a millisecond), `reason` (why a step
/// waits) and `child_request_id` (the run a `workflow` step started). `runs` gets a new
/// `CHECK`, so both tables are rebuilt as in version 2.
const V4_WORKFLOWS: &str = "
CREATE TABLE runs_v4 (
    request_id     TEXT PRIMARY KEY,
    deployment_key TEXT NOT NULL,
    variant        TEXT NOT NULL,
    version        INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    source         TEXT NOT NULL CHECK (source IN ('api', 'webhook', 'cli', 'ui', 'workflow')),
    delivery       TEXT NOT NULL CHECK (delivery IN ('direct', 'callback')),
    callback_url   TEXT,
    api_key_id     TEXT,
    inputs         TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    user           TEXT,
    output         TEXT,
    error          TEXT,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    ended_at       INTEGER,
    duration_ms    INTEGER,
    usage          TEXT,
    rerun_of       TEXT,
    parent_request_id TEXT
) WITHOUT ROWID;
INSERT INTO runs_v4 (request_id, deployment_key, variant, version, status, source, delivery,
                     callback_url, api_key_id, inputs, metadata, user, output, error,
                     created_at, started_at, ended_at, duration_ms)
    SELECT request_id, deployment_key, variant, version, status, source, delivery,
           callback_url, api_key_id, inputs, metadata, user, output, error,
           created_at, started_at, ended_at, duration_ms
    FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v4 RENAME TO runs;
CREATE INDEX runs_by_deployment ON runs (deployment_key, request_id);
CREATE INDEX runs_by_status ON runs (status, request_id);
CREATE INDEX runs_unfinished ON runs (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX runs_by_parent ON runs (parent_request_id) WHERE parent_request_id IS NOT NULL;

CREATE TABLE run_steps_v4 (
    request_id   TEXT NOT NULL REFERENCES runs(request_id) ON DELETE CASCADE,
    step_index   INTEGER NOT NULL,
    step_id      TEXT NOT NULL,
    step_type    TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('completed', 'failed', 'skipped', 'waiting', 'interrupted', 'reused')),
    started_at   INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    output       TEXT,
    error        TEXT,
    attempts     INTEGER NOT NULL,
    usage        TEXT,
    parent       TEXT,
    passes       TEXT NOT NULL DEFAULT '',
    reason       TEXT,
    child_request_id TEXT,
    PRIMARY KEY (request_id, step_index, passes, started_at)
) WITHOUT ROWID;
INSERT INTO run_steps_v4 (request_id, step_index, step_id, step_type, status, started_at,
                          duration_ms, output, error, attempts, usage)
    SELECT request_id, step_index, step_id, step_type, status, started_at,
           duration_ms, output, error, attempts, usage
    FROM run_steps;
DROP TABLE run_steps;
ALTER TABLE run_steps_v4 RENAME TO run_steps;
";

/// Version 5 (SPEC §12): schedules, and runs they start (source `schedule`, `schedule_id`,
/// `scheduled_for`). `runs` gets a new `CHECK`, so it is rebuilt as in version 4.
const V5_SCHEDULES: &str = "
CREATE TABLE runs_v5 (
    request_id     TEXT PRIMARY KEY,
    deployment_key TEXT NOT NULL,
    variant        TEXT NOT NULL,
    version        INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    source         TEXT NOT NULL CHECK (source IN ('api', 'webhook', 'cli', 'ui', 'workflow', 'schedule')),
    delivery       TEXT NOT NULL CHECK (delivery IN ('direct', 'callback')),
    callback_url   TEXT,
    api_key_id     TEXT,
    inputs         TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    user           TEXT,
    output         TEXT,
    error          TEXT,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    ended_at       INTEGER,
    duration_ms    INTEGER,
    usage          TEXT,
    rerun_of       TEXT,
    parent_request_id TEXT,
    schedule_id    TEXT,
    scheduled_for  INTEGER
) WITHOUT ROWID;
INSERT INTO runs_v5 (request_id, deployment_key, variant, version, status, source, delivery,
                     callback_url, api_key_id, inputs, metadata, user, output, error,
                     created_at, started_at, ended_at, duration_ms, usage, rerun_of,
                     parent_request_id)
    SELECT request_id, deployment_key, variant, version, status, source, delivery,
           callback_url, api_key_id, inputs, metadata, user, output, error,
           created_at, started_at, ended_at, duration_ms, usage, rerun_of, parent_request_id
    FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v5 RENAME TO runs;
CREATE INDEX runs_by_deployment ON runs (deployment_key, request_id);
CREATE INDEX runs_by_status ON runs (status, request_id);
CREATE INDEX runs_unfinished ON runs (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX runs_by_parent ON runs (parent_request_id) WHERE parent_request_id IS NOT NULL;
CREATE INDEX runs_by_schedule ON runs (schedule_id, request_id) WHERE schedule_id IS NOT NULL;

CREATE TABLE schedules (
    schedule_id     TEXT PRIMARY KEY,
    name            TEXT,
    deployment_key  TEXT NOT NULL REFERENCES deployments(key) ON DELETE CASCADE,
    variant         TEXT NOT NULL,
    inputs          TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    user            TEXT,
    cron            TEXT,
    every           TEXT,
    timezone        TEXT NOT NULL,
    callback_url    TEXT,
    active          INTEGER NOT NULL,
    catch_up        TEXT NOT NULL CHECK (catch_up IN ('skip', 'once', 'all')),
    next_run_at     INTEGER,
    last_request_id TEXT,
    last_run_at     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CHECK ((cron IS NULL) <> (every IS NULL))
) WITHOUT ROWID;
CREATE UNIQUE INDEX schedules_by_name ON schedules (deployment_key, name) WHERE name IS NOT NULL;
";

/// Version 6 (SPEC §11, lifecycle webhooks): a run may have several events (`step.completed`,
/// `approval.requested`, then its terminal one), numbered by `seq` within the run; an event
/// waits as `held` until the one before it is delivered or has failed for good, so only the
/// head of each run's queue is ever due. `runs.events` keeps the run's `async.events` choice
/// (NULL: the default, the terminal events). `events` loses its `UNIQUE (request_id)` and
/// gets a new `CHECK`, so it is rebuilt as in version 2.
const V6_LIFECYCLE_EVENTS: &str = "
ALTER TABLE runs ADD COLUMN events TEXT;
CREATE TABLE events_v6 (
    event_id        TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL REFERENCES runs(request_id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL DEFAULT 1,
    deployment_key  TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    callback_url    TEXT NOT NULL,
    body            BLOB NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('held', 'pending', 'retrying', 'delivered', 'failed')),
    series          INTEGER NOT NULL DEFAULT 1,
    attempts        INTEGER NOT NULL DEFAULT 0,
    total_attempts  INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    failure_reason  TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (request_id, seq)
) WITHOUT ROWID;
INSERT INTO events_v6 (event_id, request_id, seq, deployment_key, event_type, callback_url, body,
                       state, series, attempts, total_attempts, next_attempt_at, failure_reason,
                       created_at, updated_at)
    SELECT event_id, request_id, 1, deployment_key, event_type, callback_url, body, state,
           series, attempts, total_attempts, next_attempt_at, failure_reason, created_at, updated_at
    FROM events;
DROP TABLE events;
ALTER TABLE events_v6 RENAME TO events;
CREATE INDEX events_due ON events (next_attempt_at) WHERE state IN ('pending', 'retrying');
";

/// Version 7, flow control (SPEC §12): a run's `priority` (0–9, higher starts first from the queue) and
/// its rendered `concurrency_key`, so a restart queues it again in the same order and under
/// the same key.
const V7_FLOW_CONTROL: &str = "
ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 5;
ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
";

/// Migrations after version 1, in order: `MIGRATIONS[0]` takes a database to version 2.
const MIGRATIONS: &[&str] = &[
    V2_STATES,
    V3_KEY_OVERLAP,
    V4_WORKFLOWS,
    V5_SCHEDULES,
    V6_LIFECYCLE_EVENTS,
    V7_FLOW_CONTROL,
];

/// The schema version this binary writes.
pub const LATEST_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

pub fn migrate(conn: &mut Connection, path: &Path) -> StoreResult<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > LATEST_VERSION {
        return Err(StoreError::Refused(format!(
            "the database {} has schema version {current}, newer than this hivelet {} understands \
             (version {LATEST_VERSION}); run a newer hivelet, or restore a backup made by this version",
            path.display(),
            env!("CARGO_PKG_VERSION"),
        )));
    }
    if current == LATEST_VERSION {
        return Ok(());
    }
    // Rebuilding a table drops the old one, which must not cascade to the rows referring to
    // it. The pragma is a no-op inside a transaction, so it goes around it.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let applied = apply(conn, current);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    applied
}

fn apply(conn: &mut Connection, current: i64) -> StoreResult<()> {
    let tx = conn.transaction()?;
    if current == 0 {
        tx.execute_batch(SCHEMA)?;
    } else {
        for step in &MIGRATIONS[(current - 1) as usize..] {
            tx.execute_batch(step)?;
        }
        let dangling: i64 =
            tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
                row.get(0)
            })?;
        if dangling > 0 {
            return Err(StoreError::Refused(format!(
                "the schema migration from version {current} left {dangling} rows referring to \
                 missing rows; the database was not changed"
            )));
        }
    }
    tx.pragma_update(None, "user_version", LATEST_VERSION)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole schema as version 1 shipped it (`schema.sql` at that version).
    const V1_SCHEMA: &str = include_str!("testdata/schema-v1.sql");

    const V1_ROWS: &str = "
INSERT INTO runs (request_id, deployment_key, variant, version, status, source, delivery,
                  callback_url, inputs, metadata, created_at)
VALUES ('req_1', 'd', 'default', 1, 'completed', 'api', 'callback', 'http://x', '{}', '{}', 1),
       ('req_2', 'd', 'default', 1, 'completed', 'api', 'callback', 'http://x', '{}', '{}', 2);
INSERT INTO run_steps VALUES ('req_1', 0, 'a', 'template', 'interrupted', 1, 0, NULL, NULL, 1, NULL);
INSERT INTO events (event_id, request_id, deployment_key, event_type, callback_url, body, state,
                    next_attempt_at, created_at, updated_at)
VALUES ('evt_1', 'req_1', 'd', 'workflow.completed', 'http://x', x'7b7d', 'sending', 5, 1, 1),
       ('evt_2', 'req_2', 'd', 'workflow.completed', 'http://x', x'7b7d', 'retrying', 7, 2, 2);
INSERT INTO attempts (attempt_id, event_id, request_id, attempt_number, series, url,
                      request_headers, started_at, duration_ms, outcome)
VALUES ('att_1', 'evt_2', 'req_2', 1, 1, 'http://x', '{}', 2, 1, 'retrying');
";

    fn version_1() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        conn.execute_batch(V1_SCHEMA).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(V1_ROWS).unwrap();
        (dir, path, conn)
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    #[test]
    fn version_1_loses_sending_to_pending_and_keeps_every_row() {
        let (_dir, path, mut conn) = version_1();
        migrate(&mut conn, &path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, LATEST_VERSION);
        let state: String = conn
            .query_row(
                "SELECT state FROM events WHERE event_id = 'evt_1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(state, "pending");
        assert_eq!(count(&conn, "SELECT count(*) FROM events"), 2);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM attempts"),
            1,
            "no cascade"
        );
        assert_eq!(count(&conn, "SELECT count(*) FROM run_steps"), 1);
        // The new CHECKs hold.
        let sending = conn.execute(
            "UPDATE events SET state = 'sending' WHERE event_id = 'evt_2'",
            [],
        );
        assert!(sending.is_err(), "sending must be refused now");
        conn.execute(
            "INSERT INTO run_steps (request_id, step_index, step_id, step_type, status, started_at,
                                    duration_ms, attempts)
             VALUES ('req_1', 1, 'b', 'template', 'reused', 2, 0, 0)",
            [],
        )
        .unwrap();
        // Version 4: a run started by a workflow step, and two passes of a loop in one
        // millisecond, are both allowed.
        conn.execute(
            "UPDATE runs SET source = 'workflow', parent_request_id = 'req_2' WHERE request_id = 'req_1'",
            [],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO run_steps (request_id, step_index, step_id, step_type, status, started_at,
                                    duration_ms, attempts, parent, passes)
             VALUES ('req_1', 2, 'c', 'template', 'completed', 3, 0, 1, 'l', '0'),
                    ('req_1', 2, 'c', 'template', 'completed', 3, 0, 1, 'l', '1');",
        )
        .unwrap();
        // Version 5: a run started by a schedule.
        conn.execute(
            "UPDATE runs SET source = 'schedule', schedule_id = 'sch_1', scheduled_for = 5 WHERE request_id = 'req_2'",
            [],
        )
        .unwrap();
        // Version 6: each old event is its run's first; a run may hold a second one, `held`,
        // and the runs keep the default choice of events.
        assert_eq!(count(&conn, "SELECT count(*) FROM events WHERE seq = 1"), 2);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM runs WHERE events IS NOT NULL"),
            0
        );
        conn.execute(
            "INSERT INTO events (event_id, request_id, seq, deployment_key, event_type, callback_url,
                                 body, state, created_at, updated_at)
             SELECT 'evt_3', request_id, 2, deployment_key, 'step.completed', callback_url, body,
                    'held', 9, 9
             FROM events WHERE event_id = 'evt_2'",
            [],
        )
        .unwrap();
        // The due index is back, and foreign keys work again: deleting a run cascades.
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'events_due'"
            ),
            1
        );
        conn.execute("DELETE FROM runs WHERE request_id = 'req_2'", [])
            .unwrap();
        assert_eq!(count(&conn, "SELECT count(*) FROM attempts"), 0);
    }

    #[test]
    fn a_fresh_database_has_the_same_tables_as_a_migrated_one() {
        let dir = tempfile::tempdir().unwrap();
        let fresh_path = dir.path().join("fresh.db");
        let mut fresh = Connection::open(&fresh_path).unwrap();
        migrate(&mut fresh, &fresh_path).unwrap();
        let (_dir, path, mut migrated) = version_1();
        migrate(&mut migrated, &path).unwrap();
        // Compare what each table allows, not its text (whitespace and comments differ).
        let columns = |conn: &Connection, table: &str| -> Vec<(String, String, bool)> {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT name, type, \"notnull\" FROM pragma_table_info('{table}')"
                ))
                .unwrap();
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap();
            rows.map(Result::unwrap).collect()
        };
        let names = |conn: &Connection, kind: &str| -> Vec<String> {
            let mut stmt = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = ?1 AND name NOT LIKE 'sqlite_%' ORDER BY name")
                .unwrap();
            let rows = stmt.query_map([kind], |r| r.get(0)).unwrap();
            rows.map(Result::unwrap).collect()
        };
        assert_eq!(names(&fresh, "table"), names(&migrated, "table"));
        assert_eq!(names(&fresh, "index"), names(&migrated, "index"));
        for table in names(&fresh, "table") {
            assert_eq!(
                columns(&fresh, &table),
                columns(&migrated, &table),
                "{table}"
            );
        }
        let sql = |conn: &Connection, table: &str| -> String {
            conn.query_row(
                "SELECT sql FROM sqlite_master WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap()
        };
        for conn in [&fresh, &migrated] {
            assert!(!sql(conn, "events").contains("'sending'"));
            assert!(sql(conn, "run_steps").contains("'reused'"));
        }
    }
}
