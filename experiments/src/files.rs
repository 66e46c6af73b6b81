//! What every command that writes files shares: atomic writes, output folders, and the HDF5 text
//! attributes and event lines of `run.h5` and the node logs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically (a temporary file beside it, then a rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    transport::fsutil::write_atomic(path, bytes, false).with_context(|| format!("cannot write {}", path.display()))
}

/// The largest configuration file read (1 MiB).
pub(crate) const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The largest results file, report or README read back (256 MiB).
pub(crate) const MAX_RESULTS_BYTES: u64 = 256 << 20;

/// Reads the text file `path` if it holds at most `max` bytes (whatever its metadata says); the error
/// names the file and the limit.
pub(crate) fn read_text(path: &Path, max: u64) -> Result<String> {
    transport::fsutil::read_text_bounded(path, max).with_context(|| format!("cannot read {}", path.display()))
}

/// Files by which a folder is known to hold a run already.
const RUN_FILES: [&str; 4] = ["run.h5", "summary.json", "report.md", "launch.h5"];

/// [`out_dir`] for a new run: a folder that already holds a run (its report, summary or log) is refused
/// unless `force`, so nothing is replaced without being asked.
pub(crate) fn fresh_out_dir(out: Option<PathBuf>, name: &str, force: bool) -> Result<PathBuf> {
    if let Some(dir) = &out
        && !force
        && let Some(file) = RUN_FILES.iter().find(|f| dir.join(f).exists())
    {
        anyhow::bail!(
            "{} holds a run already ({file}): choose another --out, or add --force to replace it",
            dir.display()
        );
    }
    out_dir(out, name)
}

/// Checks that `name` can name a folder under `runs/`: letters, digits, `-`, `_` and `.`, not starting
/// with `.`, at most 64 characters (so a default output folder never lands outside `runs/`).
pub(crate) fn check_run_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        anyhow::bail!(
            "invalid {field}: {name:?} must be 1 to 64 letters, digits, '-', '_' or '.', not starting with '.' (it names a folder under runs/)"
        );
    }
    Ok(())
}

/// The output folder: `out` if given, else `runs/<name>-<unix time>`; created if missing.
pub(crate) fn out_dir(out: Option<PathBuf>, name: &str) -> Result<PathBuf> {
    let out = out.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        PathBuf::from("runs").join(format!("{name}-{secs}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    Ok(out)
}

/// `s` as HDF5 text.
pub(crate) fn h5_text(s: &str) -> Result<hdf5::types::VarLenUnicode> {
    s.parse().map_err(|e| anyhow::anyhow!("not storable as HDF5 text: {e:?}"))
}

/// Writes the text attribute `name` of an HDF5 file or group.
pub(crate) fn h5_write_text(loc: &hdf5::Location, name: &str, value: &str) -> Result<()> {
    loc.new_attr::<hdf5::types::VarLenUnicode>().create(name)?.write_scalar(&h5_text(value)?)?;
    Ok(())
}

/// A text attribute of an HDF5 file or group.
pub(crate) fn h5_attr_text(loc: &hdf5::Location, name: &str) -> Result<String> {
    let v: hdf5::types::VarLenUnicode =
        loc.attr(name).and_then(|a| a.read_scalar()).with_context(|| format!("no attribute {name:?}"))?;
    Ok(v.as_str().to_owned())
}

/// An event as one line of an HDF5 `events` dataset: `time_s<TAB>kind<TAB>detail`.
pub(crate) fn event_line(time_s: f64, kind: &str, detail: &str) -> Result<hdf5::types::VarLenUnicode> {
    h5_text(&format!("{time_s:.6}\t{kind}\t{detail}"))
}

/// The parts of an [`event_line`], if it is one.
pub(crate) fn parse_event_line(line: &str) -> Option<(f64, &str, &str)> {
    let mut parts = line.splitn(3, '\t');
    Some((parts.next()?.parse().ok()?, parts.next()?, parts.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_stay_inside_runs() {
        for bad in ["../../escape", "/etc/x", "", ".hidden", "a/b", "a\\b", &"x".repeat(65)] {
            assert!(check_run_name("name", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["noloco", "my-run_2.1"] {
            assert!(check_run_name("name", good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn an_existing_run_is_not_replaced_unless_forced() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let run = dir.path().join("run");
        assert!(fresh_out_dir(Some(run.clone()), "x", false)?.is_dir(), "a new folder is made");
        std::fs::write(run.join("report.md"), "old")?;
        let err = fresh_out_dir(Some(run.clone()), "x", false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("holds a run already") && err.contains("--force"), "{err}");
        assert!(fresh_out_dir(Some(run.clone()), "x", true).is_ok());
        assert_eq!(std::fs::read_to_string(run.join("report.md"))?, "old", "nothing is touched by the check");
        Ok(())
    }
}
