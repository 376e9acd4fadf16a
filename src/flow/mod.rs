//! Flow control (SPEC §12): a run's priority, its deployment's concurrency key, and the
//! per-provider limits prompt steps wait for. The queue that applies priority and keys is
//! [`crate::actors::flow`]; the engine's side of provider limits is
//! [`crate::workflow::capacity`].

mod limiter;

use serde_json::{Map, Value};

pub use limiter::ProviderLimits;

use crate::workflow::{template, Definition};

/// The priority of an invoke that names none.
pub const DEFAULT_PRIORITY: u8 = 5;
/// The highest priority an invoke may ask for (0 is the lowest).
pub const MAX_PRIORITY: u8 = 9;

/// The longest rendered key kept; a longer one is refused rather than cut, so two keys
/// never collide by truncation.
const MAX_KEY_BYTES: usize = 512;

/// Renders the deployment's `[concurrency] key` for one invoke: `None` when it has none.
/// The scope is the inputs (by name and as `inputs`), `metadata`, `user` and the variant's
/// `vars`. `Err` says why it did not render (the invoke is then refused, nothing stored).
pub fn concurrency_key(
    def: &Definition,
    inputs: &Map<String, Value>,
    metadata: &Map<String, Value>,
    user: Option<&str>,
    vars: Option<&Map<String, Value>>,
) -> Result<Option<String>, String> {
    let Some(concurrency) = &def.concurrency else {
        return Ok(None);
    };
    let mut scope = inputs.clone();
    scope.insert("inputs".into(), Value::Object(inputs.clone()));
    scope.insert("metadata".into(), Value::Object(metadata.clone()));
    scope.insert("user".into(), user.map_or(Value::Null, Value::from));
    scope.insert(
        "vars".into(),
        Value::Object(vars.cloned().unwrap_or_default()),
    );
    let key = template::render(&concurrency.key, &Value::Object(scope))
        .map_err(|e| format!("the concurrency key template did not render: {e}"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(
            "the concurrency key rendered empty (is the metadata, input or user it names missing?)"
                .into(),
        );
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the concurrency key rendered longer than {MAX_KEY_BYTES} bytes"
        ));
    }
    Ok(Some(key.to_owned()))
}
