//! The live deployments, kept in memory so an invoke never reads the database to find its
//! workflow. The store is the record; this map mirrors its current versions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::config::Config;
use crate::ids;
use crate::store::{
    DeleteDeployment, Deployed, NewDeploymentVersion, PutDeployment, RotateSecret, Store,
    StoreError,
};
use crate::workflow::{Definition, DefinitionError, ValidateOptions};

/// The example a fresh install deploys.
pub const HELLO_EXAMPLE: &str = include_str!("../packaging/workflows/hello.toml");

/// One deployment at its current version.
pub struct LiveDeployment {
    pub key: String,
    pub id: String,
    pub version: i64,
    pub definition: Arc<Definition>,
    pub signing_secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for LiveDeployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveDeployment")
            .field("key", &self.key)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl LiveDeployment {
    /// The secrets that sign and authenticate now: the current one, then a rotated-out one
    /// still inside its overlap.
    pub fn valid_secrets(&self, now_ms: i64) -> Vec<&str> {
        let mut secrets = vec![self.signing_secret.as_str()];
        if let (Some(prev), Some(until)) = (&self.previous_secret, self.previous_secret_until) {
            if until > now_ms {
                secrets.push(prev);
            }
        }
        secrets
    }

    /// The variables of a variant, if it exists.
    pub fn vars(&self, variant: &str) -> Option<&Map<String, Value>> {
        self.definition.variants.get(variant).map(|v| &v.vars)
    }

    fn from_record(
        record: crate::store::DeploymentRecord,
    ) -> Result<LiveDeployment, DefinitionError> {
        let definition = Definition::from_json_str(&record.definition_json)?;
        Ok(LiveDeployment {
            key: record.key,
            id: record.id,
            version: record.version,
            definition: Arc::new(definition),
            signing_secret: record.signing_secret,
            previous_secret: record.previous_secret,
            previous_secret_until: record.previous_secret_until,
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Invalid(#[from] DefinitionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The in-memory map of live deployments.
#[derive(Default)]
pub struct Deployments {
    live: RwLock<HashMap<String, Arc<LiveDeployment>>>,
}

impl Deployments {
    /// Loads every deployment's current version from the store.
    pub fn load(store: &Store) -> Result<Deployments, StoreError> {
        let records = store.deployments_blocking()?;
        let mut live = HashMap::with_capacity(records.len());
        for record in records {
            let key = record.key.clone();
            match LiveDeployment::from_record(record) {
                Ok(dep) => {
                    live.insert(key, Arc::new(dep));
                }
                Err(err) => {
                    tracing::error!(deployment = %key, %err, "stored definition no longer parses; skipped");
                }
            }
        }
        Ok(Deployments {
            live: RwLock::new(live),
        })
    }

    pub fn get(&self, key: &str) -> Option<Arc<LiveDeployment>> {
        self.live
            .read()
            .expect("deployments lock")
            .get(key)
            .cloned()
    }

    /// The deployment as it was at `version` (the live one when that is current).
    pub fn at_version(
        &self,
        store: &Store,
        key: &str,
        version: i64,
    ) -> Option<Arc<LiveDeployment>> {
        let live = self.get(key)?;
        if live.version == version {
            return Some(live);
        }
        let text = store.definition_at_blocking(key, version).ok().flatten()?;
        let definition = Definition::from_json_str(&text).ok()?;
        Some(Arc::new(LiveDeployment {
            key: live.key.clone(),
            id: live.id.clone(),
            version,
            definition: Arc::new(definition),
            signing_secret: live.signing_secret.clone(),
            previous_secret: live.previous_secret.clone(),
            previous_secret_until: live.previous_secret_until,
            created_at: live.created_at,
            updated_at: live.updated_at,
        }))
    }

    /// All live deployments, sorted by key.
    pub fn all(&self) -> Vec<Arc<LiveDeployment>> {
        let mut all: Vec<_> = self
            .live
            .read()
            .expect("deployments lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Stores a validated definition as a new version and makes it live.
    pub async fn deploy(
        &self,
        store: &Store,
        definition: Definition,
    ) -> Result<(Arc<LiveDeployment>, bool), DeployError> {
        let now = ids::now_ms();
        let cmd = NewDeploymentVersion {
            key: definition.key.clone(),
            description: definition.description.clone(),
            definition_json: serde_json::to_string(&definition).expect("definitions serialize"),
            new_deployment_id: ids::deployment_id(),
            new_signing_secret: ids::signing_secret(),
            at: now,
        };
        let (id, secret) = (
            cmd.new_deployment_id.clone(),
            cmd.new_signing_secret.clone(),
        );
        let Deployed { version, created } = store.write(PutDeployment(cmd)).await?;
        let mut live = self.live.write().expect("deployments lock");
        let previous = live.get(&definition.key).cloned();
        let dep = match previous.filter(|_| !created) {
            Some(prev) if prev.version > version => return Ok((prev, false)), // a newer deploy won
            Some(prev) => LiveDeployment {
                key: definition.key.clone(),
                id: prev.id.clone(),
                version,
                definition: Arc::new(definition),
                signing_secret: prev.signing_secret.clone(),
                previous_secret: prev.previous_secret.clone(),
                previous_secret_until: prev.previous_secret_until,
                created_at: prev.created_at,
                updated_at: now,
            },
            None => LiveDeployment {
                key: definition.key.clone(),
                id,
                version,
                definition: Arc::new(definition),
                signing_secret: secret,
                previous_secret: None,
                previous_secret_until: None,
                created_at: now,
                updated_at: now,
            },
        };
        let dep = Arc::new(dep);
        live.insert(dep.key.clone(), dep.clone());
        Ok((dep, created))
    }

    /// Gives a deployment a new signing secret; the old one stays valid for `overlap`.
    pub async fn rotate_secret(
        &self,
        store: &Store,
        key: &str,
        overlap: std::time::Duration,
    ) -> Result<Option<Arc<LiveDeployment>>, StoreError> {
        let new_secret = ids::signing_secret();
        let previous_until = ids::now_ms() + overlap.as_millis() as i64;
        let cmd = RotateSecret {
            key: key.to_string(),
            new_secret: new_secret.clone(),
            previous_until,
        };
        if !store.write(cmd).await? {
            return Ok(None);
        }
        let mut live = self.live.write().expect("deployments lock");
        let Some(old) = live.get(key).cloned() else {
            return Ok(None);
        };
        let dep = Arc::new(LiveDeployment {
            key: old.key.clone(),
            id: old.id.clone(),
            version: old.version,
            definition: old.definition.clone(),
            signing_secret: new_secret,
            previous_secret: Some(old.signing_secret.clone()),
            previous_secret_until: Some(previous_until),
            created_at: old.created_at,
            updated_at: ids::now_ms(),
        });
        live.insert(key.to_string(), dep.clone());
        Ok(Some(dep))
    }

    /// Removes a deployment and its versions. Runs already stored keep their rows.
    pub async fn delete(&self, store: &Store, key: &str) -> Result<bool, StoreError> {
        let found = store
            .write(DeleteDeployment {
                key: key.to_string(),
            })
            .await?;
        self.live.write().expect("deployments lock").remove(key);
        Ok(found)
    }
}

/// The deploy-time rules from the configuration.
pub fn validate_options(config: &Config) -> (bool, Vec<String>) {
    (
        config.file.security.allow_command_steps,
        config.file.providers.keys().cloned().collect(),
    )
}

/// Parses and validates a definition from text, naming `source` in errors.
pub fn parse_definition(
    config: &Config,
    text: &str,
    is_toml: bool,
    source: &str,
) -> Result<Definition, DefinitionError> {
    let mut def = if is_toml {
        Definition::from_toml_str(text)
    } else {
        Definition::from_json_str(text)
    }
    .map_err(|e| e.with_source(source))?;
    let (allow_command_steps, providers) = validate_options(config);
    def.validate(&ValidateOptions {
        allow_command_steps,
        providers: &providers,
    })
    .map_err(|e| e.with_source(source))?;
    crate::schedules::check_definition(&def).map_err(|e| e.with_source(source))?;
    Ok(def)
}

/// Deploys `<config dir>/workflows/*.toml` whose definition differs from the live one, and on
/// a first start the `hello` example. Any invalid file stops start-up, naming the file.
pub async fn deploy_at_start(
    config: &Config,
    store: &Store,
    deployments: &Deployments,
    first_start: bool,
    no_examples: bool,
) -> anyhow::Result<()> {
    let mut files: Vec<(String, String)> = Vec::new();
    if first_start && !no_examples {
        files.push(("example hello.toml".into(), HELLO_EXAMPLE.into()));
    }
    let dir = config.paths.workflows_dir();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            files.push((path.display().to_string(), text));
        }
    }
    for (source, text) in files {
        let def = parse_definition(config, &text, true, &source)?;
        if let Some(current) = deployments.get(&def.key) {
            if same_definition(&current.definition, &def) {
                continue;
            }
        }
        let (dep, _) = deployments
            .deploy(store, def)
            .await
            .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        crate::schedules::sync(store, &dep.definition)
            .await
            .map_err(|e| anyhow::anyhow!("{source}: schedules: {e}"))?;
        tracing::info!(deployment = %dep.key, version = dep.version, %source, "deployed");
    }
    Ok(())
}

fn same_definition(a: &Definition, b: &Definition) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// True when `path` names a TOML file (deploy by file extension).
pub fn is_toml_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "toml")
}
