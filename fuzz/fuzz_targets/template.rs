//! Templates: `render`, `eval_bool`, `check_syntax` and `check_condition_syntax` on arbitrary
//! text. The first line is the JSON scope when it parses as JSON (a non-object is put under
//! `value`), else a fixed scope is used and the whole input is the template.
//!
//! Checked: nothing panics; a template that fails `check_syntax` (what deploy checks) also
//! fails to render; rendering the same template twice (the second time from the per-thread
//! compiled cache) gives the same result.
//!
//! Time and memory: a render runs at most `TEMPLATE_FUEL` instructions and produces at most
//! `RENDERED_MAX_BYTES` (both found missing by this target's first runs; see fuzz/README.md,
//! "Findings"), so loops and recursive macros are rendered too. What fuel cannot bound is
//! one operation building a huge value (`"x" * 100000000`, then `a ~ a ~ …`): templates
//! with `*`, `~` or `+` are only syntax-checked by default, so the run looks for panics
//! instead of stopping at the first out-of-memory. `HIVELET_FUZZ_UNBOUNDED=1` renders
//! everything.
#![no_main]

use std::sync::OnceLock;

use hivelet::workflow::template::{check_condition_syntax, check_syntax, eval_bool, render};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn unbounded() -> bool {
    static FLAG: OnceLock<bool> = OnceLock::new();
    *FLAG.get_or_init(|| std::env::var_os("HIVELET_FUZZ_UNBOUNDED").is_some_and(|v| v == "1"))
}

/// Operators that can build a value far larger than the template in a few instructions.
fn may_be_unbounded(src: &str) -> bool {
    src.contains('*') || src.contains('~') || src.contains('+')
}

fn fixed_scope() -> Value {
    json!({
        "name": "Ada",
        "inputs": {"name": "Ada", "n": 3, "list": [1, 2, 3], "flag": true},
        "vars": {"suffix": "!", "nested": {"a": [1, {"b": null}]}},
        "greet": {"output": "Hello, Ada!", "status": "completed"},
        "run": {"id": "run_1", "variant": "default"},
        "x": null,
        "html": "<b>&</b>"
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (ctx, src) = match text.split_once('\n') {
        Some((first, rest)) => match serde_json::from_str::<Value>(first) {
            Ok(v @ Value::Object(_)) => (v, rest),
            Ok(other) => (json!({ "value": other }), rest),
            Err(_) => (fixed_scope(), text),
        },
        None => (fixed_scope(), text),
    };

    let syntax = check_syntax(src);
    let _ = check_condition_syntax(src);
    if !unbounded() && may_be_unbounded(src) {
        return;
    }
    let first = render(src, &ctx);
    if syntax.is_err() {
        assert!(
            first.is_err(),
            "check_syntax refused the template ({:?}) but render accepted it",
            syntax
        );
    }
    let second = render(src, &ctx);
    assert_eq!(first, second, "rendering twice (cached) differs");
    let _ = eval_bool(src, &ctx);
});
