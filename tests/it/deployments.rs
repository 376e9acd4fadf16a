//! SPEC §6 deployments and §7 definitions: deploy (JSON and TOML), versions, validation,
//! signing secrets, delete, `hivelet deploy`, `workflows/*.toml` at start, `--no-examples`.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::*;

fn greeter_toml(key: &str, greeting: &str) -> String {
    format!(
        r#"
key = "{key}"
description = "Greets"

[[inputs]]
name = "name"
type = "text"
required = true

[[steps]]
id = "greet"
type = "template"
template = "{greeting}, {{{{ name }}}}{{{{ vars.suffix }}}}"

[output]
template = "{{{{ greet.output }}}}"

[variants.default]
vars = {{ suffix = "." }}

[variants.excited]
vars = {{ suffix = "!" }}
"#
    )
}

fn greeter_json(key: &str, greeting: &str) -> Value {
    json!({
        "key": key,
        "inputs": [{"name": "name", "type": "text", "required": true}],
        "steps": [{"id": "greet", "type": "template", "template": format!("{greeting}, {{{{ name }}}}")}],
        "output": {"template": "{{ greet.output }}"}
    })
}

fn invoke_output(app: &TestApp, deployment: &str, variant: Option<&str>) -> Value {
    let mut body = json!({"deployment": deployment, "inputs": {"name": "Ada"}});
    if let Some(v) = variant {
        body["variant"] = json!(v);
    }
    let r = app.invoke(&body);
    r.expect_status(200);
    r.json()["output"].clone()
}

fn latest_version(app: &TestApp, key: &str) -> u64 {
    let r = app.admin_get(&format!("/v1/deployments/{key}"));
    r.expect_status(200);
    r.json()["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version: {r}"))
}

#[test]
fn deploy_json_then_redeploy_adds_versions() {
    let app = TestApp::start();
    let r = app.deploy_json("greeter", &greeter_json("greeter", "Hi"));
    r.expect_success();
    let body = r.json();
    assert_eq!(body["key"], "greeter", "{body}");
    assert_eq!(body["version"], 1, "{body}");
    assert_eq!(invoke_output(&app, "greeter", None), "Hi, Ada");

    let r = app.deploy_json("greeter", &greeter_json("greeter", "Howdy"));
    r.expect_success();
    assert_eq!(r.json()["version"], 2, "{r}");
    assert_eq!(
        invoke_output(&app, "greeter", None),
        "Howdy, Ada",
        "runs use the latest version"
    );

    let detail = app.admin_get("/v1/deployments/greeter");
    detail.expect_status(200);
    let detail = detail.json();
    assert_eq!(detail["key"], "greeter");
    assert_eq!(detail["version"], 2, "{detail}");
    let versions = detail["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("versions: {detail}"));
    assert_eq!(versions.len(), 2, "{detail}");
    let numbers: Vec<u64> = versions
        .iter()
        .map(|v| v.as_u64().or_else(|| v["version"].as_u64()).unwrap_or(0))
        .collect();
    assert!(
        numbers.contains(&1) && numbers.contains(&2),
        "versions 1 and 2 expected: {detail}"
    );
}

#[test]
fn deploy_toml_with_variants() {
    let app = TestApp::start();
    let r = app.deploy_toml("greeter", &greeter_toml("greeter", "Hello"));
    r.expect_success();
    assert_eq!(r.json()["version"], 1, "{r}");
    assert_eq!(invoke_output(&app, "greeter", None), "Hello, Ada.");
    assert_eq!(
        invoke_output(&app, "greeter", Some("excited")),
        "Hello, Ada!"
    );

    let detail = app.admin_get("/v1/deployments/greeter").json();
    let variants = detail["variants"].to_string();
    assert!(
        variants.contains("default") && variants.contains("excited"),
        "variants: {detail}"
    );
}

#[test]
fn key_may_be_left_out_of_the_body() {
    let app = TestApp::start();
    let mut def = greeter_json("x", "Yo");
    def.as_object_mut().unwrap().remove("key");
    app.deploy_json("nokey", &def).expect_success();
    assert_eq!(invoke_output(&app, "nokey", None), "Yo, Ada");
}

#[test]
fn body_key_that_differs_from_the_url_never_deploys_the_body_key() {
    let app = TestApp::start();
    let r = app.deploy_json("alpha", &greeter_json("beta", "Hey"));
    // Either the URL wins or the mismatch is refused; "beta" must not appear either way.
    if r.is_success() {
        assert_eq!(r.json()["key"], "alpha", "{r}");
        assert_eq!(invoke_output(&app, "alpha", None), "Hey, Ada");
    } else {
        r.expect_error(422, "validation_error", None);
    }
    let r = app.invoke(&json!({"deployment": "beta", "inputs": {"name": "Ada"}}));
    r.expect_error(404, "not_found", Some("Deployment not found."));
}

#[test]
fn invalid_definition_is_422_naming_step_and_field_and_deploys_nothing() {
    let app = TestApp::start();
    app.deploy_toml("greeter", &greeter_toml("greeter", "Hello"))
        .expect_success();

    let broken = greeter_toml("greeter", "Hello").replace("{{ name }}", "{{ name ");
    let r = app.deploy_toml("greeter", &broken);
    let body = r.expect_error(422, "validation_error", None);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("greet"),
        "message should name the step: {body}"
    );
    assert!(
        message.contains("template"),
        "message should name the field: {body}"
    );

    assert_eq!(
        latest_version(&app, "greeter"),
        1,
        "a refused deploy adds no version"
    );
    assert_eq!(invoke_output(&app, "greeter", None), "Hello, Ada.");
}

#[test]
fn invalid_definitions_of_several_kinds_are_refused() {
    let app = TestApp::start();
    let base = greeter_json("bad", "Hi");
    let mut cases: Vec<(&str, Value, Vec<&str>)> = Vec::new();

    let mut v = base.clone();
    v["steps"][0]["type"] = json!("teleport");
    cases.push(("unknown step type", v, vec!["greet", "teleport"]));

    let mut v = base.clone();
    v["steps"] = json!([
        {"id": "greet", "type": "template", "template": "a"},
        {"id": "greet", "type": "template", "template": "b"}
    ]);
    cases.push(("duplicate step id", v, vec!["greet"]));

    let mut v = base.clone();
    v["steps"][0] = json!({"id": "fetch", "type": "http", "method": "GET"});
    cases.push(("http step without url", v, vec!["fetch", "url"]));

    let mut v = base.clone();
    v["inputs"][0]["type"] = json!("texty");
    // The input may be named by its name or its position.
    cases.push(("unknown input type", v, vec!["texty", "type"]));

    let mut v = base.clone();
    v["steps"][0].as_object_mut().unwrap().remove("template");
    cases.push((
        "template step without template",
        v,
        vec!["greet", "template"],
    ));

    for (what, def, words) in cases {
        let r = app.deploy_json("bad", &def);
        assert_eq!(r.status, 422, "{what}: {r}");
        let body = r.expect_error(422, "validation_error", None);
        let message = body["message"].as_str().unwrap();
        for word in words {
            assert!(
                message.contains(word),
                "{what}: message should mention {word:?}: {body}"
            );
        }
    }
    let r = app.admin_get("/v1/deployments/bad");
    r.expect_error(404, "not_found", None);
}

#[test]
fn malformed_toml_and_json_definitions_are_refused() {
    let app = TestApp::start();
    let r = app.deploy_toml("bad", "key = \"bad\"\n[[steps]\nid = 1\n");
    assert!(r.status == 400 || r.status == 422, "{r}");
    let r = app.put(
        "/v1/deployments/bad",
        Some(&app.admin_key),
        "application/json",
        "{\"key\": ",
    );
    assert!(r.status == 400 || r.status == 422, "{r}");
    app.admin_get("/v1/deployments/bad").expect_status(404);
}

#[test]
fn list_and_detail_show_the_example_and_its_variants() {
    let app = TestApp::start();
    app.deploy_toml("greeter", &greeter_toml("greeter", "Hello"))
        .expect_success();
    let r = app.admin_get("/v1/deployments");
    r.expect_status(200);
    let list = r.json();
    let keys: Vec<&str> = list["deployments"]
        .as_array()
        .unwrap_or_else(|| panic!("deployments: {list}"))
        .iter()
        .filter_map(|d| d["key"].as_str())
        .collect();
    assert!(
        keys.contains(&"hello") && keys.contains(&"greeter"),
        "{list}"
    );

    let detail = app.admin_get("/v1/deployments/hello");
    detail.expect_status(200);
    let detail = detail.json();
    assert_eq!(detail["key"], "hello");
    assert_eq!(detail["version"], 1, "{detail}");
    let variants = detail["variants"].to_string();
    for v in ["default", "loud", "slow"] {
        assert!(variants.contains(v), "variant {v} missing: {detail}");
    }
}

#[test]
fn admins_see_the_signing_secret_invoke_keys_do_not() {
    let app = TestApp::start();
    let detail = app.admin_get("/v1/deployments/hello");
    detail.expect_status(200);
    let detail = detail.json();
    let secret = detail["signing_secret"]
        .as_str()
        .unwrap_or_else(|| panic!("signing_secret: {detail}"));
    let raw = secret
        .strip_prefix("whsec_")
        .unwrap_or_else(|| panic!("whsec_ prefix: {secret}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .unwrap_or_else(|e| panic!("secret is not base64 ({e}): {secret}"));
    assert_eq!(bytes.len(), 32, "32 random bytes: {secret}");

    // Another deployment gets its own secret.
    app.deploy_toml("greeter", &greeter_toml("greeter", "Hello"))
        .expect_success();
    let other = app.admin_get("/v1/deployments/greeter").json();
    assert_ne!(
        other["signing_secret"].as_str(),
        Some(secret),
        "secrets must differ per deployment"
    );

    let invoke_key = app.create_key("app", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    for path in ["/v1/deployments/hello", "/v1/deployments"] {
        let r = app.get(path, Some(&invoke_key));
        assert!(r.status == 200 || r.status == 403, "{path}: {r}");
        assert!(
            !r.text.contains(secret),
            "{path} leaked the secret to an invoke key: {r}"
        );
        assert!(
            !r.text.contains("whsec_"),
            "{path} leaked a secret to an invoke key: {r}"
        );
        if r.status == 200 && path == "/v1/deployments/hello" {
            assert!(r.json().get("signing_secret").is_none(), "{r}");
        }
    }
    // The admin list does not need to carry secrets either, but the detail must not change.
    let again = app.admin_get("/v1/deployments/hello").json();
    assert_eq!(
        again["signing_secret"].as_str(),
        Some(secret),
        "a read must not rotate the secret"
    );
}

#[test]
fn redeploy_keeps_the_signing_secret() {
    let app = TestApp::start();
    app.deploy_toml("greeter", &greeter_toml("greeter", "Hello"))
        .expect_success();
    let before = app.admin_get("/v1/deployments/greeter").json()["signing_secret"].clone();
    app.deploy_toml("greeter", &greeter_toml("greeter", "Hi"))
        .expect_success();
    let after = app.admin_get("/v1/deployments/greeter").json()["signing_secret"].clone();
    assert!(before.is_string(), "signing_secret missing");
    assert_eq!(
        before, after,
        "a new version must not change the deployment's secret"
    );
}

#[test]
fn delete_removes_the_deployment() {
    let app = TestApp::start();
    app.deploy_toml("greeter", &greeter_toml("greeter", "Hello"))
        .expect_success();
    let r = app.delete("/v1/deployments/greeter", Some(&app.admin_key));
    assert!(r.status == 200 || r.status == 204, "{r}");
    let r = app.invoke(&json!({"deployment": "greeter", "inputs": {"name": "Ada"}}));
    r.expect_error(404, "not_found", Some("Deployment not found."));
    app.admin_get("/v1/deployments/greeter")
        .expect_error(404, "not_found", None);
    let list = app.admin_get("/v1/deployments").json();
    assert!(
        !list.to_string().contains("\"greeter\""),
        "deleted deployment still listed: {list}"
    );
    // Deleting again is a 404.
    let r = app.delete("/v1/deployments/greeter", Some(&app.admin_key));
    r.expect_error(404, "not_found", None);
    // The example is untouched.
    assert_eq!(invoke_output(&app, "hello", None), "Hello, Ada.");
}

#[test]
fn no_examples_starts_without_hello() {
    let app = TestApp::builder().no_examples().start();
    let list = app.admin_get("/v1/deployments");
    list.expect_status(200);
    let list = list.json();
    assert_eq!(
        list["deployments"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
    let r = app.invoke(&hello("Ada"));
    r.expect_error(404, "not_found", Some("Deployment not found."));
}

#[test]
fn workflows_in_the_config_dir_are_deployed_at_start() {
    let app = TestApp::builder()
        .no_examples()
        .file(
            "workflows/greeter.toml",
            &greeter_toml("greeter", "Welcome"),
        )
        .start();
    assert_eq!(invoke_output(&app, "greeter", None), "Welcome, Ada.");
    assert_eq!(
        invoke_output(&app, "greeter", Some("excited")),
        "Welcome, Ada!"
    );
}

#[test]
fn cli_deploy_deploys_through_the_api_and_prints_the_version() {
    let app = TestApp::start();
    let file = app.dir.join("greeter.toml");
    std::fs::write(&file, greeter_toml("greeter", "Ahoy")).unwrap();
    let out = app.cli(&["deploy", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, _) = out_text(&out);
    assert!(
        mentions_number(&stdout, 1),
        "should print version 1: {}",
        describe(&out)
    );
    assert_eq!(invoke_output(&app, "greeter", None), "Ahoy, Ada.");

    std::fs::write(&file, greeter_toml("greeter", "Ahoy there")).unwrap();
    let out = app.cli(&["deploy", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, _) = out_text(&out);
    assert!(
        mentions_number(&stdout, 2),
        "should print version 2: {}",
        describe(&out)
    );
    assert_eq!(latest_version(&app, "greeter"), 2);
    assert_eq!(invoke_output(&app, "greeter", None), "Ahoy there, Ada.");
}

#[test]
fn cli_deploy_of_an_invalid_file_fails_with_the_reason() {
    let app = TestApp::start();
    let file = app.dir.join("broken.toml");
    std::fs::write(
        &file,
        greeter_toml("broken", "Hi").replace("{{ name }}", "{{ name "),
    )
    .unwrap();
    let out = app.cli(&["deploy", file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", describe(&out));
    let (stdout, stderr) = out_text(&out);
    assert!(
        format!("{stdout}{stderr}").contains("greet"),
        "should name the step: {}",
        describe(&out)
    );
    app.admin_get("/v1/deployments/broken").expect_status(404);
}

#[test]
fn deployments_and_runs_survive_a_restart() {
    let mut app = TestApp::start();
    app.deploy_toml("greeter", &greeter_toml("greeter", "Hello"))
        .expect_success();
    app.deploy_toml("greeter", &greeter_toml("greeter", "Hi"))
        .expect_success();
    let r = app.invoke(&json!({"deployment": "greeter", "inputs": {"name": "Ada"}}));
    r.expect_status(200);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let secret = app.admin_get("/v1/deployments/greeter").json()["signing_secret"].clone();
    let admin_key = app.admin_key.clone();

    app.restart();

    assert_eq!(
        app.admin_key, admin_key,
        "admin.key must not change across restarts"
    );
    assert_eq!(latest_version(&app, "greeter"), 2);
    assert_eq!(
        app.admin_get("/v1/deployments/greeter").json()["signing_secret"],
        secret
    );
    assert_eq!(invoke_output(&app, "greeter", None), "Hi, Ada.");
    assert_eq!(
        latest_version(&app, "hello"),
        1,
        "a restart must not redeploy the example"
    );
    let req = app.admin_get(&format!("/v1/public/requests/{id}"));
    req.expect_status(200);
    assert_eq!(req.json()["status"], "completed", "{req}");
}

#[test]
fn deleted_example_stays_deleted_after_restart() {
    let mut app = TestApp::start();
    let r = app.delete("/v1/deployments/hello", Some(&app.admin_key));
    assert!(r.status == 200 || r.status == 204, "{r}");
    app.restart();
    // The example is for a fresh install only.
    let r = app.invoke(&hello("Ada"));
    r.expect_error(404, "not_found", Some("Deployment not found."));
}

#[test]
fn snippet_gives_a_ready_curl_command() {
    let app = TestApp::start();
    let r = app.admin_get("/v1/deployments/hello/snippet?variant=loud");
    r.expect_status(200);
    assert!(r.text.contains("curl"), "{r}");
    assert!(r.text.contains("/v1/workflow/invoke"), "{r}");
    assert!(r.text.contains("loud"), "{r}");
    assert!(
        !r.text.contains("whsec_"),
        "a sync snippet needs no signing secret: {r}"
    );

    let secret = app.admin_get("/v1/deployments/hello").json()["signing_secret"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = app.admin_get(
        "/v1/deployments/hello/snippet?async=true&callback_url=https%3A%2F%2Fexample.com%2Fhook",
    );
    r.expect_status(200);
    assert!(r.text.contains("https://example.com/hook"), "{r}");
    assert!(r.text.contains("callback_url"), "{r}");
    assert!(
        !secret.is_empty() && r.text.contains(&secret),
        "async snippets carry the secret: {r}"
    );
}

#[test]
fn rotating_the_secret_changes_it_and_needs_an_admin() {
    let app = TestApp::start();
    let before = app.admin_get("/v1/deployments/hello").json()["signing_secret"].clone();
    let invoke_key = app.create_key("app", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app.post_json(
        "/v1/deployments/hello/rotate-secret",
        Some(&invoke_key),
        &json!({}),
    );
    r.expect_error(403, "forbidden", None);

    let r = app.post_json(
        "/v1/deployments/hello/rotate-secret",
        Some(&app.admin_key),
        &json!({}),
    );
    r.expect_success();
    let after = app.admin_get("/v1/deployments/hello").json()["signing_secret"].clone();
    assert!(
        after.as_str().unwrap_or_default().starts_with("whsec_"),
        "{after}"
    );
    assert_ne!(before, after, "rotation must produce a new secret");
}
