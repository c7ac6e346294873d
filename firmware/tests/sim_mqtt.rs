//! The simulated device end to end: a real MQTT broker (mosquitto), real HTTP sources,
//! the simulated flash. Home Assistant's install command updates the device from 1.0.0 to
//! 2.0.0 with the primary source down, and it reboots into 2.0.0.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{MemoryStore, Release, V2_FILE, dead_base, fresh_device, watch_mqtt};
use ota_core::engine::{Sources, Timeouts};
use ota_core::mqtt::Topics;
use ota_core::otadata::{BootTarget, Slot};
use rumqttc::QoS;
use testkit::{FileServer, MqttBroker};
use wordclock::app::App;
use wordclock::session::Session;
use wordclock::sim;
use wordclock::sim::updater::SimUpdater;

#[test]
fn home_assistants_install_updates_the_device_with_the_primary_down() {
    let broker = MqttBroker::start();
    let release = Release::v2();
    let r2 = FileServer::start(&[
        ("version.json", &release.manifest.to_json()),
        (V2_FILE, &release.image),
    ]);
    let sources = Sources {
        github: dead_base(),
        r2: r2.base(),
    };

    // The device boots 1.0.0 and connects.
    let device = Arc::new(Mutex::new(fresh_device()));
    let booted = device.lock().unwrap().boot().unwrap();
    let engine = release.engine(&booted, sources, Timeouts::default());
    let updater = Arc::new(SimUpdater::new(engine, Arc::clone(&device), booted.target).unwrap());
    let topics = Topics::new("clock1").unwrap();
    let (publisher, connection) =
        sim::mqtt::connect("clock1", "127.0.0.1", broker.port(), topics.availability());
    let ha_device = wordclock::identity::device(
        booted.version.clone(),
        "ESP32-S3 (simulated)".into(),
        None,
        &dead_base(),
    );
    let app = App::new(
        topics,
        ha_device,
        Arc::new(publisher.clone()),
        updater.clone(),
        Box::new(MemoryStore::default()),
    );
    let session = Arc::new(Session::default());
    session.attach(app, &|topic| publisher.subscribe(topic));
    let stop = Arc::new(AtomicBool::new(false));
    let device_loop = {
        let (session, stop) = (Arc::clone(&session), Arc::clone(&stop));
        std::thread::spawn(move || {
            sim::mqtt::run(&session, &publisher, connection, &|| {
                stop.load(Ordering::SeqCst)
            })
        })
    };

    // Home Assistant's side: discovery arrives retained, then it presses install.
    let mut pressed = false;
    let seen = watch_mqtt(
        broker.port(),
        &["home/clock1/#", "homeassistant/#"],
        |ha, topic, payload| {
            if topic == "homeassistant/update/clock1/firmware/config" && !pressed {
                let config: serde_json::Value = serde_json::from_str(payload).unwrap();
                let command = config["command_topic"].as_str().unwrap().to_owned();
                let install = config["payload_install"].as_str().unwrap().to_owned();
                ha.publish(command, QoS::AtLeastOnce, false, install)
                    .unwrap();
                pressed = true;
            }
            topic == "home/clock1/ota/progress" && payload.contains("\"rebooting\"")
        },
    );
    stop.store(true, Ordering::SeqCst);
    // "rebooting" is published just before the reboot is asked for.
    session.detach().unwrap().wait_idle();
    let progress: Vec<&str> = seen
        .iter()
        .filter(|(t, _)| t == "home/clock1/ota/progress")
        .map(|(_, p)| p.as_str())
        .collect();
    // The watch ends at "rebooting": what matters is the way there.
    assert!(
        progress.iter().any(|p| p.contains("downloading"))
            && !progress.iter().any(|p| p.contains("\"error\"")),
        "{progress:#?}"
    );
    assert!(
        seen.iter()
            .any(|(t, p)| t == "home/clock1/ota/version" && p.contains("1.0.0"))
    );
    assert_eq!(updater.reboots(), 1);
    let attributes = seen
        .iter()
        .rev()
        .find(|(t, _)| t == "home/clock1/ota/attributes")
        .unwrap();
    assert_eq!(
        attributes.1,
        r#"{"source_used":["r2"],"delivery":"the whole image"}"#
    );

    // The reboot: 2.0.0 runs from ota_0.
    let rebooted = device.lock().unwrap().boot().unwrap();
    assert_eq!(
        (rebooted.target, rebooted.version.to_string()),
        (BootTarget::Ota(Slot(0)), "2.0.0".to_owned())
    );
    // The device loop ends at its next event once stopped; the broker going away is one.
    drop(broker);
    device_loop.join().unwrap();
}
