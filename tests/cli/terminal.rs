//! The shell on a real pseudo-terminal: input that arrives several bytes in one
//! read (a paste, SSH, `tmux send-keys`) is handled at once, and tables fit the
//! terminal's width.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{native_pty_system, CommandBuilder, PtySize};
use serde_json::json;

use crate::support::*;

/// The binary on a pty of `cols` columns, everything it prints collected.
struct Pty {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    seen: Arc<Mutex<Vec<u8>>>,
    // Kept open: dropping the master hangs the terminal up.
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

impl Pty {
    fn spawn(home: &Home, args: &[&str], cols: u16) -> Pty {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pty");
        let mut cmd = CommandBuilder::new(BIN);
        cmd.args(args);
        cmd.env_clear();
        for (k, v) in [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", home.path().display().to_string()),
            ("SYNAPTICLLAMAS_HOME", home.path().display().to_string()),
            ("NO_COLOR", "1".into()),
            ("TERM", "xterm".into()),
            ("SOLLOL_AUTO_DISCOVER", "false".into()),
            ("SYNAPTICLLAMAS_SUBNETS", "127.77.77.0/30".into()),
        ] {
            cmd.env(k, v);
        }
        cmd.cwd(home.path());
        let child = pair
            .slave
            .spawn_command(cmd)
            .expect("binary runs on the pty");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            writer,
            seen,
            _master: pair.master,
        }
    }

    /// Everything printed so far, escape sequences removed.
    fn text(&self) -> String {
        let raw = String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned();
        let csi = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
        csi.replace_all(&raw, "").into_owned()
    }

    /// Wait until the output has `count` occurrences of `what`.
    fn wait_for(&mut self, what: &str, count: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let t = self.text();
            if t.matches(what).count() >= count {
                return t;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("no {what:?} (×{count}) within {limit:?}; the terminal shows:\n{t}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One write(2) of `bytes`, as a paste or `tmux send-keys` delivers them.
    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    /// Wait for the program to leave; its exit status.
    fn exit_status(&mut self, limit: Duration) -> portable_pty::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "still running after {limit:?}; the terminal shows:\n{}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

const PROMPT: &str = "SynapticLlamas> ";

#[test]
fn keys_that_arrive_in_one_read_are_handled_at_once() {
    let home = Home::new();
    let mut t = Pty::spawn(&home, &["--simulate", "1"], 100);
    let banner = t.wait_for(PROMPT, 1, Duration::from_secs(20));
    assert!(
        banner.contains("1 simulated host on 127.0.0.1") && banner.contains("on 1 host "),
        "the banner counts in words:\n{banner}"
    );
    // A whole command and its Enter in one write: before the fix only `e`
    // was echoed and the rest waited for the next key.
    t.send(b"refine 3\r");
    t.wait_for("Refinement rounds set to 3", 1, Duration::from_secs(10));
    t.wait_for(PROMPT, 2, Duration::from_secs(10));
    t.send(b"exit\r");
    t.wait_for("Goodbye", 1, Duration::from_secs(10));
    assert!(t.exit_status(Duration::from_secs(10)).success());
    assert_eq!(home.settings()["refinement_rounds"], 3);
}

#[test]
fn the_nodes_table_fits_an_80_column_terminal() {
    let home = Home::new();
    let entries: Vec<_> = (1..=3)
        .map(|i| {
            json!({"url": format!("http://127.0.0.{i}:{}", dead_port()),
                   "name": format!("kitchen-workstation-with-a-long-name-{i}"),
                   "host_id": format!("rack-{i}-shelf-{i}")})
        })
        .collect();
    home.write_nodes(&node_file(&entries));
    let mut t = Pty::spawn(&home, &[], 80);
    t.wait_for(PROMPT, 1, Duration::from_secs(20));
    t.send(b"nodes\r");
    let screen = t.wait_for("physical host", 1, Duration::from_secs(30));
    t.send(b"exit\r");
    t.exit_status(Duration::from_secs(10));
    let table: Vec<&str> = screen
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with('|'))
        .collect();
    assert!(table.len() >= 4, "no table:\n{screen}");
    for l in &table {
        assert!(
            l.chars().count() <= 80,
            "{} columns on an 80-column terminal:\n{l}\n\n{screen}",
            l.chars().count()
        );
    }
    assert!(screen.contains("kitchen"), "names not shown:\n{screen}");
}

/// On a terminal each part being written shows the tokens streamed so far and
/// the node's tokens per second; a finished part leaves one line.
#[test]
fn a_part_in_progress_shows_its_tokens_and_rate() {
    let slow = sim(synapticllamas::sim::SimConfig {
        tokens_per_sec: 25.0,
        reply_words: 60,
        ..Default::default()
    });
    let home = Home::new();
    home.write_nodes(&node_file(&[entry(&slow.url(), "slowpoke", "h1")]));
    home.write_settings(br#"{"mode": "distributed"}"#);
    let mut t = Pty::spawn(&home, &[], 120);
    t.wait_for(PROMPT, 1, Duration::from_secs(20));
    t.send(b"!long Explain tides\r");
    // The outline streams first (its own progress line), then part 1.
    let progress =
        regex::Regex::new(r"chunk 1/\d on slowpoke — \d+ tokens, \d+\.\d tokens/s").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let screen = t.text();
        if progress.is_match(&screen) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress line for part 1 with its tokens and rate:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.wait_for("✅ part 1/", 1, Duration::from_secs(60));
    t.send(b"\x03");
    t.send(b"exit\r");
    t.exit_status(Duration::from_secs(20));
}

/// On a terminal `rm` asks before it deletes (no keeps the model), and `pull`
/// draws a bar per node that ends with what happened there.
#[test]
fn rm_asks_first_and_pull_shows_a_bar_per_node() {
    let a = sim(synapticllamas::sim::SimConfig::default());
    let home = Home::new();
    home.write_nodes(&node_file(&[entry(&a.url(), "alpha", "h1")]));
    let mut t = Pty::spawn(&home, &[], 120);
    t.wait_for(PROMPT, 1, Duration::from_secs(20));
    t.send(b"pull tinyllama\r");
    t.wait_for("alpha: pulled tinyllama in", 1, Duration::from_secs(30));
    t.wait_for("| pulled ", 1, Duration::from_secs(10));
    t.wait_for(PROMPT, 2, Duration::from_secs(10));
    t.send(b"rm tinyllama\r");
    t.wait_for(
        "Delete tinyllama from alpha (1 node(s))? [y/N] ",
        1,
        Duration::from_secs(20),
    );
    t.send(b"n\r");
    t.wait_for("Nothing deleted.", 1, Duration::from_secs(10));
    t.wait_for(PROMPT, 3, Duration::from_secs(10));
    t.send(b"rm tinyllama\r");
    t.wait_for("[y/N] ", 2, Duration::from_secs(20));
    t.send(b"y\r");
    t.wait_for("alpha: deleted tinyllama", 1, Duration::from_secs(10));
    t.wait_for(PROMPT, 4, Duration::from_secs(10));
    t.send(b"exit\r");
    assert!(t.exit_status(Duration::from_secs(10)).success());
    let models = a.config().models;
    assert!(
        !models.iter().any(|m| m == "tinyllama:latest"),
        "{models:?}"
    );
}

/// Issue 21: the line history is a file the shell reads too. A FIFO there
/// (nobody writes it) blocked the prompt forever; now it is named in one line
/// and left alone (neither read nor written over).
#[test]
fn a_history_file_that_is_a_fifo_is_named_and_left_alone() {
    let home = Home::new();
    let history = home.path().join(".synapticllamas_history");
    mkfifo(&history);
    let mut t = Pty::spawn(&home, &[], 100);
    let shown = t.wait_for(PROMPT, 1, Duration::from_secs(20));
    assert!(
        shown.contains(&format!(
            "{}: is a named pipe (FIFO), not a regular file; history not read or saved",
            history.display()
        )),
        "{shown}"
    );
    t.send(b"exit\r");
    t.wait_for("Goodbye", 1, Duration::from_secs(10));
    assert!(t.exit_status(Duration::from_secs(10)).success());
    let kind = std::fs::symlink_metadata(&history).unwrap().file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&kind), "{kind:?}");
}
