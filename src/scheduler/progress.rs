//! How far one attempt has got: when it started, when its first piece of text
//! arrived, how many pieces since. The attempt's stream callback feeds it; the
//! scheduler reads it to decide on hedging.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

#[derive(Debug)]
pub struct Progress {
    pub started: Instant,
    /// Microseconds from `started` to the first piece, plus one (0 = none yet).
    first_us: AtomicU64,
    pieces: AtomicU64,
    chars: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            started: Instant::now(),
            first_us: AtomicU64::new(0),
            pieces: AtomicU64::new(0),
            chars: AtomicU64::new(0),
        }
    }

    /// A piece of the reply arrived now.
    pub fn piece(&self, text: &str) {
        self.piece_at(Instant::now());
        self.chars.fetch_add(text.len() as u64, Ordering::Relaxed);
    }

    /// A piece of the reply arrived at `at` (tests give the time).
    pub(crate) fn piece_at(&self, at: Instant) {
        let us = at.saturating_duration_since(self.started).as_micros() as u64 + 1;
        let _ = self
            .first_us
            .compare_exchange(0, us, Ordering::Relaxed, Ordering::Relaxed);
        self.pieces.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn first_token_at(&self) -> Option<Instant> {
        match self.first_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.started + std::time::Duration::from_micros(us - 1)),
        }
    }

    pub fn pieces(&self) -> u64 {
        self.pieces.load(Ordering::Relaxed)
    }

    pub fn chars(&self) -> u64 {
        self.chars.load(Ordering::Relaxed)
    }
}
