//! The simulated device updating over real HTTP from two local sources: failover when
//! the primary refuses connections, breaks mid-download, or accepts and never answers,
//! and when it serves bad bytes or a stale answer.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::time::{Duration, Instant};

use common::{PATCH_FILE, Release, V2_FILE, dead_base, fresh_device, live};
use ota_core::engine::{Control, Failure, Installed, Source, Sources, Timeouts, UpdateError};
use ota_core::otadata::{BootTarget, Slot};
use testkit::FileServer;
use wordclock::sim::device::Device;
use wordclock::sim::http::RealHttp;

/// The engine's timeouts, but a first answer that a loaded test machine cannot miss:
/// these tests are about which source serves what, not about that deadline.
fn patient() -> Timeouts {
    Timeouts {
        first_answer: Duration::from_secs(60),
        ..Timeouts::default()
    }
}

fn serving(release: &Release) -> FileServer {
    let files = release.files();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    FileServer::start(&files)
}

/// Boots, updates, reboots into 2.0.0 and confirms it.
fn update_to_v2(device: &mut Device, release: &Release, sources: &Sources, timeouts: Timeouts) {
    let mut http = RealHttp::new().unwrap();
    let first = live(device, release, &mut http, sources, timeouts).unwrap();
    assert_eq!(first.version.to_string(), "1.0.0");
    let second = live(device, release, &mut http, sources, timeouts).unwrap();
    assert_eq!(
        (second.target, second.version.to_string()),
        (BootTarget::Ota(Slot(0)), "2.0.0".to_owned())
    );
    let third = device.boot().unwrap();
    assert_eq!(
        third.target,
        BootTarget::Ota(Slot(0)),
        "confirmed: it stays"
    );
}

#[test]
fn an_update_from_v1_to_v2_with_the_primary_down() {
    let release = Release::v2();
    let r2 = serving(&release);
    let sources = Sources {
        github: dead_base(),
        r2: r2.base(),
    };
    let mut device = fresh_device();
    update_to_v2(&mut device, &release, &sources, patient());
    let paths: Vec<String> = r2.requests().into_iter().map(|(path, _)| path).collect();
    assert_eq!(paths, ["/version.json", format!("/{V2_FILE}").as_str()]);
}

#[test]
fn a_primary_that_breaks_mid_download_is_resumed_on_the_other_at_the_same_offset() {
    let release = Release::v2();
    let github = serving(&release);
    let r2 = serving(&release);
    github.break_after(V2_FILE, 30_000);
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let mut device = fresh_device();
    update_to_v2(&mut device, &release, &sources, patient());
    let resumed = r2.requests();
    assert_eq!(
        resumed.len(),
        1,
        "only the image, from where GitHub stopped: {resumed:?}"
    );
    let (path, from) = &resumed[0];
    assert_eq!(path, &format!("/{V2_FILE}"));
    assert!(
        from.is_some_and(|f| f > 0 && f <= 30_000),
        "resumed at {from:?}"
    );
}

#[test]
fn a_primary_that_accepts_and_never_answers_fails_over_after_the_read_timeout() {
    let release = Release::v2();
    let github = serving(&release);
    let r2 = serving(&release);
    github.stall();
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let timeouts = Timeouts {
        connect: Duration::from_millis(500),
        read: Duration::from_millis(500),
        ..Timeouts::default()
    };
    let mut device = fresh_device();
    let started = Instant::now();
    update_to_v2(&mut device, &release, &sources, timeouts);
    assert_eq!(github.requests().len(), 1, "one try at the silent primary");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed over in {:?}",
        started.elapsed()
    );
}

#[test]
fn a_primary_that_trickles_is_left_when_the_request_deadline_passes() {
    let release = Release::v2();
    let github = serving(&release);
    let r2 = serving(&release);
    // 5 KiB/s: every read comes well inside the read timeout, the image never does.
    github.trickle(256, Duration::from_millis(50));
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let timeouts = Timeouts {
        request: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let mut device = fresh_device();
    let started = Instant::now();
    update_to_v2(&mut device, &release, &sources, timeouts);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let resumed = r2.requests();
    assert_eq!(
        resumed.len(),
        1,
        "only the rest of the image came from R2: {resumed:?}"
    );
    assert!(resumed[0].1.is_some_and(|from| from > 0), "{resumed:?}");
}

/// Boots the fresh device and installs from `preferred` first, without rebooting.
fn install_preferring(
    device: &mut Device,
    release: &Release,
    sources: &Sources,
    preferred: Source,
) -> Result<Installed, UpdateError> {
    let booted = device.boot().unwrap();
    let engine = release.engine(&booted, sources.clone(), patient());
    let mut http = RealHttp::new().unwrap();
    let mut slots = device.slots(booted.target);
    engine.update(
        &mut http,
        &mut slots,
        preferred,
        &Control::default(),
        &mut |_: u64, _: u64| {},
    )
}

fn image_requests(server: &FileServer) -> Vec<Option<u64>> {
    server
        .requests()
        .into_iter()
        .filter(|(path, _)| path == &format!("/{V2_FILE}"))
        .map(|(_, from)| from)
        .collect()
}

#[test]
fn a_tampered_image_on_github_is_refused_and_fetched_whole_from_r2() {
    let release = Release::v2();
    let github = serving(&release);
    let r2 = serving(&release);
    let mut tampered = release.image.clone();
    tampered[5_000] ^= 0x01;
    github.put(V2_FILE, &tampered);
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let mut device = fresh_device();
    let installed = install_preferring(&mut device, &release, &sources, Source::Github).unwrap();
    assert_eq!(installed.sources, [Source::R2]);
    assert_eq!(image_requests(&r2), [None], "R2 sent the whole image");
    let refusal = &installed.attempts[0];
    assert_eq!(refusal.source, Source::Github);
    assert!(
        matches!(&refusal.failure, Some(Failure::BadImage(why)) if why.contains("checksum")),
        "{refusal:?}"
    );
    let booted = device.boot().unwrap();
    assert_eq!(
        (booted.target, booted.version.to_string()),
        (BootTarget::Ota(Slot(0)), "2.0.0".to_owned())
    );
    let image = device.image_in(booted.target).unwrap();
    assert_eq!(
        image.sha256, release.manifest.sha256,
        "R2's bytes, not GitHub's"
    );
}

#[test]
fn a_stale_cdn_serving_the_old_build_under_the_new_name_fails_over_to_github() {
    let release = Release::v2();
    let github = serving(&release);
    let r2 = serving(&release);
    r2.put(V2_FILE, &common::image("1.0.0"));
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let mut device = fresh_device();
    let installed = install_preferring(&mut device, &release, &sources, Source::R2).unwrap();
    assert_eq!(installed.sources, [Source::Github]);
    assert!(
        installed.attempts.iter().any(|a| a.source == Source::R2
            && matches!(&a.failure, Some(Failure::BadImage(why))
                if why.contains("the image says it is 1.0.0, the manifest says 2.0.0"))),
        "{:?}",
        installed.attempts
    );
    assert_eq!(image_requests(&github), [None]);
    assert_eq!(device.boot().unwrap().version.to_string(), "2.0.0");
}

#[test]
fn a_stale_signed_manifest_on_github_does_not_hide_the_release_r2_serves() {
    let release = Release::v2();
    let mut stale = release.manifest.clone();
    stale.version = "1.0.0".parse().unwrap();
    stale.sign(&release.key);
    let github = FileServer::start(&[("version.json", &stale.to_json())]);
    let r2 = serving(&release);
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let mut device = fresh_device();
    update_to_v2(&mut device, &release, &sources, patient());
    let asked: Vec<String> = r2.requests().into_iter().map(|(path, _)| path).collect();
    assert_eq!(asked, ["/version.json", format!("/{V2_FILE}").as_str()]);
}

#[test]
fn github_answering_404_is_left_for_r2() {
    let release = Release::v2();
    let github = FileServer::start(&[]);
    let r2 = serving(&release);
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let mut device = fresh_device();
    let installed = install_preferring(&mut device, &release, &sources, Source::Github).unwrap();
    assert_eq!(installed.sources, [Source::R2]);
    assert_eq!(github.requests(), [("/version.json".to_owned(), None)]);
    assert_eq!(image_requests(&r2), [None]);
}

#[test]
fn r2_answering_503_is_left_for_github() {
    let release = Release::v2();
    let github = serving(&release);
    let r2 = serving(&release);
    r2.fail_after(0);
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let mut device = fresh_device();
    let installed = install_preferring(&mut device, &release, &sources, Source::R2).unwrap();
    assert_eq!(installed.sources, [Source::Github]);
    assert_eq!(
        r2.requests(),
        [("/version.json".to_owned(), None)],
        "R2 was asked first"
    );
    assert_eq!(r2.bytes_served(), 0);
    assert_eq!(image_requests(&github), [None]);
}

#[test]
fn both_sources_down_fails_the_update_and_leaves_the_running_image() {
    let release = Release::v2();
    let r2 = serving(&release);
    r2.fail_after(0);
    let sources = Sources {
        github: dead_base(),
        r2: r2.base(),
    };
    let mut device = fresh_device();
    let failed = install_preferring(&mut device, &release, &sources, Source::Github).unwrap_err();
    assert!(
        // GitHub, R2, then GitHub once more without the short first-answer deadline.
        matches!(&failed, UpdateError::NoManifest { attempts } if attempts.len() == 3),
        "{failed:?}"
    );
    let booted = device.boot().unwrap();
    assert_eq!(
        (booted.target, booted.version.to_string()),
        (BootTarget::Factory, "1.0.0".to_owned())
    );
}

#[test]
fn a_replayed_older_signed_manifest_downgrades_nothing() {
    // The device runs 2.0.0, committed.
    let release = Release::v2();
    let serving_v2 = serving(&release);
    let sources = Sources {
        github: dead_base(),
        r2: serving_v2.base(),
    };
    let mut device = fresh_device();
    update_to_v2(&mut device, &release, &sources, patient());
    // Both sources now serve an older release's manifest, correctly signed: a replay.
    let mut old = release.manifest.clone();
    old.version = "1.5.0".parse().unwrap();
    old.sign(&release.key);
    let replayed = [
        ("version.json", old.to_json()),
        (V2_FILE, release.image.clone()),
    ];
    let files: Vec<(&str, &[u8])> = replayed.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let (github, r2) = (FileServer::start(&files), FileServer::start(&files));
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let booted = device.boot().unwrap();
    let spent = device.flash.spent();
    let engine = release.engine(&booted, sources, patient());
    let refused = engine
        .update(
            &mut RealHttp::new().unwrap(),
            &mut device.slots(booted.target),
            Source::Github,
            &Control::default(),
            &mut |_: u64, _: u64| {},
        )
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            UpdateError::Refused(ota_core::policy::Refusal::Downgrade { .. })
        ),
        "{refused:?}"
    );
    assert_eq!(device.flash.spent(), spent, "nothing was written");
    assert!(image_requests(&github).is_empty() && image_requests(&r2).is_empty());
    assert_eq!(device.boot().unwrap().version.to_string(), "2.0.0");
}

fn paths(server: &FileServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .map(|(path, _)| path)
        .collect()
}

#[test]
fn a_patch_release_installs_from_its_patch_without_downloading_the_image() {
    let release = Release::patched();
    let github = serving(&release);
    let r2 = serving(&release);
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let mut device = fresh_device();
    update_to_v2(&mut device, &release, &sources, patient());
    assert_eq!(
        paths(&github),
        ["/version.json".to_owned(), format!("/{PATCH_FILE}")]
    );
    let patch = release.patch.as_ref().unwrap();
    assert!(
        patch.len() * 10 < release.image.len(),
        "{} bytes of patch for a {} byte image",
        patch.len(),
        release.image.len()
    );
    let booted = device.boot().unwrap();
    let info = device.image_in(booted.target).unwrap();
    assert_eq!(info.sha256, ota_core::Sha256::of(&release.image));
}

#[test]
fn a_patch_download_that_breaks_resumes_on_the_other_source_at_the_same_byte() {
    let release = Release::patched();
    let github = serving(&release);
    let r2 = serving(&release);
    let half = release.patch.as_ref().unwrap().len() / 2;
    github.break_after(PATCH_FILE, half);
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let mut device = fresh_device();
    update_to_v2(&mut device, &release, &sources, patient());
    let resumed = r2.requests();
    assert_eq!(resumed.len(), 1, "only the patch's rest: {resumed:?}");
    assert_eq!(resumed[0].0, format!("/{PATCH_FILE}"));
    assert!(
        resumed[0]
            .1
            .is_some_and(|from| from > 0 && from as usize <= half),
        "resumed at {:?}",
        resumed[0].1
    );
}

#[test]
fn a_corrupted_patch_on_both_sources_falls_back_to_the_whole_image() {
    let release = Release::patched();
    let mut corrupted = release.patch.clone().unwrap();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x5a;
    let manifest = release.manifest.to_json();
    let serve = || {
        FileServer::start(&[
            ("version.json", manifest.as_slice()),
            (V2_FILE, release.image.as_slice()),
            (PATCH_FILE, corrupted.as_slice()),
        ])
    };
    let (github, r2) = (serve(), serve());
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let mut device = fresh_device();
    let installed = install_preferring(&mut device, &release, &sources, Source::Github).unwrap();
    let ota_core::engine::Delivery::FellBack { why } = &installed.delivery else {
        panic!("{:?}", installed.delivery);
    };
    assert!(why.contains("github") && why.contains("r2"), "{why}");
    assert!(paths(&github).contains(&format!("/{V2_FILE}")));
    let booted = device.boot().unwrap();
    assert_eq!(booted.version.to_string(), "2.0.0");
}
