//! Retry timing as pure functions: the schedule, jitter, `Retry-After`, what each
//! response means, and how an attempt settles its event (`settle`). No clocks or randomness
//! inside; callers pass them in.

use crate::domain::{AttemptOutcome, EventState};
use std::time::Duration;

/// Bytes of a response body kept in the attempt record.
pub const RESPONSE_BODY_MAX_BYTES: usize = 4096;

/// Consecutive failed attempts after which a destination is paused.
pub const BREAKER_FAILURE_THRESHOLD: u32 = 20;

/// How long a tripped destination is paused.
pub const BREAKER_PAUSE: Duration = Duration::from_secs(60);

/// What one attempt's result means for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: delivered.
    Delivered,
    /// `410 Gone`: the receiver asked us to stop; no more attempts.
    Gone,
    /// Anything else: try again if the schedule allows.
    Retry,
}

/// The verdict for an HTTP status. Redirects are not followed, so a 3xx is a failure.
pub fn verdict_for_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        _ => Verdict::Retry,
    }
}

/// The scheduled delay after attempt `attempt` (1-based, within the current series), or
/// `None` when that was the last attempt.
pub fn scheduled_delay(schedule: &[Duration], attempt: u32) -> Option<Duration> {
    schedule.get(attempt.checked_sub(1)? as usize).copied()
}

/// Adds jitter: `unit` is a random number in [-1, 1], `fraction` the configured jitter.
pub fn with_jitter(delay: Duration, fraction: f64, unit: f64) -> Duration {
    let factor = 1.0 + fraction.clamp(0.0, 1.0) * unit.clamp(-1.0, 1.0);
    delay.mul_f64(factor.max(0.0))
}

/// A `Retry-After` on a 429 or 503 delays the next attempt to at least that time, but never
/// beyond twice the scheduled delay, so a receiver cannot stall delivery forever.
pub fn honour_retry_after(scheduled: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(asked) => asked.min(scheduled * 2).max(scheduled),
        None => scheduled,
    }
}

/// Parses `Retry-After`: delta seconds or an HTTP date (relative to `now_unix_secs`).
pub fn parse_retry_after(value: &str, now_unix_secs: u64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now_unix_secs)))
}

/// The delay before the next attempt after a failed attempt number `attempt`, or `None` when
/// the schedule is exhausted.
pub fn next_delay(
    schedule: &[Duration],
    attempt: u32,
    jitter: f64,
    unit: f64,
    status: Option<u16>,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let scheduled = with_jitter(scheduled_delay(schedule, attempt)?, jitter, unit);
    let retry_after = match status {
        Some(429 | 503) => retry_after,
        _ => None,
    };
    Some(honour_retry_after(scheduled, retry_after))
}

/// What an attempt got back, as far as settling its event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The receiver answered with this status (and `Retry-After`, when it sent one).
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: a timeout, or a connection, DNS or TLS failure. Worth another try.
    NoAnswer,
    /// Never sent: the destination is not allowed, or the event could not be signed. Trying
    /// again cannot help.
    Refused,
}

impl Reply {
    /// Whether the destination itself succeeded or failed, for the circuit breaker; `None`
    /// when it was never tried.
    pub fn counts_for_breaker(self) -> Option<bool> {
        match self {
            Reply::Status { code, .. } => Some(verdict_for_status(code) == Verdict::Delivered),
            Reply::NoAnswer => Some(false),
            Reply::Refused => None,
        }
    }
}

/// Why an event gets no more attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The receiver answered `410 Gone`.
    Gone,
    /// The attempt was refused before it was sent (see [`Reply::Refused`]).
    Denied,
    /// The retry schedule has no attempt left.
    Exhausted,
}

impl FailureReason {
    /// The event's stored `failure_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Gone => "gone",
            FailureReason::Denied => "denied",
            FailureReason::Exhausted => "exhausted",
        }
    }
}

/// Where an event stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Delivered,
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    Failed(FailureReason),
}

impl Settlement {
    /// The event's state after the attempt.
    pub fn event_state(self) -> EventState {
        match self {
            Settlement::Delivered => EventState::Delivered,
            Settlement::RetryAt(_) => EventState::Retrying,
            Settlement::Failed(_) => EventState::Failed,
        }
    }

    /// The attempt's recorded outcome.
    pub fn outcome(self) -> AttemptOutcome {
        match self {
            Settlement::Delivered => AttemptOutcome::Delivered,
            Settlement::RetryAt(_) => AttemptOutcome::Retrying,
            Settlement::Failed(_) => AttemptOutcome::Failed,
        }
    }

    pub fn next_attempt_at(self) -> Option<i64> {
        match self {
            Settlement::RetryAt(at) => Some(at),
            _ => None,
        }
    }

    pub fn failure_reason(self) -> Option<FailureReason> {
        match self {
            Settlement::Failed(reason) => Some(reason),
            _ => None,
        }
    }
}

/// How attempt number `attempt` (1-based, within the current series) settles its event, at
/// `now_ms`: delivered on a 2xx, failed on a `410 Gone` or a refusal, otherwise retried as
/// the schedule allows (`unit`, in [-1, 1], draws the jitter; a `Retry-After` on a 429 or
/// 503 can push the retry back), failed once it is exhausted.
pub fn settle(
    reply: Reply,
    attempt: u32,
    schedule: &[Duration],
    jitter: f64,
    unit: f64,
    now_ms: i64,
) -> Settlement {
    let (status, retry_after) = match reply {
        Reply::Refused => return Settlement::Failed(FailureReason::Denied),
        Reply::NoAnswer => (None, None),
        Reply::Status { code, retry_after } => match verdict_for_status(code) {
            Verdict::Delivered => return Settlement::Delivered,
            Verdict::Gone => return Settlement::Failed(FailureReason::Gone),
            Verdict::Retry => (Some(code), retry_after),
        },
    };
    match next_delay(schedule, attempt, jitter, unit, status, retry_after) {
        Some(delay) => Settlement::RetryAt(now_ms + delay.as_millis() as i64),
        None => Settlement::Failed(FailureReason::Exhausted),
    }
}

/// Per-destination failure tracking: after `BREAKER_FAILURE_THRESHOLD` failures in a row
/// the destination is paused for `BREAKER_PAUSE`; one success closes it again.
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    consecutive_failures: u32,
    paused_until_ms: Option<i64>,
}

impl Breaker {
    pub fn record(&mut self, success: bool, now_ms: i64) {
        if success {
            *self = Breaker::default();
            return;
        }
        self.consecutive_failures += 1;
        if self.consecutive_failures >= BREAKER_FAILURE_THRESHOLD {
            self.paused_until_ms = Some(now_ms + BREAKER_PAUSE.as_millis() as i64);
            // After the pause, the next failure alone trips it again (half-open).
            self.consecutive_failures = BREAKER_FAILURE_THRESHOLD - 1;
        }
    }

    /// When the destination is paused, until when.
    pub fn paused_until(&self, now_ms: i64) -> Option<i64> {
        self.paused_until_ms.filter(|until| *until > now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_schedule() -> Vec<Duration> {
        [5, 300, 1800, 7200, 18000, 36000, 36000]
            .map(Duration::from_secs)
            .to_vec()
    }

    #[test]
    fn eight_attempts_in_all_by_default() {
        let s = default_schedule();
        assert_eq!(scheduled_delay(&s, 1), Some(Duration::from_secs(5)));
        assert_eq!(scheduled_delay(&s, 7), Some(Duration::from_secs(36000)));
        assert_eq!(scheduled_delay(&s, 8), None, "the 8th attempt is the last");
        assert_eq!(scheduled_delay(&s, 0), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let d = Duration::from_secs(100);
        assert_eq!(with_jitter(d, 0.1, 1.0), Duration::from_secs(110));
        assert_eq!(with_jitter(d, 0.1, -1.0), Duration::from_secs(90));
        assert_eq!(with_jitter(d, 0.1, 0.0), d);
    }

    #[test]
    fn retry_after_is_clamped_between_one_and_two_schedules() {
        let five = Duration::from_secs(5);
        assert_eq!(
            honour_retry_after(five, Some(Duration::from_secs(8))),
            Duration::from_secs(8)
        );
        assert_eq!(
            honour_retry_after(five, Some(Duration::from_secs(60))),
            Duration::from_secs(10)
        );
        assert_eq!(honour_retry_after(five, Some(Duration::from_secs(1))), five);
        assert_eq!(honour_retry_after(five, None), five);
    }

    #[test]
    fn retry_after_only_counts_on_429_and_503() {
        let s = default_schedule();
        let ra = Some(Duration::from_secs(8));
        assert_eq!(
            next_delay(&s, 1, 0.0, 0.0, Some(503), ra),
            Some(Duration::from_secs(8))
        );
        assert_eq!(
            next_delay(&s, 1, 0.0, 0.0, Some(429), ra),
            Some(Duration::from_secs(8))
        );
        assert_eq!(
            next_delay(&s, 1, 0.0, 0.0, Some(500), ra),
            Some(Duration::from_secs(5))
        );
        assert_eq!(next_delay(&s, 8, 0.0, 0.0, Some(503), ra), None);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }

    #[test]
    fn statuses_map_to_verdicts() {
        assert_eq!(verdict_for_status(200), Verdict::Delivered);
        assert_eq!(verdict_for_status(204), Verdict::Delivered);
        assert_eq!(verdict_for_status(301), Verdict::Retry);
        assert_eq!(verdict_for_status(410), Verdict::Gone);
        assert_eq!(verdict_for_status(500), Verdict::Retry);
    }

    fn status(code: u16) -> Reply {
        Reply::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn a_2xx_delivers_and_a_410_or_a_refusal_ends_at_once() {
        let s = default_schedule();
        assert_eq!(
            settle(status(204), 1, &s, 0.1, 0.5, 0),
            Settlement::Delivered
        );
        assert_eq!(
            settle(status(200), 8, &s, 0.1, 0.5, 0),
            Settlement::Delivered,
            "the last attempt can still deliver"
        );
        assert_eq!(
            settle(status(410), 1, &s, 0.1, 0.5, 0),
            Settlement::Failed(FailureReason::Gone)
        );
        assert_eq!(
            settle(Reply::Refused, 1, &s, 0.1, 0.5, 0),
            Settlement::Failed(FailureReason::Denied)
        );
    }

    #[test]
    fn other_failures_retry_on_the_schedule_until_it_is_exhausted() {
        let s = default_schedule();
        let now = 1_000_000;
        assert_eq!(
            settle(status(500), 1, &s, 0.0, 0.0, now),
            Settlement::RetryAt(now + 5_000)
        );
        assert_eq!(
            settle(Reply::NoAnswer, 2, &s, 0.1, 1.0, now),
            Settlement::RetryAt(now + 330_000),
            "jitter drawn at the top of its range"
        );
        assert_eq!(
            settle(status(302), 7, &s, 0.0, 0.0, now),
            Settlement::RetryAt(now + 36_000_000)
        );
        assert_eq!(
            settle(status(500), 8, &s, 0.0, 0.0, now),
            Settlement::Failed(FailureReason::Exhausted)
        );
        assert_eq!(
            settle(Reply::NoAnswer, 8, &s, 0.0, 0.0, now),
            Settlement::Failed(FailureReason::Exhausted)
        );
    }

    #[test]
    fn retry_after_moves_a_retry_only_on_429_and_503() {
        let s = default_schedule();
        let asked = |code| Reply::Status {
            code,
            retry_after: Some(Duration::from_secs(8)),
        };
        assert_eq!(
            settle(asked(503), 1, &s, 0.0, 0.0, 0),
            Settlement::RetryAt(8_000)
        );
        assert_eq!(
            settle(asked(429), 1, &s, 0.0, 0.0, 0),
            Settlement::RetryAt(8_000)
        );
        assert_eq!(
            settle(asked(500), 1, &s, 0.0, 0.0, 0),
            Settlement::RetryAt(5_000)
        );
    }

    #[test]
    fn a_settlement_names_the_stored_state() {
        let failed = Settlement::Failed(FailureReason::Exhausted);
        assert_eq!(
            (
                failed.event_state(),
                failed.outcome(),
                failed.next_attempt_at(),
                failed.failure_reason().map(FailureReason::as_str)
            ),
            (
                EventState::Failed,
                AttemptOutcome::Failed,
                None,
                Some("exhausted")
            )
        );
        let retry = Settlement::RetryAt(42);
        assert_eq!(
            (retry.event_state(), retry.next_attempt_at()),
            (EventState::Retrying, Some(42))
        );
        assert_eq!(Settlement::Delivered.outcome(), AttemptOutcome::Delivered);
        assert_eq!(FailureReason::Gone.as_str(), "gone");
        assert_eq!(FailureReason::Denied.as_str(), "denied");
    }

    #[test]
    fn only_a_destination_that_was_tried_counts_for_the_breaker() {
        assert_eq!(status(200).counts_for_breaker(), Some(true));
        assert_eq!(status(500).counts_for_breaker(), Some(false));
        assert_eq!(status(410).counts_for_breaker(), Some(false));
        assert_eq!(Reply::NoAnswer.counts_for_breaker(), Some(false));
        assert_eq!(Reply::Refused.counts_for_breaker(), None);
    }

    #[test]
    fn breaker_trips_after_twenty_failures_and_closes_on_success() {
        let mut b = Breaker::default();
        for _ in 0..19 {
            b.record(false, 0);
        }
        assert_eq!(b.paused_until(0), None);
        b.record(false, 1000);
        assert_eq!(b.paused_until(1000), Some(61_000));
        assert_eq!(b.paused_until(61_000), None, "the pause ends");
        b.record(true, 62_000);
        assert_eq!(b.paused_until(62_000), None);
    }
}
