//! Engines served and reached within one process: a table of names, no sockets.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use dynamo_core::{BoxEngine, Error, GenerateRequest, TokenStream};
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::{Served, Transport};

/// The in-process [`Transport`]: [`serve`](Transport::serve) files the engine under a name
/// (`in-process/N`), and [`connect`](Transport::connect) hands back a handle to it. Calls go
/// straight to the engine, readiness included; nothing is serialised. When the serving future
/// is dropped the name is gone: its handles fail with [`Error::Unavailable`] and
/// [`closed`](Transport::closed) fires.
///
/// Clones share the table, so a worker and a router in one process reach each other through
/// clones of one `InProcess`.
#[derive(Debug, Clone, Default)]
pub struct InProcess {
    table: Arc<Table>,
}

#[derive(Debug, Default)]
struct Table {
    endpoints: Mutex<HashMap<String, Endpoint>>,
    next: AtomicU64,
}

#[derive(Debug, Clone)]
struct Endpoint {
    engine: BoxEngine,
    stopped: CancellationToken,
}

impl InProcess {
    /// An empty table.
    pub fn new() -> Self {
        InProcess::default()
    }
}

/// An engine reached through [`InProcess`].
#[derive(Debug, Clone)]
pub struct InProcessEngine {
    address: String,
    endpoint: Endpoint,
}

impl Service<GenerateRequest> for InProcessEngine {
    type Response = TokenStream;
    type Error = Error;
    type Future = <BoxEngine as Service<GenerateRequest>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.endpoint.stopped.is_cancelled() {
            return Poll::Ready(Err(Error::unavailable(format!(
                "{} is no longer served",
                self.address
            ))));
        }
        self.endpoint.engine.poll_ready(cx)
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        self.endpoint.engine.call(request)
    }
}

/// Takes the name out of the table when the serving future is dropped.
struct Withdraw {
    table: Arc<Table>,
    address: String,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some(endpoint) = self.table.endpoints.lock().remove(&self.address) {
            endpoint.stopped.cancel();
        }
    }
}

impl Transport for InProcess {
    type Remote = InProcessEngine;

    async fn serve(&self, engine: BoxEngine) -> Result<Served, Error> {
        let number = self.table.next.fetch_add(1, Ordering::Relaxed);
        let address = format!("in-process/{number}");
        let endpoint = Endpoint {
            engine,
            stopped: CancellationToken::new(),
        };
        self.table
            .endpoints
            .lock()
            .insert(address.clone(), endpoint);
        let withdraw = Withdraw {
            table: Arc::clone(&self.table),
            address: address.clone(),
        };
        let serving = async move {
            let _withdraw = withdraw;
            std::future::pending::<()>().await;
            Ok(())
        };
        Ok(Served {
            address,
            serving: serving.boxed(),
        })
    }

    async fn connect(&self, address: &str) -> Result<InProcessEngine, Error> {
        let endpoint = self.table.endpoints.lock().get(address).cloned();
        match endpoint {
            Some(endpoint) => Ok(InProcessEngine {
                address: address.to_owned(),
                endpoint,
            }),
            None => Err(Error::unavailable(format!(
                "no engine is served at {address} in this process"
            ))),
        }
    }

    fn closed(&self, remote: &InProcessEngine) -> BoxFuture<'static, ()> {
        remote.endpoint.stopped.clone().cancelled_owned().boxed()
    }
}

#[cfg(test)]
mod tests {
    use dynamo_core::{EchoEngine, EngineExt, ErrorClass};

    use super::*;

    #[tokio::test]
    async fn a_withdrawn_engine_fails_its_handles_and_closes() {
        let transport = InProcess::new();
        let served = transport
            .serve(EchoEngine::new().boxed_engine())
            .await
            .expect("served");
        let mut remote = transport.connect(&served.address).await.expect("found");
        let closed = transport.closed(&remote);
        let request = GenerateRequest::new("r1", "m", vec![1, 2]).with_max_tokens(1);
        assert_eq!(
            remote
                .generate_all(request.clone())
                .await
                .expect("ok")
                .tokens,
            [1]
        );

        drop(served);
        closed.await;
        let error = remote.generate_all(request).await.expect_err("withdrawn");
        assert_eq!(error.class(), ErrorClass::Unavailable);
        let error = transport.connect("in-process/0").await.expect_err("gone");
        assert_eq!(error.class(), ErrorClass::Unavailable);
    }
}
