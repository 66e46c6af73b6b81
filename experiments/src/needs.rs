//! What a run will need, estimated from its configuration before anything is built: memory (the largest
//! arm: arms run one after another) and training work (all arms), with the wall time that work takes
//! on this kind of machine. A run that needs more memory than the machine has, or more than a week, is
//! refused unless the user confirms it (`--allow-large`).

use anyhow::{Result, bail};

use crate::config::RunConfig;

/// Sustained training throughput assumed for the time estimate: what small models reach on a CPU core
/// here (per-operation overhead included), in FLOP/s.
const FLOPS_PER_CORE: f64 = 10e9;

/// The longest estimated run accepted without `--allow-large`, in seconds.
const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// A run's estimated needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Needs {
    /// Peak memory, bytes.
    pub(crate) bytes: f64,
    /// Training and evaluation work, FLOPs.
    pub(crate) flops: f64,
}

impl Needs {
    /// Estimates `cfg`'s needs (its sizes must have passed validation).
    pub(crate) fn of(cfg: &RunConfig) -> Result<Self> {
        let model = cfg.model()?;
        let params = model.param_count() as f64;
        let tokens = (cfg.micro_batch * cfg.seq) as f64;
        // Kept per micro-batch until its backward pass, per layer: a dozen d_model-wide activations per
        // token and the attention scores; then the logits.
        let per_micro = model.n_layers as f64
            * (12.0 * tokens * model.d_model as f64 + (cfg.micro_batch * model.n_heads * cfg.seq * cfg.seq) as f64)
            + tokens * model.vocab as f64;
        let corpus = 8.0 * (cfg.corpus.synthetic.train_tokens + cfg.corpus.synthetic.val_tokens) as f64;
        let mut bytes: f64 = 0.0;
        let mut flops = 0.0;
        for arm in &cfg.arms {
            let replicas = arm.replicas as f64;
            // Weights, gradients, two optimizer moments, and up to three copies (checkpoint, redundant,
            // rebuild) of a worker's stage; every replica holds the whole model across its stages.
            let state = 4.0 * params * replicas * 7.0;
            let activations = 4.0 * per_micro * (cfg.micro_batches as f64) * replicas;
            bytes = bytes.max(state + activations + corpus);
            let train = 6.0 * params * tokens * (cfg.micro_batches as f64) * replicas * cfg.steps as f64;
            let evaluations = cfg.steps.checked_div(cfg.eval_every).map_or(0, |n| n + 1);
            let evals = evaluations as f64 * cfg.eval_batches as f64;
            flops += train + 2.0 * params * tokens * evals;
        }
        Ok(Self { bytes, flops })
    }

    /// The estimated wall time on `cores` cores, seconds.
    pub(crate) fn seconds(&self, cores: usize) -> f64 {
        self.flops / (FLOPS_PER_CORE * cores.max(1) as f64)
    }

    /// Refuses needs past `memory` bytes or a week on `cores` cores, unless `allow`; the error says
    /// what was estimated and how to go on anyway.
    pub(crate) fn check(&self, memory: Option<u64>, cores: usize, allow: bool) -> Result<()> {
        if allow {
            return Ok(());
        }
        if let Some(memory) = memory
            && self.bytes > memory as f64
        {
            bail!(
                "this run needs about {} of memory (estimated from the configuration) and this machine has {}: make it smaller, or add --allow-large to try anyway",
                gib(self.bytes),
                gib(memory as f64)
            );
        }
        let seconds = self.seconds(cores);
        if seconds > MAX_SECONDS {
            bail!(
                "this run would take about {} on {cores} of this machine's cores (estimated from the configuration): make it smaller, or add --allow-large to run it anyway",
                duration(seconds)
            );
        }
        Ok(())
    }
}

/// This machine's memory in bytes (`MemTotal` of /proc/meminfo), if it can be read.
pub(crate) fn machine_memory() -> Option<u64> {
    let text = transport::fsutil::read_text_bounded(std::path::Path::new("/proc/meminfo"), 1 << 16).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Bytes in GiB, for messages.
pub(crate) fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / f64::from(1u32 << 30))
}

/// Seconds in the largest sensible unit, for messages.
pub(crate) fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.0} days", s / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_run_fits_and_absurd_ones_do_not() -> Result<()> {
        let small = Needs::of(&RunConfig::default())?;
        assert!(small.bytes < 1e9, "the main job needs {}", gib(small.bytes));
        small.check(Some(8 << 30), 2, false)?;
        let wide = RunConfig { micro_batch: 65_536, ..RunConfig::default() };
        let err = Needs::of(&wide)?.check(Some(24 << 30), 2, false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("memory") && err.contains("--allow-large"), "{err}");
        Needs::of(&wide)?.check(Some(24 << 30), 2, true)?;
        Needs::of(&RunConfig { eval_every: 0, ..RunConfig::default() })?.check(None, 2, false)?;
        let long = RunConfig { steps: 10_000_000, layers: Some(1024), ..RunConfig::default() };
        let err = Needs::of(&long)?.check(None, 2, false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("days") && err.contains("--allow-large"), "{err}");
        Ok(())
    }
}
