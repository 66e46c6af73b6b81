//! How many CPU threads one tensor operation may use.
//!
//! A simulated swarm runs every worker's operations one after another on one thread, and its
//! operations are small (a micro-batch through a stage of a narrow model). Splitting each of them
//! across threads costs more in waking and waiting than it saves — about 4× the wall time of a
//! 16-worker pipeline run on two busy cores, with identical results — so `swarmlab` gives each
//! operation one thread and puts the cores to use by running seeds side by side (`--jobs`). The
//! tensor library and the thread pool read their sizes from `CANDLE_NUM_THREADS` and
//! `RAYON_NUM_THREADS`; a value the user set is kept.

/// The variables that size the tensor library's and the thread pool's threads.
const VARIABLES: [&str; 2] = ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"];

/// Gives each tensor operation one thread, unless the user set either variable.
///
/// # Safety
///
/// It writes the process environment: call it before any other thread starts (first thing in
/// `main`), when nothing can read the environment concurrently.
#[allow(unsafe_code)] // writes the environment, which is sound only before other threads exist
pub unsafe fn one_per_operation_unless_set() {
    if VARIABLES.iter().any(|v| std::env::var_os(v).is_some()) {
        return;
    }
    for v in VARIABLES {
        // SAFETY: the caller guarantees no other thread exists yet.
        unsafe { std::env::set_var(v, "1") };
    }
}

/// The threads one tensor operation uses in this process (at least 1; the machine's cores when
/// neither variable is set, as the tensor library then does).
pub(crate) fn per_operation() -> usize {
    VARIABLES
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok().filter(|&n| n > 0))
        .unwrap_or_else(cores)
}

/// This machine's cores (at least 1).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Runs side by side that keep every core busy: the cores over the threads each run's operations use.
pub(crate) fn default_jobs() -> usize {
    (cores() / per_operation()).max(1)
}
