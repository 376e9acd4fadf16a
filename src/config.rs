//! Configuration: built-in defaults → `hivelet.toml` → `HIVELET_*` environment → flags,
//! validated once at start. Every key is declared here once, with its default; an unknown key
//! or a bad value stops start-up with a message naming the key and what to write instead.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `500ms`, `5s`, `5m`, `2h` or `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "expected a duration like \"500ms\", \"5s\", \"5m\" or \"2h\", got \"{text}\""
                ))
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// A size written as `1MiB`, `512KiB` or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanSize(pub u64);

impl<'de> Deserialize<'de> for HumanSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(HumanSize(n)),
            Raw::Text(text) => bytesize::ByteSize::from_str(text.trim())
                .map(|b| HumanSize(b.as_u64()))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "expected a size like \"1MiB\" or \"512KiB\", got \"{text}\""
                    ))
                }),
        }
    }
}

impl Serialize for HumanSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            &bytesize::ByteSize(self.0)
                .to_string_as(true)
                .replace(' ', ""),
        )
    }
}

fn secs(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(n))
}

/// The contents of `hivelet.toml`. Field defaults are the product defaults of SPEC §9.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Address the HTTP API listens on.
    pub bind: String,
    pub runs: RunsConfig,
    pub delivery: DeliveryConfig,
    pub limits: LimitsConfig,
    pub security: SecurityConfig,
    pub store: StoreConfig,
    pub retention: RetentionConfig,
    /// One table per provider that `prompt` steps name.
    pub providers: BTreeMap<String, ProviderSection>,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            bind: "127.0.0.1:8420".into(),
            runs: RunsConfig::default(),
            delivery: DeliveryConfig::default(),
            limits: LimitsConfig::default(),
            security: SecurityConfig::default(),
            store: StoreConfig::default(),
            retention: RetentionConfig::default(),
            providers: BTreeMap::from([(
                "local".to_string(),
                ProviderSection {
                    base_url: "http://127.0.0.1:11434/v1".into(),
                    api_key_env: Some("OLLAMA_API_KEY".into()),
                    prices: BTreeMap::new(),
                    max_concurrent: None,
                    requests_per_minute: None,
                    tokens_per_minute: None,
                },
            )]),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunsConfig {
    /// Run slots; beyond them async runs are queued and sync calls get 429.
    pub max_concurrent: usize,
    /// Queued async runs beyond which invokes get 429 `queue_full`.
    pub max_queued: usize,
    /// How long a stopping daemon lets running runs finish.
    pub shutdown_grace: HumanDuration,
}

impl Default for RunsConfig {
    fn default() -> Self {
        RunsConfig {
            max_concurrent: 64,
            max_queued: 100_000,
            shutdown_grace: secs(30),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// One attempt fails if no 2xx arrives within this time.
    pub attempt_timeout: HumanDuration,
    /// Delays after the first attempt; its length + 1 is the number of attempts.
    pub retry_schedule: Vec<HumanDuration>,
    /// Up to ± this fraction of each delay is added at random.
    pub jitter: f64,
    /// Attempts in flight at once to one (scheme, host, port).
    pub per_host_concurrency: usize,
    /// How long a rotated-out signing secret stays valid.
    pub secret_overlap: HumanDuration,
    /// Tuning, not in the example config: how many events waiting for delivery are held in
    /// memory; the rest wait in the database and are read in pages as the window empties.
    /// Listed by `config dump` only when changed.
    #[serde(skip_serializing_if = "is_default_window")]
    pub schedule_window: usize,
}

fn is_default_window(n: &usize) -> bool {
    *n == crate::delivery::schedule::DEFAULT_WINDOW
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            attempt_timeout: secs(15),
            retry_schedule: [5, 300, 1800, 7200, 18000, 36000, 36000].map(secs).to_vec(),
            jitter: 0.1,
            per_host_concurrency: 16,
            secret_overlap: secs(24 * 3600),
            schedule_window: crate::delivery::schedule::DEFAULT_WINDOW,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted request body on invoke and deploy routes.
    pub invoke_body: HumanSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            invoke_body: HumanSize(1024 * 1024),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// `command` steps run local programs, so they are refused unless this is true.
    pub allow_command_steps: bool,
    /// Hosts or CIDRs callbacks may reach; empty means any.
    pub callback_allow: Vec<String>,
    /// Hosts or CIDRs callbacks may never reach, checked on the resolved address.
    pub callback_deny: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every group commit is fsynced: an accepted run survives power loss.
    Full,
    /// Commits survive a process crash but may be lost on power loss.
    Normal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub synchronous: Synchronous,
    /// The most the database may grow to (0: no limit but the disk). Past it invokes get
    /// 503 until `runs purge` or retention frees pages.
    pub max_size: HumanSize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            synchronous: Synchronous::Full,
            max_size: HumanSize(0),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Finished runs older than this (by their end) are deleted with their steps, events and
    /// attempts; `0s` keeps them forever. Runs whose event still waits for delivery are kept.
    pub runs: HumanDuration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { runs: secs(0) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// An OpenAI-compatible base URL, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// The environment variable holding the provider's API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// USD per million tokens, by model name: `[providers.NAME.prices."MODEL"]`. Models
    /// without an entry cost nothing in `usage.cost_usd`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, crate::usage::Price>,
    /// At most this many requests to the provider in flight at once, across all runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    /// At most this many requests started in any minute (a token bucket refilled evenly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// At most this many tokens (prompt plus completion, as the replies report them) a
    /// minute; a request waits while the bucket is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

/// Where the daemon's files live.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `hivelet.toml` (it may not exist: then the defaults apply).
    pub config_file: PathBuf,
    /// The folder of `hivelet.toml`; `workflows/*.toml` in it are deployed at start.
    pub config_dir: PathBuf,
    /// Holds `hivelet.db`, `admin.key` and `hivelet.addr`.
    pub data_dir: PathBuf,
}

impl Paths {
    pub fn database(&self) -> PathBuf {
        self.data_dir.join("hivelet.db")
    }
    pub fn admin_key(&self) -> PathBuf {
        self.data_dir.join("admin.key")
    }
    /// The address a running daemon listens on, for client commands.
    pub fn addr_file(&self) -> PathBuf {
        self.data_dir.join("hivelet.addr")
    }
    pub fn workflows_dir(&self) -> PathBuf {
        self.config_dir.join("workflows")
    }
}

/// What the command line (and its `HIVELET_*` environment fallbacks) says about config.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub bind: Option<String>,
}

/// The validated, effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub paths: Paths,
    pub file: FileConfig,
    pub bind: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    NoDirectories(String),
}

/// A key of `hivelet.toml` (or its override) that cannot be used: the message names it and
/// says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidKey(pub String);

impl From<String> for InvalidKey {
    fn from(message: String) -> InvalidKey {
        InvalidKey(message)
    }
}

impl From<&str> for InvalidKey {
    fn from(message: &str) -> InvalidKey {
        InvalidKey(message.to_string())
    }
}

impl Config {
    /// Resolves paths, reads `hivelet.toml` if present, applies overrides, validates.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let paths = resolve_paths(overrides)?;
        let mut file = match std::fs::read_to_string(&paths.config_file) {
            Ok(text) => parse_file(&text).map_err(|invalid| ConfigError::Invalid {
                path: paths.config_file.clone(),
                message: invalid.0,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileConfig::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: paths.config_file.clone(),
                    source,
                })
            }
        };
        if let Some(bind) = &overrides.bind {
            file.bind = bind.clone();
        }
        let invalid = |InvalidKey(message)| ConfigError::Invalid {
            path: paths.config_file.clone(),
            message,
        };
        let bind = validate(&file).map_err(invalid)?;
        Ok(Config { paths, file, bind })
    }

    /// The effective configuration as TOML. Provider keys live in environment variables and
    /// are named, never read, so nothing secret is printed.
    pub fn dump(&self) -> String {
        toml::to_string_pretty(&self.file).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// Parses `hivelet.toml`, naming the dotted key at fault.
pub fn parse_file(text: &str) -> Result<FileConfig, InvalidKey> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.inner().message().to_string();
        // The path already ends with an unknown key's own name.
        let key = path;
        let hint = if inner.starts_with("unknown field") {
            " (remove it or fix its spelling)"
        } else {
            ""
        };
        let line = err
            .inner()
            .span()
            .map(|span| format!(" (line {})", text[..span.start].matches('\n').count() + 1))
            .unwrap_or_default();
        InvalidKey(format!("invalid key `{key}`{line}: {inner}{hint}"))
    })
}

fn validate(file: &FileConfig) -> Result<SocketAddr, InvalidKey> {
    let bind: SocketAddr = file.bind.parse().map_err(|_| {
        format!(
            "invalid key `bind`: expected an address like \"127.0.0.1:8420\", got \"{}\"",
            file.bind
        )
    })?;
    let positive = |key: &str, n: usize| {
        if n == 0 {
            Err(InvalidKey::from(format!(
                "invalid key `{key}`: must be at least 1"
            )))
        } else {
            Ok(())
        }
    };
    positive("runs.max_concurrent", file.runs.max_concurrent)?;
    positive(
        "delivery.per_host_concurrency",
        file.delivery.per_host_concurrency,
    )?;
    positive("delivery.schedule_window", file.delivery.schedule_window)?;
    if !(0.0..=1.0).contains(&file.delivery.jitter) {
        return Err(InvalidKey::from(format!(
            "invalid key `delivery.jitter`: expected a fraction between 0.0 and 1.0, got {}",
            file.delivery.jitter
        )));
    }
    if file.delivery.retry_schedule.is_empty() {
        // An empty schedule is legal: one attempt, no retries.
    }
    if file.delivery.attempt_timeout.0.is_zero() {
        return Err(InvalidKey::from(
            "invalid key `delivery.attempt_timeout`: must be longer than 0s",
        ));
    }
    if file.limits.invoke_body.0 < 1024 {
        return Err(InvalidKey::from(
            "invalid key `limits.invoke_body`: must be at least 1KiB",
        ));
    }
    for (name, provider) in &file.providers {
        match url::Url::parse(&provider.base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(InvalidKey::from(format!(
                    "invalid key `providers.{name}.base_url`: expected an http(s) URL like \"http://127.0.0.1:11434/v1\", got \"{}\"",
                    provider.base_url
                )))
            }
        }
        for (key, value) in [
            ("max_concurrent", provider.max_concurrent.map(|n| n as u64)),
            ("requests_per_minute", provider.requests_per_minute),
            ("tokens_per_minute", provider.tokens_per_minute),
        ] {
            if value == Some(0) {
                return Err(InvalidKey::from(format!(
                    "invalid key `providers.{name}.{key}`: must be at least 1 (leave it out for no limit)"
                )));
            }
        }
        for (model, price) in &provider.prices {
            if let Some(field) = price.invalid_field() {
                return Err(InvalidKey::from(format!(
                    "invalid key `providers.{name}.prices.\"{model}\".{field}`: expected a price in USD per million tokens, 0 or more, like 0.15"
                )));
            }
        }
    }
    for (key, list) in [
        ("security.callback_allow", &file.security.callback_allow),
        ("security.callback_deny", &file.security.callback_deny),
    ] {
        for entry in list {
            if entry.trim().is_empty() || entry.contains(char::is_whitespace) {
                return Err(InvalidKey::from(format!(
                    "invalid key `{key}`: expected host names or CIDRs like \"10.0.0.0/8\", got \"{entry}\""
                )));
            }
        }
    }
    Ok(bind)
}

fn resolve_paths(overrides: &Overrides) -> Result<Paths, ConfigError> {
    let project = || directories::ProjectDirs::from("", "", "hivelet");
    let no_dirs = || {
        ConfigError::NoDirectories(
            "cannot find a home directory for hivelet's files; pass --data-dir and --config".into(),
        )
    };
    // A service started by systemd gets its folders in these variables.
    let systemd_dir = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(|v| PathBuf::from(v.to_string_lossy().split(':').next().unwrap_or_default()))
    };
    let config_file = match &overrides.config_file {
        Some(path) => path.clone(),
        None => match systemd_dir("CONFIGURATION_DIRECTORY") {
            Some(dir) => dir.join("hivelet.toml"),
            None => project()
                .ok_or_else(no_dirs)?
                .config_dir()
                .join("hivelet.toml"),
        },
    };
    let config_dir = config_file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let data_dir = match &overrides.data_dir {
        Some(path) => path.clone(),
        None => match systemd_dir("STATE_DIRECTORY") {
            Some(dir) => dir,
            None => project().ok_or_else(no_dirs)?.data_dir().to_path_buf(),
        },
    };
    Ok(Paths {
        config_file,
        config_dir,
        data_dir,
    })
}

impl fmt::Display for Paths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "config {} · data {}",
            self.config_file.display(),
            self.data_dir.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = parse_file("").unwrap();
        assert_eq!(c.bind, "127.0.0.1:8420");
        assert_eq!(c.runs.max_concurrent, 64);
        assert_eq!(c.runs.max_queued, 100_000);
        assert_eq!(c.delivery.retry_schedule.len(), 7);
        assert_eq!(c.delivery.attempt_timeout.0, Duration::from_secs(15));
        assert_eq!(c.limits.invoke_body.0, 1024 * 1024);
        assert_eq!(c.store.synchronous, Synchronous::Full);
        assert!(
            c.retention.runs.0.is_zero(),
            "runs are kept forever by default"
        );
    }

    #[test]
    fn retention_takes_days() {
        let c = parse_file("[retention]\nruns = \"30d\"\n").unwrap();
        assert_eq!(c.retention.runs.0, Duration::from_secs(30 * 24 * 3600));
        let err = parse_file("[retention]\nrun = \"30d\"\n").unwrap_err().0;
        assert!(err.contains("`retention.run`"), "{err}");
    }

    #[test]
    fn unknown_key_is_named_with_its_table() {
        let err = parse_file("[runs]\nmax_concurent = 5\n").unwrap_err().0;
        assert!(err.contains("`runs.max_concurent`"), "{err}");
        assert!(
            err.contains("max_concurrent"),
            "should list the valid keys: {err}"
        );
    }

    #[test]
    fn bad_duration_names_the_key_and_the_form() {
        let err = parse_file("[runs]\nshutdown_grace = \"soon\"\n")
            .unwrap_err()
            .0;
        assert!(err.contains("runs.shutdown_grace"), "{err}");
        assert!(err.contains("\"5s\""), "{err}");
    }

    #[test]
    fn sizes_and_durations_parse() {
        let c = parse_file(
            "[limits]\ninvoke_body = \"2MiB\"\n[delivery]\nretry_schedule = [\"10ms\", \"1s\"]\n",
        )
        .unwrap();
        assert_eq!(c.limits.invoke_body.0, 2 * 1024 * 1024);
        assert_eq!(c.delivery.retry_schedule[0].0, Duration::from_millis(10));
    }

    #[test]
    fn the_schedule_window_is_tuning_listed_only_when_changed() {
        let default = toml::to_string_pretty(&FileConfig::default()).unwrap();
        assert!(!default.contains("schedule_window"), "{default}");
        let c = parse_file("[delivery]\nschedule_window = 64\n").unwrap();
        assert_eq!(c.delivery.schedule_window, 64);
        let text = toml::to_string_pretty(&c).unwrap();
        assert_eq!(parse_file(&text).unwrap().delivery.schedule_window, 64);
        let zero = parse_file("[delivery]\nschedule_window = 0\n").unwrap();
        assert_eq!(
            validate(&zero).unwrap_err(),
            "invalid key `delivery.schedule_window`: must be at least 1".into()
        );
    }

    #[test]
    fn dump_round_trips() {
        let c = FileConfig::default();
        let text = toml::to_string_pretty(&c).unwrap();
        let back = parse_file(&text).unwrap();
        assert_eq!(back.delivery.retry_schedule, c.delivery.retry_schedule);
        assert_eq!(back.limits.invoke_body, c.limits.invoke_body);
    }
}
