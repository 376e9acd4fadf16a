//! The daemon's provider limits, shared by every run: a semaphore for `max_concurrent` and
//! token buckets for `requests_per_minute` and `tokens_per_minute`. Tokens are known only
//! after a reply, so the token bucket is charged afterwards and may go negative; a request
//! then waits until it has refilled above zero.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ProviderSection;
use crate::workflow::capacity::{CapacityPermit, Permit, ProviderCapacity};

/// How long a waiting request sleeps at most before it looks again: a bucket refills
/// continuously, and another request's charge may change when it has enough.
const RECHECK: Duration = Duration::from_millis(250);

/// A bucket holding up to `per_minute`, refilled evenly over a minute, starting full.
struct Bucket {
    per_minute: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: u64) -> Self {
        Bucket {
            per_minute: per_minute as f64,
            level: per_minute as f64,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.per_minute / 60.0).min(self.per_minute);
        self.at = now;
    }

    /// How long until the level reaches `need`.
    fn wait_for(&self, need: f64) -> Duration {
        let missing = (need - self.level).max(0.0);
        Duration::from_secs_f64(missing * 60.0 / self.per_minute)
    }
}

#[derive(Default)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl Buckets {
    /// Takes one request from the budget, or says how long to wait.
    fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        if let Some(tokens) = &mut self.tokens {
            tokens.refill(now);
            // A spent (negative) budget waits; any positive budget lets one request go.
            if tokens.level < 0.0 {
                wait = wait.max(tokens.wait_for(0.0).max(Duration::from_millis(1)));
            }
        }
        if let Some(requests) = &mut self.requests {
            requests.refill(now);
            if requests.level < 1.0 {
                wait = wait.max(requests.wait_for(1.0).max(Duration::from_millis(1)));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(requests) = &mut self.requests {
            requests.level -= 1.0;
        }
        Ok(())
    }
}

struct Provider {
    in_flight: Option<Arc<Semaphore>>,
    buckets: Arc<Mutex<Buckets>>,
}

/// One provider's permit: its place among the requests in flight (freed on drop) and its
/// token budget to charge.
struct Held {
    _in_flight: Option<OwnedSemaphorePermit>,
    buckets: Arc<Mutex<Buckets>>,
}

impl Permit for Held {
    fn charge_tokens(&self, tokens: u64) {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(bucket) = &mut buckets.tokens {
            bucket.refill(Instant::now());
            bucket.level -= tokens as f64;
        }
    }
}

/// The limits of every configured provider; providers without limits are not listed.
pub struct ProviderLimits {
    providers: HashMap<String, Provider>,
}

impl ProviderLimits {
    pub fn new(config: &BTreeMap<String, ProviderSection>) -> Self {
        let providers = config
            .iter()
            .filter(|(_, p)| {
                p.max_concurrent.is_some()
                    || p.requests_per_minute.is_some()
                    || p.tokens_per_minute.is_some()
            })
            .map(|(name, p)| {
                let provider = Provider {
                    in_flight: p.max_concurrent.map(|n| Arc::new(Semaphore::new(n))),
                    buckets: Arc::new(Mutex::new(Buckets {
                        requests: p.requests_per_minute.map(Bucket::new),
                        tokens: p.tokens_per_minute.map(Bucket::new),
                    })),
                };
                (name.clone(), provider)
            })
            .collect();
        ProviderLimits { providers }
    }
}

fn unlimited() -> CapacityPermit {
    struct Free;
    impl Permit for Free {
        fn charge_tokens(&self, _: u64) {}
    }
    CapacityPermit(Box::new(Free))
}

impl ProviderCapacity for ProviderLimits {
    fn try_acquire(&self, provider: &str) -> Option<CapacityPermit> {
        let Some(p) = self.providers.get(provider) else {
            return Some(unlimited());
        };
        let in_flight = match &p.in_flight {
            Some(sem) => Some(sem.clone().try_acquire_owned().ok()?),
            None => None,
        };
        let taken = p
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        taken.ok()?;
        Some(CapacityPermit(Box::new(Held {
            _in_flight: in_flight,
            buckets: p.buckets.clone(),
        })))
    }

    fn acquire(&self, provider: &str) -> LocalBoxFuture<'static, CapacityPermit> {
        let Some(p) = self.providers.get(provider) else {
            return Box::pin(async { unlimited() });
        };
        let sem = p.in_flight.clone();
        let buckets = p.buckets.clone();
        Box::pin(async move {
            // In flight first (fair, first come first served), then the per-minute budget.
            let in_flight = match sem {
                Some(sem) => Some(
                    sem.acquire_owned()
                        .await
                        .expect("the semaphore is never closed"),
                ),
                None => None,
            };
            loop {
                let taken = buckets
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                match taken {
                    Ok(()) => {
                        return CapacityPermit(Box::new(Held {
                            _in_flight: in_flight,
                            buckets,
                        }))
                    }
                    Err(wait) => actix_rt::time::sleep(wait.min(RECHECK)).await,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(max: Option<usize>, rpm: Option<u64>, tpm: Option<u64>) -> ProviderSection {
        ProviderSection {
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key_env: None,
            prices: BTreeMap::new(),
            max_concurrent: max,
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
        }
    }

    fn limits(p: ProviderSection) -> ProviderLimits {
        ProviderLimits::new(&BTreeMap::from([("p".to_string(), p)]))
    }

    #[test]
    fn max_concurrent_frees_a_place_when_a_permit_drops() {
        let l = limits(section(Some(2), None, None));
        let a = l.try_acquire("p").expect("first");
        let _b = l.try_acquire("p").expect("second");
        assert!(l.try_acquire("p").is_none(), "a third must wait");
        drop(a);
        assert!(l.try_acquire("p").is_some());
        assert!(
            l.try_acquire("other").is_some(),
            "an unlimited provider never waits"
        );
    }

    #[test]
    fn requests_per_minute_lets_the_limit_through_then_waits() {
        let l = limits(section(None, Some(2), None));
        assert!(l.try_acquire("p").is_some());
        assert!(l.try_acquire("p").is_some());
        assert!(l.try_acquire("p").is_none());
    }

    #[test]
    fn a_spent_token_budget_holds_the_next_request() {
        let l = limits(section(None, None, Some(100)));
        let first = l.try_acquire("p").expect("a full budget");
        first.charge(Some(&serde_json::json!({"total_tokens": 150})));
        drop(first);
        assert!(l.try_acquire("p").is_none(), "the budget is negative");
    }
}
