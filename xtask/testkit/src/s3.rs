//! An S3 server standing in for Cloudflare R2: s3s-fs over a temporary directory behind
//! SigV4 credentials, plus the anonymous public URL devices download from.

use std::convert::Infallible;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode, header};
use s3s::Body;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s_fs::FileSystem;
use tempfile::TempDir;

use crate::fault::Faults;
use crate::serve::{Serving, lock, percent_decode, range_start, respond};

const ACCESS_KEY: &str = "TESTKITACCESSKEY";
const SECRET_KEY: &str = "testkit/secret/key/not/for/real/use";

/// One request the S3 endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path as sent, still percent-encoded: `/<bucket>/<key>`.
    pub path: String,
    pub status: u16,
}

/// One GET or HEAD of the public URL: the key, and where a `Range` asked to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicRequest {
    pub key: String,
    pub from: Option<u64>,
}

/// A running S3 server with one bucket. Dropping it stops both ports and deletes the data.
#[derive(Debug)]
pub struct S3Server {
    /// `None` while stopped.
    s3: Mutex<Option<Serving>>,
    /// Kept so that `restart` comes back where clients expect it.
    s3_port: u16,
    public: Serving,
    public_log: Arc<Mutex<Vec<PublicRequest>>>,
    front: Arc<Front>,
    bucket: String,
    bucket_dir: PathBuf,
    _root: TempDir,
}

/// What the S3 endpoint shares between requests, and keeps across a restart.
#[derive(Debug)]
struct Front {
    s3: S3Service,
    faults: Faults,
    log: Mutex<Vec<Request>>,
}

impl S3Server {
    /// Starts an S3 endpoint holding an empty `bucket` (a valid S3 bucket name), and its
    /// public URL.
    pub fn start(bucket: &str) -> S3Server {
        let root = tempfile::tempdir().expect("a temporary directory for the S3 data");
        let bucket_dir = root.path().join(bucket);
        std::fs::create_dir(&bucket_dir).expect("the bucket is a directory under the S3 root");
        let fs = FileSystem::new(root.path()).expect("s3s-fs accepts the temporary directory");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let front = Arc::new(Front {
            s3: builder.build(),
            faults: Faults::default(),
            log: Mutex::new(Vec::new()),
        });
        let s3 = serve_s3(&front, 0).expect("127.0.0.1 has a free port for the S3 server");
        let public_dir = Arc::new(bucket_dir.clone());
        let public_log = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&public_log);
        let public = Serving::start(service_fn(move |request| {
            serve_public(Arc::clone(&public_dir), Arc::clone(&log), request)
        }));
        S3Server {
            s3_port: s3.port(),
            s3: Mutex::new(Some(s3)),
            public,
            public_log,
            front,
            bucket: bucket.to_owned(),
            bucket_dir,
            _root: root,
        }
    }

    /// The S3 API, path-style: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The bucket's anonymous read URL, like R2's `https://pub-….r2.dev`: objects are at
    /// `{public_url}/{key}`.
    pub fn public_url(&self) -> String {
        self.public.url()
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    /// The stored bytes of `key`, read from disk.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(object_path(&self.bucket_dir, key)?).ok()
    }

    /// Replaces the stored bytes of `key` behind the server's back, as a tool or a CDN
    /// rewriting the object would. The public URL serves the new bytes.
    pub fn rewrite(&self, key: &str, bytes: &[u8]) {
        let path = object_path(&self.bucket_dir, key).expect("a key inside the bucket");
        std::fs::write(path, bytes).expect("the object file can be written");
    }

    /// Makes the next `count` S3 requests answer `status` (an HTTP status code) with an S3
    /// error document, without touching the stored objects. The public URL is not affected.
    pub fn fail_next(&self, count: usize, status: u16) {
        self.front.faults.fail_next(count, status);
    }

    /// Makes the next `count` requests of `method` (such as PUT) answer `status`.
    pub fn fail_next_method(&self, method: &str, count: usize, status: u16) {
        self.front
            .faults
            .fail_next_method(Some(method), count, status);
    }

    /// Closes the S3 port and its open connections: clients are refused until `restart`.
    /// Call it from the test's thread, not from async code: it waits for the port to close.
    pub fn stop(&self) {
        let s3 = lock(&self.s3).take();
        if let Some(s3) = s3 {
            s3.shut_down();
        }
    }

    /// Serves the same storage on the same port again after `stop`.
    pub fn restart(&self) {
        let mut s3 = lock(&self.s3);
        if s3.is_none() {
            let serving = serve_s3(&self.front, self.s3_port)
                .unwrap_or_else(|error| panic!("rebinding S3 port {}: {error}", self.s3_port));
            *s3 = Some(serving);
        }
    }

    /// Every request the public URL has answered, oldest first.
    pub fn public_requests(&self) -> Vec<PublicRequest> {
        lock(&self.public_log).clone()
    }

    /// Every request the S3 endpoint has answered, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.front.log).clone()
    }

    /// How many PUTs of `key` succeeded: more than one means a client uploaded it twice.
    pub fn successful_puts(&self, key: &str) -> usize {
        let path = format!("/{}/{key}", self.bucket);
        lock(&self.front.log)
            .iter()
            .filter(|r| r.method == "PUT" && r.path == path && (200..300).contains(&r.status))
            .count()
    }
}

fn serve_s3(front: &Arc<Front>, port: u16) -> io::Result<Serving> {
    let front = Arc::clone(front);
    Serving::start_on(
        port,
        service_fn(move |request| serve_api(Arc::clone(&front), request)),
    )
}

async fn serve_api(
    front: Arc<Front>,
    request: hyper::Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let response = match front.faults.take(&method) {
        Some(status) => s3_error(status, &path),
        None => match front.s3.call(request.map(Body::from)).await {
            Ok(response) => response,
            // s3s answers S3 errors itself; this is a request it could not even parse.
            Err(_) => s3_error(StatusCode::INTERNAL_SERVER_ERROR, &path),
        },
    };
    let status = response.status().as_u16();
    lock(&front.log).push(Request {
        method,
        path,
        status,
    });
    Ok(response)
}

/// An error answered the way S3 and R2 answer it: an XML document naming the error code.
fn s3_error(status: StatusCode, resource: &str) -> Response<Body> {
    let (code, message) = match status.as_u16() {
        403 => ("AccessDenied", "Access Denied"),
        404 => ("NoSuchKey", "The specified key does not exist."),
        503 => ("SlowDown", "Please reduce your request rate."),
        _ => (
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><Resource>{resource}</Resource></Error>"
    );
    let mut response = Response::new(Body::from(xml));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/xml"),
    );
    response
}

async fn serve_public(
    bucket_dir: Arc<PathBuf>,
    log: Arc<Mutex<Vec<PublicRequest>>>,
    request: hyper::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let with_body = match *request.method() {
        Method::GET => true,
        Method::HEAD => false,
        _ => return Ok(respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "")),
    };
    let path = request
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(percent_decode)
        .and_then(|key| object_path(&bucket_dir, &key));
    let not_found = || Ok(respond(StatusCode::NOT_FOUND, "text/plain", "Not Found"));
    let Some(path) = path else {
        return not_found();
    };
    let len = match tokio::fs::metadata(&path).await {
        Ok(metadata) if metadata.is_file() => metadata.len(),
        _ => return not_found(),
    };
    let content_type = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    // `Range: bytes=N-`, as R2's public URLs answer it: a device resumes a download.
    let from = range_start(&request).filter(|from| *from < len);
    lock(&log).push(PublicRequest {
        key: request.uri().path().trim_start_matches('/').to_owned(),
        from,
    });
    let mut response = if with_body {
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let start = from.map_or(0, |f| f as usize);
                respond(StatusCode::OK, content_type, bytes[start..].to_vec())
            }
            Err(_) => return not_found(),
        }
    } else {
        respond(StatusCode::OK, content_type, Bytes::new())
    };
    let sent = len - from.unwrap_or(0);
    if let Some(from) = from {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let range = format!("bytes {from}-{}/{len}", len - 1);
        if let Ok(value) = header::HeaderValue::from_str(&range) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    // Set explicitly so that HEAD reports the object's length, not the empty body's.
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, header::HeaderValue::from(sent));
    Ok(response)
}

/// Where `key` is stored, if it names a file inside the bucket rather than escaping it.
fn object_path(bucket_dir: &Path, key: &str) -> Option<PathBuf> {
    let key = Path::new(key);
    let inside = key.components().all(|c| matches!(c, Component::Normal(_)));
    (inside && !key.as_os_str().is_empty()).then(|| bucket_dir.join(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_bucket() {
        let dir = Path::new("/data/bucket");
        assert_eq!(
            object_path(dir, "fw/app-1.0.0.bin"),
            Some(dir.join("fw/app-1.0.0.bin"))
        );
        assert_eq!(object_path(dir, "../secret"), None);
        assert_eq!(object_path(dir, "/etc/passwd"), None);
        assert_eq!(object_path(dir, "a/./b"), Some(dir.join("a/b")));
        assert_eq!(object_path(dir, ""), None);
    }
}
