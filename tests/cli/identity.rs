//! Node identity is the canonical URL (OLLAMA_HOST rules, a trailing slash
//! ignored): `remove` takes exactly the node it names, `add` refuses only the
//! same URL, and `load FILE` merges into the registry and says what it did.

use serde_json::json;
use synapticllamas::sim::SimConfig;

use crate::support::*;

/// Three nodes on three loopback addresses (one physical host, three nodes).
fn three_boxes(home: &Home) {
    home.write_nodes(&node_file(&[
        json!({"url": "http://127.0.0.1:21434", "name": "box1", "priority": 0}),
        json!({"url": "http://127.0.0.2:21434", "name": "box2", "priority": 0}),
        json!({"url": "http://127.0.0.3:21434", "name": "box3", "priority": 0}),
    ]));
}

fn names(home: &Home) -> Vec<String> {
    home.nodes()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn remove_takes_exactly_the_node_it_names() {
    let home = Home::new();
    three_boxes(&home);
    let r = run(&home, &[], "remove 127.0.0.2:21434\n");
    r.ok()
        .out_has("✅ Removed node: box2 (http://127.0.0.2:21434)");
    assert_eq!(names(&home), ["box1", "box3"]);

    let r = run(&home, &[], "remove http://127.0.0.3:21434/\n");
    r.ok()
        .out_has("✅ Removed node: box3 (http://127.0.0.3:21434)");
    assert_eq!(names(&home), ["box1"]);

    // Another port on the same address is not this node.
    let r = run(&home, &[], "remove 127.0.0.1:11434\n");
    r.failed().err_has("❌ Node not found: 127.0.0.1:11434");
    assert_eq!(names(&home), ["box1"]);
    run(&home, &[], "remove box1\n")
        .ok()
        .out_has("✅ Removed node: box1");
    assert!(names(&home).is_empty());
}

#[test]
fn a_name_two_nodes_share_removes_nothing() {
    let home = Home::new();
    home.write_nodes(&node_file(&[
        json!({"url": "http://127.0.0.1:21434", "name": "gpu"}),
        json!({"url": "http://127.0.0.2:21434", "name": "gpu"}),
    ]));
    let r = run(&home, &[], "remove gpu\n");
    r.failed()
        .err_has("`gpu` names 2 nodes")
        .err_has("http://127.0.0.1:21434")
        .err_has("http://127.0.0.2:21434");
    assert_eq!(home.node_urls().len(), 2);
}

#[test]
fn add_refuses_only_the_same_url() {
    let a = sim(SimConfig::default());
    let port = a.url().rsplit(':').next().unwrap().to_string();
    let home = Home::new();
    let r = run(
        &home,
        &[],
        &format!(
            "add 127.0.0.1:{port}\nadd http://127.0.0.1:{port}/\nadd 127.0.0.2:{port} --force\n"
        ),
    );
    r.failed()
        .out_has(&format!("✅ Added node: ollama-127-0-0-1-{port}"))
        .err_has(&format!(
            "❌ Node already registered: ollama-127-0-0-1-{port} (http://127.0.0.1:{port})"
        ))
        .out_has(&format!("✅ Added node: ollama-127-0-0-2-{port}"))
        .err_has("on the same physical host as");
    assert_eq!(
        home.node_urls(),
        [
            format!("http://127.0.0.1:{port}"),
            format!("http://127.0.0.2:{port}")
        ]
    );
}

#[test]
fn load_merges_and_says_what_it_did() {
    let home = Home::new();
    home.write_nodes(&node_file(&[
        json!({"url": "http://127.0.0.1:21001", "name": "only-at-home", "rack": "r1"}),
        json!({"url": "http://127.0.0.1:21002", "name": "old-name"}),
    ]));
    let other = home.path().join("team.json");
    std::fs::write(
        &other,
        node_file(&[
            json!({"url": "http://127.0.0.1:21002", "name": "new-name", "priority": 3}),
            json!({"url": "127.0.0.1:21003", "name": "from-file"}),
        ]),
    )
    .unwrap();
    let dead = dead_port();
    let r = run(
        &home,
        &[],
        &format!(
            "load {}\nadd 127.0.0.1:{dead} --force\nnodes\n",
            other.display()
        ),
    );
    r.ok()
        .out_has(&format!("✅ Loaded 2 node(s) from {}", other.display()))
        .out_has("1 added")
        .out_has("1 updated from the file (http://127.0.0.1:21002)")
        .out_has("1 registered node(s) not in the file kept")
        .out_has("4 nodes on 1 physical host");
    let nodes = home.nodes()["nodes"].as_array().unwrap().clone();
    let by_url = |u: &str| {
        nodes
            .iter()
            .find(|n| n["url"] == u)
            .unwrap_or_else(|| panic!("{u} lost: {nodes:?}"))
            .clone()
    };
    assert_eq!(by_url("http://127.0.0.1:21001")["rack"], "r1");
    assert_eq!(by_url("http://127.0.0.1:21002")["name"], "new-name");
    assert_eq!(by_url("http://127.0.0.1:21002")["priority"], 3);
    assert_eq!(by_url("http://127.0.0.1:21003")["name"], "from-file");
    by_url(&format!("http://127.0.0.1:{dead}"));
    assert_eq!(nodes.len(), 4);
}
