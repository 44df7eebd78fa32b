//! Loading the TLS certificate and key.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
