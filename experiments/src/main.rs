//! `swarmlab`: train on simulated swarms and write the results.

#[allow(unsafe_code)] // sets the operations' thread count before any thread starts
fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`; no other thread has started.
    unsafe { experiments::threads::one_per_operation_unless_set() };
    // This thread runs the simulations: their ops' parallel loops start here, not on another thread.
    repops::threads::work_on_this_thread(0);
    // Each training step frees what the next allocates again: keep it rather than fault it back in.
    models::memory::keep_freed_memory_unless_disabled();
    experiments::cli::main()
}
