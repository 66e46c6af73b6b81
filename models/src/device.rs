//! Where tensors live and operators run: the CPU or a CUDA GPU, chosen by name in configs and on the
//! command line.
//!
//! `cpu` (the default), `cuda` (GPU 0), `cuda:N`, or `auto` (GPU 0 when one is usable, else the CPU with
//! one line saying why). Asking for `cuda` explicitly where it cannot run is an error that says what is
//! missing: a build without the `cuda` feature, or a machine without a usable driver or GPU.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A device by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA GPU `N` (ordinal).
    Cuda(usize),
    /// GPU 0 if one is usable, else the CPU.
    Auto,
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "device",
                format!("{s:?} is not cpu, cuda, cuda:N or auto (simulated device presets such as a10 are `profile`)"),
            )
        };
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "auto" => Ok(Self::Auto),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse().map(Self::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> Self {
        d.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

impl DeviceSpec {
    /// The device itself. `cuda` where it cannot run is an error naming what is missing; `auto` falls
    /// back to the CPU and logs one line saying why (once per process). Each spec is resolved once per
    /// process: later calls get the same device (one CUDA context, however many workers ask).
    pub fn resolve(self) -> Result<Device> {
        static RESOLVED: std::sync::Mutex<Vec<(DeviceSpec, Device)>> = std::sync::Mutex::new(Vec::new());
        let mut resolved = RESOLVED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, device)) = resolved.iter().find(|(spec, _)| *spec == self) {
            return Ok(device.clone());
        }
        let device = self.open()?;
        resolved.push((self, device.clone()));
        Ok(device)
    }

    fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => cuda(n),
            Self::Auto => match cuda(0) {
                Ok(d) => Ok(d),
                Err(e) => {
                    static SAID: std::sync::Once = std::sync::Once::new();
                    SAID.call_once(|| tracing::warn!("device auto: running on the CPU ({e})"));
                    Ok(Device::Cpu)
                }
            },
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda(n: usize) -> Result<Device> {
    Device::new_cuda(n).map_err(|e| {
        // candle appends a backtrace when RUST_BACKTRACE is set: the driver's answer is the first line.
        let answer = e.to_string();
        let answer = answer.lines().next().unwrap_or_default().to_owned();
        Error::config("device", format!("cuda:{n} is not usable on this machine: {answer}"))
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(n: usize) -> Result<Device> {
    Err(Error::config(
        "device",
        format!("cuda:{n} needs a build with CUDA support: cargo build --release --features cuda"),
    ))
}

/// A short name of `device` for logs and reports: `cpu` or `cuda:N`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() -> Result<()> {
        for (text, spec) in [
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
            ("auto", DeviceSpec::Auto),
        ] {
            assert_eq!(text.parse::<DeviceSpec>()?, spec);
        }
        assert_eq!(DeviceSpec::Cuda(1).to_string().parse::<DeviceSpec>()?, DeviceSpec::Cuda(1));
        for bad in ["a10", "cuda:", "cuda:x", "CPU", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("device") && e.contains("cuda:N"), "{bad}: {e}");
        }
        Ok(())
    }

    #[test]
    fn the_cpu_always_resolves_and_auto_never_fails() -> Result<()> {
        assert!(DeviceSpec::Cpu.resolve()?.is_cpu());
        let auto = DeviceSpec::Auto.resolve()?;
        assert!(auto.is_cpu() || auto.is_cuda());
        assert_eq!(name(&Device::Cpu), "cpu");
        Ok(())
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn asking_a_cpu_build_for_cuda_names_the_feature() {
        let e = DeviceSpec::Cuda(0).resolve().unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn asking_for_a_gpu_that_is_not_there_is_an_error_and_auto_falls_back() {
        // With a GPU the explicit request works; without one (or with the stub driver) it must say why.
        match DeviceSpec::Cuda(0).resolve() {
            Ok(d) => assert!(d.is_cuda()),
            Err(e) => {
                assert!(e.to_string().contains("cuda:0 is not usable"), "{e}");
                assert!(DeviceSpec::Auto.resolve().is_ok_and(|d| d.is_cpu()));
                println!("SKIPPED (no GPU): explicit cuda refused with {e}");
            }
        }
        assert!(DeviceSpec::Cuda(4096).resolve().is_err());
    }
}
