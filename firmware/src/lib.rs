//! The word clock's firmware.
//!
//! On the ESP32-S3 it runs on ESP-IDF through the thin glue in `espidf` (compiled only
//! there); every decision (what to download, what to trust, when to roll back) lives in
//! `ota-core`, so that it is tested on the host. On the host this crate is the
//! simulated device.

/// The version this build reports and embeds in its app descriptor. It comes from
/// Cargo.toml, which `clockrel release` bumps, so the image and the manifest agree.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The public keys whose signatures this firmware accepts: the same file `clockrel stage`
/// checks a release's key against, so a release the CLI signs is one the fleet trusts.
pub const TRUSTED_KEYS: &str = include_str!("../trusted-keys.txt");

pub mod app;
pub mod health;
pub mod identity;
pub mod provision;
pub mod session;
#[cfg(not(target_os = "espidf"))]
pub mod sim;
pub mod ws2812;

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_trusted_keys_and_version_parse() {
        assert!(ota_core::manifest::PublicKey::parse_list(super::TRUSTED_KEYS).is_ok());
        assert!(super::VERSION.parse::<ota_core::Version>().is_ok());
    }
}
