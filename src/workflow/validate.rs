//! Validating workflow definitions: the static checks run before a definition is deployed
//! (names, templates that compile, step fields in range, providers and command steps the
//! configuration allows), and the normalisation that goes with them.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::definition::{
    Definition, DefinitionError, InputType, Messages, ResponseFormat, StepDef, StepKind,
    DEFAULT_ITEM_NAME, MAX_ITERATIONS_LIMIT, MAX_LOOP_CONCURRENCY,
};
use super::template;

/// Upper bound for `retries`: more than this is almost certainly a typo and would spin.
const MAX_RETRIES: u32 = 100;

/// Names that templates use for something else, or that Jinja treats as keywords.
const RESERVED_NAMES: &[&str] = &[
    "vars", "inputs", "run", "loop", "self", "super", "and", "or", "not", "in", "is", "if", "else",
    "true", "false", "none", "True", "False", "None",
];

/// Settings from the daemon configuration that validation depends on.
#[derive(Debug, Clone, Copy)]
pub struct ValidateOptions<'a> {
    pub allow_command_steps: bool,
    /// Names of the configured `[providers.*]` tables.
    pub providers: &'a [String],
}

impl Definition {
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
        if let Some(c) = &self.concurrency {
            if c.key.trim().is_empty() {
                return Err(DefinitionError::top(
                    "concurrency.key",
                    "must be a template like \"{{ metadata.customer }}\"",
                ));
            }
            check_template(None, "concurrency.key", &c.key)?;
            if c.limit == 0 {
                return Err(DefinitionError::top(
                    "concurrency.limit",
                    "must be at least 1",
                ));
            }
        }

        let mut input_names = HashSet::new();
        for (i, input) in self.inputs.iter_mut().enumerate() {
            let field = format!("inputs[{i}].name");
            if let Some(problem) = scope_name_problem(&input.name) {
                return Err(DefinitionError::top(&field, problem));
            }
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
        let mut walk = Walk {
            key: &self.key,
            opts,
            input_names: &input_names,
            ids: HashMap::new(),
            item_names: Vec::new(),
        };
        walk.steps(&mut self.steps, "steps", false)?;
        // An element name must not hide an input or a step (a step nested in its own loop
        // included): templates could not tell them apart.
        for (name, loop_id, at) in &walk.item_names {
            let clash = if input_names.contains(name) {
                Some("an input")
            } else if walk.ids.contains_key(name) {
                Some("a step id")
            } else {
                None
            };
            if let Some(what) = clash {
                return Err(DefinitionError::step(
                    loop_id,
                    &format!("{at}as"),
                    format!("{name:?} is also {what}; templates could not tell them apart"),
                ));
            }
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

/// What is wrong with a step id or input name, if anything: both live side by side at the
/// top of the template scope.
fn scope_name_problem(name: &str) -> Option<String> {
    if !is_identifier(name) || name.len() > 64 {
        return Some(format!(
            "{name:?} is not usable in templates: use up to 64 letters, digits and '_', not starting with a digit"
        ));
    }
    if RESERVED_NAMES.contains(&name) || is_positional_name(name) {
        return Some(format!(
            "{name:?} is reserved in templates (vars, inputs, run, step_N and Jinja keywords)"
        ));
    }
    None
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

/// The walk over every step list, nested ones included.
struct Walk<'a> {
    /// The workflow's own key: a `workflow` step naming it would call itself forever.
    key: &'a str,
    opts: &'a ValidateOptions<'a>,
    input_names: &'a HashSet<String>,
    /// Every step id seen so far, with where it is (`steps[2].cases[0].steps[1]`).
    ids: HashMap<String, String>,
    /// Each `for_each` loop's element name: name, loop id, field prefix.
    item_names: Vec<(String, String, String)>,
}

impl Walk<'_> {
    /// Checks the step list at `at` (`steps`, `steps[2].cases[0].steps`, …).
    fn steps(
        &mut self,
        steps: &mut [StepDef],
        at: &str,
        nested: bool,
    ) -> Result<(), DefinitionError> {
        for (i, step) in steps.iter_mut().enumerate() {
            let path = format!("{at}[{i}]");
            // Top-level steps are named by id alone (as before nesting existed); a nested
            // one's fields carry its whole path.
            let prefix = if nested {
                format!("{path}.")
            } else {
                String::new()
            };
            let id_field = format!("{prefix}id");
            if let Some(m) = scope_name_problem(&step.id) {
                return Err(DefinitionError::new(
                    Some(&step.id),
                    Some(&id_field),
                    format!("{path}: {m}"),
                ));
            }
            if self.input_names.contains(&step.id) {
                return Err(DefinitionError::step(
                    &step.id,
                    &id_field,
                    format!(
                        "step id {:?} is also the name of an input; templates could not tell them apart",
                        step.id
                    ),
                ));
            }
            if let Some(first) = self.ids.get(&step.id) {
                return Err(DefinitionError::step(
                    &step.id,
                    &id_field,
                    format!(
                        "duplicate step id {:?}: used at {first} and at {path} (ids are unique across the whole workflow, nested steps included)",
                        step.id
                    ),
                ));
            }
            self.ids.insert(step.id.clone(), path.clone());
            if nested && matches!(step.kind, StepKind::Approval { .. }) {
                return Err(DefinitionError::step(
                    &step.id,
                    &format!("{prefix}type"),
                    "approval steps cannot be nested in a branch or loop; put the approval at the top level of the workflow",
                ));
            }
            validate_step(step, self.opts, &prefix)?;
            if let StepKind::Workflow { deployment, .. } = &step.kind {
                if deployment == self.key {
                    return Err(DefinitionError::step(
                        &step.id,
                        &format!("{prefix}deployment"),
                        format!(
                            "a workflow step cannot start its own deployment {deployment:?} (it would call itself without end)"
                        ),
                    ));
                }
            }
            if let StepKind::Loop {
                for_each: Some(_),
                as_name,
                ..
            } = &step.kind
            {
                let name = as_name.as_deref().unwrap_or(DEFAULT_ITEM_NAME);
                self.item_names
                    .push((name.to_owned(), step.id.clone(), prefix.clone()));
            }
            let lists: Vec<String> = step.kind.nested().into_iter().map(|(p, _)| p).collect();
            let mut lists = lists.into_iter();
            match &mut step.kind {
                StepKind::Branch { cases, default } => {
                    for case in cases.iter_mut() {
                        let sub = lists.next().unwrap_or_default();
                        self.steps(&mut case.steps, &format!("{path}.{sub}"), true)?;
                    }
                    if let Some(d) = default {
                        self.steps(d, &format!("{path}.default"), true)?;
                    }
                }
                StepKind::Loop { steps, .. } => {
                    self.steps(steps, &format!("{path}.steps"), true)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Checks one step's own fields; `prefix` is put before field names (the step's path when
/// it is nested, else empty).
fn validate_step(
    step: &mut StepDef,
    opts: &ValidateOptions<'_>,
    prefix: &str,
) -> Result<(), DefinitionError> {
    let id = step.id.clone();
    let id = id.as_str();
    let err =
        |field: &str, msg: String| DefinitionError::step(id, &format!("{prefix}{field}"), msg);
    let check = |field: &str, src: &str| check_template(Some(id), &format!("{prefix}{field}"), src);
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
        StepKind::Template { template, .. } => check("template", template)?,
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
            check("url", url)?;
            for (name, value) in headers.iter() {
                let field = format!("headers.{name}");
                if !is_header_name(name) {
                    return Err(err(&field, format!("invalid header name {name:?}")));
                }
                check(&field, value)?;
            }
            if let Some(body) = body {
                check("body", body)?;
            }
            positive("timeout_ms", *timeout_ms)?;
        }
        StepKind::Prompt {
            provider,
            model,
            system,
            prompt,
            messages,
            temperature,
            max_tokens,
            response_format,
            json_schema,
            stream: _,
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
                check("system", system)?;
            }
            if let Some(prompt) = prompt {
                check("prompt", prompt)?;
            }
            match messages {
                None => {}
                Some(Messages::Template(src)) => check("messages", src)?,
                Some(Messages::List(list)) => {
                    for (i, m) in list.iter().enumerate() {
                        check(&format!("messages[{i}].content"), &m.content)?;
                    }
                }
            }
            if let Some(schema) = json_schema {
                if *response_format == Some(ResponseFormat::Text) {
                    return Err(err(
                        "response_format",
                        "\"text\" cannot go with json_schema, whose replies are JSON".to_owned(),
                    ));
                }
                check_json_schema(schema).map_err(|m| err("json_schema", m))?;
            }
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
                check(&format!("args[{i}]"), arg)?;
            }
            if let Some(stdin) = stdin {
                check("stdin", stdin)?;
            }
            positive("timeout_ms", *timeout_ms)?;
        }
        StepKind::Delay { .. } => {}
        StepKind::Workflow {
            deployment,
            variant,
            inputs,
        } => {
            if !valid_key(deployment) {
                return Err(err(
                    "deployment",
                    format!(
                        "invalid deployment key {deployment:?}: use 1-64 characters a-z, 0-9, '_' or '-', starting with a letter or digit"
                    ),
                ));
            }
            if let Some(v) = variant {
                if !valid_variant_name(v) {
                    return Err(err(
                        "variant",
                        format!(
                            "invalid variant name {v:?}: use 1-64 characters A-Z, a-z, 0-9, '_' or '-'"
                        ),
                    ));
                }
            }
            for (name, value) in inputs.iter() {
                if let Value::String(src) = value {
                    check(&format!("inputs.{name}"), src)?;
                }
            }
        }
        StepKind::Branch { cases, default } => {
            if step.retries > 0 {
                return Err(err(
                    "retries",
                    "a branch step runs its steps once; put `retries` on the nested steps"
                        .to_owned(),
                ));
            }
            if cases.is_empty() {
                return Err(err("cases", "a branch needs at least one case".to_owned()));
            }
            for (i, case) in cases.iter().enumerate() {
                template::check_condition_syntax(&case.when).map_err(|e| {
                    err(
                        &format!("cases[{i}].when"),
                        format!("expression syntax error: {e}"),
                    )
                })?;
                if case.steps.is_empty() {
                    return Err(err(
                        &format!("cases[{i}].steps"),
                        "a case needs at least one step".to_owned(),
                    ));
                }
            }
            if default.as_ref().is_some_and(Vec::is_empty) {
                return Err(err(
                    "default",
                    "needs at least one step (or leave it out)".to_owned(),
                ));
            }
        }
        StepKind::Loop {
            for_each,
            as_name,
            until,
            steps,
            max_iterations,
            concurrency,
        } => {
            if step.retries > 0 {
                return Err(err(
                    "retries",
                    "a loop step runs its passes once; put `retries` on the nested steps"
                        .to_owned(),
                ));
            }
            match (for_each.as_deref(), until.as_deref()) {
                (Some(_), Some(_)) => {
                    return Err(err("until", "a loop takes either `for_each` or `until`, not both".to_owned()))
                }
                (None, None) => {
                    return Err(err("for_each", "a loop needs `for_each` (an expression giving an array) or `until` (a condition checked after each pass)".to_owned()))
                }
                (Some(expr), None) => {
                    template::check_expression_syntax(expr)
                        .map_err(|e| err("for_each", format!("expression syntax error: {e}")))?;
                }
                (None, Some(expr)) => {
                    template::check_condition_syntax(expr)
                        .map_err(|e| err("until", format!("expression syntax error: {e}")))?;
                    if as_name.is_some() {
                        return Err(err("as", "`as` names the element of a `for_each` loop; an `until` loop has none".to_owned()));
                    }
                    if concurrency.is_some() {
                        return Err(err("concurrency", "only a `for_each` loop can run passes concurrently; an `until` loop's passes run one after another".to_owned()));
                    }
                }
            }
            if let Some(name) = as_name {
                if let Some(problem) = scope_name_problem(name) {
                    return Err(err("as", problem));
                }
            }
            match *max_iterations {
                Some(n) if n == 0 || n > MAX_ITERATIONS_LIMIT => {
                    return Err(err(
                        "max_iterations",
                        format!("must be between 1 and {MAX_ITERATIONS_LIMIT}"),
                    ))
                }
                _ => {}
            }
            match *concurrency {
                Some(n) if n == 0 || n > MAX_LOOP_CONCURRENCY => {
                    return Err(err(
                        "concurrency",
                        format!("must be between 1 and {MAX_LOOP_CONCURRENCY}"),
                    ))
                }
                _ => {}
            }
            if steps.is_empty() {
                return Err(err("steps", "a loop needs at least one step".to_owned()));
            }
        }
        StepKind::Approval {
            question,
            choices,
            timeout_ms,
        } => {
            if let Some(q) = question {
                check("question", q)?;
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

/// Largest `json_schema` accepted, serialized: it is sent with every call.
const MAX_JSON_SCHEMA_BYTES: usize = 64 * 1024;

/// Whether `schema` is a JSON Schema a reply can be checked against: an object that its
/// meta-schema accepts and that compiles (every `$ref` resolves inside the document; nothing
/// is fetched).
fn check_json_schema(schema: &Value) -> Result<(), String> {
    if !schema.is_object() {
        return Err(format!(
            "must be a table (a JSON Schema object), got {}",
            InputType::name_of(schema)
        ));
    }
    if schema.to_string().len() > MAX_JSON_SCHEMA_BYTES {
        return Err(format!(
            "is over {} KiB; keep the schema of a reply small",
            MAX_JSON_SCHEMA_BYTES / 1024
        ));
    }
    match jsonschema::meta::try_validate(schema) {
        Err(e) => return Err(format!("not a valid JSON Schema: {e}")),
        Ok(Err(e)) => return Err(format!("not a valid JSON Schema{}", schema_problem(&e))),
        Ok(Ok(())) => {}
    }
    jsonschema::validator_for(schema)
        .map(drop)
        .map_err(|e| format!("not a usable JSON Schema{}", schema_problem(&e)))
}

/// ` at /properties/age/type: "integr" is not valid under …`, on one line and short.
pub(crate) fn schema_problem(e: &jsonschema::ValidationError<'_>) -> String {
    let path = e.instance_path.as_str();
    let at = if path.is_empty() {
        String::new()
    } else {
        format!(" at {path}")
    };
    let text = e.to_string().replace('\n', " ");
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    format!("{at}: {short}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::definition::fixtures::{opts, parse_and_validate, with_step};

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

    /// A workflow whose step 1 is `step` (TOML lines of a `[[steps]]` table and its
    /// sub-tables), after a plain step 0.
    fn nested(step: &str) -> String {
        format!(
            "key = \"k\"\n[[steps]]\nid = \"first\"\ntype = \"delay\"\nms = 1\n[[steps]]\n{step}\n"
        )
    }

    #[test]
    fn nested_errors_name_the_whole_path() {
        let src = nested(
            "id = \"pick\"\ntype = \"branch\"\n[[steps.cases]]\nwhen = \"true\"\n[[steps.cases.steps]]\nid = \"a\"\ntype = \"delay\"\nms = 1\n[[steps.cases.steps]]\nid = \"fetch\"\ntype = \"http\"\nurl = \"http://x/{{ a \"",
        );
        let e = parse_and_validate(&src, &opts()).unwrap_err();
        assert_eq!(e.step.as_deref(), Some("fetch"));
        assert_eq!(e.field.as_deref(), Some("steps[1].cases[0].steps[1].url"));
        let s = e.with_source("workflows/k.toml").to_string();
        assert!(
            s.starts_with("workflows/k.toml: step \"fetch\": field \"steps[1].cases[0].steps[1].url\": template syntax error"),
            "{s}"
        );

        // Parse errors too: an unknown field of a nested step, a case without `when`.
        let src = nested(
            "id = \"each\"\ntype = \"loop\"\nfor_each = \"[1]\"\n[[steps.steps]]\nid = \"t\"\ntype = \"template\"\ntemplate = \"x\"\ntemplat = \"y\"",
        );
        let e = parse_and_validate(&src, &opts()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[1].steps[0].templat"), "{e}");
        let src = nested("id = \"pick\"\ntype = \"branch\"\n[[steps.cases]]\n[[steps.cases.steps]]\nid = \"a\"\ntype = \"delay\"\nms = 1");
        let e = parse_and_validate(&src, &opts()).unwrap_err();
        assert_eq!(
            (e.step.as_deref(), e.field.as_deref()),
            (Some("pick"), Some("cases[0].when")),
            "{e}"
        );
    }

    #[test]
    fn duplicate_ids_across_nesting_name_both_places() {
        let src = nested(
            "id = \"each\"\ntype = \"loop\"\nfor_each = \"[1]\"\n[[steps.steps]]\nid = \"first\"\ntype = \"delay\"\nms = 1",
        );
        let e = parse_and_validate(&src, &opts()).unwrap_err();
        assert_eq!(e.step.as_deref(), Some("first"));
        assert_eq!(e.field.as_deref(), Some("steps[1].steps[0].id"));
        assert!(
            e.message
                .contains("used at steps[0] and at steps[1].steps[0]"),
            "{e}"
        );
    }

    #[test]
    fn loop_fields_are_checked() {
        let body = "\n[[steps.steps]]\nid = \"t\"\ntype = \"delay\"\nms = 1";
        let cases = [
            ("for_each = \"[1]\"\nuntil = \"true\"", "until", "not both"),
            ("max_iterations = 3", "for_each", "`for_each`"),
            ("for_each = \"[1]\"\nas = \"loop\"", "as", "reserved"),
            ("for_each = \"[1]\"\nas = \"2x\"", "as", "not usable"),
            ("for_each = \"[1]\"\nas = \"first\"", "as", "a step id"),
            (
                "until = \"true\"\nconcurrency = 2",
                "concurrency",
                "one after another",
            ),
            ("until = \"true\"\nas = \"x\"", "as", "no"),
            (
                "for_each = \"[1]\"\nmax_iterations = 10001",
                "max_iterations",
                "10000",
            ),
            (
                "for_each = \"[1]\"\nmax_iterations = 0",
                "max_iterations",
                "between",
            ),
            ("for_each = \"[1]\"\nconcurrency = 17", "concurrency", "16"),
            (
                "for_each = \"items: {{ x }}\"",
                "for_each",
                "one expression",
            ),
            ("for_each = \"[1]\"\nretries = 1", "retries", "nested steps"),
        ];
        for (fields, field, message) in cases {
            let src = nested(&format!("id = \"each\"\ntype = \"loop\"\n{fields}{body}"));
            let e = parse_and_validate(&src, &opts()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{fields}: {e}");
            assert!(e.message.contains(message), "{fields}: {e}");
        }
        let src = nested("id = \"each\"\ntype = \"loop\"\nfor_each = \"[1]\"\nsteps = []");
        let e = parse_and_validate(&src, &opts()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps"), "{e}");
        let src = nested(&format!("id = \"each\"\ntype = \"loop\"\nfor_each = \"[1]\"\nconcurrency = 16\nmax_iterations = 10000{body}"));
        parse_and_validate(&src, &opts()).unwrap();
    }

    #[test]
    fn approval_steps_cannot_be_nested() {
        let src = nested("id = \"pick\"\ntype = \"branch\"\n[[steps.cases]]\nwhen = \"true\"\n[[steps.cases.steps]]\nid = \"ok\"\ntype = \"approval\"");
        let e = parse_and_validate(&src, &opts()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[1].cases[0].steps[0].type"));
        assert!(e.message.contains("cannot be nested"), "{e}");
    }

    #[test]
    fn nested_definitions_round_trip_through_json() {
        let src = nested("id = \"each\"\ntype = \"loop\"\nfor_each = \"[1]\"\nas = \"n\"\nconcurrency = 2\n[[steps.steps]]\nid = \"pick\"\ntype = \"branch\"\n[[steps.steps.cases]]\nwhen = \"n > 0\"\n[[steps.steps.cases.steps]]\nid = \"t\"\ntype = \"delay\"\nms = 1\n[[steps.steps.default]]\nid = \"u\"\ntype = \"delay\"\nms = 1");
        let d = parse_and_validate(&src, &opts()).unwrap();
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["steps"][1]["as"], "n");
        assert_eq!(json["steps"][1]["steps"][0]["cases"][0]["when"], "n > 0");
        let back = Definition::from_json_value(json).unwrap();
        assert_eq!(d, back);
        let order: Vec<_> = d.walk().iter().map(|w| w.step.id.as_str()).collect();
        assert_eq!(order, ["first", "each", "pick", "t", "u"]);
    }

    fn prompt_opts() -> ValidateOptions<'static> {
        static PROVIDERS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        ValidateOptions {
            allow_command_steps: false,
            providers: PROVIDERS.get_or_init(|| vec!["local".to_owned()]),
        }
    }

    fn prompt_step(extra: &str) -> String {
        with_step(&format!(
            "id = \"p\"\ntype = \"prompt\"\nprovider = \"local\"\nmodel = \"m\"\n{extra}"
        ))
    }

    #[test]
    fn prompt_needs_prompt_or_messages_but_not_both() {
        let e = parse_and_validate(&prompt_step(""), &prompt_opts()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("prompt"), "{e}");
        assert!(e.message.contains("`prompt` or `messages`"), "{e}");
        let both = "prompt = \"hi\"\nmessages = [{ role = \"user\", content = \"hi\" }]";
        let e = parse_and_validate(&prompt_step(both), &prompt_opts()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("messages"), "{e}");
        assert!(e.message.contains("not both"), "{e}");
    }

    #[test]
    fn messages_errors_name_the_message_field() {
        for (src, field) in [
            ("messages = [{ role = \"user\", content = \"a\" }, { role = \"robot\", content = \"b\" }]", "messages[1].role"),
            ("messages = [{ role = \"user\" }]", "messages[0].content"),
            ("messages = [{ role = \"user\", content = \"a\", name = \"x\" }]", "messages[0].name"),
            ("messages = [{ role = \"user\", content = \"{{ a \" }]", "messages[0].content"),
            ("messages = []", "messages"),
            ("messages = 3", "messages"),
            ("messages = \"{{ history \"", "messages"),
        ] {
            let e = parse_and_validate(&prompt_step(src), &prompt_opts()).unwrap_err();
            assert_eq!(e.step.as_deref(), Some("p"), "{src}: {e}");
            assert_eq!(e.field.as_deref(), Some(field), "{src}: {e}");
        }
        let ok = "messages = [{ role = \"system\", content = \"s\" }, { role = \"user\", content = \"{{ q }}\" }]";
        parse_and_validate(&prompt_step(ok), &prompt_opts()).unwrap();
        parse_and_validate(
            &prompt_step("messages = \"{{ history | tojson }}\""),
            &prompt_opts(),
        )
        .unwrap();
    }

    #[test]
    fn json_schema_must_be_a_valid_schema() {
        let good = "prompt = \"hi\"\njson_schema = { type = \"object\", properties = { age = { type = \"integer\" } }, required = [\"age\"] }";
        let d = parse_and_validate(&prompt_step(good), &prompt_opts()).unwrap();
        // Round-trips through JSON with its new fields.
        let back = Definition::from_json_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(d, back);
        for bad in [
            "json_schema = { type = \"integr\" }",
            "json_schema = { properties = { a = { minLength = -1 } } }",
            "json_schema = 5",
            "json_schema = { \"$ref\" = \"#/definitions/missing\" }",
        ] {
            let src = prompt_step(&format!("prompt = \"hi\"\n{bad}"));
            let e = parse_and_validate(&src, &prompt_opts()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("json_schema"), "{bad}: {e}");
        }
        let e = parse_and_validate(
            &prompt_step("prompt = \"hi\"\nresponse_format = \"xml\""),
            &prompt_opts(),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("response_format"), "{e}");
        let e = parse_and_validate(
            &prompt_step(&format!("{good}\nresponse_format = \"text\"")),
            &prompt_opts(),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("response_format"), "{e}");
    }
}
