//! A push parser that checks an app image as its bytes arrive, in fixed memory.
//!
//! The firmware feeds it download chunks of any size; the CLI feeds it a whole file.
//! Both get the same verdict, and nothing it holds grows with the image.

use sha2::Digest as _;

use super::descriptor::{AppDescriptor, DESCRIPTOR_LEN, DESCRIPTOR_OFFSET};
use super::error::{ImageError, ImageErrorKind, Part};
use super::header::{ChipRevision, HEADER_LEN, HeaderFault, ImageHeader, MAX_SEGMENTS};
use super::loader::{self, Target};
use super::memory::MemoryMap;
use super::{ImageInfo, Segment, SegmentTable};
use crate::{Chip, Sha256};

/// `esp_image_segment_header_t`: load address and length.
const SEGMENT_HEADER_LEN: usize = 8;
/// ESP-IDF refuses a segment of 16 MiB or more (`verify_segment_header`).
const MAX_SEGMENT_LEN: u32 = 16 << 20;
/// The XOR checksum starts from this value.
const CHECKSUM_SEED: u8 = 0xEF;

/// Where the reader is in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    SegmentHeader,
    SegmentData { remaining: u32 },
    ChecksumPadding { remaining: u8 },
    Checksum,
    AppendedHash { computed: Sha256 },
    End,
}

/// Checks an ESP app image fed to it in chunks of any size: its format, and the rules
/// ESP-IDF's loader adds ([`super::loader`]), so that what it accepts the chip boots.
///
/// ```
/// # use ota_core::image::ImageReader;
/// # fn run(chunks: &[&[u8]]) -> Result<(), ota_core::image::ImageError> {
/// let mut reader = ImageReader::new().expect_chip(ota_core::Chip::Esp32S3);
/// for chunk in chunks {
///     reader.feed(chunk)?;
/// }
/// let image = reader.finish()?;
/// println!("{} bytes, version {}", image.len, image.descriptor.version);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ImageReader {
    expected_chip: Option<Chip>,
    declared_len: Option<u64>,
    target: Target,
    /// Whether the loader's rules refuse the image here, or are left to the caller.
    loader_rules: bool,
    offset: u64,
    stage: Stage,
    /// Collects the fixed-size structures that may be split across chunks.
    staging: [u8; 32],
    staged: usize,
    header: Option<ImageHeader>,
    segments: SegmentTable,
    descriptor_raw: [u8; DESCRIPTOR_LEN],
    descriptor: Option<AppDescriptor>,
    checksum: u8,
    hasher: sha2::Sha256,
    /// The appended SHA-256, once it has been checked.
    appended_sha256: Option<Sha256>,
    failure: Option<ImageError>,
}

impl Default for ImageReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageReader {
    pub fn new() -> ImageReader {
        ImageReader {
            expected_chip: None,
            declared_len: None,
            target: Target::default(),
            loader_rules: true,
            offset: 0,
            stage: Stage::Header,
            staging: [0; 32],
            staged: 0,
            header: None,
            segments: SegmentTable::default(),
            descriptor_raw: [0; DESCRIPTOR_LEN],
            descriptor: None,
            checksum: CHECKSUM_SEED,
            hasher: sha2::Sha256::new(),
            appended_sha256: None,
            failure: None,
        }
    }

    /// Refuse an image built for another chip, as soon as its header arrives.
    pub fn expect_chip(mut self, chip: Chip) -> ImageReader {
        self.expected_chip = Some(chip);
        self
    }

    /// The image is exactly this long (a file's size, a manifest's `firmware_size`):
    /// a segment that claims more is refused when its header arrives, not at the end.
    pub fn expect_len(mut self, len: u64) -> ImageReader {
        self.declared_len = Some(len);
        self
    }

    /// Refuse an image that a chip of this revision would not boot.
    pub fn expect_chip_revision(mut self, revision: ChipRevision) -> ImageReader {
        self.target.chip_revision = Some(revision);
        self
    }

    /// Refuse an app that a chip with this eFuse block revision would not boot.
    pub fn expect_efuse_block_revision(mut self, revision: ChipRevision) -> ImageReader {
        self.target.efuse_block_revision = Some(revision);
        self
    }

    /// Refuse an image longer than the partition it is written to.
    pub fn expect_partition(mut self, size: u64) -> ImageReader {
        self.target.partition_size = Some(size);
        self
    }

    /// Check only the format, and leave ESP-IDF's loader rules to the caller, who lists
    /// every one the image breaks with [`ImageInfo::loader_faults`] (as `clockrel check`
    /// does, to report them all beside the rest of the image).
    pub fn defer_loader_rules(mut self) -> ImageReader {
        self.loader_rules = false;
        self
    }

    /// Bytes accepted so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The header, once its 24 bytes have arrived.
    pub fn header(&self) -> Option<&ImageHeader> {
        self.header.as_ref()
    }

    /// The app descriptor, once its 256 bytes have arrived: a caller can refuse a
    /// wrong version long before the download ends.
    pub fn descriptor(&self) -> Option<&AppDescriptor> {
        self.descriptor.as_ref()
    }

    /// Checks the next bytes of the image. After an error every later call returns it again.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ImageError> {
        let consumed = self.feed_partial(data)?;
        if consumed < data.len() {
            let failure = self.error(ImageErrorKind::TrailingData);
            self.failure = Some(failure.clone());
            return Err(failure);
        }
        Ok(())
    }

    /// Like [`ImageReader::feed`], but stops where the image ends and says how many bytes
    /// of `data` it took: for reading an image out of a slot, whose length nobody states.
    pub fn feed_partial(&mut self, data: &[u8]) -> Result<usize, ImageError> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let result = self.feed_chunk(data);
        if let Err(failure) = &result {
            self.failure = Some(failure.clone());
        }
        result
    }

    /// Whether every part of the image has arrived and checked out.
    pub fn is_complete(&self) -> bool {
        self.stage == Stage::End && self.failure.is_none()
    }

    /// Ends the image: succeeds only if every part arrived and checked out.
    pub fn finish(self) -> Result<ImageInfo, ImageError> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        let missing = match self.stage {
            Stage::End => None,
            Stage::Header => Some(Part::Header),
            Stage::SegmentHeader => Some(Part::SegmentHeader {
                index: self.segments.len,
            }),
            Stage::SegmentData { .. } => Some(Part::SegmentData {
                index: self.segments.len - 1,
            }),
            Stage::ChecksumPadding { .. } => Some(Part::ChecksumPadding),
            Stage::Checksum => Some(Part::Checksum),
            Stage::AppendedHash { .. } => Some(Part::AppendedHash),
        };
        if let Some(missing) = missing {
            return Err(self.error(ImageErrorKind::Truncated { missing }));
        }
        if let Some(declared) = self.declared_len
            && self.offset != declared
        {
            return Err(self.error(ImageErrorKind::LengthMismatch { declared }));
        }
        let (Some(header), Some(descriptor)) = (self.header, self.descriptor) else {
            unreachable!("the end stage is reached only after the header and descriptor parsed")
        };
        Ok(ImageInfo {
            header,
            segments: self.segments,
            descriptor,
            checksum: self.checksum,
            appended_sha256: self.appended_sha256,
            sha256: Sha256(self.hasher.finalize().into()),
            len: self.offset,
        })
    }

    /// Checks `data` up to the end of the image; returns how much of it was taken.
    fn feed_chunk(&mut self, mut data: &[u8]) -> Result<usize, ImageError> {
        let len = data.len();
        if let Some(declared) = self.declared_len
            && self.offset.saturating_add(data.len() as u64) > declared
        {
            let at = self.offset.max(declared);
            return Err(self.error_at(at, ImageErrorKind::LengthMismatch { declared }));
        }
        while !data.is_empty() {
            match self.stage {
                Stage::Header => {
                    if self.stage_bytes(&mut data, HEADER_LEN) {
                        self.accept_header()?;
                    }
                }
                Stage::SegmentHeader => {
                    if self.stage_bytes(&mut data, SEGMENT_HEADER_LEN) {
                        self.accept_segment_header()?;
                    }
                }
                Stage::SegmentData { remaining } => {
                    let start = self.offset;
                    let chunk = self.take(&mut data, remaining as usize);
                    self.checksum ^= chunk.iter().fold(0, |acc, b| acc ^ b);
                    self.copy_descriptor_bytes(start, chunk);
                    let remaining = remaining - chunk.len() as u32;
                    self.stage = Stage::SegmentData { remaining };
                    if self.descriptor.is_none()
                        && self.offset >= DESCRIPTOR_OFFSET + DESCRIPTOR_LEN as u64
                    {
                        self.accept_descriptor()?;
                    }
                    if remaining == 0 {
                        self.end_segment();
                    }
                }
                Stage::ChecksumPadding { remaining } => {
                    let taken = self.take(&mut data, usize::from(remaining)).len() as u8;
                    self.stage = match remaining - taken {
                        0 => Stage::Checksum,
                        remaining => Stage::ChecksumPadding { remaining },
                    };
                }
                Stage::Checksum => {
                    let stored = self.take(&mut data, 1)[0];
                    if stored != self.checksum {
                        return Err(self.error_at(
                            self.offset - 1,
                            ImageErrorKind::ChecksumMismatch {
                                stored,
                                computed: self.checksum,
                            },
                        ));
                    }
                    self.stage = if self.header.is_some_and(|h| h.hash_appended) {
                        let computed = Sha256(self.hasher.clone().finalize().into());
                        Stage::AppendedHash { computed }
                    } else {
                        Stage::End
                    };
                }
                Stage::AppendedHash { computed } => {
                    if self.stage_bytes(&mut data, 32) {
                        let stored = Sha256(self.staging);
                        if stored != computed {
                            return Err(self.error_at(
                                self.offset - 32,
                                ImageErrorKind::HashMismatch { stored, computed },
                            ));
                        }
                        self.appended_sha256 = Some(stored);
                        self.stage = Stage::End;
                    }
                }
                Stage::End => return Ok(len - data.len()),
            }
            if self.loader_rules
                && let Some(kind) = loader::partition_fault(self.offset, &self.target)
            {
                let at = self.target.partition_size.unwrap_or(self.offset);
                return Err(self.error_at(at, kind));
            }
        }
        Ok(len)
    }

    /// Consumes up to `max` bytes of `data`, hashing them and advancing the offset.
    fn take<'d>(&mut self, data: &mut &'d [u8], max: usize) -> &'d [u8] {
        let (taken, rest) = data.split_at(max.min(data.len()));
        *data = rest;
        self.hasher.update(taken);
        self.offset += taken.len() as u64;
        taken
    }

    /// Collects a fixed-size structure into `staging`; true once all `len` bytes are there.
    fn stage_bytes(&mut self, data: &mut &[u8], len: usize) -> bool {
        let taken = self.take(data, len - self.staged);
        self.staging[self.staged..self.staged + taken.len()].copy_from_slice(taken);
        self.staged += taken.len();
        if self.staged == len {
            self.staged = 0;
            true
        } else {
            false
        }
    }

    fn accept_header(&mut self) -> Result<(), ImageError> {
        let mut raw = [0u8; HEADER_LEN];
        raw.copy_from_slice(&self.staging[..HEADER_LEN]);
        let header = ImageHeader::parse(&raw).map_err(|(at, fault)| {
            let kind = match fault {
                HeaderFault::Magic(found) => ImageErrorKind::BadMagic { found },
                HeaderFault::SegmentCount(count) => ImageErrorKind::BadSegmentCount { count },
                HeaderFault::HashAppendedFlag(found) => {
                    ImageErrorKind::BadHashAppendedFlag { found }
                }
            };
            self.error_at(at as u64, kind)
        })?;
        if let Some(expected) = self.expected_chip
            && header.chip != expected
        {
            return Err(self.error_at(
                12,
                ImageErrorKind::WrongChip {
                    expected,
                    found: header.chip,
                },
            ));
        }
        if self.loader_rules
            && let Some(kind) = loader::revision_fault(&header, &self.target)
        {
            return Err(self.error_at(15, kind));
        }
        self.header = Some(header);
        self.stage = Stage::SegmentHeader;
        Ok(())
    }

    fn accept_segment_header(&mut self) -> Result<(), ImageError> {
        let word = |at: usize| {
            u32::from_le_bytes([
                self.staging[at],
                self.staging[at + 1],
                self.staging[at + 2],
                self.staging[at + 3],
            ])
        };
        let (load_addr, len) = (word(0), word(4));
        let index = self.segments.len;
        let len_offset = self.offset - 4;
        if len % 4 != 0 {
            return Err(self.error_at(len_offset, ImageErrorKind::UnalignedSegment { index, len }));
        }
        if let Some(declared) = self.declared_len {
            let available = declared.saturating_sub(self.offset);
            if u64::from(len) > available {
                return Err(self.error_at(
                    len_offset,
                    ImageErrorKind::SegmentPastEnd {
                        index,
                        len,
                        available,
                    },
                ));
            }
        }
        if len >= MAX_SEGMENT_LEN {
            return Err(self.error_at(len_offset, ImageErrorKind::SegmentTooLarge { index, len }));
        }
        if index == 0 && (len as usize) < DESCRIPTOR_LEN {
            return Err(self.error_at(len_offset, ImageErrorKind::DescriptorMissing { len }));
        }
        let segment = Segment {
            index,
            load_addr,
            data_offset: self.offset,
            len,
        };
        let map = self.header.and_then(|h| MemoryMap::of(h.chip));
        if self.loader_rules
            && let Some(kind) = map.and_then(|map| loader::segment_fault(map, &segment))
        {
            return Err(self.error_at(loader::segment_header_offset(&segment), kind));
        }
        self.segments.push(segment);
        self.stage = Stage::SegmentData { remaining: len };
        if len == 0 {
            self.end_segment();
        }
        Ok(())
    }

    fn copy_descriptor_bytes(&mut self, start: u64, chunk: &[u8]) {
        let window = DESCRIPTOR_OFFSET..DESCRIPTOR_OFFSET + DESCRIPTOR_LEN as u64;
        if self.segments.len != 1 || start >= window.end {
            return;
        }
        let skip = window.start.saturating_sub(start) as usize;
        let at = (start + skip as u64 - window.start) as usize;
        let wanted = &chunk[skip.min(chunk.len())..];
        let n = wanted.len().min(DESCRIPTOR_LEN - at);
        self.descriptor_raw[at..at + n].copy_from_slice(&wanted[..n]);
    }

    fn accept_descriptor(&mut self) -> Result<(), ImageError> {
        let descriptor = AppDescriptor::parse(&self.descriptor_raw).map_err(|found| {
            self.error_at(
                DESCRIPTOR_OFFSET,
                ImageErrorKind::BadDescriptorMagic { found },
            )
        })?;
        let chip = self.header.map_or(Chip::Unknown(0xFFFF), |h| h.chip);
        if self.loader_rules
            && let Some(kind) = loader::efuse_block_fault(chip, &descriptor, &self.target)
        {
            return Err(self.error_at(loader::EFUSE_BLOCK_REVISIONS_OFFSET, kind));
        }
        self.descriptor = Some(descriptor);
        Ok(())
    }

    fn end_segment(&mut self) {
        let declared = self.header.map_or(0, |h| h.segment_count);
        self.stage = if self.segments.len < declared {
            Stage::SegmentHeader
        } else {
            // Zero padding so that the checksum byte ends a 16-byte block.
            match 15 - (self.offset % 16) as u8 {
                0 => Stage::Checksum,
                remaining => Stage::ChecksumPadding { remaining },
            }
        };
    }

    fn error(&self, kind: ImageErrorKind) -> ImageError {
        self.error_at(self.offset, kind)
    }

    fn error_at(&self, offset: u64, kind: ImageErrorKind) -> ImageError {
        ImageError { offset, kind }
    }
}

const _: () = assert!(MAX_SEGMENTS <= u8::MAX as usize);
