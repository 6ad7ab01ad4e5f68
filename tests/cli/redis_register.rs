//! `rpc-register` when its output cannot be written or its reader goes away:
//! no panic, and the key it wrote is deleted on every way out (a signal, the
//! reader of its output gone, the terminal closing), never left for the TTL.
//! `--ttl 0` is refused.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis::Commands;

use crate::redis_support::RedisServer;
use crate::support::*;

/// `rpc-register ADDR --ttl 30` against `server`, stdin closed.
fn register(home: &Home, server: &RedisServer, addr: &str) -> std::process::Command {
    let mut c = command(home, &["rpc-register", addr, "--ttl", "30"]);
    c.env("SYNAPTICLLAMAS_REDIS_URL", server.url())
        .stdin(Stdio::null());
    c
}

/// An address that accepts connections (the worker's rpc-server stand-in).
fn backend() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
    (l, addr)
}

/// The child's exit status within `limit`; killed (by its PID) and a failure
/// naming `what` if it is still running then.
fn ends_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: rpc-register still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rpc_register_refuses_a_ttl_of_0_naming_the_flag() {
    let home = Home::new();
    let mut child = command(&home, &["rpc-register", "127.0.0.1:50052", "--ttl", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = ends_within(&mut child, Duration::from_secs(10), "--ttl 0");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    let first = err.lines().next().unwrap_or("");
    assert!(
        first.contains("--ttl") && first.contains("'0'"),
        "the first line names --ttl and 0: {err}"
    );
}

#[test]
fn rpc_register_with_stderr_on_dev_full_registers_and_unregisters_on_sighup() {
    let server = RedisServer::start();
    let (_listener, addr) = backend();
    let key = format!("sollol:rpc:node:{addr}");
    let home = Home::new();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let mut child = register(&home, &server, &addr)
        .stdout(Stdio::null())
        .stderr(full)
        .spawn()
        .unwrap();
    let mut c = server.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.exists::<_, bool>(&key).unwrap() {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("rpc-register ended ({s}) before registering");
        }
        assert!(Instant::now() < deadline, "never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The terminal that started it closing (SIGTERM and SIGINT: redis.rs).
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let status = ends_within(&mut child, Duration::from_secs(10), "SIGHUP");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!c.exists::<_, bool>(&key).unwrap(), "the key was deleted");
}

/// Read the child's stderr until `enough` holds for the lines so far, then
/// close it (as `head -1` does when it has its line); the lines read.
fn read_then_close(
    child: &mut Child,
    enough: impl Fn(&[String]) -> bool + Send + 'static,
) -> Vec<String> {
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            lines.push(line);
            if enough(&lines) {
                break;
            }
        }
        // The reader is dropped here: the pipe has no reader any more.
        let _ = tx.send(lines);
    });
    rx.recv_timeout(Duration::from_secs(15))
        .expect("the lines waited for within 15 s")
}

#[test]
fn rpc_register_whose_output_reader_goes_away_deletes_its_key_and_ends() {
    let server = RedisServer::start();
    let home = Home::new();
    let mut c = server.conn();

    // `2>&1 | head -1`: one line read, then the pipe is closed.
    let (_l1, addr) = backend();
    let key = format!("sollol:rpc:node:{addr}");
    let mut child = register(&home, &server, &addr)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = read_then_close(&mut child, |l| !l.is_empty());
    let status = ends_within(&mut child, Duration::from_secs(10), "after head -1");
    assert_eq!(status.code(), Some(0), "{status} after {lines:?}");
    assert!(
        !c.exists::<_, bool>(&key).unwrap(),
        "{key} left behind after {lines:?}"
    );

    // The reader goes away once the key is written: deleted at once.
    let (_l2, addr) = backend();
    let key = format!("sollol:rpc:node:{addr}");
    let mut child = register(&home, &server, &addr)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = read_then_close(&mut child, |l| {
        l.last().is_some_and(|l| l.starts_with("✅ Registered"))
    });
    assert!(c.exists::<_, bool>(&key).unwrap(), "registered: {lines:?}");
    let status = ends_within(&mut child, Duration::from_secs(10), "reader gone");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!c.exists::<_, bool>(&key).unwrap(), "{key} left behind");
}
