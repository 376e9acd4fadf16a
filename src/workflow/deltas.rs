//! What a running workflow tells the run's live stream (SPEC §11) as it happens: the text
//! deltas of streamed prompt steps and the start of each step.
//!
//! The engine's [`Environment`](super::Environment) holds one [`DeltaSink`]; a prompt step
//! reading its provider's SSE stream publishes every piece of text it receives there, tagged
//! with the run and the step, and the engine says when a step starts. The sink hands both to
//! the [`live::Hub`](crate::live::Hub), where publishing for a run nobody watches costs next
//! to nothing and a subscriber that falls behind is dropped, never slowing the step.

use std::sync::Arc;

use crate::live::Hub;

/// One piece of text a streamed prompt step received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub request_id: Arc<str>,
    /// The prompt step's id.
    pub step: Arc<str>,
    pub text: String,
}

/// Where the engine and streamed prompt steps publish what a run is doing.
#[derive(Clone, Default)]
pub struct DeltaSink {
    hub: Hub,
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaSink").finish_non_exhaustive()
    }
}

impl DeltaSink {
    /// A sink publishing to `hub`.
    pub fn new(hub: Hub) -> Self {
        DeltaSink { hub }
    }

    /// The hub it publishes to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn publish(&self, delta: Delta) {
        self.publish_text(&delta.request_id, &delta.step, &delta.text);
    }

    pub(crate) fn publish_text(&self, request_id: &str, step: &str, text: &str) {
        self.hub.delta(request_id, step, text);
    }

    pub(crate) fn step_started(
        &self,
        request_id: &str,
        step: &str,
        step_type: &'static str,
        started_at_ms: i64,
    ) {
        self.hub
            .step_started(request_id, step, step_type, started_at_ms);
    }
}
