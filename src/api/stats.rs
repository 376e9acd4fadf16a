//! `GET /v1/stats`: runs and deliveries over a recent window, in time buckets (SPEC §13).

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Admin;
use super::routing::endpoint;
use super::state::AppState;
use crate::domain::{EventState, RunStatus};
use crate::error::ApiError;
use crate::ids;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/stats").get(stats));
}

/// At most this many rows of each kind (runs, events, delivered attempts) are read, so a
/// busy week costs a bounded amount; `truncated` says when the cap was reached.
const ROW_CAP: usize = 500_000;

/// Two numbers of a distribution.
#[derive(Debug, Serialize, ToSchema)]
pub struct Percentiles {
    pub p50: Option<i64>,
    pub p95: Option<i64>,
}

/// The bucket's events by their current state.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct DeliveryCounts {
    pub delivered: u64,
    pub retrying: u64,
    pub failed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsBucket {
    #[schema(format = DateTime)]
    pub start: String,
    /// Runs created in the bucket, by their current status (only statuses that occur).
    #[schema(value_type = Object)]
    pub runs: BTreeMap<String, u64>,
    pub deliveries: DeliveryCounts,
    /// Duration of the delivered attempts started in the bucket.
    pub delivery_latency_ms: Percentiles,
    /// Duration of the ended runs created in the bucket.
    pub run_duration_ms: Percentiles,
    /// The total tokens of the runs created in the bucket.
    pub tokens: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// `1h`, `24h` or `7d`.
    pub window: String,
    /// 60, 900 or 3600.
    pub bucket_seconds: u32,
    /// Oldest first, covering the window up to now.
    pub buckets: Vec<StatsBucket>,
    /// True when the window held more rows than are read; the counts then cover part of it.
    pub truncated: bool,
}

#[derive(Default)]
struct Acc {
    runs: BTreeMap<String, u64>,
    deliveries: DeliveryCounts,
    latencies: Vec<i64>,
    durations: Vec<i64>,
    tokens: u64,
}

/// Nearest-rank percentile of a sorted list.
fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn percentiles(mut values: Vec<i64>) -> Percentiles {
    values.sort_unstable();
    Percentiles {
        p50: percentile(&values, 50),
        p95: percentile(&values, 95),
    }
}

/// Runs per status, deliveries, latencies and tokens over the last hour (1-minute buckets),
/// day (15 minutes) or week (1 hour). Runs count in the bucket of their creation, by their
/// current status; events likewise by their current state.
#[utoipa::path(get, path = "/v1/stats", operation_id = "stats", tag = "runs",
    params(("window" = Option<super::bodies::StatsWindow>, Query, description = "`1h` (default), `24h` or `7d`")),
    responses(
        (status = 200, description = "The buckets", body = Stats),
        (status = 422, description = "An unknown `window` or parameter; `field` names it", body = crate::error::ErrorEnvelope),
        super::responses::NeedsAdmin,
    ))]
async fn stats(
    state: web::Data<AppState>,
    _admin: Admin,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let mut window = "1h".to_string();
    for (name, value) in query.into_inner() {
        match name.as_str() {
            "window" => window = value.trim().to_string(),
            other => {
                return Err(ApiError::field(
                    other,
                    format!("unknown parameter: {other}"),
                ))
            }
        }
    }
    let (span_ms, bucket_seconds): (i64, u32) = match window.as_str() {
        "1h" => (3_600_000, 60),
        "24h" => (86_400_000, 900),
        "7d" => (7 * 86_400_000, 3600),
        _ => {
            return Err(ApiError::field(
                "window",
                "window must be one of 1h, 24h, 7d",
            ))
        }
    };
    let bucket_ms = i64::from(bucket_seconds) * 1000;
    let now = ids::now_ms();
    // Whole buckets: the first starts at or before `now - span`, the last holds `now`.
    let first = (now - span_ms).div_euclid(bucket_ms) * bucket_ms + bucket_ms;
    let count = ((now - first).div_euclid(bucket_ms) + 1) as usize;
    let rows = state.store.stats_rows(first, ROW_CAP).await?;
    let mut accs: Vec<Acc> = (0..count).map(|_| Acc::default()).collect();
    let slot = |at: i64| -> Option<usize> {
        (at >= first)
            .then(|| ((at - first) / bucket_ms) as usize)
            .filter(|i| *i < count)
    };
    for (created_at, status, duration_ms, tokens) in rows.runs {
        let Some(acc) = slot(created_at).map(|i| &mut accs[i]) else {
            continue;
        };
        *acc.runs.entry(status.as_str().to_string()).or_default() += 1;
        if !matches!(status, RunStatus::Queued | RunStatus::Running) {
            if let Some(ms) = duration_ms {
                acc.durations.push(ms);
            }
        }
        acc.tokens += tokens.unwrap_or(0).max(0) as u64;
    }
    for (created_at, event_state) in rows.events {
        let Some(acc) = slot(created_at).map(|i| &mut accs[i]) else {
            continue;
        };
        match event_state {
            EventState::Delivered => acc.deliveries.delivered += 1,
            EventState::Retrying => acc.deliveries.retrying += 1,
            EventState::Failed => acc.deliveries.failed += 1,
            EventState::Held | EventState::Pending => {}
        }
    }
    for (started_at, duration_ms) in rows.deliveries {
        if let Some(i) = slot(started_at) {
            accs[i].latencies.push(duration_ms);
        }
    }
    let buckets = accs
        .into_iter()
        .enumerate()
        .map(|(i, acc)| StatsBucket {
            start: ids::rfc3339(first + i as i64 * bucket_ms),
            runs: acc.runs,
            deliveries: acc.deliveries,
            delivery_latency_ms: percentiles(acc.latencies),
            run_duration_ms: percentiles(acc.durations),
            tokens: acc.tokens,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Stats {
        window,
        bucket_seconds,
        buckets,
        truncated: rows.truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 95), Some(7));
        let values: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), Some(50));
        assert_eq!(percentile(&values, 95), Some(95));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
    }
}
