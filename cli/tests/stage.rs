//! `clockrel keygen` and `clockrel stage` end to end, in a scratch repository: what is
//! written, what is refused, and that a refusal changes nothing.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::collections::BTreeMap;
use std::process::Output;

use common::repo::Repo;
use common::{stderr, stdout};
use ota_core::Sha256;
use testkit::FirmwareElf;

#[test]
fn stage_writes_the_image_the_alias_and_a_signed_manifest() {
    let repo = Repo::new();
    let elf = FirmwareElf::new("2.9.0").secure_version(1);
    let out = repo.stage("v2.9.0", &elf);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let image = common::app_image(&elf);

    let files = repo.ota_files();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["version.json", "wordclock-v2.9.0.bin", "wordclock.bin"]
    );
    assert_eq!(files["wordclock-v2.9.0.bin"], image);
    assert_eq!(files["wordclock.bin"], image);

    let m = repo.manifest();
    assert!(m.verify(&repo.trusted()).is_ok());
    assert_eq!(m.format, Some(1));
    assert_eq!(m.version.to_string(), "2.9.0");
    assert_eq!(m.sha256, Sha256::of(&image));
    assert_eq!(m.firmware_size, image.len() as u64);
    assert_eq!(m.file.as_deref(), Some("wordclock-v2.9.0.bin"));
    assert_eq!(m.secure_version, Some(1));
    assert_eq!(m.chip, Some(ota_core::Chip::Esp32S3));
    assert_eq!(
        m.firmware_url.as_deref(),
        Some(
            "https://raw.githubusercontent.com/acme/wordclock/main/ota_files/wordclock-v2.9.0.bin"
        )
    );
    assert_eq!(m.release_date.as_deref(), Some("2026-11-18T11:06:40Z"));
    assert_eq!(m.esp_idf_version.as_deref(), Some("v5.3.2"));
    assert_eq!(m.requires_restart, Some(true));
    assert!(stdout(&out).contains("staged v2.9.0"), "{}", stdout(&out));

    // The next release replaces the manifest and alias, and keeps the old image.
    let out = repo.stage(
        "2.10.0-rc.1",
        &FirmwareElf::new("2.10.0-rc.1").secure_version(1),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let files = repo.ota_files();
    assert_eq!(files.len(), 4);
    assert_eq!(files["wordclock-v2.9.0.bin"], image);
    assert_eq!(
        repo.manifest().file.as_deref(),
        Some("wordclock-v2.10.0-rc.1.bin")
    );
}

/// The stage exited 3 with `rule` failed and said it wrote nothing (the callers check that it did not).
fn assert_refused_without_change(refused: Output, rule: &str) {
    let text = stdout(&refused);
    assert_eq!(refused.status.code(), Some(3), "{text}{}", stderr(&refused));
    assert!(
        text.contains(&format!("FAIL  {rule:<15}")),
        "expected {rule} to fail:\n{text}"
    );
    assert!(text.contains("ota_files/ is unchanged"), "{text}");
}

fn staged_repo() -> (Repo, BTreeMap<String, Vec<u8>>) {
    let repo = Repo::new();
    let out = repo.stage("v2.9.0", &FirmwareElf::new("2.9.0").secure_version(2));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let before = repo.ota_files();
    (repo, before)
}

#[test]
fn an_image_whose_embedded_version_differs_is_refused() {
    let (repo, before) = staged_repo();
    let out = repo.stage("v2.10.0", &FirmwareElf::new("2.9.1").secure_version(2));
    assert_refused_without_change(out, "version");
    assert_eq!(repo.ota_files(), before);
}

#[test]
fn a_version_not_above_the_staged_one_is_refused() {
    let (repo, before) = staged_repo();
    for version in ["2.9.0", "2.8.5", "2.9.0-rc.9"] {
        let out = repo.stage(version, &FirmwareElf::new(version).secure_version(2));
        assert_refused_without_change(out, "newer");
        assert_eq!(repo.ota_files(), before, "{version}");
    }
}

#[test]
fn a_lower_secure_version_is_refused() {
    let (repo, before) = staged_repo();
    let out = repo.stage("v2.10.0", &FirmwareElf::new("2.10.0").secure_version(1));
    assert_refused_without_change(out, "secure-version");
    assert_eq!(repo.ota_files(), before);
}

#[test]
fn an_image_for_another_chip_is_refused() {
    let repo = Repo::new();
    let config = std::fs::read_to_string(repo.root().join("clockrel.toml")).unwrap();
    std::fs::write(
        repo.root().join("clockrel.toml"),
        config.replace("esp32s3", "esp32c3"),
    )
    .unwrap();
    let out = repo.stage("v2.9.0", &FirmwareElf::new("2.9.0"));
    assert_eq!(out.status.code(), Some(3));
    assert!(stdout(&out).contains("FAIL  chip"), "{}", stdout(&out));
    assert!(repo.ota_files().is_empty());
}

#[test]
fn a_failed_check_rule_stops_the_stage() {
    let (repo, before) = staged_repo();
    // 3 MiB slots; 2.8 MiB of payload leaves less than 20 % headroom.
    let out = repo.stage(
        "v2.10.0",
        &FirmwareElf::new("2.10.0")
            .secure_version(2)
            .payload_len(2800 * 1024),
    );
    assert_refused_without_change(out, "headroom");
    assert_eq!(repo.ota_files(), before);
}

#[test]
fn a_release_without_a_partition_table_or_trusted_keys_is_refused() {
    let repo = Repo::new();
    let config = std::fs::read_to_string(repo.root().join("clockrel.toml")).unwrap();
    let without = |line: &str| config.replace(line, "");
    for (edited, rule) in [
        (
            without("partitions = \"partitions/partitions.csv\"\n"),
            "headroom",
        ),
        (
            without("trusted_keys = \"firmware/trusted-keys.txt\"\n"),
            "trusted-key",
        ),
    ] {
        std::fs::write(repo.root().join("clockrel.toml"), edited).unwrap();
        let out = repo.stage("v2.9.0", &FirmwareElf::new("2.9.0"));
        assert_refused_without_change(out, rule);
        assert!(repo.ota_files().is_empty());
    }
}

#[test]
fn a_key_the_firmware_does_not_trust_is_refused() {
    let (repo, before) = staged_repo();
    let out = repo.run(&["keygen", "--out", "secrets/other.key"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let image = repo.image(&FirmwareElf::new("2.10.0").secure_version(2));
    let out = repo.run(
        &[
            "stage",
            "v2.10.0",
            "--image",
            image.to_str().unwrap(),
            "--key",
            "secrets/other.key",
        ],
        &[],
    );
    assert_refused_without_change(out, "trusted-key");
    assert_eq!(repo.ota_files(), before);
}

#[test]
fn a_taken_image_name_is_never_overwritten() {
    let (repo, _) = staged_repo();
    std::fs::write(
        repo.root().join("ota_files/wordclock-v2.10.0.bin"),
        b"left over",
    )
    .unwrap();
    let before = repo.ota_files();
    let out = repo.stage("v2.10.0", &FirmwareElf::new("2.10.0").secure_version(2));
    assert_refused_without_change(out, "image-name");
    assert_eq!(repo.ota_files(), before);
}

#[test]
fn an_interrupted_stage_keeps_the_previous_release_and_can_be_rerun() {
    let (repo, before) = staged_repo();
    // The alias cannot be replaced: the stage dies after writing the new versioned image.
    let alias = repo.root().join("ota_files/wordclock.bin");
    std::fs::remove_file(&alias).unwrap();
    std::fs::create_dir_all(alias.join("blocker")).unwrap();
    let elf = FirmwareElf::new("2.10.0").secure_version(2);
    let out = repo.stage("v2.10.0", &elf);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("version.json still names the previous release"),
        "{}",
        stderr(&out)
    );
    let m = repo.manifest();
    assert_eq!(m.version.to_string(), "2.9.0");
    assert!(m.verify(&repo.trusted()).is_ok());
    let old_image = std::fs::read(repo.root().join("ota_files/wordclock-v2.9.0.bin")).unwrap();
    assert_eq!(old_image, before["wordclock-v2.9.0.bin"]);

    std::fs::remove_dir_all(&alias).unwrap();
    let out = repo.stage("v2.10.0", &elf);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("unchanged /"),
        "the versioned image was already there:\n{}",
        stdout(&out)
    );
    assert_eq!(repo.manifest().version.to_string(), "2.10.0");
}

#[test]
fn the_key_comes_from_the_environment_and_never_shows() {
    let repo = Repo::new();
    let secret = std::fs::read_to_string(&repo.key).unwrap();
    let hex = repo.secret_hex();
    let image = repo.image(&FirmwareElf::new("2.9.0"));
    let image = image.to_str().unwrap();

    let out = repo.run(
        &["stage", "v2.9.0", "--image", image, "--json"],
        &[("CLOCKREL_SIGNING_KEY", &secret)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["staged"]["key_source"], "$CLOCKREL_SIGNING_KEY");
    let mut seen =
        stdout(&out) + &stderr(&out) + &String::from_utf8_lossy(&repo.ota_files()["version.json"]);

    let key_file = repo.key.to_str().unwrap();
    let out = repo.run(
        &["stage", "v2.9.1", "--image", image],
        &[("CLOCKREL_SIGNING_KEY_FILE", key_file)],
    );
    assert_eq!(out.status.code(), Some(3), "the image says 2.9.0");
    seen += &(stdout(&out) + &stderr(&out));

    // A damaged key in the environment is named, not echoed.
    let damaged = secret.replace("clockrel-secret-ed25519:", "clockrel-secret-ed25519:zz");
    let out = repo.run(
        &["stage", "v2.9.1", "--image", image],
        &[("CLOCKREL_SIGNING_KEY", &damaged)],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("not a clockrel secret key")
            && stderr(&out).contains("$CLOCKREL_SIGNING_KEY")
    );
    seen += &(stdout(&out) + &stderr(&out));

    assert!(
        !seen.contains(&hex),
        "the secret key appeared in output or the manifest"
    );
    assert!(
        !seen.contains(&hex[..16]),
        "part of the secret key appeared in output"
    );
}

#[test]
fn no_key_is_a_usage_error_with_a_hint() {
    let repo = Repo::new();
    let image = repo.image(&FirmwareElf::new("2.9.0"));
    let out = repo.run(
        &["stage", "v2.9.0", "--image", image.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no signing key") && stderr(&out).contains("clockrel keygen"),
        "{}",
        stderr(&out)
    );
    assert!(repo.ota_files().is_empty());
}

#[test]
fn stage_from_an_elf_ships_the_image_espflash_makes() {
    let repo = Repo::new();
    let elf = FirmwareElf::new("2.9.0");
    let elf_path = repo.root().join("wordclock.elf");
    std::fs::write(&elf_path, elf.build()).unwrap();
    let out = repo.run(
        &[
            "stage",
            "v2.9.0",
            "--elf",
            elf_path.to_str().unwrap(),
            "--key",
            repo.key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        repo.ota_files()["wordclock-v2.9.0.bin"],
        common::app_image(&elf)
    );
}

#[test]
fn keygen_never_overwrites_and_keeps_the_key_private() {
    let repo = Repo::new();
    let before = std::fs::read(&repo.key).unwrap();
    let out = repo.run(&["keygen", "--out", repo.key.to_str().unwrap()], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error, not an unexpected one"
    );
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&repo.key).unwrap(), before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&repo.key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let out = repo.run(&["keygen", "--out", "secrets/second.key"], &[]);
    assert!(
        stdout(&out).contains("public key  ed25519:"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains(&repo.secret_hex()));
}

#[test]
fn a_build_metadata_version_or_a_missing_image_is_a_usage_error() {
    let repo = Repo::new();
    let image = repo.image(&FirmwareElf::new("2.9.0"));
    let key = repo.key.to_str().unwrap();
    let out = repo.run(
        &[
            "stage",
            "2.9.0+local",
            "--image",
            image.to_str().unwrap(),
            "--key",
            key,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        repo.run(&["stage", "v2.9.0", "--key", key], &[])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        repo.run(&["stage", "latest", "--key", key], &[])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn verify_file_checks_a_staged_manifest_and_its_image_without_a_server() {
    let repo = Repo::new();
    let out = repo.stage("v2.9.0", &FirmwareElf::new("2.9.0"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let manifest = repo.root().join("ota_files/version.json");
    let out = repo.run(&["verify", "--file", manifest.to_str().unwrap()], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("v2.9.0 signed by trusted key"),
        "{}",
        stdout(&out)
    );

    // One byte of the image changed: refused, and said why.
    let image = repo.root().join("ota_files/wordclock-v2.9.0.bin");
    let mut bytes = std::fs::read(&image).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&image, &bytes).unwrap();
    let out = repo.run(&["verify", "--file", manifest.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("appended SHA-256"),
        "{}",
        stdout(&out)
    );

    // A signed field changed: the signature no longer holds.
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"2.9.0\"", "\"2.9.1\"")).unwrap();
    let out = repo.run(&["verify", "--file", manifest.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(stdout(&out).contains("signature"), "{}", stdout(&out));
}

#[test]
fn the_key_keygen_makes_by_default_is_the_one_stage_signs_with() {
    let repo = Repo::new();
    let home = tempfile::tempdir().unwrap();
    let config_home = home.path().to_str().unwrap();
    let env = [("XDG_CONFIG_HOME", config_home)];
    let out = repo.run(&["keygen", "--json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::write(
        repo.root().join("firmware/trusted-keys.txt"),
        format!("{}\n", made["public_key"].as_str().unwrap()),
    )
    .unwrap();
    let image = repo.image(&FirmwareElf::new("2.9.0"));
    let out = repo.run(
        &["stage", "v2.9.0", "--image", image.to_str().unwrap()],
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let key_id = made["key_id"].as_str().unwrap();
    assert_eq!(
        repo.manifest().signature.unwrap().key_id.to_string(),
        key_id
    );
    // Without it there, no key is found, and stage says how to make one.
    let out = repo.run(
        &["stage", "v2.9.1", "--image", image.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Sets the config's `[delta]` section to `settings` alone.
fn set_delta(repo: &Repo, settings: &str) {
    let config = repo.root().join("clockrel.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let kept = text.split("\n[delta]\n").next().unwrap();
    std::fs::write(&config, format!("{kept}\n[delta]\n{settings}\n")).unwrap();
}

/// Stages `version` of a build that differs from the others by its version alone.
fn stage_bump(repo: &Repo, version: &str) -> Output {
    let out = repo.stage(version, &FirmwareElf::new(version).code_of("wordclock"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

#[test]
fn stage_lists_patches_from_the_latest_earlier_images_it_has() {
    let repo = Repo::new();
    for version in ["1.0.0", "1.1.0", "1.2.0-rc.1"] {
        stage_bump(&repo, version);
    }
    // A look-alike name is not a base; an unreadable image is skipped with why.
    let files = repo.root().join("ota_files");
    std::fs::write(files.join("wordclock-v1.1.5.bin.bak"), b"old").unwrap();
    std::fs::write(files.join("wordclock-v0.9.0.bin"), b"not an image").unwrap();
    let out = stage_bump(&repo, "1.2.0");
    let text = stdout(&out);
    let manifest = repo.manifest();
    let from: Vec<String> = manifest
        .patches
        .iter()
        .map(|p| p.from.to_string())
        .collect();
    assert_eq!(
        from,
        ["1.2.0-rc.1", "1.1.0"],
        "the two latest, newest first"
    );
    for patch in &manifest.patches {
        let bytes = &repo.ota_files()[&patch.file];
        assert_eq!(patch.sha256, Sha256::of(bytes));
        assert!(
            text.contains(&format!("patch     {} from v{}", patch.file, patch.from)),
            "{text}"
        );
        let old = &repo.ota_files()[&format!("wordclock-v{}.bin", patch.from)];
        let new = &repo.ota_files()["wordclock-v1.2.0.bin"];
        assert_eq!(&testkit::detools::apply_patch(old, &bytes[64..]), new);
    }
    assert!(manifest.verify(&repo.trusted()).is_ok());

    // More bases reach the unreadable image, which is named and skipped.
    set_delta(&repo, "bases = 5");
    let out = stage_bump(&repo, "1.3.0");
    let manifest = repo.manifest();
    let from: Vec<String> = manifest
        .patches
        .iter()
        .map(|p| p.from.to_string())
        .collect();
    // The staged release, then releases, then the release candidate.
    assert_eq!(from, ["1.2.0", "1.1.0", "1.0.0", "1.2.0-rc.1"]);
    let text = stdout(&out);
    assert!(
        text.contains("no patch  from v0.9.0: ") && text.contains("not a valid app image"),
        "{text}"
    );

    // None at all when turned off.
    set_delta(&repo, "bases = 0");
    stage_bump(&repo, "1.4.0");
    assert!(repo.manifest().patches.is_empty());
    assert!(
        !repo
            .ota_files()
            .keys()
            .any(|name| name.contains("-to-v1.4.0"))
    );
}

#[test]
fn a_patch_limit_outside_one_to_a_hundred_percent_or_too_many_bases_is_refused() {
    let repo = Repo::new();
    for (setting, why) in [
        ("max_percent = 0", "delta.max_percent is 0: give 1 to 100"),
        (
            "bases = 9",
            "delta.bases is 9: a manifest lists at most 8 patches",
        ),
    ] {
        set_delta(&repo, setting);
        let out = repo.stage("1.0.0", &FirmwareElf::new("1.0.0"));
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
        assert!(repo.ota_files().is_empty());
    }
}

#[test]
fn the_staged_release_and_stable_releases_come_before_release_candidates_as_bases() {
    let repo = Repo::new();
    for version in ["1.0.0", "1.1.0-rc.1", "1.1.0-rc.2"] {
        stage_bump(&repo, version);
    }
    stage_bump(&repo, "1.1.0");
    let from: Vec<String> = repo
        .manifest()
        .patches
        .iter()
        .map(|p| p.from.to_string())
        .collect();
    // The fleet was last offered rc.2; the stable fleet runs 1.0.0; rc.1 waits.
    assert_eq!(from, ["1.1.0-rc.2", "1.0.0"]);
}

#[test]
fn a_patch_name_holding_other_bytes_refuses_the_stage_and_writes_nothing() {
    let repo = Repo::new();
    stage_bump(&repo, "1.0.0");
    let taken = repo
        .root()
        .join("ota_files/wordclock-v1.0.0-to-v1.1.0.patch");
    std::fs::write(&taken, b"published long ago").unwrap();
    let before = repo.ota_files();
    let out = repo.stage("1.1.0", &FirmwareElf::new("1.1.0").code_of("wordclock"));
    assert_eq!(repo.ota_files(), before);
    assert_refused_without_change(out, "image-name");
}
