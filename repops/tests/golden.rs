//! Golden test: 20 AdamW training steps of a tiny transformer LM, every op on repops, from fixed data and
//! a fixed initialisation. The hash of the final weights is committed below: any machine, thread count
//! or SIMD level (and, with the `cuda` feature, the GPU) must reproduce it bit for bit.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use repops::simd;
use repops::tensor as ops;
use repops::{AdamW, Result};

/// blake3 over the final weights (see `final_weights_hash`).
const GOLDEN: &str = "9c8bc0c86741d97f731cfd1043dec9b39457af0f611e29202f5d7a5a0a8a5d38";

const V: usize = 32;
const D: usize = 32;
const H: usize = 2;
const DH: usize = D / H;
const T: usize = 16;
const B: usize = 4;
const F: usize = 64;

struct Model {
    emb: Var,
    norm1: Var,
    wq: Var,
    wk: Var,
    wv: Var,
    wo: Var,
    norm2: Var,
    w1: Var,
    w3: Var,
    w2: Var,
    norm_f: Var,
    head: Var,
}

impl Model {
    fn new(dev: &Device) -> Result<Self> {
        let mut seed = 1;
        let mut mat = |rows: usize, cols: usize| -> Result<Var> {
            seed += 1;
            let scale = 1.0 / (cols as f32).sqrt();
            let v: Vec<f32> = common::data(rows * cols, seed).into_iter().map(|x| x * scale).collect();
            Ok(Var::from_tensor(&Tensor::from_vec(v, (rows, cols), dev)?)?)
        };
        let ones = |n: usize| -> Result<Var> { Ok(Var::from_tensor(&Tensor::ones(n, DType::F32, dev)?)?) };
        Ok(Self {
            emb: mat(V, D)?,
            norm1: ones(D)?,
            wq: mat(D, D)?,
            wk: mat(D, D)?,
            wv: mat(D, D)?,
            wo: mat(D, D)?,
            norm2: ones(D)?,
            w1: mat(F, D)?,
            w3: mat(F, D)?,
            w2: mat(D, F)?,
            norm_f: ones(D)?,
            head: mat(V, D)?,
        })
    }

    fn vars(&self) -> Vec<&Var> {
        vec![
            &self.emb,
            &self.norm1,
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.norm2,
            &self.w1,
            &self.w3,
            &self.w2,
            &self.norm_f,
            &self.head,
        ]
    }

    fn heads(x: &Tensor) -> Result<Tensor> {
        Ok(x.reshape((B, T, H, DH))?.transpose(1, 2)?.contiguous()?)
    }

    fn loss(&self, ids: &Tensor, targets: &Tensor, cos: &Tensor, sin: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let x = ops::embedding(self.emb.as_tensor(), ids)?; // [B, T, D]
        let h = ops::rms_norm(&x, self.norm1.as_tensor(), 1e-5)?;
        let q = ops::rope(&Self::heads(&ops::linear(&h, self.wq.as_tensor())?)?, cos, sin)?;
        let k = ops::rope(&Self::heads(&ops::linear(&h, self.wk.as_tensor())?)?, cos, sin)?;
        let v = Self::heads(&ops::linear(&h, self.wv.as_tensor())?)?;
        let scores = ops::scale(&ops::matmul(&q, &ops::transpose(&k)?)?, 1.0 / (DH as f32).sqrt())?;
        let att = ops::softmax_last_dim(&ops::add(&scores, mask)?)?;
        let ctx = ops::matmul(&att, &v)?.transpose(1, 2)?.contiguous()?.reshape((B, T, D))?;
        let x = ops::add(&x, &ops::linear(&ctx, self.wo.as_tensor())?)?;
        let h = ops::rms_norm(&x, self.norm2.as_tensor(), 1e-5)?;
        let gate = ops::swiglu(&ops::linear(&h, self.w1.as_tensor())?, &ops::linear(&h, self.w3.as_tensor())?)?;
        let x = ops::add(&x, &ops::linear(&gate, self.w2.as_tensor())?)?;
        let logits = ops::linear(&ops::rms_norm(&x, self.norm_f.as_tensor(), 1e-5)?, self.head.as_tensor())?;
        ops::cross_entropy(&logits.reshape((B * T, V))?, &targets.reshape(B * T)?)
    }
}

/// A deterministic token stream with structure to learn: a noisy affine recurrence.
fn batch(step: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let mut tokens = Vec::with_capacity(B * (T + 1));
    for b in 0..B {
        let mut t = (step * 7 + b * 3) % V;
        for i in 0..=T {
            tokens.push(t as u32);
            t = (t * 5 + 3 + (i * b) % 2) % V;
        }
    }
    let ids: Vec<u32> = (0..B).flat_map(|b| tokens[b * (T + 1)..b * (T + 1) + T].to_vec()).collect();
    let tgt: Vec<u32> = (0..B).flat_map(|b| tokens[b * (T + 1) + 1..(b + 1) * (T + 1)].to_vec()).collect();
    Ok((Tensor::from_vec(ids, (B, T), dev)?, Tensor::from_vec(tgt, (B, T), dev)?))
}

/// Trains 20 steps and returns (losses, hash of the final weights).
fn train() -> Result<(Vec<f32>, String)> {
    let dev = Device::Cpu;
    let model = Model::new(&dev)?;
    let (cos, sin) = ops::rope_tables(T, DH, 10_000.0, &dev)?;
    let mask: Vec<f32> = (0..T * T).map(|i| if i % T > i / T { f32::NEG_INFINITY } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, (1, 1, T, T), &dev)?.broadcast_as((B, H, T, T))?.contiguous()?;
    let h = AdamW { lr: 3e-3, weight_decay: 0.01, ..AdamW::default() };
    let mut moments: Vec<(Tensor, Tensor)> =
        model.vars().iter().map(|v| Ok((v.zeros_like()?, v.zeros_like()?))).collect::<Result<_>>()?;
    let mut losses = Vec::new();
    for step in 1..=20u64 {
        let (ids, targets) = batch(step as usize, &dev)?;
        let loss = model.loss(&ids, &targets, &cos, &sin, &mask)?;
        losses.push(loss.to_vec0::<f32>()?);
        let grads = loss.backward()?;
        for (var, (m, v)) in model.vars().into_iter().zip(moments.iter_mut()) {
            let g = grads
                .get(var)
                .ok_or_else(|| repops::Error::Unsupported { op: "golden", what: "missing gradient".into() })?;
            let (p, m2, v2) = ops::adamw_step(var.as_tensor(), g, m, v, step, h)?;
            var.set(&p)?;
            *m = m2;
            *v = v2;
        }
    }
    let mut hasher = blake3::Hasher::new();
    for var in model.vars() {
        for x in var.flatten_all()?.to_vec1::<f32>()? {
            hasher.update(&x.to_le_bytes());
        }
    }
    Ok((losses, hasher.finalize().to_hex().to_string()))
}

#[test]
fn twenty_steps_reproduce_the_golden_weights_on_every_thread_count_and_simd_level() -> Result<()> {
    let (losses, reference) = common::on_threads(2, train)?;
    println!("losses: {losses:?}\nfinal weights hash: {reference}");
    assert!(losses[19] < losses[0] * 0.8, "the model did not learn: {losses:?}");
    for threads in [1, 3, 8] {
        let (_, hash) = common::on_threads(threads, train)?;
        assert_eq!(hash, reference, "{threads} threads");
    }
    for level in simd::available() {
        simd::force(Some(level))?;
        let (_, hash) = common::on_threads(2, train)?;
        simd::force(None)?;
        assert_eq!(hash, reference, "{level:?}");
    }
    assert_eq!(
        reference, GOLDEN,
        "the final weights changed: update GOLDEN only if the op definitions changed on purpose"
    );
    Ok(())
}
