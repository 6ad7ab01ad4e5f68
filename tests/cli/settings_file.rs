//! The settings file is the user's: one bad value costs only that key (and stays
//! in the file), concurrent sessions keep each other's changes, and a file
//! that is a symbolic link, read-only or owned by someone else is kept so.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use serde_json::{json, Value};

use crate::support::*;

#[test]
fn one_bad_value_costs_only_its_key() {
    let home = Home::new();
    let text = "{\"strategy\":\"weird\",\"model\":\"mistral\",\n \"agent_timeout\":10,\"quality_threshold\":5}";
    home.write_settings(text.as_bytes());
    let path = home.settings_path().display().to_string();
    let r = run(&home, &[], "status\nrefine 2\n");
    r.ok()
        .out_has("| Model              | mistral")
        .out_has("| Agent Timeout      | 300s")
        .out_has("✅ Refinement rounds set to 2");
    let warnings: Vec<&str> = r.stderr.lines().filter(|l| l.contains(&path)).collect();
    assert_eq!(warnings.len(), 3, "one line per bad key:\n{}", r.stderr);
    for (key, words) in [
        ("strategy", "\"weird\" is not one of \"single_node\""),
        (
            "agent_timeout",
            "10 is not a whole number of seconds from 30 to 86400",
        ),
        ("quality_threshold", "5 is not a number from 0.0 to 1.0"),
    ] {
        let w = warnings
            .iter()
            .find(|l| l.contains(&format!("key `{key}`")))
            .unwrap_or_else(|| panic!("no warning for {key}:\n{}", r.stderr));
        assert!(w.contains(words), "{w}");
        assert!(w.contains("stays in the file"), "{w}");
    }
    assert!(!r.stderr.contains("expected u32"), "{}", r.stderr);
    assert!(!r.stderr.contains("not saved"), "{}", r.stderr);
    // The bad values stay until the user sets those keys; the new one is saved.
    let s = home.settings();
    assert_eq!(s["strategy"], "weird");
    assert_eq!(s["agent_timeout"], 10);
    assert_eq!(s["quality_threshold"], 5);
    assert_eq!(s["model"], "mistral");
    assert_eq!(s["refinement_rounds"], 2);
    run(&home, &[], "quality 0.7\nstrategy auto\n").ok();
    let s = home.settings();
    assert_eq!(s["quality_threshold"], 0.7, "setting the key replaces it");
    assert_eq!(s["strategy"], Value::Null);
    assert_eq!(s["agent_timeout"], 10, "an untouched bad value stays");
}

#[test]
fn an_empty_file_is_empty_settings() {
    let home = Home::new();
    home.write_settings(b"");
    let r = run(&home, &[], "status\nrefine 2\n");
    r.ok()
        .err_has("the file is empty; using the default settings")
        .out_has("✅ Refinement rounds set to 2");
    assert_eq!(home.settings()["refinement_rounds"], 2);
    assert!(!r.stderr.contains("not saved"), "{}", r.stderr);
}

#[test]
fn concurrent_sessions_keep_each_others_changes() {
    let home = Home::new();
    home.write_settings(br#"{"refinement_rounds": 1, "max_quality_retries": 2, "mine": "kept"}"#);
    // Both sessions have read the file before either saves.
    let mut a = Session::spawn(command(&home, &[]));
    let mut b = Session::spawn(command(&home, &[]));
    for s in [&mut a, &mut b] {
        s.send("status\n");
        s.until("SYSTEM STATUS", std::time::Duration::from_secs(20));
    }
    a.send("refine 4\n");
    a.until(
        "Refinement rounds set to 4",
        std::time::Duration::from_secs(20),
    );
    b.send("qretries 4\n");
    b.until(
        "Max quality retries set to 4",
        std::time::Duration::from_secs(20),
    );
    assert_eq!(a.finish().2, 0);
    assert_eq!(b.finish().2, 0);
    let s = home.settings();
    assert_eq!(
        s["refinement_rounds"], 4,
        "A's change survived B's save: {s}"
    );
    assert_eq!(s["max_quality_retries"], 4);
    assert_eq!(s["mine"], "kept");
}

#[test]
fn linked_files_are_written_through_the_link() {
    let home = Home::new();
    let repo = home.path().join("dotfiles");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("settings.json"), br#"{"model": "m"}"#).unwrap();
    std::fs::write(repo.join("nodes.json"), node_file(&[])).unwrap();
    std::os::unix::fs::symlink("dotfiles/settings.json", home.settings_path()).unwrap();
    std::os::unix::fs::symlink(repo.join("nodes.json"), home.nodes_path()).unwrap();
    let dead = dead_port();
    run(
        &home,
        &[],
        &format!("refine 3\nadd 127.0.0.1:{dead} --force\n"),
    )
    .ok();
    for link in [home.settings_path(), home.nodes_path()] {
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{} was replaced by a regular file",
            link.display()
        );
    }
    let s: Value =
        serde_json::from_slice(&std::fs::read(repo.join("settings.json")).unwrap()).unwrap();
    assert_eq!(s["refinement_rounds"], 3, "the link target has the change");
    let n: Value =
        serde_json::from_slice(&std::fs::read(repo.join("nodes.json")).unwrap()).unwrap();
    assert_eq!(n["nodes"][0]["url"], format!("http://127.0.0.1:{dead}"));
    let leftovers: Vec<_> = std::fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_read_only_file_is_refused_and_the_change_kept_for_the_session() {
    let home = Home::new();
    let before = br#"{"refinement_rounds": 1}"#;
    home.write_settings(before);
    std::fs::set_permissions(home.settings_path(), std::fs::Permissions::from_mode(0o444)).unwrap();
    home.write_nodes(&node_file(&[]));
    std::fs::set_permissions(home.nodes_path(), std::fs::Permissions::from_mode(0o444)).unwrap();
    let dead = dead_port();
    let r = run(
        &home,
        &[],
        &format!("refine 3\nstatus\nadd 127.0.0.1:{dead} --force\n"),
    );
    r.failed()
        .err_has("read-only")
        .out_has("⚠️  Refinement rounds set to 3 — this session only, not saved")
        .out_has("| Refinement Rounds  | 3")
        .out_has(&format!(
            "⚠️  Added node: ollama-127-0-0-1-{dead} (http://127.0.0.1:{dead}) — this session only, not saved"
        ));
    assert!(
        !r.stdout.contains('✅'),
        "no ✅ for an unsaved change:\n{}",
        r.stdout
    );
    let path = home.settings_path().display().to_string();
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains(&path) && l.contains("read-only")),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read(home.settings_path()).unwrap(), before);
    assert_eq!(std::fs::read(home.nodes_path()).unwrap(), node_file(&[]));
    for p in [home.settings_path(), home.nodes_path()] {
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o444);
    }
}

#[test]
fn mode_and_owner_are_kept() {
    let home = Home::new();
    home.write_settings(&serde_json::to_vec(&json!({"model": "m"})).unwrap());
    std::fs::set_permissions(home.settings_path(), std::fs::Permissions::from_mode(0o640)).unwrap();
    // As root (CI), the file belongs to another user, as a user's file does when
    // root runs the shell for them.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::chown(home.settings_path(), Some(4321), Some(4322)).unwrap();
    }
    run(&home, &[], "refine 2\n").ok();
    let m = std::fs::metadata(home.settings_path()).unwrap();
    assert_eq!(m.mode() & 0o777, 0o640);
    if root {
        assert_eq!((m.uid(), m.gid()), (4321, 4322), "the owner changed");
    } else {
        eprintln!("mode_and_owner_are_kept: not root, the owner part is not checked");
    }
    assert_eq!(home.settings()["refinement_rounds"], 2);
}
