//! Every command with good and bad arguments, as a user sees them.

use serde_json::json;
use synapticllamas::sim::{Fault, SimConfig};

use crate::support::*;

#[test]
fn setting_commands_print_and_save() {
    let home = Home::new();
    let script = "collab on\nrefine 3\nsynthesis qwen2.5:0.5b\ntimeout 120\nast on\nquality 0.85\nqretries 4\n\
                  strategy single\nmodel llama3.2:1b\nverbose off\nrag on\nredis on\nmode standard\n";
    let r = run(&home, &[], script);
    r.ok()
        .out_has("✅ Collaborative mode ENABLED")
        .out_has("✅ Refinement rounds set to 3")
        .out_has("✅ Synthesis model set to: qwen2.5:0.5b")
        .out_has("✅ Inference timeout set to 120s")
        .out_has("✅ AST Quality Voting ENABLED")
        .out_has("✅ Quality threshold set to 0.85")
        .out_has("✅ Max quality retries set to 4")
        .out_has("✅ Strategy: Single Node")
        .out_has("✅ Model set to: llama3.2:1b")
        .out_has("✅ Switched to Standard Mode")
        .out_has("✅ FlockParser RAG ENABLED (saved)")
        .err_has("No knowledge base yet")
        .out_has("✅ Redis ON (saved)")
        .err_has(
            "⚠️  Redis at redis://127.0.0.1:1/0 (from SYNAPTICLLAMAS_REDIS_URL) is unreachable",
        );
    let s = home.settings();
    assert_eq!(s["collaborative_mode"], true);
    assert_eq!(s["refinement_rounds"], 3);
    assert_eq!(s["synthesis_model"], "qwen2.5:0.5b");
    assert_eq!(s["agent_timeout"], 120);
    assert_eq!(s["ast_voting_enabled"], true);
    assert_eq!(s["quality_threshold"], 0.85);
    assert_eq!(s["max_quality_retries"], 4);
    assert_eq!(s["strategy"], "single_node");
    assert_eq!(s["model"], "llama3.2:1b");
    assert_eq!(s["dashboard_verbose"], false);
    assert_eq!(s["flockparser_enabled"], true);
    assert_eq!(s["redis_logging_enabled"], true);
    assert_eq!(s["mode"], "standard");
    // A second session sees them.
    run(&home, &[], "help\n")
        .ok()
        .out_has("[0.85]")
        .out_has("[single]")
        .out_has("[llama3.2:1b]");
    run(&home, &[], "synthesis none\nstrategy auto\n").ok();
    let s = home.settings();
    assert_eq!(s["synthesis_model"], serde_json::Value::Null);
    assert_eq!(s["strategy"], serde_json::Value::Null);
}

#[test]
fn bad_arguments_print_usage_and_change_nothing() {
    let home = Home::new();
    run(&home, &[], "refine 2\n").ok();
    let before = std::fs::read(home.settings_path()).unwrap();
    for (line, expect) in [
        ("quality nan", "between 0.0 and 1.0"),
        ("quality 1.01", "between 0.0 and 1.0"),
        ("quality -0.1", "between 0.0 and 1.0"),
        ("quality high", "not a number"),
        ("refine 6", "between 0 and 5"),
        ("refine two", "not a whole number"),
        ("timeout 29", "between 30 and 86400"),
        ("qretries 6", "between 0 and 5"),
        ("collab maybe", "expected on or off"),
        ("ast", "expected on or off"),
        ("mode dask", "unknown mode"),
        ("strategy fastest", "unknown strategy"),
        ("distributed sideways", "unknown routing path"),
        ("model", "missing model name"),
        ("model bad;name", "not a valid model name"),
        ("synthesis", "missing model name"),
        ("nodes please", "takes no arguments"),
        ("rpc add", "needs HOST[:PORT]"),
        ("rpc frobnicate", "unknown sub-command"),
        ("add", "missing URL"),
        ("remove", "missing URL or name"),
        ("discover --timeout 0", "between 1 and 60000"),
        ("metrics --yaml", "unexpected"),
    ] {
        let r = run(&home, &[], &format!("{line}\n"));
        r.failed().err_has(expect).err_has("Usage:");
        assert!(r.stdout.is_empty(), "{line}: stdout {:?}", r.stdout);
        assert_eq!(
            std::fs::read(home.settings_path()).unwrap(),
            before,
            "{line} changed the file"
        );
    }
}

#[test]
fn help_lists_every_command_with_values() {
    let home = Home::new();
    let r = run(&home, &[], "help\n");
    r.ok();
    for c in synapticllamas::command::COMMANDS {
        r.out_has(c.usage);
    }
    r.out_has("[off]")
        .out_has("[0.70]")
        .out_has("[300s]")
        .out_has("[llama3.2]");
}

#[test]
fn status_shows_settings_and_counts() {
    let home = Home::new();
    let a = sim(Default::default());
    home.write_nodes(&node_file(&[
        entry(&a.url(), "a", "box-1"),
        entry(
            &format!("http://127.0.0.1:{}", dead_port()),
            "gone",
            "box-2",
        ),
    ]));
    let r = run(&home, &[], "status\n");
    r.ok()
        .out_has("| Ollama Nodes       | 2 ")
        .out_has("| Healthy Nodes      | 1 ")
        .out_has("| Physical Hosts     | 2 ")
        .out_has("| Quality Threshold  | 0.70");
}

#[test]
fn add_probes_canonicalises_and_refuses_duplicates() {
    let home = Home::new();
    let a = sim(Default::default());
    let port = a.addrs()[0].port();
    let dead = dead_port();
    let script = format!(
        "add 127.0.0.1:{port}\nadd http://127.0.0.1:{port}/\nadd 127.0.0.1:{dead}\nadd 127.0.0.1:{dead} --force\nadd ftp://127.0.0.1\nadd bad host\n"
    );
    let r = run(&home, &[], &script);
    r.failed()
        .out_has(&format!(
            "✅ Added node: ollama-127-0-0-1-{port} (http://127.0.0.1:{port})"
        ))
        .err_has("Node already registered")
        .err_has(&format!(
            "Failed to add node: http://127.0.0.1:{dead} is not reachable"
        ))
        .err_has("added anyway (--force)")
        .err_has("scheme `ftp` is not supported");
    assert_eq!(
        home.node_urls(),
        vec![
            format!("http://127.0.0.1:{port}"),
            format!("http://127.0.0.1:{dead}")
        ]
    );
    let n = &home.nodes()["nodes"][0];
    assert_eq!(n["name"], format!("ollama-127-0-0-1-{port}"));
    assert_eq!(n["priority"], 0);
}

#[test]
fn add_refuses_port_0_and_names_an_ipv6_node_like_an_ipv4_one() {
    let home = Home::new();
    let dead = dead_port();
    let r = run(
        &home,
        &[],
        &format!(
            "add 127.0.0.1:0 --force\nadd [::1]:{dead} --force\nadd http://[0:0::1]:{dead} --force\nadd [::1] --force\n"
        ),
    );
    r.failed()
        .out_has(&format!(
            "Added node: ollama-0-0-0-0-0-0-0-1-{dead} (http://[::1]:{dead})"
        ))
        .out_has("Added node: ollama-0-0-0-0-0-0-0-1 (http://[::1]:11434)")
        .err_has(&format!(
            "Node already registered: ollama-0-0-0-0-0-0-0-1-{dead}"
        ));
    let refusal = r
        .stderr
        .lines()
        .find(|l| l.contains("port 0"))
        .unwrap_or_else(|| panic!("port 0 was not refused:\n{}", r.stderr));
    assert!(
        refusal
            .starts_with("❌ add: `127.0.0.1:0`: port 0 is not a port a server can be reached on"),
        "{refusal}"
    );
    assert_eq!(
        home.node_urls(),
        vec![
            format!("http://[::1]:{dead}"),
            "http://[::1]:11434".to_string()
        ]
    );
}

#[test]
fn remove_by_url_or_name() {
    let home = Home::new();
    let (a, b) = (sim(Default::default()), sim(Default::default()));
    home.write_nodes(&node_file(&[
        entry(&a.url(), "first", "h1"),
        entry(&b.url(), "second", "h2"),
    ]));
    let r = run(
        &home,
        &[],
        &format!("remove first\nremove {}\nremove nothing\n", b.url()),
    );
    r.failed()
        .out_has("✅ Removed node: first")
        .out_has("✅ Removed node: second")
        .err_has("❌ Node not found: nothing");
    assert!(home.node_urls().is_empty());
}

#[test]
fn nodes_shows_live_status_and_hosts() {
    let home = Home::new();
    let a = sim_ports(
        &[0, 0],
        SimConfig {
            vram_fraction: 1.0,
            ..Default::default()
        },
    );
    let urls = a.urls();
    home.write_nodes(&node_file(&[
        json!({"url": urls[0], "name": "one"}),
        json!({"url": urls[1], "name": "two"}),
        entry(
            &format!("http://127.0.0.1:{}", dead_port()),
            "dead",
            "elsewhere",
        ),
    ]));
    let r = run(&home, &[], "nodes\n");
    r.ok()
        .out_has("this machine")
        .out_has("elsewhere")
        .out_has("3 nodes on 2 physical hosts");
    let one = r.stdout.lines().find(|l| l.contains("| one ")).unwrap();
    assert!(one.contains("| healthy "), "{one}");
    assert!(one.contains("llama3.2:latest"), "{one}");
    let dead = r.stdout.lines().find(|l| l.contains("| dead ")).unwrap();
    assert!(dead.contains("| cooling"), "{dead}");
}

#[test]
fn health_cools_an_unreachable_node_down_and_keeps_it() {
    let home = Home::new();
    let a = sim(Default::default());
    let dead = format!("http://127.0.0.1:{}", dead_port());
    home.write_nodes(&node_file(&[
        entry(&a.url(), "alive", "h1"),
        entry(&dead, "dead", "h2"),
    ]));
    let r = run(&home, &[], "health\nhealth\nhealth\nnodes\n");
    r.ok().out_has("✅ 1/2 nodes healthy");
    // Nothing listens: cooled at once, the backoff doubling with each failed probe.
    let lines: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("❌ dead"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(
        lines[0].contains("cooling (1 failure; backoff 5s) (kept in the registry)"),
        "{}",
        lines[0]
    );
    assert!(
        lines[2].contains("cooling (3 failures; backoff 20s)"),
        "{}",
        lines[2]
    );
    let row = r.stdout.lines().find(|l| l.contains("| dead ")).unwrap();
    assert!(row.contains("| cooling (4 failures"), "{row}");
    assert_eq!(home.node_urls().len(), 2, "never deleted");
    // A host that comes back is seen as up again.
    a.set_fault(Fault::None, 0);
    run(&home, &[], "health\n").ok().out_has("✅ alive");
}

#[test]
fn simulate_shows_three_hosts_and_writes_nothing() {
    let home = Home::new();
    let r = run(&home, &["--simulate", "3"], "nodes\nhealth\nstatus\n");
    r.ok()
        .out_has("simulated")
        .out_has("3 nodes on 3 physical hosts")
        .out_has("✅ 3/3 nodes healthy");
    assert_eq!(r.stdout.matches("(simulated)").count(), 3 + 1);
    assert!(
        !home.nodes_path().exists(),
        "simulated nodes are never saved"
    );
    assert!(!home.settings_path().exists());
}
