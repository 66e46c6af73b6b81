//! A pretrained policy at real scale on this machine: a random checkpoint with the shapes of
//! Qwen2.5-0.5B (494M parameters, written in Hugging Face layout to a temporary folder and loaded as a
//! policy), one SAPO group — 8 completions of one 64-token prompt, up to 32 tokens each — generated with
//! the key/value cache beside one forward pass over the same sequences, and a GRPO step beside a
//! supervised step on the same batch, all in this run. Prints tokens/s, the ratios and the peak memory.
//! (Random weights rarely draw the end token, so completions run to 32 tokens.)

use std::time::Instant;

use candle_core::Device;
use pretrained::tiny::{Shape, write_shaped};
use pretrained::{Architecture, Checkpoint};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sapo::policy::Example;
use sapo::{GrpoConfig, Policy, PolicyConfig, Sampling};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    write_shaped(dir.path(), Architecture::Qwen2, Shape::qwen2_5_0_5b(), 0)?;
    println!("wrote a random Qwen2.5-0.5B-shaped checkpoint in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let cfg = PolicyConfig { prompt_width: 64, max_new: 32, ..PolicyConfig::default() };
    let mut policy = Policy::pretrained(&Checkpoint::open(&dir.path().display().to_string())?, &cfg, &Device::Cpu)?;
    println!("loaded: {} parameters in {:.1} s", policy.parameters(), t.elapsed().as_secs_f64());

    // A 64-token prompt (the tokenizer has one token a character).
    let prompt = "Solve and answer inside <answer></answer>: what is 37 - 52 + 8? ";
    let prompt = &prompt[..64];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let t = Instant::now();
    let group = policy.sample(&[prompt], 8, Sampling::default(), &mut rng)?.remove(0);
    let generate = t.elapsed().as_secs_f64();
    let tokens: usize = group.iter().map(|c| policy.codec().encode_completion(c).map_or(0, |t| t.len())).sum();
    let examples: Vec<Example<'_>> = group
        .iter()
        .enumerate()
        .map(|(i, c)| Example { prompt, completion: c, weight: if i % 2 == 0 { 1.0 } else { -1.0 } })
        .collect();
    let t = Instant::now();
    policy.sequence_logps(&examples)?;
    let forward = t.elapsed().as_secs_f64();
    println!(
        "generation: {tokens} tokens in {generate:.2} s, {:.1} tokens/s; {:.2}x one forward pass over the same sequences ({forward:.2} s)",
        tokens as f64 / generate,
        generate / forward
    );
    let mut optim = models::AdamW::new(cfg.optim.clone(), models::Backend::Native)?;
    let t = Instant::now();
    policy.supervised_step(&examples, &mut optim)?;
    let supervised = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = policy.grpo_step(&examples, &GrpoConfig::default(), None)?;
    let grpo = t.elapsed().as_secs_f64();
    println!(
        "GRPO step on the group: {} tokens in {grpo:.1} s, {:.1} tokens/s; {:.2}x a supervised step on the same batch ({supervised:.1} s)",
        report.tokens,
        report.tokens as f64 / grpo,
        grpo / supervised
    );
    if let Some(gib) = models::memory::peak_resident_gib() {
        println!("peak memory: {gib:.1} GiB");
    }
    Ok(())
}
