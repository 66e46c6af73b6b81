//! The audit study: how often probabilistic checkpoint audits ([`verde::audit`]) catch a trainer that
//! skips part of its steps or perturbs its state once, against the closed form, and what an audit costs.
//!
//! Every segment of each cheating run is re-executed once for real (which segments fail is measured, not
//! assumed); the detection rate for `m` audits is then measured over many independent draws of `m`
//! segments, each seeded by the run's commitment and a fresh verifier nonce, and set beside
//! `1 − C(S − b, m) / C(S, m)` with a 95% Wilson interval.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Result;
use models::Backend;
use serde::Serialize;
use verde::audit::{AuditOutcome, audit_segment, detection_probability, draw, segments};
use verde::{Behaviour, Checkpoints, execute_with};

use crate::verify::program;

/// One (trainer, audit count) cell.
#[derive(Debug, Clone, Serialize)]
pub(super) struct AuditRow {
    trainer: String,
    /// Segments of the run, and how many of them failed their audit.
    segments: u64,
    bad: u64,
    /// Segments audited per draw.
    audits: u64,
    /// Draws, and how many of them caught the trainer.
    trials: u64,
    caught: u64,
    /// `caught / trials` and its 95% Wilson interval.
    measured: f64,
    low: f64,
    high: f64,
    /// `1 − C(S − b, m) / C(S, m)`.
    closed_form: f64,
    /// Share of the steps the trainer skipped (the work it saved).
    skipped: f64,
}

/// The study.
#[derive(Debug, Clone, Serialize)]
pub(super) struct AuditStudy {
    model: String,
    steps: u64,
    every: u64,
    rows: Vec<AuditRow>,
    /// Wall seconds per step: training, and re-executing in an audit (its state checks included).
    train_seconds_per_step: f64,
    audit_seconds_per_step: f64,
}

/// The 95% Wilson score interval of `k` successes in `n` trials.
fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n, p) = (1.96_f64, n as f64, k as f64 / n as f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Runs the study: `tiny`, 256 steps, a checkpoint every 8 (quick: 64 steps).
pub(super) fn audit_study(quick: bool) -> Result<AuditStudy> {
    let (steps, every, trials, counts): (u64, u64, u64, &[u64]) =
        if quick { (64, 8, 1000, &[1, 2, 4]) } else { (256, 8, 4000, &[1, 2, 4, 8, 16]) };
    let program = program("tiny", steps, Backend::RepOps)?;
    let cheats = [
        ("skip@20 (2% of steps)", Behaviour::Skipping { per_mille: 20, seed: 1 }),
        ("skip@60 (6% of steps)", Behaviour::Skipping { per_mille: 60, seed: 2 }),
        ("perturb-weight once", Behaviour::PerturbWeight { step: steps / 2 + 3, delta: 1e-3 }),
    ];
    let segs = segments(steps, every);
    let (mut train_s, mut audit_s, mut audited_steps) = (0.0, 0.0, 0u64);
    let mut rows = Vec::new();
    for (name, behaviour) in cheats {
        eprintln!("  auditing every segment of a {name} trainer");
        let run = execute_with(&program, behaviour, Checkpoints::Every(every))?;
        train_s += run.seconds;
        let began = Instant::now();
        let failed: Vec<bool> = segs
            .iter()
            .map(|&seg| {
                audit_segment(&program, &run.hashes, run.checkpoint_at(seg.start), seg)
                    .map(|o| o != AuditOutcome::Passed)
            })
            .collect::<verde::Result<_>>()?;
        audit_s += began.elapsed().as_secs_f64();
        audited_steps += steps;
        let bad = failed.iter().filter(|&&f| f).count() as u64;
        let skipped = (1..=steps).filter(|&s| behaviour.skips(s)).count() as f64 / steps as f64;
        let root = run.commitment().root;
        for &m in counts {
            // Nonces of their own for every cell, so that the cells' draws are independent.
            let nonces = (0..trials).map(|t| (m << 32) | t);
            let caught = nonces
                .filter(|&nonce| draw(segs.len(), m as usize, &root, nonce).iter().any(|&i| failed[i]))
                .count() as u64;
            let (low, high) = wilson(caught, trials);
            rows.push(AuditRow {
                trainer: name.to_owned(),
                segments: segs.len() as u64,
                bad,
                audits: m,
                trials,
                caught,
                measured: caught as f64 / trials as f64,
                low,
                high,
                closed_form: detection_probability(segs.len() as u64, bad, m),
                skipped,
            });
        }
    }
    Ok(AuditStudy {
        model: "tiny".into(),
        steps,
        every,
        rows,
        train_seconds_per_step: train_s / (cheats.len() as u64 * steps) as f64,
        audit_seconds_per_step: audit_s / audited_steps.max(1) as f64,
    })
}

/// The report's section.
pub(super) fn section(s: &AuditStudy) -> String {
    let mut m = String::from("\n## Probabilistic checkpoint audits\n\n");
    let _ = writeln!(
        m,
        "A verifier re-executes `m` of a run's segments (from one kept state to the next: `{}` model, {} steps, a checkpoint every {}), drawn after the trainer committed (seeded by its commitment root and the verifier's nonce). Each cheating run's segments were all audited once for real; the detection rate is then measured over independent draws (fresh nonces for every cell) and set beside `1 − C(S − b, m) / C(S, m)` (S segments, b of them failing), with its 95% Wilson interval.\n",
        s.model, s.steps, s.every
    );
    m += "| trainer | skipped | segments failing (b of S) | audits m | caught (of draws) | measured (95% interval) | closed form | agrees |\n|---|---|---|---|---|---|---|---|\n";
    for r in &s.rows {
        let agrees = r.closed_form >= r.low && r.closed_form <= r.high;
        let _ = writeln!(
            m,
            "| {} | {:.1}% | {} of {} | {} | {} of {} | {:.3} ({:.3}–{:.3}) | {:.3} | {} |",
            r.trainer,
            100.0 * r.skipped,
            r.bad,
            r.segments,
            r.audits,
            r.caught,
            r.trials,
            r.measured,
            r.low,
            r.high,
            r.closed_form,
            if agrees { "yes" } else { "no" }
        );
    }
    let agree = s.rows.iter().filter(|r| r.closed_form >= r.low && r.closed_form <= r.high).count();
    let _ = writeln!(
        m,
        "\nThe closed form lies inside the measured interval in {agree} of {} cells (at 95%, about one cell in twenty falls outside by chance).",
        s.rows.len()
    );
    if s.train_seconds_per_step > 0.0 {
        let _ = writeln!(
            m,
            "\nCost: an audited step took {:.2} ms against {:.2} ms for a training step ({:.2}×): auditing m of S segments costs m/S of replicating the run.",
            1e3 * s.audit_seconds_per_step,
            1e3 * s.train_seconds_per_step,
            s.audit_seconds_per_step / s.train_seconds_per_step
        );
    }
    m += "\nWhen cheating stops paying: a trainer that skips a share f of the work saves about f of the run's reward R and forfeits its stake D when caught, so it is unprofitable once P(caught) × D ≥ f × R. Fewest audits that make it so (closed form), for a stake equal to the reward and for a tenth of it:\n\n| trainer | f | D = R: P(caught) ≥ f | D = R/10: P(caught) ≥ 10 f |\n|---|---|---|---|\n";
    let mut seen = Vec::new();
    for r in s.rows.iter().filter(|r| r.skipped > 0.0) {
        if seen.contains(&&r.trainer) {
            continue;
        }
        seen.push(&r.trainer);
        let needed = |share: f64| {
            (1..=r.segments)
                .find(|&k| detection_probability(r.segments, r.bad, k) >= share)
                .map_or("none suffices".to_owned(), |k| format!("{k} of {}", r.segments))
        };
        let _ =
            writeln!(m, "| {} | {:.3} | {} | {} |", r.trainer, r.skipped, needed(r.skipped), needed(10.0 * r.skipped));
    }
    m
}

/// (cells, cells whose interval holds the closed form).
pub(super) fn tally(s: &AuditStudy) -> (usize, usize) {
    (s.rows.len(), s.rows.iter().filter(|r| r.closed_form >= r.low && r.closed_form <= r.high).count())
}

/// The study's row of the claims table.
pub(super) fn claim_row(s: &AuditStudy) -> String {
    let (cells, agree) = tally(s);
    format!(
        "| random checkpoint audits catch a cheat as often as 1 − C(S−b, m)/C(S, m) says | the closed form inside the measured 95% interval in {agree} of {cells} cells |\n"
    )
}

/// Detection against the audits per draw, measured and by the closed form, per trainer (`audit_detection`).
pub(super) fn plot(s: &AuditStudy, out: &std::path::Path) -> Result<()> {
    let series = crate::plots::grouped(s.rows.iter().flat_map(|r| {
        [("measured", r.measured), ("closed form", r.closed_form)]
            .map(|(suffix, y)| (format!("{} {suffix}", r.trainer), (r.audits as f64, y)))
    }));
    crate::plots::series_plot(
        &out.join("audit_detection.svg"),
        "Checkpoint audits: detection against audits per draw",
        "segments audited per draw (m)",
        "share of draws that catch the trainer",
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_detection_agrees_with_the_closed_form() -> Result<()> {
        let study = audit_study(true)?;
        assert_eq!(study.rows.len(), 9);
        for r in &study.rows {
            assert!(r.bad >= 1, "every cheat fails some segment: {r:?}");
            // Wilson intervals at 95%: nine cells may miss once by chance; the closed form is exact here,
            // so allow no miss wider than the interval's own width.
            let width = r.high - r.low;
            assert!((r.closed_form - r.measured).abs() <= width, "{r:?}");
        }
        assert!(study.audit_seconds_per_step > 0.0 && study.train_seconds_per_step > 0.0);
        let text = section(&study);
        assert!(text.contains("closed form") && text.contains("Fewest audits"), "{text}");
        Ok(())
    }

    #[test]
    fn the_wilson_interval_holds_its_point() {
        let (low, high) = wilson(30, 100);
        assert!(low < 0.3 && 0.3 < high && (0.2..0.22).contains(&low), "{low} {high}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }
}
