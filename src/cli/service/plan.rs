//! What installing or uninstalling does, as data: the [`Target`] (which manager, system or
//! user, which binary and paths) resolved once from the arguments and the environment, and
//! the ordered [`Step`]s for it. Nothing here touches the system.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::render::{launchd_plist, systemd_unit};
use crate::cli::{ServiceArgs, ServiceManager};
use crate::config::Overrides;

const EXAMPLE_CONFIG: &str = include_str!("../../../packaging/config.example.toml");

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
    pub(super) fn serve_args(
        &self,
        default_config: Option<&str>,
        default_data: Option<&str>,
    ) -> Vec<String> {
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
        all.extend(args.iter().map(|a| (*a).to_string()));
        Step::Run {
            program: "systemctl".into(),
            args: all,
        }
    }
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::cli::service) fn target(manager: ServiceManager, user: bool) -> Target {
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
