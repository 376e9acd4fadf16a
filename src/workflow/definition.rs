//! Workflow definitions (SPEC §7): the TOML/JSON document shape, parsing, and the static
//! checks run before a definition is deployed.
//!
//! Parsing is hand-written on top of `serde_json::Value` instead of derived: serde's
//! `flatten` + internally tagged enums + `deny_unknown_fields` do not combine, and derived
//! errors rarely say which step or field is at fault. Here every error carries the step id
//! and the field name, so a user editing `workflows/x.toml` is told exactly what to fix.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::template;

/// Upper bound for `retries`: more than this is almost certainly a typo and would spin.
const MAX_RETRIES: u32 = 100;

/// Names that templates use for something else, or that Jinja treats as keywords.
const RESERVED_NAMES: &[&str] = &[
    "vars", "inputs", "run", "loop", "self", "super", "and", "or", "not", "in", "is", "if", "else",
    "true", "false", "none", "True", "False", "None",
];

/// A parsed workflow definition. Call [`Definition::validate`] before running it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Definition {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputSpec>,
    pub steps: Vec<StepDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputDef>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, VariantDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "is_false")]
    pub async_only: bool,
}

/// One declared start input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputSpec {
    pub name: String,
    /// The declared type (`type` in the document).
    #[serde(rename = "type")]
    pub kind: InputType,
    #[serde(skip_serializing_if = "is_false")]
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

/// The JSON types a start input can be declared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    Text,
    Number,
    Boolean,
    Array,
    Object,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::Text => "text",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
            InputType::Object => "object",
        }
    }

    /// Whether `value` has this type (`null` never does).
    pub fn matches(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (InputType::Text, Value::String(_))
                | (InputType::Number, Value::Number(_))
                | (InputType::Boolean, Value::Bool(_))
                | (InputType::Array, Value::Array(_))
                | (InputType::Object, Value::Object(_))
        )
    }

    /// The input-type word for a JSON value, used in "got …" messages.
    pub fn name_of(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::String(_) => "text",
            Value::Number(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    fn parse(s: &str) -> Option<InputType> {
        Some(match s {
            "text" => InputType::Text,
            "number" => InputType::Number,
            "boolean" => InputType::Boolean,
            "array" => InputType::Array,
            "object" => InputType::Object,
            _ => return None,
        })
    }
}

impl fmt::Display for InputType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[output]`: how the run's output is built from the scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputDef {
    pub template: String,
}

/// `[variants.<name>]`: variables applied to the workflow as `vars.*`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantDef {
    #[serde(default)]
    pub vars: Map<String, Value>,
}

/// What a failing step does to the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Terminate,
    Continue,
}

impl OnError {
    fn is_terminate(&self) -> bool {
        *self == OnError::Terminate
    }
}

/// One step: the fields every step accepts plus the type-specific part in `kind`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepDef {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(skip_serializing_if = "OnError::is_terminate")]
    pub on_error: OnError,
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: u32,
    #[serde(flatten)]
    pub kind: StepKind,
}

/// The type-specific part of a step, tagged by `type` in the document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StepKind {
    Template {
        template: String,
        #[serde(skip_serializing_if = "is_false")]
        json: bool,
    },
    Http {
        method: String,
        url: String,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    Prompt {
        provider: String,
        model: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        system: Option<String>,
        prompt: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        temperature: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max_tokens: Option<u32>,
    },
    Command {
        program: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        args: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stdin: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    Delay {
        ms: u64,
    },
    Approval {
        #[serde(skip_serializing_if = "Option::is_none")]
        question: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        choices: Vec<ApprovalChoice>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
}

impl StepKind {
    /// The `type` word of this step.
    pub fn type_name(&self) -> &'static str {
        match self {
            StepKind::Template { .. } => "template",
            StepKind::Http { .. } => "http",
            StepKind::Prompt { .. } => "prompt",
            StepKind::Command { .. } => "command",
            StepKind::Delay { .. } => "delay",
            StepKind::Approval { .. } => "approval",
        }
    }
}

/// One allowed answer of an approval step. A plain string `"yes"` means
/// `{ value = "yes", label = "yes" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalChoice {
    pub value: String,
    pub label: String,
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

/// Settings from the daemon configuration that validation depends on.
#[derive(Debug, Clone, Copy)]
pub struct ValidateOptions<'a> {
    pub allow_command_steps: bool,
    /// Names of the configured `[providers.*]` tables.
    pub providers: &'a [String],
}

/// A definition that does not parse or validate. Displays as
/// `workflows/x.toml: step "fetch": field "url": template syntax error: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// The file or other origin, set by callers through [`DefinitionError::with_source`].
    pub source_name: Option<String>,
    pub step: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl DefinitionError {
    fn new(step: Option<&str>, field: Option<&str>, message: impl Into<String>) -> Self {
        DefinitionError {
            source_name: None,
            step: step.map(str::to_owned),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    fn top(field: &str, message: impl Into<String>) -> Self {
        Self::new(None, Some(field), message)
    }

    fn step(step: &str, field: &str, message: impl Into<String>) -> Self {
        Self::new(Some(step), Some(field), message)
    }

    /// Names the file (or other origin) the definition came from.
    pub fn with_source(mut self, name: impl Into<String>) -> Self {
        self.source_name = Some(name.into());
        self
    }
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.source_name {
            write!(f, "{s}: ")?;
        }
        if let Some(s) = &self.step {
            write!(f, "step \"{s}\": ")?;
        }
        if let Some(s) = &self.field {
            write!(f, "field \"{s}\": ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for DefinitionError {}

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

    /// True when the workflow can only run asynchronously: declared `async_only`, or it
    /// holds an approval step (which waits for a human).
    pub fn requires_async(&self) -> bool {
        self.async_only
            || self
                .steps
                .iter()
                .any(|s| matches!(s.kind, StepKind::Approval { .. }))
    }

    /// Static checks before deployment. Also normalises the definition: inserts the
    /// `default` variant when missing and upper-cases HTTP methods.
    pub fn validate(&mut self, opts: &ValidateOptions<'_>) -> Result<(), DefinitionError> {
        if !valid_key(&self.key) {
            return Err(DefinitionError::top(
                "key",
                format!(
                    "invalid key {:?}: use 1-64 characters a-z, 0-9, '_' or '-', starting with a letter or digit",
                    self.key
                ),
            ));
        }
        if self.timeout_ms == Some(0) {
            return Err(DefinitionError::top("timeout_ms", "must be greater than 0"));
        }

        let mut input_names = HashSet::new();
        for (i, input) in self.inputs.iter_mut().enumerate() {
            let field = format!("inputs[{i}].name");
            check_scope_name(&input.name).map_err(|m| DefinitionError::top(&field, m))?;
            if !input_names.insert(input.name.clone()) {
                return Err(DefinitionError::top(
                    &field,
                    format!("duplicate input name {:?}", input.name),
                ));
            }
            if input.default.as_ref().is_some_and(Value::is_null) {
                input.default = None;
            }
            if let Some(d) = &input.default {
                if !input.kind.matches(d) {
                    return Err(DefinitionError::top(
                        &format!("inputs[{i}].default"),
                        format!(
                            "default of input {} must be {}, got {}",
                            input.name,
                            input.kind,
                            InputType::name_of(d)
                        ),
                    ));
                }
            }
        }

        if self.steps.is_empty() {
            return Err(DefinitionError::top(
                "steps",
                "a workflow needs at least one step",
            ));
        }
        let mut step_ids = HashSet::new();
        for (i, step) in self.steps.iter_mut().enumerate() {
            if let Err(m) = check_scope_name(&step.id) {
                return Err(DefinitionError::new(
                    Some(&step.id),
                    Some("id"),
                    format!("steps[{i}]: {m}"),
                ));
            }
            if input_names.contains(&step.id) {
                return Err(DefinitionError::step(
                    &step.id,
                    "id",
                    format!(
                        "step id {:?} is also the name of an input; templates could not tell them apart",
                        step.id
                    ),
                ));
            }
            if !step_ids.insert(step.id.clone()) {
                return Err(DefinitionError::step(
                    &step.id,
                    "id",
                    format!("duplicate step id {:?}", step.id),
                ));
            }
            validate_step(step, opts)?;
        }

        if let Some(out) = &self.output {
            check_template(None, "output.template", &out.template)?;
        }

        for name in self.variants.keys() {
            if !valid_variant_name(name) {
                return Err(DefinitionError::top(
                    &format!("variants.{name}"),
                    format!(
                        "invalid variant name {name:?}: use 1-64 characters A-Z, a-z, 0-9, '_' or '-'"
                    ),
                ));
            }
        }
        self.variants.entry("default".to_owned()).or_default();
        Ok(())
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

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

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
            .map(|(i, v)| parse_step(Some(i), v))
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

fn parse_step(index: Option<usize>, value: Value) -> Result<StepDef, DefinitionError> {
    let at = index.map_or_else(|| "step".to_owned(), |i| format!("steps[{i}]"));
    let mut f = Fields::new(value, &at, None, format!("{at}."))?;
    let id: String = f.req("id")?;
    // From here on errors name the step by its id.
    f.step = Some(id.clone());
    f.prefix.clear();
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
            StepKind::Prompt {
                provider: f.req("provider")?,
                model: f.req("model")?,
                system: f.opt("system")?,
                prompt: f.req("prompt")?,
                temperature: f.opt("temperature")?,
                max_tokens: f.opt("max_tokens")?,
            },
            &[
                "provider",
                "model",
                "system",
                "prompt",
                "temperature",
                "max_tokens",
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
        other => {
            return Err(f.err(
                "type",
                format!(
                    "unknown step type {other:?} (expected template, http, prompt, command, delay or approval)"
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

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn valid_variant_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `step_1`, `step_2`, … name steps by position in templates.
fn is_positional_name(s: &str) -> bool {
    s.strip_prefix("step_")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Step ids and input names live side by side at the top of the template scope.
fn check_scope_name(name: &str) -> Result<(), String> {
    if !is_identifier(name) || name.len() > 64 {
        return Err(format!(
            "{name:?} is not usable in templates: use up to 64 letters, digits and '_', not starting with a digit"
        ));
    }
    if RESERVED_NAMES.contains(&name) || is_positional_name(name) {
        return Err(format!(
            "{name:?} is reserved in templates (vars, inputs, run, step_N and Jinja keywords)"
        ));
    }
    Ok(())
}

fn check_template(step: Option<&str>, field: &str, src: &str) -> Result<(), DefinitionError> {
    template::check_syntax(src)
        .map_err(|e| DefinitionError::new(step, Some(field), format!("template syntax error: {e}")))
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn validate_step(step: &mut StepDef, opts: &ValidateOptions<'_>) -> Result<(), DefinitionError> {
    let id = step.id.clone();
    let id = id.as_str();
    let err = |field: &str, msg: String| DefinitionError::step(id, field, msg);
    if step.retries > MAX_RETRIES {
        return Err(err("retries", format!("must be at most {MAX_RETRIES}")));
    }
    if let Some(when) = &step.when {
        template::check_condition_syntax(when)
            .map_err(|e| err("when", format!("expression syntax error: {e}")))?;
    }
    let positive = |field: &str, v: Option<u64>| match v {
        Some(0) => Err(err(field, "must be greater than 0".to_owned())),
        _ => Ok(()),
    };
    match &mut step.kind {
        StepKind::Template { template, .. } => check_template(Some(id), "template", template)?,
        StepKind::Http {
            method,
            url,
            headers,
            body,
            timeout_ms,
        } => {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(err("method", format!("invalid HTTP method {method:?}")));
            }
            method.make_ascii_uppercase();
            if url.trim().is_empty() {
                return Err(err("url", "must not be empty".to_owned()));
            }
            check_template(Some(id), "url", url)?;
            for (name, value) in headers.iter() {
                let field = format!("headers.{name}");
                if !is_header_name(name) {
                    return Err(err(&field, format!("invalid header name {name:?}")));
                }
                check_template(Some(id), &field, value)?;
            }
            if let Some(body) = body {
                check_template(Some(id), "body", body)?;
            }
            positive("timeout_ms", *timeout_ms)?;
        }
        StepKind::Prompt {
            provider,
            model,
            system,
            prompt,
            temperature,
            max_tokens,
        } => {
            if !opts.providers.iter().any(|p| p == provider) {
                let msg = if opts.providers.is_empty() {
                    format!(
                        "unknown provider {provider:?}: no providers are configured (add a [providers.{provider}] table to hivelet.toml)"
                    )
                } else {
                    format!(
                        "unknown provider {provider:?} (configured: {})",
                        opts.providers.join(", ")
                    )
                };
                return Err(err("provider", msg));
            }
            if model.trim().is_empty() {
                return Err(err("model", "must not be empty".to_owned()));
            }
            if let Some(system) = system {
                check_template(Some(id), "system", system)?;
            }
            check_template(Some(id), "prompt", prompt)?;
            if let Some(t) = temperature {
                if !t.is_finite() || *t < 0.0 {
                    return Err(err("temperature", "must be a number >= 0".to_owned()));
                }
            }
            if *max_tokens == Some(0) {
                return Err(err("max_tokens", "must be greater than 0".to_owned()));
            }
        }
        StepKind::Command {
            program,
            args,
            stdin,
            timeout_ms,
        } => {
            if !opts.allow_command_steps {
                return Err(err(
                    "type",
                    "command steps are disabled; set security.allow_command_steps = true in hivelet.toml to allow them".to_owned(),
                ));
            }
            if program.trim().is_empty() {
                return Err(err("program", "must not be empty".to_owned()));
            }
            for (i, arg) in args.iter().enumerate() {
                check_template(Some(id), &format!("args[{i}]"), arg)?;
            }
            if let Some(stdin) = stdin {
                check_template(Some(id), "stdin", stdin)?;
            }
            positive("timeout_ms", *timeout_ms)?;
        }
        StepKind::Delay { .. } => {}
        StepKind::Approval {
            question,
            choices,
            timeout_ms,
        } => {
            if let Some(q) = question {
                check_template(Some(id), "question", q)?;
            }
            let mut seen = HashSet::new();
            for (i, c) in choices.iter().enumerate() {
                if c.value.is_empty() {
                    return Err(err(
                        &format!("choices[{i}]"),
                        "a choice value must not be empty".to_owned(),
                    ));
                }
                if !seen.insert(c.value.as_str()) {
                    return Err(err(
                        &format!("choices[{i}]"),
                        format!("duplicate choice {:?}", c.value),
                    ));
                }
            }
            positive("timeout_ms", *timeout_ms)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn opts() -> ValidateOptions<'static> {
        ValidateOptions {
            allow_command_steps: false,
            providers: &[],
        }
    }

    fn parse_and_validate(
        src: &str,
        o: &ValidateOptions<'_>,
    ) -> Result<Definition, DefinitionError> {
        let mut d = Definition::from_toml_str(src)?;
        d.validate(o)?;
        Ok(d)
    }

    fn with_step(step: &str) -> String {
        format!("key = \"k\"\n[[steps]]\n{step}\n")
    }

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

    #[test]
    fn duplicate_step_id_rejected() {
        let src = "key = \"k\"\n[[steps]]\nid = \"a\"\ntype = \"delay\"\nms = 1\n[[steps]]\nid = \"a\"\ntype = \"delay\"\nms = 1\n";
        let e = parse_and_validate(src, &opts()).unwrap_err();
        assert_eq!(e.step.as_deref(), Some("a"));
        assert!(e.message.contains("duplicate step id"), "{e}");
    }

    #[test]
    fn reserved_and_bad_names_rejected() {
        for id in ["vars", "inputs", "run", "step_1", "1abc", "a-b", "none"] {
            let src = with_step(&format!("id = \"{id}\"\ntype = \"delay\"\nms = 1"));
            let e = parse_and_validate(&src, &opts()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("id"), "{id}: {e}");
        }
        let src = "key = \"k\"\n[[inputs]]\nname = \"x\"\ntype = \"text\"\n[[steps]]\nid = \"x\"\ntype = \"delay\"\nms = 1\n";
        let e = parse_and_validate(src, &opts()).unwrap_err();
        assert!(e.message.contains("also the name of an input"), "{e}");

        let src = "key = \"k\"\n[[inputs]]\nname = \"x\"\ntype = \"text\"\n[[inputs]]\nname = \"x\"\ntype = \"number\"\n[[steps]]\nid = \"s\"\ntype = \"delay\"\nms = 1\n";
        let e = parse_and_validate(src, &opts()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inputs[1].name"));

        for key in ["", "Hello", "-a", "a b"] {
            let src = format!("key = \"{key}\"\n[[steps]]\nid = \"s\"\ntype = \"delay\"\nms = 1\n");
            let e = parse_and_validate(&src, &opts()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("key"), "{key}");
        }
        let e = parse_and_validate("key = \"k\"\n", &opts()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps"));
    }

    #[test]
    fn command_refused_without_flag() {
        let src = with_step("id = \"c\"\ntype = \"command\"\nprogram = \"/bin/true\"");
        let e = parse_and_validate(&src, &opts()).unwrap_err();
        assert_eq!(e.step.as_deref(), Some("c"));
        assert!(
            e.message.contains("security.allow_command_steps = true"),
            "{e}"
        );
        let o = ValidateOptions {
            allow_command_steps: true,
            providers: &[],
        };
        parse_and_validate(&src, &o).unwrap();
    }

    #[test]
    fn unknown_provider_rejected() {
        let src = with_step(
            "id = \"p\"\ntype = \"prompt\"\nprovider = \"openai\"\nmodel = \"m\"\nprompt = \"hi\"",
        );
        let providers = vec!["local".to_owned()];
        let o = ValidateOptions {
            allow_command_steps: false,
            providers: &providers,
        };
        let e = parse_and_validate(&src, &o).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("provider"));
        assert!(e.message.contains("local"), "{e}");
    }

    #[test]
    fn bad_template_syntax_names_step_and_field() {
        let src = with_step("id = \"fetch\"\ntype = \"http\"\nurl = \"http://x/{{ a \"");
        let e = parse_and_validate(&src, &opts()).unwrap_err();
        assert_eq!(e.step.as_deref(), Some("fetch"));
        assert_eq!(e.field.as_deref(), Some("url"));
        let s = e.with_source("workflows/x.toml").to_string();
        assert!(
            s.starts_with(
                "workflows/x.toml: step \"fetch\": field \"url\": template syntax error: "
            ),
            "{s}"
        );

        let src = with_step("id = \"s\"\ntype = \"delay\"\nms = 1\nwhen = \"x ==\"");
        let e = parse_and_validate(&src, &opts()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("when"));

        let src = format!(
            "{}[output]\ntemplate = \"{{% if %}}\"\n",
            with_step("id = \"s\"\ntype = \"delay\"\nms = 1")
        );
        let e = parse_and_validate(&src, &opts()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("output.template"));
        assert_eq!(e.step, None);
    }

    #[test]
    fn default_variant_inserted_and_default_type_checked() {
        let src = with_step("id = \"s\"\ntype = \"delay\"\nms = 1");
        let d = parse_and_validate(&src, &opts()).unwrap();
        assert_eq!(d.variants.keys().collect::<Vec<_>>(), vec!["default"]);

        let src = "key = \"k\"\n[[inputs]]\nname = \"n\"\ntype = \"number\"\ndefault = \"x\"\n[[steps]]\nid = \"s\"\ntype = \"delay\"\nms = 1\n";
        let e = parse_and_validate(src, &opts()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inputs[0].default"));
    }
}
