//! The simulated bootloader judges a slot's image as ESP-IDF's does, with ota-core's
//! reader: an image the chip would refuse is skipped for the next bootable partition,
//! even when otadata selects it and its checksum and hash are good.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use common::{image, layout};
use ota_core::otadata::{BootTarget, Otadata, Slot};
use testkit::image::RawImage;
use wordclock::sim::device::Device;

/// A device with 1.0.0 in factory, `ota_0` in ota_0, and otadata selecting ota_0.
fn selecting_ota_0(ota_0: &[u8]) -> Device {
    let mut device = Device::provision(layout(), Some(&image("1.0.0")), Some(ota_0)).unwrap();
    let mut otadata = Otadata::blank();
    otadata
        .set_boot(Slot(0), device.layout.slot_count())
        .unwrap();
    device
        .flash
        .write(device.layout.otadata.offset, &otadata.to_bytes())
        .unwrap();
    device
}

#[test]
fn a_sound_image_in_the_selected_slot_boots() {
    let booted = selecting_ota_0(&image("2.0.0")).boot().unwrap();
    assert_eq!(booted.target, BootTarget::Ota(Slot(0)));
    assert_eq!(booted.version.to_string(), "2.0.0");
    assert!(!booted.fell_back);
}

#[test]
fn an_image_off_its_mapping_congruence_is_skipped_for_factory() {
    let mut raw = RawImage::parse(&image("2.0.0"));
    let padding = raw.find(0..1);
    raw.segments[padding].data.extend([0; 4]);
    let mut device = selecting_ota_0(&raw.build());
    assert!(
        device.image_in(BootTarget::Ota(Slot(0))).is_none(),
        "the loader refuses it"
    );
    let booted = device.boot().unwrap();
    assert_eq!(booted.target, BootTarget::Factory);
    assert_eq!(booted.version.to_string(), "1.0.0");
    assert!(booted.fell_back);
}

#[test]
fn an_image_for_a_later_chip_revision_is_skipped_for_factory() {
    let mut raw = RawImage::parse(&image("2.0.0"));
    raw.set_header_u16(15, 3); // needs v0.3; the simulated chip is v0.2
    let booted = selecting_ota_0(&raw.build()).boot().unwrap();
    assert_eq!(
        (booted.target, booted.fell_back),
        (BootTarget::Factory, true)
    );
}
