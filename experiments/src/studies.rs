//! The built-in reproduction studies (`swarmlab reproduce <study>`): each is an ordinary run
//! configuration, so its `config.toml` can be edited and run again with `swarmlab run`.

use anyhow::{Result, bail};
use models::OptimConfig;
use noloco::{DiLoCo, NoLoCo};
use pipeline::Collective;

use crate::config::{ArmConfig, NetworkConfig, Routing, RunConfig, ScaleConfig};

/// The studies `swarmlab reproduce` knows.
pub(crate) const STUDIES: [&str; 1] = ["noloco"];

/// The configuration of study `name`.
pub(crate) fn preset(name: &str) -> Result<RunConfig> {
    match name {
        "noloco" => Ok(noloco()),
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
        network: NetworkConfig { latency_ms: 50.0, mbit_per_s: 200.0 },
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
        assert_eq!(rounds(&full), rounds(&quick));
        assert!(quick.scale.as_ref().is_some_and(|s| s.replicas.iter().all(|&r| r <= 64)));
        Ok(())
    }
}
