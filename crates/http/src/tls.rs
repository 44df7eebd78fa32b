//! TLS for the edge: loading the certificate and key into a server configuration, and the
//! non-blocking record I/O a connection does through rustls (the handshake, reading plaintext,
//! flushing records with or without a deadline).
//!
//! The record I/O is kept here, apart from the connection state machine in `conn.rs`, so that
//! file reads as phases and transitions; these helpers know only rustls, the socket and a
//! deadline.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rustls::{ServerConfig, ServerConnection};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::sys;

/// Builds a server TLS configuration (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`) from a
/// PEM certificate chain (leaf first) and a PEM private key in PKCS#8, PKCS#1 or SEC1 form.
///
/// Errors name the file and the problem, as they end up in front of an operator.
pub fn load_tls_config(
    cert_pem_path: impl AsRef<Path>,
    key_pem_path: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, String> {
    let cert_path = cert_pem_path.as_ref();
    let key_path = key_pem_path.as_ref();
    let cert_pem = std::fs::read(cert_path).map_err(|e| {
        format!(
            "cannot read TLS certificate file {}: {e}",
            cert_path.display()
        )
    })?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS certificate file {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate file {}: no PEM CERTIFICATE block found",
            cert_path.display()
        ));
    }
    let key_pem = std::fs::read(key_path)
        .map_err(|e| format!("cannot read TLS key file {}: {e}", key_path.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "TLS key file {}: no PEM private key found (expected PKCS#8, PKCS#1 or SEC1)",
            key_path.display()
        ),
        e => format!("TLS key file {}: {e}", key_path.display()),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "TLS certificate {} and key {} cannot be used: {e}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    // We speak HTTP/1.1 only; saying so lets an h2-only client fail cleanly at the handshake.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads decrypted bytes into `out`, pulling TLS records from the socket only when rustls has no
/// plaintext left: rustls bounds its own buffers, and we never ask for more than `out` holds.
pub(crate) fn read_plaintext(
    tls: &mut ServerConnection,
    stream: &mut TcpStream,
    out: &mut [u8],
) -> io::Result<usize> {
    loop {
        match tls.reader().read(out) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        match tls.read_tls(stream) {
            Ok(0) => return Ok(0),
            Ok(_) => process_packets(tls, stream)?,
            Err(e) => return Err(e),
        }
    }
}

/// Socket reads per handshake step at most. A real client's handshake messages take one or
/// two; one that keeps sending records (rustls accepts up to 64 KiB of ClientHello, in records
/// as small as it likes) waits for its next turn in the poll loop instead of holding the I/O
/// thread.
const HANDSHAKE_READS_PER_STEP: usize = 4;

/// Drives a TLS handshake as far as it goes without blocking, and without reading more than
/// [`HANDSHAKE_READS_PER_STEP`] times; `true` once complete. Never blocks: writes that do not
/// fit wait for POLLOUT (see [`flush_tls`]).
pub(crate) fn handshake(tls: &mut ServerConnection, stream: &mut TcpStream) -> io::Result<bool> {
    for _ in 0..HANDSHAKE_READS_PER_STEP {
        flush_tls(tls, stream)?;
        if !tls.is_handshaking() {
            return Ok(true);
        }
        match tls.read_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => process_packets(tls, stream)?,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Out of reads for this turn; the rest of the input is still readable for the next one.
    flush_tls(tls, stream)?;
    Ok(!tls.is_handshaking())
}

/// Decrypts what was read; on a protocol error, tries to send the alert rustls queued.
pub(crate) fn process_packets(
    tls: &mut ServerConnection,
    stream: &mut TcpStream,
) -> io::Result<()> {
    match tls.process_new_packets() {
        Ok(_) => flush_tls(tls, stream),
        Err(e) => {
            let _ = flush_tls(tls, stream);
            Err(io::Error::new(io::ErrorKind::InvalidData, e))
        }
    }
}

/// Writes pending TLS records without blocking; what does not fit waits for POLLOUT.
pub(crate) fn flush_tls(tls: &mut ServerConnection, stream: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all pending TLS records, waiting for the socket until `deadline`.
pub(crate) fn flush_tls_until(
    tls: &mut ServerConnection,
    stream: &mut TcpStream,
    deadline: Instant,
) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sys::wait_writable(stream.as_raw_fd(), deadline)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
