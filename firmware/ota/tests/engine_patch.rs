//! Installing from a delta patch with in-memory ports: the patch instead of the image when
//! the manifest lists one from the running image, failover and resume as for images, and
//! the whole image whenever anything on the patch path fails.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod support;

use ota_core::Sha256;
use ota_core::engine::{Control, Delivery, Installed, Progress, Source, UpdateError};
use support::{
    Behaviour, FakeHttp, FakeSlots, IMAGE, engine, esp_patch, image_of_version,
    manifest_with_patch, patch_name,
};

/// What the engine told the status report.
#[derive(Default)]
struct Told {
    bytes: Vec<(u64, u64)>,
    fell_back: Vec<String>,
}

impl Progress for Told {
    fn bytes(&mut self, done: u64, total: u64) {
        self.bytes.push((done, total));
    }

    fn falling_back(&mut self, why: &str) {
        self.fell_back.push(why.to_owned());
    }
}

/// Both sources serve the manifest (listing `patch` from `old`), the image and `served`
/// under the patch's name.
fn http(old: &[u8], patch: &[u8], served: &[u8]) -> FakeHttp {
    let mut http = FakeHttp::healthy(&manifest_with_patch("2.8.0", old, patch));
    for source in [Source::Github, Source::R2] {
        http.route(source, &patch_name("2.8.0"), Behaviour::serve(served));
    }
    http
}

fn install(http: &mut FakeHttp, slots: &mut FakeSlots) -> (Result<Installed, UpdateError>, Told) {
    let mut told = Told::default();
    let installed =
        engine("2.8.0", 0).update(http, slots, Source::Github, &Control::default(), &mut told);
    (installed, told)
}

fn requests_for<'h>(http: &'h FakeHttp, file: &str) -> Vec<&'h (String, Option<u64>)> {
    http.log
        .iter()
        .filter(|(url, _)| url.ends_with(file))
        .collect()
}

#[test]
fn a_patch_from_the_running_image_installs_the_new_image_without_downloading_it() {
    let old = image_of_version("2.8.0");
    let patch = esp_patch(&old, IMAGE);
    let mut http = http(&old, &patch, &patch);
    let mut slots = FakeSlots::running(&old);
    let (installed, told) = install(&mut http, &mut slots);
    let installed = installed.unwrap();
    assert_eq!(
        installed.delivery,
        Delivery::Patch {
            from: "2.8.0".parse().unwrap(),
            bytes: patch.len() as u64
        }
    );
    assert_eq!(slots.booted_image, Some(Sha256::of(IMAGE)));
    assert_eq!(slots.inactive, IMAGE);
    assert!(slots.running_reads > 0, "the patch read the running image");
    assert_eq!(slots.running, old, "the running slot is only read");
    assert!(requests_for(&http, "wordclock-v2.9.0.bin").is_empty());
    assert_eq!(requests_for(&http, &patch_name("2.8.0")).len(), 1);
    assert!(told.fell_back.is_empty());
    assert_eq!(
        told.bytes.last(),
        Some(&(patch.len() as u64, patch.len() as u64))
    );
    assert!(
        patch.len() * 10 < IMAGE.len(),
        "{} bytes of patch for a {} byte image",
        patch.len(),
        IMAGE.len()
    );
}

#[test]
fn a_patch_download_that_breaks_resumes_from_the_other_source_at_the_same_byte() {
    let old = image_of_version("2.8.0");
    let patch = esp_patch(&old, IMAGE);
    let mut http = http(&old, &patch, &patch);
    let cut = patch.len() / 2;
    http.route(
        Source::Github,
        &patch_name("2.8.0"),
        Behaviour::Serve {
            body: patch.clone(),
            die_after: Some(cut),
            ranges: true,
        },
    );
    let mut slots = FakeSlots::running(&old);
    let (installed, _) = install(&mut http, &mut slots);
    let installed = installed.unwrap();
    assert_eq!(installed.sources, [Source::Github, Source::R2]);
    assert!(matches!(installed.delivery, Delivery::Patch { .. }));
    let asked = requests_for(&http, &patch_name("2.8.0"));
    assert_eq!(asked.len(), 2);
    assert_eq!(
        asked[1].0,
        format!("{}{}", support::R2, patch_name("2.8.0"))
    );
    assert_eq!(
        asked[1].1,
        Some(cut as u64),
        "R2 continues at the byte GitHub broke off"
    );
    assert_eq!(slots.booted_image, Some(Sha256::of(IMAGE)));
}

/// What goes wrong, the patch the manifest lists, the bytes the sources serve under its
/// name, the running image, and a phrase of why the patch was not used.
type Case<'a> = (&'a str, &'a [u8], &'a [u8], Vec<u8>, &'a str);

/// Every way the patch path can fail ends on the new image, downloaded whole, and says why.
#[test]
fn every_failure_on_the_patch_path_falls_back_to_the_whole_image() {
    let old = image_of_version("2.8.0");
    let good = esp_patch(&old, IMAGE);
    let from_other_base = esp_patch(&image_of_version("2.7.0"), IMAGE);
    let to_other_image = esp_patch(&old, &image_of_version("2.9.1"));
    let mut corrupted = good.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x55;
    let truncated = good[..good.len() - 100].to_vec();
    let cases: [Case; 6] = [
        (
            "wrong base",
            &from_other_base,
            &from_other_base,
            old.clone(),
            "is for the image",
        ),
        (
            "truncated",
            &good,
            &truncated,
            old.clone(),
            "the body ended at",
        ),
        (
            "corrupted",
            &corrupted,
            &corrupted,
            old.clone(),
            "does not apply",
        ),
        // Bytes that apply, but are not the patch the manifest signed.
        (
            "not the signed patch",
            &corrupted,
            &good,
            old.clone(),
            "the manifest says",
        ),
        (
            "another result",
            &to_other_image,
            &to_other_image,
            old.clone(),
            "the image says it is 2.9.1",
        ),
        (
            "no patch for this base",
            &good,
            &good,
            image_of_version("2.7.0"),
            "lists no patch from the running image",
        ),
    ];
    for (what, listed, served, running_image, why) in cases {
        let mut http = http(&old, listed, served);
        let mut slots = FakeSlots::running(&running_image);
        let (installed, told) = install(&mut http, &mut slots);
        let installed = installed.unwrap_or_else(|e| panic!("{what}: {e}"));
        let Delivery::FellBack { why: said } = &installed.delivery else {
            panic!("{what}: {:?}", installed.delivery);
        };
        assert!(said.contains(why), "{what}: {said}");
        assert_eq!(
            told.fell_back,
            std::slice::from_ref(said),
            "{what}: said in the progress report"
        );
        assert_eq!(slots.booted_image, Some(Sha256::of(IMAGE)), "{what}");
        assert_eq!(
            slots.running, running_image,
            "{what}: the running slot is untouched"
        );
        assert_eq!(
            requests_for(&http, "wordclock-v2.9.0.bin").len(),
            1,
            "{what}"
        );
    }
}

#[test]
fn a_manifest_without_patches_installs_the_image_as_before() {
    let old = image_of_version("2.8.0");
    let mut http = FakeHttp::healthy(&support::manifest());
    let mut slots = FakeSlots::running(&old);
    let (installed, told) = install(&mut http, &mut slots);
    assert_eq!(installed.unwrap().delivery, Delivery::Image);
    assert!(told.fell_back.is_empty());
    assert_eq!(slots.running_reads, 0);
}

#[test]
fn a_cancel_during_the_patch_stops_the_update_without_falling_back() {
    let old = image_of_version("2.8.0");
    let patch = esp_patch(&old, IMAGE);
    let mut http = http(&old, &patch, &patch);
    let mut slots = FakeSlots::running(&old);
    let control = Control::default();
    let mut cancel_at_first_bytes = |_: u64, _: u64| control.cancel();
    let result = engine("2.8.0", 0).update(
        &mut http,
        &mut slots,
        Source::Github,
        &control,
        &mut cancel_at_first_bytes,
    );
    assert_eq!(result, Err(UpdateError::Cancelled));
    assert!(!slots.boot_set);
    assert!(requests_for(&http, "wordclock-v2.9.0.bin").is_empty());
}

#[test]
fn a_patch_both_sources_spoil_costs_one_erase_each_then_the_images() {
    let old = image_of_version("2.8.0");
    let mut corrupted = esp_patch(&old, IMAGE);
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x55;
    let mut http = http(&old, &corrupted, &corrupted);
    let mut slots = FakeSlots::running(&old);
    let (installed, _) = install(&mut http, &mut slots);
    assert!(matches!(
        installed.unwrap().delivery,
        Delivery::FellBack { .. }
    ));
    // The patch from GitHub, again from R2, then the image: an erase costs seconds on
    // the chip, so none is made for an attempt that does not follow.
    assert_eq!(slots.began, 3);
    assert_eq!(slots.booted_image, Some(Sha256::of(IMAGE)));
}

/// The fixture patch from 2.8.0, made once: detools runs in a child process.
fn fixture_patch() -> &'static (Vec<u8>, Vec<u8>) {
    static PATCH: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    PATCH.get_or_init(|| {
        let old = image_of_version("2.8.0");
        let patch = esp_patch(&old, IMAGE);
        (old, patch)
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever bytes the sources serve under the patch's name, the slot boots the signed
    /// image and nothing else: the patch, or the whole image after it.
    #[test]
    fn any_damage_to_the_served_patch_still_boots_exactly_the_signed_image(
        edits in proptest::collection::vec((0usize..1 << 20, proptest::prelude::any::<u8>()), 1..8),
        cut in proptest::option::of(0usize..1 << 20),
    ) {
        let (old, patch) = fixture_patch();
        let mut served = patch.clone();
        for (at, value) in edits {
            let at = at % served.len();
            served[at] = value;
        }
        if let Some(cut) = cut {
            served.truncate(cut % served.len());
        }
        let mut http = http(old, patch, &served);
        let mut slots = FakeSlots::running(old);
        let (installed, _) = install(&mut http, &mut slots);
        let installed = installed.unwrap();
        proptest::prop_assert_eq!(slots.booted_image, Some(Sha256::of(IMAGE)));
        proptest::prop_assert_eq!(&slots.running, old);
        if served != *patch {
            let fell_back = matches!(installed.delivery, Delivery::FellBack { .. });
            proptest::prop_assert!(fell_back);
        }
    }
}
