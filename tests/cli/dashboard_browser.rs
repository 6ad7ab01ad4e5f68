//! The dashboard page in a real headless Chromium, driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`): the three sections show the
//! simulated nodes, counters change live without a reload, and a screenshot
//! is saved (to `$SYNAPTICLLAMAS_SCREENSHOT_DIR` if set, else a temp dir).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synapticllamas::ollama::Client;

use synapticllamas::dashboard::BackendStatus;
use synapticllamas::report::Metrics;

use crate::dashboard::{backend, coordinator, http, request, start, two_node_hub};
use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver on 127.0.0.1 with one browser session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Browser {
        for bin in [CHROMIUM, DRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the dashboard's browser test needs Debian's `chromium` and \
                 `chromium-driver` (apt-get install chromium chromium-driver; .ci/run does this)"
            );
        }
        let port = dead_port();
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !b
            .call("GET", "/status", Value::Null)
            .map(|v| v["ready"] == true)
            .unwrap_or(false)
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver never became ready on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--no-proxy-server",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                format!("--user-data-dir={}", b._profile.path().display()),
            ]}
        }}});
        let v = b
            .call("POST", "/session", caps)
            .unwrap_or_else(|e| panic!("Chromium does not start under chromedriver: {e}"));
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    /// One WebDriver command; the reply's `value`, or the error it reports.
    fn call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        rt().block_on(async {
            let c = http();
            let req = match method {
                "GET" => c.get(&url),
                "DELETE" => c.delete(&url),
                _ => c.post(&url).json(&body),
            };
            let r = req
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(v["value"].clone())
            } else {
                Err(format!("{status}: {}", v["value"]))
            }
        })
    }

    fn cmd(&self, method: &str, what: &str, body: Value) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        self.call(method, &path, body)
            .unwrap_or_else(|e| panic!("WebDriver {what}: {e}"))
    }

    fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    /// Wait until `script` returns something truthy (a string, true, a number ≠ 0).
    fn wait_for(&self, script: &str, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.eval(script);
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            assert!(Instant::now() < deadline, "the page never showed {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), Value::Null);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn page_shows_three_sections_and_updates_live_in_chromium() {
    let (_hosts, hub, na, nb) = two_node_hub(0.6);
    hub.set_coordinator(Some(coordinator(
        4242,
        &["127.0.0.1:50052", "127.0.0.1:50053"],
    )));
    hub.set_backends(vec![
        backend(
            "127.0.0.1:50052",
            BackendStatus::Up,
            45,
            Some(1.0),
            Some(1234.0),
        ),
        backend(
            "127.0.0.1:50053",
            BackendStatus::Down,
            3,
            Some(0.67),
            Some(1189.0),
        ),
    ]);
    let client = Client::default();
    rt().block_on(async {
        assert!(request(&client, &hub, &na, "llama3.2").await);
        assert!(request(&client, &hub, &nb, "qwen2.5:0.5b").await);
        synapticllamas::nodes::health::probe_all(
            &client,
            &[na.clone(), nb.clone()],
            true,
            &synapticllamas::nodes::health::NoLoad,
        )
        .await;
    });
    hub.routing(
        "Researcher → alpha (box-a)",
        "model loaded in VRAM, host idle",
    );
    hub.task_started("Researcher", "alpha");
    let d = start(&hub);

    let br = Browser::launch();
    br.cmd("POST", "url", json!({"url": d.url()}));
    let names = br.wait_for(
        "const r=[...document.querySelectorAll('#nodes tr')].map(r=>r.dataset.node);\
         return r.length===2 ? r.join(',') : null",
        "the two nodes",
    );
    assert_eq!(names, "alpha,beta");
    let sections = br.eval(
        "return ['nodes-section','coordinator-section','backends-section']\
         .map(id=>document.getElementById(id).querySelector('h2').textContent)",
    );
    assert!(
        sections[0].as_str().unwrap().contains("Ollama nodes"),
        "{sections}"
    );
    assert!(
        sections[1].as_str().unwrap().contains("Coordinator"),
        "{sections}"
    );
    assert!(
        sections[2].as_str().unwrap().contains("RPC backends"),
        "{sections}"
    );
    let text = br.eval("return document.body.innerText").to_string();
    for s in [
        "box-a",
        "127.0.0.1:50052",
        "4242",
        "model loaded in VRAM",
        "Researcher",
    ] {
        assert!(text.contains(s), "the page lacks {s:?}: {text}");
    }
    let cell =
        "return document.querySelector('#nodes tr[data-node=\"alpha\"] td.requests').textContent";
    assert_eq!(br.eval(cell), "1");

    // A query's requests land on alpha: the page follows, without a reload.
    br.eval("window.__no_reload = 7; return 1");
    rt().block_on(async {
        for _ in 0..3 {
            assert!(request(&client, &hub, &na, "llama3.2").await);
        }
    });
    hub.task_finished("Researcher");
    hub.task_started("Critic", "beta");
    hub.notice("node gamma is down (connection refused)");
    hub.set_metrics(Metrics {
        total_execution_time: 2.41,
        pipeline: "standard".into(),
        agent_count: 3,
        hosts_used: 2,
        ..Default::default()
    });
    br.wait_for(&format!("{cell} === '4'"), "alpha's 4 requests");
    br.wait_for(
        "return document.querySelector('#tasks tr[data-task=\"Critic\"]') !== null",
        "the Critic task",
    );
    br.wait_for(
        "return document.getElementById('metrics').textContent.includes('2.410')",
        "the last query's metrics",
    );
    br.wait_for(
        "return document.getElementById('notices').textContent.includes('gamma is down')",
        "the notice",
    );
    assert_eq!(br.eval("return window.__no_reload"), 7, "the page reloaded");
    assert_eq!(
        br.eval("return document.getElementById('conn').textContent"),
        "live"
    );

    let png = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(br.cmd("GET", "screenshot", Value::Null).as_str().unwrap())
            .expect("WebDriver sends the screenshot as base64")
    };
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the screenshot is a PNG");
    let kept;
    let dir = match std::env::var_os("SYNAPTICLLAMAS_SCREENSHOT_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            kept = tempfile::tempdir().unwrap();
            kept.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!(
        "dashboard screenshot: {} ({} bytes)",
        path.display(),
        png.len()
    );
    drop(br);
    rt().block_on(d.stop());
}
