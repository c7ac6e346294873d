//! MQTT topics and payloads: exact bytes of everything published, every accepted spelling
//! of every command, and errors (never panics) for whatever else arrives.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

use ota_core::engine::{Attempt, Failure, Source, UpdateError};
use ota_core::mqtt::{
    Attributes, Command, DeviceIdError, MAX_DEVICE_ID, MAX_PAYLOAD, MAX_REASON,
    MAX_RELEASE_SUMMARY, OFFER_KEY, Outbox, PAYLOAD_INSTALL, PayloadError, SOURCE_OPTIONS,
    SourceStatus, State, Status, Topics, UpdateState, VersionInfo, check_discovery,
    github_repository, parse_command, parse_source, percent, retry_discovery, select_discovery,
    update_discovery,
};
use ota_core::policy::Refusal;
use ota_core::{Manifest, Sha256, Version};
use proptest::prelude::*;
use serde_json::Value;

const DEVICE: &str = "Clock_Stani_1";

fn topics() -> Topics {
    Topics::new(DEVICE).unwrap()
}

fn version(text: &str) -> Version {
    text.parse().unwrap()
}

fn device() -> ota_core::mqtt::Device {
    ota_core::mqtt::Device {
        name: "Word Clock".to_owned(),
        model: "ESP32-S3 word clock".to_owned(),
        manufacturer: Some("Acme".to_owned()),
        sw_version: version("2.8.0"),
        hw_version: None,
        configuration_url: None,
        mac: None,
        releases_url: None,
    }
}

fn manifest() -> Manifest {
    let json = format!(
        r#"{{"version":"v2.9.0","sha256":"{}","firmware_size":1000,"title":"Word clock firmware","description":"Fixes the quarter-past chime."}}"#,
        Sha256::of(b"image")
    );
    Manifest::from_json(json.as_bytes()).unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Every spelling `command` accepts, and what it means.
const SPELLINGS: [(&str, Command); 11] = [
    ("check", Command::Check),
    ("ota_check_update", Command::Check),
    ("check_ota_update", Command::Check),
    ("install", Command::Install),
    ("update", Command::Install),
    ("ota_start_update", Command::Install),
    ("start_ota_update", Command::Install),
    ("retry", Command::Retry),
    ("cancel", Command::Cancel),
    ("ota_cancel_update", Command::Cancel),
    ("cancel_ota_update", Command::Cancel),
];

// ---- topics ----

#[test]
fn topics_are_the_fleets_under_home_and_home_assistants() {
    let t = topics();
    assert_eq!(t.device(), "Clock_Stani_1");
    assert_eq!(t.command(), "home/Clock_Stani_1/command");
    assert_eq!(t.source_set(), "home/Clock_Stani_1/ota/source/set");
    assert_eq!(t.source_status(), "home/Clock_Stani_1/ota/source/status");
    assert_eq!(t.version(), "home/Clock_Stani_1/ota/version");
    assert_eq!(t.progress(), "home/Clock_Stani_1/ota/progress");
    assert_eq!(t.state(), "home/Clock_Stani_1/ota/state");
    assert_eq!(t.attributes(), "home/Clock_Stani_1/ota/attributes");
    assert_eq!(t.availability(), "home/Clock_Stani_1/availability");
    assert_eq!(
        t.update_config(),
        "homeassistant/update/Clock_Stani_1/firmware/config"
    );
    assert_eq!(
        t.select_config(),
        "homeassistant/select/Clock_Stani_1/ota_source/config"
    );
    assert_eq!(
        t.subscriptions(),
        [
            "home/Clock_Stani_1/command",
            "home/Clock_Stani_1/ota/source/set"
        ]
    );
}

#[test]
fn device_ids_that_cannot_name_topics_are_refused() {
    assert_eq!(Topics::new(""), Err(DeviceIdError::Empty));
    let long = "a".repeat(MAX_DEVICE_ID + 1);
    assert_eq!(
        Topics::new(&long),
        Err(DeviceIdError::TooLong {
            len: MAX_DEVICE_ID + 1
        })
    );
    assert!(Topics::new(&"a".repeat(MAX_DEVICE_ID)).is_ok());
    for (id, found, at) in [
        ("clock/1", '/', 5),
        ("clock+", '+', 5),
        ("#", '#', 0),
        ("clock\0", '\0', 5),
        ("word clock", ' ', 4),
        ("uhr-küche", 'ü', 5),
        ("clock.1", '.', 5),
    ] {
        assert_eq!(
            Topics::new(id),
            Err(DeviceIdError::BadChar { found, at }),
            "{id:?}"
        );
    }
    assert!(Topics::new("wordclock-kitchen_2").is_ok());
    assert_eq!(
        Topics::new("clock/1").unwrap_err().to_string(),
        "the device id has '/' at byte 5: it names MQTT and Home Assistant discovery topics, \
         so only ASCII letters, digits, `_` and `-` are allowed"
    );
}

#[test]
fn parse_reads_only_the_updates_topics() {
    let t = topics();
    assert_eq!(
        t.parse("home/Clock_Stani_1/command", b"check"),
        Some(Ok(Command::Check))
    );
    assert_eq!(
        t.parse("home/Clock_Stani_1/ota/source/set", b"cloudflare"),
        Some(Ok(Command::SetSource(Source::R2)))
    );
    assert_eq!(
        t.parse("home/Clock_Stani_1/command", b"reboot"),
        Some(Err(PayloadError::UnknownCommand("reboot".to_owned())))
    );
    for other in [
        "home/Clock_Stani_1/brightness/set",
        "home/Other_Clock/command",
        "home/Clock_Stani_1/ota/source/status",
        "home/Clock_Stani_1/command/",
    ] {
        assert_eq!(t.parse(other, b"install"), None, "{other}");
    }
}

// ---- commands ----

#[test]
fn every_spelling_of_every_command_is_read() {
    for (word, command) in SPELLINGS {
        assert_eq!(parse_command(word.as_bytes()), Ok(command), "{word}");
        let upper = word.to_ascii_uppercase();
        assert_eq!(parse_command(upper.as_bytes()), Ok(command), "{upper}");
        let padded = format!(" \t{word}\r\n");
        assert_eq!(parse_command(padded.as_bytes()), Ok(command), "{padded:?}");
        let action = format!(r#"{{"action": "{word}"}}"#);
        assert_eq!(parse_command(action.as_bytes()), Ok(command), "{action}");
        let fleet = format!(r#" {{ "command" : "{}" }} "#, word.to_ascii_uppercase());
        assert_eq!(parse_command(fleet.as_bytes()), Ok(command), "{fleet}");
    }
}

#[test]
fn what_home_assistant_sends_to_install_is_read_as_install() {
    assert_eq!(PAYLOAD_INSTALL, "install");
    assert_eq!(
        parse_command(PAYLOAD_INSTALL.as_bytes()),
        Ok(Command::Install)
    );
    // HA's own default, if the entity is ever configured without our payload_install.
    assert_eq!(parse_command(b"INSTALL"), Ok(Command::Install));
}

#[test]
fn malformed_commands_are_errors() {
    let cases: [(&[u8], PayloadError); 14] = [
        (b"", PayloadError::Empty),
        (b" \r\n\t ", PayloadError::Empty),
        (b"\xff\xfe", PayloadError::NotUtf8),
        (b"instal\xc3", PayloadError::NotUtf8),
        (b"reboot", PayloadError::UnknownCommand("reboot".into())),
        (
            b"install now",
            PayloadError::UnknownCommand("install now".into()),
        ),
        (
            b"\"install\"",
            PayloadError::UnknownCommand("\"install\"".into()),
        ),
        (
            b"re\x07bo\not",
            PayloadError::UnknownCommand("reboot".into()),
        ),
        (
            br#"{"action":"reboot"}"#,
            PayloadError::UnknownCommand("reboot".into()),
        ),
        (
            br#"{"action":""}"#,
            PayloadError::UnknownCommand(String::new()),
        ),
        (
            br#"{}"#,
            PayloadError::Json("missing field `action` at line 1 column 2".into()),
        ),
        (
            br#"{"action":1}"#,
            PayloadError::Json(
                "invalid type: integer `1`, expected a string at line 1 column 11".into(),
            ),
        ),
        (
            br#"{"action":"install","force":true}"#,
            PayloadError::Json(
                "unknown field `force`, expected `action` or `command` at line 1 column 27".into(),
            ),
        ),
        (
            br#"{"action":"install","command":"cancel"}"#,
            PayloadError::Json("duplicate field `action` at line 1 column 29".into()),
        ),
    ];
    for (payload, error) in cases {
        assert_eq!(
            parse_command(payload),
            Err(error),
            "{:?}",
            String::from_utf8_lossy(payload)
        );
    }
    assert!(matches!(
        parse_command(br#"{"action":"install""#),
        Err(PayloadError::Json(_))
    ));
    let deep = format!(r#"{{"action":{}"#, "[".repeat(900));
    assert!(matches!(
        parse_command(deep.as_bytes()),
        Err(PayloadError::Json(_))
    ));
}

#[test]
fn payloads_over_the_cap_are_refused_before_parsing() {
    let mut at_cap = b"install".to_vec();
    at_cap.resize(MAX_PAYLOAD, b' ');
    assert_eq!(parse_command(&at_cap), Ok(Command::Install));
    at_cap.push(b' ');
    assert_eq!(
        parse_command(&at_cap),
        Err(PayloadError::TooLarge {
            len: MAX_PAYLOAD + 1
        })
    );
    assert_eq!(
        parse_source(&vec![0xff; 100_000]),
        Err(PayloadError::TooLarge { len: 100_000 })
    );
}

#[test]
fn errors_repeat_only_a_short_excerpt_of_what_was_sent() {
    let long = "x".repeat(900);
    assert_eq!(
        parse_command(long.as_bytes()),
        Err(PayloadError::UnknownCommand("x".repeat(80)))
    );
    let long_key = format!(r#"{{"{}":1}}"#, "k".repeat(900));
    let Err(PayloadError::Json(text)) = parse_command(long_key.as_bytes()) else {
        panic!("a long unknown key is a JSON error");
    };
    assert_eq!(text.chars().count(), 80);
}

// ---- sources ----

#[test]
fn sources_are_read_plain_and_as_the_fleets_json() {
    let cases: [(&[u8], Source); 9] = [
        (b"github", Source::Github),
        (b"r2", Source::R2),
        (b"cloudflare", Source::R2),
        (b"GitHub", Source::Github),
        (b" R2\n", Source::R2),
        (b"CLOUDFLARE", Source::R2),
        (br#"{"source": "cloudflare"}"#, Source::R2),
        (br#"{"source":"github"}"#, Source::Github),
        (br#"{"source":" R2 "}"#, Source::R2),
    ];
    for (payload, source) in cases {
        assert_eq!(
            parse_source(payload),
            Ok(source),
            "{:?}",
            String::from_utf8_lossy(payload)
        );
    }
}

#[test]
fn malformed_sources_are_errors() {
    let cases: [(&[u8], PayloadError); 6] = [
        (b"", PayloadError::Empty),
        (b"\x80", PayloadError::NotUtf8),
        (b"s3", PayloadError::UnknownSource("s3".into())),
        (b" gitlab \n", PayloadError::UnknownSource("gitlab".into())),
        (
            br#"{"source":"s3"}"#,
            PayloadError::UnknownSource("s3".into()),
        ),
        (
            br#"{"src":"r2"}"#,
            PayloadError::Json("unknown field `src`, expected `source` at line 1 column 6".into()),
        ),
    ];
    for (payload, error) in cases {
        assert_eq!(
            parse_source(payload),
            Err(error),
            "{:?}",
            String::from_utf8_lossy(payload)
        );
    }
}

// ---- published payloads ----

#[test]
fn progress_is_the_fleets_three_fields() {
    assert_eq!(
        Status::new(State::Downloading, 600_000, 1_333_333).to_json(),
        r#"{"state":"downloading","progress":45,"bytes":600000}"#
    );
    assert_eq!(
        Status::new(State::Idle, 0, 0).to_json(),
        r#"{"state":"idle","progress":0,"bytes":0}"#
    );
    assert_eq!(
        Status::new(State::Downloading, 0, 0)
            .with_note("the patch from 2.8.0 was not used")
            .to_json(),
        r#"{"state":"downloading","progress":0,"bytes":0,"note":"the patch from 2.8.0 was not used"}"#
    );
    assert_eq!(
        Status::new(State::Rebooting, 1_333_333, 1_333_333).to_json(),
        r#"{"state":"rebooting","progress":100,"bytes":1333333}"#
    );
}

#[test]
fn every_state_has_its_snake_case_name() {
    let names = [
        (State::Idle, "idle"),
        (State::Checking, "checking"),
        (State::UpToDate, "up_to_date"),
        (State::Available, "available"),
        (State::Downloading, "downloading"),
        (State::Verifying, "verifying"),
        (State::Rebooting, "rebooting"),
        (State::Cancelled, "cancelled"),
        (State::Error, "error"),
    ];
    for (state, name) in names {
        assert_eq!(
            Status::new(state, 0, 0).to_json(),
            format!(r#"{{"state":"{name}","progress":0,"bytes":0}}"#)
        );
    }
}

#[test]
fn a_download_reports_progress_at_each_whole_five_percent_and_at_the_end() {
    let total: u64 = 3 << 20;
    let mut gate = ota_core::mqtt::ProgressGate::default();
    let reported: Vec<u8> = (1..=total.div_ceil(4096))
        .map(|chunk| (chunk * 4096).min(total))
        .filter(|done| gate.report(*done, total))
        .map(|done| percent(done, total))
        .collect();
    let expected: Vec<u8> = (0..=20).map(|step| step * 5).collect();
    assert_eq!(reported, expected, "a 3 MiB image in 4 KiB chunks");
    // Few large chunks: each new step once, whichever percent it lands on.
    let mut gate = ota_core::mqtt::ProgressGate::default();
    let coarse: Vec<bool> = [300, 330, 600, 1000]
        .iter()
        .map(|done| gate.report(*done, 1000))
        .collect();
    assert_eq!(coarse, [true, false, true, true]);
}

#[test]
fn percent_is_whole_rounded_down_and_never_overflows() {
    assert_eq!(percent(0, 0), 0);
    assert_eq!(percent(5, 0), 0);
    assert_eq!(percent(0, 100), 0);
    assert_eq!(percent(999, 1000), 99);
    assert_eq!(percent(1000, 1000), 100);
    assert_eq!(percent(2000, 1000), 100);
    assert_eq!(percent(u64::MAX, u64::MAX), 100);
    assert_eq!(percent(u64::MAX - 1, u64::MAX), 99);
    assert_eq!(percent(u64::MAX / 2, u64::MAX), 49);
    assert_eq!(percent(1, u64::MAX), 0);
}

#[test]
fn a_malformed_payload_becomes_an_error_status() {
    let error = parse_command(b"reboot").unwrap_err();
    assert_eq!(
        Status::error(&error).to_json(),
        r#"{"state":"error","progress":0,"bytes":0,"reason":"unknown command `reboot`: expected check, install (or update), retry or cancel"}"#
    );
    let error = parse_source(b"s3").unwrap_err();
    assert_eq!(
        Status::error(&error).to_json(),
        r#"{"state":"error","progress":0,"bytes":0,"reason":"unknown source `s3`: expected GitHub, Cloudflare R2, github, r2 or cloudflare"}"#
    );
    let error = parse_command(&[b' '; 1025]).unwrap_err();
    assert_eq!(
        Status::error(&error).to_json(),
        r#"{"state":"error","progress":0,"bytes":0,"reason":"the payload is 1025 bytes, more than the 1024 allowed"}"#
    );
    let error = parse_command(b"\xff").unwrap_err();
    assert_eq!(
        Status::error(&error).to_json(),
        r#"{"state":"error","progress":0,"bytes":0,"reason":"the payload is not UTF-8 text"}"#
    );
    let error = parse_command(b"").unwrap_err();
    assert_eq!(
        Status::error(&error).to_json(),
        r#"{"state":"error","progress":0,"bytes":0,"reason":"the payload is empty"}"#
    );
    let error = parse_command(b"{").unwrap_err();
    assert_eq!(
        Status::error(&error).to_json(),
        r#"{"state":"error","progress":0,"bytes":0,"reason":"the payload is not a valid JSON command: EOF while parsing an object at line 1 column 1"}"#
    );
}

#[test]
fn an_update_that_did_not_happen_is_reported_with_the_engines_reason() {
    let both_down = UpdateError::NoManifest {
        attempts: vec![
            Attempt {
                source: Source::Github,
                what: "manifest",
                failure: Some(Failure::Status(404)),
            },
            Attempt {
                source: Source::R2,
                what: "manifest",
                failure: Some(Failure::Timeout),
            },
        ],
    };
    assert_eq!(
        Status::from(&both_down).to_json(),
        r#"{"state":"error","progress":0,"bytes":0,"reason":"no source gave a trusted manifest; github manifest: HTTP 404; r2 manifest: timed out"}"#
    );
    let downgrade = UpdateError::Refused(Refusal::Downgrade {
        running: version("2.8.0"),
        offered: version("2.7.0"),
    });
    assert_eq!(
        Status::from(&downgrade).to_json(),
        r#"{"state":"error","progress":0,"bytes":0,"reason":"refused: the release 2.7.0 is older than the running 2.8.0"}"#
    );
    assert_eq!(
        Status::from(&UpdateError::Current).to_json(),
        r#"{"state":"up_to_date","progress":0,"bytes":0}"#
    );
    assert_eq!(
        Status::from(&UpdateError::Cancelled).to_json(),
        r#"{"state":"cancelled","progress":0,"bytes":0}"#
    );
}

#[test]
fn long_reasons_are_cut_with_an_ellipsis() {
    let status = json(&Status::error(&"é".repeat(1000)).to_json());
    let reason = status["reason"].as_str().unwrap();
    assert_eq!(reason.chars().count(), MAX_REASON);
    assert_eq!(reason, format!("{}…", "é".repeat(MAX_REASON - 1)));
    let exact = "r".repeat(MAX_REASON);
    assert_eq!(
        json(&Status::error(&exact).to_json())["reason"],
        exact.as_str()
    );
}

#[test]
fn source_status_and_version_are_retained_json() {
    assert_eq!(
        SourceStatus {
            source: Source::Github
        }
        .to_json(),
        r#"{"source":"github"}"#
    );
    assert_eq!(
        SourceStatus { source: Source::R2 }.to_json(),
        r#"{"source":"r2"}"#
    );
    assert_eq!(
        VersionInfo {
            version: version("v2.9.0"),
            build_date: Some("2025-11-11".to_owned()),
        }
        .to_json(),
        r#"{"version":"2.9.0","build_date":"2025-11-11"}"#
    );
    assert_eq!(
        VersionInfo {
            version: version("2.10.0-rc.1"),
            build_date: None,
        }
        .to_json(),
        r#"{"version":"2.10.0-rc.1"}"#
    );
}

#[test]
fn attributes_leave_out_what_is_not_known() {
    assert_eq!(Attributes::default().to_json(), "{}");
    let after_failover = Attributes {
        source_used: vec![Source::Github, Source::R2],
        last_error: Some("no source delivered the whole image".to_owned()),
        delivery: Some("a 1500-byte patch from 2.8.0".to_owned()),
        rollback_reason: Some("health check `mqtt` failed: no broker within 30 s".to_owned()),
        rolled_back: Some(version("2.9.0")),
    };
    assert_eq!(
        after_failover.to_json(),
        r#"{"source_used":["github","r2"],"last_error":"no source delivered the whole image","delivery":"a 1500-byte patch from 2.8.0","rollback_reason":"health check `mqtt` failed: no broker within 30 s","rolled_back":"2.9.0"}"#
    );
    let rolled_back = Attributes {
        rollback_reason: Some("LED driver did not answer".to_owned()),
        ..Attributes::default()
    };
    assert_eq!(
        rolled_back.to_json(),
        r#"{"rollback_reason":"LED driver did not answer"}"#
    );
    let long = Attributes {
        last_error: Some("e".repeat(500)),
        ..Attributes::default()
    };
    let last_error = json(&long.to_json())["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(last_error.chars().count(), MAX_REASON);
    assert!(last_error.ends_with('…'));
}

// ---- Home Assistant ----

#[test]
fn update_state_has_home_assistants_keys() {
    let idle = UpdateState::new(version("2.8.0"));
    assert_eq!(
        idle.to_json(),
        r#"{"installed_version":"2.8.0","in_progress":false,"update_percentage":null}"#
    );
    let offer = idle.offering(
        &manifest(),
        Some("https://github.com/acme/wordclock/releases"),
    );
    assert_eq!(
        offer.to_json(),
        concat!(
            r#"{"installed_version":"2.8.0","latest_version":"2.9.0","#,
            r#""title":"Word clock firmware","release_summary":"Fixes the quarter-past chime.","#,
            r#""release_url":"https://github.com/acme/wordclock/releases/tag/v2.9.0","#,
            r#""in_progress":false,"update_percentage":null}"#
        )
    );
    assert_eq!(
        offer.clone().installing(500, 1000).to_json(),
        concat!(
            r#"{"installed_version":"2.8.0","latest_version":"2.9.0","#,
            r#""title":"Word clock firmware","release_summary":"Fixes the quarter-past chime.","#,
            r#""release_url":"https://github.com/acme/wordclock/releases/tag/v2.9.0","#,
            r#""in_progress":true,"update_percentage":50}"#
        )
    );
}

#[test]
fn update_state_fits_home_assistants_schema() {
    // MQTT_JSON_UPDATE_SCHEMA takes these keys only, strings where text goes (a `null`
    // there drops the whole message), and a number or null as update_percentage.
    let allowed = [
        "installed_version",
        "latest_version",
        "title",
        "release_summary",
        "release_url",
        "entity_picture",
        "in_progress",
        "update_percentage",
    ];
    let long = Manifest {
        description: Some("d".repeat(1000)),
        ..manifest()
    };
    // Each state, and whether it offers a release (and so has a summary).
    let states = [
        (UpdateState::new(version("2.8.0")), false),
        (UpdateState::new(version("2.8.0")).installing(1, 3), false),
        (
            UpdateState::new(version("2.8.0")).offering(&long, None),
            true,
        ),
        (
            UpdateState::new(version("2.8.0"))
                .offering(&manifest(), None)
                .installing(3, 3),
            true,
        ),
        (
            UpdateState::new(version("2.8.0"))
                .offering(&manifest(), None)
                .not_installable("r".repeat(1000)),
            true,
        ),
        (
            UpdateState::new(version("2.8.0"))
                .offering(&manifest(), None)
                .failed(&"f".repeat(1000)),
            true,
        ),
    ];
    for (state, offers) in states {
        let value = json(&state.to_json());
        let object = value.as_object().unwrap();
        for (key, value) in object {
            assert!(allowed.contains(&key.as_str()), "{key}");
            match key.as_str() {
                "in_progress" => assert!(value.is_boolean()),
                "update_percentage" => {
                    assert!(value.is_null() || value.as_u64().is_some_and(|p| p <= 100))
                }
                _ => assert!(value.is_string(), "{key}: {value}"),
            }
        }
        match object.get("release_summary") {
            Some(summary) => {
                assert!(summary.as_str().unwrap().chars().count() <= MAX_RELEASE_SUMMARY)
            }
            None => assert!(!offers, "an offer without its summary: {object:?}"),
        }
    }
}

#[test]
fn the_update_entity_is_discovered_with_the_fleets_topics() {
    assert_eq!(
        update_discovery(&topics(), &device()),
        concat!(
            r#"{"name":"Firmware","unique_id":"Clock_Stani_1_firmware","device_class":"firmware","#,
            r#""state_topic":"home/Clock_Stani_1/ota/state","#,
            r#""command_topic":"home/Clock_Stani_1/command","payload_install":"install","#,
            r#""json_attributes_topic":"home/Clock_Stani_1/ota/attributes","#,
            r#""availability_topic":"home/Clock_Stani_1/availability","qos":1,"#,
            r#""device":{"identifiers":["Clock_Stani_1"],"name":"Word Clock","#,
            r#""model":"ESP32-S3 word clock","manufacturer":"Acme","sw_version":"2.8.0"},"#,
            r#""origin":{"name":"clockrel"}}"#
        )
    );
    let anonymous = ota_core::mqtt::Device {
        manufacturer: None,
        ..device()
    };
    let config = json(&update_discovery(&topics(), &anonymous));
    assert!(config["device"].get("manufacturer").is_none());
}

#[test]
fn the_source_select_is_discovered_with_the_fleets_topics() {
    assert_eq!(
        select_discovery(&topics(), &device()),
        concat!(
            r#"{"name":"OTA source","unique_id":"Clock_Stani_1_ota_source","entity_category":"config","#,
            r#""icon":"mdi:cloud-sync","options":["GitHub","Cloudflare R2"],"#,
            r#""state_topic":"home/Clock_Stani_1/ota/source/status","#,
            r#""value_template":"{{ {'github': 'GitHub', 'r2': 'Cloudflare R2'}[value_json.source] }}","#,
            r#""command_topic":"home/Clock_Stani_1/ota/source/set","#,
            r#""availability_topic":"home/Clock_Stani_1/availability","qos":1,"#,
            r#""device":{"identifiers":["Clock_Stani_1"],"name":"Word Clock","#,
            r#""model":"ESP32-S3 word clock","manufacturer":"Acme","sw_version":"2.8.0"},"#,
            r#""origin":{"name":"clockrel"}}"#
        )
    );
}

#[test]
fn what_home_assistant_sends_comes_back_as_the_right_command() {
    let t = topics();
    let update = json(&update_discovery(&t, &device()));
    let install = t.parse(
        update["command_topic"].as_str().unwrap(),
        update["payload_install"].as_str().unwrap().as_bytes(),
    );
    assert_eq!(install, Some(Ok(Command::Install)));

    let select = json(&select_discovery(&t, &device()));
    let options = select["options"].as_array().unwrap();
    assert_eq!(options.len(), SOURCE_OPTIONS.len());
    for (option, source) in options.iter().zip(SOURCE_OPTIONS) {
        let option = option.as_str().unwrap();
        // Choosing the option sets that source ...
        assert_eq!(
            t.parse(select["command_topic"].as_str().unwrap(), option.as_bytes()),
            Some(Ok(Command::SetSource(source)))
        );
        // ... and the status it then publishes shows that option: the template maps
        // value_json.source to it.
        let status = json(&SourceStatus { source }.to_json());
        let shown = format!("'{}': '{option}'", status["source"].as_str().unwrap());
        assert!(
            select["value_template"].as_str().unwrap().contains(&shown),
            "{shown}"
        );
    }
}

// ---- properties ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_and_errors_become_error_statuses(
        bytes in proptest::collection::vec(any::<u8>(), 0..1300)
    ) {
        let t = topics();
        for topic in t.subscriptions() {
            let parsed = t.parse(topic, &bytes);
            prop_assert!(parsed.is_some());
            if let Some(Err(error)) = parsed {
                let status = json(&Status::error(&error).to_json());
                prop_assert_eq!(&status["state"], "error");
                let reason = status["reason"].as_str().unwrap();
                prop_assert!(!reason.is_empty());
                prop_assert!(reason.chars().count() <= MAX_REASON);
                prop_assert!(!reason.chars().any(char::is_control));
            }
        }
        // The same bytes as the tail of a JSON object, to reach deep into the parser.
        let mut object = br#"{"action":"#.to_vec();
        object.extend_from_slice(&bytes);
        prop_assert!(parse_command(&object).is_err() || object.len() <= MAX_PAYLOAD);
        let _ = parse_source(&object);
        if bytes.len() > MAX_PAYLOAD {
            let too_large = PayloadError::TooLarge { len: bytes.len() };
            prop_assert_eq!(parse_command(&bytes), Err(too_large.clone()));
            prop_assert_eq!(parse_source(&bytes), Err(too_large));
        }
    }

    #[test]
    fn random_text_and_json_never_panic(
        text in "[ -~\\t\\n\u{e9}\u{1f570}]{0,200}",
        action in "\\PC{0,40}",
    ) {
        let _ = parse_command(text.as_bytes());
        let _ = parse_source(text.as_bytes());
        let wrapped = serde_json::json!({ "action": action }).to_string();
        let _ = parse_command(wrapped.as_bytes());
        let wrapped = serde_json::json!({ "source": action }).to_string();
        let _ = parse_source(wrapped.as_bytes());
    }

    #[test]
    fn any_case_and_padding_of_a_known_word_is_read(
        index in 0..SPELLINGS.len(),
        upper in proptest::collection::vec(any::<bool>(), 17),
        before in "[ \\t\\r\\n]{0,4}",
        after in "[ \\t\\r\\n]{0,4}",
        as_json in any::<bool>(),
    ) {
        let (word, command) = SPELLINGS[index];
        let cased: String = word
            .chars()
            .zip(upper.iter().cycle())
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        let payload = if as_json {
            format!(r#"{before}{{"action":"{cased}"}}{after}"#)
        } else {
            format!("{before}{cased}{after}")
        };
        prop_assert_eq!(parse_command(payload.as_bytes()), Ok(command));
    }

    #[test]
    fn percent_stays_in_range_and_grows_with_the_bytes(
        a in any::<u64>(),
        b in any::<u64>(),
        total in any::<u64>(),
    ) {
        let (low, high) = (a.min(b), a.max(b));
        prop_assert!(percent(low, total) <= percent(high, total));
        prop_assert!(percent(high, total) <= 100);
        prop_assert_eq!(percent(high, total) == 100, total > 0 && high >= total);
        let status = Status::new(State::Downloading, a, total);
        prop_assert_eq!(status.bytes, a);
        prop_assert_eq!(status.progress, percent(a, total));
    }

    #[test]
    fn a_device_id_is_accepted_only_when_every_topic_is_safe(id in "\\PC{0,70}|[A-Za-z0-9_-]{1,70}") {
        match Topics::new(&id) {
            Ok(t) => {
                prop_assert!((1..=MAX_DEVICE_ID).contains(&id.len()));
                let all = [
                    t.command(), t.source_set(), t.source_status(), t.version(),
                    t.progress(), t.state(), t.attributes(), t.availability(),
                    t.update_config(), t.select_config(),
                ];
                for topic in all {
                    prop_assert!(!topic.contains(['+', '#', '\0']));
                    prop_assert!(topic.split('/').any(|level| level == id));
                }
                prop_assert_eq!(t.command(), format!("home/{id}/command"));
            }
            Err(_) => prop_assert!(
                id.is_empty()
                    || id.len() > MAX_DEVICE_ID
                    || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            ),
        }
    }
}

/// A client queue that takes `room` messages, recording what it took.
fn queue_of(room: usize, taken: &mut Vec<(String, String)>) -> impl FnMut(&str, &[u8]) -> bool {
    let mut room = room;
    move |topic, payload| {
        if room == 0 {
            return false;
        }
        room -= 1;
        taken.push((
            topic.to_owned(),
            String::from_utf8_lossy(payload).into_owned(),
        ));
        true
    }
}

#[test]
fn retained_state_waits_for_room_in_the_queue_and_only_the_latest_is_sent() {
    let mut outbox = Outbox::default();
    outbox.retain("state", b"63 %");
    outbox.retain("attributes", b"error");
    outbox.retain("state", b"idle");
    let mut taken = Vec::new();
    outbox.drain(&mut queue_of(0, &mut taken));
    assert_eq!(outbox.owed(), 2, "a full queue loses nothing");
    outbox.drain(&mut queue_of(1, &mut taken));
    outbox.drain(&mut queue_of(5, &mut taken));
    assert_eq!(
        taken,
        [
            ("state".to_owned(), "idle".to_owned()),
            ("attributes".to_owned(), "error".to_owned())
        ],
        "first owed first, each topic's latest payload only"
    );
    assert_eq!(outbox.owed(), 0);
}

#[test]
fn the_outbox_is_flushed_once_the_broker_acknowledged_everything() {
    let mut outbox = Outbox::default();
    assert!(
        !outbox.is_flushed(),
        "no broker has anything before the session"
    );
    outbox.connected();
    assert!(outbox.is_flushed());
    outbox.retain("state", b"rebooting");
    assert!(!outbox.is_flushed(), "owed");
    outbox.drain(&mut queue_of(1, &mut Vec::new()));
    outbox.queued();
    assert!(!outbox.is_flushed(), "queued, not acknowledged");
    outbox.acked();
    assert!(!outbox.is_flushed(), "one of two acknowledged");
    outbox.acked();
    assert!(outbox.is_flushed());
    outbox.acked();
    assert!(outbox.is_flushed(), "a stray acknowledgement is harmless");
    // A lost connection takes the unacknowledged with it; nothing waits for them, but
    // nothing is flushed until the broker is back.
    outbox.queued();
    outbox.disconnected();
    assert!(!outbox.is_flushed(), "the broker is gone");
    outbox.connected();
    assert!(outbox.is_flushed());
}

#[test]
fn the_buttons_are_discovered_and_send_check_and_retry() {
    let t = topics();
    for (config, command, payload) in [
        (check_discovery(&t, &device()), Command::Check, "check"),
        (retry_discovery(&t, &device()), Command::Retry, "retry"),
    ] {
        let config = json(&config);
        assert_eq!(config["payload_press"], payload);
        assert_eq!(
            t.parse(
                config["command_topic"].as_str().unwrap(),
                config["payload_press"].as_str().unwrap().as_bytes()
            ),
            Some(Ok(command))
        );
        assert_eq!(config["availability"][0]["topic"], t.availability());
        assert_eq!(config["availability_mode"], "all");
    }
    assert_eq!(
        retry_discovery(&t, &device()),
        concat!(
            r#"{"name":"Retry rolled-back update","unique_id":"Clock_Stani_1_retry_update","#,
            r#""icon":"mdi:backup-restore","command_topic":"home/Clock_Stani_1/command","#,
            r#""payload_press":"retry","availability":[{"topic":"home/Clock_Stani_1/availability"},"#,
            r#"{"topic":"home/Clock_Stani_1/ota/attributes","#,
            r#""value_template":"{{ 'online' if value_json.rolled_back is defined else 'offline' }}"}],"#,
            r#""availability_mode":"all","qos":1,"#,
            r#""device":{"identifiers":["Clock_Stani_1"],"name":"Word Clock","#,
            r#""model":"ESP32-S3 word clock","manufacturer":"Acme","sw_version":"2.8.0"},"#,
            r#""origin":{"name":"clockrel"}}"#
        )
    );
    assert_eq!(
        t.check_config(),
        "homeassistant/button/Clock_Stani_1/check_update/config"
    );
    assert_eq!(
        t.retry_config(),
        "homeassistant/button/Clock_Stani_1/retry_update/config"
    );
}

#[test]
fn the_device_block_carries_what_home_assistant_lists() {
    let full = ota_core::mqtt::Device {
        hw_version: Some("ESP32-S3 rev v0.2".to_owned()),
        configuration_url: Some("https://github.com/acme/wordclock".to_owned()),
        mac: Some([0x24, 0x0a, 0xc4, 0x00, 0x01, 0xfe]),
        releases_url: Some("https://github.com/acme/wordclock/releases".to_owned()),
        ..device()
    };
    let block = &json(&update_discovery(&topics(), &full))["device"];
    assert_eq!(block["hw_version"], "ESP32-S3 rev v0.2");
    assert_eq!(
        block["configuration_url"],
        "https://github.com/acme/wordclock"
    );
    assert_eq!(
        block["connections"],
        serde_json::json!([["mac", "24:0a:c4:00:01:fe"]])
    );
    assert!(block.get("releases_url").is_none(), "not a device field");
    assert_eq!(
        github_repository("https://raw.githubusercontent.com/acme/wordclock/main/ota_files/"),
        Some("https://github.com/acme/wordclock".to_owned())
    );
    for not_github in [
        "https://ota.example.com/wordclock/",
        "https://raw.githubusercontent.com/",
        "https://raw.githubusercontent.com/acme/",
        "https://raw.githubusercontent.com/ac me/x/main/",
    ] {
        assert_eq!(github_repository(not_github), None, "{not_github}");
    }
}

#[test]
fn the_offer_is_kept_across_reboots_and_a_damaged_record_is_none() {
    #[derive(Default)]
    struct Nvs(std::collections::HashMap<String, Vec<u8>>);
    impl ota_core::engine::Store for Nvs {
        fn get(&self, key: &str) -> Option<Vec<u8>> {
            self.0.get(key).cloned()
        }
        fn set(&mut self, key: &str, value: &[u8]) {
            self.0.insert(key.to_owned(), value.to_vec());
        }
    }
    let mut nvs = Nvs::default();
    let offer = UpdateState::new(version("2.8.0"))
        .offering(
            &manifest(),
            Some("https://github.com/acme/wordclock/releases"),
        )
        .installing(1, 2);
    offer.keep(&mut nvs);
    let kept = UpdateState::kept(version("2.8.0"), &nvs);
    assert_eq!(kept, offer.clone().idle());
    // After the update, the same offer shows the release as installed.
    assert_eq!(
        UpdateState::kept(version("2.9.0"), &nvs).latest_version,
        Some(version("2.9.0"))
    );
    // The longest title and notes, all in characters JSON escapes, still come back.
    let long = Manifest {
        title: Some("\u{1}".repeat(5000)),
        description: Some("\"".repeat(5000)),
        ..manifest()
    };
    UpdateState::new(version("2.8.0"))
        .offering(&long, None)
        .keep(&mut nvs);
    let kept = UpdateState::kept(version("2.8.0"), &nvs);
    assert_eq!(kept.latest_version, Some(version("2.9.0")));
    assert_eq!(kept.title.unwrap().chars().count(), MAX_RELEASE_SUMMARY);
    // Valid, but longer than any offer the device writes.
    let padded = format!("{{\"latest_version\":\"2.9.0\"{}}}", " ".repeat(5000)).into_bytes();
    assert!(serde_json::from_slice::<Value>(&padded).is_ok());
    for damaged in [&b"{"[..], b"null", b"{\"latest_version\":7}", &padded] {
        nvs.0.insert(OFFER_KEY.to_owned(), damaged.to_vec());
        assert_eq!(
            UpdateState::kept(version("2.8.0"), &nvs),
            UpdateState::new(version("2.8.0"))
        );
    }
}
