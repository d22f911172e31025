//! Moat's SMTP front door: the sessions that take mail from the Internet for the accepted
//! domains and hand it, durably spooled, to the delivery queue.
//!
//! A tour of the path:
//!
//! - [`Gateway::bind`] opens the listening sockets; [`Gateway::serve_until`] admits each connection
//!   within the session limits, runs the pre-greet test and greets.
//! - A `Session` reads commands through `Inbound` (buffered reads with timeouts, replies
//!   batched for PIPELINING) and runs each command's stage: hello, mail, rcpt, data, bdat.
//!   The framing of DATA and the newline policy ([`BareNewline`]) live in `framing`, free
//!   of I/O so they can be tested byte by byte.
//! - [`AcceptedDomains`] decides each forward-path: ours, unknown user, or relay denied; then
//!   the [`Checks`] that are on (greylisting) may defer it.
//! - At the end of DATA or the last BDAT chunk, the message, with a `Received` header added,
//!   goes to [`moat_delivery::Queue::accept`]; the 250 reply is sent only once it returns.
//! - Each transaction holds a [`Reservation`] on the gateway's [`ContentBudget`] as its content
//!   grows; when the budget is spent the message gets `452 4.3.1` instead of more memory.
//! - Every refusal's code, enhanced status and text come from one table, [`Refusal`].

mod auth;
mod budget;
mod checks;
pub mod classifier;
mod config;
pub mod content;
mod listener;
mod received;
mod recipients;
mod reply;
mod session;
mod tls;
mod verdict;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moat_delivery::Queue;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use auth::{
    ArcCheck, ArcResult, AuthError, AuthReport, AuthSection, AuthSettings,
    DEFAULT_AUTH_DNS_TIMEOUT, DEFAULT_AUTH_TIMEOUT, DkimCheck, DkimResult, DmarcAction, DmarcCheck,
    DmarcEnforcement, DmarcPolicy, DmarcResult, SenderAuth, SpfCheck, SpfReport, SpfResult,
    caching_resolver,
};
pub use budget::{BudgetExhausted, ContentBudget, RESERVATION_STEP, Reservation};
pub use checks::{Checks, DEFAULT_DNSBL_TIMEOUT, DnsblCheck, DnsblScore, DnsblSettings, DnsblSite};
pub use config::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_DATA_TIMEOUT, DEFAULT_MAX_COMMAND_LINE,
    DEFAULT_MAX_CONTENT_IN_MEMORY, DEFAULT_MAX_ERRORS, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RECIPIENTS, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_IP,
    DEFAULT_MAX_TEXT_LINE, DEFAULT_PREGREET_PASS_TTL, DEFAULT_PREGREET_WAIT, SmtpConfig,
};
pub use listener::GatewayError;
pub use received::{TlsInfo, rfc5322_date};
pub use recipients::{AcceptedDomains, RecipientList, RecipientListError};
pub use reply::{Refusal, Reply};
pub use session::framing::BareNewline;
pub use tls::{TlsError, acceptor as tls_acceptor};
pub use verdict::{
    Action, Contribution, DEFAULT_QUARANTINE_AT, DEFAULT_REJECT_AT, DEFAULT_SUBJECT_TAG,
    DEFAULT_TAG_AT, Evidence, Reason, Thresholds, Verdict, VerdictPolicy, tag_subject,
};

/// What every session of one gateway shares.
pub(crate) struct Shared {
    smtp: SmtpConfig,
    domains: AcceptedDomains,
    tls: Option<TlsAcceptor>,
    queue: Queue,
    checks: Checks,
    sessions: listener::SessionCounts,
    /// Octets of content the sessions may hold in memory, and hold.
    content_budget: ContentBudget,
    /// Clients that passed the pre-greet test, until when.
    pregreet_passed: Mutex<HashMap<IpAddr, Instant>>,
    /// True once the server shuts down: sessions between commands are told 421 and closed.
    closing: watch::Receiver<bool>,
}

/// The SMTP server: its sockets and the settings its sessions share.
pub struct Gateway {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    closing: watch::Sender<bool>,
}

impl Gateway {
    /// Binds every listening address; nothing is served until [`Gateway::serve`].
    ///
    /// # Errors
    /// [`GatewayError::Bind`] when an address is in use or not allowed.
    pub async fn bind(
        addrs: &[SocketAddr],
        smtp: SmtpConfig,
        domains: AcceptedDomains,
        tls: Option<TlsAcceptor>,
        queue: Queue,
        checks: Checks,
    ) -> Result<Gateway, GatewayError> {
        let listeners = listener::bind(addrs).await?;
        let (closing, closing_seen) = watch::channel(false);
        let content_budget = ContentBudget::new(smtp.max_content_in_memory);
        let shared = Arc::new(Shared {
            smtp,
            domains,
            tls,
            queue,
            checks,
            sessions: listener::SessionCounts::default(),
            content_budget,
            pregreet_passed: Mutex::new(HashMap::new()),
            closing: closing_seen,
        });
        Ok(Gateway {
            shared,
            listeners,
            closing,
        })
    }

    /// A handle on the budget of content held in memory, for the metrics endpoint.
    pub fn content_budget(&self) -> ContentBudget {
        self.shared.content_budget.clone()
    }

    /// The addresses actually bound (useful when a port 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|listener| listener.local_addr().ok())
            .collect()
    }

    /// Serves every listener until `shutdown` completes, then shuts down gracefully: stops
    /// accepting, answers `421 4.3.2` to every session waiting for its next command (RFC 5321
    /// section 3.8), and lets a message being received finish and be spooled, waiting for the
    /// sessions up to `grace`. A session still open after that is dropped without a reply, so
    /// its client, having no 250, sends the message again later.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>, grace: Duration) {
        let mut accepting = tokio::task::JoinSet::new();
        for listener in self.listeners {
            accepting.spawn(listener::serve(Arc::clone(&self.shared), listener));
        }
        tokio::select! {
            () = async { while accepting.join_next().await.is_some() {} } => return,
            () = shutdown => {}
        }

        // Dropping the accept tasks closes the listening sockets: new clients are refused by
        // the kernel, and try another MX.
        drop(accepting);
        let _ = self.closing.send(true);
        let open = self.shared.sessions.total();
        tracing::info!(sessions = open, grace = ?grace, "closing SMTP sessions");

        let deadline = tokio::time::Instant::now() + grace;
        while self.shared.sessions.total() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.shared.sessions.total();
        if left > 0 {
            tracing::warn!(sessions = left, "SMTP sessions dropped at shutdown");
        }
    }
}
