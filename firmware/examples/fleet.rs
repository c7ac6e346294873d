//! `cargo xtask fleet [DEVICES]`: a fleet of simulated devices (200 unless told) updates
//! together while GitHub fails part-way, once by the whole image and once by delta
//! patch, and the reports say how each device ended, what each source served, the time
//! to the last commit, and the memory it all took.
#![allow(clippy::unwrap_used)] // the test kit's fixtures fail loudly, as in the tests

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fleet_sim/mod.rs"]
mod fleet_sim;

use std::process::ExitCode;

fn main() -> ExitCode {
    let devices = match std::env::args().nth(1).map(|n| n.parse::<usize>()) {
        None => 200,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: fleet [DEVICES]   (a whole number above 0; 200 by default)");
            return ExitCode::from(2);
        }
    };
    let reports = [fleet_sim::Update::Image, fleet_sim::Update::Patch]
        .map(|update| fleet_sim::run(devices, update));
    let bytes = |r: &fleet_sim::Report| r.github.bytes + r.r2.bytes;
    for report in &reports {
        print!("{report}");
    }
    println!(
        "by patch, the fleet downloaded {:.3} of the bytes",
        bytes(&reports[1]) as f64 / bytes(&reports[0]) as f64
    );
    let healthy =
        |r: &fleet_sim::Report| r.unbootable == 0 && r.on_new == r.devices && r.failures.is_empty();
    if reports.iter().all(healthy) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
