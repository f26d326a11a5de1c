//! The connection to Redis: plain TCP or TLS with our rustls config.
use super::*;

/// A connection to Redis: plain TCP or TLS (our rustls config), then AUTH
/// and SELECT by the client library.
pub(super) async fn open(s: &StoreSettings) -> Result<MultiplexedConnection, StoreError> {
    let addr = s.addr();
    let tcp = tokio::time::timeout(s.timeout, TcpStream::connect((s.host.as_str(), s.port)))
        .await
        .map_err(|_| StoreError::Timeout {
            addr: addr.clone(),
            timeout: s.timeout,
        })?
        .map_err(|source| StoreError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let info = redis::RedisConnectionInfo {
        db: s.db,
        username: s.username.clone(),
        password: s.password.clone(),
        ..Default::default()
    };
    match &s.tls {
        None => handshake(&addr, &info, tcp, s.timeout).await,
        Some(t) => {
            let config = tls_config(t)?;
            let name = t.server_name.clone().unwrap_or_else(|| s.host.clone());
            let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|_| StoreError::Tls(format!("invalid server name {name:?}")))?;
            let stream = tokio::time::timeout(
                s.timeout,
                tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
            )
            .await
            .map_err(|_| StoreError::Timeout {
                addr: addr.clone(),
                timeout: s.timeout,
            })?
            .map_err(|source| StoreError::Connect {
                addr: addr.clone(),
                source,
            })?;
            handshake(&addr, &info, stream, s.timeout).await
        }
    }
}

async fn handshake<S>(
    addr: &str,
    info: &redis::RedisConnectionInfo,
    stream: S,
    timeout: Duration,
) -> Result<MultiplexedConnection, StoreError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (conn, driver) = tokio::time::timeout(
        timeout,
        MultiplexedConnection::new_with_response_timeout(info, stream, Some(timeout)),
    )
    .await
    .map_err(|_| StoreError::Timeout {
        addr: addr.to_owned(),
        timeout,
    })?
    .map_err(|source| StoreError::Redis {
        addr: addr.to_owned(),
        source,
    })?;
    // The driver ends when the connection closes (our handle dropped).
    tokio::spawn(driver);
    Ok(conn)
}

fn tls_config(t: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, StoreError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca_pem {
        Some(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| StoreError::Tls(format!("CA bundle: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| StoreError::Tls(format!("CA bundle: {e}")))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    if roots.is_empty() {
        return Err(StoreError::Tls("no CA certificates".into()));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Tls(e.to_string()))?
    .with_root_certificates(roots);
    let config = match &t.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| StoreError::Tls(format!("client certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| StoreError::Tls(format!("client key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| StoreError::Tls(e.to_string()))?
        }
    };
    Ok(Arc::new(config))
}
