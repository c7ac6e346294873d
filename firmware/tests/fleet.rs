//! A small fleet end to end (`cargo xtask fleet` runs 200): every device ends bootable,
//! the primary's failure part-way is survived by resuming from the other source, and a
//! device's flash costs what it holds.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;
mod fleet_sim;

#[test]
fn a_fleet_updates_through_the_primarys_failure_and_none_is_unbootable() {
    let report = fleet_sim::run(16);
    println!("{report}");
    assert_eq!(report.unbootable, 0, "{report}");
    assert_eq!(report.on_new, 16, "{report}");
    assert!(report.failures.is_empty(), "{report}");
    // GitHub served part of the fleet's bytes before it failed; R2 the rest, partly as
    // downloads continued where GitHub broke off.
    assert!(report.github.bytes > 0 && report.r2.bytes > 0, "{report}");
    assert!(report.r2.resumed > 0, "{report}");
    // Two images and otadata per device, not 8 MiB of flash each.
    assert!(
        report.flash_resident < 16 * 2 * (fleet_sim::PAYLOAD as usize + 128 * 1024),
        "{report}"
    );
}
