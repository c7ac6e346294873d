//! What the simulated device's tests share: images, a signed release, the layout, and the
//! ports that are not under test.
#![allow(dead_code)] // each test binary uses its own subset
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use ota_core::engine::health::{self, BootSlot as _};
use ota_core::engine::{
    Config, Control, Engine, Http, Source, Sources, Store, Timeouts, UpdateError,
};
use ota_core::manifest::{FORMAT, Patch, SecretKey};
use ota_core::policy::Running;
use ota_core::{Chip, Manifest, Sha256};
use testkit::FirmwareElf;
use wordclock::sim::device::{Booted, Device};
use wordclock::sim::layout::Layout;

pub const V2_FILE: &str = "wordclock-v2.0.0.bin";
/// The patch a release of 2.0.0 lists from the factory image.
pub const PATCH_FILE: &str = "wordclock-v1.0.0-to-v2.0.0.patch";

/// An app image of `version`, made as a release makes it.
pub fn image(version: &str) -> Vec<u8> {
    image_of(version, 8 * 1024)
}

/// An app image of `version` carrying `payload` bytes of code and data.
pub fn image_of(version: &str, payload: u32) -> Vec<u8> {
    app_image(FirmwareElf::new(version).payload_len(payload), version)
}

/// An app image of `version` with the factory image's code: a release that bumps the
/// version alone, whose patch from 1.0.0 is small.
pub fn bumped_image(version: &str) -> Vec<u8> {
    bumped_image_of(version, 8 * 1024)
}

/// [`bumped_image`] with `payload` bytes of code and data, those of [`image_of`] 1.0.0.
pub fn bumped_image_of(version: &str, payload: u32) -> Vec<u8> {
    let elf = FirmwareElf::new(version)
        .payload_len(payload)
        .code_of("1.0.0");
    app_image(elf, version)
}

fn app_image(elf: FirmwareElf, version: &str) -> Vec<u8> {
    let elf = elf.build();
    let flash = "8MB".parse().unwrap();
    clockrel::elf::app_image(&elf, Chip::Esp32S3, flash, version).unwrap()
}

pub fn layout() -> Layout {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../partitions/partitions.csv");
    Layout::from_csv(&std::fs::read_to_string(path).unwrap(), 8 << 20).unwrap()
}

/// A base URL on a port nothing listens on: connections are refused.
pub fn dead_base() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/")
}

/// Plays the other side of the broker at `port`: subscribes to `topics` and hands
/// `on_message` every message with a client to answer through, until it returns true.
/// Returns every message seen; fails the test after a minute.
pub fn watch_mqtt(
    port: u16,
    topics: &[&str],
    mut on_message: impl FnMut(&rumqttc::Client, &str, &str) -> bool,
) -> Vec<(String, String)> {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let (client, mut events) = Client::new(MqttOptions::new("watcher", "127.0.0.1", port), 64);
    for topic in topics {
        client.subscribe(*topic, QoS::AtLeastOnce).unwrap();
    }
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let Ok(Ok(Event::Incoming(Packet::Publish(message)))) =
            events.recv_timeout(Duration::from_millis(200))
        else {
            continue;
        };
        let payload = String::from_utf8_lossy(&message.payload).into_owned();
        let finished = on_message(&client, &message.topic, &payload);
        seen.push((message.topic.clone(), payload));
        if finished {
            let _ = client.disconnect();
            return seen;
        }
    }
    panic!("the device never got there; it published {seen:#?}");
}

/// A device as shipped: 1.0.0 in the factory partition.
pub fn fresh_device() -> Device {
    device_running(&image("1.0.0"))
}

/// A device with `image` in the factory partition.
pub fn device_running(image: &[u8]) -> Device {
    Device::provision(layout(), Some(image), None).unwrap()
}

/// Release 2.0.0: its image, its patch from the factory image if it lists one, and its
/// signed manifest.
pub struct Release {
    pub key: SecretKey,
    pub image: Vec<u8>,
    pub patch: Option<Vec<u8>>,
    pub manifest: Manifest,
}

impl Release {
    pub fn v2() -> Release {
        Release::of(image("2.0.0"))
    }

    /// Release 2.0.0 with this image, signed.
    pub fn of(image: Vec<u8>) -> Release {
        let key = SecretKey::from_seed([9; 32]);
        let mut manifest = Manifest {
            format: Some(FORMAT),
            version: "2.0.0".parse().unwrap(),
            build_date: None,
            sha256: Sha256::of(&image),
            firmware_size: image.len() as u64,
            firmware_url: None,
            commit_hash: None,
            title: None,
            description: None,
            release_date: None,
            esp_idf_version: None,
            requires_restart: Some(true),
            chip: Some(Chip::Esp32S3),
            secure_version: Some(0),
            file: Some(V2_FILE.into()),
            patches: Vec::new(),
            signature: None,
            extra: Default::default(),
        };
        manifest.sign(&key);
        Release {
            key,
            image,
            patch: None,
            manifest,
        }
    }

    /// Release 2.0.0 that bumps the version alone, listing its patch from 1.0.0 as
    /// `clockrel stage` makes it.
    pub fn patched() -> Release {
        Release::patched_from(&image("1.0.0"), bumped_image("2.0.0"))
    }

    /// Release 2.0.0 of `image`, listing its patch from `old`.
    pub fn patched_from(old: &[u8], image: Vec<u8>) -> Release {
        let mut release = Release::of(image);
        let patch = clockrel::delta::patch(old, &release.image).unwrap();
        release.manifest.patches = vec![Patch {
            from: "1.0.0".parse().unwrap(),
            base_digest: Sha256(old[old.len() - 32..].try_into().unwrap()),
            file: PATCH_FILE.into(),
            size: patch.len() as u64,
            sha256: Sha256::of(&patch),
        }];
        release.manifest.sign(&release.key);
        release.patch = Some(patch);
        release
    }

    /// The files a source serves for the release.
    pub fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut files = vec![
            ("version.json", self.manifest.to_json()),
            (V2_FILE, self.image.clone()),
        ];
        files.extend(self.patch.iter().map(|patch| (PATCH_FILE, patch.clone())));
        files
    }

    pub fn engine(&self, running: &Booted, sources: Sources, timeouts: Timeouts) -> Engine {
        Engine::new(Config {
            sources,
            trusted: vec![self.key.public()],
            running: Running {
                version: running.version.clone(),
                secure_version: running.secure_version,
                chip: running.chip,
                chip_revision: Some(wordclock::sim::device::CHIP_REVISION),
            },
            timeouts,
        })
    }
}

/// An NVS in memory; clones share it, so a test can read what the app stored, or hand
/// it to the app of the next boot.
#[derive(Default, Clone)]
pub struct MemoryStore(std::sync::Arc<std::sync::Mutex<HashMap<String, Vec<u8>>>>);

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.lock().unwrap().get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        self.0.lock().unwrap().insert(key.into(), value.to_vec());
    }
}

/// Health checks here pass at once: time never needs to pass.
pub struct NoClock;

impl health::Clock for NoClock {
    fn now(&self) -> Duration {
        Duration::ZERO
    }

    fn sleep(&self, _: Duration) {}
}

/// The device's life from power-on: boot; if the running image is on probation, pass
/// its health checks; if it runs 1.0.0, update from `sources` over `http`.
pub fn live(
    device: &mut Device,
    release: &Release,
    http: &mut dyn Http,
    sources: &Sources,
    timeouts: Timeouts,
) -> Result<Booted, String> {
    let booted = device.boot().map_err(|e| e.to_string())?;
    let mut slots = device.slots(booted.target);
    if slots.pending_verify() {
        let mut store = MemoryStore::default();
        health::after_boot(&booted.version, &mut slots, &mut [], &NoClock, &mut store)
            .map_err(|e| e.0)?;
    }
    if booted.version.to_string() == "1.0.0" {
        let engine = release.engine(&booted, sources.clone(), timeouts);
        let control = Control::default();
        engine
            .update(
                http,
                &mut slots,
                Source::Github,
                &control,
                &mut |_: u64, _: u64| {},
            )
            .map_err(|e: UpdateError| e.to_string())?;
    }
    Ok(booted)
}
