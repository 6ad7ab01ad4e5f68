//! One writer at a time: an exclusive `flock` on the directory that holds the
//! file (as the user named it), so no lock file is left beside the user's files.
//!
//! From async code the lock is taken with [`FileLock::wait`] (or a whole save
//! run with [`with_lock`]): a free lock is taken at once; a contended one is
//! waited for on the blocking pool, so Ctrl-C can give up the wait, and a save
//! given up while waiting never writes.

use std::io;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

use crate::blocking::{self, Stopped};

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}: {what}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("not saved: {0}")]
    Stopped(#[from] Stopped),
}

/// Held while a file is re-read, merged and written; released on drop.
#[derive(Debug)]
pub struct FileLock {
    dir: std::fs::File,
}

/// The directory whose lock guards `path`.
fn lock_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn open(dir: &Path) -> Result<std::fs::File, LockError> {
    std::fs::File::open(dir).map_err(|source| LockError::Io {
        dir: dir.to_path_buf(),
        what: "cannot open for locking",
        source,
    })
}

fn lock_failed(dir: &Path) -> impl FnOnce(io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        dir: dir.to_path_buf(),
        what: "cannot lock",
        source,
    }
}

impl FileLock {
    /// Wait for the lock that guards `path` (blocking the thread).
    pub fn acquire(path: &Path) -> Result<FileLock, LockError> {
        let dir = lock_dir(path);
        let file = open(dir)?;
        file.lock_exclusive().map_err(lock_failed(dir))?;
        Ok(FileLock { dir: file })
    }

    /// The lock if it is free; None while another program holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>, LockError> {
        let dir = lock_dir(path);
        let file = open(dir)?;
        let taken = file.try_lock_exclusive().map_err(lock_failed(dir))?;
        Ok(taken.then_some(FileLock { dir: file }))
    }

    /// The lock, from async code: at once when it is free; else `waiting` is
    /// called once and the wait runs on the blocking pool. Dropping the future
    /// gives up the wait (the waiting thread releases the lock when it gets it).
    pub async fn wait(path: &Path, waiting: impl FnOnce()) -> Result<FileLock, LockError> {
        if let Some(lock) = FileLock::try_acquire(path)? {
            return Ok(lock);
        }
        waiting();
        let path = path.to_path_buf();
        blocking::try_run(move || FileLock::acquire(&path)).await
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.dir);
    }
}

/// Run `job` (re-read, merge, write) holding the lock that guards `path`, off
/// the async threads. `waiting` is told when another program holds the lock.
/// Given up while waiting (the future dropped), the job never runs; given up
/// once it runs, it still ends with a whole file (writes are atomic).
pub(crate) async fn with_lock<T, E, F>(path: &Path, waiting: impl FnOnce(), job: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<LockError> + From<Stopped> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    let lock = FileLock::wait(path, waiting).await?;
    blocking::try_run(move || {
        let _lock = lock;
        job()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_lock_is_waited_for_and_the_wait_can_be_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("settings.json");
        let held = FileLock::acquire(&file).unwrap();
        assert!(FileLock::try_acquire(&file).unwrap().is_none());
        let mut told = false;
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ran.clone();
        let given_up = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            with_lock(
                &file,
                || told = true,
                move || {
                    r.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok::<(), anyhow::Error>(())
                },
            ),
        )
        .await;
        assert!(given_up.is_err(), "still waiting while the lock is held");
        assert!(told, "the caller heard that it waits");
        drop(held);
        // The abandoned waiter gets the lock, drops it unused, and the job never ran.
        let again = FileLock::wait(&file, || {}).await.unwrap();
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        drop(again);
        let v = with_lock(&file, || {}, || Ok::<_, anyhow::Error>(5)).await;
        assert_eq!(v.unwrap(), 5);
    }
}
