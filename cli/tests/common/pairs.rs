//! Pairs of app images like consecutive releases, shared by the delta tests and the
//! delta benchmark.
#![allow(dead_code)] // each user takes its own subset

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
