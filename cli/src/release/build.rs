//! How a release gets its firmware built: cargo for a Rust firmware, a build command
//! for anything else, or a file given on the command line; and what a build may see.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ota_core::Version;

use super::{DEFAULT_TARGET, DEFAULT_TOOLCHAIN, Failed, ReleaseOptions};
use crate::config::Config;
use crate::exit::{Exit, Failure};
use crate::keys;
use crate::progress::Progress;

/// A firmware already built, given on the command line or made by the build command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Artifact {
    Image(PathBuf),
    Elf(PathBuf),
}

impl Artifact {
    pub(super) fn describe(&self) -> String {
        match self {
            Artifact::Image(path) => format!("the image {}", path.display()),
            Artifact::Elf(path) => format!("the ELF {}", path.display()),
        }
    }
}

/// How the firmware gets built.
#[derive(Debug, Clone)]
pub(super) enum Build {
    /// Already built: `--image` or `--elf`.
    Given(Artifact),
    /// `[firmware] build`, then the `elf` or `image` it makes.
    Command { command: String, artifact: Artifact },
    /// cargo, for a Rust firmware package.
    Cargo {
        package: String,
        target: String,
        toolchain: String,
        cargo_config: Option<PathBuf>,
        features: Vec<String>,
    },
}

impl Build {
    pub(super) fn from_config(options: &ReleaseOptions, config: &Config) -> Result<Build, Failure> {
        if let Some(artifact) = &options.artifact {
            return Ok(Build::Given(artifact.clone()));
        }
        let firmware = &config.firmware;
        if let Some(command) = &firmware.build {
            let artifact = match (&firmware.elf, &firmware.image) {
                (Some(elf), None) => Artifact::Elf(elf.clone()),
                (None, Some(image)) => Artifact::Image(image.clone()),
                _ => {
                    return Err(Failure::new(
                        Exit::Usage,
                        anyhow::anyhow!("[firmware] build is set, but not exactly one of elf and image"),
                    )
                    .hint("say what the build command makes: elf = \"build/app.elf\" or image = \"build/app.bin\""));
                }
            };
            return Ok(Build::Command {
                command: command.clone(),
                artifact,
            });
        }
        let package = firmware.package.clone().ok_or_else(|| {
            Failure::new(Exit::Usage, anyhow::anyhow!("nothing says how to build the firmware"))
                .hint("set [firmware] package (a Rust firmware) or build (any other), or give --image FILE or --elf FILE")
        })?;
        Ok(Build::Cargo {
            package,
            target: firmware
                .target
                .clone()
                .unwrap_or_else(|| DEFAULT_TARGET.to_owned()),
            toolchain: firmware
                .toolchain
                .clone()
                .unwrap_or_else(|| DEFAULT_TOOLCHAIN.to_owned()),
            cargo_config: firmware.cargo_config.clone(),
            features: firmware.features.clone(),
        })
    }

    /// The command line, as the plan shows it.
    pub(super) fn describe(&self) -> String {
        match self {
            Build::Given(artifact) => format!("none, {} is given", artifact.describe()),
            Build::Command { command, .. } => format!("sh -c {command:?}"),
            Build::Cargo { toolchain, .. } => {
                format!("cargo +{toolchain} {}", self.cargo_args().join(" "))
            }
        }
    }

    /// cargo's arguments after the toolchain, for a Rust firmware.
    pub(super) fn cargo_args(&self) -> Vec<String> {
        let Build::Cargo {
            package,
            target,
            cargo_config,
            features,
            ..
        } = self
        else {
            return Vec::new();
        };
        let mut args: Vec<String> = ["build", "--release", "-p", package, "--target", target]
            .map(str::to_owned)
            .to_vec();
        if let Some(config) = cargo_config {
            args.extend(["--config".to_owned(), config.display().to_string()]);
        }
        if !features.is_empty() {
            args.extend(["--features".to_owned(), features.join(",")]);
        }
        args
    }

    /// What the stage step reads: the artifact, or "the ELF cargo builds".
    pub(super) fn output(&self) -> String {
        match self {
            Build::Given(artifact) | Build::Command { artifact, .. } => artifact.describe(),
            Build::Cargo { package, .. } => format!("the ELF cargo builds for {package}"),
        }
    }
}

/// Every variable that holds a secret clockrel reads: no build sees them, so neither a
/// build script nor a dependency's build.rs can print or send them anywhere.
pub(super) fn secret_variables() -> impl Iterator<Item = &'static str> {
    crate::targets::github::ENV_TOKEN
        .into_iter()
        .chain(crate::targets::r2::ENV_ACCESS_KEY)
        .chain(crate::targets::r2::ENV_SECRET_KEY)
        .chain([keys::ENV_KEY, keys::ENV_KEY_FILE])
}

/// What every build sees: the version, and where the sources serve the release, so
/// the firmware can build them in (the chip's `CLOCKREL_GITHUB_BASE` and
/// `CLOCKREL_R2_BASE` end in `/`).
pub(super) fn build_env(config: &Config, version: &Version) -> Vec<(&'static str, String)> {
    let mut env = vec![("CLOCKREL_VERSION", version.to_string())];
    if let Some(github) = &config.sources.github {
        env.extend(
            config
                .github_raw_url(&github.branch, "")
                .map(|url| ("CLOCKREL_GITHUB_BASE", url)),
        );
    }
    if let Some(r2) = &config.sources.r2 {
        env.push(("CLOCKREL_R2_BASE", r2.public_url_of("")));
    }
    env
}

/// `cargo build` of the firmware with `args` (the plan's), reading cargo's JSON messages
/// for progress and for the path of the ELF it made.
pub(super) fn cargo_build(
    root: &Path,
    toolchain: &str,
    args: &[String],
    package: &str,
    env: &[(&'static str, String)],
    progress: &Progress,
) -> Result<PathBuf, Failed> {
    use std::io::BufRead as _;
    let mut command = Command::new("cargo");
    for name in secret_variables() {
        command.env_remove(name);
    }
    command
        .arg(format!("+{toolchain}"))
        .args(args)
        .args(["--message-format", "json-render-diagnostics"])
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .current_dir(root)
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| (format!("cannot run cargo: {e}"), None))?;
    let mut elf = None;
    let mut compiled = 0u32;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            compiled += 1;
            if compiled.is_multiple_of(25) {
                progress.note(&format!("build: {compiled} crates compiled"));
            }
            if message["target"]["name"] == package
                && let Some(path) = message["executable"].as_str()
            {
                elf = Some(PathBuf::from(path));
            }
        }
    }
    let status = child.wait().map_err(|e| (format!("cargo: {e}"), None))?;
    if !status.success() {
        return Err((format!("cargo build failed ({status})"), None));
    }
    elf.ok_or_else(|| (format!("cargo built no executable named {package}"), None))
}
