//! A training study over several seeds (`swarmlab reproduce <study> --seeds N`): the study's run once per
//! seed, each in a folder of its own (`seed-<k>/`, a complete run), and a report over them that judges
//! every claim on the range of its values (see [`crate::claims`]).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::claims::{Claim, SeededClaim, across_seeds, figure, trend_table};
use crate::config::RunConfig;
use crate::files::{fresh_out_dir, write_atomic};
use crate::run::Output;
use crate::studies::{Reproduce, Scale};

/// What `summary.json` of a seeded study holds.
#[derive(Serialize)]
struct SeededSummary<'a> {
    name: &'a str,
    /// The run seed of each seed's folder, in order.
    seeds: Vec<u64>,
    /// Wall seconds of each seed's run.
    wall_s: Vec<f64>,
    /// Each claim with its per-seed values, their mean and range, and the verdict from the range.
    claims: &'a [SeededClaim],
    /// The same claims at half the model width (the CPU rung), in `width-<w>/seed-<k>/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    narrower: Option<Narrower<'a>>,
}

/// The claims of a study's runs at a second, narrower model width.
#[derive(Serialize)]
struct Narrower<'a> {
    width: usize,
    wall_s: Vec<f64>,
    claims: &'a [SeededClaim],
}

/// Each seed's claims and wall seconds.
struct SeedRuns {
    seeds: Vec<u64>,
    wall_s: Vec<f64>,
    claims: Vec<SeededClaim>,
}

/// Runs `cfg` once per seed (`cfg.seed`, `cfg.seed + 1`, …) into `<out>/seed-<k>/`; at the CPU rung
/// also at half the model width into `<out>/width-<w>/seed-<k>/`; then writes `<out>/report.md` and
/// `<out>/summary.json` over them. Returns the wall seconds of all those runs.
pub(crate) fn reproduce(cfg: RunConfig, how: &Reproduce) -> Result<f64> {
    let out = fresh_out_dir(how.out.clone(), &cfg.name, how.force)?;
    // The preset's width, and at the CPU rung half of it: every run of both goes through one pool, so
    // no core idles while the last seed of the first width runs.
    let mut series = vec![Series { cfg: cfg.clone(), out: out.clone(), label: String::new() }];
    let narrow_width = match how.scale {
        Scale::Cpu => {
            let (narrow, width) = narrower(&cfg)?;
            series.push(Series {
                cfg: narrow,
                out: out.join(format!("width-{width}")),
                label: format!(" at width {width}"),
            });
            Some(width)
        }
        _ => None,
    };
    let mut runs = run_seeds(&series, how)?.into_iter();
    let main = runs.next().ok_or_else(|| anyhow::anyhow!("no runs at the preset's width"))?;
    let narrow = narrow_width.zip(runs.next());
    let summary = SeededSummary {
        name: &cfg.name,
        seeds: main.seeds.clone(),
        wall_s: main.wall_s.clone(),
        claims: &main.claims,
        narrower: narrow.as_ref().map(|(width, runs)| Narrower {
            width: *width,
            wall_s: runs.wall_s.clone(),
            claims: &runs.claims,
        }),
    };
    write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    let ran = if how.quick() { cfg.clone().quick() } else { cfg.clone() };
    let width = ran.model().map_or(0, |m| m.d_model);
    let mut md = markdown(&summary, how, &ran);
    if let Some((w, runs)) = &narrow {
        md.push_str(&trend_section((*w, &runs.claims), (width, &main.claims), *w));
    }
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    let plural = if how.seeds == 1 { "" } else { "s" };
    println!("report over {} seed{plural}: {}", how.seeds, out.join("report.md").display());
    Ok(main.wall_s.iter().chain(narrow.iter().flat_map(|(_, runs)| &runs.wall_s)).sum())
}

/// `cfg` at half its model width (and half its heads, when that keeps the head size even), and that
/// width.
fn narrower(cfg: &RunConfig) -> Result<(RunConfig, usize)> {
    let model = cfg.model()?;
    let width = model.d_model / 2;
    let heads = if (width / model.n_heads.max(1)) % 2 == 0 { model.n_heads } else { (model.n_heads / 2).max(1) };
    let narrow = RunConfig { width: Some(width), heads: Some(heads), ffn: Some(model.d_ff / 2), ..cfg.clone() };
    narrow.model().with_context(|| format!("{} at half the width", cfg.name))?;
    Ok((narrow, width))
}

/// One seed's claims and wall seconds, or why it failed.
type SeedResult = Result<(Vec<Claim>, f64)>;

/// A configuration run once per seed into `<out>/seed-<k>/`.
struct Series {
    cfg: RunConfig,
    out: std::path::PathBuf,
    /// How the progress lines tell it apart (empty for the preset's width).
    label: String,
}

/// Runs each series once per seed (`cfg.seed`, `cfg.seed + 1`, …), all runs through one pool of
/// `how.jobs`. With `how.resume`, a seed whose folder holds a finished run of the same configuration is
/// taken as it is (its claims recomputed from its `run.h5`).
fn run_seeds(series: &[Series], how: &Reproduce) -> Result<Vec<SeedRuns>> {
    let n = how.seeds;
    let total = series.len() * n;
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<SeedResult>>> = Mutex::new((0..total).map(|_| None).collect());
    let store = |i: usize, result: SeedResult| {
        if let Ok(mut slots) = done.lock() {
            slots[i] = Some(result);
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..how.jobs.clamp(1, total.max(1)) {
            scope.spawn(|| {
                // Each job runs its seeds' ops on its own thread (and its pool's helpers, if any).
                repops::threads::work_on_this_thread(0);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        return;
                    }
                    let (Series { cfg, out, label }, k) = (&series[i / n], i % n);
                    let seed = cfg.seed.wrapping_add(k as u64);
                    let dir = out.join(format!("seed-{k}"));
                    let seeded = RunConfig { seed, ..cfg.clone() };
                    if how.resume {
                        let ran = if how.quick() { seeded.clone().quick() } else { seeded.clone() };
                        if let Some(finished) = crate::report::finished_run(&dir, &ran) {
                            eprintln!("\n--- {}{label} seed {} of {n} (run seed {seed}): finished earlier, taken as it is ---", cfg.name, k + 1);
                            store(i, Ok(finished));
                            continue;
                        }
                    }
                    eprintln!("\n--- {}{label} seed {} of {n} (run seed {seed}) ---", cfg.name, k + 1);
                    let output = Output { out: Some(dir), force: how.force, allow_large: how.allow_large };
                    let t = Instant::now();
                    let result = crate::run::run(seeded, output, how.quick())
                        .with_context(|| format!("seed {seed}{label}"))
                        .map(|claims| (claims, t.elapsed().as_secs_f64()));
                    store(i, result);
                }
            });
        }
    });
    let slots = done.into_inner().map_err(|_| anyhow::anyhow!("a seed's run panicked"))?;
    let mut slots = slots.into_iter();
    let mut all = Vec::new();
    for Series { cfg, label, .. } in series {
        let (mut runs, mut walls, mut seeds) = (Vec::new(), Vec::new(), Vec::new());
        for (k, slot) in slots.by_ref().take(n).enumerate() {
            let (claims, wall) = slot.ok_or_else(|| anyhow::anyhow!("seed {}{label} did not run", k + 1))??;
            runs.push(claims);
            walls.push(wall);
            seeds.push(cfg.seed.wrapping_add(k as u64));
        }
        all.push(SeedRuns { seeds, wall_s: walls, claims: across_seeds(&runs) });
    }
    Ok(all)
}

/// The report's section on how the claims move from the narrower width to the preset's.
fn trend_section(narrow: (usize, &[SeededClaim]), wide: (usize, &[SeededClaim]), narrow_width: usize) -> String {
    let mut md = String::from("\n## Trend with model width\n\n");
    let _ = writeln!(
        md,
        "Every claim measured again at half the model width (width {narrow_width}; runs in \
         [width-{narrow_width}/](width-{narrow_width}/)), the same seeds. Each measure is oriented so that larger is the \
         paper's side: a mean that rises with width is a gap to the paper that shrinks with scale.\n"
    );
    md.push_str(&trend_table(narrow, wide));
    md
}

fn markdown(s: &SeededSummary<'_>, how: &Reproduce, cfg: &RunConfig) -> String {
    let n = s.seeds.len();
    let mut md = format!("# swarmlab study `{}` over {n} seed{}\n\n", s.name, if n == 1 { "" } else { "s" });
    let _ = writeln!(
        md,
        "`swarmlab reproduce {}{}`: the study's run once per seed (run seeds {}), {:.0} s of wall time in all{}. Each claim's figure is the mean over the seeds with its range (min–max); the verdict is \"yes\" only when every seed is on the paper's side of the claim, \"no\" when every seed is on the other side, \"inconclusive\" when the range spans it.\n",
        s.name,
        how.flags(),
        s.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        s.wall_s.iter().sum::<f64>(),
        s.narrower
            .as_ref()
            .map_or(String::new(), |n| format!(" ({:.0} s more at half the width)", n.wall_s.iter().sum::<f64>()))
    );
    md.push_str(&crate::studies::setup_section(cfg));
    md.push_str("\n## Claims\n\n");
    md.push_str(&crate::claims::seeded_table(s.claims));
    md.push_str("\n## Per seed\n\n| claim |");
    for (k, seed) in s.seeds.iter().enumerate() {
        let _ = write!(md, " [seed {seed}](seed-{k}/report.md) |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(n));
    md.push('\n');
    for c in s.claims {
        let _ = write!(md, "| {} |", c.claim);
        for (v, verdict) in c.values.iter().zip(&c.per_seed) {
            let value = v.map_or("–".to_owned(), figure);
            let _ = write!(md, " {value} ({}) |", verdict.text());
        }
        md.push('\n');
    }
    md.push_str("\nEach seed's folder holds its complete run: report.md with every table and plot, run.h5, metrics.csv, summary.json and config.toml (which `swarmlab run` runs again).\n");
    md
}

/// The first seed's folder of a seeded study in `dir`, if `dir` holds one.
pub(crate) fn first_seed(dir: &Path) -> Option<std::path::PathBuf> {
    let first = dir.join("seed-0");
    first.join("report.md").exists().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ArmConfig;

    #[test]
    fn a_study_over_seeds_keeps_each_seed_and_judges_claims_on_the_range() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let cfg = RunConfig {
            name: "tiny".into(),
            steps: 6,
            eval_every: 3,
            eval_batches: 1,
            arms: vec![ArmConfig::new("R=1", 1, 1), ArmConfig::new("DDP R=4", 1, 4)],
            ..RunConfig::default()
        };
        let how = Reproduce {
            out: Some(dir.path().join("study")),
            scale: Scale::Cpu,
            corpus: None,
            jobs: 2,
            device: models::DeviceSpec::default(),
            force: false,
            allow_large: false,
            seeds: 2,
            resume: false,
            model: None,
            tasks: None,
        };
        reproduce(cfg.clone(), &how)?;
        let out = dir.path().join("study");
        for k in 0..2 {
            let seed_cfg = RunConfig::load(&out.join(format!("seed-{k}/config.toml")))?;
            assert_eq!(seed_cfg.seed, cfg.seed + k, "seed {k} ran with its own run seed");
        }
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
        let claim = &summary["claims"][0];
        assert_eq!(claim["id"], "baseline.data_parallel");
        let values = claim["values"].as_array().map(Vec::len);
        assert_eq!(values, Some(2), "one value per seed: {claim}");
        let report = std::fs::read_to_string(out.join("report.md"))?;
        assert!(report.contains("## Claims") && report.contains("2 seeds)"), "{report}");
        assert!(report.contains("[seed 1](seed-0/report.md)"), "{report}");
        assert_eq!(first_seed(&out), Some(out.join("seed-0")));
        // The CPU rung measured every claim again at half the width, with the same seeds.
        let narrow = RunConfig::load(&out.join("width-32/seed-1/config.toml"))?;
        assert_eq!((narrow.width, narrow.seed), (Some(32), cfg.seed + 1));
        assert_eq!(summary["narrower"]["width"], 32);
        assert!(report.contains("## Trend with model width") && report.contains("| claim | width 32"), "{report}");
        // The folder now holds a study: it is not replaced without --force.
        assert!(reproduce(cfg.clone(), &how).is_err());
        // Resumed after seed 2 was cut short: seed 1 is taken as it is, seed 2 runs again, and the
        // claims are judged over both as before.
        let kept = std::fs::read(out.join("seed-0/run.h5"))?;
        std::fs::remove_file(out.join("seed-1/run.h5"))?;
        // As `reproduce --resume` asks for it: the folder's unfinished parts are replaced.
        let resumed = Reproduce { resume: true, force: true, ..how.clone() };
        reproduce(cfg.clone(), &resumed)?;
        assert_eq!(std::fs::read(out.join("seed-0/run.h5"))?, kept, "a finished seed is not run again");
        assert!(out.join("seed-1/run.h5").is_file(), "the unfinished seed ran again");
        let again: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
        assert_eq!(again["claims"][0]["values"], summary["claims"][0]["values"], "the same runs, the same figures");
        // Another configuration is not taken for a finished one: every seed runs again.
        reproduce(RunConfig { steps: 3, ..cfg }, &resumed)?;
        assert_ne!(std::fs::read(out.join("seed-0/run.h5"))?, kept);
        Ok(())
    }
}
