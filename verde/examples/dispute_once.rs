//! One dispute, end to end: an honest trainer and one that perturbs an operator's output in step 5 of a
//! 12-step run of the tiny program, settled by a referee on the simulated network.
//!
//! `cargo run --release -p verde --example dispute_once`

use std::sync::Arc;

use verde::net::SettleConfig;
use verde::{Behaviour, Conduct, Program, Rules, Structure, execute, settle};

fn main() -> verde::Result<()> {
    let program = Program::tiny(12);
    let structure = Arc::new(Structure::of(&program)?);
    let honest = Arc::new(execute(&program, Behaviour::Honest)?);
    let cheat = Arc::new(execute(&program, Behaviour::PerturbOp { step: 5, op: 17, delta: 0.5 })?);
    let rules = Rules {
        initial: honest.hashes[0],
        steps: program.steps,
        structure,
        deadline: std::time::Duration::from_secs(60),
        level: repops::simd::current(),
    };
    let settlement =
        settle(&rules, vec![(honest, Conduct::Faithful), (cheat, Conduct::Faithful)], &SettleConfig::default())?;
    for d in &settlement.disputes {
        println!("trainer {} vs trainer {}: {:?}", d.trainer, d.challenger, d.outcome);
        println!(
            "  step {:?} in {} rounds, record {:?} in {} rounds, {} bytes",
            d.summary.step, d.summary.step_rounds, d.summary.record, d.summary.op_rounds, d.traffic.bytes
        );
    }
    println!("claims standing: {:?}", settlement.standing);
    Ok(())
}
