//! The simulator program (`wordclock --flash ...`) end to end: restarts are reboots, the
//! flash file survives them, and the fault switches work.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::process::{Child, Command, Stdio};

use common::{Release, V2_FILE, dead_base, image, layout, watch_mqtt};
use ota_core::otadata::{BootTarget, Slot};
use rumqttc::QoS;
use testkit::{FileServer, MqttBroker};
use wordclock::sim::device::Device;
use wordclock::sim::flash::Flash;

struct Sim {
    _dir: tempfile::TempDir,
    flash: std::path::PathBuf,
    child: Child,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(release: &Release, r2: &FileServer, broker: &MqttBroker, extra: &[&str]) -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let factory = dir.path().join("factory.bin");
    std::fs::write(&factory, image("1.0.0")).unwrap();
    let keys = dir.path().join("trusted-keys.txt");
    std::fs::write(&keys, format!("{}\n", release.key.public())).unwrap();
    let flash = dir.path().join("flash.bin");
    let partitions = concat!(env!("CARGO_MANIFEST_DIR"), "/../partitions/partitions.csv");
    let child = Command::new(env!("CARGO_BIN_EXE_wordclock"))
        .args([
            "--flash",
            flash.to_str().unwrap(),
            "--factory-image",
            factory.to_str().unwrap(),
        ])
        .args([
            "--partitions",
            partitions,
            "--trusted-keys",
            keys.to_str().unwrap(),
            "--device",
            "clock1",
        ])
        .args([
            "--broker",
            &format!("127.0.0.1:{}", broker.port()),
            "--github",
            &dead_base(),
            "--r2",
            &r2.base(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Sim {
        _dir: dir,
        flash,
        child,
    }
}

/// Watches the device's topics; presses install once 1.0.0 is announced; returns when
/// `done` accepts a message, or fails after a minute.
fn watch(broker: &MqttBroker, done: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
    let mut pressed = false;
    watch_mqtt(
        broker.port(),
        &["home/clock1/#"],
        |client, topic, payload| {
            if topic == "home/clock1/ota/version" && payload.contains("\"1.0.0\"") && !pressed {
                client
                    .publish("home/clock1/command", QoS::AtLeastOnce, false, "install")
                    .unwrap();
                pressed = true;
            }
            done(topic, payload)
        },
    )
}

fn boots_into(flash: Vec<u8>) -> (BootTarget, String) {
    let mut device = Device {
        flash: Flash::from_bytes(flash),
        layout: layout(),
    };
    let booted = device.boot().unwrap();
    (booted.target, booted.version.to_string())
}

#[test]
fn an_install_over_mqtt_reboots_the_simulator_into_the_new_version() {
    let broker = MqttBroker::start();
    let release = Release::v2();
    let r2 = FileServer::start(&[
        ("version.json", &release.manifest.to_json()),
        (V2_FILE, &release.image),
    ]);
    let sim = start(&release, &r2, &broker, &[]);
    // Until the rebooted clock's state says 2.0.0 is installed (it comes after its
    // version message).
    let seen = watch(&broker, |topic, payload| {
        topic == "home/clock1/ota/state" && payload.contains("\"installed_version\":\"2.0.0\"")
    });
    // What the device said before it rebooted reached the broker: its last status and
    // the sources it used, which the reboot used to cut off.
    let said = |topic: &str, part: &str| {
        seen.iter()
            .any(|(t, p)| t == &format!("home/clock1/{topic}") && p.contains(part))
    };
    assert!(said("ota/progress", "\"rebooting\""), "{seen:#?}");
    assert!(
        said("ota/attributes", "\"source_used\":[\"r2\"]"),
        "{seen:#?}"
    );
    assert!(said("ota/version", "\"2.0.0\""), "{seen:#?}");
    // The state is no install in progress, on the new version.
    let state: serde_json::Value = serde_json::from_str(&seen.last().unwrap().1).unwrap();
    assert_eq!(state["in_progress"], false, "{state}");
    let flash = sim.stop();
    assert_eq!(
        boots_into(flash),
        (BootTarget::Ota(Slot(0)), "2.0.0".to_owned())
    );
}

#[test]
fn a_version_that_breaks_mqtt_is_rolled_back_says_why_and_is_not_installed_again() {
    let broker = MqttBroker::start();
    let release = Release::v2();
    let r2 = FileServer::start(&[
        ("version.json", &release.manifest.to_json()),
        (V2_FILE, &release.image),
    ]);
    // 2.0.0 cannot reach the broker: the fleet's old firmware would have kept it, and
    // lost the device to MQTT for good.
    let sim = start(
        &release,
        &r2,
        &broker,
        &["--fail-health", "2.0.0:mqtt", "--health-deadline", "3"],
    );
    let mut phase = 0;
    let mut reason = String::new();
    watch_mqtt(
        broker.port(),
        &["home/clock1/#"],
        |client, topic, payload| {
            let install = || {
                client
                    .publish("home/clock1/command", QoS::AtLeastOnce, false, "install")
                    .unwrap()
            };
            match phase {
                0 if topic == "home/clock1/ota/version" && payload.contains("\"1.0.0\"") => {
                    install();
                    phase = 1;
                }
                // 1.0.0 again, saying why: then HA presses install once more.
                1 if topic == "home/clock1/ota/attributes"
                    && payload.contains("rollback_reason") =>
                {
                    reason = payload.to_owned();
                    install();
                    phase = 2;
                }
                2 if topic == "home/clock1/ota/progress" && payload.contains("\"error\"") => {
                    assert!(
                        payload.contains(
                            "refused: 2.0.0 was rolled back on this device (mqtt: not healthy \
                             within 3 s: no session with the broker)"
                        ),
                        "{payload}"
                    );
                    return true;
                }
                _ => {}
            }
            false
        },
    );
    assert!(
        reason.contains(
            "2.0.0 rolled back: mqtt: not healthy within 3 s: no session with the broker"
        ),
        "{reason}"
    );
    // What Home Assistant keeps showing: no install of 2.0.0 on offer, the reason in the
    // update dialog, and the retry button's attribute set.
    let retained = retained(
        &broker,
        &["home/clock1/ota/state", "home/clock1/ota/attributes"],
    );
    let state = &retained["home/clock1/ota/state"];
    assert_eq!(state["installed_version"], "1.0.0", "{state}");
    assert_eq!(state["latest_version"], "1.0.0", "{state}");
    assert_eq!(state["in_progress"], false, "{state}");
    assert!(
        state["release_summary"]
            .as_str()
            .unwrap()
            .starts_with("v2.0.0 was rolled back on this device: mqtt: not healthy within 3 s"),
        "{state}"
    );
    assert_eq!(
        retained["home/clock1/ota/attributes"]["rolled_back"],
        "2.0.0"
    );
    let flash = sim.stop();
    assert_eq!(boots_into(flash), (BootTarget::Factory, "1.0.0".to_owned()));
}

/// The retained payloads of `topics`, as a client subscribing now gets them, as JSON.
fn retained(
    broker: &MqttBroker,
    topics: &[&str],
) -> std::collections::HashMap<String, serde_json::Value> {
    let mut got = std::collections::HashMap::new();
    watch_mqtt(broker.port(), topics, |_, topic, payload| {
        got.insert(topic.to_owned(), serde_json::from_str(payload).unwrap());
        got.len() == topics.len()
    });
    got
}

#[test]
fn the_clock_checks_on_its_own_and_home_assistant_sees_the_offer() {
    let broker = MqttBroker::start();
    let release = Release::v2();
    let r2 = FileServer::start(&[
        ("version.json", &release.manifest.to_json()),
        (V2_FILE, &release.image),
    ]);
    let sim = start(&release, &r2, &broker, &["--check-every", "60"]);
    // Nobody sends a command: the update entity still learns of 2.0.0.
    let seen = watch_mqtt(
        broker.port(),
        &["home/clock1/#", "homeassistant/#"],
        |_, topic, payload| {
            topic == "home/clock1/ota/state" && payload.contains("\"latest_version\":\"2.0.0\"")
        },
    );
    let config = |topic: &str| {
        seen.iter()
            .find(|(t, _)| t == topic)
            .map(|(_, p)| serde_json::from_str::<serde_json::Value>(p).unwrap())
            .unwrap_or_else(|| panic!("no {topic}"))
    };
    let check = config("homeassistant/button/clock1/check_update/config");
    assert_eq!(check["payload_press"], "check");
    let device = &config("homeassistant/update/clock1/firmware/config")["device"];
    assert_eq!(device["hw_version"], "ESP32-S3 (simulated)");
    assert_eq!(device["connections"][0][0], "mac");
    let state = &retained(&broker, &["home/clock1/ota/state"])["home/clock1/ota/state"];
    assert_eq!(state["installed_version"], "1.0.0");
    assert_eq!(state["latest_version"], "2.0.0", "retained");
    let flash = sim.stop();
    assert_eq!(
        boots_into(flash),
        (BootTarget::Factory, "1.0.0".to_owned()),
        "a check installs nothing"
    );
}

#[test]
fn the_fault_switch_names_a_version_and_a_check() {
    let output = Command::new(env!("CARGO_BIN_EXE_wordclock"))
        .args(["--flash", "f", "--github", "g", "--r2", "r"])
        .args(["--fail-health", "2.0.0:wifi"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown check `wifi`: expected one of network, mqtt, rtc, leds"),
        "{stderr}"
    );
}

impl Sim {
    /// Stops the simulator (a power cut, as far as it knows) and returns its flash, which
    /// it saves atomically, so it is whole wherever the stop lands.
    fn stop(mut self) -> Vec<u8> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read(&self.flash).unwrap()
    }
}

#[test]
fn both_sources_down_is_reported_over_mqtt_and_the_clock_keeps_its_image() {
    let broker = MqttBroker::start();
    let release = Release::v2();
    // GitHub refuses connections (start's default); R2 answers 503 to everything.
    let r2 = FileServer::start(&[
        ("version.json", &release.manifest.to_json()),
        (V2_FILE, &release.image),
    ]);
    r2.fail_after(0);
    let sim = start(&release, &r2, &broker, &[]);
    let seen = watch(&broker, |topic, payload| {
        topic == "home/clock1/ota/progress" && payload.contains("\"error\"")
    });
    let error = &seen.last().unwrap().1;
    assert!(
        error.contains("no source gave a trusted manifest") && error.contains("HTTP 503"),
        "{error}"
    );
    let retained = retained(
        &broker,
        &["home/clock1/ota/state", "home/clock1/ota/attributes"],
    );
    assert_eq!(retained["home/clock1/ota/state"]["in_progress"], false);
    assert!(
        retained["home/clock1/ota/attributes"]["last_error"]
            .as_str()
            .unwrap()
            .contains("no source gave a trusted manifest")
    );
    let flash = sim.stop();
    assert_eq!(boots_into(flash), (BootTarget::Factory, "1.0.0".to_owned()));
}

#[test]
fn a_broker_restart_mid_download_neither_stops_the_update_nor_loses_its_result() {
    let mut broker = MqttBroker::start();
    let release = Release::of(common::image_of("2.0.0", 256 * 1024));
    let r2 = FileServer::start(&[
        ("version.json", &release.manifest.to_json()),
        (V2_FILE, &release.image),
    ]);
    // Slow enough (about 6 s for the image) for the broker to go and come back well
    // before the download ends, however loaded the machine.
    r2.trickle(4 * 1024, std::time::Duration::from_millis(100));
    let sim = start(&release, &r2, &broker, &[]);
    watch(&broker, |topic, payload| {
        topic == "home/clock1/ota/progress" && payload.contains("\"downloading\"")
    });
    // Every session drops and every retained message is gone (no persistence).
    broker.restart();
    let total = (release.image.len() + release.manifest.to_json().len()) as u64;
    assert!(r2.bytes_served() < total, "the restart came mid-download");
    // The rebooted clock reports the new version, nothing in progress.
    let back = watch_mqtt(broker.port(), &["home/clock1/#"], |_, topic, payload| {
        topic == "home/clock1/ota/state" && payload.contains("\"installed_version\":\"2.0.0\"")
    });
    let state: serde_json::Value = serde_json::from_str(&back.last().unwrap().1).unwrap();
    assert_eq!(state["in_progress"], false, "{state}");
    assert!(
        back.iter()
            .any(|(t, p)| t == "home/clock1/ota/version" && p.contains("\"2.0.0\"")),
        "{back:#?}"
    );
    let flash = sim.stop();
    assert_eq!(
        boots_into(flash),
        (BootTarget::Ota(Slot(0)), "2.0.0".to_owned())
    );
    // One download: the image was not fetched again after the broker came back.
    let images = r2
        .requests()
        .iter()
        .filter(|(p, _)| p == &format!("/{V2_FILE}"))
        .count();
    assert_eq!(images, 1);
}
