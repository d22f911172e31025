//! The metrics endpoint of `moat serve` and `moat dnsbl serve`: the checks' and the DNSBL
//! sync's counters in Prometheus text format at `GET /metrics`, for the monitoring an operator
//! already runs.
//!
//! A deliberately small HTTP/1.0 responder: one request per connection, a bounded request
//! head, a short timeout; anything but `GET /metrics` gets 404.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use moat_dnsbl::{QueryCounters, Subscriber};
use moat_gateway::{Checks, ContentBudget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Time a metrics client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head read.
const MAX_REQUEST: usize = 4096;

/// What the endpoint reports on.
#[derive(Default)]
pub(crate) struct Sources {
    /// The gateway's checks (`moat serve`).
    pub(crate) checks: Option<Checks>,
    /// The DNSBL sync's subscriber, when the node pulls its datasets from a publisher.
    pub(crate) sync: Option<Subscriber>,
    /// The octets of message content the SMTP sessions hold (`moat serve`).
    pub(crate) content_budget: Option<ContentBudget>,
    /// The queries the DNSBL server answered, when this process serves zones over DNS.
    pub(crate) dns: Option<QueryCounters>,
}

/// Serves the metrics of `sources` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, sources: Arc<Sources>) {
    loop {
        let Ok((stream, client)) = listener.accept().await else {
            continue;
        };
        let sources = Arc::clone(&sources);
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &sources).await {
                tracing::debug!(%client, %error, "metrics request failed");
            }
        });
    }
}

/// Reads one request and answers it.
async fn answer(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let mut head = vec![0u8; MAX_REQUEST];
    let read = tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut head))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let request = String::from_utf8_lossy(&head[..read]);
    let (status, body) = if request.starts_with("GET /metrics ") {
        ("200 OK", render(sources))
    } else {
        (
            "404 Not Found",
            "only GET /metrics is served here\n".to_string(),
        )
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Every source's counters.
fn render(sources: &Sources) -> String {
    let mut text = String::new();
    if let Some(checks) = &sources.checks {
        if let Some(dnsbl) = &checks.dnsbl {
            text.push_str(&dnsbl.render_metrics());
        }
        if let Some(greylist) = &checks.greylist {
            text.push_str(&greylist.metrics().render());
        }
    }
    if let Some(subscriber) = &sources.sync {
        text.push_str(&subscriber.metrics().render());
    }
    if let Some(budget) = &sources.content_budget {
        text.push_str(&budget.render_metrics());
    }
    if let Some(dns) = &sources.dns {
        text.push_str(&dns.render());
    }
    text
}

/// Binds the metrics listener.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Binds `addr` and serves `sources` there in a task of its own, logging where it listens.
///
/// # Errors
///
/// When `addr` cannot be bound, naming it.
pub(crate) async fn start(addr: SocketAddr, sources: Sources) -> anyhow::Result<()> {
    let listener = bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "metrics listening");
    tokio::spawn(serve(listener, Arc::new(sources)));
    Ok(())
}
