//! `Sampler::sample` does not allocate once its buffer has grown to the vocabulary.
//! A counting allocator, in its own test binary, counts this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use temper_text::{Sampler, SamplingParams};

struct Counting;

thread_local! {
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn no_allocation_per_token_once_warm() {
    let vocab = 128_000;
    let logits: Vec<f32> = (0..vocab)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
        .collect();
    for (top_k, top_p) in [
        (None, None),
        (Some(50), None),
        (Some(5_000), None),
        (None, Some(0.9)),
        (Some(40), Some(0.95)),
    ] {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.8,
            top_k,
            top_p,
            seed: 1,
        })
        .unwrap();
        s.sample(&logits);
        let before = COUNT.with(Cell::get);
        for _ in 0..50 {
            std::hint::black_box(s.sample(&logits));
        }
        let after = COUNT.with(Cell::get);
        assert_eq!(
            after - before,
            0,
            "top_k={top_k:?} top_p={top_p:?} allocated"
        );
    }
}
