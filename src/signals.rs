//! Ctrl-C (SIGINT) and SIGTERM as streams whose handlers are in place from the
//! moment they are made: a signal that comes before anyone waits is kept for
//! the next wait, never the default action (which would end the process).

#[cfg(unix)]
use tokio::signal::unix::{signal, Signal, SignalKind};

pub(crate) struct Signals {
    #[cfg(unix)]
    term: Option<Signal>,
    #[cfg(unix)]
    int: Option<Signal>,
}

impl Signals {
    /// SIGINT only (the shell: Ctrl-C cancels a command). Call inside the runtime.
    pub(crate) fn interrupt() -> Signals {
        Signals::of(false)
    }

    /// SIGTERM and SIGINT (`serve`: either drains). Call inside the runtime.
    pub(crate) fn terminate_or_interrupt() -> Signals {
        Signals::of(true)
    }

    fn of(term: bool) -> Signals {
        #[cfg(unix)]
        {
            Signals {
                term: term.then(|| signal(SignalKind::terminate()).ok()).flatten(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = term;
            Signals {}
        }
    }

    /// The next signal, by name.
    pub(crate) async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            if self.int.is_none() && self.term.is_none() {
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
            tokio::select! {
                _ = recv(&mut self.term) => "SIGTERM",
                _ = recv(&mut self.int) => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
