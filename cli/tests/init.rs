//! `clockrel init` on the two kinds of firmware repository it knows: an ESP-IDF C
//! project and a Rust firmware package. What it writes must be a config that
//! `clockrel release --dry-run` accepts, and it never overwrites a file.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::path::Path;

use common::{clockrel, stderr, stdout};

fn partitions(into: &Path) {
    std::fs::create_dir_all(into.parent().unwrap()).unwrap();
    std::fs::copy(common::workspace().join("partitions/partitions.csv"), into).unwrap();
}

#[test]
fn an_esp_idf_project_gets_a_config_release_accepts_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("CMakeLists.txt"),
        "cmake_minimum_required(VERSION 3.16)\ninclude($ENV{IDF_PATH}/tools/cmake/project.cmake)\nproject(wordclock)\n",
    )
    .unwrap();
    std::fs::write(
        root.join("sdkconfig.defaults"),
        "CONFIG_IDF_TARGET=\"esp32s3\"\nCONFIG_ESPTOOLPY_FLASHSIZE=\"8MB\"\nCONFIG_PARTITION_TABLE_CUSTOM=y\nCONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"ota.csv\"\n",
    )
    .unwrap();
    partitions(&root.join("ota.csv"));

    let args = [
        "init",
        "--github",
        "acme/wordclock",
        "--key",
        "secrets/release.key",
        "--workflow",
    ];
    let out = clockrel(root, &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("ESP-IDF project wordclock"),
        "{}",
        stdout(&out)
    );
    let config = std::fs::read_to_string(root.join("clockrel.toml")).unwrap();
    for needle in [
        "build = \"idf.py build\"",
        "image = \"build/wordclock.bin\"",
        "version_file = \"version.txt\"",
        "chip = \"esp32s3\"",
        "size = \"8MB\"",
        "partitions = \"ota.csv\"",
        "repository = \"acme/wordclock\"",
    ] {
        assert!(
            config.contains(needle),
            "config lacks `{needle}`:\n{config}"
        );
    }
    let trusted = std::fs::read_to_string(root.join("trusted-keys.txt")).unwrap();
    assert!(
        trusted.lines().any(|l| l.starts_with("ed25519:")),
        "{trusted}"
    );
    let workflow = root.join(".github/workflows/release.yml");
    let text = std::fs::read_to_string(&workflow).unwrap();
    assert!(
        text.contains("cargo install --locked --git https://github.com/clockrel/clockrel clockrel"),
        "a firmware repository installs clockrel from clockrel's: {text}"
    );
    let lint = std::process::Command::new(common::actionlint())
        .arg(&workflow)
        .output()
        .unwrap();
    assert!(lint.status.success(), "{}", stdout(&lint));

    let out = clockrel(
        root,
        &[
            "release",
            "v1.0.0",
            "--dry-run",
            "--key",
            "secrets/release.key",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("would          build: sh -c \"idf.py build\""),
        "{}",
        stdout(&out)
    );

    // A second init refuses and changes nothing.
    let before = std::fs::read(root.join("clockrel.toml")).unwrap();
    let out = clockrel(root, &args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("never overwrites"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(root.join("clockrel.toml")).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(root.join("trusted-keys.txt")).unwrap(),
        trusted
    );
}

#[test]
fn a_rust_firmware_package_keeps_its_key_and_gets_its_remote_and_trusted_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("firmware")).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        "[workspace]\nmembers = [\"firmware\"]\nresolver = \"3\"\n",
    )
    .unwrap();
    std::fs::write(
        root.join("firmware/Cargo.toml"),
        "[package]\nname = \"clock\"\nversion = \"0.3.0\"\nedition = \"2024\"\n\n[target.'cfg(target_os = \"espidf\")'.dependencies]\nesp-idf-svc = \"0.53\"\n",
    )
    .unwrap();
    std::fs::write(
        root.join("firmware/trusted-keys.txt"),
        "# the fleet's keys\n",
    )
    .unwrap();
    partitions(&root.join("partitions/partitions.csv"));
    let repo = git2::Repository::init(root).unwrap();
    repo.remote("origin", "git@github.com:acme/clock.git")
        .unwrap();
    // An existing key is used, not replaced.
    let out = clockrel(root, &["keygen", "--out", "release.key", "--json"]);
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let out = clockrel(root, &["--json", "init", "--key", "release.key"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["firmware"]["package"], "clock");
    assert_eq!(report["github"], "acme/clock");
    assert_eq!(report["key_made"], false);
    assert_eq!(report["public_key"], made["public_key"]);
    let trusted = std::fs::read_to_string(root.join("firmware/trusted-keys.txt")).unwrap();
    assert_eq!(
        trusted,
        format!(
            "# the fleet's keys\n{}\n",
            made["public_key"].as_str().unwrap()
        ),
        "one line added, the rest kept"
    );
    let config = std::fs::read_to_string(root.join("clockrel.toml")).unwrap();
    assert!(config.contains("package = \"clock\""), "{config}");
    assert!(
        config.contains("trusted_keys = \"firmware/trusted-keys.txt\""),
        "{config}"
    );
    assert!(!root.join(".github").exists(), "no workflow unless asked");

    let out = clockrel(
        root,
        &["release", "v1.0.0", "--dry-run", "--key", "release.key"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let plan = stdout(&out);
    assert!(
        plan.contains("would          set version 1.0.0 in firmware/Cargo.toml"),
        "{plan}"
    );
    assert!(
        plan.contains("would          build: cargo +esp build --release -p clock --target xtensa-esp32s3-espidf"),
        "{plan}"
    );
}

#[test]
fn a_directory_without_firmware_is_told_what_init_looks_for() {
    let dir = tempfile::tempdir().unwrap();
    let out = clockrel(dir.path(), &["init", "--key", "k.key"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ESP-IDF project"), "{}", stderr(&out));
    assert!(!dir.path().join("clockrel.toml").exists());
    assert!(
        !dir.path().join("k.key").exists(),
        "no key is made for nothing"
    );
}
