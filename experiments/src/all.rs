//! `swarmlab reproduce <study>` and `reproduce all` (every study, then one index report; resumable), and
//! `swarmlab readme` (the README's results section, regenerated from that index).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::files::{MAX_CONFIG_BYTES, MAX_RESULTS_BYTES, out_dir, read_text, write_atomic};
use crate::studies::{Reproduce, STUDIES, Study};

/// The file by which a study's folder says that its run finished: written last by `reproduce <study>`,
/// read by `reproduce all --resume`.
pub(crate) const FINISHED: &str = "finished.json";

/// What a finished `reproduce <study>` records about itself: which study, how it was asked for, by which
/// version, and its wall time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Finished {
    study: String,
    /// The flags that shape its results (`--scale`, `--seeds`, `--corpus`).
    flags: String,
    /// Where its tensors lived (`--device`).
    device: String,
    /// The swarmlab version that ran it.
    version: String,
    wall_s: f64,
}

impl Finished {
    /// The record `how` would leave for `study` (with no wall time yet).
    fn expected(study: &str, how: &Reproduce) -> Self {
        Self {
            study: study.to_owned(),
            flags: how.flags(),
            device: how.device.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            wall_s: 0.0,
        }
    }

    /// Whether `self` records the same study, asked for the same way, by the same version.
    fn same_run(&self, other: &Self) -> bool {
        (&self.study, &self.flags, &self.device, &self.version) == (&other.study, &other.flags, &other.device, &other.version)
    }

    /// The record in `dir`, if it holds a readable one.
    fn read(dir: &Path) -> Option<Self> {
        let text = read_text(&dir.join(FINISHED), MAX_CONFIG_BYTES).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// How `reproduce <study>` went.
pub(crate) struct Reproduced {
    /// Its wall seconds (an earlier run's, if resumed).
    pub(crate) wall_s: f64,
    /// Taken from an earlier run that finished the same way (`--resume`).
    pub(crate) resumed: bool,
}

/// Runs `study` as `how` asks and marks its folder finished.
///
/// With `--resume`, a folder that says it finished the same way (its [`FINISHED`] record: study, flags,
/// device, version) is taken as it is; one that did not finish runs again in place (a seeded study keeps
/// its finished seeds); one that finished asked for differently is refused unless `--force`. With
/// `--force`, the record of the run being replaced goes first, so an interrupted rerun never looks
/// finished.
pub(crate) fn reproduce_study(study: &dyn Study, how: &Reproduce) -> Result<Reproduced> {
    let out = out_dir(how.out.clone(), study.name())?;
    let expected = Finished::expected(study.name(), how);
    if how.resume
        && let Some(earlier) = resumable(&out, &expected, how.force)?
    {
        eprintln!("{}: {} finished here earlier ({:.0} s), taken as it is", out.display(), study.name(), earlier.wall_s);
        return Ok(Reproduced { wall_s: earlier.wall_s, resumed: true });
    }
    // Resuming replaces what an unfinished run left, as --force replaces a finished one.
    let replace = how.force || how.resume;
    if replace {
        match std::fs::remove_file(out.join(FINISHED)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", out.join(FINISHED).display()));
            }
            _ => {}
        }
    }
    let wall_s = study.reproduce(&Reproduce { out: Some(out.clone()), force: replace, ..how.clone() })?;
    let finished = Finished { wall_s, ..expected };
    write_atomic(&out.join(FINISHED), serde_json::to_string_pretty(&finished)?.as_bytes())?;
    Ok(Reproduced { wall_s: finished.wall_s, resumed: false })
}

/// Resuming into `dir`: the finished run there that `expected` may take as it is, if any. A finished run
/// asked for otherwise is refused (unless `force`, which replaces it).
fn resumable(dir: &Path, expected: &Finished, force: bool) -> Result<Option<Finished>> {
    match Finished::read(dir) {
        Some(earlier) if earlier.same_run(expected) => Ok(Some(earlier)),
        Some(earlier) if !force => bail!(
            "{} holds a finished run asked for differently (`{}{}` on {}, version {}): add --force to replace it, or choose another --out",
            dir.display(),
            earlier.study,
            earlier.flags,
            earlier.device,
            earlier.version
        ),
        _ => Ok(None),
    }
}

/// How one study of `reproduce all` went.
struct Done {
    name: &'static str,
    wall_s: f64,
    /// Taken from an earlier run (`--resume`).
    resumed: bool,
    result: Result<()>,
}

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
/// others still run. With `--resume`, each study resumes as [`reproduce_study`] says.
pub(crate) fn reproduce_all(how: &Reproduce) -> Result<()> {
    reproduce_each(&STUDIES, how)
}

/// [`reproduce_all`] over `studies`.
fn reproduce_each(studies: &[&dyn Study], how: &Reproduce) -> Result<()> {
    let out = out_dir(how.out.clone(), "all")?;
    let flags = how.flags();
    let n = studies.len();
    if how.resume {
        // Refuse before anything runs, not hours in.
        for study in studies {
            resumable(&out.join(study.name()), &Finished::expected(study.name(), how), how.force)?;
        }
    }
    let mut done: Vec<Done> = Vec::new();
    for (i, study) in studies.iter().enumerate() {
        let name = study.name();
        eprintln!("\n=== [{}/{n}] reproduce {name}{flags} ===", i + 1);
        let t = Instant::now();
        let result = reproduce_study(*study, &Reproduce { out: Some(out.join(name)), ..how.clone() });
        let (wall_s, resumed) = match &result {
            Ok(r) => (r.wall_s, r.resumed),
            Err(e) => {
                eprintln!("reproduce {name} failed: {e:#}");
                (t.elapsed().as_secs_f64(), false)
            }
        };
        done.push(Done { name, wall_s, resumed, result: result.map(drop) });
    }
    let index = index(&out, &done, &flags)?;
    write_atomic(&out.join("report.md"), index.as_bytes())?;
    println!("index report: {}", out.join("report.md").display());
    let failed: Vec<&str> = done.iter().filter(|d| d.result.is_err()).map(|d| d.name).collect();
    if !failed.is_empty() {
        bail!("{} of {} studies failed: {}", failed.len(), done.len(), failed.join(", "));
    }
    Ok(())
}

fn index(out: &Path, done: &[Done], flags: &str) -> Result<String> {
    let mut md = String::from("# swarmlab: every reproduction\n\n");
    let total: f64 = done.iter().map(|d| d.wall_s).sum();
    let resumed = done.iter().filter(|d| d.resumed).count();
    let _ = write!(
        md,
        "`swarmlab reproduce all{flags}`: {} studies, {total:.0} s ({:.1} min) of runs on this machine (each study's runs' wall times summed: seeds run at once count each)",
        done.len(),
        total / 60.0
    );
    let _ = writeln!(
        md,
        "{}.\n",
        match resumed {
            0 => String::new(),
            k => format!(" ({k} of them finished by an earlier, resumed run of the same flags; their own wall times)"),
        }
    );
    md.push_str("| study | report | wall |\n|---|---|---|\n");
    for d in done {
        let name = d.name;
        let status = if d.result.is_ok() { format!("[{name}/report.md]({name}/report.md)") } else { "failed".into() };
        let _ = writeln!(md, "| {name} | {status} | {:.0} s{} |", d.wall_s, if d.resumed { " (resumed)" } else { "" });
    }
    for d in done {
        let name = d.name;
        let _ = writeln!(md, "\n## {name}\n");
        if let Err(e) = &d.result {
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
/// index reports in `all_dirs` (one each, e.g. one per corpus, in the order given).
pub(crate) fn readme(all_dirs: &[PathBuf], file: &Path) -> Result<()> {
    if all_dirs.is_empty() {
        bail!("name at least one folder written by `swarmlab reproduce all`");
    }
    let mut bodies = Vec::new();
    for dir in all_dirs {
        let index = read_text(&dir.join("report.md"), MAX_RESULTS_BYTES)
            .with_context(|| format!("{} is not a folder written by `swarmlab reproduce all`", dir.display()))?;
        if !index.starts_with("# swarmlab: every reproduction") {
            bail!("{} is not the index written by `swarmlab reproduce all`", dir.join("report.md").display());
        }
        // With several indexes, each goes under a heading of its own and its studies one level further down.
        let (heading, down) = if all_dirs.len() > 1 { (Some(index_title(&index)), "##") } else { (None, "#") };
        bodies.push(readme_body(&index, heading.as_deref(), down));
    }
    let readme = read_text(file, MAX_RESULTS_BYTES)?;
    let (Some(b), Some(e)) = (readme.find(BEGIN), readme.find(END)) else {
        bail!("{} has no results section: add the lines {BEGIN} and {END} where it belongs", file.display());
    };
    if e < b {
        bail!("{}: {END} comes before {BEGIN}", file.display());
    }
    let dirs: Vec<String> = all_dirs.iter().map(|d| d.display().to_string()).collect();
    let generated = format!(
        "{BEGIN}\n<!-- generated by `swarmlab readme {}`; edits here are overwritten -->\n{}\n{END}",
        dirs.join(" "),
        bodies.join("\n\n")
    );
    let updated = format!("{}{generated}{}", &readme[..b], &readme[e + END.len()..]);
    write_atomic(file, updated.as_bytes())?;
    println!("{}: results section regenerated from {}", file.display(), dirs.join(", "));
    Ok(())
}

/// The command an index was written by (its first line's code span), for a heading.
fn index_title(index: &str) -> String {
    let first = index.lines().skip(1).find(|l| !l.trim().is_empty()).unwrap_or_default();
    match first.split('`').nth(1) {
        Some(command) => format!("`{command}`"),
        None => "`swarmlab reproduce all`".to_owned(),
    }
}

/// An index without its title and plots, under `heading` if given, its headings `down` further down,
/// its local links reduced to their text (they would not resolve from the README).
fn readme_body(index: &str, heading: Option<&str>, down: &str) -> String {
    let body: String = index
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("!["))
        .map(|l| {
            let l = if l.starts_with('#') { format!("{down}{l}") } else { l.to_owned() };
            unlink_local(&l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    match heading {
        Some(h) => format!("### {h}\n\n{}", body.trim()),
        None => body.trim().to_owned(),
    }
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A study that writes a one-line report, counts its runs, and fails while `fail` is set.
    struct Counted {
        name: &'static str,
        runs: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Counted {
        const fn new(name: &'static str) -> Self {
            Self { name, runs: AtomicUsize::new(0), fail: std::sync::atomic::AtomicBool::new(false) }
        }
    }

    impl Study for Counted {
        fn name(&self) -> &'static str {
            self.name
        }

        fn reproduce(&self, how: &Reproduce) -> Result<f64> {
            let out = crate::files::fresh_out_dir(how.out.clone(), self.name, how.force)?;
            self.runs.fetch_add(1, Ordering::SeqCst);
            write_atomic(&out.join("report.md"), b"# partial\n")?;
            if self.fail.load(Ordering::SeqCst) {
                bail!("{} was interrupted", self.name);
            }
            write_atomic(&out.join("report.md"), format!("# {}\n\n## Claims\n\n| c | {} |\n", self.name, how.seeds).as_bytes())?;
            Ok(1.5)
        }
    }

    fn how(out: &Path, seeds: usize) -> Reproduce {
        Reproduce {
            out: Some(out.to_owned()),
            scale: crate::studies::Scale::Smoke,
            corpus: None,
            jobs: 1,
            device: models::DeviceSpec::Cpu,
            force: false,
            allow_large: false,
            seeds,
            resume: false,
            model: None,
            tasks: None,
        }
    }

    fn resumed(out: &Path, seeds: usize) -> Reproduce {
        Reproduce { resume: true, ..how(out, seeds) }
    }

    #[test]
    fn a_resumed_reproduction_runs_only_what_did_not_finish_the_same_way() -> Result<()> {
        static A: Counted = Counted::new("a");
        static B: Counted = Counted::new("b");
        let studies: [&dyn Study; 2] = [&A, &B];
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("all");
        // The first pass: b is interrupted, so it has a partial report and no record.
        B.fail.store(true, Ordering::SeqCst);
        assert!(reproduce_each(&studies, &how(&out, 1)).is_err());
        assert_eq!(Finished::read(&out.join("a")).map(|f| f.wall_s), Some(1.5), "the study's own wall time");
        assert!(Finished::read(&out.join("b")).is_none());
        // Without --resume the finished folder is not replaced.
        B.fail.store(false, Ordering::SeqCst);
        let err = reproduce_each(&studies, &how(&out, 1)).expect_err("a holds a run");
        assert!(err.to_string().contains("a"), "{err:#}");
        let (a_runs, b_runs) = (A.runs.load(Ordering::SeqCst), B.runs.load(Ordering::SeqCst));
        // Resumed: a is taken as it is, b runs again in its folder.
        reproduce_each(&studies, &resumed(&out, 1))?;
        assert_eq!(A.runs.load(Ordering::SeqCst), a_runs, "a finished already");
        assert_eq!(B.runs.load(Ordering::SeqCst), b_runs + 1, "b had not");
        let index = std::fs::read_to_string(out.join("report.md"))?;
        assert!(index.contains("(resumed)") && index.contains("1 of them finished by an earlier"), "{index}");
        assert!(index.contains("## b") && index.contains("| c | 1 |"), "{index}");
        // Asked for differently (another seed count), a finished study is refused before anything runs...
        let err = reproduce_each(&studies, &resumed(&out, 2)).expect_err("other flags");
        assert!(err.to_string().contains("asked for differently") && err.to_string().contains("--force"), "{err:#}");
        assert_eq!(B.runs.load(Ordering::SeqCst), b_runs + 1, "nothing ran");
        // ...and replaced with --force.
        reproduce_each(&studies, &Reproduce { force: true, ..resumed(&out, 2) })?;
        assert_eq!((A.runs.load(Ordering::SeqCst), B.runs.load(Ordering::SeqCst)), (a_runs + 1, b_runs + 2));
        assert_eq!(Finished::read(&out.join("a")).map(|f| f.flags), Some(how(&out, 2).flags()));
        Ok(())
    }

    #[test]
    fn a_forced_rerun_drops_the_old_record_before_it_starts() -> Result<()> {
        static C: Counted = Counted::new("c");
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("c");
        reproduce_study(&C, &how(&out, 1))?;
        assert!(Finished::read(&out).is_some());
        C.fail.store(true, Ordering::SeqCst);
        assert!(reproduce_study(&C, &Reproduce { force: true, ..how(&out, 1) }).is_err());
        assert!(Finished::read(&out).is_none(), "an interrupted rerun does not look finished");
        Ok(())
    }

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
        readme(std::slice::from_ref(&all), &file)?;
        let text = std::fs::read_to_string(&file)?;
        assert!(text.starts_with("intro\n") && text.ends_with("\noutro\n"), "{text}");
        assert!(text.contains("### noloco") && text.contains("| a | b | yes |") && !text.contains("old"), "{text}");
        assert!(!text.contains("![plot]"), "plots stay in the index");
        readme(std::slice::from_ref(&all), &file)?;
        assert_eq!(std::fs::read_to_string(&file)?, text, "regenerating is idempotent");
        std::fs::write(&file, "no markers\n")?;
        let err = readme(std::slice::from_ref(&all), &file).expect_err("no markers");
        assert!(err.to_string().contains("no results section"), "{err}");
        assert_eq!(std::fs::read_to_string(&file)?, "no markers\n", "nothing written on error");
        Ok(())
    }

    #[test]
    fn several_indexes_each_get_a_heading_and_keep_their_order() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut dirs = Vec::new();
        for corpus in ["synthetic", "prose"] {
            let all = dir.path().join(corpus);
            std::fs::create_dir_all(&all)?;
            std::fs::write(
                all.join("report.md"),
                format!("# swarmlab: every reproduction\n\n`swarmlab reproduce all --corpus {corpus}`: 1 study\n\n## noloco\n\n| a | {corpus} |\n"),
            )?;
            dirs.push(all);
        }
        let file = dir.path().join("README.md");
        std::fs::write(&file, format!("{BEGIN}\n{END}\n"))?;
        readme(&dirs, &file)?;
        let text = std::fs::read_to_string(&file)?;
        let (s, p) = (text.find("### `swarmlab reproduce all --corpus synthetic`"), text.find("### `swarmlab reproduce all --corpus prose`"));
        assert!(matches!((s, p), (Some(s), Some(p)) if s < p), "{text}");
        assert_eq!(text.matches("#### noloco").count(), 2, "{text}");
        assert!(text.contains("| a | synthetic |") && text.contains("| a | prose |"), "{text}");
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
