//! Start-up cost: `echo exit | synapticllamas` — wall time and peak RSS, median of
//! N runs, next to two baselines measured in the same run: spawning `true` (the
//! process floor) and `python3 -c pass` (the floor under the Python original).
//!
//! cargo build --release && cargo run --release --example bench_startup [-- RUNS]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

// The child is reaped by wait4 (which also gives its peak RSS), not Child::wait.
#[allow(clippy::zombie_processes)]
fn run_once(program: &str, args: &[&str], stdin: &[u8], home: &std::path::Path) -> (f64, i64) {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env("SYNAPTICLLAMAS_HOME", home)
        .env("HOME", home)
        .env("SOLLOL_AUTO_DISCOVER", "false")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; rusage is fully written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    (started.elapsed().as_secs_f64() * 1000.0, usage.ru_maxrss)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let bin = std::env::var("SYNAPTICLLAMAS_BIN")
        .unwrap_or_else(|_| "target/release/synapticllamas".into());
    let home = tempfile::tempdir().unwrap();
    // The interpreter itself, not a version-manager shim in front of it.
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".into());
    let cases: Vec<(&str, &str, Vec<&str>, &[u8])> = vec![
        (
            "synapticllamas (echo exit |)",
            bin.as_str(),
            vec![],
            b"exit\n",
        ),
        ("baseline: true", "true", vec![], b""),
        (
            "baseline: python3 -c pass",
            python.as_str(),
            vec!["-c", "pass"],
            b"",
        ),
    ];
    println!("| command | median wall (ms) | median peak RSS (MiB) | runs |");
    println!("|---|---|---|---|");
    let mut ours = (0.0, 0.0);
    let mut py = (0.0, 0.0);
    for (label, prog, args, input) in &cases {
        let mut walls = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..runs {
            let (w, r) = run_once(prog, args, input, home.path());
            walls.push(w);
            rss.push(r as f64 / 1024.0);
        }
        let (w, r) = (median(walls), median(rss));
        println!("| {label} | {w:.2} | {r:.1} | {runs} |");
        if label.starts_with("synapticllamas") {
            ours = (w, r);
        }
        if label.contains("python3") {
            py = (w, r);
        }
    }
    println!();
    println!(
        "synapticllamas / python3-interpreter start: wall {:.2}x, RSS {:.2}x",
        ours.0 / py.0,
        ours.1 / py.1
    );
}
