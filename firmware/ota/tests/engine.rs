//! The update engine with in-memory ports: failover for the manifest and mid-download,
//! and every refusal before the boot slot changes.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod support;

use ota_core::Sha256;
use ota_core::engine::{Control, Engine, Failure, Source, Timeouts, UpdateError};
use ota_core::policy::{Decision, Refusal};
use support::{Behaviour, FakeHttp, FakeSlots, FakeStore, IMAGE, R2, engine, key, manifest};

fn update(
    engine: &Engine,
    http: &mut FakeHttp,
    slots: &mut FakeSlots,
) -> Result<ota_core::engine::Installed, UpdateError> {
    engine.update(
        http,
        slots,
        Source::Github,
        &Control::default(),
        &mut |_: u64, _: u64| {},
    )
}

fn failures(error: &UpdateError) -> Vec<(Source, Option<Failure>)> {
    match error {
        UpdateError::NoManifest { attempts } | UpdateError::Download { attempts } => attempts
            .iter()
            .map(|a| (a.source, a.failure.clone()))
            .collect(),
        other => panic!("not a fetch failure: {other:?}"),
    }
}

#[test]
fn a_healthy_primary_serves_manifest_and_image() {
    let mut http = FakeHttp::healthy(&manifest());
    let mut slots = FakeSlots::default();
    let installed = update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap();
    assert_eq!(installed.version.to_string(), "2.9.0");
    assert_eq!(installed.sources, [Source::Github]);
    assert_eq!(slots.inactive, IMAGE);
    assert_eq!(
        slots.booted_image,
        Some(Sha256::of(IMAGE)),
        "the slot was whole when it was set to boot"
    );
    assert!(
        http.log
            .iter()
            .all(|(url, _)| url.starts_with(support::GITHUB))
    );
}

#[test]
fn the_manifest_fails_over_on_404_503_timeout_refusal_and_bad_signature() {
    let mut forged = support::unsigned_manifest();
    forged.sign(&ota_core::manifest::SecretKey::from_seed([7; 32]));
    // Signed by the trusted key, the signature damaged: Ed25519 itself says no.
    let mut tampered = manifest();
    tampered.signature.as_mut().unwrap().ed25519[0] ^= 1;
    let cases = [
        (Behaviour::Status(404), Failure::Status(404)),
        (Behaviour::Status(503), Failure::Status(503)),
        (Behaviour::Timeout, Failure::Timeout),
        (
            Behaviour::Refuse,
            Failure::Connect("connection refused".into()),
        ),
        (
            Behaviour::serve(b"<html>captive portal</html>"),
            Failure::Invalid("manifest is not valid".into()),
        ),
        (
            Behaviour::serve(&forged.to_json()),
            Failure::Invalid("which is not trusted".into()),
        ),
        (
            Behaviour::serve(&tampered.to_json()),
            Failure::Invalid("does not match its contents".into()),
        ),
    ];
    for (behaviour, expected) in cases {
        let mut http = FakeHttp::healthy(&manifest());
        http.route(Source::Github, "version.json", behaviour.clone());
        let offer = engine("2.8.0", 0).check(&mut http, Source::Github).unwrap();
        assert_eq!(offer.source, Source::R2, "{behaviour:?}");
        assert_eq!(offer.decision, Decision::Update);
        assert_eq!(offer.attempts.len(), 2, "both attempts are logged");
        let failure = offer.attempts[0].failure.clone().unwrap();
        match (failure, expected) {
            (Failure::Invalid(got), Failure::Invalid(want)) => {
                assert!(got.contains(&want), "{got:?} does not say {want:?}");
            }
            (got, want) => assert_eq!(got, want),
        }
        assert!(offer.attempts[1].failure.is_none());
    }
}

#[test]
fn the_preference_can_be_r2_and_falls_back_to_github() {
    let mut http = FakeHttp::healthy(&manifest());
    http.route(Source::R2, "version.json", Behaviour::Refuse);
    let offer = engine("2.8.0", 0).check(&mut http, Source::R2).unwrap();
    assert_eq!(offer.source, Source::Github);
    assert_eq!(http.log[0].0, format!("{R2}version.json"));
}

#[test]
fn both_sources_down_is_a_clear_failure_and_nothing_is_written() {
    let mut http = FakeHttp::healthy(&manifest());
    http.route(Source::Github, "version.json", Behaviour::Refuse);
    http.route(Source::R2, "version.json", Behaviour::Timeout);
    let mut slots = FakeSlots::default();
    let error = update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap_err();
    // GitHub had the short first-answer deadline, so it is asked once more in full.
    let refused = || {
        (
            Source::Github,
            Some(Failure::Connect("connection refused".into())),
        )
    };
    assert_eq!(
        failures(&error),
        [refused(), (Source::R2, Some(Failure::Timeout)), refused()]
    );
    assert_eq!(
        error.to_string(),
        "no source gave a trusted manifest; github manifest: cannot connect (connection refused); r2 manifest: timed out; github manifest: cannot connect (connection refused)"
    );
    assert_eq!((slots.began, slots.boot_set), (0, false));
}

#[test]
fn a_source_dying_mid_download_continues_on_the_other_at_the_same_offset() {
    let mut http = FakeHttp::healthy(&manifest());
    http.route(
        Source::Github,
        "wordclock-v2.9.0.bin",
        Behaviour::Serve {
            body: IMAGE.to_vec(),
            die_after: Some(30_000),
            ranges: true,
        },
    );
    let mut slots = FakeSlots::default();
    let installed = update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap();
    assert_eq!(installed.sources, [Source::Github, Source::R2]);
    assert_eq!(slots.booted_image, Some(Sha256::of(IMAGE)));
    assert_eq!(slots.began, 1, "resumed, not restarted");
    assert_eq!(
        http.log.last().unwrap(),
        &(format!("{R2}wordclock-v2.9.0.bin"), Some(30_000))
    );
}

#[test]
fn a_source_that_ignores_range_restarts_the_download_from_zero() {
    let mut http = FakeHttp::healthy(&manifest());
    http.route(
        Source::Github,
        "wordclock-v2.9.0.bin",
        Behaviour::Serve {
            body: IMAGE.to_vec(),
            die_after: Some(20_000),
            ranges: true,
        },
    );
    http.route(
        Source::R2,
        "wordclock-v2.9.0.bin",
        Behaviour::Serve {
            body: IMAGE.to_vec(),
            die_after: None,
            ranges: false,
        },
    );
    let mut slots = FakeSlots::default();
    update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap();
    assert_eq!(slots.inactive, IMAGE);
    assert_eq!(slots.began, 2, "the slot was begun again for the restart");
}

#[test]
fn an_image_nobody_can_deliver_leaves_the_slot_unset() {
    let mut http = FakeHttp::healthy(&manifest());
    http.route(
        Source::Github,
        "wordclock-v2.9.0.bin",
        Behaviour::Status(404),
    );
    http.route(Source::R2, "wordclock-v2.9.0.bin", Behaviour::Refuse);
    let mut slots = FakeSlots::default();
    let error = update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap_err();
    assert_eq!(
        failures(&error).len(),
        4,
        "two tries per source, then it stops"
    );
    assert!(!slots.boot_set);
    assert_eq!(slots.aborted, 1);
}

#[test]
fn a_corrupted_image_on_one_source_is_fetched_again_from_the_other() {
    let mut corrupted = IMAGE.to_vec();
    corrupted[40_000] ^= 0x10;
    let mut http = FakeHttp::healthy(&manifest());
    http.route(
        Source::Github,
        "wordclock-v2.9.0.bin",
        Behaviour::serve(&corrupted),
    );
    let mut slots = FakeSlots::default();
    let installed = update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap();
    assert_eq!(installed.sources, [Source::R2]);
    assert_eq!(slots.booted_image, Some(Sha256::of(IMAGE)));
    assert_eq!(slots.began, 2, "the slot was begun again for R2's copy");
    let refusal = installed
        .attempts
        .iter()
        .find(|a| a.source == Source::Github);
    assert!(
        matches!(&refusal.unwrap().failure, Some(Failure::BadImage(why)) if why.contains("checksum")),
        "{:?}",
        installed.attempts
    );
    let from_r2: Vec<_> = http
        .log
        .iter()
        .filter(|(url, _)| url.starts_with(R2) && url.ends_with(".bin"))
        .collect();
    assert_eq!(from_r2.len(), 1, "R2 sent the whole image, from 0");
    assert_eq!(from_r2[0].1, None);
}

#[test]
fn an_image_corrupted_on_both_sources_is_refused_with_both_reasons() {
    let mut corrupted = IMAGE.to_vec();
    corrupted[40_000] ^= 0x10;
    let mut http = FakeHttp::healthy(&manifest());
    for source in [Source::Github, Source::R2] {
        http.route(source, "wordclock-v2.9.0.bin", Behaviour::serve(&corrupted));
    }
    let mut slots = FakeSlots::default();
    let error = update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap_err();
    let UpdateError::Verify(why) = &error else {
        panic!("{error:?}")
    };
    assert!(
        why.starts_with("github: app image, at byte") && why.contains("; r2: app image, at byte"),
        "{why}"
    );
    assert!(!slots.boot_set);
    let image_requests = http.log.iter().filter(|(u, _)| u.ends_with(".bin")).count();
    assert_eq!(image_requests, 2, "one whole try per source, no more");
}

#[test]
fn a_stale_cdn_copy_under_the_new_name_is_refused_early_and_the_other_source_used() {
    // R2, preferred, still serves the 2.8.0 build under 2.9.0's versioned name.
    let stale = support::image_of_version("2.8.0");
    let mut http = FakeHttp::healthy(&manifest());
    http.route(Source::R2, "wordclock-v2.9.0.bin", Behaviour::serve(&stale));
    let mut slots = FakeSlots::default();
    let installed = engine("2.8.0", 0)
        .update(
            &mut http,
            &mut slots,
            Source::R2,
            &Control::default(),
            &mut |_: u64, _: u64| {},
        )
        .unwrap();
    assert_eq!(installed.sources, [Source::Github]);
    assert_eq!(slots.booted_image, Some(Sha256::of(IMAGE)));
    assert!(
        installed.attempts.iter().any(|a| a.source == Source::R2
            && matches!(&a.failure, Some(Failure::BadImage(why)) if why.contains("the image says it is 2.8.0"))),
        "{:?}",
        installed.attempts
    );
}

/// Both sources serve 2.9.0, but GitHub's version.json is a correctly signed manifest
/// of `version`: a stale cache, or a replay.
fn github_serving_a_signed_manifest_of(version: &str) -> FakeHttp {
    let mut old = support::unsigned_manifest();
    old.version = version.parse().unwrap();
    old.sign(&key());
    let mut http = FakeHttp::healthy(&manifest());
    http.route(
        Source::Github,
        "version.json",
        Behaviour::serve(&old.to_json()),
    );
    http
}

#[test]
fn a_stale_manifest_on_the_preferred_source_does_not_hide_the_release() {
    // GitHub's cache still serves the 2.8.0 manifest (correctly signed); R2 has 2.9.0.
    let mut http = github_serving_a_signed_manifest_of("2.8.0");
    let engine = engine("2.8.0", 0);
    let offer = engine.check(&mut http, Source::Github).unwrap();
    assert_eq!(offer.decision, Decision::Update);
    assert_eq!(offer.source, Source::R2);
    assert_eq!(offer.manifest.version.to_string(), "2.9.0");
    assert_eq!(offer.attempts.len(), 2, "both manifests were read");
}

#[test]
fn a_replayed_older_manifest_never_downgrades_and_the_newer_one_is_reported() {
    let mut http = github_serving_a_signed_manifest_of("2.7.0");
    let engine = engine("2.9.0", 2);
    let offer = engine.check(&mut http, Source::Github).unwrap();
    assert_eq!(
        (offer.source, offer.decision),
        (Source::R2, Decision::Current),
        "R2's current manifest is the better answer than GitHub's downgrade"
    );
    let mut slots = FakeSlots::default();
    assert_eq!(
        update(&engine, &mut http, &mut slots).unwrap_err(),
        UpdateError::Current
    );
    assert_eq!(slots.began, 0);
}

#[test]
fn an_up_to_date_device_asks_both_sources_and_stays() {
    let mut http = FakeHttp::healthy(&manifest());
    let offer = engine("2.9.0", 2).check(&mut http, Source::Github).unwrap();
    assert_eq!(
        (offer.source, offer.decision),
        (Source::Github, Decision::Current)
    );
    let manifests: Vec<&str> = http.log.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        manifests,
        [
            format!("{}version.json", support::base(Source::Github)),
            format!("{R2}version.json"),
        ]
    );
}

#[test]
fn an_image_whose_embedded_version_differs_is_refused_as_soon_as_it_shows() {
    // A correctly signed manifest for 2.9.1 that points at the 2.9.0 image.
    let mut m = support::unsigned_manifest();
    m.version = "2.9.1".parse().unwrap();
    m.sign(&key());
    let mut http = FakeHttp::healthy(&m);
    let mut slots = FakeSlots::default();
    let error = update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap_err();
    assert_eq!(
        error,
        UpdateError::Verify(
            "github: the image says it is 2.9.0, the manifest says 2.9.1; \
             r2: the image says it is 2.9.0, the manifest says 2.9.1"
                .into()
        )
    );
    assert!(!slots.boot_set);
    assert!(
        slots.high_water < 4096,
        "refused within the first chunk, not after {} bytes",
        slots.high_water
    );
}

#[test]
fn an_image_whose_hash_differs_from_the_manifest_is_refused() {
    let mut m = support::unsigned_manifest();
    m.sha256.0[0] ^= 1;
    m.sign(&key());
    let mut http = FakeHttp::healthy(&m);
    let mut slots = FakeSlots::default();
    let error = update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the image is not the one promised: github: SHA-256"),
        "{error}"
    );
    assert!(!slots.boot_set);
}

#[test]
fn policy_refusals_write_nothing() {
    let cases = [
        (
            engine("3.0.0", 0),
            UpdateError::Refused(Refusal::Downgrade {
                running: "3.0.0".parse().unwrap(),
                offered: "2.9.0".parse().unwrap(),
            }),
        ),
        (
            engine("2.8.0", 5),
            UpdateError::Refused(Refusal::SecureVersion {
                running: 5,
                offered: 2,
            }),
        ),
        (engine("2.9.0", 2), UpdateError::Current),
    ];
    for (engine, expected) in cases {
        let mut http = FakeHttp::healthy(&manifest());
        let mut slots = FakeSlots::default();
        assert_eq!(
            update(&engine, &mut http, &mut slots).unwrap_err(),
            expected
        );
        assert_eq!(slots.began, 0);
    }
}

#[test]
fn an_explicit_cancel_stops_and_leaves_the_running_slot() {
    let mut http = FakeHttp::healthy(&manifest());
    let mut slots = FakeSlots::default();
    let control = Control::default();
    let engine = engine("2.8.0", 0);
    let offer = engine.check(&mut http, Source::Github).unwrap();
    let mut progress = |done: u64, _: u64| {
        if done > 10_000 {
            control.cancel();
        }
    };
    let error = engine
        .install(&mut http, &mut slots, &offer, &control, &mut progress)
        .unwrap_err();
    assert_eq!(error, UpdateError::Cancelled);
    assert!(!slots.boot_set);
    assert_eq!(slots.aborted, 1);
    assert!(!control.is_running());
}

#[test]
fn a_second_update_while_one_runs_is_turned_away() {
    let mut http = FakeHttp::healthy(&manifest());
    let mut slots = FakeSlots::default();
    let control = Control::default();
    let engine = engine("2.8.0", 0);
    let offer = engine.check(&mut http, Source::Github).unwrap();
    let mut second = None;
    let mut progress = |_: u64, _: u64| {
        if second.is_none() {
            let mut other_slots = FakeSlots::default();
            let mut other_http = FakeHttp::healthy(&manifest());
            second = Some(engine.install(
                &mut other_http,
                &mut other_slots,
                &offer,
                &control,
                &mut |_: u64, _: u64| {},
            ));
        }
    };
    engine
        .install(&mut http, &mut slots, &offer, &control, &mut progress)
        .unwrap();
    assert_eq!(second, Some(Err(UpdateError::Busy)));
    assert!(slots.boot_set, "the running update finished");
}

#[test]
fn the_source_preference_persists_and_accepts_cloudflare() {
    let mut store = FakeStore::default();
    assert_eq!(Source::preferred(&store), Source::Github);
    Source::parse("cloudflare")
        .unwrap()
        .set_preferred(&mut store);
    assert_eq!(Source::preferred(&store), Source::R2);
    store.0.insert("ota_source".into(), b"\xff\xfe".to_vec());
    assert_eq!(Source::preferred(&store), Source::Github);
    assert_eq!(Source::parse("GitHub"), Some(Source::Github));
    assert_eq!(Source::parse("ftp"), None);
}

#[test]
fn a_secure_version_other_than_the_manifests_is_refused() {
    let mut m = support::unsigned_manifest();
    m.secure_version = Some(3);
    m.sign(&key());
    let mut http = FakeHttp::healthy(&m);
    let mut slots = FakeSlots::default();
    let error = update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap_err();
    assert_eq!(
        error,
        UpdateError::Verify(
            "github: the image's secure_version is 2, the manifest says Some(3); \
             r2: the image's secure_version is 2, the manifest says Some(3)"
                .into()
        )
    );
    assert!(!slots.boot_set);
}

#[test]
fn a_resume_whose_content_range_does_not_continue_is_not_used() {
    let mut http = FakeHttp::healthy(&manifest());
    http.route(
        Source::Github,
        "wordclock-v2.9.0.bin",
        Behaviour::Serve {
            body: IMAGE.to_vec(),
            die_after: Some(25_000),
            ranges: true,
        },
    );
    // R2 answers the Range with bytes from another place of the file.
    http.route(
        Source::R2,
        "wordclock-v2.9.0.bin",
        Behaviour::Misranged {
            body: IMAGE.to_vec(),
            shift: 4,
        },
    );
    let mut slots = FakeSlots::default();
    let installed = update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap();
    assert_eq!(
        installed.sources,
        [Source::Github],
        "the misranged answer was not written"
    );
    let failures: Vec<_> = installed
        .attempts
        .iter()
        .map(|a| (a.source, a.failure.clone().map(|f| f.to_string())))
        .collect();
    assert!(
        failures[1]
            .1
            .as_deref()
            .unwrap()
            .contains("does not continue at 25000"),
        "{failures:?}"
    );
    assert_eq!(slots.booted_image, Some(Sha256::of(IMAGE)));
}

#[test]
fn a_resume_across_sources_that_differ_starts_over_from_one() {
    // R2 still serves another build under the same name and size (a stale CDN copy).
    let mut other = IMAGE.to_vec();
    other[40_000] ^= 0xFF;
    let mut http = FakeHttp::healthy(&manifest());
    http.route(
        Source::Github,
        "wordclock-v2.9.0.bin",
        Behaviour::Serve {
            body: IMAGE.to_vec(),
            die_after: Some(30_000),
            ranges: true,
        },
    );
    http.route(Source::R2, "wordclock-v2.9.0.bin", Behaviour::serve(&other));
    let mut slots = FakeSlots::default();
    let installed = update(&engine("2.8.0", 0), &mut http, &mut slots).unwrap();
    assert_eq!(slots.booted_image, Some(Sha256::of(IMAGE)));
    assert_eq!(
        installed.sources,
        [Source::Github],
        "the second try took everything from GitHub"
    );
    assert!(
        installed
            .attempts
            .iter()
            .any(|a| matches!(a.failure, Some(Failure::Mixed(_)))),
        "{:?}",
        installed.attempts
    );
    assert_eq!(
        slots.began, 2,
        "the slot was begun again for the fresh download"
    );
}

/// GitHub's version.json answers only after `after`; R2's is `r2`'s manifest.
fn github_answering_after(after: std::time::Duration, r2: &ota_core::Manifest) -> FakeHttp {
    let mut http = FakeHttp::healthy(&manifest());
    http.route(
        Source::Github,
        "version.json",
        Behaviour::Slow {
            after,
            then: Box::new(Behaviour::serve(&manifest().to_json())),
        },
    );
    http.route(Source::R2, "version.json", Behaviour::serve(&r2.to_json()));
    http
}

#[test]
fn a_preferred_source_slower_than_the_first_answer_deadline_is_left_for_the_other() {
    let first = Timeouts::default().first_answer;
    let mut http = github_answering_after(first * 4, &manifest());
    let offer = engine("2.8.0", 0).check(&mut http, Source::Github).unwrap();
    assert_eq!(
        (offer.source, offer.decision),
        (Source::R2, Decision::Update)
    );
    // GitHub had only the short deadline; R2 offered the update, so GitHub was not
    // asked again.
    assert_eq!(
        http.deadlines,
        [first, Timeouts::default().request],
        "{:?}",
        http.log
    );
    assert_eq!(offer.attempts[0].failure, Some(Failure::Timeout));
}

#[test]
fn a_slow_source_cut_off_is_asked_again_when_the_other_offers_no_update() {
    // R2 serves a stale, correctly signed 2.8.0; GitHub, slowly, has 2.9.0.
    let mut stale = support::unsigned_manifest();
    stale.version = "2.8.0".parse().unwrap();
    stale.sign(&key());
    let first = Timeouts::default().first_answer;
    let mut http = github_answering_after(first * 2, &stale);
    let offer = engine("2.8.0", 0).check(&mut http, Source::Github).unwrap();
    assert_eq!(
        (
            offer.source,
            offer.decision,
            offer.manifest.version.to_string()
        ),
        (Source::Github, Decision::Update, "2.9.0".to_owned()),
        "the quick, stale source did not hide the release"
    );
    let full = Timeouts::default().request;
    assert_eq!(http.deadlines, [first, full, full]);
}

#[test]
fn a_failed_first_ask_of_any_kind_is_repeated_only_when_its_deadline_was_shorter() {
    // A chip's client reports a handshake that did not finish in time as a failed
    // connection, not a timeout: that is asked again too, when the other source offers
    // no update.
    let mut stale = support::unsigned_manifest();
    stale.version = "2.8.0".parse().unwrap();
    stale.sign(&key());
    let mut http = FakeHttp::healthy(&manifest());
    http.route(Source::Github, "version.json", Behaviour::Refuse);
    http.route(
        Source::R2,
        "version.json",
        Behaviour::serve(&stale.to_json()),
    );
    let offer = engine("2.8.0", 0).check(&mut http, Source::Github).unwrap();
    assert_eq!(offer.decision, Decision::Current);
    let (first, full) = (
        Timeouts::default().first_answer,
        Timeouts::default().request,
    );
    assert_eq!(http.deadlines, [first, full, full], "asked again in full");

    // With a first-answer deadline no shorter than the full timeouts, nothing was cut
    // short: no second ask of the same source.
    let patient = Timeouts {
        first_answer: std::time::Duration::from_secs(3600),
        ..Timeouts::default()
    };
    let mut engine = engine("2.8.0", 0);
    engine.config.timeouts = patient;
    http.deadlines.clear();
    engine.check(&mut http, Source::Github).unwrap();
    assert_eq!(http.deadlines, [full, full]);
}

#[test]
fn the_first_answer_deadline_is_a_device_setting_within_bounds() {
    use ota_core::engine::{FIRST_ANSWER_KEY, FirstAnswerError, Store as _};
    let with = |text: &str| {
        let mut store = FakeStore::default();
        store.set(FIRST_ANSWER_KEY, text.as_bytes());
        Timeouts::configured(&store)
    };
    assert_eq!(
        Timeouts::configured(&FakeStore::default()),
        (Timeouts::default(), None)
    );
    let (slow_handshake, none) = with("2500\n");
    assert_eq!(
        slow_handshake.first_answer,
        std::time::Duration::from_millis(2500)
    );
    assert_eq!(none, None);
    assert_eq!(
        slow_handshake.read,
        Timeouts::default().read,
        "only the deadline changes"
    );
    for (text, why) in [
        ("fast", FirstAnswerError::NotANumber),
        ("150", FirstAnswerError::OutOfRange(150)),
        ("9000", FirstAnswerError::OutOfRange(9000)),
    ] {
        assert_eq!(with(text), (Timeouts::default(), Some(why)), "{text}");
    }
    assert_eq!(
        FirstAnswerError::OutOfRange(150).to_string(),
        "ota_first_ms is 150 ms: give 200 to 5000 ms (the read timeout)"
    );
    for edge in [200, 5000] {
        assert_eq!(
            with(&edge.to_string()).0.first_answer,
            std::time::Duration::from_millis(edge)
        );
    }
}
