//! Atomic file replacement that keeps the file as the user laid it out: a
//! symbolic link is followed and its target replaced (temp file in the target's
//! directory, fsync, rename), the target's mode and owner are kept, and a
//! read-only file is refused instead of silently replaced.
//!
//! Many files written together (a RAG index run's chunk files) use
//! [`write_staged`], the same replacement without the fsyncs, and are made
//! durable all at once by [`flush`] before anything refers to them.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a file was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{}: the file is read-only (mode {mode:03o}); not saved — make it writable (chmod u+w) to save", path.display())]
    ReadOnly { path: PathBuf, mode: u32 },
    #[error("{}: not a regular file; not saved", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: too many levels of symbolic links; not saved", path.display())]
    LinkLoop { path: PathBuf },
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("not saved: {0}")]
    Stopped(#[from] crate::blocking::Stopped),
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError::Io { path, what, source }
}

/// The file a path finally names: symbolic links followed (also a link whose
/// target does not exist yet), relative targets taken from the link's directory.
pub(crate) fn resolve_links(path: &Path) -> Result<PathBuf, WriteError> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p).map_err(io(&p, "cannot read the link"))?;
                p = if target.is_absolute() {
                    target
                } else {
                    p.parent().unwrap_or(Path::new(".")).join(target)
                };
            }
            _ => return Ok(p),
        }
    }
    Err(WriteError::LinkLoop {
        path: path.to_path_buf(),
    })
}

/// When a written file reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Before the write returns: the file and its directory are fsynced.
    Now,
    /// When the caller flushes a batch of files (`flush`).
    Later,
}

/// Write `contents` to `path` so that a reader (or a crash) only ever sees the old
/// file or the complete new one.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), WriteError> {
    write(path, contents, Durability::Now)
}

/// `write_atomic` without the fsyncs: a reader never sees a half-written file,
/// but after a crash the file may be empty until [`flush`] has run. For many
/// files written together, made durable at once before anything names them.
pub(crate) fn write_staged(path: &Path, contents: &[u8]) -> Result<(), WriteError> {
    write(path, contents, Durability::Later)
}

fn write(path: &Path, contents: &[u8], durability: Durability) -> Result<(), WriteError> {
    let target = resolve_links(path)?;
    let existing = match std::fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&target, "cannot inspect")(e)),
    };
    if let Some(m) = &existing {
        if !m.is_file() {
            return Err(WriteError::NotAFile { path: target });
        }
        // No write bit at all: the user made it read-only (root could write it anyway).
        if m.permissions().readonly() {
            return Err(WriteError::ReadOnly {
                path: target,
                mode: m.mode() & 0o7777,
            });
        }
        // Writable by mode, but not by us: replacing it would change its owner.
        if let Err(e) = std::fs::OpenOptions::new().write(true).open(&target) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(WriteError::ReadOnly {
                    path: target,
                    mode: m.mode() & 0o7777,
                });
            }
        }
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(&dir)
        .map_err(io(&dir, "cannot create a temporary file"))?;
    tmp.write_all(contents)
        .and_then(|_| match durability {
            Durability::Now => tmp.as_file().sync_all(),
            Durability::Later => Ok(()),
        })
        .map_err(io(&target, "cannot write"))?;
    if let Some(m) = &existing {
        // Keep the mode and the owner the user gave the file. Changing the owner
        // works only for root; anyone else writes files they own already.
        let file = tmp.as_file();
        let _ = file.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777));
        if let Ok(now) = file.metadata() {
            if now.uid() != m.uid() || now.gid() != m.gid() {
                let _ = std::os::unix::fs::fchown(file, Some(m.uid()), Some(m.gid()));
                // chown clears set-id bits: put the mode back.
                let _ = file.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777));
            }
        }
    }
    tmp.persist(&target)
        .map_err(|e| io(&target, "cannot replace")(e.error))?;
    if durability == Durability::Now {
        sync_dir(&dir);
        remove_stale_temp_files(&dir);
    }
    Ok(())
}

/// fsync a directory (its entries: names created or renamed in it).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Make `files` (written by [`write_staged`], all on the file system of `dir`)
/// durable: one `syncfs` on Linux, else one fsync per file and per directory.
pub fn flush(dir: &Path, files: &[PathBuf]) -> Result<(), WriteError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let d = std::fs::File::open(dir).map_err(io(dir, "cannot open"))?;
        // SAFETY: syncfs only reads the descriptor, which `d` keeps open.
        if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
            return Ok(());
        }
    }
    let mut dirs = std::collections::BTreeSet::new();
    for f in files {
        std::fs::File::open(f)
            .and_then(|h| h.sync_all())
            .map_err(io(f, "cannot flush"))?;
        dirs.extend(f.parent().map(Path::to_path_buf));
    }
    dirs.iter().for_each(|d| sync_dir(d));
    Ok(())
}

const TEMP_PREFIX: &str = ".synapticllamas-";
const TEMP_SUFFIX: &str = ".tmp";
/// A temporary file this old was left by a writer that died (a write takes milliseconds).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Remove temporary files of ours that a killed process left behind in `dir`.
pub(crate) fn remove_stale_temp_files(dir: &Path) {
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

    #[test]
    fn links_are_written_through_and_modes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("dotfiles");
        std::fs::create_dir(&repo).unwrap();
        let target = repo.join("settings.json");
        std::fs::write(&target, b"old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join(".settings.json");
        std::os::unix::fs::symlink("dotfiles/settings.json", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        let mode = std::fs::metadata(&target).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A dangling link gets its target created.
        let dangling = dir.path().join(".nodes.json");
        std::os::unix::fs::symlink(repo.join("nodes.json"), &dangling).unwrap();
        write_atomic(&dangling, b"{}").unwrap();
        assert_eq!(std::fs::read(repo.join("nodes.json")).unwrap(), b"{}");
    }

    #[test]
    fn read_only_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ro.json");
        std::fs::write(&f, b"keep").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444)).unwrap();
        let e = write_atomic(&f, b"new").unwrap_err();
        assert!(matches!(e, WriteError::ReadOnly { mode: 0o444, .. }), "{e}");
        assert!(e.to_string().contains("read-only"), "{e}");
        assert_eq!(std::fs::read(&f).unwrap(), b"keep");
    }
}
