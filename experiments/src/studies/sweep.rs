//! The learning-rate sweep (`swarmlab sweep-lr <study>`): the one setting the presets cannot take from
//! the authors, because it changes with the model's size, chosen on the study's baseline arm alone and
//! then used by every arm, so that no method is tuned for.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::files::{MAX_RESULTS_BYTES, fresh_out_dir, read_text, write_atomic};
use crate::run::Output;
use crate::studies::{Reproduce, Scale, training_study};

/// The default learning rates tried: a factor of about two apart around the presets' 3e-3.
pub(crate) const DEFAULT_LRS: [f32; 5] = [1e-3, 2e-3, 3e-3, 6e-3, 1e-2];

/// A sweep behind a preset's learning rate, as measured (`swarmlab sweep-lr <study> --lrs
/// 1e-3,3e-3,6e-3,1e-2`, CPU rung, synthetic corpus, run seed 1).
pub(crate) struct Swept {
    /// The study (its preset's name).
    pub(crate) study: &'static str,
    /// The arm swept.
    pub(crate) arm: &'static str,
    /// The rate chosen: the lowest final validation loss.
    pub(crate) chosen: f32,
    /// Each rate tried and the final validation loss it reached.
    pub(crate) final_loss: [(f32, f64); 4],
}

/// The sweeps behind the training studies' rates.
pub(crate) const SWEPT: [Swept; 4] = [
    Swept {
        study: "noloco",
        arm: "DDP (all-reduce every step)",
        chosen: 3e-3,
        final_loss: [(1e-3, 1.1128), (3e-3, 1.0912), (6e-3, 1.1114), (1e-2, 1.1142)],
    },
    Swept {
        study: "skippipe",
        arm: "standard pipeline",
        chosen: 3e-3,
        final_loss: [(1e-3, 1.1971), (3e-3, 1.1500), (6e-3, 1.4444), (1e-2, 1.8162)],
    },
    Swept {
        study: "checkfree",
        arm: "no failures",
        chosen: 3e-3,
        final_loss: [(1e-3, 1.2279), (3e-3, 1.2028), (6e-3, 1.6658), (1e-2, 2.2501)],
    },
    Swept {
        study: "compose",
        arm: "baseline, no failures",
        chosen: 3e-3,
        final_loss: [(1e-3, 1.5825), (3e-3, 1.1406), (6e-3, 1.1887), (1e-2, 1.6526)],
    },
];

/// Why `cfg`'s learning rate is what it is, for a setup table: the sweep that chose it for the
/// study's preset, or that it is the configuration's own.
pub(crate) fn rate_reason(cfg: &RunConfig) -> String {
    match SWEPT.iter().find(|s| s.study == cfg.name) {
        Some(s) if cfg.optim.lr == s.chosen => {
            let tried: Vec<String> = s.final_loss.iter().map(|(lr, loss)| format!("{loss:.3} at {lr}")).collect();
            format!(
                "the rate was chosen by `swarmlab sweep-lr {}` on the arm \"{}\" alone (final val loss {}; CPU rung, seed 1) and is the same for every arm",
                s.study,
                s.arm,
                tried.join(", ")
            )
        }
        Some(s) => format!("a rate of this configuration's own (the preset's sweep chose {})", s.chosen),
        None => "a rate of this configuration's own".to_owned(),
    }
}

/// One learning rate's run of the baseline arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SweepRow {
    pub(crate) lr: f32,
    /// Final validation loss of each seed.
    pub(crate) final_val_loss: Vec<f64>,
    /// Their mean.
    pub(crate) mean: f64,
}

/// What `sweep.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sweep {
    pub(crate) study: String,
    /// The arm swept (the preset's first, its baseline).
    pub(crate) arm: String,
    /// The preset's learning rate.
    pub(crate) preset_lr: f32,
    pub(crate) rows: Vec<SweepRow>,
    /// The learning rate of the lowest mean final validation loss.
    pub(crate) best_lr: f32,
}

/// Runs the baseline arm of `study` once per learning rate in `lrs` (and per seed), each into
/// `<out>/lr-<lr>/seed-<k>/`, keeping the preset's ratio of the final to the peak rate, and writes
/// `<out>/report.md` and `<out>/sweep.json`.
pub(crate) fn sweep_lr(study: &str, lrs: &[f32], how: &Reproduce) -> Result<Sweep> {
    if lrs.is_empty() || lrs.len() > 32 {
        bail!("--lrs: give between 1 and 32 learning rates");
    }
    if let Some(lr) = lrs.iter().find(|lr| !(lr.is_finite() && **lr > 0.0 && **lr <= 10.0)) {
        bail!("--lrs: {lr} is not a learning rate in (0, 10]");
    }
    let training = training_study(study)?;
    let mut preset = training.preset();
    if let Some(corpus) = &how.corpus {
        preset.corpus = corpus.clone();
    }
    preset.device = how.device;
    let preset = if how.scale == Scale::Paper { training.paper(preset) } else { preset };
    let arm = preset.arms.first().cloned().context("the study has no arm")?;
    let out = fresh_out_dir(how.out.clone(), &format!("{study}-lr-sweep"), how.force)?;
    let floor = preset.optim.min_lr / preset.optim.lr;
    let mut rows = Vec::new();
    for &lr in lrs {
        let mut losses = Vec::new();
        for k in 0..how.seeds {
            let cfg = RunConfig {
                name: format!("{study}-lr-{lr}"),
                seed: preset.seed.wrapping_add(k as u64),
                arms: vec![arm.clone()],
                optim: models::OptimConfig { lr, min_lr: lr * floor, ..preset.optim.clone() },
                // The study's own measurements (scheduler, scaling) are not what is swept.
                scale: None,
                skippipe: None,
                ..preset.clone()
            };
            let dir = out.join(format!("lr-{lr}")).join(format!("seed-{k}"));
            eprintln!("\n--- {study}: {} at lr {lr}, seed {} of {} ---", arm.label, k + 1, how.seeds);
            crate::run::run(cfg, Output { out: Some(dir.clone()), force: how.force, allow_large: how.allow_large }, how.quick())
                .with_context(|| format!("lr {lr}"))?;
            losses.push(final_val_loss(&dir)?);
        }
        let mean = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        rows.push(SweepRow { lr, final_val_loss: losses, mean });
    }
    let best_lr = rows.iter().min_by(|a, b| a.mean.total_cmp(&b.mean)).map_or(preset.optim.lr, |r| r.lr);
    let sweep = Sweep { study: study.into(), arm: arm.label.clone(), preset_lr: preset.optim.lr, rows, best_lr };
    write_atomic(&out.join("sweep.json"), serde_json::to_string_pretty(&sweep)?.as_bytes())?;
    write_atomic(&out.join("report.md"), markdown(&sweep, how).as_bytes())?;
    println!("learning-rate sweep: {} (best {best_lr}, preset {})", out.join("report.md").display(), sweep.preset_lr);
    Ok(sweep)
}

/// The final validation loss of the one arm of the run in `dir` (from its `summary.json`).
fn final_val_loss(dir: &Path) -> Result<f64> {
    let file: PathBuf = dir.join("summary.json");
    let text = read_text(&file, MAX_RESULTS_BYTES)?;
    let summary: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not a run summary", file.display()))?;
    summary["arms"][0]["final_val_loss"]
        .as_f64()
        .with_context(|| format!("{}: the arm has no final validation loss", file.display()))
}

fn markdown(s: &Sweep, how: &Reproduce) -> String {
    let mut md = format!("# Learning-rate sweep: `{}`, arm \"{}\"\n\n", s.study, s.arm);
    let _ = writeln!(
        md,
        "`swarmlab sweep-lr {}{}`: the study's baseline arm alone, at each peak learning rate (the schedule's \
         final rate in the preset's proportion), everything else as the preset. The rate of the lowest final \
         validation loss is the one every arm of the study then uses: no method is tuned on its own.\n",
        s.study,
        how.flags()
    );
    md.push_str("| learning rate | final val loss: mean | per seed |\n|---|---|---|\n");
    for r in &s.rows {
        let mark = match (r.lr == s.best_lr, r.lr == s.preset_lr) {
            (true, true) => " (best; the preset's)",
            (true, false) => " (best)",
            (false, true) => " (the preset's)",
            (false, false) => "",
        };
        let seeds: Vec<String> = r.final_val_loss.iter().map(|v| format!("{v:.4}")).collect();
        let _ = writeln!(md, "| {}{mark} | {:.4} | {} |", r.lr, r.mean, seeds.join(", "));
    }
    let _ = writeln!(
        md,
        "\n{}\n",
        if s.best_lr == s.preset_lr {
            format!("The preset's rate, {}, is the best of those tried.", s.preset_lr)
        } else {
            format!("The best rate tried is {}; the preset uses {}.", s.best_lr, s.preset_lr)
        }
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_training_study_cites_the_sweep_behind_its_rate() -> Result<()> {
        for swept in &SWEPT {
            let cfg = training_study(swept.study)?.preset();
            assert_eq!(cfg.optim.lr, swept.chosen, "{}: the preset runs the rate its sweep chose", swept.study);
            let best = swept.final_loss.iter().min_by(|a, b| a.1.total_cmp(&b.1)).map(|b| b.0);
            assert_eq!(best, Some(swept.chosen), "{}", swept.study);
            assert!(cfg.arms.iter().any(|a| a.label == swept.arm), "{}: no arm {:?}", swept.study, swept.arm);
            assert!(rate_reason(&cfg).contains(&format!("sweep-lr {}", swept.study)), "{}", rate_reason(&cfg));
            let other = RunConfig { optim: models::OptimConfig { lr: 1e-4, ..cfg.optim.clone() }, ..cfg };
            assert!(rate_reason(&other).contains("own"), "{}", rate_reason(&other));
        }
        Ok(())
    }

    #[test]
    fn the_sweep_runs_the_baseline_arm_at_each_rate_and_names_the_best() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let how = Reproduce {
            out: Some(dir.path().join("sweep")),
            scale: Scale::Smoke,
            corpus: None,
            jobs: 1,
            device: models::DeviceSpec::default(),
            force: false,
            allow_large: false,
            seeds: 1,
            resume: false,
            model: None,
            tasks: None,
        };
        // A rate far too small to learn in a smoke run loses to a sensible one.
        let sweep = sweep_lr("checkfree", &[1e-6, 3e-3], &how)?;
        assert_eq!(sweep.arm, "no failures");
        assert_eq!(sweep.rows.len(), 2);
        assert_eq!(sweep.best_lr, 3e-3, "{sweep:?}");
        let one = RunConfig::load(&dir.path().join("sweep/lr-0.000001/seed-0/config.toml"))?;
        assert_eq!((one.arms.len(), one.optim.lr), (1, 1e-6));
        let report = std::fs::read_to_string(dir.path().join("sweep/report.md"))?;
        assert!(report.contains("| 0.003 (best; the preset's) |"), "{report}");
        assert!(sweep_lr("checkfree", &[], &how).is_err() && sweep_lr("checkfree", &[-1.0], &how).is_err());
        Ok(())
    }
}
