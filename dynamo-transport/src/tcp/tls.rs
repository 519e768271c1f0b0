//! TLS on the request plane: the deployment's own certificate authority, one certificate per
//! process, and optionally mutual authentication.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use crate::Error;

/// How long a TLS handshake may take before the connection is dropped: a peer that opens a
/// socket and says nothing holds no task for longer.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for the TCP request plane ([`Tcp::tls`](crate::Tcp::tls)): every process presents a
/// certificate signed by the deployment's certificate authority and trusts that authority
/// alone.
///
/// A client (the frontend, or a router) checks that the worker it connects to holds such a
/// certificate, so nobody can stand in for a worker. With [`mutual`](Self::mutual) the worker
/// also asks the client for one, so that only holders of a certificate can send it requests.
/// A worker's certificate must name the address it is reached at (an IP address
/// subject-alternative name), unless every worker's certificate carries one shared name and
/// clients check that name instead ([`verify_name`](Self::verify_name)).
///
/// rustls with the ring provider does the work; TLS 1.2 and 1.3 are accepted.
///
/// ```no_run
/// use dynamo_transport::Tcp;
/// use dynamo_transport::tcp::PlaneTls;
///
/// let tls = PlaneTls::from_files("ca.pem".as_ref(), "worker.pem".as_ref(), "worker.key".as_ref())?
///     .mutual(true)?;
/// let transport = Tcp::new().tls(tls);
/// # Ok::<(), dynamo_transport::Error>(())
/// ```
#[derive(Clone)]
pub struct PlaneTls {
    authority: Arc<RootCertStore>,
    identity: Arc<Identity>,
    provider: Arc<CryptoProvider>,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    name: Option<ServerName<'static>>,
    mutual: bool,
}

/// A certificate chain and its private key.
pub(crate) struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for PlaneTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("PlaneTls")
            .field("authorities", &self.authority.len())
            .field("chain", &self.identity.chain.len())
            .field("name", &self.name)
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl PlaneTls {
    /// From PEM text: the certificate authority (one or more certificates), this process's
    /// certificate chain (its own certificate first), and its private key (PKCS#8, PKCS#1 or
    /// SEC1).
    ///
    /// # Errors
    ///
    /// [`Error::BadTls`] when a part is missing or cannot be used.
    pub fn from_pem(authority: &[u8], chain: &[u8], key: &[u8]) -> Result<Self, Error> {
        Self::build(
            Arc::new(authority_from_pem(authority)?),
            Arc::new(identity_from_pem(chain, key)?),
            Arc::new(rustls::crypto::ring::default_provider()),
            None,
            false,
        )
    }

    /// [`from_pem`](Self::from_pem), reading the three PEM files.
    ///
    /// # Errors
    ///
    /// [`Error::BadTls`] when a file cannot be read or a part cannot be used.
    pub fn from_files(authority: &Path, chain: &Path, key: &Path) -> Result<Self, Error> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|error| bad(what, format!("{}: {error}", path.display())))
        };
        Self::from_pem(
            &read("the authority", authority)?,
            &read("the certificate chain", chain)?,
            &read("the key", key)?,
        )
    }

    /// Whether a worker asks its clients for a certificate signed by the authority and
    /// refuses those without (mutual TLS). Off by default.
    ///
    /// # Errors
    ///
    /// [`Error::BadTls`] when the authority cannot verify client certificates.
    pub fn mutual(self, mutual: bool) -> Result<Self, Error> {
        Self::build(
            self.authority,
            self.identity,
            self.provider,
            self.name,
            mutual,
        )
    }

    /// Check every worker's certificate against `name` (a DNS name or an IP address) instead
    /// of the address it is reached at.
    ///
    /// # Errors
    ///
    /// [`Error::BadTls`] when `name` is neither.
    pub fn verify_name(mut self, name: &str) -> Result<Self, Error> {
        let name = ServerName::try_from(name.to_owned()).map_err(|error| bad("the name", error))?;
        self.name = Some(name);
        Ok(self)
    }

    /// Whether clients must present a certificate ([`mutual`](Self::mutual)).
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    fn build(
        authority: Arc<RootCertStore>,
        identity: Arc<Identity>,
        provider: Arc<CryptoProvider>,
        name: Option<ServerName<'static>>,
        mutual: bool,
    ) -> Result<Self, Error> {
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| bad("the protocol versions", error))?;
        let server = if mutual {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::clone(&authority),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|error| bad("the authority", error))?;
            server.with_client_cert_verifier(verifier)
        } else {
            server.with_no_client_auth()
        };
        let server = server
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|error| bad("the certificate and key", error))?;
        let client = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| bad("the protocol versions", error))?
            .with_root_certificates(Arc::clone(&authority))
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|error| bad("the certificate and key", error))?;
        Ok(PlaneTls {
            authority,
            identity,
            provider,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            name,
            mutual,
        })
    }

    /// The server's half of the handshake on an accepted `socket`, within 10 s: for other protocols a deployment secures with the same authority
    /// (dynamo-serve's KV block transfers).
    ///
    /// # Errors
    ///
    /// The handshake's I/O error: a client that is not trusted (when mutual), that speaks no
    /// TLS, or that takes too long.
    pub async fn accept(&self, socket: TcpStream) -> std::io::Result<server::TlsStream<TcpStream>> {
        within_timeout(self.acceptor.accept(socket)).await
    }

    /// The client's half of the handshake with the worker at `address` over `socket`, within
    /// 10 s: the worker's certificate must name `address`'s IP (or the name of
    /// [`verify_name`](PlaneTls::verify_name)).
    ///
    /// # Errors
    ///
    /// The handshake's I/O error: a certificate that is not trusted or does not name the
    /// worker, a server that speaks no TLS, or one that takes too long.
    pub async fn connect(
        &self,
        address: SocketAddr,
        socket: TcpStream,
    ) -> std::io::Result<client::TlsStream<TcpStream>> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| ServerName::from(address.ip()));
        within_timeout(self.connector.connect(name, socket)).await
    }
}

/// The certificates of PEM text, as trusted roots.
pub(crate) fn authority_from_pem(authority: &[u8]) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(authority) {
        let certificate = certificate.map_err(|error| bad("the authority", error))?;
        roots
            .add(certificate)
            .map_err(|error| bad("the authority", error))?;
    }
    if roots.is_empty() {
        return Err(bad("the authority", "no certificate in it"));
    }
    Ok(roots)
}

/// A certificate chain and its key from PEM text.
pub(crate) fn identity_from_pem(chain: &[u8], key: &[u8]) -> Result<Identity, Error> {
    let chain = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| bad("the certificate chain", error))?;
    if chain.is_empty() {
        return Err(bad("the certificate chain", "no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|error| bad("the key", error))?;
    Ok(Identity { chain, key })
}

/// A client configuration (ring provider) that trusts the authority in `authority` (PEM) and
/// presents the certificate and key in `identity` (PEM), if given: for HTTPS clients of
/// other services (etcd).
#[cfg(feature = "etcd")]
pub(crate) fn client_config(
    authority: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| bad("the protocol versions", error))?
        .with_root_certificates(authority_from_pem(authority)?);
    match identity {
        Some((chain, key)) => {
            let identity = identity_from_pem(chain, key)?;
            builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(|error| bad("the certificate and key", error))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

async fn within_timeout<T>(
    handshake: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the TLS handshake took too long",
            ))
        })
}

fn bad(what: &'static str, error: impl fmt::Display) -> Error {
    Error::BadTls {
        what,
        reason: error.to_string(),
    }
}
