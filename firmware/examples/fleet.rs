//! `cargo xtask fleet [DEVICES]`: a fleet of simulated devices (200 unless told) updates
//! together while GitHub fails part-way, and the report says how each ended, what each
//! source served, the time to the last commit, and the memory it all took.
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
    let report = fleet_sim::run(devices);
    print!("{report}");
    if report.unbootable == 0 && report.on_new == report.devices && report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
