//! Jinja-style templates (minijinja) for step fields, `when` conditions and the output.
//!
//! One shared environment, configured to be forgiving the way Fetch Hive users expect:
//! missing values render as nothing (also through chains like `{{ a.b.c }}`), `null`
//! renders as nothing, and nothing is HTML-escaped (templates build prompts, URLs and JSON).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value as JinjaValue};
use serde_json::Value;

/// A template that failed to compile or to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TemplateError {}

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        TemplateError {
            message: describe(&e),
        }
    }
}

/// Fuel of one render or condition. Runs render on the daemon's threads, so a template that
/// loops (or recurses) without end must fail instead of holding one forever, and one that
/// doubles a string a few times must fail instead of taking gigabytes. minijinja charges an
/// instruction 1 fuel and a created value about 1 per 64 bytes, so this is a million
/// instructions (well under a second) or some 64 MiB of values: far more than a prompt needs.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// Roughly the most memory a render's values may take under [`TEMPLATE_FUEL`].
const TEMPLATE_VALUE_MIB: u64 = (TEMPLATE_FUEL * 64) >> 20;

/// Most bytes one render may produce.
pub const RENDERED_MAX_BYTES: usize = 16 * 1024 * 1024;

/// `unknown filter: filter nosuch is unknown (line 2)`, without minijinja's template name.
fn describe(e: &minijinja::Error) -> String {
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return format!(
            "the template ran too long or built too large a value (its limits are {TEMPLATE_FUEL} instructions and about {TEMPLATE_VALUE_MIB} MiB of values; look for a loop or a recursion without end, or a value that keeps doubling)"
        );
    }
    let mut s = e.kind().to_string();
    if let Some(detail) = e.detail() {
        s.push_str(": ");
        s.push_str(detail);
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    s
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(configured_env)
}

/// Most compiled templates (or expressions) a thread keeps before starting over.
const COMPILED_CACHE_MAX: usize = 4096;

thread_local! {
    /// Templates compiled on this thread, keyed by their source: a workflow renders the same
    /// few templates on every run, so each is parsed once instead of once per run.
    static COMPILED: RefCell<(Environment<'static>, usize)> = RefCell::new((configured_env(), 0));
    static EXPRESSIONS: RefCell<HashMap<String, minijinja::Expression<'static, 'static>>> =
        RefCell::new(HashMap::new());
}

fn configured_env() -> Environment<'static> {
    {
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.add_filter("tojson", tojson);
        env.set_formatter(|out, state, value| {
            // `null` step outputs and unset variables render as empty text, not "none".
            if value.is_none() || value.is_undefined() {
                Ok(())
            } else if value.kind() == minijinja::value::ValueKind::Bool {
                // JSON spelling (`true`), not Python's (`True`): workflows mostly build JSON.
                out.write_str(if value.is_true() { "true" } else { "false" })?;
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env
    }
}

/// `tojson` the way hivelet has always written it: compact (`{"a":[1,2]}`, as serde_json
/// writes it), where minijinja 3's own filter adds spaces after `:` and `,`. Workflows put
/// this text into request bodies and outputs, so it must not change under anyone's feet.
/// Like the built-in filter, `indent` pretty-prints, the result is safe for HTML and JSON
/// (`<`, `>`, `&` and `'` escaped), and its bytes are charged to the render's fuel.
fn tojson(
    state: &minijinja::State<'_, '_>,
    value: &JinjaValue,
    indent: Option<JinjaValue>,
    kwargs: minijinja::value::Kwargs,
) -> Result<JinjaValue, minijinja::Error> {
    let indent = match indent.or(kwargs.get("indent")?) {
        None => None,
        Some(v) => match bool::try_from(v.clone()) {
            Ok(true) => Some(2),
            Ok(false) => None,
            Err(_) => Some(usize::try_from(v)?),
        },
    };
    kwargs.assert_all_used()?;
    let json = match indent {
        None => serde_json::to_string(value),
        Some(n) => {
            let pad = " ".repeat(n);
            let mut out = Vec::new();
            let pretty = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, pretty);
            serde::Serialize::serialize(value, &mut ser)
                .map(|_| String::from_utf8(out).expect("serde_json writes UTF-8"))
        }
    }
    .map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "cannot serialize to JSON",
        )
        .with_source(e)
    })?;
    state.consume_fuel(json.len() as u64 / 64)?;
    let mut safe = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => safe.push_str("\\u003c"),
            '>' => safe.push_str("\\u003e"),
            '&' => safe.push_str("\\u0026"),
            '\'' => safe.push_str("\\u0027"),
            _ => safe.push(c),
        }
    }
    Ok(JinjaValue::from_safe_string(safe))
}

/// Converts a JSON scope once so several templates can render against it.
pub(crate) fn to_context(ctx: &Value) -> JinjaValue {
    JinjaValue::from(minijinja::value::Serde(ctx))
}

/// Renders `src` with `ctx` (a JSON object) as the scope.
pub fn render(src: &str, ctx: &Value) -> Result<String, TemplateError> {
    render_with(src, &to_context(ctx))
}

pub(crate) fn render_with(src: &str, ctx: &JinjaValue) -> Result<String, TemplateError> {
    COMPILED.with(|cell| {
        if let Ok(template) = cell.borrow().0.get_template(src) {
            return render_capped(&template, ctx);
        }
        {
            let mut cache = cell.borrow_mut();
            if cache.1 >= COMPILED_CACHE_MAX {
                *cache = (configured_env(), 0);
            }
            cache.0.add_template_owned(src.to_owned(), src.to_owned())?;
            cache.1 += 1;
        }
        let cache = cell.borrow();
        render_capped(&cache.0.get_template(src)?, ctx)
    })
}

/// Renders into a buffer that refuses to grow past [`RENDERED_MAX_BYTES`].
fn render_capped(
    template: &minijinja::Template<'_, '_>,
    ctx: &JinjaValue,
) -> Result<String, TemplateError> {
    struct Capped(Vec<u8>);
    impl std::io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + buf.len() > RENDERED_MAX_BYTES {
                return Err(std::io::Error::other("too long"));
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Capped(Vec::new());
    match template.render_captured_to(ctx, &mut out) {
        Ok(_) => Ok(String::from_utf8(out.0).expect("minijinja writes UTF-8")),
        Err(e) if e.kind() == minijinja::ErrorKind::WriteFailure => Err(TemplateError {
            message: format!(
                "the rendered text would be longer than {} MiB",
                RENDERED_MAX_BYTES >> 20
            ),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Evaluates a bare expression, compiling it once per thread.
fn eval_expression(expr: &str, ctx: &JinjaValue) -> Result<JinjaValue, TemplateError> {
    EXPRESSIONS.with(|cell| {
        if let Some(compiled) = cell.borrow().get(expr) {
            return Ok(compiled.eval(ctx)?);
        }
        let compiled = env().compile_expression_owned(expr.to_owned())?;
        let value = compiled.eval(ctx)?;
        let mut cache = cell.borrow_mut();
        if cache.len() >= COMPILED_CACHE_MAX {
            cache.clear();
        }
        cache.insert(expr.to_owned(), compiled);
        Ok(value)
    })
}

/// Evaluates a `when` condition. Accepts a bare expression (`x == 1`), one wrapped in
/// `{{ … }}`, or any template, whose rendered text is then read as a boolean.
pub fn eval_bool(expr: &str, ctx: &Value) -> Result<bool, TemplateError> {
    eval_bool_with(expr, &to_context(ctx))
}

pub(crate) fn eval_bool_with(expr: &str, ctx: &JinjaValue) -> Result<bool, TemplateError> {
    match condition_expression(expr) {
        Some(e) => Ok(eval_expression(e, ctx)?.is_true()),
        None => {
            let text = render_with(expr, ctx)?;
            let text = text.trim().to_ascii_lowercase();
            Ok(!matches!(
                text.as_str(),
                "" | "false" | "0" | "none" | "null" | "no" | "off"
            ))
        }
    }
}

/// Evaluates an expression (bare, or wrapped in one `{{ … }}`) to a value, without
/// rendering it to text: a loop's `for_each` looks at the value's length before turning any
/// of it into JSON.
pub(crate) fn eval_value_with(expr: &str, ctx: &JinjaValue) -> Result<JinjaValue, TemplateError> {
    match condition_expression(expr) {
        Some(e) => eval_expression(e, ctx),
        None => Err(TemplateError {
            message: "must be one expression (like `items` or `{{ order.lines }}`), not a template with text around it".to_owned(),
        }),
    }
}

/// Checks that an expression (see [`eval_value_with`]) compiles.
pub fn check_expression_syntax(expr: &str) -> Result<(), TemplateError> {
    if expr.trim().is_empty() {
        return Err(TemplateError {
            message: "the expression is empty".to_owned(),
        });
    }
    match condition_expression(expr) {
        Some(e) => env()
            .compile_expression_owned(e.to_owned())
            .map(|_| ())
            .map_err(|e| syntax_error(&e)),
        None => Err(TemplateError {
            message: "must be one expression (like `items` or `{{ order.lines }}`), not a template with text around it".to_owned(),
        }),
    }
}

/// Checks that a template compiles.
pub fn check_syntax(src: &str) -> Result<(), TemplateError> {
    env()
        .template_from_str(src)
        .map(|_| ())
        .map_err(|e| syntax_error(&e))
}

/// Syntax errors without the repeated "syntax error:" the callers already say.
fn syntax_error(e: &minijinja::Error) -> TemplateError {
    let full = describe(e);
    let message = match full.strip_prefix("syntax error: ") {
        Some(rest) => rest.to_owned(),
        None => full,
    };
    TemplateError { message }
}

/// Checks that a `when` condition compiles (see [`eval_bool`] for the accepted forms).
pub fn check_condition_syntax(expr: &str) -> Result<(), TemplateError> {
    if expr.trim().is_empty() {
        return Err(TemplateError {
            message: "the condition is empty".to_owned(),
        });
    }
    match condition_expression(expr) {
        Some(e) => env()
            .compile_expression_owned(e.to_owned())
            .map(|_| ())
            .map_err(|e| syntax_error(&e)),
        None => check_syntax(expr),
    }
}

/// The expression inside a condition, when it is a bare expression or exactly one
/// `{{ … }}` block; `None` when it is some other template.
fn condition_expression(expr: &str) -> Option<&str> {
    let t = expr.trim();
    let is_template =
        |s: &str| s.contains("{{") || s.contains("}}") || s.contains("{%") || s.contains("{#");
    if !is_template(t) {
        return Some(t);
    }
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    (!is_template(inner) && !inner.trim().is_empty()).then(|| inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by writing inputs for the `template` fuzz target (fuzz/findings/): each held a
    /// thread for as long as it liked before the fuel limit.
    #[test]
    fn runaway_templates_fail_instead_of_hanging() {
        let ctx = json!({});
        for src in [
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        ] {
            let err = render(src, &ctx).unwrap_err();
            assert!(err.message.contains("ran too long"), "{src}: {err}");
        }
        let err = eval_bool(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            &ctx,
        )
        .unwrap_err();
        assert!(err.message.contains("ran too long"), "{err}");
        // An ordinary loop is far inside the limit.
        let ok = render("{% for i in range(10000) %}{{ i }},{% endfor %}", &ctx).unwrap();
        assert!(ok.ends_with("9999,"));
    }

    /// Each of these built gigabytes in a few instructions before values were charged fuel.
    #[test]
    fn templates_that_build_huge_values_fail_early() {
        let ctx = json!({});
        for src in [
            "{% set a = 'x' * 100000000 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c | length }}",
            "{% set a = 'x' * 10000000 %}{% set b = a ~ a ~ a ~ a ~ a ~ a ~ a ~ a %}{{ b | length }}",
            "{{ ('x' * 10000000) | replace('x', 'xx') | replace('x', 'xx') | replace('x', 'xx') | length }}",
            "{% set a = 'x' * 10000000 %}{% set b %}{{ a }}{{ a }}{{ a }}{{ a }}{{ a }}{{ a }}{{ a }}{% endset %}{{ b | length }}",
            "{{ (['xxxxxxxxxxxxxxxx'] * 10000000) | join('') | length }}",
        ] {
            let err = render(src, &ctx).unwrap_err();
            assert!(err.message.contains("too large a value"), "{src}: {err}");
        }
        // A few MiB of values are fine.
        let ok = render("{% set a = 'x' * 4000000 %}{{ (a ~ a) | length }}", &ctx).unwrap();
        assert_eq!(ok, "8000000");
    }

    #[test]
    fn a_render_longer_than_the_cap_fails() {
        let src = "{% for i in range(20) %}{{ 'x' * 1048576 }}{% endfor %}";
        let err = render(src, &json!({})).unwrap_err();
        assert!(err.message.contains("longer than 16 MiB"), "{err}");
        let fits = render("{{ 'x' * 1048576 }}", &json!({})).unwrap();
        assert_eq!(fits.len(), 1 << 20);
    }

    #[test]
    fn renders_lenient_and_unescaped() {
        let ctx = json!({"name": "Ada", "vars": {}, "x": null, "html": "<b>&</b>"});
        assert_eq!(
            render("Hi {{ name }}{{ vars.suffix }}", &ctx).unwrap(),
            "Hi Ada"
        );
        assert_eq!(render("{{ a.b.c }}|{{ x }}", &ctx).unwrap(), "|");
        assert_eq!(render("{{ html }}", &ctx).unwrap(), "<b>&</b>");
        assert_eq!(
            render("{{ obj | tojson }}", &json!({"obj": {"a": [1, 2]}})).unwrap(),
            r#"{"a":[1,2]}"#
        );
        let ctx = json!({"obj": {"s": "<a href='x'>&</a>", "n": [1]}});
        assert_eq!(
            render("{{ obj | tojson }}", &ctx).unwrap(),
            r#"{"n":[1],"s":"\u003ca href=\u0027x\u0027\u003e\u0026\u003c/a\u003e"}"#
        );
        assert_eq!(
            render("{{ obj.n | tojson(indent=2) }}", &ctx).unwrap(),
            "[\n  1\n]"
        );
    }

    #[test]
    fn conditions() {
        let ctx = json!({"x": 1, "s": "", "list": [], "flag": true});
        assert!(eval_bool("x == 1", &ctx).unwrap());
        assert!(eval_bool("{{ x == 1 }}", &ctx).unwrap());
        assert!(!eval_bool("{{- x == 2 -}}", &ctx).unwrap());
        assert!(!eval_bool("missing.deep == 1", &ctx).unwrap());
        assert!(!eval_bool("list", &ctx).unwrap());
        assert!(eval_bool("flag and x > 0", &ctx).unwrap());
        assert!(!eval_bool("{% if x == 2 %}yes{% endif %}", &ctx).unwrap());
        assert!(eval_bool("{% if x == 1 %}yes{% endif %}", &ctx).unwrap());
        assert!(!eval_bool("{{ s }}{{ s }}", &ctx).unwrap());
    }

    #[test]
    fn syntax_checks() {
        assert!(check_syntax("{{ a }}").is_ok());
        assert!(check_syntax("{{ a ").is_err());
        assert!(check_syntax("{% if %}").is_err());
        assert!(check_condition_syntax("a == 1").is_ok());
        assert!(check_condition_syntax("{{ a == 1 }}").is_ok());
        assert!(check_condition_syntax("a ==").is_err());
        assert!(check_condition_syntax("  ").is_err());
    }
}

#[cfg(test)]
mod boolean_tests {
    #[test]
    fn booleans_render_in_json_spelling() {
        let ctx = serde_json::json!({"f": true, "g": false});
        assert_eq!(
            super::render("{{ f }} {{ g }}", &ctx).unwrap(),
            "true false"
        );
    }
}
