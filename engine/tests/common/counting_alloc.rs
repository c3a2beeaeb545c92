//! A global allocator that forwards to the system one and counts what passes through:
//! calls (allocations and reallocations) and live bytes. Shared by the allocation test and
//! the tick benchmark, each of which registers it with `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

pub struct Counting;

/// Allocations and reallocations so far.
pub static CALLS: AtomicUsize = AtomicUsize::new(0);
/// Heap bytes currently allocated.
pub static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
/// Whether to count. A benchmark turns counting off around what it times: the atomic
/// updates cost about as much as a small allocation does. A difference taken while it is
/// on stays exact as long as nothing allocated while it was off is freed in between.
pub static ENABLED: AtomicBool = AtomicBool::new(true);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ENABLED.load(Ordering::Relaxed) {
            CALLS.fetch_add(1, Ordering::Relaxed);
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ENABLED.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ENABLED.load(Ordering::Relaxed) {
            CALLS.fetch_add(1, Ordering::Relaxed);
            LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
