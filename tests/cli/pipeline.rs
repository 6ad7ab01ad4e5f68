//! Queries end to end: the real binary, simulated hosts on loopback (each with
//! its own `host_id`, standing for a separate machine), piped scripts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synapticllamas::sim::{Fault, SimConfig, SimHost};

use crate::support::*;

/// Simulated hosts slow enough that overlapping requests would show.
/// A home whose node file lists `nodes` as (url, host id), in distributed mode,
/// with short request timeouts for fault tests.
fn home_with(nodes: &[(String, &str)]) -> Home {
    let home = Home::new();
    let entries: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, (u, h))| entry(u, &format!("node-{}", i + 1), h))
        .collect();
    home.write_nodes(&node_file(&entries));
    home.write_settings(
        json!({"mode": "distributed", "request_idle_timeout_ms": 1500, "agent_timeout": 30})
            .to_string()
            .as_bytes(),
    );
    home
}

/// Long-form on purpose: `!long` asks for parts whatever `longform auto` decides
/// (it answers this question in one part: it asks for no depth or length).

#[test]
fn long_form_on_three_hosts_runs_every_chunk_once_in_order() {
    let sims: Vec<Arc<SimHost>> = (0..3).map(|_| sim(paced())).collect();
    let home = home_with(&[
        (sims[0].url(), "h1"),
        (sims[1].url(), "h2"),
        (sims[2].url(), "h3"),
    ]);
    let r = run(&home, &[], &format!("{LONG}\nmetrics --json\n"));
    r.ok()
        .out_has("FINAL ANSWER")
        .err_has("Detected long-form research (est. 5 parts)");
    assert_eq!(
        chunk_order(&r.stdout, 5),
        vec![1, 2, 3, 4, 5],
        "{}",
        r.stdout
    );
    for s in &sims {
        let st = s.stats();
        assert!(st.requests >= 1, "every host served: {st:?}");
        assert_eq!(st.max_in_flight, 1, "never two at once on one host: {st:?}");
    }
    r.out_has("\"chunks_generated\": 5")
        .out_has("\"hosts_used\": 3");
}

#[test]
fn two_nodes_on_one_host_run_one_at_a_time() {
    let box1 = sim_ports(&[0, 0], paced());
    let urls = box1.urls();
    let home = Home::new();
    home.write_nodes(&node_file(&[
        json!({"url": urls[0], "name": "a"}),
        json!({"url": urls[1], "name": "b"}),
    ]));
    home.write_settings(br#"{"mode": "distributed"}"#);
    let r = run(&home, &[], "Compare tabs and spaces for indentation\n");
    r.ok().out_has("FINAL ANSWER");
    assert_eq!(chunk_order(&r.stdout, 3), vec![1, 2, 3]);
    let st = box1.stats();
    assert_eq!(st.max_in_flight, 1, "{st:?}");
    assert!(st.requests >= 4);
}

#[test]
fn three_nodes_on_two_hosts_use_both_never_two_at_once() {
    let a = sim_ports(&[0, 0], paced());
    let b = sim(paced());
    let home = home_with(&[
        (a.urls()[0].clone(), "A"),
        (a.urls()[1].clone(), "A"),
        (b.url(), "B"),
    ]);
    let r = run(&home, &[], &format!("{LONG}\n"));
    r.ok();
    assert_eq!(chunk_order(&r.stdout, 5), vec![1, 2, 3, 4, 5]);
    assert_eq!(a.stats().max_in_flight, 1, "{:?}", a.stats());
    assert_eq!(b.stats().max_in_flight, 1);
    assert!(a.stats().requests >= 1 && b.stats().requests >= 1);
}

#[test]
fn faulty_hosts_do_not_lose_chunks() {
    for fault in [
        Fault::Die,
        Fault::Hang,
        Fault::ErrorLine,
        Fault::Http500,
        Fault::Drop,
    ] {
        let good = sim(paced());
        let bad = sim(SimConfig {
            fault,
            fault_after: 1,
            ..paced()
        });
        let good2 = sim(paced());
        let home = home_with(&[
            (bad.url(), "bad"),
            (good.url(), "good"),
            (good2.url(), "good2"),
        ]);
        let r = run(&home, &[], &format!("{LONG}\nnodes\n"));
        r.ok().out_has("FINAL ANSWER");
        assert!(
            crate::faults::fault_hit(&r.stderr, "node-1"),
            "{fault:?}: node-1 never failed\n{}",
            r.stderr
        );
        assert_eq!(
            chunk_order(&r.stdout, 5),
            vec![1, 2, 3, 4, 5],
            "{fault:?}\n{}",
            r.stdout
        );
        // How soon a fault is left behind (hedging after 3x the usual first
        // token, retries at once) is the scheduler's paused-clock tests.
    }
}

#[test]
fn every_host_failing_names_the_chunk_and_nodes() {
    let a = sim(SimConfig {
        fault: Fault::Http500,
        ..paced()
    });
    let b = sim(SimConfig {
        fault: Fault::ErrorLine,
        ..paced()
    });
    let home = home_with(&[(a.url(), "A"), (b.url(), "B")]);
    let r = run(&home, &[], &format!("{LONG}\nstatus\n"));
    r.failed()
        .err_has("Query failed: chunk 1/5 failed on every node tried")
        .err_has("node-1")
        .err_has("node-2");
    r.out_has("SYSTEM STATUS");
}

#[test]
fn standard_one_chunk_researcher_and_critic_on_two_hosts() {
    let (a, b) = (sim(paced()), sim(paced()));
    let home = home_with(&[(a.url(), "A"), (b.url(), "B")]);
    let r = run(&home, &["-i", "hello there"], "");
    r.ok();
    let v = json_of(&r);
    let att = v["attribution"].as_array().unwrap();
    let host_of = |task: &str| {
        att.iter().find(|x| x["task"] == task).unwrap()["host"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_ne!(host_of("Researcher"), host_of("Critic"));
    assert_eq!(att.len(), 3);
    let out = v["final_output"].as_str().unwrap();
    assert!(out.contains("## Summary\n"), "newlines kept: {out}");
    assert!(out.contains("\n\n## Key Points\n- **"), "{out}");
    assert_eq!(v["metrics"]["pipeline"], "standard");
    assert!(v["chunks"].as_array().unwrap().is_empty());
}

#[test]
fn standard_mode_uses_the_preferred_node() {
    let (a, b) = (sim(paced()), sim(paced()));
    let home = Home::new();
    home.write_nodes(&node_file(&[
        json!({"url": a.url(), "name": "second-choice", "priority": 5, "host_id": "A"}),
        json!({"url": b.url(), "name": "first-choice", "priority": 1, "host_id": "B"}),
    ]));
    // A question `longform auto` writes in parts in distributed mode.
    let report = "Write a comprehensive report on the history of the printing press in Europe";
    let r = run(&home, &["-i", report], "");
    r.ok();
    let v = json_of(&r);
    assert_eq!(
        v["metrics"]["pipeline"], "standard",
        "long-form is for distributed mode"
    );
    assert_eq!(v["metrics"]["longform"]["longform"], false);
    assert!(v["attribution"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["node"] == "first-choice"));
    assert_eq!(a.stats().requests, 0);
}

#[test]
fn collaborative_with_refinement_and_voting() {
    let sims: Vec<_> = (0..2).map(|_| sim(paced())).collect();
    let home = home_with(&[(sims[0].url(), "A"), (sims[1].url(), "B")]);
    let r = run(
        &home,
        &[],
        "collab on\nrefine 2\nast on\nquality 0.1\nhello there\nmetrics --json\n",
    );
    r.ok()
        .err_has("Phase 1: Researcher")
        .err_has("2 refinement(s) in parallel across 2 hosts")
        .err_has("Phase 4: Editor")
        .out_has("⏱️  Phase timings: Phase 1: Research")
        .out_has("🗳️  Quality voting: passed")
        .out_has("Voter 1 (accuracy): 0.")
        .out_has("\"quality_passed\": true");
    for s in &sims {
        assert_eq!(s.stats().max_in_flight, 1);
    }
}

#[test]
fn voting_below_threshold_retries_then_keeps_the_answer() {
    let a = sim(paced());
    let home = home_with(&[(a.url(), "A")]);
    let r = run(
        &home,
        &[],
        "collab on\nrefine 0\nast on\nquality 1.0\nqretries 1\nhello there\n",
    );
    r.ok()
        .out_has("Quality voting: not passed (answer kept)")
        .err_has("Quality vote 2");
}

#[test]
fn plain_text_replies_still_give_an_answer() {
    let a = sim(SimConfig {
        plain_replies: true,
        ..paced()
    });
    let home = home_with(&[(a.url(), "A")]);
    let r = run(&home, &[], "hello there\n");
    r.ok()
        .out_has("FINAL ANSWER")
        .err_has("did not match the agent's fields");
    // One request and one follow-up stating the schema, per agent.
    assert_eq!(a.stats().requests, 6);
}

#[test]
fn input_flag_json_shape_and_failure() {
    let (a, b, c) = (sim(paced()), sim(paced()), sim(paced()));
    let home = home_with(&[(a.url(), "A"), (b.url(), "B"), (c.url(), "C")]);
    let r = run(&home, &["-i", LONG], "");
    r.ok();
    let v = json_of(&r);
    for k in ["final_output", "chunks", "attribution", "metrics"] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    let chunks = v["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 5);
    for (i, ch) in chunks.iter().enumerate() {
        assert_eq!(ch["chunk"], i + 1);
        assert!(ch["content"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Part {} of 5: ", i + 1)));
    }
    assert_eq!(v["metrics"]["chunks_generated"], 5);
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let home = home_with(&[(dead, "X")]);
    let r = run(&home, &["-i", "hello"], "");
    r.failed().err_has("Query failed");
    assert!(json_of(&r)["error"].as_str().unwrap().contains("node-1"));
}

#[test]
fn metrics_before_any_query_fails() {
    let home = Home::new();
    run(&home, &[], "metrics\n")
        .failed()
        .err_has("No results yet");
}

#[test]
fn ctrl_c_cancels_the_query_and_the_session_goes_on() {
    let slow = sim(SimConfig {
        tokens_per_sec: 20.0,
        reply_words: 200,
        ..Default::default()
    });
    let home = home_with(&[(slow.url(), "A")]);
    let mut child = command(&home, &[]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    {
        use std::io::Write;
        stdin.write_all(b"hello there\n").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow.stats().in_flight == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(slow.stats().in_flight, 1, "the query started");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    {
        use std::io::Write;
        stdin.write_all(b"refine 3\n").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Cancelled"), "{stderr}");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(home.settings()["refinement_rounds"], 3, "the next line ran");
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.stats().in_flight > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        slow.stats().in_flight,
        0,
        "the in-flight request was cancelled"
    );
}

#[test]
fn benchmark_measures_each_node() {
    let (a, b) = (sim(paced()), sim(paced()));
    let home = home_with(&[(a.url(), "A"), (b.url(), "B")]);
    let r = run(&home, &[], "benchmark\n");
    r.ok()
        .out_has("| node-1 ")
        .out_has("| node-2 ")
        .out_has("| ok ");
    assert_eq!(a.stats().requests, 1);
    assert_eq!(b.stats().max_in_flight, 1);
}

#[test]
fn simulate_flag_runs_queries_across_its_hosts() {
    let home = Home::new();
    let r = run(&home, &["--simulate", "3", "-i", LONG], "");
    r.ok();
    let v = json_of(&r);
    assert_eq!(v["metrics"]["hosts_used"], 3);
    assert!(!home.nodes_path().exists());
}

#[test]
fn agents_can_be_overridden_from_a_directory() {
    let a = sim(paced());
    let home = home_with(&[(a.url(), "A")]);
    let dir = home.path().join("agents");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("critic.json"), b"{ not json").unwrap();
    let mut c = command(&home, &[]);
    c.env("SYNAPTICLLAMAS_AGENTS", &dir);
    // A file that cannot be used is named, and the built-in agent answers.
    let r = run_with(c, "hello there\n");
    r.ok()
        .err_has("critic.json")
        .err_has("the built-in Critic is used")
        .out_has("FINAL ANSWER");
    std::fs::write(
        dir.join("critic.json"),
        json!({"name": "Critic", "role": "r", "system_prompt": "Be harsh.", "required_fields": {"verdict": "string"}, "timeout_secs": 60, "priority": 1}).to_string(),
    )
    .unwrap();
    let mut c = command(&home, &[]);
    c.env("SYNAPTICLLAMAS_AGENTS", &dir);
    run_with(c, "hello there\n").ok().out_has("FINAL ANSWER");
}

#[test]
fn a_cooled_down_node_is_used_again_once_it_recovers() {
    let flaky = sim(SimConfig {
        fault: Fault::Http500,
        ..paced()
    });
    let home = home_with(&[(flaky.url(), "A")]);
    let mut s = Session::spawn(command(&home, &[]));
    s.send("hello there\n");
    // Failures in a row: the node cools down, and the query fails.
    s.until_err(
        "node-1 cooled down (re-probe in 5s)",
        Duration::from_secs(60),
    );
    s.until_err("Query failed", Duration::from_secs(60));
    flaky.set_fault(Fault::None, 0);
    s.send("hello there\n");
    let (stdout, stderr, code) = s.finish();
    // Probed again (by the query, or by the background monitor) and back in use.
    assert!(
        stderr.contains("node-1 is answering again; back in the pool")
            || stderr.contains("node node-1 is back"),
        "{stderr}"
    );
    assert!(stdout.contains("FINAL ANSWER"), "{stdout}\n{stderr}");
    assert_eq!(code, 1, "the first query failed");
}
