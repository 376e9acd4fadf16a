//! Command-line interface: the argument definitions and the client subcommands, which talk
//! to a running daemon over HTTP (address from `<data dir>/hivelet.addr`, admin key from
//! `<data dir>/admin.key`, unless `--url` / `--api-key` say otherwise).

mod backup;
mod client;
mod commands;
mod listen;
mod runs;
mod schedules;
mod secret;
pub mod service;
mod stream;
mod verify;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use client::Client;

use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "hivelet",
    version,
    about = "Run workflow deployments locally; deliver results as signed webhooks"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Path of hivelet.toml
    #[arg(long, global = true, env = "HIVELET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Folder for hivelet.db, admin.key and hivelet.addr
    #[arg(long, global = true, env = "HIVELET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Daemon URL for client commands (default: from the data dir, then `bind`)
    #[arg(long, global = true, env = "HIVELET_URL")]
    pub url: Option<String>,
    /// API key for client commands (default: <data dir>/admin.key)
    #[arg(long, global = true, env = "HIVELET_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print raw JSON responses
    #[arg(long, global = true)]
    pub json: bool,
}

impl GlobalArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            data_dir: self.data_dir.clone(),
            bind: std::env::var("HIVELET_BIND").ok().filter(|b| !b.is_empty()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon
    Serve(ServeArgs),
    /// Check or print the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Deploy a workflow definition file (TOML or JSON) through the API
    Deploy {
        /// The definition file
        file: PathBuf,
    },
    /// Invoke a deployment and print its output (or the request id for async)
    Invoke(InvokeArgs),
    /// Manage API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Look at and act on runs
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Runs started on a timetable: list, add, pause, resume, trigger, delete
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// Print the ready cURL command for a deployment (and the signing secret for async)
    Snippet(SnippetArgs),
    /// Manage deployments' webhook signing secrets
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Check a saved webhook's headers and body against a signing secret and say why it fails
    ///
    /// Exit status: 0 valid, 1 invalid, 2 the files or the secret could not be read.
    Verify(VerifyArgs),
    /// Copy the database to FILE, safely while the daemon serves (SQLite `VACUUM INTO`)
    ///
    /// Reads <data dir>/hivelet.db directly (no daemon needed). FILE must not exist yet; it
    /// is created 0600. To restore: stop hivelet, copy FILE to <data dir>/hivelet.db, remove
    /// any hivelet.db-wal and hivelet.db-shm beside it, start hivelet.
    Backup {
        /// Where to write the copy
        file: PathBuf,
    },
    /// Install or remove hivelet as a service (systemd on Linux, launchd on macOS)
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Receive webhooks locally and print each event, verified against the signing secret
    ///
    /// A callback endpoint for development: accepts POST on any path, answers --status for a
    /// verified delivery and 400 for an invalid one. Ctrl-C stops it.
    Listen(ListenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides `bind`; HIVELET_BIND)
    #[arg(long)]
    pub bind: Option<String>,
    /// Do not deploy the `hello` example on a fresh install
    #[arg(long)]
    pub no_examples: bool,
    /// Log format on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and say what is wrong
    Check,
    /// Print the effective configuration as TOML (no secrets)
    Dump,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Deployment key
    pub deployment: String,
    /// Variant (default: `default`)
    #[arg(long)]
    pub variant: Option<String>,
    /// One input as name=value (value parsed as JSON when it parses, else text); repeatable
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    /// All inputs as a JSON object
    #[arg(long, value_name = "JSON")]
    pub inputs_json: Option<String>,
    /// Run asynchronously and deliver the result to --callback-url
    #[arg(long = "async", requires = "callback_url")]
    pub async_mode: bool,
    /// Where the signed result is POSTed (with --async)
    #[arg(long, requires = "async_mode")]
    pub callback_url: Option<String>,
    /// Print the run's text as it streams (sync only); with --json, every event as a JSON line
    #[arg(long, conflicts_with = "async_mode")]
    pub stream: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key (printed once)
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "invoke", value_parser = ["invoke", "admin"])]
        role: String,
    },
    /// List keys (masked)
    List,
    /// Replace a key's secret
    Rotate { id: String },
    /// Revoke a key
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct SnippetArgs {
    /// Deployment key
    pub deployment: String,
    /// Variant (default: `default`)
    #[arg(long)]
    pub variant: Option<String>,
    /// Include the `async` object (the result goes to --callback-url as a signed webhook)
    #[arg(long = "async")]
    pub async_mode: bool,
    /// Callback URL to put in the command
    #[arg(long, requires = "async_mode")]
    pub callback_url: Option<String>,
    /// Print the run's text as it streams (sync only); with --json, every event as a JSON line
    #[arg(long, conflicts_with = "async_mode")]
    pub stream: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Recent runs, newest first
    List(RunsListArgs),
    /// Everything about one run: inputs, output or error, steps, delivery
    Show { request_id: String },
    /// The delivery attempts of a callback run
    Attempts { request_id: String },
    /// Deliver a run's event again (same webhook-id)
    Redeliver { request_id: String },
    /// Cancel a queued or running run
    Cancel { request_id: String },
    /// Start a new run of an ended one (same deployment version, inputs, metadata, callback)
    ///
    /// Prints the new run's request id, and with --wait its output too.
    Rerun {
        request_id: String,
        /// Take over the outputs of the top-level steps before STEP; run it and the rest
        #[arg(long = "from", value_name = "STEP")]
        from_step: Option<String>,
        /// Wait for the new run to end and print its output
        #[arg(long)]
        wait: bool,
    },
    /// Delete finished runs that ended before a time, with their steps, events and attempts
    ///
    /// Runs whose webhook is still being delivered are kept. For automatic clean-up, set
    /// `[retention] runs = "30d"` in hivelet.toml.
    Purge {
        /// RFC 3339 time (2026-01-31T00:00:00Z), Unix milliseconds, or an age such as 30d
        #[arg(long, value_name = "TIME")]
        before: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write and enable the unit (systemd) or plist (launchd), printing each step
    Install(ServiceArgs),
    /// Stop and disable the service and remove its unit or plist (configuration and data stay)
    Uninstall(ServiceArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Per-user service (systemd --user, or a LaunchAgent) instead of a system-wide one
    #[arg(long)]
    pub user: bool,
    /// Print each step and every file's contents; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Write the files under DIR instead of / and run no service-manager command
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The hivelet binary the service runs (default: this one)
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// The service manager (default: systemd on Linux, launchd on macOS)
    #[arg(long, value_enum)]
    pub manager: Option<ServiceManager>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceManager {
    Systemd,
    Launchd,
}

#[derive(Debug, Args)]
pub struct RunsListArgs {
    #[arg(long)]
    pub deployment: Option<String>,
    #[arg(long)]
    pub variant: Option<String>,
    /// queued, running, completed, failed or cancelled
    #[arg(long)]
    pub status: Option<String>,
    /// callback or direct
    #[arg(long)]
    pub delivery: Option<String>,
    /// api, webhook, cli, ui or workflow
    #[arg(long)]
    pub source: Option<String>,
    /// Metadata filter: KEY (exists) or KEY=VALUE; repeatable
    #[arg(long = "meta", value_name = "KEY[=VALUE]")]
    pub meta: Vec<String>,
    /// Runs created at or after this time (RFC 3339 or Unix ms)
    #[arg(long)]
    pub since: Option<String>,
    /// Runs created before this time
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// The next_cursor of a previous page
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Replace a deployment's signing secret; the previous one keeps signing for a while
    Rotate {
        /// Deployment key
        deployment: String,
    },
}

/// Where the signing secret comes from: `--secret` or `--secret-env`.
#[derive(Clone, Args)]
#[group(required = true, multiple = false)]
pub struct SecretArgs {
    /// The deployment's signing secret (whsec_…)
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
    /// Read the signing secret from this environment variable instead
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
}

impl std::fmt::Debug for SecretArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretArgs")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_env", &self.secret_env)
            .finish()
    }
}

impl SecretArgs {
    /// The secret, trimmed (a secret never contains whitespace; a newline often sneaks in).
    pub fn resolve(&self) -> anyhow::Result<String> {
        let secret = match (&self.secret, &self.secret_env) {
            (Some(secret), _) => secret.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|e| match e {
                std::env::VarError::NotPresent => {
                    anyhow::anyhow!("--secret-env: the environment variable {var} is not set")
                }
                std::env::VarError::NotUnicode(_) => {
                    anyhow::anyhow!("--secret-env: {var} is not valid UTF-8")
                }
            })?,
            (None, None) => anyhow::bail!("give the signing secret with --secret or --secret-env"),
        };
        let secret = secret.trim().to_string();
        if secret.is_empty() {
            anyhow::bail!("the signing secret is empty");
        }
        Ok(secret)
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub secret: SecretArgs,
    /// The delivery's headers: `Name: value` lines (as `curl -D` writes them) or a JSON object
    #[arg(long, value_name = "FILE")]
    pub headers: PathBuf,
    /// The delivery's body, byte for byte as received
    #[arg(long, value_name = "FILE")]
    pub body: PathBuf,
    /// Check as if the time were this (Unix seconds; default: now), e.g. for an old delivery
    #[arg(long, value_name = "UNIX_SECS")]
    pub now: Option<i64>,
    /// How far webhook-timestamp may be from now, in seconds
    #[arg(long, value_name = "SECS", default_value_t = crate::signing::TIMESTAMP_TOLERANCE_SECS,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub tolerance: i64,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Port to listen on (0 picks a free one; the address is printed)
    #[arg(long)]
    pub port: u16,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// HTTP status to answer a verified delivery with (e.g. 500 or 410 to try retries)
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(200..=599))]
    pub status: u16,
}

/// Sets up `tracing` on stderr; `HIVELET_LOG` (or `RUST_LOG`) picks the level.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("HIVELET_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs a client command; returns the process exit code.
pub fn run_client(command: Command, global: &GlobalArgs, overrides: &Overrides) -> u8 {
    match commands::run(command, global, overrides) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hivelet: {err:#}");
            1
        }
    }
}
