//! A manifest a trusted key signed: the only form anything acts on, with the fields
//! format 1 requires present by type rather than by a check each caller must repeat.

use alloc::string::String;
use core::ops::Deref;

use super::{Manifest, ManifestError, Patch, PublicKey, SignatureError};
use crate::{Chip, Sha256};

/// A verified [`Manifest`]: signed by a trusted key, format 1, its image file name a
/// plain name. Read the other fields through `Deref`; nothing can change them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    manifest: Manifest,
    file: String,
    chip: Chip,
    secure_version: u32,
    key: PublicKey,
}

impl Manifest {
    /// Checks the signature against `trusted` ([`Manifest::verify`]) and keeps the
    /// manifest only as [`Trusted`].
    pub fn trust(self, trusted: &[PublicKey]) -> Result<Trusted, SignatureError> {
        let key = self.verify(trusted)?.clone();
        // `verify` validated format 1, which requires these: kept typed, not re-checked.
        let missing = |field| SignatureError::Malformed(ManifestError::MissingField(field));
        let file = self.file.clone().ok_or(missing("file"))?;
        let chip = self.chip.ok_or(missing("chip"))?;
        let secure_version = self.secure_version.ok_or(missing("secure_version"))?;
        Ok(Trusted {
            manifest: self,
            file,
            chip,
            secure_version,
            key,
        })
    }
}

impl Trusted {
    /// The immutable, versioned image file name, e.g. `wordclock-v2.9.0.bin`.
    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn chip(&self) -> Chip {
        self.chip
    }

    pub fn secure_version(&self) -> u32 {
        self.secure_version
    }

    /// The patch this release lists from the image whose appended digest is `base`.
    pub fn patch_from(&self, base: &Sha256) -> Option<&Patch> {
        self.manifest
            .patches
            .iter()
            .find(|p| p.base_digest == *base)
    }

    /// The trusted key that made the signature.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn into_manifest(self) -> Manifest {
        self.manifest
    }
}

impl Deref for Trusted {
    type Target = Manifest;

    fn deref(&self) -> &Manifest {
        &self.manifest
    }
}
