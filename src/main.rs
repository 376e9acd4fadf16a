//! The `hivelet` command: parse the command line, then either serve (config → tracing →
//! store → `hivelet::run`) or act as a client of a running daemon.

use std::net::TcpListener;
use std::process::ExitCode;

use clap::Parser;
use hivelet::cli::{self, Cli, Command};
use hivelet::config::Config;
use hivelet::store::Store;

/// mimalloc instead of the system allocator: the invoke and delivery paths allocate many
/// small, short-lived values on several threads, where glibc's malloc showed up in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    hivelet::install_crypto_provider();
    let cli = Cli::parse();
    let overrides = cli.global.overrides();
    match cli.command {
        Command::Serve(args) => {
            let overrides = hivelet::config::Overrides {
                bind: args.bind.clone().or(overrides.bind),
                ..overrides
            };
            report(serve(overrides, args))
        }
        command => ExitCode::from(cli::run_client(command, &cli.global, &overrides)),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hivelet: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(overrides: hivelet::config::Overrides, args: cli::ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&overrides)?;
    cli::init_tracing(args.log_format);
    hivelet::prepare_data_dir(&config.paths.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot prepare the data dir {}: {e}",
            config.paths.data_dir.display()
        )
    })?;
    let store = Store::open(&config.paths.database(), &config.file.store)?;
    let listener = TcpListener::bind(config.bind)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (key `bind`): {e}", config.bind))?;

    // SIGINT and SIGTERM both ask for a graceful stop.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = std::sync::Mutex::new(Some(stop_tx));
    ctrlc::set_handler(move || {
        if let Some(tx) = stop_tx.lock().ok().and_then(|mut tx| tx.take()) {
            let _ = tx.send(());
        }
    })?;
    let options = hivelet::RunOptions {
        no_examples: args.no_examples,
    };
    actix_rt::System::new().block_on(hivelet::run(config, store, listener, options, async move {
        let _ = stop_rx.await;
    }))
}
