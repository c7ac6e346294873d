//! The engine streams: installing an image allocates a small, fixed amount however large
//! the image, so a 3 MiB update fits a device with far less free heap.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ota_core::engine::{Control, Source};
use support::{
    Behaviour, FakeHttp, FakeSlots, IMAGE, engine, esp_patch, image_of_version, manifest,
    manifest_with_patch, patch_name,
};

struct Counting;

thread_local! {
    /// Bytes allocated by this thread: the test harness's own threads do not count.
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|n| n.set(n.get() + layout.size()));
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout, in `alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn installing_allocates_far_less_than_the_image() {
    let engine = engine("2.8.0", 0);
    let mut http = FakeHttp::healthy(&manifest());
    let offer = engine.check(&mut http, Source::Github).unwrap();
    // The fakes' own buffers (the served body, the slot's bytes) are made up front.
    let mut slots = FakeSlots::default();
    slots.inactive.reserve(IMAGE.len());
    let mut http = FakeHttp::healthy(&manifest());
    let start = ALLOCATED.with(Cell::get);
    engine
        .install(
            &mut http,
            &mut slots,
            &offer,
            &Control::default(),
            &mut |_: u64, _: u64| {},
        )
        .unwrap();
    let during = ALLOCATED.with(Cell::get) - start;
    // The fake peer copies the image once to answer; the rest is the engine's.
    let engine_bytes = during.saturating_sub(IMAGE.len());
    assert!(
        engine_bytes < 4096,
        "the engine allocated {engine_bytes} bytes for a {} byte image",
        IMAGE.len()
    );
    assert_eq!(slots.inactive, IMAGE);
}

/// The goal for the patch applier beside the engine's 4 KiB buffer, whatever the image.
const PATCH_GOAL: usize = 8 * 1024;

#[test]
fn installing_from_a_patch_allocates_a_small_fixed_amount() {
    let engine = engine("2.8.0", 0);
    let old = image_of_version("2.8.0");
    let patch = esp_patch(&old, IMAGE);
    let mut http = FakeHttp::healthy(&manifest_with_patch("2.8.0", &old, &patch));
    http.route(
        Source::Github,
        &patch_name("2.8.0"),
        Behaviour::serve(&patch),
    );
    let offer = engine.check(&mut http, Source::Github).unwrap();
    let mut slots = FakeSlots::running(&old);
    slots.inactive.reserve(IMAGE.len());
    let start = ALLOCATED.with(Cell::get);
    let installed = engine
        .install(
            &mut http,
            &mut slots,
            &offer,
            &Control::default(),
            &mut |_: u64, _: u64| {},
        )
        .unwrap();
    let during = ALLOCATED.with(Cell::get) - start;
    // The fake peer copies the patch once to answer; the rest is the engine's.
    let engine_bytes = during.saturating_sub(patch.len());
    assert!(
        engine_bytes < PATCH_GOAL,
        "the engine allocated {engine_bytes} bytes applying a {} byte patch",
        patch.len()
    );
    assert!(matches!(
        installed.delivery,
        ota_core::engine::Delivery::Patch { .. }
    ));
    assert_eq!(slots.inactive, IMAGE);
    // The applier's state is fixed, wherever it lives: on the stack here.
    let state = std::mem::size_of::<ota_core::delta::DeltaPatch>();
    assert!(
        state + ota_core::engine::CHUNK < PATCH_GOAL,
        "applier state {state} bytes"
    );
}
