//! GitHub's REST API for releases, which has no local peer: answers the calls octocrab
//! makes with bodies built from GitHub's documented responses in `recordings/github`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::fault::Faults;
use crate::serve::{Serving, lock, percent_decode, query_param, respond};

/// The example response of "Create a release" in GitHub's REST docs (API version
/// 2022-11-28); "Get a release" and "Get a release by tag name" answer the same shape.
const RELEASE: &str = include_str!("../recordings/github/release.json");
/// The release asset in the same docs, as "Upload a release asset" and "List release
/// assets" answer it.
const ASSET: &str = include_str!("../recordings/github/asset.json");

const DOCS: &str = "https://docs.github.com/rest";
const DOCS_CREATE_RELEASE: &str = "https://docs.github.com/rest/releases/releases#create-a-release";
const DOCS_GET_RELEASE: &str = "https://docs.github.com/rest/releases/releases#get-a-release";
const DOCS_GET_BY_TAG: &str =
    "https://docs.github.com/rest/releases/releases#get-a-release-by-tag-name";
const DOCS_LIST_ASSETS: &str = "https://docs.github.com/rest/releases/assets#list-release-assets";
const DOCS_UPLOAD_ASSET: &str =
    "https://docs.github.com/rest/releases/assets#upload-a-release-asset";

/// A running GitHub API for one repository. Dropping it stops the server.
#[derive(Debug)]
pub struct GithubApi {
    serving: Serving,
    api: Arc<Api>,
}

#[derive(Debug)]
struct Api {
    owner: String,
    repo: String,
    token: String,
    faults: Faults,
    /// Quote the presented credential in 401 answers.
    echo: AtomicBool,
    /// Break off the next upload after GitHub has recorded the asset.
    interrupt: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `http://127.0.0.1:PORT`, which every URL in a response starts with.
    base: String,
    releases: Vec<Release>,
    /// Releases and assets share one sequence, so that no two objects have the same id.
    last_id: u64,
    upload_attempts: HashMap<(String, String), usize>,
    /// Where releases made from now on say their assets go, when not `base`.
    upload_base: Option<String>,
}

#[derive(Debug)]
struct Release {
    id: u64,
    tag: String,
    /// The release as GitHub shows it, except for its assets.
    json: Value,
    assets: Vec<Asset>,
}

#[derive(Debug)]
struct Asset {
    name: String,
    bytes: Vec<u8>,
    json: Value,
}

impl GithubApi {
    /// Starts the API for repository `owner/repo`, accepting `token`, with no releases.
    pub fn start(owner: &str, repo: &str, token: &str) -> GithubApi {
        let api = Arc::new(Api {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            token: token.to_owned(),
            faults: Faults::default(),
            echo: AtomicBool::new(false),
            interrupt: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        });
        let served = Arc::clone(&api);
        let serving = Serving::start(service_fn(move |request| {
            serve_api(Arc::clone(&served), request)
        }));
        // No request can come before this: nobody knows the port yet.
        lock(&api.state).base = serving.url();
        GithubApi { serving, api }
    }

    /// The URL to give octocrab as both `base_uri` and `upload_uri`.
    pub fn api_url(&self) -> String {
        self.serving.url()
    }

    /// The release for `tag` as the API returns it, with its assets.
    pub fn release(&self, tag: &str) -> Option<Value> {
        let state = lock(&self.api.state);
        state
            .releases
            .iter()
            .find(|r| r.tag == tag)
            .map(Release::to_json)
    }

    /// The names and bytes of the assets uploaded to the release for `tag`, in order.
    pub fn assets(&self, tag: &str) -> Vec<(String, Vec<u8>)> {
        let state = lock(&self.api.state);
        let release = state.releases.iter().find(|r| r.tag == tag);
        release.map_or_else(Vec::new, |release| {
            let assets = release.assets.iter();
            assets.map(|a| (a.name.clone(), a.bytes.clone())).collect()
        })
    }

    /// How many times an upload of `name` to the release for `tag` was attempted with
    /// valid credentials, including refused duplicates.
    pub fn upload_count(&self, tag: &str, name: &str) -> usize {
        let state = lock(&self.api.state);
        let key = (tag.to_owned(), name.to_owned());
        state.upload_attempts.get(&key).copied().unwrap_or(0)
    }

    /// Makes the next `count` requests answer `status` (an HTTP status code) without
    /// changing anything.
    pub fn fail_next(&self, count: usize, status: u16) {
        self.api.faults.fail_next(count, status);
    }

    /// Makes the next `count` requests of `method` (such as POST) answer `status`.
    pub fn fail_next_method(&self, method: &str, count: usize, status: u16) {
        self.api
            .faults
            .fail_next_method(Some(method), count, status);
    }

    /// Makes releases created from now on give an `upload_url` at `base` (this same
    /// server under another name, such as `http://localhost:PORT`), as GitHub Enterprise
    /// does with an uploads host of its own.
    pub fn answer_uploads_at(&self, base: &str) {
        lock(&self.api.state).upload_base = Some(base.trim_end_matches('/').to_owned());
    }

    /// Breaks off the next asset upload the way a dropped connection does: GitHub has
    /// already recorded the asset, which stays in the `starter` state with no digest and
    /// blocks its name until it is deleted.
    pub fn interrupt_next_upload(&self) {
        self.api.interrupt.store(true, Ordering::Relaxed);
    }

    /// Quotes the credential a request presented in the 401 it answers, as careless
    /// servers and proxies do, so a test can prove the client never prints it.
    pub fn echo_credentials(&self) {
        self.api.echo.store(true, Ordering::Relaxed);
    }
}

impl Api {
    fn is_repo(&self, owner: &str, repo: &str) -> bool {
        // GitHub matches owner and repository names regardless of case.
        owner.eq_ignore_ascii_case(&self.owner) && repo.eq_ignore_ascii_case(&self.repo)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let value = headers.get(header::AUTHORIZATION);
        let credentials = value.and_then(|value| value.to_str().ok()?.split_once(' '));
        credentials.is_some_and(|(scheme, token)| {
            let scheme_ok =
                scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
            scheme_ok && token.trim() == self.token
        })
    }
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    fn repo_url(&self, api: &Api) -> String {
        format!("{}/repos/{}/{}", self.base, api.owner, api.repo)
    }

    fn release_by_tag(&self, tag: &str) -> Response<Full<Bytes>> {
        match self.releases.iter().find(|r| r.tag == tag) {
            Some(release) => json_response(StatusCode::OK, &release.to_json()),
            None => not_found(DOCS_GET_BY_TAG),
        }
    }

    fn release_index(&self, id: &str) -> Option<usize> {
        let id: u64 = id.parse().ok()?;
        self.releases.iter().position(|r| r.id == id)
    }

    fn release_by_id(&self, id: &str) -> Option<&Release> {
        self.releases.get(self.release_index(id)?)
    }

    fn create_release(&mut self, api: &Api, body: &[u8]) -> Response<Full<Bytes>> {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "Problems parsing JSON",
                DOCS_CREATE_RELEASE,
            );
        };
        let Some(tag) = request.get("tag_name").and_then(Value::as_str) else {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid request.\n\n\"tag_name\" wasn't supplied.",
                DOCS_CREATE_RELEASE,
            );
        };
        if self.releases.iter().any(|r| r.tag == tag) {
            return validation_failed("Release", "tag_name", DOCS_CREATE_RELEASE);
        }
        let id = self.next_id();
        let repo_url = self.repo_url(api);
        let url = format!("{repo_url}/releases/{id}");
        let uploads = match &self.upload_base {
            Some(base) => url.replacen(&self.base, base, 1),
            None => url.clone(),
        };
        let html_url = format!(
            "{}/{}/{}/releases/tag/{tag}",
            self.base, api.owner, api.repo
        );
        let field = |name: &str| request.get(name).cloned().unwrap_or(Value::Null);
        let flag = |name: &str| request.get(name).and_then(Value::as_bool).unwrap_or(false);
        let target = request.get("target_commitish").cloned();
        let mut json = from_recording(
            RELEASE,
            [
                ("url", json!(url)),
                ("html_url", json!(html_url)),
                ("assets_url", json!(format!("{url}/assets"))),
                (
                    "upload_url",
                    json!(format!("{uploads}/assets{{?name,label}}")),
                ),
                ("tarball_url", json!(format!("{repo_url}/tarball/{tag}"))),
                ("zipball_url", json!(format!("{repo_url}/zipball/{tag}"))),
                ("id", json!(id)),
                ("node_id", json!(BASE64.encode(format!("07:Release{id}")))),
                ("tag_name", json!(tag)),
                ("target_commitish", target.unwrap_or(json!("main"))),
                ("name", field("name")),
                ("body", field("body")),
                ("draft", json!(flag("draft"))),
                ("prerelease", json!(flag("prerelease"))),
                ("assets", json!([])),
            ],
        );
        // Only a release created with a discussion category links to a discussion, and
        // only a published one has a publication date.
        json.remove("discussion_url");
        if flag("draft") {
            json.insert("published_at".to_owned(), Value::Null);
        }
        let release = Release {
            id,
            tag: tag.to_owned(),
            json: Value::Object(json),
            assets: Vec::new(),
        };
        let response = json_response(StatusCode::CREATED, &release.to_json());
        self.releases.push(release);
        response
    }

    fn upload_asset(
        &mut self,
        api: &Api,
        release_id: &str,
        upload: Upload,
    ) -> Response<Full<Bytes>> {
        let Some(index) = self.release_index(release_id) else {
            return not_found(DOCS_UPLOAD_ASSET);
        };
        let Some(name) = upload.name.filter(|name| !name.is_empty()) else {
            return validation_failed_with("ReleaseAsset", "name", "missing", DOCS_UPLOAD_ASSET);
        };
        let tag = self.releases[index].tag.clone();
        let attempts = self.upload_attempts.entry((tag.clone(), name.clone()));
        *attempts.or_default() += 1;
        let assets = &self.releases[index].assets;
        if assets.iter().any(|asset| asset.name == name) {
            return validation_failed("ReleaseAsset", "name", DOCS_UPLOAD_ASSET);
        }
        let id = self.next_id();
        let url = format!("{}/releases/assets/{id}", self.repo_url(api));
        let download = format!(
            "{}/{}/{}/releases/download/{tag}/{name}",
            self.base, api.owner, api.repo
        );
        let interrupted = api.interrupt.swap(false, Ordering::Relaxed);
        let (state, stored, digest) = if interrupted {
            let half = upload.bytes.slice(..upload.bytes.len() / 2);
            ("starter", half, Value::Null)
        } else {
            let digest = json!(format!("sha256:{}", sha256_hex(&upload.bytes)));
            ("uploaded", upload.bytes.clone(), digest)
        };
        let json = from_recording(
            ASSET,
            [
                ("url", json!(url)),
                ("browser_download_url", json!(download)),
                ("id", json!(id)),
                (
                    "node_id",
                    json!(BASE64.encode(format!("012:ReleaseAsset{id}"))),
                ),
                ("name", json!(name)),
                ("label", json!(upload.label)),
                ("state", json!(state)),
                ("content_type", json!(upload.content_type)),
                ("size", json!(stored.len())),
                ("digest", digest),
                ("download_count", json!(0)),
            ],
        );
        let json = Value::Object(json);
        let response = if interrupted {
            error(StatusCode::BAD_GATEWAY, "Server Error", DOCS_UPLOAD_ASSET)
        } else {
            json_response(StatusCode::CREATED, &json)
        };
        self.releases[index].assets.push(Asset {
            name,
            bytes: stored.to_vec(),
            json,
        });
        response
    }

    /// `DELETE /repos/{owner}/{repo}/releases/assets/{id}`: 204, or 404.
    fn delete_asset(&mut self, asset_id: &str) -> Response<Full<Bytes>> {
        let Ok(asset_id) = asset_id.parse::<u64>() else {
            return not_found(DOCS);
        };
        for release in &mut self.releases {
            let before = release.assets.len();
            release
                .assets
                .retain(|a| a.json["id"].as_u64() != Some(asset_id));
            if release.assets.len() != before {
                return respond(StatusCode::NO_CONTENT, "text/plain", "");
            }
        }
        not_found(DOCS)
    }

    /// A release asset's bytes, as its `browser_download_url` serves them to anyone.
    fn download(&self, tag: &str, name: &str) -> Response<Full<Bytes>> {
        let release = self.releases.iter().find(|r| r.tag == tag);
        let asset = release.and_then(|r| r.assets.iter().find(|a| a.name == name));
        match asset {
            Some(asset) => respond(
                StatusCode::OK,
                "application/octet-stream",
                asset.bytes.clone(),
            ),
            None => respond(StatusCode::NOT_FOUND, "text/plain", "Not Found"),
        }
    }
}

impl Release {
    fn to_json(&self) -> Value {
        let mut json = self.json.clone();
        json["assets"] = self.assets.iter().map(|a| a.json.clone()).collect();
        json
    }
}

/// An asset upload as octocrab sends it: the raw bytes, named in the query.
struct Upload {
    name: Option<String>,
    label: Option<String>,
    content_type: String,
    bytes: Bytes,
}

async fn serve_api(
    api: Arc<Api>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(status) = api.faults.take(request.method().as_str()) {
        let message = status.canonical_reason().unwrap_or("Server Error");
        return Ok(error(status, message, DOCS));
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let segments: Option<Vec<String>> = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(percent_decode)
        .collect();
    let Some(segments) = segments else {
        return Ok(not_found(DOCS));
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = &parts.method;
    if let (&Method::GET, [owner, repo, "releases", "download", tag, name]) =
        (method, segments.as_slice())
    {
        let state = lock(&api.state);
        return Ok(if api.is_repo(owner, repo) {
            state.download(tag, name)
        } else {
            respond(StatusCode::NOT_FOUND, "text/plain", "Not Found")
        });
    }
    if !api.authorized(&parts.headers) {
        // A careless server (or proxy) that quotes the credential back, so that tests
        // prove a client scrubs what it prints.
        let message = match (
            api.echo.load(Ordering::Relaxed),
            parts.headers.get(hyper::header::AUTHORIZATION),
        ) {
            (true, Some(value)) => format!("Bad credentials: {}", value.to_str().unwrap_or("?")),
            _ => "Bad credentials".to_owned(),
        };
        return Ok(error(StatusCode::UNAUTHORIZED, &message, DOCS));
    }
    let Ok(body) = body.collect().await.map(|body| body.to_bytes()) else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "Problems reading the request",
            DOCS,
        ));
    };
    let ["repos", owner, repo, "releases", route @ ..] = segments.as_slice() else {
        return Ok(not_found(DOCS));
    };
    if !api.is_repo(owner, repo) {
        return Ok(not_found(DOCS));
    }
    let mut state = lock(&api.state);
    Ok(match (method, route) {
        (&Method::GET, ["tags", tag]) => state.release_by_tag(tag),
        (&Method::DELETE, ["assets", id]) => state.delete_asset(id),
        (&Method::POST, []) => state.create_release(&api, &body),
        (&Method::GET, [id]) => match state.release_by_id(id) {
            Some(release) => json_response(StatusCode::OK, &release.to_json()),
            None => not_found(DOCS_GET_RELEASE),
        },
        (&Method::GET, [id, "assets"]) => match state.release_by_id(id) {
            Some(release) => json_response(StatusCode::OK, &release.to_json()["assets"]),
            None => not_found(DOCS_LIST_ASSETS),
        },
        (&Method::POST, [id, "assets"]) => {
            let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
            let upload = Upload {
                name: query_param(parts.uri.query(), "name"),
                label: query_param(parts.uri.query(), "label"),
                content_type: header(header::CONTENT_TYPE)
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
                bytes: body,
            };
            state.upload_asset(&api, id, upload)
        }
        _ => not_found(DOCS),
    })
}

/// A recorded response body with `fields` set to this server's values.
fn from_recording<const N: usize>(
    recording: &str,
    fields: [(&str, Value); N],
) -> Map<String, Value> {
    let mut object: Map<String, Value> = serde_json::from_str(recording)
        .expect("the recordings are JSON objects: a unit test parses them");
    for (name, value) in fields {
        object.insert(name.to_owned(), value);
    }
    object
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

fn json_response(status: StatusCode, json: &Value) -> Response<Full<Bytes>> {
    respond(status, "application/json; charset=utf-8", json.to_string())
}

/// An error the way GitHub words it.
fn error(status: StatusCode, message: &str, documentation_url: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "message": message,
        "documentation_url": documentation_url,
        "status": status.as_str(),
    });
    json_response(status, &body)
}

fn not_found(documentation_url: &str) -> Response<Full<Bytes>> {
    error(StatusCode::NOT_FOUND, "Not Found", documentation_url)
}

/// GitHub's answer to creating something that exists already.
fn validation_failed(
    resource: &str,
    field: &str,
    documentation_url: &str,
) -> Response<Full<Bytes>> {
    validation_failed_with(resource, field, "already_exists", documentation_url)
}

fn validation_failed_with(
    resource: &str,
    field: &str,
    code: &str,
    documentation_url: &str,
) -> Response<Full<Bytes>> {
    let status = StatusCode::UNPROCESSABLE_ENTITY;
    let body = json!({
        "message": "Validation Failed",
        "errors": [{ "resource": resource, "code": code, "field": field }],
        "documentation_url": documentation_url,
        "status": status.as_str(),
    });
    json_response(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_are_objects() {
        assert!(from_recording(RELEASE, []).contains_key("upload_url"));
        assert!(from_recording(ASSET, []).contains_key("browser_download_url"));
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
