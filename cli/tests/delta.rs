//! Delta patches the host makes, judged by detools (the format's own implementation,
//! which `cargo xtask test` installs): they apply with `detools apply_patch` and with
//! ota-core's applier to the exact new image, and are no bigger than the ones detools
//! itself makes for the same pair, give or take 2 % of the image.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

use std::process::Command;

use ota_core::Chip;
use ota_core::delta::{Base, DeltaPatch};
use testkit::FirmwareElf;
use testkit::image::RawImage;

fn image(elf: &FirmwareElf, version: &str) -> Vec<u8> {
    clockrel::elf::app_image(&elf.build(), Chip::Esp32S3, "8MB".parse().unwrap(), version).unwrap()
}

/// `image` with its app descriptor's version (offset 16, 32 bytes) set to `version`,
/// checksum and digest made again: a release that changed the version string only.
fn with_version(image: &[u8], version: &str) -> Vec<u8> {
    let mut raw = RawImage::parse(image);
    let field = &mut raw.segments[0].data[16..48];
    field.fill(0);
    field[..version.len()].copy_from_slice(version.as_bytes());
    raw.build()
}

/// `image` with `len` bytes of code rewritten at a few places: a small code change.
fn with_code_changed(image: &[u8], len: usize) -> Vec<u8> {
    let mut raw = RawImage::parse(image);
    let code = raw
        .segments
        .iter_mut()
        .max_by_key(|s| s.data.len())
        .unwrap();
    for (i, at) in [1000, 40_000, 90_000].into_iter().enumerate() {
        for (j, byte) in code.data[at..at + len / 3].iter_mut().enumerate() {
            *byte = byte.wrapping_add((i + j) as u8 | 1);
        }
    }
    raw.build()
}

struct Old<'a>(&'a [u8]);

impl Base for Old<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let at = offset as usize;
        buf.copy_from_slice(&self.0[at..at + buf.len()]);
        Ok(())
    }
}

fn python(script: &str, args: &[&std::path::Path]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "detools (cargo xtask test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `detools apply_patch` makes of our patch (after its 64-byte header).
fn detools_apply(old: &[u8], patch: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (from, body, to) = (
        dir.path().join("from"),
        dir.path().join("patch"),
        dir.path().join("to"),
    );
    std::fs::write(&from, old).unwrap();
    std::fs::write(&body, &patch[64..]).unwrap();
    python(
        "import sys, detools; detools.apply_patch_filenames(sys.argv[1], sys.argv[2], sys.argv[3])",
        &[&from, &body, &to],
    );
    std::fs::read(&to).unwrap()
}

/// The size of the patch `detools create_patch` makes (heatshrink 8/7) for the pair.
fn detools_size(old: &[u8], new: &[u8]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let (from, to, patch) = (
        dir.path().join("from"),
        dir.path().join("to"),
        dir.path().join("patch"),
    );
    std::fs::write(&from, old).unwrap();
    std::fs::write(&to, new).unwrap();
    python(
        "import sys, detools; detools.create_patch_filenames(sys.argv[1], sys.argv[2], sys.argv[3], \
         compression='heatshrink', heatshrink_window_sz2=8, heatshrink_lookahead_sz2=7)",
        &[&from, &to, &patch],
    );
    std::fs::read(&patch).unwrap().len()
}

fn ours_apply(old: &[u8], patch: &[u8]) -> Vec<u8> {
    let digest = ota_core::Sha256(old[old.len() - 32..].try_into().unwrap());
    let mut delta = DeltaPatch::new(digest);
    let mut new = Vec::new();
    let mut base = Old(old);
    for piece in patch.chunks(1000) {
        delta
            .feed(piece, &mut base, &mut |b| {
                new.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
    }
    delta
        .finish(&mut base, &mut |b| {
            new.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
    new
}

#[test]
fn our_patches_apply_with_detools_and_ours_and_are_no_bigger_than_detools_own() {
    let base = image(&FirmwareElf::new("2.9.0").payload_len(256 * 1024), "2.9.0");
    let pairs = [
        ("the version string", with_version(&base, "2.9.1")),
        (
            "a small code change",
            with_code_changed(&with_version(&base, "2.9.1"), 1536),
        ),
        (
            "another build",
            image(&FirmwareElf::new("3.0.0").payload_len(256 * 1024), "3.0.0"),
        ),
    ];
    for (what, new) in pairs {
        let patch = clockrel::delta::patch(&base, &new).unwrap();
        assert_eq!(detools_apply(&base, &patch), new, "{what}: detools");
        assert_eq!(ours_apply(&base, &patch), new, "{what}: ours");
        let (ours, theirs) = (patch.len() - 64, detools_size(&base, &new));
        println!(
            "{what}: ours {ours} bytes, detools {theirs}, image {}",
            new.len()
        );
        assert!(
            ours <= theirs + new.len() / 50,
            "{what}: ours {ours} bytes, detools {theirs}, image {}",
            new.len()
        );
    }
}

#[test]
fn an_image_without_its_digest_cannot_be_a_base() {
    let base = image(&FirmwareElf::new("2.9.0"), "2.9.0");
    let error = clockrel::delta::patch(&base[..base.len() - 40], &base).unwrap_err();
    assert!(error.to_string().contains("base image"), "{error}");
}
