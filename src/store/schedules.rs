//! Schedules (SPEC §12) and the one write that fires them: the run it starts and the
//! schedule's next fire are stored in the same transaction, so a crash neither skips nor
//! doubles a fire.

use rusqlite::{named_params, Connection, OptionalExtension, Row};

use super::commands::Command;
use super::runs::{self, NewRun};
use super::writer::Apply;

/// A schedule as stored. JSON columns are pre-serialized by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    pub schedule_id: String,
    /// Set for the `[[schedules]]` of a workflow file: they are found again by it.
    pub name: Option<String>,
    pub deployment_key: String,
    pub variant: String,
    pub inputs_json: String,
    pub metadata_json: String,
    pub user: Option<String>,
    pub cron: Option<String>,
    pub every: Option<String>,
    pub timezone: String,
    pub callback_url: Option<String>,
    pub active: bool,
    pub catch_up: String,
    /// `None` while paused.
    pub next_run_at: Option<i64>,
    pub last_request_id: Option<String>,
    pub last_run_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Stores a new schedule.
#[derive(Debug, Clone)]
pub struct InsertSchedule(pub ScheduleRecord);

/// Replaces what a schedule is (everything but its id, creation and last run). Its next
/// fire is replaced only when `reset_next` is set (the timetable or `active` changed), so
/// an edit racing a fire cannot bring back a fire already stored. Answers whether it exists.
#[derive(Debug, Clone)]
pub struct UpdateSchedule {
    pub schedule: ScheduleRecord,
    pub reset_next: bool,
}

/// Removes a schedule (its runs stay). Answers whether it existed.
#[derive(Debug, Clone)]
pub struct DeleteSchedule {
    pub schedule_id: String,
}

/// One fire: stores `run` (if any) and moves the schedule's next fire to `next_run_at`, in
/// one transaction. With `expected_next` set, nothing is stored unless the stored next fire
/// is still that one (the schedule was not edited, paused or deleted meanwhile); a trigger
/// leaves the next fire alone. Answers whether it was stored.
#[derive(Debug, Clone)]
pub struct FireSchedule {
    pub schedule_id: String,
    pub advance: Option<Advance>,
    pub run: Option<NewRun>,
    pub at: i64,
}

/// The move of a schedule's next fire.
#[derive(Debug, Clone, Copy)]
pub struct Advance {
    pub expected_next: i64,
    pub next_run_at: Option<i64>,
}

impl Command for InsertSchedule {
    type Output = ();
}
impl Command for UpdateSchedule {
    type Output = bool;
}
impl Command for DeleteSchedule {
    type Output = bool;
}
impl Command for FireSchedule {
    type Output = bool;
}

impl Apply for InsertSchedule {
    const SEVERAL_STATEMENTS: bool = false;

    fn apply(&self, conn: &Connection) -> rusqlite::Result<()> {
        let s = &self.0;
        conn.prepare_cached(
            "INSERT INTO schedules (schedule_id, name, deployment_key, variant, inputs, metadata,
                 user, cron, every, timezone, callback_url, active, catch_up, next_run_at,
                 last_request_id, last_run_at, created_at, updated_at)
             VALUES (:id, :name, :deployment, :variant, :inputs, :metadata, :user, :cron, :every,
                 :timezone, :callback_url, :active, :catch_up, :next_run_at, :last_request_id,
                 :last_run_at, :created_at, :updated_at)",
        )?
        .execute(named_params! {
            ":id": s.schedule_id,
            ":name": s.name,
            ":deployment": s.deployment_key,
            ":variant": s.variant,
            ":inputs": s.inputs_json,
            ":metadata": s.metadata_json,
            ":user": s.user,
            ":cron": s.cron,
            ":every": s.every,
            ":timezone": s.timezone,
            ":callback_url": s.callback_url,
            ":active": s.active,
            ":catch_up": s.catch_up,
            ":next_run_at": s.next_run_at,
            ":last_request_id": s.last_request_id,
            ":last_run_at": s.last_run_at,
            ":created_at": s.created_at,
            ":updated_at": s.updated_at,
        })?;
        Ok(())
    }
}

impl Apply for UpdateSchedule {
    const SEVERAL_STATEMENTS: bool = false;

    fn apply(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let s = &self.schedule;
        let changed = conn
            .prepare_cached(
                "UPDATE schedules SET name = :name, deployment_key = :deployment, variant = :variant,
                     inputs = :inputs, metadata = :metadata, user = :user, cron = :cron,
                     every = :every, timezone = :timezone, callback_url = :callback_url,
                     active = :active, catch_up = :catch_up, updated_at = :updated_at,
                     next_run_at = CASE WHEN :reset THEN :next_run_at ELSE next_run_at END
                 WHERE schedule_id = :id",
            )?
            .execute(named_params! {
                ":id": s.schedule_id,
                ":name": s.name,
                ":deployment": s.deployment_key,
                ":variant": s.variant,
                ":inputs": s.inputs_json,
                ":metadata": s.metadata_json,
                ":user": s.user,
                ":cron": s.cron,
                ":every": s.every,
                ":timezone": s.timezone,
                ":callback_url": s.callback_url,
                ":active": s.active,
                ":catch_up": s.catch_up,
                ":updated_at": s.updated_at,
                ":reset": self.reset_next,
                ":next_run_at": s.next_run_at,
            })?;
        Ok(changed == 1)
    }
}

impl Apply for DeleteSchedule {
    const SEVERAL_STATEMENTS: bool = false;

    fn apply(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let n = conn
            .prepare_cached("DELETE FROM schedules WHERE schedule_id = ?1")?
            .execute([&self.schedule_id])?;
        Ok(n == 1)
    }
}

impl Apply for FireSchedule {
    const SEVERAL_STATEMENTS: bool = true;

    fn apply(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let last_request_id = self.run.as_ref().map(|r| r.request_id.as_str());
        let updated = match self.advance {
            Some(advance) => conn
                .prepare_cached(
                    "UPDATE schedules SET next_run_at = ?3,
                         last_request_id = COALESCE(?4, last_request_id),
                         last_run_at = CASE WHEN ?4 IS NULL THEN last_run_at ELSE ?5 END
                     WHERE schedule_id = ?1 AND active AND next_run_at = ?2",
                )?
                .execute(rusqlite::params![
                    self.schedule_id,
                    advance.expected_next,
                    advance.next_run_at,
                    last_request_id,
                    self.at
                ])?,
            None => conn
                .prepare_cached(
                    "UPDATE schedules SET last_request_id = COALESCE(?2, last_request_id),
                         last_run_at = CASE WHEN ?2 IS NULL THEN last_run_at ELSE ?3 END
                     WHERE schedule_id = ?1",
                )?
                .execute(rusqlite::params![
                    self.schedule_id,
                    last_request_id,
                    self.at
                ])?,
        };
        if updated != 1 {
            return Ok(false);
        }
        if let Some(run) = &self.run {
            runs::insert(conn, run)?;
        }
        Ok(true)
    }
}

const COLUMNS: &str = "schedule_id, name, deployment_key, variant, inputs, metadata, user, cron,
    every, timezone, callback_url, active, catch_up, next_run_at, last_request_id, last_run_at,
    created_at, updated_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        schedule_id: row.get(0)?,
        name: row.get(1)?,
        deployment_key: row.get(2)?,
        variant: row.get(3)?,
        inputs_json: row.get(4)?,
        metadata_json: row.get(5)?,
        user: row.get(6)?,
        cron: row.get(7)?,
        every: row.get(8)?,
        timezone: row.get(9)?,
        callback_url: row.get(10)?,
        active: row.get(11)?,
        catch_up: row.get(12)?,
        next_run_at: row.get(13)?,
        last_request_id: row.get(14)?,
        last_run_at: row.get(15)?,
        created_at: row.get(16)?,
        updated_at: row.get(17)?,
    })
}

/// Every schedule, oldest first.
pub(super) fn list(conn: &Connection) -> rusqlite::Result<Vec<ScheduleRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedules ORDER BY created_at, schedule_id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    rows.collect()
}

pub(super) fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<ScheduleRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE schedule_id = ?1"
    ))?
    .query_row([id], from_row)
    .optional()
}
