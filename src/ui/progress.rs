//! indicatif progress, on a terminal only.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting `len` steps, hidden unless stderr is a terminal.
pub(crate) fn bar(len: u64, message: &str) -> ProgressBar {
    if !super::stderr_is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    pb
}

/// A bar counting `len` steps with the time left, hidden unless stderr is a terminal.
pub(crate) fn eta_bar(len: u64, message: &str) -> ProgressBar {
    let pb = bar(len, message);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed}, {eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// A spinner line with a message, hidden unless stderr is a terminal.
pub(crate) fn spinner(message: &str) -> ProgressBar {
    if !super::stderr_is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(message.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// One spinner line per running task (terminal only).
pub(crate) struct TaskBars {
    multi: Option<indicatif::MultiProgress>,
    bars: std::sync::Mutex<std::collections::HashMap<String, ProgressBar>>,
}

impl TaskBars {
    /// The bars (a panic elsewhere while they were held leaves them usable).
    fn bars(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, ProgressBar>> {
        self.bars.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn new() -> TaskBars {
        TaskBars {
            multi: super::stderr_is_terminal().then(indicatif::MultiProgress::new),
            bars: Default::default(),
        }
    }

    pub fn start(&self, task: &str, node: &str) {
        let Some(m) = &self.multi else { return };
        let pb = m.add(ProgressBar::new_spinner());
        pb.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_prefix(format!("{task} on {node}"));
        pb.set_message("— waiting for the first token");
        pb.enable_steady_tick(Duration::from_millis(120));
        self.bars().insert(task.to_string(), pb);
    }

    pub fn progress(&self, task: &str, chars: usize) {
        if let Some(pb) = self.bars().get(task) {
            pb.set_position(chars as u64);
        }
    }

    /// Tokens streamed so far for a task and the node's rate since its first token.
    pub fn streaming(&self, task: &str, tokens: u64, per_sec: Option<f64>) {
        if let Some(pb) = self.bars().get(task) {
            pb.set_message(streaming_line(tokens, per_sec));
        }
    }

    pub fn finish(&self, task: &str) {
        if let Some(pb) = self.bars().remove(task) {
            pb.finish_and_clear();
        }
    }

    /// Print a line above the bars without tearing them.
    pub fn println(&self, line: &str) -> bool {
        match &self.multi {
            Some(m) => m.println(line).is_ok(),
            None => false,
        }
    }
}

impl Default for TaskBars {
    fn default() -> Self {
        Self::new()
    }
}

/// One byte-count bar per key (a node's download), terminal only; a bar
/// stays on screen with its last message when it finishes.
pub(crate) struct ByteBars {
    multi: Option<indicatif::MultiProgress>,
    bars: std::sync::Mutex<std::collections::HashMap<String, ProgressBar>>,
}

impl ByteBars {
    pub fn new() -> ByteBars {
        ByteBars {
            multi: super::stderr_is_terminal().then(indicatif::MultiProgress::new),
            bars: Default::default(),
        }
    }

    /// Whether the bars are drawn (stderr is a terminal).
    pub fn shown(&self) -> bool {
        self.multi.is_some()
    }

    fn bars(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, ProgressBar>> {
        self.bars.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A bar for `key`, labelled `prefix`.
    pub fn start(&self, key: &str, prefix: &str) {
        let Some(m) = &self.multi else { return };
        let pb = m.add(ProgressBar::new(0));
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:<16} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_prefix(prefix.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        self.bars().insert(key.to_string(), pb);
    }

    /// `done` of `total` bytes, and what is happening.
    pub fn set(&self, key: &str, total: u64, done: u64, msg: &str) {
        if let Some(pb) = self.bars().get(key) {
            pb.set_length(total);
            pb.set_position(done);
            pb.set_message(msg.to_string());
        }
    }

    /// The bar stops, showing `msg`.
    pub fn finish(&self, key: &str, msg: &str) {
        if let Some(pb) = self.bars().remove(key) {
            pb.finish_with_message(msg.to_string());
        }
    }
}

/// "— 412 tokens, 31.5 tokens/s" (the rate once it can be measured).
pub(crate) fn streaming_line(tokens: u64, per_sec: Option<f64>) -> String {
    match per_sec {
        Some(r) => format!("— {tokens} tokens, {r:.1} tokens/s"),
        None => format!("— {tokens} tokens"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn streaming_lines() {
        assert_eq!(super::streaming_line(3, None), "— 3 tokens");
        assert_eq!(
            super::streaming_line(412, Some(31.54)),
            "— 412 tokens, 31.5 tokens/s"
        );
    }
}
