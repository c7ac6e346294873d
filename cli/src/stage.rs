//! `clockrel stage`: turns a checked image into a signed release in `ota_files/`.
//!
//! Plan, then execute: every rule is judged and the manifest signed before the first
//! byte is written, so a refused stage leaves `ota_files/` exactly as it was.

use std::fmt::Write as _;
use std::path::PathBuf;

use ota_core::manifest::{FORMAT, Patch, PublicKey};
use ota_core::{Manifest, Version};
use serde::Serialize;

use crate::check::{self, CheckOptions, CheckReport, LoadedImage};
use crate::config::Config;
use crate::exit::{Exit, Failure};
use crate::keys::{self, KeyLoadError};
use crate::ota_files::{OtaFiles, PatchFile, StagedError, StagedFile};
use crate::rules::{Finding, Rule, Status};
use crate::units::Bytes;

/// What to stage, as given on the command line.
#[derive(Debug, Clone)]
pub struct StageOptions {
    pub version: Version,
    pub check: CheckOptions,
    pub key: Option<PathBuf>,
    /// The release notes: the manifest's `description`.
    pub notes: Option<String>,
}

/// The outcome: the checks, the stage's own rules, and what was written.
#[derive(Debug, Serialize)]
pub struct StageReport {
    pub ok: bool,
    pub version: String,
    pub check: CheckReport,
    /// The rules only a release has: version, newer, secure-version, image-name, trusted-key.
    pub rules: Vec<Finding>,
    pub staged: Option<Staged>,
}

#[derive(Debug, Serialize)]
pub struct Staged {
    pub file: String,
    pub size: Bytes,
    pub sha256: String,
    pub secure_version: u32,
    pub key_id: String,
    /// Where the key came from (a path or the variable's name), never the key.
    pub key_source: String,
    pub previous_version: Option<String>,
    /// The patches listed in the manifest, from earlier releases' images.
    pub patches: Vec<PatchMade>,
    /// Earlier releases no patch is listed from, and why.
    pub no_patch: Vec<NoPatch>,
    pub files: Vec<StagedFile>,
}

#[derive(Debug, Serialize)]
pub struct PatchMade {
    pub from: String,
    pub file: String,
    pub size: Bytes,
    /// Of the image's size.
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct NoPatch {
    pub from: String,
    pub why: String,
}

impl StageReport {
    pub fn failed(&self) -> impl Iterator<Item = &Finding> {
        self.check
            .failed()
            .chain(self.rules.iter().filter(|f| f.status == Status::Fail))
    }
}

pub fn run(options: &StageOptions, config: &Config) -> Result<StageReport, Failure> {
    let version = &options.version;
    if !version_is_releasable(version) {
        return Err(Failure::new(
            Exit::Usage,
            anyhow::anyhow!(
                "{version} carries build metadata (+...), which no release version may"
            ),
        )
        .hint("release 2.9.0 or 2.9.0-rc.1; build metadata does not order versions"));
    }
    if options.check.image.is_none() && options.check.elf.is_none() {
        return Err(
            Failure::new(Exit::Usage, anyhow::anyhow!("nothing to stage"))
                .hint("give --image FILE or --elf FILE"),
        );
    }
    let checked = check::run(&options.check, Some(config))?;
    let image = checked
        .image
        .expect("an image was given, so check loaded one");
    let (key, key_source) = keys::load_secret(options.key.as_deref()).map_err(key_failure)?;
    let trusted = match &config.signing.trusted_keys {
        Some(path) => Some(keys::load_trusted(path).map_err(key_failure)?),
        None => None,
    };
    let files = OtaFiles::new(config.ota_files(), config.release_name());
    let staged = files.current().map_err(|e| {
        Failure::new(Exit::BadInput, e).hint("fix or remove the staged version.json by hand; clockrel does not overwrite what it cannot read")
    })?;
    let file = files.image_name(version);

    let mut rules = unjudged_requirements(&checked.report);
    rules.extend([
        version_rule(version, &image),
        newer_rule(version, staged.as_ref()),
        secure_version_rule(&image, staged.as_ref()),
        image_name_rule(&files, &file, &image.bytes)?,
        trusted_key_rule(&key.public(), trusted.as_deref(), config),
    ]);
    let mut report = StageReport {
        ok: false,
        version: version.to_string(),
        check: checked.report,
        rules,
        staged: None,
    };
    if report.failed().next().is_some() {
        return Ok(report);
    }

    let (patches, no_patch) = patches(&files, version, &image.bytes, config)?;
    // Patch names are as immutable as the image's: judged before anything is written.
    for patch in &patches {
        let finding = image_name_rule(&files, &patch.spec.file, &patch.bytes)?;
        if finding.status == Status::Fail {
            report.rules.push(finding);
        }
    }
    if report.failed().next().is_some() {
        return Ok(report);
    }
    let mut manifest = manifest(version, &image, &file, options, config);
    manifest.patches = patches.iter().map(|p| p.spec.clone()).collect();
    manifest.sign(&key);
    // Read back what devices will read: the written JSON must parse and verify.
    Manifest::from_json(&manifest.to_json())
        .map_err(|e| e.to_string())
        .and_then(|reread| {
            reread
                .verify(std::slice::from_ref(&key.public()))
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            Failure::new(
                Exit::Error,
                anyhow::anyhow!("the manifest just signed does not read back: {e}"),
            )
        })?;
    let written = files.write(&file, &image.bytes, &patches, &manifest).map_err(|e| {
        Failure::new(Exit::Error, e).hint(
            "version.json still names the previous release, so devices see no change; stage again to finish",
        )
    })?;
    report.ok = true;
    report.staged = Some(Staged {
        file,
        size: Bytes(image.info.len),
        sha256: image.info.sha256.to_string(),
        secure_version: image.info.descriptor.secure_version,
        key_id: key.public().id().to_string(),
        key_source: key_source.to_string(),
        previous_version: staged.map(|m| m.version.to_string()),
        patches: patches
            .iter()
            .map(|p| PatchMade {
                from: p.spec.from.to_string(),
                file: p.spec.file.clone(),
                size: Bytes(p.spec.size),
                percent: percent(p.spec.size, image.info.len),
            })
            .collect(),
        no_patch,
        files: written,
    });
    Ok(report)
}

/// The patches to `new` from the earlier images in `ota_files/` devices most likely run
/// (`[delta] bases`, see [`OtaFiles::earlier_images`]),
/// each smaller than `[delta] max_percent` of it, and applied back by the device's own
/// applier before it is listed; and the bases no patch is listed from, with why.
fn patches(
    files: &OtaFiles,
    version: &Version,
    new: &[u8],
    config: &Config,
) -> Result<(Vec<PatchFile>, Vec<NoPatch>), Failure> {
    let bases = files
        .earlier_images(version, config.delta.bases())
        .map_err(|e| Failure::new(Exit::Error, e))?;
    let limit = u64::from(config.delta.max_percent());
    let (mut made, mut skipped) = (Vec::new(), Vec::new());
    for (from, path) in bases {
        let old = std::fs::read(&path).map_err(|source| {
            Failure::new(
                Exit::Error,
                StagedError::Read {
                    path: path.clone(),
                    source,
                },
            )
        })?;
        let patch = match crate::delta::patch(&old, new) {
            Ok(patch) => patch,
            Err(why) => {
                skipped.push(NoPatch {
                    from: from.to_string(),
                    why: format!("{}: {why}", path.display()),
                });
                continue;
            }
        };
        let size = patch.len() as u64;
        if size * 100 >= new.len() as u64 * limit {
            skipped.push(NoPatch {
                from: from.to_string(),
                why: format!(
                    "the patch would be {:.0} % of the image, not under the {limit} % of [delta] max_percent",
                    percent(size, new.len() as u64)
                ),
            });
            continue;
        }
        // Read back as a device would: a patch that does not give the image is a bug.
        match crate::delta::apply(&old, &patch) {
            Ok(result) if result == new => {}
            Ok(_) => return Err(patch_bug(&from, "it makes other bytes than the image")),
            Err(e) => return Err(patch_bug(&from, &e.to_string())),
        }
        let base_digest =
            crate::delta::base_digest(&old).map_err(|e| patch_bug(&from, &e.to_string()))?;
        made.push(PatchFile {
            spec: Patch {
                file: files.patch_name(&from, version),
                from,
                base_digest,
                size,
                sha256: ota_core::Sha256::of(&patch),
            },
            bytes: patch,
        });
    }
    Ok((made, skipped))
}

/// The patches a stage made, or why it made none, in a line.
pub fn patch_summary(staged: &Staged) -> String {
    let made = staged
        .patches
        .iter()
        .map(|p| format!("patch from v{} ({}, {:.1} %)", p.from, p.size, p.percent));
    let not = staged
        .no_patch
        .iter()
        .map(|p| format!("no patch from v{}: {}", p.from, p.why));
    let all: Vec<String> = made.chain(not).collect();
    if all.is_empty() {
        "no earlier release's image in ota_files/ to make a patch from".to_owned()
    } else {
        all.join("; ")
    }
}

fn patch_bug(from: &Version, why: &str) -> Failure {
    Failure::new(
        Exit::Error,
        anyhow::anyhow!(
            "the patch just made from {} does not apply: {why}",
            from.tag()
        ),
    )
    .hint("this is a clockrel bug; set [delta] bases = 0 to release without patches meanwhile")
}

fn percent(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole.max(1) as f64
}

/// Build metadata does not order versions, so two releases could not be told apart.
fn version_is_releasable(version: &Version) -> bool {
    !version.to_string().contains('+')
}

fn key_failure(error: KeyLoadError) -> Failure {
    match error {
        KeyLoadError::Missing => Failure::new(Exit::Usage, error)
            .hint("make one with `clockrel keygen`, and keep it out of the repository"),
        other => Failure::new(Exit::BadInput, other),
    }
}

/// Rules `check` could not judge for lack of input, which a release must not skip.
fn unjudged_requirements(check: &CheckReport) -> Vec<Finding> {
    check
        .rules
        .iter()
        .filter(|f| f.status == Status::Skip)
        .filter(|f| matches!(f.rule, Rule::Table | Rule::Headroom | Rule::InsideFlash))
        .map(|f| {
            Finding::fail(
                f.rule,
                format!("a release must pass this rule, but: {}", f.detail),
            )
        })
        .collect()
}

fn version_rule(version: &Version, image: &LoadedImage) -> Finding {
    let embedded = image.info.descriptor.version;
    match embedded
        .as_str()
        .and_then(|text| text.parse::<Version>().ok())
    {
        Some(found) if found == *version => {
            Finding::pass(Rule::Version, format!("the image says it is {embedded}"))
        }
        Some(_) => Finding::fail(
            Rule::Version,
            format!(
                "the image says it is {embedded}, not {version}: devices would see an update forever; bump the firmware's Cargo.toml version and rebuild"
            ),
        ),
        None => Finding::fail(
            Rule::Version,
            format!("the image's version `{embedded}` is not SemVer, so devices cannot compare it"),
        ),
    }
}

fn newer_rule(version: &Version, staged: Option<&Manifest>) -> Finding {
    match staged {
        None => Finding::pass(Rule::Newer, "nothing is staged yet"),
        Some(m) if version.precedence(&m.version).is_gt() => Finding::pass(
            Rule::Newer,
            format!("{} is above the staged {}", version.tag(), m.version.tag()),
        ),
        Some(m) => Finding::fail(
            Rule::Newer,
            format!(
                "{} is not above the staged {}: devices would not update",
                version.tag(),
                m.version.tag()
            ),
        ),
    }
}

fn secure_version_rule(image: &LoadedImage, staged: Option<&Manifest>) -> Finding {
    let offered = image.info.descriptor.secure_version;
    let current = staged.and_then(|m| m.secure_version).unwrap_or(0);
    if offered >= current {
        Finding::pass(
            Rule::SecureVersion,
            format!("secure_version {offered}, staged {current}"),
        )
    } else {
        Finding::fail(
            Rule::SecureVersion,
            format!(
                "the image's secure_version {offered} is below the staged {current}: devices that burnt {current} into eFuse would refuse it"
            ),
        )
    }
}

fn image_name_rule(files: &OtaFiles, file: &str, image: &[u8]) -> Result<Finding, Failure> {
    match files.check_image_slot(file, image) {
        Ok(_) => Ok(Finding::pass(
            Rule::ImageName,
            format!("{file} is free or holds these bytes"),
        )),
        Err(StagedError::Immutable { path }) => Ok(Finding::fail(
            Rule::ImageName,
            format!(
                "{} already holds other bytes; if it was never published, delete it and stage again",
                path.display()
            ),
        )),
        Err(other) => Err(Failure::new(Exit::Error, other)),
    }
}

fn trusted_key_rule(key: &PublicKey, trusted: Option<&[PublicKey]>, config: &Config) -> Finding {
    let Some(trusted) = trusted else {
        return Finding::fail(
            Rule::TrustedKey,
            "signing.trusted_keys is not set in clockrel.toml, so whether devices would accept this key is unknown",
        );
    };
    let list = config
        .signing
        .trusted_keys
        .as_deref()
        .map_or(String::new(), |p| p.display().to_string());
    if trusted.contains(key) {
        Finding::pass(Rule::TrustedKey, format!("key {} is in {list}", key.id()))
    } else {
        Finding::fail(
            Rule::TrustedKey,
            format!(
                "key {} is not in {list}: devices would refuse this release",
                key.id()
            ),
        )
    }
}

/// The manifest for this release, unsigned.
fn manifest(
    version: &Version,
    image: &LoadedImage,
    file: &str,
    options: &StageOptions,
    config: &Config,
) -> Manifest {
    let d = &image.info.descriptor;
    let title = config
        .release
        .title
        .as_deref()
        .map(|t| t.replace("{version}", &version.to_string()))
        .unwrap_or_else(|| format!("{} {}", config.release_name(), version.tag()));
    Manifest {
        format: Some(FORMAT),
        version: version.clone(),
        build_date: Some(format!("{} {}", d.date, d.time)),
        sha256: image.info.sha256,
        firmware_size: image.info.len,
        firmware_url: firmware_url(config, file),
        commit_hash: head_commit(config),
        title: Some(title),
        description: Some(options.notes.clone().unwrap_or_default()),
        release_date: Some(release_date()),
        esp_idf_version: Some(d.idf_ver.to_string()),
        requires_restart: Some(true),
        chip: Some(image.info.header.chip),
        secure_version: Some(d.secure_version),
        file: Some(file.to_owned()),
        patches: Vec::new(),
        signature: None,
        extra: Default::default(),
    }
}

/// The legacy fleet downloads from `firmware_url`: the GitHub raw URL of the versioned
/// image on the release branch if GitHub is a source, else the R2 one.
fn firmware_url(config: &Config, file: &str) -> Option<String> {
    let branch = config.sources.github.as_ref().map(|g| g.branch.as_str());
    branch
        .and_then(|branch| config.github_raw_url(branch, file))
        .or_else(|| config.sources.r2.as_ref().map(|r2| r2.public_url_of(file)))
}

/// The commit the image was built from, when the repository is a git work tree.
fn head_commit(config: &Config) -> Option<String> {
    let repo = git2::Repository::discover(&config.root).ok()?;
    let commit = repo.head().ok()?.peel_to_commit().ok()?;
    Some(commit.id().to_string())
}

/// Now, or `SOURCE_DATE_EPOCH` for reproducible stages.
fn release_date() -> String {
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or_else(std::time::SystemTime::now, |secs| {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
        });
    humantime::format_rfc3339_seconds(now).to_string()
}

/// The report as people read it.
pub fn render(report: &StageReport) -> String {
    let mut out = String::new();
    if report.check.failed().next().is_some() {
        out.push_str(&check::render(&report.check));
        out.push('\n');
    }
    if !report.ok {
        let _ = writeln!(out, "release rules");
    }
    for f in &report.rules {
        if report.ok && f.status == Status::Pass {
            continue;
        }
        let status = match f.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        let _ = writeln!(out, "  {status:<4}  {:<15} {}", f.rule.id(), f.detail);
    }
    match &report.staged {
        Some(s) => {
            let previous = s
                .previous_version
                .as_deref()
                .map_or(String::new(), |p| format!(", replacing v{p}"));
            let _ = writeln!(
                out,
                "staged v{} ({}, secure_version {}{previous})",
                report.version, s.size, s.secure_version
            );
            for f in &s.files {
                let _ = writeln!(
                    out,
                    "  {:<9} {}",
                    format!("{:?}", f.action).to_lowercase(),
                    f.path.display()
                );
            }
            for p in &s.patches {
                let _ = writeln!(
                    out,
                    "  patch     {} from v{}: {}, {:.1} % of the image",
                    p.file, p.from, p.size, p.percent
                );
            }
            for p in &s.no_patch {
                let _ = writeln!(out, "  no patch  from v{}: {}", p.from, p.why);
            }
            let _ = writeln!(out, "  sha256    {}", s.sha256);
            let _ = writeln!(out, "  signed by key {} from {}", s.key_id, s.key_source);
        }
        None => {
            let failed = report.failed().count();
            let _ = writeln!(
                out,
                "\nnot staged: {failed} rule(s) failed; ota_files/ is unchanged"
            );
        }
    }
    out
}
