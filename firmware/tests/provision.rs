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
            ProvisionError::MqttUrl("192.168.1.2".into()),
        ),
        (
            with("mqtt_url", "mqtt://host:http"),
            ProvisionError::MqttUrl("mqtt://host:http".into()),
        ),
        (
            with("mqtt_url", "mqtt://clock:hunter22@host:1883"),
            ProvisionError::CredentialsInUrl,
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
    assert_eq!(
        ProvisionError::CredentialsInUrl.to_string(),
        "NVS `mqtt_url` holds credentials: put them in `mqtt_user` and `mqtt_pass`"
    );
}

proptest! {
    /// Whatever the factory (or a corrupted NVS) holds: an answer, never a panic, and no
    /// error ever repeats a password.
    #[test]
    fn any_nvs_contents_give_an_answer_that_keeps_passwords(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 6),
    ) {
        let mut store = MemoryStore::default();
        for (key, value) in KEYS.iter().zip(&values) {
            store.set(key, value);
        }
        if let Err(error) = Provisioned::load(&store) {
            let text = error.to_string();
            for secret in [&values[1], &values[4]] {
                let secret = String::from_utf8_lossy(secret);
                prop_assert!(secret.len() < 4 || !text.contains(secret.as_ref()), "{text}");
            }
        }
    }
}
