//! Espressif's own esptool is the independent judge of our images: every image the
//! release path makes must be one it calls valid, and our reader must report the same
//! facts it reports.
//!
//! esptool is installed by `cargo xtask test`; when it is missing this test fails.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::process::Command;

use ota_core::image::parse;
use testkit::FirmwareElf;
use testkit::image::RawImage;

/// What `esptool image-info` says about one image.
#[derive(Debug, Default)]
struct EsptoolView {
    /// esptool's verdicts; `None` when its output no longer has the line we read.
    checksum_valid: Option<bool>,
    hash_valid: Option<bool>,
    chip_id: Option<u16>,
    segments: Option<usize>,
    version: Option<String>,
    project: Option<String>,
    secure_version: Option<u32>,
    entry: Option<u32>,
    flash_size: Option<String>,
    elf_sha256: Option<String>,
    segment_rows: Vec<(u32, u32)>,
}

fn esptool_image_info(path: &std::path::Path) -> EsptoolView {
    let out = Command::new("python3")
        .args(["-m", "esptool", "image-info"])
        .arg(path)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "esptool failed (install it with `cargo xtask test` or `pip install 'esptool>=5,<6'`):\n{}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut view = EsptoolView::default();
    let hex = |s: &str| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok();
    let mut in_segments = false;
    for line in text.lines() {
        let value = |prefix: &str| line.strip_prefix(prefix).map(str::trim);
        if let Some(v) = value("Checksum:") {
            view.checksum_valid = Some(v.ends_with("(valid)"));
        } else if let Some(v) = value("Validation hash:") {
            view.hash_valid = Some(v.ends_with("(valid)"));
        } else if let Some(v) = value("Chip ID:") {
            view.chip_id = v.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(v) = value("Segments:") {
            view.segments = v.parse().ok();
        } else if let Some(v) = value("App version:") {
            view.version = Some(v.to_owned());
        } else if let Some(v) = value("Project name:") {
            view.project = Some(v.to_owned());
        } else if let Some(v) = value("Secure version:") {
            view.secure_version = v.parse().ok();
        } else if let Some(v) = value("Entry point:") {
            view.entry = hex(v);
        } else if let Some(v) = value("Flash size:") {
            view.flash_size = Some(v.to_owned());
        } else if let Some(v) = value("ELF file SHA256:") {
            view.elf_sha256 = Some(v.to_owned());
        } else if line.starts_with("-------") {
            in_segments = true;
        } else if in_segments {
            let cols: Vec<_> = line.split_whitespace().collect();
            match (
                cols.first().map(|c| c.parse::<usize>()),
                cols.get(1),
                cols.get(2),
            ) {
                (Some(Ok(_)), Some(len), Some(addr)) => {
                    view.segment_rows
                        .push((hex(len).unwrap(), hex(addr).unwrap()));
                }
                _ => in_segments = false,
            }
        }
    }
    view
}

#[test]
fn esptool_calls_every_generated_image_valid_and_agrees_with_our_reader() {
    let dir = tempfile::tempdir().unwrap();
    let builds = [
        FirmwareElf::new("2.9.0"),
        FirmwareElf::new("v2.10.0-rc.1").payload_len(4096),
        FirmwareElf::new("1.0.0")
            .payload_len(300 * 1024)
            .secure_version(3),
        FirmwareElf::new("0.0.1-dev+build.7")
            .payload_len(1024 * 1024)
            .project_name("other-clock"),
    ];
    let mut images: Vec<(String, Vec<u8>)> = builds
        .iter()
        .map(|elf| (format!("{}.bin", elf.version), common::app_image(elf)))
        .collect();
    let fixture = common::workspace().join("firmware/ota/tests/data/wordclock-2.9.0.bin");
    images.push(("fixture.bin".to_owned(), std::fs::read(fixture).unwrap()));

    for (name, bytes) in images {
        let path = dir.path().join(&name);
        std::fs::write(&path, &bytes).unwrap();
        let ours = parse(&bytes, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs = esptool_image_info(&path);

        assert_eq!(
            theirs.checksum_valid,
            Some(true),
            "{name}: esptool's checksum verdict"
        );
        assert_eq!(
            theirs.hash_valid,
            Some(true),
            "{name}: esptool's appended hash verdict"
        );
        assert_eq!(theirs.chip_id, Some(ours.header.chip.id()), "{name}");
        assert_eq!(theirs.segments, Some(ours.segments.len()), "{name}");
        assert_eq!(
            theirs.version.as_deref(),
            ours.descriptor.version.as_str(),
            "{name}"
        );
        assert_eq!(
            theirs.project.as_deref(),
            ours.descriptor.project_name.as_str(),
            "{name}"
        );
        assert_eq!(
            theirs.secure_version,
            Some(ours.descriptor.secure_version),
            "{name}"
        );
        assert_eq!(theirs.entry, Some(ours.header.entry_addr), "{name}");
        assert_eq!(
            theirs.flash_size,
            Some(ours.header.flash_size.to_string()),
            "{name}"
        );
        assert_eq!(
            theirs.elf_sha256,
            Some(ota_core::Sha256(ours.descriptor.app_elf_sha256).to_string()),
            "{name}"
        );
        let our_rows: Vec<_> = ours
            .segments
            .as_slice()
            .iter()
            .map(|s| (s.len, s.load_addr))
            .collect();
        assert_eq!(theirs.segment_rows, our_rows, "{name}: segment table");
    }
}

#[test]
fn esptool_and_our_reader_both_refuse_a_corrupted_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = common::app_image(&FirmwareElf::new("2.9.0").payload_len(4096));
    let at = bytes.len() - 100;
    bytes[at] ^= 0xFF;
    let path = dir.path().join("corrupt.bin");
    std::fs::write(&path, &bytes).unwrap();
    let theirs = esptool_image_info(&path);
    assert_eq!(
        (theirs.checksum_valid, theirs.hash_valid),
        (Some(false), Some(false)),
        "esptool's verdicts on a corrupted image"
    );
    assert!(parse(&bytes, None).is_err());
}

/// esptool's `image-info` judges only the format: an image whose IROM segment sits off its
/// 64 KiB page congruence is "valid" to it, yet ESP-IDF's loader refuses it. `check`
/// must fail it, by name, and keep reporting the rest.
#[test]
fn an_image_esptool_calls_valid_but_esp_idf_refuses_fails_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawImage::parse(&common::app_image(&FirmwareElf::new("2.9.0")));
    let padding = raw.find(0..1);
    raw.segments[padding].data.extend([0; 16]);
    let bytes = raw.build();
    let path = dir.path().join("misaligned.bin");
    std::fs::write(&path, &bytes).unwrap();

    let theirs = esptool_image_info(&path);
    assert_eq!(
        (theirs.checksum_valid, theirs.hash_valid),
        (Some(true), Some(true)),
        "the image is well formed: esptool must call it valid"
    );

    let table = common::workspace().join("partitions/partitions.csv");
    let out = common::clockrel(
        dir.path(),
        &[
            "check",
            "--image",
            path.to_str().unwrap(),
            "--partitions",
            table.to_str().unwrap(),
        ],
    );
    let text = common::stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}{}", common::stderr(&out));
    let irom = raw.find(0x4200_0000..0x4400_0000);
    let expected = format!(
        "segment {irom} is mapped at 0x42000020 from file offset {:#x}",
        raw.data_offset(irom)
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("FAIL  segment-mapping") && l.contains(&expected)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("pass  load-address")),
        "{text}"
    );
}
