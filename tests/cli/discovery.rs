//! Discovery in the project's own network lab (namespaces, no link to the real
//! network): `mode distributed` scans the lab's /24 from inside the lab.

use std::process::Stdio;

use crate::lab::Lab;
use crate::support::*;

/// A lab of `hosts` namespaces; the ones listed in `serving` run a simulated
/// Ollama host on the given ports.
fn lab(hosts: usize, serving: &[(usize, &[u16])]) -> (std::sync::MutexGuard<'static, ()>, Lab) {
    // One lab at a time: scans time out on a loaded machine, and the results must not depend on load.
    let guard = crate::lab::one_at_a_time();
    let mut lab = Lab::new(hosts).expect("the network lab needs root and `ip netns` (iproute2)");
    for &(i, ports) in serving {
        let ns = lab.host_ns(i).to_string();
        let ip = lab.host_ip(i);
        let mut c = lab.command_in(&ns, BIN);
        c.args(["sim-serve", "--bind", &ip.to_string()]);
        for p in ports {
            c.args(["--port", &p.to_string()]);
        }
        c.stdout(Stdio::null()).stderr(Stdio::null());
        lab.spawn_in(&ns, c).expect("sim-serve starts");
        for &p in ports {
            lab.wait_port(&ns, ip, p).expect("sim-serve listens");
        }
    }
    (guard, lab)
}

/// Run the shell inside the lab's LAN namespace (address 10.77.0.1).
fn run_in_lab(lab: &Lab, home: &Home, args: &[&str], script: &str) -> Run {
    let mut c = lab.command_in(lab.lan_ns(), BIN);
    c.args(args);
    scrub(&mut c, home);
    // Inside the lab the local /24 is the lab's own, and the start-up scan is wanted.
    c.env_remove("SOLLOL_AUTO_DISCOVER")
        .env_remove("SYNAPTICLLAMAS_SUBNETS");
    run_with(c, script)
}

fn summary(r: &Run) -> &str {
    r.stdout
        .lines()
        .find(|l| l.starts_with("🔍 Discovery:"))
        .unwrap_or_else(|| panic!("no summary line\n{}\n{}", r.stdout, r.stderr))
}

#[test]
fn mode_distributed_finds_three_hosts_and_saves_them() {
    let (_one, lab) = lab(3, &[(1, &[11434]), (2, &[11434]), (3, &[11434])]);
    let home = Home::new();
    let r = run_in_lab(&lab, &home, &[], "mode distributed\nnodes\n");
    r.ok();
    let s = summary(&r);
    assert!(s.contains("probed 254 addresses"), "{s}");
    assert!(s.contains("found 3 Ollama nodes (3 new)"), "{s}");
    assert!(s.contains("3 nodes on 3 physical hosts"), "{s}");
    assert!(s.contains("in parallel across 3 physical hosts"), "{s}");
    r.err_has("Scanning 10.77.0.0/24");
    let mut urls = home.node_urls();
    urls.sort();
    assert_eq!(
        urls,
        vec![
            "http://10.77.0.11:11434",
            "http://10.77.0.12:11434",
            "http://10.77.0.13:11434"
        ]
    );
    assert_eq!(home.nodes()["nodes"][0]["name"], "ollama-10-77-0-11");
    assert_eq!(home.settings()["mode"], "distributed");
}

#[test]
fn manual_entries_survive_and_share_their_host() {
    let (_one, lab) = lab(2, &[(1, &[11434, 11435]), (2, &[11434])]);
    let home = Home::new();
    home.write_nodes(&node_file(&[
        serde_json::json!({"url": "http://10.77.0.11:11435", "name": "manual", "priority": 4}),
    ]));
    let r = run_in_lab(&lab, &home, &[], "discover\nnodes\n");
    r.ok().out_has("3 nodes on 2 physical hosts");
    let urls = home.node_urls();
    assert_eq!(urls.len(), 3, "{urls:?}");
    assert_eq!(
        urls[0], "http://10.77.0.11:11435",
        "the manual entry is kept first"
    );
    assert_eq!(home.nodes()["nodes"][0]["priority"], 4);
    let manual = r.stdout.lines().find(|l| l.contains("| manual ")).unwrap();
    assert!(manual.contains("10.77.0.11"), "{manual}");
}

#[test]
fn loopback_and_own_address_collapse() {
    let (_one, mut lab) = lab(1, &[]);
    // An Ollama on the shell's own machine, listening on every address.
    let lan = lab.lan_ns().to_string();
    let mut c = lab.command_in(&lan, BIN);
    c.args(["sim-serve", "--bind", "0.0.0.0", "--port", "11434"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.spawn_in(&lan, c).unwrap();
    lab.wait_port(&lan, lab.lan_ip(), 11434).unwrap();
    let home = Home::new();
    home.write_nodes(&node_file(&[
        serde_json::json!({"url": "http://127.0.0.1:11434", "name": "local"}),
    ]));
    let r = run_in_lab(&lab, &home, &[], "discover 10.77.0.0/24\nnodes\n");
    r.ok()
        .out_has("1 node on 1 physical host")
        .out_has("this machine");
    assert!(
        summary(&r).contains("found 1 Ollama node (0 new)"),
        "{}",
        summary(&r)
    );
    assert_eq!(home.node_urls(), vec!["http://127.0.0.1:11434"]);
}

#[test]
fn empty_subnet_leaves_the_file_as_it_was() {
    let (_one, lab) = lab(2, &[]);
    let home = Home::new();
    let before = node_file(&[
        serde_json::json!({"url": "http://10.77.0.99:11434", "name": "elsewhere", "x": 1}),
    ]);
    home.write_nodes(&before);
    let r = run_in_lab(&lab, &home, &[], "discover 10.77.0.0/24\n");
    r.ok();
    assert!(
        summary(&r).contains("found 0 Ollama nodes (0 new)"),
        "{}",
        summary(&r)
    );
    assert_eq!(std::fs::read(home.nodes_path()).unwrap(), before);
}

#[test]
fn typed_twice_no_duplicates_and_startup_scan() {
    let (_one, lab) = lab(2, &[(1, &[11434]), (2, &[11434])]);
    let home = Home::new();
    let r = run_in_lab(&lab, &home, &[], "mode distributed\nmode distributed\n");
    r.ok();
    assert!(home.nodes_path().exists(), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(home.node_urls().len(), 2);
    // The saved mode scans again at start-up, and finds nothing new.
    let r = run_in_lab(&lab, &home, &[], "nodes\n");
    r.ok()
        .out_has("found 2 Ollama nodes (0 new)")
        .out_has("2 nodes on 2 physical hosts");
    assert_eq!(home.node_urls().len(), 2);
}

#[test]
fn invalid_cidr_scans_nothing() {
    let (_one, lab) = lab(1, &[(1, &[11434])]);
    let home = Home::new();
    let r = run_in_lab(
        &lab,
        &home,
        &[],
        "discover 10.77.0.0/33\ndiscover 10.0.0.0/8\n",
    );
    r.failed()
        .err_has("`10.77.0.0/33` is not a valid CIDR")
        .err_has("larger than a /16");
    assert!(!r.stderr.contains("Scanning"));
    assert!(!home.nodes_path().exists());
}

#[test]
fn slash_16_finds_the_hosts() {
    let (_one, lab) = lab(2, &[(1, &[11434]), (2, &[11434])]);
    let home = Home::new();
    let r = run_in_lab(&lab, &home, &[], "discover 10.77.0.0/16\n");
    r.ok().err_has("65534 addresses");
    assert!(
        summary(&r).contains("found 2 Ollama nodes"),
        "{}",
        summary(&r)
    );
    // The scan left ~65k unresolved neighbour entries; the kernel's table is shared by
    // every namespace and is cleaned lazily after a namespace goes, so flush it now
    // rather than let the next lab start with a full table.
    let _ = lab
        .command_in(lab.lan_ns(), "ip")
        .args(["neigh", "flush", "all"])
        .status();
}
