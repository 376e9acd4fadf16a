//! Checks a run's start inputs against the workflow's declared inputs (SPEC §2) before the
//! run is stored, and fills in declared defaults. Messages follow Fetch Hive's wording.

use std::fmt;

use serde_json::{Map, Value};

use super::definition::{Definition, InputType};

/// One input at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The request field at fault, e.g. `inputs.name`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InputError {}

/// Returns the inputs with defaults filled in, or the first problem: a missing required
/// input, a value of the wrong type, or an input the workflow does not declare.
/// `null` for an optional input counts as absent.
pub fn check_inputs(
    def: &Definition,
    inputs: &Map<String, Value>,
) -> Result<Map<String, Value>, InputError> {
    let mut out = Map::new();
    for spec in &def.inputs {
        let err = |message: String| InputError {
            field: format!("inputs.{}", spec.name),
            message,
        };
        match inputs.get(&spec.name).filter(|v| !v.is_null()) {
            Some(v) if spec.kind.matches(v) => {
                out.insert(spec.name.clone(), v.clone());
            }
            Some(v) => {
                return Err(err(format!(
                    "Input {} must be {}, got {}",
                    spec.name,
                    spec.kind,
                    InputType::name_of(v)
                )))
            }
            None if spec.required => {
                return Err(err(format!(
                    "Missing required input: {} (expected {})",
                    spec.name, spec.kind
                )))
            }
            None => {
                if let Some(d) = &spec.default {
                    out.insert(spec.name.clone(), d.clone());
                }
            }
        }
    }
    if let Some(unknown) = inputs
        .keys()
        .find(|k| !def.inputs.iter().any(|s| &s.name == *k))
    {
        let expected = if def.inputs.is_empty() {
            "this workflow takes no inputs".to_owned()
        } else {
            let names: Vec<&str> = def.inputs.iter().map(|s| s.name.as_str()).collect();
            format!("expected one of: {}", names.join(", "))
        };
        return Err(InputError {
            field: format!("inputs.{unknown}"),
            message: format!("Unknown input: {unknown} ({expected})"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def() -> Definition {
        Definition::from_toml_str(
            r#"
key = "k"
[[inputs]]
name = "name"
type = "text"
required = true
[[inputs]]
name = "count"
type = "number"
default = 3
[[inputs]]
name = "opts"
type = "object"
[[steps]]
id = "s"
type = "delay"
ms = 1
"#,
        )
        .unwrap()
    }

    fn check(v: Value) -> Result<Map<String, Value>, InputError> {
        check_inputs(&def(), v.as_object().unwrap())
    }

    #[test]
    fn fills_defaults() {
        let out = check(json!({"name": "Ada", "opts": null})).unwrap();
        assert_eq!(Value::Object(out), json!({"name": "Ada", "count": 3}));
        let out = check(json!({"name": "Ada", "count": 1.5, "opts": {}})).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"name": "Ada", "count": 1.5, "opts": {}})
        );
    }

    #[test]
    fn messages() {
        let e = check(json!({})).unwrap_err();
        assert_eq!(e.field, "inputs.name");
        assert_eq!(e.message, "Missing required input: name (expected text)");

        let e = check(json!({"name": null})).unwrap_err();
        assert_eq!(e.message, "Missing required input: name (expected text)");

        let e = check(json!({"name": 5})).unwrap_err();
        assert_eq!(e.field, "inputs.name");
        assert_eq!(e.message, "Input name must be text, got number");

        let e = check(json!({"name": "x", "count": "7"})).unwrap_err();
        assert_eq!(e.message, "Input count must be number, got text");

        let e = check(json!({"name": "x", "foo": 1})).unwrap_err();
        assert_eq!(e.field, "inputs.foo");
        assert_eq!(
            e.message,
            "Unknown input: foo (expected one of: name, count, opts)"
        );
    }
}
