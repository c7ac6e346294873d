//! Proof from the outside: fetch each source's public `version.json` and the image it
//! names, as a device would, and check signature, SHA-256 and size, retrying with
//! backoff while CDN caches still serve the old release.

use std::time::{Duration, Instant};

use ota_core::Manifest;
use ota_core::engine::Source;
use ota_core::manifest::{PublicKey, Trusted};
use serde::Serialize;

use crate::config::Config;
use crate::exit::{Exit, Failure};
use crate::ota_files::{MANIFEST, OtaFiles, StagedError, StagedRelease};
use crate::progress::{Progress, Style};
use crate::targets::github::{self, git};

/// How long a public URL may serve stale bytes by default: raw.githubusercontent.com
/// caches for up to 5 minutes.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(360);
/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A manifest is small and an image a few MiB: refuse to read more than this.
const MAX_BODY: u64 = 32 << 20;

/// Where one source serves a release: `base` + `version.json`, `base` + the image name.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// `github@<commit>`, `github@<branch>` or `r2`.
    pub source: String,
    pub base: String,
    /// Where this source's manifest must send the legacy fleet (`firmware_url` is this
    /// plus the image name): the branch for GitHub, the public URL for R2.
    pub legacy_base: String,
}

/// The public places of the configured sources. With `commit`, GitHub is probed at that
/// commit first (never cached stale), then at the branch devices read.
pub fn probes(config: &Config, commit: Option<&str>, only: Option<Source>) -> Vec<Probe> {
    let mut probes = Vec::new();
    let dir_url = |git_ref: &str| {
        config
            .github_raw_url(git_ref, "")
            .map(|url| url.trim_end_matches('/').to_owned() + "/")
    };
    if only.is_none_or(|o| o == Source::Github)
        && let Some(github) = &config.sources.github
    {
        let legacy_base = dir_url(&github.branch).unwrap_or_default();
        if let Some(commit) = commit {
            // A commit id is shortened; a placeholder (the dry run's) is shown whole.
            let label = match commit.len() {
                40 if commit.bytes().all(|b| b.is_ascii_hexdigit()) => &commit[..12],
                _ => commit,
            };
            probes.extend(dir_url(commit).map(|base| Probe {
                source: format!("github@{label}"),
                base,
                legacy_base: legacy_base.clone(),
            }));
        }
        probes.extend(dir_url(&github.branch).map(|base| Probe {
            source: format!("github@{}", github.branch),
            base,
            legacy_base: legacy_base.clone(),
        }));
    }
    if only.is_none_or(|o| o == Source::R2)
        && let Some(r2) = &config.sources.r2
    {
        probes.push(Probe {
            source: "r2".to_owned(),
            base: r2.public_url_of(""),
            legacy_base: r2.public_url_of(""),
        });
    }
    probes
}

/// What one source was found to serve.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    pub source: String,
    pub manifest_url: String,
    pub image_url: Option<String>,
    pub ok: bool,
    /// The version the source serves, when its manifest verified.
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub attempts: u32,
    /// Why it failed, or what it serves.
    pub detail: String,
}

/// The verdict over all sources.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub sources: Vec<Served>,
    /// Set when two sources serve different releases.
    pub disagreement: Option<String>,
}

/// `clockrel verify`: what each configured source (or `only` one) serves, checked as a
/// device checks it. When a release is staged, every source must serve exactly it, and
/// GitHub is also probed at the release tag's commit.
pub async fn run(
    config: &Config,
    only: Option<Source>,
    deadline: Duration,
    style: Style,
) -> Result<Verification, Failure> {
    let trusted = crate::publish::trusted_keys(config)?;
    let files = OtaFiles::new(config.ota_files(), config.release_name());
    // Only an absent version.json means nothing is staged; a broken staging is an error.
    let staged = match files.load_release(&trusted) {
        Ok(release) => Some(release),
        Err(StagedError::NothingStaged { .. }) => None,
        Err(e) => {
            return Err(Failure::new(Exit::BadInput, e)
                .hint("stage the release again with `clockrel stage`"));
        }
    };
    let commit = staged.as_ref().and_then(|r| release_commit(config, r));
    let probes = probes(config, commit.as_deref(), only);
    if probes.is_empty() {
        return Err(Failure::new(
            Exit::Usage,
            anyhow::anyhow!("no source to verify is configured"),
        )
        .hint("set [sources.github] and [sources.r2] in clockrel.toml"));
    }
    let client = http_client()?;
    let progress = Progress::new(style);
    Ok(verify(
        &client,
        &probes,
        &trusted,
        staged.as_ref(),
        deadline,
        &progress,
    )
    .await)
}

/// `clockrel verify --file`: a `version.json` on disk checked as a device checks one,
/// with no server: its signature against the trusted keys and, when the image it names
/// is beside it, that image against it.
pub fn local(config: &Config, path: &std::path::Path) -> Result<Verification, Failure> {
    let trusted = crate::publish::trusted_keys(config)?;
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::new(
            Exit::BadInput,
            anyhow::anyhow!("cannot read {}: {e}", path.display()),
        )
    })?;
    let mut served = Served {
        source: "file".to_owned(),
        manifest_url: path.display().to_string(),
        image_url: None,
        ok: false,
        version: None,
        sha256: None,
        attempts: 1,
        detail: String::new(),
    };
    let checked = Manifest::from_json(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|manifest| manifest.trust(&trusted).map_err(|e| e.to_string()));
    match checked {
        Err(why) => served.detail = format!("{MANIFEST}: {why}"),
        Ok(manifest) => {
            let key = manifest.key().id();
            served.version = Some(manifest.version.to_string());
            served.sha256 = Some(manifest.sha256.to_string());
            let image = Some(path.with_file_name(manifest.file())).filter(|image| image.is_file());
            let verdict = match &image {
                None => Ok(format!(
                    "{} signed by trusted key {key} (its image is not beside it)",
                    manifest.version.tag()
                )),
                Some(image_path) => std::fs::read(image_path)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| {
                        ota_core::image::parse(&bytes, manifest.chip).map_err(|e| e.to_string())
                    })
                    .and_then(|info| manifest.check_image(&info).map_err(|e| e.to_string()))
                    .and_then(|()| {
                        manifest.patches.iter().try_for_each(|patch| {
                            std::fs::read(path.with_file_name(&patch.file))
                                .map_err(|e| e.to_string())
                                .and_then(|bytes| patch_matches(patch, &bytes))
                                .map_err(|why| format!("{}: {why}", patch.file))
                        })
                    })
                    .map(|()| {
                        format!(
                            "{} signed by trusted key {key}, with a matching image{}",
                            manifest.version.tag(),
                            with_patches(&manifest)
                        )
                    }),
            };
            served.image_url = image.map(|p| p.display().to_string());
            match verdict {
                Ok(detail) => {
                    served.ok = true;
                    served.detail = detail;
                }
                Err(why) => served.detail = why,
            }
        }
    }
    Ok(Verification {
        ok: served.ok,
        sources: vec![served],
        disagreement: None,
    })
}

/// The commit in the local repository that holds the staged release, if there is one:
/// GitHub's raw URLs at that commit cannot be stale.
fn release_commit(config: &Config, release: &StagedRelease) -> Option<String> {
    let repo = git2::Repository::discover(&config.root).ok()?;
    let branch = &config.sources.github.as_ref()?.branch;
    let uploads = crate::publish::uploads_for(config, release, Source::Github);
    let files = github::in_repository(&config.ota_files_in_repo(), &uploads);
    git::find_release_commit(&repo, branch, &release.version().tag(), &files, true)
        .map(|oid| oid.to_string())
}

/// Checks every probe, concurrently, until it serves a trusted release (the `expected`
/// one, if given) or `deadline` passes.
/// Fetches every probe with `client` (see [`http_client`]; made before any work, so that
/// a publish never ends without its report for want of one).
pub async fn verify(
    client: &reqwest::Client,
    probes: &[Probe],
    trusted: &[PublicKey],
    expected: Option<&StagedRelease>,
    deadline: Duration,
    progress: &Progress,
) -> Verification {
    let checks = probes
        .iter()
        .map(|probe| check_source(client, probe, trusted, expected, deadline, progress));
    let sources = futures_util::future::join_all(checks).await;
    let disagreement = disagreement(&sources);
    Verification {
        ok: !sources.is_empty() && sources.iter().all(|s| s.ok) && disagreement.is_none(),
        sources,
        disagreement,
    }
}

fn disagreement(sources: &[Served]) -> Option<String> {
    let verified: Vec<&Served> = sources.iter().filter(|s| s.version.is_some()).collect();
    let first = verified.first()?;
    verified
        .iter()
        .find(|s| s.version != first.version || s.sha256 != first.sha256)
        .map(|other| {
            format!(
                "{} serves {} ({}), but {} serves {} ({})",
                first.source,
                first.version.as_deref().unwrap_or("?"),
                short(first.sha256.as_deref()),
                other.source,
                other.version.as_deref().unwrap_or("?"),
                short(other.sha256.as_deref())
            )
        })
}

fn short(sha: Option<&str>) -> &str {
    sha.map_or("?", |s| &s[..s.len().min(12)])
}

/// The client every probe uses: never one without timeouts, which could hang forever.
pub fn http_client() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .user_agent(concat!("clockrel/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            Failure::new(
                Exit::Error,
                anyhow::Error::new(e).context("cannot set up HTTPS"),
            )
        })
}

async fn check_source(
    client: &reqwest::Client,
    probe: &Probe,
    trusted: &[PublicKey],
    expected: Option<&StagedRelease>,
    deadline: Duration,
    progress: &Progress,
) -> Served {
    let started = Instant::now();
    let manifest_url = format!("{}{MANIFEST}", probe.base);
    let mut served = Served {
        source: probe.source.clone(),
        manifest_url: manifest_url.clone(),
        image_url: None,
        ok: false,
        version: None,
        sha256: None,
        attempts: 0,
        detail: String::new(),
    };
    let mut wait = Duration::from_secs(1);
    loop {
        served.attempts += 1;
        match try_source(client, probe, &manifest_url, trusted, expected).await {
            Ok((manifest, image_url)) => {
                served.ok = true;
                served.version = Some(manifest.version.to_string());
                served.sha256 = Some(manifest.sha256.to_string());
                served.image_url = Some(image_url);
                served.detail = format!(
                    "serves {} with a matching image{}",
                    manifest.version.tag(),
                    with_patches(&manifest)
                );
                return served;
            }
            Err(Attempt {
                detail,
                manifest,
                image_url,
            }) => {
                served.detail = detail;
                served.image_url = image_url;
                if let Some(m) = manifest {
                    served.version = Some(m.version.to_string());
                    served.sha256 = Some(m.sha256.to_string());
                }
            }
        }
        if started.elapsed() + wait > deadline {
            return served;
        }
        progress.note(&format!(
            "{}: {}; retrying in {}s",
            probe.source,
            served.detail,
            wait.as_secs()
        ));
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// Why one attempt failed, with what it did see.
struct Attempt {
    detail: String,
    /// The manifest the source served, when it verified (but was not the expected one).
    manifest: Option<Trusted>,
    image_url: Option<String>,
}

impl Attempt {
    fn new(detail: impl Into<String>) -> Attempt {
        Attempt {
            detail: detail.into(),
            manifest: None,
            image_url: None,
        }
    }
}

async fn try_source(
    client: &reqwest::Client,
    probe: &Probe,
    manifest_url: &str,
    trusted: &[PublicKey],
    expected: Option<&StagedRelease>,
) -> Result<(Trusted, String), Attempt> {
    let bytes = fetch(client, manifest_url).await.map_err(Attempt::new)?;
    let manifest = Manifest::from_json(&bytes)
        .map_err(|e| Attempt::new(format!("{MANIFEST}: {e}")))?
        .trust(trusted)
        .map_err(|e| Attempt::new(format!("{MANIFEST}: {e}")))?;
    let file = manifest.file().to_owned();
    let image_url = format!("{}{file}", probe.base);
    let legacy_url = format!("{}{file}", probe.legacy_base);
    if manifest
        .firmware_url
        .as_ref()
        .is_some_and(|url| *url != legacy_url)
    {
        return Err(Attempt {
            detail: format!(
                "firmware_url is {}, not this source's {legacy_url}: the existing fleet would download elsewhere",
                manifest.firmware_url.as_deref().unwrap_or_default()
            ),
            manifest: Some(manifest),
            image_url: Some(image_url),
        });
    }
    if let Some(expected) = expected
        && bytes != expected.manifest_at(legacy_url.clone())
    {
        let staged = expected.manifest.served_at(legacy_url);
        let detail = if *manifest == staged {
            format!(
                "{MANIFEST} holds the staged {} but not its bytes: the server reformatted or rewrote it",
                staged.version.tag()
            )
        } else if manifest.version == staged.version {
            format!(
                "{MANIFEST} is another manifest of {}: SHA-256 {}, the staged one {}",
                staged.version.tag(),
                short(Some(&manifest.sha256.to_string())),
                short(Some(&staged.sha256.to_string()))
            )
        } else {
            format!(
                "{MANIFEST} is {} ({}), not the staged {}",
                manifest.version.tag(),
                short(Some(&manifest.sha256.to_string())),
                staged.version.tag()
            )
        };
        return Err(Attempt {
            detail,
            manifest: Some(manifest),
            image_url: Some(image_url),
        });
    }
    let image = fetch(client, &image_url).await.map_err(|e| Attempt {
        detail: e,
        manifest: Some(manifest.clone()),
        image_url: Some(image_url.clone()),
    })?;
    // Checked as a device checks it: well formed, for the manifest's chip, and the very
    // image the manifest promises.
    let checked = ota_core::image::parse(&image, manifest.chip)
        .map_err(|e| e.to_string())
        .and_then(|info| manifest.check_image(&info).map_err(|e| e.to_string()));
    if let Err(why) = checked {
        return Err(Attempt {
            detail: format!("{file}: {why}"),
            manifest: Some(manifest),
            image_url: Some(image_url),
        });
    }
    for patch in &manifest.patches {
        let url = format!("{}{}", probe.base, patch.file);
        let checked = fetch(client, &url)
            .await
            .and_then(|bytes| patch_matches(patch, &bytes));
        if let Err(why) = checked {
            return Err(Attempt {
                detail: format!("{}: {why}", patch.file),
                manifest: Some(manifest.clone()),
                image_url: Some(image_url),
            });
        }
    }
    Ok((manifest, image_url))
}

/// Whether `bytes` are the patch the manifest lists: its size and SHA-256. (What it
/// makes is checked by the device as any image is.)
fn patch_matches(patch: &ota_core::manifest::Patch, bytes: &[u8]) -> Result<(), String> {
    let digest = ota_core::Sha256::of(bytes);
    if bytes.len() as u64 != patch.size || digest != patch.sha256 {
        return Err(format!(
            "{} bytes with SHA-256 {}, the manifest lists {} bytes with {}",
            bytes.len(),
            short(Some(&digest.to_string())),
            patch.size,
            short(Some(&patch.sha256.to_string()))
        ));
    }
    Ok(())
}

/// How many patches a verified manifest came with, for the report.
fn with_patches(manifest: &Manifest) -> String {
    match manifest.patches.len() {
        0 => String::new(),
        1 => " and its patch".to_owned(),
        n => format!(" and its {n} patches"),
    }
}

/// GETs a URL, refusing error statuses and bodies larger than [`MAX_BODY`].
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut response = client
        .get(url)
        .header(reqwest::header::CACHE_CONTROL, "no-cache")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", without_url(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {}", status.as_u16()));
    }
    if response.content_length().is_some_and(|len| len > MAX_BODY) {
        return Err(format!("GET {url}: larger than {MAX_BODY} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {}", without_url(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_BODY {
            return Err(format!("GET {url}: larger than {MAX_BODY} bytes"));
        }
    }
    Ok(body)
}

/// reqwest repeats the URL in its errors; the caller already names it.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "");
    }
    if error.is_connect() {
        "cannot connect".to_owned()
    } else if error.is_timeout() {
        "timed out".to_owned()
    } else {
        text.trim().to_owned()
    }
}
