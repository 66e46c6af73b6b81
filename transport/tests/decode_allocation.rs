//! Decoding untrusted bytes allocates in proportion to the bytes received, never to the sizes they claim.
//!
//! A counting global allocator measures, per thread, the peak of live heap bytes while hostile frames
//! are decoded.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use transport::{Codec, FrameDecoder, RawBytes, TensorBytes};

struct Counting;

// Counted per thread, so allocations by the test harness's other threads never enter a measurement.
thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn on_this_thread(delta: isize) {
    // `try_with`: thread-locals may already be gone while a thread shuts down.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LIVE.try_with(|l| {
                l.set(l.get() + delta);
                let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
            });
        }
    });
}

// SAFETY: forwards to the system allocator and only keeps counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_this_thread(layout.size() as isize);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_this_thread(-(layout.size() as isize));
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[allow(dead_code)]
#[derive(Debug, Serialize, Deserialize)]
enum Message {
    Numbers(Vec<u64>),
    Nested(Vec<Vec<u32>>),
    Text(String, Vec<String>),
    Blob(RawBytes),
    Tensor(TensorBytes),
}

/// Peak bytes allocated and not yet freed by this thread while running `f`.
fn peak_during(f: impl FnOnce()) -> usize {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    f();
    TRACKING.with(|t| t.set(false));
    PEAK.with(|p| p.get()).max(0) as usize
}

/// bincode's varint encoding of a huge length: marker 253, then a u64.
fn huge_len() -> Vec<u8> {
    let mut v = vec![253u8];
    v.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
    v
}

fn xorshift_garbage(count: usize) -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            let len = (x % 4096) as usize;
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect()
}

#[test]
fn hostile_frames_allocate_little() {
    let codec = Codec::default(); // 64 MiB limit
    let mut hostile: Vec<Vec<u8>> = Vec::new();
    for variant in 0u8..5 {
        let mut p = vec![variant];
        p.extend(huge_len());
        p.extend([7u8; 64]);
        hostile.push(p);
    }
    // Nested containers, each claiming a huge length.
    let mut nested = vec![1u8];
    nested.extend(huge_len());
    for _ in 0..100 {
        nested.extend(huge_len());
    }
    hostile.push(nested);
    hostile.extend(xorshift_garbage(2000));
    let frames: Vec<Bytes> = hostile.into_iter().map(Bytes::from).collect();
    let mut rejected = 0;
    let peak = peak_during(|| {
        for payload in &frames {
            if codec.decode::<Message>(payload).is_err() {
                rejected += 1;
            }
        }
    });
    assert!(rejected >= frames.len() - 10, "only {rejected} of {} rejected", frames.len());
    // A claim of 2^63 elements costs at most serde's cautious 1 MiB pre-allocation per open container
    // (two levels deep in `Nested`) plus 4x the frame, not the claim.
    assert!(peak <= (2 << 20) + (64 << 10), "peak {peak} bytes while decoding hostile frames");
}

#[test]
fn a_header_claiming_four_gib_costs_nothing() {
    let codec = Codec::default();
    let peak = peak_during(|| {
        let mut decoder = FrameDecoder::new(codec);
        decoder.extend(&u32::MAX.to_le_bytes());
        decoder.extend(&[0u8; 100]);
        assert!(decoder.next_frame().is_err());
    });
    assert!(peak < 4096, "peak {peak} bytes");
}

#[test]
fn a_header_within_the_limit_reserves_at_most_the_limit() {
    let codec = Codec::new(1 << 20).expect("limit");
    let peak = peak_during(|| {
        let mut decoder = FrameDecoder::new(codec);
        decoder.extend(&(1u32 << 20).to_le_bytes());
        assert_eq!(decoder.next_frame(), Ok(None));
    });
    assert!(peak <= (1 << 20) + 4096, "peak {peak} bytes");
}
