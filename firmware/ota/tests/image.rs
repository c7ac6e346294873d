//! The app-image reader against a real image (made by espflash, checked by esptool in the
//! CLI's tests) and against every way of breaking it.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

use ota_core::Chip;
use ota_core::image::{ImageError, ImageErrorKind, ImageInfo, ImageReader, Part, parse};
use proptest::prelude::*;

/// ESP32-S3 image of version 2.9.0, secure_version 2, five segments, hash appended.
const IMAGE: &[u8] = include_bytes!("data/wordclock-2.9.0.bin");

fn info() -> ImageInfo {
    parse(IMAGE, Some(Chip::Esp32S3)).expect("the fixture image is valid")
}

fn err(bytes: &[u8]) -> ImageError {
    parse(bytes, Some(Chip::Esp32S3)).expect_err("the image must be refused")
}

fn mutated(at: usize, value: u8) -> Vec<u8> {
    let mut bytes = IMAGE.to_vec();
    bytes[at] = value;
    bytes
}

fn with_u32(at: usize, value: u32) -> Vec<u8> {
    let mut bytes = IMAGE.to_vec();
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    bytes
}

/// Streams `bytes` in the given chunk sizes (cycled), without telling the reader the length.
fn stream(bytes: &[u8], chunks: &[usize]) -> Result<ImageInfo, ImageError> {
    let mut reader = ImageReader::new().expect_chip(Chip::Esp32S3);
    let mut rest = bytes;
    for size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).max(1).min(rest.len()));
        reader.feed(chunk)?;
        rest = tail;
    }
    reader.finish()
}

#[test]
fn every_field_of_a_real_image_is_read() {
    let info = info();
    let h = &info.header;
    assert_eq!(h.chip, Chip::Esp32S3);
    assert_eq!(h.segment_count, 5);
    assert_eq!(h.flash_size.bytes(), Some(8 << 20));
    assert_eq!(h.flash_freq.megahertz(), Some(40));
    assert_eq!(h.spi_mode.to_string(), "DIO");
    assert_eq!(h.entry_addr, 0x4037_0000);
    assert_eq!(h.wp_pin, 0xEE);
    assert_eq!(h.max_chip_rev_full, 99);
    assert!(h.hash_appended);

    let d = &info.descriptor;
    assert_eq!(d.version.as_str(), Some("2.9.0"));
    assert_eq!(d.project_name.as_str(), Some("wordclock"));
    assert_eq!(d.secure_version, 2);
    assert_eq!(d.idf_ver.as_str(), Some("v5.3.2"));
    assert_eq!(d.date.as_str(), Some("Nov 29 2026"));
    assert_eq!(d.time.as_str(), Some("12:00:00"));
    assert_ne!(
        d.app_elf_sha256, [0; 32],
        "espflash fills in the ELF's hash"
    );

    let segments = info.segments.as_slice();
    assert_eq!(segments.len(), 5);
    assert_eq!(segments[0].data_offset, 0x20);
    assert_eq!(segments[0].load_addr, 0x3C00_0020);
    for pair in segments.windows(2) {
        assert_eq!(
            pair[1].data_offset,
            pair[0].data_offset + u64::from(pair[0].len) + 8
        );
    }
    assert_eq!(info.len, IMAGE.len() as u64);
    assert_eq!(info.sha256, ota_core::Sha256::of(IMAGE));
    let appended = info.appended_sha256.unwrap();
    assert_eq!(appended.as_bytes()[..], IMAGE[IMAGE.len() - 32..]);
    assert_eq!(appended, ota_core::Sha256::of(&IMAGE[..IMAGE.len() - 32]));
    assert_ne!(
        appended, info.sha256,
        "the appended hash is not the file's hash"
    );
}

#[test]
fn the_descriptor_is_known_as_soon_as_its_bytes_arrive() {
    let mut reader = ImageReader::new();
    reader.feed(&IMAGE[..0x11F]).unwrap();
    assert!(reader.descriptor().is_none());
    reader.feed(&IMAGE[0x11F..0x120]).unwrap();
    assert_eq!(reader.descriptor().unwrap().version.as_str(), Some("2.9.0"));
    assert_eq!(reader.header().unwrap().segment_count, 5);
    assert_eq!(reader.offset(), 0x120);
}

#[test]
fn wrong_magic_is_refused_at_byte_zero() {
    let e = err(&mutated(0, 0xE8));
    assert_eq!(e.offset, 0);
    assert_eq!(e.kind, ImageErrorKind::BadMagic { found: 0xE8 });
    assert_eq!(
        e.to_string(),
        "app image, at byte 0x0: not an ESP image: first byte is 0xe8, expected 0xe9"
    );
}

#[test]
fn too_many_or_no_segments_are_refused() {
    assert_eq!(
        err(&mutated(1, 17)).kind,
        ImageErrorKind::BadSegmentCount { count: 17 }
    );
    assert_eq!(err(&mutated(1, 0)).offset, 1);
}

#[test]
fn a_bad_hash_appended_flag_is_refused() {
    let e = err(&mutated(23, 2));
    assert_eq!(
        (e.offset, e.kind),
        (23, ImageErrorKind::BadHashAppendedFlag { found: 2 })
    );
}

#[test]
fn wrong_chip_is_refused_at_the_chip_id() {
    let e = err(&mutated(12, 5));
    assert_eq!(e.offset, 12);
    assert_eq!(
        e.kind,
        ImageErrorKind::WrongChip {
            expected: Chip::Esp32S3,
            found: Chip::Esp32C3
        }
    );
    assert!(
        parse(&mutated(12, 5), None).is_err(),
        "the hash still catches the change"
    );
}

#[test]
fn a_segment_running_past_the_end_is_refused_when_its_header_arrives() {
    let last = info().segments.as_slice()[4];
    let len_at = last.data_offset as usize - 4;
    let e = err(&with_u32(len_at, last.len + 64));
    assert_eq!(e.offset, len_at as u64);
    assert!(
        matches!(e.kind, ImageErrorKind::SegmentPastEnd { index: 4, .. }),
        "{e}"
    );
    let streamed = stream(&with_u32(0x1C, 0x0100_0004), &[4096]).unwrap_err();
    assert_eq!(
        streamed.kind,
        ImageErrorKind::SegmentTooLarge {
            index: 0,
            len: 0x0100_0004
        }
    );
}

#[test]
fn an_unaligned_segment_length_is_refused() {
    let e = err(&with_u32(0x1C, info().segments.as_slice()[0].len + 1));
    assert_eq!(e.offset, 0x1C);
    assert!(matches!(
        e.kind,
        ImageErrorKind::UnalignedSegment { index: 0, .. }
    ));
}

#[test]
fn a_first_segment_too_short_for_the_descriptor_is_refused() {
    let e = err(&with_u32(0x1C, 16));
    assert_eq!(
        (e.offset, e.kind),
        (0x1C, ImageErrorKind::DescriptorMissing { len: 16 })
    );
}

#[test]
fn a_missing_descriptor_magic_is_refused_at_0x20() {
    let e = err(&mutated(0x20, 0x33));
    assert_eq!(e.offset, 0x20);
    assert_eq!(
        e.kind,
        ImageErrorKind::BadDescriptorMagic { found: 0xABCD_5433 }
    );
}

#[test]
fn a_changed_data_byte_fails_the_checksum() {
    let info = info();
    let seg = info.segments.as_slice()[2];
    let at = seg.data_offset as usize + 7;
    let e = err(&mutated(at, IMAGE[at] ^ 0x40));
    let checksum_at = IMAGE.len() as u64 - 33;
    assert_eq!(e.offset, checksum_at);
    assert_eq!(
        e.kind,
        ImageErrorKind::ChecksumMismatch {
            stored: info.checksum,
            computed: info.checksum ^ 0x40
        }
    );
}

#[test]
fn a_changed_header_byte_fails_the_appended_hash() {
    // The flash frequency is not covered by the checksum, only by the hash.
    let e = err(&mutated(3, IMAGE[3] ^ 0x01));
    assert_eq!(e.offset, IMAGE.len() as u64 - 32);
    assert!(matches!(e.kind, ImageErrorKind::HashMismatch { .. }));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = IMAGE.to_vec();
    bytes.push(0);
    let e = err(&bytes);
    assert_eq!(
        (e.offset, e.kind),
        (IMAGE.len() as u64, ImageErrorKind::TrailingData)
    );
}

#[test]
fn a_truncated_image_names_the_missing_part() {
    let cases = [
        (0, Part::Header),
        (10, Part::Header),
        (24, Part::SegmentHeader { index: 0 }),
        (0x30, Part::SegmentData { index: 0 }),
        (IMAGE.len() - 33, Part::Checksum),
        (IMAGE.len() - 1, Part::AppendedHash),
    ];
    for (len, missing) in cases {
        let e = stream(&IMAGE[..len], &[1000]).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (len as u64, ImageErrorKind::Truncated { missing }),
            "cut at {len}"
        );
    }
}

#[test]
fn a_declared_length_is_held_to_exactly() {
    let mut longer = ImageReader::new().expect_len(IMAGE.len() as u64 + 16);
    longer.feed(IMAGE).unwrap();
    let e = longer.finish().unwrap_err();
    assert_eq!(
        e.kind,
        ImageErrorKind::LengthMismatch {
            declared: IMAGE.len() as u64 + 16
        }
    );
    let mut shorter = ImageReader::new().expect_len(IMAGE.len() as u64 - 8);
    let e = shorter.feed(IMAGE).unwrap_err();
    assert_eq!(
        (e.offset, e.kind),
        (
            IMAGE.len() as u64 - 8,
            ImageErrorKind::LengthMismatch {
                declared: IMAGE.len() as u64 - 8
            }
        )
    );
}

#[test]
fn after_an_error_the_reader_keeps_refusing() {
    let mut reader = ImageReader::new();
    let first = reader.feed(&[0x00; 24]).unwrap_err();
    assert_eq!(reader.feed(&IMAGE[1..]).unwrap_err(), first);
    assert_eq!(reader.finish().unwrap_err(), first);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_chunking_gives_the_same_result(chunks in proptest::collection::vec(1usize..5000, 1..20)) {
        prop_assert_eq!(stream(IMAGE, &chunks).unwrap(), info());
    }

    #[test]
    fn every_single_byte_change_is_caught(at in 0..IMAGE.len(), flip in 1u8..=255) {
        let bytes = mutated(at, IMAGE[at] ^ flip);
        prop_assert!(parse(&bytes, None).is_err());
        prop_assert!(stream(&bytes, &[977]).is_err());
    }

    #[test]
    fn every_truncation_is_caught_at_its_length(len in 0..IMAGE.len()) {
        let e = stream(&IMAGE[..len], &[4096]).unwrap_err();
        prop_assert_eq!(e.offset, len as u64);
        let truncated = matches!(e.kind, ImageErrorKind::Truncated { .. });
        prop_assert!(truncated, "{}", e);
        prop_assert!(parse(&IMAGE[..len], None).is_err());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&bytes, None);
        let _ = stream(&bytes, &[7, 300]);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut bytes = IMAGE[..24].to_vec();
        bytes.extend(tail);
        prop_assert!(parse(&bytes, None).is_err());
    }

    #[test]
    fn multi_byte_corruption_never_panics_nor_passes(
        edits in proptest::collection::vec((0..IMAGE.len(), any::<u8>()), 1..8)
    ) {
        let mut bytes = IMAGE.to_vec();
        for (at, value) in edits {
            bytes[at] = value;
        }
        match parse(&bytes, None) {
            Ok(info) => prop_assert_eq!(bytes.as_slice(), IMAGE, "changed image accepted: {:?}", info),
            Err(_) => prop_assert_ne!(bytes.as_slice(), IMAGE),
        }
    }
}
