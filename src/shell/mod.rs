//! The line loop: rustyline on a terminal, plain lines when piped. Ctrl-C during
//! a running command cancels it and returns to the prompt.

mod editor;

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::runtime::Runtime;
use tokio::sync::Notify;

use crate::app::{App, Outcome, Sink};
use crate::ui;

/// Writes results to stdout and diagnostics to stderr; a closed stdout (a pipe
/// whose reader went away) ends the program quietly.
pub struct StdSink;

impl Sink for StdSink {
    fn out(&mut self, text: &str) {
        let mut o = std::io::stdout().lock();
        if let Err(e) = writeln!(o, "{text}").and_then(|_| o.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }
    fn err(&mut self, text: &str) {
        let painted = if text.starts_with('❌') {
            ui::paint_err(text, "31")
        } else if text.starts_with('⚠') {
            ui::paint_err(text, "33")
        } else {
            text.to_string()
        };
        let _ = writeln!(std::io::stderr().lock(), "{painted}");
    }
}

/// Background notices (a node went down or came back) as lines on stderr.
pub fn notices_to_stderr(app: &App) {
    if let Ok(mut n) = app.notifier.write() {
        *n = Arc::new(|line: String| StdSink.err(&line));
    }
}

/// Ctrl-C plumbing: one listener for the whole process.
pub struct Interrupts {
    busy: Arc<AtomicBool>,
    cancel: Arc<Notify>,
}

impl Interrupts {
    /// While a command runs, Ctrl-C cancels it; while idle and piped, it ends the program.
    pub fn install(rt: &Runtime, interactive: bool) -> Interrupts {
        let busy = Arc::new(AtomicBool::new(false));
        let cancel = Arc::new(Notify::new());
        let (b, c) = (busy.clone(), cancel.clone());
        rt.spawn(async move {
            loop {
                if tokio::signal::ctrl_c().await.is_err() {
                    return;
                }
                if b.load(Ordering::SeqCst) {
                    c.notify_waiters();
                } else if !interactive {
                    crate::sharding::coordinator::kill_owned();
                    std::process::exit(130);
                }
            }
        });
        Interrupts { busy, cancel }
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

/// `-i TEXT`: one query, its result as JSON on stdout; exit status 0 or 1.
pub async fn one_query(app: &mut App, query: &str, sink: &mut dyn Sink) -> i32 {
    match app.run_query(query, sink).await {
        Ok(r) => {
            sink.out(&serde_json::to_string_pretty(&r.to_json()).expect("result serializes"));
            if r.complete() {
                0
            } else {
                sink.err(&crate::app::incomplete_line(&r));
                1
            }
        }
        Err(e) => {
            sink.err(&format!("❌ Query failed: {e}"));
            sink.out(&serde_json::json!({ "error": e.to_string() }).to_string());
            1
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
    let mut sink = StdSink;
    if interactive {
        editor::run(rt, app, &interrupts, &mut sink)
    } else {
        run_piped(rt, app, &interrupts, &mut sink, &opts)
    }
}

fn run_piped(
    rt: &Runtime,
    app: &mut App,
    ints: &Interrupts,
    sink: &mut dyn Sink,
    opts: &ShellOptions,
) -> i32 {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    let mut failed = false;
    let mut lineno = 0usize;
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                sink.err(&format!("❌ stdin: {e}"));
                return 1;
            }
        }
        lineno += 1;
        let line = match std::str::from_utf8(&buf) {
            Ok(s) => s.trim(),
            Err(e) => {
                sink.err(&format!(
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
            sink.err(&format!(
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
