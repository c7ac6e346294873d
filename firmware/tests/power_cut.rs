//! The simulated device through an update, with the power cut at many points of it:
//! whatever byte the flash was writing, the device always boots a valid image, and it is
//! the new one only once the update completed.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

use std::collections::HashMap;

use ota_core::engine::health::{self, BootSlot as _};
use ota_core::engine::{
    Config, ContentRange, Control, Engine, Http, HttpError, Response, Source, Sources, Store,
    Timeouts,
};
use ota_core::manifest::{FORMAT, SecretKey};
use ota_core::otadata::{BootTarget, Slot};
use ota_core::policy::Running;
use ota_core::{Manifest, Sha256};
use testkit::FirmwareElf;
use wordclock::sim::device::{Booted, Device};
use wordclock::sim::layout::Layout;

const BASE: &str = "http://ota.local/";

fn image(version: &str) -> Vec<u8> {
    let elf = FirmwareElf::new(version).payload_len(8 * 1024).build();
    let flash = "8MB".parse().unwrap();
    clockrel::elf::app_image(&elf, ota_core::Chip::Esp32S3, flash, version).unwrap()
}

fn layout() -> Layout {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../partitions/partitions.csv");
    Layout::from_csv(&std::fs::read_to_string(path).unwrap(), 8 << 20).unwrap()
}

/// Serves fixed files; enough for the engine, since the network is not the point here.
struct Files(HashMap<String, Vec<u8>>);

struct Body(Vec<u8>, usize);

impl Response for Body {
    fn status(&self) -> u16 {
        200
    }

    fn content_length(&self) -> Option<u64> {
        Some(self.0.len() as u64)
    }

    fn content_range(&self) -> Option<ContentRange> {
        None
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        let n = buf.len().min(self.0.len() - self.1);
        buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
        self.1 += n;
        Ok(n)
    }
}

impl Http for Files {
    fn get(
        &mut self,
        url: &str,
        _: Option<u64>,
        _: Timeouts,
    ) -> Result<Box<dyn Response + '_>, HttpError> {
        let body = self.0.get(url).cloned();
        let body = body.ok_or(HttpError::Connect("no such file".into()))?;
        Ok(Box::new(Body(body, 0)))
    }
}

#[derive(Default)]
struct MemoryStore(HashMap<String, Vec<u8>>);

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        self.0.insert(key.into(), value.to_vec());
    }
}

/// Health checks here pass at once: time never needs to pass.
struct NoClock;

impl health::Clock for NoClock {
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    fn sleep(&self, _: std::time::Duration) {}
}

struct World {
    key: SecretKey,
    v2: Vec<u8>,
    files: Files,
}

impl World {
    fn new() -> World {
        let key = SecretKey::from_seed([9; 32]);
        let v2 = image("2.0.0");
        let mut manifest = Manifest {
            format: Some(FORMAT),
            version: "2.0.0".parse().unwrap(),
            build_date: None,
            sha256: Sha256::of(&v2),
            firmware_size: v2.len() as u64,
            firmware_url: None,
            commit_hash: None,
            title: None,
            description: None,
            release_date: None,
            esp_idf_version: None,
            requires_restart: Some(true),
            chip: Some(ota_core::Chip::Esp32S3),
            secure_version: Some(0),
            file: Some("wordclock-v2.0.0.bin".into()),
            signature: None,
            extra: Default::default(),
        };
        manifest.sign(&key);
        let files = Files(HashMap::from([
            (format!("{BASE}version.json"), manifest.to_json()),
            (format!("{BASE}wordclock-v2.0.0.bin"), v2.clone()),
        ]));
        World { key, v2, files }
    }

    fn engine(&self, running: &Booted) -> Engine {
        Engine::new(Config {
            sources: Sources {
                github: BASE.into(),
                r2: BASE.into(),
            },
            trusted: vec![self.key.public()],
            running: Running {
                version: running.version.clone(),
                secure_version: running.secure_version,
                chip: running.chip,
            },
            timeouts: Timeouts::default(),
        })
    }

    /// The device's life from power-on: boot; if the running image is on probation, pass
    /// its health checks; if it runs 1.0.0, update. Stops at the first power cut.
    fn live(&mut self, device: &mut Device) -> Result<Booted, String> {
        let booted = device.boot().map_err(|e| e.to_string())?;
        let mut slots = device.slots(booted.target);
        if slots.pending_verify() {
            let mut store = MemoryStore::default();
            health::after_boot(&booted.version, &mut slots, &mut [], &NoClock, &mut store)
                .map_err(|e| e.0)?;
        }
        if booted.version.to_string() == "1.0.0" {
            let engine = self.engine(&booted);
            let control = Control::default();
            engine
                .update(
                    &mut self.files,
                    &mut slots,
                    Source::Github,
                    &control,
                    &mut |_: u64, _: u64| {},
                )
                .map_err(|e| e.to_string())?;
        }
        Ok(booted)
    }
}

fn fresh_device() -> Device {
    Device::provision(layout(), Some(&image("1.0.0")), None).unwrap()
}

#[test]
fn an_uninterrupted_update_boots_the_new_image_and_keeps_it() {
    let mut world = World::new();
    let mut device = fresh_device();
    let first = world.live(&mut device).unwrap();
    assert_eq!(first.target, BootTarget::Factory);
    assert_eq!(first.version.to_string(), "1.0.0");
    let second = world.live(&mut device).unwrap();
    assert_eq!(second.target, BootTarget::Ota(Slot(0)));
    assert_eq!(second.version.to_string(), "2.0.0");
    let third = world.live(&mut device).unwrap();
    assert_eq!(
        third.target,
        BootTarget::Ota(Slot(0)),
        "marked valid: it stays"
    );
    let info = device.image_in(third.target).unwrap();
    assert_eq!(info.sha256, Sha256::of(&world.v2));
}

#[test]
fn a_power_cut_at_any_of_many_offsets_always_boots_a_valid_image() {
    let mut world = World::new();
    // How many flash bytes a whole life (boot, update, reboot, confirm, reboot) writes.
    let mut device = fresh_device();
    let start = device.flash.spent();
    for _ in 0..3 {
        world.live(&mut device).unwrap();
    }
    let total = device.flash.spent() - start;
    assert!(total > 60_000, "an update writes the image: {total} bytes");

    // Evenly spread cuts, plus every byte of the last otadata writes.
    let mut cuts: Vec<u64> = (0..60).map(|i| i * total / 60).collect();
    cuts.extend(total - 4200..total - 4100);
    cuts.extend(total - 100..total);
    let mut seen = std::collections::BTreeSet::new();
    for cut in cuts {
        let mut device = fresh_device();
        device.flash.cut_power_after(cut);
        for _ in 0..3 {
            if world.live(&mut device).is_err() {
                break;
            }
        }
        assert!(
            device.flash.power_is_cut(),
            "the cut at {cut} never happened"
        );
        device.flash.restore_power();
        // Power is back: the device boots a valid image, every time, and finishes.
        for _ in 0..4 {
            let booted = world
                .live(&mut device)
                .unwrap_or_else(|e| panic!("after a cut at {cut}: {e}"));
            let info = device.image_in(booted.target).unwrap();
            let version = booted.version.to_string();
            let whole_v2 = info.sha256 == Sha256::of(&world.v2);
            assert!(version == "1.0.0" || whole_v2, "cut at {cut}: {version}");
            seen.insert(version);
        }
        let last = device.boot().unwrap();
        assert_eq!(last.version.to_string(), "2.0.0", "after a cut at {cut}");
    }
    assert_eq!(
        seen.len(),
        2,
        "cuts landed before and after the switch: {seen:?}"
    );
}
