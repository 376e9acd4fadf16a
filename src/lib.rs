//! hivelet: run workflow deployments locally, answer like Fetch Hive's workflow API, and
//! deliver results as signed webhooks that are never lost.
//!
//! [`run`] builds the actors and the HTTP server on a listener it is given, so the binary
//! and the tests start the daemon the same way.

pub mod actors;
pub mod api;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod deployments;
pub mod domain;
pub mod error;
pub mod flow;
pub mod ids;
pub mod keyring;
pub mod live;
pub mod metrics;
pub mod schedules;
pub mod signing;
pub mod store;
pub mod ui;
pub mod usage;
pub mod workflow;

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Actor;
use actix_web::{web, App, HttpServer};

use crate::actors::retention::Retention;
use crate::actors::{InvokeActor, RetrySupervisor};
use crate::api::AppState;
use crate::config::Config;
use crate::deployments::Deployments;
use crate::keyring::KeyRing;
use crate::store::{Role, Store};

/// Start-up choices that are not configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Skip the `hello` example on a fresh install.
    pub no_examples: bool,
}

/// Serves until `shutdown` resolves, then stops accepting and drains.
pub async fn run(
    config: Config,
    store: Store,
    listener: TcpListener,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let keys = Arc::new(KeyRing::load(&store)?);
    let first_start = keys.is_empty();
    if first_start {
        create_admin_key(&config, &store, &keys).await?;
    }
    let deployments = Arc::new(Deployments::load(&store)?);
    deployments::deploy_at_start(
        &config,
        &store,
        &deployments,
        first_start,
        options.no_examples,
    )
    .await?;

    // Reads one page of the events still to deliver, not the whole backlog.
    let supervisor =
        RetrySupervisor::new(store.clone(), config.clone(), deployments.clone())?.start();
    let recovered = actors::recovery::recover(&store, &deployments)?;
    let live = live::Hub::default();
    let invoker = InvokeActor::new(
        store.clone(),
        config.clone(),
        supervisor.clone().recipient(),
        deployments.clone(),
        recovered,
    )
    .with_live(live.clone())
    .start();
    let scheduler =
        actors::scheduler::Scheduler::new(store.clone(), deployments.clone(), invoker.clone())
            .start();
    let keep_runs = config.file.retention.runs.0;
    if !keep_runs.is_zero() {
        Retention::new(store.clone(), keep_runs).start();
    }
    let stopping = Arc::new(AtomicBool::new(false));
    let state = web::Data::new(AppState {
        config: config.clone(),
        store: store.clone(),
        deployments,
        keys,
        invoker: invoker.clone(),
        supervisor,
        scheduler,
        idempotency_in_flight: Default::default(),
        stopping: stopping.clone(),
        live: live.clone(),
    });

    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(api::access_log::access_log))
            .app_data(state.clone())
            // Malformed query strings and paths answer in the envelope too.
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                error::ApiError::BadRequest(format!("Malformed query string: {err}")).into()
            }))
            .app_data(web::PathConfig::default().error_handler(|err, _| {
                error::ApiError::BadRequest(format!("Malformed path: {err}")).into()
            }))
            .configure(routes)
            .default_service(web::to(api::not_found))
    })
    .disable_signals()
    // Live streams write many small chunks; with Nagle's algorithm each one after the first
    // waited for the client's delayed ACK (~40 ms).
    .tcp_nodelay(true)
    // Explicit (these are actix-web's defaults) so a slow or stalled client is bounded on
    // purpose: a request head must arrive within 5 s or the connection is closed
    // (slowloris), and a closing connection gets 1 s to go away.
    .client_request_timeout(std::time::Duration::from_secs(5))
    .client_disconnect_timeout(std::time::Duration::from_secs(1))
    .shutdown_timeout(config.file.runs.shutdown_grace.0.as_secs().max(1))
    .listen(listener)?
    .run();

    let url = format!("http://{addr}");
    write_private_file(&config.paths.addr_file(), &url)?;
    println!("hivelet listening on {url}");
    tracing::info!(%url, paths = %config.paths, "hivelet started");
    // Under systemd (`Type=notify`): the unit is up only now, with the port open.
    notify_service_manager(&[sd_notify::NotifyState::Ready]);

    let handle = server.handle();
    let grace = config.file.runs.shutdown_grace.0;
    actix_rt::spawn(async move {
        shutdown.await;
        // New work gets 503 from here on; running runs get the grace period to finish.
        // Whatever does not finish stays in the store and resumes at the next start.
        tracing::info!(grace = ?grace, "stopping: new work is refused; running runs may finish");
        notify_service_manager(&[sd_notify::NotifyState::Stopping]);
        stopping.store(true, Ordering::SeqCst);
        if actix_rt::time::timeout(grace, invoker.send(actors::invoke::Drain))
            .await
            .is_err()
        {
            tracing::warn!(
                "runs still running after the grace period; they resume at the next start"
            );
        }
        // Live streams of runs that did not end would hold the stop for the whole grace
        // period again; their clients reconnect with Last-Event-ID after the restart.
        live.close_all();
        handle.stop(true).await;
    });
    server.await?;
    store.close();
    let _ = std::fs::remove_file(config.paths.addr_file());
    tracing::info!("hivelet stopped");
    Ok(())
}

/// Every route the server serves: the API and the web page. The OpenAPI test registers
/// these too, so a route missing from `/openapi.json` fails it.
pub fn routes(cfg: &mut web::ServiceConfig) {
    api::configure(cfg);
    ui::configure(cfg);
}

/// Tells systemd about readiness and stopping when it asked (`NOTIFY_SOCKET`); otherwise
/// does nothing.
fn notify_service_manager(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!(%err, "cannot notify the service manager");
    }
}

/// The first start's admin key: printed once, kept in `<data dir>/admin.key` for the CLI.
async fn create_admin_key(config: &Config, store: &Store, keys: &KeyRing) -> anyhow::Result<()> {
    let issued = keys.create(store, "admin", Role::Admin).await?;
    let path = config.paths.admin_key();
    write_private_file(&path, &issued.key)?;
    println!(
        "Created an admin API key (shown once; saved to {}):\n  {}",
        path.display(),
        issued.key
    );
    Ok(())
}

/// Installs `ring` as the TLS crypto provider, once per process. Every awc client with TLS
/// (https callbacks, http steps, the CLI) needs it before it is built.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Writes a file only its owner can read (0600), durably.
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    // On disk before we go on: the admin key is shown once, and a crash (or a disk that
    // fails) right after start must not leave its file empty or missing.
    file.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Creates the data dir (0700) if needed.
pub fn prepare_data_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
