//! Completion events (the outbox) and their delivery attempts.

use rusqlite::{Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::domain::{AttemptOutcome, ErrorKind, EventState};

/// An event written in the same transaction as its run's end.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub deployment_key: String,
    pub event_type: String,
    pub callback_url: String,
    pub body: Vec<u8>,
}

/// An event that still has to be delivered, as the retry supervisor holds it.
#[derive(Debug, Clone)]
pub struct DueEvent {
    pub event_id: String,
    pub request_id: String,
    pub deployment_key: String,
    pub callback_url: String,
    pub body: bytes::Bytes,
    pub series: i64,
    /// Attempts made in the current series.
    pub attempts: i64,
    pub total_attempts: i64,
    pub next_attempt_at: i64,
}

/// An event's delivery state, for the log API.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub event_id: String,
    pub request_id: String,
    pub event_type: String,
    pub callback_url: String,
    pub state: EventState,
    pub series: i64,
    pub attempts: i64,
    pub total_attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One recorded attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub attempt_id: String,
    pub event_id: String,
    pub request_id: String,
    pub attempt_number: i64,
    pub series: i64,
    pub url: String,
    pub request_headers_json: String,
    pub status_code: Option<i64>,
    pub error_kind: Option<ErrorKind>,
    pub error_message: Option<String>,
    pub response_headers_json: Option<String>,
    pub response_body: Option<String>,
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    pub next_attempt_at: Option<i64>,
}

/// The event's state after an attempt.
#[derive(Debug, Clone)]
pub struct EventUpdate {
    pub state: EventState,
    pub attempts: i64,
    pub total_attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub failure_reason: Option<String>,
}

pub(super) fn insert(
    conn: &Connection,
    request_id: &str,
    event: &NewEvent,
    at: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (event_id, request_id, deployment_key, event_type, callback_url, body, state,
                             next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7, ?7)",
    )?
    .execute(rusqlite::params![
        event.event_id,
        request_id,
        event.deployment_key,
        event.event_type,
        event.callback_url,
        event.body,
        at
    ])?;
    Ok(())
}

pub(super) fn record_attempt(
    conn: &Connection,
    attempt: &AttemptRow,
    update: &EventUpdate,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO attempts (attempt_id, event_id, request_id, attempt_number, series, url, request_headers,
             status_code, error_kind, error_message, response_headers, response_body, started_at, duration_ms,
             outcome, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(rusqlite::params![
        attempt.attempt_id,
        attempt.event_id,
        attempt.request_id,
        attempt.attempt_number,
        attempt.series,
        attempt.url,
        attempt.request_headers_json,
        attempt.status_code,
        attempt.error_kind,
        attempt.error_message,
        attempt.response_headers_json,
        attempt.response_body,
        attempt.started_at,
        attempt.duration_ms,
        attempt.outcome,
        attempt.next_attempt_at,
    ])?;
    conn.prepare_cached(
        "UPDATE events SET state = ?2, attempts = ?3, total_attempts = ?4, next_attempt_at = ?5,
             failure_reason = ?6, updated_at = ?7
         WHERE event_id = ?1",
    )?
    .execute(rusqlite::params![
        attempt.event_id,
        update.state,
        update.attempts,
        update.total_attempts,
        update.next_attempt_at,
        update.failure_reason,
        attempt.started_at + attempt.duration_ms,
    ])?;
    Ok(())
}

/// Starts a new attempt series for the run's event; returns it, due now.
pub(super) fn redeliver(
    conn: &Connection,
    request_id: &str,
    at: i64,
) -> rusqlite::Result<Option<DueEvent>> {
    let changed = conn
        .prepare_cached(
            "UPDATE events SET state = 'pending', series = series + 1, attempts = 0, next_attempt_at = ?2,
                 failure_reason = NULL, updated_at = ?2
             WHERE request_id = ?1",
        )?
        .execute((request_id, at))?;
    if changed == 0 {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(&format!("{DUE_SELECT} WHERE request_id = ?1"))?;
    stmt.query_row([request_id], due_from_row).optional()
}

const DUE_SELECT: &str =
    "SELECT event_id, request_id, deployment_key, callback_url, body, series, attempts,
    total_attempts, COALESCE(next_attempt_at, 0) FROM events";

fn due_from_row(row: &Row<'_>) -> rusqlite::Result<DueEvent> {
    let body: Vec<u8> = row.get(4)?;
    Ok(DueEvent {
        event_id: row.get(0)?,
        request_id: row.get(1)?,
        deployment_key: row.get(2)?,
        callback_url: row.get(3)?,
        body: body.into(),
        series: row.get(5)?,
        attempts: row.get(6)?,
        total_attempts: row.get(7)?,
        next_attempt_at: row.get(8)?,
    })
}

/// Every event still to deliver (an attempt cut short by a crash counts as due).
pub(super) fn load_due(conn: &Connection) -> rusqlite::Result<Vec<DueEvent>> {
    let mut stmt = conn.prepare(&format!(
        "{DUE_SELECT} WHERE state IN ('pending', 'retrying') ORDER BY next_attempt_at"
    ))?;
    let rows = stmt.query_map([], due_from_row)?;
    rows.collect()
}

pub(super) fn event_for_run(
    conn: &Connection,
    request_id: &str,
) -> rusqlite::Result<Option<EventRecord>> {
    conn.prepare_cached(
        "SELECT event_id, request_id, event_type, callback_url, state, series, attempts, total_attempts,
                next_attempt_at, failure_reason, created_at, updated_at
         FROM events WHERE request_id = ?1",
    )?
    .query_row([request_id], |row| {
        Ok(EventRecord {
            event_id: row.get(0)?,
            request_id: row.get(1)?,
            event_type: row.get(2)?,
            callback_url: row.get(3)?,
            state: row.get(4)?,
            series: row.get(5)?,
            attempts: row.get(6)?,
            total_attempts: row.get(7)?,
            next_attempt_at: row.get(8)?,
            failure_reason: row.get(9)?,
            created_at: row.get(10)?,
            updated_at: row.get(11)?,
        })
    })
    .optional()
}

pub(super) fn attempts_for_run(
    conn: &Connection,
    request_id: &str,
) -> rusqlite::Result<Vec<AttemptRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT attempt_id, event_id, request_id, attempt_number, series, url, request_headers, status_code,
                error_kind, error_message, response_headers, response_body, started_at, duration_ms, outcome,
                next_attempt_at
         FROM attempts WHERE request_id = ?1 ORDER BY attempt_number",
    )?;
    let rows = stmt.query_map([request_id], |row| {
        Ok(AttemptRow {
            attempt_id: row.get(0)?,
            event_id: row.get(1)?,
            request_id: row.get(2)?,
            attempt_number: row.get(3)?,
            series: row.get(4)?,
            url: row.get(5)?,
            request_headers_json: row.get(6)?,
            status_code: row.get(7)?,
            error_kind: row.get(8)?,
            error_message: row.get(9)?,
            response_headers_json: row.get(10)?,
            response_body: row.get(11)?,
            started_at: row.get(12)?,
            duration_ms: row.get(13)?,
            outcome: row.get(14)?,
            next_attempt_at: row.get(15)?,
        })
    })?;
    rows.collect()
}
