//! Discovery cost in the network lab (needs root and iproute2):
//! `discover 10.77.0.0/24` with 3 hosts and with none, and `discover 10.77.0.0/16`,
//! each as (session with the scan) − (empty session), median of 5.
//!
//! cargo build --release && cargo run --release --example bench_discovery

#[path = "../tests/cli/lab.rs"]
mod lab;

use std::process::Stdio;
use std::time::Instant;

const BIN: &str = "target/release/synapticllamas";

fn session(lab: &lab::Lab, home: &std::path::Path, script: &str) -> f64 {
    use std::io::Write;
    let mut c = lab.command_in(lab.lan_ns(), BIN);
    c.env("SYNAPTICLLAMAS_HOME", home)
        .env("SOLLOL_AUTO_DISCOVER", "false")
        .env_remove("OLLAMA_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait().unwrap();
    let t = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(home.join(".synapticllamas_nodes.json"));
    let _ = lab
        .command_in(lab.lan_ns(), "ip")
        .args(["neigh", "flush", "all"])
        .status();
    t
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(lab: &lab::Lab, cidr: &str, runs: usize) -> (f64, f64) {
    let home = tempfile::tempdir().unwrap();
    let empty = median((0..runs).map(|_| session(lab, home.path(), "")).collect());
    let scan = median(
        (0..runs)
            .map(|_| session(lab, home.path(), &format!("discover {cidr}\n")))
            .collect(),
    );
    (scan - empty, empty)
}

fn main() {
    let mut with_hosts = lab::Lab::new(3).expect("the lab needs root and iproute2");
    for i in 1..=3 {
        let ns = with_hosts.host_ns(i).to_string();
        let ip = with_hosts.host_ip(i).to_string();
        let mut c = with_hosts.command_in(&ns, BIN);
        c.args(["sim-serve", "--bind", &ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        with_hosts.spawn_in(&ns, c).unwrap();
        with_hosts
            .wait_port(&ns, with_hosts.host_ip(i), 11434)
            .unwrap();
    }
    let empty_lab = lab::Lab::new(3).unwrap();
    let (a, base) = measure(&with_hosts, "10.77.0.0/24", 5);
    let (b, _) = measure(&empty_lab, "10.77.0.0/24", 5);
    let (c, _) = measure(&with_hosts, "10.77.0.0/16", 3);
    println!("| scan (lab, release build) | cost over an empty session (s) |");
    println!("|---|---|");
    println!("| discover 10.77.0.0/24, 3 hosts | {a:.3} |");
    println!("| discover 10.77.0.0/24, 0 hosts | {b:.3} |");
    println!("| discover 10.77.0.0/16, 3 hosts | {c:.3} |");
    println!();
    println!("empty session baseline: {base:.3} s");
    println!(
        "against the original's scanner in the same lab (0.334 s with 3 hosts, 0.322 s with none):"
    );
    println!(
        "  /24 with 3 hosts: {:.2}x its time; /24 empty: {:.2}x",
        a / 0.334,
        b / 0.322
    );
}
