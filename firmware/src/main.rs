//! The word clock's firmware.
//!
//! On the ESP32-S3 it runs on ESP-IDF through the thin glue in `espidf`; every decision
//! (what to download, what to trust, when to roll back) lives in `ota-core`, so that it
//! is tested on the host. On the host this crate builds as the simulated device.

#[cfg(target_os = "espidf")]
mod espidf;

/// The version this build reports and embeds in its app descriptor. It comes from
/// Cargo.toml, which `clockrel release` bumps, so the image and the manifest agree.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(target_os = "espidf")]
fn main() {
    espidf::main();
}

#[cfg(not(target_os = "espidf"))]
fn main() {
    println!("wordclock {VERSION} (host build: the simulated device comes with the OTA engine)");
}
