//! `clockrel check` end to end: the binary, real files, exit codes and both output forms.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::path::{Path, PathBuf};

use common::{clockrel, stderr, stdout};
use testkit::FirmwareElf;

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn image(&self, name: &str, elf: &FirmwareElf) -> PathBuf {
        self.write(name, common::app_image(elf))
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        clockrel(self.path(), args)
    }
}

fn wordclock_table() -> String {
    common::workspace()
        .join("partitions/partitions.csv")
        .display()
        .to_string()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

fn rule<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == id)
        .unwrap()
}

#[test]
fn a_sound_image_and_table_pass_with_exit_zero() {
    let s = Scratch::new();
    let image = s.image("fw.bin", &FirmwareElf::new("2.9.0"));
    let out = s.run(&[
        "check",
        "--image",
        image.to_str().unwrap(),
        "--partitions",
        &wordclock_table(),
        "--flash-size",
        "8MB",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains("verdict: safe to ship (13 rules passed)"),
        "{text}"
    );
    assert!(text.contains("version         2.9.0"), "{text}");
    assert!(text.contains("ota_1"), "{text}");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn json_reports_the_image_the_slots_and_every_rule() {
    let s = Scratch::new();
    let image = s.image("fw.bin", &FirmwareElf::new("3.1.4").secure_version(5));
    let bytes = std::fs::read(&image).unwrap();
    let out = s.run(&[
        "check",
        "--image",
        image.to_str().unwrap(),
        "--partitions",
        &wordclock_table(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let report = json(&out);
    assert_eq!(report["ok"], true);
    assert_eq!(report["image"]["version"], "3.1.4");
    assert_eq!(report["image"]["secure_version"], 5);
    assert_eq!(report["image"]["chip"], "esp32s3");
    assert_eq!(report["image"]["size"], bytes.len());
    assert_eq!(
        report["image"]["sha256"],
        ota_core::Sha256::of(&bytes).to_string()
    );
    assert_eq!(report["image"]["segments"].as_array().unwrap().len(), 5);
    // No --flash-size and no config: the image header's 8MB is used, and said so.
    assert_eq!(report["flash_size"]["value"], "8MB");
    assert_eq!(report["flash_size"]["from"], "image-header");
    assert_eq!(report["headroom"]["value"], 20);
    let slots = report["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2);
    assert_eq!(slots[0]["size"], 0x300000);
    assert_eq!(slots[0]["free"], 0x300000 - bytes.len());
    let ids: Vec<_> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "chip",
            "chip-revision",
            "efuse-block-revision",
            "segment-mapping",
            "load-address",
            "table",
            "no-overlaps",
            "app-alignment",
            "otadata",
            "ota-slots",
            "factory-not-ota",
            "inside-flash",
            "headroom"
        ]
    );
}

#[test]
fn a_table_running_past_the_flash_fails_with_exit_three_and_the_numbers() {
    let s = Scratch::new();
    let image = s.image("fw.bin", &FirmwareElf::new("2.9.0"));
    let out = s.run(&[
        "check",
        "--image",
        image.to_str().unwrap(),
        "--partitions",
        &wordclock_table(),
        "--flash-size",
        "4MB",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let text = stdout(&out);
    assert!(
        text.contains("FAIL  inside-flash    ota_0 ends at 0x410000, past the 4MB flash (0x400000); ota_1 ends at 0x710000"),
        "{text}"
    );
    assert!(
        text.contains("verdict: NOT safe to ship: 1 rule(s) failed"),
        "{text}"
    );
}

#[test]
fn slots_too_small_by_less_than_the_headroom_fail() {
    let s = Scratch::new();
    // 1 MiB slots; an image of about 0.9 MiB fits, but not with 20 % to spare.
    let image = s.image("fw.bin", &FirmwareElf::new("2.9.0").payload_len(900 * 1024));
    let size = std::fs::metadata(&image).unwrap().len();
    assert!(
        size < 1 << 20 && size * 12 / 10 > 1 << 20,
        "image of {size} bytes does not sit in the gap"
    );
    let table = common::workspace().join("partitions/examples/4mb-two-ota.csv");
    let out = s.run(&[
        "check",
        "--image",
        image.to_str().unwrap(),
        "--partitions",
        table.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let report = json(&out);
    let headroom = rule(&report, "headroom");
    assert_eq!(headroom["status"], "fail");
    let detail = headroom["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("ota_0 is 0x100000 (1.00 MiB) but a "),
        "{detail}"
    );
    assert!(detail.contains("with 20 % headroom needs"), "{detail}");
    let slots = report["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2, "{slots:?}");
    assert!(
        slots
            .iter()
            .all(|s| s["fits"] == false && s["free"].as_u64().unwrap() > 0)
    );
    // The same image passes with a smaller headroom.
    let out = s.run(&[
        "check",
        "--image",
        image.to_str().unwrap(),
        "--partitions",
        table.to_str().unwrap(),
        "--headroom",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn elf_input_is_made_into_an_image_as_a_release_would() {
    let s = Scratch::new();
    let elf = FirmwareElf::new("2.9.0");
    let elf_path = s.write("wordclock.elf", elf.build());
    let out = s.run(&[
        "check",
        "--elf",
        elf_path.to_str().unwrap(),
        "--partitions",
        &wordclock_table(),
        "--flash-size",
        "8MB",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report = json(&out);
    let expected = common::app_image(&elf);
    assert_eq!(
        report["image"]["sha256"],
        ota_core::Sha256::of(&expected).to_string()
    );
    assert_eq!(report["image"]["flash_size"], "8MB");
    assert_eq!(report["image"]["elf"], elf_path.to_str().unwrap());
    assert_eq!(
        rule(&report, "chip")["status"],
        "skip",
        "an image made for the chip cannot fail it"
    );

    // Without a flash size, the size espflash was told is no evidence: the rule is skipped.
    let out = s.run(&[
        "check",
        "--elf",
        elf_path.to_str().unwrap(),
        "--partitions",
        &wordclock_table(),
        "--json",
    ]);
    let report = json(&out);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(report["flash_size"], serde_json::Value::Null);
    assert_eq!(rule(&report, "inside-flash")["status"], "skip");
}

#[test]
fn an_image_for_another_chip_fails_the_chip_rule() {
    let s = Scratch::new();
    let image = s.image("fw.bin", &FirmwareElf::new("2.9.0"));
    let out = s.run(&[
        "check",
        "--image",
        image.to_str().unwrap(),
        "--chip",
        "esp32c3",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let report = json(&out);
    assert_eq!(
        rule(&report, "chip")["detail"],
        "the image is built for esp32s3, but command line expects esp32c3"
    );
    assert_eq!(rule(&report, "table")["status"], "skip");
}

#[test]
fn a_malformed_image_is_bad_input_with_the_offset() {
    let s = Scratch::new();
    let mut bytes = common::app_image(&FirmwareElf::new("2.9.0").payload_len(4096));
    bytes[0x20] = 0;
    let image = s.write("fw.bin", &bytes);
    let out = s.run(&["check", "--image", image.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: {}: app image, at byte 0x20: app descriptor magic is 0xabcd5400",
            image.display()
        )),
        "{err}"
    );
    assert!(err.contains("\n  hint: "), "{err}");
    assert!(stdout(&out).is_empty());
    let elf = s.write("not-an-elf", b"\x7fELF but not really");
    let out = s.run(&["check", "--elf", elf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: cannot make an app image from "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tables_esp_idf_refuses_fail_the_matching_rule() {
    let s = Scratch::new();
    let overlap = s.write(
        "overlap.csv",
        "nvs, data, nvs, 0x9000, 0x6000\notadata, data, ota, 0xf000, 0x2000\nota_0, app, ota_0, 0x20000, 0x100000\nota_1, app, ota_1, 0x100000, 0x100000\n",
    );
    let out = s.run(&["check", "--partitions", overlap.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(rule(&report, "no-overlaps")["status"], "fail");
    assert!(
        rule(&report, "no-overlaps")["detail"]
            .as_str()
            .unwrap()
            .contains("'ota_0' and 'ota_1'")
    );

    let unaligned = s.write(
        "unaligned.csv",
        "nvs, data, nvs, 0x9000, 0x6000\nfactory, app, factory, 0x18000, 0x100000\n",
    );
    let out = s.run(&[
        "check",
        "--partitions",
        unaligned.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(rule(&json(&out), "app-alignment")["status"], "fail");
}

#[test]
fn a_binary_table_is_read_like_its_csv() {
    let s = Scratch::new();
    let csv = std::fs::read_to_string(wordclock_table()).unwrap();
    let table = esp_idf_part::PartitionTable::try_from_str(csv).unwrap();
    let bin = s.write("partitions.bin", table.to_bin().unwrap());
    let out = s.run(&[
        "check",
        "--partitions",
        bin.to_str().unwrap(),
        "--flash-size",
        "8MB",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        json(&out)["partitions"]["partitions"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
}

#[test]
fn unreadable_inputs_are_bad_input() {
    let s = Scratch::new();
    let out = s.run(&["check", "--partitions", "missing.csv"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).starts_with("error: cannot read partition table missing.csv: "),
        "{}",
        stderr(&out)
    );
    let garbage = s.write("garbage.bin", [0xAA, 0x50, 0x00, 0x01, 0x02]);
    let out = s.run(&["check", "--partitions", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let binary = s.write("binary.csv", [0xFF, 0xFE, 0x00]);
    let out = s.run(&["check", "--partitions", binary.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("neither UTF-8 CSV text nor a binary table"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_two() {
    let s = Scratch::new();
    let out = s.run(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nothing to check"));
    assert_eq!(
        s.run(&["check", "--flash-size", "3MB", "--partitions", "x"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        s.run(&["check", "--image", "a", "--elf", "b"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(s.run(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn settings_come_from_clockrel_toml_when_not_given() {
    let s = Scratch::new();
    std::fs::create_dir(s.path().join("partitions")).unwrap();
    std::fs::copy(wordclock_table(), s.path().join("partitions/table.csv")).unwrap();
    s.write(
        "clockrel.toml",
        "[firmware]\nchip = \"esp32s3\"\n\n[flash]\nsize = \"4MB\"\npartitions = \"partitions/table.csv\"\nheadroom = 30\n",
    );
    std::fs::create_dir(s.path().join("sub")).unwrap();
    let image = s.image("fw.bin", &FirmwareElf::new("2.9.0"));
    let out = clockrel(
        &s.path().join("sub"),
        &["check", "--image", image.to_str().unwrap(), "--json"],
    );
    let report = json(&out);
    assert_eq!(report["flash_size"]["value"], "4MB");
    assert_eq!(report["flash_size"]["from"], "config");
    assert_eq!(report["headroom"]["value"], 30);
    assert_eq!(report["chip"]["from"], "config");
    assert_eq!(rule(&report, "inside-flash")["status"], "fail");
    assert_eq!(out.status.code(), Some(3));

    s.write("clockrel.toml", "[flash]\nsize = \"lots\"\n");
    let out = s.run(&["check", "--image", image.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("clockrel.toml: "), "{}", stderr(&out));
}

#[test]
fn help_teaches_the_rules_and_exit_codes() {
    let s = Scratch::new();
    let out = s.run(&["check", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for needle in [
        "--image",
        "--elf",
        "--partitions",
        "--flash-size",
        "--headroom",
        "--json",
        "Examples:",
        "Exit codes",
    ] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
}
