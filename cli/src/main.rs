//! The `clockrel` command line: parses arguments, runs a command, maps the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use clockrel::check::{self, CheckOptions};
use clockrel::config::Config;
use clockrel::exit::{Exit, Failure};
use clockrel::progress::Style;
use clockrel::publish::{self, PublishOptions};
use clockrel::release;
use clockrel::rules::Headroom;
use clockrel::stage::{self, StageOptions};
use clockrel::units::FlashSize;
use clockrel::verify;
use clockrel::{init, keys};
use ota_core::engine::Source;
use ota_core::{Chip, Version};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  unexpected error (I/O, environment)
  2  usage error
  3  a check failed: a rule of the release gate failed, or a public URL does not serve the release
  4  bad input: a file could not be read or is malformed
  5  partly published: some sources have the release, others not (run publish again)
  6  nothing published: every source failed";

/// Release ESP32-S3 firmware over the air, safely.
///
/// clockrel checks an app image against its partition table, signs a manifest, and
/// publishes to GitHub and Cloudflare R2, verifying that devices get exactly the bytes
/// that were signed.
#[derive(Debug, Parser)]
#[command(name = "clockrel", version, after_help = EXIT_CODES)]
struct Cli {
    /// The release config [default: clockrel.toml in this directory or the nearest parent]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print a machine-readable JSON report on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Init(InitArgs),
    Release(ReleaseArgs),
    Check(CheckArgs),
    Keygen(KeygenArgs),
    Stage(StageArgs),
    Publish(PublishArgs),
    Verify(VerifyArgs),
}

/// Set up clockrel in an existing firmware repository.
///
/// Finds the firmware (a Rust package that uses esp-idf, or an ESP-IDF project), reads
/// the chip, flash size and partition table from its sdkconfig, and the GitHub
/// repository from the `origin` remote. Writes a commented clockrel.toml, makes a
/// signing key unless --key names one that exists, and adds its public key to the
/// trusted-keys file the firmware must embed. With --workflow, also the GitHub Actions
/// release workflow. It never overwrites a file.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  clockrel init
  clockrel init --github acme/wordclock --workflow
  clockrel init --key ~/.config/clockrel/wordclock.key

Exit codes: 0 set up, 2 a file exists or no firmware was found, 1 a file could not be written.")]
struct InitArgs {
    /// The repository's root
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,

    /// The signing key: used if it exists, else made [default: $XDG_CONFIG_HOME/clockrel/signing.key]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// The GitHub repository devices fetch from, OWNER/REPO [default: the origin remote]
    #[arg(long, value_name = "OWNER/REPO")]
    github: Option<String>,

    /// Also write .github/workflows/release.yml
    #[arg(long)]
    workflow: bool,
}

/// Release a version: check, bump, build, stage, commit, tag, publish, verify.
///
/// The whole release as one plan, walked in order:
///
///   preflight  the working tree is clean but for what the release writes, HEAD is on
///              the release branch, VERSION is above every tag and the staged release,
///              its tag is free, every source's credentials are set, the signing key
///              loads and the firmware trusts it (all are checked, so one run names
///              every problem)
///   version    VERSION into [firmware] version_file (the package's Cargo.toml and
///              Cargo.lock, or a version.txt), so the image's app descriptor carries it
///   build      cargo for the Rust firmware ([firmware] package, target, toolchain,
///              cargo_config), or [firmware] build for any other; or nothing, with
///              --image or --elf
///   stage      every rule of `clockrel check` and `clockrel stage`, then ota_files/
///   commit     the version bump and ota_files/ in one commit, and the tag vVERSION
///   publish    GitHub and R2 in parallel, as `clockrel publish`, then every public URL
///              verified
///
/// With --from-tag (and on a tag push in GitHub Actions, with no VERSION) the tag
/// exists already and marks the source: preflight checks it is on the branch, HEAD is
/// at it and its version file says VERSION; nothing is bumped, and the commit adds
/// ota_files/ after the tag on the branch, which the tag stays behind.
///
/// --dry-run prints exactly these steps and touches nothing. After a failure, run the
/// same command again: what is done is found in the repository, ota_files/ and the
/// sources and skipped, so nothing is bumped, built, committed or tagged twice.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  clockrel release v2.9.0 --dry-run
  clockrel release v2.9.0
  clockrel release v2.9.0 --elf target/xtensa-esp32s3-espidf/release/wordclock
  clockrel release v2.9.0 --only r2 --json > release.json
  git checkout v2.9.0 && clockrel release v2.9.0 --from-tag

Exit codes: 0 released and verified, 3 a check failed: a preflight check or the release
gate before anything was published, or a public URL that does not serve the release
after all was published, 1 a step on this machine failed (build, commit), 5 partly
published (run again), 6 nothing published, 4 bad input, 2 usage.")]
struct ReleaseArgs {
    /// The version to release, such as v2.9.0 or 2.10.0-rc.1 [default: on a tag push in
    /// GitHub Actions, the pushed tag, with --from-tag]
    #[arg(value_name = "VERSION")]
    version: Option<Version>,

    /// Release the source the existing tag vVERSION marks (pushed to start the
    /// release): build it as it is, its version already set, and commit ota_files/
    /// after it on the branch; the tag stays where it is
    #[arg(long, conflicts_with_all = ["image", "elf"])]
    from_tag: bool,

    /// Release this app image instead of building
    #[arg(long, value_name = "FILE", conflicts_with = "elf")]
    image: Option<PathBuf>,

    /// Release the app image made from this ELF instead of building
    #[arg(long, value_name = "FILE")]
    elf: Option<PathBuf>,

    #[command(flatten)]
    publishing: PublishFlags,

    #[command(flatten)]
    signing: SigningFlags,
}

/// The version of a GitHub Actions run started by pushing a tag: `GITHUB_REF_NAME`
/// when `GITHUB_REF_TYPE` is `tag`.
fn pushed_tag() -> Result<Version, Failure> {
    let name = std::env::var("GITHUB_REF_NAME").unwrap_or_default();
    if std::env::var("GITHUB_REF_TYPE").as_deref() != Ok("tag") {
        return Err(Failure::new(
            Exit::Usage,
            anyhow::anyhow!("no VERSION given, and this is not a run started by a tag push"),
        )
        .hint("give the version: clockrel release v2.9.0"));
    }
    name.parse().map_err(|e| {
        Failure::new(
            Exit::Usage,
            anyhow::anyhow!("the pushed tag {name:?} is not a version: {e}"),
        )
        .hint("release tags are vMAJOR.MINOR.PATCH, such as v2.9.0")
    })
}

/// How a release reaches the sources; shared by `release` and `publish`.
#[derive(Debug, Args)]
struct PublishFlags {
    /// Publish to one source only
    #[arg(long, value_name = "SOURCE", value_parser = source_parser())]
    only: Option<Source>,

    /// Print the plan, every step, and touch nothing
    #[arg(long)]
    dry_run: bool,

    /// Do not fetch the public URLs afterwards
    #[arg(long)]
    no_verify: bool,

    /// Seconds to keep retrying public URLs that serve stale bytes [default: config, then 360]
    #[arg(long, value_name = "SECONDS")]
    deadline: Option<u64>,
}

/// The key that signs and the notes that go with it; shared by `release` and `stage`.
#[derive(Debug, Args)]
struct SigningFlags {
    /// The secret signing key file [default: $CLOCKREL_SIGNING_KEY, then $CLOCKREL_SIGNING_KEY_FILE]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// Release notes: the manifest's description and the GitHub Release's text
    #[arg(long, value_name = "TEXT", conflicts_with = "notes_file")]
    notes: Option<String>,

    /// Read the release notes from a file
    #[arg(long, value_name = "FILE")]
    notes_file: Option<PathBuf>,
}

impl SigningFlags {
    /// `--notes`, or the text of `--notes-file`.
    fn notes(&self) -> Result<Option<String>, Failure> {
        match &self.notes_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the release notes {}", path.display()))
                .map(Some)
                .map_err(|e| Failure::new(Exit::BadInput, e)),
            None => Ok(self.notes.clone()),
        }
    }
}

/// Check that an image and a partition table are safe to ship.
///
/// Reads an app image (or makes one from an ELF, exactly as a release will), reads the
/// partition table, and judges every rule of the release gate: the table is one ESP-IDF
/// accepts, no partitions overlap, app partitions sit on 64 KiB boundaries, otadata
/// exists when there are OTA slots, ota_0 and ota_1 exist with the same size, the
/// factory partition is never an OTA target, everything fits in the flash, the image is
/// built for the right chip, and every OTA slot holds the image with headroom to spare.
///
/// Settings not given here come from clockrel.toml ([firmware] chip, [flash] size,
/// partitions, headroom).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  clockrel check --image build/wordclock.bin --partitions partitions/partitions.csv
  clockrel check --elf target/xtensa-esp32s3-espidf/release/wordclock --flash-size 8MB
  clockrel check --image ota_files/wordclock-v2.9.0.bin --headroom 25 --json

Exit codes: 0 all rules pass, 3 a rule failed, 4 an input is unreadable, 2 usage.")]
struct CheckArgs {
    #[command(flatten)]
    inputs: Inputs,
}

/// The image and layout a command judges; shared by `check` and `stage`.
#[derive(Debug, Args)]
struct Inputs {
    /// The app image (the .bin that goes into an OTA slot)
    #[arg(long, value_name = "FILE", conflicts_with = "elf")]
    image: Option<PathBuf>,

    /// Make the app image from this firmware ELF with espflash, as a release does
    #[arg(long, value_name = "FILE")]
    elf: Option<PathBuf>,

    /// The partition table, as ESP-IDF CSV or the binary flashed at 0x8000
    #[arg(long, value_name = "FILE")]
    partitions: Option<PathBuf>,

    /// The flash chip's size, such as 4MB, 8MB, 16MB [default: config, then the image header]
    #[arg(long, value_name = "SIZE")]
    flash_size: Option<FlashSize>,

    /// The chip every image must be built for [default: config, then esp32s3]
    #[arg(long, value_name = "CHIP")]
    chip: Option<Chip>,

    /// Room every OTA slot must keep above the image, in percent of the image [default: config, then 20]
    #[arg(long, value_name = "PERCENT")]
    headroom: Option<Headroom>,
}

impl Inputs {
    fn options(self) -> CheckOptions {
        CheckOptions {
            image: self.image,
            elf: self.elf,
            partitions: self.partitions,
            flash_size: self.flash_size,
            chip: self.chip,
            headroom: self.headroom,
        }
    }
}

/// Make a new release signing key.
///
/// Writes the secret key to a file only its owner can read (never over an existing
/// file) and prints the public key. Add the public key to the trusted-keys file the
/// firmware embeds (signing.trusted_keys in clockrel.toml) before releasing with it:
/// devices refuse manifests signed by keys they do not trust.
///
/// Keep the secret key out of the repository. CI reads it from the environment:
/// CLOCKREL_SIGNING_KEY (the key file's text) or CLOCKREL_SIGNING_KEY_FILE (a path).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  clockrel keygen
  clockrel keygen --out ~/.config/clockrel/wordclock.key")]
struct KeygenArgs {
    /// Where to write the secret key [default: $XDG_CONFIG_HOME/clockrel/signing.key]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Stage a release: check the image, then write it and a signed version.json to ota_files/.
///
/// Runs every rule of `clockrel check`, then refuses when the image's embedded version
/// is not VERSION, when VERSION is not above the staged version, when the image's
/// secure_version is below the staged one, when the versioned file name already holds
/// other bytes, or when the signing key is not in the firmware's trusted keys.
///
/// It makes delta patches from earlier releases' images in ota_files/ (`[delta] bases`,
/// 2 by default: the staged release first, then releases, then release candidates) and
/// lists in the signed manifest those smaller than `[delta] max_percent` (50) of the
/// image, so devices on those releases download kilobytes; `bases = 0` makes none.
///
/// Only then does it write, each file atomically and in this order: <name>-vVERSION.bin,
/// the patches <name>-vOLD-to-vVERSION.patch, the alias <name>.bin, and version.json last.
/// A refused or interrupted stage leaves the previous release intact.
///
/// The secret key comes from --key, CLOCKREL_SIGNING_KEY or CLOCKREL_SIGNING_KEY_FILE;
/// never from clockrel.toml, and it is never printed.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  clockrel stage v2.9.0 --elf target/xtensa-esp32s3-espidf/release/wordclock
  clockrel stage v2.9.0 --image build/wordclock.bin --key ~/.config/clockrel/signing.key
  CLOCKREL_SIGNING_KEY=\"$KEY\" clockrel stage v2.10.0-rc.1 --image wordclock.bin --json

Exit codes: 0 staged, 3 a rule failed (nothing written), 4 unreadable input, 2 usage.")]
struct StageArgs {
    /// The version to release, such as v2.9.0 or 2.10.0-rc.1
    #[arg(value_name = "VERSION")]
    version: Version,

    #[command(flatten)]
    inputs: Inputs,

    #[command(flatten)]
    signing: SigningFlags,
}

/// Publish the staged release to GitHub and Cloudflare R2 at once, then verify both.
///
/// Takes what `clockrel stage` wrote to ota_files/, checks it as a device would (the
/// signature, the image's size, SHA-256 and embedded version), then publishes to every
/// configured source concurrently:
///
///   github  commits ota_files/ on the release branch if needed, tags vVERSION, pushes
///           both, and creates the GitHub Release with the image, its delta patches
///           and version.json
///   r2      puts the versioned image, its patches, the alias, then version.json last
///
/// Every step first looks at what is there: the same bytes are skipped, other bytes under
/// a versioned name stop that target. One target failing does not stop the other; run
/// again to finish, and only what is missing is done. Afterwards every public URL is
/// fetched until it serves exactly the signed bytes, or --deadline passes (CDN caches).
///
/// Credentials come from the environment only: GITHUB_TOKEN (or GH_TOKEN),
/// R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY (or the AWS_ names).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  clockrel publish --dry-run
  clockrel publish
  clockrel publish --only r2 --json

Exit codes: 0 published and verified, 5 partly published (run again), 6 nothing
published, 3 published but a public URL does not serve it, 4 bad staged files, 2 usage.")]
struct PublishArgs {
    #[command(flatten)]
    publishing: PublishFlags,
}

/// Check what each source serves, as a device would, and whether the sources agree.
///
/// Fetches version.json from every configured source, checks its signature against the
/// trusted keys, fetches the image and the delta patches it names and checks each one's
/// size and SHA-256. When a release
/// is staged, each source must serve exactly it. Reports when two sources serve
/// different releases.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  clockrel verify
  clockrel verify --deadline 300     # keep retrying while CDN caches expire
  clockrel verify --only r2 --json

Exit codes: 0 every source serves the release, 3 a source does not, 2 usage.")]
struct VerifyArgs {
    /// Check one source only
    #[arg(long, value_name = "SOURCE", value_parser = source_parser())]
    only: Option<Source>,

    /// Seconds to keep retrying a source that does not serve the staged release yet
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    deadline: u64,

    /// Check this version.json on disk instead (its signature, and the image it names
    /// when that is beside it): no server is asked
    #[arg(long, value_name = "FILE", conflicts_with_all = ["only", "deadline"])]
    file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::from(failure.exit.code())
        }
    }
}

fn run(cli: Cli) -> Result<Exit, Failure> {
    let config = load_config(cli.config.as_deref())?;
    match cli.command {
        Command::Check(args) => {
            let report = check::run(&args.inputs.options(), config.as_ref())?.report;
            emit(cli.json, &report, check::render)?;
            Ok(if report.ok {
                Exit::Success
            } else {
                Exit::CheckFailed
            })
        }
        Command::Keygen(args) => keygen(args, cli.json),
        Command::Init(args) => {
            let key = match args.key {
                Some(key) => key,
                None => keys::default_key_path().map_err(|e| Failure::new(Exit::Usage, e))?,
            };
            let report = init::run(&init::InitOptions {
                dir: args.dir,
                key,
                github: args.github,
                workflow: args.workflow,
            })?;
            emit(cli.json, &report, init::render)?;
            Ok(Exit::Success)
        }
        Command::Release(args) => {
            let config = require_config(config, "release")?;
            let (version, from_tag) = match args.version {
                Some(version) => (version, args.from_tag),
                None => (pushed_tag()?, true),
            };
            let artifact = match (args.image, args.elf) {
                (Some(image), _) => Some(release::Artifact::Image(image)),
                (None, Some(elf)) => Some(release::Artifact::Elf(elf)),
                (None, None) => None,
            };
            let publishing = &args.publishing;
            let options = release::ReleaseOptions {
                version,
                from_tag,
                artifact,
                only: publishing.only,
                dry_run: publishing.dry_run,
                verify: !publishing.no_verify,
                deadline: deadline(publishing.deadline, &config),
                notes: args.signing.notes()?,
                key: args.signing.key,
            };
            let report =
                runtime()?.block_on(release::run(&options, &config, Style::detect(cli.json)))?;
            emit(cli.json, &report, release::render)?;
            Ok(report.exit())
        }
        Command::Publish(args) => {
            let config = require_config(config, "publish")?;
            let publishing = &args.publishing;
            let options = PublishOptions {
                only: publishing.only,
                dry_run: publishing.dry_run,
                verify: !publishing.no_verify,
                deadline: deadline(publishing.deadline, &config),
            };
            let report =
                runtime()?.block_on(publish::run(&options, &config, Style::detect(cli.json)))?;
            emit(cli.json, &report, publish::render)?;
            Ok(report.verdict.exit())
        }
        Command::Verify(args) => {
            let config = require_config(config, "verify")?;
            let deadline = Duration::from_secs(args.deadline);
            let verification = match &args.file {
                Some(file) => verify::local(&config, file)?,
                None => runtime()?.block_on(verify::run(
                    &config,
                    args.only,
                    deadline,
                    Style::detect(cli.json),
                ))?,
            };
            emit(cli.json, &verification, render_verification)?;
            Ok(if verification.ok {
                Exit::Success
            } else {
                Exit::CheckFailed
            })
        }
        Command::Stage(args) => {
            let config = require_config(config, "stage")?;
            let options = StageOptions {
                version: args.version,
                check: args.inputs.options(),
                notes: args.signing.notes()?,
                key: args.signing.key,
            };
            let report = stage::run(&options, &config)?;
            emit(cli.json, &report, stage::render)?;
            Ok(if report.ok {
                Exit::Success
            } else {
                Exit::CheckFailed
            })
        }
    }
}

fn keygen(args: KeygenArgs, json: bool) -> Result<Exit, Failure> {
    let path = match args.out {
        Some(path) => path,
        None => keys::default_key_path().map_err(|e| Failure::new(Exit::Usage, e))?,
    };
    let public = keys::generate(&path).map_err(|e| match e {
        keys::KeyLoadError::Exists { .. } => Failure::new(Exit::Usage, e).hint(
            "give --out with a new path; to retire a key, remove it from the trusted keys first",
        ),
        other => Failure::new(Exit::Error, other),
    })?;
    if json {
        let report = serde_json::json!({
            "key_file": path,
            "public_key": public.to_string(),
            "key_id": public.id().to_string(),
        });
        println!("{report:#}");
    } else {
        println!(
            "secret key  {}  (readable only by you; keep it out of the repository)",
            path.display()
        );
        println!("key id      {}", public.id());
        println!("public key  {public}");
        println!();
        println!("Add the public key line to the trusted-keys file the firmware embeds");
        println!("(signing.trusted_keys in clockrel.toml), then build and ship a firmware that");
        println!("trusts it before you release with this key.");
    }
    Ok(Exit::Success)
}

/// `--deadline`, else `[verify] deadline_seconds`, else the default.
fn deadline(flag: Option<u64>, config: &Config) -> Duration {
    Duration::from_secs(
        flag.or(config.verify.deadline_seconds)
            .unwrap_or(verify::DEFAULT_DEADLINE.as_secs()),
    )
}

fn require_config(config: Option<Config>, command: &str) -> Result<Config, Failure> {
    config.ok_or_else(|| {
        Failure::new(Exit::Usage, anyhow::anyhow!("no clockrel.toml here or above"))
            .hint(format!("`clockrel {command}` works on the repository that holds clockrel.toml; run it there or give --config"))
    })
}

/// `--only`: `github`, `r2`, or the fleet's name for R2, `cloudflare`.
fn source_parser() -> impl clap::builder::TypedValueParser<Value = Source> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["github", "r2", "cloudflare"])
        .try_map(|name: String| Source::parse(&name).ok_or("not a source"))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(|e| Failure::new(Exit::Error, e))
}

fn render_verification(verification: &verify::Verification) -> String {
    let mut out = String::new();
    for served in &verification.sources {
        let status = if served.ok { "ok" } else { "FAIL" };
        out.push_str(&format!(
            "{status:<4} {:<18} {}  {}\n",
            served.source, served.manifest_url, served.detail
        ));
    }
    if let Some(disagreement) = &verification.disagreement {
        out.push_str(&format!("FAIL sources disagree: {disagreement}\n"));
    }
    out.push_str(if verification.ok {
        "every source serves the release\n"
    } else {
        "NOT verified: a device may not get the release from every source\n"
    });
    out
}

/// Prints a report: JSON on stdout with `--json`, else the human rendering.
fn emit<T: serde::Serialize>(
    json: bool,
    report: &T,
    render: fn(&T) -> String,
) -> Result<(), Failure> {
    if json {
        let text = serde_json::to_string_pretty(report)
            .context("cannot encode the report as JSON")
            .map_err(|e| Failure::new(Exit::Error, e))?;
        println!("{text}");
    } else {
        print!("{}", render(report));
    }
    Ok(())
}

/// The config named by `--config`, else the one found from the current directory, if any.
fn load_config(explicit: Option<&std::path::Path>) -> Result<Option<Config>, Failure> {
    let path = match explicit {
        Some(path) => Some(path.to_owned()),
        None => std::env::current_dir()
            .ok()
            .and_then(|dir| Config::discover(&dir)),
    };
    path.map(|path| {
        Config::load(&path).map_err(|e| {
            Failure::new(Exit::BadInput, e)
                .hint("see the README's `clockrel.toml` section for every key")
        })
    })
    .transpose()
}
