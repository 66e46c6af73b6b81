//! Tiny random checkpoints of each architecture, written in Hugging Face layout in a temporary folder
//! (config, safetensors, a tokenizer made with the `tokenizers` crate): they load, compute the logits
//! candle-transformers' implementations compute, decode alike with and without the cache, train,
//! save and reload bit for bit; malformed ones give errors that name the file and the field.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use models::{AdamW, Backend, KvCache, Llama, OptimConfig};
use pretrained::{Architecture, Checkpoint};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The config of a tiny checkpoint of `arch` (as [`pretrained::tiny::write`] writes it).
fn config(dir: &Path) -> Result<Value, Box<dyn std::error::Error>> {
    Ok(serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?)
}

/// Writes a tiny checkpoint of `arch` into `dir`; returns its weights by Hugging Face name.
fn write_checkpoint(dir: &Path, arch: Architecture) -> Result<HashMap<String, Tensor>, Box<dyn std::error::Error>> {
    pretrained::tiny::write(dir, arch, 7)?;
    Ok(candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?)
}

/// Logits of the last position of `ids` by candle-transformers' implementation of `arch`.
fn reference_logits(
    arch: Architecture,
    dir: &Path,
    w: &HashMap<String, Tensor>,
    ids: &Tensor,
) -> Result<Tensor, Box<dyn std::error::Error>> {
    use candle_transformers::models::{llama, qwen2, qwen3};
    let text = std::fs::read_to_string(dir.join("config.json"))?;
    let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu);
    Ok(match arch {
        Architecture::Llama => {
            let cfg = serde_json::from_str::<llama::LlamaConfig>(&text)?.into_config(false);
            let model = llama::Llama::load(vb, &cfg)?;
            let mut cache = llama::Cache::new(false, DType::F32, &cfg, &Device::Cpu)?;
            model.forward(ids, 0, &mut cache)?
        }
        Architecture::Qwen2 => {
            let cfg: qwen2::Config = serde_json::from_str(&text)?;
            qwen2::ModelForCausalLM::new(&cfg, vb)?.forward(ids, 0)?.squeeze(1)?
        }
        Architecture::Qwen3 => {
            let cfg: qwen3::Config = serde_json::from_str(&text)?;
            qwen3::ModelForCausalLM::new(&cfg, vb)?.forward(ids, 0)?.squeeze(1)?
        }
    })
}

fn max_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_vec0::<f32>()
}

fn bits(t: &Tensor) -> candle_core::Result<Vec<u32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f32::to_bits).collect())
}

const ARCHS: [Architecture; 3] = [Architecture::Llama, Architecture::Qwen2, Architecture::Qwen3];

#[test]
fn each_architecture_computes_the_logits_of_candle_transformers() -> TestResult {
    for arch in ARCHS {
        let dir = tempfile::tempdir()?;
        let w = write_checkpoint(dir.path(), arch)?;
        let ckpt = Checkpoint::open(&dir.path().display().to_string())?;
        assert_eq!(ckpt.config().architecture, arch);
        let tokenizer = ckpt.tokenizer()?;
        let ids = tokenizer.encode("37-52=<|endoftext|>", false)?;
        assert_eq!(ids.len(), 7, "one token a character, and the end token");
        assert_eq!(ids[6], 2);
        assert_eq!((tokenizer.eos(), tokenizer.decode(&ids[..6])?.as_str()), (&[2u32][..], "37-52="));
        for backend in [Backend::Native, Backend::RepOps] {
            let model = ckpt.load(&ckpt.model_config(backend, None), 1, &Device::Cpu)?;
            for len in [1, 3, ids.len()] {
                let input = Tensor::new(&ids[..len], &Device::Cpu)?.unsqueeze(0)?;
                let ours = model.forward(&input)?.i((.., len - 1, ..))?;
                let theirs = reference_logits(arch, dir.path(), &w, &input)?;
                let diff = max_diff(&ours, &theirs)?;
                assert!(diff < 1e-4, "{arch:?} on {backend}, {len} tokens: logits differ by {diff}");
            }
        }
    }
    Ok(())
}

#[test]
fn llama_3_1_rope_scaling_computes_the_logits_of_candle_transformers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let w = write_checkpoint(dir.path(), Architecture::Llama)?;
    // A 128-position window stretched from 32: the tiny head's four frequencies are one kept, one blended
    // and two slowed by the factor.
    let mut cfg = config(dir.path())?;
    cfg["rope_scaling"] = json!({"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32});
    std::fs::write(dir.path().join("config.json"), cfg.to_string())?;
    let ckpt = Checkpoint::open(&dir.path().display().to_string())?;
    let text = "The quick brown fox jumps over the lazy dog; 37-52=-15, Mon+3=Thu.";
    let ids = ckpt.tokenizer()?.encode(text, false)?;
    let input = Tensor::new(&ids[..], &Device::Cpu)?.unsqueeze(0)?;
    let theirs = reference_logits(Architecture::Llama, dir.path(), &w, &input)?;
    for backend in [Backend::Native, Backend::RepOps] {
        let model_cfg = ckpt.model_config(backend, None);
        let ours = ckpt.load(&model_cfg, 1, &Device::Cpu)?.forward(&input)?.i((.., ids.len() - 1, ..))?;
        let diff = max_diff(&ours, &theirs)?;
        assert!(diff < 1e-4, "scaled rope on {backend}: logits differ by {diff}");
        // The scaling matters here: without it the logits are another model's.
        let plain = models::ModelConfig { rope_scaling: None, ..model_cfg };
        let unscaled = ckpt.load(&plain, 1, &Device::Cpu)?.forward(&input)?.i((.., ids.len() - 1, ..))?;
        assert!(max_diff(&unscaled, &theirs)? > 1e-3, "{backend}: the scaling changes nothing");
    }
    Ok(())
}

/// Greedy continuation of `prompt` for `steps` tokens, with the cache or re-reading the prefix.
fn greedy(model: &Llama, prompt: &[u32], steps: usize, cached: bool) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
    let mut seq = prompt.to_vec();
    let mut cache = KvCache::new();
    let argmax = |logits: &Tensor| -> candle_core::Result<u32> { logits.flatten_all()?.argmax(0)?.to_vec0::<u32>() };
    for step in 0..steps {
        let next = if cached {
            let new = if step == 0 { &seq[..] } else { &seq[seq.len() - 1..] };
            argmax(&model.next_token_logits(&Tensor::new(new, &Device::Cpu)?.unsqueeze(0)?, &mut cache)?)?
        } else {
            let logits = model.forward(&Tensor::new(&seq[..], &Device::Cpu)?.unsqueeze(0)?)?;
            argmax(&logits.i((0, seq.len() - 1))?)?
        };
        seq.push(next);
    }
    Ok(seq[prompt.len()..].to_vec())
}

#[test]
fn decoding_with_the_cache_writes_what_decoding_without_it_writes() -> TestResult {
    for arch in ARCHS {
        let dir = tempfile::tempdir()?;
        write_checkpoint(dir.path(), arch)?;
        let ckpt = Checkpoint::open(&dir.path().display().to_string())?;
        for backend in [Backend::Native, Backend::RepOps] {
            let model = ckpt.load(&ckpt.model_config(backend, None), 1, &Device::Cpu)?;
            let prompt = ckpt.tokenizer()?.encode("a model trains", false)?;
            let with = greedy(&model, &prompt, 20, true)?;
            assert_eq!(with, greedy(&model, &prompt, 20, false)?, "{arch:?} on {backend}");
        }
    }
    Ok(())
}

#[test]
fn a_trained_model_saves_in_hugging_face_layout_and_reloads_bit_for_bit() -> TestResult {
    for arch in ARCHS {
        let dir = tempfile::tempdir()?;
        write_checkpoint(dir.path(), arch)?;
        let ckpt = Checkpoint::open(&dir.path().display().to_string())?;
        let cfg = ckpt.model_config(Backend::Native, Some(32));
        let model = ckpt.load(&cfg, 1, &Device::Cpu)?;
        // One training step on a sentence.
        let ids = Tensor::new(&[20u32, 30, 40, 50, 60, 70], &Device::Cpu)?.unsqueeze(0)?;
        let (input, target) = (ids.narrow(1, 0, 5)?, ids.narrow(1, 1, 5)?);
        let params = model.params();
        let mut optim =
            AdamW::new(OptimConfig { lr: 1e-2, warmup_steps: 0, ..OptimConfig::default() }, Backend::Native)?;
        let before = model.loss(&input, &target)?.to_vec0::<f32>()?;
        for _ in 0..5 {
            let grads = params.grads(&model.loss(&input, &target)?.backward()?);
            optim.step(&params, &grads)?;
        }
        let after = model.loss(&input, &target)?.to_vec0::<f32>()?;
        assert!(after < before, "{arch:?}: loss {before} → {after}");

        let out = tempfile::tempdir()?;
        ckpt.save(&model, out.path())?;
        for file in ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json"] {
            assert!(out.path().join(file).is_file(), "{arch:?}: {file} written");
        }
        // Hugging Face names in the file, and no lm_head where the embedding is the head.
        let saved = candle_core::safetensors::load(out.path().join("model.safetensors"), &Device::Cpu)?;
        assert!(saved.contains_key("model.layers.1.mlp.down_proj.weight"));
        assert_eq!(saved.contains_key("lm_head.weight"), arch == Architecture::Llama);
        let again = Checkpoint::open(&out.path().display().to_string())?;
        let reloaded = again.load(&cfg, 1, &Device::Cpu)?;
        let (a, b): (BTreeMap<_, _>, BTreeMap<_, _>) = (model.params().snapshot(), reloaded.params().snapshot());
        assert_eq!(a.len(), b.len());
        for (name, t) in &a {
            assert_eq!(bits(t)?, bits(&b[name])?, "{arch:?}: {name}");
        }
        assert_eq!(bits(&model.forward(&input)?)?, bits(&reloaded.forward(&input)?)?);
        // A pipeline of two stages of the untied model holds the same weights and computes the same.
        if arch == Architecture::Llama {
            let split = again.load(&cfg, 2, &Device::Cpu)?;
            assert_eq!(bits(&split.forward(&input)?)?, bits(&model.forward(&input)?)?);
        }
    }
    Ok(())
}

#[test]
fn sharded_weights_load_as_one_file_does() -> TestResult {
    let dir = tempfile::tempdir()?;
    let w = write_checkpoint(dir.path(), Architecture::Qwen2)?;
    let single = Checkpoint::open(&dir.path().display().to_string())?.weights()?;
    std::fs::remove_file(dir.path().join("model.safetensors"))?;
    let (mut a, mut b, mut map) = (HashMap::new(), HashMap::new(), serde_json::Map::new());
    for (i, (name, t)) in w.into_iter().enumerate() {
        let shard = if i % 2 == 0 { "model-00001-of-00002.safetensors" } else { "model-00002-of-00002.safetensors" };
        map.insert(name.clone(), json!(shard));
        if i % 2 == 0 {
            a.insert(name, t)
        } else {
            b.insert(name, t)
        };
    }
    candle_core::safetensors::save(&a, dir.path().join("model-00001-of-00002.safetensors"))?;
    candle_core::safetensors::save(&b, dir.path().join("model-00002-of-00002.safetensors"))?;
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )?;
    let sharded = Checkpoint::open(&dir.path().display().to_string())?.weights()?;
    assert_eq!(single.keys().collect::<Vec<_>>(), sharded.keys().collect::<Vec<_>>());
    for (name, t) in &single {
        assert_eq!(bits(t)?, bits(&sharded[name])?, "{name}");
    }
    // A shard the index lists but the folder lacks.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors"))?;
    let e = Checkpoint::open(&dir.path().display().to_string())?.weights().expect_err("missing shard").to_string();
    assert!(e.contains("model-00002-of-00002.safetensors") && e.contains("missing"), "{e}");
    Ok(())
}

#[test]
fn malformed_checkpoints_name_the_file_and_the_field() -> TestResult {
    let open = |dir: &Path| Checkpoint::open(&dir.display().to_string());
    let load = |dir: &Path| -> pretrained::Result<Llama> {
        let c = open(dir)?;
        c.load(&c.model_config(Backend::Native, None), 1, &Device::Cpu)
    };
    let fresh = |arch| -> Result<(tempfile::TempDir, HashMap<String, Tensor>), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let w = write_checkpoint(dir.path(), arch)?;
        Ok((dir, w))
    };
    // A weight of the wrong shape, a missing one, an unknown one, an integer one.
    let (dir, mut w) = fresh(Architecture::Qwen2)?;
    w.insert("model.layers.1.self_attn.k_proj.weight".into(), Tensor::zeros((8, 32), DType::F32, &Device::Cpu)?);
    candle_core::safetensors::save(&w, dir.path().join("model.safetensors"))?;
    let e = load(dir.path()).expect_err("shape").to_string();
    assert!(e.contains("model.layers.1.self_attn.k_proj.weight: shape [8, 32]; config.json makes it [16, 32]"), "{e}");
    w.remove("model.layers.1.self_attn.k_proj.weight");
    candle_core::safetensors::save(&w, dir.path().join("model.safetensors"))?;
    let e = load(dir.path()).expect_err("missing").to_string();
    assert!(e.contains("model.layers.1.self_attn.k_proj.weight: missing"), "{e}");
    w.insert("model.layers.0.self_attn.o_proj.bias".into(), Tensor::zeros(32, DType::F32, &Device::Cpu)?);
    candle_core::safetensors::save(&w, dir.path().join("model.safetensors"))?;
    let e = load(dir.path()).expect_err("unknown").to_string();
    assert!(e.contains("model.safetensors: model.layers.0.self_attn.o_proj.bias: not a weight"), "{e}");
    w.remove("model.layers.0.self_attn.o_proj.bias");
    w.insert("model.norm.weight".into(), Tensor::zeros(32, DType::U32, &Device::Cpu)?);
    candle_core::safetensors::save(&w, dir.path().join("model.safetensors"))?;
    let e = load(dir.path()).expect_err("dtype").to_string();
    assert!(e.contains("model.norm.weight: dtype U32"), "{e}");
    // Weights a layer count has no place for.
    let (dir, _) = fresh(Architecture::Llama)?;
    let mut cfg = config(dir.path())?;
    cfg["num_hidden_layers"] = json!(1);
    std::fs::write(dir.path().join("config.json"), cfg.to_string())?;
    let e = load(dir.path()).expect_err("extra layer").to_string();
    assert!(e.contains("model.layers.1.") && e.contains("no place"), "{e}");
    // Files: no weights, no tokenizer, an unknown architecture, not JSON.
    let (dir, _) = fresh(Architecture::Llama)?;
    std::fs::remove_file(dir.path().join("tokenizer.json"))?;
    let e = open(dir.path())?.tokenizer().expect_err("no tokenizer").to_string();
    assert!(e.contains("tokenizer.json: missing"), "{e}");
    std::fs::remove_file(dir.path().join("model.safetensors"))?;
    let e = load(dir.path()).expect_err("no weights").to_string();
    assert!(e.contains("no model.safetensors"), "{e}");
    let mut cfg = config(dir.path())?;
    cfg["model_type"] = json!("mamba");
    std::fs::write(dir.path().join("config.json"), cfg.to_string())?;
    let e = open(dir.path()).expect_err("mamba").to_string();
    assert!(e.contains("config.json: model_type: \"mamba\""), "{e}");
    std::fs::write(dir.path().join("config.json"), "{\"model_type\": ")?;
    assert!(open(dir.path()).expect_err("not json").to_string().contains("config.json"));
    let e = Checkpoint::open("Nobody/no-such-model-here").expect_err("not cached").to_string();
    assert!(e.contains("Nobody/no-such-model-here"), "{e}");
    Ok(())
}
