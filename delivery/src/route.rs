//! Routes: where the mail of a domain goes, parsed from `maildir:PATH`, `lmtp:HOSTS`, `smtp:HOSTS`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::transport::smtp::Protocol;

/// Where the mail of one domain is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Into local Maildirs under this directory: `<dir>/<domain>/<local-part>/`.
    Maildir(PathBuf),
    /// Over LMTP or SMTP to the first host that answers, in order: a primary, then standbys.
    Relay {
        /// LMTP (RFC 2033) or SMTP.
        protocol: Protocol,
        /// `HOST:PORT` or `[V6]:PORT`, primary first.
        hosts: Vec<String>,
    },
}

/// Why a route string could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The part before the colon is not a known transport.
    #[error(
        "route {0:?}: unknown transport; expected maildir:PATH, lmtp:HOST:PORT or smtp:HOST:PORT"
    )]
    UnknownTransport(String),
    /// A maildir route without a path.
    #[error("route {0:?}: maildir needs a directory, as in maildir:/var/mail")]
    EmptyPath(String),
    /// A host without a usable port.
    #[error("route {route:?}: host {host:?} needs a port, as in 192.0.2.10:24 or [2001:db8::1]:24")]
    BadHost {
        /// The whole route.
        route: String,
        /// The host entry at fault.
        host: String,
    },
}

impl FromStr for Route {
    type Err = RouteError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (transport, rest) = text
            .split_once(':')
            .ok_or_else(|| RouteError::UnknownTransport(text.into()))?;
        let protocol = match transport.to_ascii_lowercase().as_str() {
            "maildir" if rest.is_empty() => return Err(RouteError::EmptyPath(text.into())),
            "maildir" => return Ok(Route::Maildir(PathBuf::from(rest))),
            "lmtp" => Protocol::Lmtp,
            "smtp" => Protocol::Smtp,
            _ => return Err(RouteError::UnknownTransport(text.into())),
        };

        let hosts: Vec<String> = rest
            .split(',')
            .map(|host| host.trim().to_string())
            .collect();
        for host in &hosts {
            let port = host.rsplit_once(':').map(|(_, port)| port);
            let host_part = host
                .rsplit_once(':')
                .map(|(name, _)| name)
                .unwrap_or_default();
            if host_part.is_empty() || port.and_then(|port| port.parse::<u16>().ok()).is_none() {
                return Err(RouteError::BadHost {
                    route: text.into(),
                    host: host.clone(),
                });
            }
        }
        Ok(Route::Relay { protocol, hosts })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Maildir(path) => write!(f, "maildir:{}", path.display()),
            Route::Relay {
                protocol: Protocol::Lmtp,
                hosts,
            } => write!(f, "lmtp:{}", hosts.join(",")),
            Route::Relay {
                protocol: Protocol::Smtp,
                hosts,
            } => write!(f, "smtp:{}", hosts.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_transport() {
        assert_eq!(
            "maildir:/var/mail".parse(),
            Ok(Route::Maildir("/var/mail".into()))
        );
        assert_eq!(
            "lmtp:192.0.2.10:24, [2001:db8::1]:24".parse(),
            Ok(Route::Relay {
                protocol: Protocol::Lmtp,
                hosts: vec!["192.0.2.10:24".into(), "[2001:db8::1]:24".into()],
            })
        );
    }

    #[test]
    fn refuses_routes_it_cannot_follow() {
        assert!(matches!(
            "mbox:/x".parse::<Route>(),
            Err(RouteError::UnknownTransport(_))
        ));
        assert!(matches!(
            "smtp:192.0.2.1".parse::<Route>(),
            Err(RouteError::BadHost { .. })
        ));
        assert!(matches!(
            "maildir:".parse::<Route>(),
            Err(RouteError::EmptyPath(_))
        ));
    }
}
