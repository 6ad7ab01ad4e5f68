//! Schema-constrained replies: every agent request carries its reply's JSON
//! Schema where the node takes one (Ollama 0.5.0 and later); an older Ollama
//! gets `format: "json"`; a reply that is not the agent's object all the same
//! goes through the repair path; the `-i` JSON (and `metrics`) count how the
//! replies came back. The simulated hosts answer from the request's `format`
//! alone, and record what they were sent.

use std::sync::Arc;

use serde_json::{json, Value};
use synapticllamas::sim::{SimConfig, SimHost};

use crate::support::*;

fn quick() -> SimConfig {
    SimConfig {
        reply_words: 40,
        ..SimConfig::default()
    }
}

/// The inference requests `h` received (its last 64).
fn asked(h: &SimHost) -> Vec<Value> {
    h.recent_requests()
        .into_iter()
        .filter(|b| b.get("messages").is_some())
        .collect()
}

/// A schema's required field names.
fn required(schema: &Value) -> Vec<&str> {
    schema["required"]
        .as_array()
        .unwrap_or_else(|| panic!("no `required` in {schema}"))
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect()
}

/// The schema a request carried, whose required fields are `fields`.
fn schema_for<'a>(requests: &'a [Value], fields: &[&str]) -> &'a Value {
    requests
        .iter()
        .map(|r| &r["format"])
        .find(|f| f.is_object() && required(f) == fields)
        .unwrap_or_else(|| {
            let seen: Vec<&Value> = requests.iter().map(|r| &r["format"]["required"]).collect();
            panic!("no request asked for {fields:?}; asked for {seen:?}")
        })
}

fn replies(v: &Value) -> &Value {
    &v["metrics"]["replies"]
}

#[test]
fn every_agent_request_carries_its_replys_schema() {
    let a = sim(quick());
    let settings = json!({"collaborative_mode": true, "refinement_rounds": 0,
                          "ast_voting_enabled": true, "quality_threshold": 0.1});
    let home = nodes_home(&[&a], settings);
    let r = run(&home, &["-i", "What is a tide?"], "");
    r.ok();
    let requests = asked(&a);
    assert!(requests.len() >= 5, "{requests:?}");
    for req in &requests {
        let f = &req["format"];
        assert_eq!(f["type"], "object", "every request has a schema: {req}");
        assert_eq!(f["additionalProperties"], false, "{f}");
    }
    let researcher = schema_for(&requests, &["context", "key_facts", "topics", "sources"]);
    let p = &researcher["properties"];
    assert_eq!(p["context"], json!({"type": "string", "minLength": 1}));
    assert_eq!(
        p["key_facts"]["minItems"], 1,
        "an empty list of facts is no answer"
    );
    assert!(p["sources"].get("minItems").is_none(), "no sources is fair");
    schema_for(
        &requests,
        &["issues", "biases", "strengths", "recommendations"],
    );
    schema_for(
        &requests,
        &[
            "summary",
            "key_points",
            "detailed_explanation",
            "examples",
            "practical_applications",
        ],
    );
    let vote = schema_for(&requests, &["score", "reasoning", "issues"]);
    assert_eq!(
        vote["properties"]["score"],
        json!({"type": "number", "minimum": 0.0, "maximum": 1.0})
    );
    // Every reply was the agent's object as it came.
    let v = json_of(&r);
    let n = requests.len();
    assert_eq!(
        replies(&v),
        &json!({"total": n, "valid_first_try": n, "repaired": 0, "as_text": 0,
                "with_schema": n, "json_only": 0}),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("did not match"), "{}", r.stderr);
}

#[test]
fn parts_and_their_synthesis_carry_their_shapes() {
    let a = sim(quick());
    let home = nodes_home(&[&a], json!({"mode": "distributed"}));
    let r = run(&home, &["-i", LONG], "");
    r.ok();
    let requests = asked(&a);
    let parts = requests
        .iter()
        .filter(|q| q["format"].is_object() && required(&q["format"]) == ["context"])
        .count();
    assert!(parts >= 5, "a request per part (and its retries): {parts}");
    schema_for(&requests, &["detailed_explanation"]);
    let v = json_of(&r);
    assert_eq!(replies(&v)["valid_first_try"], requests.len());
}

#[test]
fn every_long_form_request_carries_a_schema_the_outline_exactly_n_parts() {
    let (a, b) = (sim(quick()), sim(quick()));
    let home = nodes_home(&[&a, &b], json!({"mode": "distributed"}));
    let r = run(&home, &["-i", REPORT], "");
    r.ok();
    let requests: Vec<Value> = asked(&a).into_iter().chain(asked(&b)).collect();
    for q in &requests {
        assert!(q["format"].is_object(), "every request has a schema: {q}");
    }
    let outline = schema_for(&requests, &["parts"]);
    let parts = &outline["properties"]["parts"];
    assert_eq!(
        (&parts["minItems"], &parts["maxItems"]),
        (&json!(5), &json!(5))
    );
    assert_eq!(parts["items"]["required"], json!(["title", "focus"]));
    assert_eq!(parts["items"]["properties"]["title"]["minLength"], 4);
    // The planner's request is the first, and says what it is for.
    let planner = requests.iter().find(|q| q["format"] == *outline).unwrap();
    let user = planner["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.starts_with("Plan a 5-part answer to this request: Write a comprehensive report"),
        "{user}"
    );
    let v = json_of(&r);
    assert_eq!(
        replies(&v)["valid_first_try"],
        requests.len(),
        "{}",
        r.stderr
    );
}

#[test]
fn a_short_factual_question_asks_the_editor_for_a_summary_and_key_points() {
    let a = sim(quick());
    let home = nodes_home(&[&a], json!({}));
    let r = run(&home, &["-i", "What is the capital of France?"], "");
    r.ok();
    let requests = asked(&a);
    schema_for(&requests, &["summary", "key_points"]);
    let editor = requests
        .iter()
        .find(|q| required(&q["format"]) == ["summary", "key_points"])
        .unwrap();
    let system = editor["messages"][0]["content"].as_str().unwrap();
    assert!(!system.contains("\"examples\""), "{system}");
    let v = json_of(&r);
    assert_eq!(v["metrics"]["longform"]["brief"], true);
    let answer = v["final_output"].as_str().unwrap();
    assert!(answer.starts_with("## Summary\n"), "{answer}");
    assert!(answer.contains("\n\n## Key Points\n- **"), "{answer}");
    for gone in [
        "## Detailed Explanation",
        "## Examples",
        "## Practical Applications",
    ] {
        assert!(!answer.contains(gone), "{gone}: {answer}");
    }
    // An explanatory question keeps the five sections.
    let r = run(&home, &["-i", "Why is the sky blue?"], "");
    r.ok();
    let v = json_of(&r);
    assert_eq!(v["metrics"]["longform"]["brief"], false);
    let answer = v["final_output"].as_str().unwrap();
    for kept in [
        "## Detailed Explanation",
        "## Examples",
        "## Practical Applications",
    ] {
        assert!(answer.contains(kept), "{kept}: {answer}");
    }
}

#[test]
fn a_host_that_ignores_the_schema_still_gives_a_repaired_answer() {
    let a = sim(SimConfig {
        ignore_schema: true,
        ..quick()
    });
    let home = nodes_home(&[&a], json!({}));
    let r = run(&home, &["-i", "What is a tide?"], "");
    r.ok()
        .err_has("Researcher: the reply did not match the agent's fields")
        .err_has("Editor: the reply did not match the agent's fields");
    let requests = asked(&a);
    assert!(
        requests.iter().all(|q| q["format"].is_object()),
        "{requests:?}"
    );
    let v = json_of(&r);
    // The Editor's text, taken out of the object the host chose to send.
    let answer = v["final_output"].as_str().unwrap();
    let summary = answer
        .split("## Summary")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary: {answer}"));
    assert!(summary.split_whitespace().count() > 20, "{answer}");
    assert!(!answer.contains("\"response\""), "no JSON left: {answer}");
    // Each agent asked twice (the follow-up), each reply kept as text.
    let c = replies(&v);
    assert_eq!(c["total"], 3, "{c}");
    assert_eq!(c["valid_first_try"], 0, "{c}");
    assert_eq!(c["as_text"], 3, "{c}");
    assert_eq!(c["with_schema"], 3, "{c}");
    assert_eq!(requests.len(), 6);
}

#[test]
fn an_ollama_before_0_5_gets_json_and_a_newer_one_the_schema() {
    let old = sim(SimConfig {
        version: "0.4.7".into(),
        ..quick()
    });
    let new = sim(quick());
    let home = nodes_home(&[&old, &new], json!({"mode": "distributed"}));
    let r = run(&home, &["-i", "What is a tide?"], "");
    r.ok();
    let (to_old, to_new) = (asked(&old), asked(&new));
    assert!(!to_old.is_empty() && !to_new.is_empty(), "both hosts work");
    for q in &to_old {
        assert_eq!(q["format"], "json", "{q}");
    }
    for q in &to_new {
        assert!(q["format"].is_object(), "{q}");
    }
    // The old node's replies ({"response": …}) went through the repair path.
    r.err_has("did not match the agent's fields");
    let c = replies(&json_of(&r)).clone();
    let total = c["total"].as_u64().unwrap();
    assert_eq!(total, 3, "{c}");
    let json_only = c["json_only"].as_u64().unwrap();
    assert!(json_only >= 1 && json_only < total, "{c}");
    assert_eq!(c["with_schema"].as_u64().unwrap(), total - json_only);
    assert_eq!(
        c["valid_first_try"], c["with_schema"],
        "the schema's replies were valid, the others not: {c}"
    );
}

#[test]
fn metrics_show_how_the_replies_came_back() {
    let a: Arc<SimHost> = sim(SimConfig {
        ignore_schema: true,
        ..quick()
    });
    let home = nodes_home(&[&a], json!({}));
    let r = run(&home, &[], "What is a tide?\nmetrics\nmetrics --json\n");
    r.ok()
        .out_has(
            "0 of 3 valid on the first try (0 repaired, 3 kept as text); 3 asked with a schema",
        )
        .out_has("\"valid_first_try\": 0");
}

#[test]
fn a_sim_host_can_report_an_old_version_and_ignore_schemas() {
    let p = crate::load::SimProc::start(&["--ollama-version", "0.4.7", "--ignore-schema"]);
    let port: u16 = p.url().rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        crate::load::http_get_json(port, "/api/version")["version"],
        "0.4.7"
    );
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}},
                        "required": ["answer"]});
    let http = reqwest::Client::new();
    let chat = |format: Value| {
        let body = json!({"model": "llama3.2", "stream": false, "format": format,
                          "messages": [{"role": "user", "content": "Why is the sea salty?"}]});
        rt().block_on(async {
            let r = http
                .post(format!("{}/api/chat", p.url()))
                .json(&body)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            serde_json::from_str::<Value>(v["message"]["content"].as_str().unwrap()).unwrap()
        })
    };
    let ignored = chat(schema.clone());
    assert!(
        ignored["response"].is_string() && ignored.get("answer").is_none(),
        "{ignored}"
    );
    // Changed at run time through /sim/config.
    rt().block_on(async {
        http.post(format!("{}/sim/config", p.url()))
            .json(&json!({"ignore_schema": false, "version": "0.5.0"}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    });
    assert_eq!(
        crate::load::http_get_json(port, "/api/version")["version"],
        "0.5.0"
    );
    let followed = chat(schema.clone());
    assert!(followed["answer"].is_string(), "{followed}");
    let seen = crate::load::http_get_json(port, "/sim/requests");
    let formats: Vec<&Value> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["format"])
        .collect();
    assert_eq!(
        formats,
        [&schema, &schema],
        "the host records what it was sent"
    );
}
