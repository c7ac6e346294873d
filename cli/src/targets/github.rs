//! GitHub: the staged files committed on the release branch and tagged, both pushed with
//! git, then a GitHub Release for the tag carrying the image and the manifest.
//!
//! The commit carries the image and `version.json` together, so the raw URLs of a commit
//! never show a manifest without its image.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use super::{Outcome, Step, Stepped, TargetError, Upload};
use crate::config::{Config, GithubSource};
use crate::ota_files::StagedRelease;
use crate::progress::TargetProgress;
use crate::secrets::{self, Redactor, Secret};

/// The token, first name found wins. It needs `contents: write` on the repository.
pub const ENV_TOKEN: [&str; 2] = ["GITHUB_TOKEN", "GH_TOKEN"];
/// GitHub's basic-auth user for a token.
const TOKEN_USER: &str = "x-access-token";

/// Everything the GitHub target needs, resolved from the config and the environment.
#[derive(Debug, Clone)]
pub struct Github {
    repo_root: PathBuf,
    ota_dir: String,
    source: GithubSource,
    token: Secret,
    redactor: Redactor,
}

/// What the git half left: the release commit, for the raw URLs to verify.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub commit: String,
}

impl Github {
    pub fn from_env(config: &Config) -> Result<Github, TargetError> {
        let source = config.sources.github.clone().ok_or_else(|| {
            TargetError::new("config", "sources.github is not set in clockrel.toml")
        })?;
        let (token, _) = secrets::from_env(&ENV_TOKEN).ok_or_else(|| {
            TargetError::new(
                "credentials",
                format!("{} is not set", ENV_TOKEN.join(" or ")),
            )
            .hint("a fine-grained token with Contents: read and write on the repository")
        })?;
        let mut redactor = Redactor::default();
        redactor.add(&token);
        Ok(Github {
            repo_root: config.root.clone(),
            ota_dir: config.ota_files_in_repo(),
            source,
            token,
            redactor,
        })
    }

    /// Commits, tags and pushes, then makes the release. Stops at the first failure.
    pub async fn publish(
        &self,
        release: &StagedRelease,
        uploads: &[Upload],
        progress: &TargetProgress,
    ) -> Stepped<Pushed> {
        let git = self.clone();
        let version = release.version().clone();
        let title = release
            .manifest
            .title
            .clone()
            .unwrap_or_else(|| version.tag());
        let git_progress = progress.clone();
        let (mut steps, pushed) = tokio::task::spawn_blocking(move || {
            git.push_release(&version.tag(), &title, &git_progress)
        })
        .await
        .map_err(|e| {
            (
                Vec::new(),
                TargetError::new("git", format!("the git task failed: {e}")),
            )
        })??;

        let assets: Vec<&Upload> = uploads
            .iter()
            .filter(|u| u.name != release.alias_name)
            .collect();
        match self.make_release(release, &assets, progress).await {
            Ok((more, ())) => {
                steps.extend(more);
                Ok((steps, pushed))
            }
            Err((more, error)) => {
                steps.extend(more);
                Err((steps, error))
            }
        }
    }

    /// The git half: commit `ota_files/` if needed, tag, push branch and tag.
    fn push_release(&self, tag: &str, title: &str, progress: &TargetProgress) -> Stepped<Pushed> {
        let mut steps = Vec::new();
        let fail = |steps: &Vec<Step>, step: &str, e: String| {
            (
                steps.clone(),
                TargetError::new(step, self.redactor.scrub(&e)),
            )
        };
        let repo = Repository::discover(&self.repo_root)
            .map_err(|e| fail(&steps, "open repository", e.message().to_owned()))?;
        let branch = &self.source.branch;

        progress.step(&format!("commit {}/", self.ota_dir));
        let (commit, committed) =
            commit_ota_files(&repo, branch, &self.ota_dir, &format!("Release {tag}"))
                .map_err(|e| fail(&steps, "commit", e))?;
        steps.push(Step::new(
            format!("commit {}/ on {branch}: {}", self.ota_dir, short(commit)),
            if committed {
                Outcome::Done
            } else {
                Outcome::AlreadyThere
            },
        ));

        progress.step(&format!("tag {tag}"));
        let tagged = ensure_tag(&repo, tag, commit, title)
            .map_err(|e| fail(&steps, &format!("tag {tag}"), e))?;
        steps.push(Step::new(
            format!("tag {tag} at {}", short(commit)),
            if tagged {
                Outcome::Done
            } else {
                Outcome::AlreadyThere
            },
        ));

        let what = format!("push {branch} and {tag} to {}", self.source.git_url());
        progress.step(&what);
        let pushed = push(&repo, &self.source.git_url(), branch, tag, &self.token).map_err(
            |(e, hint)| {
                let error = TargetError::new(what.clone(), self.redactor.scrub(&e));
                (
                    steps.clone(),
                    match hint {
                        Some(hint) => error.hint(hint),
                        None => error,
                    },
                )
            },
        )?;
        steps.push(Step::new(
            what,
            if pushed {
                Outcome::Done
            } else {
                Outcome::AlreadyThere
            },
        ));
        Ok((
            steps,
            Pushed {
                commit: commit.to_string(),
            },
        ))
    }

    /// The GitHub Release for the tag, with the image and the manifest as assets.
    async fn make_release(
        &self,
        release: &StagedRelease,
        assets: &[&Upload],
        progress: &TargetProgress,
    ) -> Stepped<()> {
        let mut steps = Vec::new();
        let tag = release.version().tag();
        let fail = |steps: &Vec<Step>, step: String, e: octocrab::Error| {
            (steps.clone(), self.github_error(step, e))
        };
        let octo = self
            .octocrab()
            .map_err(|e| fail(&steps, "GitHub API client".to_owned(), e))?;
        let releases = octo.repos(self.source.owner(), self.source.name());
        let releases = releases.releases();

        let what = format!("GitHub Release {tag}");
        progress.step(&what);
        let (gh_release, outcome) = match releases.get_by_tag(&tag).await {
            Ok(found) => (found, Outcome::AlreadyThere),
            Err(octocrab::Error::GitHub { source, .. }) if source.status_code == 404 => {
                let body = release.manifest.description.clone().unwrap_or_default();
                let title = release
                    .manifest
                    .title
                    .clone()
                    .unwrap_or_else(|| tag.clone());
                let created = releases
                    .create(&tag)
                    .name(&title)
                    .body(&body)
                    .prerelease(
                        !release
                            .version()
                            .to_string()
                            .split('-')
                            .nth(1)
                            .unwrap_or_default()
                            .is_empty(),
                    )
                    .send()
                    .await
                    .map_err(|e| fail(&steps, what.clone(), e))?;
                (created, Outcome::Done)
            }
            Err(e) => return Err(fail(&steps, what, e)),
        };
        steps.push(Step::new(what, outcome));

        for upload in assets {
            let what = format!("release asset {}", upload.name);
            progress.step(&what);
            let existing = gh_release.assets.iter().find(|a| a.name == upload.name);
            let outcome = match existing {
                Some(asset) => {
                    let matches = self
                        .asset_matches(asset, &upload.bytes)
                        .await
                        .map_err(|e| (steps.clone(), TargetError::new(what.clone(), e)))?;
                    if matches {
                        Outcome::AlreadyThere
                    } else {
                        return Err((
                            steps,
                            TargetError::new(what, "the release already has an asset of this name with other bytes")
                                .hint("a release's assets are never replaced: stage and publish a new version"),
                        ));
                    }
                }
                None => {
                    releases
                        .upload_asset(gh_release.id.0, &upload.name, upload.bytes.to_vec().into())
                        .send()
                        .await
                        .map_err(|e| fail(&steps, what.clone(), e))?;
                    Outcome::Done
                }
            };
            progress.advance(upload.bytes.len() as u64);
            steps.push(Step::new(what, outcome));
        }
        Ok((steps, ()))
    }

    /// Whether a published asset holds `bytes`: by its digest when GitHub gives one,
    /// else by downloading it (GitHub redirects downloads to storage on another host).
    async fn asset_matches(
        &self,
        asset: &octocrab::models::repos::Asset,
        bytes: &[u8],
    ) -> Result<bool, String> {
        if asset.size != bytes.len() as i64 {
            return Ok(false);
        }
        if let Some(digest) = asset
            .digest
            .as_deref()
            .and_then(|d| d.strip_prefix("sha256:"))
        {
            return Ok(digest.eq_ignore_ascii_case(&ota_core::Sha256::of(bytes).to_string()));
        }
        let response = reqwest::Client::new()
            .get(asset.url.as_str())
            .header(reqwest::header::ACCEPT, "application/octet-stream")
            .header(reqwest::header::USER_AGENT, "clockrel")
            .bearer_auth(self.token.expose())
            .timeout(std::time::Duration::from_secs(120))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| self.redactor.scrub(&e.to_string()))?;
        let body = response
            .bytes()
            .await
            .map_err(|e| self.redactor.scrub(&e.to_string()))?;
        Ok(body.as_ref() == bytes)
    }

    fn octocrab(&self) -> Result<octocrab::Octocrab, octocrab::Error> {
        let api = self.source.api_url();
        let upload = self.source.upload_url.clone().unwrap_or_else(|| {
            if api == crate::config::GITHUB_API_URL {
                "https://uploads.github.com".to_owned()
            } else {
                api.to_owned()
            }
        });
        octocrab::Octocrab::builder()
            .base_uri(api)?
            .upload_uri(upload)?
            .personal_token(self.token.expose().to_owned())
            .set_connect_timeout(Some(std::time::Duration::from_secs(10)))
            .set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .build()
    }

    fn github_error(&self, step: String, error: octocrab::Error) -> TargetError {
        match error {
            octocrab::Error::GitHub { source, .. } => {
                let status = source.status_code.as_u16();
                let error = TargetError::new(
                    step,
                    self.redactor
                        .scrub(&format!("GitHub answered {status}: {}", source.message)),
                );
                match status {
                    401 => error.hint(format!("{} is not a valid token", ENV_TOKEN.join(" or "))),
                    403 | 404 => {
                        error.hint("the token needs Contents: read and write on the repository")
                    }
                    _ => error,
                }
            }
            other => TargetError::new(step, self.redactor.scrub(&other.to_string())),
        }
    }
}

/// What `publish` would do, without credentials, the repository or the network.
pub fn plan(config: &Config, release: &StagedRelease) -> Vec<Step> {
    let Some(source) = &config.sources.github else {
        return Vec::new();
    };
    let tag = release.version().tag();
    let branch = &source.branch;
    let dir = config.ota_files_in_repo();
    let mut steps = vec![
        Step::new(
            format!("commit {dir}/ on {branch} if it has changes"),
            Outcome::Planned,
        ),
        Step::new(
            format!("tag {tag} (annotated) at that commit"),
            Outcome::Planned,
        ),
        Step::new(
            format!(
                "push refs/heads/{branch} and refs/tags/{tag} to {}",
                source.git_url()
            ),
            Outcome::Planned,
        ),
        Step::new(
            format!(
                "GitHub Release {tag} in {} ({})",
                source.repository,
                source.api_url()
            ),
            Outcome::Planned,
        ),
    ];
    for name in [release.image_name.as_str(), crate::ota_files::MANIFEST] {
        steps.push(Step::new(format!("release asset {name}"), Outcome::Planned));
    }
    steps
}

fn short(oid: Oid) -> String {
    oid.to_string()[..12].to_owned()
}

/// Commits the files under `dir` on top of `branch`'s tip when they differ from it, and
/// nothing else the user may have staged. Returns the release commit and whether it is new.
fn commit_ota_files(
    repo: &Repository,
    branch: &str,
    dir: &str,
    message: &str,
) -> Result<(Oid, bool), String> {
    let head = repo.head().map_err(|e| e.message().to_owned())?;
    let on = head.shorthand().ok().filter(|_| head.is_branch());
    if on != Some(branch) {
        return Err(format!(
            "the repository is on {}, but releases go on {branch}",
            on.unwrap_or("a detached HEAD")
        ));
    }
    let parent = head.peel_to_commit().map_err(|e| e.message().to_owned())?;
    let workdir = repo
        .workdir()
        .ok_or("the repository has no work tree")?
        .to_owned();

    let mut tree_index = git2::Index::new().map_err(|e| e.message().to_owned())?;
    tree_index
        .read_tree(&parent.tree().map_err(|e| e.message().to_owned())?)
        .map_err(|e| e.message().to_owned())?;
    let mut files = Vec::new();
    collect_files(&workdir, Path::new(dir), &mut files)
        .map_err(|e| format!("cannot read {dir}/: {e}"))?;
    for rel in &files {
        let bytes = std::fs::read(workdir.join(rel))
            .map_err(|e| format!("cannot read {}: {e}", rel.display()))?;
        let path = rel.to_string_lossy().replace('\\', "/");
        let blob = repo.blob(&bytes).map_err(|e| e.message().to_owned())?;
        let entry = git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            file_size: bytes.len() as u32,
            id: blob,
            flags: 0,
            flags_extended: 0,
            path: path.into_bytes(),
        };
        tree_index.add(&entry).map_err(|e| e.message().to_owned())?;
    }
    let tree_id = tree_index
        .write_tree_to(repo)
        .map_err(|e| e.message().to_owned())?;
    if tree_id == parent.tree_id() {
        return Ok((parent.id(), false));
    }
    let tree = repo
        .find_tree(tree_id)
        .map_err(|e| e.message().to_owned())?;
    let signature = signature(repo)?;
    let commit = repo
        .commit(
            Some("HEAD"),
            &signature,
            &signature,
            message,
            &tree,
            &[&parent],
        )
        .map_err(|e| e.message().to_owned())?;
    // Keep the user's index in step with the new commit for these paths only.
    let mut index = repo.index().map_err(|e| e.message().to_owned())?;
    for rel in &files {
        index.add_path(rel).map_err(|e| e.message().to_owned())?;
    }
    index.write().map_err(|e| e.message().to_owned())?;
    Ok((commit, true))
}

fn collect_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        // Leftovers of an interrupted atomic write are not part of the release.
        if name.to_string_lossy().starts_with(".clockrel-") {
            continue;
        }
        let child = rel.join(&name);
        if entry.file_type()?.is_dir() {
            collect_files(root, &child, out)?;
        } else {
            out.push(child);
        }
    }
    out.sort();
    Ok(())
}

fn signature(repo: &Repository) -> Result<git2::Signature<'static>, String> {
    repo.signature()
        .or_else(|_| git2::Signature::now("clockrel", "clockrel@localhost"))
        .map(|s| s.to_owned())
        .map_err(|e| e.message().to_owned())
}

/// Makes the annotated tag at `commit`; a tag already there is fine, one elsewhere is not.
fn ensure_tag(repo: &Repository, tag: &str, commit: Oid, title: &str) -> Result<bool, String> {
    if let Ok(existing) = repo.revparse_single(&format!("refs/tags/{tag}")) {
        let at = existing
            .peel_to_commit()
            .map_err(|e| e.message().to_owned())?
            .id();
        return if at == commit {
            Ok(false)
        } else {
            Err(format!(
                "tag {tag} already points at {}, not at the release commit {}",
                short(at),
                short(commit)
            ))
        };
    }
    let target = repo
        .find_object(commit, None)
        .map_err(|e| e.message().to_owned())?;
    repo.tag(tag, &target, &signature(repo)?, title, false)
        .map_err(|e| e.message().to_owned())?;
    Ok(true)
}

/// Pushes branch and tag; `Ok(false)` when the remote already had both.
fn push(
    repo: &Repository,
    url: &str,
    branch: &str,
    tag: &str,
    token: &Secret,
) -> Result<bool, (String, Option<String>)> {
    let bad_credentials = Some(format!(
        "the remote refused the credentials: check {} (it needs Contents: write)",
        ENV_TOKEN.join(" or ")
    ));
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| (e.message().to_owned(), None))?;
    let wanted = [
        (
            format!("refs/heads/{branch}"),
            repo.refname_to_id(&format!("refs/heads/{branch}")),
        ),
        (
            format!("refs/tags/{tag}"),
            repo.refname_to_id(&format!("refs/tags/{tag}")),
        ),
    ];

    let auth_failed = std::cell::Cell::new(false);
    let listed = {
        let connection = remote.connect_auth(
            git2::Direction::Push,
            Some(callbacks(token, &auth_failed, None)),
            None,
        );
        match connection {
            Ok(connection) => connection
                .list()
                .map(|heads| {
                    heads
                        .iter()
                        .map(|h| (h.name().to_owned(), h.oid()))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| (e.message().to_owned(), None))?,
            Err(e) if auth_failed.get() || e.message().contains("401") => {
                return Err((e.message().to_owned(), bad_credentials));
            }
            Err(e) => return Err((e.message().to_owned(), None)),
        }
    };
    let refspecs: Vec<String> = wanted
        .iter()
        .filter(|(name, local)| {
            let remote_oid = listed.iter().find(|(n, _)| n == name).map(|(_, oid)| *oid);
            local.as_ref().ok().copied() != remote_oid
        })
        .map(|(name, _)| format!("{name}:{name}"))
        .collect();
    if refspecs.is_empty() {
        return Ok(false);
    }

    let rejected = std::cell::RefCell::new(Vec::new());
    let pushed = {
        let mut options = git2::PushOptions::new();
        options.remote_callbacks(callbacks(token, &auth_failed, Some(&rejected)));
        remote.push(&refspecs, Some(&mut options))
    };
    let rejected = rejected.into_inner();
    match pushed {
        Err(e) if auth_failed.get() => Err((e.message().to_owned(), bad_credentials)),
        Err(e) => Err((e.message().to_owned(), non_fast_forward_hint(e.message()))),
        // git2 returns Ok when the server refuses a ref: its reasons arrive per ref.
        Ok(()) if !rejected.is_empty() => {
            let reasons = rejected.join("; ");
            let hint = non_fast_forward_hint(&reasons);
            Err((format!("the remote rejected {reasons}"), hint))
        }
        Ok(()) => Ok(true),
    }
}

fn non_fast_forward_hint(message: &str) -> Option<String> {
    // libgit2 finds it before sending ("... not present locally"); a server says "non-fast-forward".
    (message.contains("fast-forward")
        || message.contains("fastforward")
        || message.contains("not present locally"))
    .then(|| {
        "the remote branch has commits this one lacks: pull, stage again if needed, and publish"
            .to_owned()
    })
}

/// Credentials are offered once: libgit2 would otherwise ask again forever.
fn callbacks<'a>(
    token: &'a Secret,
    auth_failed: &'a std::cell::Cell<bool>,
    rejected: Option<&'a std::cell::RefCell<Vec<String>>>,
) -> git2::RemoteCallbacks<'a> {
    let mut callbacks = git2::RemoteCallbacks::new();
    let offered = std::cell::Cell::new(false);
    callbacks.credentials(move |_, _, _| {
        if offered.replace(true) {
            auth_failed.set(true);
            return Err(git2::Error::from_str("authentication failed"));
        }
        git2::Cred::userpass_plaintext(TOKEN_USER, token.expose())
    });
    if let Some(rejected) = rejected {
        callbacks.push_update_reference(move |name, status| {
            if let Some(reason) = status {
                rejected.borrow_mut().push(format!("{name} ({reason})"));
            }
            Ok(())
        });
    }
    callbacks
}
