//! The studies wing: one module per study, each owning its preset, its part of the run configuration,
//! its claims and its report section, behind the small registry below that the CLI, `reproduce all` and
//! `report` loop over.
//!
//! Two traits split what a study is:
//! - [`Study`]: something `swarmlab reproduce <name>` runs (a training study runs its preset through
//!   `swarmlab run`; `verde`, `sapo` and `codezero` have runs of their own);
//! - [`Findings`]: what a training study adds to *any* run whose configuration has its arms or parts —
//!   measurements after the arms, claims beside the papers', report sections and plots. A user's own
//!   configuration with NoLoCo arms gets NoLoCo's claims the same way the preset does.
//!
//! Adding a study: write a module with a unit struct implementing [`Study`] (and [`Findings`] if it trains
//! through `swarmlab run`), and list it in [`STUDIES`] (and [`FINDINGS`]).

pub(crate) mod baseline;
pub(crate) mod checkfree;
pub(crate) mod codezero;
pub(crate) mod compose;
pub(crate) mod noloco;
pub(crate) mod sapo;
mod seeds;
pub(crate) mod skippipe;
pub(crate) mod sweep;
pub(crate) mod verde;

pub(crate) use seeds::first_seed;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use models::data::Corpus;
use pipeline::{PipelineSpec, RunReport};
use serde::{Deserialize, Serialize};

use crate::config::{ArmConfig, RunConfig};
use crate::report::{ArmResult, Claim};

/// The rungs of the scale ladder a study can run at (`swarmlab reproduce --scale`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scale {
    /// A smoke check of minutes (`--quick`): fewer steps, a smaller corpus and swarm, one seed.
    Smoke,
    /// The study's preset, sized for a CPU; each claim is also measured at half the model width, so
    /// the report can say which way the gap to the paper moves with width.
    #[default]
    Cpu,
    /// The papers' smallest configuration (their model's width, blocks, heads and sequence length,
    /// their micro-batching) with the preset's arms and steps: for a machine with a GPU.
    Paper,
}

impl Scale {
    /// Its name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Smoke => "smoke",
            Self::Cpu => "cpu",
            Self::Paper => "paper",
        }
    }
}

/// How `swarmlab reproduce` was asked to run a study.
#[derive(Debug, Clone)]
pub(crate) struct Reproduce {
    /// Output folder (a default under `runs/` if not given).
    pub(crate) out: Option<PathBuf>,
    /// The rung of the scale ladder.
    pub(crate) scale: Scale,
    /// The corpus of the training studies instead of their preset's (`--corpus`).
    pub(crate) corpus: Option<crate::config::CorpusConfig>,
    /// Seeds run at once (at least 1).
    pub(crate) jobs: usize,
    /// Where the tensors live (resolved once, by the CLI).
    pub(crate) device: models::DeviceSpec,
    /// Replace a run already in `out`.
    pub(crate) force: bool,
    /// Run even past this machine's memory or a week of compute (as estimated).
    pub(crate) allow_large: bool,
    /// Seeds per training study (at least 1).
    pub(crate) seeds: usize,
    /// Take what an earlier run into `out` finished the same way as it is (`--resume`): a whole study
    /// (see [`crate::all::reproduce_study`], which also sets `force` to replace what did not finish) or,
    /// in a seeded study, each finished seed.
    pub(crate) resume: bool,
    /// A pretrained checkpoint for the studies that train policies (`--model`; only `sapo` takes one).
    pub(crate) model: Option<String>,
    /// A reasoning-gym export to deal tasks from instead of our task families (`--tasks`; `sapo`
    /// with a `model` only), as an absolute path.
    pub(crate) tasks: Option<String>,
}

impl Reproduce {
    /// Whether this is the smoke-check rung.
    pub(crate) fn quick(&self) -> bool {
        self.scale == Scale::Smoke
    }

    /// The command-line flags that ask for this (for the reports' first lines).
    pub(crate) fn flags(&self) -> String {
        let mut flags = format!(" --scale {} --seeds {}", self.scale.name(), self.seeds);
        if let Some(corpus) = &self.corpus {
            flags.push_str(&format!(" --corpus {}", corpus.flag()));
        }
        if let Some(model) = &self.model {
            flags.push_str(&format!(" --model {model}"));
        }
        if let Some(tasks) = &self.tasks {
            flags.push_str(&format!(" --tasks {tasks}"));
        }
        flags
    }
}

/// A study `swarmlab reproduce <name>` knows.
pub(crate) trait Study: Sync {
    /// Its name on the command line and its folder under `reproduce all`.
    fn name(&self) -> &'static str;

    /// Runs it and writes its report; returns the wall seconds of its runs (a seed taken from an
    /// earlier run, with `--resume`, counts that run's).
    fn reproduce(&self, how: &Reproduce) -> Result<f64>;

    /// If `run_dir` holds a run of this study's own (not a `swarmlab run` folder), rewrites its report
    /// and plots from the raw results there (`swarmlab report`).
    fn rewrite(&self, _run_dir: &Path) -> Option<Result<()>> {
        None
    }
}

/// A training study: its preset is an ordinary run configuration (its `config.toml` runs again with
/// `swarmlab run`).
pub(crate) trait TrainingStudy: Sync {
    /// The study's name.
    fn name(&self) -> &'static str;

    /// The study's configuration at CPU scale.
    fn preset(&self) -> RunConfig;

    /// The study at the papers' smallest configuration ([`Scale::Paper`]): their model and sequence
    /// length, their micro-batching; the preset's arms and steps. Unchanged unless the study says.
    fn paper(&self, cfg: RunConfig) -> RunConfig {
        cfg
    }
}

impl<T: TrainingStudy> Study for T {
    fn name(&self) -> &'static str {
        TrainingStudy::name(self)
    }

    fn reproduce(&self, how: &Reproduce) -> Result<f64> {
        let preset = self.preset();
        let corpus = how.corpus.clone().unwrap_or(preset.corpus.clone());
        let cfg = RunConfig { device: how.device, corpus, ..preset };
        let cfg = if how.scale == Scale::Paper { self.paper(cfg) } else { cfg };
        // Several seeds, or the CPU rung's second width: a study over runs.
        if how.seeds > 1 || how.scale == Scale::Cpu {
            return seeds::reproduce(cfg, how);
        }
        let output = crate::run::Output { out: how.out.clone(), force: how.force, allow_large: how.allow_large };
        let began = std::time::Instant::now();
        crate::run::run(cfg, output, how.quick())?;
        Ok(began.elapsed().as_secs_f64())
    }
}

/// Every study `swarmlab reproduce` knows, in the order `reproduce all` runs them.
pub(crate) static STUDIES: [&dyn Study; 7] = [
    &noloco::NoLoCoStudy,
    &skippipe::SkipPipeStudy,
    &checkfree::CheckFreeStudy,
    &compose::ComposeStudy,
    &verde::VerdeStudy,
    &sapo::SapoStudy,
    &codezero::CodeZeroStudy,
];

/// The names `swarmlab reproduce` accepts: every study, and `all`.
pub(crate) fn names() -> Vec<&'static str> {
    STUDIES.iter().map(|s| s.name()).chain(["all"]).collect()
}

/// The study called `name`.
pub(crate) fn find(name: &str) -> Result<&'static dyn Study> {
    match STUDIES.iter().find(|s| s.name() == name) {
        Some(s) => Ok(*s),
        None => bail!("unknown study {name:?}: one of {}", names().join(", ")),
    }
}

/// The preset of training study `name` (for tests and tools).
#[cfg(test)]
pub(crate) fn preset(name: &str) -> Result<RunConfig> {
    Ok(training_study(name)?.preset())
}

/// The training study called `name`.
pub(crate) fn training_study(name: &str) -> Result<&'static dyn TrainingStudy> {
    let presets: [&'static dyn TrainingStudy; 4] =
        [&noloco::NoLoCoStudy, &skippipe::SkipPipeStudy, &checkfree::CheckFreeStudy, &compose::ComposeStudy];
    match presets.into_iter().find(|s| s.name() == name) {
        Some(s) => Ok(s),
        None => bail!("unknown training study {name:?}"),
    }
}

/// What a run measured beside its arms' series: the parts of the configuration that studies own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Parts {
    /// NoLoCo's synchronisation-vs-swarm-size points (`[scale]`).
    pub(crate) scale: Vec<::noloco::scale::ScalePoint>,
    /// SkipPipe's scheduler and dropped-stage tables (`[skippipe]`).
    pub(crate) skip: skippipe::SkipResults,
}

/// A finished (or interrupted) run, as the studies see it.
#[derive(Clone, Copy)]
pub(crate) struct RunView<'a> {
    pub(crate) cfg: &'a RunConfig,
    pub(crate) corpus: &'a Corpus,
    pub(crate) results: &'a [ArmResult],
    pub(crate) parts: &'a Parts,
}

impl<'a> RunView<'a> {
    /// The result of the first arm whose configuration `pred` accepts, if it ran.
    pub(crate) fn result_where(&self, pred: impl Fn(&ArmConfig) -> bool) -> Option<&'a ArmResult> {
        let arm = self.cfg.arms.iter().find(|a| pred(a))?;
        self.results.iter().find(|r| r.label == arm.label)
    }
}

/// Hands a run's state to the writer after each part, so an interrupted run keeps what it finished.
pub(crate) type Save<'a> = dyn FnMut(&Parts) -> Result<()> + 'a;

/// What a training study adds to any run whose configuration has its arms or parts.
pub(crate) trait Findings: Sync {
    /// After arm `i` trained: measurements on its trained model.
    fn after_arm(&self, _cfg: &RunConfig, _arm: &TrainedArm<'_>, _parts: &mut Parts) -> Result<()> {
        Ok(())
    }

    /// After every arm: measurements of their own (unless the run was interrupted: `stopped`).
    fn after_arms(&self, _cfg: &RunConfig, _parts: &mut Parts, _stopped: &dyn Fn() -> bool, _save: &mut Save<'_>) -> Result<()> {
        Ok(())
    }

    /// The papers' claims this run speaks to, each beside what it measured.
    fn claims(&self, run: &RunView<'_>) -> Vec<Claim>;

    /// The authors' settings beside this configuration's, if it has the study's arms.
    fn setup(&self, _cfg: &RunConfig) -> Option<Setup> {
        None
    }

    /// The study's section of report.md (empty if the run has nothing of it).
    fn section(&self, _run: &RunView<'_>) -> String {
        String::new()
    }

    /// The study's own files: plots, tables.
    fn write_files(&self, _out: &Path, _run: &RunView<'_>) -> Result<()> {
        Ok(())
    }
}

/// One trained arm, as [`Findings::after_arm`] sees it.
pub(crate) struct TrainedArm<'a> {
    pub(crate) label: &'a str,
    pub(crate) spec: &'a PipelineSpec,
    pub(crate) report: &'a RunReport,
    pub(crate) corpus: &'a Corpus,
}

/// Every training study's findings, in the order their claims and sections appear in a report.
pub(crate) static FINDINGS: [&dyn Findings; 5] = [
    &baseline::Baseline,
    &noloco::NoLoCoStudy,
    &checkfree::CheckFreeStudy,
    &compose::ComposeStudy,
    &skippipe::SkipPipeStudy,
];

/// A study's settings beside the authors' released code.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// The authors' repository.
    pub(crate) repository: &'static str,
    pub(crate) rows: Vec<SetupRow>,
}

/// One setting of a study beside the authors' released code.
#[derive(Debug, Clone)]
pub(crate) struct SetupRow {
    /// The setting.
    pub(crate) setting: &'static str,
    /// Theirs.
    pub(crate) theirs: String,
    /// The file of their repository it is read from.
    pub(crate) file: &'static str,
    /// Ours, read from the run's configuration.
    pub(crate) ours: String,
    /// Why ours differs (empty when it does not).
    pub(crate) why: String,
}

impl SetupRow {
    pub(crate) fn new(
        setting: &'static str,
        theirs: impl Into<String>,
        file: &'static str,
        ours: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Self { setting, theirs: theirs.into(), file, ours: ours.into(), why: why.into() }
    }
}

/// The setup tables of every study whose arms `cfg` has: the authors' settings (and the file each is read
/// from) beside ours, and the reason for each difference.
pub(crate) fn setup_section(cfg: &RunConfig) -> String {
    let mut md = String::new();
    for setup in FINDINGS.iter().filter_map(|f| f.setup(cfg)) {
        md.push_str(&format!("\nFrom {}:\n\n", setup.repository));
        md.push_str("| setting | authors' code | their file | ours | why ours differs |\n|---|---|---|---|---|\n");
        for r in setup.rows {
            let why = if r.why.is_empty() { "same" } else { &r.why };
            md.push_str(&format!("| {} | {} | `{}` | {} | {why} |\n", r.setting, r.theirs, r.file, r.ours));
        }
    }
    if md.is_empty() { md } else { format!("\n## Setup beside the authors' code\n{md}") }
}

/// The model of `cfg` in words: preset, width, blocks, heads, parameters, sequence length.
pub(crate) fn model_words(cfg: &RunConfig) -> String {
    match cfg.model() {
        Ok(m) => format!(
            "`{}` at width {}, {} blocks, {} heads ({} parameters), sequences of {}",
            cfg.model_preset,
            m.d_model,
            m.n_layers,
            m.n_heads,
            m.param_count(),
            cfg.seq
        ),
        Err(e) => format!("`{}` ({e})", cfg.model_preset),
    }
}

/// The shape of an authors' model: what the paper rung takes and the setup table compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ModelShape {
    pub(crate) width: usize,
    pub(crate) heads: usize,
    pub(crate) ffn: usize,
    pub(crate) blocks: usize,
    pub(crate) seq: usize,
}

impl ModelShape {
    /// `cfg` with this model and sequence length.
    pub(crate) fn apply(self, cfg: RunConfig) -> RunConfig {
        RunConfig {
            width: Some(self.width),
            heads: Some(self.heads),
            ffn: Some(self.ffn),
            layers: Some(self.blocks),
            seq: self.seq,
            ..cfg
        }
    }

    /// Why the model row of a setup table differs: nothing but the vocabulary when `cfg`'s model has
    /// this width, blocks and sequence length, else `smaller` (the reason at CPU scale).
    pub(crate) fn reason(self, cfg: &RunConfig, smaller: &str) -> String {
        match cfg.model() {
            Ok(m) if m.d_model == self.width && m.n_layers == self.blocks && cfg.seq == self.seq => {
                "the same shape; bytes as tokens (a vocabulary of 256, theirs a subword tokenizer's)".to_owned()
            }
            _ => smaller.to_owned(),
        }
    }
}

/// The inner optimizer of `cfg` in words (family, β, weight decay).
pub(crate) fn optimizer_words(cfg: &RunConfig) -> String {
    let o = &cfg.optim;
    let family = if o.weight_decay == 0.0 { "Adam (no weight decay)".to_owned() } else { format!("AdamW, weight decay {}", o.weight_decay) };
    format!("{family}, β = ({}, {})", o.beta1, o.beta2)
}

/// The learning-rate schedule of `cfg` in words.
pub(crate) fn schedule_words(cfg: &RunConfig) -> String {
    let o = &cfg.optim;
    if o.min_lr == o.lr && o.warmup_steps == 0 {
        format!("constant {}", o.lr)
    } else {
        format!("{} peak, {} warm-up steps, cosine to {} over {} steps", o.lr, o.warmup_steps, o.min_lr, o.total_steps)
    }
}

/// Every claim the run speaks to, study by study.
pub(crate) fn claims(run: &RunView<'_>) -> Vec<Claim> {
    FINDINGS.iter().flat_map(|f| f.claims(run)).collect()
}

/// The first virtual time (s) at which the validation loss is at or below `target`.
pub(crate) fn time_to(r: &ArmResult, target: f64) -> Option<f64> {
    r.val_time.iter().find(|v| v.1 <= target).map(|v| v.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_study_is_found_by_its_name_and_names_are_unique() -> Result<()> {
        let names = names();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].contains(n), "{n} registered twice");
        }
        for s in &STUDIES {
            assert_eq!(find(s.name())?.name(), s.name());
        }
        let err = find("nope").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("noloco") && err.contains("all"), "{err}");
        Ok(())
    }

    #[test]
    fn every_training_study_is_a_valid_config_and_survives_toml() -> Result<()> {
        for name in ["noloco", "skippipe", "checkfree", "compose"] {
            let cfg = preset(name)?;
            cfg.validate()?;
            let text = toml::to_string(&cfg)?;
            assert_eq!(RunConfig::from_toml(&text)?, cfg, "{name} round-trips through config.toml");
            cfg.quick().validate()?;
        }
        assert!(preset("nope").is_err());
        Ok(())
    }

    #[test]
    fn the_paper_rung_takes_the_authors_model_and_stays_valid() -> Result<()> {
        for (name, width, blocks, seq) in
            [("noloco", 768, 12, 1024), ("skippipe", 1024, 24, 1024), ("checkfree", 512, 12, 512), ("compose", 512, 6, 512)]
        {
            let study = training_study(name)?;
            let cfg = study.paper(study.preset());
            cfg.validate()?;
            let m = cfg.model()?;
            assert_eq!((m.d_model, m.n_layers, cfg.seq), (width, blocks, seq), "{name}");
            assert!(m.param_count() > 10 * study.preset().model()?.param_count(), "{name}");
            // Every simulated worker of the study fits one 80 GB GPU, by the run's own estimate.
            let gib = crate::needs::Needs::of(&cfg)?.bytes / f64::from(1u32 << 30);
            assert!(gib < 75.0, "{name} needs about {gib:.1} GiB");
            // The study's own setup table says the shape is the authors' (only the vocabulary differs).
            if name != "compose" {
                let repo = format!("gensyn-ai/{name} ");
                let own = FINDINGS.iter().filter_map(|f| f.setup(&cfg)).find(|s| {
                    format!("{} ", s.repository).to_lowercase().contains(&repo)
                });
                let model = own.and_then(|s| s.rows.into_iter().find(|r| r.setting == "model")).map(|r| r.why);
                assert!(model.as_deref().is_some_and(|m| m.contains("the same shape")), "{name}: {model:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn training_study_reports_open_with_the_authors_settings() -> Result<()> {
        for (name, repos) in [
            ("noloco", &["gensyn-ai/noloco"][..]),
            ("skippipe", &["gensyn-ai/skippipe"]),
            ("checkfree", &["gensyn-ai/CheckFree"]),
            ("compose", &["gensyn-ai/noloco", "gensyn-ai/skippipe", "gensyn-ai/CheckFree"]),
        ] {
            let cfg = preset(name)?;
            let md = setup_section(&cfg);
            for repo in repos {
                assert!(md.contains(repo), "{name}: {repo} missing from\n{md}");
            }
            for setup in FINDINGS.iter().filter_map(|f| f.setup(&cfg)) {
                assert!(setup.rows.iter().all(|r| !r.file.is_empty() && !r.theirs.is_empty() && !r.ours.is_empty()));
            }
        }
        // Ours is read through the protocols' own settings, spelled as a configuration spells them.
        let checkfree = setup_section(&preset("checkfree")?);
        for said in ["ends = \"copy\"", "swapped = \"copy\"", "lr_scale 1.10"] {
            assert!(checkfree.contains(said), "{said} missing from\n{checkfree}");
        }
        // A run without any study's arms has no setup table.
        assert_eq!(setup_section(&RunConfig::default()), "");
        Ok(())
    }

    #[test]
    fn presets_take_the_authors_optimizer_and_rules() -> Result<()> {
        let noloco = preset("noloco")?;
        assert_eq!((noloco.optim.weight_decay, noloco.optim.beta2), (0.0, 0.999));
        assert!(noloco.eval_all_replicas);
        let every = |kind: &str| noloco.arms.iter().find(|a| a.sync.kind == kind).and_then(|a| a.sync.int("every"));
        assert_eq!(every("diloco").zip(every("noloco")).map(|(d, n)| d / n), Some(2), "H_NoLoCo : H_DiLoCo = 1 : 2");
        assert!(noloco.arms.iter().filter(|a| a.sync.kind == "diloco").all(|a| a.routing.kind == "random"));
        let checkfree = preset("checkfree")?;
        assert_eq!((checkfree.optim.lr, checkfree.optim.warmup_steps), (checkfree.optim.min_lr, 0), "a constant rate");
        assert_eq!(checkfree.optim.weight_decay, 0.0);
        let scale = checkfree
            .arms
            .iter()
            .find(|a| a.recovery.kind == "checkfree")
            .and_then(|a| a.recovery.settings::<::checkfree::CheckFree>().ok())
            .map(|c| c.lr_scale);
        assert_eq!(scale, Some(1.1));
        let skippipe = preset("skippipe")?;
        let o = &skippipe.optim;
        assert_eq!((o.beta2, o.weight_decay, o.grad_clip, o.warmup_steps), (0.999, 0.0, 1.0, 0));
        assert_eq!(o.lr, o.min_lr, "a constant rate");
        // Every arm but the one ablation trains as the released trainer does.
        let per_stage = skippipe.arms.iter().filter(|a| a.gradients == pipeline::GradientScaling::PerStage);
        assert_eq!(per_stage.map(|a| a.label.as_str()).collect::<Vec<_>>(), ["SkipPipe 33%, per-stage gradients"]);
        let counts = skippipe.arms.iter().filter_map(|a| a.routing.settings::<::skippipe::Scheduling>().ok());
        assert!(counts.clone().count() >= 2 && counts.into_iter().all(|s| s.count == ::skippipe::SkipCount::TransformerStages));
        Ok(())
    }
}
