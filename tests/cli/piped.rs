//! Piped sessions: no prompt, no escape codes, EOF ends cleanly, exit codes.

use crate::support::*;

#[test]
fn no_prompt_no_banner_no_escapes() {
    let home = Home::new();
    let r = run(&home, &[], "# a comment\n\n   \nstatus\nnodes\n");
    r.ok();
    assert!(!r.stdout.contains("SynapticLlamas>"));
    assert!(!r.stderr.contains("S Y N A P T I C"));
    assert!(!r.stdout.contains('\x1b') && !r.stderr.contains('\x1b'));
}

#[test]
fn no_escapes_without_no_color_when_piped() {
    let home = Home::new();
    let mut c = command(&home, &[]);
    c.env_remove("NO_COLOR");
    let r = run_with(c, "status\nquality 9\n");
    assert!(!r.stdout.contains('\x1b') && !r.stderr.contains('\x1b'));
}

#[test]
fn eof_ends_the_session() {
    let home = Home::new();
    let r = run(&home, &[], "status");
    r.ok().out_has("SYSTEM STATUS");
    let r = run(&home, &[], "");
    r.ok();
}

#[test]
fn exit_status_counts_failures_and_continues() {
    let home = Home::new();
    let r = run(&home, &[], "quality 2\nrefine 2\n");
    r.failed().out_has("Refinement rounds set to 2");
    assert_eq!(home.settings()["refinement_rounds"], 2);
}

#[test]
fn exit_stops_reading() {
    let home = Home::new();
    let r = run(&home, &[], "refine 1\nexit\nrefine 4\n");
    r.ok().err_has("Goodbye");
    assert_eq!(home.settings()["refinement_rounds"], 1);
}

#[test]
fn bail_stops_at_the_first_failure() {
    let home = Home::new();
    let r = run(&home, &["--bail"], "refine 2\nquality nan\nrefine 4\n");
    r.failed().err_has("--bail");
    assert_eq!(home.settings()["refinement_rounds"], 2);
}

#[test]
fn invalid_utf8_and_nul_lines_are_errors_not_panics() {
    let home = Home::new();
    let mut bytes = b"refine 2\n\xff\xfe bad\nre\0fine 3\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 1 << 20));
    bytes.extend_from_slice(b"\nrefine 4\n");
    // Raw bytes, not a &str, go to the child.
    let mut child = command(&home, &[]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 2: not valid UTF-8"), "{stderr}");
    assert!(stderr.contains("line 3: contains a NUL byte"), "{stderr}");
    assert_eq!(
        home.settings()["refinement_rounds"],
        4,
        "the session went on"
    );
}

/// `synapticllamas < script | head -1`: once stdout's reader has gone the
/// session stops (the lines after are not run), quietly, without a panic.
#[test]
fn a_closed_stdout_ends_the_session_quietly() {
    use std::io::{BufRead, Read, Write};
    let home = Home::new();
    let mut child = command(&home, &[]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // Far more than a pipe holds: the shell meets the closed pipe mid-way.
        let _ = stdin.write_all("help\n".repeat(300).as_bytes());
        let _ = stdin.write_all(b"refine 4\n");
    });
    let mut err = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("Commands"), "{first:?}");
    // The reader is gone (dropped above); the shell must end by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shell kept running"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    writer.join().unwrap();
    let stderr = errors.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !home.settings_path().exists(),
        "the line after the closed stdout ran"
    );
}
