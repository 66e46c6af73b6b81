//! `swarmlab gym`: reads a reasoning-gym export and checks our families' verifiers against its answers.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use genrl::env::gym::{DatasetCheck, GymTasks, cross_check};

/// The cross-check of the tasks in `path` as a Markdown report: per reasoning-gym dataset, its tasks,
/// how many are our family's questions, how many of those our verifier agrees on, and up to `show`
/// disagreements each.
pub(crate) fn check(path: &Path, show: usize) -> Result<String> {
    let tasks = GymTasks::read(path)?;
    Ok(render(&cross_check(&tasks), tasks.len(), path, show))
}

fn render(checks: &[DatasetCheck], total: usize, path: &Path, show: usize) -> String {
    let mut out = format!("# reasoning-gym tasks: {}\n\n{total} tasks.\n\n", path.display());
    out.push_str(
        "| dataset | our family | tasks | ours in other words | agree | disagree |\n|---|---|---|---|---|---|\n",
    );
    for c in checks {
        let family = c.family.map_or("–".to_owned(), |f| f.name().to_owned());
        let _ = writeln!(
            out,
            "| {} | {family} | {} | {} | {} | {} |",
            c.dataset,
            c.tasks,
            c.translated,
            c.agree,
            c.disagreements.len()
        );
    }
    out.push_str(
        "\nA task is ours in other words when its parameters fit our family's grammar; our verifier then \
         judges its answers, and reasoning-gym's default rule judges the rest.\n",
    );
    for c in checks.iter().filter(|c| !c.disagreements.is_empty() && show > 0) {
        let _ = writeln!(out, "\n## {}: where our verifier rejects reasoning-gym's answer\n", c.dataset);
        out.push_str("| our prompt | reasoning-gym | ours |\n|---|---|---|\n");
        for d in c.disagreements.iter().take(show) {
            let _ = writeln!(out, "| `{}` | `{}` | `{}` |", d.prompt, d.theirs, d.ours);
        }
        if c.disagreements.len() > show {
            let _ = writeln!(out, "\n… and {} more.", c.disagreements.len() - show);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_each_dataset_and_lists_disagreements() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tasks.jsonl");
        let line = |n: u32, d: u32, answer: &str| {
            format!(
                "{{\"question\": \"q\", \"answer\": \"{answer}\", \"metadata\": {{\"source_dataset\": \
                 \"fraction_simplification\", \"numerator\": {n}, \"denominator\": {d}}}}}\n"
            )
        };
        let text = [line(18, 24, "3/4"), line(6, 8, "3/5"), line(2, 4, "1/2")].concat()
            + "{\"question\": \"q\", \"answer\": \"x\", \"source_dataset\": \"spell_backward\"}\n";
        std::fs::write(&path, text)?;
        let report = check(&path, 5)?;
        assert!(report.contains("4 tasks."), "{report}");
        assert!(report.contains("| fraction_simplification | fraction_simplification | 3 | 3 | 2 | 1 |"), "{report}");
        assert!(report.contains("| spell_backward | – | 1 | 0 | 0 | 0 |"), "{report}");
        assert!(report.contains("| `6/8=` | `3/5` | `3/4` |"), "{report}");
        std::fs::write(&path, "{\"question\": 3}\n")?;
        assert!(check(&path, 5).is_err());
        Ok(())
    }
}
