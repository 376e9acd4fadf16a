//! Workflow definitions: arbitrary text through the TOML and the JSON parser, then the static
//! checks, both the way the daemon does it (`deployments::parse_definition` with a
//! configuration) and directly (`Definition::validate` with both `allow_command_steps`
//! settings). Nothing may panic, and a definition that validates must survive a JSON round
//! trip unchanged (the store keeps definitions as JSON and re-reads them at start).
#![no_main]

use std::sync::OnceLock;

use hivelet::config::{Config, FileConfig, Paths};
use hivelet::deployments::parse_definition;
use hivelet::workflow::{Definition, ValidateOptions};
use libfuzzer_sys::fuzz_target;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        // The product defaults (one provider, `local`), with command steps allowed so their
        // checks are reached too.
        let mut file = FileConfig::default();
        file.security.allow_command_steps = true;
        Config {
            paths: Paths {
                config_file: "/nonexistent/hivelet.toml".into(),
                config_dir: "/nonexistent".into(),
                data_dir: "/nonexistent/data".into(),
            },
            file,
            bind: "127.0.0.1:8420".parse().unwrap(),
        }
    })
}

fn check_round_trip(def: &Definition, opts: &ValidateOptions<'_>) {
    let json = serde_json::to_string(def).expect("a definition serializes");
    let mut again = Definition::from_json_str(&json)
        .unwrap_or_else(|e| panic!("re-parse of a validated definition failed: {e}\n{json}"));
    again
        .validate(opts)
        .unwrap_or_else(|e| panic!("re-validation failed: {e}\n{json}"));
    assert_eq!(
        &again, def,
        "JSON round trip changed the definition\n{json}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let providers = vec!["local".to_owned(), "openai".to_owned()];
    for is_toml in [true, false] {
        // As the daemon parses `workflows/*.toml` and deploy requests.
        let _ = parse_definition(config(), text, is_toml, "fuzz");

        let parsed = if is_toml {
            Definition::from_toml_str(text)
        } else {
            Definition::from_json_str(text)
        };
        let Ok(def) = parsed else { continue };
        let _ = def.requires_async();
        for allow_command_steps in [false, true] {
            let opts = ValidateOptions {
                allow_command_steps,
                providers: &providers,
            };
            let mut d = def.clone();
            if d.validate(&opts).is_ok() {
                let _ = d.requires_async();
                // Validation normalises; doing it twice must change nothing.
                let mut twice = d.clone();
                twice.validate(&opts).expect("validate is idempotent");
                assert_eq!(twice, d, "a second validate changed the definition");
                check_round_trip(&d, &opts);
            }
        }
    }
});
