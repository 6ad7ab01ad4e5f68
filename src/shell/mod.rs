//! The line loop: rustyline on a terminal, plain lines when piped. Ctrl-C during
//! a running command cancels it and returns to the prompt.

mod editor;

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::runtime::Runtime;
use tokio::sync::Notify;

use crate::app::{App, Line, Outcome, Sink};
use crate::ui;

/// Set once stdout's reader has gone away (`… | head`): the loop stops after the
/// current line and the program leaves through the usual shutdown.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether stdout's reader has gone away.
pub(crate) fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::SeqCst)
}

/// Writes results to stdout and diagnostics to stderr; a closed stdout (a pipe
/// whose reader went away) drops further results and ends the session.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdSink {
    /// `-i`: stdout holds the one JSON value and nothing else, so every line a
    /// command prints on the way (discovery, `--add-node`, …) goes to stderr.
    json_only: bool,
}

impl StdSink {
    /// The sink for `-i`: results of the start-up commands and of the query's
    /// steps go to stderr; only [`one_query`] writes stdout (its JSON).
    pub fn json_only() -> StdSink {
        StdSink { json_only: true }
    }
}

impl Sink for StdSink {
    fn line(&mut self, kind: Line, text: &str) {
        let painted = match kind {
            Line::Result if !self.json_only => return result_line(text),
            Line::Result | Line::Notice => text.to_string(),
            Line::Warning => ui::paint_err(text, "33"),
            Line::Failure => ui::paint_err(text, "31"),
        };
        let _ = writeln!(std::io::stderr().lock(), "{painted}");
    }
}

/// A result on stdout, unless its reader has gone away.
fn result_line(text: &str) {
    if stdout_closed() {
        return;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{text}").and_then(|_| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::SeqCst);
        }
    }
}

/// Background notices (a node went down or came back) as lines on stderr.
pub fn notices_to_stderr(app: &App) {
    if let Ok(mut n) = app.services.notifier.write() {
        *n = Arc::new(|line: String| StdSink::default().err(&line));
    }
}

/// Ctrl-C plumbing: one listener for the whole process.
pub(crate) struct Interrupts {
    busy: Arc<AtomicBool>,
    cancel: Arc<Notify>,
    /// Ctrl-C while idle and piped: the loop ends (and main shuts down).
    quit: Arc<Notify>,
}

impl Interrupts {
    /// While a command runs, Ctrl-C cancels it; while idle and piped, it ends
    /// the session (through the same shutdown as every other way out).
    pub fn install(rt: &Runtime, interactive: bool) -> Interrupts {
        let busy = Arc::new(AtomicBool::new(false));
        let cancel = Arc::new(Notify::new());
        let quit = Arc::new(Notify::new());
        let (b, c, q) = (busy.clone(), cancel.clone(), quit.clone());
        // The handler is in place before this returns: a Ctrl-C that comes
        // before the listener first runs is kept for it, not the default
        // (which would end the process).
        let mut interrupts = {
            let _in_runtime = rt.enter();
            crate::signals::Signals::interrupt()
        };
        rt.spawn(async move {
            loop {
                interrupts.next().await;
                if b.load(Ordering::SeqCst) {
                    c.notify_waiters();
                } else if !interactive {
                    // A permit: the loop sees it even if it is not waiting yet.
                    q.notify_one();
                }
            }
        });
        Interrupts { busy, cancel, quit }
    }

    /// Run one line; Ctrl-C drops it (cancelling every request it had in flight).
    pub fn run(&self, rt: &Runtime, app: &mut App, line: &str, sink: &mut dyn Sink) -> Outcome {
        self.busy.store(true, Ordering::SeqCst);
        let cancel = self.cancel.clone();
        let outcome = rt.block_on(async {
            let notified = cancel.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            tokio::select! {
                o = app.run_line(line, sink) => Some(o),
                _ = &mut notified => None,
            }
        });
        self.busy.store(false, Ordering::SeqCst);
        outcome.unwrap_or_else(|| {
            sink.err("⛔ Cancelled (Ctrl-C)");
            Outcome::FAILED
        })
    }
}

/// `-i TEXT`: one query, its result as JSON on stdout; exit status 0, 1 when
/// the answer has gaps or failed, 130 when Ctrl-C cancelled it.
pub fn one_query(rt: &Runtime, app: &mut App, query: &str) -> i32 {
    let interrupts = Interrupts::install(rt, false);
    let mut sink = StdSink::json_only();
    interrupts.busy.store(true, Ordering::SeqCst);
    let cancel = interrupts.cancel.clone();
    let result = rt.block_on(async {
        let notified = cancel.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        tokio::select! {
            r = app.run_query(query, &mut sink) => Some(r),
            _ = &mut notified => None,
        }
    });
    match result {
        Some(Ok(r)) => {
            result_line(&serde_json::to_string_pretty(&r.to_json()).unwrap_or_default());
            if r.complete() {
                0
            } else {
                sink.fail(&crate::app::incomplete_line(&r));
                1
            }
        }
        Some(Err(e)) => {
            sink.fail(&format!("❌ Query failed: {e}"));
            result_line(&serde_json::json!({ "error": e.to_string() }).to_string());
            1
        }
        None => {
            sink.err("⛔ Cancelled (Ctrl-C)");
            130
        }
    }
}

pub struct ShellOptions {
    pub bail: bool,
}

/// Run until exit or end of input; returns the process exit status.
pub fn run(rt: &Runtime, app: &mut App, opts: ShellOptions) -> i32 {
    let interactive = std::io::stdin().is_terminal();
    let interrupts = Interrupts::install(rt, interactive);
    let mut sink = StdSink::default();
    if interactive {
        editor::run(rt, app, &interrupts, &mut sink)
    } else {
        run_piped(rt, app, &interrupts, &mut sink, &opts)
    }
}

/// Lines of stdin, read on their own thread so the loop can also wait for Ctrl-C.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let mut buf = Vec::new();
            let r = input.read_until(b'\n', &mut buf);
            let end = !matches!(r, Ok(n) if n > 0);
            if tx.blocking_send(r.map(|_| buf)).is_err() || end {
                return;
            }
        }
    });
    rx
}

fn run_piped(
    rt: &Runtime,
    app: &mut App,
    ints: &Interrupts,
    sink: &mut dyn Sink,
    opts: &ShellOptions,
) -> i32 {
    let mut lines = stdin_lines();
    let mut failed = false;
    let mut lineno = 0usize;
    loop {
        if stdout_closed() {
            break;
        }
        let next = rt.block_on(async {
            tokio::select! {
                l = lines.recv() => Some(l),
                _ = ints.quit.notified() => None,
            }
        });
        let buf = match next {
            // Ctrl-C while waiting for the next line.
            None => return 130,
            Some(None) => break,
            Some(Some(Ok(b))) if b.is_empty() => break,
            Some(Some(Ok(b))) => b,
            Some(Some(Err(e))) => {
                sink.fail(&format!("❌ stdin: {e}"));
                return 1;
            }
        };
        lineno += 1;
        let line = match std::str::from_utf8(&buf) {
            Ok(s) => s.trim(),
            Err(e) => {
                sink.fail(&format!(
                    "❌ stdin line {lineno}: not valid UTF-8 (byte {}); line skipped",
                    e.valid_up_to() + 1
                ));
                failed = true;
                if opts.bail {
                    break;
                }
                continue;
            }
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains('\0') {
            sink.fail(&format!(
                "❌ stdin line {lineno}: contains a NUL byte; line skipped"
            ));
            failed = true;
            if opts.bail {
                break;
            }
            continue;
        }
        let outcome = ints.run(rt, app, line, sink);
        if !outcome.ok {
            failed = true;
            if opts.bail {
                sink.err(&format!("⛔ Stopped at line {lineno} (--bail)"));
                break;
            }
        }
        if outcome.exit {
            break;
        }
    }
    i32::from(failed)
}
