//! Why an app image was refused, and where in the file.

use core::fmt;

use super::header::{ChipRevision, ChipRevisions};
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
    #[error("the image runs on chip revisions {runs_on}: no chip is both")]
    EmptyChipRevisionRange { runs_on: ChipRevisions },
    #[error("this chip is revision {chip}, the image runs on {runs_on}")]
    ChipRevision {
        chip: ChipRevision,
        runs_on: ChipRevisions,
    },
    #[error("the app descriptor runs on eFuse block revisions {runs_on}: no chip is both")]
    EmptyEfuseBlockRange { runs_on: ChipRevisions },
    #[error("this chip's eFuse block is revision {chip}, the app runs on {runs_on}")]
    EfuseBlockRevision {
        chip: ChipRevision,
        runs_on: ChipRevisions,
    },
    #[error("segment {index} length {len} is not a multiple of 4")]
    UnalignedSegment { index: u8, len: u32 },
    #[error("segment {index} claims {len} bytes but only {available} follow")]
    SegmentPastEnd { index: u8, len: u32, available: u64 },
    #[error("segment {index} claims {len} bytes: ESP-IDF takes segments under 16 MiB")]
    SegmentTooLarge { index: u8, len: u32 },
    #[error(
        "segment {index} is mapped at {load_addr:#010x} from file offset {data_offset:#x}: the MMU maps 64 KiB pages, so both must be equal modulo 0x10000 ({:#06x} and {:#06x} are not)",
        load_addr % super::memory::MMU_PAGE, data_offset % u64::from(super::memory::MMU_PAGE)
    )]
    MappingMisaligned {
        index: u8,
        load_addr: u32,
        data_offset: u64,
    },
    #[error(
        "segment {index} loads {len} bytes at {load_addr:#010x}, which is not wholly inside one RAM region of the chip (DRAM, IRAM, RTC memory)"
    )]
    BadLoadAddress { index: u8, load_addr: u32, len: u32 },
    #[error(
        "segment {index} loads {len} bytes at {load_addr:#010x}, over {region}: the bootloader would overwrite itself while loading it"
    )]
    OverlapsBootloader {
        index: u8,
        load_addr: u32,
        len: u32,
        region: &'static str,
    },
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
    #[error("the image is longer than its {partition}-byte partition")]
    TooLargeForPartition { partition: u64 },
}

impl ImageErrorKind {
    /// The rule broken, named as `clockrel check` names its rules.
    pub fn rule(&self) -> &'static str {
        match self {
            ImageErrorKind::BadMagic { .. } | ImageErrorKind::BadHashAppendedFlag { .. } => {
                "image-header"
            }
            ImageErrorKind::BadSegmentCount { .. } => "segment-count",
            ImageErrorKind::WrongChip { .. } => "chip",
            ImageErrorKind::EmptyChipRevisionRange { .. } | ImageErrorKind::ChipRevision { .. } => {
                "chip-revision"
            }
            ImageErrorKind::EmptyEfuseBlockRange { .. }
            | ImageErrorKind::EfuseBlockRevision { .. } => "efuse-block-revision",
            ImageErrorKind::UnalignedSegment { .. }
            | ImageErrorKind::SegmentPastEnd { .. }
            | ImageErrorKind::SegmentTooLarge { .. } => "segment-header",
            ImageErrorKind::MappingMisaligned { .. } => "segment-mapping",
            ImageErrorKind::BadLoadAddress { .. } | ImageErrorKind::OverlapsBootloader { .. } => {
                "load-address"
            }
            ImageErrorKind::DescriptorMissing { .. }
            | ImageErrorKind::BadDescriptorMagic { .. } => "app-descriptor",
            ImageErrorKind::ChecksumMismatch { .. } => "checksum",
            ImageErrorKind::HashMismatch { .. } => "appended-hash",
            ImageErrorKind::Truncated { .. }
            | ImageErrorKind::TrailingData
            | ImageErrorKind::LengthMismatch { .. } => "image-length",
            ImageErrorKind::TooLargeForPartition { .. } => "fits-partition",
        }
    }

    /// Whether the image is well formed but a rule of ESP-IDF's loader refuses it (the
    /// ones [`super::ImageReader::defer_loader_rules`] leaves to the caller).
    pub fn is_loader_rule(&self) -> bool {
        matches!(
            self,
            ImageErrorKind::EmptyChipRevisionRange { .. }
                | ImageErrorKind::ChipRevision { .. }
                | ImageErrorKind::EmptyEfuseBlockRange { .. }
                | ImageErrorKind::EfuseBlockRevision { .. }
                | ImageErrorKind::MappingMisaligned { .. }
                | ImageErrorKind::BadLoadAddress { .. }
                | ImageErrorKind::OverlapsBootloader { .. }
                | ImageErrorKind::TooLargeForPartition { .. }
        )
    }
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
