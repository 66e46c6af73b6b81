//! Weights in Hugging Face layout: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`, with Hugging Face tensor names mapped to swarmlab's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};

/// The single-file weights of a checkpoint.
pub const SINGLE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX: &str = "model.safetensors.index.json";

/// A block's weights: swarmlab's name (after `layers.<l>.`) and Hugging Face's (after `model.layers.<l>.`).
const BLOCK_NAMES: [(&str, &str); 14] = [
    ("attn_norm", "input_layernorm.weight"),
    ("mlp_norm", "post_attention_layernorm.weight"),
    ("wq", "self_attn.q_proj.weight"),
    ("wk", "self_attn.k_proj.weight"),
    ("wv", "self_attn.v_proj.weight"),
    ("wo", "self_attn.o_proj.weight"),
    ("bq", "self_attn.q_proj.bias"),
    ("bk", "self_attn.k_proj.bias"),
    ("bv", "self_attn.v_proj.bias"),
    ("q_norm", "self_attn.q_norm.weight"),
    ("k_norm", "self_attn.k_norm.weight"),
    ("w1", "mlp.gate_proj.weight"),
    ("w3", "mlp.up_proj.weight"),
    ("w2", "mlp.down_proj.weight"),
];

/// The weights outside the blocks: swarmlab's name and Hugging Face's.
const MODEL_NAMES: [(&str, &str); 3] =
    [("embed", "model.embed_tokens.weight"), ("final_norm", "model.norm.weight"), ("head", "lm_head.weight")];

/// swarmlab's name of the Hugging Face tensor `hf`; `None` for a name that is not a weight of the
/// architectures this crate reads.
pub fn our_name(hf: &str) -> Option<String> {
    translate(hf, "model.layers.", "layers.", |(ours, theirs)| (theirs, ours))
}

/// The Hugging Face name of swarmlab's weight `ours` (the inverse of [`our_name`]).
pub fn hf_name(ours: &str) -> Option<String> {
    translate(ours, "layers.", "model.layers.", |pair| pair)
}

/// `name` from one naming to the other: a block's weight `<from_prefix><l>.<part>` becomes
/// `<to_prefix><l>.<part'>`; `orient` turns a `(swarmlab, Hugging Face)` pair into `(from, to)`.
fn translate(
    name: &str,
    from_prefix: &str,
    to_prefix: &str,
    orient: impl Fn((&'static str, &'static str)) -> (&'static str, &'static str),
) -> Option<String> {
    let lookup = |table: &[(&'static str, &'static str)], key: &str| {
        table.iter().map(|&pair| orient(pair)).find(|(from, _)| *from == key).map(|(_, to)| to)
    };
    if let Some(rest) = name.strip_prefix(from_prefix) {
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        return Some(format!("{to_prefix}{layer}.{}", lookup(&BLOCK_NAMES, part)?));
    }
    lookup(&MODEL_NAMES, name).map(str::to_owned)
}

/// Tensors checkpoints carry that are not weights (rotary tables some exporters keep).
fn is_buffer(hf: &str) -> bool {
    hf.ends_with("rotary_emb.inv_freq")
}

/// Every weight of the checkpoint in `dir`, by swarmlab's name, in f32 on the CPU. With `tied`, a
/// stored `lm_head.weight` is dropped (the head is the embedding). A tensor of another name is an error
/// naming it and its file.
pub fn load(dir: &Path, tied: bool) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for file in files(dir)? {
        let tensors = candle_core::safetensors::load(&file, &Device::Cpu).map_err(|e| Error::file(&file, e))?;
        for (hf, t) in tensors {
            if is_buffer(&hf) || (tied && hf == "lm_head.weight") {
                continue;
            }
            let ours = our_name(&hf)
                .ok_or_else(|| Error::field(&file, &hf, "not a weight of a llama, qwen2 or qwen3 model"))?;
            let t = match t.dtype() {
                DType::F32 => t,
                DType::BF16 | DType::F16 | DType::F64 => t.to_dtype(DType::F32)?,
                other => return Err(Error::field(&file, &hf, format!("dtype {other:?} is not a float"))),
            };
            if out.insert(ours, t).is_some() {
                return Err(Error::field(&file, &hf, "stored twice"));
            }
        }
    }
    Ok(out)
}

/// The weight files of `dir`: the shards its index lists, else `model.safetensors`.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX);
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::file(&index, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| Error::file(&index, e))?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::field(&index, "weight_map", "missing or not an object"))?;
        let mut shards = BTreeSet::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| Error::field(&index, name, "its file is not a string"))?;
            if file.contains('/') || file.contains("..") {
                return Err(Error::field(&index, name, format!("{file:?} is not a file of the folder")));
            }
            shards.insert(file.to_owned());
        }
        let shards: Vec<PathBuf> = shards.into_iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = shards.iter().find(|p| !p.is_file()) {
            return Err(Error::file(missing, "listed in the index but missing"));
        }
        return Ok(shards);
    }
    let single = dir.join(SINGLE);
    if single.is_file() { Ok(vec![single]) } else { Err(Error::file(dir, format!("no {SINGLE} or {INDEX}"))) }
}

/// Writes `weights` (swarmlab's names) as `dir/model.safetensors` with Hugging Face names, in f32: to a
/// temporary file first, then renamed, so no half-written file is left.
pub fn save(weights: &BTreeMap<String, Tensor>, dir: &Path) -> Result<()> {
    let mut hf = HashMap::new();
    for (name, t) in weights {
        let n = hf_name(name).ok_or_else(|| Error::field(dir.join(SINGLE), name, "has no Hugging Face name"))?;
        hf.insert(n, t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
    }
    let path = dir.join(SINGLE);
    let tmp = dir.join(format!(".{SINGLE}.tmp"));
    candle_core::safetensors::save(&hf, &tmp).map_err(|e| Error::file(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::file(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for hf in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.11.self_attn.k_proj.bias",
            "model.layers.0.self_attn.q_norm.weight",
            "model.layers.3.mlp.down_proj.weight",
        ] {
            let ours = our_name(hf).expect("a weight");
            assert_eq!(hf_name(&ours).as_deref(), Some(hf));
        }
        assert_eq!(our_name("model.layers.2.mlp.gate_proj.weight").as_deref(), Some("layers.2.w1"));
        assert_eq!(our_name("model.layers.x.mlp.gate_proj.weight"), None);
        assert_eq!(our_name("model.layers.0.self_attn.o_proj.bias"), None);
        assert_eq!(hf_name("blocks.0.wq"), None);
    }
}
