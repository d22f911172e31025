//! `moat`: the one binary of the Moat mail gateway; `moat serve` runs the gateway and its queue.

mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use moat_delivery::Queue;
use moat_gateway::Gateway;

use config::{FileConfig, Overrides};

/// Exit codes from sysexits.h, so init systems and scripts can tell failures apart.
mod exit {
    /// A configuration error (EX_CONFIG).
    pub const CONFIG: u8 = 78;
    /// The data directory cannot be written (EX_CANTCREAT).
    pub const CANT_CREATE: u8 = 73;
    /// A listening port is busy or not allowed (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// Anything else (EX_SOFTWARE).
    pub const SOFTWARE: u8 = 70;
}

/// Moat: an inbound mail gateway.
#[derive(Debug, Parser)]
#[command(name = "moat", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the SMTP gateway and the delivery queue.
    Serve {
        /// A TOML configuration file (see moat.example.toml); without one, the embedded
        /// default: SMTP on 127.0.0.1:2525, mail for localhost into ./moat-data/mail.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen on this address instead (repeatable), as 0.0.0.0:25.
        #[arg(long)]
        listen: Vec<String>,
        /// Accept mail for this domain instead (repeatable), into the default Maildir.
        #[arg(long)]
        domain: Vec<String>,
        /// Keep the queue, TLS files and default Maildir here.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// A failure with the exit code that says its kind.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn fail(code: u8) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { code, error }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            domain,
            data_dir,
        } => serve(
            config,
            Overrides {
                listen,
                domains: domain,
                data_dir,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("moat: error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// `moat serve`: validates the configuration, opens the queue, binds, and serves until a
/// signal.
fn serve(config: Option<PathBuf>, overrides: Overrides) -> Result<(), Failure> {
    let file = match &config {
        Some(path) => FileConfig::load(path).map_err(|error| fail(exit::CONFIG)(error.into()))?,
        None => FileConfig::default(),
    };
    let settings = file
        .validate(overrides)
        .map_err(|error| fail(exit::CONFIG)(error.into()))?;

    check_writable(&settings.data_dir).map_err(fail(exit::CANT_CREATE))?;
    for route in settings.delivery.routes.values() {
        if let moat_delivery::Route::Maildir(root) = route {
            check_writable(root).map_err(fail(exit::CANT_CREATE))?;
        }
    }
    let tls_files = settings
        .tls_files
        .as_ref()
        .map(|(c, k)| (c.as_path(), k.as_path()));
    let tls = moat_gateway::tls_acceptor(tls_files, &settings.data_dir, &settings.smtp.hostname)
        .context("setting up STARTTLS")
        .map_err(fail(exit::CONFIG))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(fail(exit::SOFTWARE))?;
    runtime.block_on(async move {
        let queue = Queue::start(&settings.data_dir.join("queue"), settings.delivery)
            .context("opening the queue")
            .map_err(fail(exit::CANT_CREATE))?;
        let gateway = Gateway::bind(
            &settings.listen,
            settings.smtp,
            settings.domains,
            Some(tls),
            queue,
        )
        .await
        .map_err(|error| fail(exit::UNAVAILABLE)(error.into()))?;
        for addr in gateway.local_addrs() {
            tracing::info!(%addr, "smtp listening");
        }

        tokio::select! {
            () = gateway.serve() => {}
            () = shutdown_signal() => tracing::info!("shutting down"),
        }
        Ok(())
    })
}

/// Makes a directory Moat writes to (the data directory, a Maildir root) if needed and proves
/// it writable, so the problem is reported at start rather than as 451 replies or deferrals.
fn check_writable(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("directory {} cannot be created", dir.display()))?;
    let probe = dir.join(".moat-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
