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
        reproduce(how.out.clone(), how.force, how.quick(), how.device)?;
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

#[derive(Debug, Serialize, Deserialize)]
struct Findings {
    quick: bool,
    config: CodeZeroConfig,
    warm_held_out: f64,
    warm_proposer_valid: f64,
    arms: Vec<Arm>,
    seconds: f64,
}

/// `swarmlab reproduce codezero [--quick]`.
fn reproduce(out: Option<PathBuf>, force: bool, quick: bool, device: models::DeviceSpec) -> Result<()> {
    let out = fresh_out_dir(out, "codezero", force)?;
    let began = Instant::now();
    let cfg = CodeZeroConfig { device, ..base(quick) };
    let n = cfg.agents + cfg.liars;
    eprintln!(
        "swarmlab reproduce codezero{}: {} agents + {} liar, {} rounds, every role for all, then rotating roles",
        if quick { " --quick" } else { "" },
        cfg.agents,
        cfg.liars,
        cfg.rounds
    );
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
    let study = Findings {
        quick,
        config: cfg,
        warm_held_out: warm.held_out,
        warm_proposer_valid: warm.proposer_valid,
        arms,
        seconds: began.elapsed().as_secs_f64(),
    };
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

fn summary(study: &Findings) -> Vec<Headline> {
    study
        .arms
        .iter()
        .map(|a| {
            let s = series(&a.run);
            let n = s.solver.len();
            let tenth = (n / 10).max(1);
            Headline {
                arm: a.name.clone(),
                solver_reward_first_tenth: part(&s.solver, 0..tenth),
                solver_reward_last_tenth: part(&s.solver, n.saturating_sub(tenth)..n),
                held_out_before: study.warm_held_out,
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
        })
        .collect()
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
    for arm in &study.arms {
        let s = series(&arm.run);
        series_plot(
            &out.join(format!("reward_by_role_{}.svg", slug(&arm.name))),
            &format!("CodeZero, {}: reward per role ({w}-round average)", arm.name),
            "round",
            "reward",
            &[("solver".to_string(), smoothed(&s.solver, w)), ("proposer".to_string(), smoothed(&s.proposer, w))],
        )?;
        series_plot(
            &out.join(format!("difficulty_{}.svg", slug(&arm.name))),
            &format!("CodeZero, {}: proposed problems ({w}-round average)", arm.name),
            "round",
            "share",
            &[
                ("solutions passing (lower: harder)".to_string(), smoothed(&s.pass_rate, w)),
                ("proposals that run".to_string(), smoothed(&s.valid, w)),
                ("trivial problems (a constant or x)".to_string(), smoothed(&s.trivial, w)),
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

fn f3(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{x:.3}"))
}

fn markdown(s: &Findings) -> String {
    let cfg = &s.config;
    let mut md = String::new();
    let _ = writeln!(md, "# CodeZero: proposers, solvers and evaluators on problems checked by execution\n");
    let _ = writeln!(
        md,
        "`swarmlab reproduce codezero{}` — {} honest agents and {} lying one(s), {} rounds, two arms: every agent \
         plays every role each round, and roles seated each round by a seeded draw ({}). Wall time {:.0} s.\n",
        if s.quick { " --quick" } else { "" },
        cfg.agents,
        cfg.liars,
        cfg.rounds,
        s.arms.get(1).map_or("–".to_string(), |a| seats(&a.roles)),
        s.seconds
    );
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "| arm | solver reward, first → last tenth | held-out pass rate, warm start → end | proposer reward | passing solutions of proposed problems, 1st → 2nd half | proposals that run, first → last tenth | trivial problems, first → last tenth | sandbox share of wall time | wall |\n|---|---|---|---|---|---|---|---|---|"
    );
    for h in summary(s) {
        let _ = writeln!(
            md,
            "| {} | {} → {} | {:.3} → {:.3} | {} | {} → {} | {} → {} | {} → {} | {:.2}% | {:.0} s |",
            h.arm,
            f3(h.solver_reward_first_tenth),
            f3(h.solver_reward_last_tenth),
            h.held_out_before,
            h.held_out_after,
            f3(h.proposer_reward),
            f3(h.proposed_pass_rate_first_half),
            f3(h.proposed_pass_rate_second_half),
            f3(h.proposals_that_run_first_tenth),
            f3(h.proposals_that_run_last_tenth),
            f3(h.trivial_problems_first_tenth),
            f3(h.trivial_problems_last_tenth),
            100.0 * h.sandbox_share,
            h.seconds
        );
    }
    let _ = writeln!(md, "\n## Claims\n");
    let _ = writeln!(
        md,
        "CodeZero has no paper with figures to set ours beside; these are what its design intends, checked on \
         this run (one seed: a verdict here is what this run shows, not an interval).\n"
    );
    let _ = writeln!(md, "| claim | ours | holds |\n|---|---|---|");
    for (h, a) in summary(s).iter().zip(&s.arms) {
        let d = a.run.dropped();
        let rises = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => {
                if b > a {
                    "yes"
                } else {
                    "no"
                }
            }
            _ => "–",
        };
        let rows = [
            (
                "receivers drop what a lying peer shares (forged problems, false passes)",
                format!("{} forged problems, {} false passes dropped", d.forged_problems, d.false_passes),
                if d.forged_problems > 0 && d.false_passes > 0 { "yes" } else { "not exercised" },
            ),
            (
                "solvers learn: their reward rises",
                format!(
                    "{} → {} (first → last tenth)",
                    f3(h.solver_reward_first_tenth),
                    f3(h.solver_reward_last_tenth)
                ),
                rises(h.solver_reward_first_tenth, h.solver_reward_last_tenth),
            ),
            (
                "what solvers learn carries to held-out problems",
                format!("{:.3} → {:.3}", h.held_out_before, h.held_out_after),
                rises(Some(h.held_out_before), Some(h.held_out_after)),
            ),
            (
                "proposers learn to propose what some but not all solve: their reward rises",
                format!(
                    "{} → {} (first → second half)",
                    f3(h.proposer_reward_first_half),
                    f3(h.proposer_reward_second_half)
                ),
                rises(h.proposer_reward_first_half, h.proposer_reward_second_half),
            ),
        ];
        for (claim, ours, holds) in rows {
            let _ = writeln!(md, "| {} ({}) | {ours} | {holds} |", claim, a.name);
        }
    }
    let _ = writeln!(md, "\n### Dropped from peers (honest agents, summed), and why\n");
    let _ = writeln!(
        md,
        "| arm | forged problems | false passes | unreadable | no signal | unsampled (over J) |\n|---|---|---|---|---|---|"
    );
    for a in &s.arms {
        let d = a.run.dropped();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            a.name, d.forged_problems, d.false_passes, d.unreadable, d.no_signal, d.unsampled
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
        "Plots: `reward_by_role_<arm>.svg`, `difficulty_<arm>.svg`. Raw data: `codezero.json`; headline figures: `summary.json`.\n"
    );
    let _ = writeln!(md, "## Setup, and what differs from CodeZero\n");
    let _ = writeln!(
        md,
        "Warm start: {} supervised steps of {} examples per policy; the solver then passes {:.3} of the {} held-out \
         problems greedily, and {:.2} of the proposer's greedy programs (one per level) run.\n",
        cfg.warm_start.steps, cfg.warm_start.batch, s.warm_held_out, cfg.held_out, s.warm_proposer_valid
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
