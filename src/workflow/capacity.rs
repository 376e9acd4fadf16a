//! Provider capacity as the engine sees it (SPEC §12): before each attempt of a prompt step
//! the engine asks for a permit for the step's provider, and records a `waiting` line with
//! reason `provider_capacity` while it has to wait. The limits themselves (in-flight requests,
//! requests and tokens a minute) live in the daemon, shared by all runs: see
//! [`crate::flow::ProviderLimits`].

use futures_util::future::LocalBoxFuture;

/// Hands out permits to call a provider.
pub trait ProviderCapacity {
    /// A permit at once, or `None` when the provider is at one of its limits.
    fn try_acquire(&self, provider: &str) -> Option<CapacityPermit>;
    /// Resolves with a permit once the provider has capacity again.
    fn acquire(&self, provider: &str) -> LocalBoxFuture<'static, CapacityPermit>;
}

/// What a held permit must do: take the tokens a reply used off the provider's budget.
/// Dropping it frees its place among the requests in flight.
pub trait Permit {
    fn charge_tokens(&self, tokens: u64);
}

/// Held while one request is in flight.
pub struct CapacityPermit(pub Box<dyn Permit>);

impl CapacityPermit {
    /// Charges the tokens the reply reported (`usage.total_tokens`).
    pub fn charge(&self, usage: Option<&serde_json::Value>) {
        let tokens = usage
            .and_then(|u| u.get("total_tokens"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if tokens > 0 {
            self.0.charge_tokens(tokens);
        }
    }
}
