//! A git host standing in for GitHub: a bare repository served over smart HTTP by git's
//! own `git http-backend` behind GitHub's token auth, and the raw-file host beside it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use git2::{Commit, ObjectType, Oid, Repository, RepositoryInitOptions, Signature};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;

use crate::files::Sent;
use crate::serve::{Serving, lock, percent_decode, respond};

/// The user name GitHub expects with a token in HTTP Basic auth.
const TOKEN_USER: &str = "x-access-token";

/// Answers git's proc-receive protocol (githooks(5)) for the refs named by
/// `receive.procReceiveRefs`, refusing each with the status GitHub gives a protected branch.
/// A pre-receive hook could only refuse with git's own "pre-receive hook declined".
const PROTECTED_BRANCH_HOOK: &str = r#"#!/usr/bin/perl
use strict;
use warnings;
$| = 1;
sub read_pkt {
    read(STDIN, my $len, 4) == 4 or exit 1;
    my $n = hex $len;
    return undef if $n == 0;
    read(STDIN, my $data, $n - 4) == $n - 4 or exit 1;
    $data =~ s/\n\z//;
    return $data;
}
sub write_pkt { my ($data) = @_; printf "%04x%s", length($data) + 4, $data; }
1 while defined read_pkt();
write_pkt("version=1\0");
print "0000";
my @refs;
while (defined(my $command = read_pkt())) { push @refs, (split / /, $command)[2]; }
write_pkt("ng $_ protected branch hook declined") for @refs;
print "0000";
"#;

/// A running git host with one repository. Dropping it stops both ports and deletes it.
#[derive(Debug)]
pub struct GitServer {
    git: Serving,
    raw: Serving,
    host: Arc<Host>,
    _root: TempDir,
}

/// What both ports share.
#[derive(Debug)]
struct Host {
    /// `GIT_PROJECT_ROOT`: the bare repository is `{root}/{owner}/{repo}.git`.
    root: PathBuf,
    bare: PathBuf,
    owner: String,
    repo: String,
    token: String,
    auth_failures: AtomicUsize,
    /// How many reads by branch name serve a branch's previous tip after it moves.
    stale_reads: Mutex<usize>,
    branches: Mutex<HashMap<String, BranchView>>,
    /// The next raw download of a path ending in this name breaks after that many bytes.
    raw_cut: Mutex<Option<(String, usize)>>,
}

/// A branch as the raw host's cache last saw it.
#[derive(Debug)]
struct BranchView {
    tip: Oid,
    /// The tip before the last move, served while reads of it are left.
    before: Option<Oid>,
    stale_left: usize,
}

/// What a request's `Authorization` header amounts to.
enum Credentials {
    Valid,
    Missing,
    Wrong,
}

impl GitServer {
    /// Starts a host for an empty repository `owner/repo` that accepts `token`.
    pub fn start(owner: &str, repo: &str, token: &str) -> GitServer {
        let root = tempfile::tempdir().expect("a temporary directory for the git host");
        let bare = root.path().join(owner).join(format!("{repo}.git"));
        let repository = Repository::init_opts(
            &bare,
            RepositoryInitOptions::new()
                .bare(true)
                .mkpath(true)
                .initial_head("main"),
        )
        .expect("a bare repository can be created in a temporary directory");
        repository
            .config()
            .and_then(|mut config| config.set_bool("http.receivepack", true))
            .expect("the bare repository's config is writable");
        let host = Arc::new(Host {
            root: root.path().to_owned(),
            bare,
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            token: token.to_owned(),
            auth_failures: AtomicUsize::new(0),
            stale_reads: Mutex::new(0),
            branches: Mutex::new(HashMap::new()),
            raw_cut: Mutex::new(None),
        });
        let git_host = Arc::clone(&host);
        let git = Serving::start(service_fn(move |request| {
            serve_git(Arc::clone(&git_host), request)
        }));
        let raw_host = Arc::clone(&host);
        let raw = Serving::start(service_fn(move |request| {
            serve_raw(Arc::clone(&raw_host), request)
        }));
        GitServer {
            git,
            raw,
            host,
            _root: root,
        }
    }

    /// `http://127.0.0.1:PORT/{owner}/{repo}.git`, as `https://github.com/OWNER/REPO.git`.
    pub fn clone_url(&self) -> String {
        format!(
            "{}/{}/{}.git",
            self.git.url(),
            self.host.owner,
            self.host.repo
        )
    }

    /// The raw-file host, as `https://raw.githubusercontent.com`: files are at
    /// `{raw_url}/{owner}/{repo}/{branch, tag or commit}/{path}`.
    pub fn raw_url(&self) -> String {
        self.raw.url()
    }

    pub fn bare_path(&self) -> &Path {
        &self.host.bare
    }

    /// How many requests came with credentials that were refused. Requests without any
    /// are not counted: git clients send none until the server asks.
    pub fn auth_failures(&self) -> usize {
        self.host.auth_failures.load(Ordering::SeqCst)
    }

    /// Refuses pushes that update `branch`, as GitHub does for a protected branch: the ref
    /// fails with "protected branch hook declined". The hook needs `/usr/bin/perl`.
    pub fn protect_branch(&self, branch: &str) {
        let hooks = self.host.bare.join("hooks");
        std::fs::create_dir_all(&hooks).expect("the bare repository's hooks directory");
        let hook = hooks.join("proc-receive");
        std::fs::write(&hook, PROTECTED_BRANCH_HOOK).expect("the hook can be written");
        make_executable(&hook).expect("the hook can be made executable");
        // "^$" matches no existing value, so this adds one more ref to the list.
        self.host
            .open()
            .config()
            .and_then(|mut config| {
                config.set_multivar(
                    "receive.procReceiveRefs",
                    "^$",
                    &format!("refs/heads/{branch}"),
                )
            })
            .expect("the bare repository's config is writable");
    }

    /// The next raw download of a file named `name` breaks off after `bytes` bytes, as
    /// a connection to raw.githubusercontent.com that dies mid-download.
    pub fn break_raw_after(&self, name: &str, bytes: usize) {
        *lock(&self.host.raw_cut) = Some((format!("/{name}"), bytes));
    }

    /// Lifts [`GitServer::protect_branch`]: pushes to every branch are taken again.
    pub fn unprotect_branches(&self) {
        let removed = self
            .host
            .open()
            .config()
            .and_then(|mut config| config.remove_multivar("receive.procReceiveRefs", ".*"));
        match removed {
            Err(e) if e.code() != git2::ErrorCode::NotFound => {
                panic!("the bare repository's config is writable: {e}")
            }
            _ => {}
        }
    }

    /// Commits `files` to branch `main` of the bare repository, so that clients can clone
    /// it; returns the commit id.
    pub fn seed(&self, files: &[(&str, &[u8])]) -> String {
        self.host.commit("main", files, "Initial commit")
    }

    /// Commits a change to `path` on `branch` directly in the bare repository, as if
    /// someone else had pushed it; returns the commit id.
    pub fn advance(&self, branch: &str, path: &str, bytes: &[u8]) -> String {
        self.host
            .commit(branch, &[(path, bytes)], &format!("Update {path}"))
    }

    /// Clones the repository into `dir` from disk, with a committer identity configured
    /// and `origin` pointing at `clone_url`, ready to release from.
    pub fn working_clone(&self, dir: &Path) {
        let source = self
            .host
            .bare
            .to_str()
            .expect("temporary directories have UTF-8 paths");
        let repository = git2::build::RepoBuilder::new()
            .clone(source, dir)
            .expect("the bare repository can be cloned from disk");
        let mut config = repository.config().expect("the clone has a config");
        config
            .set_str("user.name", "Clockrel Test")
            .and_then(|()| config.set_str("user.email", "test@clockrel.invalid"))
            .and_then(|()| repository.remote_set_url("origin", &self.clone_url()))
            .expect("the clone's config is writable");
    }

    /// The commit `refname` (`main`, `refs/heads/main`, a tag…) points to in the bare
    /// repository.
    pub fn head_of(&self, refname: &str) -> Option<String> {
        let repository = self.host.open();
        let reference = repository.resolve_reference_from_short_name(refname).ok()?;
        Some(reference.peel_to_commit().ok()?.id().to_string())
    }

    /// The commit tag `tag`, annotated or lightweight, points to in the bare repository.
    pub fn tag_target(&self, tag: &str) -> Option<String> {
        let repository = self.host.open();
        let reference = repository
            .find_reference(&format!("refs/tags/{tag}"))
            .ok()?;
        Some(reference.peel_to_commit().ok()?.id().to_string())
    }

    /// Makes the raw host serve a branch's previous tip for the next `reads` reads by
    /// its name after the branch moves, like raw.githubusercontent.com's cache (which
    /// keeps it for minutes: counted rather than timed, a test does not depend on how
    /// fast the machine runs it). Commit-id URLs are never stale. Branches that moved
    /// already keep no more stale reads than that.
    pub fn set_stale_reads(&self, reads: usize) {
        *lock(&self.host.stale_reads) = reads;
        let repository = self.host.open();
        self.host.observe_branches(&repository);
        for view in lock(&self.host.branches).values_mut() {
            view.stale_left = view.stale_left.min(reads);
        }
    }
}

impl Host {
    /// The bare repository, for the methods a test calls; request handlers must not panic
    /// and open it themselves.
    fn open(&self) -> Repository {
        Repository::open_bare(&self.bare).expect("the bare repository exists while the host runs")
    }

    fn credentials(&self, headers: &HeaderMap) -> Credentials {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Credentials::Missing;
        };
        let decoded = value
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, encoded)| BASE64.decode(encoded.trim()).ok())
            .and_then(|decoded| String::from_utf8(decoded).ok());
        match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((TOKEN_USER, token)) if token == self.token => Credentials::Valid,
            _ => Credentials::Wrong,
        }
    }

    fn commit(&self, branch: &str, files: &[(&str, &[u8])], message: &str) -> String {
        let repository = self.open();
        let refname = format!("refs/heads/{branch}");
        let id = commit_files(&repository, &refname, files, message).unwrap_or_else(|error| {
            panic!("committing to {refname} in the bare repository: {error}")
        });
        self.observe_branches(&repository);
        id.to_string()
    }

    /// Notes every branch's current tip as it moves, so that the raw host knows the tip
    /// before a move even when nobody asked for the branch in between.
    fn observe_branches(&self, repository: &Repository) {
        let Ok(references) = repository.references_glob("refs/heads/*") else {
            return;
        };
        let reads = *lock(&self.stale_reads);
        let mut views = lock(&self.branches);
        for reference in references.flatten() {
            if let (Ok(name), Some(tip)) = (reference.shorthand(), reference.target()) {
                observe(&mut views, name, tip, reads);
            }
        }
    }

    /// The tip the raw host serves for `branch`, whose real tip is `tip`.
    fn served_tip(&self, branch: &str, tip: Oid) -> Oid {
        let reads = *lock(&self.stale_reads);
        let mut views = lock(&self.branches);
        let view = observe(&mut views, branch, tip, reads);
        match view.before {
            Some(before) if view.stale_left > 0 => {
                view.stale_left -= 1;
                before
            }
            _ => view.tip,
        }
    }

    /// The file at `/{owner}/{repo}/{ref}/{path}`, as raw.githubusercontent.com has it.
    fn raw_file(&self, url_path: &str) -> Option<Vec<u8>> {
        let mut segments = url_path.strip_prefix('/')?.splitn(4, '/');
        let (owner, repo) = (segments.next()?, segments.next()?);
        let reference = percent_decode(segments.next()?)?;
        let path = percent_decode(segments.next()?)?;
        if owner != self.owner || repo != self.repo {
            return None;
        }
        let repository = Repository::open_bare(&self.bare).ok()?;
        let commit = self.raw_commit(&repository, &reference)?;
        let entry = commit.tree().ok()?.get_path(Path::new(&path)).ok()?;
        let blob = entry.to_object(&repository).ok()?.into_blob().ok()?;
        Some(blob.content().to_vec())
    }

    /// The commit a raw URL's ref means: a branch (as the cache sees it), a tag, or a
    /// full commit id.
    fn raw_commit<'r>(&self, repository: &'r Repository, reference: &str) -> Option<Commit<'r>> {
        if let Ok(branch) = repository.find_reference(&format!("refs/heads/{reference}")) {
            let tip = self.served_tip(reference, branch.target()?);
            return repository.find_commit(tip).ok();
        }
        if let Ok(tag) = repository.find_reference(&format!("refs/tags/{reference}")) {
            return tag.peel_to_commit().ok();
        }
        let full_id = reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit());
        full_id
            .then(|| repository.find_commit(Oid::from_str(reference).ok()?).ok())
            .flatten()
    }
}

/// Records `tip` as `branch`'s tip, remembering the previous one if it moved.
fn observe<'v>(
    views: &'v mut HashMap<String, BranchView>,
    branch: &str,
    tip: Oid,
    stale_reads: usize,
) -> &'v mut BranchView {
    let view = views.entry(branch.to_owned()).or_insert(BranchView {
        tip,
        before: None,
        stale_left: 0,
    });
    if view.tip != tip {
        *view = BranchView {
            tip,
            before: Some(view.tip),
            stale_left: stale_reads,
        };
    }
    view
}

fn commit_files(
    repository: &Repository,
    refname: &str,
    files: &[(&str, &[u8])],
    message: &str,
) -> Result<Oid, git2::Error> {
    let parent = match repository.find_reference(refname) {
        Ok(reference) => Some(reference.peel_to_commit()?),
        Err(_) => None,
    };
    let mut tree = parent.as_ref().map(Commit::tree_id);
    for (path, bytes) in files {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        tree = Some(insert_file(repository, tree, &components, bytes)?);
    }
    let tree = match tree {
        Some(id) => repository.find_tree(id)?,
        None => repository.find_tree(repository.treebuilder(None)?.write()?)?,
    };
    let signature = Signature::now("Someone Else", "someone@clockrel.invalid")?;
    let parents: Vec<&Commit> = parent.iter().collect();
    repository.commit(
        Some(refname),
        &signature,
        &signature,
        message,
        &tree,
        &parents,
    )
}

/// Writes the tree `base` (or an empty one) with the file at `path` set to `bytes`.
fn insert_file(
    repository: &Repository,
    base: Option<Oid>,
    path: &[&str],
    bytes: &[u8],
) -> Result<Oid, git2::Error> {
    let Some((name, rest)) = path.split_first() else {
        return Err(git2::Error::from_str("a file path must not be empty"));
    };
    let base = base.map(|id| repository.find_tree(id)).transpose()?;
    let (id, mode) = if rest.is_empty() {
        (repository.blob(bytes)?, 0o100_644)
    } else {
        let subtree = base
            .as_ref()
            .and_then(|tree| tree.get_name(name))
            .filter(|entry| entry.kind() == Some(ObjectType::Tree))
            .map(|entry| entry.id());
        (insert_file(repository, subtree, rest, bytes)?, 0o040_000)
    };
    let mut builder = repository.treebuilder(base.as_ref())?;
    builder.insert(name, id, mode)?;
    builder.write()
}

fn make_executable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

async fn serve_git(
    host: Arc<Host>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match host.credentials(request.headers()) {
        Credentials::Valid => {}
        Credentials::Missing => return Ok(auth_challenge()),
        Credentials::Wrong => {
            host.auth_failures.fetch_add(1, Ordering::SeqCst);
            return Ok(auth_challenge());
        }
    }
    let pushed =
        request.method() == Method::POST && request.uri().path().ends_with("/git-receive-pack");
    let response = http_backend(&host.root, request)
        .await
        .unwrap_or_else(|error| {
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("git http-backend: {error}"),
            )
        });
    // Opened without `Host::open`: a request still running while the server is dropped
    // may find the repository deleted, and must not panic.
    if pushed && let Ok(repository) = Repository::open_bare(&host.bare) {
        host.observe_branches(&repository);
    }
    Ok(response)
}

fn auth_challenge() -> Response<Full<Bytes>> {
    let mut response = respond(StatusCode::UNAUTHORIZED, "text/plain", "Unauthorized");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"GitHub\""),
    );
    response
}

/// Runs one request through `git http-backend` as a CGI script.
async fn http_backend(
    root: &Path,
    request: Request<Incoming>,
) -> io::Result<Response<Full<Bytes>>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        // Only what the CGI protocol defines, so that the tester's git configuration and
        // environment cannot change what the server does.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", TOKEN_USER)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("git http-backend has no stdin"))?;
    // Feeding the body while reading the answer: git may start answering before it has
    // read everything, and either pipe can fill up.
    let feed = async move {
        // If git stops reading early, its answer says why; the write error adds nothing.
        let _ = stdin.write_all(&body).await;
    };
    let ((), output) = tokio::join!(feed, child.wait_with_output());
    cgi_response(&output?.stdout)
}

/// Turns a CGI script's output, headers then a blank line then the body, into a response.
fn cgi_response(output: &[u8]) -> io::Result<Response<Full<Bytes>>> {
    let crlf = find(output, b"\r\n\r\n").map(|at| (at, at + 4));
    let lf = find(output, b"\n\n").map(|at| (at, at + 2));
    let (head_end, body_start) = crlf
        .into_iter()
        .chain(lf)
        .min()
        .ok_or_else(|| io::Error::other("git http-backend wrote no CGI header"))?;
    let head = std::str::from_utf8(&output[..head_end]).map_err(io::Error::other)?;
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(&output[body_start..])));
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|code| code.parse().ok());
            *response.status_mut() = code
                .and_then(|code| StatusCode::from_u16(code).ok())
                .ok_or_else(|| io::Error::other(format!("bad CGI status {value:?}")))?;
        } else if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

async fn serve_raw(
    host: Arc<Host>,
    request: Request<Incoming>,
) -> Result<Response<Either<Full<Bytes>, Sent>>, Infallible> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let whole = |response: Response<Full<Bytes>>| response.map(Either::Left);
    if request.method() != Method::GET {
        return Ok(whole(respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "")));
    }
    let path = request.uri().path();
    let cut = {
        let mut cut = lock(&host.raw_cut);
        match cut.as_ref() {
            Some((name, _)) if path.ends_with(name.as_str()) => cut.take().map(|(_, n)| n),
            _ => None,
        }
    };
    Ok(match (host.raw_file(path), cut) {
        // The first `n` bytes, then the connection breaks.
        (Some(bytes), Some(n)) => {
            let bytes = Bytes::from(bytes);
            let sent = Sent::whole(bytes.slice(..n.min(bytes.len())), true);
            let mut response = Response::new(Either::Right(sent));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
            response
        }
        (Some(bytes), None) => whole(respond(StatusCode::OK, TEXT, bytes)),
        (None, _) => whole(respond(StatusCode::NOT_FOUND, TEXT, "404: Not Found")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_output_becomes_a_response() {
        let output = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope";
        let response = cgi_response(output).expect("valid CGI output");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain");

        let response = cgi_response(b"Content-Type: x\n\nbody\r\n\r\n").expect("valid");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "x");

        assert!(cgi_response(b"no header end").is_err());
        assert!(cgi_response(b"Status: soon\r\n\r\n").is_err());
    }

    #[test]
    fn a_moved_branch_remembers_its_previous_tip() {
        let (first, second) = (Oid::from_bytes(&[1; 20]), Oid::from_bytes(&[2; 20]));
        let (first, second) = (first.expect("20 bytes"), second.expect("20 bytes"));
        let mut views = HashMap::new();
        let view = observe(&mut views, "main", first, 3);
        assert_eq!((view.before, view.stale_left), (None, 0));
        let view = observe(&mut views, "main", second, 3);
        assert_eq!(
            (view.tip, view.before, view.stale_left),
            (second, Some(first), 3)
        );
        view.stale_left = 1;
        // Seen again unmoved: the reads already taken stay taken.
        let view = observe(&mut views, "main", second, 3);
        assert_eq!(
            (view.tip, view.before, view.stale_left),
            (second, Some(first), 1)
        );
    }
}
