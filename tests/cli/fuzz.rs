//! Property-based fuzzing of the pure parsers: the command parser, the NDJSON line
//! decoder, the two file loaders and the OLLAMA_HOST/URL parser.
//!
//! Each target first replays its committed corpus (`tests/fuzz_corpus/<target>/`),
//! then runs proptest runners in a loop until its time budget is spent:
//! `SYNAPTICLLAMAS_FUZZ_SECS` seconds per target (default 2). Iteration `i` of a
//! target uses a ChaCha seed derived from (`SYNAPTICLLAMAS_FUZZ_SEED`, target, i),
//! so a failure is reproducible from the seed and iteration it prints. Each target
//! prints one summary line (`fuzz <target>: N executions ...`) for RELIABILITY.md.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::{Map, Number, Value};

use synapticllamas::command::{self, Command, SettingCmd};
use synapticllamas::config::nodes_file::{self, NodeEntry, NodeFile};
use synapticllamas::config::settings::{self, RpcBackendEntry, Settings};
use synapticllamas::ollama::host;
use synapticllamas::ollama::ndjson::LineDecoder;

// ---------------------------------------------------------------------------
// The harness

fn budget() -> Duration {
    let secs = std::env::var("SYNAPTICLLAMAS_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs.max(0.0))
}

fn base_seed() -> u64 {
    std::env::var("SYNAPTICLLAMAS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_2026)
}

/// FNV-1a, to turn (seed, target, iteration) into 32 seed bytes.
fn seed_bytes(base: u64, name: &str, iteration: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (k, chunk) in out.chunks_mut(8).enumerate() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (k as u64);
        for b in base
            .to_le_bytes()
            .iter()
            .chain(name.as_bytes())
            .chain(iteration.to_le_bytes().iter())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    out
}

/// Run `test` on values of `strategy` until the budget is spent (at least one
/// runner of `cases` cases). Panics with the minimal failing input and its seed.
fn fuzz<S>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let started = Instant::now();
    let budget = budget();
    let executions = AtomicU64::new(0);
    let base = base_seed();
    let mut iteration = 0u64;
    loop {
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 4096,
            ..Config::default()
        };
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(base, name, iteration));
        let mut runner = TestRunner::new_with_rng(config, rng);
        let result = runner.run(&strategy, |v| {
            executions.fetch_add(1, Ordering::Relaxed);
            test(v)
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, value)) => panic!(
                "fuzz {name}: FAILED at seed {base} iteration {iteration}: {why}\nminimal input: {value:#?}"
            ),
            Err(TestError::Abort(why)) => {
                panic!("fuzz {name}: aborted at seed {base} iteration {iteration}: {why}")
            }
        }
        iteration += 1;
        if started.elapsed() >= budget {
            break;
        }
    }
    eprintln!(
        "fuzz {name}: {} executions in {:.1}s ({iteration} runners of {cases} cases, seed {base}), 0 failures",
        executions.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// Replay the corpus of `target` through `check`; report which file failed.
fn replay(target: &str, check: impl Fn(&[u8]) -> Result<(), TestCaseError>) -> usize {
    let files = corpus(target);
    for (path, bytes) in &files {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(bytes)));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("corpus {}: {e}", path.display()),
            Err(_) => panic!("corpus {}: panicked", path.display()),
        }
    }
    files.len()
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(TestCaseError::fail(format!($($fmt)+)));
        }
    };
}

// ---------------------------------------------------------------------------
// Shared generators

/// Text that is likely to hit edge cases: odd whitespace, quotes, controls,
/// non-ASCII, plus fully arbitrary strings.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,40}",
        vec(
            select(vec![
                " ",
                "\t",
                "\u{a0}",
                "\u{3000}",
                "\u{2028}",
                "\r",
                "\u{0}",
                "\u{1b}[2J",
                "\"",
                "'",
                "#",
                "--",
                "=",
                ":",
                "/",
                "[",
                "]",
                "%",
                "@",
                "é",
                "🦙",
                "0",
                "-1",
                "nan",
                "NaN",
                "inf",
                "1e309",
                "0.5",
                "99999999999999999999",
                "on",
                "off",
                "ON",
            ]),
            0..12
        )
        .prop_map(|v| v.concat()),
    ]
}

/// A JSON value tree; numbers are those JSON can carry exactly (i64, u64, finite f64).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        (-1000i32..1000, 0u32..1000).prop_filter_map("finite", |(a, b)| Number::from_f64(
            f64::from(a) + f64::from(b) / 1000.0
        )
        .map(Value::Number)),
        tricky_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(tricky_text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn unknown_map<S: ToString>(
    reserved: impl IntoIterator<Item = S>,
) -> impl Strategy<Value = Map<String, Value>> {
    let reserved: Vec<String> = reserved.into_iter().map(|k| k.to_string()).collect();
    btree_map(
        prop_oneof!["[a-z_]{1,12}", tricky_text()],
        json_value(),
        0..5,
    )
    .prop_map(move |m| {
        m.into_iter()
            .filter(|(k, _)| !reserved.contains(k))
            .collect()
    })
}

// ---------------------------------------------------------------------------
// 1. The command parser

const WORDS: &[&str] = &[
    "mode",
    "distributed",
    "nodes",
    "add",
    "remove",
    "discover",
    "health",
    "save",
    "load",
    "rpc",
    "collab",
    "refine",
    "synthesis",
    "timeout",
    "ast",
    "quality",
    "qretries",
    "strategy",
    "model",
    "status",
    "metrics",
    "benchmark",
    "dashboard",
    "rag",
    "redis",
    "verbose",
    "help",
    "exit",
    "quit",
    "q",
    "?",
    "MODE",
    "Refine",
    "QUALITY",
    "what",
    "hello",
];

const ARGS: &[&str] = &[
    "on",
    "off",
    "ON",
    "Off",
    "standard",
    "distributed",
    "task",
    "model",
    "both",
    "none",
    "auto",
    "single",
    "parallel",
    "multi",
    "gpu",
    "discover",
    "list",
    "add",
    "remove",
    "stop",
    "0",
    "1",
    "5",
    "6",
    "30",
    "29",
    "-1",
    "+3",
    "0.0",
    "1.0",
    "0.7",
    "1.5",
    "nan",
    "NaN",
    "inf",
    "-0",
    "1e-9",
    "1e309",
    "18446744073709551616",
    "--force",
    "--json",
    "--timeout",
    "--port",
    "--bind",
    "--yaml",
    "10.77.0.0/24",
    "10.0.0.0/8",
    "127.0.0.1:11434",
    "http://h:1",
    "ftp://x",
    "a;b",
    "llama3.2:1b",
    "\"/tmp/a b\"",
    "\"",
    "é",
    "🦙",
];

fn command_line() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => (
            select(WORDS),
            vec(prop_oneof![4 => select(ARGS).prop_map(String::from), 1 => tricky_text()], 0..4),
            select(vec![" ", "  ", "\t", "\u{a0}", "\u{3000}"]),
        )
            .prop_map(|(w, args, sep)| {
                let mut s = w.to_string();
                for a in args {
                    s.push_str(sep);
                    s.push_str(&a);
                }
                s
            }),
        1 => tricky_text(),
        1 => any::<String>(),
    ]
}

fn check_command(line: &str) -> Result<(), TestCaseError> {
    let parsed = command::parse(line);
    let _ = command::complete(line);
    let trimmed = line.trim();
    let first = trimmed.split_whitespace().next().unwrap_or("");
    match command::lookup(first) {
        None => {
            ensure!(
                parsed == Ok(Command::Query(trimmed.to_string())),
                "{line:?}: not a command word but parsed as {parsed:?}"
            );
            ensure!(
                command::parse(trimmed) == parsed,
                "{line:?}: a query does not re-parse to itself"
            );
        }
        Some(spec) => match &parsed {
            Ok(Command::Query(_)) => {
                return Err(TestCaseError::fail(format!(
                    "{line:?}: command word `{first}` parsed as a query"
                )))
            }
            Ok(cmd) => check_command_value(line, cmd)?,
            Err(u) => {
                ensure!(u.usage == spec.usage, "{line:?}: usage of another command");
                ensure!(!u.message.is_empty(), "{line:?}: empty message");
                let shown = u.to_string();
                ensure!(shown.contains("Usage: "), "{line:?}: no usage line");
                ensure!(
                    shown.lines().count() == 2
                        && !shown.chars().any(|c| c.is_control() && c != '\n'),
                    "{line:?}: the message is not two plain lines: {shown:?}"
                );
            }
        },
    }
    // The first word is matched without regard to ASCII case.
    if !first.is_empty() && first.is_ascii() && command::lookup(first).is_some() {
        let upper = format!("{}{}", first.to_ascii_uppercase(), &trimmed[first.len()..]);
        let again = command::parse(&upper);
        ensure!(
            again.is_ok() == parsed.is_ok(),
            "{line:?}: case of the command word changed the outcome"
        );
    }
    Ok(())
}

fn check_command_value(line: &str, cmd: &Command) -> Result<(), TestCaseError> {
    match cmd {
        Command::Set(SettingCmd::Refine(n)) => ensure!(*n <= 5, "{line:?}: refine {n}"),
        Command::Set(SettingCmd::QRetries(n)) => ensure!(*n <= 5, "{line:?}: qretries {n}"),
        Command::Set(SettingCmd::Timeout(s)) => ensure!(*s >= 30, "{line:?}: timeout {s}"),
        Command::Set(SettingCmd::Quality(x)) => {
            ensure!(
                !x.is_nan() && (0.0..=1.0).contains(x),
                "{line:?}: quality {x}"
            )
        }
        Command::Set(SettingCmd::Model(m)) => ensure!(
            !m.as_str().is_empty()
                && m.as_str()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c)),
            "{line:?}: model {m:?}"
        ),
        Command::Discover {
            timeout_ms: Some(t),
            ..
        } => ensure!((1..=60_000).contains(t), "{line:?}: timeout {t}"),
        Command::Add { node, .. } => {
            let url = node.base_url();
            ensure!(
                !url.is_empty() && !url.contains("--force"),
                "{line:?}: add {url:?}"
            )
        }
        Command::Save(p) | Command::Load(p) => {
            ensure!(!p.as_os_str().is_empty(), "{line:?}: empty path")
        }
        _ => {}
    }
    Ok(())
}

#[test]
fn fuzz_command_parser() {
    let n = replay("command", |bytes| {
        for line in String::from_utf8_lossy(bytes).lines() {
            check_command(line)?;
        }
        Ok(())
    });
    assert!(n > 0);
    fuzz("command::parse", 2048, command_line(), |line| {
        check_command(&line)
    });
}

// ---------------------------------------------------------------------------
// 2. The NDJSON line decoder

/// What the decoder should produce: every newline-terminated line (one trailing
/// CR removed) that is not blank, then the unterminated rest if not blank.
fn reference_lines(input: &[u8]) -> Vec<Vec<u8>> {
    let blank = |l: &[u8]| l.iter().all(|b| b.is_ascii_whitespace());
    let mut out = Vec::new();
    for seg in input.split(|&b| b == b'\n') {
        if !blank(seg) {
            let seg = seg.strip_suffix(b"\r").unwrap_or(seg);
            out.push(seg.to_vec());
        }
    }
    out
}

/// Feed `input` in the pieces given by `cuts`; Ok(lines) or Err(at which push).
fn decode(input: &[u8], cuts: &[usize], max: usize) -> Result<Vec<Vec<u8>>, usize> {
    let mut d = LineDecoder::new(max);
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    points.push(input.len());
    let mut out = Vec::new();
    let mut from = 0;
    for (i, &to) in points.iter().enumerate() {
        match d.push(&input[from..to]) {
            Ok(lines) => out.extend(lines),
            Err(_) => return Err(i),
        }
        from = to;
    }
    out.extend(d.finish());
    Ok(out)
}

fn ndjson_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..200),
        vec(
            select(vec![
                b'\n', b'\n', b'\r', b' ', b'\t', 0x0b, 0x0c, b'{', b'}', b'"', b'a', 0, 0xff,
                0xc3, 0xa9,
            ]),
            0..200
        ),
        vec(
            select(vec![
                "{\"response\":\"a\",\"done\":false}\n",
                "{\"done\":true}\r\n",
                "\n",
                "  \n",
                "\r\n",
                "{\"error\":\"boom\"}",
                "{\"a\":",
                "1}",
                "\u{e9}",
            ]),
            0..20
        )
        .prop_map(|v| v.concat().into_bytes()),
    ]
}

fn check_ndjson(input: &[u8], cuts: &[usize], small_max: usize) -> Result<(), TestCaseError> {
    let want = reference_lines(input);
    let whole = decode(input, &[], usize::MAX);
    ensure!(
        whole.as_ref() == Ok(&want),
        "one push: {whole:?} != {want:?}"
    );
    let split = decode(input, cuts, usize::MAX);
    ensure!(
        split.as_ref() == Ok(&want),
        "pushes at {cuts:?}: {split:?} != {want:?}"
    );
    // One byte at a time.
    let bytewise: Vec<usize> = (0..input.len()).collect();
    ensure!(
        decode(input, &bytewise, usize::MAX).as_ref() == Ok(&want),
        "byte-by-byte differs"
    );
    // A bound: an error exactly when some line (with its CR) is longer than it.
    let longest = input
        .split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    let bounded = decode(input, cuts, small_max);
    if longest > small_max {
        ensure!(
            bounded.is_err(),
            "a line of {longest} > {small_max} was accepted"
        );
    } else {
        ensure!(
            bounded.as_ref() == Ok(&want),
            "within the bound {small_max}: {bounded:?} != {want:?}"
        );
    }
    Ok(())
}

#[test]
fn fuzz_ndjson_decoder() {
    replay("ndjson", |bytes| {
        let cuts: Vec<usize> = (0..bytes.len()).step_by(3).collect();
        check_ndjson(bytes, &cuts, 16)?;
        check_ndjson(bytes, &[bytes.len() / 2], 64)
    });
    fuzz(
        "ndjson::LineDecoder",
        1024,
        (ndjson_input(), vec(any::<usize>(), 0..8), 0usize..64),
        |(input, cuts, max)| check_ndjson(&input, &cuts, max),
    );
}

// ---------------------------------------------------------------------------
// 3. The settings file

fn settings_path() -> PathBuf {
    PathBuf::from("/fuzz/.synapticllamas.json")
}

fn known_settings_keys() -> BTreeSet<String> {
    settings::known_keys().into_iter().collect()
}

fn opt<T: Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 3 => s.prop_map(Some)].boxed()
}

fn rpc_backend() -> impl Strategy<Value = RpcBackendEntry> {
    (tricky_text(), any::<u16>(), unknown_map(&["host", "port"]))
        .prop_map(|(host, port, extra)| RpcBackendEntry { host, port, extra })
}

/// A model name the one name validator accepts.
fn model_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9._:/-]{0,40}"
}

/// A settings value this program could have written (any values of the right types).
fn valid_settings() -> impl Strategy<Value = Settings> {
    let a = (
        opt(select(synapticllamas::config::choices::Mode::ALL.to_vec())),
        any::<bool>(),
        0..=settings::REFINE_MAX,
        settings::TIMEOUT_MIN_SECS..=settings::TIMEOUT_MAX_SECS,
        any::<bool>(),
        prop_oneof![0.0f64..=1.0, Just(0.0), Just(1.0), Just(0.7)],
        0..=settings::QRETRIES_MAX,
        any::<bool>(),
        any::<bool>(),
        model_name(),
        opt(model_name()),
        opt(select(
            synapticllamas::config::choices::Strategy::ALL
                .iter()
                .filter_map(|s| s.stored())
                .collect::<Vec<_>>(),
        )),
    );
    let b = (
        any::<bool>(),
        any::<bool>(),
        vec(rpc_backend(), 0..3),
        opt(tricky_text()),
        any::<bool>(),
        tricky_text(),
        any::<u16>(),
        any::<u32>(),
        opt(tricky_text()),
        (
            opt(any::<u64>()),
            opt(any::<u64>()),
            opt(any::<u32>()),
            opt(any::<u64>()),
        ),
        unknown_map(synapticllamas::config::settings::known_keys()),
    );
    (a, b).prop_map(|(a, b)| Settings {
        mode: a.0,
        collaborative_mode: a.1,
        refinement_rounds: a.2,
        agent_timeout: a.3,
        ast_voting_enabled: a.4,
        quality_threshold: a.5,
        max_quality_retries: a.6,
        flockparser_enabled: a.7,
        dashboard_verbose: a.8,
        model: a.9,
        synthesis_model: a.10,
        strategy: a.11,
        task_distribution_enabled: b.0,
        model_sharding_enabled: b.1,
        rpc_backends: b.2,
        coordinator_url: b.3,
        redis_logging_enabled: b.4,
        redis_host: b.5,
        redis_port: b.6,
        redis_db: b.7,
        redis_password: b.8,
        discovery_connect_timeout_ms: b.9 .0,
        discovery_verify_timeout_ms: b.9 .1,
        host_capacity: b.9 .2,
        request_idle_timeout_ms: b.9 .3,
        extra: b.10,
        ..Settings::default()
    })
}

/// Arbitrary JSON objects that use the known keys with values of any type.
fn settings_like_object() -> impl Strategy<Value = Value> {
    btree_map(
        prop_oneof![3 => select(synapticllamas::config::settings::known_keys()), 1 => tricky_text()],
        json_value(),
        0..8,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// Text: any string, a JSON value's text (pretty or not), or one cut short / spliced.
fn json_text(objects: BoxedStrategy<Value>) -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        1 => tricky_text(),
        2 => (objects.clone(), any::<bool>()).prop_map(|(v, pretty)| if pretty {
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            serde_json::to_string(&v).unwrap()
        }),
        2 => (objects, any::<usize>(), tricky_text()).prop_map(|(v, cut, junk)| {
            let s = serde_json::to_string_pretty(&v).unwrap();
            let mut cut = cut % (s.len() + 1);
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}{junk}{}", &s[..cut], &s[cut..])
        }),
    ]
}

/// Bytes for the loaders: any bytes, or a JSON text with a BOM, a NUL or an
/// invalid UTF-8 sequence spliced in.
fn file_bytes(objects: BoxedStrategy<Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..300),
        (
            json_text(objects),
            any::<usize>(),
            select(vec![
                &b"\xEF\xBB\xBF"[..],
                b"\x00",
                b"\xFF",
                b"\xC3",
                b"\xED\xA0\x80",
                b"\r\n",
                b"",
            ]),
            any::<bool>(),
        )
            .prop_map(|(text, at, junk, bom)| {
                let mut b = text.into_bytes();
                let at = at % (b.len() + 1);
                b.splice(at..at, junk.iter().copied());
                if bom {
                    b.splice(0..0, *b"\xEF\xBB\xBF");
                }
                b
            }),
    ]
}

fn check_settings_text(text: &str) -> Result<(), TestCaseError> {
    let path = settings_path();
    match settings::parse(&path, text) {
        Err(e) => {
            ensure!(e.path == path, "error names another file");
            ensure!(!e.message.is_empty(), "empty error message");
            ensure!(
                !e.message.contains('\n'),
                "error message is not one line: {:?}",
                e.message
            );
        }
        Ok(parsed) => {
            let s = parsed.settings;
            ensure!(
                !s.quality_threshold.is_nan() && (0.0..=1.0).contains(&s.quality_threshold),
                "accepted quality {}",
                s.quality_threshold
            );
            for k in &parsed.invalid {
                ensure!(
                    !k.problem.contains('\n') && k.problem.chars().count() < 300,
                    "warning for {} is not one short line: {:?}",
                    k.key,
                    k.problem
                );
            }
            // What we write reads back as the same settings, and rewriting is stable.
            let written = settings::to_json(&s);
            let again = settings::parse(&path, &written)
                .map_err(|e| TestCaseError::fail(format!("own output rejected: {e}")))?;
            ensure!(
                again.invalid.is_empty(),
                "own output has unusable values: {:?}",
                again.invalid
            );
            let (again, notes) = (again.settings, again.notes);
            ensure!(
                again == s,
                "rewrite changed the settings:\n{s:?}\n{again:?}"
            );
            ensure!(notes.is_empty(), "own output needs notes: {notes:?}");
            ensure!(
                settings::to_json(&again) == written,
                "second rewrite differs"
            );
            // Every key of the input that is not a known key survives the rewrite.
            let input: Value = serde_json::from_str(text).unwrap();
            let output: Value = serde_json::from_str(&written).unwrap();
            let known = known_settings_keys();
            for (k, v) in input.as_object().unwrap() {
                if !known.contains(k) {
                    ensure!(
                        output.get(k) == Some(v),
                        "unknown key {k:?} = {v} was not kept"
                    );
                }
            }
        }
    }
    Ok(())
}

fn check_valid_settings(s: &Settings) -> Result<(), TestCaseError> {
    let path = settings_path();
    let text = settings::to_json(s);
    let parsed = settings::parse(&path, &text)
        .map_err(|e| TestCaseError::fail(format!("valid file rejected: {e}\n{text}")))?;
    ensure!(
        parsed.invalid.is_empty(),
        "valid values refused: {:?}\n{text}",
        parsed.invalid
    );
    let (back, notes) = (parsed.settings, parsed.notes);
    ensure!(
        &back == s,
        "round trip changed the settings:\n{text}\n{back:?}"
    );
    ensure!(notes.is_empty(), "notes for a valid file: {notes:?}");
    // The same object written compactly with its keys in reverse order.
    let v: Value = serde_json::from_str(&text).unwrap();
    let reversed: Map<String, Value> = v.as_object().unwrap().clone().into_iter().rev().collect();
    let compact = serde_json::to_string(&Value::Object(reversed)).unwrap();
    let back2 = settings::parse(&path, &compact)
        .map_err(|e| TestCaseError::fail(format!("compact form rejected: {e}")))?
        .settings;
    ensure!(&back2 == s, "compact/reordered form reads differently");
    Ok(())
}

/// Write bytes to a real file and use the loader (BOM, UTF-8 checks, read errors).
fn check_settings_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".synapticllamas.json");
    std::fs::write(&path, bytes).unwrap();
    let loaded = settings::load(&path);
    ensure!(loaded.existed, "an existing file was not seen");
    if let Some(e) = &loaded.error {
        ensure!(
            !e.message.contains('\n'),
            "error is not one line: {:?}",
            e.message
        );
        ensure!(
            loaded.settings == Settings::default(),
            "defaults not used on error"
        );
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        check_settings_text(text.strip_prefix('\u{feff}').unwrap_or(text))?;
    }
    Ok(())
}

#[test]
fn fuzz_settings_loader() {
    replay("settings", check_settings_bytes);
    fuzz(
        "settings::parse (any text)",
        512,
        json_text(settings_like_object().boxed()),
        |t| check_settings_text(&t),
    );
    fuzz(
        "settings round trip (valid files)",
        256,
        valid_settings(),
        |s| check_valid_settings(&s),
    );
    fuzz(
        "settings::load (bytes on disk)",
        128,
        file_bytes(settings_like_object().boxed()),
        |b| check_settings_bytes(&b),
    );
}

// ---------------------------------------------------------------------------
// 4. The node file

fn nodes_path() -> PathBuf {
    PathBuf::from("/fuzz/.synapticllamas_nodes.json")
}

fn node_entry() -> impl Strategy<Value = NodeEntry> {
    (
        host_input().prop_filter_map("valid URL", |u| host::canonical_url(&u).ok()),
        usable_node_name(),
        any::<i64>(),
        opt(tricky_text()),
        unknown_map(&["url", "name", "priority", "host_id"]),
    )
        .prop_map(|(url, name, priority, host_id, extra)| NodeEntry {
            url,
            name,
            priority,
            host_id,
            extra,
        })
}

/// Tricky text made into a name the one name validator accepts (no control
/// characters, not blank, at most 200 characters); other names are unusable entries.
fn usable_node_name() -> impl Strategy<Value = String> {
    tricky_text().prop_map(|t| {
        let n: String = t
            .chars()
            .filter(|c| !c.is_control())
            .take(synapticllamas::names::NAME_MAX)
            .collect();
        if n.trim().is_empty() {
            format!("node{n}")
        } else {
            n
        }
    })
}

/// Entries this program cannot use (kept verbatim).
fn unusable_entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value().prop_filter("not an object", |v| !v.is_object()),
        unknown_map(&["url"]).prop_map(Value::Object),
        (
            unknown_map(&["url"]),
            json_value().prop_filter("not a string", |v| !v.is_string())
        )
            .prop_map(|(mut m, u)| {
                m.insert("url".into(), u);
                Value::Object(m)
            }),
        (
            unknown_map(&["url"]),
            select(vec![
                "ftp://x",
                "file:///etc/passwd",
                "bad host",
                "[::1",
                "h:abc"
            ])
        )
            .prop_map(|(mut m, u)| {
                m.insert("url".into(), Value::String(u.into()));
                Value::Object(m)
            }),
    ]
}

fn valid_node_file() -> impl Strategy<Value = NodeFile> {
    (
        vec(node_entry(), 0..6),
        vec(unusable_entry(), 0..4),
        unknown_map(&["nodes"]),
    )
        .prop_map(|(entries, unusable, extra)| {
            let mut seen = BTreeSet::new();
            let entries = entries
                .into_iter()
                .filter(|e| seen.insert(e.url.clone()))
                .collect();
            NodeFile {
                entries,
                unusable,
                extra,
            }
        })
}

fn node_like_object() -> impl Strategy<Value = Value> {
    (
        vec(
            prop_oneof![
                2 => node_entry().prop_map(|e| serde_json::to_value(e).unwrap()),
                1 => unusable_entry(),
                1 => json_value(),
                1 => (host_input(), json_value()).prop_map(|(u, name)| serde_json::json!({"url": u, "name": name})),
            ],
            0..6,
        ),
        unknown_map(&["nodes"]),
        prop_oneof![8 => Just(None), 1 => json_value().prop_map(Some)],
    )
        .prop_map(|(nodes, mut extra, replace)| {
            extra.insert("nodes".into(), replace.unwrap_or(Value::Array(nodes)));
            Value::Object(extra)
        })
}

fn check_nodes_text(text: &str) -> Result<(), TestCaseError> {
    let path = nodes_path();
    match nodes_file::parse(&path, text) {
        Err(e) => {
            ensure!(e.path == path, "error names another file");
            ensure!(
                !e.message.contains('\n'),
                "error is not one line: {:?}",
                e.message
            );
        }
        Ok((f, warnings)) => {
            let input: Value = serde_json::from_str(text).unwrap();
            let n_in = input["nodes"].as_array().map_or(0, Vec::len);
            ensure!(
                f.entries.len() + f.unusable.len() == n_in,
                "{} entries in, {} usable + {} kept aside out",
                n_in,
                f.entries.len(),
                f.unusable.len()
            );
            ensure!(
                warnings.len() == f.unusable.len(),
                "one warning per entry kept aside"
            );
            for w in &warnings {
                ensure!(!w.contains('\n'), "warning is not one line: {w:?}");
            }
            for e in &f.entries {
                ensure!(
                    host::canonical_url(&e.url).as_deref() == Ok(e.url.as_str()),
                    "entry URL {:?} is not canonical",
                    e.url
                );
            }
            let written = nodes_file::to_json(&f);
            let (again, _) = nodes_file::parse(&path, &written)
                .map_err(|e| TestCaseError::fail(format!("own output rejected: {e}")))?;
            ensure!(again == f, "rewrite changed the file:\n{f:?}\n{again:?}");
            ensure!(
                nodes_file::to_json(&again) == written,
                "second rewrite differs"
            );
            // Top-level keys are kept.
            let output: Value = serde_json::from_str(&written).unwrap();
            for (k, v) in input.as_object().unwrap() {
                if k != "nodes" {
                    ensure!(output.get(k) == Some(v), "top-level key {k:?} was not kept");
                }
            }
        }
    }
    Ok(())
}

fn check_valid_nodes(f: &NodeFile) -> Result<(), TestCaseError> {
    let path = nodes_path();
    let text = nodes_file::to_json(f);
    let (back, warnings) = nodes_file::parse(&path, &text)
        .map_err(|e| TestCaseError::fail(format!("valid file rejected: {e}\n{text}")))?;
    ensure!(&back == f, "round trip changed the file:\n{text}\n{back:?}");
    ensure!(warnings.len() == f.unusable.len(), "warnings: {warnings:?}");
    Ok(())
}

fn check_nodes_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".synapticllamas_nodes.json");
    std::fs::write(&path, bytes).unwrap();
    match nodes_file::load(&path) {
        Ok(None) => return Err(TestCaseError::fail("an existing file was not seen")),
        Ok(Some(_)) => {}
        Err(e) => ensure!(!e.message.contains('\n'), "error is not one line"),
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        check_nodes_text(text.strip_prefix('\u{feff}').unwrap_or(text))?;
    }
    Ok(())
}

#[test]
fn fuzz_node_file_loader() {
    replay("nodes", check_nodes_bytes);
    fuzz(
        "nodes_file::parse (any text)",
        512,
        json_text(node_like_object().boxed()),
        |t| check_nodes_text(&t),
    );
    fuzz(
        "nodes_file round trip (valid files)",
        256,
        valid_node_file(),
        |f| check_valid_nodes(&f),
    );
    fuzz(
        "nodes_file::load (bytes on disk)",
        128,
        file_bytes(node_like_object().boxed()),
        |b| check_nodes_bytes(&b),
    );
}

// ---------------------------------------------------------------------------
// 5. OLLAMA_HOST / node URLs

fn host_input() -> impl Strategy<Value = String> {
    let scheme = select(vec![
        "", "", "http://", "https://", "HTTP://", "Https://", "ftp://", "://", "http:/",
    ]);
    let hostname = prop_oneof![
        any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        any::<[u16; 8]>().prop_map(|s| {
            let ip = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
            format!("[{ip}]")
        }),
        select(vec![
            "::1",
            "::",
            "[::1]",
            "[::]",
            "0.0.0.0",
            "localhost",
            "LOCALHOST",
            "box.lan",
            "example.com",
            "a-b_c.d",
            "-bad",
            "a..b",
            "",
            "[",
            "]",
            "[::1",
            "exa$mple",
            "é.com",
            "1.2.3",
            "999.1.1.1",
            "[1.2.3.4]",
            "[abc]",
            "u:p@h",
            "h%25eth0",
        ])
        .prop_map(String::from),
        "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,10}){0,3}",
    ];
    let port = prop_oneof![
        3 => Just(String::new()),
        3 => any::<u16>().prop_map(|p| format!(":{p}")),
        1 => select(vec![":", ":0", ":65535", ":65536", ":-1", ":+80", ":0080", ":abc", ":99999999999999999999", "::"]).prop_map(String::from),
    ];
    let path = prop_oneof![
        3 => Just(String::new()),
        1 => select(vec!["/", "/ollama", "/a/b/", "//", "/a?b=c", "/#x", "/é"]).prop_map(String::from),
    ];
    let wrap = select(vec![
        ("", ""),
        (" ", " "),
        ("\"", "\""),
        ("'", "'"),
        (" \" ", " \" "),
        ("\"", ""),
    ]);
    prop_oneof![
        4 => (scheme, hostname, port, path, wrap).prop_map(|(s, h, p, pa, (l, r))| format!("{l}{s}{h}{p}{pa}{r}")),
        1 => tricky_text(),
        1 => any::<String>(),
    ]
}

fn check_host(raw: &str) -> Result<(), TestCaseError> {
    let Ok(spec) = host::parse(raw) else {
        return Ok(());
    };
    ensure!(
        spec.scheme == "http" || spec.scheme == "https",
        "{raw:?}: scheme {:?} accepted",
        spec.scheme
    );
    let _ = spec.default_name();
    let _ = spec.ip();
    // Ollama's rendering parses back to the same address.
    let shown = spec.to_string();
    let again = host::parse(&shown).map_err(|e| {
        TestCaseError::fail(format!("{raw:?}: its rendering {shown:?} is rejected: {e}"))
    })?;
    ensure!(
        again == spec,
        "{raw:?}: {shown:?} re-parses as {again:?}, not {spec:?}"
    );
    // The canonical URL (the registry's identity) re-parses to itself.
    let canonical = spec.base_url();
    let reparsed = host::canonical_url(&canonical).map_err(|e| {
        TestCaseError::fail(format!("{raw:?}: canonical {canonical:?} is rejected: {e}"))
    })?;
    ensure!(
        reparsed == canonical,
        "{raw:?}: canonical {canonical:?} re-parses to {reparsed:?}"
    );
    ensure!(
        host::canonical_url(raw).as_deref() == Ok(canonical.as_str()),
        "{raw:?}: canonical_url differs from parse().base_url()"
    );
    Ok(())
}

#[test]
fn fuzz_host_parser() {
    replay("host", |bytes| {
        for line in String::from_utf8_lossy(bytes).lines() {
            check_host(line)?;
        }
        Ok(())
    });
    fuzz("host::parse", 4096, host_input(), |raw| check_host(&raw));
}
