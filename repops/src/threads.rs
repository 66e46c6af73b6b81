//! Where the kernels' parallel loops run.
//!
//! The kernels split their work with rayon. A parallel loop started from a thread outside rayon's
//! pools is handed to the global pool, and the caller sleeps until the pool's threads have run it: two
//! thread switches per op, which for the small ops of a training step cost more than splitting saves.
//! With a pool of one thread (as `swarmlab` runs each simulation, one thread per op) the op even runs
//! on another thread while its caller waits, and every simulation running side by side queues on that
//! one thread. [`work_on_this_thread`] makes the calling thread a worker of a pool of its own, so that
//! the parallel loops of the ops it runs start on it and take only the pool's other threads as helpers.
//! Results do not change: the kernels give the same bits on any number of threads.

use rayon::ThreadPoolBuilder;

/// Makes the calling thread a worker of a new rayon pool of `threads` threads (itself and
/// `threads − 1` helpers; 0 takes rayon's default: `RAYON_NUM_THREADS`, else the machine's cores), for
/// the rest of its life. Returns `false`, and changes nothing, if the thread already works for a pool.
///
/// Call it on a thread that runs tensor ops, before it runs any; the pool (a small record, and its
/// helper threads) lives as long as the process.
pub fn work_on_this_thread(threads: usize) -> bool {
    if rayon::current_thread_index().is_some() {
        return false;
    }
    // The pool is leaked on purpose: the thread belongs to it from now on.
    ThreadPoolBuilder::new().num_threads(threads).use_current_thread().build().map(std::mem::forget).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn the_thread_runs_its_own_parallel_loops() {
        std::thread::spawn(|| {
            assert!(work_on_this_thread(1));
            assert_eq!(rayon::current_thread_index(), Some(0));
            assert_eq!(rayon::current_num_threads(), 1);
            // With one thread, the loop runs here: every element sees this thread.
            let me = std::thread::current().id();
            assert!((0..1000).into_par_iter().all(|_| std::thread::current().id() == me));
            assert!(!work_on_this_thread(2), "a thread joins one pool only");
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    fn helpers_share_the_work() {
        std::thread::spawn(|| {
            assert!(work_on_this_thread(2));
            assert_eq!(rayon::current_num_threads(), 2);
            let sum: u64 = (0..100_000u64).into_par_iter().sum();
            assert_eq!(sum, 100_000 * 99_999 / 2);
        })
        .join()
        .expect("the test thread");
    }
}
