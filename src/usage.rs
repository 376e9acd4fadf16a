//! Token usage and what it cost (SPEC §10 "Token usage").
//!
//! A prompt step turns the provider's `usage` object into a [`Usage`], priced with the
//! configured [`Price`] of its model when there is one; a run's usage is the sum of its
//! steps' as their trace lines show them (each step's cost rounded to 6 decimals, so the
//! run's cost is the sum a reader of the trace would get).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Decimal places of `cost_usd` (micro-dollars).
const COST_DECIMALS: i32 = 6;

/// USD per million tokens of one model (`[providers.NAME.prices."MODEL"]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Price {
    /// The name of the first field that is not a finite number at or above 0.
    pub fn invalid_field(&self) -> Option<&'static str> {
        let bad = |v: f64| !v.is_finite() || v < 0.0;
        if bad(self.input_per_million) {
            Some("input_per_million")
        } else if bad(self.output_per_million) {
            Some("output_per_million")
        } else {
            None
        }
    }
}

/// Tokens one or more model calls used and, when any of them had a price, what they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// `None` until a priced model adds to it: "absent when no priced model ran".
    pub cost_usd: Option<f64>,
}

impl Usage {
    /// Reads an OpenAI-style `usage` object. Missing counts are 0; a missing
    /// `total_tokens` is the sum of the other two. `None` when `value` is not an object.
    pub fn from_provider(value: &Value) -> Option<Usage> {
        let map = value.as_object()?;
        let count = |key: &str| map.get(key).and_then(Value::as_u64).unwrap_or(0);
        let (prompt_tokens, completion_tokens) =
            (count("prompt_tokens"), count("completion_tokens"));
        let total_tokens = map
            .get("total_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(prompt_tokens + completion_tokens);
        Some(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens,
            cost_usd: None,
        })
    }

    /// Reads a usage as [`Usage::to_json`] wrote it (a step's stored `usage`).
    pub fn from_stored(value: &Value) -> Option<Usage> {
        let mut usage = Usage::from_provider(value)?;
        usage.cost_usd = value.get("cost_usd").and_then(Value::as_f64);
        Some(usage)
    }

    /// Adds what these tokens cost at `price`.
    pub fn priced(mut self, price: Option<&Price>) -> Usage {
        if let Some(p) = price {
            let cost = self.prompt_tokens as f64 * p.input_per_million / 1e6
                + self.completion_tokens as f64 * p.output_per_million / 1e6;
            self.cost_usd = Some(self.cost_usd.unwrap_or(0.0) + cost);
        }
        self
    }

    /// Adds another call's usage; the cost stays absent only while both are unpriced.
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.cost_usd = match (self.cost_usd, other.cost_usd) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }

    /// `{prompt_tokens, completion_tokens, total_tokens}`, with `cost_usd` (6 decimals)
    /// when priced.
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        });
        if let Some(cost) = self.cost_usd {
            value["cost_usd"] = json!(round_cost(cost));
        }
        value
    }
}

/// Rounds to [`COST_DECIMALS`] places.
pub fn round_cost(cost: f64) -> f64 {
    let scale = 10f64.powi(COST_DECIMALS);
    (cost * scale).round() / scale
}

/// The sum of the stored usages given (JSON text, as a trace keeps them); `None` when there
/// is none: no prompt step ran.
pub fn sum_stored<'a>(usages: impl IntoIterator<Item = &'a str>) -> Option<Usage> {
    let mut total: Option<Usage> = None;
    for text in usages {
        let Some(u) = serde_json::from_str(text)
            .ok()
            .and_then(|v: Value| Usage::from_stored(&v))
        else {
            continue;
        };
        total.get_or_insert_with(Usage::default).add(&u);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICE: Price = Price {
        input_per_million: 0.15,
        output_per_million: 0.6,
    };

    #[test]
    fn reads_provider_usage_and_fills_a_missing_total() {
        let u = Usage::from_provider(&json!({"prompt_tokens": 5, "completion_tokens": 2}));
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 2,
                total_tokens: 7,
                cost_usd: None
            })
        );
        assert_eq!(Usage::from_provider(&Value::Null), None);
    }

    #[test]
    fn prices_sums_and_rounds() {
        let call = Usage::from_provider(
            &json!({"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}),
        )
        .unwrap()
        .priced(Some(&PRICE));
        // 1000 * 0.15e-6 + 500 * 0.6e-6 = 0.00015 + 0.0003
        assert_eq!(call.to_json()["cost_usd"], json!(0.00045));

        let unpriced = Usage::from_provider(&json!({"prompt_tokens": 1, "completion_tokens": 1}))
            .unwrap()
            .priced(None);
        assert_eq!(unpriced.to_json().get("cost_usd"), None);

        let mut run = unpriced;
        run.add(&call);
        assert_eq!(
            run.to_json(),
            json!({"prompt_tokens": 1001, "completion_tokens": 501, "total_tokens": 1502, "cost_usd": 0.00045})
        );
        // Seven tiny calls: the sum is rounded once, not each part.
        let tiny = Usage::from_provider(&json!({"prompt_tokens": 3, "completion_tokens": 0}))
            .unwrap()
            .priced(Some(&PRICE));
        let stored: Vec<String> = (0..7).map(|_| tiny.to_json().to_string()).collect();
        let summed = sum_stored(stored.iter().map(String::as_str)).unwrap();
        assert_eq!(summed.prompt_tokens, 21);
        // Each stored part is already rounded, as its trace line shows it: 0.00000045 → 0.
        assert_eq!(summed.cost_usd, Some(0.0));
        assert_eq!(summed.to_json()["cost_usd"], json!(0.0));
        assert_eq!(sum_stored(["not json"]), None);
    }

    #[test]
    fn refuses_negative_and_non_finite_prices() {
        let bad = Price {
            input_per_million: -1.0,
            output_per_million: 0.0,
        };
        assert_eq!(bad.invalid_field(), Some("input_per_million"));
        let bad = Price {
            input_per_million: 0.0,
            output_per_million: f64::NAN,
        };
        assert_eq!(bad.invalid_field(), Some("output_per_million"));
        assert_eq!(PRICE.invalid_field(), None);
    }
}
