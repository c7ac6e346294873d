//! The rules ESP-IDF's image loader (`esp_image_format.c`) applies to a well-formed
//! image beyond its format: an image that breaks one is refused by `esp_ota_end` and
//! skipped by the bootloader, however good its checksum. esptool's `image-info` checks
//! none of them.

use alloc::vec::Vec;

use super::descriptor::{AppDescriptor, DESCRIPTOR_OFFSET};
use super::error::{ImageError, ImageErrorKind};
use super::header::{ChipRevision, ImageHeader};
use super::memory::{MMU_PAGE, MemoryMap, Placement};
use super::{ImageInfo, Segment};
use crate::Chip;

/// The chip and the partition an image is judged for. What is not known is not judged:
/// the CLI knows no chip revision, a slot knows its size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Target {
    /// The revision of the chip that is to boot the image.
    pub chip_revision: Option<ChipRevision>,
    /// The revision of that chip's eFuse block.
    pub efuse_block_revision: Option<ChipRevision>,
    /// The size of the partition the image is written to.
    pub partition_size: Option<u64>,
}

/// `bootloader_common_check_chip_validity`, on the header: the image must run on some
/// chip revision, and on the target's when it is known. The fault sits at byte 15.
pub(crate) fn revision_fault(header: &ImageHeader, target: &Target) -> Option<ImageErrorKind> {
    let runs_on = header.chip_revisions();
    if runs_on.is_empty() {
        return Some(ImageErrorKind::EmptyChipRevisionRange { runs_on });
    }
    let chip = target.chip_revision?;
    (!runs_on.contains(chip)).then_some(ImageErrorKind::ChipRevision { chip, runs_on })
}

/// Where the descriptor's eFuse block revisions sit in the file.
pub(crate) const EFUSE_BLOCK_REVISIONS_OFFSET: u64 = DESCRIPTOR_OFFSET + 176;

/// `bootloader_common_check_efuse_blk_validity`, on the app descriptor: the range must
/// hold some revision, and the target's. The ESP32 has no eFuse block revision, and its
/// loader does not check one.
pub(crate) fn efuse_block_fault(
    chip: Chip,
    descriptor: &AppDescriptor,
    target: &Target,
) -> Option<ImageErrorKind> {
    if chip == Chip::Esp32 {
        return None;
    }
    let runs_on = descriptor.efuse_block_revisions();
    if runs_on.is_empty() {
        return Some(ImageErrorKind::EmptyEfuseBlockRange { runs_on });
    }
    let chip = target.efuse_block_revision?;
    (!runs_on.contains(chip)).then_some(ImageErrorKind::EfuseBlockRevision { chip, runs_on })
}

/// `verify_segment_header` and `verify_load_addresses`, on one segment: a mapped segment
/// sits at a file offset congruent to its address modulo the MMU page, and a loaded one
/// lies wholly inside one RAM region and clear of the bootloader's own RAM. The fault
/// sits at the segment's header.
pub(crate) fn segment_fault(map: &MemoryMap, segment: &Segment) -> Option<ImageErrorKind> {
    let Segment {
        index,
        load_addr,
        data_offset,
        len,
    } = *segment;
    match map.placement(load_addr) {
        Placement::Mapped => (data_offset % u64::from(MMU_PAGE) != u64::from(load_addr % MMU_PAGE))
            .then_some(ImageErrorKind::MappingMisaligned {
                index,
                load_addr,
                data_offset,
            }),
        Placement::Loaded if len == 0 => None,
        Placement::Loaded => {
            if map.ram_holding(load_addr, len).is_none() {
                return Some(ImageErrorKind::BadLoadAddress {
                    index,
                    load_addr,
                    len,
                });
            }
            map.bootloader_overlap(load_addr, len).map(|region| {
                ImageErrorKind::OverlapsBootloader {
                    index,
                    load_addr,
                    len,
                    region: region.name,
                }
            })
        }
        Placement::Skipped => None,
    }
}

/// `process_appended_hash_and_sig`: the whole image, hash included, fits its partition.
pub(crate) fn partition_fault(len: u64, target: &Target) -> Option<ImageErrorKind> {
    let partition = target.partition_size?;
    (len > partition).then_some(ImageErrorKind::TooLargeForPartition { partition })
}

/// The file offset of a segment's header, where its faults are reported.
pub(crate) fn segment_header_offset(segment: &Segment) -> u64 {
    segment.data_offset - 8
}

impl ImageInfo {
    /// Every loader rule the image breaks for `target`, in file order: what a reader made
    /// with [`super::ImageReader::defer_loader_rules`] let pass, for a report that lists
    /// them all.
    pub fn loader_faults(&self, target: &Target) -> Vec<ImageError> {
        let mut faults = Vec::new();
        if let Some(kind) = revision_fault(&self.header, target) {
            faults.push(ImageError { offset: 15, kind });
        }
        if let Some(kind) = efuse_block_fault(self.header.chip, &self.descriptor, target) {
            faults.push(ImageError {
                offset: EFUSE_BLOCK_REVISIONS_OFFSET,
                kind,
            });
        }
        if let Some(map) = MemoryMap::of(self.header.chip) {
            faults.extend(self.segments.as_slice().iter().filter_map(|segment| {
                segment_fault(map, segment).map(|kind| ImageError {
                    offset: segment_header_offset(segment),
                    kind,
                })
            }));
        }
        if let Some(kind) = partition_fault(self.len, target) {
            faults.push(ImageError {
                offset: target.partition_size.unwrap_or(0),
                kind,
            });
        }
        faults
    }
}
