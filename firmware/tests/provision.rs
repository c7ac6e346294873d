//! The device's own settings as the factory writes them to NVS: read, checked, and never
//! shown when secret.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use common::MemoryStore;
use ota_core::engine::Store;
use proptest::prelude::*;
use wordclock::provision::{KEYS, ProvisionError, Provisioned};

fn store(pairs: &[(&str, &str)]) -> MemoryStore {
    let mut store = MemoryStore::default();
    for (key, value) in pairs {
        store.set(key, value.as_bytes());
    }
    store
}

const GOOD: [(&str, &str); 6] = [
    ("wifi_ssid", "Living room"),
    ("wifi_pass", "correct horse battery"),
    ("mqtt_url", "mqtt://192.168.1.2:1883"),
    ("mqtt_user", "clock"),
    ("mqtt_pass", "broker-secret-1"),
    ("device_id", "wordclock-kitchen"),
];

fn with(key: &str, value: &str) -> MemoryStore {
    let mut pairs: Vec<(&str, &str)> = GOOD.to_vec();
    pairs.retain(|(k, _)| *k != key);
    pairs.push((key, value));
    store(&pairs)
}

#[test]
fn a_provisioned_device_reads_its_settings_and_never_shows_its_secrets() {
    let settings = Provisioned::load(&store(&GOOD)).unwrap();
    assert_eq!(settings.wifi_ssid, "Living room");
    assert_eq!(settings.wifi_pass.expose(), "correct horse battery");
    assert_eq!(settings.mqtt_url, "mqtt://192.168.1.2:1883");
    assert_eq!(settings.mqtt_user.as_deref(), Some("clock"));
    assert_eq!(
        settings.mqtt_pass.as_ref().map(|p| p.expose()),
        Some("broker-secret-1")
    );
    let shown = format!("{settings:?}");
    assert!(
        !shown.contains("correct horse") && !shown.contains("broker-secret"),
        "{shown}"
    );
    assert_eq!(KEYS.len(), GOOD.len());

    // An open network and an anonymous broker.
    let open = store(&[
        ("wifi_ssid", "Cafe"),
        ("mqtt_url", "mqtts://broker.example:8883"),
        ("device_id", "clock1"),
    ]);
    let settings = Provisioned::load(&open).unwrap();
    assert_eq!(settings.wifi_pass.expose(), "");
    assert_eq!(settings.mqtt_user, None);
}

#[test]
fn bad_or_missing_settings_are_named() {
    for (store, error) in [
        (store(&[]), ProvisionError::Missing("wifi_ssid")),
        (with("wifi_ssid", ""), ProvisionError::Missing("wifi_ssid")),
        (
            with("wifi_ssid", &"x".repeat(33)),
            ProvisionError::Ssid { len: 33 },
        ),
        (
            with("wifi_pass", "short"),
            ProvisionError::WifiPass { len: 5 },
        ),
        (
            with("mqtt_url", "192.168.1.2"),
            ProvisionError::MqttUrl("the scheme is neither mqtt nor mqtts"),
        ),
        (
            with("mqtt_url", "mqtt://host:http"),
            ProvisionError::MqttUrl("the port is not a number from 1 to 65535"),
        ),
        (
            with("mqtt_url", "mqtt://host:0"),
            ProvisionError::MqttUrl("the port is not a number from 1 to 65535"),
        ),
        (
            with("mqtt_url", "mqtt://host"),
            ProvisionError::MqttUrl("no port"),
        ),
        (
            with("wifi_pass", &"z".repeat(64)),
            ProvisionError::WifiPass { len: 64 },
        ),
        (
            with("device_id", "kitchen/clock"),
            ProvisionError::DeviceId(
                "the device id has '/' at byte 7: it names MQTT and Home Assistant discovery \
                 topics, so only ASCII letters, digits, `_` and `-` are allowed"
                    .into(),
            ),
        ),
    ] {
        assert_eq!(Provisioned::load(&store), Err(error));
    }
    let mut not_text = store(&GOOD);
    not_text.set("mqtt_user", &[0xff, 0xfe]);
    assert_eq!(
        Provisioned::load(&not_text),
        Err(ProvisionError::NotText { key: "mqtt_user" })
    );
    // Credentials, paths and queries in the URL are refused without repeating them.
    for url in [
        "mqtt://clock:hunter22@host:1883",
        "mqtt://host:1883?password=hunter22",
        "mqtt://clock:hunter22:host:1883",
        "mqtt://host/hunter22:1883",
    ] {
        let error = Provisioned::load(&with("mqtt_url", url)).unwrap_err();
        assert!(
            matches!(error, ProvisionError::MqttUrl(_)),
            "{url}: {error:?}"
        );
        assert!(!error.to_string().contains("hunter22"), "{error}");
    }
    // Names, IPv4 and bracketed IPv6 addresses, and a raw 64-hex-digit WPA2 key.
    for url in [
        "mqtt://broker.local:1883",
        "mqtts://10.0.0.2:8883",
        "mqtt://[fd00::2]:1883",
    ] {
        assert!(Provisioned::load(&with("mqtt_url", url)).is_ok(), "{url}");
    }
    assert!(Provisioned::load(&with("wifi_pass", &"0f".repeat(32))).is_ok());
}

proptest! {
    /// Whatever the factory (or a corrupted NVS) holds: an answer, never a panic, and no
    /// error ever repeats a password, even one pasted into another setting.
    #[test]
    fn any_nvs_contents_give_an_answer_that_keeps_passwords(
        values in proptest::collection::vec("[ -~]{0,40}", 6),
        raw in proptest::collection::vec(any::<u8>(), 0..40),
        paste_into in 0..6usize,
    ) {
        let password = format!("pw-{}", values[4]);
        let mut settings: Vec<String> = values.clone();
        settings[4] = password.clone();
        // The password also turns up in another setting, alone or inside a URL.
        settings[paste_into] = match KEYS[paste_into] {
            "mqtt_url" => format!("mqtt://{password}:1883"),
            _ => password.clone(),
        };
        let mut store = MemoryStore::default();
        for (key, value) in KEYS.iter().zip(&settings) {
            store.set(key, value.as_bytes());
        }
        if let Err(error) = Provisioned::load(&store) {
            prop_assert!(!error.to_string().contains(&password), "{error}");
        }
        // Bytes that are not text anywhere: an error naming the first key read.
        let mut not_text = vec![0xff];
        not_text.extend(&raw);
        let mut store = MemoryStore::default();
        for key in KEYS {
            store.set(key, &not_text);
        }
        prop_assert!(
            matches!(
                Provisioned::load(&store),
                Err(ProvisionError::NotText { key: "wifi_ssid" })
            ),
            "{:?}",
            Provisioned::load(&store)
        );
    }
}
