//! `moat serve`: the SMTP gateway and its delivery queue, from one configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use moat_delivery::Quarantine;
use moat_delivery::Queue;
use moat_dnsbl::{DnsServer, DnsblConfig, Subscriber, Zones};
use moat_gateway::classifier::{Classifier, ClassifierSettings};
use moat_gateway::content::{ContentScanner, ContentSettings};
use moat_gateway::{
    AuthSettings, Checks, DEFAULT_AUTH_DNS_TIMEOUT, DnsblCheck, DnsblSettings, Gateway, SenderAuth,
    VerdictPolicy, caching_resolver,
};
use moat_greylist::{Greylist, GreylistSettings, SystemClock};

use crate::config::{FileConfig, Overrides};
use crate::{Failure, exit, fail};

/// How long a shutdown waits for messages being received to be spooled. Well inside systemd's
/// default stop timeout (90 s); a client cut off after it has no 250 and sends again later.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// `moat serve`: validates the configuration, opens the queue, binds, and serves until a
/// signal.
pub(crate) fn run(config: Option<PathBuf>, overrides: Overrides) -> Result<(), Failure> {
    let mut file = match &config {
        Some(path) => FileConfig::load(path).map_err(|error| fail(exit::CONFIG)(error.into()))?,
        None => FileConfig::default(),
    };
    let dnsbl = file.dnsbl.take();
    let mut settings = file
        .validate(overrides)
        .map_err(|error| fail(exit::CONFIG)(error.into()))?;
    settings.dnsbl_server =
        dnsbl_server(dnsbl.as_ref(), config.as_deref()).map_err(fail(exit::CONFIG))?;

    check_writable(&settings.data_dir).map_err(fail(exit::CANT_CREATE))?;
    // Held until the process ends: a second `moat serve` on the same data directory would
    // clean the first one's spool files out from under it and deliver its messages twice.
    let _lock = lock_data_dir(&settings.data_dir).map_err(fail(exit::TEMP_FAIL))?;
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
        // The DNS server answers until it is dropped when `moat serve` ends.
        let (zones, dns_server, subscriber) = match &settings.dnsbl_server {
            Some(dnsbl) => {
                let (zones, server, subscriber) = serve_dnsbl(dnsbl).await?;
                (Some(zones), Some(server), subscriber)
            }
            None => (None, None, None),
        };
        let checks = checks(CheckSettings {
            greylist: settings.greylist,
            dnsbl: settings.dnsbl_check,
            zones,
            auth: settings.auth,
            dns_resolver: settings.dns_resolver,
            verdict: settings.verdict,
            content: settings.content,
            classifier: settings.classifier,
            data_dir: settings.data_dir.clone(),
        })
        .await?;
        let classifier = checks
            .content
            .as_ref()
            .and_then(|scanner| scanner.classifier().cloned());
        let metrics_checks = checks.clone();
        let gateway = Gateway::bind(
            &settings.listen,
            settings.smtp,
            settings.domains,
            Some(tls),
            queue,
            checks,
        )
        .await
        .map_err(|error| fail(exit::UNAVAILABLE)(error.into()))?;
        if let Some(addr) = settings.metrics_listen {
            let sources = crate::metrics::Sources {
                checks: Some(metrics_checks),
                sync: subscriber,
                dns: dns_server.as_ref().map(DnsServer::counters),
                content_budget: Some(gateway.content_budget()),
            };
            crate::metrics::start(addr, sources)
                .await
                .map_err(fail(exit::UNAVAILABLE))?;
        }
        for addr in gateway.local_addrs() {
            tracing::info!(%addr, "smtp listening");
        }

        gateway
            .serve_until(
                async {
                    shutdown_signal().await;
                    tracing::info!("shutting down");
                },
                SHUTDOWN_GRACE,
            )
            .await;
        if let Some(classifier) = classifier {
            // What was auto-learned since the last sync is not lost with the process.
            let _ = tokio::task::spawn_blocking(move || classifier.sync()).await;
        }
        Ok(())
    })
}

/// `[dnsbl]` validated with relative dataset paths taken from the configuration file's
/// directory, as `moat dnsbl serve` takes them: the working directory of a service is rarely
/// where its configuration is.
fn dnsbl_server(
    section: Option<&DnsblConfig>,
    config: Option<&Path>,
) -> anyhow::Result<Option<moat_dnsbl::Settings>> {
    let Some(section) = section else {
        return Ok(None);
    };
    let base = config.map(crate::dnsbl::config_dir).unwrap_or_default();
    let settings = section.validate(&base).with_context(|| match config {
        Some(path) => format!("config file {}", path.display()),
        None => "[dnsbl]".to_owned(),
    })?;
    Ok(Some(settings))
}

/// Loads the zones of `[dnsbl]`, answers them over DNS and reloads them when their files
/// change; returns them for the gateway's in-process lookups, the server, and the sync's
/// subscriber (for the metrics endpoint) when the node pulls its datasets.
async fn serve_dnsbl(
    settings: &moat_dnsbl::Settings,
) -> Result<(Zones, DnsServer, Option<Subscriber>), Failure> {
    if let Some(addr) = settings.metrics_listen {
        tracing::warn!(
            %addr,
            "[dnsbl] metrics_listen is for moat dnsbl serve; moat serve reports the sync \
             counters on its [metrics] endpoint"
        );
    }
    // [dnsbl.sync.subscribe]: the first pull comes before loading (a new node's full copies).
    let subscriber = crate::dnsbl::bootstrap_sync(settings).await;
    let loading = settings.clone();
    let zones = tokio::task::spawn_blocking(move || Zones::load(&loading))
        .await
        .context("loading DNSBL zones")
        .map_err(fail(exit::SOFTWARE))?
        .context("loading DNSBL zones")
        .map_err(fail(exit::CONFIG))?;
    let server = DnsServer::start(settings, zones.clone())
        .map_err(|error| fail(exit::UNAVAILABLE)(error.into()))?;
    for addr in server.local_addrs() {
        tracing::info!(%addr, "dnsbl listening");
    }
    tokio::spawn(moat_dnsbl::watch(zones.clone(), settings.check_interval));
    // [dnsbl.sync]: the publisher and the subscriber's schedule run as long as `moat serve`.
    let mut sync = crate::dnsbl::start_sync(settings, subscriber.clone(), &zones).await?;
    tokio::spawn(async move { while sync.join_next().await.is_some() {} });
    Ok((zones, server, subscriber))
}

/// The checks `moat serve` runs, from the validated settings.
struct CheckSettings {
    greylist: Option<GreylistSettings>,
    dnsbl: Option<DnsblSettings>,
    zones: Option<Zones>,
    auth: Option<AuthSettings>,
    dns_resolver: Option<SocketAddr>,
    verdict: VerdictPolicy,
    content: Option<ContentSettings>,
    classifier: ClassifierSettings,
    data_dir: PathBuf,
}

/// Starts the checks the configuration turns on. The DNSBL and sender authentication checks
/// share one caching resolver, so a name any of them asked is answered from its cache.
async fn checks(settings: CheckSettings) -> Result<Checks, Failure> {
    let quarantine = Quarantine::open(&settings.data_dir.join("quarantine"))
        .context("opening the quarantine")
        .map_err(fail(exit::CANT_CREATE))?;
    let mut checks = Checks {
        verdict: settings.verdict,
        quarantine: Some(quarantine),
        ..Checks::default()
    };

    let resolver = if settings.dnsbl.is_some() || settings.auth.is_some() {
        let timeout = settings
            .auth
            .as_ref()
            .map_or(DEFAULT_AUTH_DNS_TIMEOUT, |a| a.dns_timeout);
        Some(
            caching_resolver(settings.dns_resolver, timeout)
                .map_err(|error| fail(exit::CONFIG)(error.into()))?,
        )
    } else {
        None
    };

    if let (Some(dnsbl), Some(resolver)) = (settings.dnsbl, &resolver) {
        let sites = dnsbl.sites.len();
        checks.dnsbl = Some(Arc::new(DnsblCheck::new(
            dnsbl,
            settings.zones,
            resolver.clone(),
        )));
        tracing::info!(sites, "DNSBL checks on");
    }
    if let (Some(auth), Some(resolver)) = (settings.auth, &resolver) {
        let auth = SenderAuth::with_resolver(auth, resolver.clone())
            .map_err(|error| fail(exit::CONFIG)(error.into()))?;
        checks.auth = Some(Arc::new(auth));
        tracing::info!("sender authentication on");
    }
    if let Some(content) = settings.content {
        let classifier = settings.classifier.enabled.then(|| {
            let dir = settings.data_dir.join("classifier");
            let classifier = Arc::new(Classifier::open(&dir, settings.classifier.clone()));
            tokio::spawn(Arc::clone(&classifier).run_sync());
            classifier
        });
        let scanner = ContentScanner::load_with_classifier(content, classifier)
            .context("loading content rules and signatures")
            .map_err(fail(exit::CONFIG))?;
        checks.content = Some(Arc::new(scanner));
        tracing::info!("content checks on");
    }
    if let Some(greylist) = settings.greylist {
        let store = Greylist::open(&greylist, Arc::new(SystemClock))
            .await
            .context("opening the greylist store")
            .map_err(fail(exit::CANT_CREATE))?;
        let store = Arc::new(store);
        store.spawn_expiry(greylist.expire_interval);
        tracing::info!(backend = ?greylist.backend, "greylisting on");
        checks.greylist = Some(store);
    }
    Ok(checks)
}

/// Makes a directory Moat writes to (the data directory, a Maildir root) if needed and proves
/// it writable, so the problem is reported at start rather than as 451 replies or deferrals.
/// A directory it makes is its owner's alone (0700), as the mail inside is; an existing one
/// keeps the modes its operator gave it.
pub(crate) fn check_writable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("directory {} cannot be created", dir.display()))?;
    let probe = dir.join(".moat-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Takes the data directory's lock file, or says which process holds it.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;

    let path = data_dir.join("moat.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    if file.try_lock().is_err() {
        anyhow::bail!(
            "data directory {} is in use by another moat serve (lock file {}); stop it or give \
             this one its own --data-dir",
            data_dir.display(),
            path.display()
        );
    }
    Ok(file)
}

/// Waits for SIGTERM or SIGINT. SIGHUP is logged and otherwise ignored here, so a log
/// rotation's HUP never stops the gateway (with `[dnsbl]` it also reloads the zones).
pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let hangup = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut signal) => loop {
                signal.recv().await;
                tracing::info!("SIGHUP received; moat keeps running");
            },
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
        () = hangup => {}
    }
}
