//! Lifecycle webhooks from a running run (SPEC §11): `step.completed` when a step ends and
//! `approval.requested` when an approval step waits, for runs whose `async.events` asks for
//! them. Each event is stored with the trace line it reports, in one transaction, so a crash
//! keeps both or neither; the supervisor gets it once stored, unless it is `held` behind the
//! run's earlier events (their delivery makes it due).

use std::future::Future;

use serde_json::{Map, Value};

use super::lifecycle::{PreparedRun, Reporting};
use super::retry::Enqueue;
use crate::delivery::lifecycle::{self as events, RunFacts, StepFacts};
use crate::ids;
use crate::store::{DueEvent, NewEvent, RecordStepEvent, StepRow, StoreResult};
use crate::workflow::StepRecord;

/// What a run's lifecycle events need to know about it.
#[derive(Clone)]
pub(super) struct Notifier {
    request_id: String,
    deployment: String,
    variant: String,
    metadata: Map<String, Value>,
    callback_url: String,
    step_completed: bool,
    approval_requested: bool,
    reporting: Reporting,
}

impl Notifier {
    /// `None` when the run posts no lifecycle event (no callback, or only its end).
    pub(super) fn for_run(
        request_id: &str,
        run: &PreparedRun,
        reporting: &Reporting,
    ) -> Option<Notifier> {
        let callback_url = run.callback_url.clone()?;
        let step_completed = run.events.wants(events::STEP_COMPLETED);
        let approval_requested = run.events.wants(events::APPROVAL_REQUESTED);
        (step_completed || approval_requested).then(|| Notifier {
            request_id: request_id.to_string(),
            deployment: run.deployment.key.clone(),
            variant: run.variant.clone(),
            metadata: run.metadata.clone(),
            callback_url,
            step_completed,
            approval_requested,
            reporting: reporting.clone(),
        })
    }

    fn facts(&self) -> RunFacts<'_> {
        RunFacts {
            request_id: &self.request_id,
            deployment: &self.deployment,
            variant: &self.variant,
            metadata: &self.metadata,
        }
    }

    fn event(&self, event_type: &str, body: Vec<u8>) -> NewEvent {
        NewEvent {
            event_id: ids::event_id(),
            deployment_key: self.deployment.clone(),
            event_type: event_type.to_string(),
            callback_url: self.callback_url.clone(),
            body,
        }
    }

    /// The `step.completed` event for a trace line, if the run wants one for it.
    pub(super) fn step_event(&self, rec: &StepRecord) -> Option<NewEvent> {
        if !self.step_completed || !events::reports_step(rec.status) {
            return None;
        }
        let body = events::step_completed_body(
            &self.facts(),
            &StepFacts {
                step: &rec.step_id,
                status: rec.status,
                duration_ms: rec.duration_ms,
                output: rec.output.as_ref(),
                error: rec.error.as_deref(),
            },
        );
        Some(self.event(events::STEP_COMPLETED, body))
    }

    /// The `approval.requested` event for a waiting approval step's trace line (its output
    /// holds the rendered question and the choices), if the run wants one.
    pub(super) fn approval_event(&self, rec: &StepRecord) -> Option<NewEvent> {
        if !self.approval_requested {
            return None;
        }
        let shown = rec.output.as_ref();
        let field = |name| shown.and_then(|o| o.get(name)).cloned();
        let body = events::approval_requested_body(
            &self.facts(),
            &rec.step_id,
            &field("question").unwrap_or(Value::Null),
            &field("choices").unwrap_or_else(|| Value::Array(Vec::new())),
        );
        Some(self.event(events::APPROVAL_REQUESTED, body))
    }

    /// Queues the trace line with its event now (so it commits in order with the run's other
    /// writes); the returned future waits for the commit and hands a due event to the
    /// supervisor.
    pub(super) fn record(
        &self,
        row: StepRow,
        event: NewEvent,
    ) -> impl Future<Output = StoreResult<()>> {
        let at = ids::now_ms();
        let due = DueEvent {
            event_id: event.event_id.clone(),
            request_id: self.request_id.clone(),
            deployment_key: event.deployment_key.clone(),
            callback_url: event.callback_url.clone(),
            body: event.body.clone().into(),
            series: 1,
            attempts: 0,
            total_attempts: 0,
            next_attempt_at: at,
        };
        let written = self.reporting.store.write_queued(RecordStepEvent {
            step: row,
            event,
            at,
        });
        let supervisor = self.reporting.supervisor.clone();
        async move {
            if written.await? {
                supervisor.do_send(Enqueue(due));
            }
            Ok(())
        }
    }

    /// [`Notifier::record`] without waiting: a failure is logged, like a lost trace line.
    pub(super) fn record_detached(&self, row: StepRow, event: NewEvent) {
        let request_id = self.request_id.clone();
        let written = self.record(row, event);
        actix::spawn(async move {
            if let Err(err) = written.await {
                tracing::warn!(request_id = %request_id, %err, "could not store a step and its lifecycle event");
            }
        });
    }
}
