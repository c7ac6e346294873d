//! The manifest: reading, writing, signing, verifying, the committed test vectors, and the
//! update policy built on them.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

use ota_core::manifest::{
    DOMAIN, KeyId, MAX_MANIFEST_LEN, MAX_PATCHES, ManifestError, Patch, PublicKey, SecretKey,
    SignatureError,
};
use ota_core::policy::{Decision, Refusal, Rejected, Running, after_rollback, decide};
use ota_core::{Chip, Manifest, Sha256, Version};
use proptest::prelude::*;

const VECTORS: &str = "tests/vectors/manifest-v1.json";

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn release() -> Manifest {
    let json = br#"{
        "format": 1,
        "version": "2.9.0",
        "build_date": "Nov 29 2026 12:00:00",
        "sha256": "0e55e77cbbbccbe78c0a8443e5c8292945de4c0e2ab011bcc35df7b74ca5df54",
        "firmware_size": 98384,
        "firmware_url": "https://raw.githubusercontent.com/acme/wordclock/main/ota_files/wordclock-v2.9.0.bin",
        "commit_hash": "9ebff68a2f0c8d1e5b7a3c4d6e8f0a1b2c3d4e5f",
        "title": "Word clock v2.9.0",
        "description": "Brighter LEDs at night.",
        "release_date": "2026-11-29T12:00:00Z",
        "esp_idf_version": "v5.3.2",
        "requires_restart": true,
        "chip": "esp32s3",
        "secure_version": 2,
        "file": "wordclock-v2.9.0.bin"
    }"#;
    Manifest::from_json(json).unwrap()
}

fn signed() -> Manifest {
    let mut m = release();
    m.sign(&key(1));
    m
}

fn patch(from: &str, n: u8) -> Patch {
    Patch {
        from: v(from),
        base_digest: Sha256([n; 32]),
        file: format!("wordclock-v{from}-to-v2.9.0.patch"),
        size: 1500 + u64::from(n),
        sha256: Sha256([n ^ 0xff; 32]),
    }
}

/// The release with patches from 2.8.0 and 2.7.1, signed.
fn signed_with_patches() -> Manifest {
    let mut m = release();
    m.patches = vec![patch("2.8.0", 1), patch("2.7.1", 2)];
    m.sign(&key(1));
    m
}

fn v(text: &str) -> Version {
    text.parse().unwrap()
}

#[test]
fn sign_then_verify_names_the_key() {
    let m = signed();
    let trusted = [key(9).public(), key(1).public()];
    assert_eq!(m.verify(&trusted).unwrap(), &trusted[1]);
    assert_eq!(m.signature.as_ref().unwrap().key_id, key(1).public().id());
}

/// One edit of a manifest field.
type Change = fn(&mut Manifest);

#[test]
fn every_single_field_change_breaks_the_signature() {
    let trusted = [key(1).public()];
    let changes: Vec<(&str, Change)> = vec![
        ("version", |m| m.version = v("2.9.1")),
        ("prerelease", |m| m.version = v("2.9.0-rc.1")),
        ("build_date", |m| m.build_date = Some("Nov 30 2026".into())),
        ("sha256", |m| m.sha256.0[31] ^= 1),
        ("firmware_size", |m| m.firmware_size += 1),
        ("commit_hash", |m| m.commit_hash = Some("0".repeat(40))),
        ("title", |m| m.title = Some("Word clock v2.9.1".into())),
        ("description", |m| m.description = Some(String::new())),
        ("release_date", |m| {
            m.release_date = Some("2026-11-30T12:00:00Z".into())
        }),
        ("esp_idf_version", |m| {
            m.esp_idf_version = Some("v5.4".into())
        }),
        ("requires_restart", |m| m.requires_restart = Some(false)),
        ("chip", |m| m.chip = Some(Chip::Esp32C3)),
        ("secure_version", |m| m.secure_version = Some(3)),
        ("file", |m| m.file = Some("wordclock-v2.9.1.bin".into())),
    ];
    for (field, change) in changes {
        let mut m = signed();
        change(&mut m);
        assert_eq!(
            m.verify(&trusted),
            Err(SignatureError::Invalid(key(1).public().id())),
            "changing {field} kept the signature valid"
        );
        // The change also survives a trip through JSON.
        let reread = Manifest::from_json(&m.to_json()).unwrap();
        assert!(reread.verify(&trusted).is_err(), "{field} after JSON");
    }
}

#[test]
fn every_patch_field_is_signed() {
    let trusted = [key(1).public()];
    assert!(signed_with_patches().verify(&trusted).is_ok());
    let changes: Vec<(&str, Change)> = vec![
        ("from", |m| m.patches[1].from = v("2.7.0")),
        ("base_digest", |m| m.patches[0].base_digest.0[0] ^= 1),
        ("file", |m| m.patches[1].file = "other.patch".into()),
        ("size", |m| m.patches[0].size -= 1),
        ("sha256", |m| m.patches[1].sha256.0[31] ^= 1),
        ("order", |m| m.patches.swap(0, 1)),
        ("one dropped", |m| {
            m.patches.pop();
        }),
        ("all dropped", |m| m.patches.clear()),
        ("one added", |m| m.patches.push(patch("2.6.0", 3))),
    ];
    for (what, change) in changes {
        let mut m = signed_with_patches();
        change(&mut m);
        let reread = Manifest::from_json(&m.to_json()).unwrap();
        assert_eq!(
            reread.verify(&trusted),
            Err(SignatureError::Invalid(key(1).public().id())),
            "changing the patches' {what} kept the signature valid"
        );
    }
    // Added to a manifest signed without them, patches break its signature too.
    let mut m = signed();
    m.patches.push(patch("2.8.0", 1));
    assert!(m.verify(&trusted).is_err());
}

#[test]
fn a_trusted_manifest_finds_the_patch_from_a_base_by_its_digest() {
    let trusted = signed_with_patches().trust(&[key(1).public()]).unwrap();
    assert_eq!(
        trusted.patch_from(&Sha256([2; 32])),
        Some(&patch("2.7.1", 2))
    );
    assert_eq!(trusted.patch_from(&Sha256([3; 32])), None);
    assert!(
        signed()
            .trust(&[key(1).public()])
            .unwrap()
            .patch_from(&Sha256([1; 32]))
            .is_none()
    );
}

#[test]
fn bad_patch_lists_get_clear_errors() {
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut value: serde_json::Value =
            serde_json::from_slice(&signed_with_patches().to_json()).unwrap();
        edit(&mut value);
        Manifest::from_json(&serde_json::to_vec(&value).unwrap())
    };
    assert!(matches!(
        with(&|m| m["patches"][0]["file"] = "../wordclock.bin".into()),
        Err(ManifestError::BadFileName(name)) if name == "../wordclock.bin"
    ));
    assert_eq!(
        with(&|m| {
            let one = m["patches"][0].clone();
            m["patches"] = vec![one; MAX_PATCHES + 1].into();
        }),
        Err(ManifestError::TooManyPatches(MAX_PATCHES + 1))
    );
    assert_eq!(
        with(&|m| {
            m.as_object_mut().unwrap().remove("format");
        }),
        Err(ManifestError::LegacyPatches)
    );
    let unknown = with(&|m| m["patches"][0]["offset"] = 0.into()).unwrap_err();
    assert!(
        unknown.to_string().contains("unknown field `offset`"),
        "{unknown}"
    );
    let no_size = with(&|m| {
        m["patches"][1].as_object_mut().unwrap().remove("size");
    })
    .unwrap_err();
    assert!(
        no_size.to_string().contains("missing field `size`"),
        "{no_size}"
    );
}

#[test]
fn each_source_may_name_its_own_firmware_url() {
    let m = signed();
    let r2 = m.served_at("https://ota.example.com/wordclock-v2.9.0.bin".into());
    assert!(r2.verify(&[key(1).public()]).is_ok());
    assert_eq!(r2.signed_message(), m.signed_message());
    assert_ne!(r2.to_json(), m.to_json());
}

#[test]
fn a_flipped_signature_bit_or_a_wrong_key_is_refused() {
    let mut m = signed();
    m.signature.as_mut().unwrap().ed25519[10] ^= 0x01;
    assert!(matches!(
        m.verify(&[key(1).public()]),
        Err(SignatureError::Invalid(_))
    ));
    let m = signed();
    assert_eq!(
        m.verify(&[key(2).public()]),
        Err(SignatureError::UnknownKey(key(1).public().id()))
    );
    assert_eq!(
        m.verify(&[]),
        Err(SignatureError::UnknownKey(key(1).public().id()))
    );
    // A signature claiming a trusted key's id but made by another key.
    let mut forged = release();
    forged.sign(&key(2));
    forged.signature.as_mut().unwrap().key_id = key(1).public().id();
    assert!(matches!(
        forged.verify(&[key(1).public()]),
        Err(SignatureError::Invalid(_))
    ));
}

#[test]
fn reformatted_json_keeps_the_signature() {
    let m = signed();
    let mut value: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
    value["version"] = "v2.9.0".into();
    let compact = serde_json::to_vec(&value).unwrap();
    let mut reordered: Vec<(String, serde_json::Value)> =
        value.as_object().unwrap().clone().into_iter().collect();
    reordered.reverse();
    let reordered: String = format!(
        "{{\n{}\n}}",
        reordered
            .iter()
            .map(|(k, v)| format!("   {}  :  {}", serde_json::to_string(k).unwrap(), v))
            .collect::<Vec<_>>()
            .join(",\n")
    );
    for text in [compact, reordered.into_bytes()] {
        let reread = Manifest::from_json(&text).unwrap();
        assert!(reread.verify(&[key(1).public()]).is_ok());
    }
}

#[test]
fn a_manifest_built_in_code_with_a_path_for_a_file_does_not_verify() {
    let mut m = release();
    m.file = Some("../evil.bin".into());
    m.sign(&key(1));
    assert!(matches!(
        m.verify(&[key(1).public()]),
        Err(SignatureError::Malformed(ManifestError::BadFileName(_)))
    ));
}

#[test]
fn trusting_a_signed_manifest_gives_its_required_fields_by_type() {
    let trusted = signed().trust(&[key(9).public(), key(1).public()]).unwrap();
    assert_eq!(trusted.file(), "wordclock-v2.9.0.bin");
    assert_eq!(trusted.chip(), Chip::Esp32S3);
    assert_eq!(trusted.secure_version(), 2);
    assert_eq!(trusted.key(), &key(1).public());
    assert_eq!(trusted.into_manifest(), signed());
}

#[test]
fn only_a_signed_manifest_becomes_trusted() {
    let keys = [key(1).public()];
    assert_eq!(release().trust(&keys), Err(SignatureError::Unsigned));
    assert_eq!(legacy().trust(&keys), Err(SignatureError::Legacy));
    assert_eq!(
        signed().trust(&[key(2).public()]),
        Err(SignatureError::UnknownKey(key(1).public().id()))
    );
}

#[test]
fn unsigned_and_legacy_manifests_are_not_trusted() {
    let m = release();
    assert_eq!(m.verify(&[key(1).public()]), Err(SignatureError::Unsigned));
    let legacy = legacy();
    assert_eq!(
        legacy.verify(&[key(1).public()]),
        Err(SignatureError::Legacy)
    );
}

/// The existing fleet's manifest: no format, no signature, version without `v`.
fn legacy() -> Manifest {
    let json = br#"{
      "version": "2.8.0",
      "build_date": "2026-10-01 09:12:44",
      "sha256": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
      "firmware_size": 1376256,
      "firmware_url": "https://raw.githubusercontent.com/acme/wordclock/main/ota_files/firmware.bin",
      "commit_hash": "a1b2c3d",
      "title": "Word clock 2.8.0",
      "description": "Night mode.",
      "release_date": "2026-10-01",
      "esp_idf_version": "v5.1.2",
      "requires_restart": true
    }"#;
    Manifest::from_json(json).unwrap()
}

#[test]
fn the_existing_fleets_manifest_is_read() {
    let m = legacy();
    assert_eq!(m.format, None);
    assert_eq!(m.version, v("2.8.0"));
    assert_eq!(m.firmware_size, 1_376_256);
    assert_eq!(m.requires_restart, Some(true));
    assert_eq!(m.chip, None);
    assert!(m.extra.is_empty());
}

#[test]
fn unknown_fields_are_kept_and_written_back_but_not_signed() {
    let mut value: serde_json::Value = serde_json::from_slice(&signed().to_json()).unwrap();
    value["min_battery"] = 40.into();
    value["notes"] = serde_json::json!({"lang": "de"});
    let m = Manifest::from_json(&serde_json::to_vec(&value).unwrap()).unwrap();
    assert_eq!(m.extra["min_battery"], 40);
    assert!(
        m.verify(&[key(1).public()]).is_ok(),
        "unknown fields are outside the signature"
    );
    let again: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
    assert_eq!(again, value);
}

#[test]
fn bad_manifests_get_clear_errors() {
    let text = |json: &str| {
        Manifest::from_json(json.as_bytes())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        Manifest::from_json(
            br#"{"format": 2, "version": "1.0.0", "sha256": "00", "firmware_size": 1}"#
        ),
        Err(ManifestError::Json(
            "a SHA-256 digest must be 64 hex digits at line 1 column 48".into()
        ))
    );
    let mut value: serde_json::Value = serde_json::from_slice(&signed().to_json()).unwrap();
    value["format"] = 2.into();
    assert_eq!(
        Manifest::from_json(&serde_json::to_vec(&value).unwrap()),
        Err(ManifestError::UnsupportedFormat(2))
    );
    value["format"] = 1.into();
    value.as_object_mut().unwrap().remove("chip");
    assert_eq!(
        Manifest::from_json(&serde_json::to_vec(&value).unwrap()),
        Err(ManifestError::MissingField("chip"))
    );
    assert!(
        text("{\"version\": \"2.9.0\"").starts_with("manifest is not valid: EOF while parsing")
    );
    assert!(text("[]").starts_with("manifest is not valid: invalid type"));
    assert!(
        text(r#"{"version": "latest", "sha256": "x", "firmware_size": 1}"#)
            .contains("`latest` is not a version")
    );
    let mut value: serde_json::Value = serde_json::from_slice(&signed().to_json()).unwrap();
    value["signature"]["ed25519"] = "abcd".into();
    let truncated = serde_json::to_vec(&value).unwrap();
    assert!(
        Manifest::from_json(&truncated)
            .unwrap_err()
            .to_string()
            .contains("signature ed25519 must be 128 hex digits")
    );
    value = serde_json::from_slice(&signed().to_json()).unwrap();
    value["file"] = "../../etc/passwd".into();
    assert!(matches!(
        Manifest::from_json(&serde_json::to_vec(&value).unwrap()),
        Err(ManifestError::BadFileName(_))
    ));
    let deep = format!(
        "{{\"version\": \"1.0.0\", \"x\": {}{}}}",
        "[".repeat(40),
        "]".repeat(40)
    );
    assert_eq!(
        Manifest::from_json(deep.as_bytes()),
        Err(ManifestError::TooDeep)
    );
    let brackets_in_text = format!(
        "{{\"version\": \"1.0.0\", \"sha256\": \"{}\", \"firmware_size\": 1, \"title\": \"{}\"}}",
        "0".repeat(64),
        "[{".repeat(40)
    );
    assert!(
        Manifest::from_json(brackets_in_text.as_bytes()).is_ok(),
        "brackets inside strings do not nest"
    );
    let hostile = format!(
        "{{\"version\": 7, \"x\": \"{}\"}}",
        "\\u001b[31m".repeat(100)
    );
    let message = Manifest::from_json(hostile.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        message.len() < 160 && !message.contains('\u{1b}'),
        "{message}"
    );
    let huge = vec![b' '; MAX_MANIFEST_LEN + 1];
    assert_eq!(
        Manifest::from_json(&huge),
        Err(ManifestError::TooLarge {
            len: MAX_MANIFEST_LEN + 1
        })
    );
}

#[test]
fn keys_read_their_own_text_and_never_show_the_secret() {
    let secret = key(7);
    let text = secret.to_key_file();
    assert!(text.starts_with("clockrel-secret-ed25519:") && text.ends_with('\n'));
    let again: SecretKey = text.parse().unwrap();
    assert_eq!(again.public(), secret.public());
    let debug = format!("{secret:?}");
    assert!(!debug.contains(&text.trim()[24..]), "{debug}");
    assert!(debug.contains(&secret.public().id().to_string()));
    let public: PublicKey = secret.public().to_string().parse().unwrap();
    assert_eq!(public, secret.public());
    assert!("ed25519:1234".parse::<PublicKey>().is_err());
    let list = format!(
        "# release keys\n\n{}  # 2026\n{}\n",
        key(1).public(),
        key(2).public()
    );
    assert_eq!(
        PublicKey::parse_list(&list).unwrap(),
        [key(1).public(), key(2).public()]
    );
    assert_eq!(PublicKey::parse_list("# x\nnot-a-key\n").unwrap_err().0, 2);
    assert!("nonsense".parse::<SecretKey>().is_err());
}

/// The committed vectors: a fixed key, a manifest, its exact signed encoding and
/// signature. Another implementation can check itself against this file; this test
/// checks that ours still produces it. `CLOCKREL_BLESS=1` rewrites it.
#[test]
fn committed_test_vectors_hold() {
    let secret = SecretKey::from_seed(*b"clockrel test vector key, public");
    let mut m = release();
    m.sign(&secret);
    let message = m.signed_message();
    assert!(message.starts_with(DOMAIN));
    let signature = m.signature.clone().unwrap();
    let made = serde_json::json!({
        "about": "clockrel manifest format 1 test vector: Ed25519 over signed_message_hex, which is DOMAIN then each field (see ota-core manifest::signing)",
        "secret_key": secret.to_key_file().trim(),
        "public_key": secret.public().to_string(),
        "key_id": signature.key_id.to_string(),
        "manifest": serde_json::from_slice::<serde_json::Value>(&m.to_json()).unwrap(),
        "signed_message_hex": message.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "signature_hex": signature.ed25519.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    });
    if std::env::var_os("CLOCKREL_BLESS").is_some() {
        std::fs::write(VECTORS, serde_json::to_string_pretty(&made).unwrap() + "\n").unwrap();
    }
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(VECTORS).unwrap()).unwrap();
    assert_eq!(
        committed, made,
        "{VECTORS} no longer matches; the signed encoding changed"
    );
    // And the committed manifest verifies by itself with the committed public key.
    let manifest =
        Manifest::from_json(&serde_json::to_vec(&committed["manifest"]).unwrap()).unwrap();
    let public: PublicKey = committed["public_key"].as_str().unwrap().parse().unwrap();
    assert!(manifest.verify(&[public]).is_ok());
}

fn running(version: &str, secure_version: u32) -> Running {
    Running {
        version: v(version),
        secure_version,
        chip: Chip::Esp32S3,
        chip_revision: None,
    }
}

#[test]
fn policy_updates_stays_or_refuses_with_a_reason() {
    let trusted = [key(1).public()];
    let m = signed(); // 2.9.0, secure_version 2, esp32s3
    assert_eq!(decide(&running("2.8.0", 2), &m, &trusted), Decision::Update);
    assert_eq!(
        decide(&running("2.9.0-rc.3", 1), &m, &trusted),
        Decision::Update
    );
    assert_eq!(
        decide(&running("v2.9.0", 2), &m, &trusted),
        Decision::Current
    );
    assert_eq!(
        decide(&running("2.9.0+local", 2), &m, &trusted),
        Decision::Current
    );
    assert_eq!(
        decide(&running("2.10.0", 2), &m, &trusted),
        Decision::Refuse(Refusal::Downgrade {
            running: v("2.10.0"),
            offered: v("2.9.0")
        })
    );
    assert_eq!(
        decide(&running("2.8.0", 3), &m, &trusted),
        Decision::Refuse(Refusal::SecureVersion {
            running: 3,
            offered: 2
        })
    );
    let mut c3 = running("2.8.0", 0);
    c3.chip = Chip::Esp32C3;
    assert_eq!(
        decide(&c3, &m, &trusted),
        Decision::Refuse(Refusal::WrongChip {
            running: Chip::Esp32C3,
            offered: Chip::Esp32S3
        })
    );
    assert_eq!(
        decide(&running("2.8.0", 0), &m, &[key(2).public()]),
        Decision::Refuse(Refusal::Signature(SignatureError::UnknownKey(
            key(1).public().id()
        )))
    );
    assert_eq!(
        decide(&running("1.0.0", 0), &legacy(), &trusted),
        Decision::Refuse(Refusal::Signature(SignatureError::Legacy))
    );
    let refusal = Refusal::SecureVersion {
        running: 3,
        offered: 2,
    };
    assert_eq!(
        refusal.to_string(),
        "the release's secure_version 2 is below the running 3: the bootloader would refuse it"
    );
}

#[test]
fn a_release_rolled_back_on_this_device_is_refused_until_a_newer_one_comes() {
    let rejected = Rejected {
        version: v("2.9.0"),
        reason: "mqtt: not healthy within 30 s".into(),
    };
    let refused = Decision::Refuse(Refusal::RolledBack {
        version: v("2.9.0"),
        reason: "mqtt: not healthy within 30 s".into(),
    });
    assert_eq!(
        after_rollback(Decision::Update, &v("2.9.0"), Some(&rejected)),
        refused
    );
    assert_eq!(
        after_rollback(Decision::Update, &v("2.9.0+rebuilt"), Some(&rejected)),
        refused,
        "build metadata does not make it another release"
    );
    assert_eq!(
        after_rollback(Decision::Update, &v("2.9.1"), Some(&rejected)),
        Decision::Update
    );
    assert_eq!(
        after_rollback(Decision::Update, &v("2.9.0"), None),
        Decision::Update
    );
    let refusal = Decision::Refuse(Refusal::Downgrade {
        running: v("3.0.0"),
        offered: v("2.9.0"),
    });
    assert_eq!(
        after_rollback(refusal.clone(), &v("2.9.0"), Some(&rejected)),
        refusal,
        "other verdicts stand"
    );
    let Decision::Refuse(why) = refused else {
        unreachable!()
    };
    assert_eq!(
        why.to_string(),
        "2.9.0 was rolled back on this device (mqtt: not healthy within 30 s); \
         send `retry` to install it anyway"
    );
}

#[test]
fn key_ids_are_the_first_bytes_of_the_key_hash() {
    let public = key(1).public();
    let digest = Sha256::of(public.as_bytes());
    assert_eq!(public.id(), KeyId(digest.0[..8].try_into().unwrap()));
}

proptest! {
    #[test]
    fn no_input_makes_the_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Manifest::from_json(&bytes);
    }

    #[test]
    fn no_mutation_of_a_signed_manifest_panics_or_passes_unnoticed(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        with_patches in any::<bool>(),
    ) {
        let before = if with_patches { signed_with_patches() } else { signed() };
        let mut bytes = before.to_json();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(m) = Manifest::from_json(&bytes)
            && m.verify(&[key(1).public()]).is_ok()
        {
            // Only changes outside what the signature covers may pass: the same fields.
            prop_assert_eq!(m.signed_message(), before.signed_message());
        }
    }

    #[test]
    fn json_round_trip_keeps_every_field(size in any::<u64>(), secure in any::<u32>(), restart in any::<bool>()) {
        let mut m = release();
        m.firmware_size = size;
        m.secure_version = Some(secure);
        m.requires_restart = Some(restart);
        m.sign(&key(3));
        let again = Manifest::from_json(&m.to_json()).unwrap();
        prop_assert_eq!(&again, &m);
        prop_assert!(again.verify(&[key(3).public()]).is_ok());
    }
}

/// The fixture image and a manifest that promises exactly it.
fn image_and_its_manifest() -> (ota_core::image::ImageInfo, Manifest) {
    let bytes = include_bytes!("data/wordclock-2.9.0.bin");
    let info = ota_core::image::parse(bytes, None).unwrap();
    let mut m = release();
    m.sha256 = info.sha256;
    m.firmware_size = info.len;
    (info, m)
}

#[test]
fn an_image_matches_its_manifest_field_by_field() {
    use ota_core::manifest::ImageMismatch;
    let (info, promised) = image_and_its_manifest();
    assert_eq!(promised.check_image(&info), Ok(()));
    let broken = |change: fn(&mut Manifest)| {
        let mut m = promised.clone();
        change(&mut m);
        m.check_image(&info).unwrap_err()
    };
    assert!(matches!(
        broken(|m| m.firmware_size += 1),
        ImageMismatch::Size { .. }
    ));
    assert!(matches!(
        broken(|m| m.sha256.0[0] ^= 1),
        ImageMismatch::Sha256 { .. }
    ));
    assert!(matches!(
        broken(|m| m.chip = Some(Chip::Esp32C3)),
        ImageMismatch::Chip { .. }
    ));
    assert_eq!(
        broken(|m| m.version = "2.9.1".parse().unwrap()).to_string(),
        "the image says it is 2.9.0, the manifest says 2.9.1"
    );
    assert!(matches!(
        broken(|m| m.secure_version = Some(3)),
        ImageMismatch::SecureVersion {
            image: 2,
            manifest: Some(3)
        }
    ));
    // Build metadata is part of the version a device compares.
    assert!(matches!(
        broken(|m| m.version = "2.9.0+rebuild".parse().unwrap()),
        ImageMismatch::Version { .. }
    ));
}

/// The README's description of the signed message, implemented again in Python
/// (`tests/vectors/encode_manifest.py`), gives the same bytes as ota-core for the
/// committed vector and for manifests with fields absent, long and non-ASCII.
#[test]
fn an_independent_implementation_of_the_documented_encoding_agrees() {
    use std::io::Write as _;
    let encode = |manifest: &Manifest| {
        let mut child = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/vectors/encode_manifest.py"
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&manifest.to_json())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut sparse = release();
    sparse.build_date = None;
    sparse.requires_restart = Some(false);
    sparse.title = Some("Wörter 🕰 ".repeat(40));
    sparse.version = "3.0.0-rc.1".parse().unwrap();
    for manifest in [release(), signed(), sparse, signed_with_patches()] {
        assert_eq!(encode(&manifest), hex(&manifest.signed_message()));
    }
}
