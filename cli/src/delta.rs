//! Delta patches: from an earlier release's image to the new one, in the format ESP-IDF's
//! `esp_delta_ota` applies, so a device running that release downloads what changed.
//! The `bsdiff` crate finds the changes (a suffix-sorting diff we need not write
//! ourselves); `ota_core::delta` writes them as detools does, and reads them back.

use ota_core::delta::encode::{Record, sequential_patch};
use ota_core::delta::{Base, DeltaPatch, Header};
use ota_core::image::{self, ImageError};

/// Why no patch could be made from a base image.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("the base image is not a valid app image: {0}")]
    Base(ImageError),
    #[error("the base image has no appended SHA-256, which names it in a patch")]
    NoDigest,
    #[error("the diff of the two images failed: {0}")]
    Diff(std::io::Error),
}

/// The `esp_delta_ota` patch from the app image `old` to `new`: its header names `old`
/// by the SHA-256 it appends (what the running slot reports on the device).
pub fn patch(old: &[u8], new: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut patch = Header {
        base: base_digest(old)?,
    }
    .to_bytes()
    .to_vec();
    patch.extend(sequential_patch(new.len() as u64, &records(old, new)?));
    Ok(patch)
}

/// What names the app image `old` as a patch's base: the SHA-256 it appends.
pub fn base_digest(old: &[u8]) -> Result<ota_core::Sha256, DeltaError> {
    let base = image::parse(old, None).map_err(DeltaError::Base)?;
    base.appended_sha256.ok_or(DeltaError::NoDigest)
}

/// What the device makes of `patch` on the running image `old`: ota-core's own applier,
/// the one the firmware runs, fed the whole patch at once.
pub fn apply(old: &[u8], patch: &[u8]) -> Result<Vec<u8>, ota_core::delta::DeltaError> {
    let base = base_digest(old).unwrap_or(ota_core::Sha256([0; 32]));
    let mut applier = DeltaPatch::new(base);
    let mut new = Vec::new();
    let mut out = |bytes: &[u8]| {
        new.extend_from_slice(bytes);
        Ok(())
    };
    let mut old = Slice(old);
    applier.feed(patch, &mut old, &mut out)?;
    applier.finish(&mut old, &mut out)?;
    Ok(new)
}

/// An image in memory as a patch's base.
struct Slice<'a>(&'a [u8]);

impl Base for Slice<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|at| self.0.get(at..at.checked_add(buf.len())?))
            .ok_or_else(|| format!("{} bytes at {offset} are outside the base", buf.len()))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// bsdiff's control records: each a diff length, an extra length and a seek (signed,
/// 8 bytes little-endian with the sign in the top bit), then that many diff bytes (new
/// minus old) and extra bytes.
fn records(old: &[u8], new: &[u8]) -> Result<Vec<Record>, DeltaError> {
    let mut raw = Vec::new();
    bsdiff::diff(old, new, &mut raw).map_err(DeltaError::Diff)?;
    let mut records = Vec::new();
    let mut rest = raw.as_slice();
    let broken = || DeltaError::Diff(std::io::Error::other("bsdiff's output ends mid-record"));
    while !rest.is_empty() {
        let (control, tail) = rest.split_at_checked(24).ok_or_else(broken)?;
        let field = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&control[at..at + 8]);
            let raw = u64::from_le_bytes(bytes);
            let magnitude = (raw & !(1 << 63)) as i64;
            if raw >> 63 == 1 {
                -magnitude
            } else {
                magnitude
            }
        };
        let (diff_len, extra_len) = (field(0) as usize, field(8) as usize);
        let (diff, tail) = tail.split_at_checked(diff_len).ok_or_else(broken)?;
        let (extra, tail) = tail.split_at_checked(extra_len).ok_or_else(broken)?;
        records.push(Record {
            diff: diff.to_vec(),
            extra: extra.to_vec(),
            step: field(16),
        });
        rest = tail;
    }
    Ok(records)
}
