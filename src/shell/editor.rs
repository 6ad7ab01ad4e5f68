//! The interactive prompt: rustyline with history and completion.

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use tokio::runtime::Runtime;

use super::Interrupts;
use crate::app::{App, Line, Sink};
use crate::command;
use crate::config::read::FileKind;
use crate::config::HISTORY_FILE;

pub const PROMPT: &str = "SynapticLlamas> ";

struct Completion;

impl Completer for Completion {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let upto = &line[..pos];
        let start = upto.rfind(' ').map_or(0, |i| i + 1);
        let pairs = command::complete(upto)
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

pub fn run(rt: &Runtime, app: &mut App, ints: &Interrupts, sink: &mut dyn Sink) -> i32 {
    let mut ed: Editor<Completion, FileHistory> = match Editor::new() {
        Ok(e) => e,
        Err(e) => {
            sink.fail(&format!("❌ cannot start the line editor: {e}"));
            return 1;
        }
    };
    ed.set_helper(Some(Completion));
    app.interactive = true;
    // Notices from the background monitor are printed above the prompt. With an
    // external printer rustyline waits in select(2) on the terminal and on the
    // printer's pipe; before version 19 it did so even when an earlier read had
    // left keys in its own buffer, so input that arrived several bytes at once
    // (a paste, SSH, `tmux send-keys`) stalled after the first key until the
    // next key came (tests/cli/terminal.rs). Keep rustyline at 19 or later.
    if let Ok(p) = ed.create_external_printer() {
        let p = std::sync::Mutex::new(p);
        if let Ok(mut n) = app.services.notifier.write() {
            *n = std::sync::Arc::new(move |line: String| {
                use rustyline::ExternalPrinter;
                if let Ok(mut p) = p.lock() {
                    let _ = p.print(format!("{line}\n"));
                }
            });
        }
    }
    let history = app.cfg.home.join(HISTORY_FILE);
    // Only a regular file of a sane size is handed to the editor (it would
    // block on a FIFO, read `/dev/zero` forever) or written over.
    let history_ok = match crate::config::read::check(&history, FileKind::History) {
        Ok(exists) => {
            if exists {
                let _ = ed.load_history(&history);
            }
            true
        }
        Err(e) => {
            sink.warn(&format!("⚠️  {e}; history not read or saved"));
            false
        }
    };
    banner(app, sink);
    let prompt = crate::ui::paint_out(PROMPT, "1;31");
    loop {
        match ed.readline(&prompt) {
            Ok(line) => {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let _ = ed.add_history_entry(line);
                let outcome = ints.run(rt, app, line, &mut Asking(&mut *sink));
                if outcome.exit || super::stdout_closed() {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                sink.err("👋 Exiting SynapticLlamas. Goodbye!");
                break;
            }
            Err(e) => {
                sink.fail(&format!("❌ input: {e}"));
                break;
            }
        }
    }
    if !history_ok {
        return 0;
    }
    if let Err(e) = ed.save_history(&history) {
        sink.warn(&format!(
            "⚠️  {}: cannot save history: {e}",
            history.display()
        ));
    }
    0
}

/// The prompt's sink: it can ask the person at the terminal (`rm` does).
struct Asking<'a>(&'a mut dyn Sink);

impl Sink for Asking<'_> {
    fn line(&mut self, kind: Line, text: &str) {
        self.0.line(kind, text)
    }

    fn can_confirm(&self) -> bool {
        true
    }

    /// `QUESTION [y/N] `, read by a line editor of its own (Ctrl-C or
    /// Ctrl-D is a no).
    fn confirm(&mut self, question: &str) -> bool {
        let Ok(mut ed) = rustyline::DefaultEditor::new() else {
            return false;
        };
        matches!(
            ed.readline(&format!("{question} [y/N] ")),
            Ok(a) if matches!(a.trim().to_ascii_lowercase().as_str(), "y" | "yes")
        )
    }
}

fn banner(app: &App, sink: &mut dyn Sink) {
    let sim = if app.cluster.registry.simulated {
        let n = app.cluster.simulated.len();
        format!(
            " — {n} simulated host{} on 127.0.0.1",
            if n == 1 { "" } else { "s" }
        )
    } else {
        String::new()
    };
    sink.err("🧠  S Y N A P T I C   L L A M A S  🧠   distributed multi-agent orchestration");
    sink.err(&format!(
        "Mode: {:?}   Model: {}   Nodes: {} on {} host{}{sim}",
        app.mode(),
        app.model(),
        app.cluster.registry.len(),
        app.cluster.registry.hosts().len(),
        if app.cluster.registry.hosts().len() == 1 {
            ""
        } else {
            "s"
        }
    ));
    sink.err("Type a question to run the agents, `help` for commands, `exit` to leave.");
}
