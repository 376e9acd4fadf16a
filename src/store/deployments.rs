//! Deployments and their immutable versions.

use rusqlite::{Connection, OptionalExtension};

/// A deploy: a validated definition (as JSON) for `key`.
#[derive(Debug, Clone)]
pub struct NewDeploymentVersion {
    pub key: String,
    pub description: Option<String>,
    pub definition_json: String,
    /// Used only when the deployment is new; an existing one keeps its secret.
    pub new_deployment_id: String,
    pub new_signing_secret: String,
    pub at: i64,
}

/// A deployment with its current definition.
#[derive(Clone)]
pub struct DeploymentRecord {
    pub key: String,
    pub id: String,
    pub description: Option<String>,
    pub version: i64,
    pub definition_json: String,
    pub signing_secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

// Signing secrets must never reach a log through `{:?}`.
impl std::fmt::Debug for DeploymentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentRecord")
            .field("key", &self.key)
            .field("version", &self.version)
            .field("signing_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What a deploy stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployed {
    /// The version it created.
    pub version: i64,
    /// Whether the deployment is new (it got the command's id and signing secret).
    pub created: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionInfo {
    pub version: i64,
    pub created_at: i64,
}

pub(super) fn put(conn: &Connection, dep: &NewDeploymentVersion) -> rusqlite::Result<Deployed> {
    let existing: Option<i64> = conn
        .prepare_cached("SELECT current_version FROM deployments WHERE key = ?1")?
        .query_row([&dep.key], |row| row.get(0))
        .optional()?;
    let (version, created) = match existing {
        Some(current) => {
            let version = current + 1;
            conn.prepare_cached(
                "UPDATE deployments SET current_version = ?2, description = ?3, updated_at = ?4 WHERE key = ?1",
            )?
            .execute((&dep.key, version, &dep.description, dep.at))?;
            (version, false)
        }
        None => {
            // A deleted deployment's versions are gone with it, so numbering restarts at 1.
            conn.prepare_cached(
                "INSERT INTO deployments (key, id, description, current_version, signing_secret, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5)",
            )?
            .execute((&dep.key, &dep.new_deployment_id, &dep.description, &dep.new_signing_secret, dep.at))?;
            (1, true)
        }
    };
    conn.prepare_cached(
        "INSERT INTO deployment_versions (deployment_key, version, definition, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((&dep.key, version, &dep.definition_json, dep.at))?;
    Ok(Deployed { version, created })
}

pub(super) fn rotate_secret(
    conn: &Connection,
    key: &str,
    new_secret: &str,
    previous_until: i64,
) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE deployments SET previous_secret = signing_secret, previous_secret_until = ?3,
                 signing_secret = ?2, updated_at = ?4
             WHERE key = ?1",
        )?
        .execute((key, new_secret, previous_until, crate::ids::now_ms()))?
        == 1)
}

pub(super) fn delete(conn: &Connection, key: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM deployments WHERE key = ?1")?
        .execute([key])?
        == 1)
}

/// Every deployment with its current definition.
pub(super) fn load_all(conn: &Connection) -> rusqlite::Result<Vec<DeploymentRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.key, d.id, d.description, d.current_version, v.definition, d.signing_secret,
                d.previous_secret, d.previous_secret_until, d.created_at, d.updated_at
         FROM deployments d
         JOIN deployment_versions v ON v.deployment_key = d.key AND v.version = d.current_version
         ORDER BY d.key",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(DeploymentRecord {
            key: row.get(0)?,
            id: row.get(1)?,
            description: row.get(2)?,
            version: row.get(3)?,
            definition_json: row.get(4)?,
            signing_secret: row.get(5)?,
            previous_secret: row.get(6)?,
            previous_secret_until: row.get(7)?,
            created_at: row.get(8)?,
            updated_at: row.get(9)?,
        })
    })?;
    rows.collect()
}

pub(super) fn versions(conn: &Connection, key: &str) -> rusqlite::Result<Vec<VersionInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT version, created_at FROM deployment_versions WHERE deployment_key = ?1 ORDER BY version",
    )?;
    let rows = stmt.query_map([key], |row| {
        Ok(VersionInfo {
            version: row.get(0)?,
            created_at: row.get(1)?,
        })
    })?;
    rows.collect()
}

/// The definition a given version ran with.
pub(super) fn definition_at(
    conn: &Connection,
    key: &str,
    version: i64,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT definition FROM deployment_versions WHERE deployment_key = ?1 AND version = ?2",
    )?
    .query_row((key, version), |row| row.get(0))
    .optional()
}
