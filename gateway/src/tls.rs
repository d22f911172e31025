//! STARTTLS certificates: the configured ones, or a self-signed one made on first start.
//!
//! An MX without a certificate from a public CA still benefits from TLS: senders encrypt
//! opportunistically and do not verify (RFC 3207 section 4; RFC 7435), so a self-signed
//! certificate kept across restarts is what an appliance should start with.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why STARTTLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read or written.
    #[error("TLS file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file holds no certificate or no private key in PEM form.
    #[error("TLS file {path}: no {what} found in PEM form")]
    Missing {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// The self-signed certificate could not be made.
    #[error("making a self-signed certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key (for example, they do not match).
    #[error("TLS certificate and key refused: {0}")]
    Refused(#[from] rustls::Error),
}

/// Builds the TLS acceptor from `certificate` and `private_key` PEM files, or from the
/// self-signed pair in `data_dir/tls/` (made now for `hostname` if absent).
///
/// # Errors
/// Fails when the files cannot be read, hold no usable PEM, or do not match.
pub fn acceptor(
    configured: Option<(&Path, &Path)>,
    data_dir: &Path,
    hostname: &str,
) -> Result<TlsAcceptor, TlsError> {
    let (certificate, private_key) = match configured {
        Some((certificate, private_key)) => (certificate.to_path_buf(), private_key.to_path_buf()),
        None => self_signed(data_dir, hostname)?,
    };

    let chain = read_certificates(&certificate)?;
    let key = read_private_key(&private_key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The paths of the self-signed pair, made on first use and kept.
fn self_signed(data_dir: &Path, hostname: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = data_dir.join("tls");
    let certificate = dir.join("cert.pem");
    let private_key = dir.join("key.pem");
    if certificate.exists() && private_key.exists() {
        return Ok((certificate, private_key));
    }

    let file_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::File { path, source }
    };
    // Where the private key lives: its owner's alone.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(file_error(&dir))?;
    let made = rcgen::generate_simple_self_signed(vec![hostname.to_string()])?;
    write_private(&private_key, made.key_pair.serialize_pem().as_bytes())
        .map_err(file_error(&private_key))?;
    fs::write(&certificate, made.cert.pem()).map_err(file_error(&certificate))?;
    tracing::info!(path = %certificate.display(), hostname, "self-signed TLS certificate made");
    Ok((certificate, private_key))
}

/// Writes a file only its owner can read, as a private key must be.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;

    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::File {
        path: path.into(),
        source,
    })?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::File {
            path: path.into(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::Missing {
            path: path.into(),
            what: "certificate",
        });
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::File {
        path: path.into(),
        source,
    })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::File {
            path: path.into(),
            source,
        })?
        .ok_or(TlsError::Missing {
            path: path.into(),
            what: "private key",
        })
}
