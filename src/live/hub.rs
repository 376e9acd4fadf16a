//! The hub: one feed per live or watched run, with bounded subscriber queues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::mpsc;

use super::events::{self, Completed, Frame};
use crate::store::RunStatus;
use crate::workflow::StepRecord;

/// Events queued for one subscriber before it counts as too slow.
const QUEUE_EVENTS: usize = 1024;
/// Bytes queued for one subscriber before it counts as too slow. Frames are shared between
/// subscribers, so this bounds what one slow client pins, not a copy per client.
const QUEUE_BYTES: usize = 1 << 20;

/// Carries runs' events to their subscribers. Cheap to clone; shared by the run actors, the
/// prompt steps (deltas) and the HTTP handlers.
#[derive(Clone, Default)]
pub struct Hub(Arc<Inner>);

#[derive(Default)]
struct Inner {
    feeds: Mutex<HashMap<String, Feed>>,
    /// Subscribers of every run: with none, deltas are dropped before any lookup.
    watchers: AtomicUsize,
    next_token: AtomicUsize,
}

/// One run's feed.
#[derive(Default)]
struct Feed {
    /// Made by the run's execution (kept while it runs or waits); else made by a subscriber
    /// of a queued or ended run, and gone with its last subscriber.
    owned: bool,
    status: Option<RunStatus>,
    /// Steps finished so far (`c` of the ids).
    finished: u64,
    /// Events since the last finished step (`k` of the ids).
    since: u64,
    /// The steps now running, for a client that comes in the middle (their `step.started`
    /// is framed only then: nobody may ever ask).
    open: Vec<OpenStep>,
    /// Waits at an approval step.
    waiting: bool,
    subs: Vec<Sub>,
}

struct OpenStep {
    id: u64,
    step: String,
    step_type: &'static str,
    at_ms: i64,
}

impl OpenStep {
    fn frame(&self) -> Frame {
        events::step_started(self.id, &self.step, self.step_type, self.at_ms)
    }
}

struct Sub {
    token: usize,
    tx: mpsc::Sender<Frame>,
    queue: Arc<Queue>,
}

/// What a subscriber and its sender share: bytes queued, and whether it was dropped.
#[derive(Default)]
struct Queue {
    bytes: AtomicUsize,
    dropped: AtomicBool,
}

impl Feed {
    fn next_between(&mut self) -> u64 {
        self.since += 1;
        events::between_id(self.finished, self.since)
    }

    /// Queues `frame` for every subscriber, dropping those whose queue is full.
    fn send(&mut self, frame: &Frame, watchers: &AtomicUsize) {
        let size = frame.bytes.len();
        self.subs.retain(|sub| {
            let queued = sub.queue.bytes.fetch_add(size, Ordering::AcqRel) + size;
            let kept = queued <= QUEUE_BYTES && sub.tx.try_send(frame.clone()).is_ok();
            if !kept {
                sub.queue.bytes.fetch_sub(size, Ordering::AcqRel);
                if !sub.tx.is_closed() {
                    sub.queue.dropped.store(true, Ordering::Release);
                    tracing::info!("a live-stream subscriber fell behind and was dropped");
                }
                watchers.fetch_sub(1, Ordering::AcqRel);
            }
            kept
        });
    }
}

impl Hub {
    fn feeds(&self) -> MutexGuard<'_, HashMap<String, Feed>> {
        self.0
            .feeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls `f` with the run's feed, if it has one.
    fn with_feed(&self, request_id: &str, f: impl FnOnce(&mut Feed, &AtomicUsize)) {
        if let Some(feed) = self.feeds().get_mut(request_id) {
            f(feed, &self.0.watchers);
        }
    }

    /// A run's steps start (again): `finished` is how many of its steps had finished before
    /// (used when this is the first the hub hears of the run).
    pub fn run_started(&self, request_id: &str, finished: u64) {
        let mut feeds = self.feeds();
        let feed = feeds.entry(request_id.to_owned()).or_default();
        if !feed.owned {
            feed.owned = true;
            feed.finished = feed.finished.max(finished);
        }
        feed.waiting = false;
        if feed.status != Some(RunStatus::Running) {
            feed.status = Some(RunStatus::Running);
            if !feed.subs.is_empty() {
                feed.send(
                    &events::run_status(request_id, RunStatus::Running),
                    &self.0.watchers,
                );
            }
        }
    }

    /// Whether the run's execution already has a feed (it ran, or waits, in this process).
    pub fn is_running(&self, request_id: &str) -> bool {
        self.feeds().get(request_id).is_some_and(|f| f.owned)
    }

    pub fn step_started(&self, request_id: &str, step: &str, step_type: &'static str, at_ms: i64) {
        self.with_feed(request_id, |feed, watchers| {
            let open = OpenStep {
                id: feed.next_between(),
                step: step.to_owned(),
                step_type,
                at_ms,
            };
            if !feed.subs.is_empty() {
                feed.send(&open.frame(), watchers);
            }
            feed.open.push(open);
        });
    }

    pub fn delta(&self, request_id: &str, step: &str, text: &str) {
        if self.0.watchers.load(Ordering::Acquire) == 0 {
            return;
        }
        self.with_feed(request_id, |feed, watchers| {
            if feed.subs.is_empty() {
                return;
            }
            let frame = events::delta(feed.next_between(), step, text);
            feed.send(&frame, watchers);
        });
    }

    pub fn step_completed(&self, request_id: &str, rec: &StepRecord) {
        self.with_feed(request_id, |feed, watchers| {
            feed.finished += 1;
            feed.since = 0;
            if let Some(at) = feed.open.iter().rposition(|o| o.step == rec.step_id) {
                feed.open.remove(at);
            }
            if feed.subs.is_empty() {
                return;
            }
            let passes = rec.passes_key();
            let frame = events::step_completed(
                events::completed_id(feed.finished),
                &Completed {
                    step: &rec.step_id,
                    step_type: rec.step_type,
                    status: rec.status,
                    duration_ms: rec.duration_ms,
                    output: rec.output.as_ref(),
                    error: rec.error.as_deref(),
                    parent: rec.parent.as_deref(),
                    passes: &passes,
                },
            );
            feed.send(&frame, watchers);
        });
    }

    /// The run waits at an approval step; `waiting` is its trace line.
    pub fn approval_requested(&self, request_id: &str, waiting: &StepRecord) {
        self.with_feed(request_id, |feed, watchers| {
            feed.open.clear();
            feed.waiting = true;
            if feed.subs.is_empty() {
                return;
            }
            let frame = events::approval_requested(
                events::approval_id(feed.finished),
                &waiting.step_id,
                waiting.output.as_ref().unwrap_or(&Value::Null),
            );
            feed.send(&frame, watchers);
        });
    }

    /// The run ended (its end is stored): subscribers get `last` and their streams end.
    pub fn run_ended(&self, request_id: &str, last: impl FnOnce() -> Frame) {
        let Some(mut feed) = self.feeds().remove(request_id) else {
            return;
        };
        if feed.subs.is_empty() {
            return;
        }
        feed.send(&last(), &self.0.watchers);
        self.0.watchers.fetch_sub(feed.subs.len(), Ordering::AcqRel);
    }

    /// Starts receiving the run's events from now on. The caller then reads the stored run
    /// for what happened before (see [`events::replay`]) and drops live events it already
    /// sent (same ids).
    pub fn subscribe(&self, request_id: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(QUEUE_EVENTS);
        let queue = Arc::new(Queue::default());
        let token = self.0.next_token.fetch_add(1, Ordering::Relaxed);
        let mut feeds = self.feeds();
        let feed = feeds.entry(request_id.to_owned()).or_default();
        let open = feed.open.iter().map(OpenStep::frame).collect();
        let seen = Seen {
            finished: feed.finished,
            waiting: feed.waiting,
            running: feed.status == Some(RunStatus::Running),
        };
        feed.subs.push(Sub {
            token,
            tx,
            queue: queue.clone(),
        });
        self.0.watchers.fetch_add(1, Ordering::AcqRel);
        Subscription {
            hub: self.clone(),
            request_id: request_id.to_owned(),
            token,
            rx,
            queue,
            open,
            seen,
        }
    }

    fn unsubscribe(&self, request_id: &str, token: usize) {
        let mut feeds = self.feeds();
        let Some(feed) = feeds.get_mut(request_id) else {
            return;
        };
        let before = feed.subs.len();
        feed.subs.retain(|s| s.token != token);
        if feed.subs.len() < before {
            self.0.watchers.fetch_sub(1, Ordering::AcqRel);
        }
        if !feed.owned && feed.subs.is_empty() {
            feeds.remove(request_id);
        }
    }

    /// Ends every subscriber's stream (the daemon is stopping). Their clients see the stream
    /// end without a final event.
    pub fn close_all(&self) {
        let mut feeds = self.feeds();
        for feed in feeds.values_mut() {
            self.0.watchers.fetch_sub(feed.subs.len(), Ordering::AcqRel);
            feed.subs.clear();
        }
    }

    /// Runs with a feed, and subscribers of all runs (for tests and metrics).
    pub fn counts(&self) -> (usize, usize) {
        (self.feeds().len(), self.0.watchers.load(Ordering::Acquire))
    }
}

/// One client's view of a run: live events from the moment it subscribed.
pub struct Subscription {
    hub: Hub,
    request_id: String,
    token: usize,
    rx: mpsc::Receiver<Frame>,
    queue: Arc<Queue>,
    /// `step.started` of the steps running when it subscribed.
    open: Vec<Frame>,
    seen: Seen,
}

/// What the hub had seen of the run when a client subscribed. The store may lag behind (a
/// step's trace line is written after its event is published): a reader waits until the
/// stored trace shows at least this much before replaying it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// Steps finished.
    pub finished: u64,
    /// Whether the run waits at an approval step.
    pub waiting: bool,
    /// Whether its steps started (the store may still say `queued`).
    pub running: bool,
}

/// Why a subscription yields nothing more.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The run ended (its final event was the last one).
    Ended,
    /// The subscriber fell behind and was dropped.
    TooSlow,
}

impl Subscription {
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn seen(&self) -> Seen {
        self.seen
    }

    /// `step.started` of the steps that were running when it subscribed.
    pub fn take_open(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.open)
    }

    /// A live event that is already waiting, without waiting for one.
    pub fn try_next(&mut self) -> Option<Frame> {
        if self.queue.dropped.load(Ordering::Acquire) {
            return None;
        }
        let frame = self.rx.try_recv().ok()?;
        self.queue
            .bytes
            .fetch_sub(frame.bytes.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// The next live event.
    pub async fn next(&mut self) -> Result<Frame, Closed> {
        // A dropped subscriber's client is not reading: cut it now, not after its queue.
        if self.queue.dropped.load(Ordering::Acquire) {
            return Err(Closed::TooSlow);
        }
        match self.rx.recv().await {
            Some(frame) => {
                self.queue
                    .bytes
                    .fetch_sub(frame.bytes.len(), Ordering::AcqRel);
                Ok(frame)
            }
            None if self.queue.dropped.load(Ordering::Acquire) => Err(Closed::TooSlow),
            None => Err(Closed::Ended),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.request_id, self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StepStatus;

    fn record(step: &str) -> StepRecord {
        StepRecord {
            step_id: step.into(),
            index: 0,
            parent: None,
            passes: vec![],
            step_type: "template",
            status: StepStatus::Completed,
            started_at_ms: 0,
            duration_ms: 1,
            output: Some(Value::String("x".into())),
            error: None,
            attempts: 1,
            usage: None,
            reason: None,
            child_request_id: None,
        }
    }

    #[actix_rt::test]
    async fn events_reach_subscribers_in_order_with_increasing_ids() {
        let hub = Hub::default();
        hub.run_started("r", 0);
        hub.step_started("r", "a", "template", 0);
        let mut sub = hub.subscribe("r");
        assert_eq!(sub.take_open().len(), 1);
        hub.delta("r", "a", "he");
        hub.delta("r", "a", "llo");
        hub.step_completed("r", &record("a"));
        hub.run_ended("r", || {
            events::finished("r", RunStatus::Completed, &Value::Null, None, None)
        });
        let mut ids = Vec::new();
        loop {
            match sub.next().await {
                Ok(f) => ids.push(f.id),
                Err(closed) => {
                    assert_eq!(closed, Closed::Ended);
                    break;
                }
            }
        }
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(ids[2], events::completed_id(1));
        assert_eq!(*ids.last().unwrap(), events::FINAL_ID);
        drop(sub);
        assert_eq!(hub.counts(), (0, 0));
    }

    #[actix_rt::test]
    async fn a_subscriber_that_does_not_read_is_dropped_and_others_are_not() {
        let hub = Hub::default();
        hub.run_started("r", 0);
        let mut slow = hub.subscribe("r");
        let mut fast = hub.subscribe("r");
        let text = "x".repeat(4096);
        for _ in 0..1000 {
            hub.delta("r", "a", &text);
            assert!(fast.next().await.is_ok());
        }
        assert_eq!(hub.counts(), (1, 1));
        assert_eq!(slow.next().await.unwrap_err(), Closed::TooSlow);
    }

    #[test]
    fn watching_an_ended_or_queued_run_leaves_nothing_behind() {
        let hub = Hub::default();
        let sub = hub.subscribe("q");
        assert_eq!(hub.counts(), (1, 1));
        drop(sub);
        assert_eq!(hub.counts(), (0, 0));
        // A run nobody watches keeps only its counters, until it ends.
        hub.run_started("r", 0);
        hub.delta("r", "a", "x");
        hub.run_ended("r", || {
            events::finished("r", RunStatus::Failed, &Value::Null, None, None)
        });
        assert_eq!(hub.counts(), (0, 0));
    }
}
