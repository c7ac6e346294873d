//! `clockrel init`: onboards an existing firmware repository. It reads what is there (a
//! Rust firmware package or an ESP-IDF project, its sdkconfig, its partition table, its
//! git remote) and writes a commented `clockrel.toml`, a signing key if there is none,
//! the key's public line in the trusted-keys file, and on request the release workflow.
//! It never overwrites a file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::FILE_NAME;
use crate::exit::{Exit, Failure};
use crate::keys::{self, KeyLoadError};

/// The release workflow this repository ships, which `--workflow` writes with clockrel
/// installed from its repository instead of from the checkout.
const WORKFLOW: &str = include_str!("../../.github/workflows/release.yml");
const INSTALL_HERE: &str = "cargo install --locked --path cli";
const INSTALL_FROM_GIT: &str = concat!(
    "cargo install --locked --git ",
    env!("CARGO_PKG_REPOSITORY"),
    " clockrel"
);
const WORKFLOW_PATH: &str = ".github/workflows/release.yml";

#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The repository root.
    pub dir: PathBuf,
    /// The signing key file: used when it exists, else made.
    pub key: PathBuf,
    /// `OWNER/REPO` [default: from the `origin` remote when it is on github.com].
    pub github: Option<String>,
    pub workflow: bool,
}

/// What kind of firmware the repository holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Firmware {
    /// A cargo package that depends on esp-idf.
    Cargo { package: String, manifest: String },
    /// A CMake project that includes ESP-IDF's project.cmake.
    EspIdf { project: String },
}

/// What init found and wrote.
#[derive(Debug, Serialize)]
pub struct InitReport {
    pub firmware: Firmware,
    pub chip: String,
    pub flash_size: Option<String>,
    pub partitions: Option<String>,
    pub github: Option<String>,
    pub key_file: PathBuf,
    /// Whether the key was made now (else an existing one is used).
    pub key_made: bool,
    pub public_key: String,
    pub written: Vec<String>,
}

/// The settings found in `sdkconfig` or `sdkconfig.defaults`.
#[derive(Debug, Default)]
struct Sdkconfig {
    target: Option<String>,
    flash_size: Option<String>,
    partitions: Option<String>,
}

pub fn run(options: &InitOptions) -> Result<InitReport, Failure> {
    let dir = &options.dir;
    let config_path = dir.join(FILE_NAME);
    if config_path.exists() {
        return Err(Failure::new(
            Exit::Usage,
            anyhow::anyhow!("{} already exists", config_path.display()),
        )
        .hint("init never overwrites a file; edit it, or remove it to start over"));
    }
    if options.workflow && dir.join(WORKFLOW_PATH).exists() {
        return Err(Failure::new(
            Exit::Usage,
            anyhow::anyhow!("{WORKFLOW_PATH} already exists"),
        )
        .hint("init never overwrites a file; leave out --workflow"));
    }
    let firmware = detect(dir)?;
    let sdkconfig = read_sdkconfig(dir, &firmware);
    let chip = sdkconfig
        .target
        .clone()
        .unwrap_or_else(|| "esp32s3".to_owned());
    let partitions = sdkconfig
        .partitions
        .clone()
        .filter(|p| dir.join(p).is_file())
        .or_else(|| find_partitions(dir));
    let github = options.github.clone().or_else(|| github_remote(dir));
    let branch = current_branch(dir).unwrap_or_else(|| "main".to_owned());
    let trusted = match &firmware {
        Firmware::Cargo { manifest, .. } => Path::new(manifest)
            .parent()
            .map(|p| p.join("trusted-keys.txt"))
            .unwrap_or_else(|| PathBuf::from("trusted-keys.txt")),
        Firmware::EspIdf { .. } => PathBuf::from("trusted-keys.txt"),
    };

    let (public, key_made) = match keys::load_secret(Some(&options.key)) {
        Ok((secret, _)) => (secret.public(), false),
        Err(KeyLoadError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let public = keys::generate(&options.key).map_err(|e| Failure::new(Exit::Error, e))?;
            (public, true)
        }
        Err(e) => return Err(Failure::new(Exit::BadInput, e)),
    };

    let mut written = Vec::new();
    if add_trusted_key(&dir.join(&trusted), &public.to_string())? {
        written.push(path_text(&trusted));
    }

    let config = config_text(
        &firmware,
        &chip,
        &sdkconfig,
        partitions.as_deref(),
        github
            .as_deref()
            .map(|repository| (repository, branch.as_str())),
        &trusted,
    );
    write_new(&config_path, &config)?;
    written.push(FILE_NAME.to_owned());
    if options.workflow {
        let workflow = WORKFLOW.replace(INSTALL_HERE, INSTALL_FROM_GIT);
        write_new(&dir.join(WORKFLOW_PATH), &workflow)?;
        written.push(WORKFLOW_PATH.to_owned());
    }
    Ok(InitReport {
        firmware,
        chip,
        flash_size: sdkconfig.flash_size,
        partitions,
        github,
        key_file: options.key.clone(),
        key_made,
        public_key: public.to_string(),
        written,
    })
}

/// A Rust firmware package (one that depends on esp-idf), else an ESP-IDF project.
fn detect(dir: &Path) -> Result<Firmware, Failure> {
    if let Some((package, manifest)) = esp_idf_package(dir) {
        return Ok(Firmware::Cargo {
            package,
            manifest: path_text(manifest.strip_prefix(dir).unwrap_or(&manifest)),
        });
    }
    let cmake = std::fs::read_to_string(dir.join("CMakeLists.txt")).unwrap_or_default();
    if cmake.contains("project.cmake") {
        let project = cmake
            .split("project(")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| c == ')' || c.is_whitespace()).next())
            .filter(|name| !name.is_empty())
            .unwrap_or("firmware")
            .to_owned();
        return Ok(Firmware::EspIdf { project });
    }
    Err(Failure::new(
        Exit::Usage,
        anyhow::anyhow!("{} holds no ESP firmware clockrel recognises", dir.display()),
    )
    .hint("run init at the root of a Rust firmware (a cargo package using esp-idf-svc, -hal or -sys) or an ESP-IDF project (CMakeLists.txt including project.cmake)"))
}

/// The first cargo package below `dir` that depends on an esp-idf crate.
fn esp_idf_package(dir: &Path) -> Option<(String, PathBuf)> {
    let mut manifests = Vec::new();
    collect_manifests(dir, 0, &mut manifests);
    manifests.sort();
    manifests.into_iter().find_map(|manifest| {
        let text = std::fs::read_to_string(&manifest).ok()?;
        let doc: toml_edit::DocumentMut = text.parse().ok()?;
        let name = doc.get("package")?.get("name")?.as_str()?.to_owned();
        // A dependency line naming one of the esp-idf crates, in any table.
        let uses_esp_idf = text.lines().any(|line| {
            let key = line.trim_start();
            ["esp-idf-svc", "esp-idf-hal", "esp-idf-sys"]
                .iter()
                .any(|name| key.starts_with(name))
        });
        uses_esp_idf.then_some((name, manifest))
    })
}

fn collect_manifests(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let manifest = dir.join("Cargo.toml");
    if manifest.is_file() {
        out.push(manifest);
    }
    if depth == 3 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.') || n == "target" || n == "build");
        if !hidden && entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_manifests(&path, depth + 1, out);
        }
    }
}

/// `CONFIG_IDF_TARGET`, `CONFIG_ESPTOOLPY_FLASHSIZE` and the custom partition table
/// from the project's sdkconfig (the generated one first, then the defaults).
fn read_sdkconfig(dir: &Path, firmware: &Firmware) -> Sdkconfig {
    let base = match firmware {
        Firmware::Cargo { manifest, .. } => dir.join(manifest).parent().map(Path::to_owned),
        Firmware::EspIdf { .. } => None,
    };
    let mut found = Sdkconfig::default();
    let places = [Some(dir.to_owned()), base].into_iter().flatten();
    for place in places {
        for name in ["sdkconfig", "sdkconfig.defaults"] {
            let Ok(text) = std::fs::read_to_string(place.join(name)) else {
                continue;
            };
            for line in text.lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let mut value = value.trim().trim_matches('"').to_owned();
                let slot = match key.trim() {
                    "CONFIG_IDF_TARGET" => &mut found.target,
                    "CONFIG_ESPTOOLPY_FLASHSIZE" => &mut found.flash_size,
                    "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME" => {
                        // ESP-IDF takes it relative to the project, where the sdkconfig is.
                        let path = place.join(&value);
                        value = path_text(path.strip_prefix(dir).unwrap_or(&path));
                        &mut found.partitions
                    }
                    _ => continue,
                };
                if slot.is_none() {
                    *slot = Some(value);
                }
            }
        }
    }
    found
}

/// A partition table CSV at the root or in `partitions/`.
fn find_partitions(dir: &Path) -> Option<String> {
    ["partitions.csv", "partitions/partitions.csv"]
        .into_iter()
        .find(|p| dir.join(p).is_file())
        .map(str::to_owned)
}

/// The branch HEAD is on, which releases go on by default.
fn current_branch(dir: &Path) -> Option<String> {
    let repo = git2::Repository::discover(dir).ok()?;
    let head = repo.head().ok()?;
    head.is_branch()
        .then(|| head.shorthand().ok().map(str::to_owned))
        .flatten()
}

/// `OWNER/REPO` of an `origin` remote on github.com.
fn github_remote(dir: &Path) -> Option<String> {
    let repo = git2::Repository::discover(dir).ok()?;
    let remote = repo.find_remote("origin").ok()?;
    let url = remote.url().ok()?.to_owned();
    let path = url
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("git@github.com:"))?;
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    (path.split('/').count() == 2).then(|| path.to_owned())
}

fn config_text(
    firmware: &Firmware,
    chip: &str,
    sdkconfig: &Sdkconfig,
    partitions: Option<&str>,
    github: Option<(&str, &str)>,
    trusted: &Path,
) -> String {
    let mut out = String::from(
        "# Release settings for clockrel (`clockrel release vX.Y.Z`). No secrets belong here:\n\
         # tokens and the signing key come from the environment or a key file.\n\n[firmware]\n",
    );
    match firmware {
        Firmware::Cargo { package, manifest } => {
            let _ = writeln!(
                out,
                "# The cargo package `release` builds; its version is set in {manifest}."
            );
            let _ = writeln!(out, "package = {}", quoted(package));
            let _ = writeln!(
                out,
                "# The chip build's cargo config and features, if it has them:"
            );
            let _ = writeln!(out, "# cargo_config = \"esp.toml\"");
            let _ = writeln!(out, "# features = [\"chip\"]");
        }
        Firmware::EspIdf { project } => {
            let _ = writeln!(
                out,
                "# An ESP-IDF project ({project}): `release` runs the build command and"
            );
            let _ = writeln!(
                out,
                "# takes the image it makes; ESP-IDF reads the version from version.txt."
            );
            let _ = writeln!(out, "version_file = \"version.txt\"");
            let _ = writeln!(out, "build = \"idf.py build\"");
            let _ = writeln!(out, "image = {}", quoted(&format!("build/{project}.bin")));
        }
    }
    let _ = writeln!(out, "# Every image must be built for this chip.");
    let _ = writeln!(out, "chip = {}\n\n[flash]", quoted(chip));
    match &sdkconfig.flash_size {
        Some(size) => {
            let _ = writeln!(out, "size = {}   # from sdkconfig", quoted(size));
        }
        None => {
            let _ = writeln!(out, "# size = \"8MB\"   # the flash chip's size");
        }
    }
    match partitions {
        Some(path) => {
            let _ = writeln!(out, "partitions = {}", quoted(path));
        }
        None => {
            let _ = writeln!(
                out,
                "# partitions = \"partitions.csv\"   # the partition table (CSV or binary)"
            );
        }
    }
    let _ = writeln!(
        out,
        "# Every OTA slot must hold the image plus this many percent of it."
    );
    let _ = writeln!(out, "headroom = 20\n");
    let _ = writeln!(
        out,
        "[signing]\n# The public keys the firmware trusts; build this file into the firmware."
    );
    let _ = writeln!(out, "trusted_keys = {}\n", quoted(&path_text(trusted)));
    let _ = writeln!(out, "# Where devices fetch releases from.");
    match github {
        Some((repository, branch)) => {
            let _ = writeln!(
                out,
                "[sources.github]\nrepository = {}\nbranch = {}\n",
                quoted(repository),
                quoted(branch)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# [sources.github]\n# repository = \"OWNER/REPO\"\n# branch = \"main\"\n"
            );
        }
    }
    let _ = writeln!(
        out,
        "# [sources.r2]\n# public_url = \"https://pub-<id>.r2.dev\"\n# bucket = \"<bucket>\"\n# account_id = \"<cloudflare account id>\""
    );
    out
}

/// `text` as a TOML string, quotes and escapes included: names found in a project may
/// hold anything.
fn quoted(text: &str) -> String {
    toml_edit::Value::from(text).to_string()
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

/// Creates `path`, refusing when it exists.
fn write_new(path: &Path, text: &str) -> Result<(), Failure> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| write_failure(path, e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
        .map_err(|e| write_failure(path, e))
}

/// Adds `line` to the trusted-keys file: a new file with a comment, or one more line
/// at the end of an existing one, never a rewrite. False when the key is there already.
fn add_trusted_key(path: &Path, line: &str) -> Result<bool, Failure> {
    let Ok(old) = std::fs::read_to_string(path) else {
        let text =
            format!("# Public keys this firmware trusts to sign releases, one per line.\n{line}\n");
        write_new(path, &text)?;
        return Ok(true);
    };
    if old.lines().any(|l| l.trim() == line) {
        return Ok(false);
    }
    let sep = if old.is_empty() || old.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, format!("{sep}{line}\n").as_bytes())
        })
        .map_err(|e| write_failure(path, e))?;
    Ok(true)
}

fn write_failure(path: &Path, e: std::io::Error) -> Failure {
    Failure::new(
        Exit::Error,
        anyhow::anyhow!("cannot write {}: {e}", path.display()),
    )
}

/// What init tells people: what it found, what it wrote, and what to do next.
pub fn render(report: &InitReport) -> String {
    let mut out = String::new();
    let what = match &report.firmware {
        Firmware::Cargo { package, manifest } => {
            format!("Rust firmware package {package} ({manifest})")
        }
        Firmware::EspIdf { project } => format!("ESP-IDF project {project}"),
    };
    let _ = writeln!(out, "found       {what}, for the {}", report.chip);
    let _ = writeln!(
        out,
        "partitions  {}",
        report
            .partitions
            .as_deref()
            .unwrap_or("not found: set [flash] partitions")
    );
    let _ = writeln!(
        out,
        "github      {}",
        report
            .github
            .as_deref()
            .unwrap_or("not found: set [sources.github]")
    );
    let made = if report.key_made { "made" } else { "existing" };
    let _ = writeln!(
        out,
        "key         {} ({made}; keep it out of the repository)",
        report.key_file.display()
    );
    let _ = writeln!(out, "public key  {}", report.public_key);
    for file in &report.written {
        let _ = writeln!(out, "wrote       {file}");
    }
    let _ = writeln!(
        out,
        "\nnext: fill in [sources.r2] if you publish to R2, build the trusted keys into the"
    );
    let _ = writeln!(
        out,
        "firmware and ship it, then `clockrel release v1.0.0 --dry-run`."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_names_found_in_a_project_still_make_a_valid_config() {
        let firmware = Firmware::EspIdf {
            project: "my \"clock\"\\app".to_owned(),
        };
        let sdkconfig = Sdkconfig {
            flash_size: Some("8MB".to_owned()),
            ..Sdkconfig::default()
        };
        let text = config_text(
            &firmware,
            "esp32s3",
            &sdkconfig,
            Some("odd dir/\"ota\".csv"),
            Some(("acme/wordclock", "main")),
            Path::new("trusted-keys.txt"),
        );
        let config = crate::config::Config::parse(&text, Path::new("/fw/clockrel.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            config.firmware.image.as_deref(),
            Some(Path::new("/fw/build/my \"clock\"\\app.bin"))
        );
        assert_eq!(
            config.flash.partitions.as_deref(),
            Some(Path::new("/fw/odd dir/\"ota\".csv"))
        );
    }
}
