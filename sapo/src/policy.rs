//! The policy: a decoder LM that reads a prompt and writes a completion, with sampling, per-token
//! log-probabilities, a supervised step and a GRPO step.
//!
//! Two kinds share everything but their text codec:
//! - swarmlab's own small LMs over ASCII ([`Policy::new`]): text is tokenised byte by byte (vocabulary
//!   128), a prompt is left-padded with NUL to `prompt_width` tokens (so every answer starts at the same
//!   position), and a completion ends with a newline;
//! - pretrained Hugging Face checkpoints ([`Policy::pretrained`]): text goes through the checkpoint's
//!   tokenizer, a prompt has at most `prompt_width` tokens, and a completion ends with an end-of-text
//!   token, written out at the end of its text.
//!
//! A completion has at most `max_new` tokens, its end included. Training batches right-pad each prompt
//! and completion to the longest, so causal attention needs no mask; generation decodes the prompts of
//! one length together. Shared rollouts are re-tokenised by the receiver; text it cannot read (not
//! ASCII for a byte policy, too long) is refused.

use std::collections::BTreeMap;

use candle_core::{D, DType, Device, Tensor};
use models::{AdamW, KvCache, Llama, ModelConfig, OptimConfig, Params};
use pretrained::Checkpoint;

use crate::codec::TextCodec;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grpo::{self, GrpoConfig};

pub use crate::codec::{END, PAD};
/// Vocabulary: ASCII.
pub const VOCAB: usize = 128;

/// The policy's model, window and optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The decoder LM (its `vocab` is forced to 128 and `max_seq` to the window). Not part of a
    /// configuration file: each agent's model follows from its size (`sizes`).
    #[serde(skip, default = "default_model")]
    pub model: ModelConfig,
    /// Tokens of a (left-padded) prompt.
    pub prompt_width: usize,
    /// Most tokens of an answer, its newline included.
    pub max_new: usize,
    /// For a pretrained policy whose tokenizer has a chat template: the system turn before each
    /// question, which is the user's turn (none when unset). Byte policies read the question alone.
    pub system: Option<String>,
    /// AdamW for the GRPO steps.
    pub optim: OptimConfig,
}

/// The default system turn of a pretrained policy's chat: the answer format its reward reads.
pub const DEFAULT_SYSTEM: &str = "Give the final result only, inside <answer></answer>.";

/// The model of the default (`tiny`) policy.
fn default_model() -> ModelConfig {
    PolicyConfig::default().model
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self::sized("tiny").unwrap_or_else(|_| Self::with_model(ModelConfig::default()))
    }
}

impl PolicyConfig {
    fn with_model(model: ModelConfig) -> Self {
        let mut cfg = Self {
            model,
            prompt_width: 16,
            max_new: 13,
            system: Some(DEFAULT_SYSTEM.to_owned()),
            optim: OptimConfig {
                lr: 3e-4,
                min_lr: 3e-4,
                warmup_steps: 0,
                total_steps: 1,
                weight_decay: 0.0,
                ..OptimConfig::default()
            },
        };
        cfg.fit_model();
        cfg
    }

    /// A policy of a named size: `tiny` (2 blocks of width 64) or `small` (3 blocks of width 96).
    pub fn sized(name: &str) -> Result<Self> {
        let model = match name {
            "tiny" => ModelConfig::preset("tiny")?,
            "small" => ModelConfig { d_model: 96, n_layers: 3, n_heads: 4, d_ff: 256, ..ModelConfig::preset("tiny")? },
            other => return Err(Error::config("policy.size", format!("{other:?} is not one of tiny, small"))),
        };
        Ok(Self::with_model(model))
    }

    /// Makes the model fit the policy: ASCII vocabulary, a window of prompt plus answer.
    fn fit_model(&mut self) {
        self.model.vocab = VOCAB;
        self.model.max_seq = self.prompt_width + self.max_new;
        self.model.tie_embeddings = false;
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.prompt_width == 0 || self.prompt_width > 64 {
            return Err(Error::config("policy.prompt_width", format!("{} is not in 1..=64", self.prompt_width)));
        }
        if self.max_new == 0 || self.max_new > 64 {
            return Err(Error::config("policy.max_new", format!("{} is not in 1..=64", self.max_new)));
        }
        self.model.validate()?;
        self.optim.validate()?;
        Ok(())
    }
}

/// How completions are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sampling {
    /// Softmax temperature (0: greedy).
    pub temperature: f64,
    /// Nucleus: sample among the most likely tokens whose probabilities sum to at least this.
    pub top_p: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { temperature: 1.0, top_p: 1.0 }
    }
}

impl Sampling {
    /// Always the most likely token.
    pub const GREEDY: Self = Self { temperature: 0.0, top_p: 1.0 };

    /// Checks both fields.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::config("sampling.temperature", format!("{} is not >= 0", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::config("sampling.top_p", format!("{} is not in (0, 1]", self.top_p)));
        }
        Ok(())
    }

    /// Draws a token from `logits`.
    pub fn draw(&self, logits: &[f32], rng: &mut dyn RngCore) -> u32 {
        let argmax = || {
            logits.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |b, (i, &l)| if l > b.1 { (i, l) } else { b }).0
        };
        if self.temperature == 0.0 {
            return argmax() as u32;
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(usize, f64)> =
            logits.iter().enumerate().map(|(i, &l)| (i, (f64::from(l - max) / self.temperature).exp())).collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        if !(total.is_finite() && total > 0.0) {
            return argmax() as u32;
        }
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = 0.0;
        let mut n = 0;
        for p in &probs {
            kept += p.1 / total;
            n += 1;
            if kept >= self.top_p {
                break;
            }
        }
        let nucleus = &probs[..n];
        let mass: f64 = nucleus.iter().map(|p| p.1).sum();
        let mut u = rng.random::<f64>() * mass;
        for p in nucleus {
            u -= p.1;
            if u < 0.0 {
                return p.0 as u32;
            }
        }
        nucleus[n - 1].0 as u32
    }
}

/// How [`Policy::generate`] writes completions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Generation {
    /// Temperature and nucleus.
    pub sampling: Sampling,
    /// Most tokens per completion (at most, and by default, the policy's `max_new`).
    pub max_tokens: Option<usize>,
    /// Strings that end a completion besides its end token (kept at its end).
    pub stop: Vec<String>,
    /// Decode with a key/value cache (each step reads only the new token); without it, each step
    /// re-reads the whole prefix (the reference the cache is tested against).
    pub cache: bool,
}

impl Default for Generation {
    fn default() -> Self {
        Self { sampling: Sampling::default(), max_tokens: None, stop: Vec::new(), cache: true }
    }
}

impl Generation {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        self.sampling.validate()?;
        if self.max_tokens == Some(0) {
            return Err(Error::config("generation.max_tokens", "0 tokens: nothing to write"));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(Error::config("generation.stop", "an empty stop string"));
        }
        Ok(())
    }

    /// Whether a completion's tokens `row` are finished: its end token last, or a stop string at the
    /// end of its text.
    fn stops(&self, policy: &Policy, row: &[u32]) -> Result<bool> {
        if row.last().is_some_and(|&t| policy.codec.is_end(t)) {
            return Ok(true);
        }
        if self.stop.is_empty() {
            return Ok(false);
        }
        let text = policy.codec.decode(row)?;
        Ok(self.stop.iter().any(|s| text.ends_with(s.as_str())))
    }
}

/// The two ways of reading the next token's logits during generation.
enum Decoder<'a> {
    /// The full forward pass over each row's prompt and tokens so far.
    Full { prompts: &'a [Vec<u32>], per_prompt: usize },
    /// The new token only, with the keys and values of the rows' earlier positions.
    Cached { cache: KvCache, per_prompt: usize },
}

impl Decoder<'_> {
    /// The first token's logits, one row per completion (`prompt × per_prompt + c`).
    fn first(&mut self, policy: &Policy, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Full { per_prompt, .. } => {
                let rows: Vec<Vec<u32>> =
                    prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), *per_prompt)).collect();
                policy.last_logits(&rows)
            }
            Self::Cached { cache, per_prompt } => {
                // Each prompt once; its keys and values then serve all its completions.
                let flat: Vec<u32> = prompts.iter().flatten().copied().collect();
                let len = prompts.first().map_or(0, Vec::len);
                let ids = Tensor::from_vec(flat, (prompts.len(), len), &policy.device)?;
                let logits = policy.model.next_token_logits(&ids, cache)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
                let rows: Vec<usize> = (0..prompts.len() * *per_prompt).map(|r| r / *per_prompt).collect();
                cache.select_rows(&rows)?;
                Ok(rows.iter().map(|&p| logits[p].clone()).collect())
            }
        }
    }

    /// The next token's logits for the rows `active` (all rows' tokens so far in `rows`), which are the
    /// previous step's rows at positions `going`.
    fn next(&mut self, policy: &Policy, going: &[usize], active: &[usize], rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Full { prompts, per_prompt } => {
                let seqs: Vec<Vec<u32>> =
                    active.iter().map(|&i| [prompts[i / *per_prompt].as_slice(), &rows[i]].concat()).collect();
                policy.last_logits(&seqs)
            }
            Self::Cached { cache, .. } => {
                if going.len() < cache.rows() {
                    cache.select_rows(going)?;
                }
                let last: Vec<u32> = active.iter().map(|&i| rows[i].last().copied().unwrap_or(PAD)).collect();
                let ids = Tensor::from_vec(last, (active.len(), 1), &policy.device)?;
                Ok(policy.model.next_token_logits(&ids, cache)?.to_dtype(DType::F32)?.to_vec2::<f32>()?)
            }
        }
    }
}

/// One prompt with one answer to learn from, and the weight of its answer's tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Example<'a> {
    /// The question's prompt.
    pub prompt: &'a str,
    /// The completion, newline included.
    pub completion: &'a str,
    /// Its advantage (GRPO) or 1 (supervised).
    pub weight: f64,
}

/// What one GRPO step did.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepReport {
    /// The loss of the last epoch.
    pub loss: f64,
    /// Completion tokens learned from.
    pub tokens: usize,
    /// Fraction of tokens whose ratio was clipped (last epoch).
    pub clipped: f64,
    /// Gradient norm before clipping (last epoch).
    pub grad_norm: f64,
}

/// A batch of sequences: inputs and targets `[N, T]`, the completion mask and per-sequence weights.
struct Batch {
    inputs: Tensor,
    targets: Tensor,
    mask: Tensor,
    weights: Tensor,
    tokens: usize,
}

/// A policy: its model, the optimizer state, its text codec and the window it reads and writes in.
#[derive(Debug)]
pub struct Policy {
    cfg: PolicyConfig,
    model: Llama,
    params: Params,
    optim: AdamW,
    device: Device,
    codec: TextCodec,
}

impl Policy {
    /// A freshly initialised policy.
    pub fn new(cfg: &PolicyConfig, device: &Device) -> Result<Self> {
        let mut cfg = cfg.clone();
        cfg.fit_model();
        cfg.validate()?;
        let model = Llama::new(&cfg.model, 1, device)?;
        let params = model.params();
        let optim = AdamW::new(cfg.optim.clone(), cfg.model.backend)?;
        let codec = TextCodec::bytes(cfg.prompt_width, cfg.max_new);
        Ok(Self { cfg, model, params, optim, device: device.clone(), codec })
    }

    /// A policy of the pretrained `checkpoint` (its weights and tokenizer), reading prompts of up to
    /// `cfg.prompt_width` tokens and writing completions of up to `cfg.max_new`, with `cfg.optim` and
    /// the kernels of `cfg.model.backend`; the rest of `cfg.model` is the checkpoint's.
    pub fn pretrained(checkpoint: &Checkpoint, cfg: &PolicyConfig, device: &Device) -> Result<Self> {
        Self::pretrained_with(checkpoint, cfg, &checkpoint.weights()?, device)
    }

    /// [`Policy::pretrained`] with `weights` instead of the checkpoint's own (a [`Policy::weights`] of a
    /// policy of this checkpoint, e.g. the swarm's starting point, read from disk once for all agents).
    pub fn pretrained_with(
        checkpoint: &Checkpoint,
        cfg: &PolicyConfig,
        weights: &BTreeMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let window = cfg.prompt_width + cfg.max_new;
        let most = checkpoint.config().model.max_seq;
        if cfg.prompt_width == 0 || cfg.max_new == 0 || window > most {
            return Err(Error::config(
                "policy.prompt_width",
                format!(
                    "{} prompt and {} completion tokens do not fit the model's {most} positions",
                    cfg.prompt_width, cfg.max_new
                ),
            ));
        }
        cfg.optim.validate()?;
        let codec = TextCodec::tokenizer(checkpoint, cfg.prompt_width, cfg.max_new, cfg.system.clone())?;
        let mut cfg = cfg.clone();
        cfg.model = checkpoint.model_config(cfg.model.backend, Some(window));
        let model = checkpoint.model_with(&cfg.model, 1, weights, device)?;
        let params = model.params();
        let optim = AdamW::new(cfg.optim.clone(), cfg.model.backend)?;
        Ok(Self { cfg, model, params, optim, device: device.clone(), codec })
    }

    /// Writes a pretrained policy's weights, configuration and tokenizer into `out` in Hugging Face
    /// layout; an error for a byte policy (it has no Hugging Face form).
    pub fn save_pretrained(&self, out: &std::path::Path) -> Result<()> {
        match self.codec.checkpoint() {
            Some(checkpoint) => Ok(checkpoint.save(&self.model, out)?),
            None => Err(Error::config("policy", "a byte-level policy is not a Hugging Face checkpoint")),
        }
    }

    /// Its text codec.
    pub fn codec(&self) -> &TextCodec {
        &self.codec
    }

    /// Sets every weight to `weights` (a [`Policy::weights`] of a policy of the same model).
    pub fn set_weights(&self, weights: &BTreeMap<String, Tensor>) -> Result<()> {
        for (name, _) in self.params.iter() {
            let w = weights.get(name).ok_or_else(|| Error::config("policy weights", format!("no {name}")))?;
            self.params.set(name, &w.to_device(&self.device)?)?;
        }
        Ok(())
    }

    /// A policy with `weights` (a [`Policy::weights`] of the same configuration) and a fresh optimizer.
    pub fn from_weights(cfg: &PolicyConfig, weights: &BTreeMap<String, Tensor>, device: &Device) -> Result<Self> {
        let policy = Self::new(cfg, device)?;
        policy.set_weights(weights)?;
        Ok(policy)
    }

    /// A copy of every weight.
    pub fn weights(&self) -> BTreeMap<String, Tensor> {
        self.params.snapshot()
    }

    /// The configuration (with the model fitted to the window).
    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Trainable parameters.
    pub fn parameters(&self) -> usize {
        self.params.numel()
    }

    /// Tokens of `prompt` (a byte policy's left-padded to the window); an error if it does not fit or,
    /// for a byte policy, is not ASCII.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        self.codec.encode_prompt(prompt)
    }

    /// Whether the policy can read `prompt` and `completion` (for shared rollouts).
    pub fn can_read(&self, prompt: &str, completion: &str) -> bool {
        self.codec.can_read(prompt, completion)
    }

    /// FLOPs of generating `per_prompt` completions of `max_new` tokens for each of `prompts` prompts,
    /// as [`generate`](Self::generate) does with its cache: one pass over each prompt, then one token per
    /// completion and step (an upper bound: finished completions drop out).
    pub fn generation_flops(&self, prompts: usize, per_prompt: usize) -> f64 {
        let stage = &self.model.stages()[0];
        let width = self.cfg.prompt_width;
        let decode: f64 =
            (1..self.cfg.max_new).map(|t| stage.cached_forward_flops(prompts * per_prompt, width + t - 1, 1)).sum();
        stage.forward_flops(prompts, width) + decode
    }

    /// FLOPs of one training step on `n` sequences (forward and backward: three forwards).
    pub fn training_flops(&self, n: usize) -> f64 {
        3.0 * self.model.stages()[0].forward_flops(n, self.cfg.prompt_width + self.cfg.max_new - 1)
    }

    /// `per_prompt` completions for each prompt, drawn with `sampling` from `rng`. A completion ends
    /// with its newline, or stops unfinished after `max_new` tokens. Decodes with a key/value cache
    /// ([`Generation::default`] otherwise).
    pub fn sample(
        &self,
        prompts: &[&str],
        per_prompt: usize,
        sampling: Sampling,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<Vec<String>>> {
        self.generate(prompts, per_prompt, &Generation { sampling, ..Generation::default() }, rng)
    }

    /// `per_prompt` completions for each prompt, as `generation` says: its sampling, at most
    /// `max_tokens` tokens, stopped after a newline or any of its stop strings (kept in the text). The
    /// group's completions of one prompt are drawn together in one batch; with the cache, each prompt is
    /// read once and its keys and values shared by its completions, and each step reads only the new
    /// token. Tokens are drawn from `rng` in the same order with or without the cache.
    pub fn generate(
        &self,
        prompts: &[&str],
        per_prompt: usize,
        generation: &Generation,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<Vec<String>>> {
        generation.validate()?;
        let max_tokens = generation.max_tokens.unwrap_or(self.cfg.max_new).min(self.cfg.max_new);
        let encoded: Vec<Vec<u32>> = prompts.iter().map(|p| self.encode_prompt(p)).collect::<Result<_>>()?;
        let mut out = vec![Vec::new(); prompts.len()];
        if per_prompt == 0 {
            return Ok(out);
        }
        // Prompts of one length decode together: their rows share positions (a byte policy's all do).
        let mut by_length: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, e) in encoded.iter().enumerate() {
            by_length.entry(e.len()).or_default().push(i);
        }
        for members in by_length.values() {
            let group: Vec<Vec<u32>> = members.iter().map(|&i| encoded[i].clone()).collect();
            let texts = self.generate_group(&group, per_prompt, generation, max_tokens, rng)?;
            for (&i, t) in members.iter().zip(texts) {
                out[i] = t;
            }
        }
        Ok(out)
    }

    /// [`generate`](Self::generate) for `encoded` prompts of one length.
    fn generate_group(
        &self,
        encoded: &[Vec<u32>],
        per_prompt: usize,
        generation: &Generation,
        max_tokens: usize,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<Vec<String>>> {
        let mut rows = vec![Vec::new(); encoded.len() * per_prompt];
        let mut decoder = if generation.cache {
            Decoder::Cached { cache: KvCache::new(), per_prompt }
        } else {
            Decoder::Full { prompts: encoded, per_prompt }
        };
        // `active[k]` is the row of the decoder's `k`-th logits.
        let mut active: Vec<usize> = (0..rows.len()).collect();
        let mut logits = decoder.first(self, encoded)?;
        for step in 0..max_tokens {
            for (k, &i) in active.iter().enumerate() {
                rows[i].push(generation.sampling.draw(&logits[k], rng));
            }
            let mut going = Vec::with_capacity(active.len());
            for (k, &i) in active.iter().enumerate() {
                if !generation.stops(self, &rows[i])? {
                    going.push(k);
                }
            }
            if going.is_empty() || step + 1 == max_tokens {
                break;
            }
            active = going.iter().map(|&k| active[k]).collect();
            logits = decoder.next(self, &going, &active, &rows)?;
        }
        let texts: Vec<String> = rows.iter().map(|r| self.codec.decode(r)).collect::<Result<_>>()?;
        Ok(texts.chunks(per_prompt).map(<[String]>::to_vec).collect())
    }

    /// Logits `[N, vocab]` of the next token after each of `seqs` (equal lengths), from the full
    /// forward pass over them.
    fn last_logits(&self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let len = seqs.first().map_or(0, Vec::len);
        let flat: Vec<u32> = seqs.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (seqs.len(), len), &self.device)?;
        let logits = self.model.forward(&ids)?.narrow(1, len - 1, 1)?.squeeze(1)?;
        Ok(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    fn batch(&self, examples: &[Example<'_>]) -> Result<Batch> {
        if examples.is_empty() {
            return Err(Error::config("batch", "nothing to learn from"));
        }
        // Each prompt and completion, right-padded to the longest (causal attention needs no mask then).
        let mut seqs = Vec::with_capacity(examples.len());
        for e in examples {
            let unreadable = || Error::Unreadable(format!("{:?} → {:?}", e.prompt, e.completion));
            let mut seq = self.encode_prompt(e.prompt).map_err(|_| unreadable())?;
            let prompt = seq.len();
            seq.extend(self.codec.encode_completion(e.completion).map_err(|_| unreadable())?);
            seqs.push((seq, prompt));
        }
        let longest = seqs.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
        let t = longest - 1;
        let (mut inputs, mut targets, mut mask, mut weights) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut tokens = 0;
        for (e, (mut seq, prompt)) in examples.iter().zip(seqs) {
            let answer = prompt..seq.len();
            seq.resize(longest, PAD);
            inputs.extend_from_slice(&seq[..t]);
            targets.extend_from_slice(&seq[1..]);
            // Target position j predicts token j + 1: it is an answer token when j + 1 is in the answer.
            mask.extend((0..t).map(|j| f32::from(u8::from(answer.contains(&(j + 1))))));
            tokens += answer.len();
            weights.push(e.weight as f32);
        }
        let n = examples.len();
        Ok(Batch {
            inputs: Tensor::from_vec(inputs, (n, t), &self.device)?,
            targets: Tensor::from_vec(targets, (n, t), &self.device)?,
            mask: Tensor::from_vec(mask, (n, t), &self.device)?,
            weights: Tensor::from_vec(weights, n, &self.device)?,
            tokens,
        })
    }

    /// Log-probabilities `[N, T]` of each target token.
    fn token_logps(&self, batch: &Batch) -> Result<Tensor> {
        let logits = self.model.forward(&batch.inputs)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        Ok(logp.gather(&batch.targets.unsqueeze(2)?, 2)?.squeeze(2)?)
    }

    /// Log-probability of each example's completion under the policy (sum over its tokens).
    pub fn sequence_logps(&self, examples: &[Example<'_>]) -> Result<Vec<f64>> {
        let batch = self.batch(examples)?;
        let lp = (self.token_logps(&batch)?.detach() * &batch.mask)?.sum(1)?.to_vec1::<f32>()?;
        Ok(lp.into_iter().map(f64::from).collect())
    }

    /// One supervised step: mean negative log-likelihood of the completions' tokens (weights ignored),
    /// taken by `optim` (the warm start has its own schedule, not the policy's optimizer). Returns the
    /// loss before the step.
    pub fn supervised_step(&mut self, examples: &[Example<'_>], optim: &mut AdamW) -> Result<f64> {
        let batch = self.batch(examples)?;
        let logp = self.token_logps(&batch)?;
        let loss = ((logp * &batch.mask)?.sum_all()? / -(batch.tokens as f64))?;
        descend(&self.params, optim, &loss)?;
        Ok(f64::from(loss.to_scalar::<f32>()?))
    }

    /// One GRPO update on `examples` (weights are advantages), `cfg.epochs` optimizer steps; the KL
    /// term needs `reference` when `cfg.beta > 0`.
    pub fn grpo_step(
        &mut self,
        examples: &[Example<'_>],
        cfg: &GrpoConfig,
        reference: Option<&Self>,
    ) -> Result<StepReport> {
        let batch = self.batch(examples)?;
        let ref_logp = match (cfg.beta > 0.0, reference) {
            (false, _) => None,
            (true, Some(r)) => Some(r.token_logps(&batch)?.detach()),
            (true, None) => return Err(Error::config("grpo.beta", "a KL penalty needs a reference policy")),
        };
        let mut old = None;
        let mut report = StepReport { tokens: batch.tokens, ..StepReport::default() };
        for _ in 0..cfg.epochs {
            let logp = self.token_logps(&batch)?;
            let old_logp = old.get_or_insert_with(|| logp.detach()).clone();
            let kl = ref_logp.as_ref().map(|r| grpo::kl_k3(&logp, r)).transpose()?;
            let (loss, clipped) = grpo::clipped_loss(&logp, &old_logp, &batch.weights, &batch.mask, kl.as_ref(), cfg)?;
            report.loss = f64::from(loss.to_scalar::<f32>()?);
            report.clipped = clipped;
            report.grad_norm = descend(&self.params, &mut self.optim, &loss)?;
        }
        Ok(report)
    }
}

/// Back-propagates `loss` and lets `optim` take one step on `params`; returns the gradient norm.
fn descend(params: &Params, optim: &mut AdamW, loss: &Tensor) -> Result<f64> {
    let grads = params.grads(&loss.backward()?);
    Ok(f64::from(optim.step(params, &grads)?.grad_norm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn tiny() -> Result<Policy> {
        let mut cfg = PolicyConfig::default();
        cfg.model = ModelConfig { d_model: 32, n_layers: 1, n_heads: 2, d_ff: 64, ..cfg.model };
        Policy::new(&cfg, &Device::Cpu)
    }

    #[test]
    fn prompts_are_left_padded_and_unreadable_text_is_refused() -> Result<()> {
        let p = tiny()?;
        let ids = p.encode_prompt("1+2=")?;
        assert_eq!(ids.len(), 16);
        assert_eq!(&ids[12..], &[49, 43, 50, 61]);
        assert!(ids[..12].iter().all(|&t| t == PAD));
        assert!(p.encode_prompt("é=").is_err() && p.encode_prompt(&"1".repeat(17)).is_err());
        assert!(p.can_read("1+2=", "3\n") && !p.can_read("1+2=", &"3".repeat(14)) && !p.can_read("1+2=", "ü\n"));
        Ok(())
    }

    #[test]
    fn sampling_is_deterministic_by_seed_and_greedy_is_argmax() -> Result<()> {
        let p = tiny()?;
        let draw = |seed| p.sample(&["1+2=", "Mon+1="], 3, Sampling::default(), &mut ChaCha8Rng::seed_from_u64(seed));
        let a = draw(1)?;
        assert_eq!(a, draw(1)?);
        assert_ne!(a, draw(2)?);
        assert_eq!(a.len(), 2);
        assert!(a.iter().flatten().all(|c| c.len() <= 13 && (c.len() == 13 || c.ends_with('\n'))));
        assert_eq!(Sampling::GREEDY.draw(&[0.1, 3.0, 2.0], &mut ChaCha8Rng::seed_from_u64(0)), 1);
        let nucleus = Sampling { temperature: 1.0, top_p: 0.5 };
        for s in 0..20 {
            assert_eq!(nucleus.draw(&[0.0, 5.0, 0.0], &mut ChaCha8Rng::seed_from_u64(s)), 1);
        }
        Ok(())
    }

    #[test]
    fn the_cache_changes_no_completion_and_stop_strings_and_max_tokens_end_them() -> Result<()> {
        for backend in [models::Backend::Native, models::Backend::RepOps] {
            let mut cfg = PolicyConfig::default();
            cfg.model = ModelConfig { d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, backend, ..cfg.model };
            let p = Policy::new(&cfg, &Device::Cpu)?;
            let prompts = ["1+2=", "Mon+1=", "sort 3 1 2:"];
            for sampling in [Sampling::GREEDY, Sampling::default(), Sampling { temperature: 0.7, top_p: 0.9 }] {
                let with = |cache| {
                    let generation = Generation { sampling, cache, ..Generation::default() };
                    p.generate(&prompts, 4, &generation, &mut ChaCha8Rng::seed_from_u64(7))
                };
                let (cached, full) = (with(true)?, with(false)?);
                assert_eq!(cached, full, "{backend}, {sampling:?}");
                assert_eq!(cached.len(), 3);
                assert!(cached.iter().all(|g| g.len() == 4));
            }
            // A stop string ends a completion where it first appears, and is kept.
            let greedy = p.generate(
                &prompts[..1],
                1,
                &Generation { sampling: Sampling::GREEDY, ..Generation::default() },
                &mut ChaCha8Rng::seed_from_u64(0),
            )?;
            let text = &greedy[0][0];
            let stop = text[1..2].to_owned();
            let cut = text.find(stop.as_str()).map(|i| i + 1).unwrap_or(text.len());
            for cache in [true, false] {
                let generation =
                    Generation { sampling: Sampling::GREEDY, stop: vec![stop.clone()], cache, ..Generation::default() };
                let stopped = p.generate(&prompts[..1], 1, &generation, &mut ChaCha8Rng::seed_from_u64(0))?;
                assert_eq!(stopped[0][0], text[..cut], "stop {stop:?} in {text:?}");
                let short = Generation { max_tokens: Some(2), cache, ..Generation::default() };
                let two = p.generate(&prompts, 2, &short, &mut ChaCha8Rng::seed_from_u64(1))?;
                assert!(two.iter().flatten().all(|c| !c.is_empty() && c.len() <= 2), "{two:?}");
            }
            let bad = |g: Generation| p.generate(&prompts, 1, &g, &mut ChaCha8Rng::seed_from_u64(0)).is_err();
            assert!(bad(Generation { max_tokens: Some(0), ..Generation::default() }));
            assert!(bad(Generation { stop: vec![String::new()], ..Generation::default() }));
            assert!(
                p.generate(&prompts, 0, &Generation::default(), &mut ChaCha8Rng::seed_from_u64(0))?
                    .iter()
                    .all(Vec::is_empty)
            );
        }
        Ok(())
    }

    #[test]
    fn supervised_steps_teach_an_answer_and_grpo_moves_toward_rewarded_ones() -> Result<()> {
        let mut p = tiny()?;
        let mut optim =
            AdamW::new(OptimConfig { lr: 1e-2, warmup_steps: 0, ..OptimConfig::default() }, p.cfg.model.backend)?;
        let ex = [Example { prompt: "1+2=", completion: "3\n", weight: 1.0 }];
        let first = p.supervised_step(&ex, &mut optim)?;
        for _ in 0..30 {
            p.supervised_step(&ex, &mut optim)?;
        }
        let last = p.supervised_step(&ex, &mut optim)?;
        assert!(last < first / 4.0, "{first} → {last}");
        // GRPO: advantage +1 on "4\n", −1 on "3\n" shifts probability toward "4\n".
        let pair = |a: f64| {
            [
                Example { prompt: "1+2=", completion: "4\n", weight: a },
                Example { prompt: "1+2=", completion: "3\n", weight: -a },
            ]
        };
        let before = p.sequence_logps(&pair(1.0))?;
        for _ in 0..5 {
            p.grpo_step(&pair(1.0), &GrpoConfig::default(), None)?;
        }
        let after = p.sequence_logps(&pair(1.0))?;
        assert!(after[0] > before[0] && after[1] < before[1], "{before:?} → {after:?}");
        assert!(p.grpo_step(&pair(1.0), &GrpoConfig { beta: 0.1, ..GrpoConfig::default() }, None).is_err());
        Ok(())
    }
}
