//! The smaller things a user hits: one validator for every name, numbers out of
//! range called so, `~` in paths, and messages that read right.

use synapticllamas::command::COMMANDS;

use crate::support::*;

#[test]
fn every_name_goes_through_one_validator() {
    let home = Home::new();
    run(&home, &[], "refine 2\n").ok();
    let before = std::fs::read(home.settings_path()).unwrap();
    let long = "m".repeat(5000);
    for line in [
        "synthesis a\u{7}b".to_string(),
        "model a\u{7}b".to_string(),
        format!("model {long}"),
        format!("synthesis {long}"),
    ] {
        let r = run(&home, &[], &format!("{line}\n"));
        r.failed().err_has("   Usage: ");
        assert!(
            !r.stdout.contains('\u{7}') && !r.stderr.contains('\u{7}'),
            "{line:?}: the bell reached the terminal"
        );
        assert!(!r.stdout.contains('✅'), "{line:?} was accepted");
        if line.contains('\u{7}') {
            r.err_has("\\u{7}").err_has("control characters");
        } else {
            r.err_has("is 5000 characters long (at most 200)");
            assert!(r.stderr.len() < 1000, "the name is not echoed whole");
        }
        assert_eq!(std::fs::read(home.settings_path()).unwrap(), before);
    }
    run(&home, &[], "synthesis qwen2.5:0.5b\n")
        .ok()
        .out_has("✅ Synthesis model set to: qwen2.5:0.5b");
}

#[test]
fn numbers_out_of_range_are_called_so() {
    let home = Home::new();
    let r = run(&home, &[], "timeout 99999999999999999999\n");
    r.failed()
        .err_has("timeout in seconds must be between 30 and 86400, got 99999999999999999999");
    assert!(!r.stderr.contains("not a whole number"), "{}", r.stderr);
    run(&home, &[], "timeout abc\nrefine -1\n")
        .failed()
        .err_has("`abc` is not a whole number")
        .err_has("refinement rounds must be between 0 and 5, got -1");
}

#[test]
fn negative_zero_quality_is_zero() {
    let home = Home::new();
    let r = run(&home, &[], "quality -0.0\nhelp\n");
    r.ok().out_has("✅ Quality threshold set to 0.00");
    assert!(!r.stdout.contains("-0.00"), "{}", r.stdout);
    let q = home.settings()["quality_threshold"].as_f64().unwrap();
    assert!(q == 0.0 && q.is_sign_positive(), "{q}");
}

#[test]
fn save_and_load_expand_the_home_directory() {
    let home = Home::new();
    let dead = dead_port();
    let r = run(
        &home,
        &[],
        &format!(
            "add 127.0.0.1:{dead} --force\nsave ~/x.json\nremove 127.0.0.1:{dead}\nload ~/x.json\n"
        ),
    );
    let file = home.path().join("x.json");
    r.ok()
        .out_has(&format!("✅ Saved 1 node(s) to {}", file.display()))
        .out_has(&format!("✅ Loaded 1 node(s) from {}", file.display()));
    assert!(file.is_file(), "~ was not expanded");
    assert!(
        !home.path().join("~").exists(),
        "a directory called ~ was made"
    );
    assert_eq!(home.node_urls(), [format!("http://127.0.0.1:{dead}")]);
}

#[test]
fn help_lines_line_up() {
    let home = Home::new();
    let r = run(&home, &[], "help\n");
    r.ok();
    let mut columns = Vec::new();
    for spec in COMMANDS {
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("  {} ", spec.usage)))
            .unwrap_or_else(|| panic!("no help line for {}:\n{}", spec.name, r.stdout));
        let at = line
            .find(spec.help)
            .unwrap_or_else(|| panic!("{line:?} lacks its help text"));
        columns.push((line[..at].chars().count(), spec.name));
    }
    let first = columns[0].0;
    for (col, name) in &columns {
        assert_eq!(
            *col, first,
            "`{name}`'s help starts at column {col}, not {first}"
        );
    }
}

#[test]
fn a_dashboard_port_in_use_is_named_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let home = Home::new();
    let r = run(&home, &[], &format!("dashboard --port {port}\n"));
    r.failed()
        .err_has(&format!("❌ dashboard: cannot listen on 127.0.0.1:{port}"));
    assert!(!r.stderr.contains("dashboard: dashboard:"), "{}", r.stderr);
}

#[test]
fn rpc_discover_does_not_suggest_an_argument_it_does_not_take() {
    // A network namespace of its own with no route: the local subnet cannot be
    // learned, and nothing can leave it. Without `unshare` the binary never runs.
    let home = Home::new();
    let mut c = std::process::Command::new("unshare");
    c.args(["--net", "--", BIN]);
    scrub(&mut c, &home);
    c.env_remove("SYNAPTICLLAMAS_SUBNETS");
    let r = run_with(c, "rpc discover\ndiscover\n");
    assert_eq!(r.code, 1, "{r:?} (needs root for `unshare --net`)");
    let rpc = r
        .stderr
        .lines()
        .find(|l| l.starts_with("❌ rpc discover:"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(
        rpc.contains("no route") && rpc.contains("SYNAPTICLLAMAS_SUBNETS"),
        "{rpc}"
    );
    assert!(
        !rpc.contains("rpc discover 10.") && !rpc.contains("`discover "),
        "{rpc}"
    );
    r.err_has("❌ discover: cannot tell this machine's subnet (no route); give a CIDR, e.g. `discover 10.0.0.0/24`");
}
