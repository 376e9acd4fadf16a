//! Parsing workflow documents: TOML or JSON text → [`Definition`].
//!
//! Parsing is hand-written on top of `serde_json::Value` instead of derived: serde's
//! `flatten` + internally tagged enums + `deny_unknown_fields` do not combine, and derived
//! errors rarely say which step or field is at fault. Here every error carries the step id
//! and the field name, so a user editing `workflows/x.toml` is told exactly what to fix.
//! Parsing checks only the shape; what the values mean is `validate.rs`'s business.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::definition::{
    ApprovalChoice, BranchCase, ChatRole, ConcurrencyDef, Definition, DefinitionError, InputSpec,
    InputType, Message, Messages, OutputDef, ResponseFormat, StepDef, StepKind, VariantDef,
};

impl Definition {
    /// Parses a TOML document. Syntax errors give the line and column.
    pub fn from_toml_str(src: &str) -> Result<Definition, DefinitionError> {
        let value: Value = toml::from_str(src).map_err(|e| toml_error(src, &e))?;
        Self::from_json_value(value)
    }

    /// Parses a JSON document. Syntax errors give the line and column.
    pub fn from_json_str(src: &str) -> Result<Definition, DefinitionError> {
        let value: Value = serde_json::from_str(src).map_err(|e| DefinitionError {
            source_name: None,
            step: None,
            field: None,
            message: format!("invalid JSON: {e}"),
        })?;
        Self::from_json_value(value)
    }

    /// Converts an already parsed document (JSON, or TOML turned into JSON).
    pub fn from_json_value(value: Value) -> Result<Definition, DefinitionError> {
        parse_definition(value)
    }
}

impl<'de> Deserialize<'de> for Definition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        parse_definition(value).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for StepDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        parse_step(None, value).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for InputSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        parse_input("input", value).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ApprovalChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            value: String,
            label: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Plain(String),
            Full(Full),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Plain(s)) => Ok(ApprovalChoice {
                value: s.clone(),
                label: s,
            }),
            Ok(Raw::Full(f)) => Ok(ApprovalChoice {
                label: f.label.unwrap_or_else(|| f.value.clone()),
                value: f.value,
            }),
            Err(_) => Err(serde::de::Error::custom(
                "a choice must be a string or a table with `value` and optional `label`",
            )),
        }
    }
}

/// Turns a toml error into one line: `line 3, column 7: <what>`.
fn toml_error(src: &str, e: &toml::de::Error) -> DefinitionError {
    let message = match e.span() {
        Some(span) => {
            let before = &src[..span.start.min(src.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(
                "TOML syntax error at line {line}, column {column}: {}",
                one_line(e.message())
            )
        }
        None => format!("TOML syntax error: {}", one_line(e.message())),
    };
    DefinitionError {
        source_name: None,
        step: None,
        field: None,
        message,
    }
}

/// Error messages end up in logs and JSON replies, so keep them on one line.
fn one_line(s: &str) -> String {
    s.trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A JSON object being taken apart field by field; whatever is left at the end is unknown.
struct Fields {
    map: Map<String, Value>,
    /// Prefix for field names in errors (`inputs[0].`), empty inside a step.
    prefix: String,
    step: Option<String>,
}

impl Fields {
    fn new(
        value: Value,
        field: &str,
        step: Option<&str>,
        prefix: String,
    ) -> Result<Self, DefinitionError> {
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                prefix,
                step: step.map(str::to_owned),
            }),
            other => Err(DefinitionError::new(
                step,
                Some(field),
                format!("must be a table, got {}", InputType::name_of(&other)),
            )),
        }
    }

    fn err(&self, field: &str, message: impl Into<String>) -> DefinitionError {
        let field = format!("{}{field}", self.prefix);
        DefinitionError::new(self.step.as_deref(), Some(&field), message)
    }

    /// Takes an optional field; `null` counts as absent.
    fn opt<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, DefinitionError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| self.err(name, e.to_string())),
        }
    }

    fn req<T: DeserializeOwned>(&mut self, name: &str) -> Result<T, DefinitionError> {
        self.opt(name)?
            .ok_or_else(|| self.err(name, "missing required field"))
    }

    /// Fails on the first field nobody took.
    fn finish(self, what: &str, allowed: &[&str]) -> Result<(), DefinitionError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(self.err(
                k,
                format!("unknown field for {what} (allowed: {})", allowed.join(", ")),
            )),
        }
    }
}

fn parse_definition(value: Value) -> Result<Definition, DefinitionError> {
    let mut f = Fields::new(value, "(document)", None, String::new())?;
    let key: String = f.req("key")?;
    let description = f.opt("description")?;
    let inputs = match f.map.remove("inputs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| parse_input(&format!("inputs[{i}]"), v))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(f.err(
                "inputs",
                format!(
                    "must be an array of tables ([[inputs]]), got {}",
                    InputType::name_of(&other)
                ),
            ))
        }
    };
    let steps = match f.map.remove("steps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| parse_step(Some(format!("steps[{i}]")), v))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(f.err(
                "steps",
                format!(
                    "must be an array of tables ([[steps]]), got {}",
                    InputType::name_of(&other)
                ),
            ))
        }
    };
    let output = match f.map.remove("output") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let mut o = Fields::new(v, "output", None, "output.".to_owned())?;
            let template = o.req("template")?;
            o.finish("[output]", &["template"])?;
            Some(OutputDef { template })
        }
    };
    let mut variants = BTreeMap::new();
    match f.map.remove("variants") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, v) in map {
                let field = format!("variants.{name}");
                let mut o = Fields::new(v, &field, None, format!("{field}."))?;
                let vars = o.opt("vars")?.unwrap_or_default();
                o.finish("a variant", &["vars"])?;
                variants.insert(name, VariantDef { vars });
            }
        }
        Some(other) => {
            return Err(f.err(
                "variants",
                format!("must be a table, got {}", InputType::name_of(&other)),
            ))
        }
    }
    let timeout_ms = f.opt("timeout_ms")?;
    let async_only = f.opt("async_only")?.unwrap_or(false);
    let schedules = match f.map.remove("schedules") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(table) => Ok(table),
                _ => Err(DefinitionError::top(
                    &format!("schedules[{i}]"),
                    "must be a table ([[schedules]])",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(f.err(
                "schedules",
                "must be an array of tables ([[schedules]])".to_string(),
            ))
        }
    };
    let concurrency = match f.map.remove("concurrency") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let mut c = Fields::new(v, "concurrency", None, "concurrency.".to_owned())?;
            let key = c.req("key")?;
            let limit = c.opt("limit")?.unwrap_or(1);
            c.finish("[concurrency]", &["key", "limit"])?;
            Some(ConcurrencyDef { key, limit })
        }
    };
    f.finish(
        "a workflow",
        &[
            "key",
            "description",
            "inputs",
            "steps",
            "output",
            "variants",
            "timeout_ms",
            "async_only",
            "schedules",
            "concurrency",
        ],
    )?;
    Ok(Definition {
        key,
        description,
        inputs,
        steps,
        output,
        variants,
        timeout_ms,
        async_only,
        schedules,
        concurrency,
    })
}

fn parse_input(field: &str, value: Value) -> Result<InputSpec, DefinitionError> {
    let mut f = Fields::new(value, field, None, format!("{field}."))?;
    let name = f.req("name")?;
    let type_word: String = f.req("type")?;
    let kind = InputType::parse(&type_word).ok_or_else(|| {
        f.err(
            "type",
            format!(
                "unknown input type {type_word:?} (expected text, number, boolean, array or object)"
            ),
        )
    })?;
    let required = f.opt("required")?.unwrap_or(false);
    let description = f.opt("description")?;
    let default = f.map.remove("default").filter(|v| !v.is_null());
    f.finish(
        "an input",
        &["name", "type", "required", "description", "default"],
    )?;
    Ok(InputSpec {
        name,
        kind,
        required,
        description,
        default,
    })
}

const COMMON_STEP_FIELDS: &[&str] = &["id", "type", "when", "on_error", "retries"];

/// Parses the step at `at` (`steps[2]`, or `steps[2].cases[0].steps[1]` when nested; `None`
/// for a lone step). Errors name the step by id and, for a nested step, the field by its
/// whole path (`steps[2].cases[0].steps[1].url`), so the one at fault is found at once.
fn parse_step(at: Option<String>, value: Value) -> Result<StepDef, DefinitionError> {
    let nested = at.as_deref().is_some_and(|a| a.contains('.'));
    let at = at.unwrap_or_else(|| "step".to_owned());
    let mut f = Fields::new(value, &at, None, format!("{at}."))?;
    let id: String = f.req("id")?;
    // From here on errors name the step by its id (and a nested one by its path too).
    f.step = Some(id.clone());
    if !nested {
        f.prefix.clear();
    }
    let type_word: String = f.req("type")?;
    let when = f.opt("when")?;
    let on_error = f.opt("on_error")?.unwrap_or_default();
    let retries = f.opt("retries")?.unwrap_or(0);
    let (kind, fields): (StepKind, &[&str]) = match type_word.as_str() {
        "template" => (
            StepKind::Template {
                template: f.req("template")?,
                json: f.opt("json")?.unwrap_or(false),
            },
            &["template", "json"],
        ),
        "http" => (
            StepKind::Http {
                method: f.opt("method")?.unwrap_or_else(|| "GET".to_owned()),
                url: f.req("url")?,
                headers: f.opt("headers")?.unwrap_or_default(),
                body: f.opt("body")?,
                timeout_ms: f.opt("timeout_ms")?,
            },
            &["method", "url", "headers", "body", "timeout_ms"],
        ),
        "prompt" => (
            parse_prompt(&mut f)?,
            &[
                "provider",
                "model",
                "system",
                "prompt",
                "messages",
                "temperature",
                "max_tokens",
                "response_format",
                "json_schema",
                "stream",
            ],
        ),
        "command" => (
            StepKind::Command {
                program: f.req("program")?,
                args: f.opt("args")?.unwrap_or_default(),
                stdin: f.opt("stdin")?,
                timeout_ms: f.opt("timeout_ms")?,
            },
            &["program", "args", "stdin", "timeout_ms"],
        ),
        "delay" => (StepKind::Delay { ms: f.req("ms")? }, &["ms"]),
        "approval" => (
            StepKind::Approval {
                question: f.opt("question")?,
                choices: f.opt("choices")?.unwrap_or_default(),
                timeout_ms: f.opt("timeout_ms")?,
            },
            &["question", "choices", "timeout_ms"],
        ),
        "branch" => {
            let cases = match f.map.remove("cases") {
                None | Some(Value::Null) => return Err(f.err("cases", "missing required field")),
                Some(Value::Array(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| parse_case(&f, &at, i, v))
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(f.err(
                        "cases",
                        format!(
                            "must be an array of tables ({{ when, steps }}), got {}",
                            InputType::name_of(&other)
                        ),
                    ))
                }
            };
            let default = match f.map.remove("default") {
                None | Some(Value::Null) => None,
                Some(v) => Some(parse_steps(&f, "default", &format!("{at}.default"), v)?),
            };
            (StepKind::Branch { cases, default }, &["cases", "default"])
        }
        "loop" => {
            let for_each = f.opt("for_each")?;
            let as_name = f.opt("as")?;
            let until = f.opt("until")?;
            let max_iterations = f.opt("max_iterations")?;
            let concurrency = f.opt("concurrency")?;
            let steps = match f.map.remove("steps") {
                None | Some(Value::Null) => return Err(f.err("steps", "missing required field")),
                Some(v) => parse_steps(&f, "steps", &format!("{at}.steps"), v)?,
            };
            (
                StepKind::Loop {
                    for_each,
                    as_name,
                    until,
                    steps,
                    max_iterations,
                    concurrency,
                },
                &[
                    "for_each",
                    "as",
                    "until",
                    "steps",
                    "max_iterations",
                    "concurrency",
                ],
            )
        }
        "workflow" => {
            let deployment: String = f.req("deployment")?;
            let variant = f.opt("variant")?;
            let inputs = match f.map.remove("inputs") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(map)) => map,
                Some(other) => {
                    return Err(f.err(
                        "inputs",
                        format!("must be a table, got {}", InputType::name_of(&other)),
                    ))
                }
            };
            (
                StepKind::Workflow {
                    deployment,
                    variant,
                    inputs,
                },
                &["deployment", "variant", "inputs"],
            )
        }
        other => {
            return Err(f.err(
                "type",
                format!(
                    "unknown step type {other:?} (expected template, http, prompt, command, delay, approval, branch, loop or workflow)"
                ),
            ))
        }
    };
    let allowed: Vec<&str> = COMMON_STEP_FIELDS.iter().chain(fields).copied().collect();
    f.finish(&format!("a {type_word} step"), &allowed)?;
    Ok(StepDef {
        id,
        when,
        on_error,
        retries,
        kind,
    })
}

/// A nested `steps` array (the field `field` of the step `f` is parsing), its steps at
/// `{at}[j]`.
fn parse_steps(
    f: &Fields,
    field: &str,
    at: &str,
    value: Value,
) -> Result<Vec<StepDef>, DefinitionError> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(j, v)| parse_step(Some(format!("{at}[{j}]")), v))
            .collect(),
        other => Err(f.err(
            field,
            format!(
                "must be an array of steps, got {}",
                InputType::name_of(&other)
            ),
        )),
    }
}

/// Case `i` of the branch step `f` is parsing (at `at`).
fn parse_case(f: &Fields, at: &str, i: usize, value: Value) -> Result<BranchCase, DefinitionError> {
    let field = format!("cases[{i}]");
    let mut c = Fields::new(
        value,
        &format!("{}{field}", f.prefix),
        f.step.as_deref(),
        format!("{}{field}.", f.prefix),
    )?;
    let when = c.req("when")?;
    let steps = match c.map.remove("steps") {
        None | Some(Value::Null) => return Err(c.err("steps", "missing required field")),
        Some(v) => parse_steps(&c, "steps", &format!("{at}.{field}.steps"), v)?,
    };
    c.finish("a branch case", &["when", "steps"])?;
    Ok(BranchCase { when, steps })
}

/// The type-specific fields of a `prompt` step: exactly one of `prompt` and `messages`.
fn parse_prompt(f: &mut Fields) -> Result<StepKind, DefinitionError> {
    let provider = f.req("provider")?;
    let model = f.req("model")?;
    let system = f.opt("system")?;
    let prompt: Option<String> = f.opt("prompt")?;
    let messages = match f.map.remove("messages") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_messages(f, v)?),
    };
    match (&prompt, &messages) {
        (Some(_), Some(_)) => {
            return Err(f.err("messages", "set either `prompt` or `messages`, not both"))
        }
        (None, None) => {
            return Err(f.err(
                "prompt",
                "missing required field (a prompt step needs `prompt` or `messages`)",
            ))
        }
        _ => {}
    }
    let response_format = match f.opt::<String>("response_format")? {
        None => None,
        Some(word) => Some(match word.as_str() {
            "json" => ResponseFormat::Json,
            "text" => ResponseFormat::Text,
            _ => {
                return Err(f.err(
                    "response_format",
                    format!("unknown response format {word:?} (expected \"json\" or \"text\")"),
                ))
            }
        }),
    };
    let json_schema = f.map.remove("json_schema").filter(|v| !v.is_null());
    Ok(StepKind::Prompt {
        provider,
        model,
        system,
        prompt,
        messages,
        temperature: f.opt("temperature")?,
        max_tokens: f.opt("max_tokens")?,
        response_format,
        json_schema,
        stream: f.opt("stream")?.unwrap_or(true),
    })
}

/// `messages`: an array of `{ role, content }` tables, or one template (a chat history).
fn parse_messages(f: &Fields, value: Value) -> Result<Messages, DefinitionError> {
    let items = match value {
        Value::String(template) => return Ok(Messages::Template(template)),
        Value::Array(items) => items,
        other => {
            return Err(f.err(
                "messages",
                format!(
                    "must be an array of {{ role, content }} tables or a template, got {}",
                    InputType::name_of(&other)
                ),
            ))
        }
    };
    if items.is_empty() {
        return Err(f.err("messages", "must hold at least one message"));
    }
    let mut list = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{}messages[{i}]", f.prefix);
        let mut m = Fields::new(item, &at, f.step.as_deref(), format!("{at}."))?;
        let role_word: String = m.req("role")?;
        let role = ChatRole::parse(&role_word).ok_or_else(|| {
            m.err(
                "role",
                format!("unknown role {role_word:?} (expected system, user or assistant)"),
            )
        })?;
        let content = m.req("content")?;
        m.finish("a message", &["role", "content"])?;
        list.push(Message { role, content });
    }
    Ok(Messages::List(list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::definition::fixtures::{opts, parse_and_validate, with_step};
    use crate::workflow::definition::OnError;
    use crate::workflow::ValidateOptions;

    const HELLO: &str = r#"
key = "hello"
description = "Greets someone"

[[inputs]]
name = "name"
type = "text"          # text | number | boolean | array | object
required = true

[[steps]]
id = "greet"
type = "template"
template = "Hello, {{ name }}{{ vars.suffix }}"

[output]
template = "{{ greet.output }}"

[variants.default]
vars = { suffix = "." }
[variants.loud]
vars = { suffix = "!!!" }
"#;

    #[test]
    fn parses_spec_example() {
        let d = parse_and_validate(HELLO, &opts()).unwrap();
        assert_eq!(d.key, "hello");
        assert_eq!(d.description.as_deref(), Some("Greets someone"));
        assert_eq!(d.inputs.len(), 1);
        assert_eq!(d.inputs[0].name, "name");
        assert_eq!(d.inputs[0].kind, InputType::Text);
        assert!(d.inputs[0].required);
        assert_eq!(d.steps.len(), 1);
        assert_eq!(d.steps[0].id, "greet");
        assert_eq!(d.steps[0].on_error, OnError::Terminate);
        assert_eq!(
            d.steps[0].kind,
            StepKind::Template {
                template: "Hello, {{ name }}{{ vars.suffix }}".into(),
                json: false
            }
        );
        assert_eq!(d.output.as_ref().unwrap().template, "{{ greet.output }}");
        assert_eq!(d.variants["loud"].vars["suffix"], "!!!");
        assert_eq!(d.variants["default"].vars["suffix"], ".");
        assert!(!d.requires_async());
    }

    #[test]
    fn json_round_trip() {
        let d = parse_and_validate(HELLO, &opts()).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        let back = Definition::from_json_str(&json).unwrap();
        assert_eq!(d, back);
        let via_serde: Definition = serde_json::from_str(&json).unwrap();
        assert_eq!(d, via_serde);
    }

    #[test]
    fn all_step_types_round_trip() {
        let src = r#"
key = "all"
timeout_ms = 5000
async_only = true
[[steps]]
id = "t"
type = "template"
template = "{\"a\": 1}"
json = true
on_error = "continue"
retries = 2
when = "1 == 1"
[[steps]]
id = "h"
type = "http"
method = "post"
url = "http://127.0.0.1/{{ t.output.a }}"
headers = { "X-A" = "{{ vars.x }}" }
body = "{}"
timeout_ms = 100
[[steps]]
id = "p"
type = "prompt"
provider = "local"
model = "m"
system = "s"
prompt = "p"
temperature = 0.5
max_tokens = 10
[[steps]]
id = "c"
type = "command"
program = "/bin/echo"
args = ["{{ name }}"]
stdin = "x"
timeout_ms = 10
[[steps]]
id = "d"
type = "delay"
ms = 5
[[steps]]
id = "a"
type = "approval"
question = "ok?"
choices = ["yes", { value = "no", label = "No way" }]
timeout_ms = 1000
"#;
        let providers = vec!["local".to_owned()];
        let o = ValidateOptions {
            allow_command_steps: true,
            providers: &providers,
        };
        let d = parse_and_validate(src, &o).unwrap();
        assert!(d.requires_async());
        assert!(d.variants.contains_key("default"));
        match &d.steps[1].kind {
            StepKind::Http { method, .. } => assert_eq!(method, "POST"),
            k => panic!("{k:?}"),
        }
        match &d.steps[5].kind {
            StepKind::Approval { choices, .. } => {
                assert_eq!(choices[0].label, "yes");
                assert_eq!(choices[1].label, "No way");
            }
            k => panic!("{k:?}"),
        }
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["steps"][0]["type"], "template");
        assert_eq!(json["steps"][0]["on_error"], "continue");
        let back = Definition::from_json_value(json).unwrap();
        assert_eq!(d, back);
    }

    #[test]
    fn unknown_step_field_names_step_and_field() {
        let e = Definition::from_toml_str(&with_step(
            "id = \"greet\"\ntype = \"template\"\ntemplate = \"x\"\ntemplat = \"y\"",
        ))
        .unwrap_err();
        assert_eq!(e.step.as_deref(), Some("greet"));
        assert_eq!(e.field.as_deref(), Some("templat"));
        let s = e.with_source("workflows/k.toml").to_string();
        assert!(
            s.starts_with("workflows/k.toml: step \"greet\": field \"templat\": unknown field"),
            "{s}"
        );

        // A field of another step type is unknown too.
        let e = Definition::from_toml_str(&with_step(
            "id = \"w\"\ntype = \"delay\"\nms = 1\nurl = \"http://x\"",
        ))
        .unwrap_err();
        assert_eq!(
            (e.step.as_deref(), e.field.as_deref()),
            (Some("w"), Some("url"))
        );
    }

    #[test]
    fn parse_errors_name_field_or_line() {
        let e = Definition::from_toml_str("key = \"k\"\n[[steps]]\nid = \n").unwrap_err();
        assert!(e.message.contains("line 3"), "{e}");

        let e = Definition::from_toml_str(&with_step("id = \"d\"\ntype = \"delay\"\nms = \"x\""))
            .unwrap_err();
        assert_eq!(
            (e.step.as_deref(), e.field.as_deref()),
            (Some("d"), Some("ms"))
        );

        let e = Definition::from_toml_str(&with_step("id = \"d\"\ntype = \"sleep\"")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("type"));
        assert!(e.message.contains("unknown step type"), "{e}");

        let e = Definition::from_toml_str(&with_step("type = \"delay\"\nms = 1")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[0].id"));

        let e = Definition::from_toml_str(
            "key = \"k\"\n[[inputs]]\nname = \"a\"\ntype = \"text\"\nrequired = \"yes\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inputs[0].required"));

        let e = Definition::from_toml_str("key = \"k\"\nstepz = []\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("stepz"));

        let e = Definition::from_json_str("{\"key\": \"k\",\n \"steps\": [}").unwrap_err();
        assert!(e.message.contains("line 2"), "{e}");

        let e = Definition::from_toml_str(&with_step(
            "id = \"s\"\ntype = \"template\"\ntemplate = \"x\"\non_error = \"ignore\"",
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("on_error"));
    }
}
