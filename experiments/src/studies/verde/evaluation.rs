//! The evaluation study: verifiable evaluation ([`verde::eval`]). A model trained by the verified
//! program is scored on committed held-out batches by an honest evaluator and by evaluators that forge
//! their score — made up, from skipped items, on easier or other items, on another model, from a
//! mislaid tensor — and each pair settles its disagreement by a Verde dispute (bisection over items,
//! then over the disputed item's operators).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use models::Backend;
use serde::Serialize;
use verde::net::SettleConfig;
use verde::{Behaviour, Conduct, Execution, Outcome, Party, Program, Weights, execute, settle};

use crate::verify::{Setup, TrainerSpec, log2_ceil, program};

/// One dispute between the honest evaluator and a forging one.
#[derive(Debug, Clone, Serialize)]
pub(super) struct EvalRow {
    model: String,
    params: usize,
    items: u64,
    evaluator: String,
    /// Mean loss per item: the honest score and the one claimed.
    honest_score: f32,
    claimed_score: f32,
    outcome: String,
    honest_won: bool,
    expected_item: Option<u64>,
    found_item: Option<u64>,
    found_record: Option<u64>,
    rounds: u32,
    rounds_bound: u32,
    bytes: u64,
    replayed: Option<String>,
}

/// The study.
#[derive(Debug, Clone, Serialize)]
pub(super) struct EvalStudy {
    rows: Vec<EvalRow>,
    /// Training steps of the scored model.
    trained_steps: u64,
    /// Wall seconds: the honest evaluation, and deriving its structure (the referee's one-off cost).
    eval_seconds: f64,
    structure_seconds: f64,
}

/// Scores the model the `tiny` program trains for `trained` steps on `items` held-out batches, and
/// disputes each forged score against the honest one.
pub(super) fn evaluation_study(quick: bool) -> Result<EvalStudy> {
    let (trained_steps, items) = if quick { (8, 8) } else { (32, 32) };
    let training = program("tiny", trained_steps, Backend::RepOps)?;
    let weights = Weights::trained_by(&training)?;
    let eval = training.evaluation(weights, items);
    let began = Instant::now();
    let setup = Setup::new(eval.clone(), Duration::from_secs(60))?;
    let structure_seconds = began.elapsed().as_secs_f64() - setup.honest.seconds;
    let honest_score = setup.honest.score().map(|s| s.mean()).unwrap_or_default();
    let shape = setup.rules.structure.step(2);
    let Some(norm) = shape.ops.iter().position(|o| o.kind() == "rms_norm") else { bail!("the model has no norm") };
    let mid = items / 2;
    let forged: Vec<(String, Arc<Execution>, Option<u64>)> = {
        let mut v = Vec::new();
        let mut add = |name: &str, behaviour: Behaviour| -> Result<()> {
            let run = setup.run(TrainerSpec { behaviour, conduct: Conduct::Faithful })?;
            v.push((
                format!("{name} ({})", TrainerSpec { behaviour, conduct: Conduct::Faithful }),
                run,
                behaviour.first_bad_step(),
            ));
            Ok(())
        };
        add("made-up score", Behaviour::PerturbWeight { step: mid, delta: -0.25 * honest_score })?;
        add("skips items", Behaviour::Lazy { from: mid + 1 })?;
        add("other items", Behaviour::ForgeBatch { step: 2, data_step: items + 7 })?;
        add("mislaid activation", Behaviour::MislaidInput { step: items - 1, op: norm, input: 0 })?;
        let untrained = Weights::trained_by(&Program { steps: 0, ..training.clone() })?;
        let other = Arc::new(execute(&training.evaluation(untrained, items), Behaviour::Honest)?);
        v.push(("another model (the untrained one)".to_owned(), other, Some(1)));
        v
    };
    let mut rows = Vec::new();
    for (k, (evaluator, run, expected_item)) in forged.into_iter().enumerate() {
        let claimed_score = run.score().map(|s| s.mean()).unwrap_or_default();
        let cheat_first = k % 2 == 1;
        let honest = (setup.honest.clone(), Conduct::Faithful);
        let cheat = (run, Conduct::Faithful);
        let s = settle(
            &setup.rules,
            if cheat_first { vec![cheat, honest] } else { vec![honest, cheat] },
            &SettleConfig::default(),
        )?;
        let Some(d) = s.disputes.first() else { bail!("{evaluator} raised no dispute") };
        let honest_party = if cheat_first { Party::Challenger } else { Party::Trainer };
        let outcome = match &d.outcome {
            Outcome::Agreed => "agreed".to_owned(),
            Outcome::Won { fault, .. } => format!("forger lost: {fault}"),
            Outcome::BothLose(why) => format!("both lose: {why}"),
        };
        eprintln!("  evaluation, {evaluator:<40} {outcome}");
        rows.push(EvalRow {
            model: "tiny".into(),
            params: eval.model.param_count(),
            items,
            evaluator,
            honest_score,
            claimed_score,
            honest_won: matches!(&d.outcome, Outcome::Won { winner, .. } if *winner == honest_party),
            outcome,
            expected_item,
            found_item: d.summary.step,
            found_record: d.summary.record,
            rounds: d.summary.step_rounds + d.summary.op_rounds,
            rounds_bound: log2_ceil(items) + log2_ceil(shape.positions() - 1),
            bytes: d.traffic.bytes,
            replayed: d.summary.judgement.as_ref().and_then(|j| j.replayed.clone()),
        });
    }
    Ok(EvalStudy { rows, trained_steps, eval_seconds: setup.honest.seconds, structure_seconds })
}

/// The report's section.
pub(super) fn section(s: &EvalStudy) -> String {
    let mut m = String::from("\n## Verifiable evaluation\n\n");
    let Some(first) = s.rows.first() else { return m + "No evaluation ran.\n" };
    let _ = writeln!(
        m,
        "The `tiny` model ({} parameters) trained by the verified program for {} steps is scored on {} committed held-out batches (drawn by the program's seed): each item adds the model's mean loss on its batch to a running sum, computed on repops, and the evaluator commits to the sum after every item. The honest score is {:.6} nats per item (evaluation {:.2} s; the referee derives the evaluation's structure once, {:.2} s). Each forging evaluator claims another score and disputes it with the honest one.\n",
        first.params, s.trained_steps, first.items, first.honest_score, s.eval_seconds, s.structure_seconds
    );
    m += "| evaluator | claimed score | outcome | item found (expected) | record | rounds (bound) | bytes | referee re-ran |\n|---|---|---|---|---|---|---|---|\n";
    let opt = |v: Option<u64>| v.map_or("–".to_owned(), |v| v.to_string());
    for r in &s.rows {
        let _ = writeln!(
            m,
            "| {} | {:.6} | {} | {} ({}) | {} | {} ({}) | {} | {} |",
            r.evaluator,
            r.claimed_score,
            r.outcome.replace('|', "\\|"),
            opt(r.found_item),
            opt(r.expected_item),
            opt(r.found_record),
            r.rounds,
            r.rounds_bound,
            r.bytes,
            r.replayed.as_deref().and_then(|op| op.split(' ').next()).unwrap_or("nothing")
        );
    }
    let won = s.rows.iter().filter(|r| r.honest_won).count();
    let _ = writeln!(
        m,
        "\nThe honest evaluator wins {won} of {} disputes; a forged score is rejected at the first item it departs at.",
        s.rows.len()
    );
    m
}

/// The study's row of the claims table.
pub(super) fn claim_row(s: &EvalStudy) -> String {
    let won = s.rows.iter().filter(|r| r.honest_won).count();
    format!(
        "| a forged evaluation score loses its dispute (verifiable evaluation, Gensyn's Judge) | {won} of {} forging evaluators lose to the honest one |\n",
        s.rows.len()
    )
}

/// (disputes, won by the honest evaluator).
pub(super) fn tally(s: &EvalStudy) -> (usize, usize) {
    (s.rows.len(), s.rows.iter().filter(|r| r.honest_won).count())
}
