//! A plain HTTP file server standing in for an OTA source as a device sees it: GET with
//! `Range`, and the ways sources fail a device (a connection that breaks mid-body, a
//! server that accepts and then never answers).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};

use crate::serve::{Serving, lock, range_start};

/// A body that sends its bytes, all at once or trickled in small pieces, and then, if
/// told to, breaks the connection: it declares more than it sends, so the client sees a
/// body cut short.
#[derive(Debug)]
pub(crate) struct Sent {
    rest: Bytes,
    /// Bytes per frame, with `every` between frames.
    piece: usize,
    every: Duration,
    breaks: bool,
    /// The wait before the next frame or the break.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The server's count of bytes sent, and what it may still send.
    meter: Option<Arc<Meter>>,
    /// After its bytes, the body neither ends nor breaks: the peer goes silent.
    hangs: bool,
}

/// Body bytes a server has sent, and how many more it may send before it fails.
#[derive(Debug, Default)]
struct Meter {
    budget: Mutex<Option<u64>>,
    served: AtomicU64,
}

impl Meter {
    /// How many of `want` bytes may go out now; counted as sent.
    fn grant(&self, want: usize) -> usize {
        let granted = match lock(&self.budget).as_mut() {
            Some(left) => {
                let granted = want.min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= granted as u64;
                granted
            }
            None => want,
        };
        self.served.fetch_add(granted as u64, Ordering::SeqCst);
        granted
    }

    fn exhausted(&self) -> bool {
        *lock(&self.budget) == Some(0)
    }
}

impl Sent {
    /// `bytes`, then the end of the body, or a broken connection when `breaks`.
    pub(crate) fn whole(bytes: Bytes, breaks: bool) -> Sent {
        Sent {
            rest: bytes,
            piece: usize::MAX,
            every: Duration::ZERO,
            breaks,
            pause: None,
            meter: None,
            hangs: false,
        }
    }
}

impl Body for Sent {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(pause) = self.pause.as_mut() {
            match pause.as_mut().poll(context) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => self.pause = None,
            }
        }
        if !self.rest.is_empty() {
            let mut n = self.piece.min(self.rest.len());
            if let Some(meter) = &self.meter {
                let granted = meter.grant(n);
                if granted < n {
                    // The server fails now: this body ends here, broken.
                    n = granted;
                    self.rest.truncate(n);
                    self.breaks = true;
                    self.hangs = false;
                }
            }
            let data = self.rest.split_to(n);
            // Before the next piece, or before the break: the bytes sent reach the client.
            let wait = if !self.rest.is_empty() {
                self.every
            } else if self.breaks {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            if !wait.is_zero() {
                self.pause = Some(Box::pin(tokio::time::sleep(wait)));
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if self.hangs {
            // Never woken: the connection stays open and nothing more comes.
            return Poll::Pending;
        }
        if self.breaks {
            self.breaks = false;
            return Poll::Ready(Some(Err(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))));
        }
        Poll::Ready(None)
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Sent> {
    let mut response = Response::new(Sent::whole(Bytes::from_static(text.as_bytes()), false));
    *response.status_mut() = status;
    response
}

#[derive(Debug, Default)]
struct Files {
    files: Mutex<HashMap<String, Vec<u8>>>,
    /// Per path: answer only this many body bytes once, then break the connection.
    cut: Mutex<HashMap<String, usize>>,
    /// Per path: answer only this many body bytes once, then go silent.
    silent_after: Mutex<HashMap<String, usize>>,
    stalled: AtomicBool,
    /// Send every body in pieces of this many bytes, this far apart.
    trickle: Mutex<Option<(usize, Duration)>>,
    /// Every request: path and the Range start it asked for.
    log: Mutex<Vec<(String, Option<u64>)>>,
    /// Body bytes sent so far, and the budget after which the server fails: then
    /// every body under way breaks, and every later request gets 503.
    meter: Arc<Meter>,
}

/// Files served at `{url}/{name}`.
#[derive(Debug)]
pub struct FileServer {
    files: Arc<Files>,
    serving: Serving,
}

impl FileServer {
    pub fn start(files: &[(&str, &[u8])]) -> FileServer {
        let state = Arc::new(Files::default());
        for (name, bytes) in files {
            lock(&state.files).insert(format!("/{name}"), bytes.to_vec());
        }
        let served = Arc::clone(&state);
        let serving = Serving::start(service_fn(move |request| {
            serve(Arc::clone(&served), request)
        }));
        FileServer {
            files: state,
            serving,
        }
    }

    /// `http://127.0.0.1:PORT/`: the base a device appends file names to.
    pub fn base(&self) -> String {
        format!("{}/", self.serving.url())
    }

    pub fn put(&self, name: &str, bytes: &[u8]) {
        lock(&self.files.files).insert(format!("/{name}"), bytes.to_vec());
    }

    /// The next answer for `name` breaks the connection after `bytes` bytes of its body.
    pub fn break_after(&self, name: &str, bytes: usize) {
        lock(&self.files.cut).insert(format!("/{name}"), bytes);
    }

    /// The next answer for `name` sends `bytes` bytes of its body and then nothing
    /// more, the connection left open: a source gone silent mid-download.
    pub fn go_silent_after(&self, name: &str, bytes: usize) {
        lock(&self.files.silent_after).insert(format!("/{name}"), bytes);
    }

    /// From now on, bodies come `piece` bytes at a time, `every` apart: a source slow
    /// enough to keep every read inside its timeout.
    pub fn trickle(&self, piece: usize, every: Duration) {
        *lock(&self.files.trickle) = Some((piece, every));
    }

    /// From now on, requests are accepted and never answered, like a peer whose packets
    /// are dropped after the connection is made.
    pub fn stall(&self) {
        self.files.stalled.store(true, Ordering::SeqCst);
    }

    /// Every request so far: path and the `Range` start, if any.
    pub fn requests(&self) -> Vec<(String, Option<u64>)> {
        lock(&self.files.log).clone()
    }

    /// After `bytes` more body bytes in all, the server fails as a source that goes
    /// down under load: the body under way breaks there, and every request after it
    /// gets 503.
    pub fn fail_after(&self, bytes: u64) {
        *lock(&self.files.meter.budget) = Some(bytes);
    }

    /// Body bytes sent so far, every request together.
    pub fn bytes_served(&self) -> u64 {
        self.files.meter.served.load(Ordering::SeqCst)
    }
}

async fn serve(
    files: Arc<Files>,
    request: Request<Incoming>,
) -> Result<Response<Sent>, Infallible> {
    let path = request.uri().path().to_owned();
    let from = range_start(&request);
    lock(&files.log).push((path.clone(), from));
    if files.stalled.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let Some(body) = lock(&files.files).get(&path).cloned() else {
        return Ok(plain(StatusCode::NOT_FOUND, "Not Found"));
    };
    let total = body.len();
    let start = from.map_or(0, |f| f as usize);
    if start > total {
        return Ok(plain(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "Range Not Satisfiable",
        ));
    }
    if files.meter.exhausted() {
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
        ));
    }
    let cut = lock(&files.cut).remove(&path);
    let silent = lock(&files.silent_after).remove(&path);
    let sent = match cut.or(silent) {
        Some(bytes) => body[start..(start + bytes).min(total)].to_vec(),
        None => body[start..].to_vec(),
    };
    let mut body = Sent::whole(Bytes::from(sent), cut.is_some());
    body.meter = Some(Arc::clone(&files.meter));
    body.hangs = silent.is_some();
    if let Some((piece, every)) = *lock(&files.trickle) {
        body.piece = piece;
        body.every = every;
    }
    let mut response = Response::new(body);
    if from.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total - start));
    if from.is_some() {
        let range = format!("bytes {start}-{}/{total}", total.saturating_sub(1));
        if let Ok(value) = HeaderValue::from_str(&range) {
            headers.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    /// A GET over a plain socket: the status line and every body byte that arrived
    /// before the connection ended, broken or not.
    fn get(server: &FileServer, path: &str) -> (String, Vec<u8>) {
        let address = server
            .base()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let mut socket = std::net::TcpStream::connect(address).unwrap();
        write!(
            socket,
            "GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let status = head.lines().next().unwrap().to_owned();
        (status, answer[split + 4..].to_vec())
    }

    #[test]
    fn a_server_that_fails_under_load_breaks_the_body_under_way_then_answers_503() {
        let server = FileServer::start(&[("image.bin", b"0123456789")]);
        server.fail_after(14);
        assert_eq!(
            get(&server, "image.bin"),
            ("HTTP/1.1 200 OK".to_owned(), b"0123456789".to_vec())
        );
        let (status, body) = get(&server, "image.bin");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, b"0123", "cut where the budget ends");
        assert_eq!(
            get(&server, "image.bin").0,
            "HTTP/1.1 503 Service Unavailable"
        );
        assert_eq!(server.bytes_served(), 14);
        assert_eq!(server.requests().len(), 3);
    }
}
