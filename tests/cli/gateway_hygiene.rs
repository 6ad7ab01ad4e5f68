//! The gateway's record and its connections: every reply — an unknown path,
//! a wrong method, a missing key — is a log line and a `/metrics` count; a
//! client trickling its request head, or a connection left idle, is closed
//! after `--header-timeout`; beyond `--max-connections` a new connection waits
//! until one closes; a declared body over `--max-body-mb` is a 413 at once;
//! a field of the wrong JSON type is a 400 in the API's own shape.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::gateway_support::*;
use crate::support::{paced_at, sim};

/// A raw connection to the gateway at `url` (`http://127.0.0.1:PORT`).
fn connect(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://");
    TcpStream::connect(addr).expect("the gateway accepts a connection")
}

/// How a connection ended while the client waited on it.
#[derive(Debug, PartialEq)]
enum Ended {
    /// The server closed it (end of stream, or a reset).
    Closed,
    /// Still open when the test's own deadline passed.
    StillOpen,
}

/// Read (and drop) whatever arrives until the server closes the connection;
/// `each` runs between reads (to trickle bytes, say). The deadline is the
/// test's patience, far beyond the timeout being tested; it is never the claim.
fn until_closed(
    s: &mut TcpStream,
    deadline: Duration,
    mut each: impl FnMut(&mut TcpStream),
) -> Ended {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let until = Instant::now() + deadline;
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => return Ended::Closed,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ended::Closed,
        }
        each(s);
    }
    Ended::StillOpen
}

/// One whole response read from a raw connection (head and `Content-Length` body).
fn read_response(s: &mut TcpStream, limit: Duration) -> (String, Value) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                let body =
                    serde_json::from_slice(&got[end + 4..end + 4 + len]).unwrap_or(Value::Null);
                return (head, body);
            }
        }
        let n = s.read(&mut buf).expect("the response arrives");
        assert!(
            n > 0,
            "closed before a whole response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn every_reply_is_logged_and_counted_unknown_paths_wrong_methods_and_refusals_included() {
    let a = quick_sim(8);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let mut g = Served::start(&home, &["--api-key", "sesame"]);
    let u = g.url.clone();
    let code = |args: &[&str]| {
        let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        curl(&a).1
    };
    assert_eq!(code(&[&format!("{u}/no/such/path")]), "404");
    assert_eq!(
        code(&[&format!("{u}/v1/made-up-{}", "x".repeat(50))]),
        "404"
    );
    assert_eq!(
        code(&[
            "-H",
            "Authorization: Bearer sesame",
            &format!("{u}/api/chat")
        ]),
        "405"
    );
    assert_eq!(code(&[&format!("{u}/api/tags")]), "401");
    assert_eq!(
        code(&[
            "-H",
            "x-api-key: nope",
            &format!("{u}/v1/messages"),
            "-d",
            "{}"
        ]),
        "401"
    );
    g.until_err("GET /no/such/path 404", Duration::from_secs(10));
    g.until_err("GET /api/chat 405", Duration::from_secs(10));
    g.until_err("GET /api/tags 401", Duration::from_secs(10));
    g.until_err("POST /v1/messages 401", Duration::from_secs(10));
    let (_, metrics) = curl(&[
        "-H",
        "Authorization: Bearer sesame",
        &format!("{u}/metrics"),
    ]);
    for want in [
        // Two made-up paths, one bounded label.
        "synapticllamas_gateway_requests_total{route=\"unmatched\",model=\"-\",node=\"-\",status=\"404\"} 2",
        "synapticllamas_gateway_requests_total{route=\"/api/chat\",model=\"-\",node=\"-\",status=\"405\"} 1",
        "synapticllamas_gateway_requests_total{route=\"/api/tags\",model=\"-\",node=\"-\",status=\"401\"} 1",
        "synapticllamas_gateway_requests_total{route=\"/v1/messages\",model=\"-\",node=\"-\",status=\"401\"} 1",
    ] {
        assert!(metrics.contains(want), "no {want:?} in:\n{metrics}");
    }
    assert!(
        !metrics.contains("made-up"),
        "paths are not labels:\n{metrics}"
    );
}

#[test]
fn a_client_trickling_its_head_and_an_idle_connection_are_closed() {
    let a = quick_sim(8);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let g = Served::start(&home, &["--header-timeout", "1"]);
    // One header byte every 200 ms, never ending the head.
    let mut slow = connect(&g.url);
    slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    let mut sent = 0;
    let ended = until_closed(&mut slow, Duration::from_secs(60), |s| {
        if s.write_all(b"a").is_ok() {
            sent += 1;
        }
    });
    assert_eq!(
        ended,
        Ended::Closed,
        "the gateway kept a trickling client ({sent} bytes sent)"
    );
    // A keep-alive connection that asked once, then went quiet.
    let mut idle = connect(&g.url);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut idle, Duration::from_secs(30));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(
        until_closed(&mut idle, Duration::from_secs(60), |_| {}),
        Ended::Closed,
        "the gateway kept an idle connection"
    );
    // Still serving; both were counted.
    let (_, metrics) = curl(&[&format!("{}/metrics", g.url)]);
    assert!(
        metrics.contains("synapticllamas_gateway_header_timeouts_total 2"),
        "{metrics}"
    );
}

#[test]
fn a_reply_that_outlasts_the_header_timeout_is_not_cut() {
    // About 60 tokens at 20 a second: three times the header timeout.
    let slow = sim(paced_at(20.0));
    let home = home_with(&[(&slow, "slow", "box-a")]);
    let g = Served::start(&home, &["--header-timeout", "1"]);
    for stream in ["true", "false"] {
        let (ok, body) = curl(&[
            "-N",
            &format!("{}/api/generate", g.url),
            "-d",
            &format!(r#"{{"model":"llama3.2","prompt":"hi","stream":{stream}}}"#),
        ]);
        assert!(ok, "curl failed (stream {stream}): {body}");
        let last: Value = serde_json::from_str(body.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("stream {stream}: not JSON ({e}): {body}"));
        assert_eq!(last["done"], true, "stream {stream}: {body}");
    }
}

#[test]
fn beyond_the_connection_limit_a_new_connection_waits_until_one_closes() {
    let a = quick_sim(8);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let mut g = Served::start(&home, &["--max-connections", "2"]);
    let first = connect(&g.url);
    let _second = connect(&g.url);
    let mut third = connect(&g.url);
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    g.until_err("waits: 2 connections are open", Duration::from_secs(30));
    // The gateway said it holds the third unread: nothing can have come back.
    third.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let early = third.read(&mut buf);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the third connection was answered while two were open: {early:?}"
    );
    third.set_nonblocking(false).unwrap();
    drop(first);
    let (head, _) = read_response(&mut third, Duration::from_secs(30));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(third);
    let (_, metrics) = curl(&[&format!("{}/metrics", g.url)]);
    assert!(
        metrics.contains("synapticllamas_gateway_connections_waited_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let a = quick_sim(8);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let g = Served::start(&home, &["--max-body-mb", "1"]);
    for (path, shape) in [
        ("/api/generate", "ollama"),
        ("/v1/chat/completions", "openai"),
        ("/v1/messages", "anthropic"),
    ] {
        let mut s = connect(&g.url);
        // The head alone: not a byte of the body is ever sent.
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: 999999999999\r\n\r\n"
        )
        .unwrap();
        let (head, body) = read_response(&mut s, Duration::from_secs(30));
        assert!(head.starts_with("HTTP/1.1 413"), "{path}: {head}");
        let msg = match shape {
            "ollama" => body["error"].as_str(),
            "openai" => body["error"]["message"].as_str(),
            _ => {
                assert_eq!(body["error"]["type"], "request_too_large", "{body}");
                body["error"]["message"].as_str()
            }
        }
        .unwrap_or_default();
        assert!(
            msg.contains("too large") && msg.contains("999999999999"),
            "{path}: {body}"
        );
    }
}

#[test]
fn fields_of_the_wrong_json_type_are_a_400_in_each_apis_shape() {
    let a = quick_sim(8);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let g = Served::start(&home, &[]);
    let post = |path: &str, body: &str| -> (String, Value) {
        let (_, out) = curl(&[
            "-w",
            "\n%{http_code}",
            &format!("{}{path}", g.url),
            "-d",
            body,
        ]);
        let (body, code) = out.rsplit_once('\n').unwrap();
        (
            code.to_string(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    for (path, body, words) in [
        (
            "/api/generate",
            r#"{"model":"llama3.2","prompt":5}"#,
            "prompt must be a string, not a number",
        ),
        (
            "/api/chat",
            r#"{"model":"llama3.2","messages":[],"options":"x"}"#,
            "options must be an object, not a string",
        ),
        (
            "/api/chat",
            r#"{"model":"llama3.2","messages":[],"stream":"yes"}"#,
            "stream must be true or false, not a string",
        ),
    ] {
        let (code, v) = post(path, body);
        assert_eq!(
            (code.as_str(), v["error"].as_str()),
            ("400", Some(words)),
            "{path} {body}"
        );
    }
    let (code, v) = post(
        "/v1/chat/completions",
        r#"{"model":"llama3.2","messages":[],"stream":"yes"}"#,
    );
    assert_eq!(code, "400");
    assert_eq!(v["error"]["param"], "stream", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let (code, v) = post(
        "/v1/responses",
        r#"{"model":"llama3.2","input":"hi","max_output_tokens":"lots"}"#,
    );
    assert_eq!(
        (code.as_str(), v["error"]["param"].as_str()),
        ("400", Some("max_output_tokens")),
        "{v}"
    );
    let (code, v) = post(
        "/v1/messages",
        r#"{"model":"llama3.2","messages":"hi","max_tokens":5}"#,
    );
    assert_eq!(code, "400");
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(
        v["error"]["message"], "messages must be a list, not a string",
        "{v}"
    );
    // None of them reached a node.
    assert_eq!(a.stats().requests, 0);
}
