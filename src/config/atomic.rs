//! Atomic file replacement: temp file in the same directory, fsync, rename.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Write `contents` to `path` so that a reader (or a crash) only ever sees the old
/// file or the complete new one.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".synapticllamas-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    tmp.write_all(contents)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        // Keep the permissions the user gave the file.
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("{}: cannot replace", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    remove_stale_temp_files(dir);
    Ok(())
}

const TEMP_PREFIX: &str = ".synapticllamas-";
const TEMP_SUFFIX: &str = ".tmp";
/// A temporary file this old was left by a writer that died (a write takes milliseconds).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Remove temporary files of ours that a killed process left behind in `dir`.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        let stale = e
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temp_files_of_killed_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(".synapticllamas-abc123.tmp");
        let young = dir.path().join(".synapticllamas-def456.tmp");
        let other = dir.path().join(".other-abc123.tmp");
        for p in [&old, &young, &other] {
            std::fs::write(p, b"{").unwrap();
        }
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        for p in [&old, &other] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(past)
                .unwrap();
        }
        write_atomic(&dir.path().join("f.json"), b"{}").unwrap();
        assert!(!old.exists(), "a stale temp file is removed");
        assert!(young.exists(), "another writer's live temp file is kept");
        assert!(other.exists(), "files that are not ours are kept");
    }
}
