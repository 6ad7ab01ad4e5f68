//! One writer at a time: an exclusive `flock` on the directory that holds the
//! file (as the user named it), so no lock file is left beside the user's files.

use std::path::Path;

use fs4::fs_std::FileExt;

/// Held while a file is re-read, merged and written; released on drop.
pub struct FileLock {
    dir: std::fs::File,
}

impl FileLock {
    /// Wait for the lock that guards `path`.
    pub fn acquire(path: &Path) -> anyhow::Result<FileLock> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file = std::fs::File::open(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot open for locking: {e}", dir.display()))?;
        file.lock_exclusive()
            .map_err(|e| anyhow::anyhow!("{}: cannot lock: {e}", dir.display()))?;
        Ok(FileLock { dir: file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.dir);
    }
}
