//! The HTTP client every upstream engine shares: hyper's pooled HTTP/1.1 client bound to one
//! server's base URL, with bounded bodies and connection failures mapped to our errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dynamo_core::Error;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How the client connects; [`Default`] suits a server on the same network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// How long a TCP connect may take before the server counts as unavailable (5 s).
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept (90 s).
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per server (64); more may be open while requests run.
    pub pool_max_idle: usize,
    /// Sent as `Authorization: Bearer …` when set (vLLM's `--api-key`).
    pub api_key: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle: 64,
            api_key: None,
        }
    }
}

/// A pooled HTTP/1.1 client for one server, named by its base URL (`http://host:port`, with an
/// optional path prefix); cheap to clone.
///
/// Only `http://` is supported: put a TLS-terminating proxy in front of a server that speaks
/// only HTTPS.
///
/// ```
/// use dynamo_upstream::{HttpClient, HttpConfig};
///
/// let client = HttpClient::new("http://127.0.0.1:8000/", HttpConfig::default())?;
/// assert_eq!(client.base_url(), "http://127.0.0.1:8000");
/// assert!(HttpClient::new("https://example.com", HttpConfig::default()).is_err());
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: Arc<str>,
    authorization: Option<Arc<str>>,
}

impl HttpClient {
    /// A client for the server at `base_url`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `base_url` is not an `http://` URL with a host.
    pub fn new(base_url: &str, config: HttpConfig) -> Result<Self, Error> {
        let base = base_url.trim_end_matches('/');
        let uri: Uri = base
            .parse()
            .map_err(|error| Error::invalid_request(format!("bad URL {base_url:?}: {error}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(Error::invalid_request(format!(
                "the upstream URL {base_url:?} must be http://host[:port] (no TLS here: put a \
                 TLS-terminating proxy in front of an https-only server)"
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle)
            .build(connector);
        Ok(HttpClient {
            client,
            base: base.into(),
            authorization: config.api_key.map(|key| format!("Bearer {key}").into()),
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST` a JSON body to `path` (relative to the base URL); the response head, with its
    /// body still to read.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the server cannot be reached or the connection fails
    /// before a response head arrives.
    pub async fn post_json(&self, path: &str, body: Bytes) -> Result<Response<Incoming>, Error> {
        let request = self
            .request(hyper::Method::POST, path)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|error| Error::internal(format!("bad request to {path}: {error}")))?;
        self.send(request).await
    }

    /// `GET` `path` (relative to the base URL).
    ///
    /// # Errors
    ///
    /// As [`post_json`](Self::post_json).
    pub async fn get(&self, path: &str) -> Result<Response<Incoming>, Error> {
        let request = self
            .request(hyper::Method::GET, path)
            .body(Full::new(Bytes::new()))
            .map_err(|error| Error::internal(format!("bad request to {path}: {error}")))?;
        self.send(request).await
    }

    fn request(&self, method: hyper::Method, path: &str) -> hyper::http::request::Builder {
        let builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        match &self.authorization {
            Some(value) => builder.header(hyper::header::AUTHORIZATION, value.as_ref()),
            None => builder,
        }
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, Error> {
        let uri = request.uri().clone();
        self.client.request(request).await.map_err(|error| {
            let what = if error.is_connect() {
                format!("cannot connect to {uri}")
            } else {
                format!("no answer from {uri}")
            };
            Error::unavailable(what).with_source(error)
        })
    }
}

/// Read a whole body of at most `limit` bytes (an error body, a metrics page).
///
/// # Errors
///
/// [`Error::Unavailable`] when the connection fails mid-body; [`Error::Internal`] when the body
/// is larger than `limit`.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Error> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(Error::internal(
            format!("the upstream answered with a body over {limit} bytes"),
        )),
        Err(error) => Err(Error::Unavailable {
            message: "the upstream connection failed mid-body".to_owned(),
            source: Some(error),
        }),
    }
}
