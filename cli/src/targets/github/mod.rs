//! GitHub: the staged files committed on the release branch and tagged, both pushed with
//! git, then a GitHub Release for the tag carrying the image and the manifest.
//!
//! The commit carries the image and `version.json` together, so the raw URLs of a commit
//! never show a manifest without its image.

mod git;

use std::path::PathBuf;

use git2::Repository;

use super::{Outcome, Step, Stepped, TargetError, Upload};
use crate::config::{Config, GithubSource};
use crate::ota_files::StagedRelease;
use crate::progress::TargetProgress;
use crate::secrets::{self, Redactor, Secret};

/// The token, first name found wins. It needs `contents: write` on the repository.
pub const ENV_TOKEN: [&str; 2] = ["GITHUB_TOKEN", "GH_TOKEN"];

/// Everything the GitHub target needs, resolved from the config and the environment.
#[derive(Debug, Clone)]
pub struct Github {
    repo_root: PathBuf,
    ota_dir: String,
    source: GithubSource,
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
    ) -> (Stepped<()>, Option<String>) {
        let git = self.clone();
        let version = release.version().clone();
        let title = release
            .manifest
            .title
            .clone()
            .unwrap_or_else(|| version.tag());
        let git_progress = progress.clone();
        let files = uploads.to_vec();
        let pushed = tokio::task::spawn_blocking(move || {
            git.push_release(&version.tag(), &title, &files, &git_progress)
        })
        .await;
        let (mut steps, commit) = match pushed {
            Ok((Ok((steps, ())), commit)) => (steps, commit),
            Ok((Err(failed), commit)) => return (Err(failed), commit),
            Err(e) => {
                let error = TargetError::new("git", format!("the git task failed: {e}"));
                return (Err((Vec::new(), error)), None);
            }
        };
        let assets: Vec<&Upload> = uploads
            .iter()
            .filter(|u| u.name != release.alias_name)
            .collect();
        let outcome = match self.make_release(release, &assets, progress).await {
            Ok((more, ())) => {
                steps.extend(more);
                Ok((steps, ()))
            }
            Err((more, error)) => {
                steps.extend(more);
                Err((steps, error))
            }
        };
        (outcome, commit)
    }

    /// The git half: the release commit on the branch (pushed first: from then on the
    /// raw URLs serve the release), then the tag. Also returns the release commit once
    /// it is known, even when a later step fails, so its raw URLs can be verified.
    fn push_release(
        &self,
        tag: &str,
        title: &str,
        uploads: &[Upload],
        progress: &TargetProgress,
    ) -> (Stepped<()>, Option<String>) {
        let mut release_commit = None;
        let outcome = self.push_release_steps(tag, title, uploads, progress, &mut release_commit);
        (
            outcome,
            release_commit.map(|oid: git2::Oid| oid.to_string()),
        )
    }

    fn push_release_steps(
        &self,
        tag: &str,
        title: &str,
        uploads: &[Upload],
        progress: &TargetProgress,
        release_commit: &mut Option<git2::Oid>,
    ) -> Stepped<()> {
        let mut steps = Vec::new();
        let fail = |steps: &Vec<Step>, step: &str, message: &str, hint: Option<String>| {
            let error = TargetError::new(step, self.redactor.scrub(message));
            (
                steps.clone(),
                match hint {
                    Some(hint) => error.hint(hint),
                    None => error,
                },
            )
        };
        let repo = Repository::discover(&self.repo_root)
            .map_err(|e| fail(&steps, "open repository", e.message(), None))?;
        let branch = &self.source.branch;
        let files: Vec<(String, &[u8])> = uploads
            .iter()
            .map(|u| (format!("{}/{}", self.ota_dir, u.name), u.bytes.as_ref()))
            .collect();

        progress.step(&format!("commit {}/", self.ota_dir));
        let (commit, outcome) =
            git::release_commit(&repo, branch, tag, &files, &format!("Release {tag}"))
                .map_err(|e| fail(&steps, "commit", &e, None))?;
        *release_commit = Some(commit);
        steps.push(Step::new(
            format!(
                "commit {}/ on {branch}: {}",
                self.ota_dir,
                git::short(commit)
            ),
            outcome,
        ));

        let remote = git::Remote::new(&repo, &self.source.git_url(), &self.token);
        let what = format!("push {branch} to {}", self.source.git_url());
        progress.step(&what);
        let refs = remote
            .refs()
            .map_err(|e| fail(&steps, &what, &e.message, e.hint))?;
        let remote_oid = |name: &str| refs.iter().find(|(n, _)| n == name).map(|(_, oid)| *oid);
        let outcome = if git::contains(&repo, remote_oid(&format!("refs/heads/{branch}")), commit) {
            Outcome::AlreadyThere
        } else {
            let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
            remote
                .push(&[refspec])
                .map_err(|e| fail(&steps, &what, &e.message, e.hint))?;
            Outcome::Done
        };
        steps.push(Step::new(what, outcome).live());

        progress.step(&format!("tag {tag}"));
        let outcome = git::ensure_tag(&repo, tag, commit, title)
            .map_err(|e| fail(&steps, &format!("tag {tag}"), &e, None))?;
        steps.push(Step::new(
            format!("tag {tag} at {}", git::short(commit)),
            outcome,
        ));
        let what = format!("push {tag} to {}", self.source.git_url());
        progress.step(&what);
        let tag_ref = format!("refs/tags/{tag}");
        let outcome = if repo.refname_to_id(&tag_ref).ok() == remote_oid(&tag_ref) {
            Outcome::AlreadyThere
        } else {
            remote
                .push(&[format!("{tag_ref}:{tag_ref}")])
                .map_err(|e| fail(&steps, &what, &e.message, e.hint))?;
            Outcome::Done
        };
        steps.push(Step::new(what, outcome));
        Ok((steps, ()))
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
                    .prerelease(release.version().is_prerelease())
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
            let upload_it = || async {
                releases
                    .upload_asset(gh_release.id.0, &upload.name, upload.bytes.to_vec().into())
                    .send()
                    .await
                    .map(|_| Outcome::Done)
            };
            let outcome = match existing {
                // An upload that broke off leaves an asset GitHub never finished: it holds
                // the name until deleted, and nobody can have downloaded it.
                Some(asset) if asset.state != "uploaded" => {
                    octo.repos(self.source.owner(), self.source.name())
                        .release_assets()
                        .delete(asset.id.0)
                        .await
                        .map_err(|e| {
                            fail(&steps, format!("{what}: delete the unfinished upload"), e)
                        })?;
                    upload_it()
                        .await
                        .map_err(|e| fail(&steps, what.clone(), e))?
                }
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
                None => upload_it()
                    .await
                    .map_err(|e| fail(&steps, what.clone(), e))?,
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
