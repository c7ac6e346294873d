//! The word clock's firmware.
//!
//! On the ESP32-S3 it runs on ESP-IDF through the thin glue in `espidf` (compiled only
//! there); every decision (what to download, what to trust, when to roll back) lives in
//! `ota-core`, so that it is tested on the host. On the host this crate is the
//! simulated device.

/// The version this build reports and embeds in its app descriptor. It comes from
/// Cargo.toml, which `clockrel release` bumps, so the image and the manifest agree.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod app;
pub mod health;
pub mod session;
#[cfg(not(target_os = "espidf"))]
pub mod sim;
