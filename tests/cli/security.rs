//! Security defaults: simulated hosts listen on loopback unless told otherwise,
//! node URLs with schemes other than http/https are refused without a connection,
//! the Redis password from the settings file is never printed, files are created
//! private, and no child process is started through a shell.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use clap::Parser;
use serde_json::json;
use synapticllamas::cli::{Cli, Sub};

use crate::support::*;

/// Socket inodes of `pid`'s open file descriptors.
pub fn socket_inodes(pid: u32) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    rd.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(String::from)
        })
        .collect()
}

/// (local address, remote address, state) of `pid`'s IPv4 TCP sockets, as hex
/// fields of /proc/PID/net/tcp (state 0A = listen, 01 = established).
pub fn tcp_sockets(pid: u32) -> Vec<(String, String, String)> {
    let inodes = socket_inodes(pid);
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 9 && inodes.iter().any(|i| i == f[9]) {
                out.push((f[1].to_string(), f[2].to_string(), f[3].to_string()));
            }
        }
    }
    out
}

#[test]
fn sim_serve_binds_loopback_unless_told_otherwise() {
    // The flag's default...
    let cli = Cli::try_parse_from(["synapticllamas", "sim-serve"]).unwrap();
    let Some(Sub::SimServe(args)) = cli.sub else {
        panic!("sim-serve did not parse")
    };
    assert_eq!(args.bind.to_string(), "127.0.0.1");
    // ...and what the process really listens on.
    let home = Home::new();
    let mut c = command(&home, &["sim-serve", "--port", "0"]);
    c.stdin(Stdio::null()).stdout(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let pid = child.id();
    let sockets = tcp_sockets(pid);
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("listening on http://127.0.0.1:"), "{line:?}");
    let listening: Vec<_> = sockets.iter().filter(|s| s.2 == "0A").collect();
    assert!(!listening.is_empty(), "no listening socket: {sockets:?}");
    for (local, _, _) in listening {
        assert!(
            local.starts_with("0100007F:"),
            "listens on {local} (hex), not 127.0.0.1"
        );
    }
    // `--simulate N` hosts are on loopback too.
    let r = run(&home, &["--simulate", "2"], "nodes\n");
    r.ok();
    let urls: Vec<&str> = r
        .stdout
        .split_whitespace()
        .filter(|w| w.starts_with("http://"))
        .collect();
    assert_eq!(urls.len(), 2, "{}", r.stdout);
    assert!(
        urls.iter().all(|u| u.starts_with("http://127.0.0.1:")),
        "{urls:?}"
    );
}

/// A listener on 127.0.0.1 that nobody accepts on: the kernel queues every
/// connection made to it, so `connections_made` counts them exactly once the
/// program has exited, with no waiting.
fn quiet_listener() -> (u16, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    (l.local_addr().unwrap().port(), l)
}

fn connections_made(l: &TcpListener) -> usize {
    l.set_nonblocking(true).unwrap();
    let mut n = 0;
    loop {
        match l.accept() {
            Ok(_) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return n,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn other_schemes_are_refused_without_a_connection() {
    let (port, listener) = quiet_listener();
    let home = Home::new();
    let urls = [
        format!("ftp://127.0.0.1:{port}"),
        format!("FTP://127.0.0.1:{port}"),
        format!("gopher://127.0.0.1:{port}"),
        format!("ws://127.0.0.1:{port}"),
        format!("file://127.0.0.1:{port}/etc/passwd"),
        "file:///etc/passwd".to_string(),
        format!("unix://127.0.0.1:{port}"),
    ];
    let script: String = urls.iter().map(|u| format!("add {u} --force\n")).collect();
    let r = run(&home, &[], &script);
    r.failed();
    for u in &urls {
        let scheme = u.split("://").next().unwrap().to_ascii_lowercase();
        assert!(
            r.stderr
                .contains(&format!("scheme `{scheme}` is not supported")),
            "{u}: {}",
            r.stderr
        );
    }
    assert_eq!(
        r.stderr.matches("❌ add:").count(),
        urls.len(),
        "{}",
        r.stderr
    );
    // The same from the command line (refused before anything runs).
    let r = run(&home, &["--add-node", &urls[0]], "nodes\n");
    assert_eq!(r.code, 2, "{}", r.stderr);
    r.err_has("scheme `ftp` is not supported");
    // Both runs have exited: any connection they made is in the queue.
    assert_eq!(connections_made(&listener), 0, "something connected");
    assert!(
        !home.nodes_path().exists() || home.node_urls().is_empty(),
        "{:?}",
        home.node_urls()
    );
}

const SECRET: &str = "s3cr3t-PW-qzxv";
const SECRET_NUMBER: i64 = 987_654_321;

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "{what} printed the password:\n{text}"
    );
    assert!(
        !text.contains(&SECRET_NUMBER.to_string()),
        "{what} printed the (numeric) password:\n{text}"
    );
}

#[test]
fn redis_password_is_never_printed() {
    let a = sim(Default::default());
    let home = Home::new();
    home.write_nodes(&node_file(&[json!({"url": a.url(), "name": "sim"})]));
    let settings = json!({
        "redis_logging_enabled": true,
        // Loopback with nobody listening: the password is used, never answered.
        "redis_host": "127.0.0.1",
        "redis_port": dead_port(),
        "redis_password": SECRET,
        "mode": "standard",
    });
    home.write_settings(serde_json::to_string_pretty(&settings).unwrap().as_bytes());
    let saved = home.path().join("saved.json");
    let script = format!(
        "help\nstatus\nnodes\nhealth\nmetrics\nhello there\nmetrics\nmetrics --json\n\
         benchmark\nredis on\nredis off\nrag on\nverbose on\ncollab on\nrefine 0\n\
         hello again\nquality 0.5\nstrategy auto\nmode standard\nsave {}\nremove nobody\n\
         distributed task\nrpc list\ndashboard\nredis bogus\nhelp redis\n?\nexit\n",
        saved.display()
    );
    // The settings, not the scrubbed environment, name the Redis here.
    let mut c = command(&home, &[]);
    c.env_remove("SYNAPTICLLAMAS_REDIS_URL");
    let r = run_with(c, &script);
    assert!(
        r.stderr.contains("Redis at redis://127.0.0.1:"),
        "{}",
        r.stderr
    );
    assert_no_secret("a session (stdout)", &r.stdout);
    assert_no_secret("a session (stderr)", &r.stderr);
    assert!(r.stdout.contains("SYSTEM STATUS") && r.stdout.contains("FINAL ANSWER"));
    assert_no_secret("save FILE", &std::fs::read_to_string(&saved).unwrap());
    // The password is kept in the file, though.
    assert_eq!(home.settings()["redis_password"], SECRET);
    for args in [
        &["-i", "hello there"][..],
        &["--help"],
        &["--version"],
        &["--simulate", "1", "-i", "hi"],
    ] {
        let r = run(&home, args, "");
        assert_no_secret(&format!("{args:?} (stdout)"), &r.stdout);
        assert_no_secret(&format!("{args:?} (stderr)"), &r.stderr);
    }
    // A settings file the program cannot read must not echo a password either:
    // one of the wrong type, and one where another key is at fault.
    for bad in [
        json!({"redis_password": SECRET_NUMBER}),
        json!({"redis_password": [SECRET]}),
        json!({"redis_password": {"value": SECRET}}),
        json!({"redis_password": SECRET, "redis_port": "x"}),
        json!({"redis_password": SECRET, "quality_threshold": 7}),
    ] {
        home.write_settings(serde_json::to_string_pretty(&bad).unwrap().as_bytes());
        let r = run(&home, &[], "status\nhelp\n");
        r.err_has(".synapticllamas.json");
        assert_no_secret(&format!("a bad file {bad} (stderr)"), &r.stderr);
        assert_no_secret(&format!("a bad file {bad} (stdout)"), &r.stdout);
    }
    // Not printed from a malformed file either.
    home.write_settings(format!("{{\"redis_password\": \"{SECRET}\" \"x\": 1}}").as_bytes());
    let r = run(&home, &[], "status\n");
    assert_no_secret("a file with a syntax error", &r.stderr);
}

#[test]
fn files_the_shell_creates_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    run(
        &home,
        &[],
        &format!("refine 2\nadd 127.0.0.1:{} --force\n", dead_port()),
    )
    .ok();
    for p in [home.settings_path(), home.nodes_path()] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", p.display());
    }
    // A mode the user chose is kept on rewrite.
    std::fs::set_permissions(home.settings_path(), std::fs::Permissions::from_mode(0o640)).unwrap();
    run(&home, &[], "refine 3\n").ok();
    let mode = std::fs::metadata(home.settings_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
}

/// Every child process must be spawned with an argv, never through a shell. There
/// is no process spawning in src/ yet (model sharding will start llama-server);
/// this guards the rule for when there is.
#[test]
fn no_child_process_is_started_through_a_shell() {
    let shell_spawn = regex::Regex::new(
        r#"Command::new\(\s*"(/bin/|/usr/bin/)?(sh|bash|dash|zsh|ksh|cmd|cmd\.exe|powershell|pwsh)"\s*\)|\.args?\(\s*(\[|&\[|vec!\[)?\s*"(-c|/C)""#,
    )
    .unwrap();
    let spawn = regex::Regex::new(r"(process::)?Command::new\(").unwrap();
    let mut spawn_sites = 0;
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let started = Instant::now();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                spawn_sites += spawn.find_iter(&text).count();
                if let Some(m) = shell_spawn.find(&text) {
                    panic!(
                        "{}: a child process through a shell: `{}`",
                        p.display(),
                        m.as_str()
                    );
                }
            }
        }
    }
    eprintln!(
        "process spawn sites in src/: {spawn_sites} (none through a shell) [{:?}]",
        started.elapsed()
    );
}
