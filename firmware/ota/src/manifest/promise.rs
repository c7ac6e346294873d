//! Whether an image is the one a manifest promises: the single check a device makes
//! before its boot slot changes, and the CLI before a release leaves the machine and
//! when it reads back what a source serves.

use crate::image::{AppDescriptor, FixedStr, ImageInfo};
use crate::{Chip, Manifest, Sha256, Version};

/// How an image differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageMismatch {
    #[error("{image} bytes, the manifest says {manifest}")]
    Size { image: u64, manifest: u64 },
    #[error("SHA-256 {image}, the manifest says {manifest}")]
    Sha256 { image: Sha256, manifest: Sha256 },
    #[error("built for {image}, the manifest says {manifest:?}")]
    Chip { image: Chip, manifest: Option<Chip> },
    /// The app descriptor's version is not the manifest's: devices would see an update
    /// forever.
    #[error("the image says it is {image}, the manifest says {manifest}")]
    Version {
        image: FixedStr<32>,
        manifest: Version,
    },
    #[error("the image's secure_version is {image}, the manifest says {manifest:?}")]
    SecureVersion { image: u32, manifest: Option<u32> },
}

impl Manifest {
    /// What the app descriptor must say: the manifest's version (by SemVer precedence
    /// and build metadata alike) and secure_version. A device checks this as soon as
    /// the descriptor arrives, long before the download ends.
    pub fn check_descriptor(&self, descriptor: &AppDescriptor) -> Result<(), ImageMismatch> {
        let embedded = descriptor
            .version
            .as_str()
            .and_then(|v| v.parse::<Version>().ok());
        if embedded.as_ref() != Some(&self.version) {
            return Err(ImageMismatch::Version {
                image: descriptor.version,
                manifest: self.version.clone(),
            });
        }
        if Some(descriptor.secure_version) != self.secure_version {
            return Err(ImageMismatch::SecureVersion {
                image: descriptor.secure_version,
                manifest: self.secure_version,
            });
        }
        Ok(())
    }

    /// Everything a well-formed image must match: its size, the SHA-256 of the file,
    /// its chip and its app descriptor ([`Manifest::check_descriptor`]).
    pub fn check_image(&self, image: &ImageInfo) -> Result<(), ImageMismatch> {
        if image.len != self.firmware_size {
            return Err(ImageMismatch::Size {
                image: image.len,
                manifest: self.firmware_size,
            });
        }
        if image.sha256 != self.sha256 {
            return Err(ImageMismatch::Sha256 {
                image: image.sha256,
                manifest: self.sha256,
            });
        }
        if Some(image.header.chip) != self.chip {
            return Err(ImageMismatch::Chip {
                image: image.header.chip,
                manifest: self.chip,
            });
        }
        self.check_descriptor(&image.descriptor)
    }
}
