//! Policies of pretrained Hugging Face checkpoints (tiny random ones written in a temporary folder):
//! they sample alike with and without the key/value cache, take GRPO steps toward rewarded completions,
//! and save back in Hugging Face layout to reload bit for bit.

use candle_core::Device;
use genrl::env::{Family, Level, TaskSet, TaskSetConfig};
use pretrained::{Architecture, Checkpoint, tiny};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sapo::policy::Example;
use sapo::{Generation, GrpoConfig, Mix, Policy, PolicyConfig, Sampling, SapoConfig};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Prompts of different token counts: they decode in separate groups.
const PROMPTS: [&str; 3] = ["37-52=", "Mon+3=", "1.5+2.25="];

fn policy_of(dir: &std::path::Path, backend: models::Backend) -> sapo::Result<Policy> {
    let mut cfg = PolicyConfig { prompt_width: 24, max_new: 12, ..PolicyConfig::default() };
    cfg.model.backend = backend;
    cfg.optim.lr = 1e-2;
    cfg.optim.min_lr = 1e-2;
    Policy::pretrained(&Checkpoint::open(&dir.display().to_string())?, &cfg, &Device::Cpu)
}

#[test]
fn pretrained_policies_sample_alike_with_and_without_the_cache() -> TestResult {
    for arch in [Architecture::Llama, Architecture::Qwen2, Architecture::Qwen3] {
        let dir = tempfile::tempdir()?;
        tiny::write(dir.path(), arch, 3)?;
        for backend in [models::Backend::Native, models::Backend::RepOps] {
            let policy = policy_of(dir.path(), backend)?;
            for sampling in [Sampling::GREEDY, Sampling::default()] {
                let with = |cache| {
                    let generation = Generation { sampling, cache, ..Generation::default() };
                    policy.generate(&PROMPTS, 4, &generation, &mut ChaCha8Rng::seed_from_u64(5))
                };
                let cached = with(true)?;
                assert_eq!(cached, with(false)?, "{arch:?} on {backend}, {sampling:?}");
                for c in cached.iter().flatten() {
                    assert!(policy.can_read(PROMPTS[0], c), "{arch:?}: its own completion {c:?} is readable");
                }
            }
        }
        // With stop strings: a completion ends where one appears (or at its end token, or at 12 tokens).
        let policy = policy_of(dir.path(), models::Backend::Native)?;
        let stop = Generation { stop: vec!["a".into(), "7".into()], ..Generation::default() };
        for c in policy.generate(&PROMPTS, 8, &stop, &mut ChaCha8Rng::seed_from_u64(1))?.iter().flatten() {
            let body = c.strip_suffix(tiny::EOS).unwrap_or(c);
            let cut = body.find(['a', '7']);
            assert!(cut.is_none_or(|i| i + 1 == body.len()), "{arch:?}: {c:?} goes on after a stop string");
        }
    }
    Ok(())
}

#[test]
fn a_pretrained_policy_learns_from_advantages_and_saves_in_hugging_face_layout() -> TestResult {
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let dir = tempfile::tempdir()?;
        tiny::write(dir.path(), arch, 4)?;
        let mut policy = policy_of(dir.path(), models::Backend::Native)?;
        let (good, bad) = (format!("-15{}", tiny::EOS), format!("15{}", tiny::EOS));
        let pair = [
            Example { prompt: PROMPTS[0], completion: &good, weight: 1.0 },
            Example { prompt: PROMPTS[0], completion: &bad, weight: -1.0 },
            // A prompt of another length in the same batch, and an unfinished completion.
            Example { prompt: PROMPTS[2], completion: "3.7", weight: 0.5 },
        ];
        let before = policy.sequence_logps(&pair)?;
        for _ in 0..4 {
            let report = policy.grpo_step(&pair, &GrpoConfig::default(), None)?;
            assert_eq!(report.tokens, 4 + 3 + 3, "{arch:?}: tokens of the completions, end tokens included");
        }
        let after = policy.sequence_logps(&pair)?;
        assert!(after[0] > before[0] && after[1] < before[1], "{arch:?}: {before:?} → {after:?}");

        let out = tempfile::tempdir()?;
        policy.save_pretrained(out.path())?;
        let reloaded = policy_of(out.path(), models::Backend::Native)?;
        let (a, b) = (policy.weights(), reloaded.weights());
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, t) in &a {
            let bits = |t: &candle_core::Tensor| -> candle_core::Result<Vec<u32>> {
                Ok(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f32::to_bits).collect())
            };
            assert_eq!(bits(t)?, bits(&b[name])?, "{arch:?}: {name}");
        }
        assert_eq!(policy.sequence_logps(&pair)?, reloaded.sequence_logps(&pair)?);
        // Too long for the window, an empty completion, and a byte policy that has no Hugging Face form.
        assert!(!policy.can_read(&"1".repeat(30), "2") && !policy.can_read(PROMPTS[0], ""));
        let bytes = Policy::new(&PolicyConfig::default(), &Device::Cpu)?;
        assert!(bytes.save_pretrained(out.path()).is_err());
    }
    // A window the model does not have.
    let dir = tempfile::tempdir()?;
    tiny::write(dir.path(), Architecture::Qwen2, 0)?;
    let cfg = PolicyConfig { prompt_width: 120, max_new: 12, ..PolicyConfig::default() };
    let e = Policy::pretrained(&Checkpoint::open(&dir.path().display().to_string())?, &cfg, &Device::Cpu)
        .expect_err("128 positions")
        .to_string();
    assert!(e.contains("128 positions"), "{e}");
    Ok(())
}

/// The questions the tiny checkpoints of the swarm tests are taught: truth tables.
fn logic() -> TaskSetConfig {
    TaskSetConfig { families: vec!["propositional_logic".into()], eval_per_level: 4, ..TaskSetConfig::default() }
}

/// A swarm of three agents, and a tiny Qwen2 checkpoint taught the answer format of [`logic`] (right
/// often enough to be rewarded, not always, so groups carry a signal), saved in the returned folder,
/// which `cfg.model` names.
fn taught_swarm() -> Result<(SapoConfig, tempfile::TempDir), Box<dyn std::error::Error>> {
    let raw = tempfile::tempdir()?;
    tiny::write(raw.path(), Architecture::Qwen2, 11)?;
    let mut cfg = SapoConfig {
        agents: 3,
        rounds: 8,
        mix: Mix { local: 1, external: 1 },
        tasks: logic(),
        ..SapoConfig::default()
    };
    cfg.policy = PolicyConfig { prompt_width: 24, max_new: 6, ..PolicyConfig::default() };
    cfg.policy.optim.lr = 3e-3;
    cfg.policy.optim.min_lr = 3e-3;
    cfg.latency_ms = 1.0;
    let mut policy =
        Policy::pretrained(&Checkpoint::open(&raw.path().display().to_string())?, &cfg.policy, &Device::Cpu)?;
    let set = TaskSet::new(&logic())?;
    let mut optim = models::AdamW::new(cfg.policy.optim.clone(), models::Backend::Native)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for _ in 0..30 {
        let questions = set.sample(16, &mut rng);
        let answers: Vec<String> = questions.iter().map(|q| format!("{}{}", q.answer, tiny::EOS)).collect();
        let examples: Vec<Example<'_>> = questions
            .iter()
            .zip(&answers)
            .map(|(q, a)| Example { prompt: &q.prompt, completion: a, weight: 1.0 })
            .collect();
        policy.supervised_step(&examples, &mut optim)?;
    }
    let taught = tempfile::tempdir()?;
    policy.save_pretrained(taught.path())?;
    cfg.model = Some(taught.path().display().to_string());
    Ok((cfg, taught))
}

#[test]
fn a_swarm_of_pretrained_policies_trains_and_shares() -> TestResult {
    let (cfg, _taught) = taught_swarm()?;
    cfg.validate()?;
    assert_eq!(cfg.sizes_in_use(), vec![sapo::PRETRAINED.to_owned()]);
    let warm = sapo::warm_start(&cfg, sapo::PRETRAINED)?;
    assert!(warm.eval["all"] > 0.0, "the taught model answers some held-out questions: {:?}", warm.eval);
    let run = sapo::run(&cfg, &[warm], |_| {})?;
    assert_eq!(run.agents.len(), 3);
    let rounds: Vec<_> = run.agents.iter().flat_map(|a| &a.rounds).collect();
    assert!(run.cumulative_reward() > 0.0);
    assert!(rounds.iter().any(|r| r.step.tokens > 0), "GRPO steps were taken: {rounds:?}");
    assert!(rounds.iter().any(|r| r.external > 0), "shared groups were learned from");
    Ok(())
}

#[test]
fn a_swarm_of_pretrained_policies_plays_a_reasoning_gym_export() -> TestResult {
    let (mut cfg, _taught) = taught_swarm()?;
    // An export in reasoning-gym's format of two datasets: easy and harder truth tables, worded as
    // our prompts so that the tiny model can read them; scored by reasoning-gym's default rule.
    let mut lines = String::new();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut seen = std::collections::BTreeSet::new();
    for (dataset, level) in [("logic_easy", Level::EASY), ("logic_harder", Level::MEDIUM)] {
        for _ in 0..200 {
            let q = Family::PropositionalLogic.generate(level, &mut rng);
            if seen.insert(q.prompt.clone()) {
                let line = serde_json::json!({
                    "question": q.prompt, "answer": q.answer, "metadata": { "source_dataset": dataset },
                });
                lines += &format!("{line}\n");
            }
        }
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tasks.jsonl");
    std::fs::write(&file, lines)?;
    cfg.tasks = TaskSetConfig { file: Some(file.display().to_string()), eval_per_level: 3, ..TaskSetConfig::default() };
    cfg.mix = Mix { local: 2, external: 2 };
    cfg.validate()?;

    let warm = sapo::warm_start(&cfg, sapo::PRETRAINED)?;
    let specialties: Vec<&str> = warm.eval.keys().map(String::as_str).collect();
    assert_eq!(specialties, ["all", "logic_easy", "logic_harder"]);
    let run = sapo::run(&cfg, &[warm], |_| {})?;
    let rounds: Vec<_> = run.agents.iter().flat_map(|a| &a.rounds).collect();
    assert!(run.cumulative_reward() > 0.0);
    assert!(rounds.iter().any(|r| r.step.tokens > 0), "GRPO steps were taken: {rounds:?}");
    assert!(rounds.iter().any(|r| r.external > 0), "shared tasks were learned from");
    assert!(run.agents.iter().all(|a| a.dropped.forged == 0), "honest peers' tasks are genuine");

    // A byte policy cannot read prose; a window too narrow for the export is named with what it needs.
    let err = SapoConfig { model: None, ..cfg.clone() }.validate().expect_err("byte policy").to_string();
    assert!(err.contains("sapo.tasks.file") && err.contains("sapo.model"), "{err}");
    let narrow = SapoConfig { policy: PolicyConfig { prompt_width: 6, ..cfg.policy.clone() }, ..cfg };
    let err = sapo::warm_start(&narrow, sapo::PRETRAINED).expect_err("too narrow").to_string();
    assert!(err.contains("sapo.policy.prompt_width") && err.contains("raise it to"), "{err}");
    Ok(())
}

#[test]
fn a_chat_template_frames_each_question_as_the_users_turn() -> TestResult {
    let dir = tempfile::tempdir()?;
    tiny::write(dir.path(), Architecture::Llama, 2)?;
    let template = "{% for m in messages %}{{ bos_token }}{{ m.role }}: {{ m.content }}\n{% endfor %}\
                    {% if add_generation_prompt %}{{ bos_token }}assistant: {% endif %}";
    let config = serde_json::json!({ "chat_template": template, "bos_token": tiny::BOS });
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string())?;
    let checkpoint = Checkpoint::open(&dir.path().display().to_string())?;
    let cfg =
        PolicyConfig { prompt_width: 64, max_new: 8, system: Some("Be brief.".into()), ..PolicyConfig::default() };
    let policy = Policy::pretrained(&checkpoint, &cfg, &Device::Cpu)?;
    let ids = policy.encode_prompt("37-52=")?;
    let expected = checkpoint.tokenizer()?.encode("<s>system: Be brief.\n<s>user: 37-52=\n<s>assistant: ", false)?;
    assert_eq!(ids, expected);
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 3, "each turn opens with the start token");
    let groups =
        policy.generate(&["37-52=", "Mon+3="], 2, &Generation::default(), &mut ChaCha8Rng::seed_from_u64(0))?;
    assert_eq!(groups.len(), 2);
    // The template counts against the window: a question that fits alone no longer fits framed.
    assert!(policy.encode_prompt(&"1".repeat(40)).is_err());
    let bare = Policy::pretrained(&checkpoint, &PolicyConfig { system: None, ..cfg }, &Device::Cpu)?;
    assert_eq!(bare.encode_prompt("37-52=")?.len(), "<s>user: 37-52=\n<s>assistant: ".len() - 2 * 2);
    Ok(())
}
