//! A Llama-style decoder LM that splits into pipeline stages by layer ranges.
//!
//! The first stage owns the token embedding, the last the final norm and the output head; every stage
//! owns a contiguous range of transformer blocks. Parameters are initialised from `(init_seed, name)`
//! alone, so a model split into stages holds exactly the weights of the unsplit model, and chaining the
//! stages computes exactly what the unsplit model computes.

use std::collections::BTreeMap;
use std::ops::Range;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;

/// Standard deviation of the weight initialisation.
const INIT_STD: f32 = 0.02;

/// Named trainable tensors, iterated in name order.
#[derive(Debug, Clone, Default)]
pub struct Params {
    vars: BTreeMap<String, Var>,
}

impl Params {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.vars.get(name).map(Var::as_tensor).ok_or_else(|| Error::Input(format!("no parameter {name:?}")))
    }

    /// The variable called `name`.
    pub fn var(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// `(name, variable)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// The gradient of each parameter from a backward pass, by name (parameters without one are left out).
    pub fn grads(&self, store: &candle_core::backprop::GradStore) -> BTreeMap<String, Tensor> {
        self.vars.iter().filter_map(|(n, v)| store.get(v).map(|g| (n.clone(), g.clone()))).collect()
    }

    /// Replaces the value of `name` (same shape and dtype).
    pub fn set(&self, name: &str, value: &Tensor) -> Result<()> {
        let var = self.vars.get(name).ok_or_else(|| Error::Input(format!("no parameter {name:?}")))?;
        if var.dims() != value.dims() {
            return Err(Error::Input(format!("{name}: shape {:?} does not match {:?}", value.dims(), var.dims())));
        }
        var.set(value)?;
        Ok(())
    }

    /// A snapshot of every tensor (cheap handles; later `set`s do not change it).
    pub fn snapshot(&self) -> BTreeMap<String, Tensor> {
        self.vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap_or_else(|_| v.as_tensor().clone())))
            .collect()
    }

    fn insert(&mut self, name: String, t: Tensor) -> Result<()> {
        self.vars.insert(name, Var::from_tensor(&t)?);
        Ok(())
    }
}

/// Which part of the model a stage holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSpec {
    /// Transformer blocks of this stage.
    pub layers: Range<usize>,
    /// Holds the embedding (takes tokens).
    pub first: bool,
    /// Holds the final norm and head (returns logits).
    pub last: bool,
}

impl StageSpec {
    /// FLOPs of one forward pass of this part of `cfg`'s model over `batch × seq` tokens, from the shapes
    /// alone (no weights are built): `2 · matrix weights · tokens` for the matrix products (each block's
    /// four attention projections and three feed-forward matrices, the head on the last stage; the
    /// embedding lookup is free) plus `4 · blocks · seq · d_model · tokens` for attention.
    pub fn forward_flops(&self, cfg: &ModelConfig, batch: usize, seq: usize) -> f64 {
        self.cached_forward_flops(cfg, batch, 0, seq)
    }

    /// FLOPs of a forward pass over `new` positions of `batch` sequences after `past` cached ones
    /// ([`Stage::forward_cached`]): the matrix products of the new tokens, and attention of each new
    /// token over `past + new` keys. With `past = 0`, [`forward_flops`](Self::forward_flops).
    pub fn cached_forward_flops(&self, cfg: &ModelConfig, batch: usize, past: usize, new: usize) -> f64 {
        let tokens = (batch * new) as f64;
        let per_block = cfg.block_matrix_params() as f64;
        let head = if self.last { (cfg.vocab * cfg.d_model) as f64 } else { 0.0 };
        let blocks = self.layers.len() as f64;
        let attention = 4.0 * blocks * ((past + new) as f64) * cfg.q_width() as f64 * tokens;
        2.0 * (blocks * per_block + head) * tokens + attention
    }
}

/// Splits `n_layers` blocks into `n_stages` contiguous ranges, as evenly as possible.
pub fn split_layers(n_layers: usize, n_stages: usize) -> Result<Vec<StageSpec>> {
    if n_stages == 0 || n_stages > n_layers {
        return Err(Error::config(
            "pipeline.stages",
            format!("{n_stages} stages cannot split {n_layers} layers (need 1..={n_layers})"),
        ));
    }
    let mut specs = Vec::with_capacity(n_stages);
    let mut start = 0;
    for s in 0..n_stages {
        let len = n_layers / n_stages + usize::from(s < n_layers % n_stages);
        specs.push(StageSpec { layers: start..start + len, first: s == 0, last: s + 1 == n_stages });
        start += len;
    }
    Ok(specs)
}

/// Splits the model into `n_stages` with the embedding alone in the first stage and the final norm and
/// head alone in the last, and the `n_layers` blocks spread over the `n_stages − 2` stages between, as
/// evenly as possible (the layout of CheckFree, where the transformer stages are interchangeable).
pub fn split_layers_with_edges(n_layers: usize, n_stages: usize) -> Result<Vec<StageSpec>> {
    if n_stages < 3 || n_stages - 2 > n_layers {
        return Err(Error::config(
            "pipeline.stages",
            format!("{n_stages} stages with edge stages need 3..={} for {n_layers} layers", n_layers + 2),
        ));
    }
    let mut specs = vec![StageSpec { layers: 0..0, first: true, last: false }];
    for mut middle in split_layers(n_layers, n_stages - 2)? {
        middle.first = false;
        middle.last = false;
        specs.push(middle);
    }
    specs.push(StageSpec { layers: n_layers..n_layers, first: false, last: true });
    Ok(specs)
}

impl StageSpec {
    /// The stage-local name of parameter `name`: `layers.<l>.<w>` becomes `blocks.<l − first layer>.<w>`,
    /// so stages holding different layers can be matched block by block; other names are unchanged.
    pub fn local_name(&self, name: &str) -> String {
        match name.strip_prefix("layers.").and_then(|rest| rest.split_once('.')) {
            Some((l, w)) => match l.parse::<usize>() {
                Ok(l) if l >= self.layers.start => format!("blocks.{}.{w}", l - self.layers.start),
                _ => name.to_owned(),
            },
            None => name.to_owned(),
        }
    }

    /// The inverse of [`local_name`](Self::local_name) for this stage.
    pub fn global_name(&self, local: &str) -> String {
        match local.strip_prefix("blocks.").and_then(|rest| rest.split_once('.')) {
            Some((k, w)) => match k.parse::<usize>() {
                Ok(k) => format!("layers.{}.{w}", self.layers.start + k),
                Err(_) => local.to_owned(),
            },
            None => local.to_owned(),
        }
    }
}

/// What a stage receives.
#[derive(Debug, Clone, Copy)]
pub enum StageInput<'a> {
    /// Token ids `[B, T]` (u32), for the first stage.
    Tokens(&'a Tensor),
    /// Hidden states `[B, T, d_model]`, for the others.
    Hidden(&'a Tensor),
}

/// A deterministic normal sample from basic operations and repops' own `ln`/`sin_cos` (Box–Muller), so
/// initial weights are the same bits on every platform.
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1 = (rng.random::<u32>() >> 8) as f32 / (1u32 << 24) as f32 + 1.0 / (1u32 << 25) as f32;
    let u2 = (rng.random::<u32>() >> 8) as f32 / (1u32 << 24) as f32;
    let r = (-2.0 * repops::kernels::math::ln(u1)).sqrt();
    r * repops::kernels::math::sin_cos(std::f32::consts::TAU * u2).1
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the seed.
    name.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn init_matrix(cfg: &ModelConfig, name: &str, rows: usize, cols: usize, std: f32, device: &Device) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(name_seed(cfg.init_seed, name));
    let v: Vec<f32> = (0..rows * cols).map(|_| normal(&mut rng) * std).collect();
    Ok(Tensor::from_vec(v, (rows, cols), device)?)
}

/// How a fresh weight starts.
#[derive(Debug, Clone, Copy)]
enum Init {
    /// Normal with this standard deviation (seeded by the weight's name).
    Normal(f32),
    Zeros,
    Ones,
}

/// One pipeline stage of the model.
#[derive(Debug, Clone)]
pub struct Stage {
    cfg: ModelConfig,
    spec: StageSpec,
    params: Params,
    cos: Tensor,
    sin: Tensor,
}

impl Stage {
    /// A stage with freshly initialised weights (the same weights the unsplit model has there).
    pub fn new(cfg: &ModelConfig, spec: StageSpec, device: &Device) -> Result<Self> {
        let mut params = Params::default();
        for (name, shape, init) in Self::layout(cfg, &spec)? {
            let value = match init {
                Init::Normal(std) => init_matrix(cfg, &name, shape[0], shape[1], std, device)?,
                Init::Zeros => Tensor::zeros(shape, DType::F32, device)?,
                Init::Ones => Tensor::ones(shape, DType::F32, device)?,
            };
            params.insert(name, value)?;
        }
        Self::with_params(cfg, spec, params, device)
    }

    /// A stage with the given weights (by global name, as [`Stage::params`] names them; converted to f32
    /// on `device`): every weight of the stage must be there with its shape. Weights of other stages are
    /// ignored.
    pub fn from_weights(
        cfg: &ModelConfig,
        spec: StageSpec,
        weights: &BTreeMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let mut params = Params::default();
        for (name, shape, _) in Self::layout(cfg, &spec)? {
            let w = weights.get(&name).ok_or_else(|| Error::Input(format!("no weight {name:?}")))?;
            if w.dims() != shape.as_slice() {
                return Err(Error::Input(format!("{name}: shape {:?}, the model needs {shape:?}", w.dims())));
            }
            params.insert(name, w.to_dtype(DType::F32)?.to_device(device)?)?;
        }
        Self::with_params(cfg, spec, params, device)
    }

    /// The name and shape of every weight of a stage `spec` of `cfg`'s model.
    pub fn weight_shapes(cfg: &ModelConfig, spec: &StageSpec) -> Result<Vec<(String, Vec<usize>)>> {
        Ok(Self::layout(cfg, spec)?.into_iter().map(|(name, shape, _)| (name, shape)).collect())
    }

    /// Every weight of the stage: its name, shape and initialisation.
    fn layout(cfg: &ModelConfig, spec: &StageSpec) -> Result<Vec<(String, Vec<usize>, Init)>> {
        cfg.validate()?;
        if spec.layers.end > cfg.n_layers {
            return Err(Error::config("stage.layers", format!("{:?} exceeds {} layers", spec.layers, cfg.n_layers)));
        }
        if cfg.tie_embeddings && !(spec.first && spec.last) {
            return Err(Error::config("model.tie_embeddings", "a tied head needs the whole model in one stage"));
        }
        let (d, f, q, kv, dh) = (cfg.d_model, cfg.d_ff, cfg.q_width(), cfg.kv_width(), cfg.head_dim());
        let out_std = INIT_STD / (2.0 * cfg.n_layers as f32).sqrt();
        let mut layout = Vec::new();
        let mut add = |name: String, shape: &[usize], init| layout.push((name, shape.to_vec(), init));
        if spec.first {
            add("embed".into(), &[cfg.vocab, d], Init::Normal(INIT_STD));
        }
        for l in spec.layers.clone() {
            let p = |n: &str| format!("layers.{l}.{n}");
            add(p("attn_norm"), &[d], Init::Ones);
            for (w, rows) in [("wq", q), ("wk", kv), ("wv", kv)] {
                add(p(w), &[rows, d], Init::Normal(INIT_STD));
            }
            if cfg.qkv_bias {
                for (b, rows) in [("bq", q), ("bk", kv), ("bv", kv)] {
                    add(p(b), &[rows], Init::Zeros);
                }
            }
            if cfg.qk_norm {
                add(p("q_norm"), &[dh], Init::Ones);
                add(p("k_norm"), &[dh], Init::Ones);
            }
            add(p("wo"), &[d, q], Init::Normal(out_std));
            add(p("mlp_norm"), &[d], Init::Ones);
            add(p("w1"), &[f, d], Init::Normal(INIT_STD));
            add(p("w3"), &[f, d], Init::Normal(INIT_STD));
            add(p("w2"), &[d, f], Init::Normal(out_std));
        }
        if spec.last {
            add("final_norm".into(), &[d], Init::Ones);
            if !cfg.tie_embeddings {
                add("head".into(), &[cfg.vocab, d], Init::Normal(INIT_STD));
            }
        }
        Ok(layout)
    }

    fn with_params(cfg: &ModelConfig, spec: StageSpec, params: Params, device: &Device) -> Result<Self> {
        let (cos, sin) = repops::kernels::rope::table_of(cfg.max_seq, &cfg.rope_frequencies());
        let half = cfg.head_dim() / 2;
        Ok(Self {
            cfg: cfg.clone(),
            spec,
            params,
            cos: Tensor::from_vec(cos, (cfg.max_seq, half), device)?,
            sin: Tensor::from_vec(sin, (cfg.max_seq, half), device)?,
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device its weights live on.
    pub fn device(&self) -> &Device {
        self.cos.device()
    }

    /// Which part of the model this is.
    pub fn spec(&self) -> &StageSpec {
        &self.spec
    }

    /// The stage's parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// FLOPs of one forward pass over `batch × seq` tokens: `2 · weights · tokens` for the matrix
    /// products plus `4 · layers · seq · d_model · tokens` for attention (the embedding lookup is free).
    pub fn forward_flops(&self, batch: usize, seq: usize) -> f64 {
        self.spec.forward_flops(&self.cfg, batch, seq)
    }

    /// FLOPs of [`forward_cached`](Self::forward_cached) over `new` positions after `past` cached ones.
    pub fn cached_forward_flops(&self, batch: usize, past: usize, new: usize) -> f64 {
        self.spec.cached_forward_flops(&self.cfg, batch, past, new)
    }

    /// Runs the stage: tokens or hidden states in; hidden states out, or logits `[B, T, vocab]` from
    /// the last stage.
    pub fn forward(&self, input: StageInput<'_>) -> Result<Tensor> {
        self.run(input, None, false)
    }

    /// Runs the stage on new positions only, after those `cache` holds: the input's `T` tokens (or
    /// hidden states) are positions `cache.len()..cache.len() + T`, they attend over the cached keys and
    /// values and their own, and their keys and values are appended to the cache. With `last_only`, the
    /// last stage returns the logits of the last position only (`[B, 1, vocab]`). The same blocks as
    /// [`forward`](Self::forward): on repops, the logits are the bits the full forward pass gives there.
    pub fn forward_cached(&self, input: StageInput<'_>, cache: &mut KvCache, last_only: bool) -> Result<Tensor> {
        self.run(input, Some(cache), last_only)
    }

    fn run(&self, input: StageInput<'_>, mut cache: Option<&mut KvCache>, last_only: bool) -> Result<Tensor> {
        let be = self.cfg.backend;
        let mut x = match (input, self.spec.first) {
            (StageInput::Tokens(ids), true) => be.embedding(self.params.get("embed")?, ids)?,
            (StageInput::Hidden(h), false) => h.clone(),
            (StageInput::Tokens(_), false) => return Err(Error::Input("only the first stage takes tokens".into())),
            (StageInput::Hidden(_), true) => {
                return Err(Error::Input("the first stage takes tokens, not hidden states".into()));
            }
        };
        let dims = x.dims().to_vec();
        let [b, t, d] = dims[..] else {
            return Err(Error::Input(format!("expected [batch, seq, d_model], got {dims:?}")));
        };
        let past = match (&cache, self.spec.layers.clone().next()) {
            (Some(c), Some(l)) => c.past(l),
            _ => 0,
        };
        if d != self.cfg.d_model || past + t > self.cfg.max_seq || t == 0 {
            return Err(Error::Input(format!(
                "hidden states {dims:?} after {past} cached positions do not fit d_model {} and max_seq {}",
                self.cfg.d_model, self.cfg.max_seq
            )));
        }
        if let Some(c) = &cache
            && past > 0
            && c.rows() != b
        {
            return Err(Error::Input(format!("{b} sequences for a cache of {} rows", c.rows())));
        }
        // A single new position attends to every cached one: no mask. Fused attention masks itself.
        let fused = cache.is_none() && be.fuses_attention(x.device());
        let mask = if t > 1 && !fused { Some(causal_mask(b, self.cfg.n_heads, past, t, x.device())?) } else { None };
        let (cos, sin) = (self.cos.narrow(0, past, t)?, self.sin.narrow(0, past, t)?);
        for l in self.spec.layers.clone() {
            x = self.block(l, &x, mask.as_ref(), &cos, &sin, cache.as_deref_mut())?;
        }
        if self.spec.last {
            if last_only {
                x = x.narrow(1, t - 1, 1)?;
            }
            let h = be.rms_norm(&x, self.params.get("final_norm")?, self.cfg.norm_eps)?;
            let head = if self.cfg.tie_embeddings { self.params.get("embed")? } else { self.params.get("head")? };
            return self.linear(&h, head);
        }
        Ok(x)
    }

    /// `x [.., in] · wᵀ` at the model's [`Precision`](crate::Precision).
    fn linear(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let be = self.cfg.backend;
        self.cfg.precision.product(x, w, |x, w| be.linear(x, w))
    }

    /// Projection `w` of block `l` from `h [B, T, d]` split into `n` heads, `[B, T, n, dh]`, with its bias
    /// `bias` and the per-head norm `norm` where the model has them.
    fn project_heads(
        &self,
        l: usize,
        h: &Tensor,
        (w, bias, norm): (&str, &str, Option<&str>),
        n: usize,
    ) -> Result<Tensor> {
        let (be, cfg) = (self.cfg.backend, &self.cfg);
        let p = |name: &str| self.params.get(&format!("layers.{l}.{name}"));
        let (b, t, _) = h.dims3()?;
        let mut y = self.linear(h, p(w)?)?;
        if cfg.qkv_bias {
            y = be.add_bias(&y, p(bias)?)?;
        }
        let mut y = y.reshape((b, t, n, cfg.head_dim()))?;
        if let Some(norm) = norm.filter(|_| cfg.qk_norm) {
            y = be.rms_norm(&y, p(norm)?, cfg.norm_eps)?;
        }
        Ok(y)
    }

    fn block(
        &self,
        l: usize,
        x: &Tensor,
        mask: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let be = self.cfg.backend;
        let p = |n: &str| self.params.get(&format!("layers.{l}.{n}"));
        let (b, t, _) = x.dims3()?;
        let cfg = &self.cfg;
        let (nh, kvh, dh) = (cfg.n_heads, cfg.n_kv_heads(), cfg.head_dim());
        let h = be.rms_norm(x, p("attn_norm")?, cfg.norm_eps)?;
        let ctx = if cache.is_none() && be.fuses_attention(x.device()) {
            // Projections stay `[B, T, n · dh]`: the fused op reads heads in place and applies the rotary
            // positions itself.
            let project = |names, n: usize| -> Result<Tensor> {
                Ok(self.project_heads(l, &h, names, n)?.reshape((b, t, n * dh))?)
            };
            let (q, k) = (project(("wq", "bq", Some("q_norm")), nh)?, project(("wk", "bk", Some("k_norm")), kvh)?);
            be.causal_attention(&q, &k, &project(("wv", "bv", None), kvh)?, cos, sin, nh, kvh)?
        } else {
            self.attention(l, &h, mask, cos, sin, cache)?
        };
        let x = be.add(x, &self.linear(&ctx, p("wo")?)?)?;
        let h = be.rms_norm(&x, p("mlp_norm")?, self.cfg.norm_eps)?;
        let gate = be.swiglu(&self.linear(&h, p("w1")?)?, &self.linear(&h, p("w3")?)?)?;
        be.add(&x, &self.linear(&gate, p("w2")?)?)
    }

    /// Attention from its composed ops (heads transposed to `[B, n, T, dh]`, rotary positions, scores,
    /// mask, softmax), reading and extending `cache` where there is one: `[B, T, heads · dh]`.
    fn attention(
        &self,
        l: usize,
        h: &Tensor,
        mask: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let be = self.cfg.backend;
        let (b, t, _) = h.dims3()?;
        let cfg = &self.cfg;
        let (nh, kvh, dh) = (cfg.n_heads, cfg.n_kv_heads(), cfg.head_dim());
        // Heads transposed to `[B, n, T, dh]`.
        let project = |names, n: usize| -> Result<Tensor> {
            Ok(self.project_heads(l, h, names, n)?.transpose(1, 2)?.contiguous()?)
        };
        let q = be.rope(&project(("wq", "bq", Some("q_norm")), nh)?, cos, sin)?;
        let k = be.rope(&project(("wk", "bk", Some("k_norm")), kvh)?, cos, sin)?;
        let v = project(("wv", "bv", None), kvh)?;
        let (k, v) = match cache {
            Some(c) => c.append(l, &k, &v)?,
            None => (k, v),
        };
        let (k, v) = (repeat_kv(&k, nh / kvh)?, repeat_kv(&v, nh / kvh)?);
        let products = self.cfg.precision;
        let scores = products.product(&q, &k, |q, k| be.matmul_bt(q, k))?;
        let scores = be.scale(&scores, 1.0 / (dh as f32).sqrt())?;
        let scores = match mask {
            Some(m) => be.add(&scores, m)?,
            None => scores,
        };
        let att = be.softmax_last_dim(&scores)?;
        let ctx = products.product(&att, &v, |att, v| be.matmul(att, v))?;
        Ok(ctx.transpose(1, 2)?.contiguous()?.reshape((b, t, nh * dh))?)
    }

    /// Mean next-token cross-entropy of `logits [B, T, V]` against `targets [B, T]`, in nats.
    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (b, t, v) = logits.dims3()?;
        self.cfg.backend.cross_entropy(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?)
    }
}

/// Key or value heads `[B, kv, T, dh]` repeated for grouped-query attention: `[B, kv · n, T, dh]`, where
/// query head `i` reads key/value head `i / n`.
fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, dh) = x.dims4()?;
    Ok(x.unsqueeze(2)?.broadcast_as((b, kv, n, t, dh))?.reshape((b, kv * n, t, dh))?)
}

/// `[B, H, T, past + T]`: query `i` (position `past + i`) sees key `j` (0) when `j ≤ past + i`, and
/// not (−inf) otherwise.
fn causal_mask(b: usize, h: usize, past: usize, t: usize, device: &Device) -> Result<Tensor> {
    let keys = past + t;
    let m: Vec<f32> = (0..t * keys).map(|i| if i % keys > past + i / keys { f32::NEG_INFINITY } else { 0.0 }).collect();
    Ok(Tensor::from_vec(m, (1, 1, t, keys), device)?.broadcast_as((b, h, t, keys))?.contiguous()?)
}

/// The whole model as a chain of stages.
#[derive(Debug, Clone)]
pub struct Llama {
    stages: Vec<Stage>,
}

impl Llama {
    /// The model split into `n_stages` stages (1 = unsplit).
    pub fn new(cfg: &ModelConfig, n_stages: usize, device: &Device) -> Result<Self> {
        let stages = split_layers(cfg.n_layers, n_stages)?
            .into_iter()
            .map(|spec| Stage::new(cfg, spec, device))
            .collect::<Result<_>>()?;
        Ok(Self { stages })
    }

    /// The model split into `n_stages` stages with the given weights (see [`Stage::from_weights`]).
    pub fn from_weights(
        cfg: &ModelConfig,
        n_stages: usize,
        weights: &BTreeMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let stages = split_layers(cfg.n_layers, n_stages)?
            .into_iter()
            .map(|spec| Stage::from_weights(cfg, spec, weights, device))
            .collect::<Result<_>>()?;
        Ok(Self { stages })
    }

    /// The stages, first to last.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Logits `[B, T, vocab]` for tokens `[B, T]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mut x = None;
        for stage in &self.stages {
            x = Some(match &x {
                None => stage.forward(StageInput::Tokens(ids))?,
                Some(h) => stage.forward(StageInput::Hidden(h))?,
            });
        }
        x.ok_or_else(|| Error::Input("model has no stages".into()))
    }

    /// Logits `[B, T, vocab]` for the new tokens `[B, T]` at positions `cache.len()..`, reading and
    /// extending `cache` (see [`Stage::forward_cached`]).
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.chain(ids, cache, false)
    }

    /// Logits `[B, vocab]` of the token after the new tokens `ids [B, T]`: one decoding step with
    /// `cache` (the prefill of a prompt when the cache is empty).
    pub fn next_token_logits(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Ok(self.chain(ids, cache, true)?.squeeze(1)?)
    }

    fn chain(&self, ids: &Tensor, cache: &mut KvCache, last_only: bool) -> Result<Tensor> {
        let mut x = None;
        for stage in &self.stages {
            x = Some(match &x {
                None => stage.forward_cached(StageInput::Tokens(ids), cache, last_only)?,
                Some(h) => stage.forward_cached(StageInput::Hidden(h), cache, last_only)?,
            });
        }
        x.ok_or_else(|| Error::Input("model has no stages".into()))
    }

    /// Mean next-token loss of `ids` against `targets`.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.forward(ids)?;
        let last = self.stages.last().ok_or_else(|| Error::Input("model has no stages".into()))?;
        last.loss(&logits, targets)
    }

    /// Every parameter of every stage, by name.
    pub fn params(&self) -> Params {
        let mut all = Params::default();
        for s in &self.stages {
            for (n, v) in s.params.iter() {
                all.vars.insert(n.clone(), v.clone());
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_splits_are_contiguous_and_balanced() -> Result<()> {
        let specs = split_layers(5, 3)?;
        assert_eq!(specs.iter().map(|s| s.layers.clone()).collect::<Vec<_>>(), vec![0..2, 2..4, 4..5]);
        assert!(specs[0].first && !specs[0].last && specs[2].last);
        assert!(split_layers(2, 3).is_err());
        let edged = split_layers_with_edges(4, 6)?;
        assert_eq!(edged.len(), 6);
        assert!(edged[0].first && edged[0].layers.is_empty() && edged[5].last && edged[5].layers.is_empty());
        assert_eq!(edged[1..5].iter().map(|s| s.layers.clone()).collect::<Vec<_>>(), vec![0..1, 1..2, 2..3, 3..4]);
        assert!(split_layers_with_edges(2, 5).is_err() && split_layers_with_edges(4, 2).is_err());
        assert_eq!(edged[3].local_name("layers.2.wq"), "blocks.0.wq");
        assert_eq!(edged[3].global_name("blocks.0.wq"), "layers.2.wq");
        assert_eq!(edged[0].local_name("embed"), "embed");
        assert!(split_layers(2, 0).is_err());
        Ok(())
    }

    #[test]
    fn forward_flops_from_the_shapes_count_every_matrix_of_the_stage() -> Result<()> {
        let cfg = ModelConfig { n_layers: 4, ..ModelConfig::preset("tiny")? };
        for spec in split_layers_with_edges(4, 4)?.into_iter().chain(split_layers(4, 3)?) {
            let stage = Stage::new(&cfg, spec.clone(), &Device::Cpu)?;
            // The matrices the stage multiplies by: every rank-2 weight but the embedding table.
            let matrices: usize = stage
                .params()
                .iter()
                .filter(|(n, v)| v.rank() == 2 && *n != "embed")
                .map(|(_, v)| v.elem_count())
                .sum();
            let (b, t) = (3, 16);
            let attention = 4.0 * (spec.layers.len() * t * cfg.d_model * b * t) as f64;
            let want = 2.0 * (matrices * b * t) as f64 + attention;
            assert_eq!(spec.forward_flops(&cfg, b, t), want, "{spec:?}");
            // Decoding one token after t − 1 cached ones: a t-th of the matrix products, and attention
            // of one query over t keys.
            let one = 2.0 * (matrices * b) as f64 + 4.0 * (spec.layers.len() * t * cfg.d_model * b) as f64;
            assert_eq!(spec.cached_forward_flops(&cfg, b, t - 1, 1), one, "{spec:?}");
        }
        Ok(())
    }

    #[test]
    fn init_is_deterministic_and_normal() -> Result<()> {
        let cfg = ModelConfig::default();
        let a = init_matrix(&cfg, "x", 64, 64, 1.0, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let b = init_matrix(&cfg, "x", 64, 64, 1.0, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let c = init_matrix(&cfg, "y", 64, 64, 1.0, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.1, "mean {mean} var {var}");
        Ok(())
    }
}
