//! `version.json`: the signed contract between a release and every device in the field.
//!
//! It is a superset of the manifest the existing word-clock fleet reads, so old devices
//! keep updating from it, plus what safety needs: the chip, the image's
//! `secure_version`, the versioned file name and an Ed25519 signature. The signature
//! covers a deterministic encoding of the fields (see [`signing`]), not the JSON text,
//! which servers and editors may reformat.

mod patches;
mod promise;
pub mod signing;
mod trusted;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::{Chip, Sha256, Version};
pub use patches::{MAX_PATCHES, Patch};
pub use promise::ImageMismatch;
pub use signing::{DOMAIN, KeyError, KeyId, PublicKey, SecretKey, Signature, SignatureError};
pub use trusted::Trusted;

/// The manifest format this crate writes. Manifests without `format` are the legacy
/// fleet's: readable, never trusted.
pub const FORMAT: u32 = 1;
/// A manifest is a few hundred bytes; refuse anything larger than this before parsing,
/// so a hostile server cannot make a device allocate without bound.
pub const MAX_MANIFEST_LEN: usize = 16 * 1024;
/// The longest versioned file name a manifest may name.
const MAX_FILE_NAME: usize = 128;
/// The deepest nesting of arrays and objects a manifest may have. The format needs 3;
/// the bound keeps a hostile document from recursing through a device's small stack.
const MAX_DEPTH: usize = 8;
/// How much of the JSON parser's message an error repeats: it may quote hostile text.
const MAX_ERROR_TEXT: usize = 120;

/// A parsed `version.json`. Fields the format does not know are kept in `extra` and
/// written back unchanged, but are not signed: nothing may act on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`] for manifests clockrel writes; absent in the legacy fleet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<u32>,
    pub version: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_date: Option<String>,
    /// SHA-256 of the whole image file (not the hash appended inside it).
    pub sha256: Sha256,
    pub firmware_size: u64,
    /// Where the legacy fleet downloads the image. New devices use `file` on the source
    /// they fetched this manifest from. Not signed: each source's copy points at itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp_idf_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_restart: Option<bool>,
    /// The chip the image is built for. Required from format 1 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chip: Option<Chip>,
    /// The image's anti-rollback counter. Required from format 1 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_version: Option<u32>,
    /// The immutable, versioned image file name, e.g. `wordclock-v2.9.0.bin`.
    /// Required from format 1 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Delta patches to this image from earlier releases' images, by base. Signed when
    /// present; a manifest without any signs exactly as before patches existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Patch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Why a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {len} bytes, more than the {MAX_MANIFEST_LEN} allowed")]
    TooLarge { len: usize },
    #[error("manifest is not valid: {0}")]
    Json(String),
    #[error("manifest nests arrays or objects more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error("manifest format {0} is not known to this version (it reads format 1)")]
    UnsupportedFormat(u32),
    #[error("format {FORMAT} manifest lacks `{0}`")]
    MissingField(&'static str),
    #[error(
        "manifest names the file `{0}`: a file name is 1 to 128 letters, digits, `.`, `-` or `_`, not a path"
    )]
    BadFileName(String),
    #[error("manifest lists {0} patches, more than the {MAX_PATCHES} allowed")]
    TooManyPatches(usize),
    #[error("the legacy manifest format carries no patches")]
    LegacyPatches,
}

impl Manifest {
    /// Reads a manifest from untrusted bytes: bounded in size, checked for the fields its
    /// format requires. It is not yet trusted: see [`Manifest::verify`].
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge { len: bytes.len() });
        }
        if nesting_depth(bytes) > MAX_DEPTH {
            return Err(ManifestError::TooDeep);
        }
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            let text = alloc::string::ToString::to_string(&e);
            ManifestError::Json(
                text.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_ERROR_TEXT)
                    .collect(),
            )
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest as pretty-printed JSON with a final newline, in a stable field order.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// This manifest as served by a source whose copy of `file` is at `url`: only the
    /// unsigned `firmware_url` changes, so the signature still holds.
    pub fn served_at(&self, url: String) -> Manifest {
        Manifest {
            firmware_url: Some(url),
            ..self.clone()
        }
    }

    /// Checks what `from_json` checks, for a manifest built in code.
    pub fn validate(&self) -> Result<(), ManifestError> {
        match self.format {
            None => {}
            Some(FORMAT) => {
                self.chip.ok_or(ManifestError::MissingField("chip"))?;
                self.secure_version
                    .ok_or(ManifestError::MissingField("secure_version"))?;
                self.file
                    .as_ref()
                    .ok_or(ManifestError::MissingField("file"))?;
            }
            Some(other) => return Err(ManifestError::UnsupportedFormat(other)),
        }
        if self.format.is_none() && !self.patches.is_empty() {
            return Err(ManifestError::LegacyPatches);
        }
        if self.patches.len() > MAX_PATCHES {
            return Err(ManifestError::TooManyPatches(self.patches.len()));
        }
        let names = self.file.iter().chain(self.patches.iter().map(|p| &p.file));
        if let Some(bad) = names.into_iter().find(|name| !is_plain_file_name(name)) {
            return Err(ManifestError::BadFileName(
                bad.chars().take(MAX_FILE_NAME).collect(),
            ));
        }
        Ok(())
    }
}

/// The deepest nesting of `[` and `{` in JSON text, not counting those inside strings.
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A name a device may append to a source's base URL: no path, no traversal.
pub fn is_plain_file_name(name: &str) -> bool {
    (1..=MAX_FILE_NAME).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}
