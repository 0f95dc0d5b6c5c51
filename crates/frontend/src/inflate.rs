//! Request decompression and the request size limit, ahead of tonic. The SDKs gzip every
//! request; tonic inflates each message with a fresh deflate state (tens of KB allocated and
//! zeroed per request), which profiling showed at ~8 % of server CPU. This layer inflates the
//! (unary) request body with a per-thread reused state, checks the gzip trailer, and hands
//! tonic plain frames. Every request, compressed or not, is held to the configured size
//! (`Limits::request_size`, 4 MiB like gRPC's default that the reference keeps) counting all its
//! messages together, and inflation stops as soon as it would pass it: a small request that
//! inflates to gigabytes is refused RESOURCE_EXHAUSTED having taken at most the limit.
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress, Status};
use http::{Request, Response};
use http_body_util::BodyExt;
use tonic::body::Body;

/// Adds [`Inflate`] to a service stack.
#[derive(Clone, Copy, Debug)]
pub struct InflateLayer {
    /// The largest request accepted, all its messages together, after inflation.
    pub max_request: usize,
}

impl<S> tower_layer::Layer<S> for InflateLayer {
    type Service = Inflate<S>;
    fn layer(&self, inner: S) -> Inflate<S> {
        Inflate {
            inner,
            max_request: self.max_request,
        }
    }
}

/// Inflates gzip-encoded gRPC requests and holds every request to the size limit before the
/// inner service sees it.
#[derive(Clone, Debug)]
pub struct Inflate<S> {
    inner: S,
    max_request: usize,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower_service::Service<Request<Body>> for Inflate<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let gzip = req
            .headers()
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let max = self.max_request;
        // The clone that was made ready is the one to call (tower's readiness contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            // A compressed message is never larger than its inflated self; each message has a
            // 5-byte header (and a unary call carries one message).
            let limited = http_body_util::Limited::new(body, max.saturating_add(64));
            let framed = match limited.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Ok(too_large(format!(
                        "grpc: received message larger than max (more than {max} bytes)"
                    )));
                }
                Err(e) => return Ok(error(format!("failed to read the request: {e}"))),
            };
            let plain = match inflate_frames(&framed, gzip, max) {
                Ok(plain) => plain,
                Err(Refused::TooLarge(message)) => return Ok(too_large(message)),
                Err(Refused::Malformed(message)) => return Ok(error(message)),
            };
            if gzip {
                parts.headers.remove("grpc-encoding");
            }
            inner
                .call(Request::from_parts(
                    parts,
                    Body::new(http_body_util::Full::new(plain)),
                ))
                .await
        })
    }
}

/// Why a request body was not handed on.
#[derive(Debug)]
enum Refused {
    /// Over the size limit (RESOURCE_EXHAUSTED, as gRPC answers it).
    TooLarge(String),
    /// Not valid gRPC framing or gzip.
    Malformed(String),
}

fn too_large(message: String) -> Response<Body> {
    tonic::Status::resource_exhausted(message).into_http()
}

fn error(message: String) -> Response<Body> {
    tonic::Status::internal(message).into_http()
}

thread_local! {
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// The request body decoder on its own: the messages' total size once inflated, or why the
/// body is refused. For the fuzz target (`fuzz/`) and its smoke test.
#[doc(hidden)]
pub fn inflate_request(body: &[u8], gzip: bool, max: usize) -> Result<usize, String> {
    match inflate_frames(&Bytes::copy_from_slice(body), gzip, max) {
        Ok(plain) => Ok(plain.len()),
        Err(Refused::TooLarge(m) | Refused::Malformed(m)) => Err(m),
    }
}

/// Rewrites gRPC length-prefixed frames, inflating those flagged compressed (when the request
/// is gzip-encoded), and refuses the request once its messages together pass `max` bytes.
fn inflate_frames(framed: &Bytes, gzip: bool, max: usize) -> Result<Bytes, Refused> {
    let mut input: &[u8] = framed;
    if !gzip && input.first().is_none_or(|flag| *flag == 0) {
        // Plain frames pass as they are; only their sizes are checked.
        let mut total = 0usize;
        let mut rest = input;
        while rest.len() >= 5 {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            total = total.saturating_add(len);
            if total > max {
                return Err(Refused::TooLarge(format!(
                    "grpc: received message larger than max ({total} vs. {max})"
                )));
            }
            rest = rest.get(5 + len..).unwrap_or_default();
        }
        return Ok(framed.clone());
    }
    let malformed = |m: &str| Refused::Malformed(m.to_string());
    let mut out: Vec<u8> = Vec::with_capacity((input.len() * 4 + 64).min(max + 64));
    let mut inflated_total = 0usize;
    while !input.is_empty() {
        if input.len() < 5 {
            return Err(malformed("truncated gRPC frame header"));
        }
        let compressed = input[0] == 1;
        let len = u32::from_be_bytes([input[1], input[2], input[3], input[4]]) as usize;
        let body = input
            .get(5..5 + len)
            .ok_or_else(|| malformed("truncated gRPC frame"))?;
        input = &input[5 + len..];
        if !compressed {
            inflated_total = inflated_total.saturating_add(len);
            if inflated_total > max {
                return Err(Refused::TooLarge(format!(
                    "grpc: received message larger than max ({inflated_total} vs. {max})"
                )));
            }
            out.push(0);
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend_from_slice(body);
            continue;
        }
        if !gzip {
            return Err(malformed("a compressed message without grpc-encoding"));
        }
        let start = out.len();
        out.extend_from_slice(&[0; 5]);
        gunzip(body, &mut out, max - inflated_total)?;
        let inflated = out.len() - start - 5;
        inflated_total += inflated;
        out[start + 1..start + 5].copy_from_slice(&(inflated as u32).to_be_bytes());
    }
    Ok(Bytes::from(out))
}

/// Appends the content of one gzip member to `out`, checking its CRC and length, and refuses
/// it as soon as it inflates past `budget` bytes (memory grows only with what really inflates,
/// never past the budget and one step).
fn gunzip(data: &[u8], out: &mut Vec<u8>, budget: usize) -> Result<(), Refused> {
    const FTEXT_MASK: u8 = 0b1110_0000;
    const STEP: usize = 64 * 1024;
    let malformed = |m: &str| Refused::Malformed(m.to_string());
    if data.len() < 18 || data[0] != 0x1f || data[1] != 0x8b || data[2] != 8 {
        return Err(malformed("request message is not gzip"));
    }
    let flags = data[3];
    if flags & FTEXT_MASK != 0 {
        return Err(malformed("gzip header has reserved flags set"));
    }
    let mut pos = 10;
    let bad = || malformed("malformed gzip header");
    if flags & 0x04 != 0 {
        let extra = data.get(pos..pos + 2).ok_or_else(bad)?;
        pos += 2 + u16::from_le_bytes([extra[0], extra[1]]) as usize;
    }
    for flag in [0x08, 0x10] {
        if flags & flag != 0 {
            let end = data
                .get(pos..)
                .ok_or_else(bad)?
                .iter()
                .position(|&b| b == 0);
            pos += end.ok_or_else(bad)? + 1;
        }
    }
    if flags & 0x02 != 0 {
        pos += 2;
    }
    if pos + 8 > data.len() {
        return Err(bad());
    }
    let (deflated, trailer) = data[pos..].split_at(data.len() - pos - 8);
    let crc = u32::from_le_bytes(trailer[0..4].try_into().expect("4 bytes"));
    let size = u32::from_le_bytes(trailer[4..8].try_into().expect("4 bytes")) as usize;
    let too_large = |inflated: usize| {
        Refused::TooLarge(format!(
            "grpc: received message after decompression larger than max ({inflated} vs. {budget})"
        ))
    };
    if size > budget {
        return Err(too_large(size));
    }
    let start = out.len();
    // The trailer's size is the client's word: grow towards it as data actually inflates.
    out.reserve_exact(size.min(deflated.len().saturating_mul(16) + 4096) + 1);
    INFLATER.with(|cell| {
        let mut inflater = cell.borrow_mut();
        inflater.reset(false);
        let mut consumed = 0;
        loop {
            let written = out.len() - start;
            if written > budget {
                return Err(too_large(written));
            }
            if out.capacity() == out.len() {
                out.reserve_exact(STEP.min(budget + 1 - written));
            }
            let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
            // Streaming (no Finish): the output grows as data really inflates.
            let status = inflater
                .decompress_vec(&deflated[consumed..], out, FlushDecompress::None)
                .map_err(|e| Refused::Malformed(format!("invalid gzip data: {e}")))?;
            consumed += (inflater.total_in() - before_in) as usize;
            let progressed = inflater.total_in() > before_in || inflater.total_out() > before_out;
            match status {
                Status::StreamEnd => return Ok(()),
                _ if !progressed && out.capacity() > out.len() => {
                    return Err(malformed("truncated gzip data"));
                }
                Status::Ok | Status::BufError => {}
            }
        }
    })?;
    let content = &out[start..];
    if content.len() > budget {
        return Err(too_large(content.len()));
    }
    if content.len() != size || crc32fast::hash(content) != crc {
        return Err(malformed("gzip checksum or length mismatch"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const LIMIT: usize = 4 * 1024 * 1024;

    fn run(request: &[u8], gzip: bool) -> Result<Bytes, Refused> {
        inflate_frames(&Bytes::copy_from_slice(request), gzip, LIMIT)
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn frame(compressed: bool, body: &[u8]) -> Vec<u8> {
        let mut f = vec![u8::from(compressed)];
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn inflates_compressed_frames_and_keeps_plain_ones() {
        let big: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut input = frame(true, &gz(b"hello"));
        input.extend(frame(false, b"plain"));
        input.extend(frame(true, &gz(&big)));
        let out = run(&input, true).unwrap();
        let mut expected = frame(false, b"hello");
        expected.extend(frame(false, b"plain"));
        expected.extend(frame(false, &big));
        assert_eq!(out.as_ref(), expected.as_slice());
        // The reused state serves the next request too.
        let again = run(&frame(true, &gz(b"again")), true).unwrap();
        assert_eq!(again.as_ref(), frame(false, b"again").as_slice());
    }

    #[test]
    fn rejects_corrupt_input() {
        let mut bad = gz(b"hello world");
        let n = bad.len();
        bad[n - 8] ^= 0xff; // CRC
        assert!(run(&frame(true, &bad), true).is_err());
        assert!(run(&frame(true, b"not gzip at all, really"), true).is_err());
        let good = gz(b"hello world");
        assert!(run(&frame(true, &good[..good.len() - 3]), true).is_err());
        assert!(run(&[1, 0, 0], true).is_err());
        assert!(run(&frame(false, b"x")[..4], true).is_err());
    }

    #[test]
    fn a_request_is_refused_once_its_messages_together_pass_the_limit() {
        // One message of zeros inflating far past the limit: refused, and the output never
        // held much more than the limit.
        let bomb = gz(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "{} bytes", bomb.len());
        match run(&frame(true, &bomb), true) {
            Err(Refused::TooLarge(message)) => {
                assert!(
                    message
                        .starts_with("grpc: received message after decompression larger than max"),
                    "{message}"
                )
            }
            other => panic!("not refused as too large: {other:?}"),
        }
        // Many frames each under the limit, together over it.
        let piece = gz(&vec![7u8; LIMIT / 3]);
        let mut input = Vec::new();
        for _ in 0..4 {
            input.extend(frame(true, &piece));
        }
        assert!(matches!(run(&input, true), Err(Refused::TooLarge(_))));
        // A lying trailer (small size, big content) is caught while inflating.
        let mut liar = gz(&vec![1u8; LIMIT + 1]);
        let n = liar.len();
        liar[n - 4..].copy_from_slice(&10u32.to_le_bytes());
        assert!(matches!(
            run(&frame(true, &liar), true),
            Err(Refused::TooLarge(_))
        ));
        // Plain frames are held to the same limit, and pass untouched under it.
        let big = frame(false, &vec![0u8; LIMIT + 1]);
        assert!(matches!(run(&big, false), Err(Refused::TooLarge(_))));
        let small = frame(false, b"fine");
        assert_eq!(run(&small, false).unwrap().as_ref(), small.as_slice());
        // Exactly the limit is accepted.
        let exact = gz(&vec![3u8; LIMIT]);
        assert_eq!(run(&frame(true, &exact), true).unwrap().len(), LIMIT + 5);
    }
}
