//! Carrying out a plan: file writes with their modes (under `--root` when given) and the
//! service-manager commands (`systemctl`, `launchctl`), each step numbered as it runs. With
//! `--dry-run` every step is printed and nothing is changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::plan::Step;

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
pub(super) fn execute(steps: &[Step], dry_run: bool, root: Option<&Path>) -> anyhow::Result<()> {
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
                            println!("      (it was not there)");
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
