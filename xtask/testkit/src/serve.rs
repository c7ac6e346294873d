//! Runs the servers on 127.0.0.1 from a background runtime, so that synchronous tests can
//! block on a `clockrel` subprocess while the servers keep answering it.

use std::error::Error;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// The runtime every server runs on. Two workers: the machine running the tests is small,
/// and one busy handler must not stall the others.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testkit-server")
            .enable_all()
            .build()
            .expect("the test servers need a tokio runtime")
    })
}

/// A server listening on 127.0.0.1. Dropping it closes the port and every open connection.
#[derive(Debug)]
pub(crate) struct Serving {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Serving {
    /// Serves `service` on a free port. The port accepts connections when this returns.
    pub(crate) fn start<S, B>(service: S) -> Serving
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn Error + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn Error + Send + Sync>>,
    {
        Serving::start_on(0, service).expect("127.0.0.1 has a free port for a test server")
    }

    /// Serves `service` on `port` of 127.0.0.1, or on a free port if `port` is 0.
    pub(crate) fn start_on<S, B>(port: u16, service: S) -> io::Result<Serving>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn Error + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn Error + Send + Sync>>,
    {
        // Binding synchronously means the kernel queues connections from the moment this
        // returns, before the accept loop first runs. std sets SO_REUSEADDR, so a stopped
        // server can bind its port again although closed connections linger in TIME_WAIT.
        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let _runtime = runtime().enter();
        let listener = TcpListener::from_std(listener)?;
        let (stop, stopped) = oneshot::channel();
        let task = runtime().spawn(accept_loop(listener, service, stopped));
        Ok(Serving { addr, stop, task })
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the port and every connection, and returns once they are closed, so that a
    /// client connecting afterwards is refused and a pooled connection fails.
    /// Must not be called from inside an async task.
    pub(crate) fn shut_down(self) {
        drop(self.stop);
        // The accept loop only ends by the stop signal and cannot panic; a join error
        // would mean it is gone already, which is what is wanted.
        let _ = runtime().block_on(self.task);
    }
}

async fn accept_loop<S, B>(listener: TcpListener, service: S, mut stopped: oneshot::Receiver<()>)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Resolves when the `Serving` is dropped or shut down: the sender is never used.
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let connection = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service.clone());
                    connections.spawn(connection);
                }
                // Out of file descriptors or the like: give the system a moment rather
                // than spinning on the same error.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reaps finished connections so that the set does not grow with every request.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// A complete response with a fixed body.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Decodes `%XX` escapes in a URL path segment or query value; `None` if they do not
/// decode to UTF-8 or are malformed.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The value of `name` in a URL query string, decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(&value.replace('+', " ")))?
    })
}

/// Locks shared server state. A test that panicked while holding the lock must not take
/// down every later request with it: the state is plain data and stays usable.
/// Where a `Range: bytes=N-` header asks the body to start, the only form devices send.
pub(crate) fn range_start<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok())
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn query_parameters() {
        let query = Some("name=fw%201.bin&label=x+y&flag");
        assert_eq!(query_param(query, "name").as_deref(), Some("fw 1.bin"));
        assert_eq!(query_param(query, "label").as_deref(), Some("x y"));
        assert_eq!(query_param(query, "flag").as_deref(), Some(""));
        assert_eq!(query_param(query, "missing"), None);
        assert_eq!(query_param(None, "name"), None);
    }
}
