//! Counts and labels that are true (issue 21, item 11): every retry started
//! is counted; an answer with missing parts does not say "✓ Completed"; a
//! part's line gives the node and figures of the attempt that was kept; a
//! cooling node's failures and backoff are those it was told; a `rag index`
//! that indexed nothing does not get the success mark. Each test asserts the
//! exact line a user reads.

use serde_json::{json, Value};
use synapticllamas::sim::{Fault, SimConfig};

use crate::support::*;

fn distributed() -> Value {
    json!({"mode": "distributed", "request_idle_timeout_ms": 5000})
}

#[test]
fn every_retry_started_is_counted_those_of_a_task_that_failed_too() {
    // Every host answers the Critic's request with HTTP 500.
    let cfg = SimConfig {
        fault: Fault::Http500,
        fault_match: Some("Review how this question".into()),
        ..paced()
    };
    let (a, b) = (sim(cfg.clone()), sim(cfg));
    let home = nodes_home(&[&a, &b], distributed());
    let r = run(&home, &[], "What is the capital of France?\n");
    r.failed();
    let retrying = r
        .stderr
        .lines()
        .filter(|l| l.contains("retrying from scratch"))
        .count();
    assert_eq!(retrying, 1, "{}", r.stderr);
    r.err_has("; no other host left to try")
        .out_has("🩹 Faults: 1 retried, 0 hedged, 1 task(s) could not be done");
}

#[test]
fn an_answer_with_missing_parts_says_so_and_counts_the_parts() {
    // Parts 2..5 (whose requests quote part 1's summary) fail everywhere.
    let cfg = SimConfig {
        fault: Fault::Http500,
        fault_match: Some("1 covered (summary)".into()),
        ..paced()
    };
    let (a, b) = (sim(cfg.clone()), sim(cfg));
    let home = nodes_home(&[&a, &b], distributed());
    let r = run(&home, &[], &format!("{LONG}\n"));
    r.failed();
    let done = r
        .stdout
        .lines()
        .find(|l| l.contains("Completed in"))
        .unwrap_or_else(|| panic!("no Completed line:\n{}", r.stdout));
    assert!(
        done.starts_with("⚠️  Completed in ") && done.ends_with("s with 4 of 5 parts missing"),
        "{done}"
    );
    r.out_has("· pipeline: long-form (research, 1 of 5 parts written) ·");
}

#[test]
fn a_complete_long_answer_counts_its_parts() {
    let (a, b) = (sim(paced()), sim(paced()));
    let home = nodes_home(&[&a, &b], distributed());
    let r = run(&home, &[], &format!("{LONG}\n"));
    r.ok()
        .out_has("· pipeline: long-form (research, 5 parts) ·");
    let done = r
        .stdout
        .lines()
        .find(|l| l.contains("Completed in"))
        .unwrap();
    assert!(done.starts_with("✓  Completed in "), "{done}");
}

/// The line a part should have: the node, time and rate of the attempt
/// kept (per the `-i` JSON), and what its quality retry did.
fn expected_part_line(v: &Value, n: u64) -> String {
    let chunk = v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chunk"] == n)
        .unwrap();
    let label = format!("chunk {n}/5");
    let attempts: Vec<&Value> = v["attribution"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            let t = a["task"].as_str().unwrap();
            t == label || t == format!("{label} (retry)")
        })
        .collect();
    let kept = attempts
        .iter()
        .position(|a| a["node"] == chunk["node"] && a["seconds"] == chunk["seconds"])
        .expect("the chunk is one of its attempts");
    let a = attempts[kept];
    let rate = a["tokens_per_sec"]
        .as_f64()
        .map(|t| format!(", {t:.1} tokens/s"))
        .unwrap_or_default();
    let retry = match (attempts.len(), kept) {
        (1, _) if chunk["quality_warning"].is_null() => "",
        (1, _) => ", the first attempt: its quality retry failed",
        (_, 0) => ", the first attempt: its quality retry was no better",
        _ => ", after a quality retry",
    };
    format!(
        "✅ part {n}/5 done on {} in {:.1}s ({} words{rate}{retry})",
        a["node"].as_str().unwrap(),
        a["seconds"].as_f64().unwrap(),
        chunk["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count()
    )
}

#[test]
fn a_parts_line_gives_the_node_and_figures_of_the_attempt_kept() {
    // Replies too short to pass the quality check: every part is asked
    // twice, and the better (longer) attempt is kept — sometimes the first.
    let cfg = SimConfig {
        reply_words: 8,
        tokens_per_sec: 40.0,
        ..SimConfig::default()
    };
    let (a, b) = (sim(cfg.clone()), sim(cfg));
    let home = nodes_home(&[&a, &b], distributed());
    let r = run(&home, &["-i", LONG], "");
    let v = json_of(&r);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("✅ part "))
        .collect();
    assert_eq!(lines.len(), 5, "{}", r.stderr);
    for n in 1..=5 {
        let want = expected_part_line(&v, n);
        assert!(
            lines.contains(&want.as_str()),
            "part {n}: want {want:?}\namong:\n{}",
            lines.join("\n")
        );
    }
    // Quality retries happened, or the check proves little.
    assert!(
        r.stderr.contains("failed its quality check"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_cooling_nodes_failures_and_backoff_are_those_it_was_told() {
    let url = format!("http://127.0.0.1:{}", dead_port());
    let home = Home::new();
    home.write_nodes(&node_file(&[entry(&url, "nothing-there", "h1")]));
    let r = run(&home, &[], "What is the capital of France?\nnodes\n");
    r.failed()
        .err_has("nothing-there cooled down (re-probe in 5s)");
    // Two real failures: the query's request, and the probe `nodes` makes
    // (which doubles the backoff); not the scheduler's early re-probe.
    let row = r
        .stdout
        .lines()
        .find(|l| l.contains("| nothing-there "))
        .unwrap_or_else(|| panic!("no node row:\n{}", r.stdout));
    assert!(row.contains("cooling (2 failures; backoff 10s)"), "{row}");
}

#[test]
fn rag_index_that_indexed_nothing_has_no_success_mark() {
    let host = sim(SimConfig {
        models: vec!["llama3.2:latest".into(), "mxbai-embed-large:latest".into()],
        embed_dims: 64,
        ..SimConfig::default()
    });
    let home = nodes_home(&[&host], json!({"mode": "standard"}));
    let docs = home.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("a.pdf"), b"not a pdf at all").unwrap();
    std::fs::write(docs.join("b.pdf"), b"%PDF-1.4 broken").unwrap();
    let r = run(&home, &[], &format!("rag index {}\n", docs.display()));
    r.failed();
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("Indexed "))
        .unwrap_or_else(|| panic!("no summary:\n{}\n{}", r.stdout, r.stderr));
    assert!(
        line.starts_with("❌ Indexed 0 document(s), 0 chunk(s) in ")
            && line.ends_with("; 0 already indexed, 2 failed"),
        "{line}"
    );
}
