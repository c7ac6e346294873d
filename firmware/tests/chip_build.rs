//! The chip build's settings that the OTA design stands on. They cannot be built here, so
//! they are read: a change that would ship a fleet without rollback, or with an unpinned
//! ESP-IDF, fails on the host.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

#[test]
fn sdkconfig_turns_on_rollback_the_bundle_and_the_fleets_flash() {
    let sdkconfig = read("firmware/sdkconfig.defaults");
    let settings: Vec<&str> = sdkconfig
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for wanted in [
        // Without it the bootloader never rolls back, whatever the health checks say.
        "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y",
        "CONFIG_MBEDTLS_CERTIFICATE_BUNDLE=y",
        "CONFIG_APP_EXCLUDE_PROJECT_VER_VAR=y",
        "CONFIG_ESPTOOLPY_FLASHSIZE_8MB=y",
    ] {
        assert!(
            settings.contains(&wanted),
            "sdkconfig.defaults lacks {wanted}"
        );
    }
    // The flash size is the one the partition table was sized for.
    let clockrel: toml::Table = read("clockrel.toml").parse().unwrap();
    assert_eq!(clockrel["flash"]["size"].as_str(), Some("8MB"));
}

#[test]
fn the_release_builds_the_feature_that_links_through_esp_idf() {
    let clockrel: toml::Table = read("clockrel.toml").parse().unwrap();
    let features = clockrel["firmware"]["features"].as_array().unwrap();
    assert!(
        features.iter().any(|f| f.as_str() == Some("chip")),
        "clockrel release would build the word clock without `chip`: {features:?}"
    );
    let manifest: toml::Table = read("firmware/Cargo.toml").parse().unwrap();
    assert!(
        manifest["features"]["chip"].is_array(),
        "firmware/Cargo.toml has no `chip` feature"
    );
}

/// Runs firmware/flash.sh from the workspace root, as cargo runs it, on an ELF in
/// `build_dir`, with an `espflash` on the PATH that prints its arguments.
fn flash(build_dir: &Path) -> std::process::Output {
    let bin = tempfile::tempdir().unwrap();
    let espflash = bin.path().join("espflash");
    std::fs::write(&espflash, "#!/bin/sh\necho \"$@\"\n").unwrap();
    std::fs::set_permissions(
        &espflash,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    std::process::Command::new("sh")
        .args(["firmware/flash.sh"])
        .arg(build_dir.join("wordclock"))
        .env("PATH", path)
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn cargo_run_flashes_the_builds_own_bootloader_and_the_fleets_table() {
    let build = tempfile::tempdir().unwrap();
    std::fs::write(build.path().join("wordclock"), b"elf").unwrap();
    let out = flash(build.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bootloader.bin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // esp-idf-sys copies its bootloader beside the ELF.
    std::fs::write(build.path().join("bootloader.bin"), b"boot").unwrap();
    let out = flash(build.path());
    assert_eq!(out.status.code(), Some(0));
    let args = String::from_utf8(out.stdout).unwrap();
    let dir = build.path().display();
    assert_eq!(
        args.trim(),
        format!(
            "flash --monitor --bootloader {dir}/bootloader.bin \
             --partition-table partitions/partitions.csv {dir}/wordclock"
        )
    );
    assert!(root().join("partitions/partitions.csv").is_file());
}

#[test]
fn the_esp_idf_release_is_pinned_and_the_sdkconfig_path_exists() {
    let manifest: toml::Table = read("firmware/Cargo.toml").parse().unwrap();
    let esp = &manifest["package"]["metadata"]["esp-idf-sys"];
    let version = esp["esp_idf_version"].as_str().unwrap();
    let parts: Vec<&str> = version.trim_start_matches('v').split('.').collect();
    assert!(
        version.starts_with('v')
            && parts.len() == 3
            && parts.iter().all(|p| p.parse::<u8>().is_ok()),
        "ESP-IDF must be pinned to a release tag (vX.Y.Z), not {version}"
    );
    assert_eq!(esp["mcu"].as_str(), Some("esp32s3"));
    let defaults = esp["esp_idf_sdkconfig_defaults"].as_array().unwrap();
    assert!(
        defaults
            .iter()
            .any(|p| p.as_str() == Some("firmware/sdkconfig.defaults")),
        "esp-idf-sys must read the sdkconfig.defaults the other test checks"
    );
    for path in defaults {
        assert!(root().join(path.as_str().unwrap()).is_file(), "{path}");
    }
}

#[test]
fn the_chip_config_stays_out_of_host_builds_and_flashes_the_fleets_table() {
    let chip: toml::Table = read("firmware/esp.toml").parse().unwrap();
    assert_eq!(
        chip["build"]["target"].as_str(),
        Some("xtensa-esp32s3-espidf")
    );
    let runner = chip["target"]["xtensa-esp32s3-espidf"]["runner"]
        .as_str()
        .unwrap();
    assert_eq!(runner, "sh firmware/flash.sh");
    // The workspace's own cargo config names no target: host builds stay host builds.
    let host: toml::Table = read(".cargo/config.toml").parse().unwrap();
    assert!(host.get("build").and_then(|b| b.get("target")).is_none());
    assert!(!root().join("rust-toolchain.toml").exists());
}
