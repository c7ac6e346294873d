//! A scratch firmware repository with clockrel.toml, the word clock's partition table,
//! a signing key and the trusted-keys file, and the commands run in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ota_core::Manifest;
use ota_core::manifest::PublicKey;
use testkit::FirmwareElf;

use super::stderr;

/// A firmware repository with clockrel.toml, the word clock's table and a trusted key.
pub struct Repo {
    _dir: tempfile::TempDir,
    root: PathBuf,
    pub key: PathBuf,
}

impl Repo {
    /// A repository in a fresh directory whose GitHub source is acme/wordclock.
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        Repo::create(
            dir,
            root,
            "[sources.github]\nrepository = \"acme/wordclock\"\n",
        )
    }

    /// Lays the repository out at `root` (inside `dir`, which it keeps alive), with
    /// `sources` as the config's sources section.
    pub fn create(dir: tempfile::TempDir, root: PathBuf, sources: &str) -> Repo {
        std::fs::create_dir_all(root.join("partitions")).unwrap();
        std::fs::create_dir_all(root.join("firmware")).unwrap();
        std::fs::copy(
            super::workspace().join("partitions/partitions.csv"),
            root.join("partitions/partitions.csv"),
        )
        .unwrap();
        std::fs::write(
            root.join("clockrel.toml"),
            format!(
                "[firmware]\npackage = \"wordclock\"\nchip = \"esp32s3\"\n\n[flash]\nsize = \"8MB\"\npartitions = \"partitions/partitions.csv\"\n\n[signing]\ntrusted_keys = \"firmware/trusted-keys.txt\"\n\n{sources}"
            ),
        )
        .unwrap();
        let repo = Repo {
            key: root.join("secrets/release.key"),
            root,
            _dir: dir,
        };
        let root = repo.root();
        let out = repo.run(&["keygen", "--out", "secrets/release.key", "--json"], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let keygen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        std::fs::write(
            root.join("firmware/trusted-keys.txt"),
            format!(
                "# keys the firmware trusts\n{}\n",
                keygen["public_key"].as_str().unwrap()
            ),
        )
        .unwrap();
        repo
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clockrel"));
        command
            .current_dir(self.root())
            .args(args)
            .env_remove("CLOCKREL_SIGNING_KEY")
            .env_remove("CLOCKREL_SIGNING_KEY_FILE")
            // No key of the developer's (~/.config/clockrel) ever reaches a test.
            .env("XDG_CONFIG_HOME", self.root().join(".config-of-no-one"))
            .env("SOURCE_DATE_EPOCH", "1795000000");
        // Only what a test passes: a developer's own tokens never reach a test.
        for name in [
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "R2_ACCESS_KEY_ID",
            "R2_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "CI",
        ] {
            command.env_remove(name);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    }

    pub fn image(&self, elf: &FirmwareElf) -> PathBuf {
        let path = self
            .root()
            .join(format!("build-{}-{}.bin", elf.version, elf.secure_version));
        std::fs::write(&path, super::app_image(elf)).unwrap();
        path
    }

    /// Stages `version` from an image of `elf` with the repository's key file.
    pub fn stage(&self, version: &str, elf: &FirmwareElf) -> Output {
        let image = self.image(elf);
        self.run(
            &[
                "stage",
                version,
                "--image",
                image.to_str().unwrap(),
                "--key",
                self.key.to_str().unwrap(),
            ],
            &[],
        )
    }

    /// Every file under ota_files/ with its bytes.
    pub fn ota_files(&self) -> BTreeMap<String, Vec<u8>> {
        let dir = self.root().join("ota_files");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return BTreeMap::new();
        };
        entries
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    pub fn manifest(&self) -> Manifest {
        Manifest::from_json(&std::fs::read(self.root().join("ota_files/version.json")).unwrap())
            .unwrap()
    }

    pub fn trusted(&self) -> Vec<PublicKey> {
        PublicKey::parse_list(
            &std::fs::read_to_string(self.root().join("firmware/trusted-keys.txt")).unwrap(),
        )
        .unwrap()
    }

    pub fn secret_hex(&self) -> String {
        let text = std::fs::read_to_string(&self.key).unwrap();
        text.trim().rsplit(':').next().unwrap().to_owned()
    }
}
