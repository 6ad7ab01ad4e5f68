//! The Ollama client against the simulator: streaming and not, generate and
//! chat, errors, timeouts.

use std::time::Duration;

use synapticllamas::ollama::types::{ChatRequest, GenerateRequest, Message};
use synapticllamas::ollama::{Client, ErrorKind, Timeouts};
use synapticllamas::sim::{Fault, SimConfig};

use crate::support::*;

fn fast() -> Timeouts {
    Timeouts::new(
        Duration::from_secs(1),
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
}

fn chat(model: &str, stream: bool) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![
            Message::system("be brief"),
            Message::user("Why is the sky blue on a clear afternoon?"),
        ],
        stream,
        ..Default::default()
    }
}

#[test]
fn chat_streams_incrementally_and_keeps_the_counts() {
    let h = sim(SimConfig {
        tokens_per_sec: 2000.0,
        reply_words: 60,
        ..Default::default()
    });
    let c = Client::default();
    let mut pieces = 0;
    let out = rt()
        .block_on(c.chat(&h.url(), &chat("llama3.2", true), fast(), |_| pieces += 1))
        .unwrap();
    assert!(
        out.text
            .starts_with("Why is the sky blue on a clear afternoo"),
        "{}",
        out.text
    );
    assert!(pieces > 10, "streamed in pieces: {pieces}");
    assert!(out.counts.eval_count > 10);
    assert!(out.counts.eval_duration > 0 && out.tokens_per_second().unwrap() > 0.0);
    assert_eq!(out.done_reason.as_deref(), Some("stop"));
    let whole = rt()
        .block_on(c.chat(&h.url(), &chat("llama3.2", false), fast(), |_| {}))
        .unwrap();
    assert_eq!(whole.text, out.text, "deterministic, streamed or not");
}

#[test]
fn generate_streamed_and_not() {
    let h = sim(Default::default());
    let c = Client::default();
    let req = GenerateRequest {
        model: "qwen2.5:0.5b".into(),
        prompt: "List three rivers".into(),
        stream: true,
        ..Default::default()
    };
    let a = rt()
        .block_on(c.generate(&h.url(), &req, fast(), |_| {}))
        .unwrap();
    let b = rt()
        .block_on(c.generate(
            &h.url(),
            &GenerateRequest {
                stream: false,
                ..req.clone()
            },
            fast(),
            |_| {},
        ))
        .unwrap();
    assert!(a.text.starts_with("List three rivers"));
    assert_eq!(a.text, b.text);
    // A JSON Schema in `format` is answered with an object of its shape,
    // whatever the prompt says; `"json"` alone with a generic object.
    let schema = serde_json::json!({"type": "object", "properties": {"answer": {"type": "string"}},
                                    "required": ["answer"]});
    let json = GenerateRequest {
        format: Some(schema),
        prompt: "Reply with {\"reply\": \"text\"}".into(),
        ..req
    };
    let j = rt()
        .block_on(c.generate(&h.url(), &json, fast(), |_| {}))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&j.text).unwrap();
    assert!(v["answer"].is_string() && v.get("reply").is_none(), "{v}");
    let any = GenerateRequest {
        format: Some("json".into()),
        ..json
    };
    let j = rt()
        .block_on(c.generate(&h.url(), &any, fast(), |_| {}))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&j.text).unwrap();
    assert!(
        v["response"].is_string() && v.get("answer").is_none(),
        "{v}"
    );
}

#[test]
fn probes() {
    let h = sim(Default::default());
    let c = Client::default();
    assert_eq!(
        rt().block_on(c.root(&h.url(), Timeouts::PROBE)).unwrap(),
        "Ollama is running"
    );
    assert!(!rt()
        .block_on(c.version(&h.url(), Timeouts::PROBE))
        .unwrap()
        .is_empty());
    let tags = rt().block_on(c.tags(&h.url(), Timeouts::PROBE)).unwrap();
    assert!(tags.iter().any(|m| m.name == "llama3.2:latest"));
    assert!(rt()
        .block_on(c.ps(&h.url(), Timeouts::PROBE))
        .unwrap()
        .is_empty());
    rt().block_on(c.chat(&h.url(), &chat("llama3.2", false), fast(), |_| {}))
        .unwrap();
    let ps = rt().block_on(c.ps(&h.url(), Timeouts::PROBE)).unwrap();
    assert_eq!(ps[0].name, "llama3.2:latest");
    let show = rt()
        .block_on(c.show(&h.url(), "llama3.2", Timeouts::PROBE))
        .unwrap();
    assert!(show["details"].is_object());
}

#[test]
fn missing_model_is_a_404_with_ollamas_message() {
    let h = sim(Default::default());
    let e = rt()
        .block_on(Client::default().chat(&h.url(), &chat("nope:7b", true), fast(), |_| {}))
        .unwrap_err();
    match e.kind {
        ErrorKind::Http { status, message } => {
            assert_eq!(status, 404);
            assert_eq!(message, "model 'nope:7b' not found");
        }
        other => panic!("{other:?}"),
    }
}

/// POST `body` to `path` on the simulated host: the status, the content type
/// and the `error` text of the reply.
fn post_raw(url: &str, path: &str, body: &str) -> (u16, String, String) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    rt().block_on(async {
        let r = http
            .post(format!("{url}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let v: serde_json::Value = r.json().await.unwrap();
        let error = v["error"]
            .as_str()
            .unwrap_or("<no error field>")
            .to_string();
        (status, kind, error)
    })
}

#[test]
fn malformed_bodies_are_a_400_with_ollamas_error() {
    let h = sim(Default::default());
    let url = h.url();
    let cases = [
        (
            "/api/chat",
            "{not json",
            "invalid JSON body: key must be a string",
        ),
        ("/api/chat", "", "missing request body"),
        (
            "/api/generate",
            r#"{"model": 5, "prompt": "p"}"#,
            "invalid JSON body: invalid type: integer `5`, expected a string",
        ),
        (
            "/api/chat",
            r#"{"model": "llama3.2", "messages": "hi"}"#,
            "invalid JSON body: invalid type: string \"hi\", expected a sequence",
        ),
        (
            "/api/generate",
            r#"{"model": "llama3.2", "options": {"num_ctx": "big"}}"#,
            "invalid options: invalid type: string \"big\", expected u64",
        ),
        (
            "/api/embed",
            r#"{"model": "llama3.2", "input": [1, 2]}"#,
            "invalid JSON body: invalid input type",
        ),
        (
            "/api/embeddings",
            "[",
            "invalid JSON body: EOF while parsing a list",
        ),
        (
            "/api/show",
            "null",
            "invalid JSON body: invalid type: null, expected struct ShowRequest",
        ),
        (
            "/sim/config",
            "[1]",
            "invalid JSON body: invalid type: sequence, expected a map",
        ),
        (
            "/sim/config",
            r#"{"capacity": "two"}"#,
            "invalid type: string \"two\", expected u32",
        ),
    ];
    for (path, body, error) in cases {
        let (status, kind, got) = post_raw(&url, path, body);
        assert_eq!(status, 400, "{path} {body:?}: {got}");
        assert_eq!(kind, "application/json", "{path} {body:?}");
        assert!(got.starts_with(error), "{path} {body:?}: {got:?}");
    }
    // Unknown fields are no error, and the host still answers.
    let (status, _, got) = post_raw(
        &url,
        "/api/chat",
        r#"{"model": "llama3.2", "stream": false, "think": true, "tools": [],
            "messages": [{"role": "user", "content": "hi", "images": []}],
            "options": {"temperature": 0.1, "num_predict": -1}}"#,
    );
    assert_eq!((status, got.as_str()), (200, "<no error field>"));
    assert_eq!(h.stats().completed, 1);
    assert_eq!(
        h.config(),
        SimConfig::default(),
        "a refused patch changes nothing"
    );
}

#[test]
fn error_line_inside_a_200_stream_is_an_error() {
    let h = sim(SimConfig {
        fault: Fault::ErrorLine,
        ..Default::default()
    });
    let e = rt()
        .block_on(Client::default().chat(&h.url(), &chat("llama3.2", true), fast(), |_| {}))
        .unwrap_err();
    assert!(
        matches!(&e.kind, ErrorKind::Model { message } if message.contains("middle of the stream")),
        "{e:?}"
    );
}

#[test]
fn http_500_and_dropped_connection() {
    let h = sim(SimConfig {
        fault: Fault::Http500,
        ..Default::default()
    });
    let e = rt()
        .block_on(Client::default().chat(&h.url(), &chat("llama3.2", true), fast(), |_| {}))
        .unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::Http { status: 500, .. }),
        "{e:?}"
    );
    let h = sim(SimConfig {
        fault: Fault::Drop,
        ..Default::default()
    });
    let e = rt()
        .block_on(Client::default().chat(&h.url(), &chat("llama3.2", true), fast(), |_| {}))
        .unwrap_err();
    assert!(
        matches!(
            e.kind,
            ErrorKind::Reset {
                after_first_token: true,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn hang_hits_the_idle_timeout() {
    let h = sim(SimConfig {
        fault: Fault::Hang,
        ..Default::default()
    });
    let e = rt()
        .block_on(Client::default().chat(&h.url(), &chat("llama3.2", true), fast(), |_| {}))
        .unwrap_err();
    // The first-token limit (500 ms) ended the wait, not the total (10 s):
    // that one would have been `Deadline`.
    assert!(matches!(e.kind, ErrorKind::NoFirstToken { .. }), "{e:?}");
    assert_eq!(h.stats().max_in_flight, 1);
}

#[test]
fn silence_mid_stream_hits_the_idle_timeout() {
    // 1 token per second with a 500 ms idle limit.
    let h = sim(SimConfig {
        tokens_per_sec: 1.0,
        ..Default::default()
    });
    let e = rt()
        .block_on(Client::default().chat(&h.url(), &chat("llama3.2", true), fast(), |_| {}))
        .unwrap_err();
    assert!(matches!(&e.kind, ErrorKind::Stall { .. }), "{e:?}");
}

#[test]
fn connection_refused() {
    let url = format!("http://127.0.0.1:{}", dead_port());
    let e = rt()
        .block_on(Client::default().tags(&url, Timeouts::PROBE))
        .unwrap_err();
    assert!(e.is_unreachable(), "{e:?}");
    assert!(e.to_string().contains(&url));
}

#[test]
fn dead_host_refuses_and_breaks() {
    let h = sim(SimConfig {
        fault: Fault::Die,
        fault_after: 1,
        ..Default::default()
    });
    let c = Client::default();
    rt().block_on(c.chat(&h.url(), &chat("llama3.2", true), fast(), |_| {}))
        .unwrap();
    assert!(rt()
        .block_on(c.chat(&h.url(), &chat("llama3.2", true), fast(), |_| {}))
        .is_err());
    assert!(h.is_dead());
    assert!(rt().block_on(c.tags(&h.url(), Timeouts::PROBE)).is_err());
}
