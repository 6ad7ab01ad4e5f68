//! What `redis on` and start-up say about Redis: every line true, one line
//! per verdict, and `status` agreeing with it. A URL that cannot be used turns
//! nothing on; a database the server does not have and a server that is not
//! Redis are named as such (not "unreachable", not a parser's words); `redis
//! on` while connected says so once.

use std::process::Command;

use serde_json::json;
use synapticllamas::sim::SimConfig;

use crate::redis_support::RedisServer;
use crate::support::*;

fn with_url(home: &Home, url: &str) -> Command {
    let mut c = command(home, &[]);
    c.env("SYNAPTICLLAMAS_REDIS_URL", url);
    c
}

/// The `| Redis … |` row of `status`.
fn redis_row(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with("| Redis "))
        .unwrap_or_else(|| panic!("no Redis row in status:\n{stdout}"))
}

/// The stderr lines about Redis.
fn redis_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("Redis")).collect()
}

#[test]
fn an_unusable_redis_url_turns_nothing_on_and_says_why() {
    let home = Home::new();
    let r = run_with(
        with_url(&home, "redis://127.0.0.1:99999/0"),
        "redis on\nstatus\n",
    );
    r.failed();
    assert!(!r.stdout.contains("Redis ON"), "{}", r.stdout);
    assert_eq!(
        redis_lines(&r.stderr),
        ["❌ redis: SYNAPTICLLAMAS_REDIS_URL: not a usable Redis URL (invalid port number); expected redis://[:PASSWORD@]HOST[:PORT][/DB] — Redis stays off"],
        "{}",
        r.stderr
    );
    assert!(redis_row(&r.stdout).contains("| off ("), "{}", r.stdout);
    assert!(
        !home.settings_path().exists(),
        "the setting was not changed: {:?}",
        std::fs::read_to_string(home.settings_path())
    );
}

#[test]
fn a_database_the_server_does_not_have_is_named_not_unreachable() {
    let server = RedisServer::start();
    let home = Home::new();
    let url = format!("redis://127.0.0.1:{}/99", server.port);
    let r = run_with(with_url(&home, &url), "redis on\nstatus\n");
    r.failed().out_has("✅ Redis ON (saved)");
    let at = format!("{url} (from SYNAPTICLLAMAS_REDIS_URL)");
    let lines = redis_lines(&r.stderr);
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(
        lines[0].starts_with(&format!(
            "❌ Redis at {at}: the server refused database 99 (DB index is out of range) — "
        )),
        "{}",
        lines[0]
    );
    assert!(!r.stderr.contains("unreachable"), "{}", r.stderr);
    assert!(
        redis_row(&r.stdout).contains(&format!(
            "error — {at}: the server refused database 99 (DB index is out of range); retrying"
        )),
        "{}",
        r.stdout
    );
}

#[test]
fn a_server_that_is_not_redis_is_named_as_such() {
    let http = sim(SimConfig::default());
    let home = Home::new();
    let url = format!("redis://127.0.0.1:{}/0", http.addrs()[0].port());
    let r = run_with(with_url(&home, &url), "redis on\nstatus\n");
    r.failed().out_has("✅ Redis ON (saved)");
    let at = format!("{url} (from SYNAPTICLLAMAS_REDIS_URL)");
    let lines = redis_lines(&r.stderr);
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(
        lines[0].starts_with(&format!(
            "❌ Redis at {at}: not a Redis server (its reply is not in the Redis protocol) — check the host and port"
        )),
        "{}",
        lines[0]
    );
    assert!(!r.stderr.contains("Parse error"), "{}", r.stderr);
    assert!(
        redis_row(&r.stdout).contains(&format!("error — {at}: not a Redis server")),
        "{}",
        r.stdout
    );
}

#[test]
fn redis_on_while_connected_says_so_in_one_line() {
    let server = RedisServer::start();
    let at = format!(
        "redis://127.0.0.1:{}/0 (from SYNAPTICLLAMAS_REDIS_URL)",
        server.port
    );
    // Saved as on: start-up connects; `redis on` adds no second connect line.
    let home = Home::new();
    home.write_settings(
        json!({"redis_logging_enabled": true})
            .to_string()
            .as_bytes(),
    );
    let r = run_with(with_url(&home, &server.url()), "redis on\nstatus\n");
    r.ok()
        .out_has(&format!("✅ Redis ON (saved): already connected — {at}"));
    assert_eq!(
        redis_lines(&r.stderr),
        [format!("🔗 Redis connected: {at}")],
        "{}",
        r.stderr
    );
    assert!(
        redis_row(&r.stdout).contains(&format!("connected — {at}")),
        "{}",
        r.stdout
    );

    // Off, then `redis on` twice: connected once, then told it is.
    let home = Home::new();
    let r = run_with(with_url(&home, &server.url()), "redis on\nredis on\n");
    r.ok()
        .out_has("✅ Redis ON (saved): host leases, node health")
        .out_has(&format!("✅ Redis ON (saved): already connected — {at}"));
    assert_eq!(
        redis_lines(&r.stderr),
        [format!("🔗 Redis connected: {at}")],
        "{}",
        r.stderr
    );
}
