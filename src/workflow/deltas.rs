//! Text deltas of streamed prompt steps, for the run's live stream (SPEC §11).
//!
//! The engine's [`Environment`](super::Environment) holds one [`DeltaSink`]; a prompt step
//! reading its provider's SSE stream publishes every piece of text it receives there, tagged
//! with the run and the step. Nothing subscribes yet: the live stream (`GET
//! /v1/runs/{id}/stream`, `output.delta` events) will call [`DeltaSink::subscribe`] and filter
//! by `request_id`. Publishing without subscribers costs next to nothing; a subscriber that
//! falls behind loses the oldest deltas (`broadcast` semantics), never slows the step.

use std::sync::Arc;

use tokio::sync::broadcast;

/// Deltas kept for a slow subscriber before it starts losing the oldest.
const CAPACITY: usize = 1024;

/// One piece of text a streamed prompt step received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub request_id: Arc<str>,
    /// The prompt step's id.
    pub step: Arc<str>,
    pub text: String,
}

/// Where streamed prompt steps publish their [`Delta`]s.
#[derive(Debug, Clone)]
pub struct DeltaSink {
    tx: broadcast::Sender<Delta>,
}

impl Default for DeltaSink {
    fn default() -> Self {
        DeltaSink {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl DeltaSink {
    /// Receives every delta published from now on, of every run.
    pub fn subscribe(&self) -> broadcast::Receiver<Delta> {
        self.tx.subscribe()
    }

    pub(crate) fn publish(&self, delta: Delta) {
        // No subscriber is not an error: nobody is watching this run.
        let _ = self.tx.send(delta);
    }
}
