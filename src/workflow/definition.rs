//! Workflow definitions (SPEC §7): the shape of a TOML/JSON workflow document, as types.
//!
//! Turning a document into a [`Definition`] is `parse.rs`; the checks run before a
//! definition is deployed are `validate.rs`. Both report a [`DefinitionError`] naming the
//! step and field at fault.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    /// `[[schedules]]`: each a schedule's fields (SPEC §12) with a `name`, checked by
    /// `crate::schedules::check_definition` and applied when the definition is deployed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Map<String, Value>>,
    /// `[concurrency]`: runs whose key renders the same run at most `limit` at a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyDef>,
}

/// A deployment's `[concurrency]` table (SPEC §12).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConcurrencyDef {
    /// A template over the invoke's `inputs`, `metadata`, `user` and `vars`, rendered at
    /// invoke time.
    pub key: String,
    /// How many runs with the same rendered key may run at once (at least 1).
    pub limit: u32,
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

    /// The type for its word in a document (`text`, `number`, …).
    pub(super) fn parse(s: &str) -> Option<InputType> {
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
        /// The user message; exactly one of `prompt` and `messages` is set.
        #[serde(skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        messages: Option<Messages>,
        #[serde(skip_serializing_if = "Option::is_none")]
        temperature: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max_tokens: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        response_format: Option<ResponseFormat>,
        /// A JSON Schema the reply must match (checked to be one by validation).
        #[serde(skip_serializing_if = "Option::is_none")]
        json_schema: Option<Value>,
        /// Read the provider's SSE stream (the default) instead of one JSON reply.
        #[serde(skip_serializing_if = "is_true")]
        stream: bool,
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
    /// Runs the steps of the first case whose `when` holds, else `default` (SPEC §10).
    Branch {
        cases: Vec<BranchCase>,
        #[serde(skip_serializing_if = "Option::is_none")]
        default: Option<Vec<StepDef>>,
    },
    /// Runs `steps` once per element of `for_each`, or until `until` holds (SPEC §10).
    Loop {
        #[serde(skip_serializing_if = "Option::is_none")]
        for_each: Option<String>,
        /// The element's name inside a `for_each` pass (`item` when absent).
        #[serde(rename = "as", skip_serializing_if = "Option::is_none")]
        as_name: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        steps: Vec<StepDef>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max_iterations: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        concurrency: Option<u32>,
    },
    /// Starts a child run of another deployment and waits for its output (SPEC §10).
    Workflow {
        /// The deployment key: plain text, not a template, so a self-call is caught at
        /// deploy time.
        deployment: String,
        /// The child's variant; `default` when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        variant: Option<String>,
        /// The child's inputs: string values are templates, others are passed as they are.
        #[serde(skip_serializing_if = "Map::is_empty")]
        inputs: Map<String, Value>,
    },
}

/// One case of a `branch` step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchCase {
    pub when: String,
    pub steps: Vec<StepDef>,
}

/// `max_iterations` of a loop without one.
pub const DEFAULT_MAX_ITERATIONS: u32 = 100;
/// The largest `max_iterations` a loop may set.
pub const MAX_ITERATIONS_LIMIT: u32 = 10_000;
/// The largest `concurrency` a `for_each` loop may set.
pub const MAX_LOOP_CONCURRENCY: u32 = 16;
/// The element's name in a `for_each` pass without `as`.
pub const DEFAULT_ITEM_NAME: &str = "item";

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
            StepKind::Branch { .. } => "branch",
            StepKind::Loop { .. } => "loop",
            StepKind::Workflow { .. } => "workflow",
        }
    }

    /// The step lists nested in this step, each with its path below the step
    /// (`cases[0].steps`, `default`, `steps`); empty for a leaf step.
    pub fn nested(&self) -> Vec<(String, &[StepDef])> {
        match self {
            StepKind::Branch { cases, default } => {
                let mut lists: Vec<(String, &[StepDef])> = cases
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("cases[{i}].steps"), c.steps.as_slice()))
                    .collect();
                if let Some(d) = default {
                    lists.push(("default".to_owned(), d.as_slice()));
                }
                lists
            }
            StepKind::Loop { steps, .. } => vec![("steps".to_owned(), steps.as_slice())],
            _ => Vec::new(),
        }
    }
}

/// One step of a definition in depth-first order (see [`Definition::walk`]).
#[derive(Debug, Clone, Copy)]
pub struct WalkedStep<'a> {
    pub step: &'a StepDef,
    /// The position of the top-level step this one is (or is nested in).
    pub top: usize,
    /// The enclosing `branch`/`loop`, if nested.
    pub parent: Option<&'a StepDef>,
}

impl Definition {
    /// Every step, nested ones included, depth first: a step comes right before the steps
    /// nested in it. A step's position here is its `step_index` in the trace.
    pub fn walk(&self) -> Vec<WalkedStep<'_>> {
        fn visit<'a>(
            steps: &'a [StepDef],
            top: Option<usize>,
            parent: Option<&'a StepDef>,
            out: &mut Vec<WalkedStep<'a>>,
        ) {
            for (i, step) in steps.iter().enumerate() {
                let top = top.unwrap_or(i);
                out.push(WalkedStep { step, top, parent });
                for (_, list) in step.kind.nested() {
                    visit(list, Some(top), Some(step), out);
                }
            }
        }
        let mut out = Vec::new();
        visit(&self.steps, None, None, &mut out);
        out
    }

    /// The `step_index` of every step by id (ids are unique once validated).
    pub fn step_indexes(&self) -> HashMap<String, usize> {
        self.walk()
            .iter()
            .enumerate()
            .map(|(i, w)| (w.step.id.clone(), i))
            .collect()
    }
}

/// The chat messages of a prompt step (`messages`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Messages {
    /// `[{ role, content }, ...]`, each `content` a template.
    List(Vec<Message>),
    /// A template that renders to a JSON array of `{ role, content }` (a chat history).
    Template(String),
}

/// One message of a prompt step's `messages` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: ChatRole,
    /// A template.
    pub content: String,
}

/// The roles a chat message may have: the ones OpenAI, Ollama and llama.cpp all accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

impl ChatRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }

    /// The role for its word (`system`, `user`, `assistant`).
    pub fn parse(s: &str) -> Option<ChatRole> {
        Some(match s {
            "system" => ChatRole::System,
            "user" => ChatRole::User,
            "assistant" => ChatRole::Assistant,
            _ => return None,
        })
    }
}

/// `response_format` of a prompt step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseFormat {
    /// The reply text as it is (the default).
    Text,
    /// Asks for a JSON object; the output is the parsed reply.
    Json,
}

/// One allowed answer of an approval step. A plain string `"yes"` means
/// `{ value = "yes", label = "yes" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalChoice {
    pub value: String,
    pub label: String,
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
    pub(super) fn new(step: Option<&str>, field: Option<&str>, message: impl Into<String>) -> Self {
        DefinitionError {
            source_name: None,
            step: step.map(str::to_owned),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    pub fn top(field: &str, message: impl Into<String>) -> Self {
        Self::new(None, Some(field), message)
    }

    pub(super) fn step(step: &str, field: &str, message: impl Into<String>) -> Self {
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
    /// True when the workflow can only run asynchronously: declared `async_only`, or it
    /// holds an approval step (which waits for a human).
    pub fn requires_async(&self) -> bool {
        self.async_only
            || self
                .steps
                .iter()
                .any(|s| matches!(s.kind, StepKind::Approval { .. }))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the parse and validate tests share.
#[cfg(test)]
pub(super) mod fixtures {
    use super::{Definition, DefinitionError};
    use crate::workflow::ValidateOptions;

    /// No command steps, no providers.
    pub(in crate::workflow) fn opts() -> ValidateOptions<'static> {
        ValidateOptions {
            allow_command_steps: false,
            providers: &[],
        }
    }

    pub(in crate::workflow) fn parse_and_validate(
        src: &str,
        o: &ValidateOptions<'_>,
    ) -> Result<Definition, DefinitionError> {
        let mut d = Definition::from_toml_str(src)?;
        d.validate(o)?;
        Ok(d)
    }

    /// A workflow `k` with one step given as TOML lines.
    pub(in crate::workflow) fn with_step(step: &str) -> String {
        format!("key = \"k\"\n[[steps]]\n{step}\n")
    }
}
