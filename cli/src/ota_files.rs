//! The staged release directory (`ota_files/`): the versioned image, the patches to it
//! from earlier releases, its alias and `version.json`, each replaced atomically so an
//! interrupted stage leaves the previous release whole. Earlier releases' images stay:
//! they are the bases of the next release's patches.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ota_core::manifest::{ManifestError, Patch, Trusted};
use ota_core::{Manifest, Version};
use serde::Serialize;

/// The manifest's file name on every source.
pub const MANIFEST: &str = "version.json";
/// How every patch file name ends.
pub const PATCH_SUFFIX: &str = ".patch";

/// Why the directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StagedError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    BadManifest {
        path: PathBuf,
        source: ManifestError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists with other bytes; a published image name is never reused")]
    Immutable { path: PathBuf },
    #[error("nothing is staged: {path} does not exist")]
    NothingStaged { path: PathBuf },
    #[error("the staged version.json is not trusted: {0}")]
    Untrusted(ota_core::manifest::SignatureError),
    #[error("{path} does not match the staged version.json: {reason}")]
    Mismatch { path: PathBuf, reason: String },
}

/// A staged release, checked as a device would check it before anything is published.
#[derive(Debug, Clone)]
pub struct StagedRelease {
    /// The staged manifest, verified: it names the versioned image file
    /// (`manifest.file()`, e.g. `wordclock-v2.9.0.bin`).
    pub manifest: Trusted,
    /// `version.json` exactly as staged: the bytes every source serves.
    pub manifest_bytes: Vec<u8>,
    pub image: Vec<u8>,
    /// The patches the manifest lists, in its order, with their bytes.
    pub patches: Vec<PatchFile>,
    /// The stable alias name, e.g. `wordclock.bin`.
    pub alias_name: String,
}

impl StagedRelease {
    pub fn version(&self) -> &Version {
        &self.manifest.version
    }

    /// `version.json` as served by a source whose copy of the image is at `image_url`.
    pub fn manifest_at(&self, image_url: String) -> Vec<u8> {
        self.manifest.served_at(image_url).to_json()
    }
}

/// A patch as the manifest lists it, and its bytes.
#[derive(Debug, Clone)]
pub struct PatchFile {
    pub spec: Patch,
    pub bytes: Vec<u8>,
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Written,
    /// It already held exactly these bytes.
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct StagedFile {
    pub path: PathBuf,
    pub action: Action,
}

/// `ota_files/` for releases whose images are named `<name>-v<version>.bin`.
#[derive(Debug, Clone)]
pub struct OtaFiles {
    dir: PathBuf,
    name: String,
}

impl OtaFiles {
    pub fn new(dir: PathBuf, name: &str) -> OtaFiles {
        OtaFiles {
            dir,
            name: name.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The immutable name of a version's image: `wordclock-v2.9.0.bin`.
    pub fn image_name(&self, version: &Version) -> String {
        format!("{}-{}.bin", self.name, version.tag())
    }

    /// The immutable name of the patch from `from`'s image to `to`'s:
    /// `wordclock-v2.8.0-to-v2.9.0.patch`.
    pub fn patch_name(&self, from: &Version, to: &Version) -> String {
        format!("{}-{}-to-{}{PATCH_SUFFIX}", self.name, from.tag(), to.tag())
    }

    /// The `n` versioned images below `version` in the directory that devices most
    /// likely run, the bases of its patches: the staged release first (what the fleet was
    /// last offered), then releases newest first, then prereleases newest first, so a run
    /// of release candidates does not take every base from the stable fleet.
    pub fn earlier_images(
        &self,
        version: &Version,
        n: usize,
    ) -> Result<Vec<(Version, PathBuf)>, StagedError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StagedError::Read {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let prefix = format!("{}-", self.name);
        let mut found: Vec<(Version, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let text = name.strip_prefix(&prefix)?.strip_suffix(".bin")?;
                let found: Version = text.strip_prefix('v')?.parse().ok()?;
                // Only the name this directory gives that version: no look-alikes.
                (self.image_name(&found) == name && found.precedence(version).is_lt())
                    .then(|| (found, entry.path()))
            })
            .collect();
        // An unreadable staged manifest only loses its place at the front.
        let staged = self.current().ok().flatten().map(|m| m.version);
        let rank = |v: &Version| (staged.as_ref() == Some(v), !v.is_prerelease());
        found.sort_by(|(a, _), (b, _)| rank(b).cmp(&rank(a)).then(b.precedence(a)));
        found.truncate(n);
        Ok(found)
    }

    /// The names of the patches a release of `version` publishes: those its staged
    /// manifest lists when it is staged already (a re-run), else those `stage` would make
    /// from the images here now (one it finds too large is then skipped).
    pub fn patch_candidates(&self, version: &Version, n: usize) -> Vec<String> {
        if let Ok(Some(staged)) = self.current()
            && staged.version == *version
        {
            return staged.patches.into_iter().map(|p| p.file).collect();
        }
        self.earlier_images(version, n)
            .unwrap_or_default()
            .iter()
            .map(|(from, _)| self.patch_name(from, version))
            .collect()
    }

    /// The stable alias that always holds the latest image: `wordclock.bin`.
    pub fn alias_name(&self) -> String {
        format!("{}.bin", self.name)
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    /// The staged manifest, if there is one.
    pub fn current(&self) -> Result<Option<Manifest>, StagedError> {
        let path = self.manifest_path();
        match std::fs::read(&path) {
            Ok(bytes) => Manifest::from_json(&bytes)
                .map(Some)
                .map_err(|source| StagedError::BadManifest { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StagedError::Read { path, source }),
        }
    }

    /// Loads the staged release and checks it: the manifest verifies with `trusted`, the
    /// image it names has its size and SHA-256, is a well-formed image of its chip, and
    /// embeds its version; the alias holds the same bytes.
    pub fn load_release(
        &self,
        trusted: &[ota_core::manifest::PublicKey],
    ) -> Result<StagedRelease, StagedError> {
        let manifest_path = self.manifest_path();
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| StagedError::Read {
                path: path.to_owned(),
                source,
            })
        };
        // Only a missing manifest means nothing is staged; a missing image is a broken stage.
        let manifest_bytes =
            std::fs::read(&manifest_path).map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => StagedError::NothingStaged {
                    path: manifest_path.clone(),
                },
                _ => StagedError::Read {
                    path: manifest_path.clone(),
                    source,
                },
            })?;
        let manifest =
            Manifest::from_json(&manifest_bytes).map_err(|source| StagedError::BadManifest {
                path: manifest_path.clone(),
                source,
            })?;
        let manifest = manifest.trust(trusted).map_err(StagedError::Untrusted)?;
        let image_path = self.dir.join(manifest.file());
        let image = read(&image_path)?;
        let mismatch = |reason: String| StagedError::Mismatch {
            path: image_path.clone(),
            reason,
        };
        let info =
            ota_core::image::parse(&image, manifest.chip).map_err(|e| mismatch(e.to_string()))?;
        manifest
            .check_image(&info)
            .map_err(|e| mismatch(e.to_string()))?;
        let mut patches = Vec::new();
        for patch in &manifest.patches {
            let path = self.dir.join(&patch.file);
            let bytes = read(&path)?;
            if bytes.len() as u64 != patch.size || ota_core::Sha256::of(&bytes) != patch.sha256 {
                return Err(StagedError::Mismatch {
                    path,
                    reason: format!(
                        "the manifest lists {} bytes with SHA-256 {}; run `clockrel stage` again",
                        patch.size, patch.sha256
                    ),
                });
            }
            patches.push(PatchFile {
                spec: patch.clone(),
                bytes,
            });
        }
        let alias_name = self.alias_name();
        let alias_path = self.dir.join(&alias_name);
        if read(&alias_path)? != image {
            return Err(StagedError::Mismatch {
                path: alias_path,
                reason: "the alias does not hold the staged image; run `clockrel stage` again"
                    .to_owned(),
            });
        }
        Ok(StagedRelease {
            manifest,
            manifest_bytes,
            image,
            patches,
            alias_name,
        })
    }

    /// Whether an immutable file (a versioned image, a patch) can be written: absent, or
    /// already these bytes.
    pub fn check_image_slot(&self, file: &str, image: &[u8]) -> Result<Action, StagedError> {
        let path = self.dir.join(file);
        match std::fs::read(&path) {
            Ok(existing) if existing == image => Ok(Action::Unchanged),
            Ok(_) => Err(StagedError::Immutable { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Action::Written),
            Err(source) => Err(StagedError::Read { path, source }),
        }
    }

    /// Writes the release in the order devices depend on: the versioned image, the
    /// patches, the alias, then the manifest that names them, last.
    /// Every immutable name is checked before anything is written.
    pub fn write(
        &self,
        file: &str,
        image: &[u8],
        patches: &[PatchFile],
        manifest: &Manifest,
    ) -> Result<Vec<StagedFile>, StagedError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StagedError::Write {
            path: self.dir.clone(),
            source,
        })?;
        let immutable: Vec<(&str, &[u8])> = std::iter::once((file, image))
            .chain(
                patches
                    .iter()
                    .map(|p| (p.spec.file.as_str(), p.bytes.as_slice())),
            )
            .collect();
        let actions = immutable
            .iter()
            .map(|(name, bytes)| self.check_image_slot(name, bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let mut staged = Vec::new();
        for ((name, bytes), action) in immutable.into_iter().zip(actions) {
            let path = self.dir.join(name);
            if action == Action::Written {
                write_atomic(&path, bytes)?;
            }
            staged.push(StagedFile { path, action });
        }
        for (path, bytes) in [
            (self.dir.join(self.alias_name()), image.to_vec()),
            (self.manifest_path(), manifest.to_json()),
        ] {
            let action = if std::fs::read(&path).is_ok_and(|old| old == bytes) {
                Action::Unchanged
            } else {
                write_atomic(&path, &bytes)?;
                Action::Written
            };
            staged.push(StagedFile { path, action });
        }
        Ok(staged)
    }
}

/// Replaces `path` with `bytes` all at once: a temporary file in the same directory,
/// flushed to disk, then renamed over the old one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StagedError> {
    let error = |source| StagedError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".clockrel-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(error)?;
    temp.write_all(bytes).map_err(error)?;
    // Temporary files are private; what is staged is meant to be served and committed.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(error)?;
    }
    temp.as_file().sync_all().map_err(error)?;
    temp.persist(path).map_err(|e| error(e.error))?;
    // The rename is durable only once the directory entry is.
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_version_plans_its_own_patches_and_a_new_one_those_its_images_allow() {
        let dir = tempfile::tempdir().unwrap();
        let files = OtaFiles::new(dir.path().to_owned(), "wordclock");
        for version in ["1.0.0", "1.1.0", "1.2.0-rc.1"] {
            std::fs::write(dir.path().join(format!("wordclock-v{version}.bin")), b"").unwrap();
        }
        let v = |text: &str| text.parse::<Version>().unwrap();
        // Nothing staged: releases newest first, before the release candidate.
        assert_eq!(
            files.patch_candidates(&v("1.2.0"), 2),
            [
                "wordclock-v1.1.0-to-v1.2.0.patch",
                "wordclock-v1.0.0-to-v1.2.0.patch"
            ]
        );
        // 1.2.0 staged with one patch, from another base: a re-run publishes that one.
        let staged = serde_json::json!({
            "format": 1, "version": "1.2.0", "sha256": "00".repeat(32), "firmware_size": 1,
            "chip": "esp32s3", "secure_version": 0, "file": "wordclock-v1.2.0.bin",
            "patches": [{"from": "1.0.0", "base_digest": "11".repeat(32),
                "file": "wordclock-v1.0.0-to-v1.2.0.patch", "size": 1, "sha256": "22".repeat(32)}]
        });
        std::fs::write(files.manifest_path(), staged.to_string()).unwrap();
        assert_eq!(
            files.patch_candidates(&v("1.2.0"), 2),
            ["wordclock-v1.0.0-to-v1.2.0.patch"]
        );
        // The next version: the staged release first, as devices were last offered it.
        std::fs::write(dir.path().join("wordclock-v1.2.0.bin"), b"").unwrap();
        assert_eq!(
            files.patch_candidates(&v("1.3.0"), 2),
            [
                "wordclock-v1.2.0-to-v1.3.0.patch",
                "wordclock-v1.1.0-to-v1.3.0.patch"
            ]
        );
    }

    #[test]
    fn names_follow_the_version_tag() {
        let files = OtaFiles::new(PathBuf::from("ota_files"), "wordclock");
        let v: Version = "2.9.0-rc.1".parse().unwrap();
        assert_eq!(files.image_name(&v), "wordclock-v2.9.0-rc.1.bin");
        assert_eq!(files.alias_name(), "wordclock.bin");
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.bin"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }
}
