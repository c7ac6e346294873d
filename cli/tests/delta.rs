//! Delta patches the host makes, judged by detools (the format's own implementation,
//! which `cargo xtask test` installs): they apply with `detools apply_patch` and with
//! ota-core's applier to the exact new image, and are no bigger than the ones detools
//! itself makes for the same pair, give or take 2 % of the image.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use common::app_image;
use common::pairs::{Old, with_code_changed, with_version};
use ota_core::delta::DeltaPatch;
use testkit::FirmwareElf;
use testkit::detools;

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
        assert_eq!(ours_apply(&base, &patch), new, "{what}: ours");
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
