//! The flags that join a deployment's processes (discovery, NATS, etcd and their access) and
//! the request plane's TLS: shared by `dynamo-serve worker`, `frontend` and `planner`.

use std::path::PathBuf;

use clap::Args;
use dynamo_transport::discovery::EtcdAccess;
use dynamo_transport::events::NatsAccess;

/// The flags that join processes: the worker and the frontend.
#[derive(Debug, Args)]
#[command(next_help_heading = "Deployment")]
pub(super) struct DeploymentArgs {
    /// NATS for KV events and load reports (nats://HOST:PORT)
    #[arg(long, value_name = "URL")]
    pub(super) nats: Option<String>,
    /// Discovery through etcd (http://HOST:PORT)
    #[arg(long, value_name = "URL", conflicts_with = "registry")]
    pub(super) etcd: Option<String>,
    /// Discovery through a shared directory of JSON records
    #[arg(long, value_name = "DIR", conflicts_with = "kubernetes_discovery")]
    pub(super) registry: Option<PathBuf>,
    /// Discovery through Kubernetes: each worker keeps a Lease labelled
    /// dynamo/deployment=NS (the --namespace), owned by its pod when POD_NAME and POD_UID are
    /// set. The client is configured as kubectl's (KUBECONFIG, ~/.kube/config or the pod's
    /// service account). Needs a dynamo-serve built with --features kube
    #[arg(long, conflicts_with = "etcd")]
    pub(super) kubernetes_discovery: bool,
    /// The Kubernetes namespace of the Leases (--kubernetes-discovery) and of the planner's
    /// --kubernetes-deployment objects [default: the kubeconfig's, or the pod's]
    #[arg(long, value_name = "NAME")]
    pub(super) kubernetes_namespace: Option<String>,
    /// Deployment name: etcd key prefix, NATS subject prefix and the Kubernetes Leases' label
    #[arg(long, value_name = "NS", default_value = "dynamo")]
    pub(super) namespace: String,
    /// NATS credentials file (a user JWT and NKey seed, as `nsc` writes). A user and password
    /// or a token can instead go in --nats (nats://USER:PASSWORD@HOST:PORT); they are never
    /// logged
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub(super) nats_creds: Option<PathBuf>,
    /// A certificate authority (PEM) to trust for the NATS server's certificate; NATS is then
    /// reached over TLS only
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub(super) nats_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for a NATS server that verifies clients
    #[arg(long, value_name = "FILE", requires_all = ["nats", "nats_tls_key"])]
    pub(super) nats_tls_cert: Option<PathBuf>,
    /// The key of --nats-tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "nats_tls_cert")]
    pub(super) nats_tls_key: Option<PathBuf>,
    /// A certificate authority (PEM) to trust for etcd's certificate (an https:// --etcd). A
    /// user and password go in --etcd (http://USER:PASSWORD@HOST:PORT); they are never logged
    #[arg(long, value_name = "FILE", requires = "etcd")]
    pub(super) etcd_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for an etcd started with --client-cert-auth
    #[arg(long, value_name = "FILE", requires_all = ["etcd_tls_ca", "etcd_tls_key"])]
    pub(super) etcd_tls_cert: Option<PathBuf>,
    /// The key of --etcd-tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "etcd_tls_cert")]
    pub(super) etcd_tls_key: Option<PathBuf>,
}

impl DeploymentArgs {
    pub(super) fn nats_access(&self) -> NatsAccess {
        NatsAccess {
            credentials_file: self.nats_creds.clone(),
            root_certificate: self.nats_tls_ca.clone(),
            client_certificate: self.nats_tls_cert.clone().zip(self.nats_tls_key.clone()),
            require_tls: self.nats_tls_ca.is_some(),
        }
    }

    pub(super) fn etcd_access(&self) -> EtcdAccess {
        EtcdAccess {
            root_certificate: self.etcd_tls_ca.clone(),
            client_certificate: self.etcd_tls_cert.clone().zip(self.etcd_tls_key.clone()),
        }
    }
}

/// TLS between the frontend and its workers, and between prefill and decode workers' KV block
/// transfers: the worker's and the frontend's flags.
#[derive(Debug, Args)]
#[command(next_help_heading = "Request-plane TLS")]
pub(super) struct PlaneTlsArgs {
    /// The deployment's certificate authority (PEM): the request plane and KV block transfers
    /// run over TLS, and only workers with a certificate it signed are used
    #[arg(long, value_name = "FILE", requires_all = ["plane_tls_cert", "plane_tls_key"])]
    pub(super) plane_tls_ca: Option<PathBuf>,
    /// This process's certificate chain (PEM), signed by --plane-tls-ca; a worker's must name
    /// the address it registers (or --plane-tls-name)
    #[arg(long, value_name = "FILE", requires = "plane_tls_ca")]
    pub(super) plane_tls_cert: Option<PathBuf>,
    /// The private key of --plane-tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "plane_tls_ca")]
    pub(super) plane_tls_key: Option<PathBuf>,
    /// Mutual TLS: a worker serves only clients with a certificate from --plane-tls-ca
    #[arg(long, requires = "plane_tls_ca")]
    pub(super) plane_tls_mutual: bool,
    /// Check this name in workers' certificates instead of their addresses
    #[arg(long, value_name = "NAME", requires = "plane_tls_ca")]
    pub(super) plane_tls_name: Option<String>,
}

impl PlaneTlsArgs {
    pub(super) fn files(self) -> Option<crate::tls::PlaneFiles> {
        Some(crate::tls::PlaneFiles {
            ca: self.plane_tls_ca?,
            cert: self.plane_tls_cert?,
            key: self.plane_tls_key?,
            mutual: self.plane_tls_mutual,
            name: self.plane_tls_name,
        })
    }
}
