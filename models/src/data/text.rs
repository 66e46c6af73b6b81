//! Text corpora from a file or a directory of files.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{ByteTokenizer, Corpus};
use crate::error::{Error, Result};

/// Largest corpus read into memory.
const MAX_BYTES: u64 = 2 << 30;

fn corpus_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Corpus { path: path.to_owned(), reason: reason.into() }
}

fn files_under(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| corpus_err(path, format!("cannot read: {e}")))?;
    if meta.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    if !meta.is_dir() {
        return Err(corpus_err(path, "is neither a text file nor a directory of text files"));
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| corpus_err(&dir, format!("cannot list: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| corpus_err(&dir, format!("cannot list: {e}")))?;
            let p = entry.path();
            if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else if p.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(corpus_err(path, "directory holds no files"));
    }
    Ok(files)
}

/// Reads a UTF-8 text file, or every file under a directory (sorted by path, joined by newlines), and
/// splits it: the last `val_fraction` of the bytes for validation. Missing paths, binary files and
/// empty corpora are errors that name the path.
pub fn load_text(path: impl AsRef<Path>, val_fraction: f64) -> Result<Corpus> {
    let path = path.as_ref();
    if !(0.0..1.0).contains(&val_fraction) || val_fraction == 0.0 {
        return Err(Error::config("corpus.val_fraction", format!("{val_fraction} is outside (0, 1)")));
    }
    let mut text = String::new();
    let mut total = 0u64;
    for file in files_under(path)? {
        // Read at most what is left of the budget (plus one byte to notice more), whatever the metadata says.
        let mut bytes = Vec::new();
        std::fs::File::open(&file)
            .and_then(|f| f.take(MAX_BYTES - total + 1).read_to_end(&mut bytes))
            .map_err(|e| corpus_err(&file, format!("cannot read: {e}")))?;
        total += bytes.len() as u64;
        if total > MAX_BYTES {
            return Err(corpus_err(path, format!("larger than {} GiB", MAX_BYTES >> 30)));
        }
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            return Err(corpus_err(&file, format!("is not text (NUL byte at offset {at})")));
        }
        let s = String::from_utf8(bytes).map_err(|e| {
            corpus_err(&file, format!("is not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()))
        })?;
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&s);
    }
    if text.trim().is_empty() {
        return Err(corpus_err(path, "is empty"));
    }
    Ok(split_text(path.display().to_string(), &text, val_fraction))
}

/// The prose the project ships: the opening of Leo Tolstoy's *War and Peace* (Book One and the start of
/// Book Two, about 400 kB of English in the public-domain translation by Louise and Aylmer Maude).
pub const PROSE: &str = include_str!("../../assets/prose.txt");

/// The shipped prose ([`PROSE`]) as a corpus, byte-tokenized, its last `val_fraction` held out.
pub fn prose(val_fraction: f64) -> Result<Corpus> {
    if !(0.0..1.0).contains(&val_fraction) || val_fraction == 0.0 {
        return Err(Error::config("corpus.val_fraction", format!("{val_fraction} is outside (0, 1)")));
    }
    Ok(split_text("prose (War and Peace, opening)".into(), PROSE, val_fraction))
}

/// Tokenizes `text` and holds out its last `val_fraction` of the tokens.
fn split_text(name: String, text: &str, val_fraction: f64) -> Corpus {
    let tokens = ByteTokenizer.encode(text);
    let split = ((tokens.len() as f64) * (1.0 - val_fraction)) as usize;
    Corpus { name, train: tokens[..split].to_vec(), val: tokens[split..].to_vec(), entropy_floor: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_load_and_split() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| corpus_err(Path::new("tmp"), e.to_string()))?;
        std::fs::write(dir.path().join("b.txt"), "world ".repeat(100)).ok();
        std::fs::write(dir.path().join("a.txt"), "hello ".repeat(100)).ok();
        let c = load_text(dir.path(), 0.1)?;
        assert_eq!(c.train.len() + c.val.len(), 1201);
        assert_eq!(ByteTokenizer.decode(&c.train[..5]), "hello");
        let single = load_text(dir.path().join("a.txt"), 0.5)?;
        assert_eq!(single.train.len(), 300);
        Ok(())
    }

    #[test]
    fn the_shipped_prose_is_english_text_split_for_validation() -> Result<()> {
        let c = prose(0.1)?;
        assert!(c.train.len() > 300_000 && c.val.len() > 30_000, "{} + {}", c.train.len(), c.val.len());
        assert!(ByteTokenizer.decode(&c.train[..40]).starts_with("\"Well, Prince, so Genoa and Lucca"));
        // Letters and spaces make most of it, and there are no carriage returns or byte-order marks.
        let letters = PROSE.bytes().filter(|b| b.is_ascii_alphabetic() || *b == b' ').count();
        assert!(letters as f64 > 0.85 * PROSE.len() as f64, "{letters} of {}", PROSE.len());
        assert!(!PROSE.contains('\r') && !PROSE.starts_with('\u{feff}'));
        assert!(prose(1.0).is_err() && prose(0.0).is_err());
        Ok(())
    }

    #[test]
    fn bad_corpora_name_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        #[cfg(unix)]
        {
            let err = load_text("/dev/null", 0.1).unwrap_err().to_string();
            assert!(err.contains("neither a text file nor a directory"), "{err}");
        }
        let err = load_text(dir.path().join("missing"), 0.1).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("cannot read"), "{err}");
        assert!(load_text(dir.path(), 0.1).unwrap_err().to_string().contains("no files"));
        std::fs::write(dir.path().join("bin"), [0u8, 1, 2, 3]).expect("write");
        let err = load_text(dir.path().join("bin"), 0.1).unwrap_err().to_string();
        assert!(err.contains("not text"), "{err}");
        std::fs::write(dir.path().join("latin1"), [b'a', 0xe9, b'b']).expect("write");
        assert!(load_text(dir.path().join("latin1"), 0.1).unwrap_err().to_string().contains("UTF-8"));
        std::fs::write(dir.path().join("empty"), "  \n").expect("write");
        assert!(load_text(dir.path().join("empty"), 0.1).unwrap_err().to_string().contains("empty"));
        assert!(load_text(dir.path().join("empty"), 1.5).is_err());
    }
}
