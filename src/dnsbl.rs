//! `moat dnsbl serve`: a DNS blocklist node, serving rbldnsd-compatible zones over DNS, and
//! publishing or pulling its dataset files when `[dnsbl.sync]` says so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use moat_dnsbl::{
    DnsServer, DnsblConfig, Publisher, Settings, Subscriber, SyncOutcome, ZoneSpec, Zones,
};
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::{Failure, exit, fail};

/// The `moat dnsbl` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve DNSBL zones over DNS (UDP and TCP) until SIGTERM; SIGHUP reloads changed files
    /// (and pulls from the publisher, with [dnsbl.sync.subscribe]).
    Serve {
        /// A TOML configuration file whose `[dnsbl]` section is read (see moat.example.toml);
        /// other sections are left to `moat serve`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen on this address instead, UDP and TCP (repeatable), as 127.0.0.1:5353.
        #[arg(long)]
        listen: Vec<String>,
        /// Serve a zone given as rbldnsd does, zone:type:file[,file...] (repeatable; a repeated
        /// zone name adds a dataset to that zone).
        #[arg(long)]
        zone: Vec<String>,
        /// UDP sockets (and threads) per address, sharing the port with SO_REUSEPORT.
        #[arg(long)]
        udp_sockets: Option<usize>,
        /// Which code answers UDP: fast (Moat's loop) or hickory (hickory-server's).
        #[arg(long)]
        udp_engine: Option<String>,
        /// Check dataset files for changes this often, as 30s or 1m; 0 reloads on SIGHUP only.
        #[arg(long)]
        check_interval: Option<String>,
        /// Refuse a dataset with any malformed line instead of skipping the line.
        #[arg(long)]
        strict: bool,
        /// Answer `GET /metrics` (queries answered, and the sync counters) on this address, as
        /// 127.0.0.1:9188.
        #[arg(long)]
        metrics_listen: Option<String>,
    },
}

/// A configuration file as `moat dnsbl` reads it: its `[dnsbl]` section, other sections
/// ignored (they belong to `moat serve`, which checks them).
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    dnsbl: Option<DnsblConfig>,
    #[serde(flatten)]
    _other: toml::Table,
}

/// Runs a `moat dnsbl` subcommand.
pub(crate) fn run(command: Command) -> Result<(), Failure> {
    let Command::Serve {
        config,
        listen,
        zone,
        udp_sockets,
        udp_engine,
        check_interval,
        strict,
        metrics_listen,
    } = command;

    let (mut section, base) = match &config {
        Some(path) => (
            read_section(path).map_err(fail(exit::CONFIG))?,
            config_dir(path),
        ),
        None => (DnsblConfig::default(), PathBuf::new()),
    };
    // Values from the command line are the caller's words: a bad one is a usage error (64),
    // told apart from a bad configuration file (78).
    if let Some(bad) = listen
        .iter()
        .find(|text| text.parse::<SocketAddr>().is_err())
    {
        return Err(fail(exit::USAGE)(anyhow::anyhow!(
            "--listen {bad:?}: not an address and port, as 127.0.0.1:5353 or [::1]:5353"
        )));
    }
    if !listen.is_empty() {
        section.listen = listen;
    }
    section.udp_sockets = udp_sockets.or(section.udp_sockets);
    section.udp_engine = udp_engine.or(section.udp_engine);
    section.check_interval = check_interval.or(section.check_interval);
    section.strict |= strict;
    section.metrics_listen = metrics_listen.or(section.metrics_listen);
    let mut settings = section
        .validate(&base)
        .with_context(|| config_origin(config.as_deref()))
        .map_err(fail(exit::CONFIG))?;
    let zones = zone
        .iter()
        .map(|z| ZoneSpec::parse_rbldnsd(z))
        .collect::<Result<Vec<_>, _>>()
        .context("--zone")
        .map_err(fail(exit::USAGE))?;
    settings.add_zones(zones);
    if settings.zones.is_empty() {
        let code = if config.is_some() {
            exit::CONFIG
        } else {
            exit::USAGE
        };
        return Err(fail(code)(anyhow::anyhow!(
            "no zone to serve: give [[dnsbl.zone]] in the configuration or --zone zone:type:file"
        )));
    }
    serve(settings)
}

fn serve(settings: Settings) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(fail(exit::SOFTWARE))?;
    let subscriber = runtime.block_on(bootstrap_sync(&settings));
    let zones = Zones::load(&settings).map_err(|error| {
        // A dataset that is not there is missing input (66), as for `moat learn`; anything
        // else wrong with the files is the configuration's (78).
        let code = match &error {
            moat_dnsbl::Error::Read { .. } => exit::NO_INPUT,
            _ => exit::CONFIG,
        };
        fail(code)(anyhow::Error::new(error).context("loading zones"))
    })?;
    runtime.block_on(async move {
        let server = DnsServer::start(&settings, zones.clone())
            .map_err(|e| fail(exit::UNAVAILABLE)(e.into()))?;
        for addr in server.local_addrs() {
            tracing::info!(%addr, udp_sockets = settings.udp_sockets, "dnsbl listening");
        }
        let sync = start_sync(&settings, subscriber.clone(), &zones).await?;
        if let Some(addr) = settings.metrics_listen {
            let sources = crate::metrics::Sources {
                sync: subscriber.clone(),
                dns: Some(server.counters()),
                ..crate::metrics::Sources::default()
            };
            crate::metrics::start(addr, sources)
                .await
                .map_err(fail(exit::UNAVAILABLE))?;
        }
        tokio::select! {
            () = moat_dnsbl::watch(zones, settings.check_interval) => {}
            () = crate::serve::shutdown_signal() => tracing::info!("shutting down"),
        }
        drop(sync);
        server.shutdown().await;
        if let Some(subscriber) = subscriber {
            let metrics = subscriber.metrics();
            tracing::info!(
                updated = metrics.total(SyncOutcome::Updated),
                unchanged = metrics.total(SyncOutcome::Unchanged),
                bytes_moved = metrics.bytes_moved(),
                full_bytes = metrics.full_bytes(),
                "dnsbl sync counts"
            );
        }
        Ok(())
    })
}

/// With `[dnsbl.sync.subscribe]`, pulls every dataset once before the zones are loaded: a new
/// node gets its full copies, a restarted one catches up. A failed pull is logged; the node
/// then starts on the copies it has, and loading names any file it lacks.
pub(crate) async fn bootstrap_sync(settings: &Settings) -> Option<Subscriber> {
    let subscribe = settings.sync.subscribe.as_ref()?;
    let subscriber = Subscriber::new(subscribe, &settings.zones);
    tracing::info!(
        publisher = %subscribe.publisher,
        interval = %humantime::format_duration(subscribe.interval),
        "dnsbl sync subscribing"
    );
    // Failures are logged and counted by pull.
    let _ = subscriber.pull(None).await;
    Some(subscriber)
}

/// Starts what `[dnsbl.sync]` asks for: the publisher, and the subscriber's schedule (from
/// [`bootstrap_sync`]) reloading `zones`. Both stop when the returned set is dropped.
pub(crate) async fn start_sync(
    settings: &Settings,
    subscriber: Option<Subscriber>,
    zones: &Zones,
) -> Result<JoinSet<()>, Failure> {
    let mut tasks = JoinSet::new();
    if let Some(publish) = &settings.sync.publish {
        let publisher =
            Publisher::bind(publish, &settings.zones)
                .await
                .map_err(|error| match error {
                    moat_dnsbl::Error::Config { .. } => fail(exit::CONFIG)(error.into()),
                    _ => fail(exit::UNAVAILABLE)(error.into()),
                })?;
        let datasets = publisher.datasets().len();
        for addr in publisher.local_addrs() {
            tracing::info!(%addr, datasets, "dnsbl sync publishing");
        }
        tasks.spawn(publisher.serve());
    }
    if let Some(subscriber) = subscriber {
        tasks.spawn(subscriber.run(zones.clone()));
    }
    Ok(tasks)
}

/// Reads the `[dnsbl]` section of a configuration file.
fn read_section(path: &Path) -> anyhow::Result<DnsblConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    let file: File =
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
    Ok(file.dnsbl.unwrap_or_default())
}

/// Relative dataset paths in a file are taken from the file's directory.
pub(crate) fn config_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn config_origin(path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("config file {}", path.display()),
        None => "command line".to_owned(),
    }
}
