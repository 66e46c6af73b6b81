//! A small SAPO swarm: warm-start a policy, then train four agents with and without sharing and print
//! each mix's cumulative reward, its reward before and after, and its held-out accuracy.
//!
//! `cargo run --release -p sapo --example swarm [rounds] [warm-start steps]`

use std::time::Instant;

use sapo::{Mix, SapoConfig, run, warm_start};

fn main() -> sapo::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().ok());
    let rounds = args.next().flatten().unwrap_or(40).max(5);
    let steps = args.next().flatten().unwrap_or(300) as usize;
    let mut cfg = SapoConfig { agents: 4, rounds, ..SapoConfig::default() };
    cfg.warm_start.steps = steps;
    let t = Instant::now();
    let warm = warm_start(&cfg, "tiny")?;
    println!(
        "warm start: {steps} steps in {:.1} s, loss {:.3}, held-out accuracy {:.3}",
        t.elapsed().as_secs_f64(),
        warm.loss,
        warm.eval.get("all").copied().unwrap_or(0.0)
    );
    let n = rounds as usize;
    for mix in [Mix { local: 8, external: 0 }, Mix { local: 4, external: 4 }] {
        let t = Instant::now();
        let out = run(&SapoConfig { mix, ..cfg.clone() }, std::slice::from_ref(&warm), |_| {})?;
        println!(
            "{mix}: cumulative reward {:.1}; reward {:.3} (first round) → {:.3} (last fifth); held-out accuracy {:.3}; {:.1} s",
            out.cumulative_reward(),
            out.mean_reward(0..1),
            out.mean_reward(n - n / 5..n),
            out.eval().get("all").copied().unwrap_or(0.0),
            t.elapsed().as_secs_f64(),
        );
    }
    Ok(())
}
