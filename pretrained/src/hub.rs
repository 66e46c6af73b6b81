//! Finding a checkpoint: a local folder, or a model id in the Hugging Face cache, offline.
//!
//! The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. A model
//! `Org/Name` lives in `models--Org--Name/snapshots/<revision>/`, the revision named by `refs/main`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The folder of `model`: itself when it is a folder, else its snapshot in the Hugging Face cache.
pub fn resolve(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    resolve_in(model, &cache_dir())
}

/// The Hugging Face cache folder of this environment.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
        .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"))
}

/// The snapshot of `model` (`Org/Name`) in the cache `cache`: the revision `refs/main` names, or the
/// only snapshot there is.
pub fn resolve_in(model: &str, cache: &Path) -> Result<PathBuf> {
    let not_cached = || Error::NotCached { model: model.to_owned(), looked: cache.to_path_buf() };
    if model.is_empty() || model.split('/').count() > 2 || model.contains("..") {
        return Err(not_cached());
    }
    let repo = cache.join(format!("models--{}", model.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
        let dir = snapshots.join(rev.trim());
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    let found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .map_err(|_| not_cached())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match &found[..] {
        [only] => Ok(only.clone()),
        [] => Err(not_cached()),
        _ => Err(Error::file(&snapshots, "several snapshots and no refs/main to choose one")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_resolve_to_the_snapshot_refs_main_names() -> std::io::Result<()> {
        let cache = tempfile::tempdir()?;
        let repo = cache.path().join("models--Org--Tiny-0.5B");
        std::fs::create_dir_all(repo.join("snapshots/abc123"))?;
        assert_eq!(resolve_in("Org/Tiny-0.5B", cache.path()).ok(), Some(repo.join("snapshots/abc123")));
        std::fs::create_dir_all(repo.join("snapshots/def456"))?;
        assert!(resolve_in("Org/Tiny-0.5B", cache.path()).is_err(), "two snapshots, no ref");
        std::fs::create_dir_all(repo.join("refs"))?;
        std::fs::write(repo.join("refs/main"), "def456\n")?;
        assert_eq!(resolve_in("Org/Tiny-0.5B", cache.path()).ok(), Some(repo.join("snapshots/def456")));
        let missing = resolve_in("Org/Other", cache.path()).expect_err("not cached").to_string();
        assert!(missing.contains("Org/Other") && missing.contains(&cache.path().display().to_string()), "{missing}");
        assert!(resolve_in("../../etc", cache.path()).is_err());
        // A folder is itself.
        assert_eq!(resolve(&cache.path().display().to_string()).ok(), Some(cache.path().to_path_buf()));
        Ok(())
    }
}
