//! The files a service install writes: the packaged systemd unit and launchd plists with
//! this binary and its arguments filled in, quoted for systemd's `ExecStart=` or escaped for
//! XML.

use super::plan::Target;

const SYSTEM_UNIT: &str = include_str!("../../../packaging/systemd/hivelet.service");
const USER_UNIT: &str = include_str!("../../../packaging/systemd/hivelet-user.service");
const DAEMON_PLIST: &str = include_str!("../../../packaging/launchd/com.hivelet.daemon.plist");
const AGENT_PLIST: &str = include_str!("../../../packaging/launchd/com.hivelet.agent.plist");

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::service::plan::tests::target;
    use crate::cli::ServiceManager;

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
}
