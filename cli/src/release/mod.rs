//! `clockrel release vX.Y.Z`: from a clean tree to a verified release, as one plan.
//!
//! Preflight checks, the version bump, the build, check and stage, the release commit
//! and tag, then every source in parallel and the public URLs verified: the same code
//! as `check`, `stage` and `publish`, walked as one list of [`Task`]s. `--dry-run`
//! prints the list; a run walks it. A re-run after a failure finds what is done from
//! the repository, `ota_files/` and the sources, never from a journal of its own, so it
//! never bumps twice, never builds a second image of a staged version, and never makes
//! a second commit or tag.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use git2::Repository;
use ota_core::Version;
use ota_core::engine::Source;
use serde::Serialize;

use crate::check::CheckOptions;
use crate::config::Config;
use crate::exit::{Exit, Failure};
use crate::ota_files::{MANIFEST, OtaFiles, StagedRelease};
use crate::plan::{self, Outcome, Preflight, Record, Step, Task};
use crate::progress::{Progress, Style};
use crate::publish::{self, Commits, PublishOptions, PublishPlan, PublishReport};
use crate::stage::{self, StageOptions};
use crate::targets::github::{self, git};
use crate::version_file::VersionFile;

mod build;
mod preflight;

pub use build::Artifact;
use build::{Build, build_env, cargo_build, secret_variables};

/// The cargo target of a Rust firmware for the ESP32-S3.
pub const DEFAULT_TARGET: &str = "xtensa-esp32s3-espidf";
/// The rustup toolchain `espup` installs.
pub const DEFAULT_TOOLCHAIN: &str = "esp";

#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    pub version: Version,
    /// `--from-tag`: the tag exists and marks the source to build (a tag push); the
    /// release commit follows it on the branch and holds `ota_files/` alone.
    pub from_tag: bool,
    /// `--image` or `--elf`: no build.
    pub artifact: Option<Artifact>,
    pub only: Option<Source>,
    pub dry_run: bool,
    pub verify: bool,
    pub deadline: Duration,
    pub key: Option<PathBuf>,
    pub notes: Option<String>,
}

/// A whole release: the steps on this machine, then the publish.
#[derive(Debug, Clone)]
pub struct ReleasePlan {
    pub version: Version,
    pub local: Vec<Task>,
    pub publish: PublishPlan,
    /// The patch files the publish plan puts.
    patches: Vec<String>,
    build: Build,
    version_file: Option<VersionFile>,
    branch: Option<String>,
    from_tag: bool,
}

/// How a release ended, as a whole; `--json` gives it as one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseVerdict {
    /// `--dry-run`: nothing was touched.
    Planned,
    /// A preflight check failed: nothing was done.
    Refused,
    /// A step on this machine failed (the build, the stage, the commit): nothing is
    /// published; run again once it is fixed. The exit it asks for.
    Stopped(Exit),
    /// It reached the sources; the publish's verdict says how far.
    Published(publish::Verdict),
}

impl ReleaseVerdict {
    pub fn name(self) -> &'static str {
        match self {
            ReleaseVerdict::Planned => "planned",
            ReleaseVerdict::Refused => "refused",
            ReleaseVerdict::Stopped(_) => "stopped",
            ReleaseVerdict::Published(verdict) => verdict.name(),
        }
    }
}

impl Serialize for ReleaseVerdict {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseReport {
    /// The SemVer, as the manifest and the other commands' reports give it.
    pub version: Version,
    pub tag: String,
    /// `--from-tag`: the tag marks the source; the release commit follows it.
    pub from_tag: bool,
    pub verdict: ReleaseVerdict,
    /// The steps on this machine.
    pub steps: Vec<Step>,
    /// The sources' steps and the verification.
    pub publish: Option<PublishReport>,
    /// What to do about the failed steps, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

impl ReleaseReport {
    /// The command that makes (or finishes) this release.
    pub fn command(&self) -> String {
        let from_tag = if self.from_tag { " --from-tag" } else { "" };
        format!("clockrel release {}{from_tag}", self.tag)
    }

    pub fn exit(&self) -> Exit {
        match self.verdict {
            ReleaseVerdict::Planned => Exit::Success,
            ReleaseVerdict::Refused => Exit::CheckFailed,
            ReleaseVerdict::Stopped(exit) => exit,
            ReleaseVerdict::Published(verdict) => verdict.exit(),
        }
    }
}

/// The plan of releasing `options.version`, from the config and the options alone.
pub fn plan(options: &ReleaseOptions, config: &Config) -> Result<ReleasePlan, Failure> {
    let version = options.version.clone();
    let tag = version.tag();
    let build = Build::from_config(options, config)?;
    let version_file = match (&config.firmware.version_file, &config.firmware.package) {
        (Some(path), _) => Some(VersionFile::at(path, &config.root)),
        (None, Some(package)) => Some(
            VersionFile::find_package(package, &config.root)
                .map_err(|e| Failure::new(Exit::Usage, e).hint("set [firmware] version_file"))?,
        ),
        (None, None) => None,
    };
    // The patches the staged manifest lists when this version is staged (a re-run), else
    // those stage would make from the images there now: one it finds too large is then
    // reported as skipped where the plan puts it.
    let patches = OtaFiles::new(config.ota_files(), config.release_name())
        .patch_candidates(&version, config.delta.bases());
    let publish = publish::plan(config, &version, &patches, options.only, Commits::Already)?;
    let branch = config.sources.github.as_ref().map(|g| g.branch.clone());

    let mut local = vec![Task::Preflight {
        check: Preflight::CleanTree,
    }];
    local.push(Task::Preflight {
        check: if options.from_tag {
            Preflight::TaggedSource {
                tag: tag.clone(),
                branch: branch.clone(),
            }
        } else {
            Preflight::OnBranch {
                branch: branch.clone(),
            }
        },
    });
    local.push(Task::Preflight {
        check: Preflight::NewVersion {
            version: version.to_string(),
        },
    });
    if !options.from_tag {
        local.push(Task::Preflight {
            check: Preflight::TagFree { tag: tag.clone() },
        });
    }
    for (source, _) in &publish.targets {
        local.push(Task::Preflight {
            check: Preflight::Credentials {
                source: source.name().to_owned(),
            },
        });
    }
    local.push(Task::Preflight {
        check: Preflight::SigningKey,
    });
    if let Build::Cargo { toolchain, .. } = &build {
        local.push(Task::Preflight {
            check: Preflight::Toolchain {
                toolchain: toolchain.clone(),
            },
        });
    }
    let mut committed: Vec<String> = Vec::new();
    match &version_file {
        // The tagged source is built as it is: its version is set before the tag.
        Some(file) if options.from_tag => local.insert(
            2,
            Task::Preflight {
                check: Preflight::VersionSet {
                    file: in_repo(config, file.path()),
                    version: version.to_string(),
                },
            },
        ),
        Some(file) => {
            local.push(Task::SetVersion {
                file: in_repo(config, file.path()),
                version: version.to_string(),
            });
            committed.extend(file.paths().iter().map(|p| in_repo(config, p)));
        }
        None => {}
    }
    if !matches!(build, Build::Given(_)) {
        local.push(Task::Build {
            how: build.describe(),
        });
    }
    local.push(Task::Stage {
        version: tag.clone(),
        from: build.output(),
    });
    committed.push(format!("{}/", config.ota_files_in_repo()));
    local.push(Task::ReleaseCommit {
        branch: branch
            .clone()
            .unwrap_or_else(|| "the current branch".to_owned()),
        paths: committed,
        tag: tag.clone(),
    });
    if !options.from_tag {
        local.push(Task::Tag { tag });
    }
    Ok(ReleasePlan {
        version,
        local,
        publish,
        patches,
        build,
        version_file,
        branch,
        from_tag: options.from_tag,
    })
}

impl ReleasePlan {
    pub fn planned(&self) -> ReleaseReport {
        ReleaseReport {
            version: self.version.clone(),
            tag: self.version.tag(),
            from_tag: self.from_tag,
            verdict: ReleaseVerdict::Planned,
            steps: plan::planned(&self.local),
            publish: Some(self.publish.planned()),
            hints: Vec::new(),
        }
    }
}

/// Plans, then (unless `--dry-run`) walks the plan.
pub async fn run(
    options: &ReleaseOptions,
    config: &Config,
    style: Style,
) -> Result<ReleaseReport, Failure> {
    let plan = plan(options, config)?;
    if options.dry_run {
        return Ok(plan.planned());
    }
    let progress = Progress::new(style);
    let mut local = Local::open(&plan, options, config)?;
    let mut record = Record::new(&plan.local);
    let mut hints = Vec::new();
    // What the stage reads: given on the command line, or made by the build step.
    let mut artifact = match &plan.build {
        Build::Given(given) => Some(given.clone()),
        _ => None,
    };
    let mut release_commit = None;
    while let Some(task) = record.next().cloned() {
        progress.note(&task.to_string());
        let done = match &task {
            Task::Preflight { check } => {
                let verdict = local.preflight(check).map(|()| Outcome::Checked);
                // Every preflight check runs, so one run names every problem.
                if let Err((why, more)) = verdict {
                    hints.extend(more);
                    record.finish(Outcome::Failed(why), None);
                    continue;
                }
                verdict
            }
            _ if record.failed() => {
                record.skip_rest();
                break;
            }
            Task::SetVersion { .. } => local.set_version(),
            Task::Build { .. } => local.build(&progress).map(|(outcome, made)| {
                artifact = made;
                outcome
            }),
            Task::Stage { .. } => local.stage(artifact.take()),
            Task::ReleaseCommit { .. } => local.commit().map(|(outcome, oid)| {
                release_commit = Some(oid);
                outcome
            }),
            Task::Tag { .. } => local.tag(release_commit),
            other => Err((format!("not a step of a release: {other:?}"), None)),
        };
        // The commit a release made or found, on its commit and tag steps.
        let detail = match task {
            Task::ReleaseCommit { .. } | Task::Tag { .. } => release_commit.map(git::short),
            Task::Stage { .. } => local.staged_patches.clone(),
            _ => None,
        };
        match done {
            Ok(outcome) => record.finish(outcome, detail),
            Err((why, more)) => {
                hints.extend(more);
                record.fail(why);
            }
        }
    }
    let steps = record.steps();
    let failed = |s: &&Step| matches!(s.outcome, Outcome::Failed(_));
    if let Some(first) = steps.iter().find(failed) {
        let refused = matches!(first.task, Task::Preflight { .. });
        let verdict = match local.stopped_with {
            _ if refused => ReleaseVerdict::Refused,
            Some(Exit::CheckFailed) => ReleaseVerdict::Refused,
            Some(exit) => ReleaseVerdict::Stopped(exit),
            None => ReleaseVerdict::Stopped(Exit::Error),
        };
        return Ok(ReleaseReport {
            version: plan.version.clone(),
            tag: plan.version.tag(),
            from_tag: plan.from_tag,
            verdict,
            steps,
            publish: None,
            hints,
        });
    }

    let (release, trusted) = publish::load_release(config)?;
    // A release staged by hand or by another config lists patches this plan never saw:
    // publishing would leave them off a source while its manifest names them.
    let unplanned: Vec<&str> = release
        .patches
        .iter()
        .map(|p| p.spec.file.as_str())
        .filter(|file| !plan.patches.iter().any(|planned| planned == file))
        .collect();
    if !unplanned.is_empty() {
        return Err(Failure::new(
            Exit::Error,
            anyhow::anyhow!(
                "the staged release lists patches this release did not plan: {}",
                unplanned.join(", ")
            ),
        )
        .hint("run the release again: its plan then takes the staged manifest's patches"));
    }
    let publish_options = PublishOptions {
        only: options.only,
        dry_run: false,
        verify: options.verify,
        deadline: options.deadline,
    };
    let report = publish::execute(
        &plan.publish,
        &release,
        &trusted,
        &publish_options,
        config,
        style,
    )
    .await?;
    Ok(ReleaseReport {
        version: plan.version.clone(),
        tag: plan.version.tag(),
        from_tag: plan.from_tag,
        verdict: ReleaseVerdict::Published(report.verdict),
        steps,
        publish: Some(report),
        hints: Vec::new(),
    })
}

/// A failed step: one line, and what to do when it is known.
type Failed = (String, Option<String>);

/// The release's work on this machine.
struct Local<'a> {
    plan: &'a ReleasePlan,
    options: &'a ReleaseOptions,
    config: &'a Config,
    repo: Repository,
    files: OtaFiles,
    /// The exit a failed step asks for when it is not "a step on this machine failed":
    /// a refused stage is a failed check (3), an unreadable `--elf` bad input (4).
    stopped_with: Option<Exit>,
    /// What the stage made besides the image: its patches, or why there are none.
    staged_patches: Option<String>,
}

impl<'a> Local<'a> {
    fn open(
        plan: &'a ReleasePlan,
        options: &'a ReleaseOptions,
        config: &'a Config,
    ) -> Result<Local<'a>, Failure> {
        let repo = Repository::discover(&config.root).map_err(|e| {
            Failure::new(
                Exit::Usage,
                anyhow::anyhow!(
                    "{} is not in a git repository: {}",
                    config.root.display(),
                    e.message()
                ),
            )
            .hint("a release is a commit and a tag: run it in the firmware's repository")
        })?;
        if !config.is_at_root_of(repo.workdir()) {
            return Err(Failure::new(
                Exit::Usage,
                anyhow::anyhow!(
                    "{} is not at the root of its git work tree",
                    config.path.display()
                ),
            )
            .hint("move clockrel.toml to the repository's root: its paths are relative to it"));
        }
        Ok(Local {
            plan,
            options,
            config,
            repo,
            files: OtaFiles::new(config.ota_files(), config.release_name()),
            stopped_with: None,
            staged_patches: None,
        })
    }

    /// The staged release, when `ota_files/` holds this version and it verifies.
    fn staged_release(&self) -> Option<StagedRelease> {
        let trusted = publish::trusted_keys(self.config).ok()?;
        self.files
            .load_release(&trusted)
            .ok()
            .filter(|r| *r.version() == self.plan.version)
    }

    fn set_version(&self) -> Result<Outcome, Failed> {
        match &self.plan.version_file {
            Some(file) => file
                .write(&self.plan.version)
                .map_err(|e| (e.to_string(), None)),
            None => Ok(Outcome::AlreadyThere),
        }
    }

    /// `--from-tag`: this version's `ota_files/` from the release commit an earlier run
    /// made after the tag (pushed or not), as (file name, bytes). A fresh checkout of
    /// the tag then finishes the release with those bytes rather than building another
    /// image of the same version.
    fn committed_release(&self) -> Option<Vec<(String, Vec<u8>)>> {
        if !self.options.from_tag {
            return None;
        }
        let tip = git::branch_tip(&self.repo, &self.release_branch()).ok()?;
        let source = git::tag_commit(&self.repo, &self.plan.version.tag())?;
        if !self
            .repo
            .graph_descendant_of(tip.id(), source)
            .unwrap_or(false)
        {
            return None;
        }
        let dir = tip
            .tree()
            .ok()?
            .get_path(Path::new(&self.config.ota_files_in_repo()))
            .ok()?
            .to_object(&self.repo)
            .ok()?
            .peel_to_tree()
            .ok()?;
        let blob = |name: &str| {
            let entry = dir.get_name(name)?;
            Some(self.repo.find_blob(entry.id()).ok()?.content().to_vec())
        };
        let manifest = ota_core::Manifest::from_json(&blob(MANIFEST)?).ok()?;
        if manifest.version != self.plan.version {
            return None;
        }
        dir.iter()
            .filter(|entry| entry.kind() == Some(git2::ObjectType::Blob))
            .map(|entry| {
                let name = entry.name().ok()?.to_owned();
                let bytes = blob(&name)?;
                Some((name, bytes))
            })
            .collect()
    }

    /// The branch the release commit goes on: the GitHub source's, else HEAD's.
    fn release_branch(&self) -> String {
        match &self.plan.branch {
            Some(branch) => branch.clone(),
            None => self
                .repo
                .head()
                .ok()
                .filter(git2::Reference::is_branch)
                .and_then(|h| h.shorthand().ok().map(str::to_owned))
                .unwrap_or_default(),
        }
    }

    /// Builds, unless this version is staged (or, with `--from-tag`, committed) already;
    /// returns what the stage reads.
    fn build(&self, progress: &Progress) -> Result<(Outcome, Option<Artifact>), Failed> {
        if self.staged_release().is_some() || self.committed_release().is_some() {
            return Ok((Outcome::AlreadyThere, None));
        }
        match &self.plan.build {
            Build::Given(artifact) => Ok((Outcome::AlreadyThere, Some(artifact.clone()))),
            Build::Command { command, artifact } => {
                let env = build_env(self.config, &self.plan.version);
                let mut sh = Command::new("sh");
                for name in secret_variables() {
                    sh.env_remove(name);
                }
                let status = sh
                    .args(["-c", command])
                    .current_dir(&self.config.root)
                    .envs(env.iter().map(|(k, v)| (*k, v)))
                    // stdout carries the report (and --json): the build speaks on stderr.
                    .stdout(Stdio::from(std::io::stderr()))
                    .status()
                    .map_err(|e| (format!("cannot run sh: {e}"), None))?;
                if !status.success() {
                    return Err((format!("the build command failed ({status})"), None));
                }
                Ok((Outcome::Done, Some(artifact.clone())))
            }
            build @ Build::Cargo {
                package, toolchain, ..
            } => cargo_build(
                &self.config.root,
                toolchain,
                &build.cargo_args(),
                package,
                &build_env(self.config, &self.plan.version),
                progress,
            )
            .map(|elf| (Outcome::Done, Some(Artifact::Elf(elf)))),
        }
    }

    fn stage(&mut self, artifact: Option<Artifact>) -> Result<Outcome, Failed> {
        // With --from-tag, a release commit after the tag decides: what it holds is what
        // devices may already have, and another build must not go out beside it.
        if let Some(files) = self.committed_release() {
            let dir = self.config.ota_files();
            if self.staged_release().is_some() {
                let same = files.iter().all(|(name, bytes)| {
                    std::fs::read(dir.join(name)).ok().as_ref() == Some(bytes)
                });
                return if same {
                    Ok(Outcome::AlreadyThere)
                } else {
                    Err((
                        format!(
                            "ota_files/ holds another build of {} than the release commit on {}",
                            self.plan.version.tag(),
                            self.release_branch()
                        ),
                        Some("restore it from that commit (`git checkout <branch> -- ota_files`) and run again".to_owned()),
                    ))
                };
            }
            std::fs::create_dir_all(&dir)
                .map_err(|e| (format!("cannot make {}: {e}", dir.display()), None))?;
            for (name, bytes) in &files {
                crate::ota_files::write_atomic(&self.config.ota_files().join(name), bytes)
                    .map_err(|e| (format!("cannot write ota_files/{name}: {e}"), None))?;
            }
            return match self.staged_release() {
                Some(_) => Ok(Outcome::AlreadyThere),
                None => Err((
                    "the release commit after the tag holds an ota_files/ that does not verify"
                        .to_owned(),
                    None,
                )),
            };
        }
        // Staged by an earlier run: the same version is never staged twice.
        if self.staged_release().is_some() {
            return Ok(Outcome::AlreadyThere);
        }
        let Some(artifact) = artifact else {
            return Err(("nothing was built to stage".to_owned(), None));
        };
        let (image, elf) = match artifact {
            Artifact::Image(path) => (Some(path), None),
            Artifact::Elf(path) => (None, Some(path)),
        };
        let options = StageOptions {
            version: self.plan.version.clone(),
            check: CheckOptions {
                image,
                elf,
                partitions: None,
                flash_size: None,
                chip: None,
                headroom: None,
            },
            key: self.options.key.clone(),
            notes: self.options.notes.clone(),
        };
        let report = match stage::run(&options, self.config) {
            Ok(report) => report,
            Err(failure) => {
                self.stopped_with = Some(failure.exit);
                return Err((format!("{:#}", failure.error), failure.hint));
            }
        };
        if let Some(staged) = &report.staged {
            self.staged_patches = Some(stage::patch_summary(staged));
            return Ok(Outcome::Done);
        }
        self.stopped_with = Some(Exit::CheckFailed);
        let failed: Vec<String> = report
            .failed()
            .map(|f| format!("{}: {}", f.rule, f.detail))
            .collect();
        Err((
            format!("the release gate refused the image: {}", failed.join("; ")),
            Some("`clockrel check` shows the whole report".to_owned()),
        ))
    }

    /// The version bump and `ota_files/` in one commit on the branch.
    fn commit(&self) -> Result<(Outcome, git2::Oid), Failed> {
        let release = self
            .staged_release()
            .ok_or_else(|| ("the staged release does not verify".to_owned(), None))?;
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        // A tagged source carries its version already: the commit adds ota_files/ alone.
        let bumped = self
            .plan
            .version_file
            .iter()
            .filter(|_| !self.options.from_tag);
        for path in bumped.flat_map(|f| f.paths()) {
            let bytes = std::fs::read(path)
                .map_err(|e| (format!("cannot read {}: {e}", path.display()), None))?;
            files.push((in_repo(self.config, path), bytes));
        }
        // GitHub's copy when GitHub serves the release: the commit is what its raw URLs serve.
        let source = if self.config.sources.github.is_some() {
            Source::Github
        } else {
            Source::R2
        };
        let uploads = publish::uploads_for(self.config, &release, source);
        let dir = self.config.ota_files_in_repo();
        files.extend(
            github::in_repository(&dir, &uploads)
                .into_iter()
                .map(|(path, bytes)| (path, bytes.to_vec())),
        );
        let tag = self.plan.version.tag();
        let files: Vec<(String, &[u8])> = files
            .iter()
            .map(|(p, b)| (p.clone(), b.as_slice()))
            .collect();
        git::release_commit(
            &self.repo,
            &self.release_branch(),
            &tag,
            &files,
            &format!("Release {tag}"),
            self.options.from_tag,
        )
        .map(|(oid, outcome)| (outcome, oid))
        .map_err(|e| (e, None))
    }

    fn tag(&self, commit: Option<git2::Oid>) -> Result<Outcome, Failed> {
        let commit = commit.ok_or_else(|| ("no release commit to tag".to_owned(), None))?;
        let title = self.files.current().ok().flatten().and_then(|m| m.title);
        let tag = self.plan.version.tag();
        git::ensure_tag(&self.repo, &tag, commit, title.as_deref().unwrap_or(&tag))
            .map_err(|e| (e, None))
    }
}

/// A path as the config's repository names it: relative to the config, `/`-separated.
fn in_repo(config: &Config, path: &Path) -> String {
    path.strip_prefix(&config.root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The report as people read it.
pub fn render(report: &ReleaseReport) -> String {
    let mut out = String::new();
    let verb = if report.verdict == ReleaseVerdict::Planned {
        "plan for releasing"
    } else {
        "release"
    };
    let _ = writeln!(out, "{verb} {}", report.tag);
    for step in &report.steps {
        let _ = writeln!(out, "  {:<14} {}", step.outcome.label(), step.what);
        if let Outcome::Failed(why) = &step.outcome {
            let _ = writeln!(out, "  {:<14} {why}", "");
        }
    }
    for hint in &report.hints {
        let _ = writeln!(out, "  hint: {hint}");
    }
    match (&report.publish, report.verdict) {
        (Some(publish), verdict) => {
            let again = report.command();
            out.push_str(&publish::render_finishing(publish, Some(&again)));
            if verdict == ReleaseVerdict::Published(publish::Verdict::Failed) {
                let _ = writeln!(
                    out,
                    "to finish, run the same `{again}` again: what is done is skipped"
                );
            }
        }
        (None, ReleaseVerdict::Refused) => {
            let _ = writeln!(
                out,
                "NOT released: a check failed (above); run the same command again once it is fixed"
            );
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "NOT released: nothing is published; fix the step above and run the same command again"
            );
        }
    }
    out
}
