//! `swarmlab`: train on simulated swarms and write the results.

fn main() -> anyhow::Result<()> {
    experiments::cli::main()
}
