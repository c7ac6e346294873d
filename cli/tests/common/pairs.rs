//! Pairs of app images like consecutive releases, and detools (the delta format's own
//! implementation, which `cargo xtask test` installs) to judge the patches between them:
//! shared by the delta tests and the delta benchmark.
#![allow(dead_code)] // each user takes its own subset

use std::process::Command;

use ota_core::delta::Base;
use testkit::image::RawImage;

/// `image` with its app descriptor's version (offset 16, 32 bytes) set to `version`,
/// checksum and digest made again: a release that changed the version string only.
pub fn with_version(image: &[u8], version: &str) -> Vec<u8> {
    let mut raw = RawImage::parse(image);
    let field = &mut raw.segments[0].data[16..48];
    field.fill(0);
    field[..version.len()].copy_from_slice(version.as_bytes());
    raw.build()
}

/// `image` with `len` bytes of code rewritten at a few places: a small code change.
pub fn with_code_changed(image: &[u8], len: usize) -> Vec<u8> {
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

/// An old image, read at any offset as a device reads its running slot.
pub struct Old<'a>(pub &'a [u8]);

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

pub fn python(script: &str, args: &[&std::path::Path]) {
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
pub fn detools_apply(old: &[u8], patch: &[u8]) -> Vec<u8> {
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
pub fn detools_size(old: &[u8], new: &[u8]) -> usize {
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
