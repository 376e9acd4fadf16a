//! Which start inputs a step's templates read, for a rerun with new `inputs` (SPEC §10): a
//! rerun may take over only steps that did not read what changed.
//!
//! The analysis is textual and errs towards "reads": every string in the step's definition
//! (its templates, expressions and nested steps alike) is scanned for the name `inputs`.
//! `inputs.NAME` and `inputs["NAME"]` read `NAME`; `inputs` used any other way (`inputs |
//! tojson`, `inputs.get(…)`, `for k in inputs`, `inputs[key]`) reads every input. Inputs are
//! in scope by their bare names too (`{{ name }}`), so a declared input's name standing alone
//! reads it. A string that only looks like a template still counts, which can only forbid a
//! rerun, never let a stale output through.

use std::collections::BTreeSet;

use serde_json::Value;

use super::definition::{Definition, StepDef};

/// The inputs one step reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reads {
    /// It uses `inputs` as a whole (or in a way the scan cannot narrow down).
    pub all: bool,
    /// The inputs it reads by name.
    pub names: BTreeSet<String>,
}

impl Reads {
    /// Whether it reads any of `names`.
    pub fn any_of<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> bool {
        self.all || names.any(|n| self.names.contains(n))
    }
}

/// The inputs `step` reads, nested steps included; `declared` are the workflow's input
/// names, which templates may also use bare.
pub fn step_reads(step: &StepDef, declared: &BTreeSet<&str>) -> Reads {
    let mut reads = Reads::default();
    if let Ok(value) = serde_json::to_value(step) {
        scan_value(&value, declared, &mut reads);
    }
    reads
}

/// The position of the first top-level step that reads any of `names`.
pub fn first_reader(def: &Definition, names: &[&str]) -> Option<usize> {
    let declared: BTreeSet<&str> = def.inputs.iter().map(|i| i.name.as_str()).collect();
    def.steps
        .iter()
        .position(|step| step_reads(step, &declared).any_of(names.iter().copied()))
}

fn scan_value(value: &Value, declared: &BTreeSet<&str>, reads: &mut Reads) {
    match value {
        Value::String(s) => {
            scan_text(s, reads);
            scan_bare(s, declared, reads);
        }
        Value::Array(items) => items.iter().for_each(|v| scan_value(v, declared, reads)),
        Value::Object(map) => map.values().for_each(|v| scan_value(v, declared, reads)),
        _ => {}
    }
}

/// Declared input names used bare: an identifier not after a `.` (an attribute).
fn scan_bare(text: &str, declared: &BTreeSet<&str>, reads: &mut Reads) {
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (is_ident(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                start = None;
                let word = &text[s..i];
                let attribute = text[..s].ends_with('.');
                if !attribute && declared.contains(word) {
                    reads.names.insert(word.to_owned());
                }
            }
            _ => {}
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Finds every use of the name `inputs` in `text`.
fn scan_text(text: &str, reads: &mut Reads) {
    const NAME: &str = "inputs";
    let mut from = 0;
    while let Some(found) = text[from..].find(NAME) {
        let start = from + found;
        let end = start + NAME.len();
        from = end;
        let before = text[..start].chars().next_back();
        // `x.inputs` is some other object's attribute; `my_inputs` another name.
        if before.is_some_and(|c| is_ident(c) || c == '.') {
            continue;
        }
        let rest = &text[end..];
        if rest.chars().next().is_some_and(is_ident) {
            continue;
        }
        match named_input(rest) {
            Some(name) => {
                reads.names.insert(name);
            }
            None => reads.all = true,
        }
    }
}

/// The input named right after `inputs`: `.NAME` (not a method call) or `["NAME"]`.
fn named_input(rest: &str) -> Option<String> {
    let rest = rest.trim_start();
    if let Some(attr) = rest.strip_prefix('.') {
        let attr = attr.trim_start();
        let len = attr.find(|c: char| !is_ident(c)).unwrap_or(attr.len());
        let name = &attr[..len];
        let called = attr[len..].trim_start().starts_with('(');
        return (!name.is_empty() && !called).then(|| name.to_owned());
    }
    let inner = rest.strip_prefix('[')?.trim_start();
    let quote = inner.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let inner = &inner[1..];
    let close = inner.find(quote)?;
    inner[close + 1..]
        .trim_start()
        .starts_with(']')
        .then(|| inner[..close].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(text: &str) -> Reads {
        let mut r = Reads::default();
        scan_text(text, &mut r);
        r
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn named_reads_are_narrowed() {
        let r = reads("Hi {{ inputs.name }} from {{ inputs['city'] }} and {{ inputs [ \"zip\" ] }}{% if inputs.vip %}!{% endif %}");
        assert!(!r.all);
        assert_eq!(r.names, names(&["name", "city", "vip", "zip"]));
        assert_eq!(
            reads("{{ a.inputs.x }} {{ my_inputs }} {{ inputsx }}"),
            Reads::default()
        );
    }

    #[test]
    fn bare_input_names_are_reads() {
        let declared = BTreeSet::from(["name", "city"]);
        let mut r = Reads::default();
        scan_bare(
            "Hello {{ name }} of {{ place.city }} {{ surname }}",
            &declared,
            &mut r,
        );
        assert_eq!(r.names, names(&["name"]));
    }

    #[test]
    fn whole_and_dynamic_uses_read_everything() {
        for text in [
            "{{ inputs | tojson }}",
            "{{ inputs.get('name') }}",
            "{% for k in inputs %}{{ k }}{% endfor %}",
            "{{ inputs[key] }}",
            "{{ inputs }}",
        ] {
            assert!(reads(text).all, "{text}");
        }
    }

    #[test]
    fn steps_are_scanned_with_their_nested_steps() {
        let mut def = Definition::from_toml_str(
            r#"
key = "r"
[[inputs]]
name = "a"
type = "text"
[[inputs]]
name = "b"
type = "text"
[[inputs]]
name = "c"
type = "text"
[[steps]]
id = "first"
type = "template"
template = "{{ inputs.a }}"
[[steps]]
id = "bare"
type = "template"
template = "{{ c }}"
[[steps]]
id = "each"
type = "loop"
for_each = "[1, 2]"
[[steps.steps]]
id = "inner"
type = "template"
template = "{{ inputs.b }}"
"#,
        )
        .unwrap();
        def.validate(&crate::workflow::ValidateOptions {
            allow_command_steps: false,
            providers: &[],
        })
        .unwrap();
        assert_eq!(first_reader(&def, &["a"]), Some(0));
        assert_eq!(first_reader(&def, &["b"]), Some(2));
        assert_eq!(first_reader(&def, &["c"]), Some(1));
        assert_eq!(first_reader(&def, &["d"]), None);
        assert_eq!(first_reader(&def, &["b", "a"]), Some(0));
    }
}
