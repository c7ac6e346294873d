//! The engine's HTTP port on the host: real requests (reqwest), each with the engine's
//! connect timeout and per-read timeout, read chunk by chunk as the device reads them.

use std::time::{Duration, Instant};

use ota_core::engine::{ContentRange, Http, HttpError, Response, Timeouts};

/// Real HTTP(S), driven from synchronous engine code.
#[derive(Debug)]
pub struct RealHttp {
    runtime: tokio::runtime::Runtime,
}

impl RealHttp {
    pub fn new() -> std::io::Result<RealHttp> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(RealHttp { runtime })
    }
}

fn classify(error: &reqwest::Error) -> HttpError {
    if error.is_timeout() {
        HttpError::Timeout
    } else if error.is_connect() {
        HttpError::Connect(source_text(error))
    } else {
        HttpError::Io(source_text(error))
    }
}

/// The innermost cause: reqwest's own message repeats the URL.
fn source_text(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

impl Http for RealHttp {
    fn get(
        &mut self,
        url: &str,
        from: Option<u64>,
        timeouts: Timeouts,
    ) -> Result<Box<dyn Response + '_>, HttpError> {
        let started = Instant::now();
        let response = self.runtime.block_on(async {
            let client = reqwest::Client::builder()
                .connect_timeout(timeouts.connect)
                .read_timeout(timeouts.read)
                .build()
                .map_err(|e| HttpError::Io(source_text(&e)))?;
            let mut request = client.get(url);
            if let Some(from) = from {
                request = request.header(reqwest::header::RANGE, format!("bytes={from}-"));
            }
            // The first byte of the answer must come within the read timeout too.
            match tokio::time::timeout(timeouts.connect + timeouts.read, request.send()).await {
                Ok(sent) => sent.map_err(|e| classify(&e)),
                Err(_) => Err(HttpError::Timeout),
            }
        })?;
        Ok(Box::new(RealResponse {
            runtime: &self.runtime,
            response,
            pending: bytes::Bytes::new(),
            read: timeouts.read,
            ends: started + timeouts.request,
        }))
    }
}

struct RealResponse<'r> {
    runtime: &'r tokio::runtime::Runtime,
    response: reqwest::Response,
    pending: bytes::Bytes,
    read: Duration,
    /// The request's deadline, body included.
    ends: Instant,
}

impl Response for RealResponse<'_> {
    fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    fn content_length(&self) -> Option<u64> {
        self.response.content_length()
    }

    fn content_range(&self) -> Option<ContentRange> {
        let header = self
            .response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)?;
        ContentRange::parse(header.to_str().ok()?)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        if self.pending.is_empty() {
            let left = self.ends.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HttpError::Timeout);
            }
            let chunk = self.runtime.block_on(async {
                match tokio::time::timeout(self.read.min(left), self.response.chunk()).await {
                    Ok(chunk) => chunk.map_err(|e| classify(&e)),
                    Err(_) => Err(HttpError::Timeout),
                }
            })?;
            match chunk {
                Some(chunk) => self.pending = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}
