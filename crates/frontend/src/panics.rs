//! A request handler that panics answers INTERNAL instead of dropping its stream (which the
//! client saw as CANCELLED), is logged with its message at error level, and is counted, so
//! tests can fail on any panic behind an answer (`Server::handler_panics`).
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::FutureExt;
use http::{Request, Response};
use tonic::body::Body;

/// Adds [`CatchPanic`] to a service stack; every clone counts into the same total.
#[derive(Clone, Debug, Default)]
pub struct CatchPanicLayer {
    panics: Arc<AtomicU64>,
}

impl CatchPanicLayer {
    /// How many requests panicked so far.
    pub fn count(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }
}

impl<S> tower_layer::Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic {
            inner,
            panics: self.panics.clone(),
        }
    }
}

/// Turns a panic inside the inner service's future into an INTERNAL answer.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
    panics: Arc<AtomicU64>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower_service::Service<Request<Body>> for CatchPanic<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        let panics = self.panics.clone();
        // A panic while the inner service builds its future counts as well.
        let future = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => future,
            Err(payload) => return Box::pin(async move { Ok(answer(&panics, &path, &*payload)) }),
        };
        Box::pin(async move {
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(result) => result,
                Err(payload) => Ok(answer(&panics, &path, &*payload)),
            }
        })
    }
}

fn answer(panics: &AtomicU64, path: &str, payload: &(dyn std::any::Any + Send)) -> Response<Body> {
    panics.fetch_add(1, Ordering::Relaxed);
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    tracing::error!(rpc = path, panic = %message, "a request handler panicked (a bug in Kairos)");
    tonic::Status::internal(format!(
        "the server failed while handling {path} (a bug in Kairos, logged on the server)"
    ))
    .into_http()
}
