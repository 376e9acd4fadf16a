//! Runs paused at an approval step (SPEC §7). They hold no run slot and stay `running` in
//! the store; the InvokeActor keeps them here, by request id, until their step is answered
//! (`Respond`), times out, or the run is cancelled. Then the run goes back to the front of
//! the queue with the step's answer in its `resume`.
//!
//! The book (`Approvals`) decides who wins when an answer, the step's timeout and a cancel
//! race: an answer being stored holds the run, a second answer is refused and the timeout
//! gives way. It takes no clock and touches no store, so it is tested on its own; the
//! InvokeActor does the writes and arms the timers.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;

use super::lifecycle::{AdmittedRun, Waiting};
use crate::store::StoreError;
use crate::workflow::engine::{Approval, ApprovalAnswer, Resume};

/// Answers the approval step a run waits at, with the step's output (already checked
/// against the step's choices, see `workflow::engine::approval_output`). The answer is
/// stored durably, then the run continues.
#[derive(Message)]
#[rtype(result = "Result<(), RespondError>")]
pub struct Respond {
    pub request_id: String,
    pub step_id: String,
    pub output: Value,
}

/// Why an answer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    /// The run does not wait at this step (any more): it is not paused, or paused elsewhere.
    #[error("step {step_id} is not waiting for a response")]
    NotWaiting { step_id: String },
    /// Another answer to the same step is being stored.
    #[error("step {step_id} is already being answered")]
    AlreadyAnswering { step_id: String },
    /// The run was cancelled while the answer was being stored.
    #[error("the run ended while the answer was being stored")]
    RunEnded,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run waiting at an approval step.
pub struct PausedRun {
    pub run: AdmittedRun,
    pub waiting: Waiting,
    /// An answer is being stored: a second answer and the timeout give way to it.
    answering: bool,
    timer: Option<SpawnHandle>,
}

impl PausedRun {
    pub fn new(run: AdmittedRun, waiting: Waiting) -> Self {
        PausedRun {
            run,
            waiting,
            answering: false,
            timer: None,
        }
    }

    /// The step's timeout, if armed; whoever takes the run out of the book cancels it.
    pub fn take_timer(&mut self) -> Option<SpawnHandle> {
        self.timer.take()
    }

    /// The run with its step's answer recorded in `resume`, ready to run again.
    pub fn answered(self, answer: ApprovalAnswer) -> AdmittedRun {
        let PausedRun {
            mut run, waiting, ..
        } = self;
        run.resume
            .get_or_insert_with(Resume::default)
            .approvals
            .insert(
                waiting.step_id,
                Approval {
                    waiting_since_ms: waiting.since_ms,
                    answer,
                },
            );
        run
    }
}

/// The paused runs, by request id.
#[derive(Default)]
pub struct Approvals {
    paused: HashMap<String, PausedRun>,
}

impl FromIterator<PausedRun> for Approvals {
    fn from_iter<I: IntoIterator<Item = PausedRun>>(runs: I) -> Self {
        Approvals {
            paused: runs
                .into_iter()
                .map(|p| (p.run.request_id.clone(), p))
                .collect(),
        }
    }
}

impl Approvals {
    pub fn len(&self) -> usize {
        self.paused.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paused.is_empty()
    }

    pub fn request_ids(&self) -> Vec<String> {
        self.paused.keys().cloned().collect()
    }

    /// A run handed back by its RunActor, now waiting at `waiting`.
    pub fn insert(&mut self, run: AdmittedRun, waiting: Waiting) {
        self.paused
            .insert(run.request_id.clone(), PausedRun::new(run, waiting));
    }

    pub fn contains(&self, request_id: &str) -> bool {
        self.paused.contains_key(request_id)
    }

    /// Takes a run out of the book (cancelled, or resumed); its timer is the caller's to cancel.
    pub fn remove(&mut self, request_id: &str) -> Option<PausedRun> {
        self.paused.remove(request_id)
    }

    /// How long until the run's step times out (zero when it is already due), or `None`
    /// when the step has no timeout or the run is not here.
    pub fn timeout_in(&self, request_id: &str, now_ms: i64) -> Option<Duration> {
        let at = self.paused.get(request_id)?.waiting.timeout_at_ms?;
        Some(Duration::from_millis(
            u64::try_from(at - now_ms).unwrap_or(0),
        ))
    }

    /// Keeps the handle of the run's armed timeout, so that an answer or a cancel can stop it.
    pub fn set_timer(&mut self, request_id: &str, timer: SpawnHandle) {
        if let Some(paused) = self.paused.get_mut(request_id) {
            paused.timer = Some(timer);
        }
    }

    /// The run's timeout fired. Unless an answer is being stored (it wins), the run leaves
    /// the book, to resume with `ApprovalAnswer::TimedOut`.
    pub fn time_out(&mut self, request_id: &str) -> Option<PausedRun> {
        let paused = self.paused.get_mut(request_id)?;
        paused.timer = None;
        if paused.answering {
            return None;
        }
        self.paused.remove(request_id)
    }

    /// An answer for `step_id` arrived: the run is held for it while it is stored.
    pub fn begin_answer(&mut self, request_id: &str, step_id: &str) -> Result<(), RespondError> {
        let Some(paused) = self
            .paused
            .get_mut(request_id)
            .filter(|p| p.waiting.step_id == step_id)
        else {
            return Err(RespondError::NotWaiting {
                step_id: step_id.to_owned(),
            });
        };
        if paused.answering {
            return Err(RespondError::AlreadyAnswering {
                step_id: step_id.to_owned(),
            });
        }
        paused.answering = true;
        Ok(())
    }

    /// The answer's write ended: `Ok(true)` when the store took it (the step still waited
    /// there). Then the run leaves the book, to resume with the answer; otherwise it stays
    /// and may be answered again.
    pub fn end_answer(
        &mut self,
        request_id: &str,
        step_id: &str,
        stored: Result<bool, StoreError>,
    ) -> Result<PausedRun, RespondError> {
        let Some(paused) = self
            .paused
            .get_mut(request_id)
            .filter(|p| p.waiting.step_id == step_id)
        else {
            return match stored {
                // Cancelled while the answer was being stored.
                Ok(_) => Err(RespondError::RunEnded),
                Err(err) => Err(err.into()),
            };
        };
        match stored {
            Ok(true) => Ok(self
                .paused
                .remove(request_id)
                .expect("the run was found just above")),
            Ok(false) => {
                paused.answering = false;
                Err(RespondError::NotWaiting {
                    step_id: step_id.to_owned(),
                })
            }
            Err(err) => {
                paused.answering = false;
                Err(err.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Map};

    use super::*;
    use crate::actors::lifecycle::PreparedRun;
    use crate::deployments::LiveDeployment;
    use crate::workflow::Definition;

    fn run(request_id: &str) -> AdmittedRun {
        let definition =
            Definition::from_toml_str("key = \"t\"\n[[steps]]\nid = \"ok\"\ntype = \"approval\"\n")
                .unwrap();
        AdmittedRun {
            request_id: request_id.into(),
            prepared: PreparedRun {
                deployment: Arc::new(LiveDeployment {
                    key: "t".into(),
                    id: "dep_1".into(),
                    version: 1,
                    definition: Arc::new(definition),
                    signing_secret: "whsec_x".into(),
                    previous_secret: None,
                    previous_secret_until: None,
                    created_at: 0,
                    updated_at: 0,
                }),
                variant: "production".into(),
                inputs: Map::new(),
                metadata: Map::new(),
                user: None,
                callback_url: Some("http://127.0.0.1:1/hook".into()),
                events: Default::default(),
                source: crate::store::RunSource::Api,
                api_key_id: None,
                parent_request_id: None,
                priority: crate::flow::DEFAULT_PRIORITY,
                concurrency_key: None,
            },
            completion: None,
            started_at: 10,
            resume: None,
            takeover: None,
            usage: None,
        }
    }

    fn waiting(timeout_at_ms: Option<i64>) -> Waiting {
        Waiting {
            step_id: "ok".into(),
            step_index: 0,
            since_ms: 50,
            timeout_at_ms,
        }
    }

    fn book() -> Approvals {
        [PausedRun::new(run("req_1"), waiting(Some(1050)))]
            .into_iter()
            .collect()
    }

    #[test]
    fn an_answer_resumes_the_run_with_it() {
        let mut book = book();
        book.begin_answer("req_1", "ok").unwrap();
        let paused = book.end_answer("req_1", "ok", Ok(true)).unwrap();
        assert!(book.is_empty());
        let run = paused.answered(ApprovalAnswer::Given(json!({"text": "fine"})));
        assert_eq!(
            run.resume.unwrap().approvals["ok"],
            Approval {
                waiting_since_ms: 50,
                answer: ApprovalAnswer::Given(json!({"text": "fine"})),
            }
        );
    }

    #[test]
    fn only_the_waiting_step_of_a_paused_run_takes_an_answer() {
        let mut book = book();
        assert!(matches!(
            book.begin_answer("req_1", "other"),
            Err(RespondError::NotWaiting { step_id }) if step_id == "other"
        ));
        assert!(matches!(
            book.begin_answer("req_2", "ok"),
            Err(RespondError::NotWaiting { .. })
        ));
    }

    #[test]
    fn a_second_answer_and_the_timeout_give_way_to_the_first() {
        let mut book = book();
        book.begin_answer("req_1", "ok").unwrap();
        assert!(matches!(
            book.begin_answer("req_1", "ok"),
            Err(RespondError::AlreadyAnswering { .. })
        ));
        assert!(
            book.time_out("req_1").is_none(),
            "the answer being stored wins"
        );
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn a_failed_write_lets_the_step_be_answered_again() {
        let mut book = book();
        book.begin_answer("req_1", "ok").unwrap();
        let written = book.end_answer("req_1", "ok", Err(StoreError::Unavailable("full".into())));
        assert!(matches!(
            written,
            Err(RespondError::Store(StoreError::Unavailable(_)))
        ));
        book.begin_answer("req_1", "ok").unwrap();
        // The store found the step no longer waiting.
        assert!(matches!(
            book.end_answer("req_1", "ok", Ok(false)),
            Err(RespondError::NotWaiting { .. })
        ));
        assert_eq!(book.len(), 1);
        book.begin_answer("req_1", "ok").unwrap();
    }

    #[test]
    fn a_run_cancelled_during_the_write_ends_the_answer() {
        let mut book = book();
        book.begin_answer("req_1", "ok").unwrap();
        assert!(book.remove("req_1").is_some());
        assert!(matches!(
            book.end_answer("req_1", "ok", Ok(true)),
            Err(RespondError::RunEnded)
        ));
    }

    #[test]
    fn the_timeout_is_due_from_the_waiting_line() {
        let mut book = book();
        assert_eq!(
            book.timeout_in("req_1", 50),
            Some(Duration::from_millis(1000))
        );
        assert_eq!(book.timeout_in("req_1", 2000), Some(Duration::ZERO));
        assert_eq!(book.timeout_in("req_2", 50), None);
        book.insert(run("req_3"), waiting(None));
        assert_eq!(book.timeout_in("req_3", 50), None, "no timeout_ms");

        let paused = book.time_out("req_1").expect("nobody answered");
        let run = paused.answered(ApprovalAnswer::TimedOut);
        assert_eq!(
            run.resume.unwrap().approvals["ok"].answer,
            ApprovalAnswer::TimedOut
        );
        assert!(book.time_out("req_1").is_none());
    }
}
