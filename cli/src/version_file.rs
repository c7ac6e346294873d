//! Where the firmware takes its version from, so that a release's image carries it in
//! its app descriptor: the firmware package's `Cargo.toml` (and its entry in the
//! workspace's `Cargo.lock`), or an ESP-IDF project's plain version file. Edits keep
//! the files' formatting and comments.

use std::path::{Path, PathBuf};

use ota_core::Version;

use crate::plan::Outcome;

/// Why the version could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum VersionFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{path} has no [package] version to set (is it inherited from the workspace?)")]
    NoPackageVersion { path: PathBuf },
    #[error("{path} holds `{found}`, which is not a version")]
    NotAVersion { path: PathBuf, found: String },
    #[error("no Cargo.toml of package `{package}` below {root}")]
    PackageNotFound { package: String, root: PathBuf },
}

/// The file a release writes its version to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionFile {
    /// `package.version` of a Cargo.toml, and that package's entry in `lock`.
    Cargo {
        manifest: PathBuf,
        lock: Option<PathBuf>,
    },
    /// The whole file is the version and a newline (`version.txt` of an ESP-IDF
    /// project, read by its CMake as PROJECT_VER).
    Plain { path: PathBuf },
}

impl VersionFile {
    /// The file at `path`: a Cargo.toml by its name, else a plain version file. The lock
    /// is the `Cargo.lock` nearest above a Cargo.toml, up to `root`.
    pub fn at(path: &Path, root: &Path) -> VersionFile {
        if path.file_name().is_some_and(|n| n == "Cargo.toml") {
            let lock = path
                .ancestors()
                .skip(1)
                .take_while(|dir| dir.starts_with(root))
                .map(|dir| dir.join("Cargo.lock"))
                .find(|lock| lock.is_file());
            VersionFile::Cargo {
                manifest: path.to_owned(),
                lock,
            }
        } else {
            VersionFile::Plain {
                path: path.to_owned(),
            }
        }
    }

    /// The Cargo.toml of `package` below `root` (at most three directories down, not
    /// in `target/` or hidden directories).
    pub fn find_package(package: &str, root: &Path) -> Result<VersionFile, VersionFileError> {
        let mut dirs = vec![(root.to_owned(), 0)];
        while let Some((dir, depth)) = dirs.pop() {
            let manifest = dir.join("Cargo.toml");
            if package_name(&manifest).as_deref() == Some(package) {
                return Ok(VersionFile::at(&manifest, root));
            }
            if depth == 3 {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut children: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.') && n != "target")
                })
                .collect();
            children.sort();
            dirs.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
        }
        Err(VersionFileError::PackageNotFound {
            package: package.to_owned(),
            root: root.to_owned(),
        })
    }

    /// Every file a release writes, to commit with it.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            VersionFile::Cargo { manifest, lock } => std::iter::once(manifest.as_path())
                .chain(lock.as_deref())
                .collect(),
            VersionFile::Plain { path } => vec![path],
        }
    }

    /// The file the version is read from.
    pub fn path(&self) -> &Path {
        match self {
            VersionFile::Cargo { manifest, .. } => manifest,
            VersionFile::Plain { path } => path,
        }
    }

    /// The version the file says now.
    pub fn read(&self) -> Result<Version, VersionFileError> {
        let path = self.path();
        let found = match self {
            VersionFile::Cargo { manifest, .. } => {
                let doc = read_toml(manifest)?;
                doc.get("package")
                    .and_then(|p| p.get("version"))
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| VersionFileError::NoPackageVersion {
                        path: manifest.clone(),
                    })?
                    .to_owned()
            }
            VersionFile::Plain { path } => read(path)?.trim().to_owned(),
        };
        found.parse().map_err(|_| VersionFileError::NotAVersion {
            path: path.to_owned(),
            found: found.chars().take(40).collect(),
        })
    }

    /// Writes `version`, or leaves the files alone when they already say it.
    pub fn write(&self, version: &Version) -> Result<Outcome, VersionFileError> {
        let mut outcome = Outcome::AlreadyThere;
        for path in self.paths() {
            let old = read(path)?;
            let new = self.bumped(path, &old, version)?;
            if new != old {
                write(path, new.as_bytes())?;
                outcome = Outcome::Done;
            }
        }
        Ok(outcome)
    }

    /// `text`, the content of one of [`VersionFile::paths`], with `version` set in it and
    /// nothing else changed: what [`VersionFile::write`] writes, and what a clean-tree
    /// check compares the working copy with.
    pub fn bumped(
        &self,
        path: &Path,
        text: &str,
        version: &Version,
    ) -> Result<String, VersionFileError> {
        let version = version.to_string();
        match self {
            // Exactly the version and "\n": a "\r" would end up in the app descriptor,
            // and a fleet that compares versions would loop.
            VersionFile::Plain { .. } => Ok(format!("{version}\n")),
            VersionFile::Cargo { manifest, .. } if path == manifest => {
                let mut doc = parse_toml(path, text)?;
                let missing = || VersionFileError::NoPackageVersion {
                    path: path.to_owned(),
                };
                let current = doc
                    .get_mut("package")
                    .and_then(|p| p.as_table_like_mut())
                    .and_then(|p| p.get_mut("version"))
                    .filter(|v| v.is_str())
                    .ok_or_else(missing)?;
                if current.as_str() != Some(version.as_str()) {
                    set_keeping_decor(current, &version);
                }
                Ok(doc.to_string())
            }
            VersionFile::Cargo { manifest, .. } => {
                let package = parse_toml(manifest, &read(manifest)?)?
                    .get("package")
                    .and_then(|p| p.get("name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or_default()
                    .to_owned();
                let mut doc = parse_toml(path, text)?;
                if let Some(packages) = doc
                    .get_mut("package")
                    .and_then(|p| p.as_array_of_tables_mut())
                {
                    // A lock entry without a source is a workspace member: that one is ours.
                    for entry in packages.iter_mut().filter(|t| {
                        t.get("name").and_then(|n| n.as_str()) == Some(package.as_str())
                            && t.get("source").is_none()
                    }) {
                        if let Some(current) = entry.get_mut("version")
                            && current.as_str() != Some(version.as_str())
                        {
                            set_keeping_decor(current, &version);
                        }
                    }
                }
                Ok(doc.to_string())
            }
        }
    }
}

/// Replaces a string value, keeping the spaces and comment around it.
fn set_keeping_decor(item: &mut toml_edit::Item, text: &str) {
    let decor = item.as_value().map(|v| v.decor().clone());
    *item = toml_edit::value(text);
    if let (Some(decor), Some(value)) = (decor, item.as_value_mut()) {
        *value.decor_mut() = decor;
    }
}

fn package_name(manifest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let doc: toml_edit::DocumentMut = text.parse().ok()?;
    Some(doc.get("package")?.get("name")?.as_str()?.to_owned())
}

fn read(path: &Path) -> Result<String, VersionFileError> {
    std::fs::read_to_string(path).map_err(|source| VersionFileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_toml(path: &Path) -> Result<toml_edit::DocumentMut, VersionFileError> {
    parse_toml(path, &read(path)?)
}

fn parse_toml(path: &Path, text: &str) -> Result<toml_edit::DocumentMut, VersionFileError> {
    text.parse()
        .map_err(|e: toml_edit::TomlError| VersionFileError::Toml {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
}

/// Writes through a temporary file and a rename, so an interrupted write loses nothing.
fn write(path: &Path, bytes: &[u8]) -> Result<(), VersionFileError> {
    let failed = |source| VersionFileError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    std::io::Write::write_all(&mut file, bytes).map_err(failed)?;
    file.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"[package]
name = "wordclock"   # the clock
version = "2.8.0" # bumped by clockrel release
edition = "2024"

[dependencies]
ota-core = { version = "0.1", path = "ota" }
"#;

    const LOCK: &str = r#"# This file is automatically @generated by Cargo.
version = 4

[[package]]
name = "serde"
version = "2.8.0"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "wordclock"
version = "2.8.0"
dependencies = [
 "ota-core",
]
"#;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    #[test]
    fn a_cargo_version_is_bumped_keeping_comments_and_the_lock_follows() {
        let dir = tempfile::tempdir().unwrap();
        let fw = dir.path().join("firmware");
        std::fs::create_dir(&fw).unwrap();
        std::fs::write(fw.join("Cargo.toml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join("Cargo.lock"), LOCK).unwrap();
        let file = VersionFile::find_package("wordclock", dir.path()).unwrap();
        assert_eq!(file.paths().len(), 2, "{file:?}");
        assert_eq!(file.read().unwrap(), v("2.8.0"));

        assert_eq!(file.write(&v("2.9.0")).unwrap(), Outcome::Done);
        let manifest = std::fs::read_to_string(fw.join("Cargo.toml")).unwrap();
        assert_eq!(manifest, MANIFEST.replace("\"2.8.0\"", "\"2.9.0\""));
        let lock = std::fs::read_to_string(dir.path().join("Cargo.lock")).unwrap();
        assert!(
            lock.contains("name = \"wordclock\"\nversion = \"2.9.0\""),
            "{lock}"
        );
        assert!(
            lock.contains("name = \"serde\"\nversion = \"2.8.0\""),
            "a registry package of the same version is not ours: {lock}"
        );
        assert_eq!(file.read().unwrap(), v("2.9.0"));
        assert_eq!(file.write(&v("2.9.0")).unwrap(), Outcome::AlreadyThere);
    }

    #[test]
    fn a_plain_version_file_gets_the_version_and_a_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("version.txt");
        std::fs::write(&path, "2.11.3\r\n").unwrap();
        let file = VersionFile::at(&path, dir.path());
        assert_eq!(file.read().unwrap(), v("2.11.3"));
        assert_eq!(
            file.write(&v("2.11.3")).unwrap(),
            Outcome::Done,
            "a CR is rewritten away"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"2.11.3\n");
        assert_eq!(file.write(&v("2.11.3")).unwrap(), Outcome::AlreadyThere);
    }

    #[test]
    fn an_inherited_or_missing_version_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Cargo.toml");
        std::fs::write(&path, "[package]\nname = \"x\"\nversion.workspace = true\n").unwrap();
        let file = VersionFile::at(&path, dir.path());
        assert!(matches!(
            file.write(&v("1.0.0")),
            Err(VersionFileError::NoPackageVersion { .. })
        ));
        assert!(matches!(
            VersionFile::find_package("nope", dir.path()),
            Err(VersionFileError::PackageNotFound { .. })
        ));
    }
}
