//! One HTTP/1.1 connection of an [`HttpClient`](crate::HttpClient), driven by the task that
//! uses it: [`Link`] while a request waits for its answer's head, [`ResponseBody`] while the
//! answer is read; the client's [`Pool`] of idle connections between requests.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use tower::Service;

/// The body of an upstream answer: hyper's body, with the connection that reads it, which
/// this body drives as it is read (and gives back to its client's pool at the end).
///
/// # Cancel safety
///
/// Dropping it before its end closes the connection, which tells the server the client has
/// gone.
pub struct ResponseBody {
    pub(crate) body: Incoming,
    /// The connection, until it ends or goes back to the pool.
    pub(crate) link: Option<(Link, Arc<Pool>)>,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("body", &self.body)
            .field("connected", &self.link.is_some())
            .finish()
    }
}

impl ResponseBody {
    /// The next frame: the body's, and when it has none, the connection reads and decodes
    /// what the server sent and the body is asked once more. At the body's end its connection
    /// goes back to the pool.
    fn poll_next_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        for _ in 0..2 {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(None) => {
                    if let Some((link, pool)) = self.link.take() {
                        pool.check_in(link);
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(frame) => return Poll::Ready(frame),
                Poll::Pending => {}
            }
            let Some((link, _)) = &mut self.link else {
                return Poll::Pending;
            };
            if Pin::new(&mut link.connection).poll(cx).is_ready() {
                // Ended or failed: the body has been told, and says so when asked again.
                self.link = None;
            }
        }
        Poll::Pending
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.get_mut().poll_next_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ResponseBody {
    /// A reader may stop at the answer's last event, before the body's end (`[DONE]` before the
    /// last HTTP chunk): what has already arrived is read on, without waiting, so that a body
    /// that has ended lets its connection go back to the pool. Any other is closed.
    fn drop(&mut self) {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        for _ in 0..DRAIN_FRAMES {
            if self.link.is_none() {
                return;
            }
            match self.poll_next_frame(&mut cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(_) | Poll::Pending => return,
            }
        }
    }
}

/// How many frames a dropped [`ResponseBody`] reads on, at most, looking for its end.
const DRAIN_FRAMES: usize = 4;

/// The connector's socket.
pub(crate) type Io = <HttpConnector as Service<Uri>>::Response;

/// One HTTP/1.1 connection: the handle requests are sent on, and the connection itself, which
/// only makes progress while someone polls it.
pub(crate) struct Link {
    pub(crate) sender: http1::SendRequest<Full<Bytes>>,
    pub(crate) connection: http1::Connection<Io, Full<Bytes>>,
}

impl Link {
    /// Send `request` and drive the connection until the answer's head arrives; the head, and
    /// the connection unless it has ended.
    pub(crate) async fn send(
        mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Option<Link>), hyper::Error> {
        let mut answer = std::pin::pin!(self.sender.send_request(request));
        let mut link = Some(self);
        let head = std::future::poll_fn(|cx| {
            if let Some(open) = &mut link
                && Pin::new(&mut open.connection).poll(cx).is_ready()
            {
                // Ended or failed: dropping it settles the answer with its error.
                link = None;
            }
            answer.as_mut().poll(cx)
        })
        .await?;
        Ok((head, link))
    }

    /// Whether the connection is idle and open, after letting it read what arrived while
    /// nobody polled it (a close, most often).
    fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        Pin::new(&mut self.connection).poll(&mut cx).is_pending() && self.sender.is_ready()
    }
}

/// The idle connections of one client, newest last.
pub(crate) struct Pool {
    pub(crate) idle: Mutex<VecDeque<(Link, Instant)>>,
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Pool")
            .field("idle", &idle)
            .field("max_idle", &self.max_idle)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl Pool {
    /// The newest idle connection that is still open, if any.
    pub(crate) fn checkout(&self) -> Option<Link> {
        loop {
            let mut link = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let (link, since) = idle.pop_back()?;
                if since.elapsed() > self.idle_timeout {
                    // The newest has been idle too long, so have all the others.
                    idle.clear();
                    return None;
                }
                link
            };
            if link.is_reusable() {
                return Some(link);
            }
        }
    }

    /// Keep `link` for a later request if it is idle and open and the pool has room for it
    /// (the oldest gives way); else close it.
    pub(crate) fn check_in(&self, mut link: Link) {
        if self.max_idle == 0 || !link.is_reusable() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while idle
            .front()
            .is_some_and(|(_, since)| since.elapsed() > self.idle_timeout)
        {
            idle.pop_front();
        }
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back((link, Instant::now()));
    }
}
