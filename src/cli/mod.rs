//! Command-line interface: the argument definitions and the client subcommands, which talk
//! to a running daemon over HTTP (address from `<data dir>/hivelet.addr`, admin key from
//! `<data dir>/admin.key`, unless `--url` / `--api-key` say otherwise).

mod client;
mod commands;

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
    #[arg(long)]
    pub callback_url: Option<String>,
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
