//! The committed test images are exactly what the release path makes today.
//!
//! ota-core's tests read `firmware/ota/tests/data/*.bin`; they are made here, from a
//! synthetic ELF through espflash. Run with `CLOCKREL_BLESS=1` to rewrite them after a
//! deliberate change of the generator or of espflash.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use testkit::FirmwareElf;

#[test]
fn committed_fixture_images_are_reproducible() {
    let fixtures = [(
        "wordclock-2.9.0.bin",
        FirmwareElf::new("2.9.0")
            .payload_len(4096)
            .secure_version(2),
    )];
    for (name, elf) in fixtures {
        let path = common::workspace()
            .join("firmware/ota/tests/data")
            .join(name);
        let made = common::app_image(&elf);
        if std::env::var_os("CLOCKREL_BLESS").is_some() {
            std::fs::write(&path, &made).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == made,
            "{} differs from what the generator makes now; rerun with CLOCKREL_BLESS=1 if that is intended",
            path.display()
        );
    }
}
