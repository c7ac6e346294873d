//! The release signing key: made by `keygen`, read from a file or the environment, never
//! printed, and the public keys the firmware trusts.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ota_core::manifest::{KeyError, PublicKey, SecretKey};

/// Holds the secret key's text itself (for CI secrets).
pub const ENV_KEY: &str = "CLOCKREL_SIGNING_KEY";
/// Names a file holding the secret key.
pub const ENV_KEY_FILE: &str = "CLOCKREL_SIGNING_KEY_FILE";

/// Where the secret key was found; shown instead of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(path) => f.write_str(&shown_path(path)),
            KeySource::Env => write!(f, "${ENV_KEY}"),
        }
    }
}

/// Why the key could not be had. No variant carries the key's text.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error("no signing key: give --key FILE, or set {ENV_KEY} or {ENV_KEY_FILE}")]
    Missing,
    #[error("cannot read the signing key {}: {source}", shown_path(path))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no home directory to keep the key in; give --out FILE")]
    NoHome,
    #[error("{source} (in {origin})")]
    Malformed { origin: KeySource, source: KeyError },
    #[error("{path} already exists; clockrel never overwrites a key")]
    Exists { path: PathBuf },
    #[error("cannot write the key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the system's random source failed: {0}")]
    Random(String),
    #[error("trusted keys {path}, line {line}: {source}")]
    BadTrustedKey {
        path: PathBuf,
        line: usize,
        source: KeyError,
    },
}

/// A key path as errors may show it: a "path" that is really the key's text (pasted
/// into `--key` or `CLOCKREL_SIGNING_KEY_FILE` by mistake) is withheld.
fn shown_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let hex_run = text
        .split(|c: char| !c.is_ascii_hexdigit())
        .any(|run| run.len() >= 32);
    if text.contains("clockrel-secret") || hex_run {
        format!(
            "<withheld: this looks like the key itself, not a path; pass the text in ${ENV_KEY}>"
        )
    } else {
        text.into_owned()
    }
}

/// The secret key from `--key`, else `$CLOCKREL_SIGNING_KEY`, else
/// `$CLOCKREL_SIGNING_KEY_FILE`, else the file `keygen` and `init` make by default
/// ([`default_key_path`]) when it exists.
pub fn load_secret(flag: Option<&Path>) -> Result<(SecretKey, KeySource), KeyLoadError> {
    let from_file = |path: PathBuf| {
        let text = std::fs::read_to_string(&path).map_err(|source| KeyLoadError::Read {
            path: path.clone(),
            source,
        })?;
        let origin = KeySource::File(path);
        parse_secret(&text, origin)
    };
    if let Some(path) = flag {
        return from_file(path.to_owned());
    }
    if let Some(text) = std::env::var_os(ENV_KEY).filter(|v| !v.is_empty()) {
        return parse_secret(&text.to_string_lossy(), KeySource::Env);
    }
    if let Some(path) = std::env::var_os(ENV_KEY_FILE).filter(|v| !v.is_empty()) {
        return from_file(PathBuf::from(path));
    }
    match default_key_path() {
        Ok(path) if path.is_file() => from_file(path),
        _ => Err(KeyLoadError::Missing),
    }
}

fn parse_secret(text: &str, origin: KeySource) -> Result<(SecretKey, KeySource), KeyLoadError> {
    match text.parse() {
        Ok(key) => Ok((key, origin)),
        Err(source) => Err(KeyLoadError::Malformed { origin, source }),
    }
}

/// Makes a new key at `path`, readable only by its owner, and returns its public half.
/// Refuses to replace an existing file.
pub fn generate(path: &Path) -> Result<PublicKey, KeyLoadError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| KeyLoadError::Random(e.to_string()))?;
    let key = SecretKey::from_seed(*seed);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| KeyLoadError::Write {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let write_error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyLoadError::Exists {
                path: path.to_owned(),
            }
        } else {
            KeyLoadError::Write {
                path: path.to_owned(),
                source,
            }
        }
    };
    let mut file = options.open(path).map_err(write_error)?;
    let text = zeroize::Zeroizing::new(key.to_key_file());
    if let Err(e) = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
    {
        // A half-written key is no key; leave nothing that would block a retry.
        let _ = std::fs::remove_file(path);
        return Err(write_error(e));
    }
    Ok(key.public())
}

/// The public keys in a trusted-keys file.
pub fn load_trusted(path: &Path) -> Result<Vec<PublicKey>, KeyLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyLoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    PublicKey::parse_list(&text).map_err(|(line, source)| KeyLoadError::BadTrustedKey {
        path: path.to_owned(),
        line,
        source,
    })
}

/// Where `keygen` puts a key when not told: the user's config directory, outside any
/// repository, so that it cannot be committed by accident.
pub fn default_key_path() -> Result<PathBuf, KeyLoadError> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })
        .ok_or(KeyLoadError::NoHome)?;
    Ok(base.join("clockrel").join("signing.key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/release.key");
        let public = generate(&path).unwrap();
        let (secret, origin) = load_secret(Some(&path)).unwrap();
        assert_eq!(secret.public(), public);
        assert_eq!(origin, KeySource::File(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(generate(&path), Err(KeyLoadError::Exists { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_ne!(
            generate(&dir.path().join("other.key")).unwrap(),
            public,
            "keys are random"
        );
    }

    #[test]
    fn a_key_passed_as_a_path_is_not_echoed() {
        let key = SecretKey::from_seed([5; 32]).to_key_file();
        let message = load_secret(Some(Path::new(key.trim())))
            .unwrap_err()
            .to_string();
        assert!(message.contains("withheld"), "{message}");
        assert!(!message.contains(&key.trim()[24..]), "{message}");
        assert_eq!(
            shown_path(Path::new("/home/me/.config/clockrel/signing.key")),
            "/home/me/.config/clockrel/signing.key"
        );
    }

    #[test]
    fn a_malformed_key_file_is_named_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        let secretish = "clockrel-secret-ed25519:0123456789abcdef";
        std::fs::write(&path, secretish).unwrap();
        let message = load_secret(Some(&path)).unwrap_err().to_string();
        assert!(message.contains("bad.key"), "{message}");
        assert!(!message.contains("0123456789abcdef"), "{message}");
    }
}
