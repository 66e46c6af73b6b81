//! The SkipPipe study's settings beside the authors' released code (github.com/gensyn-ai/skippipe).

use crate::config::RunConfig;
use crate::studies::{SetupRow, optimizer_words, schedule_words};

const TRAINER: &str = "simulate-training/trainer.py";

/// The rows of the setup table, for a run with SkipPipe arms.
pub(super) fn rows(cfg: &RunConfig) -> Vec<SetupRow> {
    let params = cfg.model().map(|m| m.param_count()).unwrap_or(0);
    let stages = cfg.arms.iter().map(|a| a.stages).max().unwrap_or(0);
    let ratios: Vec<String> =
        cfg.arms.iter().filter(|a| a.routing.kind == "skippipe").map(|a| format!("{:.0}%", super::skip_ratio(a) * 100.0)).collect();
    let layout = if cfg.edge_stages {
        format!("{stages} stages: embedding, {} transformer stages, head", stages.saturating_sub(2))
    } else {
        format!("{stages} stages")
    };
    vec![
        SetupRow::new(
            "model",
            "Llama, width 1,024, 16 heads, 24 layers = 6 stages x 4 layers, sequences of 1,024 (~500M parameters)",
            TRAINER,
            format!("`{}` ({params} parameters), {} layers, {layout}, sequences of {}", cfg.model_preset, cfg.layers.unwrap_or(0), cfg.seq),
            "CPU scale",
        ),
        SetupRow::new("data", "RedPajama-V2 (sample-1T), Llama tokenizer", TRAINER, cfg.corpus.describe(), "the embedded default needs no download and has a known loss floor"),
        SetupRow::new("steps", "25,000 iterations", TRAINER, cfg.steps.to_string(), "CPU scale"),
        SetupRow::new(
            "optimizer",
            "AdamW, β = (0.9, 0.999), no weight decay, constant 3e-4",
            TRAINER,
            format!("{}, {}", optimizer_words(cfg), schedule_words(cfg)),
            "not yet brought to theirs in this preset",
        ),
        SetupRow::new("micro-batches", "6 per replica and iteration, 8 sequences each", TRAINER, format!("{} of {} sequences", cfg.micro_batches, cfg.micro_batch), "CPU scale"),
        SetupRow::new(
            "skip ratio",
            "over the transformer stages: paths through 4 of 6 stages (33%); the first stage always runs",
            TRAINER,
            format!("{} of all stages, the embedding and head counted, the first transformer stage skippable", ratios.join(", ")),
            "not yet changed: our ratio counts the embedding and head stages, so it skips more of the blocks than theirs",
        ),
        SetupRow::new(
            "gradients",
            "loss / micro-batches, summed, averaged over the replicas, one global clip to norm 1",
            TRAINER,
            format!("each stage's gradient averaged over the micro-batches that visited it, each stage clipped to {}", cfg.optim.grad_clip),
            "not yet changed",
        ),
        SetupRow::new(
            "baseline",
            "the same model trained on every layer (skip 0)",
            TRAINER,
            "fixed rows through every stage (GPipe), and the scheduler's paths at skip 0".to_owned(),
            "both kept: the claims compare against the fixed rows",
        ),
        SetupRow::new(
            "validation",
            "every 100 iterations, 100 batches through all layers, perplexity as the mean over sequences of exp(loss)",
            TRAINER,
            format!("every {} steps, {} batches through all stages, perplexity as exp(mean loss)", cfg.eval_every, cfg.eval_batches),
            "not yet changed",
        ),
    ]
}
