//! A new outer synchronisation in one file, usable from any `swarmlab run` configuration after one
//! registration line.
//!
//! `PeriodicAverage` is plain periodic model averaging (Local SGD, FedAvg's server step with an outer
//! learning rate of 1): every `every` inner steps all replicas of a stage replace their weights with the
//! replicas' mean, through a ring all-reduce. It is DiLoCo with `outer_lr = 1` and no momentum, written
//! against [`pipeline::OuterSync`] directly.
//!
//! Run it:
//!
//! ```text
//! cargo run --release -p experiments --example periodic_average -- run experiments/examples/periodic_average.toml
//! ```
//!
//! The configuration names it like any built-in protocol: `sync = { kind = "periodic_average", every = 10 }`.

use std::sync::Arc;
use std::time::Duration;

use candle_core::Tensor;
use pipeline::sync::{Collective, OuterRound, OuterState, OuterSync};
use serde::Deserialize;

/// Every `every` inner steps, every replica takes the replicas' mean weights.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PeriodicAverage {
    /// Inner steps between averages.
    every: u64,
}

impl Default for PeriodicAverage {
    fn default() -> Self {
        Self { every: 10 }
    }
}

impl OuterSync for PeriodicAverage {
    fn name(&self) -> String {
        format!("periodic average (H = {})", self.every)
    }

    fn validate(&self, _replicas: usize) -> pipeline::Result<()> {
        if self.every == 0 {
            return Err(pipeline::Error::config("periodic_average.every", "must be at least 1 step"));
        }
        Ok(())
    }

    fn round(&self, steps_done: u64, _replica: usize, replicas: usize) -> Option<OuterRound> {
        steps_done.is_multiple_of(self.every).then(|| OuterRound {
            group: (0..replicas).collect(),
            collective: Collective::Ring,
            timeout: Duration::from_secs(60),
        })
    }

    fn start(&self, _initial: &Tensor) -> pipeline::Result<Option<Box<dyn OuterState>>> {
        Ok(Some(Box::new(Averaging)))
    }
}

/// Nothing to remember between rounds: contribute the weights, take the mean.
#[derive(Debug, Clone, Copy)]
struct Averaging;

impl OuterState for Averaging {
    fn contribution(&self, theta: &Tensor) -> pipeline::Result<Tensor> {
        Ok(theta.clone())
    }

    fn finish(&mut self, _theta: &Tensor, mean: &Tensor) -> pipeline::Result<Tensor> {
        Ok(mean.clone())
    }

    fn snapshot(&self) -> Box<dyn OuterState> {
        Box::new(*self)
    }
}

/// The one registration line: `periodic_average` becomes a `sync` plug, its settings parsed as
/// [`PeriodicAverage`] (unknown fields refused).
fn register() {
    experiments::plugs::register(|r| {
        r.sync("periodic_average", |s: PeriodicAverage, _| Ok(Arc::new(s)));
    });
}

#[allow(unsafe_code)] // sets the operations' thread count before any thread starts
fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`; no other thread has started.
    unsafe { experiments::threads::one_per_operation_unless_set() };
    register();
    experiments::cli::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replicas averaged every 4 steps against two that never synchronise, on a tiny model.
    const CONFIG: &str = r#"
name = "periodic-average"
steps = 12
micro_batches = 1
micro_batch = 2
seq = 16
eval_every = 6
eval_batches = 2

[optim]
lr = 0.003
warmup_steps = 2
total_steps = 12

[corpus.synthetic]
train_tokens = 16384
val_tokens = 1024

[[arms]]
label = "averaged"
stages = 1
replicas = 2
sync = { kind = "periodic_average", every = 4 }

[[arms]]
label = "independent"
stages = 1
replicas = 2
sync = "none"
"#;

    #[test]
    fn the_registered_protocol_runs_from_a_toml_config() -> anyhow::Result<()> {
        register();
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("run.toml");
        std::fs::write(&config, CONFIG)?;
        let out = dir.path().join("out");
        let args = ["swarmlab".as_ref(), "run".as_ref(), config.as_os_str(), "--out".as_ref(), out.as_os_str()];
        experiments::cli::main_from(args)?;
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
        let arms = summary["arms"].as_array().ok_or_else(|| anyhow::anyhow!("no arms"))?;
        assert_eq!(arms[0]["sync"], "periodic average (H = 4)");
        let variance = |arm: &serde_json::Value| arm["final_weight_variance"].as_f64().unwrap_or(f64::NAN);
        // After the last average (at step 12) the replicas hold the same weights; without it they differ.
        assert!(variance(&arms[0]) < 1e-12, "averaged replicas differ: {}", variance(&arms[0]));
        assert!(variance(&arms[1]) > 1e-9, "independent replicas agree: {}", variance(&arms[1]));
        Ok(())
    }

    #[test]
    fn its_settings_are_checked_like_a_built_in_protocol() -> anyhow::Result<()> {
        register();
        let dir = tempfile::tempdir()?;
        // A setting it does not have is refused when the plug is built; a bad value by its own validation.
        for (settings, named) in
            [("every = 4, outer_lr = 0.7", "arms[0].sync"), ("every = 0", "periodic_average.every")]
        {
            let config = dir.path().join("bad.toml");
            let text = CONFIG.replace("every = 4", settings);
            std::fs::write(&config, text)?;
            let args = ["swarmlab".as_ref(), "run".as_ref(), config.as_os_str()];
            let err = experiments::cli::main_from(args).err().map(|e| format!("{e:#}")).unwrap_or_default();
            assert!(err.contains("arms[0]") && err.contains(named), "{err}");
        }
        Ok(())
    }
}
