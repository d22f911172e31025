//! `moat greylist`: the greylist's own commands; `policy` serves Postfix's policy delegation
//! protocol from the greylist, so Postfix can use Moat in place of postgrey.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use moat_greylist::{Greylist, GreylistSection, Outcome, PolicyService, StoreError, SystemClock};

use crate::config::DEFAULT_DATA_DIR;
use crate::serve::{check_writable, shutdown_signal};
use crate::{Failure, exit, fail};

/// Where the policy service listens when nothing says otherwise: postgrey's port, on loopback.
pub const DEFAULT_POLICY_LISTEN: &str = "127.0.0.1:10023";

/// `moat greylist ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve the Postfix policy delegation protocol (check_policy_service) from the greylist.
    Policy {
        /// Listen on this address (default: greylist.policy_listen, else 127.0.0.1:10023).
        #[arg(long)]
        listen: Option<String>,
        /// A TOML configuration file; its `data_dir` and `[greylist]` section are read.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Keep the embedded store here instead.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs a `moat greylist` command.
pub(crate) fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Policy {
            listen,
            config,
            data_dir,
        } => policy(listen, config.as_deref(), data_dir),
    }
}

/// `moat greylist policy`: opens the store, binds, and answers until a signal.
fn policy(
    listen: Option<String>,
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
) -> Result<(), Failure> {
    let (file_data_dir, section) = match config {
        Some(path) => load(path).map_err(fail(exit::CONFIG))?,
        None => (None, GreylistSection::default()),
    };
    let data_dir = data_dir
        .or(file_data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let settings = section
        .validate(&data_dir)
        .map_err(|error| fail(exit::CONFIG)(error.into()))?;
    let listen: SocketAddr = match listen {
        Some(text) => text
            .parse()
            .with_context(|| format!("--listen {text:?}: expected an address and port"))
            .map_err(fail(exit::USAGE))?,
        None => settings.policy_listen.unwrap_or_else(default_listen),
    };
    check_writable(&data_dir).map_err(fail(exit::CANT_CREATE))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(fail(exit::SOFTWARE))?;
    runtime.block_on(async move {
        let greylist = Greylist::open(&settings, Arc::new(SystemClock))
            .await
            .map_err(|error| {
                // Held by another process is a temporary condition (75), as for moat serve's
                // data directory lock; anything else means the store cannot be made here.
                let code = match &error {
                    StoreError::InUse { .. } => exit::TEMP_FAIL,
                    _ => exit::CANT_CREATE,
                };
                fail(code)(anyhow::Error::new(error).context("opening the greylist store"))
            })?;
        let greylist = Arc::new(greylist);
        let service = PolicyService::bind(listen, Arc::clone(&greylist))
            .await
            .with_context(|| format!("greylist policy service cannot listen on {listen}"))
            .map_err(fail(exit::UNAVAILABLE))?;
        let addr = service.local_addr().unwrap_or(listen);
        tracing::info!(%addr, "greylist policy listening");

        let expiry = greylist.spawn_expiry(settings.expire_interval);
        tokio::select! {
            () = service.serve() => {}
            () = shutdown_signal() => tracing::info!("shutting down"),
        }
        expiry.abort();
        let metrics = greylist.metrics();
        tracing::info!(
            deferred = metrics.total(Outcome::Deferred),
            passed_on_retry = metrics.total(Outcome::PassedOnRetry),
            passed_at_once = metrics.total(Outcome::PassedAtOnce),
            exempted = metrics.total(Outcome::Exempted),
            store_failed = metrics.total(Outcome::StoreFailed),
            "greylist counts"
        );
        Ok(())
    })
}

/// Reads `data_dir` and the `[greylist]` section of a configuration file; other sections
/// belong to `moat serve` and are not checked here.
fn load(path: &Path) -> anyhow::Result<(Option<PathBuf>, GreylistSection)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
    let data_dir = match table.get("data_dir") {
        None => None,
        Some(toml::Value::String(dir)) => Some(PathBuf::from(dir)),
        Some(other) => anyhow::bail!(
            "config file {}: data_dir = {other}: expected a path string",
            path.display()
        ),
    };
    let section = match table.remove("greylist") {
        None => GreylistSection::default(),
        Some(value) => value
            .try_into()
            .with_context(|| format!("config file {}: [greylist]", path.display()))?,
    };
    Ok((data_dir, section))
}

fn default_listen() -> SocketAddr {
    DEFAULT_POLICY_LISTEN
        .parse()
        .expect("DEFAULT_POLICY_LISTEN is a valid socket address")
}
