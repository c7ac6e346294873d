//! Delta patches the host makes, judged by detools (the format's own implementation,
//! which `cargo xtask test` installs): they apply with `detools apply_patch` and with
//! ota-core's applier to the exact new image, and are no bigger than the ones detools
//! itself makes for the same pair, give or take 2 % of the image.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use common::app_image;
use common::pairs::{with_code_changed, with_version};
use testkit::FirmwareElf;
use testkit::detools;

#[test]
fn our_patches_apply_with_detools_and_ours_and_are_no_bigger_than_detools_own() {
    let base = app_image(&FirmwareElf::new("2.9.0").payload_len(256 * 1024));
    let pairs = [
        ("the version string", with_version(&base, "2.9.1")),
        (
            "a small code change",
            with_code_changed(&with_version(&base, "2.9.1"), 1536),
        ),
        (
            "another build",
            app_image(&FirmwareElf::new("3.0.0").payload_len(256 * 1024)),
        ),
    ];
    for (what, new) in pairs {
        let patch = clockrel::delta::patch(&base, &new).unwrap();
        assert_eq!(
            detools::apply_patch(&base, &patch[64..]),
            new,
            "{what}: detools"
        );
        assert_eq!(
            clockrel::delta::apply(&base, &patch).unwrap(),
            new,
            "{what}: ours"
        );
        let (ours, theirs) = (patch.len() - 64, detools::create_patch(&base, &new).len());
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
fn a_damaged_image_cannot_be_a_base() {
    let base = app_image(&FirmwareElf::new("2.9.0"));
    let error = clockrel::delta::patch(&base[..base.len() - 40], &base).unwrap_err();
    assert!(error.to_string().contains("base image"), "{error}");
}
