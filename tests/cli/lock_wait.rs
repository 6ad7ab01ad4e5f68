//! A save that waits for another program's lock on the settings and node
//! files: the shell says it waits, Ctrl-C gives the wait up and returns to the
//! next line, and the files are left exactly as they were; once the lock is
//! free, saving works again.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use synapticllamas::config::lock::FileLock;

use crate::support::*;

const WAITING: &str = "another program is writing here";

/// Our temporary files next to the user's (none may be left behind).
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".synapticllamas-") && n.ends_with(".tmp"))
        .collect()
}

/// Send SIGINT to the shell while its command waits, and wait for the cancel.
fn interrupt(s: &mut Session) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGINT) };
    s.until_err("Cancelled (Ctrl-C)", Duration::from_secs(10));
}

#[test]
fn ctrl_c_gives_up_a_save_waiting_for_the_lock_and_nothing_is_written() {
    let home = Home::new();
    let settings = json!({"refinement_rounds": 1, "mine": "kept"}).to_string();
    home.write_settings(settings.as_bytes());
    let nodes = node_file(&[entry("http://127.0.0.1:1", "one", "h1")]);
    home.write_nodes(&nodes);
    // Another program (this test) holds the lock that guards both files.
    let held = FileLock::acquire(&home.settings_path()).unwrap();

    let mut s = Session::spawn(command(&home, &[]));
    s.send("refine 3\n");
    s.until_err(WAITING, Duration::from_secs(20));
    interrupt(&mut s);
    // The shell reads the next line: a node add whose save waits the same way.
    let dead = format!("http://127.0.0.1:{}", dead_port());
    s.send(&format!("add {dead} --force\n"));
    s.until_err(WAITING, Duration::from_secs(20));
    interrupt(&mut s);
    // Control is back while the lock is still held; nothing was written.
    s.send("help\n");
    s.until("gpu prefers nodes", Duration::from_secs(10));
    assert_eq!(
        std::fs::read(home.settings_path()).unwrap(),
        settings.as_bytes()
    );
    assert_eq!(std::fs::read(home.nodes_path()).unwrap(), nodes);
    assert!(temp_files(home.path()).is_empty());

    // The lock is free again: the next change is saved as usual.
    drop(held);
    s.send("timeout 90\n");
    s.until("Inference timeout set to 90s", Duration::from_secs(20));
    let (_, stderr, code) = s.finish();
    assert_eq!(code, 1, "the cancelled commands failed\n{stderr}");
    let saved = home.settings();
    assert_eq!(saved["agent_timeout"], 90);
    assert_eq!(saved["mine"], "kept");
    assert!(temp_files(home.path()).is_empty());
}
