//! `hivelet service install|uninstall [--user]`: writes and enables the systemd unit (Linux)
//! or the launchd plist (macOS) shipped in `packaging/`, printing every step.
//!
//! The work is a list of [`Step`]s planned first and carried out second, so `--dry-run`
//! prints exactly what would happen (with each file's contents) and `--root DIR` writes the
//! files under DIR without asking the service manager anything (for packaging and tests).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::{ServiceArgs, ServiceCommand, ServiceManager};
use crate::config::Overrides;

const SYSTEM_UNIT: &str = include_str!("../../packaging/systemd/hivelet.service");
const USER_UNIT: &str = include_str!("../../packaging/systemd/hivelet-user.service");
const DAEMON_PLIST: &str = include_str!("../../packaging/launchd/com.hivelet.daemon.plist");
const AGENT_PLIST: &str = include_str!("../../packaging/launchd/com.hivelet.agent.plist");
const EXAMPLE_CONFIG: &str = include_str!("../../packaging/config.example.toml");

/// One thing the installer does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Writes a file (creating its folder), replacing an older one.
    Write {
        path: PathBuf,
        contents: String,
        mode: u32,
    },
    /// Writes a file only if none exists (a configuration the user may have edited).
    WriteIfAbsent {
        path: PathBuf,
        contents: String,
        mode: u32,
    },
    /// Creates a folder with this mode.
    Mkdir { path: PathBuf, mode: u32 },
    /// Removes a file if it exists.
    Remove { path: PathBuf },
    /// Runs a service-manager command.
    Run { program: String, args: Vec<String> },
    /// Something to tell the user at the end.
    Note(String),
}

/// Everything the plan depends on, resolved from the arguments and the environment.
#[derive(Debug, Clone)]
pub struct Target {
    pub manager: ServiceManager,
    pub user: bool,
    /// The binary the service runs.
    pub bin: PathBuf,
    /// `--config` / `--data-dir` given on this command line, passed on to `serve`.
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// The user's home (per-user installs).
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME` or `~/.config` (systemd user units live under it).
    pub xdg_config: PathBuf,
    /// Where `hivelet` looks for `hivelet.toml` by default for this user.
    pub user_config_file: PathBuf,
}

fn this_platform() -> ServiceManager {
    if cfg!(target_os = "macos") {
        ServiceManager::Launchd
    } else {
        ServiceManager::Systemd
    }
}

impl Target {
    pub fn resolve(args: &ServiceArgs, overrides: &Overrides) -> anyhow::Result<Target> {
        let bin = match &args.bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()
                .and_then(|p| p.canonicalize())
                .context("cannot tell where this hivelet binary is; pass --bin PATH")?,
        };
        if !bin.is_absolute() {
            bail!("--bin must be an absolute path, got {}", bin.display());
        }
        let base = directories::BaseDirs::new();
        let home = base
            .as_ref()
            .map(|b| b.home_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from("/root"));
        let xdg_config = base
            .as_ref()
            .map(|b| b.config_dir().to_path_buf())
            .unwrap_or_else(|| home.join(".config"));
        let user_config_file = directories::ProjectDirs::from("", "", "hivelet")
            .map(|p| p.config_dir().join("hivelet.toml"))
            .unwrap_or_else(|| xdg_config.join("hivelet/hivelet.toml"));
        Ok(Target {
            manager: args.manager.unwrap_or_else(this_platform),
            user: args.user,
            bin,
            config: overrides.config_file.clone(),
            data_dir: overrides.data_dir.clone(),
            home,
            xdg_config,
            user_config_file,
        })
    }

    /// `serve`'s arguments before the subcommand: `--config C --data-dir D` when given.
    fn serve_args(&self, default_config: Option<&str>, default_data: Option<&str>) -> Vec<String> {
        let mut args = Vec::new();
        let config = self
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .or(default_config.map(str::to_string));
        if let Some(config) = config {
            args.extend(["--config".to_string(), config]);
        }
        let data = self
            .data_dir
            .as_ref()
            .map(|p| p.display().to_string())
            .or(default_data.map(str::to_string));
        if let Some(data) = data {
            args.extend(["--data-dir".to_string(), data]);
        }
        args.push("serve".into());
        args
    }

    fn unit_path(&self) -> PathBuf {
        if self.user {
            self.xdg_config.join("systemd/user/hivelet.service")
        } else {
            PathBuf::from("/etc/systemd/system/hivelet.service")
        }
    }

    fn plist_path(&self) -> PathBuf {
        if self.user {
            self.home
                .join("Library/LaunchAgents/com.hivelet.agent.plist")
        } else {
            PathBuf::from("/Library/LaunchDaemons/com.hivelet.daemon.plist")
        }
    }

    fn systemctl(&self, args: &[&str]) -> Step {
        let mut all: Vec<String> = Vec::new();
        if self.user {
            all.push("--user".into());
        }
        all.extend(args.iter().map(|a| a.to_string()));
        Step::Run {
            program: "systemctl".into(),
            args: all,
        }
    }
}

/// Quotes one systemd `ExecStart=` argument if it needs it.
fn systemd_quote(arg: &str) -> String {
    if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || "\"'\\;$%".contains(c)) {
        let escaped = arg
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('%', "%%")
            .replace('$', "$$");
        format!("\"{escaped}\"")
    } else {
        arg.to_string()
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The packaged unit with `ExecStart=` naming this binary and its arguments.
pub fn systemd_unit(target: &Target) -> String {
    let template = if target.user { USER_UNIT } else { SYSTEM_UNIT };
    let mut command = vec![systemd_quote(&target.bin.display().to_string())];
    command.extend(
        target
            .serve_args(None, None)
            .iter()
            .map(|a| systemd_quote(a)),
    );
    let exec = format!("ExecStart={}", command.join(" "));
    template
        .lines()
        .map(|line| {
            if line.starts_with("ExecStart=") {
                exec.clone()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The packaged plist with this binary, its arguments and (per user) log paths.
pub fn launchd_plist(target: &Target) -> String {
    let (template, config, data) = if target.user {
        (AGENT_PLIST, None, None)
    } else {
        (
            DAEMON_PLIST,
            Some("/usr/local/etc/hivelet/hivelet.toml"),
            Some("/usr/local/var/hivelet"),
        )
    };
    // Rebuild the ProgramArguments array from the template's indentation.
    let start = template
        .find("<array>")
        .expect("the plist has ProgramArguments");
    let end = template[start..]
        .find("</array>")
        .map(|i| start + i)
        .expect("ProgramArguments ends");
    let mut arguments = vec![target.bin.display().to_string()];
    arguments.extend(target.serve_args(config, data));
    let items: String = arguments
        .iter()
        .map(|a| format!("\n        <string>{}</string>", xml_escape(a)))
        .collect();
    let mut plist = format!(
        "{}<array>{items}\n    {}",
        &template[..start],
        &template[end..]
    );
    if target.user {
        let logs = target.home.join("Library/Logs/hivelet");
        for (from, name) in [
            ("/tmp/hivelet.out.log", "hivelet.out.log"),
            ("/tmp/hivelet.err.log", "hivelet.err.log"),
        ] {
            plist = plist.replace(from, &xml_escape(&logs.join(name).display().to_string()));
        }
    }
    plist
}

/// What `install` does, in order.
pub fn install_plan(target: &Target) -> Vec<Step> {
    match (target.manager, target.user) {
        (ServiceManager::Systemd, false) => vec![
            Step::Write {
                path: target.unit_path(),
                contents: systemd_unit(target),
                mode: 0o644,
            },
            Step::WriteIfAbsent {
                path: target
                    .config
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/etc/hivelet/hivelet.toml")),
                contents: EXAMPLE_CONFIG.to_string(),
                mode: 0o644,
            },
            target.systemctl(&["daemon-reload"]),
            target.systemctl(&["enable", "--now", "hivelet.service"]),
            Step::Note(
                "the first start prints the admin key once: `journalctl -u hivelet`; it is kept in \
                 /var/lib/hivelet/admin.key. Client commands: `sudo hivelet --data-dir /var/lib/hivelet runs list`"
                    .into(),
            ),
        ],
        (ServiceManager::Systemd, true) => vec![
            Step::Write {
                path: target.unit_path(),
                contents: systemd_unit(target),
                mode: 0o644,
            },
            Step::WriteIfAbsent {
                path: target
                    .config
                    .clone()
                    .unwrap_or_else(|| target.user_config_file.clone()),
                contents: EXAMPLE_CONFIG.to_string(),
                mode: 0o600,
            },
            target.systemctl(&["daemon-reload"]),
            target.systemctl(&["enable", "--now", "hivelet.service"]),
            Step::Note(
                "logs: `journalctl --user -u hivelet`; to keep hivelet running while you are logged \
                 out: `loginctl enable-linger $USER`"
                    .into(),
            ),
        ],
        (ServiceManager::Launchd, false) => {
            let plist = target.plist_path();
            vec![
                Step::Mkdir {
                    path: "/usr/local/etc/hivelet".into(),
                    mode: 0o755,
                },
                Step::Mkdir {
                    path: "/usr/local/var/hivelet".into(),
                    mode: 0o700,
                },
                Step::Mkdir {
                    path: "/Library/Logs/hivelet".into(),
                    mode: 0o700,
                },
                Step::WriteIfAbsent {
                    path: target
                        .config
                        .clone()
                        .unwrap_or_else(|| "/usr/local/etc/hivelet/hivelet.toml".into()),
                    contents: EXAMPLE_CONFIG.to_string(),
                    mode: 0o644,
                },
                Step::Write {
                    path: plist.clone(),
                    contents: launchd_plist(target),
                    mode: 0o644,
                },
                Step::Run {
                    program: "launchctl".into(),
                    args: vec!["load".into(), "-w".into(), plist.display().to_string()],
                },
                Step::Note(
                    "the first start prints the admin key once to /Library/Logs/hivelet/hivelet.out.log; \
                     it is kept in /usr/local/var/hivelet/admin.key"
                        .into(),
                ),
            ]
        }
        (ServiceManager::Launchd, true) => {
            let plist = target.plist_path();
            vec![
                Step::Mkdir {
                    path: target.home.join("Library/Logs/hivelet"),
                    mode: 0o700,
                },
                Step::WriteIfAbsent {
                    path: target
                        .config
                        .clone()
                        .unwrap_or_else(|| target.user_config_file.clone()),
                    contents: EXAMPLE_CONFIG.to_string(),
                    mode: 0o600,
                },
                Step::Write {
                    path: plist.clone(),
                    contents: launchd_plist(target),
                    mode: 0o644,
                },
                Step::Run {
                    program: "launchctl".into(),
                    args: vec!["load".into(), "-w".into(), plist.display().to_string()],
                },
                Step::Note(format!(
                    "logs: {}",
                    target.home.join("Library/Logs/hivelet").display()
                )),
            ]
        }
    }
}

/// What `uninstall` does, in order. Configuration and data stay.
pub fn uninstall_plan(target: &Target) -> Vec<Step> {
    let kept = |what: &str| {
        Step::Note(format!(
            "{what} are kept; delete them by hand if you no longer need them"
        ))
    };
    match target.manager {
        ServiceManager::Systemd => vec![
            target.systemctl(&["disable", "--now", "hivelet.service"]),
            Step::Remove {
                path: target.unit_path(),
            },
            target.systemctl(&["daemon-reload"]),
            kept(if target.user {
                "the configuration and the data (~/.config/hivelet, ~/.local/share/hivelet)"
            } else {
                "the configuration (/etc/hivelet) and the data (/var/lib/hivelet)"
            }),
        ],
        ServiceManager::Launchd => {
            let plist = target.plist_path();
            vec![
                Step::Run {
                    program: "launchctl".into(),
                    args: vec!["unload".into(), "-w".into(), plist.display().to_string()],
                },
                Step::Remove { path: plist },
                kept("the configuration, the data and the logs"),
            ]
        }
    }
}

/// `root` + an absolute path.
fn under(root: Option<&Path>, path: &Path) -> PathBuf {
    match root {
        Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| permission_hint(path))?;
    set_mode(path, mode).with_context(|| format!("cannot set the mode of {}", path.display()))
}

fn permission_hint(path: &Path) -> String {
    format!(
        "cannot write {} (a system-wide install needs root: run it with sudo, or use --user)",
        path.display()
    )
}

/// Carries out (or, with `dry_run`, only prints) a plan.
fn execute(steps: &[Step], dry_run: bool, root: Option<&Path>) -> anyhow::Result<()> {
    let total = steps.iter().filter(|s| !matches!(s, Step::Note(_))).count();
    let mut n = 0;
    let mut numbered = |text: String| {
        n += 1;
        println!("[{n}/{total}] {text}");
    };
    for step in steps {
        match step {
            Step::Write {
                path,
                contents,
                mode,
            }
            | Step::WriteIfAbsent {
                path,
                contents,
                mode,
            } => {
                let path = under(root, path);
                let only_if_absent = matches!(step, Step::WriteIfAbsent { .. });
                if only_if_absent && path.exists() {
                    numbered(format!("keep {} (it exists)", path.display()));
                    continue;
                }
                numbered(format!("write {} (mode {mode:04o})", path.display()));
                if dry_run {
                    println!("----- {} -----", path.display());
                    print!("{contents}");
                    if !contents.ends_with('\n') {
                        println!();
                    }
                    println!("----- end -----");
                } else {
                    write_file(&path, contents, *mode)?;
                }
            }
            Step::Mkdir { path, mode } => {
                let path = under(root, path);
                numbered(format!("create {} (mode {mode:04o})", path.display()));
                if !dry_run {
                    std::fs::create_dir_all(&path).with_context(|| permission_hint(&path))?;
                    set_mode(&path, *mode)?;
                }
            }
            Step::Remove { path } => {
                let path = under(root, path);
                numbered(format!("remove {}", path.display()));
                if !dry_run {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            println!("      (it was not there)")
                        }
                        Err(e) => {
                            return Err(e).with_context(|| permission_hint(&path));
                        }
                    }
                }
            }
            Step::Run { program, args } => {
                let line = format!("{program} {}", args.join(" "));
                if root.is_some() {
                    numbered(format!("skip `{line}` (--root: files only)"));
                    continue;
                }
                numbered(format!("run `{line}`"));
                if dry_run {
                    continue;
                }
                let status = Command::new(program).args(args).status().with_context(|| {
                    format!(
                        "cannot run {program}: is it installed (and is this the right platform)?"
                    )
                })?;
                if !status.success() {
                    bail!(
                        "`{line}` failed ({status}); the files above are in place, so you can fix the \
                         cause and run it by hand"
                    );
                }
            }
            Step::Note(text) => println!("note: {text}"),
        }
    }
    Ok(())
}

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
    execute(&plan, args.dry_run, args.root.as_deref())?;
    if !args.dry_run {
        println!("done");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(manager: ServiceManager, user: bool) -> Target {
        Target {
            manager,
            user,
            bin: PathBuf::from("/opt/hive let/bin/hivelet"),
            config: None,
            data_dir: None,
            home: PathBuf::from("/home/ada"),
            xdg_config: PathBuf::from("/home/ada/.config"),
            user_config_file: PathBuf::from("/home/ada/.config/hivelet/hivelet.toml"),
        }
    }

    #[test]
    fn the_unit_runs_this_binary_quoted() {
        let unit = systemd_unit(&target(ServiceManager::Systemd, false));
        assert!(
            unit.contains("\nExecStart=\"/opt/hive let/bin/hivelet\" serve\n"),
            "{unit}"
        );
        assert!(unit.contains("Type=notify"));
        assert!(unit.contains("StateDirectory=hivelet"));
        let user = systemd_unit(&target(ServiceManager::Systemd, true));
        assert!(user.contains("WantedBy=default.target"));
        assert!(
            !user.contains("StateDirectory"),
            "a user unit keeps the CLI's default paths"
        );
    }

    #[test]
    fn explicit_paths_are_passed_to_serve() {
        let mut t = target(ServiceManager::Systemd, true);
        t.config = Some("/srv/h/hivelet.toml".into());
        t.data_dir = Some("/srv/h/data".into());
        assert!(systemd_unit(&t).contains(
            "ExecStart=\"/opt/hive let/bin/hivelet\" --config /srv/h/hivelet.toml --data-dir /srv/h/data serve"
        ));
    }

    #[test]
    fn plists_name_the_binary_and_user_log_paths() {
        let agent = launchd_plist(&target(ServiceManager::Launchd, true));
        assert!(
            agent.contains(
                "<string>/opt/hive let/bin/hivelet</string>\n        <string>serve</string>"
            ),
            "{agent}"
        );
        assert!(agent.contains("/home/ada/Library/Logs/hivelet/hivelet.err.log"));
        assert!(!agent.contains("/tmp/"));
        let daemon = launchd_plist(&target(ServiceManager::Launchd, false));
        assert!(daemon.contains("<string>--data-dir</string>\n        <string>/usr/local/var/hivelet</string>\n        <string>serve</string>"), "{daemon}");
    }

    #[test]
    fn install_and_uninstall_plans_use_the_right_manager() {
        let system = install_plan(&target(ServiceManager::Systemd, false));
        assert!(system.contains(&Step::Run {
            program: "systemctl".into(),
            args: vec!["enable".into(), "--now".into(), "hivelet.service".into()]
        }));
        let user = uninstall_plan(&target(ServiceManager::Systemd, true));
        assert_eq!(
            user[0],
            Step::Run {
                program: "systemctl".into(),
                args: vec![
                    "--user".into(),
                    "disable".into(),
                    "--now".into(),
                    "hivelet.service".into()
                ]
            }
        );
        assert!(user.contains(&Step::Remove {
            path: "/home/ada/.config/systemd/user/hivelet.service".into()
        }));
    }
}
