//! The model: stage splits compute exactly what the unsplit model computes; the two backends agree;
//! training on the synthetic language approaches its entropy floor; checkpoints round-trip; and the
//! repops backend reproduces a committed golden run bit for bit.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use models::data::{SyntheticConfig, SyntheticLanguage, sample_batch};
use models::{AdamW, Backend, KvCache, Llama, ModelConfig, OptimConfig, Result, checkpoint};

fn cfg(backend: Backend) -> ModelConfig {
    ModelConfig { n_layers: 4, d_model: 32, n_heads: 2, d_ff: 64, max_seq: 32, backend, ..ModelConfig::default() }
}

fn small_lang() -> Result<SyntheticLanguage> {
    SyntheticLanguage::new(&SyntheticConfig { train_tokens: 1 << 16, val_tokens: 4096, ..SyntheticConfig::default() })
}

fn bits(t: &Tensor) -> Result<Vec<u32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f32::to_bits).collect())
}

#[test]
fn stage_split_model_equals_the_unsplit_model_bit_for_bit() -> Result<()> {
    let dev = Device::Cpu;
    let corpus = small_lang()?.corpus();
    let (ids, targets) = sample_batch(&corpus.train, 3, 24, 5, 0, 0, &dev)?;
    for backend in [Backend::Native, Backend::RepOps] {
        let whole = Llama::new(&cfg(backend), 1, &dev)?;
        let reference = bits(&whole.forward(&ids)?)?;
        for stages in [2, 3, 4] {
            let split = Llama::new(&cfg(backend), stages, &dev)?;
            assert_eq!(split.stages().len(), stages);
            assert_eq!(bits(&split.forward(&ids)?)?, reference, "{backend} with {stages} stages");
        }
        // Gradients too: the same parameters get the same gradients.
        let split = Llama::new(&cfg(backend), 2, &dev)?;
        let gw = whole.params().grads(&whole.loss(&ids, &targets)?.backward()?);
        let gs = split.params().grads(&split.loss(&ids, &targets)?.backward()?);
        assert_eq!(gw.len(), gs.len());
        for (name, g) in &gw {
            assert_eq!(bits(g)?, bits(&gs[name])?, "{backend} gradient of {name}");
        }
    }
    Ok(())
}

/// The logits of positions `from..` of the full forward pass over `ids`, row by row.
fn full_logits(model: &Llama, ids: &Tensor, from: usize) -> Result<Tensor> {
    let t = ids.dim(1)?;
    Ok(model.forward(ids)?.narrow(1, from, t - from)?)
}

#[test]
fn cached_decoding_gives_the_logits_of_the_full_forward_pass() -> Result<()> {
    let dev = Device::Cpu;
    let corpus = small_lang()?.corpus();
    let (prompts, _) = sample_batch(&corpus.train, 2, 6, 3, 0, 0, &dev)?;
    let (more, _) = sample_batch(&corpus.train, 3, 5, 4, 0, 0, &dev)?;
    for backend in [Backend::Native, Backend::RepOps] {
        for stages in [1, 3] {
            let model = Llama::new(&cfg(backend), stages, &dev)?;
            // Prefill two prompts, then continue three rows: prompt 1, prompt 1 again, prompt 0.
            let mut cache = KvCache::new();
            let prefill = model.forward_cached(&prompts, &mut cache)?;
            assert_eq!((cache.len(), cache.rows()), (6, 2));
            let rows = [1, 1, 0];
            cache.select_rows(&rows)?;
            let mut cached = vec![prefill.index_select(&Tensor::new(&[1u32, 1, 0], &dev)?, 0)?];
            for step in 0..5 {
                let next = more.narrow(1, step, 1)?;
                let logits = if step == 4 {
                    model.next_token_logits(&next, &mut cache)?.unsqueeze(1)?
                } else {
                    model.forward_cached(&next, &mut cache)?
                };
                cached.push(logits);
            }
            assert_eq!(cache.len(), 11);
            let cached = Tensor::cat(&cached, 1)?;
            let seqs = Tensor::cat(&[prompts.index_select(&Tensor::new(&[1u32, 1, 0], &dev)?, 0)?, more.clone()], 1)?;
            let full = full_logits(&model, &seqs, 0)?;
            // Not bit for bit, on either backend: a softmax row's sum groups its elements by the row's
            // length, and a causal row of the full pass is longer (its masked tail) than the cached one.
            let diff = (cached - full)?.abs()?.flatten_all()?.max(0)?.to_vec0::<f32>()?;
            assert!(diff < 1e-5, "{backend}, {stages} stages: cached logits differ by {diff}");
            // Dropping a finished row keeps the others' caches.
            cache.select_rows(&[2])?;
            assert_eq!(cache.rows(), 1);
            assert!(cache.select_rows(&[1]).is_err(), "row 1 of a one-row cache");
            // Past the window, or a batch that is not the cache's: errors, not panics.
            let long = Tensor::zeros((1, 32), candle_core::DType::U32, &dev)?;
            assert!(model.forward_cached(&long, &mut cache).is_err());
            assert!(model.forward_cached(&more.narrow(1, 0, 1)?, &mut cache).is_err());
        }
    }
    Ok(())
}

/// The native backend's fused CPU ops (linear layers, attention with its rotary positions, norms, the
/// gate, the loss) against repops' composed ones, on every attention variant the model has.
#[test]
fn native_and_repops_backends_agree_within_tolerance() -> Result<()> {
    let dev = Device::Cpu;
    let corpus = small_lang()?.corpus();
    let (ids, targets) = sample_batch(&corpus.train, 2, 16, 1, 0, 0, &dev)?;
    let variants = [
        cfg(Backend::Native),
        // Grouped-query heads (two query heads per key/value head), Qwen3's head norms, Qwen2's biases.
        ModelConfig { n_heads: 4, kv_heads: Some(2), qk_norm: true, qkv_bias: true, ..cfg(Backend::Native) },
        // One key/value head for all, a head width apart from d_model / heads.
        ModelConfig { n_heads: 4, kv_heads: Some(1), head_width: Some(12), ..cfg(Backend::Native) },
    ];
    for variant in variants {
        let native = Llama::new(&variant, 2, &dev)?;
        let repops = Llama::new(&ModelConfig { backend: Backend::RepOps, ..variant.clone() }, 2, &dev)?;
        let (ln, lr) = (native.forward(&ids)?, repops.forward(&ids)?);
        let diff = (ln - lr)?.abs()?.flatten_all()?.max(0)?.to_vec0::<f32>()?;
        assert!(diff < 1e-4, "{variant:?}: logits differ by {diff}");
        let gn = native.params().grads(&native.loss(&ids, &targets)?.backward()?);
        let gr = repops.params().grads(&repops.loss(&ids, &targets)?.backward()?);
        assert_eq!(gn.len(), native.params().len(), "every parameter has a gradient");
        for (name, g) in &gn {
            let scale = g.abs()?.flatten_all()?.max(0)?.to_vec0::<f32>()?.max(1e-6);
            let d = (g - &gr[name])?.abs()?.flatten_all()?.max(0)?.to_vec0::<f32>()?;
            assert!(d <= 1e-3 * scale + 1e-6, "{variant:?} {name}: gradients differ by {d} (scale {scale})");
        }
    }
    Ok(())
}

/// The native backend's AdamW (in place on the CPU, with the fused gradient norm) and repops' follow the same
/// update, clipping included, and a saved state stays as it was while training goes on.
#[test]
fn native_adamw_follows_repops_update_and_leaves_saved_states_alone() -> Result<()> {
    let dev = Device::Cpu;
    let corpus = small_lang()?.corpus();
    let optim = OptimConfig { grad_clip: 0.05, warmup_steps: 2, ..OptimConfig::default() };
    let native = Llama::new(&cfg(Backend::Native), 1, &dev)?;
    let repops = Llama::new(&cfg(Backend::RepOps), 1, &dev)?;
    let (mut on, mut or) = (AdamW::new(optim.clone(), Backend::Native)?, AdamW::new(optim, Backend::RepOps)?);
    let mut saved = None;
    for step in 0..4 {
        let (ids, targets) = sample_batch(&corpus.train, 2, 16, 1, step, 0, &dev)?;
        // The same gradients for both: the repops model's.
        let grads = repops.params().grads(&repops.loss(&ids, &targets)?.backward()?);
        let (sn, sr) = (on.step(&native.params(), &grads)?, or.step(&repops.params(), &grads)?);
        assert!(sn.grad_norm > 0.05, "the test must clip");
        assert!((sn.grad_norm - sr.grad_norm).abs() <= 1e-5 * sr.grad_norm, "{sn:?} vs {sr:?}");
        if step == 1 {
            saved = Some(on.state().1);
        }
    }
    for (name, var) in native.params().iter() {
        let d = (var.as_tensor() - repops.params().get(name)?)?.abs()?.flatten_all()?.max(0)?.to_vec0::<f32>()?;
        assert!(d < 1e-5, "{name}: parameters differ by {d}");
    }
    let saved = saved.ok_or_else(|| models::Error::Input("no state saved".into()))?;
    let now = on.state().1;
    let moved = saved.iter().filter(|(k, m)| bits(m).ok() != bits(&now[*k]).ok()).count();
    assert_eq!(moved, saved.len(), "every saved moment keeps its step-2 value while the live ones move on");
    Ok(())
}

/// A clone of the optimizer is a checkpoint: the native backend updates moments in place, yet steps
/// taken after the clone leave it as it was, so going back to it and redoing the steps gives the same bits.
#[test]
fn a_cloned_optimizer_is_a_checkpoint_that_later_steps_leave_alone() -> Result<()> {
    let dev = Device::Cpu;
    let corpus = small_lang()?.corpus();
    let model = Llama::new(&cfg(Backend::Native), 1, &dev)?;
    let mut optim = AdamW::new(OptimConfig::default(), Backend::Native)?;
    let train_step = |optim: &mut AdamW, step: u64| -> Result<()> {
        let (ids, targets) = sample_batch(&corpus.train, 2, 16, 1, step, 0, &dev)?;
        optim.step(&model.params(), &model.params().grads(&model.loss(&ids, &targets)?.backward()?))?;
        Ok(())
    };
    train_step(&mut optim, 0)?;
    let (weights, saved) = (model.params().snapshot(), optim.clone());
    let redo = |mut optim: AdamW| -> Result<BTreeMap<String, Vec<u32>>> {
        for step in 1..4 {
            train_step(&mut optim, step)?;
        }
        model.params().snapshot().iter().map(|(n, t)| Ok((n.clone(), bits(t)?))).collect()
    };
    let first = redo(optim)?;
    for (name, t) in &weights {
        model.params().set(name, t)?;
    }
    let again = redo(saved)?;
    assert_eq!(first, again, "the steps redone from the clone end elsewhere");
    Ok(())
}

/// bf16 mixed precision: products on bf16 copies, everything kept in f32. The logits and gradients stay
/// near f32's (bf16 keeps 8 significant bits), training follows f32's, the weights and their gradients
/// stay f32, cached decoding (the composed attention, whose products are bf16 too) gives the full pass's
/// logits, and repops refuses it.
#[test]
fn bf16_mixed_precision_stays_near_f32_and_keeps_f32_state() -> Result<()> {
    use candle_core::DType;
    use models::Precision;
    let dev = Device::Cpu;
    let corpus = small_lang()?.corpus();
    let mixed = ModelConfig { precision: Precision::Bf16, ..cfg(Backend::Native) };
    let (full, half) = (Llama::new(&cfg(Backend::Native), 1, &dev)?, Llama::new(&mixed, 1, &dev)?);
    let (ids, targets) = sample_batch(&corpus.train, 2, 16, 7, 0, 0, &dev)?;
    let (a, b) = (full.forward(&ids)?, half.forward(&ids)?);
    assert_eq!(b.dtype(), DType::F32);
    let scale = a.abs()?.flatten_all()?.max(0)?.to_vec0::<f32>()?;
    let gap = (&a - &b)?.abs()?.flatten_all()?.max(0)?.to_vec0::<f32>()?;
    assert!(gap > 0.0 && gap < 0.05 * scale, "bf16 logits {gap} away at a scale of {scale}");
    let gf = full.params().grads(&full.loss(&ids, &targets)?.backward()?);
    let gh = half.params().grads(&half.loss(&ids, &targets)?.backward()?);
    for (name, g) in &gh {
        assert_eq!(g.dtype(), DType::F32, "{name}'s gradient");
        let (x, y) = (g.flatten_all()?.to_vec1::<f32>()?, gf[name].flatten_all()?.to_vec1::<f32>()?);
        let dot: f32 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
        let norm = |v: &[f32]| v.iter().map(|p| p * p).sum::<f32>().sqrt();
        let cosine = dot / (norm(&x) * norm(&y)).max(f32::MIN_POSITIVE);
        assert!(cosine > 0.99, "{name}: gradients at a cosine of {cosine}");
    }
    // Cached decoding, one position at a time, against the full pass (fused attention on the CPU).
    let mut cache = KvCache::new();
    for i in 0..4 {
        let step = half.forward_cached(&ids.narrow(1, i, 1)?, &mut cache)?;
        let want = half.forward(&ids.narrow(1, 0, i + 1)?)?.narrow(1, i, 1)?;
        let gap = (&step - &want)?.abs()?.flatten_all()?.max(0)?.to_vec0::<f32>()?;
        assert!(gap < 0.05 * scale, "cached position {i}: {gap} away");
    }
    // Training: the same steps on both; the losses follow each other.
    let optim = OptimConfig { lr: 1e-2, min_lr: 1e-3, warmup_steps: 5, total_steps: 40, ..OptimConfig::default() };
    let mut losses = Vec::new();
    for model in [&full, &half] {
        let mut opt = AdamW::new(optim.clone(), Backend::Native)?;
        let mut last = 0.0;
        for step in 0..40 {
            let (ids, targets) = sample_batch(&corpus.train, 8, 32, 3, step, 0, &dev)?;
            let loss = model.loss(&ids, &targets)?;
            last = loss.to_vec0::<f32>()?;
            opt.step(&model.params(), &model.params().grads(&loss.backward()?))?;
        }
        assert!(model.params().iter().all(|(_, v)| v.dtype() == DType::F32), "master weights stay f32");
        losses.push(last);
    }
    println!(
        "bf16 logits {gap:.4} from f32's (scale {scale:.3}); last training loss f32 {:.4}, bf16 {:.4}",
        losses[0], losses[1]
    );
    assert!(losses[1] < 4.5, "bf16 training got to {}", losses[1]);
    assert!((losses[0] - losses[1]).abs() < 0.05 * losses[0], "f32 ends at {}, bf16 at {}", losses[0], losses[1]);
    let refused = ModelConfig { precision: Precision::Bf16, ..cfg(Backend::RepOps) }.validate().unwrap_err();
    assert!(refused.to_string().contains("model.precision"), "{refused}");
    Ok(())
}

/// Trains `steps` AdamW steps; returns (first loss, last validation loss, final weights).
fn train(backend: Backend, steps: u64, seed: u64) -> Result<(f32, f32, BTreeMap<String, Tensor>)> {
    train_on(&Device::Cpu, backend, steps, seed)
}

fn train_on(dev: &Device, backend: Backend, steps: u64, seed: u64) -> Result<(f32, f32, BTreeMap<String, Tensor>)> {
    let dev = dev.clone();
    let lang = small_lang()?;
    let corpus = lang.corpus();
    let mc =
        ModelConfig { n_layers: 2, d_model: 32, n_heads: 2, d_ff: 64, max_seq: 32, backend, ..ModelConfig::default() };
    let model = Llama::new(&mc, 1, &dev)?;
    let params = model.params();
    let mut opt = AdamW::new(
        OptimConfig { lr: 1e-2, min_lr: 1e-3, warmup_steps: 5, total_steps: steps, ..OptimConfig::default() },
        backend,
    )?;
    let mut first = None;
    for step in 0..steps {
        let (ids, targets) = sample_batch(&corpus.train, 8, 32, seed, step, 0, &dev)?;
        let loss = model.loss(&ids, &targets)?;
        first.get_or_insert(loss.to_vec0::<f32>()?);
        opt.step(&params, &params.grads(&loss.backward()?))?;
    }
    let (ids, targets) = sample_batch(&corpus.val, 16, 32, 99, 0, 0, &dev)?;
    let val = model.loss(&ids, &targets)?.to_vec0::<f32>()?;
    Ok((first.unwrap_or(f32::NAN), val, params.snapshot()))
}

#[test]
fn training_approaches_the_entropy_floor() -> Result<()> {
    let floor = small_lang()?.entropy_rate() as f32;
    let (first, val, _) = train(Backend::Native, 400, 3)?;
    println!("loss {first:.3} -> validation {val:.3}; floor {floor:.3}");
    assert!(first > 5.0, "untrained loss {first} should be near ln 256");
    assert!(val < 0.5 * first && val > floor, "validation {val} vs first {first} and floor {floor}");
    assert!(val - floor < 1.5, "gap to the floor {} is too large", val - floor);
    Ok(())
}

/// blake3 of the final weights after 20 repops steps (see `golden_hash`).
const GOLDEN: &str = "d93e3afd41a57a1f4e536559d5989e9b42d901e19d64f9b24ee5205ea048a34a";

fn golden_hash() -> Result<String> {
    golden_hash_on(&Device::Cpu)
}

fn golden_hash_on(dev: &Device) -> Result<String> {
    let (_, _, weights) = train_on(dev, Backend::RepOps, 20, 11)?;
    let mut h = repops_blake3::Hasher::new();
    for (name, t) in weights {
        h.update(name.as_bytes());
        for x in t.flatten_all()?.to_vec1::<f32>()? {
            h.update(&x.to_le_bytes());
        }
    }
    Ok(h.finalize().to_hex().to_string())
}

mod repops_blake3 {
    pub(crate) use blake3::Hasher;
}

#[test]
fn repops_training_reproduces_the_golden_weights() -> Result<()> {
    let reference = golden_hash()?;
    println!("golden: {reference}");
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| models::Error::Input(e.to_string()))?;
        assert_eq!(pool.install(golden_hash)?, reference, "{threads} threads");
    }
    assert_eq!(reference, GOLDEN, "the repops training run changed: update GOLDEN only on purpose");
    Ok(())
}

/// The same 20 repops steps on the GPU must give the CPU's golden weights, bit for bit.
#[cfg(feature = "cuda")]
#[test]
fn repops_training_on_the_gpu_reproduces_the_golden_weights() -> Result<()> {
    let dev = match repops::cuda_device(0) {
        Ok(d) => d,
        Err(e) => {
            println!("SKIPPED (no GPU): {e}");
            return Ok(());
        }
    };
    assert_eq!(golden_hash_on(&dev)?, GOLDEN);
    Ok(())
}

#[test]
fn checkpoints_round_trip_and_refuse_foreign_files() -> Result<()> {
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().map_err(|e| models::Error::Input(e.to_string()))?;
    let path = dir.path().join("stage0.safetensors");
    let model = Llama::new(&cfg(Backend::Native), 1, &dev)?;
    let params = model.params();
    let mut opt = AdamW::new(OptimConfig::default(), Backend::Native)?;
    let corpus = small_lang()?.corpus();
    let (ids, targets) = sample_batch(&corpus.train, 2, 16, 0, 0, 0, &dev)?;
    opt.step(&params, &params.grads(&model.loss(&ids, &targets)?.backward()?))?;
    let saved = params.snapshot();
    checkpoint::save(&path, &params, &opt)?;
    opt.step(&params, &params.grads(&model.loss(&ids, &targets)?.backward()?))?;
    assert_ne!(bits(&params.snapshot()["embed"])?, bits(&saved["embed"])?);
    let mut restored = AdamW::new(OptimConfig::default(), Backend::Native)?;
    checkpoint::load(&path, &params, &mut restored, &dev)?;
    assert_eq!(restored.steps(), 1);
    for (name, t) in &saved {
        assert_eq!(bits(&params.snapshot()[name])?, bits(t)?, "{name}");
    }
    // A truncated file, a missing file and another model's checkpoint are errors; nothing changes.
    let bytes = std::fs::read(&path).map_err(|e| models::Error::Input(e.to_string()))?;
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).map_err(|e| models::Error::Input(e.to_string()))?;
    assert!(checkpoint::load(&cut, &params, &mut restored, &dev).unwrap_err().to_string().contains("cut.safetensors"));
    assert!(checkpoint::load(dir.path().join("nope"), &params, &mut restored, &dev).is_err());
    let other = Llama::new(&ModelConfig { d_model: 64, ..cfg(Backend::Native) }, 1, &dev)?;
    let err = checkpoint::load(&path, &other.params(), &mut restored, &dev).unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    Ok(())
}

#[test]
fn bad_inputs_are_errors() -> Result<()> {
    let dev = Device::Cpu;
    let model = Llama::new(&cfg(Backend::RepOps), 2, &dev)?;
    let too_long = Tensor::zeros((1, 64), candle_core::DType::U32, &dev)?;
    assert!(model.forward(&too_long).is_err());
    let bad_token = Tensor::from_vec(vec![300u32; 4], (1, 4), &dev)?;
    assert!(model.forward(&bad_token).is_err());
    assert!(Llama::new(&cfg(Backend::Native), 5, &dev).is_err());
    let tied = ModelConfig { tie_embeddings: true, ..cfg(Backend::Native) };
    assert!(Llama::new(&tied, 2, &dev).is_err());
    assert!(Llama::new(&tied, 1, &dev).is_ok());
    Ok(())
}
