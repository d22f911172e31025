//! The metrics endpoint of `moat serve`: the checks' counters in Prometheus text format at
//! `GET /metrics`, for the monitoring an operator already runs.
//!
//! A deliberately small HTTP/1.0 responder: one request per connection, a bounded request
//! head, a short timeout; anything but `GET /metrics` gets 404.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use moat_gateway::Checks;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Time a metrics client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head read.
const MAX_REQUEST: usize = 4096;

/// Serves the metrics of `checks` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, checks: Arc<Checks>) {
    loop {
        let Ok((stream, client)) = listener.accept().await else {
            continue;
        };
        let checks = Arc::clone(&checks);
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &checks).await {
                tracing::debug!(%client, %error, "metrics request failed");
            }
        });
    }
}

/// Reads one request and answers it.
async fn answer(mut stream: TcpStream, checks: &Checks) -> std::io::Result<()> {
    let mut head = vec![0u8; MAX_REQUEST];
    let read = tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut head))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let request = String::from_utf8_lossy(&head[..read]);
    let (status, body) = if request.starts_with("GET /metrics ") {
        ("200 OK", render(checks))
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

/// Every check's counters.
fn render(checks: &Checks) -> String {
    let mut text = String::new();
    if let Some(dnsbl) = &checks.dnsbl {
        text.push_str(&dnsbl.render_metrics());
    }
    if let Some(greylist) = &checks.greylist {
        text.push_str(&greylist.metrics().render());
    }
    text
}

/// Binds the metrics listener.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
