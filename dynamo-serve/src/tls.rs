//! TLS: the gateway's HTTP edge (`--tls-cert`, `--tls-key`), and the request plane between the
//! frontend and its workers and the KV block transfers between prefill and decode workers
//! (`--plane-tls-*`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dynamo_kvbm::transfer::{BlockStream, SocketWrap};
use dynamo_transport::Tcp;
use dynamo_transport::tcp::PlaneTls;
use futures::FutureExt;
use futures::future::BoxFuture;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tls_listener::rustls::TlsAcceptor;

/// How long a client may take over the TLS handshake before its connection is dropped.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's certificate chain and key (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone)]
pub(crate) struct EdgeFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// The request plane's authority, certificate and key (`--plane-tls-ca`, `--plane-tls-cert`,
/// `--plane-tls-key`), whether workers ask clients for a certificate (`--plane-tls-mutual`),
/// and the name checked in workers' certificates instead of their address (`--plane-tls-name`).
#[derive(Debug, Clone)]
pub(crate) struct PlaneFiles {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) mutual: bool,
    pub(crate) name: Option<String>,
}

/// The TCP request plane, over TLS when `plane` says so.
pub(crate) fn request_plane(plane: Option<&PlaneFiles>) -> Result<Tcp, Box<dyn std::error::Error>> {
    let Some(files) = plane else {
        return Ok(Tcp::new());
    };
    tracing::info!(
        mutual = files.mutual,
        "the request plane runs over TLS ({})",
        files.ca.display()
    );
    Ok(Tcp::new().tls(plane_tls(files)?))
}

/// The TLS of `--plane-tls-*`.
fn plane_tls(files: &PlaneFiles) -> Result<PlaneTls, Box<dyn std::error::Error>> {
    let mut tls = PlaneTls::from_files(&files.ca, &files.cert, &files.key)?.mutual(files.mutual)?;
    if let Some(name) = &files.name {
        tls = tls.verify_name(name)?;
    }
    Ok(tls)
}

/// KV block transfers over the request plane's TLS when `plane` says so: the prefill worker's
/// block server presents the worker's certificate (and asks for the puller's when mutual); a
/// decode worker checks it as the frontend checks a worker's.
pub(crate) fn kv_transfers(
    plane: Option<&PlaneFiles>,
) -> Result<Option<Arc<dyn SocketWrap>>, Box<dyn std::error::Error>> {
    let Some(files) = plane else {
        return Ok(None);
    };
    Ok(Some(Arc::new(KvTls(plane_tls(files)?))))
}

/// [`PlaneTls`] as the KV block protocol's [`SocketWrap`].
#[derive(Debug)]
struct KvTls(PlaneTls);

impl SocketWrap for KvTls {
    fn server(
        &self,
        socket: tokio::net::TcpStream,
    ) -> BoxFuture<'static, std::io::Result<Box<dyn BlockStream>>> {
        let tls = self.0.clone();
        async move { Ok(Box::new(tls.accept(socket).await?) as Box<dyn BlockStream>) }.boxed()
    }

    fn client(
        &self,
        socket: tokio::net::TcpStream,
    ) -> BoxFuture<'static, std::io::Result<Box<dyn BlockStream>>> {
        let tls = self.0.clone();
        async move {
            let server = socket.peer_addr()?;
            Ok(Box::new(tls.connect(server, socket).await?) as Box<dyn BlockStream>)
        }
        .boxed()
    }
}

/// The gateway's TLS acceptor: the chain and key of `files`, HTTP/1.1 announced by ALPN.
pub(crate) fn edge_acceptor(files: &EdgeFiles) -> Result<TlsAcceptor, Box<dyn std::error::Error>> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| unusable(&files.cert, error))?;
    if chain.is_empty() {
        return Err(unusable(&files.cert, "no certificate in it"));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|error| unusable(&files.key, error))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| unusable(&files.key, error))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn unusable(path: &Path, error: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    format!("TLS: {} cannot be used: {error}", path.display()).into()
}
