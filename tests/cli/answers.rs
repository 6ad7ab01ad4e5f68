//! Answers worth reading (issues 16 and 22): the right size and shape of
//! answer for the question, parts planned for it (their titles the headings,
//! the original's parts when the plan fails), requests that fit each node's
//! context, retries that never quote the checker, answers free of prompt text
//! and JSON, and progress per part.
//! The real binary, piped scripts, simulated hosts on loopback that report a
//! context length, refuse what does not fit with llama-server's HTTP 400, and
//! can echo their prompts or break their JSON.

use std::sync::Arc;

use serde_json::{json, Value};
use synapticllamas::sim::{SimConfig, SimHost};

use crate::support::*;

const FRANCE: &str = "What is the capital of France?";

fn paced() -> SimConfig {
    paced_at(2000.0)
}

/// A home in distributed mode with one node per simulated host.
fn home_with(sims: &[&Arc<SimHost>], settings: Value) -> Home {
    nodes_home(
        sims,
        with_keys(
            json!({"mode": "distributed", "agent_timeout": 60, "request_idle_timeout_ms": 5000}),
            settings,
        ),
    )
}

/// The JSON `metrics --json` printed (the last JSON object on stdout).
pub(crate) fn metrics_json(stdout: &str) -> Value {
    let start = stdout.rfind("\n{\n").map(|i| i + 1).unwrap_or(0);
    let end = stdout.rfind("\n}").map(|i| i + 2).unwrap_or(stdout.len());
    serde_json::from_str(&stdout[start..end])
        .unwrap_or_else(|e| panic!("no metrics JSON ({e}):\n{stdout}"))
}

/// The text between the FINAL ANSWER banner and the rule under it.
pub(crate) fn answer_text(stdout: &str) -> String {
    stdout
        .split(" FINAL ANSWER")
        .nth(1)
        .unwrap_or_else(|| panic!("no FINAL ANSWER:\n{stdout}"))
        .split(&"─".repeat(70))
        .next()
        .unwrap()
        .trim_start_matches(['\n', '═'])
        .to_string()
}

#[test]
fn a_short_factual_question_is_one_part_even_in_distributed_mode() {
    let (a, b) = (sim(paced()), sim(paced()));
    let home = home_with(&[&a, &b], json!({}));
    let r = run(&home, &[], &format!("{FRANCE}\nmetrics\nmetrics --json\n"));
    r.ok()
        .out_has("pipeline: standard")
        .err_has("ℹ️  One part: a short question with no ask for depth, breadth, a long form or a length (scores as research; `!long` writes it in 5 parts)")
        .out_has("| Long-form ")
        .out_has("no, one part (auto): a short question");
    assert!(!r.stderr.contains("Detected long-form"), "{}", r.stderr);
    let m = metrics_json(&r.stdout);
    assert_eq!(m["pipeline"], "standard");
    assert_eq!(m["longform"]["longform"], false);
    assert_eq!(m["longform"]["rule"], "auto");
    // Researcher and Critic, then the Editor: three requests, not five parts and a synthesis.
    assert_eq!(a.stats().requests + b.stats().requests, 3);
}

#[test]
fn a_clear_ask_for_depth_runs_long_form_and_says_why() {
    let sims: Vec<Arc<SimHost>> = (0..3).map(|_| sim(paced())).collect();
    let home = home_with(&[&sims[0], &sims[1], &sims[2]], json!({}));
    let r = run(&home, &["-i", REPORT], "");
    r.ok().err_has(
        "Detected long-form research (est. 5 parts) — 3 host(s); asks for depth and a long form: \"comprehensive\", \"report\"",
    );
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["metrics"]["pipeline"], "long-form");
    assert_eq!(v["metrics"]["chunks_generated"], 5);
    let l = &v["metrics"]["longform"];
    assert_eq!(l["longform"], true);
    assert_eq!(l["parts"], 5);
    assert_eq!(l["asks"], json!(["comprehensive", "report"]));
    // Piped: one line per finished part, with its node and time.
    for n in 1..=5 {
        let line = r
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("✅ part {n}/5 done on node-")))
            .unwrap_or_else(|| panic!("no line for part {n}:\n{}", r.stderr));
        assert!(line.contains("s ("), "{line}");
        assert!(line.contains("tokens/s"), "{line}");
    }
}

#[test]
fn the_setting_and_the_per_query_overrides_decide() {
    let (a, b) = (sim(paced()), sim(paced()));
    let home = home_with(&[&a, &b], json!({}));
    let r = run(
        &home,
        &[],
        &format!(
            "help\nlongform always\n{FRANCE}\nmetrics --json\nlongform never\nCompare tabs and spaces\n!long hello there\n!short {REPORT}\nlongform sometimes\n!long\nstatus\n"
        ),
    );
    r.failed()
        .out_has("longform auto|always|never")
        .out_has("[auto]")
        .out_has("`!long QUESTION` writes the answer in parts")
        .out_has("✅ Long-form answers: always (the original's rule")
        .out_has("✅ Long-form answers: never")
        .out_has("never (one part unless a query starts with !long)")
        .err_has("❌ unknown long-form rule `sometimes` (use auto, always, never)")
        .err_has("Usage: longform auto|always|never")
        .err_has("❌ `!long` needs a question after it");
    // always: the original's rule splits the one-line question.
    r.err_has("Detected long-form research (est. 5 parts) — 2 host(s); `longform always` (the original's rule): the question scores as research");
    assert_eq!(metrics_json(&r.stdout)["longform"]["rule"], "always");
    // never: one part, even for a comparison; `!long` splits anyway (a general
    // question gets three parts); `!short` keeps a report to one part.
    r.err_has("ℹ️  One part: `longform never`")
        .err_has("Detected long-form general (est. 3 parts) — 2 host(s); `!long` asks for parts")
        .err_has("ℹ️  One part: `!short` asks for one part");
    assert_eq!(r.stdout.matches("FINAL ANSWER").count(), 4, "{}", r.stdout);
    assert_eq!(home.settings()["longform"], "never");

    // A bad value in the file is named, and auto used.
    let home = home_with(&[&a], json!({"longform": "sometimes"}));
    let r = run(&home, &[], &format!("{FRANCE}\n"));
    r.ok()
        .err_has("key `longform` at line")
        .err_has("\"sometimes\" is not one of \"auto\", \"always\", \"never\" or null (auto)")
        .out_has("pipeline: standard");
}

/// Two hosts whose model has a small context (1,024 tokens), as the issue's
/// llama.cpp nodes: every request fits, none is refused, the model is never
/// reloaded, and the report's synthesis is staged instead of dropped.
#[test]
fn requests_fit_a_small_context_and_the_synthesis_is_staged() {
    let small = || {
        sim(SimConfig {
            context_length: Some(1024),
            trained_context: Some(8192),
            reply_words: 150,
            ..paced()
        })
    };
    let (a, b) = (small(), small());
    let home = home_with(&[&a, &b], json!({}));
    let r = run(&home, &[], &format!("{FRANCE}\n{REPORT}\nmetrics --json\n"));
    r.ok();
    for s in [&a, &b] {
        let st = s.stats();
        assert_eq!(st.too_large, 0, "nothing was refused: {st:?}\n{}", r.stderr);
        assert_eq!(st.reloads, 0, "the loaded context was used: {st:?}");
    }
    assert!(!r.stderr.contains("does not fit"), "{}", r.stderr);
    let m = metrics_json(&r.stdout);
    assert_eq!(m["pipeline"], "long-form");
    let synthesis = m["synthesis"].as_str().unwrap();
    assert!(synthesis.starts_with("staged: "), "{synthesis}");
    r.err_has("🧩 synthesis in stages: the 5 parts do not fit one request (context 1024 tokens)");
    let answers: Vec<&str> = r.stdout.split(" FINAL ANSWER").skip(1).collect();
    assert_eq!(answers.len(), 2, "{}", r.stdout);
    let report = answer_text(&format!(" FINAL ANSWER{}", answers[1]));
    assert!(report.starts_with("## Overview\n\n"), "{report}");
    for n in 1..=5 {
        assert!(
            report.contains(&format!("## Part {n}: ")),
            "part {n} kept whole:\n{report}"
        );
    }
}

/// A node that reloaded the model with a smaller context after this session
/// learned it refuses the synthesis with HTTP 400: the refusal teaches the
/// real size, the request is retried only on a node said to have more, never
/// a third time, and the synthesis is staged instead of dropped.
#[test]
fn a_refusal_is_learned_retried_only_on_a_larger_context_then_staged() {
    let roomy = || {
        sim(SimConfig {
            context_length: Some(4096),
            reply_words: 150,
            ..paced()
        })
    };
    let (a, b) = (roomy(), roomy());
    let home = home_with(&[&a, &b], json!({}));
    let mut s = Session::spawn(command(&home, &[]));
    s.send("!long Explain tides\n");
    s.until("Type 'metrics'", std::time::Duration::from_secs(60));
    // Another client loads the model again with 1,024 tokens on both hosts.
    for h in [&a, &b] {
        let mut c = h.config();
        c.context_length = Some(1024);
        c.trained_context = Some(1024);
        h.set_config(c);
    }
    s.send(&format!("{REPORT}\nmetrics --json\n"));
    let (out, err, code) = s.finish();
    assert_eq!(code, 0, "{err}");
    let refused = a.stats().too_large + b.stats().too_large;
    assert!(refused >= 1, "a request was refused:\n{err}");
    let synthesis_failures = err
        .lines()
        .filter(|l| l.starts_with("⚠️  synthesis failed on "))
        .count();
    assert_eq!(
        synthesis_failures, 2,
        "once on each host, never a third time:\n{err}"
    );
    assert_eq!(
        err.matches("; trying a node with a larger context").count(),
        1,
        "retried once, on the node still said to have more:\n{err}"
    );
    assert_eq!(refused, 2, "{err}");
    assert!(
        err.contains("exceeds the available context size (1024 tokens)"),
        "llama-server's words reach the user:\n{err}"
    );
    let m = metrics_json(&out);
    assert!(
        m["synthesis"].as_str().unwrap().starts_with("staged: "),
        "{m}\n{err}"
    );
    assert!(out.contains("## Overview"), "{out}");
}

/// Words of the quality checks, the field checks and the prompts: none may
/// reach an answer.
pub(crate) const NEVER_IN_AN_ANSWER: &[&str] = &[
    "rejected",
    "too few",
    "too short",
    "quality check",
    "An earlier attempt",
    "could not be used",
    "placeholder",
    "Reply shape",
    "Request:",
    "Write about",
    "Write only about this focus",
    "Write it as connected paragraphs",
    "Research this question",
    "Question:",
    "Answer the request below",
    "{\"",
    "\":",
    "\"]",
];

pub(crate) fn assert_clean(text: &str, what: &str) {
    for w in NEVER_IN_AN_ANSWER {
        assert!(!text.contains(w), "{what} holds {w:?}:\n{text}");
    }
}

#[test]
fn a_model_that_echoes_its_prompt_and_breaks_its_json_gives_a_clean_answer() {
    // Short replies fail the chunk check, so every part is retried.
    let echoing = || {
        sim(SimConfig {
            echo_prompt: true,
            broken_json: true,
            reply_words: 40,
            ..paced()
        })
    };
    let (a, b) = (echoing(), echoing());
    let home = home_with(&[&a, &b], json!({}));
    let r = run(&home, &["-i", &format!("!long {FRANCE}")], "");
    r.ok()
        .err_has("failed its quality check")
        .err_has("retrying once");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let answer = v["final_output"].as_str().unwrap();
    assert_clean(answer, "the long-form answer");
    for c in v["chunks"].as_array().unwrap() {
        let text = c["content"].as_str().unwrap();
        assert_clean(text, "a part");
        assert!(
            text.split_whitespace().count() >= 12,
            "the model's own text is kept: {text:?}"
        );
    }

    let r = run(&home, &["-i", FRANCE], "");
    r.ok();
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let answer = v["final_output"].as_str().unwrap();
    assert_clean(answer, "the one-part answer");
    assert!(answer.contains("## Summary"), "{answer}");
}

#[test]
fn simulated_hosts_report_their_context_and_refuse_what_does_not_fit() {
    use synapticllamas::ollama::types::{ChatRequest, Message};
    use synapticllamas::ollama::{Client, ErrorKind, Timeouts};
    let p = crate::load::SimProc::start(&[
        "--context-length",
        "1024",
        "--models",
        "tiny:latest",
        "--echo-prompt",
        "--broken-json",
    ]);
    let client = Client::default();
    let url = p.url();
    let show = rt()
        .block_on(client.show(&url, "tiny", Timeouts::PROBE))
        .unwrap();
    assert_eq!(show["model_info"]["simulated.context_length"], 1024);
    let ps = rt().block_on(client.ps(&url, Timeouts::PROBE)).unwrap();
    assert_eq!(ps[0].context_length, Some(1024));
    let ask = |text: String| {
        let req = ChatRequest {
            model: "tiny".into(),
            messages: vec![Message::user(text)],
            stream: true,
            format: Some(
                json!({"type": "object", "properties": {"context": {"type": "string"}},
                                "required": ["context"]}),
            ),
            options: Some(json!({"num_ctx": 1024})),
            keep_alive: None,
        };
        rt().block_on(client.chat(
            &url,
            &req,
            Timeouts::generation(std::time::Duration::from_secs(10)),
            |_| {},
        ))
    };
    let e = ask("word ".repeat(1000)).unwrap_err();
    match e.kind {
        ErrorKind::TooLarge { message } => assert!(
            message.contains("exceeds the available context size (1024 tokens), try increasing it"),
            "{message}"
        ),
        other => panic!("not classified as too large: {other:?}"),
    }
    let reply =
        ask("Reply shape: {\"context\": \"<text>\"}. Why is the sea salty?".into()).unwrap();
    assert!(
        reply.text.starts_with("{\"context\":\"Reply shape"),
        "echoed: {}",
        reply.text
    );
    assert!(
        !reply.text.trim_end().ends_with('}'),
        "broken: {}",
        reply.text
    );
    assert_eq!(p.stats()["too_large"], 1);
}

/// The outline's titles as the `-i` JSON gives them.
fn outline_titles(v: &Value) -> Vec<String> {
    v["metrics"]["longform"]["outline"]["parts"]
        .as_array()
        .unwrap_or_else(|| panic!("no outline: {v}"))
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_planners_titles_become_the_parts_headings() {
    let (a, b) = (sim(paced()), sim(paced()));
    let home = home_with(&[&a, &b], json!({}));
    let r = run(&home, &["-i", REPORT], "");
    r.ok();
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let outline = &v["metrics"]["longform"]["outline"];
    assert_eq!(outline["planned"], true, "{outline}");
    assert!(outline.get("fallback").is_none(), "{outline}");
    // The titles the host returned for the planner's request.
    let planned: Vec<String> = a
        .recent_requests()
        .into_iter()
        .chain(b.recent_requests())
        .filter(|q| q["format"]["required"] == json!(["parts"]))
        .count()
        .eq(&1)
        .then(|| outline_titles(&v))
        .expect("one planner request");
    assert_eq!(planned.len(), 5);
    let answer = v["final_output"].as_str().unwrap();
    for (i, t) in planned.iter().enumerate() {
        assert!(!t.is_empty());
        assert!(
            answer.contains(&format!("## Part {}: {t}\n", i + 1)),
            "heading {t:?}:\n{answer}"
        );
        assert_eq!(v["chunks"][i]["title"], t.as_str());
        let focus = outline["parts"][i]["focus"].as_str().unwrap();
        assert_eq!(v["chunks"][i]["focus"], focus);
    }
    // No template heading is left.
    assert!(!answer.contains("Mathematical formalism"), "{answer}");
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("📋 Outline, planned for the question: 1. "))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(line.contains(&format!("5. {}", planned[4])), "{line}");
    // Each part was asked for on its title and focus.
    let asked: Vec<String> = a
        .recent_requests()
        .into_iter()
        .chain(b.recent_requests())
        .filter_map(|q| q["messages"][1]["content"].as_str().map(String::from))
        .collect();
    for (i, t) in planned.iter().enumerate() {
        let head = format!("Part {} of 5: {t}. Focus: ", i + 1);
        assert!(asked.iter().any(|p| p.starts_with(&head)), "{head}");
    }
}

#[test]
fn a_plan_that_fails_falls_back_to_the_originals_parts() {
    // Every host refuses the planner's request.
    let refusing = || {
        sim(SimConfig {
            fault: synapticllamas::sim::Fault::Http500,
            fault_match: Some("Plan a 5-part answer".into()),
            ..paced()
        })
    };
    let (a, b) = (refusing(), refusing());
    let home = home_with(&[&a, &b], json!({}));
    let r = run(&home, &["-i", REPORT], "");
    r.ok()
        .err_has("📋 Outline, the original's research parts (the plan failed: HTTP 500");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let outline = &v["metrics"]["longform"]["outline"];
    assert_eq!(outline["planned"], false);
    assert!(outline["fallback"]
        .as_str()
        .unwrap()
        .starts_with("the plan failed: "));
    let titles = outline_titles(&v);
    assert_eq!(
        titles[1],
        "Mathematical formalism, key equations and the theoretical mechanisms that make it work"
    );
    let answer = v["final_output"].as_str().unwrap();
    assert!(
        answer.contains("## Part 1: Fundamental concepts and definitions only\n"),
        "{answer}"
    );
    assert!(
        v["complete"].as_bool().unwrap(),
        "the answer is whole: {answer}"
    );

    // A host that answers the plan with its own object: the titles cannot be used.
    let ignoring = sim(SimConfig {
        ignore_schema: true,
        ..paced()
    });
    let home = home_with(&[&ignoring], json!({}));
    let r = run(&home, &["-i", REPORT], "");
    r.ok().err_has(
        "📋 Outline, the original's research parts (the plan could not be used: no list of parts)",
    );

    // `longform always`: the original's parts, not asked for.
    let c = sim(paced());
    let home = home_with(&[&c], json!({"longform": "always"}));
    let r = run(&home, &["-i", FRANCE], "");
    r.ok().err_has("📋 Outline, the original's research parts (`longform always`: the original's parts): 1. Fundamental concepts");
    assert!(
        !c.recent_requests()
            .iter()
            .any(|q| q["format"]["required"] == json!(["parts"])),
        "no planner request"
    );
}
