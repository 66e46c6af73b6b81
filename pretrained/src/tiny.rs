//! Tiny random checkpoints in Hugging Face layout, for tests and examples that must not download
//! anything: a Llama, Qwen2 or Qwen3 of two blocks 32 wide (four query heads sharing two key/value
//! heads; Qwen3's heads 16 wide), seeded random weights, and a character-level tokenizer over printable
//! ASCII and the newline, made with the `tokenizers` crate.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::config::Architecture;
use crate::error::{Error, Result};

/// The unknown token.
pub const UNK: &str = "<unk>";
/// The start-of-text token.
pub const BOS: &str = "<s>";
/// The end-of-text token (its id is 2).
pub const EOS: &str = "<|endoftext|>";
/// Tokens: the three special ones, the newline and printable ASCII.
pub const VOCAB: usize = 3 + 1 + 95;

/// The shapes of a random checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// `vocab_size` (at least [`VOCAB`], the tokenizer's).
    pub vocab: usize,
    /// `hidden_size`.
    pub hidden: usize,
    /// `intermediate_size`.
    pub intermediate: usize,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `num_attention_heads`.
    pub heads: usize,
    /// `num_key_value_heads`.
    pub kv_heads: usize,
    /// Width of a head (Qwen3 writes it as `head_dim`).
    pub head_dim: usize,
    /// `max_position_embeddings`.
    pub positions: usize,
}

impl Shape {
    /// Two blocks 32 wide, four query heads sharing two key/value heads (Qwen3's 16 wide), 128 positions.
    pub fn tiny(arch: Architecture) -> Self {
        let head_dim = if arch == Architecture::Qwen3 { 16 } else { 8 };
        Self { vocab: VOCAB, hidden: 32, intermediate: 48, layers: 2, heads: 4, kv_heads: 2, head_dim, positions: 128 }
    }

    /// The shapes of Qwen2.5-0.5B (494M parameters).
    pub fn qwen2_5_0_5b() -> Self {
        Self {
            vocab: 151_936,
            hidden: 896,
            intermediate: 4864,
            layers: 24,
            heads: 14,
            kv_heads: 2,
            head_dim: 64,
            positions: 32_768,
        }
    }
}

/// Writes a tiny random checkpoint of `arch` into the folder `dir` (created if needed): `config.json`,
/// `model.safetensors`, `tokenizer.json` and `generation_config.json`. The weights follow from `seed`.
pub fn write(dir: &Path, arch: Architecture, seed: u64) -> Result<()> {
    write_shaped(dir, arch, Shape::tiny(arch), seed)
}

/// [`write()`] with other shapes (the embedding tied to the head but for Llama).
pub fn write_shaped(dir: &Path, arch: Architecture, shape: Shape, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    if shape.vocab < VOCAB {
        return Err(Error::field(dir.join("config.json"), "vocab_size", format!("below the tokenizer's {VOCAB}")));
    }
    let mut config = json!({
        "architectures": [match arch {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
        }],
        "model_type": arch.name(), "vocab_size": shape.vocab, "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate, "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads, "num_key_value_heads": shape.kv_heads,
        "max_position_embeddings": shape.positions, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
        "hidden_act": "silu", "tie_word_embeddings": arch != Architecture::Llama, "bos_token_id": 1,
        "eos_token_id": 2, "torch_dtype": "float32", "sliding_window": shape.positions,
        "max_window_layers": shape.layers, "use_sliding_window": false
    });
    if arch == Architecture::Qwen3 || shape.head_dim * shape.heads != shape.hidden {
        config["head_dim"] = json!(shape.head_dim);
    }
    if arch == Architecture::Qwen3 {
        config["attention_bias"] = json!(false);
    }
    let text = serde_json::to_string_pretty(&config).map_err(|e| Error::file(dir.join("config.json"), e))?;
    std::fs::write(dir.join("config.json"), text).map_err(|e| Error::file(dir.join("config.json"), e))?;
    let Shape { vocab, hidden: d, intermediate: f, heads, kv_heads: kv, head_dim: dh, .. } = shape;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut weights = HashMap::new();
    let mut put = |name: String, shape: &[usize], scale: f32, offset: f32| -> Result<()> {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| offset + scale * normal(&mut rng)).collect();
        weights.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
        Ok(())
    };
    // Matrices scaled by 1/sqrt(fan-in) (0.3 at the tiny width), so activations stay of order 1.
    let w = |fan_in: usize| 1.7 / (fan_in as f32).sqrt();
    put("model.embed_tokens.weight".into(), &[vocab, d], 1.0, 0.0)?;
    for l in 0..shape.layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        put(p("input_layernorm.weight"), &[d], 0.1, 1.0)?;
        put(p("post_attention_layernorm.weight"), &[d], 0.1, 1.0)?;
        put(p("self_attn.q_proj.weight"), &[heads * dh, d], w(d), 0.0)?;
        put(p("self_attn.k_proj.weight"), &[kv * dh, d], w(d), 0.0)?;
        put(p("self_attn.v_proj.weight"), &[kv * dh, d], w(d), 0.0)?;
        put(p("self_attn.o_proj.weight"), &[d, heads * dh], w(heads * dh), 0.0)?;
        if arch == Architecture::Qwen2 {
            put(p("self_attn.q_proj.bias"), &[heads * dh], 0.3, 0.0)?;
            put(p("self_attn.k_proj.bias"), &[kv * dh], 0.3, 0.0)?;
            put(p("self_attn.v_proj.bias"), &[kv * dh], 0.3, 0.0)?;
        }
        if arch == Architecture::Qwen3 {
            put(p("self_attn.q_norm.weight"), &[dh], 0.1, 1.0)?;
            put(p("self_attn.k_norm.weight"), &[dh], 0.1, 1.0)?;
        }
        put(p("mlp.gate_proj.weight"), &[f, d], w(d), 0.0)?;
        put(p("mlp.up_proj.weight"), &[f, d], w(d), 0.0)?;
        put(p("mlp.down_proj.weight"), &[d, f], w(f), 0.0)?;
    }
    put("model.norm.weight".into(), &[d], 0.1, 1.0)?;
    if arch == Architecture::Llama {
        put("lm_head.weight".into(), &[vocab, d], w(d), 0.0)?;
    }
    let path = dir.join(crate::weights::SINGLE);
    candle_core::safetensors::save(&weights, &path).map_err(|e| Error::file(&path, e))?;
    write_tokenizer(dir, vocab)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// One token per character: `<unk>`, `<s>`, `<|endoftext|>` (special), then the newline and printable
/// ASCII; decoding concatenates. Ids from [`VOCAB`] up to `vocab` are placeholder tokens `<|tN|>`, so
/// every id the model can draw has a text that reads back as it.
fn write_tokenizer(dir: &Path, model_vocab: usize) -> Result<()> {
    use tokenizers::{AddedToken, Tokenizer, decoders::fuse::Fuse, models::wordlevel::WordLevel};
    let path = dir.join("tokenizer.json");
    let bad = |e: tokenizers::Error| Error::file(&path, e);
    let chars = std::iter::once('\n').chain((32u8..127).map(char::from));
    let vocab: HashMap<String, u32> = [UNK, BOS, EOS]
        .into_iter()
        .map(str::to_owned)
        .chain(chars.map(String::from))
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let model = WordLevel::builder().vocab(vocab.into_iter().collect()).unk_token(UNK.into()).build().map_err(bad)?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::fixed_length::FixedLength::new(1)));
    tokenizer.with_decoder(Some(Fuse::new()));
    tokenizer
        .add_special_tokens([AddedToken::from(UNK, true), AddedToken::from(BOS, true), AddedToken::from(EOS, true)])
        .map_err(bad)?;
    tokenizer.add_tokens((VOCAB..model_vocab).map(|i| AddedToken::from(format!("<|t{i}|>"), false))).map_err(bad)?;
    tokenizer.save(&path, false).map_err(bad)?;
    let generation = dir.join("generation_config.json");
    std::fs::write(&generation, r#"{"bos_token_id": 1, "eos_token_id": [2]}"#).map_err(|e| Error::file(&generation, e))
}
