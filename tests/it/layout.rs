//! The shape of the source tree that the architecture promises (issue 11): inside
//! `src/actors` and `src/api`, no module imports a module that imports it back, so each layer
//! reads top-down. `tests/python/module_cycles.py` walks the `crate::`/`super::` paths.

use std::process::Command;

use crate::support::*;

#[test]
fn actors_and_api_modules_do_not_import_each_other_back() {
    let out = Command::new("python3")
        .arg(repo_path("tests/python/module_cycles.py"))
        .arg(repo_path("."))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "modules that import each other:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
