//! The health view, retries and kept work against simulated hosts on loopback:
//! a cooled node gets no request while it cools and is used again once it
//! recovers; a failed Critic leaves the Editor working on the Researcher's
//! findings; a part that fails everywhere is a marked gap, the rest of the answer
//! is kept; a part whose reply has no text is retried on another host, and is a
//! marked gap (never a part of 0 words) when no host gives text; a randomized
//! fault schedule over four hosts for twenty queries gives complete answers or
//! exactly the gaps the schedule forces.

use std::time::{Duration, Instant};

use serde_json::json;
use synapticllamas::sim::{Fault, SimConfig, SimHost};

use crate::support::*;

/// A home with `hosts` as nodes node-1.. on hosts h1.., distributed mode.
fn home_for(hosts: &[&std::sync::Arc<SimHost>]) -> Home {
    nodes_home(
        hosts,
        json!({"mode": "distributed", "request_idle_timeout_ms": 1500, "agent_timeout": 30}),
    )
}

/// The parts of a long-form answer that are present and the ones marked missing.
fn parts(answer: &str) -> (Vec<usize>, Vec<usize>) {
    let mut missing = Vec::new();
    for n in 1..=5 {
        let head = format!("## Part {n}:");
        if let Some(i) = answer.find(&head) {
            let rest = &answer[i + head.len()..];
            let end = rest.find("\n## Part ").unwrap_or(rest.len());
            if rest[..end].contains("This part is missing") {
                missing.push(n);
            }
        }
    }
    (chunk_order(answer, 5), missing)
}

#[test]
fn a_cooled_node_gets_no_request_while_it_cools_and_is_used_again_once_it_recovers() {
    let bad = sim(SimConfig {
        fault: Fault::Http500,
        ..paced()
    });
    let good = sim(paced());
    let home = home_for(&[&bad, &good]);
    let mut s = Session::spawn(command(&home, &[]));
    // The first report meets node-1's errors until it is cooled.
    s.send(&format!("{REPORT}\n"));
    s.until("Type 'metrics'", Duration::from_secs(60));
    s.send("status\n");
    let status = s.until("Node Health", Duration::from_secs(10));
    assert!(
        status.contains("1 healthy, 1 cooling"),
        "node-1 is not cooling after repeated errors:\n{status}"
    );
    let cooled_at = bad.stats().requests;
    // While it cools (5 s), a whole report runs without it.
    s.send(&format!("{REPORT}\nstatus\n"));
    let second = s.until("Node Health", Duration::from_secs(60));
    // The cooling lasted the whole report: no re-probe brought node-1 back
    // meanwhile (else leaving it alone would prove nothing; the status below
    // says "cooling" too). The notice would be on stderr, before the table.
    while let Ok(l) = s.err_lines.try_recv() {
        s.seen_err.push(l);
    }
    assert!(
        !s.seen_err
            .iter()
            .any(|l| l.contains("node-1 is answering again")),
        "node-1 came back during the second report; the check proves nothing:\n{}",
        s.seen_err.join("\n")
    );
    assert!(second.contains("FINAL ANSWER"), "{second}");
    assert_eq!(
        bad.stats().requests,
        cooled_at,
        "a cooling node received requests"
    );
    assert!(second.contains("1 healthy, 1 cooling"), "{second}");
    // It recovers; after its backoff a re-probe brings it back and it is used again.
    bad.set_fault(Fault::None, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        s.send(&format!("{REPORT}\n"));
        s.until("Type 'metrics'", Duration::from_secs(60));
        if bad.stats().completed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-1 was never used again after it recovered"
        );
    }
    let (_, stderr, _) = s.finish();
    assert!(
        stderr.contains("node-1 cooled down (re-probe in"),
        "{stderr}"
    );
    assert!(
        stderr.contains("node-1 is answering again; back in the pool"),
        "{stderr}"
    );
}

#[test]
fn a_failed_critic_leaves_the_editor_working_on_the_findings() {
    // Every host refuses the Critic's request (its prompt names the task).
    let cfg = SimConfig {
        fault: Fault::Http500,
        fault_match: Some("Review how this question".into()),
        ..paced()
    };
    let (a, b) = (sim(cfg.clone()), sim(cfg));
    let home = home_for(&[&a, &b]);
    let r = run(&home, &["-i", "hello there"], "");
    assert_eq!(
        r.code, 1,
        "an answer with a gap counts as failed\n{}",
        r.stderr
    );
    let v = json_of(&r);
    assert_eq!(v["complete"], false);
    let failed = v["failed_tasks"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["task"], "Critic");
    assert_eq!(failed[0]["kind"], "http");
    let out = v["final_output"].as_str().unwrap();
    assert!(
        out.contains("## Summary"),
        "the Editor still answered: {out}"
    );
    let tasks: Vec<&str> = v["attribution"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["task"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["Researcher", "Editor"]);
    assert!(
        r.stderr
            .contains("the Editor works from the Researcher's findings alone"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_part_that_fails_everywhere_is_a_marked_gap_and_the_rest_is_kept() {
    let cfg = SimConfig {
        fault: Fault::Http500,
        fault_match: Some("Part 3 of 5".into()),
        ..paced()
    };
    let hosts = [sim(cfg.clone()), sim(cfg.clone()), sim(cfg)];
    let home = home_for(&hosts.iter().collect::<Vec<_>>());
    let r = run(&home, &["-i", REPORT], "");
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = json_of(&r);
    let out = v["final_output"].as_str().unwrap();
    assert_eq!(parts(out), (vec![1, 2, 4, 5], vec![3]), "{out}");
    let failed = v["failed_chunks"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["chunk"], 3);
    assert!(failed[0]["error"]
        .as_str()
        .unwrap()
        .contains("chunk 3/5 failed on every node tried"));
    assert_eq!(v["chunks"].as_array().unwrap().len(), 4);
    assert!(
        r.stderr.contains("❌ Query incomplete: part 3 missing"),
        "{}",
        r.stderr
    );
}

/// A host whose reply to part 3 has no text at all.
fn empty_on_part_3() -> SimConfig {
    SimConfig {
        fault: Fault::Empty,
        fault_match: Some("Part 3 of 5".into()),
        ..paced()
    }
}

#[test]
fn an_empty_part_is_retried_on_another_host() {
    // node-1 writes nothing for any part; node-2 writes them all.
    let empty = sim(SimConfig {
        fault: Fault::Empty,
        fault_match: Some("\n\nRequest: ".into()),
        ..paced()
    });
    let good = sim(paced());
    let home = home_for(&[&empty, &good]);
    let r = run(&home, &["-i", REPORT], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json_of(&r);
    let out = v["final_output"].as_str().unwrap();
    assert_eq!(parts(out), (vec![1, 2, 3, 4, 5], vec![]), "{out}");
    r.err_has("failed on node-1")
        .err_has("no usable text in the reply (empty after cleaning)");
    assert!(
        v["metrics"]["retries"].as_u64().unwrap() >= 1,
        "{}",
        v["metrics"]
    );
    for c in v["chunks"].as_array().unwrap() {
        assert_eq!(c["node"], "node-2", "the kept attempt's node: {c}");
        assert!(
            c["content"].as_str().unwrap().split_whitespace().count() > 10,
            "{c}"
        );
    }
    for l in r.stderr.lines().filter(|l| l.starts_with("✅ part ")) {
        assert!(l.contains(" done on node-2 "), "{l}");
    }
    assert!(!r.stderr.contains(" (0 words"), "{}", r.stderr);
}

#[test]
fn a_part_empty_everywhere_is_a_marked_gap_counted_in_the_exit_and_the_metrics() {
    let hosts = [sim(empty_on_part_3()), sim(empty_on_part_3())];
    let home = home_for(&hosts.iter().collect::<Vec<_>>());
    let r = run(&home, &["-i", REPORT], "");
    assert_eq!(r.code, 1, "a missing part fails the query:\n{}", r.stderr);
    let v = json_of(&r);
    let out = v["final_output"].as_str().unwrap();
    assert_eq!(parts(out), (vec![1, 2, 4, 5], vec![3]), "{out}");
    assert!(
        out.contains("> ⚠️ **This part is missing.** It could not be generated: chunk 3/5 failed on every node tried"),
        "{out}"
    );
    assert!(out.contains("no usable text in the reply"), "{out}");
    let failed = v["failed_chunks"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["chunk"], 3);
    assert_eq!(failed[0]["kind"], "bad_reply");
    assert_eq!(v["metrics"]["failed_tasks"], 1);
    assert_eq!(v["complete"], false);
    assert_eq!(
        v["chunks"].as_array().unwrap().len(),
        4,
        "no empty part kept"
    );
    // Tried on each host, never announced as done.
    let tried: usize = hosts
        .iter()
        .map(|h| {
            h.recent_requests()
                .iter()
                .filter(|b| b.to_string().contains("Part 3 of 5"))
                .count()
        })
        .sum();
    assert!(tried >= 2, "part 3 was asked on both hosts: {tried}");
    assert!(!r.stderr.contains("✅ part 3/5 done"), "{}", r.stderr);
    r.err_has("❌ Query incomplete: part 3 missing");
}

#[test]
fn a_randomized_fault_schedule_gives_complete_answers_or_exactly_the_forced_gaps() {
    let seed: u64 = std::env::var("SYNAPTICLLAMAS_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("fault schedule seed {seed} (SYNAPTICLLAMAS_FAULT_SEED={seed} replays it)");
    let mut rng = Rng(seed.max(1));
    let hosts: Vec<_> = (0..4).map(|_| sim(paced())).collect();
    let home = home_for(&hosts.iter().collect::<Vec<_>>());
    let mut s = Session::spawn(command(&home, &[]));
    let faults = [
        Fault::None,
        Fault::Drop,
        Fault::Hang,
        Fault::Http500,
        Fault::ErrorLine,
        Fault::Reset,
        Fault::Stall,
        Fault::Die,
    ];
    let mut forced_count = 0;
    let mut all_err: Vec<String> = Vec::new();
    for q in 0..20 {
        let forced = (rng.below(10) < 3).then(|| 2 + rng.below(4) as usize);
        let mut plan = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let cfg = match forced {
                Some(k) => SimConfig {
                    fault: Fault::Http500,
                    fault_match: Some(format!("Part {k} of 5")),
                    ..paced()
                },
                // Host 1 stays healthy: nothing else is forced.
                None if i == 0 => paced(),
                None => SimConfig {
                    fault: faults[rng.below(faults.len() as u64) as usize],
                    fault_after: h.stats().requests + rng.below(3),
                    fault_every: rng.below(3),
                    ..paced()
                },
            };
            plan.push(format!("{:?}", cfg.fault));
            h.set_config(cfg);
        }
        s.send(&format!("{REPORT}\n"));
        let out = s.until("Type 'metrics'", Duration::from_secs(120));
        let answer = &out[out.rfind("FINAL ANSWER").unwrap_or(0)..];
        all_err.extend(s.err_lines.try_iter().map(|l| format!("[q{q}] {l}")));
        let answer = &format!(
            "{answer}\nstderr so far (last 60 lines):\n{}",
            all_err[all_err.len().saturating_sub(60)..].join("\n")
        );
        let (present, missing) = parts(answer);
        match forced {
            None => assert_eq!(
                (present.clone(), missing.clone()),
                (vec![1, 2, 3, 4, 5], vec![]),
                "query {q} (seed {seed}, faults {plan:?}) is not complete:\n{answer}"
            ),
            Some(k) => {
                forced_count += 1;
                let expect: Vec<usize> = (1..=5).filter(|n| *n != k).collect();
                assert_eq!(
                    (present, missing),
                    (expect, vec![k]),
                    "query {q} (seed {seed}) should miss exactly part {k}:\n{answer}"
                );
            }
        }
        // A host killed by the schedule is replaced on the same port by a fresh one.
        for h in &hosts {
            if h.is_dead() {
                rt().block_on(h.revive())
                    .expect("the host comes back on its port");
            }
        }
    }
    let (_, stderr, code) = s.finish();
    assert_eq!(
        code,
        i32::from(forced_count > 0),
        "exit status counts the incomplete answers\n{stderr}"
    );
}
