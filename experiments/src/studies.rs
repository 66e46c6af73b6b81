//! The built-in reproduction studies (`swarmlab reproduce <study>`): each is an ordinary run
//! configuration, so its `config.toml` can be edited and run again with `swarmlab run`.

use anyhow::{Result, bail};
use models::OptimConfig;
use noloco::{DiLoCo, NoLoCo};
use pipeline::Collective;

use crate::config::{ArmConfig, NetworkConfig, RecoveryConfig, Routing, RunConfig, ScaleConfig};
use crate::skip::{GeoConfig, SkipPipeStudy};

/// The studies `swarmlab reproduce` knows.
pub(crate) const STUDIES: [&str; 4] = ["noloco", "skippipe", "checkfree", "compose"];

/// Every study `swarmlab reproduce` knows: the training studies, `verde` (disputes, not a training
/// run), `sapo` (RL post-training) and `all` (every one of them, then one index report).
pub(crate) const ALL_STUDIES: [&str; 7] = ["noloco", "skippipe", "checkfree", "compose", "verde", "sapo", "all"];

/// The configuration of study `name`.
pub(crate) fn preset(name: &str) -> Result<RunConfig> {
    match name {
        "noloco" => Ok(noloco()),
        "skippipe" => Ok(skippipe()),
        "checkfree" => Ok(checkfree()),
        "compose" => Ok(compose()),
        other => bail!("unknown study {other:?}: one of {}", STUDIES.join(", ")),
    }
}

/// NoLoCo vs DiLoCo vs DDP on one 2-stage x 8-replica grid, the ablations (no pull term, no random
/// routing), and how the synchronisation of each scales to 1024 replicas. Outer settings follow the
/// released NoLoCo configurations (NoLoCo: n = 2, α = 0.7, β = 0.5; DiLoCo baseline: heavy-ball
/// α = 0.7, β = 0.3), with the same H for both, shortened to our run length.
fn noloco() -> RunConfig {
    let steps = 600;
    let every = 20;
    let (stages, replicas) = (2, 8);
    let noloco = NoLoCo { every, group_size: 2, outer_lr: 0.7, momentum: 0.5, ..NoLoCo::default() };
    let diloco = DiLoCo { every, outer_lr: 0.7, momentum: 0.3, nesterov: false, collective: Collective::Ring };
    let arm = |label: &str, sync: &str| ArmConfig { sync: sync.into(), ..ArmConfig::new(label, stages, replicas) };
    RunConfig {
        name: "noloco".into(),
        steps,
        eval_every: 25,
        optim: OptimConfig { lr: 3e-3, min_lr: 3e-4, warmup_steps: 30, total_steps: steps, ..OptimConfig::default() },
        network: NetworkConfig { latency_ms: 50.0, mbit_per_s: 200.0, ..NetworkConfig::default() },
        arms: vec![
            arm("DDP (all-reduce every step)", "all_reduce"),
            ArmConfig { diloco: Some(diloco), ..arm("DiLoCo", "diloco") },
            ArmConfig { noloco: Some(noloco), routing: Routing::Random, ..arm("NoLoCo", "noloco") },
            ArmConfig {
                noloco: Some(NoLoCo { pull: false, ..noloco }),
                routing: Routing::Random,
                ..arm("NoLoCo without pull term", "noloco")
            },
            ArmConfig { noloco: Some(noloco), ..arm("NoLoCo with fixed routing", "noloco") },
        ],
        scale: Some(ScaleConfig::default()),
        ..RunConfig::default()
    }
}

/// SkipPipe on a geo-distributed, heterogeneous swarm: an 8-stage pipeline (embedding, six two-block
/// transformer stages, head) x 2 replicas, trained with the standard pipeline (fixed rows, every stage)
/// and with SkipPipe's scheduled paths at skip ratios 0, 25% and 33%; each trained model then runs with
/// half and three quarters of its stages. Beside it, the scheduler's iteration times on the paper's
/// 42-node swarm. Workers compute at 10 GFLOP/s (H100-class; the others in proportion), so that compute
/// and the links both matter, as for a large model.
fn skippipe() -> RunConfig {
    let steps = 300;
    let (stages, replicas) = (8, 2);
    let arm = |label: &str, routing: Routing, skip_ratio: f64| ArmConfig {
        routing,
        skip_ratio,
        ..ArmConfig::new(label, stages, replicas)
    };
    RunConfig {
        name: "skippipe".into(),
        steps,
        micro_batches: 4,
        profile_tflops: Some(0.01),
        layers: Some(12),
        edge_stages: true,
        eval_every: 20,
        eval_batches: 4,
        optim: OptimConfig { lr: 3e-3, min_lr: 3e-4, warmup_steps: 20, total_steps: steps, ..OptimConfig::default() },
        arms: vec![
            arm("standard pipeline", Routing::Fixed, 0.0),
            arm("SkipPipe 0%", Routing::Skippipe, 0.0),
            arm("SkipPipe 25%", Routing::Skippipe, 0.25),
            arm("SkipPipe 33%", Routing::Skippipe, 0.33),
        ],
        geo: Some(GeoConfig::default()),
        skippipe: Some(SkipPipeStudy::default()),
        ..RunConfig::default()
    }
}

/// CheckFree and CheckFree+ against checkpointing and redundant computation at the paper's four
/// failure rates, on an 8-stage pipeline (embedding, six one-block transformer stages, head) whose
/// embedding and head stages never fail (as in the paper's simulation), plus a failure-free run and the
/// ablations of the rebuild (naive copy, random re-init) at the 16% rate. Every arm at one rate sees the
/// same failures. Workers compute at 1 GFLOP/s, so that compute, not the links, sets the pace.
fn checkfree() -> RunConfig {
    use checkfree::FailureRate;
    let steps = 500;
    let stages = 8;
    let arm = |label: String, recovery: &str, rate: f64| ArmConfig {
        recovery: recovery.into(),
        failure_rate: rate,
        routing: if recovery == "checkfree_plus" { Routing::OutOfOrder } else { Routing::Fixed },
        ..ArmConfig::new(&label, stages, 1)
    };
    // The second arm shows what CheckFree+'s out-of-order execution costs by itself.
    let mut arms = vec![
        arm("no failures".into(), "checkpoint", 0.0),
        arm("CheckFree+ order, no failures".into(), "checkfree_plus", 0.0),
    ];
    for rate in FailureRate::PAPER {
        let l = rate.label();
        arms.push(arm(format!("CheckFree {l}"), "checkfree", rate.per_iteration));
        arms.push(arm(format!("CheckFree+ {l}"), "checkfree_plus", rate.per_iteration));
        arms.push(arm(format!("checkpointing {l}"), "checkpoint", rate.per_iteration));
        arms.push(arm(format!("redundant {l}"), "redundant", rate.per_iteration));
    }
    let ablation = FailureRate::PAPER[2];
    arms.push(arm(format!("naive copy {}", ablation.label()), "naive_copy", ablation.per_iteration));
    arms.push(arm(format!("random re-init {}", ablation.label()), "random_reinit", ablation.per_iteration));
    RunConfig {
        name: "checkfree".into(),
        steps,
        // Slow workers put the small model where a large one is, compute-bound: then redundant
        // computation costs time, as it does in the paper.
        profile_tflops: Some(0.001),
        layers: Some(6),
        edge_stages: true,
        eval_every: 20,
        eval_batches: 4,
        optim: OptimConfig { lr: 3e-3, min_lr: 3e-4, warmup_steps: 20, total_steps: steps, ..OptimConfig::default() },
        network: NetworkConfig { latency_ms: 10.0, mbit_per_s: 800.0, ..NetworkConfig::default() },
        // A stage CheckFree cannot rebuild (the first and last transformer stages) rolls the pipeline
        // back to its last checkpoint, so CheckFree arms keep checkpoints too.
        recovery: RecoveryConfig {
            protect: vec![0, stages - 1],
            fallback: "checkpoint".into(),
            ..RecoveryConfig::default()
        },
        arms,
        ..RunConfig::default()
    }
}

/// The three protocols together and each alone, on SkipPipe's geo-distributed swarm with CheckFree's
/// failures (16% of stages per hour; the embedding and head stages never fail): an 8-stage pipeline
/// (embedding, six one-block stages, head) x 2 replicas. The baseline synchronises by all-reduce every
/// step, runs every micro-batch through every stage of its row, and restores checkpoints; each protocol
/// replaces one of those three; the last arm replaces all three. A failure-free baseline sets the target
/// loss the failure table times arms to; the composition row compares the times to the loss every arm
/// reaches.
fn compose() -> RunConfig {
    let steps = 300;
    let (stages, replicas) = (8, 2);
    let rate = checkfree::FailureRate::PAPER[2].per_iteration;
    let noloco = NoLoCo { every: 20, group_size: 2, outer_lr: 0.7, momentum: 0.5, ..NoLoCo::default() };
    let arm = |label: &str, sync: &str, routing: Routing, recovery: &str| ArmConfig {
        sync: sync.into(),
        noloco: (sync == "noloco").then_some(noloco),
        routing,
        skip_ratio: if routing == Routing::Skippipe { 0.25 } else { 0.0 },
        recovery: recovery.into(),
        failure_rate: rate,
        ..ArmConfig::new(label, stages, replicas)
    };
    RunConfig {
        name: "compose".into(),
        steps,
        micro_batches: 4,
        profile_tflops: Some(0.01),
        layers: Some(6),
        edge_stages: true,
        eval_every: 20,
        eval_batches: 4,
        optim: OptimConfig { lr: 3e-3, min_lr: 3e-4, warmup_steps: 20, total_steps: steps, ..OptimConfig::default() },
        recovery: RecoveryConfig {
            protect: vec![0, stages - 1],
            fallback: "checkpoint".into(),
            ..RecoveryConfig::default()
        },
        arms: vec![
            ArmConfig { failure_rate: 0.0, ..arm("baseline, no failures", "all_reduce", Routing::Fixed, "checkpoint") },
            arm("baseline", "all_reduce", Routing::Fixed, "checkpoint"),
            arm("NoLoCo", "noloco", Routing::Random, "checkpoint"),
            arm("SkipPipe 25%", "all_reduce", Routing::Skippipe, "checkpoint"),
            arm("CheckFree", "all_reduce", Routing::Fixed, "checkfree"),
            arm("NoLoCo + SkipPipe + CheckFree", "noloco", Routing::Skippipe, "checkfree"),
        ],
        geo: Some(GeoConfig::default()),
        ..RunConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_study_is_a_valid_config_and_survives_toml() -> Result<()> {
        for name in STUDIES {
            let cfg = preset(name)?;
            cfg.validate()?;
            let text = toml::to_string(&cfg)?;
            assert_eq!(RunConfig::from_toml(&text)?, cfg, "{name} round-trips through config.toml");
            cfg.quick().validate()?;
        }
        assert!(preset("nope").is_err());
        Ok(())
    }

    #[test]
    fn quick_keeps_the_number_of_outer_rounds() -> Result<()> {
        let full = preset("noloco")?;
        let quick = full.clone().quick();
        let rounds = |c: &RunConfig| c.steps / c.arms[2].noloco.map_or(1, |n| n.every);
        assert!(quick.steps < full.steps);
        assert_eq!(rounds(&full), rounds(&quick));
        assert!(quick.scale.as_ref().is_some_and(|s| s.replicas.iter().all(|&r| r <= 64)));
        Ok(())
    }
}

/// The protocols composed: every pair of NoLoCo, SkipPipe and CheckFree, and all three, on a tiny
/// geo-distributed grid with failures.
#[cfg(test)]
mod composition {
    use std::sync::Arc;

    use super::*;

    /// A 5-stage (embedding, three one-block stages, head) x 2-replica grid of the tiny model on the geo
    /// swarm, 40 steps, the block stages failing often enough to fail a few times.
    fn tiny(sync: &str, routing: Routing, recovery: &str) -> RunConfig {
        let steps = 40;
        let mut cfg = compose();
        cfg.steps = steps;
        cfg.micro_batches = 2;
        cfg.micro_batch = 2;
        cfg.seq = 16;
        cfg.layers = Some(3);
        cfg.eval_every = 0;
        cfg.optim =
            OptimConfig { lr: 3e-3, min_lr: 3e-4, warmup_steps: 5, total_steps: steps, ..OptimConfig::default() };
        cfg.corpus.synthetic.train_tokens = 1 << 14;
        cfg.corpus.synthetic.val_tokens = 1 << 10;
        cfg.recovery.protect = vec![0, 4];
        let noloco = NoLoCo { every: 5, group_size: 2, ..NoLoCo::default() };
        cfg.arms = vec![ArmConfig {
            sync: sync.into(),
            noloco: (sync == "noloco").then_some(noloco),
            routing,
            skip_ratio: if routing == Routing::Skippipe { 0.25 } else { 0.0 },
            recovery: recovery.into(),
            failure_rate: 0.04,
            ..ArmConfig::new("composed", 5, 2)
        }];
        cfg
    }

    fn train(cfg: &RunConfig) -> pipeline::RunReport {
        cfg.validate().expect("valid");
        let corpus = Arc::new(crate::corpus(cfg).expect("corpus"));
        let spec = cfg.spec(0).expect("spec");
        genrl::run_simulation(pipeline::run_simulated(&spec, corpus)).expect("runtime").expect("run")
    }

    fn losses(r: &pipeline::RunReport) -> Vec<f64> {
        r.metrics.mean_by_step("train_loss").into_iter().map(|v| v.1).collect()
    }

    #[test]
    fn every_pair_and_all_three_compose_and_train() {
        for (sync, routing, recovery) in [
            ("noloco", Routing::Skippipe, "checkpoint"),
            ("noloco", Routing::Random, "checkfree"),
            ("all_reduce", Routing::Skippipe, "checkfree"),
            ("noloco", Routing::Skippipe, "checkfree"),
        ] {
            let report = train(&tiny(sync, routing, recovery));
            let l = losses(&report);
            let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
            let (first, last) = (mean(&l[..5]), mean(&l[l.len() - 5..]));
            assert!(last < first - 0.2, "{sync} + {routing:?} + {recovery}: loss {first:.3} -> {last:.3}");
            let recoveries = report.metrics.events.iter().filter(|e| e.kind == genrl::EventKind::Recovery).count();
            assert!(recoveries > 0, "{sync} + {routing:?} + {recovery}: no failure was recovered");
        }
    }

    #[test]
    fn a_composed_run_is_deterministic_by_seed() {
        let cfg = tiny("noloco", Routing::Skippipe, "checkfree");
        let (a, b) = (train(&cfg), train(&cfg));
        assert_eq!(losses(&a), losses(&b));
        assert_eq!(a.virtual_time, b.virtual_time);
        let bits = |r: &pipeline::RunReport| -> Vec<u32> {
            r.weights
                .values()
                .flat_map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("weights"))
                .map(f32::to_bits)
                .collect()
        };
        assert_eq!(bits(&a), bits(&b));
    }
}
