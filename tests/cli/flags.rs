//! Command-line flags: a bad value stops the program (exit 2, one line naming
//! the flag and the value) before anything is changed, saved or scanned; the
//! original's flags and `-i` JSON keys keep old launch scripts working.

use serde_json::Value;
use synapticllamas::sim::SimConfig;

use crate::support::*;

/// Everything in the home directory: (name, bytes).
fn snapshot(home: &Home) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    v.sort();
    v
}

/// The binary refused its flags: exit 2 and a first stderr line naming `flag` and `value`.
fn refused(r: &Run, flag: &str, value: &str) {
    assert_eq!(
        r.code, 2,
        "a bad flag must exit 2\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    let first = r.stderr.lines().next().unwrap_or("");
    assert!(
        first.contains(flag) && first.contains(value),
        "the first line must name {flag} and {value:?}: {first:?}\nstderr:\n{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "nothing ran: {}", r.stdout);
}

#[test]
fn a_bad_rpc_backend_keeps_the_saved_backends() {
    let home = Home::new();
    run(&home, &[], "rpc add 127.0.0.1:1\nrpc add 127.0.0.1:2\n").ok();
    let before = snapshot(&home);
    for bad in ["127.0.0.1:abc", "127.0.0.1:70000", "x:abc"] {
        let r = run(&home, &["--rpc-backend", bad], "");
        refused(&r, "--rpc-backend", bad);
        assert!(!r.stderr.contains("Configured"), "{}", r.stderr);
        assert_eq!(
            snapshot(&home),
            before,
            "--rpc-backend {bad} changed a file"
        );
    }
    assert_eq!(home.settings()["rpc_backends"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_flags_exit_2_before_anything_happens() {
    let home = Home::new();
    home.write_settings(br#"{"model": "m"}"#);
    let broken = home.path().join("broken.json");
    std::fs::write(&broken, b"{ nodes").unwrap();
    let broken = broken.display().to_string();
    let before = snapshot(&home);
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["--load-config", "/nonexistent/nodes.json"],
            "--load-config",
            "/nonexistent/nodes.json",
        ),
        (
            &["--load-config", &broken],
            "--load-config",
            "line 1, column 3",
        ),
        (&["--discover", "10.0.0.0/33"], "--discover", "10.0.0.0/33"),
        (&["--discover", "10.0.0.0/8"], "--discover", "10.0.0.0/8"),
        (&["--discover", "bogus"], "--discover", "bogus"),
        (&["--add-node", "ftp://x"], "--add-node", "ftp://x"),
        (&["--add-node", "127.0.0.1:0"], "--add-node", "127.0.0.1:0"),
        (&["--simulate", "100000"], "--simulate", "100000"),
        (&["--simulate", "0"], "--simulate", "0"),
        (&["--model", "a\u{7}b"], "--model", "a\u{7}b"),
        (&["--workers", "0"], "--workers", "0"),
        // Each is checked even beside good flags that would change a file.
        (
            &[
                "--enable-distributed-inference",
                "--rpc-backend",
                "127.0.0.1:9",
                "--rpc-backend",
                "h:99999",
            ],
            "--rpc-backend",
            "h:99999",
        ),
    ];
    for (args, flag, value) in cases {
        let r = run(&home, args, "refine 3\n");
        refused(&r, flag, value);
        assert_eq!(snapshot(&home), before, "{args:?} changed a file");
    }
    let r = run(&home, &["--simulate", "100000"], "");
    r.err_has("between 1 and 64");
    // `serve`'s numbers say what they need, in words.
    for (flag, value) in [("--max-queue", "0"), ("--request-timeout", "x")] {
        let r = run(&home, &["serve", flag, value], "");
        refused(&r, flag, value);
        r.err_has("is not a whole number of at least 1");
    }
}

#[test]
fn the_originals_flags_are_accepted_with_a_note() {
    let home = Home::new();
    let r = run(&home, &["--interactive", "-w", "4"], "refine 2\n");
    r.ok()
        .err_has("--interactive: accepted for old launch scripts")
        .err_has("--workers 4: accepted for old launch scripts and ignored");
    assert_eq!(home.settings()["refinement_rounds"], 2);
    run(&home, &["--workers", "3"], "")
        .ok()
        .err_has("--workers 3");
}

#[test]
fn input_json_keeps_the_originals_keys() {
    let home = Home::new();
    let r = run(
        &home,
        &[
            "--simulate",
            "2",
            "-i",
            "!long Explain the history of the printing press in Europe",
        ],
        "",
    );
    r.ok();
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", r.stdout, r.stderr));
    let m = &v["metrics"];
    assert!(m["total_execution_time"].as_f64().unwrap() > 0.0, "{m}");
    let attribution = m["node_attribution"].as_array().unwrap();
    assert!(!attribution.is_empty());
    for a in attribution {
        assert!(a["agent"].as_str().is_some_and(|s| !s.is_empty()), "{a}");
        assert_eq!(a["agent"], a["task"], "{a}");
        assert_eq!(a["time"], a["seconds"], "{a}");
        assert!(a["node"].is_string(), "{a}");
    }
    let chunks = v["chunks"].as_array().unwrap();
    assert!(chunks.len() >= 2, "a long-form answer has chunks: {v}");
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["chunk_num"], c["chunk"], "{c}");
        assert_eq!(c["chunk_num"], i + 1, "{c}");
        assert!(c["content"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
        let ms = c["duration_ms"].as_u64().unwrap();
        let secs = c["seconds"].as_f64().unwrap();
        assert_eq!(ms, (secs * 1000.0).round() as u64, "{c}");
    }
    // A plain (one-chunk) answer also carries its attribution in both places.
    let a = sim(SimConfig::default());
    let home = Home::new();
    home.write_nodes(&node_file(&[
        serde_json::json!({"url": a.url(), "name": "a"}),
    ]));
    let r = run(&home, &["-i", "hello there"], "");
    r.ok();
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    for a in v["attribution"].as_array().unwrap() {
        assert!(a["agent"].is_string() && a["time"].is_number(), "{a}");
    }
}

/// `-i` in distributed mode: stdout holds exactly one JSON value. What start-up
/// prints on the way (the scan's summary, OLLAMA_HOST found, `--add-node`,
/// `--load-config`, a settings warning) is on stderr, not lost.
#[test]
fn input_json_is_all_of_stdout_in_distributed_mode() {
    let (a, b, c) = (
        sim(SimConfig::default()),
        sim(SimConfig::default()),
        sim(SimConfig::default()),
    );
    let home = Home::new();
    home.write_settings(br#"{"quality_threshold": 5}"#);
    let file = home.path().join("more-nodes.json");
    std::fs::write(
        &file,
        node_file(&[serde_json::json!({"url": c.url(), "name": "c"})]),
    )
    .unwrap();
    let mut cmd = command(
        &home,
        &[
            "-d",
            "-i",
            "hello there",
            "--discover",
            "127.0.0.1/32",
            "--add-node",
            &b.url(),
            "--load-config",
            file.to_str().unwrap(),
        ],
    );
    cmd.env("OLLAMA_HOST", a.url());
    let r = run_with(cmd, "");
    r.ok();
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON value ({e}):\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        )
    });
    assert!(v["final_output"].is_string(), "{v}");
    r.err_has("🔍 Discovery: probed 1 address")
        .err_has(&format!("✅ Found: {}", a.url()))
        .err_has(&format!(
            "Added node: ollama-127-0-0-1-{}",
            b.addrs()[0].port()
        ))
        .err_has("Loaded 1 node(s) from")
        .err_has("quality_threshold");
}
