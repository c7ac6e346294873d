//! GitHub: the staged files committed on the release branch and tagged, both pushed with
//! git, then a GitHub Release for the tag carrying the image and the manifest.
//!
//! The commit carries the image and `version.json` together, so the raw URLs of a commit
//! never show a manifest without its image.

pub(crate) mod git;

use std::path::PathBuf;

use git2::Repository;

use super::{FileSpec, Ran, TargetError, Upload};
use crate::config::{Config, GithubSource};
use crate::ota_files::StagedRelease;
use crate::plan::{Outcome, Record, Task};
use crate::progress::TargetProgress;
use crate::secrets::{self, Redactor, Secret};

/// The token, first name found wins. It needs `contents: write` on the repository.
pub const ENV_TOKEN: [&str; 2] = ["GITHUB_TOKEN", "GH_TOKEN"];

/// Everything the GitHub target needs, resolved from the config and the environment.
#[derive(Debug, Clone)]
pub struct Github {
    repo_root: PathBuf,
    /// The config sits at the work tree's root (see [`Config::is_at_root_of`]).
    at_repo_root: bool,
    source: GithubSource,
    /// `ota_files/` as the repository names it: where the raw URLs read the release.
    dir: String,
    token: Secret,
    redactor: Redactor,
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
            at_repo_root: Repository::discover(&config.root)
                .is_ok_and(|repo| config.is_at_root_of(repo.workdir())),
            source,
            dir: config.ota_files_in_repo(),
            token,
            redactor,
        })
    }

    /// Walks `tasks` (from [`tasks`]): commits, pushes, tags, then the Release and its
    /// assets, stopping at the first failure. Also returns the release commit once it is
    /// known, even when a later step fails, so that its raw URLs can be verified.
    pub async fn publish(
        &self,
        release: &StagedRelease,
        uploads: &[Upload],
        tasks: &[Task],
        pushed: tokio::sync::oneshot::Sender<bool>,
        progress: &TargetProgress,
    ) -> (Ran, Option<String>) {
        let git = self.clone();
        let title = release
            .manifest
            .title
            .clone()
            .unwrap_or_else(|| release.version().tag());
        let git_progress = progress.clone();
        let files = uploads.to_vec();
        let mut record = Record::new(tasks);
        let git_done = tokio::task::spawn_blocking(move || {
            let result = git.run_git(&mut record, &title, &files, &git_progress);
            (record, result)
        })
        .await;
        // Whoever waits for the push (R2, in a release) learns how it went.
        let _ = pushed.send(matches!(git_done, Ok((_, Ok(_)))));
        let (mut record, commit) = match git_done {
            Ok((record, Ok(commit))) => (record, commit),
            Ok((record, Err(error))) => {
                return (Ran::failed(record, error), None);
            }
            Err(e) => {
                let mut record = Record::new(tasks);
                let error = TargetError::new("git", format!("the git task failed: {e}"));
                record.fail(error.message.clone());
                return (Ran::failed(record, error), None);
            }
        };
        let commit = commit.map(|oid| oid.to_string());
        let ran = match self.run_api(&mut record, release, uploads, progress).await {
            Ok(()) => Ran::ok(record),
            Err(error) => Ran::failed(record, error),
        };
        (ran, commit)
    }

    /// The git tasks at the head of the plan: the release commit on the branch (pushed
    /// first: from then on the raw URLs serve the release), then the tag.
    fn run_git(
        &self,
        record: &mut Record,
        title: &str,
        uploads: &[Upload],
        progress: &TargetProgress,
    ) -> Result<Option<git2::Oid>, TargetError> {
        let fail = |record: &mut Record, step: &str, message: &str, hint: Option<String>| {
            let error = TargetError::new(step, self.redactor.scrub(message));
            let error = match hint {
                Some(hint) => error.hint(hint),
                None => error,
            };
            record.fail(error.message.clone());
            error
        };
        let repo = Repository::discover(&self.repo_root)
            .map_err(|e| fail(record, "open repository", e.message(), None))?;
        if !self.at_repo_root {
            let why = "clockrel.toml is not at the root of its git work tree, so ota_files/ is not where the raw URLs look";
            return Err(fail(
                record,
                "open repository",
                why,
                Some("move clockrel.toml to the repository's root".to_owned()),
            ));
        }
        let remote = git::Remote::new(&repo, &self.source.git_url(), &self.token);
        let files = in_repository(&self.dir, uploads);
        let mut commit = None;
        let mut remote_refs: Option<Vec<(String, git2::Oid)>> = None;
        while let Some(task) = record.next().cloned() {
            let git_task = matches!(
                task,
                Task::Commit { .. }
                    | Task::PushBranch { .. }
                    | Task::Tag { .. }
                    | Task::PushTag { .. }
            );
            if !git_task {
                // The API's tasks follow the git ones.
                break;
            }
            let what = task.to_string();
            progress.step(&what);
            match &task {
                Task::Commit { branch, tag, .. } => {
                    let message = format!("Release {tag}");
                    let (oid, outcome) =
                        git::release_commit(&repo, branch, tag, &files, &message, false)
                            .map_err(|e| fail(record, "commit", &e, None))?;
                    commit = Some(oid);
                    record.finish(outcome, Some(git::short(oid)));
                }
                Task::PushBranch { branch, tag, .. } => {
                    // Made here, or before the target ran (`release`): then the tag marks
                    // it, or, when the tag marks the source, it follows the tag.
                    let found = || git::find_release_commit(&repo, branch, tag, &files, true);
                    let Some(release_commit) = commit.or_else(found) else {
                        let why = format!("no commit holds the release {tag}");
                        return Err(fail(record, &what, &why, None));
                    };
                    commit = Some(release_commit);
                    let commit = release_commit;
                    let refs = remote
                        .refs()
                        .map_err(|e| fail(record, &what, &e.message, e.hint))?;
                    let theirs = remote_oid(&refs, &format!("refs/heads/{branch}"));
                    remote_refs = Some(refs);
                    let outcome = if git::contains(&repo, theirs, commit) {
                        Outcome::AlreadyThere
                    } else {
                        // The release commit (or its merge with the remote's work), not
                        // the local branch's tip: what was committed on top of it since
                        // is not part of the release.
                        let push = git::commit_to_push(&repo, branch, theirs, commit, &files);
                        let refspec = format!("{push}:refs/heads/{branch}");
                        remote
                            .push(&[refspec])
                            .map_err(|e| fail(record, &what, &e.message, e.hint))?;
                        Outcome::Done
                    };
                    record.finish(outcome, None);
                }
                Task::Tag { tag } => {
                    let commit =
                        commit.ok_or_else(|| fail(record, &what, "no release commit", None))?;
                    let outcome = git::ensure_tag(&repo, tag, commit, title)
                        .map_err(|e| fail(record, &format!("tag {tag}"), &e, None))?;
                    record.finish(outcome, Some(git::short(commit)));
                }
                Task::PushTag { tag, .. } => {
                    let refs = match remote_refs.take() {
                        Some(refs) => refs,
                        None => remote
                            .refs()
                            .map_err(|e| fail(record, &what, &e.message, e.hint))?,
                    };
                    let tag_ref = format!("refs/tags/{tag}");
                    let outcome =
                        if repo.refname_to_id(&tag_ref).ok() == remote_oid(&refs, &tag_ref) {
                            Outcome::AlreadyThere
                        } else {
                            remote
                                .push(&[format!("{tag_ref}:{tag_ref}")])
                                .map_err(|e| fail(record, &what, &e.message, e.hint))?;
                            Outcome::Done
                        };
                    record.finish(outcome, None);
                }
                _ => break,
            }
        }
        Ok(commit)
    }

    /// The API tasks: the GitHub Release for the tag, then each asset.
    async fn run_api(
        &self,
        record: &mut Record,
        release: &StagedRelease,
        uploads: &[Upload],
        progress: &TargetProgress,
    ) -> Result<(), TargetError> {
        let fail = |record: &mut Record, error: TargetError| {
            record.fail(error.message.clone());
            error
        };
        let octo = self
            .octocrab()
            .map_err(|e| fail(record, self.github_error("GitHub API client".to_owned(), e)))?;
        let repos = octo.repos(self.source.owner(), self.source.name());
        let releases = repos.releases();
        let mut gh_release = None;
        while let Some(task) = record.next().cloned() {
            let what = task.to_string();
            progress.step(&what);
            match &task {
                Task::GithubRelease { tag, .. } => {
                    let (found, outcome) = match releases.get_by_tag(tag).await {
                        Ok(found) => (found, Outcome::AlreadyThere),
                        Err(octocrab::Error::GitHub { source, .. })
                            if source.status_code == 404 =>
                        {
                            let body = release.manifest.description.clone().unwrap_or_default();
                            let title = release
                                .manifest
                                .title
                                .clone()
                                .unwrap_or_else(|| tag.clone());
                            let created = releases
                                .create(tag)
                                .name(&title)
                                .body(&body)
                                .prerelease(release.version().is_prerelease())
                                .send()
                                .await
                                .map_err(|e| fail(record, self.github_error(what.clone(), e)))?;
                            (created, Outcome::Done)
                        }
                        Err(e) => return Err(fail(record, self.github_error(what, e))),
                    };
                    gh_release = Some(found);
                    record.finish(outcome, None);
                }
                Task::ReleaseAsset { name, .. } if !uploads.iter().any(|u| u.name() == name) => {
                    match super::unstaged_patch(name) {
                        Some(why) => record.finish(Outcome::Skipped(why), None),
                        None => {
                            let error = TargetError::new(what, "no such file staged");
                            return Err(fail(record, error));
                        }
                    }
                }
                Task::ReleaseAsset { name, .. } => {
                    let (Some(gh_release), Some(upload)) =
                        (&gh_release, uploads.iter().find(|u| u.name() == name))
                    else {
                        let error = TargetError::new(what, "no release or no such file staged");
                        return Err(fail(record, error));
                    };
                    let outcome = self
                        .put_asset(&octo, gh_release, upload, &what)
                        .await
                        .map_err(|e| fail(record, e))?;
                    progress.advance(upload.bytes.len() as u64);
                    record.finish(outcome, None);
                }
                other => {
                    let error = TargetError::new(what, format!("not a GitHub task: {other:?}"));
                    return Err(fail(record, error));
                }
            }
        }
        Ok(())
    }

    /// Uploads one asset unless the release has it with the same bytes.
    async fn put_asset(
        &self,
        octo: &octocrab::Octocrab,
        gh_release: &octocrab::models::repos::Release,
        upload: &Upload,
        what: &str,
    ) -> Result<Outcome, TargetError> {
        let repos = octo.repos(self.source.owner(), self.source.name());
        let upload_it = || async {
            self.token_goes_to(&gh_release.upload_url)
                .map_err(|why| TargetError::new(what, why).hint(UPLOAD_URL_HINT))?;
            repos
                .releases()
                .upload_asset(gh_release.id.0, upload.name(), upload.bytes.to_vec().into())
                .send()
                .await
                .map(|_| Outcome::Done)
                .map_err(|e| self.github_error(what.to_owned(), e))
        };
        match gh_release.assets.iter().find(|a| a.name == upload.name()) {
            // An upload that broke off leaves an asset GitHub never finished: it holds
            // the name until deleted, and nobody can have downloaded it.
            Some(asset) if asset.state != "uploaded" => {
                repos
                    .release_assets()
                    .delete(asset.id.0)
                    .await
                    .map_err(|e| {
                        self.github_error(format!("{what}: delete the unfinished upload"), e)
                    })?;
                upload_it().await
            }
            Some(asset) => {
                let matches = self
                    .asset_matches(asset, &upload.bytes)
                    .await
                    .map_err(|e| TargetError::new(what, e))?;
                if matches {
                    Ok(Outcome::AlreadyThere)
                } else {
                    Err(TargetError::new(
                        what,
                        "the release already has an asset of this name with other bytes",
                    )
                    .hint("a release's assets are never replaced: stage and publish a new version"))
                }
            }
            None => upload_it().await,
        }
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
        self.token_goes_to(asset.url.as_str())?;
        // Without the URL: after the redirect it is a signed link to the asset.
        let failed = |e: reqwest::Error| self.redactor.scrub(&e.without_url().to_string());
        let mut response = reqwest::Client::new()
            .get(asset.url.as_str())
            .header(reqwest::header::ACCEPT, "application/octet-stream")
            .header(reqwest::header::USER_AGENT, "clockrel")
            .bearer_auth(self.token.expose())
            .timeout(std::time::Duration::from_secs(120))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(failed)?;
        // Longer than these bytes is not these bytes: read no further, whatever the
        // storage host would send.
        let mut body = Vec::with_capacity(bytes.len());
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            body.extend_from_slice(&chunk);
            if body.len() > bytes.len() {
                return Ok(false);
            }
        }
        Ok(body == bytes)
    }

    /// Where assets are uploaded: configured, or GitHub's own uploads host.
    fn upload_uri(&self) -> String {
        let api = self.source.api_url();
        self.source.upload_url.clone().unwrap_or_else(|| {
            if api == crate::config::GITHUB_API_URL {
                "https://uploads.github.com".to_owned()
            } else {
                api.to_owned()
            }
        })
    }

    /// Refuses a URL from an API answer that the token would not go to (octocrab sends
    /// it only to the API and upload hosts configured): the request would go out
    /// without it, and the 401 that follows would blame a good token. Nor is the token
    /// ever sent anywhere else.
    fn token_goes_to(&self, url: &str) -> Result<(), String> {
        // Scheme and authority as written, as octocrab compares them (`host:443` is
        // not `host` to it).
        let origin = |url: &str| {
            let (scheme, rest) = url.split_once("://")?;
            let authority = rest.split(['/', '?', '{']).next()?;
            Some(format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                authority.to_ascii_lowercase()
            ))
        };
        let answered = origin(url);
        let allowed = [origin(self.source.api_url()), origin(&self.upload_uri())];
        match answered {
            Some(host) if allowed.contains(&Some(host.clone())) => Ok(()),
            _ => Err(format!(
                "GitHub's API answered with {}, which is neither the API ({}) nor the uploads host ({}) the token is for",
                self.redactor.scrub(url.split('{').next().unwrap_or(url)),
                self.source.api_url(),
                self.upload_uri()
            )),
        }
    }

    fn octocrab(&self) -> Result<octocrab::Octocrab, octocrab::Error> {
        octocrab::Octocrab::builder()
            .base_uri(self.source.api_url())?
            .upload_uri(self.upload_uri())?
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

/// The release's files at their paths in the repository (`dir` is `ota_files/` as the
/// repository names it): what a release commit holds and the raw URLs serve.
pub fn in_repository<'u>(dir: &str, uploads: &'u [Upload]) -> Vec<(String, &'u [u8])> {
    uploads
        .iter()
        .map(|u| (format!("{dir}/{}", u.name()), u.bytes.as_ref()))
        .collect()
}

const UPLOAD_URL_HINT: &str = "set [sources.github] upload_url in clockrel.toml to the uploads host your GitHub names (GitHub Enterprise has one of its own)";

/// The GitHub plan: what `publish` does there, in order, worked out without
/// credentials, the repository or the network. `--dry-run` prints it; [`Github::publish`]
/// walks it.
pub fn tasks(source: &GithubSource, dir: &str, tag: &str, files: &[FileSpec]) -> Vec<Task> {
    let branch = source.branch.clone();
    let remote = source.git_url();
    let mut tasks = vec![
        Task::Commit {
            branch: branch.clone(),
            dir: dir.to_owned(),
            tag: tag.to_owned(),
        },
        Task::PushBranch {
            branch,
            remote: remote.clone(),
            tag: tag.to_owned(),
        },
        Task::Tag {
            tag: tag.to_owned(),
        },
        Task::PushTag {
            tag: tag.to_owned(),
            remote,
        },
        Task::GithubRelease {
            tag: tag.to_owned(),
            repository: source.repository.clone(),
        },
    ];
    // The versioned files: the alias only stands in for "the latest" on raw URLs.
    tasks.extend(
        files
            .iter()
            .filter(|file| file.immutable || file.name == crate::ota_files::MANIFEST)
            .map(|file| Task::ReleaseAsset {
                name: file.name.clone(),
            }),
    );
    tasks
}

fn remote_oid(refs: &[(String, git2::Oid)], name: &str) -> Option<git2::Oid> {
    refs.iter().find(|(n, _)| n == name).map(|(_, oid)| *oid)
}
