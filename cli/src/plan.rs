//! The plan is the execution: the typed steps a publish walks, worked out from the config
//! and the staged release before any request, printed as they are by `--dry-run`, and
//! walked one by one by a real run, which records an outcome for each. A dry run cannot
//! describe anything the run would not do, because there is nothing else to describe.

use std::fmt;

use serde::Serialize;

/// One thing a release or a publish does, with everything it needs to say what and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Task {
    /// A check made before any work, so that a release does not stop half-way for a
    /// reason known at the start. Reads only.
    Preflight { check: Preflight },
    /// Write the version where the firmware takes it from, so its app descriptor
    /// carries it. Done when: the file already says it.
    SetVersion { file: String, version: String },
    /// Build the firmware. Done when: this version is already staged (a re-run builds
    /// nothing: another build could differ in its bytes).
    Build { how: String },
    /// Make the app image, judge it by every rule of `check` and `stage`, sign the
    /// manifest and write `ota_files/`. Done when: `ota_files/` holds this version and
    /// it verifies.
    Stage { version: String, from: String },
    /// Commit the version bump and the staged files together on the branch (with
    /// `--from-tag`, the staged files alone, after the tagged source). Done when: a
    /// commit of the branch holds them, made by an earlier run.
    ReleaseCommit {
        branch: String,
        paths: Vec<String>,
        tag: String,
    },
    /// Commit the staged files on the release branch for the release `tag`, unless the
    /// branch already holds them (or the tag marks a release commit that does). Done
    /// when: that commit's tree has these bytes under `dir`.
    Commit {
        branch: String,
        dir: String,
        tag: String,
    },
    /// Push the release commit (the one `tag` marks, or is to mark) to the branch; from
    /// then on the raw URLs serve the release. Done when: the remote branch contains
    /// the release commit.
    PushBranch {
        branch: String,
        remote: String,
        tag: String,
    },
    /// Make the annotated tag at the release commit. Done when: the tag exists there.
    Tag { tag: String },
    /// Push the tag. Done when: the remote tag names the same object.
    PushTag { tag: String, remote: String },
    /// Find or create the GitHub Release for the tag. Done when: the API has it.
    GithubRelease { tag: String, repository: String },
    /// Upload one file to that release. Done when: an asset of this name has these
    /// bytes (its digest, or its content).
    ReleaseAsset { name: String },
    /// Wait until GitHub has the release commit and tag before R2 gets anything. In a
    /// release, a push that fails then leaves R2 untouched, so a re-run that has to
    /// build again (a fresh CI checkout) cannot meet another build of this version there.
    AwaitPush { source: String },
    /// Refuse when the bucket's `version.json` is a newer release or another build of
    /// this one: publishing over it would roll devices back. Reads only.
    CheckBucket { bucket: String, key: String },
    /// Put one object. Done when: the object's ETag is the MD5 of these bytes.
    Put {
        bucket: String,
        key: String,
        cache_control: String,
        /// Create-only: other bytes under this name stop the target.
        immutable: bool,
    },
}

impl Task {
    /// Whether this step puts the new manifest where devices read it.
    pub fn makes_live(&self) -> bool {
        match self {
            Task::PushBranch { .. } => true,
            Task::Put { key, .. } => key.ends_with(crate::ota_files::MANIFEST),
            _ => false,
        }
    }
}

/// What a release checks before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "kebab-case")]
pub enum Preflight {
    /// Nothing is changed in the working tree but what the release writes.
    CleanTree,
    /// HEAD is on the release branch (any branch when no source names one).
    OnBranch { branch: Option<String> },
    /// The version is SemVer without build metadata, above the last tag and the staged
    /// release, or equal to the staged one (a re-run finishing it).
    NewVersion { version: String },
    /// The tag does not exist, or marks this very release.
    TagFree { tag: String },
    /// `--from-tag`: the tag exists and marks a commit on the branch, which HEAD is at
    /// (unless this version is staged or committed already: nothing is built then).
    TaggedSource { tag: String, branch: Option<String> },
    /// `--from-tag`: the version file already says the version, as the tagged source
    /// must: its image is built from exactly what the tag marks.
    VersionSet { file: String, version: String },
    /// A source's credentials are in the environment.
    Credentials { source: String },
    /// The signing key loads and the firmware trusts it.
    SigningKey,
    /// The Rust toolchain that builds the firmware is installed.
    Toolchain { toolchain: String },
}

impl fmt::Display for Preflight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Preflight::CleanTree => f.write_str("no changes in the working tree but the release's"),
            Preflight::OnBranch {
                branch: Some(branch),
            } => write!(f, "HEAD on {branch}"),
            Preflight::OnBranch { branch: None } => f.write_str("HEAD on a branch"),
            Preflight::NewVersion { version } => {
                write!(f, "{version} above every tag and the staged release")
            }
            Preflight::TagFree { tag } => write!(f, "tag {tag} free, or this release's"),
            Preflight::TaggedSource { tag, branch } => write!(
                f,
                "tag {tag} marks a commit of {} and HEAD is at it",
                branch.as_deref().unwrap_or("the current branch")
            ),
            Preflight::VersionSet { file, version } => write!(f, "{file} says {version}"),
            Preflight::Credentials { source } => write!(f, "credentials for {source}"),
            Preflight::SigningKey => f.write_str("the signing key, trusted by the firmware"),
            Preflight::Toolchain { toolchain } => write!(f, "the `{toolchain}` Rust toolchain"),
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Task::Preflight { check } => write!(f, "preflight: {check}"),
            Task::SetVersion { file, version } => write!(f, "set version {version} in {file}"),
            Task::Build { how } => write!(f, "build: {how}"),
            Task::Stage { version, from } => {
                write!(f, "check, sign and stage {version} from {from}")
            }
            Task::ReleaseCommit { branch, paths, tag } => {
                write!(f, "commit {} on {branch} for {tag}", paths.join(", "))
            }
            Task::Commit { branch, dir, tag } => write!(f, "commit {dir}/ on {branch} for {tag}"),
            Task::PushBranch { branch, remote, .. } => write!(f, "push {branch} to {remote}"),
            Task::Tag { tag } => write!(f, "tag {tag} (annotated) at the release commit"),
            Task::PushTag { tag, remote } => write!(f, "push {tag} to {remote}"),
            Task::GithubRelease { tag, repository } => {
                write!(f, "GitHub Release {tag} in {repository}")
            }
            Task::ReleaseAsset { name } => write!(f, "release asset {name}"),
            Task::AwaitPush { source } => {
                write!(f, "wait for {source}'s push of the release commit and tag")
            }
            Task::CheckBucket { bucket, key } => write!(
                f,
                "check s3://{bucket}/{key} serves nothing newer, nor another build"
            ),
            Task::Put {
                bucket,
                key,
                cache_control,
                immutable,
            } => {
                write!(f, "put s3://{bucket}/{key}")?;
                if *immutable {
                    f.write_str(", create-only")?;
                }
                write!(f, ", Cache-Control: {cache_control}")
            }
        }
    }
}

/// How a step went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "why", rename_all = "kebab-case")]
pub enum Outcome {
    /// `--dry-run`: it would run.
    Planned,
    /// Done now.
    Done,
    /// A check that found nothing wrong.
    Checked,
    /// Already in place with the same bytes, or at the same commit.
    AlreadyThere,
    /// Nothing to do, for this reason: a planned patch `stage` did not make.
    Skipped(String),
    /// It failed, and stopped its target.
    Failed(String),
    /// An earlier step of its target failed.
    NotReached,
}

impl Outcome {
    /// The word the text report shows.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Planned => "would",
            Outcome::Done => "done",
            Outcome::Checked => "checked",
            Outcome::AlreadyThere => "already there",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "FAILED",
            Outcome::NotReached => "not reached",
        }
    }
}

/// A step of the plan and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub task: Task,
    /// The task in words, as the text report prints it.
    pub what: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// What only the run can know, such as the commit it made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// This step put the new manifest where devices read it: from here on, devices that
    /// ask this source see the release.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
}

impl Step {
    pub fn new(task: Task, outcome: Outcome) -> Step {
        let live = task.makes_live() && matches!(outcome, Outcome::Done | Outcome::AlreadyThere);
        Step {
            what: task.to_string(),
            task,
            outcome,
            detail: None,
            live,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Step {
        self.detail = Some(detail.into());
        self
    }
}

/// The steps of a plan that did not run: every one planned, for `--dry-run`.
pub fn planned(tasks: &[Task]) -> Vec<Step> {
    tasks
        .iter()
        .map(|t| Step::new(t.clone(), Outcome::Planned))
        .collect()
}

/// Records outcomes as a run walks its plan: one step per task, in order, so that what
/// a run reports is the plan with its outcomes, whatever happened.
#[derive(Debug)]
pub struct Record {
    tasks: Vec<Task>,
    steps: Vec<Step>,
}

impl Record {
    pub fn new(tasks: &[Task]) -> Record {
        Record {
            tasks: tasks.to_vec(),
            steps: Vec::new(),
        }
    }

    /// The task that runs next, if any is left.
    pub fn next(&self) -> Option<&Task> {
        self.tasks.get(self.steps.len())
    }

    /// Ends the next task with `outcome`, and `detail` when the run learnt something.
    pub fn finish(&mut self, outcome: Outcome, detail: Option<String>) {
        if let Some(task) = self.next().cloned() {
            let step = Step::new(task, outcome);
            self.steps.push(match detail {
                Some(detail) => step.detail(detail),
                None => step,
            });
        }
    }

    /// Ends the next task as failed, and every later one as not reached.
    pub fn fail(&mut self, why: impl Into<String>) {
        self.finish(Outcome::Failed(why.into()), None);
        self.skip_rest();
    }

    /// Ends every task left as not reached.
    pub fn skip_rest(&mut self) {
        while self.next().is_some() {
            self.finish(Outcome::NotReached, None);
        }
    }

    /// Whether a step so far failed.
    pub fn failed(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.outcome, Outcome::Failed(_)))
    }

    pub fn steps(self) -> Vec<Step> {
        self.steps
    }
}
