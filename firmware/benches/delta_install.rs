//! Install time from a delta patch against the whole image, on the simulated device, in
//! one run: the same release (a version bump of a 256 KiB image) served by a local HTTP
//! server, once as the image and once as the patch the manifest lists, over a link
//! trickling 4 KiB every 16 ms (256 KiB/s, a poor Wi-Fi link) and then unthrottled (what
//! applying the patch itself costs, here on the host).
//!
//! `cargo bench -p wordclock --bench delta_install`.
#![allow(clippy::unwrap_used)] // a benchmark that cannot unwrap has failed, and says where

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Release, bumped_image_of, device_running, image_of};
use ota_core::engine::{Control, Delivery, Source, Sources, Timeouts};
use testkit::FileServer;
use wordclock::sim::http::RealHttp;

const PAYLOAD: u32 = 256 * 1024;

fn main() {
    let old = image_of("1.0.0", PAYLOAD);
    let new = bumped_image_of("2.0.0", PAYLOAD);
    let whole = Release::of(new.clone());
    let patched = Release::patched_from(&old, new);
    let patch_len = patched.patch.as_ref().unwrap().len();
    println!(
        "installing 2.0.0 ({} bytes) on a device running 1.0.0; its patch is {patch_len} bytes ({:.2} %)",
        whole.image.len(),
        patch_len as f64 * 100.0 / whole.image.len() as f64
    );
    for (link, trickle) in [
        ("at 256 KiB/s", Some((4096, Duration::from_millis(16)))),
        ("unthrottled", None),
    ] {
        let (image_s, image_bytes) = time_install(&old, &whole, trickle, false);
        let (patch_s, patch_bytes) = time_install(&old, &patched, trickle, true);
        println!("  {link}");
        println!("    whole image      {image_s:>8.3} s  {image_bytes:>8} bytes on the wire");
        println!("    patch            {patch_s:>8.3} s  {patch_bytes:>8} bytes on the wire");
        println!(
            "    patch / image    {:>8.3} of the time, {:.3} of the bytes",
            patch_s / image_s,
            patch_bytes as f64 / image_bytes as f64
        );
    }
}

/// Installs `release` on a fresh device running `old`, served by one local server that
/// trickles as told; returns the seconds the install took (after the manifest check) and
/// the body bytes it served.
fn time_install(
    old: &[u8],
    release: &Release,
    trickle: Option<(usize, Duration)>,
    expect_patch: bool,
) -> (f64, u64) {
    let files = release.files();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let server = FileServer::start(&files);
    let sources = Sources {
        github: server.base(),
        r2: server.base(),
    };
    let mut device = device_running(old);
    let booted = device.boot().unwrap();
    let engine = release.engine(&booted, sources, Timeouts::default());
    let mut http = RealHttp::new().unwrap();
    let offer = engine.check(&mut http, Source::Github).unwrap();
    if let Some((piece, every)) = trickle {
        server.trickle(piece, every);
    }
    let before = server.bytes_served();
    let mut slots = device.slots(booted.target);
    let started = Instant::now();
    let installed = engine
        .install(
            &mut http,
            &mut slots,
            &offer,
            &Control::default(),
            &mut |_: u64, _: u64| {},
        )
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(
        matches!(installed.delivery, Delivery::Patch { .. }),
        expect_patch,
        "{:?}",
        installed.delivery
    );
    (seconds, server.bytes_served() - before)
}
