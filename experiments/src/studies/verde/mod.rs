//! The Verde study (`swarmlab reproduce verde`): disputes between an honest run and nine kinds of cheat for
//! runs of several lengths and two model sizes — bisection rounds against log2 n + log2 m, bytes
//! exchanged, the referee's one re-executed operator against replicating the run — and the negative
//! case, honest trainers on native kernels; and the answer time against the trainers' checkpoint
//! interval ([`answers`]); probabilistic checkpoint audits against their closed form ([`audits`]); and
//! verifiable evaluation, forged scores disputed against an honest one ([`evaluation`]). It writes
//! report.md and verde.json.

mod answers;
mod audits;
mod evaluation;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use models::Backend;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use verde::net::SettleConfig;
use verde::{Behaviour, Conduct, Outcome, Party, execute, settle};

use crate::files::{fresh_out_dir, write_atomic};
use crate::studies::{Reproduce, Study};
use crate::verify::{Setup, TrainerSpec, log2_ceil, program};

/// The Verde study.
pub(crate) struct VerdeStudy;

impl Study for VerdeStudy {
    fn name(&self) -> &'static str {
        "verde"
    }

    fn reproduce(&self, how: &Reproduce) -> Result<f64> {
        if how.device != models::DeviceSpec::Cpu {
            eprintln!("note: verde's disputes run on the CPU (--device applies to the training studies)");
        }
        let began = Instant::now();
        reproduce(how.out.clone(), how.force, how.quick())?;
        Ok(began.elapsed().as_secs_f64())
    }
}

/// One dispute of the study.
#[derive(Debug, Clone, Serialize)]
struct StudyRow {
    model: String,
    params: usize,
    steps: u64,
    ops: usize,
    cheat: String,
    cheat_first: bool,
    outcome: String,
    honest_won: bool,
    expected_step: Option<u64>,
    found_step: Option<u64>,
    expected_record: Option<u64>,
    found_record: Option<u64>,
    step_rounds: u32,
    op_rounds: u32,
    rounds_bound: u32,
    bytes: u64,
    messages: u64,
    replayed: Option<String>,
    replay_elements: u64,
    replay_seconds: f64,
    replication_seconds: f64,
}

/// The negative case's measurements.
#[derive(Debug, Clone, Serialize)]
struct NegativeCase {
    steps: u64,
    /// Final state of the native run at 1 and 2 threads (separate processes), and whether they agree.
    native_threads: Vec<(usize, String)>,
    native_threads_agree: bool,
    /// The same at 1 and 2 threads on repops.
    repops_threads: Vec<(usize, String)>,
    repops_threads_agree: bool,
    /// An honest native trainer against an honest repops trainer: where they part and how it ends.
    native_vs_repops_first_step: Option<u64>,
    native_vs_repops_outcome: String,
}

#[derive(Debug, Clone, Serialize)]
struct VerdeFindings {
    quick: bool,
    rows: Vec<StudyRow>,
    negative: NegativeCase,
    answers: Vec<answers::AnswerRow>,
    audits: audits::AuditStudy,
    evaluation: evaluation::EvalStudy,
    seconds: f64,
}

/// The cheats of the study for a run of `steps` steps of `ops` operators, at seeded random points.
fn cheats(steps: u64, ops: usize, rng: &mut impl Rng) -> Vec<TrainerSpec> {
    let step = |rng: &mut dyn rand::RngCore| rng.random_range(1..=steps);
    let faithful = |behaviour| TrainerSpec { behaviour, conduct: Conduct::Faithful };
    vec![
        faithful(Behaviour::PerturbWeight { step: step(rng), delta: 1e-3 }),
        faithful(Behaviour::PerturbOp { step: step(rng), op: rng.random_range(0..ops), delta: 0.5 }),
        faithful(Behaviour::Lazy { from: step(rng) }),
        faithful(Behaviour::LieInCommitment { step: steps }),
        TrainerSpec {
            behaviour: Behaviour::PerturbWeight { step: step(rng), delta: 1e-3 },
            conduct: Conduct::Inconsistent { from: 2 },
        },
        TrainerSpec { behaviour: Behaviour::Lazy { from: step(rng) }, conduct: Conduct::Silent { from: 3 } },
        // Cheats outside the operators: an attribute, the data, a layout.
        faithful(Behaviour::ForgeLr { step: step(rng), factor: 2.0 }),
        faithful({
            let at = step(rng);
            Behaviour::ForgeBatch { step: at, data_step: at + 1 }
        }),
        faithful(Behaviour::MislaidInput { step: step(rng), op: rng.random_range(0..ops), input: 0 }),
    ]
}

/// Runs one (model, steps) cell of the study.
fn study_cell(model: &str, steps: u64, rng: &mut impl Rng, rows: &mut Vec<StudyRow>) -> Result<()> {
    let setup = Setup::new(program(model, steps, Backend::RepOps)?, Duration::from_secs(60))?;
    let params = setup.program.model.param_count();
    for (k, mut cheat) in cheats(steps, setup.ops, rng).into_iter().enumerate() {
        let mut run = setup.run(cheat)?;
        // A perturbed operator or mislaid input whose change never reaches the state leaves nothing to
        // dispute: try others.
        for _ in 0..8 {
            if run.hashes.last() != setup.honest.hashes.last() {
                break;
            }
            let op = rng.random_range(0..setup.ops);
            cheat.behaviour = match cheat.behaviour {
                Behaviour::PerturbOp { step, delta, .. } => Behaviour::PerturbOp { step, op, delta },
                Behaviour::MislaidInput { step, .. } => {
                    let arity = setup.rules.structure.step(step).ops[op].inputs.len();
                    Behaviour::MislaidInput { step, op, input: rng.random_range(0..arity) }
                }
                _ => break,
            };
            run = setup.run(cheat)?;
        }
        let cheat_first = k % 2 == 1;
        let honest = (setup.honest.clone(), Conduct::Faithful);
        let pair = if cheat_first { vec![(run, cheat.conduct), honest] } else { vec![honest, (run, cheat.conduct)] };
        let s = settle(&setup.rules, pair, &SettleConfig::default())?;
        let Some(d) = s.disputes.first() else { bail!("{model}, {steps} steps: {cheat} raised no dispute") };
        let honest_party = if cheat_first { Party::Challenger } else { Party::Trainer };
        let honest_won = matches!(&d.outcome, Outcome::Won { winner, .. } if *winner == honest_party);
        let expected_step = match (cheat.behaviour, cheat.conduct) {
            (_, Conduct::Faithful) => cheat.behaviour.first_bad_step(),
            _ => None,
        };
        let shape = setup.rules.structure.step(expected_step.unwrap_or(2));
        let expected_record = match cheat.behaviour {
            _ if expected_step.is_none() => None,
            Behaviour::PerturbOp { op, .. } | Behaviour::MislaidInput { op, .. } => Some(op as u64),
            Behaviour::ForgeBatch { .. } => Some(0),
            Behaviour::ForgeLr { .. } => shape.ops.iter().position(|o| o.kind() == "adam_param").map(|p| p as u64),
            _ => Some(shape.state_index()),
        };
        let j = d.summary.judgement.as_ref();
        let outcome = match &d.outcome {
            Outcome::Agreed => "agreed".to_owned(),
            Outcome::Won { fault, .. } => format!("cheat lost: {fault}"),
            Outcome::BothLose(why) => format!("both lose: {why}"),
        };
        eprintln!("  {model:<5} T={steps:<4} {:<34} {outcome}", cheat.to_string());
        rows.push(StudyRow {
            model: model.into(),
            params,
            steps,
            ops: setup.ops,
            cheat: cheat.to_string(),
            cheat_first,
            outcome,
            honest_won,
            expected_step,
            found_step: d.summary.step,
            expected_record,
            found_record: d.summary.record,
            step_rounds: d.summary.step_rounds,
            op_rounds: d.summary.op_rounds,
            rounds_bound: log2_ceil(steps) + log2_ceil(shape.positions() - 1),
            bytes: d.traffic.bytes,
            messages: d.traffic.messages,
            replayed: j.and_then(|j| j.replayed.as_ref()).map(|op| op.split(' ').next().unwrap_or_default().to_owned()),
            replay_elements: j.map_or(0, |j| j.replay_elements),
            replay_seconds: j.map_or(0.0, |j| j.replay_seconds),
            replication_seconds: setup.honest.seconds,
        });
    }
    Ok(())
}

/// Final state hash of an honest run in a child process with `threads` threads.
fn child_final(backend: &str, steps: u64, threads: usize) -> Result<String> {
    let exe = std::env::current_exe().context("locating the swarmlab binary")?;
    let out = std::process::Command::new(exe)
        .args(["verify", "--model", "tiny", "--steps", &steps.to_string(), "--backend", backend, "--print-final"])
        // Both pools: the tensor library's own and rayon's (this process may have set either to 1).
        .env("CANDLE_NUM_THREADS", threads.to_string())
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .context("running a trainer in a child process")?;
    if !out.status.success() {
        bail!("child trainer failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn negative_case(steps: u64) -> Result<NegativeCase> {
    let threads = [1usize, 2];
    let finals = |backend: &str| -> Result<Vec<(usize, String)>> {
        threads.iter().map(|&t| Ok((t, child_final(backend, steps, t)?))).collect()
    };
    let native_threads = finals("native")?;
    let repops_threads = finals("repops")?;
    let agree = |v: &[(usize, String)]| v.windows(2).all(|w| w[0].1 == w[1].1);
    // An honest native trainer against an honest repops trainer: same program, other rounding.
    let repops_program = program("tiny", steps, Backend::RepOps)?;
    let setup = Setup::new(repops_program, Duration::from_secs(60))?;
    let native = Arc::new(execute(&program("tiny", steps, Backend::Native)?, Behaviour::Honest)?);
    let first = native.hashes.iter().zip(&setup.honest.hashes).position(|(a, b)| a != b).map(|i| i as u64);
    let s = settle(
        &setup.rules,
        vec![(setup.honest.clone(), Conduct::Faithful), (native, Conduct::Faithful)],
        &SettleConfig::default(),
    )?;
    let outcome = match s.disputes.first().map(|d| &d.outcome) {
        None => "no dispute".to_owned(),
        Some(Outcome::Won { winner: Party::Trainer, fault }) => format!("the native trainer lost: {fault}"),
        Some(Outcome::Won { winner: Party::Challenger, fault }) => format!("the repops trainer lost: {fault}"),
        Some(Outcome::BothLose(why)) => format!("both lost: {why}"),
        Some(Outcome::Agreed) => "agreed".to_owned(),
    };
    Ok(NegativeCase {
        steps,
        native_threads_agree: agree(&native_threads),
        native_threads,
        repops_threads_agree: agree(&repops_threads),
        repops_threads,
        native_vs_repops_first_step: first,
        native_vs_repops_outcome: outcome,
    })
}

/// `swarmlab reproduce verde`.
fn reproduce(out: Option<PathBuf>, force: bool, quick: bool) -> Result<()> {
    let out = fresh_out_dir(out, "verde", force)?;
    let cells: &[(&str, &[u64])] = if quick {
        &[("tiny", &[8, 32]), ("small", &[8])]
    } else {
        &[("tiny", &[16, 64, 256]), ("small", &[16, 64, 256])]
    };
    let began = Instant::now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut rows = Vec::new();
    eprintln!("swarmlab reproduce verde{}: disputes against nine cheats per run", if quick { " --quick" } else { "" });
    for (model, lengths) in cells {
        for &steps in *lengths {
            study_cell(model, steps, &mut rng, &mut rows)?;
        }
    }
    eprintln!("  negative case: native kernels");
    let negative = negative_case(if quick { 4 } else { 16 })?;
    eprintln!("  answering against the checkpoint interval");
    let answers = answers::answer_times(quick)?;
    eprintln!("  probabilistic checkpoint audits");
    let audits = audits::audit_study(quick)?;
    eprintln!("  verifiable evaluation");
    let evaluation = evaluation::evaluation_study(quick)?;
    let study =
        VerdeFindings { quick, rows, negative, answers, audits, evaluation, seconds: began.elapsed().as_secs_f64() };
    write_atomic(&out.join("verde.json"), serde_json::to_string_pretty(&study)?.as_bytes())?;
    write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&summary(&study))?.as_bytes())?;
    answers::plot(&study.answers, &out)?;
    audits::plot(&study.audits, &out)?;
    write_atomic(&out.join("report.md"), markdown(&study).as_bytes())?;
    println!("report: {}", out.join("report.md").display());
    Ok(())
}

/// The study's headline figures (`summary.json`).
fn summary(s: &VerdeFindings) -> serde_json::Value {
    let won = s.rows.iter().filter(|r| r.honest_won).count();
    let exact = s
        .rows
        .iter()
        .filter(|r| r.expected_step.is_some() && r.found_step == r.expected_step && r.found_record == r.expected_record)
        .count();
    let (cells, agree) = audits::tally(&s.audits);
    let (evaluations, evaluations_won) = evaluation::tally(&s.evaluation);
    serde_json::json!({
        "disputes": s.rows.len(),
        "honest_won": won,
        "narrowed_exactly": exact,
        "cheats_answering_faithfully": s.rows.iter().filter(|r| r.expected_step.is_some()).count(),
        "audit_cells": cells,
        "audit_cells_agreeing_with_closed_form": agree,
        "evaluation_disputes": evaluations,
        "evaluation_disputes_won_by_honest": evaluations_won,
        "answers": s.answers,
        "quick": s.quick,
        "seconds": s.seconds,
    })
}

fn markdown(s: &VerdeFindings) -> String {
    let mut m = String::from("# Verde: refereed delegation of training\n\n");
    m += &format!(
        "{} disputes, each between the honest run and one cheat, on the simulated network (20 ms links); every trainer runs the same program on repops. Study time {:.0} s{}.\n\n",
        s.rows.len(),
        s.seconds,
        if s.quick { " (--quick)" } else { "" }
    );
    let won = s.rows.iter().filter(|r| r.honest_won).count();
    let located = s.rows.iter().filter(|r| r.expected_step.is_some()).count();
    let exact = s
        .rows
        .iter()
        .filter(|r| r.expected_step.is_some() && r.found_step == r.expected_step && r.found_record == r.expected_record)
        .count();
    let within = s.rows.iter().filter(|r| r.step_rounds + r.op_rounds <= r.rounds_bound).count();
    m += "## Against the published claims\n\n| claim (Verde, arXiv 2502.19405) | measured here |\n|---|---|\n";
    m += &format!("| the honest trainer wins every dispute (1-of-N honest) | {won} of {} disputes |\n", s.rows.len());
    m += &format!(
        "| the dispute narrows to the cheat's step and operator | {exact} of {located} cheats that answered faithfully, exactly |\n"
    );
    m += &format!(
        "| rounds ≈ log2 n + log2 m (n steps, m records of the step) | {within} of {} disputes within ceil(log2 n) + ceil(log2 m) |\n",
        s.rows.len()
    );
    let worst = s
        .rows
        .iter()
        .filter(|r| r.replay_seconds > 0.0)
        .map(|r| r.replication_seconds / r.replay_seconds)
        .fold(f64::INFINITY, f64::min);
    if worst.is_finite() {
        m += &format!(
            "| the referee re-executes one operator, independent of the run's length | at least {worst:.0}× less compute time than replicating the run |\n"
        );
    }
    m += "| \"1,350% more efficient than replication\" (Gensyn's 2022 litepaper, a pre-Verde design) | not comparable: the ratio here grows with the run's length (below) |\n";
    m += &audits::claim_row(&s.audits);
    m += &evaluation::claim_row(&s.evaluation);
    m += "\n";
    m += "## Disputes\n\n| model | params | steps n | ops/step | cheat | outcome | step found (expected) | record found (expected) | rounds (bound) | bytes | referee re-ran | elements | referee µs | replication s | ratio |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    let opt = |v: Option<u64>| v.map_or("–".to_owned(), |v| v.to_string());
    for r in &s.rows {
        let ratio = if r.replay_seconds > 0.0 {
            format!("{:.0}×", r.replication_seconds / r.replay_seconds)
        } else {
            "–".into()
        };
        m += &format!(
            "| {} | {} | {} | {} | {} | {} | {} ({}) | {} ({}) | {} + {} ({}) | {} | {} | {} | {:.1} | {:.2} | {} |\n",
            r.model,
            r.params,
            r.steps,
            r.ops,
            r.cheat,
            r.outcome,
            opt(r.found_step),
            opt(r.expected_step),
            opt(r.found_record),
            opt(r.expected_record),
            r.step_rounds,
            r.op_rounds,
            r.rounds_bound,
            r.bytes,
            r.replayed.as_deref().unwrap_or("none (proofs)"),
            r.replay_elements,
            r.replay_seconds * 1e6,
            r.replication_seconds,
            ratio
        );
    }
    m += "\nRecords of a step: its operators, then the state record listing the state's tensors. A perturbed weight, a lazy step or a lie about the final state is settled at the state record by provenance (each listed tensor must be the output of the operator the program's structure says produced it) or by the state hash itself — hashes and Merkle proofs, no re-execution. A perturbed operator is settled by re-executing it. Cheats marked +inconsistent or +silent lose by a bad proof or a timeout before any step is located.\n\n";
    m += "Bytes are everything exchanged with the referee, both parties, encoded; they are dominated by the evidence (the disputed operator's inputs and the tensors any of them is made from outside the tape, the state the step starts from, or the provenance of every state tensor).\n\n";
    let n = &s.negative;
    m += "## The negative case: native kernels\n\n";
    let fmt = |v: &[(usize, String)]| {
        v.iter().map(|(t, h)| format!("{t} thread(s): `{}`", &h[..h.len().min(16)])).collect::<Vec<_>>().join(", ")
    };
    m += &format!(
        "- Native backend, {} steps, separate processes: {} — {}.\n",
        n.steps,
        fmt(&n.native_threads),
        if n.native_threads_agree {
            "the same bits: on this CPU candle's native kernels do not split a reduction across threads, so thread count alone does not make honest trainers disagree here (the paper's divergence comes from GPU kernels that choose their reduction order by hardware)"
        } else {
            "different bits: two honest trainers would dispute"
        }
    );
    m += &format!(
        "- Repops, the same: {} — {}.\n",
        fmt(&n.repops_threads),
        if n.repops_threads_agree { "the same bits, as repops guarantees" } else { "DIFFERENT bits: a repops bug" }
    );
    m += &format!(
        "- An honest native trainer against an honest repops trainer (the same program, rounded differently): they part at step {}; {}. The native run is not wrong, only not reproducible, and it loses: without reproducible operators refereed delegation cannot tell an honest difference from a cheat.\n",
        opt(n.native_vs_repops_first_step),
        n.native_vs_repops_outcome
    );
    m += &answers::section(&s.answers);
    m += &audits::section(&s.audits);
    m += &evaluation::section(&s.evaluation);
    m += "\n## Limits\n\n- The trainers of the disputes above keep no checkpoints (they answer from the start of the run, as the table's first rows); `swarmlab verify --checkpoint-every K` gives them checkpoints.\n- The step's structure is derived by a dry run of the program's first two steps (beside a run on other data, which tells the program's constants from its data). Every input of this program's operators has an origin the referee can check — an earlier operator, the agreed state, a constant, the batch re-drawn from the seed, or candle's layouts and gradient sums re-done bit for bit — and AdamW's attributes are re-derived per step; a program with an input of no known origin (another model's glue than reshapes, transposes of the middle dimensions and sums of up to three terms) would leave a dispute on it undecided, and `Structure::unknown_inputs` lists such inputs.\n- The stakes of these disputes are kept in memory; `swarmlab verify --ledger FILE --key KEY` keeps them in a file of signed entries.\n";
    m
}
