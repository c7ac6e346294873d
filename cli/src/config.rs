//! `clockrel.toml`: the release settings of a firmware repository. It holds no secrets.

use std::path::{Path, PathBuf};

use ota_core::Chip;
use serde::Deserialize;

use crate::rules::Headroom;
use crate::units::FlashSize;

/// The file name looked for in the current directory and its ancestors.
pub const FILE_NAME: &str = "clockrel.toml";

/// The settings, with paths resolved against the directory of the file.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// The directory holding the config: the repository root.
    pub root: PathBuf,
    pub firmware: Firmware,
    pub flash: Flash,
    pub release: Release,
    pub signing: Signing,
    pub sources: Sources,
    pub verify: Verify,
    pub delta: Delta,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    /// The cargo package `release` builds.
    pub package: Option<String>,
    /// The chip every image must be built for.
    #[serde(default, deserialize_with = "chip")]
    pub chip: Option<Chip>,
    /// Where `release` writes the version the app descriptor carries: a `Cargo.toml`
    /// (its `package.version`, and the package's entry in the `Cargo.lock` beside the
    /// workspace) or a plain file such as `version.txt` [default: the Cargo.toml of
    /// `package`]. Relative to the config.
    pub version_file: Option<PathBuf>,
    /// A build command run with `sh -c` instead of cargo (ESP-IDF C projects:
    /// `idf.py build`); it sees the version in `CLOCKREL_VERSION`.
    pub build: Option<String>,
    /// The ELF the build command makes (the app image is made from it with espflash).
    pub elf: Option<PathBuf>,
    /// The app image the build command makes, if it makes one itself.
    pub image: Option<PathBuf>,
    /// The cargo target of a Rust firmware [default: xtensa-esp32s3-espidf].
    pub target: Option<String>,
    /// The rustup toolchain of a Rust firmware [default: esp].
    pub toolchain: Option<String>,
    /// A cargo config file passed with `--config` (the chip's, kept out of the
    /// workspace root so host builds stay host builds). Relative to the config.
    pub cargo_config: Option<PathBuf>,
    /// Cargo features of the chip build, such as `["chip"]`.
    #[serde(default)]
    pub features: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flash {
    pub size: Option<FlashSize>,
    /// The partition table, relative to the config file.
    pub partitions: Option<PathBuf>,
    /// Percent of the image that every OTA slot must keep free.
    #[serde(default, deserialize_with = "headroom")]
    pub headroom: Option<Headroom>,
}

/// Where and under which names a release is staged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Stem of the image files: `<name>-v2.9.0.bin` and the alias `<name>.bin`
    /// [default: the firmware package].
    pub name: Option<String>,
    /// The directory the GitHub source serves, relative to the config [default: ota_files].
    pub ota_files: Option<PathBuf>,
    /// Text of the manifest's `title`; `{version}` is replaced [default: "<name> v{version}"].
    pub title: Option<String>,
}

/// Where devices' trust comes from. The secret key never appears here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    /// The public keys the firmware trusts, one `ed25519:<hex>` per line, relative to
    /// the config. The firmware embeds the same file, so both sides agree.
    pub trusted_keys: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    pub github: Option<GithubSource>,
    pub r2: Option<R2Source>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubSource {
    /// `owner/name`.
    pub repository: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Where to push [default: https://github.com/<repository>.git].
    pub git_url: Option<String>,
    /// The REST API [default: https://api.github.com]; for GitHub Enterprise or tests.
    pub api_url: Option<String>,
    /// Where devices read raw files [default: https://raw.githubusercontent.com].
    pub raw_url: Option<String>,
    /// Where release assets are uploaded [default: https://uploads.github.com for
    /// github.com, else the api_url].
    pub upload_url: Option<String>,
}

/// GitHub's REST API on github.com.
pub const GITHUB_API_URL: &str = "https://api.github.com";

impl GithubSource {
    pub fn owner(&self) -> &str {
        self.repository.split('/').next().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.repository.split('/').nth(1).unwrap_or_default()
    }

    pub fn git_url(&self) -> String {
        self.git_url
            .clone()
            .unwrap_or_else(|| format!("https://github.com/{}.git", self.repository))
    }

    pub fn api_url(&self) -> &str {
        self.api_url.as_deref().unwrap_or(GITHUB_API_URL)
    }

    pub fn raw_url(&self) -> &str {
        self.raw_url
            .as_deref()
            .unwrap_or("https://raw.githubusercontent.com")
            .trim_end_matches('/')
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct R2Source {
    /// The bucket's public base URL (`https://pub-<id>.r2.dev` or a custom domain).
    pub public_url: String,
    pub bucket: Option<String>,
    /// The Cloudflare account id (not a secret: it names the S3 endpoint).
    pub account_id: Option<String>,
    /// A key prefix inside the bucket, such as `ota/`.
    #[serde(default)]
    pub prefix: String,
    /// The S3 API endpoint [default: https://<account_id>.r2.cloudflarestorage.com].
    pub endpoint: Option<String>,
}

impl R2Source {
    /// The S3 endpoint, from `endpoint` or the account id.
    pub fn endpoint(&self) -> Option<String> {
        self.endpoint.clone().or_else(|| {
            self.account_id
                .as_ref()
                .map(|id| format!("https://{id}.r2.cloudflarestorage.com"))
        })
    }

    /// The public URL of an object key.
    pub fn public_url_of(&self, file: &str) -> String {
        format!(
            "{}/{}{file}",
            self.public_url.trim_end_matches('/'),
            self.prefix
        )
    }
}

/// The delta patches `stage` makes, so devices on a recent release download kilobytes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// Patches from this many earlier releases whose images are in `ota_files/`, those
    /// devices most likely run first (the staged release, releases, then release
    /// candidates) [default: 2; 0 makes none].
    pub bases: Option<usize>,
    /// A patch is listed only when it is smaller than this percent of the image
    /// [default: 50]: above it, the whole image costs a device little more.
    pub max_percent: Option<u8>,
}

impl Delta {
    pub fn bases(&self) -> usize {
        self.bases.unwrap_or(2)
    }

    pub fn max_percent(&self) -> u8 {
        self.max_percent.unwrap_or(50)
    }
}

/// How `publish` and `verify` check what devices will download.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// How long to keep retrying a public URL that serves stale or missing bytes
    /// (CDN caches) [default: 360 seconds; raw.githubusercontent.com caches for 5 minutes].
    pub deadline_seconds: Option<u64>,
}

fn default_branch() -> String {
    "main".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    firmware: Firmware,
    #[serde(default)]
    flash: Flash,
    #[serde(default)]
    release: Release,
    #[serde(default)]
    signing: Signing,
    #[serde(default)]
    sources: Sources,
    #[serde(default)]
    verify: Verify,
    #[serde(default)]
    delta: Delta,
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Finds `clockrel.toml` in `start` or the nearest ancestor that has one.
    pub fn discover(start: &Path) -> Option<PathBuf> {
        start
            .ancestors()
            .map(|dir| dir.join(FILE_NAME))
            .find(|candidate| candidate.is_file())
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses the text of a config file found at `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: one_line(&e),
        })?;
        let root = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        // Absolute, so the paths below mean the same to a build run in another directory.
        let root = std::path::absolute(&root).unwrap_or(root);
        let mut flash = file.flash;
        flash.partitions = flash.partitions.map(|p| root.join(p));
        let mut firmware = file.firmware;
        for path in [
            &mut firmware.version_file,
            &mut firmware.elf,
            &mut firmware.image,
            &mut firmware.cargo_config,
        ] {
            *path = path.take().map(|p| root.join(p));
        }
        let mut signing = file.signing;
        signing.trusted_keys = signing.trusted_keys.map(|p| root.join(p));
        let name = file.release.name.as_deref().or(firmware.package.as_deref());
        if let Some(name) = name
            && !ota_core::manifest::is_plain_file_name(&format!("{name}-v0.0.0-rc.0.bin"))
        {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "release name `{name}` cannot name image files: use letters, digits, `.`, `-` and `_` only"
                ),
            });
        }
        if let Some(bases) = file.delta.bases
            && bases > ota_core::manifest::MAX_PATCHES
        {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "delta.bases is {bases}: a manifest lists at most {} patches",
                    ota_core::manifest::MAX_PATCHES
                ),
            });
        }
        if let Some(percent) = file.delta.max_percent
            && !(1..=100).contains(&percent)
        {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!("delta.max_percent is {percent}: give 1 to 100"),
            });
        }
        Ok(Config {
            path: path.to_owned(),
            root,
            firmware,
            flash,
            release: file.release,
            signing,
            sources: file.sources,
            verify: file.verify,
            delta: file.delta,
        })
    }

    /// The stem of the image file names.
    pub fn release_name(&self) -> &str {
        self.release
            .name
            .as_deref()
            .or(self.firmware.package.as_deref())
            .unwrap_or("firmware")
    }

    /// The directory `stage` writes and the GitHub source serves.
    pub fn ota_files(&self) -> PathBuf {
        self.root.join(self.ota_files_in_repo())
    }

    /// `ota_files/` relative to the repository root, as a git path.
    pub fn ota_files_in_repo(&self) -> String {
        let dir = self
            .release
            .ota_files
            .as_deref()
            .unwrap_or(Path::new("ota_files"));
        dir.to_string_lossy()
            .replace('\\', "/")
            .trim_matches('/')
            .to_owned()
    }

    /// Whether the config sits at the root of the git work tree `workdir`: only then are
    /// the paths it names (ota_files/, the version file) the paths in the repository
    /// and on its raw URLs.
    pub fn is_at_root_of(&self, workdir: Option<&Path>) -> bool {
        workdir
            .and_then(|w| w.canonicalize().ok())
            .zip(self.root.canonicalize().ok())
            .is_some_and(|(workdir, root)| workdir == root)
    }

    /// The GitHub raw URL of a staged file at a branch, tag or commit.
    pub fn github_raw_url(&self, git_ref: &str, file: &str) -> Option<String> {
        let github = self.sources.github.as_ref()?;
        Some(format!(
            "{}/{}/{git_ref}/{}/{file}",
            github.raw_url(),
            github.repository,
            self.ota_files_in_repo()
        ))
    }
}

/// toml's errors quote the offending line over several lines; keep the message and line.
fn one_line(error: &toml::de::Error) -> String {
    let message = error.message().trim();
    match error.span() {
        Some(span) => format!("{message} (at byte {})", span.start),
        None => message.to_owned(),
    }
}

fn chip<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Chip>, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map(Some).map_err(serde::de::Error::custom)
}

fn headroom<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Headroom>, D::Error> {
    u32::deserialize(deserializer)
        .map(|pct| Some(Headroom(pct)))
        .map_err(|_| serde::de::Error::custom("headroom is a whole percentage, such as 20"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_reads_with_paths_beside_it() {
        let text = r#"
[firmware]
package = "wordclock"
chip = "esp32s3"

[flash]
size = "8MB"
partitions = "partitions/partitions.csv"
headroom = 25
"#;
        let config = Config::parse(text, Path::new("/repo/clockrel.toml")).unwrap();
        assert_eq!(config.firmware.chip, Some(Chip::Esp32S3));
        assert_eq!(config.flash.size.unwrap().bytes(), 8 << 20);
        assert_eq!(
            config.flash.partitions.unwrap(),
            Path::new("/repo/partitions/partitions.csv")
        );
        assert_eq!(config.flash.headroom, Some(Headroom(25)));
    }

    #[test]
    fn the_readme_example_is_a_valid_config() {
        let readme = include_str!("../../README.md");
        let section = readme
            .find("## `clockrel.toml`")
            .expect("the README has a config section");
        let start = section
            + readme[section..]
                .find("```toml\n")
                .expect("the README shows a config")
            + 8;
        let end = start + readme[start..].find("```").unwrap();
        let config = Config::parse(&readme[start..end], Path::new("clockrel.toml")).unwrap();
        assert_eq!(config.release_name(), "wordclock");
        assert_eq!(config.sources.github.unwrap().branch, "main");
        assert!(config.sources.r2.is_some());
    }

    #[test]
    fn the_readme_esp_idf_example_is_a_valid_config() {
        let readme = include_str!("../../README.md");
        let at = readme
            .find("For an ESP-IDF C project")
            .expect("the README shows one");
        let start = at + readme[at..].find("```toml\n").unwrap() + 8;
        let end = start + readme[start..].find("```").unwrap();
        let config = Config::parse(&readme[start..end], Path::new("/fw/clockrel.toml")).unwrap();
        assert_eq!(config.firmware.build.as_deref(), Some("idf.py build"));
        assert_eq!(
            config.firmware.image.as_deref(),
            Some(Path::new("/fw/build/wordclock.bin"))
        );
        assert_eq!(
            config.firmware.version_file.as_deref(),
            Some(Path::new("/fw/version.txt"))
        );
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_the_file_named() {
        for text in [
            "[flash]\nsise = \"8MB\"\n",
            "[flash]\nsize = \"3MB\"\n",
            "[firmware]\nchip = \"esp8266\"\n",
            "[flash]\nheadroom = \"lots\"\n",
        ] {
            let err = Config::parse(text, Path::new("clockrel.toml")).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with("clockrel.toml: "), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }
}
