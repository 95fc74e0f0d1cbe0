//! Request limits: decompression with a ceiling (against zip bombs) and a per-credential
//! token-bucket rate limit.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Why a body could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Content-Encoding other than identity, gzip or zstd.
    Unsupported(String),
    /// The body grows past the ceiling when decompressed.
    TooLarge(usize),
    /// The compressed data is corrupt.
    Corrupt(String),
}

/// Decompresses a body by its Content-Encoding, reading at most `max` bytes of output.
pub(crate) fn decompress(
    encoding: Option<&str>,
    body: bytes::Bytes,
    max: usize,
) -> Result<bytes::Bytes, DecodeError> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(body),
        Some("gzip" | "x-gzip") => read_limited(flate2::read::MultiGzDecoder::new(&body[..]), max),
        Some("zstd") => {
            let decoder = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            read_limited(decoder, max)
        }
        Some(other) => Err(DecodeError::Unsupported(other.to_string())),
    }
}

fn read_limited(reader: impl Read, max: usize) -> Result<bytes::Bytes, DecodeError> {
    let mut out = Vec::new();
    // One byte more than allowed tells "exactly at the limit" from "over it".
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if out.len() > max {
        return Err(DecodeError::TooLarge(max));
    }
    Ok(out.into())
}

/// Token buckets, one per credential: `rate` records per second on average, up to `burst` at once.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` tokens for `who`, or says how long to wait before `n` are there.
    pub(crate) fn take(&self, who: &str, n: usize) -> Result<(), Duration> {
        self.take_at(who, n, Instant::now())
    }

    fn take_at(&self, who: &str, n: usize, now: Instant) -> Result<(), Duration> {
        let n = n as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = buckets.entry(who.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * self.rate)
            .min(self.burst);
        *last = now;
        if *tokens >= n {
            *tokens -= n;
            return Ok(());
        }
        let wait = if self.rate > 0.0 {
            (n - *tokens) / self.rate
        } else {
            3600.0
        };
        Err(Duration::from_secs_f64(wait.min(3600.0)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> bytes::Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap().into()
    }

    #[test]
    fn decompresses_within_the_ceiling() {
        let data = vec![b'a'; 1000];
        assert_eq!(
            &decompress(Some("gzip"), gzip(&data), 1000).unwrap()[..],
            &data[..]
        );
        let z: bytes::Bytes = zstd::encode_all(&data[..], 3).unwrap().into();
        assert_eq!(&decompress(Some("zstd"), z, 1000).unwrap()[..], &data[..]);
        assert_eq!(
            decompress(None, bytes::Bytes::from_static(b"x"), 1).unwrap(),
            "x"
        );
    }

    #[test]
    fn bombs_and_junk_are_refused() {
        // 100 MB of zeros compress to about 100 KB: stopped at the ceiling, not inflated.
        let bomb = gzip(&vec![0; 100 * 1024 * 1024]);
        assert!(bomb.len() < 200 * 1024);
        assert_eq!(
            decompress(Some("gzip"), bomb, 1024 * 1024),
            Err(DecodeError::TooLarge(1024 * 1024))
        );
        assert!(matches!(
            decompress(Some("gzip"), bytes::Bytes::from_static(b"not gzip"), 10),
            Err(DecodeError::Corrupt(_))
        ));
        assert!(matches!(
            decompress(Some("br"), bytes::Bytes::new(), 10),
            Err(DecodeError::Unsupported(_))
        ));
    }

    #[test]
    fn rate_limit_refills_over_time() {
        let limiter = RateLimiter::new(100.0, 200.0);
        let t0 = Instant::now();
        assert!(limiter.take_at("a", 200, t0).is_ok());
        let wait = limiter.take_at("a", 50, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        assert!(
            limiter.take_at("b", 200, t0).is_ok(),
            "buckets are per credential"
        );
        assert!(
            limiter
                .take_at("a", 50, t0 + Duration::from_millis(500))
                .is_ok()
        );
    }
}
