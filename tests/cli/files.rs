//! The two files: the original's files load and round-trip; malformed files are
//! reported in one line naming the file, and left byte-identical.

use serde_json::{json, Value};

use crate::support::*;

/// What the Python original writes after `mode standard` on a fresh install.
const ORIGINAL_SETTINGS: &str = r#"{
  "mode": "standard",
  "collaborative_mode": false,
  "refinement_rounds": 1,
  "agent_timeout": 300,
  "ast_voting_enabled": false,
  "quality_threshold": 0.7,
  "max_quality_retries": 2,
  "flockparser_enabled": false,
  "dashboard_verbose": true,
  "model": "llama3.2",
  "synthesis_model": null,
  "strategy": null,
  "task_distribution_enabled": true,
  "model_sharding_enabled": false,
  "rpc_backends": [],
  "redis_logging_enabled": false,
  "redis_host": "localhost",
  "redis_port": 6379,
  "redis_db": 0,
  "redis_password": null
}"#;

#[test]
fn original_settings_load_and_round_trip() {
    let home = Home::new();
    home.write_settings(ORIGINAL_SETTINGS.as_bytes());
    let r = run(&home, &[], "status\nrefine 2\n");
    r.ok()
        .out_has("| Mode               | standard")
        .out_has("| Model              | llama3.2");
    let before: Value = serde_json::from_str(ORIGINAL_SETTINGS).unwrap();
    let after = home.settings();
    for (k, v) in before.as_object().unwrap() {
        if k != "refinement_rounds" {
            assert_eq!(&after[k], v, "key {k} changed");
        }
    }
    assert_eq!(after["refinement_rounds"], 2);
    assert_eq!(
        after.as_object().unwrap().len(),
        before.as_object().unwrap().len()
    );
}

#[test]
fn node_file_with_unknown_fields_round_trips() {
    let home = Home::new();
    let a = sim(Default::default());
    let text = json!({"nodes": [
        {"url": a.url(), "name": "alpha", "priority": 0, "rack": "r1"},
        {"url": "http://127.0.0.1:1", "name": "beta", "priority": 2, "gpu": {"vram": 8}},
        {"url": "http://127.0.0.1:2", "name": "gamma", "priority": 1}
    ], "comment": "kept"});
    home.write_nodes(serde_json::to_string_pretty(&text).unwrap().as_bytes());
    let r = run(&home, &[], "nodes\nremove gamma\n");
    r.ok()
        .out_has("alpha")
        .out_has("beta")
        .out_has("3 nodes on 1 physical host");
    let after = home.nodes();
    assert_eq!(after["comment"], "kept");
    let nodes = after["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["rack"], "r1");
    assert_eq!(nodes[1]["gpu"]["vram"], 8);
    assert_eq!(nodes[1]["priority"], 2);
}

#[test]
fn legacy_sharding_key_migrates() {
    let home = Home::new();
    home.write_settings(br#"{"distributed_inference_enabled": true, "my_key": [1]}"#);
    run(&home, &[], "collab on\n").ok();
    let s = home.settings();
    assert_eq!(s["model_sharding_enabled"], true);
    assert!(s.get("distributed_inference_enabled").is_none());
    assert_eq!(s["my_key"], json!([1]));
}

/// Files that are not a JSON object of settings at all: (contents, a piece of
/// the expected message). These are never written.
const BAD_SETTINGS: &[(&[u8], &str)] = &[
    (b"{\"mode\": \"standard\", \"collab", "line 1"),
    (b"[1, 2, 3]", "an array"),
    (b"{\"mode\": \"standard\"} trailing", "trailing"),
    (b"\x00\x01\x02\xff\xfe binary", "UTF-8"),
    (b"null", "null"),
];

/// One unusable value: (contents, key, a piece of the expected message). The
/// other keys load, the value stays in the file, changes are saved.
const BAD_VALUES: &[(&str, &str, &str)] = &[
    (
        "{\"refinement_rounds\": \"two\"}",
        "refinement_rounds",
        "\"two\" is not a whole number from 0 to 5",
    ),
    (
        "{\"quality_threshold\": 7}",
        "quality_threshold",
        "7 is not a number from 0.0 to 1.0",
    ),
    ("{\"model\": 5}", "model", "5 is not a model name"),
    (
        "{\"rpc_backends\": {\"host\": \"x\"}}",
        "rpc_backends",
        "is not a list of",
    ),
    (
        "{\n  \"agent_timeout\": -5\n}",
        "agent_timeout",
        "at line 2: -5 is not a whole number of seconds",
    ),
];

#[test]
fn unusable_values_are_reported_kept_and_do_not_block_saving() {
    for (text, key, expect) in BAD_VALUES {
        let home = Home::new();
        home.write_settings(text.as_bytes());
        let r = run(&home, &[], "status\ncollab on\n");
        let path = home.settings_path().display().to_string();
        let line = line_naming(&r, &path, text.as_bytes());
        assert!(line.contains(&format!("key `{key}`")), "{line:?}");
        assert!(line.contains(expect), "{line:?} lacks {expect:?}");
        r.ok().out_has("✅ Collaborative mode ENABLED");
        let before: Value = serde_json::from_str(text).unwrap();
        let after = home.settings();
        assert_eq!(after[key], before[key], "{key}: the value was not kept");
        assert_eq!(after["collaborative_mode"], true);
    }
}

#[test]
fn malformed_settings_are_reported_and_left_alone() {
    for (bytes, expect) in BAD_SETTINGS {
        let home = Home::new();
        home.write_settings(bytes);
        let r = run(&home, &[], "status\ncollab on\n");
        let path = home.settings_path().display().to_string();
        let line = line_naming(&r, &path, bytes);
        assert!(line.contains(expect), "{line:?} lacks {expect:?}");
        // The shell still works, and the file is byte-identical.
        r.out_has("SYSTEM STATUS")
            .out_has("Collaborative mode ENABLED");
        assert_eq!(
            r.code, 1,
            "saving over a broken file must fail: {}",
            r.stderr
        );
        r.err_has("not saved");
        assert_eq!(std::fs::read(home.settings_path()).unwrap(), *bytes);
    }
}

const BAD_NODES: &[(&[u8], &str)] = &[
    (b"", "empty"),
    (b"{\"nodes\": [{\"url\": \"http://a:1\"", "end of file"),
    (b"[]", "an array"),
    (b"{\"nodes\": {\"url\": \"x\"}}", "\"nodes\" is an object"),
    (b"{\"nodes\": \"x\"}", "\"nodes\" is a string"),
    (b"{\"nodes\": []}}", "trailing"),
    (b"\xff\xfe\x00garbage", "UTF-8"),
    (b"{'nodes': []}", "line 1"),
];

#[test]
fn malformed_node_files_are_reported_and_left_alone() {
    for (bytes, expect) in BAD_NODES {
        let home = Home::new();
        home.write_nodes(bytes);
        let a = sim(Default::default());
        let r = run(&home, &[], &format!("nodes\nadd {}\n", a.url()));
        let path = home.nodes_path().display().to_string();
        let line = line_naming(&r, &path, bytes);
        assert!(line.contains(expect), "{line:?} lacks {expect:?}");
        r.out_has("OLLAMA NODES").out_has("Added node");
        r.err_has("not saved");
        assert_eq!(
            std::fs::read(home.nodes_path()).unwrap(),
            *bytes,
            "file changed"
        );
    }
}

#[test]
fn unusable_entries_are_reported_skipped_and_kept() {
    let home = Home::new();
    let a = sim(Default::default());
    let text = json!({"nodes": [
        {"name": "no-url"},
        {"url": 42},
        {"url": "ftp://x"},
        {"url": a.url(), "name": "good"}
    ]});
    home.write_nodes(serde_json::to_string(&text).unwrap().as_bytes());
    let b = sim(Default::default());
    let r = run(&home, &[], &format!("nodes\nadd {}\n", b.url()));
    r.ok().out_has("good").out_has("1 node on 1 physical host");
    r.err_has("entry 1: has no \"url\"")
        .err_has("entry 2: \"url\" is a number")
        .err_has("entry 3: bad \"url\"");
    let nodes = home.nodes()["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 5, "the three bad entries are kept: {nodes:?}");
    assert!(nodes.contains(&json!({"name": "no-url"})));
    assert!(nodes.contains(&json!({"url": 42})));
}

#[test]
fn byte_order_mark_is_read_with_a_note() {
    let home = Home::new();
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(br#"{"model": "qwen2.5:0.5b"}"#);
    home.write_settings(&bytes);
    let r = run(&home, &[], "status\n");
    r.ok().out_has("qwen2.5:0.5b").err_has("byte-order mark");
    assert_eq!(std::fs::read(home.settings_path()).unwrap(), bytes);
}

#[test]
fn cli_flags_beat_saved_settings_for_the_run() {
    let home = Home::new();
    home.write_settings(br#"{"model": "saved-model"}"#);
    let r = run(&home, &["--model", "flag-model"], "status\ncollab on\n");
    r.ok().out_has("flag-model");
    assert_eq!(
        home.settings()["model"],
        "saved-model",
        "the flag is for this run only"
    );
}

#[test]
fn save_and_load_use_other_paths() {
    let home = Home::new();
    let a = sim(Default::default());
    let other = home.path().join("my nodes.json");
    let r = run(
        &home,
        &[],
        &format!(
            "add {}\nsave {}\nremove {}\nload {}\nnodes\n",
            a.url(),
            other.display(),
            a.url(),
            other.display()
        ),
    );
    r.ok()
        .out_has("Saved 1 node(s)")
        .out_has("Loaded 1 node(s)")
        .out_has("1 node on 1 physical host");
    let saved: Value = serde_json::from_slice(&std::fs::read(&other).unwrap()).unwrap();
    assert_eq!(saved["nodes"][0]["url"], a.url());
    // `load` merges into the registry and saves it, as `add` does.
    assert_eq!(home.node_urls(), [a.url()]);
    home.write_settings(b"{}");
    let r = run(
        &home,
        &[],
        &format!(
            "load {}/missing.json\nload {}\n",
            home.path().display(),
            home.settings_path().display()
        ),
    );
    r.failed()
        .err_has("missing.json: no such file")
        .err_has("no \"nodes\" list");
}

#[test]
fn atomic_write_leaves_no_temp_files() {
    let home = Home::new();
    run(&home, &[], "collab on\nrefine 2\nast on\n").ok();
    let names: Vec<String> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![".synapticllamas.json".to_string()], "{names:?}");
}

/// Long enough for any of these sessions; the unfixed binary blocked forever
/// on a FIFO and read `/dev/zero` until memory ran out.
const BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// `r` has exactly one stderr line naming `path`, and it says `what`.
#[track_caller]
fn one_line(r: &Run, path: &std::path::Path, what: &str) {
    one_line_with(r, &format!("{}:", path.display()), what)
}

/// `r` has exactly one stderr line holding `path`, and it says `what`.
#[track_caller]
fn one_line_with(r: &Run, path: &str, what: &str) {
    let lines = lines_naming(r, path);
    assert_eq!(
        lines.len(),
        1,
        "one line names {path}:\nstdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert!(lines[0].contains(what), "{:?} lacks {what:?}", lines[0]);
}

#[test]
fn load_reads_only_a_regular_file_within_its_limit() {
    let home = Home::new();
    let fifo = home.path().join("pipe.json");
    mkfifo(&fifo);
    // 33 MiB: more than a node file may be (the size is what is checked).
    let big = home.path().join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(33 << 20)
        .unwrap();
    let folder = home.path().join("folder.json");
    std::fs::create_dir(&folder).unwrap();
    let zero_link = home.path().join("zero.json");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).unwrap();
    let script = format!(
        "load /dev/zero\nload {}\nload {}\nload {}\nload {}\nstatus\n",
        fifo.display(),
        big.display(),
        folder.display(),
        zero_link.display()
    );
    let r = run_bounded(&home, &[], &script, BOUND);
    r.failed().out_has("SYSTEM STATUS");
    one_line_with(
        &r,
        "load: /dev/zero:",
        "is a character device, not a regular file",
    );
    one_line(&r, &fifo, "is a named pipe (FIFO), not a regular file");
    one_line(
        &r,
        &big,
        "is 33.0 MiB, more than a node file may be (32.0 MiB)",
    );
    one_line(&r, &folder, "is a directory");
    one_line(
        &r,
        &zero_link,
        "is a symbolic link to /dev/zero, a character device",
    );
    assert!(
        !home.nodes_path().exists(),
        "nothing was loaded, nothing saved"
    );
    // The flag says the same, before anything happens (exit 2).
    for bad in [&fifo, &big] {
        let r = run_bounded(
            &home,
            &["--load-config", &bad.display().to_string()],
            "",
            BOUND,
        );
        assert_eq!(r.code, 2, "{}", r.stderr);
        r.err_has("--load-config")
            .err_has(&bad.display().to_string());
    }
}

#[test]
fn rag_index_reads_only_a_regular_document_within_its_limit() {
    let a = sim(synapticllamas::sim::SimConfig {
        models: vec!["llama3.2:latest".into(), "mxbai-embed-large:latest".into()],
        ..Default::default()
    });
    let home = nodes_home(&[&a], json!({}));
    let fifo = home.path().join("notes.txt");
    mkfifo(&fifo);
    let big = home.path().join("huge.md");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(257 << 20)
        .unwrap();
    let r = run_bounded(
        &home,
        &[],
        &format!("rag index {} {}\nstatus\n", fifo.display(), big.display()),
        BOUND,
    );
    r.failed().out_has("SYSTEM STATUS");
    one_line(&r, &fifo, "is a named pipe (FIFO), not a regular file");
    one_line(
        &r,
        &big,
        "is 257.0 MiB, more than a document may be (256.0 MiB)",
    );
}

#[test]
fn a_fifo_as_the_node_file_is_named_and_left_alone() {
    let home = Home::new();
    mkfifo(&home.nodes_path());
    let a = sim(Default::default());
    let r = run_bounded(&home, &[], &format!("status\nadd {}\n", a.url()), BOUND);
    r.out_has("SYSTEM STATUS").out_has("Added node");
    one_line_of_kind(&r, &home.nodes_path(), "is a named pipe (FIFO)");
    // The file could not be read, so it is not written: still a FIFO.
    r.err_has("not saved");
    let t = std::fs::symlink_metadata(home.nodes_path())
        .unwrap()
        .file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&t), "{t:?}");
}

#[test]
fn a_settings_file_linked_to_dev_zero_is_named_and_not_written() {
    let home = Home::new();
    std::os::unix::fs::symlink("/dev/zero", home.settings_path()).unwrap();
    let r = run_bounded(&home, &[], "status\ncollab on\n", BOUND);
    r.failed()
        .out_has("SYSTEM STATUS")
        .out_has("Collaborative mode ENABLED");
    one_line_of_kind(
        &r,
        &home.settings_path(),
        "is a symbolic link to /dev/zero, a character device, not a regular file",
    );
    r.err_has("not saved");
    assert_eq!(
        std::fs::read_link(home.settings_path()).unwrap(),
        std::path::Path::new("/dev/zero"),
        "the link is kept"
    );
}

#[test]
fn a_node_file_of_130000_entries_is_probed_in_the_background() {
    // Loopback only: 127.100.0.0/16 on ports 9 and 13, where nothing listens
    // (checked), so every probe is refused at once and no packet leaves.
    for port in [9, 13] {
        assert!(
            std::net::TcpStream::connect(("127.100.0.1", port)).is_err(),
            "something listens on port {port}: pick other ports"
        );
    }
    let mut text = String::from("{\"nodes\": [\n");
    let mut n = 0;
    'fill: for port in [9, 13] {
        for i in 0..65536u32 {
            if n == 130_000 {
                break 'fill;
            }
            if n > 0 {
                text.push_str(",\n");
            }
            text.push_str(&format!(
                "{{\"url\": \"http://127.100.{}.{}:{port}\"}}",
                i / 256,
                i % 256
            ));
            n += 1;
        }
    }
    text.push_str("\n]}\n");
    let home = Home::new();
    home.write_nodes(text.as_bytes());
    let r = run(&home, &[], "status\n");
    r.ok()
        .err_has("probing 130000 nodes in the background")
        .err_has("what is known so far");
    let row = r
        .stdout
        .lines()
        .find(|l| l.contains("Ollama Nodes"))
        .unwrap_or_else(|| panic!("no node count:\n{}", r.stdout));
    assert!(row.contains("130000"), "{row}");
    // A few nodes are probed before `status` answers, as always.
    let (a, b) = (sim(Default::default()), sim(Default::default()));
    let small = nodes_home(&[&a, &b], json!({}));
    let r = run(&small, &[], "status\n");
    r.ok();
    assert!(!r.stderr.contains("in the background"), "{}", r.stderr);
    let row = r
        .stdout
        .lines()
        .find(|l| l.contains("Healthy Nodes"))
        .unwrap();
    assert!(row.contains(" 2 "), "{row}");
}

/// The start-up line naming `path` says `what`; a later refusal to save over
/// it names it again (that line says "not saved").
#[track_caller]
fn one_line_of_kind(r: &Run, path: &std::path::Path, what: &str) {
    let path = path.display().to_string();
    let lines: Vec<&str> = lines_naming(r, &path)
        .into_iter()
        .filter(|l| !l.contains("not saved"))
        .collect();
    assert_eq!(lines.len(), 1, "one line names {path}:\n{}", r.stderr);
    assert!(lines[0].contains(what), "{:?} lacks {what:?}", lines[0]);
}

/// The one stderr line that names `path` (the file whose `bytes` were bad).
fn line_naming<'a>(r: &'a Run, path: &str, bytes: &[u8]) -> &'a str {
    r.stderr
        .lines()
        .find(|l| l.contains(path))
        .unwrap_or_else(|| {
            panic!(
                "no line names {path} for {:?}\nstderr:\n{}",
                String::from_utf8_lossy(bytes),
                r.stderr
            )
        })
}
