//! The SkipPipe study's settings beside the authors' released code (github.com/gensyn-ai/skippipe).

use pipeline::GradientScaling;
use skippipe::SkipCount;

use crate::config::{ArmConfig, RunConfig};
use crate::studies::{SetupRow, model_words, optimizer_words, schedule_words};

const TRAINER: &str = "simulate-training/trainer.py";

/// The rows of the setup table, for a run with SkipPipe arms.
pub(super) fn rows(cfg: &RunConfig) -> Vec<SetupRow> {
    let stages = cfg.arms.iter().map(|a| a.stages).max().unwrap_or(0);
    let mut ratios: Vec<String> =
        cfg.arms.iter().filter(|a| a.routing.kind == "skippipe").map(|a| format!("{:.0}%", super::skip_ratio(a) * 100.0)).collect();
    ratios.dedup();
    let layout = if cfg.edge_stages {
        format!("{stages} stages: embedding, {} transformer stages, head", stages.saturating_sub(2))
    } else {
        format!("{stages} stages")
    };
    let skipping: Vec<&ArmConfig> = cfg.arms.iter().filter(|a| a.routing.kind == "skippipe").collect();
    let counts: Vec<SkipCount> = skipping.iter().map(|a| count(a)).collect();
    let transformer = cfg.edge_stages && counts.iter().all(|c| *c == SkipCount::TransformerStages);
    let per_stage = cfg.arms.iter().filter(|a| a.gradients == GradientScaling::PerStage).count();
    let gradients = match per_stage {
        0 => format!("as theirs, clipped to {}", cfg.optim.grad_clip),
        n if n == cfg.arms.len() => format!(
            "each stage's gradient averaged over the micro-batches that visited it, each stage clipped to {}",
            cfg.optim.grad_clip
        ),
        n => format!(
            "as theirs, clipped to {}; {n} ablation arm(s) average each stage's gradient over its visits and clip \
             each stage alone",
            cfg.optim.grad_clip
        ),
    };
    // Theirs: β = (0.9, 0.999), no weight decay, a constant rate, clipped to 1.
    let optim_same = cfg.optim.beta1 == 0.9
        && cfg.optim.beta2 == 0.999
        && cfg.optim.weight_decay == 0.0
        && cfg.optim.grad_clip == 1.0
        && cfg.optim.min_lr == cfg.optim.lr
        && cfg.optim.warmup_steps == 0;
    vec![
        SetupRow::new(
            "model",
            "Llama, width 1,024, 16 heads, 24 layers = 6 stages x 4 layers, sequences of 1,024 (~500M parameters)",
            TRAINER,
            format!("{}; {layout}", model_words(cfg)),
            super::SMALLEST.reason(cfg, "CPU scale"),
        ),
        SetupRow::new("data", "RedPajama-V2 (sample-1T), Llama tokenizer", TRAINER, cfg.corpus.describe(), "the embedded default needs no download and has a known loss floor"),
        SetupRow::new("steps", "25,000 iterations", TRAINER, cfg.steps.to_string(), "CPU scale"),
        SetupRow::new(
            "optimizer",
            "AdamW, β = (0.9, 0.999), no weight decay, constant 3e-4",
            TRAINER,
            format!("{}, {}", optimizer_words(cfg), schedule_words(cfg)),
            if optim_same { crate::studies::sweep::rate_reason(cfg) } else { "a configuration of its own".to_owned() },
        ),
        SetupRow::new("micro-batches", "6 per replica and iteration, 8 sequences each", TRAINER, format!("{} of {} sequences", cfg.micro_batches, cfg.micro_batch), "CPU scale"),
        SetupRow::new(
            "skip ratio",
            "over the transformer stages: paths through 4 of 6 stages (33%); the first stage always runs",
            TRAINER,
            format!(
                "{} {}",
                ratios.join(", "),
                if transformer {
                    "of the transformer stages; the first transformer stage always runs".to_owned()
                } else {
                    "of all stages, the embedding and head counted, the first transformer stage skippable (`count = \"all_stages\"`)".to_owned()
                }
            ),
            if transformer { "same" } else { "an ablation of the counting rule" },
        ),
        SetupRow::new(
            "gradients",
            "loss / micro-batches, summed, averaged over the replicas, one global clip to norm 1",
            TRAINER,
            gradients,
            if per_stage == 0 { "same" } else { "the per-stage rule is this project's first, kept as an ablation" },
        ),
        SetupRow::new(
            "baseline",
            "the same model trained on every layer (skip 0)",
            TRAINER,
            "fixed rows through every stage (GPipe), and the scheduler's paths at skip 0".to_owned(),
            "both kept: convergence is compared with fixed rows, time to a loss with the faster of the two",
        ),
        SetupRow::new(
            "validation",
            "every 100 iterations, 100 batches through all layers, perplexity as the mean over sequences of exp(loss)",
            TRAINER,
            format!(
                "every {} steps, {} batches through all stages; perplexity with stages dropped as theirs (per sequence)",
                cfg.eval_every, cfg.eval_batches
            ),
            "fewer batches at CPU scale; the validation curve is in mean loss, which orders arms as perplexity does",
        ),
    ]
}

/// The counting rule of a SkipPipe arm.
fn count(a: &ArmConfig) -> SkipCount {
    a.routing.settings::<skippipe::Scheduling>().map_or(SkipCount::default(), |s| s.count)
}
