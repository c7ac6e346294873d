//! A small fleet end to end (`cargo xtask fleet` runs 200): every device ends bootable,
//! the primary's failure part-way is survived by resuming from the other source, and a
//! device's flash costs what it holds; by delta patch, the fleet downloads a fraction of
//! the bytes.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;
mod fleet_sim;

use fleet_sim::Update;

const DEVICES: usize = 16;

/// Every device committed the new release, none unbootable, GitHub and R2 both served.
fn assert_all_committed(report: &fleet_sim::Report) {
    assert_eq!(report.unbootable, 0, "{report}");
    assert_eq!(report.on_new, DEVICES, "{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.github.bytes > 0 && report.r2.bytes > 0, "{report}");
}

#[test]
fn a_fleet_updates_through_the_primarys_failure_by_image_and_by_a_fraction_of_the_bytes() {
    let by_image = fleet_sim::run(DEVICES, Update::Image);
    println!("{by_image}");
    assert_all_committed(&by_image);
    // Downloads continued on R2 where GitHub broke off.
    assert!(by_image.r2.resumed > 0, "{by_image}");
    // Two images and otadata per device, not 8 MiB of flash each.
    assert!(
        by_image.flash_resident < DEVICES * 2 * (fleet_sim::PAYLOAD as usize + 128 * 1024),
        "{by_image}"
    );

    let by_patch = fleet_sim::run(DEVICES, Update::Patch);
    println!("{by_patch}");
    assert_all_committed(&by_patch);
    let bytes = |r: &fleet_sim::Report| r.github.bytes + r.r2.bytes;
    assert!(
        bytes(&by_patch) * 10 < bytes(&by_image),
        "by patch {} bytes, by image {}",
        bytes(&by_patch),
        bytes(&by_image)
    );
}
