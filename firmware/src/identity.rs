//! How the clock names itself to Home Assistant: its device info, the same on the chip
//! and in the simulator, and the simulator's default device id.

use ota_core::mqtt::{Device, github_repository};
use ota_core::{Sha256, Version};

/// The device info of a clock running `version` on `hardware` (such as
/// `ESP32-S3 rev v0.2`), with Wi-Fi MAC `mac`, whose firmware the GitHub source at
/// `github_base` serves: its repository is where the firmware is configured, and its
/// releases page is where the update entity's release notes link to.
pub fn device(
    version: Version,
    hardware: String,
    mac: Option<[u8; 6]>,
    github_base: &str,
) -> Device {
    let repository = github_repository(github_base);
    Device {
        name: "Word clock".into(),
        model: "Word clock".into(),
        manufacturer: Some("clockrel".into()),
        sw_version: version,
        hw_version: Some(hardware),
        releases_url: repository.as_ref().map(|page| format!("{page}/releases")),
        configuration_url: repository,
        mac,
    }
}

/// The simulator's device id when none is given: `wordclock-` and six hex digits of
/// `seed` (the flash file's path), so two simulated clocks never share topics.
pub fn default_device_id(seed: &[u8]) -> String {
    let digest = Sha256::of(seed).to_string();
    format!("wordclock-{}", &digest[..6])
}

/// A locally administered MAC for a simulated clock, stable for its device id.
pub fn simulated_mac(device_id: &str) -> [u8; 6] {
    let digest = Sha256::of(device_id.as_bytes());
    let bytes = digest.as_bytes();
    [0x02, bytes[0], bytes[1], bytes[2], bytes[3], bytes[4]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_differ_per_flash_file_and_name_topics() {
        let one = default_device_id(b"/tmp/a/flash.bin");
        let two = default_device_id(b"/tmp/b/flash.bin");
        assert_ne!(one, two);
        assert_eq!(one, default_device_id(b"/tmp/a/flash.bin"));
        assert!(ota_core::mqtt::Topics::new(&one).is_ok(), "{one}");
    }

    #[test]
    fn a_github_source_gives_the_repository_and_its_releases() {
        let device = device(
            "2.9.0".parse().unwrap_or_else(|_| unreachable!()),
            "ESP32-S3 rev v0.2".into(),
            Some(simulated_mac("clock1")),
            "https://raw.githubusercontent.com/acme/wordclock/main/ota_files/",
        );
        assert_eq!(
            device.configuration_url.as_deref(),
            Some("https://github.com/acme/wordclock")
        );
        assert_eq!(
            device.releases_url.as_deref(),
            Some("https://github.com/acme/wordclock/releases")
        );
        assert_eq!(device.mac.map(|m| m[0]), Some(0x02), "locally administered");
        let elsewhere = super::device(
            "2.9.0".parse().unwrap_or_else(|_| unreachable!()),
            String::new(),
            None,
            "http://127.0.0.1:8080/",
        );
        assert_eq!(elsewhere.configuration_url, None);
    }
}
