//! Spawning the real binary with a temporary home and a piped script, and
//! simulated Ollama hosts served from the test process.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use synapticllamas::sim::{SimConfig, SimHost};

pub const BIN: &str = env!("CARGO_BIN_EXE_synapticllamas");

/// A temporary home directory holding the two files.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn settings_path(&self) -> PathBuf {
        self.path().join(".synapticllamas.json")
    }
    pub fn nodes_path(&self) -> PathBuf {
        self.path().join(".synapticllamas_nodes.json")
    }
    pub fn write_settings(&self, text: &[u8]) {
        std::fs::write(self.settings_path(), text).unwrap();
    }
    pub fn write_nodes(&self, text: &[u8]) {
        std::fs::write(self.nodes_path(), text).unwrap();
    }
    pub fn settings(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.settings_path()).expect("settings file written"))
            .expect("settings file is JSON")
    }
    pub fn nodes(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.nodes_path()).expect("node file written"))
            .expect("node file is JSON")
    }
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["url"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert_eq!(
            self.code, 1,
            "expected exit 1\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn out_has(&self, s: &str) -> &Self {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
    #[track_caller]
    pub fn err_has(&self, s: &str) -> &Self {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// The command with a scrubbed environment pointing at `home`.
pub fn command(home: &Home, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    scrub(&mut c, home);
    c
}

/// A clean environment for the binary: a temporary home, no colour, no
/// start-up scan, and loopback as the only subnet to scan.
pub fn scrub(c: &mut Command, home: &Home) {
    scrub_env(c, home);
    c.env("SYNAPTICLLAMAS_SUBNETS", "127.77.77.0/30")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
}

/// The environment part of [`scrub`] (the lab tests name their own subnet and
/// set up the standard streams themselves).
pub fn scrub_env(c: &mut Command, home: &Home) {
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("SYNAPTICLLAMAS_HOME", home.path())
        .env("NO_COLOR", "1")
        // Never let a test scan anything but what it names.
        .env("SOLLOL_AUTO_DISCOVER", "false")
        // Nor reach a Redis it did not start (port 1: nothing listens there).
        .env("SYNAPTICLLAMAS_REDIS_URL", "redis://127.0.0.1:1/0");
}

/// Run the binary with `script` piped into it.
pub fn run(home: &Home, args: &[&str], script: &str) -> Run {
    run_with(command(home, args), script)
}

pub fn run_with(mut c: Command, script: &str) -> Run {
    let mut child = c.spawn().expect("binary runs");
    let mut stdin = child.stdin.take().unwrap();
    let bytes = script.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// `run`, for inputs that once hung the binary or made it eat memory: the
/// binary gets at most 2 GiB of address space and `limit` to finish; past
/// that it is killed and the test fails with what it printed so far.
pub fn run_bounded(home: &Home, args: &[&str], script: &str, limit: std::time::Duration) -> Run {
    run_bounded_with(command(home, args), script, limit)
}

/// [`run_bounded`] for a command already set up, within a minute.
pub fn run_with_bound(c: Command, script: &str) -> Run {
    run_bounded_with(c, script, std::time::Duration::from_secs(60))
}

/// [`run_bounded`] for a command already set up.
pub fn run_bounded_with(mut c: Command, script: &str, limit: std::time::Duration) -> Run {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(|| {
            let cap = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().expect("binary runs");
    let mut stdin = child.stdin.take().unwrap();
    let bytes = script.as_bytes().to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let collect = |mut from: Box<dyn Read + Send>| {
        let text = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (text, reader)
    };
    let (out, out_reader) = collect(Box::new(child.stdout.take().unwrap()));
    let (err, err_reader) = collect(Box::new(child.stderr.take().unwrap()));
    let text = |t: &Arc<std::sync::Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&t.lock().unwrap()).into_owned()
    };
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the binary did not finish within {limit:?} (killed)\nstdout:\n{}\nstderr:\n{}",
                text(&out),
                text(&err)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    out_reader.join().unwrap();
    err_reader.join().unwrap();
    Run {
        stdout: text(&out),
        stderr: text(&err),
        code: status.code().unwrap_or(-1),
    }
}

/// A named pipe (FIFO) at `path` that nobody writes: opening it for reading
/// blocks until a writer comes.
pub fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(st.success(), "mkfifo {}", path.display());
}

/// The stderr lines that name `what`.
pub fn lines_naming<'a>(r: &'a Run, what: &str) -> Vec<&'a str> {
    r.stderr.lines().filter(|l| l.contains(what)).collect()
}

/// One runtime for every simulated host the tests start.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A simulated host on 127.0.0.1 (one listener per port, 0 = any).
pub fn sim_ports(ports: &[u16], cfg: SimConfig) -> Arc<SimHost> {
    rt().block_on(SimHost::start(
        "test",
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        ports,
        cfg,
    ))
    .expect("simulated host starts")
}

pub fn sim(cfg: SimConfig) -> Arc<SimHost> {
    sim_ports(&[0], cfg)
}

/// A node-file entry for a simulated host, with a host_id for locality.
pub fn entry(url: &str, name: &str, host_id: &str) -> Value {
    serde_json::json!({"url": url, "name": name, "priority": 0, "host_id": host_id})
}

pub fn node_file(entries: &[Value]) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({ "nodes": entries })).unwrap()
}

/// A port on 127.0.0.1 with nothing listening.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running shell fed line by line, whose stdout and stderr lines arrive on channels.
pub struct Session {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    pub err_lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub seen_err: Vec<String>,
}

/// Lines of `from`, sent on a channel until it ends.
fn line_channel(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Read `rx` until a line contains `marker`, keeping every line in `seen`.
fn until_in(
    rx: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    marker: &str,
    limit: std::time::Duration,
) -> String {
    let deadline = std::time::Instant::now() + limit;
    let mut out = String::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                out.push_str(&l);
                out.push('\n');
                seen.push(l.clone());
                if l.contains(marker) {
                    return out;
                }
            }
            Err(_) => panic!(
                "no {marker:?} within {limit:?}; {what} so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

impl Session {
    pub fn spawn(mut c: Command) -> Session {
        let mut child = c.spawn().expect("binary runs");
        let lines = line_channel(child.stdout.take().unwrap());
        let err_lines = line_channel(child.stderr.take().unwrap());
        Session {
            child,
            lines,
            err_lines,
            seen: Vec::new(),
            seen_err: Vec::new(),
        }
    }

    pub fn send(&mut self, text: &str) {
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    /// Read stdout until a line contains `marker`; returns everything read.
    pub fn until(&mut self, marker: &str, limit: std::time::Duration) -> String {
        until_in(&self.lines, &mut self.seen, "stdout", marker, limit)
    }

    /// Read stderr until a line contains `marker`; returns everything read.
    pub fn until_err(&mut self, marker: &str, limit: std::time::Duration) -> String {
        until_in(&self.err_lines, &mut self.seen_err, "stderr", marker, limit)
    }

    /// Close stdin and wait; (rest of stdout, all of stderr, exit code).
    pub fn finish(mut self) -> (String, String, i32) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        // The reader threads end at EOF; collect until their channels close.
        let mut rest = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(std::time::Duration::from_secs(10)) {
            rest.push(l);
        }
        while let Ok(l) = self
            .err_lines
            .recv_timeout(std::time::Duration::from_secs(10))
        {
            self.seen_err.push(l);
        }
        (
            rest.join("\n"),
            self.seen_err.join("\n"),
            status.code().unwrap_or(-1),
        )
    }
}

/// The simulated chunk heads ("Part i of N. Focus", "Part i of N: Title"), in
/// the order they appear in the answer.
pub fn chunk_order(answer: &str, total: usize) -> Vec<usize> {
    let mut found: Vec<(usize, usize)> = (1..=total)
        .flat_map(|n| {
            // "Part 2 of 5. Focus" (the original's parts) or "Part 2 of 5: Title" (planned).
            answer
                .match_indices(&format!("Part {n} of {total}"))
                .filter(|(i, m)| answer[i + m.len()..].starts_with([':', '.']))
                .map(|(i, _)| (i, n))
                .collect::<Vec<_>>()
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

/// The Python of the venv `scripts/setup.sh` makes, with the official `ollama`
/// and `openai` client libraries: `$SYNAPTICLLAMAS_PYENV/bin/python`, default
/// `~/.cache/synapticllamas/pyenv/bin/python`.
pub fn pyenv_python() -> PathBuf {
    let venv = std::env::var_os("SYNAPTICLLAMAS_PYENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("SYNAPTICLLAMAS_CACHE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    dirs::home_dir()
                        .unwrap_or_default()
                        .join(".cache/synapticllamas")
                })
                .join("pyenv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `bash scripts/setup.sh` first",
        python.display()
    );
    python
}

/// The five-part research question, long-form whatever the `longform` setting says.
pub const LONG: &str = "!long Explain the history of the printing press in Europe";
/// A question that asks for depth: `longform auto` writes it in parts.
pub const REPORT: &str =
    "Write a comprehensive report on the history of the printing press in Europe";

/// A simulated host that streams `tokens_per_sec` with replies of about 60 words.
pub fn paced_at(tokens_per_sec: f64) -> SimConfig {
    SimConfig {
        tokens_per_sec,
        reply_words: 60,
        ..Default::default()
    }
}

/// A host fast enough for many queries, slow enough to overlap requests.
pub fn paced() -> SimConfig {
    paced_at(400.0)
}

/// A home whose node file lists `hosts` as node-1.. on physical hosts h1..,
/// with `settings` as the settings file.
pub fn nodes_home(hosts: &[&Arc<SimHost>], settings: Value) -> Home {
    let home = Home::new();
    let entries: Vec<Value> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| entry(&h.url(), &format!("node-{}", i + 1), &format!("h{}", i + 1)))
        .collect();
    home.write_nodes(&node_file(&entries));
    home.write_settings(settings.to_string().as_bytes());
    home
}

/// `settings` with the keys of `extra` added (or replaced).
pub fn with_keys(mut settings: Value, extra: Value) -> Value {
    if let (Some(s), Some(extra)) = (settings.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    settings
}

/// The JSON a run printed on stdout (`-i`), or a failure that shows both streams.
#[track_caller]
pub fn json_of(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        )
    })
}

/// A count from the environment (how many runs, trials, lines), else `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a small deterministic generator for test schedules.
pub struct Rng(pub u64);

impl Rng {
    pub fn seeded(default: u64) -> Rng {
        let seed = std::env::var("SYNAPTICLLAMAS_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default);
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
