//! Delta updates: a patch from the running image to the new one, in the format ESP-IDF's
//! `esp_delta_ota` applies ([`header`], then a detools sequential patch with heatshrink
//! 8/7), so that a patch release costs a device a few kilobytes instead of the whole image.

pub mod encode;
pub mod header;
pub mod heatshrink;
pub mod sequential;

pub use header::{Header, HeaderError};
pub use sequential::{Applier, Base, PatchError};

use crate::Sha256;

/// Why an `esp_delta_ota` patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("the patch header: {0}")]
    Header(#[from] HeaderError),
    #[error("the patch is for the image {patch}, and the running one is {running}")]
    OtherBase { patch: Sha256, running: Sha256 },
    #[error("the patch, after its 64-byte header: {0}")]
    Patch(#[from] PatchError),
}

/// An `esp_delta_ota` patch being applied to the running image, whose appended digest
/// is `running`: the header is checked before the old image is read at all.
#[derive(Debug, Clone)]
pub struct DeltaPatch {
    running: Sha256,
    header: [u8; header::LEN],
    got: usize,
    applier: Applier,
    /// Sticky: a refused header refuses the rest.
    refused: Option<DeltaError>,
}

impl DeltaPatch {
    pub fn new(running: Sha256) -> DeltaPatch {
        DeltaPatch {
            running,
            header: [0; header::LEN],
            got: 0,
            applier: Applier::new(),
            refused: None,
        }
    }

    /// Feeds the next patch bytes; see [`Applier::feed`].
    pub fn feed(
        &mut self,
        chunk: &[u8],
        base: &mut dyn Base,
        out: &mut dyn FnMut(&[u8]) -> Result<(), alloc::string::String>,
    ) -> Result<(), DeltaError> {
        if let Some(refused) = &self.refused {
            return Err(refused.clone());
        }
        let mut rest = chunk;
        if self.got < header::LEN {
            let n = (header::LEN - self.got).min(rest.len());
            self.header[self.got..self.got + n].copy_from_slice(&rest[..n]);
            self.got += n;
            rest = &rest[n..];
            if self.got < header::LEN {
                return Ok(());
            }
            let checked = Header::parse(&self.header)
                .map_err(DeltaError::from)
                .and_then(|parsed| match parsed.base == self.running {
                    true => Ok(()),
                    false => Err(DeltaError::OtherBase {
                        patch: parsed.base,
                        running: self.running,
                    }),
                });
            if let Err(refused) = checked {
                self.refused = Some(refused.clone());
                return Err(refused);
            }
        }
        Ok(self.applier.feed(rest, base, out)?)
    }

    /// The patch has ended; see [`Applier::finish`].
    pub fn finish(
        self,
        base: &mut dyn Base,
        out: &mut dyn FnMut(&[u8]) -> Result<(), alloc::string::String>,
    ) -> Result<u64, DeltaError> {
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        if self.got < header::LEN {
            return Err(PatchError::Truncated {
                at: 0,
                missing: self.applier.new_size().unwrap_or(0),
            }
            .into());
        }
        Ok(self.applier.finish(base, out)?)
    }
}
