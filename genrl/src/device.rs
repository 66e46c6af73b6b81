//! Device profiles and the compute cost model: how long a computation of known FLOPs takes on an agent.
//!
//! Time is the only thing swarmlab simulates: the maths runs for real on the local CPU, and an agent then
//! advances its (virtual) clock by `flops / profile.flops`. A heterogeneous swarm is a list of profiles;
//! a straggler is a profile [`slowed`](DeviceProfile::slowed) by a factor.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What an agent's hardware can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// A name for reports.
    pub name: String,
    /// Sustained training throughput in FLOP/s (what a real training step achieves, not the peak).
    pub flops: f64,
    /// Memory for weights, optimizer state and activations, in bytes.
    pub memory: u64,
}

const GIB: u64 = 1 << 30;

impl DeviceProfile {
    /// An NVIDIA H100 (80 GB): 989 TFLOP/s dense bf16 peak; assumed sustained 40% of it.
    pub fn h100() -> Self {
        Self { name: "h100".into(), flops: 0.4 * 989e12, memory: 80 * GIB }
    }

    /// An NVIDIA A10 (24 GB): 125 TFLOP/s dense bf16 peak; assumed sustained 40% of it.
    pub fn a10() -> Self {
        Self { name: "a10".into(), flops: 0.4 * 125e12, memory: 24 * GIB }
    }

    /// A 32 GB CPU node (16 modern cores): assumed 0.5 TFLOP/s sustained in f32.
    pub fn cpu32() -> Self {
        Self { name: "cpu32".into(), flops: 0.5e12, memory: 32 * GIB }
    }

    /// A 2-core laptop: assumed 50 GFLOP/s sustained in f32 (what small-batch decoding of a tiny model
    /// reaches on two cores).
    pub fn laptop() -> Self {
        Self { name: "laptop".into(), flops: 50e9, memory: 8 * GIB }
    }

    /// A profile by name: `h100`, `a10`, `cpu32` or `laptop`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "h100" => Ok(Self::h100()),
            "a10" => Ok(Self::a10()),
            "cpu32" => Ok(Self::cpu32()),
            "laptop" => Ok(Self::laptop()),
            other => Err(Error::config("device", format!("{other:?} is not one of h100, a10, cpu32, laptop"))),
        }
    }

    /// Checks the numbers; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.flops.is_finite() && self.flops > 0.0) {
            return Err(Error::config("device.flops", format!("{} is not a positive FLOP/s figure", self.flops)));
        }
        if self.memory == 0 {
            return Err(Error::config("device.memory", "must be positive"));
        }
        Ok(())
    }

    /// Time to compute `flops` floating-point operations.
    pub fn compute_time(&self, flops: f64) -> Duration {
        Duration::from_secs_f64(flops.max(0.0) / self.flops)
    }

    /// The same device `factor` times slower (a straggler).
    pub fn slowed(&self, factor: f64) -> Result<Self> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(Error::config("device.slowdown", format!("{factor} is not a positive factor")));
        }
        Ok(Self { name: format!("{}/{factor}", self.name), flops: self.flops / factor, memory: self.memory })
    }

    /// Checks that `bytes` fit in memory; the error says how much is missing.
    pub fn check_fits(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes <= self.memory {
            Ok(())
        } else {
            Err(Error::config(
                "device.memory",
                format!(
                    "{what} needs {:.2} GiB but {} has {:.2} GiB",
                    bytes as f64 / GIB as f64,
                    self.name,
                    self.memory as f64 / GIB as f64
                ),
            ))
        }
    }
}

/// FLOPs of one training step (forward + backward) of a dense model: `6 · parameters · tokens`.
pub fn training_flops(parameters: usize, tokens: usize) -> f64 {
    6.0 * parameters as f64 * tokens as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_time_is_flops_over_throughput() -> Result<()> {
        let d = DeviceProfile { name: "x".into(), flops: 1e12, memory: GIB };
        assert_eq!(d.compute_time(5e11), Duration::from_millis(500));
        assert_eq!(d.slowed(4.0)?.compute_time(5e11), Duration::from_secs(2));
        assert!(DeviceProfile::h100().compute_time(1e15) < DeviceProfile::a10().compute_time(1e15));
        assert_eq!(training_flops(1_000_000, 512), 3.072e9);
        Ok(())
    }

    #[test]
    fn bad_profiles_are_named() {
        assert!(DeviceProfile::preset("tpu").unwrap_err().to_string().contains("device"));
        let bad = DeviceProfile { flops: 0.0, ..DeviceProfile::a10() };
        assert!(bad.validate().unwrap_err().to_string().contains("device.flops"));
        let err = DeviceProfile::a10().check_fits("weights", 100 * GIB).unwrap_err().to_string();
        assert!(err.contains("100.00 GiB") && err.contains("a10"), "{err}");
        assert!(DeviceProfile::a10().slowed(0.0).is_err());
    }
}
