//! # swarmlab models
//!
//! What swarmlab trains: small Llama-style decoder LMs that split into pipeline stages, the data they
//! train on, and the optimizer — on candle's native kernels or on repops' reproducible ones.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | [`ModelConfig`]: sizes from ~0.1M to ~50M parameters, validated |
//! | [`backend`] | [`Backend`]: `native` or `repops` kernels for every op |
//! | [`llama`] | [`Llama`], its [`Stage`]s and [`Params`] |
//! | [`kv_cache`] | [`KvCache`]: incremental decoding, one new position at a time |
//! | [`optim`] | [`AdamW`] with warm-up, cosine decay and gradient clipping |
//! | [`data`] | byte tokenizer, the synthetic language with a known entropy rate, text corpora, batches |
//! | [`checkpoint`] | safetensors checkpoints of weights and optimizer state |
//! | [`device`] | [`DeviceSpec`]: `cpu`, `cuda`, `cuda:N` or `auto`, resolved with clear errors |
//! | [`memory`] | [`memory::keep_freed_memory`]: freed tensor memory kept for the next step |
//!
//! ```
//! use candle_core::Device;
//! use models::{Llama, ModelConfig, data::{SyntheticConfig, SyntheticLanguage, sample_batch}};
//! # fn main() -> models::Result<()> {
//! let lang = SyntheticLanguage::new(&SyntheticConfig { train_tokens: 4096, val_tokens: 512, ..Default::default() })?;
//! let corpus = lang.corpus();
//! let model = Llama::new(&ModelConfig::default(), 2, &Device::Cpu)?; // two pipeline stages
//! let (ids, targets) = sample_batch(&corpus.train, 2, 32, 0, 0, 0, &Device::Cpu)?;
//! let loss = model.loss(&ids, &targets)?.to_vec0::<f32>()?;
//! assert!(loss > lang.entropy_rate() as f32); // untrained: far above the floor
//! # Ok(())
//! # }
//! ```

pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
mod fused;
pub mod kv_cache;
pub mod llama;
pub mod memory;
pub mod optim;

pub use backend::Backend;
pub use config::{ModelConfig, Precision, RopeScaling};
pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use fused::with_host;
pub use kv_cache::KvCache;
pub use llama::{Llama, Params, Stage, StageInput, StageSpec, split_layers, split_layers_with_edges};
pub use optim::{AdamW, OptimConfig, StepStats};
