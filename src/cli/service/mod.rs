//! `hivelet service install|uninstall [--user]`: writes and enables the systemd unit (Linux)
//! or the launchd plist (macOS) shipped in `packaging/`, printing every step.
//!
//! The work is a list of [`Step`]s planned first (`plan.rs`, from a resolved [`Target`]) and
//! carried out second (`execute.rs`), so `--dry-run` prints exactly what would happen (with
//! each file's contents) and `--root DIR` writes the files under DIR without asking the
//! service manager anything (for packaging and tests). The file contents come from the
//! packaged templates (`render.rs`).

mod execute;
mod plan;
mod render;

pub use plan::{install_plan, uninstall_plan, Step, Target};
pub use render::{launchd_plist, systemd_unit};

use super::{ServiceCommand, ServiceManager};
use crate::config::Overrides;

/// Resolves the target, plans, and carries out (or prints) `service install|uninstall`.
pub fn run(cmd: ServiceCommand, overrides: &Overrides) -> anyhow::Result<u8> {
    let (args, install) = match cmd {
        ServiceCommand::Install(args) => (args, true),
        ServiceCommand::Uninstall(args) => (args, false),
    };
    let target = Target::resolve(&args, overrides)?;
    let plan = if install {
        install_plan(&target)
    } else {
        uninstall_plan(&target)
    };
    let what = match (target.manager, target.user) {
        (ServiceManager::Systemd, false) => "systemd system service",
        (ServiceManager::Systemd, true) => "systemd user service",
        (ServiceManager::Launchd, false) => "launchd daemon",
        (ServiceManager::Launchd, true) => "launchd agent",
    };
    let verb = if install {
        "installing"
    } else {
        "uninstalling"
    };
    let mode = match (args.dry_run, &args.root) {
        (true, _) => " (dry run: nothing is changed)".to_string(),
        (false, Some(root)) => format!(" (files under {})", root.display()),
        (false, None) => String::new(),
    };
    println!("{verb} hivelet as a {what}{mode}");
    execute::execute(&plan, args.dry_run, args.root.as_deref())?;
    if !args.dry_run {
        println!("done");
    }
    Ok(0)
}
