//! `swarmlab reproduce all` (every study, then one index report) and `swarmlab readme` (the README's
//! results section, regenerated from that index).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::files::{MAX_RESULTS_BYTES, out_dir, read_text, write_atomic};
use crate::studies::{Reproduce, STUDIES};

/// Where the README's generated section begins and ends.
const BEGIN: &str = "<!-- results:begin -->";
const END: &str = "<!-- results:end -->";

/// The headings under which a study's report sets its figures beside the papers' claims.
const CLAIM_HEADINGS: [&str; 2] = ["## Claims", "## Against the published claims"];

/// One study's section of the index: its claims table (or why there is none).
fn claims_section(report: &str) -> Option<String> {
    let start = report.lines().position(|l| CLAIM_HEADINGS.iter().any(|h| l.trim() == *h))?;
    let body: Vec<&str> = report.lines().skip(start + 1).take_while(|l| !l.starts_with("## ")).collect();
    Some(body.join("\n").trim().to_owned())
}

/// Runs every registered study into `out/<study>/` and writes `out/report.md`: each study's claims
/// beside ours, its plots, its wall time and the total. A study that fails is reported as failed; the
/// others still run.
pub(crate) fn reproduce_all(how: &Reproduce) -> Result<()> {
    let out = out_dir(how.out.clone(), "all")?;
    let flags = how.flags();
    let began = Instant::now();
    let mut done: Vec<(&str, f64, Result<()>)> = Vec::new();
    let n = STUDIES.len();
    for (i, study) in STUDIES.iter().enumerate() {
        let name = study.name();
        eprintln!("\n=== [{}/{n}] reproduce {name}{flags} ===", i + 1);
        let t = Instant::now();
        let result = study.reproduce(&Reproduce { out: Some(out.join(name)), ..how.clone() });
        if let Err(e) = &result {
            eprintln!("reproduce {name} failed: {e:#}");
        }
        done.push((name, t.elapsed().as_secs_f64(), result));
    }
    let total = began.elapsed().as_secs_f64();
    let index = index(&out, &done, total, &flags)?;
    write_atomic(&out.join("report.md"), index.as_bytes())?;
    println!("index report: {}", out.join("report.md").display());
    let failed: Vec<&str> = done.iter().filter(|d| d.2.is_err()).map(|d| d.0).collect();
    if !failed.is_empty() {
        bail!("{} of {} studies failed: {}", failed.len(), done.len(), failed.join(", "));
    }
    Ok(())
}

fn index(out: &Path, done: &[(&str, f64, Result<()>)], total: f64, flags: &str) -> Result<String> {
    let mut md = String::from("# swarmlab: every reproduction\n\n");
    let _ = writeln!(
        md,
        "`swarmlab reproduce all{flags}`: {} studies, {:.0} s ({:.1} min) in all on this machine.\n",
        done.len(),
        total,
        total / 60.0
    );
    md.push_str("| study | report | wall |\n|---|---|---|\n");
    for (name, secs, result) in done {
        let status = if result.is_ok() { format!("[{name}/report.md]({name}/report.md)") } else { "failed".into() };
        let _ = writeln!(md, "| {name} | {status} | {secs:.0} s |");
    }
    for (name, _, result) in done {
        let _ = writeln!(md, "\n## {name}\n");
        if let Err(e) = result {
            let _ = writeln!(md, "The study failed: {e:#}");
            continue;
        }
        let dir = out.join(name);
        let report = read_text(&dir.join("report.md"), MAX_RESULTS_BYTES)?;
        match claims_section(&report) {
            Some(claims) => md.push_str(&claims),
            None => md.push_str("(no claims table in this report)"),
        }
        md.push('\n');
        // A study run over several seeds shows the plots of its first seed.
        let (plot_dir, prefix) = match crate::studies::first_seed(&dir) {
            Some(first) => (first, format!("{name}/seed-0")),
            None => (dir, name.to_string()),
        };
        let mut plots: Vec<String> = std::fs::read_dir(&plot_dir)
            .map(|entries| {
                entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.ends_with(".svg")).collect()
            })
            .unwrap_or_default();
        plots.sort();
        if !plots.is_empty() {
            md.push('\n');
            for p in plots {
                let _ = writeln!(md, "![{name}: {}]({prefix}/{p})", p.trim_end_matches(".svg").replace('_', " "));
            }
        }
    }
    Ok(md)
}

/// `swarmlab readme`: replaces the README's results section (between its markers) by the claims of the
/// index report in `all_dir`.
pub(crate) fn readme(all_dir: &Path, file: &Path) -> Result<()> {
    let index = read_text(&all_dir.join("report.md"), MAX_RESULTS_BYTES)
        .with_context(|| format!("{} is not a folder written by `swarmlab reproduce all`", all_dir.display()))?;
    if !index.starts_with("# swarmlab: every reproduction") {
        bail!("{} is not the index written by `swarmlab reproduce all`", all_dir.join("report.md").display());
    }
    let readme = read_text(file, MAX_RESULTS_BYTES)?;
    let (Some(b), Some(e)) = (readme.find(BEGIN), readme.find(END)) else {
        bail!("{} has no results section: add the lines {BEGIN} and {END} where it belongs", file.display());
    };
    if e < b {
        bail!("{}: {END} comes before {BEGIN}", file.display());
    }
    // The index without its title and plots, its headings one level down.
    let body: String = index
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("!["))
        .map(|l| {
            let l = if l.starts_with("## ") { format!("#{l}") } else { l.to_owned() };
            // Links into the run folder would not resolve from the README: keep their text.
            unlink_local(&l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let generated = format!(
        "{BEGIN}\n<!-- generated by `swarmlab readme {}`; edits here are overwritten -->\n{}\n{END}",
        all_dir.display(),
        body.trim()
    );
    let updated = format!("{}{generated}{}", &readme[..b], &readme[e + END.len()..]);
    write_atomic(file, updated.as_bytes())?;
    println!("{}: results section regenerated from {}", file.display(), all_dir.display());
    Ok(())
}

/// `line` with every Markdown link to a local path (not `http…`) replaced by its text.
fn unlink_local(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let tail = &rest[open..];
        let link = tail.find("](").and_then(|mid| tail[mid..].find(')').map(|close| (mid, mid + close)));
        match link {
            Some((mid, close)) if !tail[1..mid].contains('[') && !tail[mid + 2..].starts_with("http") => {
                out.push_str(&rest[..open]);
                out.push_str(&tail[1..mid]);
                rest = &tail[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_section_is_replaced_between_its_markers_and_nothing_else() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let all = dir.path().join("all");
        std::fs::create_dir_all(&all)?;
        std::fs::write(
            all.join("report.md"),
            "# swarmlab: every reproduction\n\nsummary\n\n## noloco\n\n| claim | ours | reproduced |\n|---|---|---|\n| a | b | yes |\n![plot](noloco/x.svg)\n",
        )?;
        let file = dir.path().join("README.md");
        std::fs::write(&file, format!("intro\n{BEGIN}\nold\n{END}\noutro\n"))?;
        readme(&all, &file)?;
        let text = std::fs::read_to_string(&file)?;
        assert!(text.starts_with("intro\n") && text.ends_with("\noutro\n"), "{text}");
        assert!(text.contains("### noloco") && text.contains("| a | b | yes |") && !text.contains("old"), "{text}");
        assert!(!text.contains("![plot]"), "plots stay in the index");
        readme(&all, &file)?;
        assert_eq!(std::fs::read_to_string(&file)?, text, "regenerating is idempotent");
        std::fs::write(&file, "no markers\n")?;
        let err = readme(&all, &file).expect_err("no markers");
        assert!(err.to_string().contains("no results section"), "{err}");
        assert_eq!(std::fs::read_to_string(&file)?, "no markers\n", "nothing written on error");
        Ok(())
    }

    #[test]
    fn local_links_keep_their_text() {
        assert_eq!(unlink_local("| a | [a/report.md](a/report.md) | 3 s |"), "| a | a/report.md | 3 s |");
        assert_eq!(unlink_local("see [x](https://e.org) and [y](y.md)"), "see [x](https://e.org) and y");
        assert_eq!(unlink_local("[unclosed and [z](z)"), "[unclosed and z");
    }

    #[test]
    fn claims_are_cut_from_either_heading() {
        let r = "# t\n\n## Claims\n\n| x |\n\n## Next\nmore";
        assert_eq!(claims_section(r).as_deref(), Some("| x |"));
        let v = "# v\n## Against the published claims\n\n| y |\n## Disputes\n";
        assert_eq!(claims_section(v).as_deref(), Some("| y |"));
        assert_eq!(claims_section("# nothing"), None);
    }
}
