//! TLS on the one port: `--tls-cert` / `--tls-key` (PEM), rustls with ring, ALPN h2 and
//! http/1.1, so gRPC, gRPC-web, REST and the dashboard all work over it.

use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};

/// The TLS acceptor for `--tls-cert` / `--tls-key` (PEM), offering HTTP/2 and HTTP/1.1 by ALPN.
pub(super) fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => return Err(Error::invalid("--tls-cert and --tls-key go together")),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::invalid(format!("--tls-cert {cert}: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::invalid(format!("--tls-key {key}: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::invalid(format!("TLS certificate and key: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}
