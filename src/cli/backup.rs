//! `hivelet backup FILE`: a consistent copy of the database with SQLite's `VACUUM INTO`,
//! taken straight from the data dir. It is safe while the daemon serves: the copy is one
//! read transaction (WAL lets the writer go on meanwhile) and needs no daemon at all.

use std::path::Path;

use anyhow::{bail, Context};

use crate::config::Config;

pub fn run(config: &Config, file: &Path) -> anyhow::Result<u8> {
    let db = config.paths.database();
    if !db.exists() {
        bail!(
            "there is no database at {} (is --data-dir right?)",
            db.display()
        );
    }
    if std::fs::metadata(file).is_ok_and(|m| m.len() > 0) {
        bail!(
            "{} already exists; a backup never overwrites a file, so choose a new name",
            file.display()
        );
    }
    // The copy holds everything the daemon stores, signing secrets included: owner only.
    crate::write_private_file(file, "")
        .with_context(|| format!("cannot create {}", file.display()))?;
    let copied = crate::store::backup(&db, file);
    if copied.is_err() {
        let _ = std::fs::remove_file(file);
    }
    let runs = copied?;
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!(
        "backed up {} to {} ({runs} runs, {})",
        db.display(),
        file.display(),
        bytesize::ByteSize(bytes).to_string_as(true)
    );
    Ok(0)
}
