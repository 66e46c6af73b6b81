//! Sync latency of one outer round vs swarm size: ring and tree all-reduce vs NoLoCo gossip.
//!
//! `cargo run --release -p noloco --example sync_scale -- 8 32 128`

use std::time::Instant;

use noloco::scale::{ScaleSpec, SyncMethod, measure};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() { vec![8, 32, 128] } else { sizes };
    println!("{:>6}  {:<22} {:>10} {:>10} {:>12} {:>8}", "R", "method", "mean s", "p90 s", "MB/worker", "wall s");
    for &r in &sizes {
        for method in [SyncMethod::RingAllReduce, SyncMethod::TreeAllReduce, SyncMethod::Gossip { group_size: 2 }] {
            let t = Instant::now();
            let p = genrl::run_simulation(measure(&ScaleSpec::new(r, method)))??;
            println!(
                "{:>6}  {:<22} {:>10.2} {:>10.2} {:>12.1} {:>8.2}",
                r,
                p.method,
                p.mean_latency_s,
                p.p90_latency_s,
                p.bytes_per_worker / 1e6,
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
