//! The rules ESP-IDF's image loader adds to the format, each on an image that breaks only
//! that rule: rebuilt by the test kit with a correct checksum and appended SHA-256, so
//! that esptool's `image-info` would call it valid.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

use ota_core::Chip;
use ota_core::image::memory::{ESP32S3, MemoryMap, Placement};
use ota_core::image::{
    ChipRevision, ImageError, ImageErrorKind, ImageInfo, ImageReader, Target, parse,
};
use proptest::prelude::*;
use testkit::image::RawImage;

/// ESP32-S3 image of version 2.9.0: DROM, DRAM, IRAM, padding, IROM.
const IMAGE: &[u8] = include_bytes!("data/wordclock-2.9.0.bin");

const IROM: std::ops::Range<u32> = 0x4200_0000..0x4400_0000;
const IRAM: std::ops::Range<u32> = 0x4037_0000..0x403E_0000;
const DRAM: std::ops::Range<u32> = 0x3FC8_8000..0x3FD0_0000;
const PADDING: std::ops::Range<u32> = 0..1;

fn raw() -> RawImage {
    RawImage::parse(IMAGE)
}

fn refused(image: &RawImage) -> ImageError {
    parse(&image.build(), Some(Chip::Esp32S3)).expect_err("the loader's rules refuse it")
}

/// The same image read with the loader's rules left to the caller: well formed.
fn deferred(bytes: &[u8]) -> ImageInfo {
    let mut reader = ImageReader::new().defer_loader_rules();
    reader.feed(bytes).unwrap();
    reader.finish().unwrap()
}

#[test]
fn the_fixture_breaks_no_loader_rule() {
    let info = parse(IMAGE, Some(Chip::Esp32S3)).unwrap();
    assert_eq!(info.loader_faults(&Target::default()), []);
    let placements: Vec<Placement> = info
        .segments
        .as_slice()
        .iter()
        .map(|s| ESP32S3.placement(s.load_addr))
        .collect();
    use Placement::{Loaded, Mapped, Skipped};
    assert_eq!(placements, [Mapped, Loaded, Loaded, Skipped, Mapped]);
}

#[test]
fn a_mapped_segment_off_its_page_congruence_is_refused() {
    // Four more bytes of padding push the IROM segment 4 bytes off its 64 KiB congruence.
    let mut image = raw();
    let padding = image.find(PADDING);
    image.segments[padding].data.extend([0; 4]);
    let irom = image.find(IROM);
    let e = refused(&image);
    assert_eq!(e.offset as usize, image.data_offset(irom) - 8);
    assert_eq!(
        e.kind,
        ImageErrorKind::MappingMisaligned {
            index: irom as u8,
            load_addr: 0x4200_0020,
            data_offset: image.data_offset(irom) as u64,
        }
    );
    assert_eq!(e.kind.rule(), "segment-mapping");
    assert!(e.to_string().contains("0x0020 and 0x0024 are not"), "{e}");
}

#[test]
fn a_mapped_segment_moved_by_a_whole_page_is_fine() {
    let mut image = raw();
    let padding = image.find(PADDING);
    image.segments[padding].data.extend(vec![0; 0x1_0000]);
    parse(&image.build(), Some(Chip::Esp32S3)).unwrap();
}

#[test]
fn a_segment_loaded_outside_the_chips_ram_is_refused() {
    let mut image = raw();
    let iram = image.find(IRAM);
    image.segments[iram].load_addr = 0x4000_0000; // mask ROM
    let e = refused(&image);
    assert_eq!(e.offset as usize, image.data_offset(iram) - 8);
    assert!(
        matches!(
            e.kind,
            ImageErrorKind::BadLoadAddress {
                load_addr: 0x4000_0000,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.kind.rule(), "load-address");
}

#[test]
fn a_segment_running_past_the_end_of_its_ram_is_refused() {
    let mut image = raw();
    let dram = image.find(DRAM);
    let len = image.segments[dram].data.len() as u32;
    image.segments[dram].load_addr = DRAM.end - len + 4;
    assert!(matches!(
        refused(&image).kind,
        ImageErrorKind::BadLoadAddress { .. }
    ));
    image.segments[dram].load_addr = DRAM.end - len;
    parse(&image.build(), Some(Chip::Esp32S3)).expect("the last bytes of DRAM are DRAM");
}

#[test]
fn a_segment_over_the_bootloaders_own_ram_is_refused() {
    for (view, addr) in [(DRAM, 0x3FCE_0000), (IRAM, 0x403D_0000)] {
        let mut image = raw();
        let index = image.find(view);
        image.segments[index].load_addr = addr;
        let e = refused(&image);
        assert_eq!(
            e.kind,
            ImageErrorKind::OverlapsBootloader {
                index: index as u8,
                load_addr: addr,
                len: image.segments[index].data.len() as u32,
                region: "the bootloader's RAM",
            }
        );
        assert_eq!(e.kind.rule(), "load-address");
    }
}

#[test]
fn an_image_no_chip_revision_can_run_is_refused_at_byte_15() {
    let mut image = raw();
    image.set_header_u16(15, 100); // min v1.0, max stays v0.99
    let e = refused(&image);
    assert_eq!(e.offset, 15);
    assert!(
        matches!(e.kind, ImageErrorKind::EmptyChipRevisionRange { .. }),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "app image, at byte 0xf: the image runs on chip revisions v1.0 to v0.99: no chip is both"
    );
    assert_eq!(e.kind.rule(), "chip-revision");
}

#[test]
fn a_chip_outside_the_images_revisions_refuses_it() {
    let mut image = raw();
    image.set_header_u16(15, 3); // needs v0.3
    let bytes = image.build();
    let read = |revision: u16| {
        let mut reader = ImageReader::new().expect_chip_revision(ChipRevision(revision));
        reader.feed(&bytes).and_then(|()| reader.finish())
    };
    let e = read(2).unwrap_err();
    assert_eq!(
        e.to_string(),
        "app image, at byte 0xf: this chip is revision v0.2, the image runs on v0.3 to v0.99"
    );
    read(3).unwrap();
    read(99).unwrap();
    assert!(read(100).is_err(), "above max_chip_rev_full");
    image.set_header_u16(17, 0xFFFF); // no upper bound
    let mut reader = ImageReader::new().expect_chip_revision(ChipRevision(300));
    reader.feed(&image.build()).unwrap();
    reader.finish().unwrap();
}

#[test]
fn an_image_longer_than_its_partition_is_refused() {
    let read = |partition: u64| {
        let mut reader = ImageReader::new().expect_partition(partition);
        reader.feed(IMAGE).and_then(|()| reader.finish())
    };
    read(IMAGE.len() as u64).unwrap();
    let e = read(IMAGE.len() as u64 - 1).unwrap_err();
    assert_eq!(
        e.kind,
        ImageErrorKind::TooLargeForPartition {
            partition: IMAGE.len() as u64 - 1
        }
    );
    assert_eq!(e.kind.rule(), "fits-partition");
}

#[test]
fn a_segment_of_exactly_16_mib_is_refused_as_esp_idf_does() {
    let mut bytes = IMAGE.to_vec();
    bytes[0x1C..0x20].copy_from_slice(&(16u32 << 20).to_le_bytes());
    let mut reader = ImageReader::new();
    let e = reader.feed(&bytes).unwrap_err();
    assert_eq!(
        e.kind,
        ImageErrorKind::SegmentTooLarge {
            index: 0,
            len: 16 << 20
        }
    );
    assert_eq!(e.kind.rule(), "segment-header");
}

#[test]
fn deferred_rules_are_all_listed_in_file_order() {
    let mut image = raw();
    image.set_header_u16(15, 100);
    let iram = image.find(IRAM);
    image.segments[iram].load_addr = 0x4000_0000;
    let padding = image.find(PADDING);
    image.segments[padding].data.extend([0; 4]);
    let info = deferred(&image.build());
    let target = Target {
        partition_size: Some(0x1000),
        ..Target::default()
    };
    let rules: Vec<&str> = info
        .loader_faults(&target)
        .iter()
        .map(|e| e.kind.rule())
        .collect();
    assert_eq!(
        rules,
        [
            "chip-revision",
            "load-address",
            "segment-mapping",
            "fits-partition"
        ]
    );
}

#[test]
fn chips_without_a_memory_map_get_only_the_format_rules() {
    assert!(MemoryMap::of(Chip::Esp32S3).is_some());
    assert!(MemoryMap::of(Chip::Esp32C3).is_none());
    let mut image = raw();
    image.set_header_u16(12, Chip::Esp32C3.id());
    let iram = image.find(IRAM);
    image.segments[iram].load_addr = 0x4000_0000;
    parse(&image.build(), Some(Chip::Esp32C3)).unwrap();
}

proptest! {
    /// Wherever a loaded segment is moved, the reader agrees with the map: refused
    /// unless it lies wholly in one RAM region and clear of the bootloader.
    #[test]
    fn a_moved_ram_segment_is_judged_by_the_map(addr in 0x3000_0000u32..0x6100_0000) {
        let addr = addr & !3;
        let mut image = raw();
        let iram = image.find(IRAM);
        let len = image.segments[iram].data.len() as u32;
        image.segments[iram].load_addr = addr;
        let verdict = parse(&image.build(), Some(Chip::Esp32S3));
        let expected_ok = match ESP32S3.placement(addr) {
            Placement::Loaded => {
                ESP32S3.ram_holding(addr, len).is_some()
                    && ESP32S3.bootloader_overlap(addr, len).is_none()
            }
            // Now mapped: fine only on the page congruence.
            Placement::Mapped => {
                (image.data_offset(iram) as u32) % 0x1_0000 == addr % 0x1_0000
            }
            Placement::Skipped => true,
        };
        prop_assert_eq!(verdict.is_ok(), expected_ok, "{:?}", verdict.err());
    }
}

#[test]
fn an_app_no_efuse_block_revision_can_run_is_refused_in_its_descriptor() {
    let mut image = raw();
    let descriptor = &mut image.segments[0].data;
    descriptor[176..178].copy_from_slice(&100u16.to_le_bytes()); // min v1.0
    descriptor[178..180].copy_from_slice(&99u16.to_le_bytes()); // max v0.99
    let e = refused(&image);
    assert_eq!(e.offset, 0x20 + 176);
    assert!(
        matches!(e.kind, ImageErrorKind::EmptyEfuseBlockRange { .. }),
        "{e}"
    );
    assert_eq!(e.kind.rule(), "efuse-block-revision");
}

#[test]
fn a_chip_whose_efuse_block_is_outside_the_apps_range_refuses_it() {
    // The fixture says max v0.0: for the eFuse block only 0xFFFF means no bound.
    let read = |bytes: &[u8], revision: u16| {
        let mut reader = ImageReader::new().expect_efuse_block_revision(ChipRevision(revision));
        reader.feed(bytes).and_then(|()| reader.finish())
    };
    read(IMAGE, 0).unwrap();
    let e = read(IMAGE, 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "app image, at byte 0xd0: this chip's eFuse block is revision v0.1, the app runs on v0.0 to v0.0"
    );
    let mut image = raw();
    image.segments[0].data[178..180].copy_from_slice(&0xFFFFu16.to_le_bytes());
    read(&image.build(), 199).unwrap();
}
