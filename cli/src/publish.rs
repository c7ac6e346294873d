//! `clockrel publish`: puts the staged release on GitHub and R2 at once, then proves
//! that each serves exactly the signed bytes.
//!
//! Plan, then execute: everything that can be known before the first request (the staged
//! release verifies, every selected source is configured and has credentials) is checked
//! first, so a missing token never leaves one source published and the other not.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::exit::{Exit, Failure};
use crate::keys;
use crate::ota_files::{OtaFiles, StagedRelease};
use crate::plan::{self, Step, Task};
use crate::progress::{Progress, Style};
use crate::targets::github::{self, Github};
use crate::targets::r2::{self, R2};
use crate::targets::{self, Ran, TargetError, Upload};
use crate::verify::{self, Probe, Verification};
use ota_core::Version;
use ota_core::engine::Source;
use ota_core::manifest::PublicKey;

#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub only: Option<Source>,
    pub dry_run: bool,
    /// Fetch the public URLs afterwards.
    pub verify: bool,
    pub deadline: Duration,
}

/// How a publish ended, as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `--dry-run`: nothing was touched.
    Planned,
    /// Every target published and every public URL serves the release.
    Published,
    /// Every target published, but a public URL does not serve the release.
    Unverified,
    /// Some targets published, or a failed one got far enough that devices see the
    /// release there: run again to finish.
    Partial,
    /// No target got as far as devices seeing the release.
    Failed,
}

impl Verdict {
    /// The verdict as `--json` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Planned => "planned",
            Verdict::Published => "published",
            Verdict::Unverified => "unverified",
            Verdict::Partial => "partial",
            Verdict::Failed => "failed",
        }
    }

    pub fn exit(self) -> Exit {
        match self {
            Verdict::Planned | Verdict::Published => Exit::Success,
            Verdict::Unverified => Exit::CheckFailed,
            Verdict::Partial => Exit::Partial,
            Verdict::Failed => Exit::PublishFailed,
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One target's account.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub target: Source,
    /// Every step finished.
    pub ok: bool,
    /// Devices reading this source now see the release (its manifest is published),
    /// even if a later step failed.
    pub live: bool,
    pub seconds: f64,
    pub steps: Vec<Step>,
    pub error: Option<TargetError>,
    /// GitHub: the release commit.
    pub commit: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    /// The SemVer, as the manifest and the other commands' reports give it.
    pub version: Version,
    pub tag: String,
    pub verdict: Verdict,
    pub targets: Vec<TargetReport>,
    /// The public URLs that would be checked (`--dry-run`) or were.
    pub probes: Vec<Probe>,
    pub verification: Option<Verification>,
}

/// The trusted keys, which publishing cannot do without: an unverifiable manifest must
/// never reach a source.
pub fn trusted_keys(config: &Config) -> Result<Vec<ota_core::manifest::PublicKey>, Failure> {
    let path = config.signing.trusted_keys.as_ref().ok_or_else(|| {
        Failure::new(Exit::Usage, anyhow::anyhow!("signing.trusted_keys is not set in clockrel.toml"))
            .hint("clockrel checks every manifest against the keys the firmware trusts before it leaves the machine")
    })?;
    keys::load_trusted(path).map_err(|e| Failure::new(Exit::BadInput, e))
}

/// The staged release, checked against the trusted keys, and those keys.
pub fn load_release(config: &Config) -> Result<(StagedRelease, Vec<PublicKey>), Failure> {
    let trusted = trusted_keys(config)?;
    let files = OtaFiles::new(config.ota_files(), config.release_name());
    let release = files
        .load_release(&trusted)
        .map_err(|e| Failure::new(Exit::BadInput, e).hint("run `clockrel stage` first"))?;
    Ok((release, trusted))
}

/// The selected targets: `--only`, else every configured source.
fn selected(config: &Config, only: Option<Source>) -> Result<Vec<Source>, Failure> {
    let configured = |t: Source| match t {
        Source::Github => config.sources.github.is_some(),
        Source::R2 => config.sources.r2.is_some(),
    };
    let targets: Vec<Source> = match only {
        Some(target) if !configured(target) => {
            return Err(Failure::new(
                Exit::Usage,
                anyhow::anyhow!(
                    "--only {} but sources.{} is not set in clockrel.toml",
                    target.name(),
                    target.name()
                ),
            ));
        }
        Some(target) => vec![target],
        None => [Source::Github, Source::R2]
            .into_iter()
            .filter(|t| configured(*t))
            .collect(),
    };
    if targets.is_empty() {
        return Err(
            Failure::new(Exit::Usage, anyhow::anyhow!("no source is configured"))
                .hint("set [sources.github] and [sources.r2] in clockrel.toml"),
        );
    }
    Ok(targets)
}

/// What a publish does: each selected target's steps and the public URLs checked after.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub version: Version,
    pub tag: String,
    pub targets: Vec<(Source, Vec<Task>)>,
    /// Where devices read the release, probed once the targets are done (GitHub at the
    /// release commit too, which the plan can only name).
    pub probes: Vec<Probe>,
}

/// Who makes the release commit and tag: the GitHub target (`publish`), or the caller
/// before any target runs (`release`, which commits its version bump with them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commits {
    ByGithub,
    Already,
}

/// The plan of publishing `version` with the patches `patch_names`, from the config
/// alone: no file, credential or request is needed, so it can be printed before the
/// release exists.
pub fn plan(
    config: &Config,
    version: &Version,
    patch_names: &[String],
    only: Option<Source>,
    commits: Commits,
) -> Result<PublishPlan, Failure> {
    let tag = version.tag();
    let names = OtaFiles::new(config.ota_files(), config.release_name());
    let files = targets::files(&names.image_name(version), patch_names, &names.alias_name());
    let targets = selected(config, only)?
        .into_iter()
        .map(|source| {
            let tasks = match (source, &config.sources.github, &config.sources.r2) {
                (Source::Github, Some(github), _) => {
                    let dir = config.ota_files_in_repo();
                    let all = github::tasks(github, &dir, &tag, &files);
                    match commits {
                        Commits::ByGithub => all,
                        Commits::Already => all
                            .into_iter()
                            .filter(|t| !matches!(t, Task::Commit { .. } | Task::Tag { .. }))
                            .collect(),
                    }
                }
                (Source::R2, _, Some(r2)) => {
                    let mut tasks = r2::tasks(r2, &files);
                    let github_too = only.is_none() && config.sources.github.is_some();
                    if commits == Commits::Already && github_too {
                        tasks.insert(
                            0,
                            Task::AwaitPush {
                                source: Source::Github.name().to_owned(),
                            },
                        );
                    }
                    tasks
                }
                _ => Vec::new(),
            };
            (source, tasks)
        })
        .collect();
    Ok(PublishPlan {
        version: version.clone(),
        tag,
        targets,
        probes: verify::probes(config, Some("<release commit>"), only),
    })
}

impl PublishPlan {
    /// The report of a dry run: every step planned, nothing touched.
    pub fn planned(&self) -> PublishReport {
        PublishReport {
            version: self.version.clone(),
            tag: self.tag.clone(),
            verdict: Verdict::Planned,
            targets: self
                .targets
                .iter()
                .map(|(target, tasks)| TargetReport {
                    target: *target,
                    ok: true,
                    live: false,
                    seconds: 0.0,
                    steps: plan::planned(tasks),
                    error: None,
                    commit: None,
                })
                .collect(),
            probes: self.probes.clone(),
            verification: None,
        }
    }
}

/// `clockrel publish`: the staged release to every selected source, then verified.
pub async fn run(
    options: &PublishOptions,
    config: &Config,
    style: Style,
) -> Result<PublishReport, Failure> {
    let (release, trusted) = load_release(config)?;
    let patch_names: Vec<String> = release
        .patches
        .iter()
        .map(|p| p.spec.file.clone())
        .collect();
    let plan = plan(
        config,
        release.version(),
        &patch_names,
        options.only,
        Commits::ByGithub,
    )?;
    if options.dry_run {
        return Ok(plan.planned());
    }
    execute(&plan, &release, &trusted, options, config, style).await
}

/// Each source serves a copy of version.json whose firmware_url names its own image.
pub fn uploads_for(config: &Config, release: &StagedRelease, source: Source) -> Vec<Upload> {
    let url = match source {
        Source::Github => config
            .sources
            .github
            .as_ref()
            .and_then(|g| config.github_raw_url(&g.branch, release.manifest.file())),
        Source::R2 => config
            .sources
            .r2
            .as_ref()
            .map(|r2| r2.public_url_of(release.manifest.file())),
    };
    let manifest = match url {
        Some(url) => release.manifest_at(url),
        None => release.manifest_bytes.clone(),
    };
    targets::uploads(release, manifest)
}

/// Walks `plan`'s targets concurrently with the staged `release`, then verifies every
/// source devices can now read the release from.
pub async fn execute(
    plan: &PublishPlan,
    release: &StagedRelease,
    trusted: &[PublicKey],
    options: &PublishOptions,
    config: &Config,
    style: Style,
) -> Result<PublishReport, Failure> {
    let tasks_of = |source: Source| {
        plan.targets
            .iter()
            .find(|(s, _)| *s == source)
            .map(|(_, tasks)| tasks)
    };
    // Everything that can fail without a request fails here, before any target starts.
    let setup_failure = |target: Source, e: TargetError| {
        let failure = Failure::new(Exit::Usage, anyhow::anyhow!("{}: {e}", target.name()));
        match e.hint {
            Some(hint) => failure.hint(format!("{hint}; or leave the target out with --only")),
            None => failure,
        }
    };
    let client = verify::http_client()?;
    let github = match tasks_of(Source::Github) {
        Some(tasks) => Some((
            Github::from_env(config).map_err(|e| setup_failure(Source::Github, e))?,
            uploads_for(config, release, Source::Github),
            tasks,
        )),
        None => None,
    };
    let r2 = match (tasks_of(Source::R2), &config.sources.r2) {
        (Some(tasks), Some(source)) => Some((
            R2::from_env(source).map_err(|e| setup_failure(Source::R2, e))?,
            uploads_for(config, release, Source::R2),
            tasks,
        )),
        _ => None,
    };

    let progress = Progress::new(style);
    // R2 waits for GitHub's push where its plan says so.
    let (pushed, after_push) = tokio::sync::oneshot::channel();
    let github_run = async {
        let (github, uploads, tasks) = github.as_ref()?;
        let bar = progress.target("github", bytes_moved(tasks, uploads));
        let started = Instant::now();
        let (ran, commit) = github.publish(release, uploads, tasks, pushed, &bar).await;
        Some(report(Source::Github, started, ran, commit, &bar))
    };
    let r2_run = async {
        let (r2, uploads, tasks) = r2.as_ref()?;
        let bar = progress.target("r2", bytes_moved(tasks, uploads));
        let started = Instant::now();
        let ran = r2
            .publish(&release.manifest, uploads, tasks, after_push, &bar)
            .await;
        Some(report(Source::R2, started, ran, None, &bar))
    };
    let (github_report, r2_report) = tokio::join!(github_run, r2_run);
    let reports: Vec<TargetReport> = [github_report, r2_report].into_iter().flatten().collect();

    // Every source devices can now read the release from is checked, finished or not.
    let commit = reports.iter().find_map(|r| r.commit.clone());
    let probes: Vec<Probe> = reports
        .iter()
        .filter(|r| r.live)
        .flat_map(|r| verify::probes(config, commit.as_deref(), Some(r.target)))
        .collect();
    let verification = if options.verify && !probes.is_empty() {
        Some(
            verify::verify(
                &client,
                &probes,
                trusted,
                Some(release),
                options.deadline,
                &progress,
            )
            .await,
        )
    } else {
        None
    };
    let finished = reports.iter().filter(|r| r.ok).count();
    let live = reports.iter().filter(|r| r.live).count();
    let verdict = match (finished, live) {
        (f, _) if f == reports.len() && verification.as_ref().is_some_and(|v| !v.ok) => {
            Verdict::Unverified
        }
        (f, _) if f == reports.len() => Verdict::Published,
        (0, 0) => Verdict::Failed,
        _ => Verdict::Partial,
    };
    Ok(PublishReport {
        version: plan.version.clone(),
        tag: plan.tag.clone(),
        verdict,
        targets: reports,
        probes,
        verification,
    })
}

/// The bytes a plan uploads, what a target's progress bar counts: every file R2 puts,
/// and those GitHub attaches to its Release.
fn bytes_moved(tasks: &[Task], uploads: &[Upload]) -> u64 {
    let uploaded = |upload: &Upload| {
        tasks.iter().any(|t| match t {
            Task::ReleaseAsset { name } => name == upload.name(),
            Task::Put { .. } => true,
            _ => false,
        })
    };
    uploads
        .iter()
        .filter(|u| uploaded(u))
        .map(|u| u.bytes.len() as u64)
        .sum()
}

fn report(
    target: Source,
    started: Instant,
    ran: Ran,
    commit: Option<String>,
    bar: &crate::progress::TargetProgress,
) -> TargetReport {
    let seconds = started.elapsed().as_secs_f64();
    let Ran { steps, error } = ran;
    match &error {
        None => bar.finish(&format!("done in {seconds:.1}s")),
        Some(error) => bar.fail(&error.to_string()),
    }
    TargetReport {
        target,
        ok: error.is_none(),
        live: steps.iter().any(|s| s.live),
        seconds,
        steps,
        error,
        commit,
    }
}

/// The report as people read it.
pub fn render(report: &PublishReport) -> String {
    render_finishing(report, None)
}

/// The report as people read it, naming `again` (when given) as the command that
/// finishes a partial publish.
pub fn render_finishing(report: &PublishReport, again: Option<&str>) -> String {
    let mut out = String::new();
    let verb = if report.verdict == Verdict::Planned {
        "plan for publishing"
    } else {
        "publish"
    };
    let _ = writeln!(out, "{verb} {}", report.tag);
    for target in &report.targets {
        let head = match (&target.error, report.verdict) {
            (_, Verdict::Planned) => String::new(),
            (None, _) => format!("ok in {:.1}s", target.seconds),
            (Some(_), _) => format!("FAILED after {:.1}s", target.seconds),
        };
        let _ = writeln!(out, "{:<7} {head}", target.target.name());
        for step in &target.steps {
            let detail = step
                .detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {:<14} {}{detail}", step.outcome.label(), step.what);
            if let plan::Outcome::Failed(why) = &step.outcome {
                let _ = writeln!(out, "  {:<14} {why}", "");
            }
        }
        if let Some(hint) = target.error.as_ref().and_then(|e| e.hint.as_ref()) {
            let _ = writeln!(out, "  hint: {hint}");
        }
    }
    if report.verdict == Verdict::Planned {
        let _ = writeln!(out, "then verify");
        for probe in &report.probes {
            let _ = writeln!(
                out,
                "  {:<14} {}{}",
                probe.source,
                probe.base,
                crate::ota_files::MANIFEST
            );
        }
    }
    if let Some(verification) = &report.verification {
        let _ = writeln!(out, "verify");
        for served in &verification.sources {
            let status = if served.ok { "ok" } else { "FAIL" };
            let _ = writeln!(
                out,
                "  {status:<4} {:<18} {}  {}",
                served.source, served.manifest_url, served.detail
            );
        }
        if let Some(disagreement) = &verification.disagreement {
            let _ = writeln!(out, "  FAIL sources disagree: {disagreement}");
        }
    }
    let failed: Vec<&str> = report
        .targets
        .iter()
        .filter(|t| !t.ok)
        .map(|t| t.target.name())
        .collect();
    let _ = match report.verdict {
        Verdict::Planned => writeln!(out, "dry run: nothing was touched"),
        Verdict::Published if report.verification.is_some() => {
            writeln!(
                out,
                "published {} and verified every public URL",
                report.tag
            )
        }
        Verdict::Published => {
            writeln!(
                out,
                "published {} (public URLs not checked: --no-verify)",
                report.tag
            )
        }
        Verdict::Unverified => writeln!(
            out,
            "published {}, but a public URL does not serve it yet; check with `clockrel verify`",
            report.tag
        ),
        Verdict::Partial => {
            let live: Vec<&str> = report
                .targets
                .iter()
                .filter(|t| t.live)
                .map(|t| t.target.name())
                .collect();
            let seen = if live.is_empty() {
                "no source".to_owned()
            } else {
                live.join(" and ")
            };
            let again = match (again, failed.as_slice()) {
                (Some(again), _) => again.to_owned(),
                (None, [one]) => format!("clockrel publish --only {one}"),
                (None, _) => "clockrel publish".to_owned(),
            };
            writeln!(
                out,
                "PARTLY published: {} failed; devices see {} on {seen}. Run `{again}` to finish; what is there is skipped.",
                failed.join(", "),
                report.tag,
            )
        }
        Verdict::Failed => writeln!(
            out,
            "NOT published: {} failed before devices could see {} there",
            failed.join(" and "),
            report.tag
        ),
    };
    out
}
