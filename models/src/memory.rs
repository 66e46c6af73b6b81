//! How the process's allocator treats the memory of freed tensors, and how much of it was resident at
//! most ([`peak_resident_gib`]).
//!
//! Training allocates and frees the same large buffers every step (activations, gradients, optimizer
//! temporaries). glibc's allocator hands the top of its heap back to the kernel whenever more than a
//! small, self-adjusting amount of it is free, and serves large requests from fresh mappings that it
//! unmaps again on free: either way the next step's buffers are new pages, which the kernel faults in
//! and zeroes one by one. [`keep_freed_memory`] keeps freed memory in the process for the next request
//! instead, as the caching allocators of deep-learning frameworks do. The cost is a resident size that
//! stays at its high-water mark.

/// Requests up to this size come from the heap (glibc's largest allowed threshold; larger ones are
/// mapped and unmapped on their own).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap is given back to the kernel only beyond this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 1 << 30;
/// How much more than asked for the heap grows by at a time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: i32 = 64 << 20;

/// The variable that, set to `1`, leaves the allocator as it is (for a process that must give memory
/// back, or to measure the difference).
pub const RETURN_FREED_MEMORY: &str = "SWARMLAB_RETURN_FREED_MEMORY";

/// [`keep_freed_memory`], unless [`RETURN_FREED_MEMORY`] is `1`; returns whether the allocator was tuned.
/// What `swarmlab` and the training benches call first thing.
pub fn keep_freed_memory_unless_disabled() -> bool {
    if std::env::var(RETURN_FREED_MEMORY).is_ok_and(|v| v.trim() == "1") {
        return false;
    }
    keep_freed_memory()
}

/// Has the allocator keep freed memory for reuse (see the module doc). Returns whether it could: only
/// glibc's allocator is tuned; elsewhere this does nothing.
#[allow(unsafe_code)] // one libc call per setting, with constant arguments
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        [(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD), (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD), (libc::M_TOP_PAD, TOP_PAD)]
            .into_iter()
            // SAFETY: `mallopt` takes any parameter and value and reports a refusal by returning 0;
            // it only changes how later allocations are served.
            .all(|(param, value)| unsafe { libc::mallopt(param, value) } == 1)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The peak resident memory of this process so far (`VmHWM` in `/proc/self/status`), in GiB; `None`
/// where that is not known (outside Linux).
pub fn peak_resident_gib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_peak_resident_size_is_read_on_linux() {
        let peak = super::peak_resident_gib();
        if cfg!(target_os = "linux") {
            assert!(peak.is_some_and(|gib| gib > 0.0), "{peak:?}");
        }
    }

    #[test]
    fn glibc_takes_every_setting() {
        let tuned = super::keep_freed_memory();
        assert_eq!(tuned, cfg!(all(target_os = "linux", target_env = "gnu")));
    }
}
