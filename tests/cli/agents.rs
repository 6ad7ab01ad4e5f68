//! A user's agent files: resolved once when loaded; one that cannot be used is
//! reported in one line naming it, and the built-in agent answers instead.

use serde_json::json;
use synapticllamas::sim::SimConfig;

use crate::support::*;

fn home_with_node() -> (Home, std::sync::Arc<synapticllamas::sim::SimHost>) {
    let a = sim(SimConfig {
        reply_words: 20,
        ..Default::default()
    });
    let home = Home::new();
    home.write_nodes(&node_file(&[json!({"url": a.url(), "name": "a"})]));
    (home, a)
}

#[test]
fn an_override_that_renames_its_agent_is_reported_not_fatal() {
    let (home, _a) = home_with_node();
    // Where a user keeps them: ~/.config/synapticllamas/agents/.
    let dir = home.path().join(".config/synapticllamas/agents");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("researcher.json");
    std::fs::write(
        &file,
        json!({"name": "Investigator", "role": "r", "system_prompt": "Dig.",
               "required_fields": {"context": "string"}, "timeout_secs": 60, "priority": 1})
        .to_string(),
    )
    .unwrap();
    let r = run(&home, &[], "hello there\nwhat is rust\n");
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r.ok();
    assert_eq!(r.stdout.matches("FINAL ANSWER").count(), 2, "{}", r.stdout);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains(&file.display().to_string()))
        .collect();
    assert_eq!(lines.len(), 1, "reported once, at load:\n{}", r.stderr);
    assert!(
        lines[0].contains("`Investigator`") && lines[0].contains("the built-in Researcher is used"),
        "{}",
        lines[0]
    );
}

#[test]
fn a_broken_agent_file_is_named_and_the_directory_read_again_when_it_changes() {
    let (home, _a) = home_with_node();
    let dir = home.path().join("agents");
    std::fs::create_dir(&dir).unwrap();
    let critic = dir.join("critic.json");
    let editor = dir.join("editor.json");
    std::fs::write(&critic, b"{ not json").unwrap();
    let mut c = command(&home, &[]);
    c.env("SYNAPTICLLAMAS_AGENTS", &dir);
    let mut s = Session::spawn(c);
    s.send("hello there\nwhat is rust\n");
    s.until("Type 'metrics'", std::time::Duration::from_secs(60));
    s.until("Type 'metrics'", std::time::Duration::from_secs(60));
    // The directory changes while the shell runs: the critic is fixed, the
    // editor broken. The next query reads it again (and only then).
    std::fs::write(
        &critic,
        json!({"name": "Critic", "role": "r", "system_prompt": "Be harsh. Reply {\"verdict\": \"...\"}",
               "required_fields": {"verdict": "string"}, "timeout_secs": 60, "priority": 1})
        .to_string(),
    )
    .unwrap();
    std::fs::write(&editor, b"[]").unwrap();
    s.send("hello again\n");
    s.until("Type 'metrics'", std::time::Duration::from_secs(60));
    let (_out, err, code) = s.finish();
    assert_eq!(code, 0, "{err}");
    let naming = |f: &std::path::Path| -> Vec<String> {
        err.lines()
            .filter(|l| l.contains(&f.display().to_string()))
            .map(String::from)
            .collect()
    };
    let c = naming(&critic);
    assert_eq!(c.len(), 1, "the broken critic is reported once:\n{err}");
    assert!(c[0].contains("line 1"), "{}", c[0]);
    assert!(c[0].contains("the built-in Critic is used"), "{}", c[0]);
    let e = naming(&editor);
    assert_eq!(e.len(), 1, "the changed directory was read again:\n{err}");
    assert!(e[0].contains("the built-in Editor is used"), "{}", e[0]);
}

/// A built-in agent's file with some of its keys replaced (as a user would
/// copy it into their agents directory and edit it).
fn edited_builtin(stem: &str, changes: serde_json::Value) -> String {
    let path = format!("{}/agents/{stem}.json", env!("CARGO_MANIFEST_DIR"));
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, x) in changes.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

#[test]
fn an_agent_files_timeout_bounds_that_agent_only() {
    // Two hosts slow enough that a whole reply takes about 2 s.
    let slow = || {
        sim(SimConfig {
            reply_words: 200,
            tokens_per_sec: 100.0,
            ..Default::default()
        })
    };
    let (a, b) = (slow(), slow());
    // Distributed: the Researcher and the Critic run at once, each on its host.
    let home = nodes_home(&[&a, &b], json!({"mode": "distributed"}));
    let dir = home.path().join("agents");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("critic.json"),
        edited_builtin("critic", json!({"timeout_secs": 1})),
    )
    .unwrap();
    let mut c = command(&home, &[]);
    c.env("SYNAPTICLLAMAS_AGENTS", &dir);
    // The session's timeout is a minute: only the Critic's own bound can stop it.
    let r = run_with(c, "timeout 60\nWhy is the sky blue?\n");
    assert_eq!(r.code, 1, "an answer without its Critic is incomplete");
    r.out_has("FINAL ANSWER");
    assert!(
        r.stderr.contains("Query incomplete: Critic missing"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("Critic") && l.contains("1.0s")),
        "the Critic should have stopped at its own 1 s bound:\n{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("is suspect") && !r.stderr.contains("cooled down"),
        "the agent's own bound is not the node's fault:\n{}",
        r.stderr
    );
    assert!(
        !r.stderr
            .lines()
            .any(|l| l.contains("Researcher failed") || l.contains("Editor failed")),
        "the other agents keep the session's timeout:\n{}",
        r.stderr
    );
}

/// Two hosts on which a whole reply takes about 2 s, as the user's cluster,
/// in distributed mode (the Researcher and the Critic at once).
fn slow_cluster() -> (Home, Vec<std::sync::Arc<synapticllamas::sim::SimHost>>) {
    let slow = || {
        sim(SimConfig {
            reply_words: 200,
            tokens_per_sec: 100.0,
            ..Default::default()
        })
    };
    let (a, b) = (slow(), slow());
    let home = nodes_home(&[&a, &b], json!({"mode": "distributed"}));
    (home, vec![a, b])
}

#[test]
fn a_file_named_after_one_agent_that_names_another_replaces_neither() {
    let (home, _hosts) = slow_cluster();
    let dir = home.path().join("agents");
    std::fs::create_dir(&dir).unwrap();
    // Researcher.json defines a Critic whose own bound (1 s) is shorter than
    // its reply: were it used, the answer would lack its Critic.
    let misnamed = dir.join("Researcher.json");
    std::fs::write(
        &misnamed,
        edited_builtin("critic", json!({"timeout_secs": 1})),
    )
    .unwrap();
    let broken = dir.join("critic.json");
    std::fs::write(&broken, b"{ not json").unwrap();
    let mut c = command(&home, &[]);
    c.env("SYNAPTICLLAMAS_AGENTS", &dir);
    let r = run_with(c, "timeout 60\nWhy is the sky blue?\n");
    r.ok().out_has("FINAL ANSWER");
    assert!(!r.stderr.contains("Critic missing"), "{}", r.stderr);
    let m = lines_naming(&r, &misnamed.display().to_string());
    assert_eq!(m.len(), 1, "reported once:\n{}", r.stderr);
    for says in [
        "names its agent `Critic`",
        "ignored",
        "the built-in Researcher is used",
        "the built-in Critic is used",
    ] {
        assert!(m[0].contains(says), "{:?} lacks {says:?}", m[0]);
    }
    let b = lines_naming(&r, &broken.display().to_string());
    assert_eq!(b.len(), 1, "{}", r.stderr);
    assert!(b[0].contains("the built-in Critic is used"), "{}", b[0]);
}

#[test]
fn a_broken_files_warning_names_the_definition_in_use() {
    let (home, _a) = home_with_node();
    let dir = home.path().join("agents");
    std::fs::create_dir(&dir).unwrap();
    let broken = dir.join("critic.json");
    std::fs::write(&broken, b"[]").unwrap();
    let mine = dir.join("my_critic.json");
    std::fs::write(&mine, edited_builtin("critic", json!({"priority": 6}))).unwrap();
    let mut c = command(&home, &[]);
    c.env("SYNAPTICLLAMAS_AGENTS", &dir);
    let r = run_with(c, "hello there\n");
    r.ok().out_has("FINAL ANSWER");
    let b = lines_naming(&r, &broken.display().to_string());
    assert_eq!(b.len(), 1, "{}", r.stderr);
    assert!(
        b[0].contains(&format!("the Critic from {} is used", mine.display())),
        "{}",
        b[0]
    );
    assert!(!r.stderr.contains("built-in Critic"), "{}", r.stderr);
}

#[test]
fn an_agent_file_that_is_a_fifo_or_too_large_is_named() {
    let (home, _a) = home_with_node();
    let dir = home.path().join("agents");
    std::fs::create_dir(&dir).unwrap();
    let fifo = dir.join("critic.json");
    mkfifo(&fifo);
    let big = dir.join("editor.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    let mut c = command(&home, &[]);
    c.env("SYNAPTICLLAMAS_AGENTS", &dir);
    let r = run_with_bound(c, "hello there\n");
    r.ok().out_has("FINAL ANSWER");
    for (path, says) in [
        (&fifo, "is a named pipe (FIFO), not a regular file; ignored; the built-in Critic is used"),
        (&big, "is 5.0 MiB, more than an agent file may be (4.0 MiB); not read; ignored; the built-in Editor is used"),
    ] {
        let l = lines_naming(&r, &path.display().to_string());
        assert_eq!(l.len(), 1, "{}", r.stderr);
        assert!(l[0].contains(says), "{:?} lacks {says:?}", l[0]);
    }
}

#[test]
fn an_agent_file_with_a_byte_order_mark_is_read() {
    let (home, _a) = home_with_node();
    let dir = home.path().join("agents");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("critic.json");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(edited_builtin("critic", json!({"priority": 6})).as_bytes());
    std::fs::write(&file, bytes).unwrap();
    let mut c = command(&home, &[]);
    c.env("SYNAPTICLLAMAS_AGENTS", &dir);
    let r = run_with(c, "hello there\n");
    r.ok().out_has("FINAL ANSWER");
    let l = lines_naming(&r, &file.display().to_string());
    assert_eq!(l.len(), 1, "{}", r.stderr);
    assert!(l[0].contains("byte-order mark; read anyway"), "{}", l[0]);
    assert!(!r.stderr.contains("ignored"), "{}", r.stderr);
}
