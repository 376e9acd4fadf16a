//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! One process-wide registry ([`get`]): the actors and the store writer record events as they
//! happen (counters, histograms), and the gauges that describe a current state (queue depth,
//! slots in use, events waiting, paused destinations) are read from the actors when a scrape
//! arrives, so they can never drift from the truth.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::domain::{AttemptOutcome, RunStatus};

/// The `Content-Type` of [`encode`]'s output (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// `completed`, `failed` or `cancelled`.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    /// `sync` or `async`.
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `delivered`, `retrying` or `failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `queued`, `running` (holding a run slot) or `waiting` (paused at an approval step).
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The provider's name in `[providers.NAME]`.
    pub provider: String,
    pub model: String,
    /// `prompt` or `completion`.
    pub kind: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric hivelet exports. Names get the `hivelet_` prefix; counters end in `_total`.
pub struct Metrics {
    registry: Registry,
    /// Runs admitted, by how the caller waits.
    pub runs_admitted: Family<ModeLabel, Counter>,
    /// Runs that reached a terminal state, by that state.
    pub runs_ended: Family<StatusLabel, Counter>,
    /// Live runs by state (set at scrape time).
    pub runs_live: Family<StateLabel, Gauge>,
    /// Async runs waiting for a slot (set at scrape time).
    pub queue_depth: Gauge,
    /// Run slots in use and available (set at scrape time).
    pub run_slots_in_use: Gauge,
    pub run_slots_max: Gauge,
    /// Seconds from a run's start to its end, by terminal state.
    pub run_duration: HistogramFamily<StatusLabel>,
    /// Delivery attempts by outcome.
    pub deliveries: Family<OutcomeLabel, Counter>,
    /// Seconds one delivery attempt took (connect, send, response).
    pub attempt_duration: Histogram,
    /// Events held in memory waiting for their next attempt (a backlog beyond
    /// `delivery.schedule_window` waits in the database), and attempts in flight (set at
    /// scrape time).
    pub events_waiting: Gauge,
    /// The most events held in memory at once since start (set at scrape time).
    pub events_waiting_peak: Gauge,
    pub deliveries_in_flight: Gauge,
    /// Destinations whose circuit breaker is open (set at scrape time).
    pub destinations_paused: Gauge,
    /// Writes per store transaction (group commit).
    pub store_batch_size: Histogram,
    /// Seconds to apply and commit one store transaction (fsync included).
    pub store_commit_duration: Histogram,
    /// Finished runs removed by retention or `runs purge`.
    pub runs_purged: Counter,
    /// Tokens prompt steps used, as their providers reported them.
    pub tokens: Family<TokenLabels, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hivelet");
        let seconds: fn() -> Histogram = || Histogram::new(exponential_buckets(0.001, 2.5, 14)); // 1 ms … ~150 s
        let m = Metrics {
            runs_admitted: Family::default(),
            runs_ended: Family::default(),
            runs_live: Family::default(),
            queue_depth: Gauge::default(),
            run_slots_in_use: Gauge::default(),
            run_slots_max: Gauge::default(),
            run_duration: Family::new_with_constructor(seconds),
            deliveries: Family::default(),
            attempt_duration: seconds(),
            events_waiting: Gauge::default(),
            events_waiting_peak: Gauge::default(),
            deliveries_in_flight: Gauge::default(),
            destinations_paused: Gauge::default(),
            store_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)), // 1 … 2048
            store_commit_duration: Histogram::new(exponential_buckets(0.0001, 2.5, 14)),
            runs_purged: Counter::default(),
            tokens: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "runs_admitted",
            "Runs admitted, by mode (sync or async)",
            m.runs_admitted.clone(),
        );
        registry.register(
            "runs_ended",
            "Runs that reached a terminal state, by status",
            m.runs_ended.clone(),
        );
        registry.register(
            "runs",
            "Live runs by state: queued, running (holding a slot), waiting (at an approval step)",
            m.runs_live.clone(),
        );
        registry.register(
            "queue_depth",
            "Async runs queued for a run slot",
            m.queue_depth.clone(),
        );
        registry.register(
            "run_slots_in_use",
            "Run slots in use",
            m.run_slots_in_use.clone(),
        );
        registry.register(
            "run_slots",
            "Run slots in all (runs.max_concurrent)",
            m.run_slots_max.clone(),
        );
        registry.register_with_unit(
            "run_duration",
            "Time from a run's start to its end, by status",
            Unit::Seconds,
            m.run_duration.clone(),
        );
        registry.register(
            "deliveries",
            "Webhook delivery attempts by outcome (delivered, retrying, failed)",
            m.deliveries.clone(),
        );
        registry.register_with_unit(
            "delivery_attempt_duration",
            "Time one webhook delivery attempt took",
            Unit::Seconds,
            m.attempt_duration.clone(),
        );
        registry.register(
            "events_waiting",
            "Webhook events held in memory waiting for their next attempt (at most delivery.schedule_window; more wait in the database)",
            m.events_waiting.clone(),
        );
        registry.register(
            "events_waiting_peak",
            "The most webhook events held in memory at once since start",
            m.events_waiting_peak.clone(),
        );
        registry.register(
            "deliveries_in_flight",
            "Webhook delivery attempts in flight",
            m.deliveries_in_flight.clone(),
        );
        registry.register(
            "destinations_paused",
            "Callback destinations paused by the circuit breaker",
            m.destinations_paused.clone(),
        );
        registry.register(
            "store_batch_size",
            "Writes committed per store transaction (group commit)",
            m.store_batch_size.clone(),
        );
        registry.register_with_unit(
            "store_commit_duration",
            "Time to apply and commit one store transaction",
            Unit::Seconds,
            m.store_commit_duration.clone(),
        );
        registry.register(
            "runs_purged",
            "Finished runs removed by retention or runs purge",
            m.runs_purged.clone(),
        );
        registry.register(
            "tokens",
            "Tokens used by prompt steps, by provider, model and kind (prompt or completion)",
            m.tokens.clone(),
        );
        let build_info: Family<Vec<(String, String)>, Gauge> = Family::default();
        build_info
            .get_or_create(&vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )])
            .set(1);
        registry.register("build_info", "hivelet's version", build_info);
        // Every label value exists from the start, so a scrape shows 0 rather than nothing.
        for status in [
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            let status = status.as_str();
            let _ = m.runs_ended.get_or_create(&StatusLabel { status });
            let _ = m.run_duration.get_or_create(&StatusLabel { status });
        }
        for outcome in AttemptOutcome::ALL {
            let outcome = outcome.as_str();
            let _ = m.deliveries.get_or_create(&OutcomeLabel { outcome });
        }
        for mode in ["sync", "async"] {
            let _ = m.runs_admitted.get_or_create(&ModeLabel { mode });
        }
        Metrics { registry, ..m }
    }

    pub fn run_ended(&self, status: &'static str, duration: Duration) {
        let label = StatusLabel { status };
        self.runs_ended.get_or_create(&label).inc();
        self.run_duration
            .get_or_create(&label)
            .observe(duration.as_secs_f64());
    }

    /// Counts one model call's tokens.
    pub fn tokens_used(&self, provider: &str, model: &str, usage: &crate::usage::Usage) {
        for (kind, n) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
        ] {
            self.tokens
                .get_or_create(&TokenLabels {
                    provider: provider.to_owned(),
                    model: model.to_owned(),
                    kind,
                })
                .inc_by(n);
        }
    }

    pub fn attempt(&self, outcome: &'static str, duration: Duration) {
        self.deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.attempt_duration.observe(duration.as_secs_f64());
    }

    pub fn store_commit(&self, batch: usize, duration: Duration) {
        self.store_batch_size.observe(batch as f64);
        self.store_commit_duration.observe(duration.as_secs_f64());
    }

    /// The gauges read from the actors at scrape time.
    pub fn set_live(&self, live: &LiveState) {
        let gauge = |state| self.runs_live.get_or_create(&StateLabel { state }).clone();
        gauge("queued").set(live.queued as i64);
        gauge("running").set(live.slots_in_use as i64);
        gauge("waiting").set(live.waiting_approval as i64);
        self.queue_depth.set(live.queued as i64);
        self.run_slots_in_use.set(live.slots_in_use as i64);
        self.run_slots_max.set(live.slots_max as i64);
        self.events_waiting.set(live.events_waiting as i64);
        self.events_waiting_peak
            .set(live.events_waiting_peak as i64);
        self.deliveries_in_flight
            .set(live.deliveries_in_flight as i64);
        self.destinations_paused
            .set(live.destinations_paused as i64);
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%err, "cannot encode metrics");
        }
        text
    }
}

/// What the actors report at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveState {
    pub slots_in_use: usize,
    pub slots_max: usize,
    pub queued: usize,
    pub waiting_approval: usize,
    pub events_waiting: usize,
    pub events_waiting_peak: usize,
    pub deliveries_in_flight: usize,
    pub destinations_paused: usize,
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_counters_end_in_total() {
        let m = get();
        m.run_ended("completed", Duration::from_millis(12));
        m.attempt("delivered", Duration::from_millis(3));
        m.store_commit(4, Duration::from_micros(300));
        let text = m.encode();
        for needle in [
            "hivelet_runs_ended_total{status=\"completed\"}",
            "hivelet_run_duration_seconds_bucket{",
            "hivelet_deliveries_total{outcome=\"delivered\"}",
            "hivelet_delivery_attempt_duration_seconds_count",
            "hivelet_store_batch_size_bucket{le=\"4.0\"}",
            "hivelet_store_commit_duration_seconds_sum",
            "hivelet_build_info{version=",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
