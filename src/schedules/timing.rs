//! When a schedule fires: the pure part (no clock, no store), so daylight saving and catch-up
//! are tested on fixed instants.
//!
//! Daylight saving, for a `cron` in a zone that has it:
//! - spring forward: a local time inside the skipped hour (02:30 on the day clocks jump from
//!   02:00 to 03:00) fires once, at the first valid instant after the gap (03:00), and the
//!   schedule goes on as usual the next day;
//! - fall back: a local time inside the repeated hour (01:30) fires once, at its first
//!   occurrence (the earlier offset), not again an hour later.
//!
//! `every` is a fixed duration on a grid anchored at the schedule's creation: wall clocks do
//! not move it.

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// The shortest `every`.
pub const MIN_EVERY_MS: i64 = 1000;
/// Most runs one catch-up starts (`catch_up = "all"`).
pub const MAX_CATCH_UP: usize = 100;
/// A fire this late (or later) counts as missed (the daemon was down or the machine slept)
/// and follows `catch_up`; a fire less late is simply run.
pub const GRACE_MS: i64 = 60_000;

/// What to do with fires missed while hivelet was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Start nothing for them; wait for the next fire.
    Skip,
    /// Start one run, for the latest missed fire.
    Once,
    /// Start one run per missed fire (the latest [`MAX_CATCH_UP`]).
    All,
}

impl CatchUp {
    pub fn parse(s: &str) -> Option<CatchUp> {
        match s {
            "skip" => Some(CatchUp::Skip),
            "once" => Some(CatchUp::Once),
            "all" => Some(CatchUp::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Once => "once",
            CatchUp::All => "all",
        }
    }
}

/// A parsed timetable.
#[derive(Debug, Clone)]
pub enum Timing {
    /// A 5-field cron expression, read in the schedule's zone.
    Cron(Box<Cron>),
    /// Every this many milliseconds from the anchor.
    Every(i64),
}

/// A 5-field cron expression (`"0 9 * * MON-FRI"`): no seconds, no year.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    if expr.split_whitespace().count() != 5 {
        return Err(format!(
            "cron must have 5 fields (minute hour day-of-month month day-of-week), got {expr:?}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))
}

/// A duration such as `"15m"`, `"1h30m"` or `"1s"`, at least [`MIN_EVERY_MS`]; in ms.
pub fn parse_every(every: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(every.trim())
        .map_err(|e| format!("every must be a duration such as \"15m\" or \"1h\" ({e})"))?;
    let ms = i64::try_from(duration.as_millis()).map_err(|_| "every is too long".to_string())?;
    if ms < MIN_EVERY_MS {
        return Err(format!("every must be at least 1s, got {every:?}"));
    }
    Ok(ms)
}

/// An IANA zone name (`"Europe/Berlin"`, `"UTC"`).
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("unknown time zone {name:?}: use an IANA name such as \"Europe/Berlin\"")
    })
}

/// The machine's zone, as an IANA name; `UTC` when it cannot be told.
pub fn system_timezone() -> String {
    iana_time_zone::get_timezone()
        .ok()
        .filter(|name| parse_timezone(name).is_ok())
        .unwrap_or_else(|| "UTC".into())
}

/// A schedule's timetable in its zone, anchored where `every` counts from.
#[derive(Debug, Clone)]
pub struct Timetable {
    pub timing: Timing,
    pub tz: Tz,
    /// Unix ms; `every` fires at anchor + k × every.
    pub anchor_ms: i64,
}

impl Timetable {
    /// The first fire strictly after `after_ms` (Unix ms); `None` when there is none (a cron
    /// that can never match, such as 30 February).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match &self.timing {
            Timing::Every(every) => {
                let k = (after_ms - self.anchor_ms).div_euclid(*every) + 1;
                Some(self.anchor_ms + k * every)
            }
            Timing::Cron(cron) => {
                // Cron fires on whole minutes: a start within a second is that second.
                let start = self
                    .tz
                    .from_utc_datetime(&Utc.timestamp_millis_opt(after_ms).single()?.naive_utc());
                let next = cron.find_next_occurrence(&start, false).ok()?;
                Some(next.timestamp_millis())
            }
        }
    }
}

impl Timetable {
    /// The latest fire at or before `at_ms` (cron only; `every` never needs it).
    fn at_or_before(&self, at_ms: i64) -> Option<i64> {
        let Timing::Cron(cron) = &self.timing else {
            return None;
        };
        let start = self
            .tz
            .from_utc_datetime(&Utc.timestamp_millis_opt(at_ms).single()?.naive_utc());
        let prev = cron.find_previous_occurrence(&start, true).ok()?;
        Some(prev.timestamp_millis())
    }
}

/// What a scheduler does with one schedule at `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The due times to start runs for (`scheduled_for`), oldest first.
    pub fires: Vec<i64>,
    /// The schedule's next fire after this plan.
    pub next_run_at: Option<i64>,
}

/// The fires due at `now_ms` for a schedule whose stored next fire is `next_run_at`. Fires
/// due less than [`GRACE_MS`] ago run; older ones were missed and follow `catch_up`.
pub fn plan(table: &Timetable, next_run_at: i64, now_ms: i64, catch_up: CatchUp) -> Plan {
    if next_run_at > now_ms {
        return Plan {
            fires: Vec::new(),
            next_run_at: Some(next_run_at),
        };
    }
    let mut due = std::collections::VecDeque::with_capacity(4);
    let mut next = table.next_after(next_run_at);
    match (&table.timing, next) {
        (Timing::Every(every), Some(n)) if n <= now_ms => {
            // Straight to the last MAX_CATCH_UP due times: a long downtime of a short
            // `every` does not iterate through every missed one.
            let last = next_run_at + (now_ms - next_run_at).div_euclid(*every) * every;
            let count = (last - next_run_at) / every + 1;
            let first = (count - MAX_CATCH_UP as i64).max(0);
            due.extend((first..count).map(|k| next_run_at + k * every));
            next = Some(last + every);
        }
        _ => {
            // Only the latest MAX_CATCH_UP can run: after a long downtime, step back from
            // now to the first of them instead of walking forward through every miss.
            let mut from = next_run_at;
            if next.is_some_and(|n| n <= now_ms) {
                let mut at = now_ms;
                let mut back = 0;
                while let Some(p) = table.at_or_before(at).filter(|p| *p > next_run_at) {
                    back += 1;
                    if back == MAX_CATCH_UP {
                        from = p;
                        next = table.next_after(p);
                        break;
                    }
                    at = p - 1;
                }
            }
            due.push_back(from);
            while let Some(n) = next.filter(|n| *n <= now_ms) {
                due.push_back(n);
                if due.len() > MAX_CATCH_UP {
                    due.pop_front();
                }
                next = table.next_after(n);
            }
        }
    }
    // Fires less than GRACE_MS late are merely late (a busy machine, a restart within the
    // minute) and all run; older ones were missed.
    let (missed, on_time): (Vec<i64>, Vec<i64>) =
        due.into_iter().partition(|t| now_ms - t >= GRACE_MS);
    let mut fires: Vec<i64> = match catch_up {
        CatchUp::All => missed,
        CatchUp::Once => missed.last().copied().into_iter().collect(),
        CatchUp::Skip => Vec::new(),
    };
    fires.extend(on_time);
    Plan {
        fires,
        next_run_at: next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .timestamp_millis()
    }

    fn utc_ms(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .unwrap()
            .timestamp_millis()
    }

    fn cron(expr: &str, tz: &str) -> Timetable {
        Timetable {
            timing: Timing::Cron(Box::new(parse_cron(expr).unwrap())),
            tz: parse_timezone(tz).unwrap(),
            anchor_ms: 0,
        }
    }

    fn fires(table: &Timetable, from: i64, n: usize) -> Vec<i64> {
        let mut at = from;
        (0..n)
            .map(|_| {
                at = table.next_after(at).unwrap();
                at
            })
            .collect()
    }

    #[test]
    fn weekdays_at_nine_in_the_zone() {
        let ny = chrono_tz::America::New_York;
        let table = cron("0 9 * * MON-FRI", "America/New_York");
        // Friday 2026-03-06 10:00 local: next is Monday 09:00.
        let next = table.next_after(ms(ny, 2026, 3, 6, 10, 0)).unwrap();
        assert_eq!(next, ms(ny, 2026, 3, 9, 9, 0));
        // Exactly at a fire: the next one, not the same.
        assert_eq!(table.next_after(next).unwrap(), ms(ny, 2026, 3, 10, 9, 0));
    }

    #[test]
    fn spring_forward_fires_a_skipped_local_time_once_after_the_gap() {
        // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT; 02:30 does not exist.
        let ny = chrono_tz::America::New_York;
        let table = cron("30 2 * * *", "America/New_York");
        let got = fires(&table, ms(ny, 2026, 3, 7, 12, 0), 3);
        assert_eq!(
            got,
            vec![
                ms(ny, 2026, 3, 8, 3, 0), // the first valid instant after the gap
                ms(ny, 2026, 3, 9, 2, 30),
                ms(ny, 2026, 3, 10, 2, 30),
            ]
        );
        // The day of the change has exactly one fire, not none, not two.
        let day = (ms(ny, 2026, 3, 8, 0, 0), ms(ny, 2026, 3, 9, 0, 0));
        assert_eq!(got.iter().filter(|t| (day.0..day.1).contains(t)).count(), 1);
    }

    #[test]
    fn fall_back_fires_a_repeated_local_time_once() {
        // New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
        let table = cron("30 1 * * *", "America/New_York");
        let got = fires(&table, utc_ms(2026, 10, 31, 12, 0, 0), 3);
        assert_eq!(
            got,
            vec![
                utc_ms(2026, 11, 1, 5, 30, 0), // 01:30 EDT (UTC-4), the first occurrence
                utc_ms(2026, 11, 2, 6, 30, 0), // 01:30 EST (UTC-5) the next day
                utc_ms(2026, 11, 3, 6, 30, 0),
            ]
        );
        // From between the two 01:30s, the second one is not a fire either.
        assert_eq!(
            table.next_after(utc_ms(2026, 11, 1, 5, 45, 0)).unwrap(),
            utc_ms(2026, 11, 2, 6, 30, 0)
        );
    }

    #[test]
    fn a_local_time_stays_local_across_the_change() {
        // 09:00 Berlin is 08:00 UTC in winter and 07:00 UTC in summer (2026-03-29).
        let table = cron("0 9 * * *", "Europe/Berlin");
        let got = fires(&table, utc_ms(2026, 3, 28, 0, 0, 0), 2);
        assert_eq!(
            got,
            vec![utc_ms(2026, 3, 28, 8, 0, 0), utc_ms(2026, 3, 29, 7, 0, 0)]
        );
    }

    #[test]
    fn every_is_a_grid_from_the_anchor_that_ignores_wall_clocks() {
        let table = Timetable {
            timing: Timing::Every(15 * 60_000),
            tz: chrono_tz::America::New_York,
            anchor_ms: 1_000,
        };
        assert_eq!(table.next_after(1_000), Some(1_000 + 900_000));
        assert_eq!(table.next_after(1_000 + 899_999), Some(1_000 + 900_000));
        assert_eq!(table.next_after(1_000 + 900_000), Some(1_000 + 1_800_000));
        // Across the spring-forward night: still 15 minutes apart in real time.
        let start = utc_ms(2026, 3, 8, 6, 50, 0);
        let table = Timetable {
            anchor_ms: start,
            ..table
        };
        let got = fires(&table, start, 2);
        assert_eq!(got, vec![start + 900_000, start + 1_800_000]);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(parse_cron("0 9 * *").is_err());
        assert!(parse_cron("0 0 9 * * *").is_err(), "no seconds field");
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("0 9 * * FUNDAY").is_err());
        assert!(parse_cron("*/5 9-17 * JAN-MAR MON-FRI").is_ok());
        // Parses, but never matches: no next fire.
        assert_eq!(cron("0 0 30 2 *", "UTC").next_after(0), None);
        assert!(parse_every("500ms").is_err());
        assert!(parse_every("0s").is_err());
        assert!(parse_every("soon").is_err());
        assert_eq!(parse_every("1s"), Ok(1000));
        assert_eq!(parse_every("1h30m"), Ok(5_400_000));
        assert!(parse_timezone("Mars/Olympus").is_err());
        assert!(parse_timezone("Europe/Berlin").is_ok());
        assert!(parse_timezone(&system_timezone()).is_ok());
    }

    fn hourly(anchor: i64) -> Timetable {
        Timetable {
            timing: Timing::Every(3_600_000),
            tz: chrono_tz::UTC,
            anchor_ms: anchor,
        }
    }

    #[test]
    fn an_on_time_fire_runs_whatever_catch_up_says() {
        let t = hourly(0);
        for catch_up in [CatchUp::Skip, CatchUp::Once, CatchUp::All] {
            let p = plan(&t, 3_600_000, 3_600_000 + 5, catch_up);
            assert_eq!(p.fires, vec![3_600_000]);
            assert_eq!(p.next_run_at, Some(7_200_000));
        }
        // Not due yet: nothing.
        let p = plan(&t, 3_600_000, 3_599_999, CatchUp::All);
        assert!(p.fires.is_empty());
        assert_eq!(p.next_run_at, Some(3_600_000));
    }

    #[test]
    fn missed_fires_follow_catch_up() {
        let h = 3_600_000;
        let t = hourly(0);
        // Down from before the 1 h fire until two minutes after the 5 h one: 5 missed.
        let now = 5 * h + 2 * GRACE_MS;
        let skip = plan(&t, h, now, CatchUp::Skip);
        assert_eq!(skip.fires, Vec::<i64>::new());
        assert_eq!(skip.next_run_at, Some(6 * h));
        let once = plan(&t, h, now, CatchUp::Once);
        assert_eq!(once.fires, vec![5 * h]);
        assert_eq!(once.next_run_at, Some(6 * h));
        let all = plan(&t, h, now, CatchUp::All);
        assert_eq!(all.fires, vec![h, 2 * h, 3 * h, 4 * h, 5 * h]);
        assert_eq!(all.next_run_at, Some(6 * h));
        // One fire, but long overdue (the machine slept): missed too.
        let late = plan(&t, h, h + GRACE_MS, CatchUp::Skip);
        assert!(late.fires.is_empty());
        assert_eq!(late.next_run_at, Some(2 * h));
        // Several fires, all less than a minute late (a restart within the minute): all run.
        let s = Timetable {
            timing: Timing::Every(1000),
            tz: chrono_tz::UTC,
            anchor_ms: 0,
        };
        let p = plan(&s, 10_000, 13_500, CatchUp::Skip);
        assert_eq!(p.fires, vec![10_000, 11_000, 12_000, 13_000]);
        assert_eq!(p.next_run_at, Some(14_000));
        // Missed ones and late ones together: catch_up applies to the missed part only.
        let p = plan(&s, 1_000, 1_000 + GRACE_MS + 1_500, CatchUp::Once);
        assert_eq!(p.fires.first(), Some(&2_000), "the latest missed fire");
        assert_eq!(p.fires.len(), 1 + 60);
        assert_eq!(p.fires.last(), Some(&(1_000 + GRACE_MS + 1_000)));
    }

    #[test]
    fn all_is_capped_at_the_latest_hundred() {
        let s = Timetable {
            timing: Timing::Every(1000),
            tz: chrono_tz::UTC,
            anchor_ms: 0,
        };
        let p = plan(&s, 1000, 1_000_000 + 1, CatchUp::All);
        assert_eq!(p.fires.len(), MAX_CATCH_UP);
        assert_eq!(p.fires.first(), Some(&901_000));
        assert_eq!(p.fires.last(), Some(&1_000_000));
        assert_eq!(p.next_run_at, Some(1_001_000));
        // The same through the cron path, also after a year of minutes.
        let c = cron("* * * * *", "UTC");
        let p = plan(&c, 60_000, 200 * 60_000, CatchUp::All);
        assert_eq!(p.fires.len(), MAX_CATCH_UP);
        assert_eq!(p.fires.first(), Some(&(101 * 60_000)));
        assert_eq!(p.fires.last(), Some(&(200 * 60_000)));
        assert_eq!(p.next_run_at, Some(201 * 60_000));
        let year = 365 * 24 * 60;
        let p = plan(&c, 60_000, year * 60_000 + 30_000, CatchUp::All);
        let expected: Vec<i64> = (year - 99..=year).map(|m| m * 60_000).collect();
        assert_eq!(p.fires, expected);
        assert_eq!(p.next_run_at, Some((year + 1) * 60_000));
        // Fewer than the cap missed: all of them, from the stored next fire.
        let p = plan(&c, 60_000, 5 * 60_000 + GRACE_MS * 3, CatchUp::All);
        assert_eq!(p.fires.first(), Some(&60_000));
        assert_eq!(p.fires.len(), 8);
    }
}
