//! A small client for etcd's JSON gateway: the calls discovery makes, an auth token for a
//! user, and HTTPS.

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::Error;

/// How long one etcd call may take before the registry counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How to reach an etcd that asks for a user or serves HTTPS, beyond what its URL says.
///
/// A user and password go in the URL (`http://USER:PASSWORD@HOST:2379`), as they do for NATS;
/// they are taken out of it, exchanged for an auth token (`/v3/auth/authenticate`, again when
/// etcd says the token expired), and never shown in an error or a log line. An `https://` URL
/// needs [`root_certificate`](Self::root_certificate).
#[derive(Debug, Clone, Default)]
pub struct EtcdAccess {
    /// A PEM certificate authority to trust for etcd's certificate.
    pub root_certificate: Option<PathBuf>,
    /// A client certificate and its key (PEM), for an etcd started with
    /// `--client-cert-auth`.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// A small client for the parts of etcd's API that discovery needs.
#[derive(Clone)]
pub(super) struct Etcd {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The URL without credentials.
    endpoint: String,
    /// The user and password of the URL.
    user: Option<Arc<(String, String)>>,
    /// The auth token they were exchanged for.
    token: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The user's name, never the password or the token.
        f.debug_struct("Etcd")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user.as_ref().map(|user| &user.0))
            .finish_non_exhaustive()
    }
}

impl Etcd {
    pub(super) fn new(endpoint: &str, access: &EtcdAccess) -> Result<Self, Error> {
        let (endpoint, user) = split_user(endpoint.trim_end_matches('/'));
        let bad = || Error::BadEndpoint {
            endpoint: endpoint.clone(),
        };
        let uri: hyper::Uri = endpoint.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        if uri.host().is_none() || (https && access.root_certificate.is_none()) {
            return Err(bad());
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match &access.root_certificate {
            Some(authority) => {
                let read = |path: &PathBuf| {
                    std::fs::read(path).map_err(|error| Error::BadTls {
                        what: "a file",
                        reason: format!("{}: {error}", path.display()),
                    })
                };
                let identity = match &access.client_certificate {
                    Some((chain, key)) => Some((read(chain)?, read(key)?)),
                    None => None,
                };
                let config = crate::tcp::client_config(
                    &read(authority)?,
                    identity.as_ref().map(|(chain, key)| (&chain[..], &key[..])),
                )?;
                connector.with_tls_config(config)
            }
            None => connector.with_tls_config(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|error| Error::BadTls {
                    what: "the protocol versions",
                    reason: error.to_string(),
                })?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            ),
        };
        let http = Client::builder(TokioExecutor::new())
            .build(connector.https_or_http().enable_http1().build());
        Ok(Etcd {
            http,
            endpoint,
            user: user.map(Arc::new),
            token: Arc::default(),
        })
    }

    /// The auth token to send, asking etcd for one first when there is a user and none yet.
    async fn token(&self) -> Result<Option<String>, Error> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        if let Some(token) = self.token.lock().clone() {
            return Ok(Some(token));
        }
        let (name, password) = (&user.0, &user.1);
        let body = json!({ "name": name, "password": password });
        let answer = self.send("/v3/auth/authenticate", &body, None).await?;
        let token = answer["token"]
            .as_str()
            .ok_or_else(|| self.unavailable("/v3/auth/authenticate: no token"))?
            .to_owned();
        *self.token.lock() = Some(token.clone());
        Ok(Some(token))
    }

    pub(super) fn unavailable(&self, reason: impl Display) -> Error {
        Error::RegistryUnavailable {
            registry: self.endpoint.clone(),
            reason: reason.to_string(),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Result<hyper::Response<Incoming>, Error> {
        let token = self.token().await?;
        self.post_with(path, body, token.as_deref()).await
    }

    async fn post_with(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<hyper::Response<Incoming>, Error> {
        let mut request = hyper::Request::post(format!("{}{path}", self.endpoint))
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, token);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|error| self.unavailable(error))?;
        self.http
            .request(request)
            .await
            .map_err(|error| self.unavailable(format!("{path}: {error}")))
    }

    /// One call and its whole answer; an etcd error is [`Error::RegistryUnavailable`]. An
    /// expired auth token is renewed once.
    pub(super) async fn call(&self, path: &str, body: Value) -> Result<Value, Error> {
        let token = self.token().await?;
        match self.send(path, &body, token.as_deref()).await {
            Err(Error::RegistryUnavailable { reason, .. })
                if token.is_some() && reason.contains("invalid auth token") =>
            {
                *self.token.lock() = None;
                let token = self.token().await?;
                self.send(path, &body, token.as_deref()).await
            }
            answered => answered,
        }
    }

    async fn send(&self, path: &str, body: &Value, token: Option<&str>) -> Result<Value, Error> {
        let answer = async {
            let response = self.post_with(path, body, token).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|error| self.unavailable(format!("{path}: {error}")))?
                .to_bytes();
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|error| self.unavailable(format!("{path}: not JSON: {error}")))?;
            if let Some(message) = value.get("message").or(value.get("error")) {
                return Err(self.unavailable(format!("{path}: {message}")));
            }
            if !status.is_success() {
                return Err(self.unavailable(format!("{path}: HTTP {status}")));
            }
            Ok(value)
        };
        tokio::time::timeout(CALL_TIMEOUT, answer)
            .await
            .map_err(|_| self.unavailable(format!("{path}: no answer within {CALL_TIMEOUT:?}")))?
    }

    pub(super) async fn grant(&self, ttl: Duration) -> Result<i64, Error> {
        let seconds = ttl.as_secs().max(1);
        let answer = self
            .call("/v3/lease/grant", json!({ "TTL": seconds }))
            .await?;
        integer(&answer["ID"]).ok_or_else(|| self.unavailable("lease grant without an ID"))
    }

    /// Renew a lease; `false` when it has already expired.
    pub(super) async fn keep_alive(&self, lease: i64) -> Result<bool, Error> {
        let answer = self
            .call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))
            .await?;
        Ok(integer(&answer["result"]["TTL"]).unwrap_or(0) > 0)
    }

    pub(super) async fn revoke(&self, lease: i64) -> Result<(), Error> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .await
            .map(drop)
    }

    pub(super) async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), Error> {
        let body = json!({
            "key": BASE64.encode(key),
            "value": BASE64.encode(value),
            "lease": lease.to_string(),
        });
        self.call("/v3/kv/put", body).await.map(drop)
    }

    /// Every key under `prefix` and its value, and the store's revision they were read at.
    pub(super) async fn range(&self, prefix: &str) -> Result<(i64, Vec<(String, Vec<u8>)>), Error> {
        let body = json!({ "key": BASE64.encode(prefix), "range_end": range_end(prefix) });
        let answer = self.call("/v3/kv/range", body).await?;
        let revision = integer(&answer["header"]["revision"]).unwrap_or(0);
        let pairs = answer["kvs"]
            .as_array()
            .map(|kvs| kvs.iter().filter_map(key_value).collect())
            .unwrap_or_default();
        Ok((revision, pairs))
    }

    /// The open watch response for keys under `prefix`, from `revision` on.
    pub(super) async fn watch(&self, prefix: &str, revision: i64) -> Result<Incoming, Error> {
        let body = json!({ "create_request": {
            "key": BASE64.encode(prefix),
            "range_end": range_end(prefix),
            "start_revision": revision.to_string(),
        }});
        let response = tokio::time::timeout(CALL_TIMEOUT, self.post("/v3/watch", &body))
            .await
            .map_err(|_| self.unavailable("/v3/watch: no answer"))??;
        if !response.status().is_success() {
            return Err(self.unavailable(format!("/v3/watch: HTTP {}", response.status())));
        }
        Ok(response.into_body())
    }
}

/// `endpoint` without the `USER:PASSWORD@` it may carry, and that user and password.
fn split_user(endpoint: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return (endpoint.to_owned(), None);
    };
    match rest.split_once('@') {
        Some((user, host)) => {
            let (name, password) = user.split_once(':').unwrap_or((user, ""));
            (
                format!("{scheme}://{host}"),
                Some((name.to_owned(), password.to_owned())),
            )
        }
        None => (endpoint.to_owned(), None),
    }
}

/// The first key after every key that starts with `prefix`, base64-encoded.
fn range_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return BASE64.encode(end);
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    BASE64.encode([0])
}

/// A 64-bit integer that the gateway writes as a string (or, from older versions, a number).
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// A key and its value from one of etcd's `kv` objects (keys and values base64-encoded).
pub(super) fn key_value(kv: &Value) -> Option<(String, Vec<u8>)> {
    let key = BASE64.decode(kv["key"].as_str()?).ok()?;
    // A deleted key's value is absent: empty.
    let value = kv["value"]
        .as_str()
        .and_then(|value| BASE64.decode(value).ok())
        .unwrap_or_default();
    Some((String::from_utf8(key).ok()?, value))
}
