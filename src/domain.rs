//! The states a run, a step, an event and an attempt can be in, as types.
//!
//! Each enum is the one place that spells its states: `as_str` gives the text the database
//! `CHECK`s in `schema.sql` allow (and the API shows), `parse` reads it back, and serde uses
//! the same names. The store maps them to SQL (`store/states.rs`), so nothing here knows about
//! a database, and a second backend can reuse them as they are.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Declares a state enum with its one text form per variant.
macro_rules! states {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $( $(#[$vmeta])* $variant, )+ }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and displayed name.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text, )+ }
            }

            /// The state named `text`, if it is one.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states! {
    /// A run's lifecycle state (SPEC §1).
    pub enum RunStatus {
        Queued = "queued",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl RunStatus {
    /// Still queued or running: not ended.
    pub fn is_live(self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

states! {
    /// Who started a run.
    pub enum RunSource {
        Api = "api",
        Webhook = "webhook",
        Cli = "cli",
        Ui = "ui",
        /// A `workflow` step of another run (a child run, SPEC §10).
        Workflow = "workflow",
        /// A schedule's fire or trigger (SPEC §12).
        Schedule = "schedule",
    }
}

states! {
    /// How a run's result reaches its caller: in the HTTP answer, or as a webhook.
    pub enum RunDelivery {
        Direct = "direct",
        Callback = "callback",
    }
}

states! {
    /// How a step ended, as one line of the run's trace.
    pub enum StepStatus {
        Completed = "completed",
        Failed = "failed",
        Skipped = "skipped",
        /// An approval step waiting for its answer.
        Waiting = "waiting",
        /// The step ran when hivelet stopped; the run was resumed from it at the next start.
        Interrupted = "interrupted",
        /// Taken over from an earlier run by a rerun without running again (SPEC §10).
        Reused = "reused",
    }
}

states! {
    /// Where a completion event stands in its delivery.
    pub enum EventState {
        /// Waits for the run's earlier event to be delivered or to fail for good (SPEC §11:
        /// a run's events go out in order); then it becomes `pending`.
        Held = "held",
        /// Due for its first attempt of the series (also right after a redelivery).
        Pending = "pending",
        /// Failed at least once; due again at `next_attempt_at`.
        Retrying = "retrying",
        Delivered = "delivered",
        /// Gave up: see the event's `failure_reason`.
        Failed = "failed",
    }
}

impl EventState {
    /// Still waiting for an attempt.
    pub fn is_due(self) -> bool {
        matches!(self, EventState::Pending | EventState::Retrying)
    }
}

states! {
    /// What one delivery attempt led to.
    pub enum AttemptOutcome {
        Delivered = "delivered",
        /// Failed; another attempt is scheduled.
        Retrying = "retrying",
        /// Failed, and no attempt follows.
        Failed = "failed",
    }
}

states! {
    /// Why a delivery attempt did not deliver.
    pub enum ErrorKind {
        Timeout = "timeout",
        Connect = "connect",
        Dns = "dns",
        Tls = "tls",
        /// The receiver refused the body's size (HTTP 413).
        TooLarge = "too_large",
        /// A 3xx answer: redirects are not followed.
        Redirect = "redirect",
        /// Any other non-2xx answer.
        HttpStatus = "http_status",
        /// The callback policy refused the destination, or the event could not be signed.
        Denied = "denied",
        /// HTTP 410: the receiver asked never to be called again.
        Gone = "gone",
    }
}

states! {
    /// What an API key may do.
    pub enum Role {
        /// Invoke routes, and reading the runs it started.
        Invoke = "invoke",
        /// Everything.
        Admin = "admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str`, `parse` and serde must agree, or the API would show one name and store another.
    fn round_trips<T>(all: &[T], as_str: fn(T) -> &'static str, parse: fn(&str) -> Option<T>)
    where
        T: Copy + PartialEq + fmt::Debug + Serialize + for<'de> Deserialize<'de>,
    {
        for &state in all {
            let text = as_str(state);
            assert_eq!(parse(text), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), text);
            assert_eq!(
                serde_json::from_value::<T>(serde_json::Value::from(text)).unwrap(),
                state
            );
        }
        assert_eq!(parse("sending"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn every_state_round_trips() {
        round_trips(RunStatus::ALL, RunStatus::as_str, RunStatus::parse);
        round_trips(RunSource::ALL, RunSource::as_str, RunSource::parse);
        round_trips(RunDelivery::ALL, RunDelivery::as_str, RunDelivery::parse);
        round_trips(StepStatus::ALL, StepStatus::as_str, StepStatus::parse);
        round_trips(EventState::ALL, EventState::as_str, EventState::parse);
        round_trips(
            AttemptOutcome::ALL,
            AttemptOutcome::as_str,
            AttemptOutcome::parse,
        );
        round_trips(ErrorKind::ALL, ErrorKind::as_str, ErrorKind::parse);
        round_trips(Role::ALL, Role::as_str, Role::parse);
    }

    #[test]
    fn names_are_the_contract() {
        assert_eq!(ErrorKind::TooLarge.as_str(), "too_large");
        assert_eq!(ErrorKind::HttpStatus.to_string(), "http_status");
        assert_eq!(StepStatus::Interrupted.as_str(), "interrupted");
        assert!(EventState::Retrying.is_due() && !EventState::Delivered.is_due());
        assert!(RunStatus::Queued.is_live() && !RunStatus::Cancelled.is_live());
    }
}
