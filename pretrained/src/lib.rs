//! # swarmlab pretrained
//!
//! Hugging Face checkpoints as swarmlab models: a folder in Hugging Face layout (`config.json`,
//! `model.safetensors` or shards with `model.safetensors.index.json`, `tokenizer.json`,
//! `generation_config.json`), or a model id found offline in the Hugging Face cache, loads as a
//! [`models::Llama`] — the same model code swarmlab trains, so a pretrained model runs on the native
//! or the reproducible (repops) kernels, decodes with the [`models::KvCache`], splits into pipeline
//! stages and trains in f32 — and is saved back in Hugging Face layout, so other tools load the result.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | `config.json` → [`ModelConfig`]: Llama, Qwen2 (query/key/value biases), Qwen3 (per-head norms) |
//! | [`weights`] | safetensors (single or sharded) with Hugging Face names ↔ swarmlab's |
//! | [`tokenizer`] | [`TextTokenizer`]: `tokenizer.json`, end-of-text ids, the chat template |
//! | [`hub`] | a model id → its snapshot in the Hugging Face cache |
//! | [`tiny`] | tiny random checkpoints of each architecture, for tests and examples |
//!
//! Errors name the file and the field: a missing file, an unknown architecture, a tensor of the wrong
//! shape or dtype.

pub mod config;
pub mod error;
pub mod hub;
pub mod tiny;
pub mod tokenizer;
pub mod weights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use models::{Backend, Llama, ModelConfig, Stage};

pub use config::{Architecture, HfConfig};
pub use error::{Error, Result};
pub use tokenizer::{Message, TextTokenizer};

/// A checkpoint found and its configuration read (weights are read by [`Checkpoint::load`]).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
    config: HfConfig,
}

impl Checkpoint {
    /// The checkpoint in folder `model`, or of model id `model` in the Hugging Face cache.
    pub fn open(model: &str) -> Result<Self> {
        let dir = hub::resolve(model)?;
        let config = HfConfig::read(&dir.join("config.json"))?;
        Ok(Self { dir, config })
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its configuration.
    pub fn config(&self) -> &HfConfig {
        &self.config
    }

    /// The model's shapes on `backend`, its window cut to `max_seq` tokens where given (the rotary
    /// tables cover the window).
    pub fn model_config(&self, backend: Backend, max_seq: Option<usize>) -> ModelConfig {
        let mut cfg = self.config.model.clone();
        cfg.backend = backend;
        if let Some(m) = max_seq {
            cfg.max_seq = cfg.max_seq.min(m.max(1));
        }
        cfg
    }

    /// Every weight, by swarmlab's name, in f32 on the CPU.
    pub fn weights(&self) -> Result<BTreeMap<String, Tensor>> {
        weights::load(&self.dir, self.config.model.tie_embeddings)
    }

    /// The model with the checkpoint's weights, as `n_stages` pipeline stages of `cfg` (a
    /// [`model_config`](Self::model_config) of this checkpoint) on `device`.
    pub fn load(&self, cfg: &ModelConfig, n_stages: usize, device: &Device) -> Result<Llama> {
        self.model_with(cfg, n_stages, &self.weights()?, device)
    }

    /// [`load`](Self::load) with `weights` already read (by swarmlab's names, as
    /// [`weights`](Self::weights) gives them, or a model's trained ones): every weight `cfg` needs, of
    /// its shape, and no other; errors name the weight by its Hugging Face name.
    pub fn model_with(
        &self,
        cfg: &ModelConfig,
        n_stages: usize,
        weights: &BTreeMap<String, Tensor>,
        device: &Device,
    ) -> Result<Llama> {
        let whole = models::StageSpec { layers: 0..cfg.n_layers, first: true, last: true };
        let shapes: BTreeMap<String, Vec<usize>> = Stage::weight_shapes(cfg, &whole)?.into_iter().collect();
        let hf = |ours: &str| weights::hf_name(ours).unwrap_or_else(|| ours.to_owned());
        for (name, shape) in &shapes {
            match weights.get(name) {
                None => return Err(Error::field(&self.dir, hf(name), "missing from the weights")),
                Some(w) if w.dims() != shape.as_slice() => {
                    let reason = format!("shape {:?}; config.json makes it {shape:?}", w.dims());
                    return Err(Error::field(&self.dir, hf(name), reason));
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = weights.keys().find(|n| !shapes.contains_key(*n)) {
            return Err(Error::field(&self.dir, hf(extra), "a weight config.json has no place for"));
        }
        Ok(Llama::from_weights(cfg, n_stages, weights, device)?)
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        TextTokenizer::read(&self.dir, &self.config.eos_token_ids)
    }

    /// Writes `model`'s weights into `out` in Hugging Face layout (f32), with this checkpoint's
    /// configuration (its dtype set to float32) and tokenizer files, so the trained model loads like the
    /// original. Each file is written to a temporary name and then renamed.
    pub fn save(&self, model: &Llama, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| Error::file(out, e))?;
        let weights: BTreeMap<String, Tensor> =
            model.params().iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        weights::save(&weights, out)?;
        let mut config = self.config.raw.clone();
        config.insert("torch_dtype".into(), "float32".into());
        let text = serde_json::to_string_pretty(&config).map_err(|e| Error::file(out.join("config.json"), e))?;
        write_atomic(&out.join("config.json"), text.as_bytes())?;
        for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"] {
            let from = self.dir.join(name);
            if from.is_file() && from != out.join(name) {
                let bytes = std::fs::read(&from).map_err(|e| Error::file(&from, e))?;
                write_atomic(&out.join(name), &bytes)?;
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| Error::file(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, e))
}
