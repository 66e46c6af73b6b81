//! A checkpoint's `config.json`: its architecture and shapes, as a [`ModelConfig`].

use std::path::{Path, PathBuf};

use models::{Backend, ModelConfig, RopeScaling};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The architectures this crate loads, by `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `llama` (Llama 2 and 3, Llama 3.1's rope scaling included, and models of its shape).
    Llama,
    /// `qwen2` (Qwen2, Qwen2.5): biases on the query, key and value projections.
    Qwen2,
    /// `qwen3`: RMSNorm on each query and key head, an explicit head width.
    Qwen3,
}

impl Architecture {
    /// The `model_type` of `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }
}

/// What a checkpoint's `config.json` says, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    /// The architecture.
    pub architecture: Architecture,
    /// The model's shapes, for the native backend, with the checkpoint's window.
    pub model: ModelConfig,
    /// Token ids that end a generation (`eos_token_id`), if given.
    pub eos_token_ids: Vec<u32>,
    /// The file as read, written back unchanged (but its dtype) when the model is saved.
    pub raw: Map<String, Value>,
}

impl HfConfig {
    /// Reads `path` (a `config.json`).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `config.json` read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw: Map<String, Value> = serde_json::from_str(text).map_err(|e| Error::file(path, e))?;
        let f = Fields { raw: &raw, path: path.to_path_buf() };
        let architecture = match f.string("model_type")? {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "qwen3" => Architecture::Qwen3,
            other => return Err(f.bad("model_type", format!("{other:?} is not one of llama, qwen2, qwen3"))),
        };
        let rope_scaling = f.rope_scaling()?;
        for flag in ["mlp_bias", "use_sliding_window"] {
            if f.flag(flag, false)? {
                return Err(f.bad(flag, "true is not supported"));
            }
        }
        if f.string_or("hidden_act", "silu")? != "silu" {
            return Err(f.bad("hidden_act", "only silu (SwiGLU) is supported"));
        }
        let attention_bias = f.flag("attention_bias", false)?;
        if attention_bias && architecture == Architecture::Llama {
            return Err(f.bad("attention_bias", "biases on every attention projection are not supported"));
        }
        let n_heads = f.count("num_attention_heads")?;
        let d_model = f.count("hidden_size")?;
        let head_width = match raw.get("head_dim") {
            None | Some(Value::Null) => None,
            Some(_) => Some(f.count("head_dim")?),
        };
        let model = ModelConfig {
            vocab: f.count("vocab_size")?,
            d_model,
            n_layers: f.count("num_hidden_layers")?,
            n_heads,
            kv_heads: match raw.get("num_key_value_heads") {
                None | Some(Value::Null) => None,
                Some(_) => Some(f.count("num_key_value_heads")?),
            },
            head_width: head_width.filter(|&w| w * n_heads != d_model || architecture == Architecture::Qwen3),
            qkv_bias: architecture == Architecture::Qwen2 || (architecture == Architecture::Qwen3 && attention_bias),
            qk_norm: architecture == Architecture::Qwen3,
            d_ff: f.count("intermediate_size")?,
            max_seq: f.count("max_position_embeddings")?,
            rope_base: f.number_or("rope_theta", 10_000.0)? as f32,
            rope_scaling,
            norm_eps: f.number_or("rms_norm_eps", 1e-6)? as f32,
            tie_embeddings: f.flag("tie_word_embeddings", architecture != Architecture::Llama)?,
            backend: Backend::Native,
            precision: models::Precision::F32,
            init_seed: 0,
        };
        if architecture == Architecture::Qwen3 && attention_bias {
            return Err(f.bad("attention_bias", "biases with per-head norms are not supported"));
        }
        model.validate().map_err(|e| Error::file(path, e))?;
        let eos_token_ids = match raw.get("eos_token_id") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => token_ids(v).ok_or_else(|| f.bad("eos_token_id", "not a token id or a list of them"))?,
        };
        Ok(Self { architecture, model, eos_token_ids, raw })
    }
}

/// A token id or a list of them.
pub(crate) fn token_ids(v: &Value) -> Option<Vec<u32>> {
    let one = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    match v {
        Value::Array(items) => items.iter().map(one).collect(),
        other => one(other).map(|id| vec![id]),
    }
}

/// Typed access to the fields of a JSON object, with errors that name the file and the field.
struct Fields<'a> {
    raw: &'a Map<String, Value>,
    path: PathBuf,
}

impl Fields<'_> {
    fn bad(&self, field: &str, reason: impl ToString) -> Error {
        Error::field(&self.path, field, reason)
    }

    fn get(&self, field: &str) -> Result<&Value> {
        self.raw.get(field).ok_or_else(|| self.bad(field, "missing"))
    }

    fn count(&self, field: &str) -> Result<usize> {
        let v = self.get(field)?;
        v.as_u64()
            .filter(|&n| n > 0)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.bad(field, format!("{v} is not a positive integer")))
    }

    /// `rope_scaling`: absent, null, a `default` type, or Llama 3.1's `llama3` with its four fields.
    fn rope_scaling(&self) -> Result<Option<RopeScaling>> {
        let Some(v) = self.raw.get("rope_scaling").filter(|v| !v.is_null()) else { return Ok(None) };
        let Some(map) = v.as_object() else { return Err(self.bad("rope_scaling", format!("{v} is not an object"))) };
        let inner = Fields { raw: map, path: self.path.clone() };
        // Older configs name the type `type`, newer ones `rope_type`.
        let kind = if map.contains_key("rope_type") { inner.string("rope_type") } else { inner.string("type") };
        let field = |name: &str| format!("rope_scaling.{name}");
        match kind.map_err(|_| self.bad("rope_scaling.rope_type", "missing"))? {
            "default" => Ok(None),
            "llama3" => {
                let number = |name: &str| -> Result<f32> {
                    let v = inner.get(name).map_err(|_| self.bad(&field(name), "missing"))?;
                    v.as_f64()
                        .filter(|x| x.is_finite() && *x > 0.0)
                        .map(|x| x as f32)
                        .ok_or_else(|| self.bad(&field(name), format!("{v} is not a positive number")))
                };
                let original = inner
                    .count("original_max_position_embeddings")
                    .map_err(|_| self.bad(&field("original_max_position_embeddings"), "not a positive integer"))?;
                Ok(Some(RopeScaling {
                    factor: number("factor")?,
                    low_freq_factor: number("low_freq_factor")?,
                    high_freq_factor: number("high_freq_factor")?,
                    original_max_seq: original,
                }))
            }
            other => Err(self.bad(
                "rope_scaling.rope_type",
                format!("{other:?} is not supported (only llama3, or default: plain rotary positions)"),
            )),
        }
    }

    fn string(&self, field: &str) -> Result<&str> {
        let v = self.get(field)?;
        v.as_str().ok_or_else(|| self.bad(field, format!("{v} is not a string")))
    }

    fn string_or<'s>(&'s self, field: &str, default: &'s str) -> Result<&'s str> {
        if self.raw.contains_key(field) { self.string(field) } else { Ok(default) }
    }

    fn flag(&self, field: &str, default: bool) -> Result<bool> {
        match self.raw.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(field, format!("{v} is not true or false"))),
        }
    }

    fn number_or(&self, field: &str, default: f64) -> Result<f64> {
        match self.raw.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| self.bad(field, format!("{v} is not a positive number"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen2() -> Value {
        serde_json::json!({
            "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
            "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
            "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": true, "hidden_act": "silu", "use_sliding_window": false,
            "eos_token_id": 151643, "torch_dtype": "bfloat16"
        })
    }

    fn parse(v: &Value) -> Result<HfConfig> {
        HfConfig::parse(&v.to_string(), Path::new("m/config.json"))
    }

    #[test]
    fn a_qwen2_5_config_reads_as_its_shapes() -> Result<()> {
        let c = parse(&qwen2())?;
        assert_eq!(c.architecture, Architecture::Qwen2);
        let m = &c.model;
        assert_eq!(
            (m.d_model, m.n_layers, m.n_heads, m.n_kv_heads(), m.head_dim(), m.d_ff),
            (896, 24, 14, 2, 64, 4864)
        );
        assert!(m.qkv_bias && !m.qk_norm && m.tie_embeddings);
        assert_eq!((m.rope_base, m.norm_eps), (1e6, 1e-6));
        // Qwen2.5-0.5B's size: 494M parameters.
        assert_eq!(m.param_count(), 494_032_768);
        assert_eq!(c.eos_token_ids, vec![151643]);
        Ok(())
    }

    #[test]
    fn llama_3_1_rope_scaling_reads_and_a_default_type_is_plain() -> Result<()> {
        let mut v = qwen2();
        let scaling = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        v["rope_scaling"] = scaling;
        let m = parse(&v)?.model;
        let expected = RopeScaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_seq: 8192 };
        assert_eq!(m.rope_scaling, Some(expected));
        // Long wavelengths slow down by the factor, short ones are kept, those between blend.
        let (plain, scaled) =
            (ModelConfig { rope_scaling: None, ..m.clone() }.rope_frequencies(), m.rope_frequencies());
        assert_eq!((scaled[0], scaled[31] * 8.0), (plain[0], plain[31]));
        assert!(scaled.iter().zip(&plain).any(|(s, p)| s < p && s * 8.0 > *p), "a blended frequency");
        v["rope_scaling"] = serde_json::json!({"type": "default"});
        assert_eq!(parse(&v)?.model.rope_scaling, None);
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_file_and_field() {
        let err = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut v = qwen2();
            edit(v.as_object_mut().expect("object"));
            parse(&v).expect_err("refused").to_string()
        };
        let e = err(&|m| drop(m.remove("hidden_size")));
        assert_eq!(e, "m/config.json: hidden_size: missing");
        assert!(
            err(&|m| drop(m.insert("model_type".into(), "gpt2".into()))).contains("model_type: \"gpt2\" is not one of")
        );
        assert!(err(&|m| drop(m.insert("num_key_value_heads".into(), 3.into()))).contains("model.kv_heads"));
        assert!(
            err(&|m| drop(m.insert("rope_scaling".into(), serde_json::json!({"type": "yarn", "factor": 4.0}))))
                .contains("rope_scaling.rope_type: \"yarn\" is not supported")
        );
        let llama3 = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut scaling = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
            edit(scaling.as_object_mut().expect("object"));
            err(&move |m| drop(m.insert("rope_scaling".into(), scaling.clone())))
        };
        assert!(llama3(&|s| drop(s.remove("factor"))).contains("rope_scaling.factor: missing"));
        assert!(llama3(&|s| drop(s.insert("factor".into(), (-1.0).into()))).contains("rope_scaling.factor: -1"));
        assert!(
            llama3(&|s| drop(s.insert("low_freq_factor".into(), 5.0.into())))
                .contains("model.rope_scaling.low_freq_factor")
        );
        assert!(
            llama3(&|s| drop(s.insert("original_max_position_embeddings".into(), 0.into())))
                .contains("rope_scaling.original_max_position_embeddings")
        );
        assert!(
            err(&|m| drop(m.insert("vocab_size".into(), "many".into())))
                .contains("vocab_size: \"many\" is not a positive integer")
        );
        assert!(err(&|m| drop(m.insert("eos_token_id".into(), "x".into()))).contains("eos_token_id"));
        assert!(HfConfig::parse("{", Path::new("c.json")).is_err());
    }
}
