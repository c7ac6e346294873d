//! The image reader holds fixed memory: streaming an image allocates nothing, however
//! large the image, so the firmware can check a multi-megabyte download in about a kilobyte
//! of state.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ota_core::image::ImageReader;

struct Counting;

thread_local! {
    /// Allocations made by this thread: the test harness's own threads do not count.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
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

const IMAGE: &[u8] = include_bytes!("data/wordclock-2.9.0.bin");

#[test]
fn streaming_an_image_allocates_nothing() {
    let mut reader = ImageReader::new();
    let before = ALLOCATIONS.with(Cell::get);
    for chunk in IMAGE.chunks(1024) {
        reader.feed(chunk).unwrap();
    }
    let info = reader.finish().unwrap();
    let after = ALLOCATIONS.with(Cell::get);
    assert_eq!(
        after - before,
        0,
        "the reader allocated while checking the image"
    );
    assert_eq!(info.len, IMAGE.len() as u64);
    assert!(
        std::mem::size_of::<ImageReader>() <= 2048,
        "reader state is {} bytes",
        std::mem::size_of::<ImageReader>()
    );
}
