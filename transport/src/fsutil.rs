//! Atomic file writes (a file is either its old self or complete, never half written) and bounded
//! reads (a file is read up to a limit, whatever its metadata says).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Reads `path` whole if it holds at most `max` bytes. Reading stops after `max + 1` bytes whatever the
/// file's metadata says, so a device that never ends (`/dev/zero`) or a file that grows is an error of
/// kind `InvalidData` that names the limit, never an unbounded allocation.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("holds more than {max} bytes")));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text; text that is not UTF-8 is an `InvalidData` error.
pub fn read_text_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, max)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("is not UTF-8 text: {e}")))
}

/// A temporary name beside `path` to write under: unique to this process and call, and ending in
/// `path`'s extension (for writers that pick a format by it, such as image encoders).
fn temporary(path: &Path) -> PathBuf {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stem = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!(".{stem}.tmp-{}-{call}{ext}", std::process::id()))
}

/// Replaces `path` with whatever `write` puts at the temporary path it is given (beside `path`, so the
/// final rename stays on one file system). If `write` or the rename fails, the temporary file is removed
/// and `path` is left as it was.
pub fn replace_with<E: From<std::io::Error>>(path: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let tmp = temporary(path);
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(E::from));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to the new file `tmp` and syncs it; with `private`, readable by its owner only (Unix).
fn write_synced(tmp: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Writes `bytes` to `path` atomically (synced to disk before the rename). With `private`, the file is
/// created readable by its owner only (Unix).
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    replace_with(path, |tmp| write_synced(tmp, bytes, private))
}

/// Writes `bytes` to a *new* file at `path`, atomically and exclusively: the complete file appears under
/// `path` by a hard link from a temporary file, which fails with `AlreadyExists` if anything is there. Of
/// several writers racing for one path exactly one succeeds, and nobody ever sees a half-written file.
pub fn write_new(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = temporary(path);
    let result = write_synced(&tmp, bytes, private).and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_writers_racing_for_a_new_file_exactly_one_wins() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("key");
        let wins: usize = std::thread::scope(|s| {
            let path = &path;
            let racers: Vec<_> = (0..8u8).map(|i| s.spawn(move || write_new(path, &[i; 64], true).is_ok())).collect();
            racers.into_iter().map(|r| usize::from(r.join().unwrap_or(false))).sum()
        });
        assert_eq!(wins, 1);
        let bytes = std::fs::read(&path)?;
        assert!(bytes.len() == 64 && bytes.iter().all(|&b| b == bytes[0]), "one writer's whole file");
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1, "no temporary file is left behind");
        assert_eq!(write_new(&path, b"x", false).map_err(|e| e.kind()), Err(std::io::ErrorKind::AlreadyExists));
        Ok(())
    }

    #[test]
    fn reads_are_bounded_whatever_the_file_is() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345")?;
        assert_eq!(read_bounded(&path, 5)?, b"12345");
        assert_eq!(read_bounded(&path, 4).map_err(|e| e.kind()), Err(std::io::ErrorKind::InvalidData));
        #[cfg(unix)]
        {
            let zero = read_bounded(Path::new("/dev/zero"), 1 << 10).map_err(|e| e.to_string());
            assert!(zero.is_err_and(|e| e.contains("1024")), "an endless device is refused at the limit");
        }
        std::fs::write(&path, [0xff, 0xfe])?;
        assert!(read_text_bounded(&path, 10).is_err());
        Ok(())
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f.txt");
        write_atomic(&path, b"old", false)?;
        let failed: std::io::Result<()> = replace_with(&path, |tmp| {
            assert_eq!(tmp.extension().and_then(|e| e.to_str()), Some("txt"), "the extension is kept");
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("interrupted"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path)?, b"old");
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
        write_atomic(&path, b"new", false)?;
        assert_eq!(std::fs::read(&path)?, b"new");
        Ok(())
    }
}
