//! Request bodies of the write API: how they are typed (`Content-Type`), encoded
//! (`Content-Encoding`) and bounded, before a parser reads them.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::error::AppError;

/// Whether the body is CSV: `Content-Type: text/csv`, compared as media types are
/// (case-insensitively, parameters such as `charset` allowed). Anything else is read as JSON.
pub fn is_csv(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/csv"))
}

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

/// `Content-Encoding`: none or `identity`, or `gzip`; 415 for anything else (including a list
/// of several, which no client sends for a request body).
fn encoding(req: &HttpRequest) -> Result<Encoding, AppError> {
    let Some(value) = req.headers().get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let value = value.to_str().unwrap_or("").trim();
    if value.is_empty() || value.eq_ignore_ascii_case("identity") {
        Ok(Encoding::Identity)
    } else if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
        Ok(Encoding::Gzip)
    } else {
        Err(AppError::UnsupportedMediaType(format!(
            "Content-Encoding {value:?} is not supported; send the body as is or gzip-compressed"
        )))
    }
}

/// Bodies inflated at once, server-wide: each may grow to its limit (64 MiB) in memory, so 8 gzip
/// bombs at once held 496 MB; now at most this many inflate and the rest queue.
pub const MAX_INFLATING: usize = 2;
/// How long a compressed body waits for its turn before 503 (`Retry-After`).
const INFLATE_WAIT: Duration = Duration::from_secs(10);

/// Bounds concurrent inflation with a semaphore, and records the most ever at once.
pub struct Inflations {
    permits: tokio::sync::Semaphore,
    wait: Duration,
    active: AtomicUsize,
    peak: AtomicUsize,
}

/// The server's.
pub static INFLATIONS: Inflations = Inflations::new(MAX_INFLATING, INFLATE_WAIT);

impl Inflations {
    pub const fn new(at_once: usize, wait: Duration) -> Self {
        Self {
            permits: tokio::sync::Semaphore::const_new(at_once),
            wait,
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// The most bodies ever inflating at once.
    #[cfg(test)]
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// `raw` inflated (see [`gunzip`]) once a turn is free: 503 after waiting `wait` for one.
    /// The turn moves into the blocking task, so a client that hangs up does not free it
    /// while its body is still being inflated.
    async fn gunzip(&'static self, raw: Bytes, limit: usize) -> Result<Bytes, AppError> {
        let permit = match tokio::time::timeout(self.wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(AppError::Overloaded(
                    "too many compressed bodies are being read at the moment; try again shortly"
                        .into(),
                ));
            }
        };
        let now = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        metrics::gauge!("candlewick_bodies_inflating").set(now as f64);
        web::block(move || {
            let out = gunzip(&raw, limit);
            let left = self.active.fetch_sub(1, Ordering::Relaxed) - 1;
            metrics::gauge!("candlewick_bodies_inflating").set(left as f64);
            drop(permit);
            out
        })
        .await
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("decoding the body: {e}")))?
    }
}

fn too_large(limit: usize) -> AppError {
    AppError::PayloadTooLarge(format!("the body is larger than {limit} bytes"))
}

/// Reads the whole body and decodes it: at most `limit` bytes as sent and as decoded (413
/// beyond either, as soon as it shows: a gzip bomb stops at the limit); 415 for an encoding
/// we do not read.
pub async fn read_body(
    req: &HttpRequest,
    mut body: web::Payload,
    limit: usize,
) -> Result<Bytes, AppError> {
    let encoding = encoding(req)?;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    // Sized once from Content-Length: growing by doubling would hold up to twice the body.
    let mut buf = web::BytesMut::with_capacity(announced.map_or(0, |n| n as usize));
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| AppError::BadRequest(format!("reading the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    let raw = buf.freeze();
    match encoding {
        Encoding::Identity => Ok(raw),
        // Inflating up to the limit is CPU work (off the worker thread) and memory (bounded).
        Encoding::Gzip => INFLATIONS.gunzip(raw, limit).await,
    }
}

/// The gzip stream `raw` inflated, refusing more than `limit` bytes of output.
fn gunzip(raw: &[u8], limit: usize) -> Result<Bytes, AppError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            AppError::BadRequest(format!(
                "the body is not valid gzip (Content-Encoding: gzip): {e}"
            ))
        })?;
    if out.len() > limit {
        return Err(AppError::PayloadTooLarge(format!(
            "the body is larger than {limit} bytes once decompressed"
        )));
    }
    Ok(out.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use std::io::Write;

    use actix_web::ResponseError;
    use actix_web::test::TestRequest;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn media_types_are_compared_case_insensitively_with_parameters() {
        for csv in [
            "text/csv",
            "TEXT/CSV",
            "Text/Csv; charset=utf-8",
            " text/csv ;header=present",
        ] {
            let req = TestRequest::default().insert_header(("Content-Type", csv));
            assert!(is_csv(&req.to_http_request()), "{csv}");
        }
        for other in ["application/json", "text/csvx", "text/plain", ""] {
            let req = TestRequest::default().insert_header(("Content-Type", other));
            assert!(!is_csv(&req.to_http_request()), "{other}");
        }
        assert!(!is_csv(&TestRequest::default().to_http_request()));
    }

    #[test]
    fn only_identity_and_gzip_encodings_are_read() {
        for (value, want) in [
            ("gzip", Some(Encoding::Gzip)),
            ("GZIP", Some(Encoding::Gzip)),
            ("x-gzip", Some(Encoding::Gzip)),
            ("identity", Some(Encoding::Identity)),
            ("br", None),
            ("deflate", None),
            ("gzip, br", None),
            ("compress", None),
        ] {
            let req = TestRequest::default().insert_header(("Content-Encoding", value));
            let got = encoding(&req.to_http_request());
            assert_eq!(got.as_ref().ok().copied(), want, "{value}");
            if let Err(e) = got {
                assert_eq!(e.status_code(), 415, "{value}");
            }
        }
    }

    #[actix_web::test]
    async fn at_most_the_bound_inflates_at_once_and_a_long_wait_gets_503() {
        static TWO: Inflations = Inflations::new(2, Duration::from_secs(60));
        // 8 bodies of ~1 MiB compressed that inflate past the limit, at once.
        let bomb = Bytes::from(gzip(&vec![0u8; 64 << 20]));
        let all = (0..8).map(|_| TWO.gunzip(bomb.clone(), 16 << 20));
        for res in futures_util::future::join_all(all).await {
            assert_eq!(res.unwrap_err().status_code(), 413);
        }
        assert_eq!(TWO.peak(), 2, "two at once, never more");

        static ONE: Inflations = Inflations::new(1, Duration::from_millis(50));
        let held = ONE.permits.acquire().await.unwrap();
        let e = ONE.gunzip(Bytes::from(gzip(b"x")), 10).await.unwrap_err();
        assert_eq!(e.status_code(), 503);
        assert_eq!(
            e.error_response().headers().get("retry-after").unwrap(),
            "1"
        );
        drop(held);
        assert_eq!(ONE.gunzip(Bytes::from(gzip(b"x")), 10).await.unwrap(), "x");
    }

    #[test]
    fn gzip_inflates_up_to_the_limit_and_no_further() {
        let data = vec![b'x'; 10_000];
        assert_eq!(gunzip(&gzip(&data), 10_000).unwrap().len(), 10_000);
        let e = gunzip(&gzip(&data), 9_999).unwrap_err();
        assert_eq!(e.status_code(), 413);
        let e = gunzip(b"not gzip at all", 10_000).unwrap_err();
        assert_eq!(e.status_code(), 400);
    }
}
