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

use std::sync::atomic::{AtomicBool, Ordering};

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

/// Runs `f` on this thread while the other threads of its pool wait for work spinning, instead of
/// going to sleep when they find none: a parallel loop that `f` starts then finds them awake, where
/// waking a sleeping thread takes the operating system a few to tens of microseconds — as long as many
/// of a training step's ops take in all. The spinning threads use their cores fully until `f` returns
/// (as OpenMP's threads do between parallel regions), so use it around work that keeps starting
/// parallel loops, like a run of training steps, on a pool that has the machine's cores to itself.
///
/// On a thread outside any pool, or in a pool of one thread, it simply runs `f`. Results do not change.
pub fn with_helpers_spinning<R>(f: impl FnOnce() -> R) -> R {
    let (Some(me), threads) = (rayon::current_thread_index(), rayon::current_num_threads()) else {
        return f();
    };
    if threads <= 1 {
        return f();
    }
    /// Ends the spinning when `f` returns or unwinds (the scope waits for every spinner to end).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let done = AtomicBool::new(false);
    rayon::in_place_scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|_| {
                // This thread must not spin: it runs `f`, which alone ends the spinning. (It only gets
                // here if it picked up a spinner itself while it waited for a parallel loop.)
                if rayon::current_thread_index() == Some(me) {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    match rayon::yield_now() {
                        Some(rayon::Yield::Executed) => {}
                        Some(rayon::Yield::Idle) => std::hint::spin_loop(),
                        None => return,
                    }
                }
            });
        }
        let _stop = Stop(&done);
        f()
    })
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
    fn spinning_helpers_take_part_and_stop_when_the_work_ends() {
        std::thread::spawn(|| {
            // Outside a pool, and in a pool of one, it just runs the closure.
            assert_eq!(with_helpers_spinning(|| 7), 7);
            assert!(work_on_this_thread(3));
            let me = std::thread::current().id();
            let (sum, others) = with_helpers_spinning(|| {
                // Parallel loops, nested ones too, run on the awake helpers.
                let sum: u64 = (0..10_000u64)
                    .into_par_iter()
                    .map(|i| (0..10u64).into_par_iter().map(|j| i + j).sum::<u64>())
                    .sum();
                // Items long enough (a few hundred thousand steps of arithmetic each) that the awake
                // helpers take some of them.
                let slow = (0..64u64).into_par_iter().filter(|&i| {
                    let work = (0..300_000u64).fold(i, |acc, x| std::hint::black_box(acc ^ x.wrapping_mul(31)));
                    std::hint::black_box(work);
                    std::thread::current().id() != me
                });
                (sum, slow.count())
            });
            assert_eq!(sum, (0..10_000u64).map(|i| 10 * i + 45).sum::<u64>());
            assert!(others > 0, "the helpers took none of 64 slow items");
            // The helpers went back to waiting: a later loop still runs, and so does a second round.
            assert_eq!((0..1000u64).into_par_iter().sum::<u64>(), 499_500);
            assert_eq!(with_helpers_spinning(|| (0..1000u64).into_par_iter().sum::<u64>()), 499_500);
            // A panic in the closure ends the spinning too, and reaches the caller.
            let caught = std::panic::catch_unwind(|| with_helpers_spinning(|| panic!("inside")));
            assert!(caught.is_err());
            assert_eq!((0..10u64).into_par_iter().sum::<u64>(), 45);
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
