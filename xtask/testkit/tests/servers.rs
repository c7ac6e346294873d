//! Each local server against real clients: curl's SigV4 for S3, the git CLI for the git
//! host, and plain HTTP/1.1 for the rest.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use clockrel_testkit::{GitServer, GithubApi, S3Server};

/// A response read from the wire.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, value)| value.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// One HTTP/1.1 request on a fresh connection.
fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(authority).expect("the server accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let mut request = format!(
        "{method} {} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        if path.is_empty() { "/" } else { path },
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("request sent");
    stream.write_all(body).expect("body sent");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response read");
    parse_reply(&response)
}

fn parse_reply(response: &[u8]) -> Reply {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&response[..end]).expect("an ASCII response head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status = status_line.split(' ').nth(1).expect("a status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
        .collect();
    let reply = Reply {
        status: status.parse().expect("a numeric status"),
        body: response[end + 4..].to_vec(),
        headers,
    };
    assert_ne!(
        reply.header("transfer-encoding"),
        Some("chunked"),
        "unexpected chunked body"
    );
    reply
}

fn get(url: &str) -> Reply {
    http("GET", url, &[], b"")
}

// --- S3 ---------------------------------------------------------------------------

/// A SigV4-signed request by curl; returns the status and the body.
fn curl_s3(s3: &S3Server, secret: &str, method: &str, key: &str, body: &[u8]) -> (u16, String) {
    let url = format!("{}/{}/{key}", s3.endpoint(), s3.bucket());
    let mut child = Command::new("curl")
        .args(["--silent", "--show-error", "--aws-sigv4", "aws:amz:auto:s3"])
        .args(["--user", &format!("{}:{secret}", s3.access_key())])
        // curl 7.88 does not send the payload hash S3 requires; it signs it when given.
        .args(["--header", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(["--request", method, "--write-out", "\n%{http_code}"])
        .args(if method == "PUT" {
            &["--data-binary", "@-"][..]
        } else {
            &[]
        })
        .arg(&url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl is installed");
    let mut stdin = child.stdin.take().expect("curl's stdin");
    stdin.write_all(body).expect("body piped to curl");
    drop(stdin);
    let output = child.wait_with_output().expect("curl ran");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl printed the status");
    (status.parse().expect("a numeric status"), body.to_owned())
}

#[test]
fn s3_stores_signed_puts_and_serves_them_publicly() {
    let s3 = S3Server::start("firmware");
    let key = "wordclock/wordclock-1.2.0.bin";
    let (status, _) = curl_s3(&s3, s3.secret_key(), "PUT", key, b"image bytes");
    assert_eq!(status, 200);
    assert_eq!(s3.object(key).as_deref(), Some(&b"image bytes"[..]));
    assert_eq!(
        curl_s3(&s3, s3.secret_key(), "GET", key, b""),
        (200, "image bytes".into())
    );

    let public = get(&format!("{}/{key}", s3.public_url()));
    assert_eq!(
        (public.status, public.body.as_slice()),
        (200, &b"image bytes"[..])
    );
    assert_eq!(public.header("content-length"), Some("11"));
    let head = http("HEAD", &format!("{}/{key}", s3.public_url()), &[], b"");
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("11"))
    );
    assert!(head.body.is_empty());
    // A resumed download: R2's public URLs answer Range with the rest.
    let rest = http(
        "GET",
        &format!("{}/{key}", s3.public_url()),
        &[("Range", "bytes=6-")],
        b"",
    );
    assert_eq!((rest.status, rest.body.as_slice()), (206, &b"bytes"[..]));
    assert_eq!(rest.header("content-range"), Some("bytes 6-10/11"));
    assert_eq!(rest.header("content-length"), Some("5"));
    assert_eq!(
        get(&format!("{}/wordclock/missing.bin", s3.public_url())).status,
        404
    );
    assert_eq!(
        get(&format!("{}/../etc/passwd", s3.public_url())).status,
        404
    );

    assert_eq!(s3.successful_puts(key), 1);
    let put = &s3.requests()[0];
    assert_eq!((put.method.as_str(), put.status), ("PUT", 200));
    assert_eq!(put.path, format!("/firmware/{key}"));
}

#[test]
fn s3_refuses_unsigned_and_wrongly_signed_requests() {
    let s3 = S3Server::start("firmware");
    let url = format!("{}/firmware/a.bin", s3.endpoint());
    assert_eq!(http("PUT", &url, &[], b"anonymous").status, 403);
    let (status, body) = curl_s3(&s3, "not-the-secret", "PUT", "a.bin", b"forged");
    assert_eq!(status, 403, "{body}");
    assert_eq!(s3.object("a.bin"), None);
    assert_eq!(s3.successful_puts("a.bin"), 0);
}

#[test]
fn s3_injected_failures_touch_no_storage() {
    let s3 = S3Server::start("firmware");
    s3.fail_next(2, 503);
    let (status, body) = curl_s3(&s3, s3.secret_key(), "PUT", "a.bin", b"one");
    assert_eq!(status, 503);
    assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
    assert_eq!(s3.object("a.bin"), None);
    assert_eq!(curl_s3(&s3, s3.secret_key(), "PUT", "a.bin", b"two").0, 503);
    assert_eq!(
        curl_s3(&s3, s3.secret_key(), "PUT", "a.bin", b"three").0,
        200
    );
    let statuses: Vec<u16> = s3.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    assert_eq!(s3.successful_puts("a.bin"), 1);
    assert_eq!(s3.object("a.bin").as_deref(), Some(&b"three"[..]));
}

#[test]
fn s3_stop_refuses_connections_until_restart() {
    let s3 = S3Server::start("firmware");
    assert_eq!(
        curl_s3(&s3, s3.secret_key(), "PUT", "a.bin", b"kept").0,
        200
    );
    let authority = s3.endpoint().replace("http://", "");
    let mut pooled = TcpStream::connect(&authority).expect("the server accepts connections");

    s3.stop();
    assert!(
        TcpStream::connect(&authority).is_err(),
        "a stopped server refuses"
    );
    // A connection opened before the stop is closed, not left serving.
    let request = format!("GET /firmware/a.bin HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    let _ = pooled.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let _ = pooled.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    s3.restart();
    assert_eq!(s3.endpoint(), format!("http://{authority}"));
    assert_eq!(
        curl_s3(&s3, s3.secret_key(), "GET", "a.bin", b""),
        (200, "kept".into())
    );
}

// --- git ----------------------------------------------------------------------------

const TOKEN: &str = "ghs_testtoken";

/// The git CLI, isolated from the tester's configuration and unable to prompt.
fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .output()
        .expect("git is installed")
}

fn git_ok(dir: &Path, args: &[&str]) -> String {
    let output = git(dir, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "git {args:?} failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn url_with_token(server: &GitServer, token: &str) -> String {
    server
        .clone_url()
        .replace("http://", &format!("http://x-access-token:{token}@"))
}

#[test]
fn git_clones_and_pushes_only_with_the_token() {
    let server = GitServer::start("clockrel", "fleet", TOKEN);
    server.seed(&[
        ("README.md", b"fleet\n".as_slice()),
        ("firmware/version.json", b"{}"),
    ]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let anonymous = git(dir.path(), &["clone", &server.clone_url(), "anonymous"]);
    assert!(!anonymous.status.success());
    assert_eq!(
        server.auth_failures(),
        0,
        "no credentials is not a failed attempt"
    );

    git_ok(
        dir.path(),
        &["clone", &url_with_token(&server, TOKEN), "work"],
    );
    let work = dir.path().join("work");
    let version = std::fs::read(work.join("firmware/version.json")).expect("cloned file");
    assert_eq!(version, b"{}");

    std::fs::write(
        work.join("firmware/version.json"),
        b"{\"version\":\"1.0.0\"}",
    )
    .expect("edit");
    git_ok(
        &work,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@t",
            "commit",
            "-qam",
            "v1",
        ],
    );
    git_ok(&work, &["push", "-q", "origin", "main"]);
    let pushed = git_ok(&work, &["rev-parse", "HEAD"]);
    assert_eq!(server.head_of("main"), Some(pushed.clone()));
    assert_eq!(server.head_of("refs/heads/main"), Some(pushed));

    let wrong = url_with_token(&server, "ghs_wrong");
    let refused = git(&work, &["push", &wrong, "main:other"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("Authentication failed"), "{stderr}");
    assert_eq!(server.auth_failures(), 1);
    assert_eq!(server.head_of("other"), None);
}

#[test]
fn git_refuses_pushes_to_a_protected_branch_like_github() {
    let server = GitServer::start("clockrel", "fleet", TOKEN);
    server.seed(&[("README.md", b"fleet\n")]);
    server.protect_branch("main");
    server.protect_branch("stable");
    let dir = tempfile::tempdir().expect("a temporary directory");
    server.working_clone(dir.path());
    git_ok(
        dir.path(),
        &["commit", "-q", "--allow-empty", "-m", "release"],
    );
    let url = url_with_token(&server, TOKEN);

    for branch in ["main", "stable"] {
        let refused = git(dir.path(), &["push", &url, &format!("HEAD:{branch}")]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success());
        assert!(
            stderr.contains("(protected branch hook declined)"),
            "{stderr}"
        );
    }
    git_ok(dir.path(), &["push", "-q", &url, "HEAD:feature"]);
    let head = git_ok(dir.path(), &["rev-parse", "HEAD"]);
    assert_eq!(server.head_of("feature"), Some(head));
    assert_ne!(server.head_of("main"), server.head_of("feature"));
}

#[test]
fn git_working_clone_releases_tags_and_meets_other_pushes() {
    let server = GitServer::start("clockrel", "fleet", TOKEN);
    let seeded = server.seed(&[("firmware/version.json", b"1")]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    server.working_clone(dir.path());
    let origin = git_ok(dir.path(), &["remote", "get-url", "origin"]);
    assert_eq!(origin, server.clone_url());
    assert!(!git_ok(dir.path(), &["config", "user.email"]).is_empty());
    assert_eq!(git_ok(dir.path(), &["rev-parse", "HEAD"]), seeded);

    let url = url_with_token(&server, TOKEN);
    git_ok(dir.path(), &["tag", "-a", "v1.0.0", "-m", "v1.0.0"]);
    git_ok(dir.path(), &["tag", "light"]);
    git_ok(dir.path(), &["push", "-q", &url, "v1.0.0", "light"]);
    assert_eq!(server.tag_target("v1.0.0"), Some(seeded.clone()));
    assert_eq!(server.tag_target("light"), Some(seeded.clone()));
    assert_eq!(server.tag_target("v9"), None);

    let theirs = server.advance("main", "firmware/notes/other.txt", b"theirs");
    assert_eq!(server.head_of("main"), Some(theirs));
    git_ok(dir.path(), &["commit", "-q", "--allow-empty", "-m", "mine"]);
    let refused = git(dir.path(), &["push", &url, "main"]);
    assert!(
        !refused.status.success(),
        "a push behind the branch is refused"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("rejected"), "{stderr}");
}

/// Each pushed ref with the reason the server refused it, if it did.
type RefStatuses = Vec<(String, Option<String>)>;

/// Pushes `refspec` with libgit2, as the CLI does, giving up after one refused
/// credential; returns the result and each ref's status.
fn libgit2_push(
    repository: &git2::Repository,
    url: &str,
    token: &str,
    refspec: &str,
) -> (Result<(), git2::Error>, RefStatuses) {
    let asked = std::cell::Cell::new(0);
    let mut statuses = Vec::new();
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.credentials(|_, _, _| {
        asked.set(asked.get() + 1);
        if asked.get() > 1 {
            return Err(git2::Error::from_str("the token was refused"));
        }
        git2::Cred::userpass_plaintext("x-access-token", token)
    });
    callbacks.push_update_reference(|name, status| {
        statuses.push((name.to_owned(), status.map(str::to_owned)));
        Ok(())
    });
    let mut options = git2::PushOptions::new();
    options.remote_callbacks(callbacks);
    let mut remote = repository.remote_anonymous(url).expect("a remote");
    let result = remote.push(&[refspec], Some(&mut options));
    drop(options);
    (result, statuses)
}

#[test]
fn libgit2_gets_github_like_answers() {
    let server = GitServer::start("clockrel", "fleet", TOKEN);
    server.seed(&[("README.md", b"fleet\n")]);
    server.protect_branch("main");
    let dir = tempfile::tempdir().expect("a temporary directory");
    server.working_clone(dir.path());
    git_ok(
        dir.path(),
        &["commit", "-q", "--allow-empty", "-m", "release"],
    );
    let repository = git2::Repository::open(dir.path()).expect("the working clone");
    let url = server.clone_url();

    let (result, statuses) = libgit2_push(&repository, &url, TOKEN, "HEAD:refs/heads/main");
    assert!(
        result.is_ok(),
        "libgit2 reports a refused ref only per ref: {result:?}"
    );
    let refused = Some("protected branch hook declined".to_owned());
    assert_eq!(statuses, [("refs/heads/main".to_owned(), refused)]);

    let (result, statuses) = libgit2_push(&repository, &url, TOKEN, "HEAD:refs/heads/next");
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(statuses, [("refs/heads/next".to_owned(), None)]);

    let (result, _) = libgit2_push(&repository, &url, "ghs_wrong", "HEAD:refs/heads/other");
    assert!(result.is_err());
    assert_eq!(server.auth_failures(), 1);
}

#[test]
fn raw_host_serves_files_by_branch_tag_and_commit() {
    let server = GitServer::start("clockrel", "fleet", TOKEN);
    let first = server.seed(&[("fw/version.json", b"one".as_slice()), ("top.txt", b"top")]);
    let raw = |path: &str| get(&format!("{}/{path}", server.raw_url()));

    let reply = raw("clockrel/fleet/main/fw/version.json");
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"one"[..]));
    assert_eq!(raw(&format!("clockrel/fleet/{first}/top.txt")).body, b"top");
    assert_eq!(raw("clockrel/fleet/main/fw/missing.json").status, 404);
    assert_eq!(
        raw("clockrel/fleet/main/fw").status,
        404,
        "a tree is not a file"
    );
    assert_eq!(raw("clockrel/other/main/top.txt").status, 404);
    assert_eq!(raw("clockrel/fleet/nobranch/top.txt").status, 404);
    assert_eq!(
        raw(&format!("clockrel/fleet/{}/top.txt", &first[..7])).status,
        404
    );

    server.set_stale_reads(2);
    let second = server.advance("main", "fw/version.json", b"two");
    assert_eq!(
        raw("clockrel/fleet/main/fw/version.json").body,
        b"one",
        "stale"
    );
    assert_eq!(
        raw(&format!("clockrel/fleet/{second}/fw/version.json")).body,
        b"two"
    );
    assert_eq!(
        raw(&format!("clockrel/fleet/{first}/fw/version.json")).body,
        b"one"
    );
    assert_eq!(
        raw("clockrel/fleet/main/fw/version.json").body,
        b"one",
        "stale, the second read"
    );
    assert_eq!(
        raw("clockrel/fleet/main/fw/version.json").body,
        b"two",
        "fresh"
    );
}

// --- GitHub REST API -----------------------------------------------------------------

fn api_call(api: &GithubApi, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
    let auth = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("Accept", "application/vnd.github+json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    http(method, &format!("{}{path}", api.api_url()), &headers, body)
}

#[test]
fn github_creates_releases_and_takes_each_asset_once() {
    let api = GithubApi::start("clockrel", "fleet", TOKEN);
    let by_tag = "/repos/clockrel/fleet/releases/tags/v1.0.0";

    let anonymous = api_call(&api, "GET", by_tag, None, b"");
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["message"], "Bad credentials");
    assert_eq!(
        api_call(&api, "GET", by_tag, Some("wrong"), b"").status,
        401
    );
    let missing = api_call(&api, "GET", by_tag, Some(TOKEN), b"");
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json(),
        serde_json::json!({
            "message": "Not Found",
            "documentation_url": "https://docs.github.com/rest/releases/releases#get-a-release-by-tag-name",
            "status": "404"
        })
    );

    let create =
        br#"{"tag_name":"v1.0.0","name":"Wordclock 1.0.0","body":"notes","prerelease":false}"#;
    let created = api_call(
        &api,
        "POST",
        "/repos/clockrel/fleet/releases",
        Some(TOKEN),
        create,
    );
    assert_eq!(created.status, 201);
    let release = created.json();
    assert_eq!(release["tag_name"], "v1.0.0");
    assert_eq!(release["name"], "Wordclock 1.0.0");
    assert_eq!(release["assets"], serde_json::json!([]));
    let id = release["id"].as_u64().expect("a numeric id");
    let upload_url = release["upload_url"].as_str().expect("an upload URL");
    assert_eq!(
        upload_url,
        format!(
            "{}/repos/clockrel/fleet/releases/{id}/assets{{?name,label}}",
            api.api_url()
        )
    );
    let again = api_call(
        &api,
        "POST",
        "/repos/clockrel/fleet/releases",
        Some(TOKEN),
        create,
    );
    assert_eq!(again.status, 422);
    assert_eq!(again.json()["errors"][0]["code"], "already_exists");
    assert_eq!(
        api_call(&api, "GET", by_tag, Some(TOKEN), b"").json(),
        release
    );
    let by_id = format!("/repos/clockrel/fleet/releases/{id}");
    assert_eq!(
        api_call(&api, "GET", &by_id, Some(TOKEN), b"").json(),
        release
    );

    // As octocrab does: strip the URI template, name the asset in the query.
    let upload = format!(
        "{}?name=wordclock-1.0.0.bin",
        upload_url.replace("{?name,label}", "")
    );
    let upload = upload
        .strip_prefix(&api.api_url())
        .expect("the upload URL is on the API");
    let uploaded = api_call(&api, "POST", upload, Some(TOKEN), b"firmware");
    assert_eq!(uploaded.status, 201);
    let asset = uploaded.json();
    assert_eq!(asset["name"], "wordclock-1.0.0.bin");
    assert_eq!(asset["size"], 8);
    // `printf firmware | sha256sum`
    let digest = "sha256:c3bf47ea1f4a4a605470313cacb3a44f4a461f68c6faeab07e737610cb5ac835";
    assert_eq!(asset["digest"], digest);
    let duplicate = api_call(&api, "POST", upload, Some(TOKEN), b"different");
    assert_eq!(duplicate.status, 422);
    assert_eq!(duplicate.json()["errors"][0]["resource"], "ReleaseAsset");
    assert_eq!(api.upload_count("v1.0.0", "wordclock-1.0.0.bin"), 2);

    let listed = api_call(&api, "GET", &format!("{by_id}/assets"), Some(TOKEN), b"");
    assert_eq!(listed.json(), serde_json::json!([asset]));
    let download = get(asset["browser_download_url"]
        .as_str()
        .expect("a download URL"));
    assert_eq!(
        (download.status, download.body.as_slice()),
        (200, &b"firmware"[..])
    );
    assert_eq!(
        api.assets("v1.0.0"),
        [("wordclock-1.0.0.bin".to_owned(), b"firmware".to_vec())]
    );
    assert_eq!(
        api.release("v1.0.0").expect("the release")["assets"][0],
        asset
    );
    assert_eq!(api.release("v2.0.0"), None);
}

#[test]
fn github_injected_failures_come_before_anything_else() {
    let api = GithubApi::start("clockrel", "fleet", TOKEN);
    api.fail_next(1, 502);
    let create = br#"{"tag_name":"v1.0.0"}"#;
    let failed = api_call(
        &api,
        "POST",
        "/repos/clockrel/fleet/releases",
        Some(TOKEN),
        create,
    );
    assert_eq!(failed.status, 502);
    assert_eq!(failed.json()["status"], "502");
    assert_eq!(api.release("v1.0.0"), None);
    let created = api_call(
        &api,
        "POST",
        "/repos/clockrel/fleet/releases",
        Some(TOKEN),
        create,
    );
    assert_eq!(created.status, 201);
    let bad = api_call(
        &api,
        "POST",
        "/repos/clockrel/fleet/releases",
        Some(TOKEN),
        b"{",
    );
    assert_eq!(bad.status, 400);
    let elsewhere = api_call(
        &api,
        "GET",
        "/repos/someone/else/releases/tags/v1.0.0",
        Some(TOKEN),
        b"",
    );
    assert_eq!(elsewhere.status, 404);
}
