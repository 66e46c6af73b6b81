//! What a trainer's checkpoints buy in a dispute: the wall time to answer for a step (its trace, then one
//! operator's inputs — two re-runs from the last kept state before it) against the checkpoint interval K,
//! and the memory the kept states take.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Result;
use models::Backend;
use repops::tape::Keep;
use serde::Serialize;
use verde::{Behaviour, Checkpoints, execute_with};

use crate::verify::program;

/// Answering for the last step of one run, at one checkpoint interval.
#[derive(Debug, Clone, Serialize)]
pub(super) struct AnswerRow {
    model: String,
    params: usize,
    steps: u64,
    /// K; `None`: no checkpoints.
    every: Option<u64>,
    /// Steps re-run per answer for the last step.
    replayed: u64,
    /// Wall seconds of both answers for the last step (the trace, then the step again keeping every input, for the evidence).
    answer_seconds: f64,
    /// Wall seconds of the run itself, keeping its checkpoints.
    run_seconds: f64,
    /// Tensor data the checkpoints hold, MiB.
    checkpoint_mib: f64,
}

/// The (model, steps, intervals) measured.
fn cells(quick: bool) -> Vec<(&'static str, u64, Vec<Option<u64>>)> {
    if quick {
        vec![("tiny", 32, vec![None, Some(8), Some(2)])]
    } else {
        vec![("tiny", 256, vec![None, Some(64), Some(16), Some(4)]), ("small", 64, vec![None, Some(16), Some(4)])]
    }
}

/// Measures answering for the last step against K for each cell (the worst case without checkpoints:
/// the whole run, twice).
pub(super) fn answer_times(quick: bool) -> Result<Vec<AnswerRow>> {
    let mut rows = Vec::new();
    for (model, steps, intervals) in cells(quick) {
        let program = program(model, steps, Backend::RepOps)?;
        for every in intervals {
            eprintln!(
                "  answering for step {steps} of {model}, checkpoints {}",
                every.map_or("none".into(), |k| format!("every {k}"))
            );
            let run = execute_with(&program, Behaviour::Honest, every.map_or(Checkpoints::None, Checkpoints::Every))?;
            let began = Instant::now();
            let trace = run.trace_step(steps, Keep::Nothing)?.trace;
            run.trace_step(steps, Keep::All)?;
            let answer_seconds = began.elapsed().as_secs_f64();
            anyhow::ensure!(trace.commitment().len > 1, "step {steps} of {model} has an empty trace");
            rows.push(AnswerRow {
                model: model.to_owned(),
                params: program.model.param_count(),
                steps,
                every,
                replayed: run.replayed_steps(steps),
                answer_seconds,
                run_seconds: run.seconds,
                checkpoint_mib: run.checkpoint_bytes() as f64 / (1 << 20) as f64,
            });
        }
    }
    Ok(rows)
}

/// The report's section.
pub(super) fn section(rows: &[AnswerRow]) -> String {
    let mut m = String::from("\n## Answering against the checkpoint interval\n\n");
    m += "To answer the referee for step k, a trainer re-runs it twice (its operator trace, then again keeping every operator's inputs, from which it sends the disputed operator's inputs and whatever its inputs are made from), each time from the last state it kept before k — from the start if it keeps none. Measured for the last step of an honest run, the worst case without checkpoints; wall times on this machine.\n\n";
    m += "| model | params | steps n | checkpoints | steps re-run per answer | answer time | run time | checkpoint memory |\n|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {:.2} s | {:.2} s | {:.1} MiB |",
            r.model,
            r.params,
            r.steps,
            r.every.map_or("none".to_owned(), |k| format!("every {k}")),
            r.replayed,
            r.answer_seconds,
            r.run_seconds,
            r.checkpoint_mib
        );
    }
    for (model, steps) in rows.iter().map(|r| (&r.model, r.steps)).collect::<std::collections::BTreeSet<_>>() {
        let cell: Vec<&AnswerRow> = rows.iter().filter(|r| &r.model == model && r.steps == steps).collect();
        let (Some(none), Some(densest)) = (
            cell.iter().find(|r| r.every.is_none()),
            cell.iter().filter(|r| r.every.is_some()).min_by_key(|r| r.every),
        ) else {
            continue;
        };
        if densest.answer_seconds > 0.0 {
            let _ = writeln!(
                m,
                "\n{model}, {steps} steps: checkpoints every {} cut the answer from {:.2} s to {:.2} s ({:.0}× faster) for {:.1} MiB of kept states.",
                densest.every.unwrap_or_default(),
                none.answer_seconds,
                densest.answer_seconds,
                none.answer_seconds / densest.answer_seconds,
                densest.checkpoint_mib
            );
        }
    }
    m
}

/// Answer time for the last step against the steps re-run, per model (`answer_time`).
pub(super) fn plot(rows: &[AnswerRow], out: &std::path::Path) -> Result<()> {
    let series = crate::plots::grouped(
        rows.iter().map(|r| (format!("{} ({} steps)", r.model, r.steps), (r.replayed as f64, r.answer_seconds))),
    );
    crate::plots::series_plot(
        &out.join("answer_time.svg"),
        "Answering for the last step against the steps re-run (at most K)",
        "steps re-run from the last kept state",
        "answer time, s",
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_bound_the_steps_re_run_and_cost_memory() -> Result<()> {
        let rows = answer_times(true)?;
        assert_eq!(rows.len(), 3);
        let none = &rows[0];
        assert_eq!((none.every, none.replayed, none.checkpoint_mib), (None, 32, 0.0));
        for r in &rows[1..] {
            let k = r.every.ok_or_else(|| anyhow::anyhow!("an interval"))?;
            assert!(r.replayed <= k && r.checkpoint_mib > 0.0, "{r:?}");
        }
        let text = section(&rows);
        assert!(text.contains("| tiny |") && text.contains("every 2") && text.contains("faster"), "{text}");
        Ok(())
    }
}
