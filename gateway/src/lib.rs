//! Moat's SMTP front door: the sessions that take mail from the Internet for the accepted
//! domains and hand it, durably spooled, to the delivery queue.
//!
//! A tour of the path:
//!
//! - [`Gateway::bind`] opens the listening sockets; [`Gateway::serve`] admits each connection
//!   within the session limits, runs the pre-greet test and greets.
//! - A `Session` reads commands through `Inbound` (buffered reads with timeouts, replies
//!   batched for PIPELINING) and runs each command's stage: hello, mail, rcpt, data, bdat.
//!   The framing of DATA and the newline policy ([`BareNewline`]) live in `framing`, free
//!   of I/O so they can be tested byte by byte.
//! - [`AcceptedDomains`] decides each forward-path: ours, unknown user, or relay denied; then
//!   the [`Checks`] that are on (greylisting) may defer it.
//! - At the end of DATA or the last BDAT chunk, the message, with a `Received` header added,
//!   goes to [`moat_delivery::Queue::accept`]; the 250 reply is sent only once it returns.
//! - Every refusal's code, enhanced status and text come from one table, [`Refusal`].

mod auth;
mod checks;
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
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use moat_delivery::Queue;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use auth::{
    ArcCheck, ArcResult, AuthError, AuthReport, AuthSection, AuthSettings,
    DEFAULT_AUTH_DNS_TIMEOUT, DEFAULT_AUTH_TIMEOUT, DkimCheck, DkimResult, DmarcAction, DmarcCheck,
    DmarcEnforcement, DmarcPolicy, DmarcResult, SenderAuth, SpfCheck, SpfReport, SpfResult,
    caching_resolver,
};
pub use checks::{Checks, DEFAULT_DNSBL_TIMEOUT, DnsblCheck, DnsblScore, DnsblSettings, DnsblSite};
pub use config::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_DATA_TIMEOUT, DEFAULT_MAX_COMMAND_LINE, DEFAULT_MAX_ERRORS,
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_RECIPIENTS, DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_SESSIONS_PER_IP, DEFAULT_MAX_TEXT_LINE, DEFAULT_PREGREET_PASS_TTL,
    DEFAULT_PREGREET_WAIT, SmtpConfig,
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
    /// Clients that passed the pre-greet test, until when.
    pregreet_passed: Mutex<HashMap<IpAddr, Instant>>,
}

/// The SMTP server: its sockets and the settings its sessions share.
pub struct Gateway {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
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
        let shared = Arc::new(Shared {
            smtp,
            domains,
            tls,
            queue,
            checks,
            sessions: listener::SessionCounts::default(),
            pregreet_passed: Mutex::new(HashMap::new()),
        });
        Ok(Gateway { shared, listeners })
    }

    /// The addresses actually bound (useful when a port 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|listener| listener.local_addr().ok())
            .collect()
    }

    /// Serves every listener until the returned future is dropped.
    pub async fn serve(self) {
        let mut tasks = tokio::task::JoinSet::new();
        for listener in self.listeners {
            tasks.spawn(listener::serve(Arc::clone(&self.shared), listener));
        }
        while tasks.join_next().await.is_some() {}
    }
}
