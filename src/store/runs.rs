//! Runs, their step traces, and idempotency records.

use rusqlite::{named_params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::domain::{EventState, RunDelivery, RunSource, RunStatus, StepStatus};

/// A run as admitted. JSON columns are pre-serialized by the caller.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub request_id: String,
    pub deployment_key: String,
    pub variant: String,
    pub version: i64,
    pub status: RunStatus,
    pub source: RunSource,
    pub callback_url: Option<String>,
    pub api_key_id: Option<String>,
    pub inputs_json: String,
    pub metadata_json: String,
    pub user: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    /// The run this one reruns (`POST /v1/runs/{id}/rerun`).
    pub rerun_of: Option<String>,
    /// The run whose `workflow` step started this one (source `workflow`).
    pub parent_request_id: Option<String>,
    /// The schedule that started it (source `schedule`), and the due time it serves (`None`
    /// for a trigger).
    pub schedule_id: Option<String>,
    pub scheduled_for: Option<i64>,
    /// `async.events` (JSON array) when the caller chose other than the default.
    pub events_json: Option<String>,
    /// 0–9: queued runs start highest first.
    pub priority: u8,
    /// The rendered `[concurrency] key`, when the deployment has one.
    pub concurrency_key: Option<String>,
}

/// What storing a run's end did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunFinish {
    /// False when the run had already ended (a cancel won the race); nothing was stored.
    pub ended: bool,
    /// The run's event was stored and is due now; false when there is none or it is `held`
    /// behind the run's earlier events (their delivery makes it due).
    pub event_due: bool,
}

/// The terminal state of a run.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    pub request_id: String,
    pub status: RunStatus,
    pub output_json: Option<String>,
    pub error_json: Option<String>,
    pub ended_at: i64,
    /// The summed token usage of its prompt steps (JSON); `None` when none ran.
    pub usage_json: Option<String>,
    /// The completion event of a callback run, stored in the same transaction.
    pub event: Option<super::events::NewEvent>,
}

/// One executed (or skipped) step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub request_id: String,
    pub step_index: i64,
    pub step_id: String,
    pub step_type: String,
    pub status: StepStatus,
    pub started_at: i64,
    pub duration_ms: i64,
    pub output_json: Option<String>,
    pub error: Option<String>,
    pub attempts: i64,
    pub usage_json: Option<String>,
    /// The enclosing `branch`/`loop` step's id; `None` at the top level.
    pub parent: Option<String>,
    /// The enclosing loops' passes, outermost first, joined with `.`; empty outside loops.
    pub passes: String,
    /// Why a `waiting` step waits (`approval`, `child_run`).
    pub reason: Option<String>,
    /// The child run a `workflow` step started.
    pub child_request_id: Option<String>,
}

impl StepRow {
    /// The innermost enclosing loop's pass, if any.
    pub fn pass(&self) -> Option<i64> {
        self.passes.rsplit('.').next().and_then(|p| p.parse().ok())
    }

    /// `passes` as numbers, for ordering (`10` after `9`).
    fn pass_numbers(&self) -> Vec<u64> {
        self.passes
            .split('.')
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// What a run recorded of its steps: the trace (oldest line first), and the approval
/// answers as step id and response JSON.
#[derive(Debug, Clone, Default)]
pub struct StoredTrace {
    pub steps: Vec<StepRow>,
    pub approvals: Vec<(String, String)>,
}

/// A stored run, as read back.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub request_id: String,
    pub deployment_key: String,
    pub variant: String,
    pub version: i64,
    pub status: RunStatus,
    pub source: RunSource,
    pub delivery: RunDelivery,
    pub callback_url: Option<String>,
    pub api_key_id: Option<String>,
    pub inputs_json: String,
    pub metadata_json: String,
    pub user: Option<String>,
    pub output_json: Option<String>,
    pub error_json: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    /// The summed token usage (JSON), set when the run ended.
    pub usage_json: Option<String>,
    pub rerun_of: Option<String>,
    /// The run whose `workflow` step started this one.
    pub parent_request_id: Option<String>,
    pub schedule_id: Option<String>,
    pub scheduled_for: Option<i64>,
    /// `async.events` (JSON array); `None`: the default.
    pub events_json: Option<String>,
    pub priority: u8,
    pub concurrency_key: Option<String>,
}

pub(super) fn insert(conn: &Connection, run: &NewRun) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO runs (request_id, deployment_key, variant, version, status, source, delivery,
                           callback_url, api_key_id, inputs, metadata, user, created_at, started_at,
                           rerun_of, parent_request_id, schedule_id, scheduled_for, events,
                           priority, concurrency_key)
         VALUES (:request_id, :deployment_key, :variant, :version, :status, :source, :delivery,
                 :callback_url, :api_key_id, :inputs, :metadata, :user, :created_at, :started_at,
                 :rerun_of, :parent_request_id, :schedule_id, :scheduled_for, :events, :priority,
                 :concurrency_key)",
    )?;
    stmt.execute(named_params! {
        ":request_id": run.request_id,
        ":deployment_key": run.deployment_key,
        ":variant": run.variant,
        ":version": run.version,
        ":status": run.status,
        ":source": run.source,
        ":delivery": if run.callback_url.is_some() { RunDelivery::Callback } else { RunDelivery::Direct },
        ":callback_url": run.callback_url,
        ":api_key_id": run.api_key_id,
        ":inputs": run.inputs_json,
        ":metadata": run.metadata_json,
        ":user": run.user,
        ":created_at": run.created_at,
        ":started_at": run.started_at,
        ":rerun_of": run.rerun_of,
        ":parent_request_id": run.parent_request_id,
        ":schedule_id": run.schedule_id,
        ":scheduled_for": run.scheduled_for,
        ":events": run.events_json,
        ":priority": run.priority,
        ":concurrency_key": run.concurrency_key,
    })?;
    Ok(())
}

/// Stores a rerun with the trace lines it takes over (`reused`), in the caller's
/// transaction: a crash keeps both or neither.
pub(super) fn insert_rerun(
    conn: &Connection,
    run: &NewRun,
    reused: &[StepRow],
) -> rusqlite::Result<()> {
    insert(conn, run)?;
    for step in reused {
        record_step(conn, step)?;
    }
    Ok(())
}

pub(super) fn mark_running(
    conn: &Connection,
    request_id: &str,
    started_at: i64,
) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached(
        "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?2)
         WHERE request_id = ?1 AND status IN ('queued', 'running')",
    )?;
    Ok(stmt.execute((request_id, started_at))? == 1)
}

pub(super) fn record_step(conn: &Connection, step: &StepRow) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO run_steps (request_id, step_index, step_id, step_type, status,
             started_at, duration_ms, output, error, attempts, usage, parent, passes, reason,
             child_request_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    stmt.execute(rusqlite::params![
        step.request_id,
        step.step_index,
        step.step_id,
        step.step_type,
        step.status,
        step.started_at,
        step.duration_ms,
        step.output_json,
        step.error,
        step.attempts,
        step.usage_json,
        step.parent,
        step.passes,
        step.reason,
        step.child_request_id,
    ])?;
    Ok(())
}

/// Stores a child run and its parent's `waiting` trace line naming it, in one transaction:
/// after a crash either both exist (the parent re-attaches to the child) or neither does
/// (the parent starts the child again).
pub(super) fn insert_child(
    conn: &Connection,
    run: &NewRun,
    step: &StepRow,
) -> rusqlite::Result<()> {
    insert(conn, run)?;
    record_step(conn, step)
}

/// How many runs up a run's lineage goes: 1 for a run without a parent, 2 for its child, …
/// Counts at most `cap` levels, so a broken chain cannot loop.
pub(super) fn depth(conn: &Connection, request_id: &str, cap: u32) -> rusqlite::Result<u32> {
    let mut stmt =
        conn.prepare_cached("SELECT parent_request_id FROM runs WHERE request_id = ?1")?;
    let mut depth = 1;
    let mut current = request_id.to_owned();
    while depth < cap {
        let parent: Option<String> = stmt
            .query_row([&current], |row| row.get(0))
            .optional()?
            .flatten();
        match parent {
            Some(p) => {
                depth += 1;
                current = p;
            }
            None => break,
        }
    }
    Ok(depth)
}

/// The live (`queued` or `running`) children of a run.
pub(super) fn live_children(conn: &Connection, request_id: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT request_id FROM runs WHERE parent_request_id = ?1 AND status IN ('queued', 'running')",
    )?;
    let rows = stmt.query_map([request_id], |row| row.get(0))?;
    rows.collect()
}

/// Stores the answer to an approval step, only while the run is `running` with that step
/// `waiting` and no answer yet; answers whether it was stored.
pub(super) fn answer_approval(
    conn: &Connection,
    request_id: &str,
    step_id: &str,
    response_json: &str,
    at: i64,
) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO approval_responses (request_id, step_id, response, responded_at)
         SELECT ?1, ?2, ?3, ?4
         WHERE EXISTS (SELECT 1 FROM runs WHERE request_id = ?1 AND status = 'running')
           AND EXISTS (SELECT 1 FROM run_steps
                       WHERE request_id = ?1 AND step_id = ?2 AND status = 'waiting')
         ON CONFLICT (request_id, step_id) DO NOTHING",
    )?;
    Ok(stmt.execute((request_id, step_id, response_json, at))? == 1)
}

/// The stored approval answers of a run: step id and response JSON.
pub(super) fn approval_responses(
    conn: &Connection,
    request_id: &str,
) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare_cached("SELECT step_id, response FROM approval_responses WHERE request_id = ?1")?;
    let rows = stmt.query_map([request_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// Writes the terminal state unless the run already ended (a cancel may have won the race).
pub(super) fn finish(conn: &Connection, done: &FinishedRun) -> rusqlite::Result<RunFinish> {
    let mut stmt = conn.prepare_cached(
        "UPDATE runs SET status = ?2, output = ?3, error = ?4, ended_at = ?5,
             duration_ms = ?5 - COALESCE(started_at, created_at), usage = ?6
         WHERE request_id = ?1 AND status IN ('queued', 'running')",
    )?;
    let ended = stmt.execute(rusqlite::params![
        done.request_id,
        done.status,
        done.output_json,
        done.error_json,
        done.ended_at,
        done.usage_json,
    ])? == 1;
    let mut event_due = false;
    if ended {
        if let Some(event) = &done.event {
            event_due = super::events::insert(conn, &done.request_id, event, done.ended_at)?;
        }
    }
    Ok(RunFinish { ended, event_due })
}

/// A trace line with the event reporting it (SPEC §11 `step.completed`,
/// `approval.requested`), in the caller's transaction: a crash keeps both or neither.
/// Answers whether the event is due now (not `held` behind the run's earlier events).
pub(super) fn record_step_event(
    conn: &Connection,
    step: &StepRow,
    event: &super::events::NewEvent,
    at: i64,
) -> rusqlite::Result<bool> {
    record_step(conn, step)?;
    super::events::insert(conn, &step.request_id, event, at)
}

pub(super) fn save_idempotent(
    conn: &Connection,
    api_key_id: &str,
    idempotency_key: &str,
    request_id: &str,
    response: &str,
    at: i64,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (api_key_id, idempotency_key, request_id, response, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    stmt.execute((api_key_id, idempotency_key, request_id, response, at))?;
    Ok(())
}

const RUN_COLUMNS: &str = "request_id, deployment_key, variant, version, status, source, delivery,
    callback_url, api_key_id, inputs, metadata, user, output, error, created_at, started_at,
    ended_at, duration_ms, usage, rerun_of, parent_request_id, schedule_id, scheduled_for,
    events, priority, concurrency_key";

/// How many columns `RUN_COLUMNS` names (what a query adds comes after them).
const RUN_COLUMN_COUNT: usize = 26;

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        request_id: row.get(0)?,
        deployment_key: row.get(1)?,
        variant: row.get(2)?,
        version: row.get(3)?,
        status: row.get(4)?,
        source: row.get(5)?,
        delivery: row.get(6)?,
        callback_url: row.get(7)?,
        api_key_id: row.get(8)?,
        inputs_json: row.get(9)?,
        metadata_json: row.get(10)?,
        user: row.get(11)?,
        output_json: row.get(12)?,
        error_json: row.get(13)?,
        created_at: row.get(14)?,
        started_at: row.get(15)?,
        ended_at: row.get(16)?,
        duration_ms: row.get(17)?,
        usage_json: row.get(18)?,
        rerun_of: row.get(19)?,
        parent_request_id: row.get(20)?,
        schedule_id: row.get(21)?,
        scheduled_for: row.get(22)?,
        events_json: row.get(23)?,
        priority: row.get(24)?,
        concurrency_key: row.get(25)?,
    })
}

pub(super) fn get_run(conn: &Connection, request_id: &str) -> rusqlite::Result<Option<RunRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE request_id = ?1"
    ))?;
    stmt.query_row([request_id], run_from_row).optional()
}

pub(super) fn get_steps(conn: &Connection, request_id: &str) -> rusqlite::Result<Vec<StepRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT request_id, step_index, step_id, step_type, status, started_at, duration_ms,
                output, error, attempts, usage, parent, passes, reason, child_request_id
         FROM run_steps WHERE request_id = ?1 ORDER BY step_index, passes, started_at",
    )?;
    let rows = stmt.query_map([request_id], |row| {
        Ok(StepRow {
            request_id: row.get(0)?,
            step_index: row.get(1)?,
            step_id: row.get(2)?,
            step_type: row.get(3)?,
            status: row.get(4)?,
            started_at: row.get(5)?,
            duration_ms: row.get(6)?,
            output_json: row.get(7)?,
            error: row.get(8)?,
            attempts: row.get(9)?,
            usage_json: row.get(10)?,
            parent: row.get(11)?,
            passes: row.get(12)?,
            reason: row.get(13)?,
            child_request_id: row.get(14)?,
        })
    })?;
    let mut steps = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    // Loop passes in number order (`2` before `10`); a stable sort keeps the rest as read.
    steps.sort_by_cached_key(|s| (s.step_index, s.pass_numbers(), s.started_at));
    Ok(steps)
}

/// The stored first response for an idempotency key, if it is younger than `since`.
pub(super) fn find_idempotent(
    conn: &Connection,
    api_key_id: &str,
    idempotency_key: &str,
    since: i64,
) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT response FROM idempotency_keys
         WHERE api_key_id = ?1 AND idempotency_key = ?2 AND created_at >= ?3",
    )?;
    stmt.query_row((api_key_id, idempotency_key, since), |row| row.get(0))
        .optional()
}

/// How long an idempotency record is honoured (SPEC §2); older ones are dead weight.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Deletes up to `limit` finished runs that ended before `ended_before` (Unix ms), oldest
/// first, with their step trace, approval answers, event and attempts (`ON DELETE CASCADE`).
/// A run whose event still waits for delivery is kept until the event is delivered or
/// failed. Idempotency records past their 24-hour window go too (at most `limit`).
/// Returns the number of runs deleted.
pub(super) fn purge_finished(
    conn: &Connection,
    ended_before: i64,
    limit: usize,
    now_ms: i64,
) -> rusqlite::Result<usize> {
    // Run ids sort by creation time and a run ends after it is created, so the primary-key
    // range bounds the scan to old runs.
    let purged = conn
        .prepare_cached(
            "DELETE FROM runs WHERE request_id IN (
                 SELECT r.request_id FROM runs r
                 WHERE r.request_id < ?1
                   AND r.status IN ('completed', 'failed', 'cancelled')
                   AND r.ended_at < ?2
                   AND NOT EXISTS (SELECT 1 FROM events e WHERE e.request_id = r.request_id
                                   AND e.state IN ('held', 'pending', 'retrying'))
                 ORDER BY r.request_id LIMIT ?3)",
        )?
        .execute(rusqlite::params![
            request_id_at(ended_before),
            ended_before,
            limit as i64
        ])?;
    conn.prepare_cached(
        "DELETE FROM idempotency_keys WHERE (api_key_id, idempotency_key) IN (
             SELECT api_key_id, idempotency_key FROM idempotency_keys
             WHERE created_at < ?1 LIMIT ?2)",
    )?
    .execute(rusqlite::params![
        now_ms - IDEMPOTENCY_WINDOW_MS,
        limit as i64
    ])?;
    Ok(purged)
}

/// Runs left `queued` or `running` (by a crash or a stop), oldest first.
pub(super) fn load_unfinished(conn: &Connection) -> rusqlite::Result<Vec<RunRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE status IN ('queued', 'running') ORDER BY created_at, request_id"
    ))?;
    let rows = stmt.query_map([], run_from_row)?;
    rows.collect()
}

/// Filters of `GET /v1/runs`; every field narrows the result.
#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    /// Exactly this run (`q=req_…`).
    pub request_id: Option<String>,
    pub deployment: Option<String>,
    pub variant: Option<String>,
    pub status: Option<RunStatus>,
    pub delivery: Option<RunDelivery>,
    pub source: Option<RunSource>,
    pub api_key_id: Option<String>,
    pub user: Option<String>,
    /// Runs started by this schedule.
    pub schedule_id: Option<String>,
    /// The state of the run's last event (SPEC §13).
    pub delivery_state: Option<DeliveryStateFilter>,
    /// `status=waiting`: running runs paused at an unanswered approval step.
    pub waiting: bool,
    /// Child runs of this run (`workflow` steps).
    pub parent: Option<String>,
    /// Inclusive lower bound on `created_at` (Unix ms).
    pub since_ms: Option<i64>,
    /// Exclusive upper bound on `created_at` (Unix ms).
    pub until_ms: Option<i64>,
    /// `meta.<key>`: the key exists; `meta.<key>=<value>`: equals that scalar (as text).
    pub meta: Vec<(String, Option<String>)>,
    /// Only runs with a smaller (older) request id: the cursor.
    pub before_request_id: Option<String>,
    pub limit: usize,
}

/// `delivery_state=` of `GET /v1/runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStateFilter {
    /// A callback run without an event yet: it has not ended.
    NotStarted,
    /// The run's last event is `held`: it waits behind the run's earlier events. The
    /// circuit breaker's pauses live in memory only, so they are not a stored state.
    Paused,
    State(EventState),
}

impl DeliveryStateFilter {
    pub const NAMES: [&'static str; 6] = [
        "not_started",
        "pending",
        "retrying",
        "paused",
        "delivered",
        "failed",
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "not_started" => Self::NotStarted,
            "paused" | "held" => Self::Paused,
            "pending" => Self::State(EventState::Pending),
            "retrying" => Self::State(EventState::Retrying),
            "delivered" => Self::State(EventState::Delivered),
            "failed" => Self::State(EventState::Failed),
            _ => return None,
        })
    }
}

/// A run row for the list, with its delivery state.
#[derive(Debug, Clone)]
pub struct RunListItem {
    pub run: RunRecord,
    pub delivery_state: Option<EventState>,
    pub attempts: Option<i64>,
}

/// The UUIDv7 request id of the first run at or after `ms`: run ids sort by creation time,
/// so time bounds become primary-key ranges.
fn request_id_at(ms: i64) -> String {
    format!("req_{:012x}", ms.max(0))
}

/// Newest first, at most `filter.limit` (+1 to tell whether another page exists).
pub(super) fn list_runs(
    conn: &Connection,
    filter: &RunFilter,
) -> rusqlite::Result<Vec<RunListItem>> {
    use rusqlite::types::Value as Sql;
    debug_assert_eq!(RUN_COLUMNS.split(',').count(), RUN_COLUMN_COUNT);
    let mut sql = format!(
        "SELECT {}, e.state, e.total_attempts FROM runs r LEFT JOIN events e ON e.event_id =
             (SELECT event_id FROM events WHERE request_id = r.request_id ORDER BY seq DESC LIMIT 1)
         WHERE 1 = 1",
        RUN_COLUMNS
            .split(',')
            .map(|c| format!("r.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut args: Vec<Sql> = Vec::new();
    let mut eq = |sql: &mut String, column: &str, value: Option<&str>| {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(Sql::Text(v.to_owned()));
        }
    };
    eq(&mut sql, "r.request_id", filter.request_id.as_deref());
    eq(&mut sql, "r.deployment_key", filter.deployment.as_deref());
    eq(&mut sql, "r.variant", filter.variant.as_deref());
    eq(&mut sql, "r.status", filter.status.map(RunStatus::as_str));
    eq(
        &mut sql,
        "r.delivery",
        filter.delivery.map(RunDelivery::as_str),
    );
    eq(&mut sql, "r.source", filter.source.map(RunSource::as_str));
    eq(&mut sql, "r.api_key_id", filter.api_key_id.as_deref());
    eq(&mut sql, "r.user", filter.user.as_deref());
    eq(&mut sql, "r.schedule_id", filter.schedule_id.as_deref());
    eq(&mut sql, "r.parent_request_id", filter.parent.as_deref());
    match filter.delivery_state {
        None => {}
        Some(DeliveryStateFilter::NotStarted) => {
            sql.push_str(" AND r.callback_url IS NOT NULL AND e.state IS NULL");
        }
        Some(DeliveryStateFilter::Paused) => sql.push_str(" AND e.state = 'held'"),
        Some(DeliveryStateFilter::State(state)) => {
            if state.is_due() {
                // Due events are few and `events_due` lists them (its WHERE term repeated
                // so the planner may use the partial index): they drive the query.
                // The name is one of the enum's own constants, never caller text.
                sql.push_str(&format!(
                    " AND r.request_id IN (SELECT request_id FROM events
                         WHERE state IN ('pending', 'retrying') AND state = '{}')",
                    state.as_str()
                ));
            }
            eq(&mut sql, "e.state", Some(state.as_str()));
        }
    }
    if filter.waiting {
        // `runs_by_status` narrows to running runs; each is checked by its primary keys.
        sql.push_str(
            " AND r.status = 'running' AND EXISTS (
                 SELECT 1 FROM run_steps s WHERE s.request_id = r.request_id
                   AND s.status = 'waiting' AND s.reason = 'approval'
                   AND NOT EXISTS (SELECT 1 FROM approval_responses a
                                   WHERE a.request_id = s.request_id AND a.step_id = s.step_id))",
        );
    }
    if let Some(ms) = filter.since_ms {
        sql.push_str(" AND r.request_id >= ?");
        args.push(Sql::Text(request_id_at(ms)));
    }
    if let Some(ms) = filter.until_ms {
        sql.push_str(" AND r.request_id < ?");
        args.push(Sql::Text(request_id_at(ms)));
    }
    if let Some(cursor) = &filter.before_request_id {
        sql.push_str(" AND r.request_id < ?");
        args.push(Sql::Text(cursor.clone()));
    }
    for (key, value) in &filter.meta {
        let path = format!("$.\"{}\"", key.replace('"', ""));
        match value {
            None => {
                sql.push_str(" AND json_type(r.metadata, ?) IS NOT NULL");
                args.push(Sql::Text(path));
            }
            Some(v) => {
                // Compare as text so `meta.n=5` matches the number 5 and the string "5".
                sql.push_str(" AND CAST(json_extract(r.metadata, ?) AS TEXT) = ?");
                args.push(Sql::Text(path));
                let v = match v.as_str() {
                    "true" => "1".to_string(),
                    "false" => "0".to_string(),
                    other => other.to_string(),
                };
                args.push(Sql::Text(v));
            }
        }
    }
    sql.push_str(" ORDER BY r.request_id DESC LIMIT ?");
    args.push(Sql::Integer(filter.limit as i64 + 1));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |row| {
        Ok(RunListItem {
            run: run_from_row(row)?,
            // After the run's own columns.
            delivery_state: row.get(RUN_COLUMN_COUNT)?,
            attempts: row.get(RUN_COLUMN_COUNT + 1)?,
        })
    })?;
    rows.collect()
}

/// The run an event belongs to.
pub(super) fn run_of_event(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT request_id FROM events WHERE event_id = ?1")?
        .query_row([event_id], |row| row.get(0))
        .optional()
}

/// The run's last event (its end once it ended): id, type and the exact body as sent.
pub(super) fn last_event_body(
    conn: &Connection,
    request_id: &str,
) -> rusqlite::Result<Option<(String, String, Vec<u8>)>> {
    conn.prepare_cached(
        "SELECT event_id, event_type, body FROM events WHERE request_id = ?1
         ORDER BY seq DESC LIMIT 1",
    )?
    .query_row([request_id], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    })
    .optional()
}

/// What `GET /v1/stats` sums up, read for runs created at or after `since_ms`.
#[derive(Debug, Default, Clone)]
pub struct StatsRows {
    /// created_at, status, duration_ms, total tokens.
    pub runs: Vec<(i64, RunStatus, Option<i64>, Option<i64>)>,
    /// The events' created_at and current state.
    pub events: Vec<(i64, EventState)>,
    /// Delivered attempts: started_at and duration_ms.
    pub deliveries: Vec<(i64, i64)>,
    /// True when a cap cut a read short.
    pub truncated: bool,
}

/// The rows of the stats window. Every read is a range of run ids (they sort by creation
/// time) on a primary key or index, and stops after `cap` rows.
pub(super) fn stats_rows(
    conn: &Connection,
    since_ms: i64,
    cap: usize,
) -> rusqlite::Result<StatsRows> {
    let from = request_id_at(since_ms);
    let limit = cap as i64 + 1;
    let mut out = StatsRows::default();
    let mut stmt = conn.prepare_cached(
        "SELECT created_at, status, duration_ms,
                CAST(json_extract(usage, '$.total_tokens') AS INTEGER)
         FROM runs WHERE request_id >= ?1 LIMIT ?2",
    )?;
    out.runs = stmt
        .query_map(rusqlite::params![from, limit], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT created_at, state FROM events WHERE request_id >= ?1 AND created_at >= ?2 LIMIT ?3",
    )?;
    out.events = stmt
        .query_map(rusqlite::params![from, since_ms, limit], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT started_at, duration_ms FROM attempts
         WHERE request_id >= ?1 AND started_at >= ?2 AND outcome = 'delivered' LIMIT ?3",
    )?;
    out.deliveries = stmt
        .query_map(rusqlite::params![from, since_ms, limit], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for rows in [out.runs.len(), out.events.len(), out.deliveries.len()] {
        out.truncated |= rows > cap;
    }
    out.runs.truncate(cap);
    out.events.truncate(cap);
    out.deliveries.truncate(cap);
    Ok(out)
}
