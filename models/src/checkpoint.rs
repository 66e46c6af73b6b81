//! Checkpoints: a stage's weights and optimizer state as one safetensors file, written atomically.
//!
//! Layout: parameters under their own names, optimizer moments under `optim/<param>.m|v`, and the
//! optimizer step as a one-element u32 pair `meta/step` (low, high 32 bits).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::llama::Params;
use crate::optim::AdamW;

fn ck_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_owned(), reason: reason.into() }
}

/// Writes `params` and `optim` to `path` (a temporary file beside it, then a rename).
pub fn save(path: impl AsRef<Path>, params: &Params, optim: &AdamW) -> Result<()> {
    let path = path.as_ref();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in params.iter() {
        tensors.insert(name.clone(), var.as_tensor().clone());
    }
    let (step, state) = optim.state();
    for (name, t) in state {
        tensors.insert(format!("optim/{name}"), t);
    }
    let step_t = Tensor::from_vec(vec![step as u32, (step >> 32) as u32], 2, &Device::Cpu)?;
    tensors.insert("meta/step".into(), step_t);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoint".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    candle_core::safetensors::save(&tensors, &tmp).map_err(|e| ck_err(path, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ck_err(path, format!("cannot move into place: {e}"))
    })
}

/// Loads a checkpoint into `params` and `optim`. Every parameter must be present with its shape; a
/// missing, truncated or foreign file is an error that names the path, and nothing is changed then.
pub fn load(path: impl AsRef<Path>, params: &Params, optim: &mut AdamW, device: &Device) -> Result<()> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(ck_err(path, "does not exist"));
    }
    let tensors = candle_core::safetensors::load(path, device)
        .map_err(|e| ck_err(path, format!("not a readable safetensors file: {e}")))?;
    // Check everything before changing anything.
    for (name, var) in params.iter() {
        let t = tensors.get(name).ok_or_else(|| ck_err(path, format!("lacks parameter {name:?}")))?;
        if t.dims() != var.dims() || t.dtype() != var.dtype() {
            return Err(ck_err(
                path,
                format!(
                    "{name}: {:?} {:?} does not match the model's {:?} {:?}",
                    t.dtype(),
                    t.dims(),
                    var.dtype(),
                    var.dims()
                ),
            ));
        }
    }
    let step = tensors
        .get("meta/step")
        .and_then(|t| t.to_vec1::<u32>().ok())
        .filter(|v| v.len() == 2)
        .map(|v| u64::from(v[0]) | (u64::from(v[1]) << 32))
        .ok_or_else(|| ck_err(path, "lacks meta/step"))?;
    let state: BTreeMap<String, Tensor> =
        tensors.iter().filter_map(|(k, t)| k.strip_prefix("optim/").map(|n| (n.to_owned(), t.clone()))).collect();
    for (name, _) in params.iter() {
        params.set(name, &tensors[name])?;
    }
    optim.restore(step, &state)
}
