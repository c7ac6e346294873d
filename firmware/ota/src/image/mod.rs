//! The ESP app image: what goes into an OTA slot, and what both sides must check.
//!
//! Layout: a 24-byte [`ImageHeader`], `segment_count` segments of `addr u32, len u32,
//! data`, zero padding so that a checksum byte (0xEF XOR every segment data byte) ends a
//! 16-byte block, then, if `hash_appended`, the SHA-256 of everything before it. The
//! [`AppDescriptor`] opens the first segment's data, at file offset 0x20.
//!
//! The appended SHA-256 is not the SHA-256 of the file; [`ImageInfo::sha256`] is, and
//! that is the one a manifest pins.

mod descriptor;
mod error;
mod header;
pub mod loader;
pub mod memory;
mod reader;

pub use descriptor::{
    AppDescriptor, DESCRIPTOR_LEN, DESCRIPTOR_MAGIC, DESCRIPTOR_OFFSET, FixedStr,
};
pub use error::{ImageError, ImageErrorKind, Part};
pub use header::{
    ChipRevision, ChipRevisions, FlashFreqCode, FlashMode, FlashSizeCode, HEADER_LEN, IMAGE_MAGIC,
    ImageHeader, MAX_SEGMENTS,
};
pub use loader::Target;
pub use reader::ImageReader;

use crate::{Chip, Sha256};

/// One segment: where it loads and where its data sits in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    /// Position in the image, from 0.
    pub index: u8,
    /// The address the bootloader loads or maps the data to.
    pub load_addr: u32,
    /// File offset of the first data byte (after the 8-byte segment header).
    pub data_offset: u64,
    /// Data length in bytes.
    pub len: u32,
}

/// The segments of an image, in a fixed array: an image has at most [`MAX_SEGMENTS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentTable {
    entries: [Segment; MAX_SEGMENTS],
    len: u8,
}

impl SegmentTable {
    fn push(&mut self, segment: Segment) {
        if let Some(slot) = self.entries.get_mut(usize::from(self.len)) {
            *slot = segment;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[Segment] {
        &self.entries[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Everything learnt from a complete, well-formed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub header: ImageHeader,
    pub segments: SegmentTable,
    pub descriptor: AppDescriptor,
    /// The checksum byte, which matched the segments.
    pub checksum: u8,
    /// The appended SHA-256, which matched, when the header says one is appended.
    pub appended_sha256: Option<Sha256>,
    /// SHA-256 of the whole file: what a manifest pins.
    pub sha256: Sha256,
    /// Length of the whole file in bytes.
    pub len: u64,
}

/// Checks a whole image held in memory. `expected_chip` refuses images for other chips.
pub fn parse(bytes: &[u8], expected_chip: Option<Chip>) -> Result<ImageInfo, ImageError> {
    let mut reader = ImageReader::new().expect_len(bytes.len() as u64);
    if let Some(chip) = expected_chip {
        reader = reader.expect_chip(chip);
    }
    reader.feed(bytes)?;
    reader.finish()
}
