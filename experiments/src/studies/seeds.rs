//! A training study over several seeds (`swarmlab reproduce <study> --seeds N`): the study's run once per
//! seed, each in a folder of its own (`seed-<k>/`, a complete run), and a report over them that judges
//! every claim on the range of its values (see [`crate::claims`]).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::claims::{Claim, SeededClaim, across_seeds, figure};
use crate::config::RunConfig;
use crate::files::{fresh_out_dir, write_atomic};
use crate::run::Output;
use crate::studies::Reproduce;

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
}

/// Runs `cfg` once per seed (`cfg.seed`, `cfg.seed + 1`, …) into `<out>/seed-<k>/`, then writes
/// `<out>/report.md` and `<out>/summary.json` over them.
pub(crate) fn reproduce(cfg: RunConfig, how: &Reproduce) -> Result<()> {
    let out = fresh_out_dir(how.out.clone(), &cfg.name, how.force)?;
    let mut runs: Vec<Vec<Claim>> = Vec::new();
    let mut seeds = Vec::new();
    let mut walls = Vec::new();
    for k in 0..how.seeds {
        let seed = cfg.seed.wrapping_add(k as u64);
        eprintln!("\n--- {} seed {} of {} (run seed {seed}) ---", cfg.name, k + 1, how.seeds);
        let output = Output { out: Some(out.join(format!("seed-{k}"))), force: how.force, allow_large: how.allow_large };
        let t = Instant::now();
        let claims = crate::run::run(RunConfig { seed, ..cfg.clone() }, output, how.quick)
            .with_context(|| format!("seed {seed}"))?;
        runs.push(claims);
        seeds.push(seed);
        walls.push(t.elapsed().as_secs_f64());
    }
    let claims = across_seeds(&runs);
    let summary = SeededSummary { name: &cfg.name, seeds, wall_s: walls, claims: &claims };
    write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    let ran = if how.quick { cfg.clone().quick() } else { cfg.clone() };
    write_atomic(&out.join("report.md"), markdown(&summary, how.quick, &ran).as_bytes())?;
    println!("report over {} seeds: {}", how.seeds, out.join("report.md").display());
    Ok(())
}

fn markdown(s: &SeededSummary<'_>, quick: bool, cfg: &RunConfig) -> String {
    let n = s.seeds.len();
    let mut md = format!("# swarmlab study `{}` over {n} seeds\n\n", s.name);
    let _ = writeln!(
        md,
        "`swarmlab reproduce {}{} --seeds {n}`: the study's run once per seed (run seeds {}), {:.0} s of wall time in all. Each claim's figure is the mean over the seeds with its range (min–max); the verdict is \"yes\" only when every seed is on the paper's side of the claim, \"no\" when every seed is on the other side, \"inconclusive\" when the range spans it.\n",
        s.name,
        if quick { " --quick" } else { "" },
        s.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        s.wall_s.iter().sum::<f64>()
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
            quick: false,
            device: models::DeviceSpec::default(),
            force: false,
            allow_large: false,
            seeds: 2,
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
        // The folder now holds a study: it is not replaced without --force.
        assert!(reproduce(cfg, &how).is_err());
        Ok(())
    }
}
