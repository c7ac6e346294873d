//! Failover time, measured in one run on local sources and reported as a ratio: how long
//! the engine takes to get a trusted manifest when the primary source is dead, against
//! the existing fleet's way: one request to its preferred source with a 10 s timeout,
//! then one to the other source; it never retries the same source.
//!
//! Two kinds of dead primary: one that refuses connections, and one that accepts them and
//! then never answers, as a host behind a firewall that drops packets does. Then, mid-
//! download: a primary that goes silent half-way through the image, and how long the
//! engine takes to finish the install from the other source at the same offset.
//!
//! `cargo bench -p wordclock --bench failover`.
#![allow(clippy::unwrap_used)] // a benchmark that cannot unwrap has failed, and says where

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Release, V2_FILE};
use ota_core::engine::{Engine, Source, Sources, Timeouts};
use testkit::FileServer;
use wordclock::sim::device::Booted;
use wordclock::sim::http::RealHttp;

/// The existing fleet's HTTP timeout.
const FLEET_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let release = Release::v2();
    let r2 = FileServer::start(&[
        ("version.json", &release.manifest.to_json()),
        (V2_FILE, &release.image),
    ]);
    let silent = FileServer::start(&[]);
    silent.stall();
    let refusing = refused_base();

    println!("failover to the second source for the manifest, primary dead");
    for (kind, primary) in [
        ("refusing connections", refusing),
        ("accepting, never answering", silent.base()),
    ] {
        let sources = Sources {
            github: primary.clone(),
            r2: r2.base(),
        };
        let ours = time_check(&release, &sources, Timeouts::default());
        let fleet_timeouts = Timeouts {
            connect: FLEET_TIMEOUT,
            read: FLEET_TIMEOUT,
            first_answer: FLEET_TIMEOUT,
            ..Timeouts::default()
        };
        // The fleet asks the primary once, then the other source once: the engine's
        // order with the fleet's timeout. (It used to be modelled with a retry of the
        // primary, which the fleet's firmware never makes: that doubled the baseline.)
        let fleet = time_check(&release, &sources, fleet_timeouts);
        println!("  primary {kind}");
        println!(
            "    clockrel engine (1.2 s first answer)      {:>8.3} s",
            ours.as_secs_f64()
        );
        println!(
            "    existing fleet (10 s timeout, no retry)   {:>8.3} s",
            fleet.as_secs_f64()
        );
        println!(
            "    engine / fleet                            {:>8.3}",
            ours.as_secs_f64() / fleet.as_secs_f64()
        );
    }

    // Mid-download: GitHub serves the manifest, then half the image, then nothing.
    let github = FileServer::start(&[
        ("version.json", &release.manifest.to_json()),
        (V2_FILE, &release.image),
    ]);
    github.go_silent_after(V2_FILE, release.image.len() / 2);
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let started = Instant::now();
    let installed = install(&release, &sources);
    let elapsed = started.elapsed();
    assert_eq!(installed, [Source::Github, Source::R2], "resumed on R2");
    let resumed_at = r2
        .requests()
        .into_iter()
        .find(|(path, _)| path == &format!("/{V2_FILE}"))
        .and_then(|(_, from)| from);
    assert_eq!(
        resumed_at,
        Some(release.image.len() as u64 / 2),
        "at the offset GitHub stopped"
    );
    println!("mid-download, the primary goes silent half-way through the image");
    println!(
        "    clockrel engine (5 s read timeout)        {:>8.3} s to the installed image",
        elapsed.as_secs_f64()
    );
    println!(
        "    existing fleet (its firmware, not measured)  waits 120 s per network operation, then fails the update"
    );
}

/// The time from asking for the update to holding the verified image in the slot, and
/// the sources the image came from.
fn install(release: &Release, sources: &Sources) -> Vec<Source> {
    let mut device = common::fresh_device();
    let booted = device.boot().unwrap();
    let engine = release.engine(&booted, sources.clone(), Timeouts::default());
    let mut http = RealHttp::new().unwrap();
    let mut slots = device.slots(booted.target);
    engine
        .update(
            &mut http,
            &mut slots,
            Source::Github,
            &ota_core::engine::Control::default(),
            &mut |_: u64, _: u64| {},
        )
        .unwrap()
        .sources
}

fn refused_base() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/")
}

/// The time from asking the primary to holding a trusted manifest from either source.
fn time_check(release: &Release, sources: &Sources, timeouts: Timeouts) -> Duration {
    let running = Booted {
        target: ota_core::otadata::BootTarget::Factory,
        version: "1.0.0".parse().unwrap(),
        secure_version: 0,
        chip: ota_core::Chip::Esp32S3,
        fell_back: false,
    };
    let engine: Engine = release.engine(&running, sources.clone(), timeouts);
    let mut http = RealHttp::new().unwrap();
    let started = Instant::now();
    let offer = engine.check(&mut http, Source::Github).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        offer.source,
        Source::R2,
        "the dead primary cannot have answered"
    );
    elapsed
}
