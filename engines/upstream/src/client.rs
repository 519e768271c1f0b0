//! The HTTP client every upstream engine shares: HTTP/1.1 connections to one server's base
//! URL, each driven by the task that reads its answer, with bounded bodies and connection
//! failures mapped to our errors.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dynamo_core::Error;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use tower::Service;

use crate::connection::{Link, Pool, ResponseBody};

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

/// An HTTP/1.1 client for one server, named by its base URL (`http://host:port`, with an
/// optional path prefix); cheap to clone, and its clones share one pool of idle connections.
///
/// A request runs its connection in the task that awaits the answer and reads its body
/// ([`ResponseBody`]), not in a task of its own: the bytes the server sent are decoded as the
/// body is read, without a wake-up between tasks per frame. A connection whose answer was read
/// to its end goes back to the pool; one dropped before that is closed.
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
    connector: HttpConnector,
    /// `http://host:port`, what the connector dials.
    server: Uri,
    /// The `Host` header.
    host: hyper::header::HeaderValue,
    /// The base URL's path, without a trailing slash (empty for none).
    prefix: Arc<str>,
    base: Arc<str>,
    authorization: Option<Arc<str>>,
    /// Headers this client adds to every request ([`header`](HttpClient::header)).
    headers: Arc<[(hyper::header::HeaderName, hyper::header::HeaderValue)]>,
    pool: Arc<Pool>,
}

impl HttpClient {
    /// A client for the server at `base_url`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `base_url` is not an `http://` URL with a host.
    pub fn new(base_url: &str, config: HttpConfig) -> Result<Self, Error> {
        let base = base_url.trim_end_matches('/');
        let bad = |error: &dyn fmt::Display| {
            Error::invalid_request(format!("bad URL {base_url:?}: {error}"))
        };
        let uri: Uri = base.parse().map_err(|error| bad(&error))?;
        let authority = match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(authority)) if !authority.host().is_empty() => authority.clone(),
            _ => {
                return Err(Error::invalid_request(format!(
                    "the upstream URL {base_url:?} must be http://host[:port] (no TLS here: put \
                     a TLS-terminating proxy in front of an https-only server)"
                )));
            }
        };
        let server = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|error| bad(&error))?;
        let host = hyper::header::HeaderValue::from_str(authority.as_str())
            .map_err(|error| bad(&error))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        Ok(HttpClient {
            connector,
            server,
            host,
            prefix: uri.path().trim_end_matches('/').into(),
            base: base.into(),
            authorization: config.api_key.map(|key| format!("Bearer {key}").into()),
            headers: Arc::new([]),
            pool: Arc::new(Pool {
                idle: Mutex::new(VecDeque::new()),
                max_idle: config.pool_max_idle,
                idle_timeout: config.pool_idle_timeout,
            }),
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// This client, sending `name: value` with every request as well (for example vLLM's
    /// `X-data-parallel-rank`, which pins a request to one data-parallel engine), in place of
    /// any value it gave `name` before. The client it came from is unchanged; the two share
    /// their pool of idle connections, since a connection carries no header of its own.
    ///
    /// ```
    /// use dynamo_upstream::{HttpClient, HttpConfig};
    ///
    /// let client = HttpClient::new("http://127.0.0.1:8000", HttpConfig::default())?;
    /// let rank_1 = client.header("x-data-parallel-rank", "1")?;
    /// assert_eq!(rank_1.base_url(), client.base_url());
    /// assert!(client.header("bad name", "1").is_err());
    /// # Ok::<(), dynamo_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `name` is not a header name or `value` not a header value.
    pub fn header(&self, name: &str, value: &str) -> Result<Self, Error> {
        let name = hyper::header::HeaderName::try_from(name)
            .map_err(|error| Error::invalid_request(format!("header {name:?}: {error}")))?;
        let value = hyper::header::HeaderValue::try_from(value)
            .map_err(|error| Error::invalid_request(format!("header {name} value: {error}")))?;
        let mut client = self.clone();
        let mut headers: Vec<_> = self
            .headers
            .iter()
            .filter(|(other, _)| *other != name)
            .cloned()
            .collect();
        headers.push((name, value));
        client.headers = headers.into();
        Ok(client)
    }

    /// `POST` a JSON body to `path` (relative to the base URL); the response head, with its
    /// body still to read.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the server cannot be reached or the connection fails
    /// before a response head arrives.
    pub async fn post_json(
        &self,
        path: &str,
        body: Bytes,
    ) -> Result<Response<ResponseBody>, Error> {
        self.send(hyper::Method::POST, path, body).await
    }

    /// `GET` `path` (relative to the base URL).
    ///
    /// # Errors
    ///
    /// As [`post_json`](Self::post_json).
    pub async fn get(&self, path: &str) -> Result<Response<ResponseBody>, Error> {
        self.send(hyper::Method::GET, path, Bytes::new()).await
    }

    fn request(
        &self,
        method: &hyper::Method,
        path: &str,
        body: &Bytes,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, self.host.clone());
        if *method == hyper::Method::POST {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(value) = &self.authorization {
            builder = builder.header(hyper::header::AUTHORIZATION, value.as_ref());
        }
        for (name, value) in self.headers.iter() {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(body.clone()))
            .map_err(|error| Error::internal(format!("bad request to {path}: {error}")))
    }

    async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<ResponseBody>, Error> {
        let url = || format!("{}{path}", self.base);
        loop {
            let request = self.request(&method, path, &body)?;
            let (link, reused) = match self.pool.checkout() {
                Some(link) => (link, true),
                None => (
                    self.connect().await.map_err(|error| {
                        Error::unavailable(format!("cannot connect to {}", url()))
                            .with_source(error)
                    })?,
                    false,
                ),
            };
            match link.send(request).await {
                Ok((head, link)) => {
                    return Ok(head.map(|body| ResponseBody {
                        body,
                        link: link.map(|link| (link, Arc::clone(&self.pool))),
                    }));
                }
                // A pooled connection the server closed before the request went out (canceled),
                // or while it was on its way, before any of an answer (an incomplete message: a
                // server that closes a kept-alive connection soon after an answer, as llama.cpp's
                // does after a streamed one, races the next request). The server answered
                // nothing on it, so the request goes on a new connection, as curl and Go's
                // client retry a reused connection that died before an answer.
                Err(error) if reused && (error.is_canceled() || error.is_incomplete_message()) => {
                    continue;
                }
                Err(error) => {
                    return Err(
                        Error::unavailable(format!("no answer from {}", url())).with_source(error)
                    );
                }
            }
        }
    }

    async fn connect(&self) -> Result<Link, Box<dyn std::error::Error + Send + Sync>> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        let io = connector.call(self.server.clone()).await?;
        let (sender, connection) = http1::handshake(io).await?;
        Ok(Link { sender, connection })
    }
}

/// Read a whole body of at most `limit` bytes (an error body, a metrics page).
///
/// # Errors
///
/// [`Error::Unavailable`] when the connection fails mid-body; [`Error::Internal`] when the body
/// is larger than `limit`.
pub async fn read_body(body: ResponseBody, limit: usize) -> Result<Bytes, Error> {
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
