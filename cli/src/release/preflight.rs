//! The checks a release makes before any work: each failure says what is wrong and
//! what to do, and all of them run, so one run names every problem.

use std::path::Path;
use std::process::Command;

use ota_core::Version;
use ota_core::engine::Source;

use super::{Failed, Local, in_repo};
use crate::keys;
use crate::ota_files::MANIFEST;
use crate::plan::Preflight;
use crate::targets::github::{Github, git};
use crate::targets::r2::R2;

impl Local<'_> {
    pub(super) fn preflight(&self, check: &Preflight) -> Result<(), Failed> {
        match check {
            Preflight::CleanTree => self.clean_tree(),
            Preflight::OnBranch { branch } => {
                let head = self
                    .repo
                    .head()
                    .map_err(|e| (e.message().to_owned(), None))?;
                let on = head.shorthand().ok().filter(|_| head.is_branch());
                match (on, branch) {
                    (Some(on), Some(branch)) if on == branch => Ok(()),
                    (Some(_), None) => Ok(()),
                    (on, Some(branch)) => Err((
                        format!(
                            "HEAD is on {}, but releases go on {branch}",
                            on.unwrap_or("a detached HEAD")
                        ),
                        Some(format!("git switch {branch}")),
                    )),
                    (None, None) => Err((
                        "HEAD is detached: a release commit goes on a branch".to_owned(),
                        Some("switch to the branch you release from".to_owned()),
                    )),
                }
            }
            Preflight::NewVersion { .. } => self.new_version(),
            Preflight::TagFree { tag } => self.tag_free(tag),
            Preflight::TaggedSource { tag, .. } => self.tagged_source(tag),
            Preflight::VersionSet { file, version } => {
                let says = self
                    .plan
                    .version_file
                    .as_ref()
                    .map(|f| f.read().map_err(|e| (e.to_string(), None)))
                    .transpose()?;
                match says {
                    Some(says) if says == self.plan.version => Ok(()),
                    Some(says) => Err((
                        format!(
                            "{file} says {says}, but the tag is {}",
                            self.plan.version.tag()
                        ),
                        Some(format!(
                            "with --from-tag the tag marks the source that is built: set {version} in {file}, commit, and tag that commit"
                        )),
                    )),
                    None => Ok(()),
                }
            }
            Preflight::Credentials { source } => {
                let missing = match Source::parse(source) {
                    Some(Source::Github) => Github::from_env(self.config).err(),
                    Some(Source::R2) => self
                        .config
                        .sources
                        .r2
                        .as_ref()
                        .and_then(|r2| R2::from_env(r2).err()),
                    None => None,
                };
                match missing {
                    None => Ok(()),
                    Some(e) => Err((
                        e.message.clone(),
                        Some(e.hint.clone().map_or_else(
                            || "or leave the source out with --only".to_owned(),
                            |h| format!("{h}; or leave the source out with --only"),
                        )),
                    )),
                }
            }
            Preflight::SigningKey => {
                let (key, _) = keys::load_secret(self.options.key.as_deref()).map_err(|e| {
                    (
                        e.to_string(),
                        Some("make one with `clockrel keygen`, or give --key FILE".to_owned()),
                    )
                })?;
                let path = self.config.signing.trusted_keys.as_ref().ok_or_else(|| {
                    (
                        "signing.trusted_keys is not set in clockrel.toml".to_owned(),
                        None,
                    )
                })?;
                let trusted = keys::load_trusted(path).map_err(|e| (e.to_string(), None))?;
                if trusted.contains(&key.public()) {
                    Ok(())
                } else {
                    Err((
                        format!("key {} is not in {}: devices would refuse this release", key.public().id(), path.display()),
                        Some("add the key's public line (from `clockrel keygen`) and ship a firmware that trusts it first".to_owned()),
                    ))
                }
            }
            // A staged version is not built again: no toolchain is needed to finish it.
            Preflight::Toolchain { .. }
                if self.staged_release().is_some() || self.committed_release().is_some() =>
            {
                Ok(())
            }
            Preflight::Toolchain { toolchain } => {
                // rustup resolves the name as cargo +NAME will (`stable`, `esp`, ...).
                let ran = Command::new("rustup")
                    .args(["run", toolchain, "rustc", "--version"])
                    .output();
                let install = "install it with `cargo install espup && espup install`, or build elsewhere and give --elf FILE or --image FILE";
                match ran {
                    Ok(out) if out.status.success() => Ok(()),
                    Ok(_) => Err((
                        format!(
                            "the `{toolchain}` Rust toolchain is not installed, so the firmware cannot be built here"
                        ),
                        Some(install.to_owned()),
                    )),
                    Err(e) => Err((
                        format!(
                            "rustup cannot be run ({e}), so the `{toolchain}` toolchain cannot be used"
                        ),
                        Some(install.to_owned()),
                    )),
                }
            }
        }
    }

    /// Paths the release itself writes, as git names them: changes there are its own.
    /// With `--from-tag` only `ota_files/`: the tagged source is built as it is.
    fn own_paths(&self) -> Vec<String> {
        let mut own: Vec<String> = self
            .plan
            .version_file
            .iter()
            .filter(|_| !self.options.from_tag)
            .flat_map(|f| f.paths())
            .map(|p| in_repo(self.config, p))
            .collect();
        own.push(format!("{}/", self.config.ota_files_in_repo()));
        own
    }

    fn clean_tree(&self) -> Result<(), Failed> {
        let mut options = git2::StatusOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .exclude_submodules(true);
        let statuses = self
            .repo
            .statuses(Some(&mut options))
            .map_err(|e| (e.message().to_owned(), None))?;
        let own = self.own_paths();
        let mut dirty: Vec<String> = statuses
            .iter()
            .filter(|e| !e.status().is_ignored())
            .filter_map(|e| e.path().ok().map(str::to_owned))
            .filter(|path| {
                !own.iter()
                    .any(|o| path == o || (o.ends_with('/') && path.starts_with(o.as_str())))
            })
            .collect();
        dirty.extend(self.version_files_changed_otherwise());
        if dirty.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = dirty.iter().take(5).map(String::as_str).collect();
        let more = dirty.len().saturating_sub(shown.len());
        Err((
            format!(
                "the working tree has changes a release would not commit: {}{}",
                shown.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            ),
            Some("commit or stash them first: a release commits only the version bump and ota_files/".to_owned()),
        ))
    }

    /// The version files that differ from HEAD by more than the version the release
    /// sets: a dependency added and not committed would ship in the release commit.
    fn version_files_changed_otherwise(&self) -> Vec<String> {
        let Some(file) = self
            .plan
            .version_file
            .as_ref()
            .filter(|_| !self.options.from_tag)
        else {
            return Vec::new();
        };
        let tree = self.repo.head().ok().and_then(|h| h.peel_to_tree().ok());
        let committed = |name: &str| {
            let entry = tree.as_ref()?.get_path(Path::new(name)).ok()?;
            let blob = self.repo.find_blob(entry.id()).ok()?;
            Some(String::from_utf8_lossy(blob.content()).into_owned())
        };
        file.paths()
            .into_iter()
            .filter_map(|path| {
                let name = in_repo(self.config, path);
                let committed = committed(&name)?;
                let now = std::fs::read_to_string(path).ok()?;
                let only_the_bump = now == committed
                    || file
                        .bumped(path, &committed, &self.plan.version)
                        .is_ok_and(|bumped| bumped == now);
                (!only_the_bump).then_some(name)
            })
            .collect()
    }

    fn new_version(&self) -> Result<(), Failed> {
        let version = &self.plan.version;
        if version.to_string().contains('+') {
            return Err((
                format!("{version} carries build metadata (+...), which no release version may"),
                Some(
                    "release 2.9.0 or 2.9.0-rc.1: build metadata does not order versions"
                        .to_owned(),
                ),
            ));
        }
        let staged = self
            .files
            .current()
            .map_err(|e| (e.to_string(), None))?
            .map(|m| m.version);
        // A re-run finishing this very release.
        if staged.as_ref() == Some(version) {
            return Ok(());
        }
        let tags = self
            .repo
            .tag_names(Some("v*"))
            .map_err(|e| (e.message().to_owned(), None))?;
        // This release's own tag is judged by the tag checks, not here.
        let own = version.tag();
        let last_tag = tags
            .iter()
            .flatten()
            .filter(|t| *t != Some(own.as_str()))
            .filter_map(|t| t?.parse::<Version>().ok())
            .max_by(|a, b| a.precedence(b));
        for (what, other) in [("the last tag", last_tag), ("the staged release", staged)] {
            if let Some(other) = other
                && version.precedence(&other).is_le()
            {
                return Err((
                    format!("{} is not above {what}, {}", version.tag(), other.tag()),
                    Some("release a higher version; devices never go back".to_owned()),
                ));
            }
        }
        Ok(())
    }

    /// `--from-tag`: the tag marks a commit of the release branch, and HEAD is at it so
    /// the build is of that source (unless nothing is left to build).
    fn tagged_source(&self, tag: &str) -> Result<(), Failed> {
        let Some(source) = git::tag_commit(&self.repo, tag) else {
            return Err((
                format!("there is no tag {tag} to release from"),
                Some(format!(
                    "tag the source and push the tag (`git tag -a {tag} -m {tag} && git push origin {tag}`), or release without --from-tag, which makes the tag"
                )),
            ));
        };
        let branch = self.release_branch();
        if branch.is_empty() {
            return Err((
                "HEAD is detached and no [sources.github] branch is set: there is no branch to commit the release on".to_owned(),
                Some("check out the branch you release from (the tag's commit must be on it)".to_owned()),
            ));
        }
        let tip = git::branch_tip(&self.repo, &branch)
            .map_err(|e| (e, Some(format!("fetch it: git fetch origin {branch}"))))?;
        let on_branch = tip.id() == source
            || self
                .repo
                .graph_descendant_of(tip.id(), source)
                .unwrap_or(false);
        if !on_branch {
            return Err((
                format!(
                    "tag {tag} marks {}, which is not on {branch}",
                    git::short(source)
                ),
                Some(format!(
                    "tag a commit of {branch}: the release commit follows it there"
                )),
            ));
        }
        let head = self
            .repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(|e| (e.message().to_owned(), None))?
            .id();
        let nothing_to_build =
            self.staged_release().is_some() || self.committed_release().is_some();
        if head != source && !nothing_to_build {
            return Err((
                format!(
                    "HEAD is at {}, not at {} which tag {tag} marks: the build would not be the tagged source",
                    git::short(head),
                    git::short(source)
                ),
                Some(format!("git checkout {tag}")),
            ));
        }
        Ok(())
    }

    fn tag_free(&self, tag: &str) -> Result<(), Failed> {
        let Ok(tagged) = self.repo.revparse_single(&format!("refs/tags/{tag}")) else {
            return Ok(());
        };
        let at = tagged
            .peel_to_commit()
            .map_err(|e| (e.message().to_owned(), None))?;
        // The tag of this release, made by an earlier run: its commit holds what is staged.
        let manifest = format!("{}/{MANIFEST}", self.config.ota_files_in_repo());
        let tagged_manifest = at
            .tree()
            .ok()
            .and_then(|tree| tree.get_path(Path::new(&manifest)).ok())
            .and_then(|entry| self.repo.find_blob(entry.id()).ok())
            .map(|blob| blob.content().to_owned());
        let staged = std::fs::read(self.files.manifest_path()).ok();
        if tagged_manifest.is_some() && tagged_manifest == staged {
            return Ok(());
        }
        Err((
            format!(
                "tag {tag} already exists at {}, which is not this release",
                git::short(at.id())
            ),
            Some("a version is released once: release the next version".to_owned()),
        ))
    }
}
