//! Bytes on the wire for a patch release, as ratios measured in one run: each patch the
//! host makes over the full image, beside the patch `detools create_patch` (the format's
//! own implementation) makes for the same pair, for releases that change the version
//! string only, a little code, and everything. heatshrink 8/7 has a floor of about 1/64
//! of the image even for identical images.
//!
//! `cargo bench -p clockrel --bench delta`; needs detools (`cargo xtask test` installs it).
#![allow(clippy::unwrap_used)] // a benchmark that cannot unwrap has failed, and says where

#[path = "../tests/common/mod.rs"]
mod common;

use common::app_image;
use common::pairs::{with_code_changed, with_version};
use testkit::FirmwareElf;
use testkit::detools;

/// A word-clock image of about 700 KiB; the larger the image, the longer bsdiff's sort.
const PAYLOAD: u32 = 640 * 1024;

fn main() {
    let base = app_image(&FirmwareElf::new("2.9.0").payload_len(PAYLOAD));
    let pairs = [
        ("version string only", with_version(&base, "2.9.1")),
        (
            "a small code change (3 KiB)",
            with_code_changed(&with_version(&base, "2.9.1"), 3 * 1024),
        ),
        (
            "another build entirely",
            app_image(&FirmwareElf::new("3.0.0").payload_len(PAYLOAD)),
        ),
    ];
    println!(
        "delta patch size over the full image ({} bytes)",
        base.len()
    );
    println!(
        "  {:<30} {:>10} {:>10} {:>10}",
        "release", "clockrel", "detools", "ours/theirs"
    );
    for (what, new) in pairs {
        let ours = clockrel::delta::patch(&base, &new).unwrap().len();
        // detools' patch without esp_delta_ota's 64-byte header, which ours carries.
        let theirs = detools::create_patch(&base, &new).len() + 64;
        let full = new.len() as f64;
        println!(
            "  {what:<30} {:>9.2}% {:>9.2}% {:>10.3}",
            100.0 * ours as f64 / full,
            100.0 * theirs as f64 / full,
            ours as f64 / theirs as f64
        );
    }
}
