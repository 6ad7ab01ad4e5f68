//! File and process work that may block (a contended lock, an fsync, a slow
//! disk), run from async code on tokio's blocking pool, so neither the async
//! threads nor the shell's Ctrl-C wait for it: a caller that is cancelled
//! stops waiting at once, and the work it started runs to its end unseen.

/// The runtime shut down before the work could run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped: the program is shutting down")]
pub struct Stopped;

impl From<Stopped> for std::io::Error {
    fn from(e: Stopped) -> std::io::Error {
        std::io::Error::other(e)
    }
}

/// Run `f` on the blocking pool. A panic in `f` goes on here, as if `f` had
/// run in place.
pub async fn run<T, F>(f: F) -> Result<T, Stopped>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Stopped),
    }
}

/// `run` for work that can fail: its error, or `Stopped` as one of them.
pub(crate) async fn try_run<T, E, F>(f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<Stopped> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    run(f).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_and_errors_come_back() {
        assert_eq!(run(|| 7).await, Ok(7));
        let e = try_run(|| Err::<(), _>(std::io::Error::other("disk"))).await;
        assert_eq!(e.unwrap_err().to_string(), "disk");
    }
}
