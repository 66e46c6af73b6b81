//! `swarmlab reproduce codezero`: a CodeZero-style swarm at laptop scale — proposers, solvers and
//! evaluators on programming problems checked by execution, with a lying agent among them — played
//! with every agent in every role and with roles rotating by a seeded draw. Reward per role over rounds,
//! the solvers' held-out pass rate, the difficulty of proposed problems over time, what was dropped from
//! peers and why, and the sandbox's share of the wall time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use codezero::{CodeZeroConfig, CodeZeroRun};
use genrl::roles::RoleSchedule;
use serde::{Deserialize, Serialize};

use crate::codezero_swarm::{mean_of, run_swarm, warm_start};
use crate::files::{fresh_out_dir, write_atomic};
use crate::plots::series_plot;
use crate::studies::{Reproduce, Study};

/// The CodeZero study.
pub(crate) struct CodeZeroStudy;

impl Study for CodeZeroStudy {
    fn name(&self) -> &'static str {
        "codezero"
    }

    fn reproduce(&self, how: &Reproduce) -> Result<f64> {
        let began = Instant::now();
        reproduce(how.out.clone(), how.force, how.quick(), how.seeds, how.device)?;
        Ok(began.elapsed().as_secs_f64())
    }

    /// A folder with `codezero.json` (written by `reproduce codezero`).
    fn rewrite(&self, run_dir: &Path) -> Option<Result<()>> {
        run_dir.join("codezero.json").exists().then(|| rewrite(run_dir))
    }
}

/// The study's base configuration.
pub(crate) fn base(quick: bool) -> CodeZeroConfig {
    let mut cfg = CodeZeroConfig { agents: 6, liars: 1, rounds: 300, held_out: 60, ..CodeZeroConfig::default() };
    cfg.warm_start.steps = 400;
    if quick {
        cfg.agents = 4;
        cfg.rounds = 60;
        cfg.warm_start.steps = 200;
        cfg.held_out = 30;
    }
    cfg
}

/// One arm: a swarm and how its roles are seated.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Arm {
    name: String,
    roles: RoleSchedule,
    run: CodeZeroRun,
    seconds: f64,
}

/// Every arm run from one seed (its own warm start).
#[derive(Debug, Serialize, Deserialize)]
struct SeedRun {
    seed: u64,
    warm_held_out: f64,
    warm_proposer_valid: f64,
    arms: Vec<Arm>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Findings {
    quick: bool,
    /// The configuration of the first seed (the others differ in `seed` only).
    config: CodeZeroConfig,
    seeds: Vec<SeedRun>,
    seconds: f64,
}

impl Findings {
    /// The arms' names, in order.
    fn arm_names(&self) -> Vec<String> {
        self.seeds.first().map(|s| s.arms.iter().map(|a| a.name.clone()).collect()).unwrap_or_default()
    }
}

/// `swarmlab reproduce codezero [--quick] [--seeds N]`.
fn reproduce(out: Option<PathBuf>, force: bool, quick: bool, seeds: usize, device: models::DeviceSpec) -> Result<()> {
    let out = fresh_out_dir(out, "codezero", force)?;
    let began = Instant::now();
    let cfg = CodeZeroConfig { device, ..base(quick) };
    let n = cfg.agents + cfg.liars;
    eprintln!(
        "swarmlab reproduce codezero{}: {} agents + {} liar, {} rounds, {} seed(s), every role for all, then rotating roles",
        if quick { " --quick" } else { "" },
        cfg.agents,
        cfg.liars,
        cfg.rounds,
        seeds.max(1)
    );
    let mut runs = Vec::new();
    for k in 0..seeds.max(1) as u64 {
        let cfg = CodeZeroConfig { seed: cfg.seed + k, ..cfg.clone() };
        eprintln!("seed {}:", cfg.seed);
        let warm = warm_start(&cfg)?;
        // Rotation: a third of the seats each round for proposers, half for solvers, the rest for evaluators.
        let proposers = (n / 3).max(1);
        let solvers = (n / 2).max(1);
        let rotate = RoleSchedule::Rotate { seed: cfg.seed, counts: vec![proposers, solvers, n - proposers - solvers] };
        let mut arms = Vec::new();
        for (name, roles) in [("all roles", RoleSchedule::All), ("rotating roles", rotate)] {
            let arm_cfg = CodeZeroConfig { roles: roles.clone(), ..cfg.clone() };
            let t = Instant::now();
            let run = run_swarm(name, &arm_cfg, &warm)?;
            arms.push(Arm { name: name.into(), roles, run, seconds: t.elapsed().as_secs_f64() });
        }
        runs.push(SeedRun {
            seed: cfg.seed,
            warm_held_out: warm.held_out,
            warm_proposer_valid: warm.proposer_valid,
            arms,
        });
    }
    let study = Findings { quick, config: cfg, seeds: runs, seconds: began.elapsed().as_secs_f64() };
    write_all(&out, &study)?;
    write_atomic(&out.join("codezero.json"), serde_json::to_string_pretty(&study)?.as_bytes())?;
    write_atomic(&out.join("config.toml"), toml::to_string(&study.config)?.as_bytes())?;
    println!("report: {}", out.join("report.md").display());
    Ok(())
}

/// Rewrites report.md, summary.json and the plots of a `reproduce codezero` folder from its codezero.json.
fn rewrite(dir: &Path) -> Result<()> {
    let path = dir.join("codezero.json");
    let text = crate::files::read_text(&path, crate::files::MAX_RESULTS_BYTES)?;
    let study: Findings =
        serde_json::from_str(&text).with_context(|| format!("{} is not a codezero study", path.display()))?;
    write_all(dir, &study)
}

fn write_all(out: &Path, study: &Findings) -> Result<()> {
    write_plots(out, study)?;
    write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&summary(study))?.as_bytes())?;
    write_atomic(&out.join("report.md"), markdown(study).as_bytes())
}

/// An arm's headline figures.
#[derive(Debug, Serialize)]
struct Headline {
    arm: String,
    seed: u64,
    solver_reward_first_tenth: Option<f64>,
    solver_reward_last_tenth: Option<f64>,
    held_out_before: f64,
    held_out_after: f64,
    proposer_reward: Option<f64>,
    proposer_reward_first_half: Option<f64>,
    proposer_reward_second_half: Option<f64>,
    proposed_pass_rate_first_half: Option<f64>,
    proposed_pass_rate_second_half: Option<f64>,
    proposals_that_run_first_tenth: Option<f64>,
    proposals_that_run_last_tenth: Option<f64>,
    trivial_problems_first_tenth: Option<f64>,
    trivial_problems_last_tenth: Option<f64>,
    dropped: codezero::Dropped,
    sandbox_share: f64,
    seconds: f64,
}

/// The per-round series of an arm, means over honest agents.
struct Series {
    solver: Vec<Option<f64>>,
    proposer: Vec<Option<f64>>,
    pass_rate: Vec<Option<f64>>,
    valid: Vec<Option<f64>>,
    trivial: Vec<Option<f64>>,
}

fn series(run: &CodeZeroRun) -> Series {
    Series {
        solver: run.by_round(|r| r.solver.map(|s| s.reward)),
        proposer: run.by_round(|r| r.proposer.filter(|p| p.learned > 0).map(|p| p.reward)),
        pass_rate: run.by_round(|r| r.proposer.filter(|p| p.learned > 0).map(|p| p.pass_rate)),
        valid: run.by_round(|r| r.proposer.filter(|p| p.proposed > 0).map(|p| p.valid as f64 / p.proposed as f64)),
        trivial: run.by_round(|r| r.proposer.filter(|p| p.valid > 0).map(|p| p.trivial as f64 / p.valid as f64)),
    }
}

fn part(xs: &[Option<f64>], range: std::ops::Range<usize>) -> Option<f64> {
    mean_of(&xs[range.start.min(xs.len())..range.end.min(xs.len())])
}

/// Every seed's headline figures of every arm, seed by seed.
fn summary(study: &Findings) -> Vec<Headline> {
    study.seeds.iter().flat_map(|seed| seed.arms.iter().map(move |a| headline(seed, a))).collect()
}

fn headline(seed: &SeedRun, a: &Arm) -> Headline {
    let s = series(&a.run);
    let n = s.solver.len();
    let tenth = (n / 10).max(1);
    Headline {
        arm: a.name.clone(),
        seed: seed.seed,
        solver_reward_first_tenth: part(&s.solver, 0..tenth),
        solver_reward_last_tenth: part(&s.solver, n.saturating_sub(tenth)..n),
        held_out_before: seed.warm_held_out,
        held_out_after: a.run.held_out(),
        proposer_reward: mean_of(&s.proposer),
        proposer_reward_first_half: part(&s.proposer, 0..n / 2),
        proposer_reward_second_half: part(&s.proposer, n / 2..n),
        proposed_pass_rate_first_half: part(&s.pass_rate, 0..n / 2),
        proposed_pass_rate_second_half: part(&s.pass_rate, n / 2..n),
        proposals_that_run_first_tenth: part(&s.valid, 0..tenth),
        proposals_that_run_last_tenth: part(&s.valid, n.saturating_sub(tenth)..n),
        trivial_problems_first_tenth: part(&s.trivial, 0..tenth),
        trivial_problems_last_tenth: part(&s.trivial, n.saturating_sub(tenth)..n),
        dropped: a.run.dropped(),
        sandbox_share: a.run.sandbox_seconds() / a.run.wall_seconds.max(1e-9),
        seconds: a.seconds,
    }
}

/// The mean over seeds of a figure, with its range when there are several: `0.112 [0.100, 0.130]`.
fn spread(xs: &[Option<f64>]) -> String {
    spread_to(xs, 3)
}

/// [`spread`] with `decimals` decimals (0 for counts).
fn spread_to(xs: &[Option<f64>], decimals: usize) -> String {
    let v: Vec<f64> = xs.iter().flatten().copied().collect();
    if v.is_empty() {
        return "–".into();
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    if v.len() == 1 {
        return format!("{mean:.decimals$}");
    }
    let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
    format!("{mean:.decimals$} [{lo:.decimals$}, {hi:.decimals$}]")
}

/// Whether a figure rises from `before` to `after` in every seed (`yes`), in none (`no`), or in some.
fn verdict(pairs: &[(Option<f64>, Option<f64>)]) -> &'static str {
    let deltas: Vec<f64> = pairs.iter().filter_map(|(a, b)| Some((*b)? - (*a)?)).collect();
    if deltas.is_empty() {
        "–"
    } else if deltas.iter().all(|&d| d > 0.0) {
        "yes"
    } else if deltas.iter().all(|&d| d <= 0.0) {
        "no"
    } else {
        "mixed across seeds"
    }
}

/// The mean over seeds of each round's value (a round where no seed has one has none).
fn mean_series(all: &[Vec<Option<f64>>]) -> Vec<Option<f64>> {
    let n = all.iter().map(Vec::len).max().unwrap_or(0);
    (0..n).map(|r| mean_of(&all.iter().map(|s| s.get(r).copied().flatten()).collect::<Vec<_>>())).collect()
}

/// Moving average over `w` rounds of a series with gaps, as plot points.
fn smoothed(xs: &[Option<f64>], w: usize) -> Vec<(f64, f64)> {
    (0..xs.len()).filter_map(|i| mean_of(&xs[(i + 1).saturating_sub(w.max(1))..=i]).map(|m| (i as f64, m))).collect()
}

fn slug(name: &str) -> String {
    name.replace(' ', "_")
}

fn write_plots(out: &Path, study: &Findings) -> Result<()> {
    let w = (study.config.rounds as usize / 10).max(1);
    let seeds = if study.seeds.len() > 1 { format!(", mean of {} seeds", study.seeds.len()) } else { String::new() };
    for (i, name) in study.arm_names().iter().enumerate() {
        let runs: Vec<Series> = study.seeds.iter().filter_map(|s| s.arms.get(i)).map(|a| series(&a.run)).collect();
        let mean = |f: fn(&Series) -> &Vec<Option<f64>>| {
            smoothed(&mean_series(&runs.iter().map(|s| f(s).clone()).collect::<Vec<_>>()), w)
        };
        series_plot(
            &out.join(format!("reward_by_role_{}.svg", slug(name))),
            &format!("CodeZero, {name}: reward per role ({w}-round average{seeds})"),
            "round",
            "reward",
            &[("solver".to_string(), mean(|s| &s.solver)), ("proposer".to_string(), mean(|s| &s.proposer))],
        )?;
        series_plot(
            &out.join(format!("difficulty_{}.svg", slug(name))),
            &format!("CodeZero, {name}: proposed problems ({w}-round average{seeds})"),
            "round",
            "share",
            &[
                ("solutions passing (lower: harder)".to_string(), mean(|s| &s.pass_rate)),
                ("proposals that run".to_string(), mean(|s| &s.valid)),
                ("trivial problems (a constant or x)".to_string(), mean(|s| &s.trivial)),
            ],
        )?;
    }
    Ok(())
}

/// A schedule as `--roles` writes it.
pub(crate) fn seats(roles: &RoleSchedule) -> String {
    match roles {
        RoleSchedule::All => "all".into(),
        RoleSchedule::Fixed(f) => format!("fixed {f:?}"),
        RoleSchedule::Rotate { counts, .. } => {
            format!("rotate:{}", counts.iter().map(usize::to_string).collect::<Vec<_>>().join("/"))
        }
    }
}

fn markdown(s: &Findings) -> String {
    let cfg = &s.config;
    let heads = summary(s);
    let of = |arm: &str| heads.iter().filter(|h| h.arm == arm).collect::<Vec<_>>();
    let seeds: Vec<String> = s.seeds.iter().map(|r| r.seed.to_string()).collect();
    let mut md = String::new();
    let _ = writeln!(md, "# CodeZero: proposers, solvers and evaluators on problems checked by execution\n");
    let _ = writeln!(
        md,
        "`swarmlab reproduce codezero{}` — {} honest agents and {} lying one, {} rounds, seeds {}; two arms: every \
         agent plays every role each round, and roles seated each round by a seeded draw ({}). Figures are means \
         over the seeds, with their range in brackets. Wall time {:.0} s.\n",
        if s.quick { " --quick" } else { "" },
        cfg.agents,
        cfg.liars,
        cfg.rounds,
        seeds.join(", "),
        s.seeds.first().and_then(|r| r.arms.get(1)).map_or("–".to_string(), |a| seats(&a.roles)),
        s.seconds
    );
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "| arm | solver reward, first tenth | last tenth | held-out pass rate, warm start | end | proposer reward | passing solutions of proposed problems, 1st half | 2nd half | proposals that run, last tenth | trivial problems, first tenth | last tenth | sandbox share of wall time | wall |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let col = |hs: &[&Headline], f: fn(&Headline) -> Option<f64>| spread(&hs.iter().map(|h| f(h)).collect::<Vec<_>>());
    for name in s.arm_names() {
        let hs = of(&name);
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2}% | {:.0} s |",
            col(&hs, |h| h.solver_reward_first_tenth),
            col(&hs, |h| h.solver_reward_last_tenth),
            col(&hs, |h| Some(h.held_out_before)),
            col(&hs, |h| Some(h.held_out_after)),
            col(&hs, |h| h.proposer_reward),
            col(&hs, |h| h.proposed_pass_rate_first_half),
            col(&hs, |h| h.proposed_pass_rate_second_half),
            col(&hs, |h| h.proposals_that_run_last_tenth),
            col(&hs, |h| h.trivial_problems_first_tenth),
            col(&hs, |h| h.trivial_problems_last_tenth),
            100.0 * hs.iter().map(|h| h.sandbox_share).sum::<f64>() / hs.len().max(1) as f64,
            hs.iter().map(|h| h.seconds).sum::<f64>()
        );
    }
    let _ = writeln!(md, "\n## Claims\n");
    let _ = writeln!(
        md,
        "CodeZero has no paper with figures to set ours beside; these are what its design intends, checked here. \
         A claim holds when it holds in every seed ({} here), fails when it fails in every seed, and is mixed \
         otherwise.\n",
        s.seeds.len()
    );
    let _ = writeln!(md, "| claim | ours | holds |\n|---|---|---|");
    for name in s.arm_names() {
        let hs = of(&name);
        let pairs = |f: fn(&Headline) -> (Option<f64>, Option<f64>)| hs.iter().map(|h| f(h)).collect::<Vec<_>>();
        let change = |p: &[(Option<f64>, Option<f64>)]| {
            let (a, b): (Vec<_>, Vec<_>) = p.iter().copied().unzip();
            format!("{} → {}", spread(&a), spread(&b))
        };
        let caught = hs.iter().all(|h| h.dropped.forged_problems > 0 && h.dropped.false_passes > 0);
        let solver = pairs(|h| (h.solver_reward_first_tenth, h.solver_reward_last_tenth));
        let held = pairs(|h| (Some(h.held_out_before), Some(h.held_out_after)));
        let proposer = pairs(|h| (h.proposer_reward_first_half, h.proposer_reward_second_half));
        let rows = [
            (
                "receivers drop what a lying peer shares (forged problems, false passes)",
                format!(
                    "{} forged problems, {} false passes dropped (per seed)",
                    spread_to(&hs.iter().map(|h| Some(h.dropped.forged_problems as f64)).collect::<Vec<_>>(), 0),
                    spread_to(&hs.iter().map(|h| Some(h.dropped.false_passes as f64)).collect::<Vec<_>>(), 0)
                ),
                if caught { "yes" } else { "not exercised in every seed" },
            ),
            ("solvers learn: their reward rises (first → last tenth)", change(&solver), verdict(&solver)),
            ("what solvers learn carries to held-out problems (warm start → end)", change(&held), verdict(&held)),
            (
                "proposers learn to propose what some but not all solve: their reward rises (1st → 2nd half)",
                change(&proposer),
                verdict(&proposer),
            ),
        ];
        for (claim, ours, holds) in rows {
            let _ = writeln!(md, "| {claim} ({name}) | {ours} | {holds} |");
        }
    }
    let _ = writeln!(md, "\n### Dropped from peers (honest agents, summed over agents; mean over seeds), and why\n");
    let _ = writeln!(
        md,
        "| arm | forged problems | false passes | unreadable | no signal | unsampled (over J) |\n|---|---|---|---|---|---|"
    );
    for name in s.arm_names() {
        let hs = of(&name);
        let m = |f: fn(&codezero::Dropped) -> usize| {
            format!("{:.0}", hs.iter().map(|h| f(&h.dropped) as f64).sum::<f64>() / hs.len().max(1) as f64)
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} |",
            m(|d| d.forged_problems),
            m(|d| d.false_passes),
            m(|d| d.unreadable),
            m(|d| d.no_signal),
            m(|d| d.unsampled)
        );
    }
    let _ = writeln!(
        md,
        "\nThe liar shares every problem it solves with a forged last answer (dropped as *forged problems*: a \
         receiver re-runs the reference program) and verdicts that pass every solution (dropped as *false \
         passes*: a receiver re-executes each claimed pass). Honest agents never learn from either.\n"
    );
    let _ = writeln!(
        md,
        "Plots (means over the seeds): `reward_by_role_<arm>.svg`, `difficulty_<arm>.svg`. Raw data: `codezero.json`; \
         headline figures per seed and arm: `summary.json`.\n"
    );
    let _ = writeln!(md, "## Setup, and what differs from CodeZero\n");
    let warm = |f: fn(&SeedRun) -> f64| spread(&s.seeds.iter().map(|r| Some(f(r))).collect::<Vec<_>>());
    let _ = writeln!(
        md,
        "Warm start (per seed): {} supervised steps of {} examples per policy; the solver then passes {} of the {} \
         held-out problems greedily, and {} of the proposer's greedy programs (one per level) run.\n",
        cfg.warm_start.steps,
        cfg.warm_start.batch,
        warm(|r| r.warm_held_out),
        cfg.held_out,
        warm(|r| r.warm_proposer_valid)
    );
    let _ = writeln!(md, "| | CodeZero (rl-swarm `code_gen_exp`) | here | why |\n|---|---|---|---|");
    for (what, theirs, ours, why) in [
        (
            "models",
            "Qwen2.5-Coder 0.5–1.5B, deepseek-coder 1.3B",
            "byte-level decoder LMs of the `tiny` preset (one for proposing, one for solving)",
            "two CPU cores",
        ),
        (
            "language",
            "Python functions with pytest tests",
            "a stack language run by a bounded interpreter (`genrl::env::code`)",
            "a sandbox we can bound in steps and memory, and programs a 0.1M model can write",
        ),
        (
            "problems",
            "question + up to 4 unit tests, as JSON",
            &format!("a reference program and {} test inputs; {} tests shown, the rest hidden", cfg.tests, cfg.shown),
            "the tests always run: their answers come from executing the reference",
        ),
        (
            "judge",
            "an LLM (qwen2.5-coder 1.5B via ollama) dry-runs the tests",
            "evaluators execute the solutions in the sandbox",
            "execution is exact and cheap here; the optional style judge is not built",
        ),
        (
            "solver reward",
            "judge's is_correct, −1 without a code fence, ±0.2 for EOS",
            "1 when every test passes (an unfinished line passes none)",
            "no fences or EOS in a byte LM's one-line programs",
        ),
        (
            "proposer reward",
            "1 − mean pass, 0 when all or none pass",
            "the same; −1 for a program that does not run",
            "a byte LM must first learn to write programs that run",
        ),
        (
            "proposer training",
            "PPO, advantage = reward − batch mean, 2 epochs",
            "clipped policy gradient, the same advantage, 1 epoch",
            "one epoch, as the solvers' GRPO",
        ),
        (
            "difficulty",
            "a prompt level 1–5, adapted from the reward history",
            "levels 1–3 in turn, round by round",
            "the adaptive level is a prompt heuristic, left out",
        ),
        (
            "generations",
            "2 per question, 3 proposals",
            &format!("{} per problem, {} proposals", cfg.completions, cfg.proposals),
            "GRPO needs spread in a group at this scale",
        ),
        (
            "batch",
            "1 dataset + 1 proposed question",
            &format!(
                "{} own-stream + up to {} proposed problems, J = {} shared groups",
                cfg.stream, cfg.proposed, cfg.external
            ),
            "solvers share rollouts as in SAPO",
        ),
    ] {
        let _ = writeln!(md, "| {what} | {theirs} | {ours} | {why} |");
    }
    let _ = writeln!(
        md,
        "\nSandbox limits per run: {} steps, {} live values, {} printed values, recursion depth {}, {} quotation calls, programs of {} bytes.",
        cfg.limits.steps,
        cfg.limits.values,
        cfg.limits.printed,
        cfg.limits.recursion,
        cfg.limits.calls,
        cfg.limits.program_bytes
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_holds_only_when_every_seed_shows_it() {
        assert_eq!(verdict(&[(Some(0.1), Some(0.2)), (Some(0.3), Some(0.4))]), "yes");
        assert_eq!(verdict(&[(Some(0.1), Some(0.1)), (Some(0.3), Some(0.2))]), "no", "no rise is not a rise");
        assert_eq!(verdict(&[(Some(0.1), Some(0.2)), (Some(0.3), Some(0.2))]), "mixed across seeds");
        assert_eq!(verdict(&[(None, Some(0.2))]), "–", "nothing measured");
        assert_eq!(spread(&[Some(0.1), None, Some(0.3)]), "0.200 [0.100, 0.300]");
        assert_eq!(spread(&[Some(0.25)]), "0.250", "one seed: no range");
        assert_eq!(spread_to(&[Some(1180.0), Some(1000.0)], 0), "1090 [1000, 1180]");
        assert_eq!(spread(&[None]), "–");
        assert_eq!(
            mean_series(&[vec![Some(1.0), None], vec![Some(3.0), Some(2.0), Some(5.0)]]),
            [Some(2.0), Some(2.0), Some(5.0)]
        );
    }
}
