//! Presentation: colour decided per stream (terminal and NO_COLOR), tables that
//! stay readable when piped, progress bars only on a terminal.

pub mod progress;
mod streams;
pub use streams::{err_line, stderr_gone};

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
use comfy_table::{ColumnConstraint, ContentArrangement, Table, Width};

static COLOR_OUT: AtomicBool = AtomicBool::new(false);
static COLOR_ERR: AtomicBool = AtomicBool::new(false);
static TTY_ERR: AtomicBool = AtomicBool::new(false);
static TTY_OUT: AtomicBool = AtomicBool::new(false);

/// Decide once at start-up: colour only on a terminal, never with `no_color`
/// (`--no-color` or NO_COLOR).
pub fn init(no_color: bool) {
    let out = std::io::stdout().is_terminal();
    let err = std::io::stderr().is_terminal();
    COLOR_OUT.store(out && !no_color, Ordering::Relaxed);
    COLOR_ERR.store(err && !no_color, Ordering::Relaxed);
    TTY_ERR.store(err, Ordering::Relaxed);
    TTY_OUT.store(out, Ordering::Relaxed);
    colored::control::set_override(out && !no_color);
}

pub(crate) fn color_stdout() -> bool {
    COLOR_OUT.load(Ordering::Relaxed)
}

pub(crate) fn color_stderr() -> bool {
    COLOR_ERR.load(Ordering::Relaxed)
}

/// Progress display is for people watching a terminal.
pub(crate) fn stderr_is_terminal() -> bool {
    TTY_ERR.load(Ordering::Relaxed)
}

/// The width of the terminal on stdout, if stdout is one (asked each time: the
/// window may have been resized).
pub(crate) fn stdout_columns() -> Option<u16> {
    if !TTY_OUT.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: TIOCGWINSZ fills the winsize struct we pass and reads nothing else.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col)
}

/// A table for stdout: box-drawing on a colour terminal, plain Markdown-style
/// ASCII otherwise (readable in a file, greppable). On a terminal the columns
/// are fitted to its width (long cells wrap); piped, rows stay one line each.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    if color_stdout() {
        t.load_preset(UTF8_FULL_CONDENSED);
    } else {
        t.load_preset(ASCII_MARKDOWN);
    }
    match stdout_columns() {
        Some(cols) => {
            t.set_content_arrangement(ContentArrangement::Dynamic);
            t.set_width(cols);
        }
        None => {
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    t.set_header(header.to_vec());
    t
}

/// Columns that must not wrap (short counts): at least as wide as their header.
pub(crate) fn keep_whole(t: &mut Table, columns: &[usize]) {
    let widths: Vec<(usize, u16)> = t
        .header()
        .map(|h| {
            h.cell_iter()
                .enumerate()
                .filter(|(i, _)| columns.contains(i))
                // The width includes the cell padding (one space each side).
                .map(|(i, c)| (i, c.content().chars().count() as u16 + 2))
                .collect()
        })
        .unwrap_or_default();
    for (i, w) in widths {
        if let Some(col) = t.column_mut(i) {
            col.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(w)));
        }
    }
}

/// Wrap text in an ANSI style for stderr when allowed.
pub(crate) fn paint_err(text: &str, code: &str) -> String {
    if color_stderr() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Wrap text in an ANSI style for stdout when allowed.
pub(crate) fn paint_out(text: &str, code: &str) -> String {
    if color_stdout() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}
