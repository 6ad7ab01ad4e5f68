//! Lines on stderr that never panic. `eprintln!` panics when stderr cannot be
//! written (`2>/dev/full`, a pipe whose reader has gone: `2>&1 | head -1`);
//! here such a line is dropped, and a reader that has gone is remembered so a
//! long-running command can stop the way other tools do on a broken pipe.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// One line on stderr; dropped when it cannot be written.
pub fn err_line(text: &str) {
    let mut e = std::io::stderr().lock();
    if let Err(err) = writeln!(e, "{text}").and_then(|_| e.flush()) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            STDERR_GONE.store(true, Ordering::SeqCst);
        }
    }
}

/// Whether stderr's reader has gone away: a write met a broken pipe, or the
/// pipe or socket behind stderr reports that its other end has closed. A file,
/// `/dev/full` or a terminal still open is never gone.
pub fn stderr_gone() -> bool {
    STDERR_GONE.load(Ordering::SeqCst) || hung_up(libc::STDERR_FILENO)
}

/// The kernel's word on `fd` without waiting: POLLERR on a pipe with no reader,
/// POLLHUP on a socket whose peer closed or a terminal hung up.
fn hung_up(fd: libc::c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd that lives across the call; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

#[cfg(test)]
mod tests {
    use super::hung_up;

    #[test]
    fn a_pipe_without_a_reader_is_hung_up_and_one_with_a_reader_is_not() {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe fills the two descriptors, which this test closes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (read, write) = (fds[0], fds[1]);
        assert!(!hung_up(write));
        unsafe { libc::close(read) };
        assert!(hung_up(write));
        unsafe { libc::close(write) };
    }
}
