//! The simulated device through an update, with the power cut at many points of it:
//! whatever byte the flash was writing, the device always boots a valid image, and it is
//! the new one only once the update completed.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::collections::HashMap;

use common::{PATCH_FILE, Release, V2_FILE, fresh_device, live};
use ota_core::Sha256;
use ota_core::engine::{ContentRange, Http, HttpError, Response, Sources, Timeouts};
use ota_core::otadata::{BootTarget, Slot};
use wordclock::sim::device::{Booted, Device};

const BASE: &str = "http://ota.local/";

/// Serves fixed files; enough for the engine, since the network is not the point here.
/// Keeps every URL asked.
struct Files(HashMap<String, Vec<u8>>, Vec<String>);

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
        self.1.push(url.to_owned());
        let body = self.0.get(url).cloned();
        let body = body.ok_or(HttpError::Connect("no such file".into()))?;
        Ok(Box::new(Body(body, 0)))
    }
}

/// The release, and a peer that serves it.
struct World {
    release: Release,
    files: Files,
}

impl World {
    fn new() -> World {
        World::of(Release::v2())
    }

    fn of(release: Release) -> World {
        let files = release
            .files()
            .into_iter()
            .map(|(name, bytes)| (format!("{BASE}{name}"), bytes))
            .collect();
        World {
            release,
            files: Files(files, Vec::new()),
        }
    }

    fn live(&mut self, device: &mut Device) -> Result<Booted, String> {
        let sources = Sources {
            github: BASE.into(),
            r2: BASE.into(),
        };
        live(
            device,
            &self.release,
            &mut self.files,
            &sources,
            Timeouts::default(),
        )
    }
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
    assert_eq!(info.sha256, Sha256::of(&world.release.image));
}

#[test]
fn a_power_cut_at_any_of_many_offsets_always_boots_a_valid_image() {
    a_cut_anywhere_boots_a_valid_image(World::new());
}

/// The running slot is only read while a patch applies: a cut anywhere on the patch path
/// leaves the old image bootable, as on the image path.
#[test]
fn a_power_cut_anywhere_while_a_patch_applies_always_boots_a_valid_image() {
    let world = World::of(Release::patched());
    a_cut_anywhere_boots_a_valid_image(world);
}

/// Cuts the power inside every flash operation of a device's life through the update,
/// and at offsets spread through it; after each, the device boots a valid image every
/// time and ends on the new one.
fn a_cut_anywhere_boots_a_valid_image(mut world: World) {
    // A whole life (boot, update, reboot, confirm, reboot), recording every flash
    // operation: the image erase and writes, and each otadata erase and entry write.
    let mut device = fresh_device();
    let start = device.flash.spent();
    let skip = device.flash.operations().len();
    for _ in 0..3 {
        world.live(&mut device).unwrap();
    }
    let total = device.flash.spent() - start;
    assert!(total > 60_000, "an update writes the image: {total} bytes");
    let operations: Vec<(u64, u64)> = device.flash.operations()[skip..]
        .iter()
        .map(|(at, len)| (at - start, *len))
        .collect();
    let asked = |file: &str| world.files.1.iter().any(|url| url.ends_with(file));
    let patched = world.release.patch.is_some();
    assert_eq!(asked(PATCH_FILE), patched, "the update came by patch");
    assert_eq!(asked(V2_FILE), !patched, "the update came by image");
    let otadata_entries = operations.iter().filter(|(_, len)| *len == 32).count();
    assert_eq!(
        otadata_entries, 3,
        "set_boot (NEW), boot (PENDING_VERIFY), mark_valid (VALID)"
    );

    // Cut inside every operation (first byte, second, middle, last), plus evenly spread
    // cuts through the image.
    let mut cuts: Vec<u64> = operations
        .iter()
        .flat_map(|(at, len)| [*at, at + 1, at + len / 2, at + len - 1])
        .collect();
    cuts.extend((0..40).map(|i| i * total / 40));
    cuts.sort_unstable();
    cuts.dedup();
    assert!(cuts.len() >= 50, "{} cuts", cuts.len());
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
            assert!(
                !booted.fell_back,
                "cut at {cut}: otadata chose a slot without a valid image"
            );
            let info = device.image_in(booted.target).unwrap();
            let version = booted.version.to_string();
            let whole_v2 = info.sha256 == Sha256::of(&world.release.image);
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

#[test]
fn no_update_starts_while_the_running_image_is_on_probation() {
    let mut world = World::new();
    let mut device = fresh_device();
    world.live(&mut device).unwrap();
    // Rebooted into 2.0.0, on probation: a new update must not erase the fallback.
    let booted = device.boot().unwrap();
    assert_eq!(booted.version.to_string(), "2.0.0");
    let mut slots = device.slots(booted.target);
    let error = ota_core::engine::Slots::begin(&mut slots, 1000).unwrap_err();
    assert!(error.0.contains("on probation"), "{}", error.0);
}
