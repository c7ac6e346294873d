//! Why an app image was refused, and where in the file.

use core::fmt;

use crate::{Chip, Sha256};

/// An image was refused. `offset` is the file offset of the offending byte (or, when the
/// image ends early, of the first missing byte).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("app image, at byte {offset:#x}: {kind}")]
pub struct ImageError {
    pub offset: u64,
    pub kind: ImageErrorKind,
}

/// The ways an image can be malformed or unsuitable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageErrorKind {
    #[error("not an ESP image: first byte is {found:#04x}, expected 0xe9")]
    BadMagic { found: u8 },
    #[error("segment count is {count}, expected 1 to 16")]
    BadSegmentCount { count: u8 },
    #[error("hash_appended flag is {found:#04x}, expected 0 or 1")]
    BadHashAppendedFlag { found: u8 },
    #[error("image is built for {found}, expected {expected}")]
    WrongChip { expected: Chip, found: Chip },
    #[error("segment {index} length {len} is not a multiple of 4")]
    UnalignedSegment { index: u8, len: u32 },
    #[error("segment {index} claims {len} bytes but only {available} follow")]
    SegmentPastEnd { index: u8, len: u32, available: u64 },
    #[error("segment {index} claims {len} bytes, more than the 16 MiB an app partition holds")]
    SegmentTooLarge { index: u8, len: u32 },
    #[error(
        "first segment holds {len} bytes, too few for the 256-byte app descriptor (is this a bootloader or a non-IDF image?)"
    )]
    DescriptorMissing { len: u32 },
    #[error("app descriptor magic is {found:#010x}, expected 0xabcd5432")]
    BadDescriptorMagic { found: u32 },
    #[error("checksum byte is {stored:#04x} but the segments give {computed:#04x}")]
    ChecksumMismatch { stored: u8, computed: u8 },
    #[error("appended SHA-256 is {stored} but the image hashes to {computed}")]
    HashMismatch { stored: Sha256, computed: Sha256 },
    #[error("image ends early: {missing} missing")]
    Truncated { missing: Part },
    #[error("data continues after the end of the image")]
    TrailingData,
    #[error("the image was declared {declared} bytes long but is not")]
    LengthMismatch { declared: u64 },
}

/// A part of the image, to say which one is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Header,
    SegmentHeader { index: u8 },
    SegmentData { index: u8 },
    ChecksumPadding,
    Checksum,
    AppendedHash,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Header => f.write_str("the image header"),
            Part::SegmentHeader { index } => write!(f, "the header of segment {index}"),
            Part::SegmentData { index } => write!(f, "data of segment {index}"),
            Part::ChecksumPadding => f.write_str("the padding before the checksum"),
            Part::Checksum => f.write_str("the checksum byte"),
            Part::AppendedHash => f.write_str("the appended SHA-256"),
        }
    }
}
