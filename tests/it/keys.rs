//! SPEC §6 API keys: create (shown once), list (masked, last used), rotate, revoke, roles;
//! and `hivelet keys create|list|rotate|revoke`.

use serde_json::{json, Value};

use crate::support::*;

/// The key entries of `GET /v1/keys` (`{"keys": [...]}` or a bare array).
fn list_keys(app: &TestApp) -> (Resp, Vec<Value>) {
    let r = app.admin_get("/v1/keys");
    r.expect_status(200);
    let body = r.json();
    let list = body
        .get("keys")
        .unwrap_or(&body)
        .as_array()
        .unwrap_or_else(|| panic!("GET /v1/keys: expected a list of keys: {body}"))
        .clone();
    (r, list)
}

fn find_key(list: &[Value], id: &str) -> Option<Value> {
    list.iter().find(|k| k["id"] == id).cloned()
}

#[test]
fn created_invoke_key_is_shown_once_and_can_invoke() {
    let app = TestApp::start();
    let r = app.post_json(
        "/v1/keys",
        Some(&app.admin_key),
        &json!({"name": "app", "role": "invoke"}),
    );
    r.expect_status(201);
    let created = r.json();
    let id = created["id"].as_str().unwrap_or_default();
    let key = created["key"].as_str().unwrap_or_default();
    assert!(id.starts_with("key_"), "{created}");
    assert!(key.starts_with("hvk_") && key.len() > 20, "{created}");
    assert_eq!(created["name"], "app");
    assert_eq!(created["role"], "invoke");

    let r = app.invoke_with_key(key, &hello("Ada"));
    r.expect_status(200);
    assert_eq!(r.json()["output"], "Hello, Ada.");

    // Shown once: no later read carries it.
    let (listing, list) = list_keys(&app);
    assert!(
        !listing.text.contains(key),
        "the list shows a full key: {listing}"
    );
    assert!(
        !listing.text.contains(&app.admin_key),
        "the list shows the admin key: {listing}"
    );
    let entry = find_key(&list, id).unwrap_or_else(|| panic!("key {id} not listed: {listing}"));
    assert_eq!(entry["name"], "app", "{entry}");
    assert_eq!(entry["role"], "invoke", "{entry}");
}

#[test]
fn listed_keys_show_when_they_were_last_used() {
    let app = TestApp::start();
    let created = app.create_key("app", "invoke");
    let id = created["id"].as_str().unwrap().to_string();
    let key = created["key"].as_str().unwrap().to_string();
    let (_, list) = list_keys(&app);
    let entry = find_key(&list, &id).expect("listed");
    assert!(
        entry.get("last_used_at").is_some(),
        "last_used_at field missing: {entry}"
    );
    assert!(
        entry["last_used_at"].is_null(),
        "an unused key has no last use: {entry}"
    );

    app.invoke_with_key(&key, &hello("Ada")).expect_status(200);
    wait_for("last_used_at to be set", || {
        let (_, list) = list_keys(&app);
        let entry = find_key(&list, &id)?;
        (!entry["last_used_at"].is_null()).then_some(())
    });
}

#[test]
fn invoke_keys_are_forbidden_on_admin_routes() {
    let app = TestApp::start();
    let key = app.create_key("app", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let definition = "key = \"x\"\n[[steps]]\nid = \"s\"\ntype = \"template\"\ntemplate = \"x\"\n[output]\ntemplate = \"x\"\n";

    let attempts = [
        app.post_json(
            "/v1/keys",
            Some(&key),
            &json!({"name": "sneaky", "role": "admin"}),
        ),
        app.get("/v1/keys", Some(&key)),
        app.put(
            "/v1/deployments/x",
            Some(&key),
            "application/toml",
            definition,
        ),
        app.delete("/v1/deployments/hello", Some(&key)),
    ];
    for r in attempts {
        r.expect_error(403, "forbidden", None);
    }
    // Nothing happened.
    app.admin_get("/v1/deployments/x").expect_status(404);
    app.invoke(&hello("Ada")).expect_status(200);
    let (_, list) = list_keys(&app);
    assert!(!list.iter().any(|k| k["name"] == "sneaky"), "{list:?}");
}

#[test]
fn admin_keys_created_through_the_api_can_administer() {
    let app = TestApp::start();
    let admin2 = app.create_key("ops", "admin")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app.post_json(
        "/v1/keys",
        Some(&admin2),
        &json!({"name": "by-ops", "role": "invoke"}),
    );
    r.expect_status(201);
}

#[test]
fn bad_key_requests_are_422() {
    let app = TestApp::start();
    for body in [
        json!({"name": "x", "role": "root"}),
        json!({"role": "invoke"}),
        json!({"name": "", "role": "invoke"}),
    ] {
        let r = app.post_json("/v1/keys", Some(&app.admin_key), &body);
        assert_eq!(r.status, 422, "{body} → {r}");
        r.expect_error(422, "validation_error", None);
    }
}

#[test]
fn rotating_a_key_replaces_it() {
    let app = TestApp::start();
    let created = app.create_key("app", "invoke");
    let id = created["id"].as_str().unwrap();
    let old = created["key"].as_str().unwrap();

    let r = app.post_json(
        &format!("/v1/keys/{id}/rotate"),
        Some(&app.admin_key),
        &json!({}),
    );
    r.expect_success();
    let rotated = r.json();
    let new = rotated["key"]
        .as_str()
        .unwrap_or_else(|| panic!("rotate must return the new key: {rotated}"));
    assert!(new.starts_with("hvk_"), "{rotated}");
    assert_ne!(new, old);

    app.invoke_with_key(new, &hello("Ada")).expect_status(200);
    app.invoke_with_key(old, &hello("Ada")).expect_error(
        401,
        "unauthorized",
        Some("Invalid access."),
    );
}

#[test]
fn revoked_key_gets_401() {
    let app = TestApp::start();
    let created = app.create_key("app", "invoke");
    let id = created["id"].as_str().unwrap();
    let key = created["key"].as_str().unwrap();
    app.invoke_with_key(key, &hello("Ada")).expect_status(200);

    let r = app.delete(&format!("/v1/keys/{id}"), Some(&app.admin_key));
    assert!(r.status == 200 || r.status == 204, "{r}");
    let r = app.invoke_with_key(key, &hello("Ada"));
    r.expect_status(401);
    assert_eq!(
        r.json(),
        json!({"error": "Invalid access.", "message": "Invalid access.", "error_code": "unauthorized"})
    );
    // Other keys are unaffected.
    app.invoke(&hello("Ada")).expect_status(200);
}

#[test]
fn unknown_key_ids_are_404() {
    let app = TestApp::start();
    let r = app.post_json(
        "/v1/keys/key_doesnotexist/rotate",
        Some(&app.admin_key),
        &json!({}),
    );
    r.expect_error(404, "not_found", None);
    let r = app.delete("/v1/keys/key_doesnotexist", Some(&app.admin_key));
    r.expect_error(404, "not_found", None);
}

#[test]
fn invoke_keys_read_only_the_runs_they_started() {
    let app = TestApp::start();
    let mine = app.create_key("mine", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let theirs = app.create_key("theirs", "invoke")["key"]
        .as_str()
        .unwrap()
        .to_string();

    let own = app.invoke_with_key(&mine, &hello("Mine")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = app.invoke_with_key(&theirs, &hello("Theirs")).json()["request_id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = app.get(&format!("/v1/public/requests/{own}"), Some(&mine));
    r.expect_status(200);
    assert_eq!(r.json()["request_id"], own.as_str());

    let r = app.get(&format!("/v1/public/requests/{other}"), Some(&mine));
    assert!(
        r.status == 404 || r.status == 403,
        "another key's run must not be readable: {r}"
    );
    assert!(
        !r.text.contains("Hello, Theirs."),
        "another key's output leaked: {r}"
    );

    // Admins read everything.
    app.admin_get(&format!("/v1/public/requests/{other}"))
        .expect_status(200);
}

/// The first `hvk_…` token in `text`.
fn key_in(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .find(|t| t.starts_with("hvk_"))
        .map(str::to_string)
}

#[test]
fn cli_manages_keys() {
    let app = TestApp::start();
    let out = app.cli(&["keys", "create", "--name", "cli-app", "--role", "invoke"]);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, _) = out_text(&out);
    let key = key_in(&stdout)
        .unwrap_or_else(|| panic!("keys create must print the key: {}", describe(&out)));
    assert_ne!(key, app.admin_key);
    app.invoke_with_key(&key, &hello("Ada")).expect_status(200);

    let (_, list) = list_keys(&app);
    let id = list
        .iter()
        .find(|k| k["name"] == "cli-app")
        .and_then(|k| k["id"].as_str())
        .unwrap_or_else(|| panic!("cli-app not listed: {list:?}"))
        .to_string();

    let out = app.cli(&["keys", "list"]);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, _) = out_text(&out);
    assert!(
        stdout.contains("cli-app") && stdout.contains(&id),
        "{}",
        describe(&out)
    );
    assert!(
        !stdout.contains(&key),
        "keys list printed a full key: {}",
        describe(&out)
    );

    let out = app.cli(&["keys", "rotate", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, _) = out_text(&out);
    let new_key = key_in(&stdout)
        .unwrap_or_else(|| panic!("keys rotate must print the new key: {}", describe(&out)));
    assert_ne!(new_key, key);
    app.invoke_with_key(&new_key, &hello("Ada"))
        .expect_status(200);
    app.invoke_with_key(&key, &hello("Ada")).expect_status(401);

    let out = app.cli(&["keys", "revoke", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    app.invoke_with_key(&new_key, &hello("Ada")).expect_error(
        401,
        "unauthorized",
        Some("Invalid access."),
    );
}

/// The id of the key named `name`.
fn key_id(app: &TestApp, name: &str) -> String {
    let (_, list) = list_keys(app);
    list.iter()
        .find(|k| k["name"] == name)
        .and_then(|k| k["id"].as_str())
        .unwrap_or_else(|| panic!("no key named {name}: {list:?}"))
        .to_string()
}

#[test]
fn the_last_admin_key_cannot_be_revoked() {
    let app = TestApp::start();
    let first = key_id(&app, "admin");
    let err = app
        .delete(&format!("/v1/keys/{first}"), Some(&app.admin_key))
        .expect_error(409, "conflict", None);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("This is the last admin key; create another admin key before revoking it."),
        "{err}"
    );
    // Refused means untouched: the key still administers.
    app.get("/v1/keys", Some(&app.admin_key)).expect_status(200);
    let (_, list) = list_keys(&app);
    assert_eq!(find_key(&list, &first).unwrap()["revoked"], false);

    // With a second admin key the first can go; then the second is the last one.
    let second = app.create_key("second-admin", "admin");
    let second_key = second["key"].as_str().unwrap();
    let second_id = second["id"].as_str().unwrap();
    app.delete(&format!("/v1/keys/{first}"), Some(second_key))
        .expect_status(200);
    app.get("/v1/keys", Some(&app.admin_key)).expect_status(401);
    app.delete(&format!("/v1/keys/{second_id}"), Some(second_key))
        .expect_error(409, "conflict", None);
    app.get("/v1/keys", Some(second_key)).expect_status(200);
    // Invoke keys never count: revoking them is always allowed.
    let created = app.post_json(
        "/v1/keys",
        Some(second_key),
        &json!({"name": "app", "role": "invoke"}),
    );
    created.expect_status(201);
    let invoke_id = created.json()["id"].as_str().unwrap().to_string();
    app.delete(&format!("/v1/keys/{invoke_id}"), Some(second_key))
        .expect_status(200);
}

#[test]
fn rotating_the_key_in_admin_key_rewrites_the_file_and_the_cli_keeps_working() {
    let app = TestApp::start();
    let path = app.data_dir.join("admin.key");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        app.admin_key
    );
    let id = key_id(&app, "admin");
    let r = app.post_json(
        &format!("/v1/keys/{id}/rotate"),
        Some(&app.admin_key),
        &json!({}),
    );
    r.expect_status(200);
    let new_key = r.json()["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, app.admin_key);
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), new_key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "admin.key mode {mode:o}");
    }
    app.get("/v1/keys", Some(&app.admin_key)).expect_status(401);
    app.get("/v1/keys", Some(&new_key)).expect_status(200);
    // The CLI reads the file, so it holds the live key.
    let out = app.cli(&["keys", "list"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(out_text(&out).0.contains(&id), "{}", describe(&out));

    // Rotating another admin key leaves the file alone.
    let other = app.post_json(
        "/v1/keys",
        Some(&new_key),
        &json!({"name": "other-admin", "role": "admin"}),
    );
    other.expect_status(201);
    let other_id = other.json()["id"].as_str().unwrap().to_string();
    app.post_json(
        &format!("/v1/keys/{other_id}/rotate"),
        Some(&new_key),
        &json!({}),
    )
    .expect_status(200);
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), new_key);
}

#[test]
fn rotation_with_expires_in_keeps_the_old_secret_until_then() {
    let mut app = TestApp::start();
    let created = app.create_key("app", "invoke");
    let id = created["id"].as_str().unwrap().to_string();
    let first = created["key"].as_str().unwrap().to_string();

    // An hour of overlap: both secrets work, across a restart too.
    let r = app.post_json(
        &format!("/v1/keys/{id}/rotate"),
        Some(&app.admin_key),
        &json!({"expires_in": 3600}),
    );
    r.expect_status(200);
    let body = r.json();
    assert!(
        body["previous_key_valid_until"].is_string(),
        "the overlap's end is answered: {body}"
    );
    let second = body["key"].as_str().unwrap().to_string();
    app.invoke_with_key(&first, &hello("Ada"))
        .expect_status(200);
    app.invoke_with_key(&second, &hello("Ada"))
        .expect_status(200);
    app.restart();
    app.invoke_with_key(&first, &hello("Ada"))
        .expect_status(200);
    app.invoke_with_key(&second, &hello("Ada"))
        .expect_status(200);

    // A second rotation replaces the overlap: the first secret is gone at once, the second
    // one lasts a second more.
    let r = app.post_json(
        &format!("/v1/keys/{id}/rotate"),
        Some(&app.admin_key),
        &json!({"expires_in": 1}),
    );
    r.expect_status(200);
    let third = r.json()["key"].as_str().unwrap().to_string();
    app.invoke_with_key(&first, &hello("Ada")).expect_error(
        401,
        "unauthorized",
        Some("Invalid access."),
    );
    wait_for("the second secret to expire", || {
        (app.invoke_with_key(&second, &hello("Ada")).status == 401).then_some(())
    });
    app.invoke_with_key(&third, &hello("Ada"))
        .expect_status(200);

    // Without expires_in (or 0) the old secret stops at once, as before.
    let r = app.post_json(
        &format!("/v1/keys/{id}/rotate"),
        Some(&app.admin_key),
        &json!({"expires_in": 0}),
    );
    r.expect_status(200);
    assert!(r.json().get("previous_key_valid_until").is_none(), "{r}");
    app.invoke_with_key(&third, &hello("Ada"))
        .expect_status(401);

    // No body at all is a rotation without overlap too.
    let r = app.request(
        "POST",
        &format!("/v1/keys/{id}/rotate"),
        Some(&app.admin_key),
        &[],
        None,
    );
    r.expect_status(200);
    let fifth = r.json()["key"].as_str().unwrap().to_string();
    app.invoke_with_key(&fifth, &hello("Ada"))
        .expect_status(200);

    for bad in [json!(-1), json!(604801), json!("60"), json!(1.5)] {
        let err = app
            .post_json(
                &format!("/v1/keys/{id}/rotate"),
                Some(&app.admin_key),
                &json!({ "expires_in": bad }),
            )
            .expect_error(422, "validation_error", None);
        assert_eq!(err["field"], "expires_in", "{bad}: {err}");
    }
}

#[test]
fn two_admin_keys_revoking_each_other_at_once_leave_one() {
    let app = TestApp::start();
    // Rounds of two admins revoking each other concurrently: the check is inside the write,
    // so exactly one revoke wins each time and an admin key always survives.
    let mut survivor = (key_id(&app, "admin"), app.admin_key.clone());
    for round in 0..5 {
        let other = app.post_json(
            "/v1/keys",
            Some(&survivor.1),
            &json!({"name": format!("admin-{round}"), "role": "admin"}),
        );
        other.expect_status(201);
        let other = other.json();
        let other = (
            other["id"].as_str().unwrap().to_string(),
            other["key"].as_str().unwrap().to_string(),
        );
        // Each revokes the other with its own key.
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let pairs = [(&survivor, &other), (&other, &survivor)];
            let handles: Vec<_> = pairs
                .iter()
                .map(|(me, them)| {
                    let url = app.url(&format!("/v1/keys/{}", them.0));
                    let auth = format!("Bearer {}", me.1);
                    s.spawn(move || send("DELETE", &url, &[("Authorization", &auth)], None).status)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = statuses.clone();
        sorted.sort();
        // Both authenticated: the second revoke finds the last admin key (409). Or the second
        // request came after its own key was revoked (401). Never both revoked.
        assert!(
            sorted == [200, 409] || sorted == [200, 401],
            "round {round}: {statuses:?}"
        );
        let alive: Vec<_> = [&survivor, &other]
            .into_iter()
            .filter(|k| app.get("/v1/keys", Some(&k.1)).status == 200)
            .cloned()
            .collect();
        assert_eq!(
            alive.len(),
            1,
            "round {round}: exactly one admin key is left"
        );
        survivor = alive.into_iter().next().unwrap();
    }
}
