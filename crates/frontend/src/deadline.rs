//! A request whose deadline has already passed when it arrives (`grpc-timeout` of zero) is
//! answered DEADLINE_EXCEEDED without being executed. Deadlines still ahead are left to tonic,
//! which cuts the answer off when they pass (as gRPC does: the work may have been done).
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::{Request, Response};
use tonic::body::Body;

/// Adds [`Deadline`] to a service stack.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer;

impl<S> tower_layer::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// Refuses requests that arrive with no time left.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
}

impl<S> tower_service::Service<Request<Body>> for Deadline<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let expired = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .is_some_and(no_time_left);
        if expired {
            let status = tonic::Status::deadline_exceeded("context deadline exceeded");
            return Either::Left(ready(Ok(status.into_http())));
        }
        Either::Right(self.inner.call(req))
    }
}

/// A `grpc-timeout` value (1-8 digits and a unit: H, M, S, m, u, n) that is zero.
fn no_time_left(value: &str) -> bool {
    let Some(digits) = value.strip_suffix(['H', 'M', 'S', 'm', 'u', 'n']) else {
        return false;
    };
    !digits.is_empty()
        && digits.len() <= 8
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower_layer::Layer;
    use tower_service::Service;

    /// Answers OK and counts its calls.
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl Service<Request<Body>> for Counting {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = Ready<Result<Response<Body>, Self::Error>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _req: Request<Body>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            ready(Ok(Response::new(Body::empty())))
        }
    }

    fn request(timeout: Option<&str>) -> Request<Body> {
        let mut req = Request::builder()
            .uri("/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution");
        if let Some(t) = timeout {
            req = req.header("grpc-timeout", t);
        }
        req.body(Body::empty()).expect("a request")
    }

    #[tokio::test]
    async fn an_expired_request_is_answered_without_running() {
        let inner = Counting::default();
        let mut svc = DeadlineLayer.layer(inner.clone());
        let answer = svc.call(request(Some("0m"))).await.expect("answers");
        let status = tonic::Status::from_header_map(answer.headers()).expect("a grpc status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(inner.0.load(Ordering::SeqCst), 0, "not executed");
        for live in [Some("5S"), None] {
            svc.call(request(live)).await.expect("answers");
        }
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn only_a_zero_timeout_has_no_time_left() {
        for zero in ["0n", "0u", "0m", "00S", "0M", "0H"] {
            assert!(no_time_left(zero), "{zero}");
        }
        for other in ["1n", "10m", "5S", "", "m", "0", "0x", "-0m", "000000000m"] {
            assert!(!no_time_left(other), "{other}");
        }
    }
}
