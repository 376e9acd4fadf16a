//! Callback events (the outbox) and their delivery attempts.
//!
//! A run may have several events (SPEC §11 lifecycle webhooks), numbered by `seq`. Only the
//! head of a run's queue is due (`pending`/`retrying`); the ones after it wait as `held`, and
//! the write that settles the head for good (delivered or failed) makes the next one due in
//! the same transaction. The due set the supervisor reads therefore never holds two events of
//! one run, and a restart needs nothing but the table to keep the order.

use rusqlite::{Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::domain::{AttemptOutcome, ErrorKind, EventState};

/// An event written in the same transaction as what it reports (the run's end, a step's
/// trace line).
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
    /// The event's place in its run's delivery order, from 1.
    pub seq: i64,
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

/// Stores the run's next event, last in its queue. Answers whether it is due now: `false`
/// when an earlier event of the run still waits for delivery, so this one is `held`.
pub(super) fn insert(
    conn: &Connection,
    request_id: &str,
    event: &NewEvent,
    at: i64,
) -> rusqlite::Result<bool> {
    let (seq, waiting): (i64, bool) = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(seq), 0) + 1,
                    COALESCE(MAX(state IN ('held', 'pending', 'retrying')), 0)
             FROM events WHERE request_id = ?1",
        )?
        .query_row([request_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let (state, next_attempt_at) = if waiting {
        (EventState::Held, None)
    } else {
        (EventState::Pending, Some(at))
    };
    conn.prepare_cached(
        "INSERT INTO events (event_id, request_id, seq, deployment_key, event_type, callback_url, body,
                             state, next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    )?
    .execute(rusqlite::params![
        event.event_id,
        request_id,
        seq,
        event.deployment_key,
        event.event_type,
        event.callback_url,
        event.body,
        state,
        next_attempt_at,
        at
    ])?;
    Ok(!waiting)
}

/// After the run's due event settled for good: its first `held` event becomes due at `at`,
/// unless another of its events is still due (a redelivery). Answers that event.
fn promote_next(
    conn: &Connection,
    request_id: &str,
    at: i64,
) -> rusqlite::Result<Option<DueEvent>> {
    let next: Option<String> = conn
        .prepare_cached(
            "SELECT event_id FROM events WHERE request_id = ?1 AND state = 'held'
               AND NOT EXISTS (SELECT 1 FROM events WHERE request_id = ?1
                               AND state IN ('pending', 'retrying'))
             ORDER BY seq LIMIT 1",
        )?
        .query_row([request_id], |row| row.get(0))
        .optional()?;
    let Some(event_id) = next else {
        return Ok(None);
    };
    conn.prepare_cached(
        "UPDATE events SET state = 'pending', next_attempt_at = ?2, updated_at = ?2 WHERE event_id = ?1",
    )?
    .execute((&event_id, at))?;
    conn.prepare_cached(&format!("{DUE_SELECT} WHERE event_id = ?1"))?
        .query_row([&event_id], due_from_row)
        .optional()
}

/// Records an attempt and the event's new state. When that settles the event for good, the
/// run's next event becomes due: answers it.
pub(super) fn record_attempt(
    conn: &Connection,
    attempt: &AttemptRow,
    update: &EventUpdate,
) -> rusqlite::Result<Option<DueEvent>> {
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
    if update.state.is_due() {
        return Ok(None);
    }
    promote_next(
        conn,
        &attempt.request_id,
        attempt.started_at + attempt.duration_ms,
    )
}

/// The run's last event (its terminal one once the run ended).
const LAST_EVENT: &str =
    "(SELECT event_id FROM events WHERE request_id = ?1 ORDER BY seq DESC LIMIT 1)";

/// Starts a new attempt series for one of the run's events (`event_id`), or its last one;
/// returns it, due now. A `held` event is left to wait for the ones before it (`None`).
pub(super) fn redeliver(
    conn: &Connection,
    request_id: &str,
    event_id: Option<&str>,
    at: i64,
) -> rusqlite::Result<Option<DueEvent>> {
    let target: Option<String> = match event_id {
        Some(id) => conn
            .prepare_cached("SELECT event_id FROM events WHERE request_id = ?1 AND event_id = ?2")?
            .query_row((request_id, id), |row| row.get(0))
            .optional()?,
        None => conn
            .prepare_cached(&format!("SELECT {LAST_EVENT}"))?
            .query_row([request_id], |row| row.get(0))?,
    };
    let Some(target) = target else {
        return Ok(None);
    };
    let changed = conn
        .prepare_cached(
            "UPDATE events SET state = 'pending', series = series + 1, attempts = 0, next_attempt_at = ?2,
                 failure_reason = NULL, updated_at = ?2
             WHERE event_id = ?1 AND state <> 'held'",
        )?
        .execute((&target, at))?;
    if changed == 0 {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(&format!("{DUE_SELECT} WHERE event_id = ?1"))?;
    stmt.query_row([&target], due_from_row).optional()
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

const EVENT_RECORD_SELECT: &str = "SELECT event_id, request_id, event_type, callback_url, state,
    series, attempts, total_attempts, next_attempt_at, failure_reason, created_at, updated_at, seq
    FROM events";

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<EventRecord> {
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
        seq: row.get(12)?,
    })
}

/// The run's last event: its terminal one once the run ended.
pub(super) fn event_for_run(
    conn: &Connection,
    request_id: &str,
) -> rusqlite::Result<Option<EventRecord>> {
    conn.prepare_cached(&format!(
        "{EVENT_RECORD_SELECT} WHERE event_id = {LAST_EVENT}"
    ))?
    .query_row([request_id], record_from_row)
    .optional()
}

/// Every event of the run, in delivery order.
pub(super) fn events_for_run(
    conn: &Connection,
    request_id: &str,
) -> rusqlite::Result<Vec<EventRecord>> {
    conn.prepare_cached(&format!(
        "{EVENT_RECORD_SELECT} WHERE request_id = ?1 ORDER BY seq"
    ))?
    .query_map([request_id], record_from_row)?
    .collect()
}

pub(super) fn attempts_for_run(
    conn: &Connection,
    request_id: &str,
) -> rusqlite::Result<Vec<AttemptRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT attempt_id, event_id, request_id, attempt_number, series, url, request_headers, status_code,
                error_kind, error_message, response_headers, response_body, started_at, duration_ms, outcome,
                next_attempt_at
         FROM attempts WHERE request_id = ?1 ORDER BY started_at, attempt_number",
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

/// Up to `limit` events still to deliver whose (due time, id) comes after `after` (from the
/// first when `None`), in that order: one page of the delivery schedule. An attempt cut short
/// by a crash counts as due. The `events_due` index holds exactly these rows in due order, and
/// its entries end with the table's key (`event_id`), so the row-value comparison seeks
/// straight to the page: reading it costs the page, not the backlog before it.
pub(super) fn due_page(
    conn: &Connection,
    after: Option<(i64, &str)>,
    limit: usize,
) -> rusqlite::Result<Vec<DueEvent>> {
    const DUE: &str = "state IN ('pending', 'retrying')";
    const ORDER: &str = "ORDER BY next_attempt_at, event_id LIMIT ?";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    match after {
        None => conn
            .prepare_cached(&format!("{DUE_SELECT} WHERE {DUE} {ORDER}"))?
            .query_map([limit], due_from_row)?
            .collect(),
        Some((at, event_id)) => conn
            .prepare_cached(&format!(
                "{DUE_SELECT} WHERE {DUE} AND (next_attempt_at, event_id) > (?, ?) {ORDER}"
            ))?
            .query_map(rusqlite::params![at, event_id, limit], due_from_row)?
            .collect(),
    }
}

/// The due events from (?1, ?2) on, up to (?3, ?4) unless ?5, in due order.
const DUE_RANGE: &str = "WHERE state IN ('pending', 'retrying')
    AND (next_attempt_at, event_id) >= (?1, ?2)
    AND (?5 OR (next_attempt_at, event_id) <= (?3, ?4))
    ORDER BY next_attempt_at, event_id";

/// Up to `limit` events still to deliver whose callback URL `keep` accepts, from `from`
/// (inclusive) up to `until` (inclusive; no bound when `None`) in (due time, id) order: a page
/// of one destination's overflow in the delivery schedule. It walks the `events_due` index
/// from `from` and stops at the limit; the rows of other destinations it passes are the ones
/// the schedule holds in memory or other destinations' overflow, so the walk stays short.
pub(super) fn due_page_where(
    conn: &Connection,
    from: (i64, &str),
    until: Option<(i64, &str)>,
    limit: usize,
    keep: &dyn Fn(&str) -> bool,
) -> rusqlite::Result<Vec<DueEvent>> {
    let (until_at, until_id) = until.unwrap_or((i64::MAX, ""));
    let mut stmt = conn.prepare_cached(&format!("{DUE_SELECT} {DUE_RANGE}"))?;
    let mut rows = stmt.query(rusqlite::params![
        from.0,
        from.1,
        until_at,
        until_id,
        until.is_none()
    ])?;
    let mut page = Vec::new();
    while page.len() < limit {
        let Some(row) = rows.next()? else { break };
        // The body is read only for the rows kept.
        let url: String = row.get(3)?;
        if keep(&url) {
            page.push(due_from_row(row)?);
        }
    }
    Ok(page)
}

impl super::Store {
    /// One page of the events still to deliver, after `after` in (due time, id) order; see
    /// [`due_page`].
    pub async fn due_events_after(
        &self,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> super::StoreResult<Vec<DueEvent>> {
        self.read(move |conn| {
            due_page(
                conn,
                after.as_ref().map(|(at, id)| (*at, id.as_str())),
                limit,
            )
        })
        .await
    }

    /// One page of the events still to deliver to the callback URLs `keep` accepts, from
    /// `from` up to `until`; see [`due_page_where`].
    pub async fn due_events_of(
        &self,
        from: (i64, String),
        until: Option<(i64, String)>,
        limit: usize,
        keep: impl Fn(&str) -> bool + Send + 'static,
    ) -> super::StoreResult<Vec<DueEvent>> {
        self.read(move |conn| {
            due_page_where(
                conn,
                (from.0, from.1.as_str()),
                until.as_ref().map(|(at, id)| (*at, id.as_str())),
                limit,
                &keep,
            )
        })
        .await
    }

    /// [`Store::due_events_after`] on the calling thread (start-up).
    pub fn due_events_after_blocking(
        &self,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> super::StoreResult<Vec<DueEvent>> {
        self.read_blocking(|conn| {
            due_page(
                conn,
                after.as_ref().map(|(at, id)| (*at, id.as_str())),
                limit,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due_db(rows: &[(&str, i64, &str)]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../schema.sql"))
            .unwrap();
        for (n, (id, at, state)) in rows.iter().enumerate() {
            conn.execute(
                "INSERT INTO runs (request_id, deployment_key, variant, version, status, source, delivery,
                                   inputs, metadata, created_at)
                 VALUES (?1, 'd', 'default', 1, 'completed', 'api', 'callback', '{}', '{}', 0)",
                [format!("req_{n}")],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO events (event_id, request_id, deployment_key, event_type, callback_url, body,
                                     state, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, 'd', 'run.completed', 'http://h/', X'7B7D', ?3, ?4, 0, 0)",
                rusqlite::params![id, format!("req_{n}"), state, at],
            )
            .unwrap();
        }
        conn
    }

    fn page_ids(conn: &Connection, after: Option<(i64, &str)>, limit: usize) -> Vec<String> {
        due_page(conn, after, limit)
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect()
    }

    #[test]
    fn pages_walk_the_due_events_in_order_once_each() {
        let conn = due_db(&[
            ("evt_c", 10, "pending"),
            ("evt_a", 10, "retrying"),
            ("evt_b", 5, "pending"),
            ("evt_d", 20, "delivered"),
            ("evt_e", 30, "failed"),
            ("evt_f", 40, "pending"),
        ]);
        assert_eq!(page_ids(&conn, None, 2), ["evt_b", "evt_a"]);
        assert_eq!(page_ids(&conn, Some((10, "evt_a")), 2), ["evt_c", "evt_f"]);
        assert_eq!(
            page_ids(&conn, Some((40, "evt_f")), 2),
            Vec::<String>::new()
        );
        assert_eq!(
            page_ids(&conn, Some((9, "evt_z")), 10),
            ["evt_a", "evt_c", "evt_f"]
        );
    }

    #[test]
    fn a_destination_page_keeps_its_urls_within_the_bounds() {
        let conn = due_db(&[
            ("evt_a", 1, "pending"),
            ("evt_b", 2, "pending"),
            ("evt_c", 3, "pending"),
            ("evt_d", 4, "pending"),
            ("evt_e", 5, "delivered"),
            ("evt_f", 6, "pending"),
        ]);
        conn.execute(
            "UPDATE events SET callback_url = 'http://other/' WHERE event_id IN ('evt_b', 'evt_d')",
            [],
        )
        .unwrap();
        let ids = |from, until, limit| -> Vec<String> {
            due_page_where(&conn, from, until, limit, &|url: &str| url == "http://h/")
                .unwrap()
                .into_iter()
                .map(|e| e.event_id)
                .collect()
        };
        assert_eq!(ids((1, "evt_a"), None, 10), ["evt_a", "evt_c", "evt_f"]);
        assert_eq!(ids((1, "evt_b"), None, 2), ["evt_c", "evt_f"]);
        assert_eq!(
            ids((1, "evt_a"), Some((3, "evt_c")), 10),
            ["evt_a", "evt_c"]
        );
        assert_eq!(ids((2, "evt_a"), Some((5, "evt_e")), 10), ["evt_c"]);
    }

    fn plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> String {
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        plan.join("; ")
    }

    #[test]
    fn pages_seek_the_due_index() {
        let conn = due_db(&[]);
        let next = plan(
            &conn,
            &format!(
                "{DUE_SELECT} WHERE state IN ('pending', 'retrying')
                 AND (next_attempt_at, event_id) > (?, ?) ORDER BY next_attempt_at, event_id LIMIT ?"
            ),
            rusqlite::params![0, "", 10],
        );
        let range = plan(
            &conn,
            &format!("{DUE_SELECT} {DUE_RANGE}"),
            rusqlite::params![0, "", 5, "", false],
        );
        for plan in [next, range] {
            assert!(plan.contains("USING INDEX events_due"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
            assert!(plan.contains('>'), "a seek, not a scan: {plan}");
        }
    }
}
